// layer_norm_backward.wgsl with one invocation per row reading vec4s, k a multiple of
// 4: the variant for adapters that run on the CPU, for the reasons in
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
    // 1 when `weight` and `products` are bound to the norm's weight and their output
    has_weight: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]: the norm's input
@group(0) @binding(1) var<storage, read> input: array<vec4<T>>;
// [rows, k]: the gradient of its output
@group(0) @binding(2) var<storage, read> grad: array<vec4<T>>;
// [k], or any buffer when has_weight is 0 (never read then)
@group(0) @binding(3) var<storage, read> weight: array<vec4<T>>;
// [rows, k]: grad * x_hat, or any buffer when has_weight is 0 (never written then)
@group(0) @binding(5) var<storage, read_write> products: array<vec4<T>>;
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
// [rows, k]: the input's gradient
@group(0) @binding(4) var<storage, read_write> output: array<vec4<T>>;
fn store4(i: u32, v: vec4<f32>) { output[i] = vec4<T>(v); }
// kiln:store end

fn load4(i: u32) -> vec4<f32> { return vec4<f32>(input[i]); }

fn h4(at: u32, c: u32) -> vec4<f32> {
    let g = vec4<f32>(grad[at]);
    if (params.has_weight == 0u) { return g; }
    return g * vec4<f32>(weight[c]);
}

@compute @workgroup_size(SERIAL_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * SERIAL_WORKGROUP;
    if (row >= params.rows) { return; }
    let k4 = params.k / 4u;
    let base = row * k4;
    let k = f32(params.k);
    let stats = norm_stats(base, k4, params.eps);
    let rstd = stats.rstd;
    var hs = vec4<f32>();
    var hxs = vec4<f32>();
    for (var i0 = 0u; i0 < k4; i0 += NORM_CHUNK) {
        var part = vec4<f32>();
        var part_x = vec4<f32>();
        for (var i = i0; i < min(i0 + NORM_CHUNK, k4); i++) {
            let h = h4(base + i, i);
            part += h;
            part_x += h * normalized(load4(base + i), stats);
        }
        hs += part;
        hxs += part_x;
    }
    let h_mean = ((hs.x + hs.y) + (hs.z + hs.w)) / k;
    let hx_mean = ((hxs.x + hxs.y) + (hxs.z + hxs.w)) / k;
    for (var i = 0u; i < k4; i++) {
        let x_hat = normalized(load4(base + i), stats);
        store4(base + i, rstd * (h4(base + i, i) - h_mean - x_hat * hx_mean));
        if (params.has_weight != 0u) {
            products[base + i] = vec4<T>(vec4<f32>(grad[base + i]) * x_hat);
        }
    }
}
