// Layer norm over each row of a compact [rows, k] tensor, k a multiple of 4, one
// invocation per row reading vec4s: mean, then biased variance of the deviations (two
// passes, as the workgroup kernel does, for the same rounding), then scale and shift.
// The variant for adapters that run on the CPU, for the reasons in
// reduce/reduce_rows_serial.wgsl.
// kiln:constants serial_workgroup norm_stats_serial
// Generated from kiln's op table and shader_constants.rs; do not edit.
const SERIAL_WORKGROUP: u32 = 64u;
const NORM_CHUNK: u32 = 16u;
// Row statistics: the row less `shift` (its first element) has mean `mean`, and `rstd`
// is 1 / sqrt(biased variance + eps).
struct RowStats {
    shift: f32,
    mean: f32,
    rstd: f32,
}
// `x` normalised, rounded the same way in the forward and backward kernels.
fn normalized(x: vec4<f32>, s: RowStats) -> vec4<f32> {
    return (x - s.shift - s.mean) * s.rstd;
}
// A row's statistics from the `k4` vec4s at `base`, the variance from the deviations in
// a second pass, each sum in chunks of NORM_CHUNK.
fn norm_stats(base: u32, k4: u32, eps: f32) -> RowStats {
    let k = f32(4u * k4);
    var shift = 0.0;
    if (k4 > 0u) {
        shift = load4(base).x;
    }
    var sum = vec4<f32>();
    for (var i0 = 0u; i0 < k4; i0 += NORM_CHUNK) {
        var part = vec4<f32>();
        for (var i = i0; i < min(i0 + NORM_CHUNK, k4); i++) { part += load4(base + i) - shift; }
        sum += part;
    }
    let mean = ((sum.x + sum.y) + (sum.z + sum.w)) / k;
    var squares = vec4<f32>();
    for (var i0 = 0u; i0 < k4; i0 += NORM_CHUNK) {
        var part = vec4<f32>();
        for (var i = i0; i < min(i0 + NORM_CHUNK, k4); i++) {
            let d = load4(base + i) - shift - mean;
            part += d * d;
        }
        squares += part;
    }
    let variance = ((squares.x + squares.y) + (squares.z + squares.w)) / k;
    return RowStats(shift, mean, 1.0 / sqrt(variance + eps));
}
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    eps: f32,
    // one invocation per row here: unused (the workgroup kernel's invocations per row)
    lanes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<vec4<T>>;
fn load4(i: u32) -> vec4<f32> { return vec4<f32>(input[i]); }
// kiln:load end
// [k]
@group(0) @binding(2) var<storage, read> weight: array<vec4<T>>;
// [k]
@group(0) @binding(3) var<storage, read> bias: array<vec4<T>>;
// [rows, k] as vec4s
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(4) var<storage, read_write> output: array<vec4<T>>;
fn store4(i: u32, v: vec4<f32>) { output[i] = vec4<T>(v); }
// kiln:store end

@compute @workgroup_size(SERIAL_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * SERIAL_WORKGROUP;
    if (row >= params.rows) { return; }
    let k4 = params.k / 4u;
    let base = row * k4;
    let stats = norm_stats(base, k4, params.eps);
    for (var i = 0u; i < k4; i++) {
        let y = normalized(load4(base + i), stats);
        store4(base + i, y * vec4<f32>(weight[i]) + vec4<f32>(bias[i]));
    }
}
