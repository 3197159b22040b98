// Fused scaled dot-product attention (kiln-core's AttentionSpec), forward. A workgroup
// takes ATTENTION_ROWS / params.lanes queries of one head, params.lanes invocations
// each (block_rows), and walks the keys in tiles of ATTENTION_TILE staged in workgroup
// memory. Each invocation keeps a running maximum, sum and output over its keys (an
// online softmax), so the scores are never written out; a query's lanes merge theirs,
// and it writes its output row and the log-sum-exp of its scores, from which the
// backward kernels recompute the softmax. Keys a causal query does not see are never
// read. Rows of up to 4 * ATTENTION_QUADS features; math in f32.
// kiln:constants attention attention_keys
// Generated from kiln's op table and shader_constants.rs; do not edit.
const ATTENTION_ROWS: u32 = 64u;
const ATTENTION_TILE: u32 = 16u;
const ATTENTION_QUADS: u32 = 16u;
const ATTENTION_MERGE_QUADS: u32 = 4u;
// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}
fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}
// By its bits, as WGSL may assume no infinities.
fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == 0xff800000u;
}
// Rows (queries, or keys) a workgroup takes: each is walked by params.lanes
// neighbouring invocations, its lanes, which take every lanes-th row of the other
// operand and add up what they found at the end (`sum_lanes`).
fn block_rows() -> u32 {
    return ATTENTION_ROWS / params.lanes;
}
// Invocation `lid`'s row within its workgroup's block, and its lane among the row's.
fn row_and_lane(lid: u32) -> vec2<u32> {
    return vec2<u32>(lid / params.lanes, lid % params.lanes);
}
// The head and first row of this workgroup's block of block_rows() rows (of `rows` a
// head); past the last head for the workgroups past the end.
fn block_of(wid: vec3<u32>, groups: vec3<u32>, rows: u32) -> vec2<u32> {
    let per = block_rows();
    let blocks = (rows + per - 1u) / per;
    let group = wid.x + wid.y * groups.x;
    return vec2<u32>(group / blocks, (group % blocks) * per);
}
// Keys query i sees: a causal query those up to its own position.
fn keys_seen(i: u32) -> u32 {
    if (params.causal != 0u) {
        return min(i + 1u, params.keys);
    }
    return params.keys;
}
fn head_start(strides: vec4<u32>, offset: u32, head: u32) -> u32 {
    return offset + (head / params.batch1) * strides.x + (head % params.batch1) * strides.y;
}
// Features 4c..4c+3 of row `row` of operand `which`, zeros past `features`.
fn quad(which: u32, strides: vec4<u32>, start: u32, row: u32, c: u32, features: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    let at = start + row * strides.z;
    let f = 4u * c;
    if (f < features) { r.x = element(which, at + f * strides.w); }
    if (f + 1u < features) { r.y = element(which, at + (f + 1u) * strides.w); }
    if (f + 2u < features) { r.z = element(which, at + (f + 2u) * strides.w); }
    if (f + 3u < features) { r.w = element(which, at + (f + 3u) * strides.w); }
    return r;
}
// Features 4c.. of row `row` of head `head` of the output placed at `strides` and
// `offset`, those before `features`.
fn store_quad(strides: vec4<u32>, offset: u32, head: u32, row: u32, c: u32, features: u32, x: vec4<f32>) {
    let at = head_start(strides, offset, head) + row * strides.z;
    let f = 4u * c;
    if (f < features) { put(at + f * strides.w, x.x); }
    if (f + 1u < features) { put(at + (f + 1u) * strides.w, x.y); }
    if (f + 2u < features) { put(at + (f + 2u) * strides.w, x.z); }
    if (f + 3u < features) { put(at + (f + 3u) * strides.w, x.w); }
}
var<workgroup> lane_sums: array<array<vec4<f32>, ATTENTION_MERGE_QUADS>, ATTENTION_ROWS>;
// `acc` times `weight`, summed over the row's lanes for lane 0 (in lane order, so the
// bits do not depend on timing), as it was for the others. From uniform control flow
// (it has barriers), with params.lanes > 1. The arrays pass by value: through a
// pointer, llvmpipe kept them in memory all through the kernels' loops, split or not.
fn sum_lanes(acc: array<vec4<f32>, ATTENTION_QUADS>, weight: f32, lid: u32) -> array<vec4<f32>, ATTENTION_QUADS> {
    let lanes = params.lanes;
    var sum = acc;
    for (var c0 = 0u; c0 < ATTENTION_QUADS; c0 += ATTENTION_MERGE_QUADS) {
        workgroupBarrier();
        for (var cc = 0u; cc < ATTENTION_MERGE_QUADS; cc++) {
            lane_sums[lid][cc] = acc[c0 + cc] * weight;
        }
        workgroupBarrier();
        if (lid % lanes == 0u) {
            for (var cc = 0u; cc < ATTENTION_MERGE_QUADS; cc++) {
                var s = lane_sums[lid][cc];
                for (var x = 1u; x < lanes; x++) {
                    s += lane_sums[lid + x][cc];
                }
                sum[c0 + cc] = s;
            }
        }
    }
    return sum;
}
var<workgroup> k_tile: array<array<vec4<f32>, ATTENTION_QUADS>, ATTENTION_TILE>;
var<workgroup> v_tile: array<array<vec4<f32>, ATTENTION_QUADS>, ATTENTION_TILE>;
// Keys t0.. into the tiles (past the last key: copies of it, never used).
fn stage_keys(t0: u32, head: u32, lid: u32) {
    let ks = head_start(params.k_strides, params.offsets.y, head);
    let vs = head_start(params.v_strides, params.offsets.z, head);
    for (var e = lid; e < ATTENTION_TILE * ATTENTION_QUADS; e += ATTENTION_ROWS) {
        let jj = e / ATTENTION_QUADS;
        let c = e % ATTENTION_QUADS;
        let j = min(t0 + jj, params.keys - 1u);
        k_tile[jj][c] = quad(K, params.k_strides, ks, j, c, params.head_dim);
        v_tile[jj][c] = quad(V, params.v_strides, vs, j, c, params.value_dim);
    }
}
// kiln:end

struct Params {
    queries: u32,
    keys: u32,
    head_dim: u32,
    value_dim: u32,
    // size of the second batch dim; head = b0 * batch1 + b1
    batch1: u32,
    heads: u32,
    causal: u32,
    scale: f32,
    // batch0 stride, batch1 stride, row stride, feature stride, in elements
    q_strides: vec4<u32>,
    k_strides: vec4<u32>,
    v_strides: vec4<u32>,
    // q, k, v and the output's gradient's offsets, in elements
    offsets: vec4<u32>,
    // Backward: strides of the output's gradient, and of the gradients of q, k and v
    grad_strides: vec4<u32>,
    dq_strides: vec4<u32>,
    dk_strides: vec4<u32>,
    dv_strides: vec4<u32>,
    // Invocations a row is walked by (block_rows): 1, or a split row's lanes.
    lanes: u32,
    // Backward: where the gradients of q, k and v start in their one buffer
    dq_offset: u32,
    dk_offset: u32,
    dv_offset: u32,
    // Strides of the output (written forward, read backward): a dense layout
    output_strides: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
// [heads, queries, value_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// [heads, queries]
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

// Operands `quad` reads, by `element`, and the output `store_quad` writes, by `put`.
const Q: u32 = 0u;
const K: u32 = 1u;
const V: u32 = 2u;
fn element(which: u32, i: u32) -> f32 {
    switch which {
        case Q: { return q[i]; }
        case K: { return k[i]; }
        default: { return v[i]; }
    }
}
fn put(i: u32, x: f32) {
    out[i] = x;
}

// The row's maximum score and sum of exponentials over its lanes' (m, l), NaN where
// a lane met one; and this lane's weight, exp(m - maximum). From uniform control flow.
var<workgroup> lane_stats: array<vec2<f32>, ATTENTION_ROWS>;
fn merge_stats(m: f32, l: f32, lid: u32) -> vec3<f32> {
    let first = lid - lid % params.lanes;
    lane_stats[lid] = vec2<f32>(m, l);
    workgroupBarrier();
    var big = neg_inf();
    for (var x = 0u; x < params.lanes; x++) {
        let other = lane_stats[first + x].x;
        big = select(max(big, other), nan(), is_nan(big) || is_nan(other));
    }
    // A lane whose scores were all -inf holds nothing (l = 0) and weighs 0: exp(-inf -
    // -inf) would be NaN.
    var total = 0.0;
    for (var x = 0u; x < params.lanes; x++) {
        let s = lane_stats[first + x];
        total += select(s.y * exp(s.x - big), 0.0, is_neg_inf(s.x));
    }
    return vec3<f32>(big, total, select(exp(m - big), 0.0, is_neg_inf(m)));
}

@compute @workgroup_size(ATTENTION_ROWS)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let block = block_of(wid, groups, params.queries);
    // Whole workgroups leave: the barriers below stay uniform.
    if (block.x >= params.heads) {
        return;
    }
    let head = block.x;
    let first = block.y;
    let place = row_and_lane(lid);
    let row = place.x;
    let lane = place.y;
    // Rows past the last query redo it, and write nothing.
    let i = min(first + row, params.queries - 1u);
    let qs = head_start(params.q_strides, params.offsets.x, head);
    let dq = (params.head_dim + 3u) / 4u;
    let dv = (params.value_dim + 3u) / 4u;
    // Constant loop bounds with a guard inside, here and below: indexed by a counter
    // with a bound known only at run time, the arrays would leave registers.
    var qr: array<vec4<f32>, ATTENTION_QUADS>;
    var o: array<vec4<f32>, ATTENTION_QUADS>;
    for (var c = 0u; c < ATTENTION_QUADS; c++) {
        if (c < dq) {
            qr[c] = quad(Q, params.q_strides, qs, i, c, params.head_dim) * params.scale;
        }
        o[c] = vec4<f32>(0.0);
    }
    var m = neg_inf();
    var l = 0.0;
    let seen = keys_seen(i);
    // The block's last query sees the most keys.
    let end = keys_seen(min(first + block_rows(), params.queries) - 1u);
    for (var t0 = 0u; t0 < end; t0 += ATTENTION_TILE) {
        workgroupBarrier();
        stage_keys(t0, head, lid);
        workgroupBarrier();
        let n = min(ATTENTION_TILE, seen - min(seen, t0));
        for (var jj = lane; jj < n; jj += params.lanes) {
            var dot = vec4<f32>(0.0);
            for (var c = 0u; c < ATTENTION_QUADS; c++) {
                if (c < dq) {
                    dot += qr[c] * k_tile[jj][c];
                }
            }
            let s = dot.x + dot.y + dot.z + dot.w;
            let next = select(max(m, s), nan(), is_nan(m) || is_nan(s));
            // While every score so far is -inf (a key the data rules out), nothing is
            // held and this key weighs 0, as a softmax over the whole row gives it:
            // exp(-inf - -inf) would be NaN.
            let none = is_neg_inf(next);
            let rescale = select(exp(m - next), 1.0, none);
            let p = select(exp(s - next), 0.0, none);
            l = l * rescale + p;
            for (var c = 0u; c < ATTENTION_QUADS; c++) {
                if (c < dv) {
                    o[c] = o[c] * rescale + p * v_tile[jj][c];
                }
            }
            m = next;
        }
    }
    // A split row: each lane saw every lanes-th key; rescaled to the row's maximum,
    // their sums add up.
    if (params.lanes > 1u) {
        let stats = merge_stats(m, l, lid);
        m = stats.x;
        l = stats.y;
        o = sum_lanes(o, stats.z, lid);
    }
    if (lane == 0u && first + row < params.queries) {
        for (var c = 0u; c < ATTENTION_QUADS; c++) {
            if (c < dv) {
                store_quad(params.output_strides, 0u, head, i, c, params.value_dim, o[c] / l);
            }
        }
        lse[head * params.queries + i] = m + log(l);
    }
}
