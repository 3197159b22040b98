// Reduces each row of a compact [rows, k] tensor, `lanes` invocations per row and
// WORKGROUP / lanes rows per workgroup (short rows share a workgroup rather than leave
// most of it idle); `row_total` combines a row's lanes (kiln-wgpu's row_reduction.rs).
// Op codes are the REDUCE_* constants from kiln's op table; math in f32. Each
// invocation keeps ROW_LOADS loads in flight (one accumulator each): with one dependent
// load per iteration an H200 reached under half its copy bandwidth, too few bytes in
// flight to cover the memory latency.
// kiln:constants workgroup reduce_ops row_loads reduce_combine row_place row_total
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
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    op: u32,
    // invocations per part of a row: a power of two dividing WORKGROUP
    lanes: u32,
    // Each row is cut into `parts` of `part_len` elements (the last may be shorter),
    // each reduced by its own lanes into output [row, part]: a few long rows (a sum of
    // a whole tensor) would otherwise run on a workgroup each.
    parts: u32,
    part_len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [rows]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

fn combine4(op: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(combine(op, a.x, b.x), combine(op, a.y, b.y), combine(op, a.z, b.z), combine(op, a.w, b.w));
}

@compute @workgroup_size(WORKGROUP)
fn main(inv: RowInvocation) {
    let lanes = params.lanes;
    let place = row_start(inv, lanes);
    // This slot's part: its row, and where it starts in the row.
    let part = place.x;
    let row = part / params.parts;
    let start = (part % params.parts) * params.part_len;
    let lane = place.y;
    // A slot past the last part reads nothing, but meets every barrier.
    let live = row < params.rows;
    let k = select(0u, min(params.part_len, params.k - start), live);
    let base = row * params.k + start;
    let op = params.op;
    var a = vec4<f32>(identity(op));
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += ROW_LOADS * lanes) {
        a = combine4(op, a, load4(base + i, lanes));
    }
    for (; i < k; i += lanes) {
        a.x = combine(op, a.x, load(base + i));
    }
    var r = row_total(op, combine(op, combine(op, a.x, a.y), combine(op, a.z, a.w)));
    if (lane == 0u && live) {
        // Divided by the whole row's length: the parts of a mean are then summed.
        if (op == REDUCE_MEAN) { r = r / f32(params.k); }
        store(part, r);
    }
}
