// The gradient of layer norm over each row of compact [rows, k] tensors, `lanes`
// invocations per row as in layer_norm.wgsl. With x_hat = (x - mean) * rstd and
// h = grad * weight: dx = rstd * (h - mean(h) - x_hat * mean(h * x_hat)), and with a
// weight also grad * x_hat, which the weight's gradient sums over the rows. The mean
// and variance are taken as the forward takes them, for the same rounding; mean(h) and
// mean(h * x_hat) in one pass after.
// kiln:constants workgroup reduce_ops row_loads reduce_combine row_place row_total norm_stats
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const REDUCE_SUM: u32 = 0u;
const REDUCE_MEAN: u32 = 1u;
const REDUCE_MAX: u32 = 2u;
const REDUCE_MIN: u32 = 3u;
const REDUCE_PROD: u32 = 4u;
const REDUCE_ARGMAX: u32 = 5u;
const REDUCE_ARGMIN: u32 = 6u;
const ROW_LOADS: u32 = 4u;
fn load4(at: u32, lanes: u32) -> vec4<f32> {
    return vec4<f32>(load(at), load(at + lanes), load(at + 2u * lanes), load(at + 3u * lanes));
}
fn store4(at: u32, lanes: u32, v: vec4<f32>) {
    store(at, v.x);
    store(at + lanes, v.y);
    store(at + 2u * lanes, v.z);
    store(at + 3u * lanes, v.w);
}
// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
fn identity(op: u32) -> f32 {
    switch op {
        case REDUCE_MAX: { return bitcast<f32>(0xff800000u); }
        case REDUCE_MIN: { return bitcast<f32>(0x7f800000u); }
        case REDUCE_PROD: { return 1.0; }
        case REDUCE_SUM, REDUCE_MEAN, default: { return 0.0; }
    }
}
fn combine(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        // NaN if either is NaN, as in PyTorch (WGSL's max and min may drop it).
        case REDUCE_MAX: { return select(max(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        case REDUCE_MIN: { return select(min(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        case REDUCE_PROD: { return a * b; }
        case REDUCE_SUM, REDUCE_MEAN, default: { return a + b; }
    }
}
struct RowInvocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}
var<private> row_slot: u32;
var<private> row_lanes: u32;
// This invocation's row (past the last row for a spare slot) and its lane in the row.
fn row_start(inv: RowInvocation, lanes: u32) -> vec2<u32> {
    row_slot = inv.lid;
    row_lanes = lanes;
    let group = inv.wid.y * inv.nwg.x + inv.wid.x;
    return vec2<u32>(group * (WORKGROUP / lanes) + row_slot / lanes, row_slot % lanes);
}
var<workgroup> row_partial: array<f32, WORKGROUP>;
fn row_tree(op: u32, v: f32, width: u32) -> f32 {
    let lane = row_slot % row_lanes;
    row_partial[row_slot] = v;
    workgroupBarrier();
    for (var stride = width; stride < row_lanes; stride <<= 1u) {
        if (lane % (2u * stride) == 0u) {
            row_partial[row_slot] = combine(op, row_partial[row_slot], row_partial[row_slot + stride]);
        }
        workgroupBarrier();
    }
    let total = row_partial[row_slot - lane];
    // The next call writes row_partial again.
    workgroupBarrier();
    return total;
}
// `v` combined over the row's lanes, neighbours first; every lane gets the result.
fn row_total(op: u32, v: f32) -> f32 {
    return row_tree(op, v, 1u);
}
// A row's mean and 1 / sqrt(biased variance + eps), the variance from the deviations in
// a second pass: the `len` elements from `base` (0 for a spare slot) of a row of `k`,
// read by lane `lane` of `lanes` with ROW_LOADS loads in flight. Every lane gets both.
fn norm_stats(base: u32, len: u32, k: f32, lane: u32, lanes: u32, eps: f32) -> vec2<f32> {
    let step = ROW_LOADS * lanes;
    var sum = vec4<f32>(0.0);
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) { sum += load4(base + i, lanes); }
    for (; i < len; i += lanes) { sum.x += load(base + i); }
    let mean = row_total(REDUCE_SUM, (sum.x + sum.y) + (sum.z + sum.w)) / k;
    var squares = vec4<f32>(0.0);
    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        let d = load4(base + i, lanes) - mean;
        squares += d * d;
    }
    for (; i < len; i += lanes) {
        let d = load(base + i) - mean;
        squares.x += d * d;
    }
    let q = (squares.x + squares.y) + (squares.z + squares.w);
    return vec2<f32>(mean, 1.0 / sqrt(row_total(REDUCE_SUM, q) / k + eps));
}
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    eps: f32,
    // invocations per row: a power of two dividing WORKGROUP
    lanes: u32,
    // 1 when `weight` and `products` are bound to the norm's weight and their output
    has_weight: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]: the norm's input
@group(0) @binding(1) var<storage, read> input: array<T>;
// [rows, k]: the gradient of its output
@group(0) @binding(2) var<storage, read> grad: array<T>;
// [k], or any buffer when has_weight is 0 (never read then)
@group(0) @binding(3) var<storage, read> weight: array<T>;
// [rows, k]: the input's gradient
@group(0) @binding(4) var<storage, read_write> dx: array<T>;
// [rows, k]: grad * x_hat, or any buffer when has_weight is 0 (never written then)
@group(0) @binding(5) var<storage, read_write> products: array<T>;

fn load(i: u32) -> f32 { return f32(input[i]); }
fn store(i: u32, v: f32) { dx[i] = T(v); }

// The gradient at `at`, `at + lanes`, ... and the weight at columns `c`, `c + lanes`,
// ... (1 without a weight).
fn grad4(at: u32, lanes: u32) -> vec4<f32> {
    return vec4<f32>(f32(grad[at]), f32(grad[at + lanes]), f32(grad[at + 2u * lanes]), f32(grad[at + 3u * lanes]));
}
fn weight_at(c: u32) -> f32 {
    if (params.has_weight == 0u) { return 1.0; }
    return f32(weight[c]);
}
fn weight4(c: u32, lanes: u32) -> vec4<f32> {
    return vec4<f32>(weight_at(c), weight_at(c + lanes), weight_at(c + 2u * lanes), weight_at(c + 3u * lanes));
}
fn store_products4(at: u32, lanes: u32, v: vec4<f32>) {
    products[at] = T(v.x);
    products[at + lanes] = T(v.y);
    products[at + 2u * lanes] = T(v.z);
    products[at + 3u * lanes] = T(v.w);
}

@compute @workgroup_size(WORKGROUP)
fn main(inv: RowInvocation) {
    let lanes = params.lanes;
    let place = row_start(inv, lanes);
    let row = place.x;
    let lane = place.y;
    // A slot past the last row reads and writes nothing, but meets every barrier.
    let len = select(0u, params.k, row < params.rows);
    let base = row * params.k;
    let k = f32(params.k);
    let step = ROW_LOADS * lanes;
    let stats = norm_stats(base, len, k, lane, lanes, params.eps);
    let mean = stats.x;
    let rstd = stats.y;

    // The third pass's two sums: h and h * x_hat.
    var hs = vec4<f32>(0.0);
    var hxs = vec4<f32>(0.0);
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        let h = grad4(base + i, lanes) * weight4(i, lanes);
        hs += h;
        hxs += h * (load4(base + i, lanes) - mean) * rstd;
    }
    for (; i < len; i += lanes) {
        let h = f32(grad[base + i]) * weight_at(i);
        hs.x += h;
        hxs.x += h * (load(base + i) - mean) * rstd;
    }
    let h_mean = row_total(REDUCE_SUM, (hs.x + hs.y) + (hs.z + hs.w)) / k;
    let hx_mean = row_total(REDUCE_SUM, (hxs.x + hxs.y) + (hxs.z + hxs.w)) / k;

    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        let g = grad4(base + i, lanes);
        let x_hat = (load4(base + i, lanes) - mean) * rstd;
        store4(base + i, lanes, rstd * (g * weight4(i, lanes) - h_mean - x_hat * hx_mean));
        if (params.has_weight != 0u) {
            store_products4(base + i, lanes, g * x_hat);
        }
    }
    for (; i < len; i += lanes) {
        let g = f32(grad[base + i]);
        let x_hat = (load(base + i) - mean) * rstd;
        store(base + i, rstd * (g * weight_at(i) - h_mean - x_hat * hx_mean));
        if (params.has_weight != 0u) {
            products[base + i] = T(g * x_hat);
        }
    }
}
