// Index of the first maximum (REDUCE_ARGMAX) or minimum (REDUCE_ARGMIN), or of the
// first NaN, of each row of a compact [rows, k] tensor, `lanes` invocations per row as in
// reduce.wgsl; ties go to the lower index.
// kiln:constants workgroup reduce_ops row_place row_best
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const REDUCE_SUM: u32 = 0u;
const REDUCE_MEAN: u32 = 1u;
const REDUCE_MAX: u32 = 2u;
const REDUCE_MIN: u32 = 3u;
const REDUCE_PROD: u32 = 4u;
const REDUCE_ARGMAX: u32 = 5u;
const REDUCE_ARGMIN: u32 = 6u;
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
var<workgroup> best_value: array<f32, WORKGROUP>;
var<workgroup> best_index: array<u32, WORKGROUP>;
// The index of the row's best (value, index) pair; the kernel brings `better`.
fn row_best(op: u32, v: f32, i: u32) -> u32 {
    let lane = row_slot % row_lanes;
    best_value[row_slot] = v;
    best_index[row_slot] = i;
    workgroupBarrier();
    for (var stride = row_lanes / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            let w = best_value[row_slot + stride];
            let j = best_index[row_slot + stride];
            if (better(op, w, j, best_value[row_slot], best_index[row_slot])) {
                best_value[row_slot] = w;
                best_index[row_slot] = j;
            }
        }
        workgroupBarrier();
    }
    let best = best_index[row_slot - lane];
    workgroupBarrier();
    return best;
}
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    op: u32,
    // invocations per row: a power of two dividing WORKGROUP
    lanes: u32,
    // Each row is cut into `parts` of `part_len` elements (the last may be shorter),
    // each giving the index in the row of its best into output [row, part].
    parts: u32,
    part_len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
@group(0) @binding(1) var<storage, read> input: array<T>;
// [rows]
@group(0) @binding(2) var<storage, read_write> output: array<i32>;

// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Does candidate (v, i) beat the incumbent (w, j)?
fn better(op: u32, v: f32, i: u32, w: f32, j: u32) -> bool {
    if (j == 0xffffffffu) { return true; }
    if (i == 0xffffffffu) { return false; }
    // NaN beats every number, and the first NaN wins (PyTorch's argmax and argmin).
    if (is_nan(w)) { return is_nan(v) && i < j; }
    if (is_nan(v)) { return true; }
    if (v == w) { return i < j; }
    switch op {
        case REDUCE_ARGMAX: { return v > w; }
        case REDUCE_ARGMIN: { return v < w; }
        default: { return false; }
    }
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
    var v = 0.0;
    var idx = 0xffffffffu;
    for (var i = lane; i < k; i += lanes) {
        let x = f32(input[base + i]);
        if (better(params.op, x, i, v, idx)) {
            v = x;
            idx = i;
        }
    }
    let best = row_best(params.op, v, idx);
    if (lane == 0u && live) {
        output[part] = i32(start + best);
    }
}
