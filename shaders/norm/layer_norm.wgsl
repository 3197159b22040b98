// Fused layer norm over each row of a compact [rows, k] tensor, `lanes` invocations per
// row as in reduce/reduce.wgsl: mean, then biased variance of the deviations
// (`norm_stats`), then scale and shift. A lane holds its first two stretches of
// ROW_LOADS elements through the three passes (the whole row up to 2 * ROW_LOADS *
// lanes), and reads any more in each.
// kiln:constants workgroup reduce_ops row_held reduce_combine row_place row_total norm_stats
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
// Where a lane's stretch of a row lies: elements s, s + lanes, s + 2 lanes, s + 3 lanes of
// the `len` from `base`, `count` of them inside the row. Places past the row are its last
// element, so that every load reads the row; an empty row (a spare slot) loads nothing,
// and its places are `base` (column 0).
struct Stretch {
    at: vec4<u32>,
    count: u32,
}
fn stretch_at(base: u32, s: u32, lanes: u32, len: u32) -> Stretch {
    let places = vec4<u32>(s) + vec4<u32>(0u, 1u, 2u, 3u) * lanes;
    let inside = places < vec4<u32>(len);
    var t = Stretch(vec4<u32>(base), 0u);
    if (inside.x) {
        t.count = u32(inside.x) + u32(inside.y) + u32(inside.z) + u32(inside.w);
        t.at = vec4<u32>(base) + min(places, vec4<u32>(len - 1u));
    }
    return t;
}
fn stretch_load(t: Stretch) -> vec4<f32> {
    if (t.count == 0u) { return vec4<f32>(0.0); }
    return vec4<f32>(load(t.at.x), load(t.at.y), load(t.at.z), load(t.at.w));
}
// The values of stretch `t`, which starts at `s`: from registers for the lane's first two
// (`x` from `lane`, `x2` from `lane + step`), else loaded.
fn held_or_load(t: Stretch, s: u32, lane: u32, step: u32, x: vec4<f32>, x2: vec4<f32>) -> vec4<f32> {
    if (s == lane) { return x; }
    if (s == lane + step) { return x2; }
    return stretch_load(t);
}
// `v` where the stretch holds the row's elements, `fill` past the row.
fn stretch_only(t: Stretch, v: vec4<f32>, fill: f32) -> vec4<f32> {
    return select(vec4<f32>(fill), v, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(t.count));
}
fn stretch_store(t: Stretch, v: vec4<f32>) {
    if (t.count > 0u) { store(t.at.x, v.x); }
    if (t.count > 1u) { store(t.at.y, v.y); }
    if (t.count > 2u) { store(t.at.z, v.z); }
    if (t.count > 3u) { store(t.at.w, v.w); }
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
// A row's statistics, the variance from the deviations in a second pass: the `len`
// elements from `base` (none for a spare slot) of a row of `k`, read by lane `lane` of
// `lanes`, whose first two stretches (`row_held`) hold `x` and `x2`. Every lane gets
// them.
fn norm_stats(x: vec4<f32>, x2: vec4<f32>, base: u32, len: u32, k: f32, lane: u32, lanes: u32, eps: f32) -> RowStats {
    let step = ROW_LOADS * lanes;
    var shift = 0.0;
    if (len > 0u) {
        shift = load(base);
    }
    var sum = vec4<f32>(0.0);
    for (var s = lane; s < len; s += step) {
        let t = stretch_at(base, s, lanes, len);
        sum += stretch_only(t, held_or_load(t, s, lane, step, x, x2) - shift, 0.0);
    }
    let mean = row_total(REDUCE_SUM, (sum.x + sum.y) + (sum.z + sum.w)) / k;
    var squares = vec4<f32>(0.0);
    for (var s = lane; s < len; s += step) {
        let t = stretch_at(base, s, lanes, len);
        let d = stretch_only(t, held_or_load(t, s, lane, step, x, x2) - shift - mean, 0.0);
        squares += d * d;
    }
    let q = (squares.x + squares.y) + (squares.z + squares.w);
    return RowStats(shift, mean, 1.0 / sqrt(row_total(REDUCE_SUM, q) / k + eps));
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

// Stretch `t` of the row from `base`, normalised, scaled and shifted.
fn affine(t: Stretch, base: u32, x: vec4<f32>, stats: RowStats) -> vec4<f32> {
    let c = t.at - vec4<u32>(base);
    let w = vec4<f32>(f32(weight[c.x]), f32(weight[c.y]), f32(weight[c.z]), f32(weight[c.w]));
    let b = vec4<f32>(f32(bias[c.x]), f32(bias[c.y]), f32(bias[c.z]), f32(bias[c.w]));
    return normalized(x, stats) * w + b;
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
    let x = stretch_load(stretch_at(base, lane, lanes, len));
    let x2 = stretch_load(stretch_at(base, lane + step, lanes, len));
    let stats = norm_stats(x, x2, base, len, f32(params.k), lane, lanes, params.eps);

    for (var s = lane; s < len; s += step) {
        let t = stretch_at(base, s, lanes, len);
        stretch_store(t, affine(t, base, held_or_load(t, s, lane, step, x, x2), stats));
    }
}
