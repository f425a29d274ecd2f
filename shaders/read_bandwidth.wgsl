// Read bandwidth: sums a resident buffer, so that `byzagg bench` can compare
// the distance kernel with the fastest read this device allows.
//
// Each thread adds every stride-th vec4 from its own index, so consecutive
// threads read consecutive 16-byte words, and writes its sum once. The sums
// keep the compiler from dropping the reads and are never read back.
//
// Bindings:
//   0 values storage read        the buffer to read, as vec4<f32>
//   1 sums   storage read_write  sums[thread], one f32 per thread
//
// Launch: workgroup (WORKGROUP_SIZE, 1, 1); dispatch (groups, 1, 1), with
// arrayLength(&sums) = groups · WORKGROUP_SIZE.

override WORKGROUP_SIZE: u32 = 64u;

@group(0) @binding(0) var<storage, read> values: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let threads = arrayLength(&sums);
    let count = arrayLength(&values);
    var total = vec4<f32>(0.0);
    for (var i = id.x; i < count; i += threads) {
        total += values[i];
    }
    sums[id.x] = total.x + total.y + total.z + total.w;
}
