// Per-coordinate order statistics over the n workers of one coordinate slice:
// the median or the trimmed mean.
//
// Each thread owns one coordinate and ranks its n values by counting, which
// costs O(n²) per coordinate and needs no per-thread array. Values are
// ordered through an order-preserving integer key of their bits, the order
// of `f32::total_cmp`, with equal keys broken by worker index. Inputs are
// finite. Kept values are added in blocks of BLOCK in f32.
//
// Bindings:
//   0 params uniform { workers, len, kind, count }, kind 0 = median,
//            1 = trimmed mean dropping `count` values at each end
//   1 slice  storage read        slice[w * len + c], worker-major
//   2 out    storage read_write  out[c]
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1); dispatch (groups_x, groups_y, 1)
// with groups_x · groups_y · WORKGROUP_SIZE ≥ len, one thread per coordinate.

override WORKGROUP_SIZE: u32 = 64u;
const BLOCK: u32 = 16u;
const MEDIAN: u32 = 0u;

struct Params {
    workers: u32,
    len: u32,
    kind: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> slice: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn order_key(value: f32) -> u32 {
    let bits = bitcast<u32>(value);
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn value_at(worker: u32, c: u32) -> f32 {
    return slice[worker * params.len + c];
}

// Rank of worker i's value at coordinate c among all workers.
fn rank_of(i: u32, c: u32) -> u32 {
    let key = order_key(value_at(i, c));
    var rank = 0u;
    for (var j = 0u; j < params.workers; j++) {
        let other = order_key(value_at(j, c));
        if other < key || (other == key && j < i) {
            rank++;
        }
    }
    return rank;
}

// The value of rank k at coordinate c.
fn value_of_rank(k: u32, c: u32) -> f32 {
    for (var i = 0u; i < params.workers; i++) {
        if rank_of(i, c) == k {
            return value_at(i, c);
        }
    }
    return 0.0;
}

fn median(c: u32) -> f32 {
    let n = params.workers;
    if n % 2u == 1u {
        return value_of_rank(n / 2u, c);
    }
    return 0.5 * value_of_rank(n / 2u - 1u, c) + 0.5 * value_of_rank(n / 2u, c);
}

@compute @workgroup_size(WORKGROUP_SIZE, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let c = (group.y * groups.x + group.x) * WORKGROUP_SIZE + thread;
    if c >= params.len {
        return;
    }
    let n = params.workers;
    if params.kind == MEDIAN {
        out[c] = median(c);
        return;
    }

    var total = 0.0;
    var kept = 0u;
    for (var block = 0u; block < n; block += BLOCK) {
        var block_sum = 0.0;
        let end = min(block + BLOCK, n);
        for (var i = block; i < end; i++) {
            let rank = rank_of(i, c);
            if rank >= params.count && rank < n - params.count {
                block_sum += value_at(i, c);
                kept++;
            }
        }
        total += block_sum;
    }
    out[c] = total / f32(max(kept, 1u));
}
