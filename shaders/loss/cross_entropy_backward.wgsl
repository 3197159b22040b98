// Gradient of cross_entropy.wgsl with respect to the logits, in one pass:
// dlogits[r, j] = dloss[r] * (softmax(row)[j] - target[j]), where the target
// distribution is (1 - s) * one_hot + s / classes. `lanes` invocations per row, as in
// cross_entropy.wgsl.
// kiln:constants workgroup reduce_ops reduce_combine row_place row_total
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const REDUCE_SUM: u32 = 0u;
const REDUCE_MEAN: u32 = 1u;
const REDUCE_MAX: u32 = 2u;
const REDUCE_MIN: u32 = 3u;
const REDUCE_PROD: u32 = 4u;
const REDUCE_ARGMAX: u32 = 5u;
const REDUCE_ARGMIN: u32 = 6u;
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
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    classes: u32,
    smoothing: f32,
    // invocations per row: a power of two dividing WORKGROUP
    lanes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
// [rows], the gradient of each row's loss (a mean's: a constant, computed here)
@group(0) @binding(1) var<storage, read> dloss: array<T>;
fn dloss_at(i: u32) -> f32 { return f32(dloss[i]); }
// kiln:load end
// [rows, classes]
@group(0) @binding(2) var<storage, read> logits: array<T>;
// [rows], validated to lie in [0, classes)
@group(0) @binding(3) var<storage, read> targets: array<i32>;
// [rows, classes]
@group(0) @binding(4) var<storage, read_write> dlogits: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(inv: RowInvocation) {
    let lanes = params.lanes;
    let place = row_start(inv, lanes);
    let row = place.x;
    let lane = place.y;
    // A slot past the last row reads and writes nothing, but meets every barrier.
    let k = select(0u, params.classes, row < params.rows);
    let base = row * params.classes;
    var m = bitcast<f32>(0xff800000u);
    for (var j = lane; j < k; j += lanes) { m = max(m, f32(logits[base + j])); }
    let row_max = row_total(REDUCE_MAX, m);
    var s = 0.0;
    for (var j = lane; j < k; j += lanes) { s += exp(f32(logits[base + j]) - row_max); }
    let sum_exp = row_total(REDUCE_SUM, s);
    if (row >= params.rows) { return; }
    let g = dloss_at(row);
    let target_class = u32(targets[row]);
    let spread = params.smoothing / f32(params.classes);
    for (var j = lane; j < k; j += lanes) {
        let p = exp(f32(logits[base + j]) - row_max) / sum_exp;
        let t = select(0.0, 1.0 - params.smoothing, j == target_class) + spread;
        dlogits[base + j] = T(g * (p - t));
    }
}
