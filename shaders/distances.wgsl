// Pairwise squared distances, partial sums over one coordinate slice.
//
// Computes, for every worker pair (i, j) with i and j in a TILE×TILE tile on
// or above the diagonal, and for every span of SPAN_CHUNKS·CHUNK coordinates
// of the slice, the partial sum Σ (x_i[c] − x_j[c])² in f32. The sum is taken
// from the differences, never as |x_i|² + |x_j|² − 2⟨x_i, x_j⟩. Each thread
// adds CHUNK terms into a chunk sum and SPAN_CHUNKS chunk sums into the span
// sum, so the rounding error of one partial is bounded by
// (CHUNK + SPAN_CHUNKS)·ε whatever d is. The host sums the partials in f64.
// Pairs with a non-finite worker hold garbage that the host overwrites.
//
// Bindings:
//   0 params   uniform  { workers, len, tiles, spans }
//   1 slice    storage  read        slice[w * len + c], worker-major
//   2 partials storage  read_write  partials[(span * workers + i) * workers + j]
//
// Launch: workgroup (TILE, TILE, 1), one thread per pair of the tile;
// dispatch (tiles, tiles, spans) with tiles = ceil(workers / TILE).
// Workgroups below the diagonal (tile row > tile column) return at once.

override TILE: u32 = 8u;
override CHUNK: u32 = 64u;
override SPAN_CHUNKS: u32 = 64u;

struct Params {
    workers: u32,
    len: u32,
    tiles: u32,
    spans: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> slice: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;

var<workgroup> rows_i: array<f32, TILE * CHUNK>;
var<workgroup> rows_j: array<f32, TILE * CHUNK>;

// Element `index` of a TILE×CHUNK block: worker first + index / CHUNK,
// coordinate start + index % CHUNK, or 0 past the last worker or coordinate.
fn load_value(first: u32, start: u32, index: u32) -> f32 {
    let row = index / CHUNK;
    let column = index % CHUNK;
    let worker = first + row;
    let c = start + column;
    if worker < params.workers && c < params.len {
        return slice[worker * params.len + c];
    }
    return 0.0;
}

@compute @workgroup_size(TILE, TILE, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let tile_i = group.x;
    let tile_j = group.y;
    if tile_i > tile_j {
        return;
    }
    let span = group.z;
    let first_i = tile_i * TILE;
    let first_j = tile_j * TILE;
    let thread = local.y * TILE + local.x;
    let threads = TILE * TILE;
    let span_start = span * SPAN_CHUNKS * CHUNK;

    var span_sum = 0.0;
    for (var chunk = 0u; chunk < SPAN_CHUNKS; chunk++) {
        let start = span_start + chunk * CHUNK;
        if start >= params.len {
            break;
        }
        for (var index = thread; index < TILE * CHUNK; index += threads) {
            rows_i[index] = load_value(first_i, start, index);
            rows_j[index] = load_value(first_j, start, index);
        }
        workgroupBarrier();

        var chunk_sum = 0.0;
        let base_i = local.x * CHUNK;
        let base_j = local.y * CHUNK;
        for (var c = 0u; c < CHUNK; c++) {
            let difference = rows_i[base_i + c] - rows_j[base_j + c];
            chunk_sum += difference * difference;
        }
        span_sum += chunk_sum;
        workgroupBarrier();
    }

    let i = first_i + local.x;
    let j = first_j + local.y;
    if i < params.workers && j < params.workers {
        partials[(span * params.workers + i) * params.workers + j] = span_sum;
    }
}
