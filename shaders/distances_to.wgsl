// Squared distances |x_i − z|² from every worker to one point z, partial
// sums over one coordinate slice.
//
// Each thread adds SPAN_STEPS squared differences in f32, then the workgroup
// adds its WORKGROUP_SIZE thread sums by a tree reduction, so the rounding
// error of one partial is bounded by (SPAN_STEPS + log2 WORKGROUP_SIZE)·ε
// whatever d is. The host sums the partials in f64.
//
// Bindings:
//   0 params   uniform { workers, len, spans, _ }
//   1 slice    storage read        slice[w * len + c], worker-major
//   2 point    storage read        point[c], the same slice of z
//   3 partials storage read_write  partials[span * workers + w]
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1), WORKGROUP_SIZE a power of two;
// dispatch (spans, workers, 1), one workgroup per worker and span of
// WORKGROUP_SIZE·SPAN_STEPS coordinates.

override WORKGROUP_SIZE: u32 = 64u;
override SPAN_STEPS: u32 = 64u;

struct Params {
    workers: u32,
    len: u32,
    spans: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> slice: array<f32>;
@group(0) @binding(2) var<storage, read> point: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;

var<workgroup> sums: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let worker = group.y;
    let span = group.x;
    let span_start = span * WORKGROUP_SIZE * SPAN_STEPS;
    let row = worker * params.len;

    var sum = 0.0;
    for (var step = 0u; step < SPAN_STEPS; step++) {
        let c = span_start + step * WORKGROUP_SIZE + thread;
        if c < params.len {
            let difference = slice[row + c] - point[c];
            sum += difference * difference;
        }
    }
    sums[thread] = sum;
    workgroupBarrier();

    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if thread < half {
            sums[thread] += sums[thread + half];
        }
        workgroupBarrier();
    }
    if thread == 0u {
        partials[span * params.workers + worker] = sums[0];
    }
}
