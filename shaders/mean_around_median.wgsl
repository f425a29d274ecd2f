// Bulyan's second phase per coordinate: the sum of the `beta` values of the
// n workers closest to their median, ties at equal distance going to the
// lower value; the host divides by `beta`.
//
// Each thread owns one coordinate. Values are ordered as in
// order_stats.wgsl: an order-preserving integer key of their bits, equal keys
// broken by worker index. The kept values are a contiguous run of that order
// around the middle, grown from the middle with two cursors: `lo`, the next
// value below the run, and `hi`, the next value above it. The lower value is
// taken when centre − lo ≤ hi − centre, with the distances rounded as the
// CPU path computes them in f64: centre = fl(m1 + m2) / 2 for the two middle
// values m1 ≤ m2 (equal for odd n), then fl(centre − lo) and fl(hi − centre).
// Without rounding the test is lo + hi ≥ m1 + m2. The rounding changes it
// only when a coordinate's values span more than about 2^29.
//
// The distances, their comparison and the sum of the kept values are
// computed in a wide two's-complement integer with no float arithmetic, so
// the driver cannot round or reassociate them. The integer counts units of
// 2^-150: an f32 is ±M · 2^p of them with M < 2^24 and p ≤ 254, and WIDE
// words hold the sum of 2^40 values below 2^128 with a sign bit. f64
// rounding is applied to the integer explicitly (round_to_f64). Inputs are
// finite.
//
// NOTE: when two values on the same side round to the same f64 distance,
// the CPU path keeps the lower one first, which on the lower side is the
// farther; this kernel keeps the nearer. The two values then differ by at
// most one f64 ulp of their distance to the centre, and so do the sums.
//
// Bindings:
//   0 params uniform { workers, len, kind, count }, `kind` unused,
//            `count` = beta, 1 ≤ beta ≤ workers
//   1 slice  storage read        slice[w * len + c], worker-major
//   2 out    storage read_write  out[c] = (sign << 31 | t, a[t], a[t−1],
//            a[t−2]): the top three words of the sum's magnitude a, t ≥ 2
//            the index of its highest word, so that the sum is
//            ±(a[t] · 2^64 + a[t−1] · 2^32 + a[t−2]) · 2^(32 (t − 2) − 150)
//            up to the words below t − 2
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1); dispatch (groups_x, groups_y, 1)
// with groups_x · groups_y · WORKGROUP_SIZE ≥ len, one thread per coordinate.

override WORKGROUP_SIZE: u32 = 64u;
const WIDE: u32 = 10u;
const NONE: u32 = 0xffffffffu;

struct Params {
    workers: u32,
    len: u32,
    kind: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> slice: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<u32>>;

var<private> wide: array<u32, WIDE>;
var<private> centre: array<u32, WIDE>;
var<private> nearer: array<u32, WIDE>;

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

// Whether worker i's value comes before worker j's in the order.
fn before(i: u32, j: u32, c: u32) -> bool {
    let ki = order_key(value_at(i, c));
    let kj = order_key(value_at(j, c));
    return ki < kj || (ki == kj && i < j);
}

// The worker whose value has rank k at coordinate c.
fn worker_of_rank(k: u32, c: u32) -> u32 {
    for (var i = 0u; i < params.workers; i++) {
        var rank = 0u;
        for (var j = 0u; j < params.workers; j++) {
            if before(j, i, c) {
                rank++;
            }
        }
        if rank == k {
            return i;
        }
    }
    return NONE;
}

// The worker whose value comes right before worker i's, or NONE.
fn previous(i: u32, c: u32) -> u32 {
    var best = NONE;
    for (var j = 0u; j < params.workers; j++) {
        if before(j, i, c) && (best == NONE || before(best, j, c)) {
            best = j;
        }
    }
    return best;
}

// The worker whose value comes right after worker i's, or NONE.
fn next(i: u32, c: u32) -> u32 {
    var best = NONE;
    for (var j = 0u; j < params.workers; j++) {
        if before(i, j, c) && (best == NONE || before(j, best, c)) {
            best = j;
        }
    }
    return best;
}

fn clear_wide() {
    for (var i = 0u; i < WIDE; i++) {
        wide[i] = 0u;
    }
}

// Adds `value`, or subtracts it when `subtract`, to the wide integer exactly.
fn add_exact(value: f32, subtract: bool) {
    let bits = bitcast<u32>(value);
    let biased = (bits >> 23u) & 0xffu;
    var mantissa = bits & 0x7fffffu;
    if biased != 0u {
        mantissa |= 0x800000u;
    }
    let p = max(biased, 1u);
    let word = p / 32u;
    let shift = p % 32u;
    let low = mantissa << shift;
    var high = 0u;
    if shift != 0u {
        high = mantissa >> (32u - shift);
    }
    // Subtracting adds the complement plus one.
    let negative = ((bits >> 31u) == 1u) != subtract;
    var carry = select(0u, 1u, negative);
    for (var i = 0u; i < WIDE; i++) {
        var x = 0u;
        if i == word {
            x = low;
        } else if i == word + 1u {
            x = high;
        }
        if negative {
            x = ~x;
        }
        let partial = wide[i] + x;
        let total = partial + carry;
        carry = select(0u, 1u, partial < x) + select(0u, 1u, total < partial);
        wide[i] = total;
    }
}

// Adds `other`, or subtracts it when `subtract`, to the wide integer.
fn add_wide(other: ptr<private, array<u32, WIDE>>, subtract: bool) {
    var carry = select(0u, 1u, subtract);
    for (var i = 0u; i < WIDE; i++) {
        var x = (*other)[i];
        if subtract {
            x = ~x;
        }
        let partial = wide[i] + x;
        let total = partial + carry;
        carry = select(0u, 1u, partial < x) + select(0u, 1u, total < partial);
        wide[i] = total;
    }
}

fn wide_negative() -> bool {
    return (wide[WIDE - 1u] >> 31u) == 1u;
}

fn negate_wide() {
    var carry = 1u;
    for (var i = 0u; i < WIDE; i++) {
        let total = ~wide[i] + carry;
        carry = select(0u, 1u, total < carry);
        wide[i] = total;
    }
}

fn wide_bit(position: u32) -> bool {
    return ((wide[position / 32u] >> (position % 32u)) & 1u) == 1u;
}

// Rounds the wide integer to the nearest value with 53 significant bits,
// ties to even: the f64 rounding of a result that is exact in the integer.
fn round_to_f64() {
    let negative = wide_negative();
    if negative {
        negate_wide();
    }
    var highest = -1;
    for (var i = 0u; i < WIDE; i++) {
        if wide[i] != 0u {
            highest = i32(i * 32u + firstLeadingBit(wide[i]));
        }
    }
    if highest >= 53 {
        // Bits below `cut` are dropped; `guard` is the highest of them.
        let cut = u32(highest - 52);
        let guard = cut - 1u;
        var sticky = false;
        for (var i = 0u; i < WIDE; i++) {
            let base = i * 32u;
            if guard >= base + 32u {
                sticky = sticky || wide[i] != 0u;
            } else if guard > base {
                sticky = sticky || (wide[i] & ((1u << (guard - base)) - 1u)) != 0u;
            }
        }
        let round_up = wide_bit(guard) && (sticky || wide_bit(cut));
        for (var i = 0u; i < WIDE; i++) {
            let base = i * 32u;
            if cut >= base + 32u {
                wide[i] = 0u;
            } else if cut > base {
                wide[i] &= ~((1u << (cut - base)) - 1u);
            }
        }
        if round_up {
            var carry = 1u << (cut % 32u);
            for (var i = cut / 32u; i < WIDE; i++) {
                let total = wide[i] + carry;
                carry = select(0u, 1u, total < carry);
                wide[i] = total;
            }
        }
    }
    if negative {
        negate_wide();
    }
}

// Sets `centre` to the CPU path's f64 median (m1 + m2) / 2, rounded once.
// The rounded sum is a multiple of 2^-149, so halving it is exact.
fn set_centre(m1: f32, m2: f32) {
    clear_wide();
    add_exact(m1, false);
    add_exact(m2, false);
    round_to_f64();
    let negative = wide_negative();
    for (var i = 0u; i < WIDE; i++) {
        var above = 0u;
        if i + 1u < WIDE {
            above = wide[i + 1u];
        } else if negative {
            above = 0xffffffffu;
        }
        centre[i] = (wide[i] >> 1u) | (above << 31u);
    }
}

// Whether the f64 distance centre − lo, rounded as the CPU path rounds it, is
// at most the rounded hi − centre. Both differences are non-negative.
fn takes_lower(lo: f32, hi: f32) -> bool {
    clear_wide();
    add_wide(&centre, false);
    add_exact(lo, true);
    round_to_f64();
    nearer = wide;
    clear_wide();
    add_exact(hi, false);
    add_wide(&centre, true);
    round_to_f64();
    add_wide(&nearer, true);
    return !wide_negative();
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
    let first = worker_of_rank((n - 1u) / 2u, c);
    let m1 = value_at(first, c);
    let m2 = value_at(worker_of_rank(n / 2u, c), c);
    set_centre(m1, m2);

    var lo = first;
    var hi = next(first, c);
    for (var taken = 0u; taken < params.count; taken++) {
        var lower = hi == NONE;
        if lo != NONE && hi != NONE {
            lower = takes_lower(value_at(lo, c), value_at(hi, c));
        }
        if lower {
            lo = previous(lo, c);
        } else {
            hi = next(hi, c);
        }
    }

    // The kept values lie strictly between the cursors.
    clear_wide();
    for (var j = 0u; j < n; j++) {
        let above = lo == NONE || before(lo, j, c);
        let below = hi == NONE || before(j, hi, c);
        if above && below {
            add_exact(value_at(j, c), false);
        }
    }
    let negative = wide_negative();
    if negative {
        negate_wide();
    }
    var top = 2u;
    for (var i = 2u; i < WIDE; i++) {
        if wide[i] != 0u {
            top = i;
        }
    }
    out[c] = vec4<u32>(
        select(0u, 0x80000000u, negative) | top,
        wide[top],
        wide[top - 1u],
        wide[top - 2u],
    );
}
