// Layer norm over each row of a compact [rows, k] tensor, k a multiple of 4, one
// invocation per row reading vec4s: mean, then biased variance of the deviations (two
// passes, as the workgroup kernel does, for the same rounding), then scale and shift.
// The variant for adapters that run on the CPU, for the reasons in
// reduce/reduce_rows_serial.wgsl.
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
@group(0) @binding(1) var<storage, read> input: array<vec4<T>>;
// [k]
@group(0) @binding(2) var<storage, read> weight: array<vec4<T>>;
// [k]
@group(0) @binding(3) var<storage, read> bias: array<vec4<T>>;
// [rows, k]
@group(0) @binding(4) var<storage, read_write> output: array<vec4<T>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * 64u;
    if (row >= params.rows) { return; }
    let k4 = params.k / 4u;
    let base = row * k4;
    var sum = vec4<f32>();
    for (var i = 0u; i < k4; i++) { sum += vec4<f32>(input[base + i]); }
    let mean = (sum.x + sum.y + sum.z + sum.w) / f32(params.k);
    var squares = vec4<f32>();
    for (var i = 0u; i < k4; i++) {
        let d = vec4<f32>(input[base + i]) - mean;
        squares += d * d;
    }
    let variance = (squares.x + squares.y + squares.z + squares.w) / f32(params.k);
    let rstd = 1.0 / sqrt(variance + params.eps);
    for (var i = 0u; i < k4; i++) {
        let y = (vec4<f32>(input[base + i]) - mean) * rstd;
        output[base + i] = vec4<T>(y * vec4<f32>(weight[i]) + vec4<f32>(bias[i]));
    }
}
