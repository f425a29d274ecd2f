// Non-finite flags: marks every worker with a NaN or ±Inf coordinate.
//
// The test is on the bit pattern (all exponent bits set), because WGSL lets
// an implementation assume that floating-point values are finite, so a
// float comparison such as `x != x` may be folded away.
//
// Bindings:
//   0 params uniform { workers, len, spans, _ }
//   1 slice  storage read        slice[w * len + c], worker-major
//   2 flags  storage read_write  flags[w], set to 1 and never cleared here
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1); dispatch (spans, workers, 1),
// one workgroup per worker and span of WORKGROUP_SIZE·SPAN_STEPS coordinates.

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
@group(0) @binding(2) var<storage, read_write> flags: array<atomic<u32>>;

const EXPONENT_MASK: u32 = 0x7f800000u;

@compute @workgroup_size(WORKGROUP_SIZE, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let worker = group.y;
    let span_start = group.x * WORKGROUP_SIZE * SPAN_STEPS;
    let row = worker * params.len;
    var found = false;
    for (var step = 0u; step < SPAN_STEPS; step++) {
        let c = span_start + step * WORKGROUP_SIZE + thread;
        if c < params.len {
            let bits = bitcast<u32>(slice[row + c]);
            found = found || (bits & EXPONENT_MASK) == EXPONENT_MASK;
        }
    }
    if found {
        atomicOr(&flags[worker], 1u);
    }
}
