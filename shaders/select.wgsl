// Selection of the m lowest scores, ties by lowest index.
//
// The host turns each f64 score into a 64-bit order-preserving key (NaN
// mapped to +Inf) split into two u32 words, so the GPU orders the f64 scores
// exactly without f64 arithmetic. Worker i's rank is the number of workers
// whose key is lower, or equal with a lower index; ranks are distinct, and
// worker i is written at position rank when rank < m.
//
// Bindings:
//   0 params   uniform { workers, m, _, _ }
//   1 keys     storage read        keys[i] = (high word, low word)
//   2 selected storage read_write  selected[rank] = i, for rank < m
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1); dispatch (groups_x, groups_y, 1)
// with groups_x · groups_y · WORKGROUP_SIZE ≥ workers, one thread per worker.

override WORKGROUP_SIZE: u32 = 64u;

struct Params {
    workers: u32,
    m: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> keys: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> selected: array<u32>;

fn less(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y < b.y);
}

@compute @workgroup_size(WORKGROUP_SIZE, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let i = (group.y * groups.x + group.x) * WORKGROUP_SIZE + thread;
    if i >= params.workers {
        return;
    }
    let key = keys[i];
    var rank = 0u;
    for (var j = 0u; j < params.workers; j++) {
        let other = keys[j];
        if less(other, key) || (all(other == key) && j < i) {
            rank++;
        }
    }
    if rank < params.m {
        selected[rank] = i;
    }
}
