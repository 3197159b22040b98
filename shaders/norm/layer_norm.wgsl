// Fused layer norm over each row of a compact [rows, k] tensor, `lanes` invocations per
// row as in reduce/reduce.wgsl: mean, then biased variance of the deviations
// (`norm_stats`), then scale and shift. Each pass keeps ROW_LOADS loads in flight per
// invocation; the second and third reads of a row come from cache.
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
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [k]
@group(0) @binding(2) var<storage, read> weight: array<T>;
// [k]
@group(0) @binding(3) var<storage, read> bias: array<T>;
// [rows, k]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(4) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

// Columns `c`, `c + lanes`, ... of a row, normalised, scaled and shifted.
fn affine4(c: u32, lanes: u32, x: vec4<f32>, mean: f32, rstd: f32) -> vec4<f32> {
    let at = vec4<u32>(c, c + lanes, c + 2u * lanes, c + 3u * lanes);
    let w = vec4<f32>(f32(weight[at.x]), f32(weight[at.y]), f32(weight[at.z]), f32(weight[at.w]));
    let b = vec4<f32>(f32(bias[at.x]), f32(bias[at.y]), f32(bias[at.z]), f32(bias[at.w]));
    return (x - mean) * rstd * w + b;
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
    let step = ROW_LOADS * lanes;
    let stats = norm_stats(base, len, f32(params.k), lane, lanes, params.eps);
    let mean = stats.x;
    let rstd = stats.y;

    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        store4(base + i, lanes, affine4(i, lanes, load4(base + i, lanes), mean, rstd));
    }
    for (; i < len; i += lanes) {
        store(base + i, affine4(i, 0u, vec4<f32>(load(base + i)), mean, rstd).x);
    }
}
