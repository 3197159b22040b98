// softmax_backward.wgsl with one invocation per row reading vec4s, k a multiple of 4:
// the variant for adapters that run on the CPU, for the reasons in
// reduce_rows_serial.wgsl.
// kiln:constants serial_workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const SERIAL_WORKGROUP: u32 = 64u;
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    // 1: log_softmax
    log: u32,
    // one invocation per row here: unused (the workgroup kernel's invocations per row)
    lanes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k] as vec4s: the forward's output
// kiln:load y (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> forward_out: array<vec4<T>>;
fn load4(i: u32) -> vec4<f32> { return vec4<f32>(forward_out[i]); }
// kiln:load y end
// [rows, k] as vec4s: the gradient of the forward's output
// kiln:load grad (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read> grad: array<vec4<T>>;
fn grad4(i: u32) -> vec4<f32> { return vec4<f32>(grad[i]); }
// kiln:load grad end
// [rows, k] as vec4s: the gradient of the forward's input
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(3) var<storage, read_write> output: array<vec4<T>>;
fn store4(i: u32, v: vec4<f32>) { output[i] = vec4<T>(v); }
// kiln:store end

@compute @workgroup_size(SERIAL_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * SERIAL_WORKGROUP;
    if (row >= params.rows) { return; }
    let k4 = params.k / 4u;
    let base = row * k4;
    var sum = vec4<f32>(0.0);
    for (var i = 0u; i < k4; i++) {
        let g = grad4(base + i);
        if (params.log != 0u) {
            sum += g;
        } else {
            sum += g * load4(base + i);
        }
    }
    let total = (sum.x + sum.y) + (sum.z + sum.w);
    for (var i = 0u; i < k4; i++) {
        let y = load4(base + i);
        let g = grad4(base + i);
        if (params.log != 0u) {
            store4(base + i, g - exp(y) * total);
        } else {
            store4(base + i, y * (g - total));
        }
    }
}
