// Weighted sums of worker rows over one coordinate slice:
// out[o][c] = Σ_i weights[o][i] · x_i[c], for several outputs o at once.
//
// A zero weight skips the worker, so a non-finite row with weight 0 cannot
// turn the sum into NaN. Workers are added in blocks of BLOCK, and the block
// sums into the total, which bounds the f32 rounding error by
// (BLOCK + workers / BLOCK)·ε times Σ_i |w_i x_i[c]|.
//
// Bindings:
//   0 params  uniform { workers, len, outputs, _ }
//   1 slice   storage read        slice[w * len + c], worker-major
//   2 weights storage read        weights[o * workers + i], f32
//   3 out     storage read_write  out[o * len + c]
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1); dispatch (groups_x, groups_y, 1)
// with groups_x · groups_y · WORKGROUP_SIZE ≥ len, one thread per coordinate.

override WORKGROUP_SIZE: u32 = 64u;
const BLOCK: u32 = 16u;

struct Params {
    workers: u32,
    len: u32,
    outputs: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> slice: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

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
    for (var o = 0u; o < params.outputs; o++) {
        var total = 0.0;
        for (var block = 0u; block < n; block += BLOCK) {
            var block_sum = 0.0;
            let end = min(block + BLOCK, n);
            for (var i = block; i < end; i++) {
                let weight = weights[o * n + i];
                if weight != 0.0 {
                    block_sum += weight * slice[i * params.len + c];
                }
            }
            total += block_sum;
        }
        out[o * params.len + c] = total;
    }
}
