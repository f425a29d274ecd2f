// Krum scores: for each worker i, the sum of its `neighbours` smallest
// off-diagonal squared distances D[i][j].
//
// A value D[i][j] is among the smallest when fewer than `neighbours` other
// off-diagonal entries of row i come before it, ordering by value and then by
// column. Values are compared through an order-preserving integer key of
// their bits, with NaN mapped to +Inf, so the order does not depend on how
// the implementation treats non-finite floats. A worker whose diagonal entry
// is not 0 (a non-finite worker) scores +Inf, and so does a row whose chosen
// entries include +Inf. The chosen values are added per thread and then by a
// tree reduction in f32.
//
// Bindings:
//   0 params    uniform { workers, neighbours, _, _ }
//   1 distances storage read        distances[i * workers + j], f32
//   2 scores    storage read_write  scores[i], f32
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1), WORKGROUP_SIZE a power of two;
// dispatch (workers, 1, 1), one workgroup per row.

override WORKGROUP_SIZE: u32 = 64u;

struct Params {
    workers: u32,
    neighbours: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> distances: array<f32>;
@group(0) @binding(2) var<storage, read_write> scores: array<f32>;

var<workgroup> sums: array<f32, WORKGROUP_SIZE>;
var<workgroup> infinite: array<u32, WORKGROUP_SIZE>;

const POSITIVE_INFINITY_BITS: u32 = 0x7f800000u;
const ABS_MASK: u32 = 0x7fffffffu;
const SIGN_BIT: u32 = 0x80000000u;

// Integer key with the order of the float values; NaN sorts as +Inf.
fn order_key(value: f32) -> u32 {
    var bits = bitcast<u32>(value);
    if (bits & ABS_MASK) > POSITIVE_INFINITY_BITS {
        bits = POSITIVE_INFINITY_BITS;
    }
    if (bits & SIGN_BIT) != 0u {
        return ~bits;
    }
    return bits | SIGN_BIT;
}

@compute @workgroup_size(WORKGROUP_SIZE, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) thread: u32,
) {
    let n = params.workers;
    let i = group.x;
    let row = i * n;

    var sum = 0.0;
    var saw_infinite = 0u;
    for (var j = thread; j < n; j += WORKGROUP_SIZE) {
        if j == i {
            continue;
        }
        let key = order_key(distances[row + j]);
        var rank = 0u;
        for (var l = 0u; l < n; l++) {
            if l == i || l == j {
                continue;
            }
            let other = order_key(distances[row + l]);
            if other < key || (other == key && l < j) {
                rank++;
            }
        }
        if rank < params.neighbours {
            let bits = bitcast<u32>(distances[row + j]) & ABS_MASK;
            if bits >= POSITIVE_INFINITY_BITS {
                saw_infinite = 1u;
            } else {
                sum += distances[row + j];
            }
        }
    }
    sums[thread] = sum;
    infinite[thread] = saw_infinite;
    workgroupBarrier();

    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
        if thread < half {
            sums[thread] += sums[thread + half];
            infinite[thread] |= infinite[thread + half];
        }
        workgroupBarrier();
    }
    if thread == 0u {
        let diagonal = bitcast<u32>(distances[row + i]) & ABS_MASK;
        if infinite[0] != 0u || diagonal != 0u {
            scores[i] = bitcast<f32>(POSITIVE_INFINITY_BITS);
        } else {
            scores[i] = sums[0];
        }
    }
}
