// The gradient of fused attention (attention.wgsl) for its queries. A workgroup takes
// ATTENTION_ROWS / params.lanes queries of one head, params.lanes invocations each, and
// walks the keys in tiles as the forward does, recomputing each score's softmax weight p from the forward's
// log-sum-exp: dq_i = scale * sum_j p_ij (g_i . v_j - delta_i) k_j, where g_i is the
// output's gradient and delta_i = g_i . out_i. It writes delta too, for the keys'
// kernel (attention_backward_keys.wgsl). Math in f32.
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
// [heads, queries, value_dim]: the forward's output (compact), and its gradient (at
// params.grad_strides)
@group(0) @binding(4) var<storage, read> out: array<f32>;
@group(0) @binding(5) var<storage, read> grad: array<f32>;
// [heads, queries]
@group(0) @binding(6) var<storage, read> lse: array<f32>;
// The gradients of q, k and v: this kernel writes q's, [heads, queries, head_dim] at
// params.dq_strides and params.dq_offset
@group(0) @binding(7) var<storage, read_write> grads: array<f32>;
// [heads, queries]
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;

// Operands `quad` reads, by `element`, and the output `store_quad` writes, by `put`.
const Q: u32 = 0u;
const K: u32 = 1u;
const V: u32 = 2u;
const OUT: u32 = 3u;
const GRAD: u32 = 4u;
fn element(which: u32, i: u32) -> f32 {
    switch which {
        case Q: { return q[i]; }
        case K: { return k[i]; }
        case V: { return v[i]; }
        case OUT: { return out[i]; }
        default: { return grad[i]; }
    }
}
fn put(i: u32, x: f32) {
    grads[i] = x;
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
    let lane = place.y;
    // Rows past the last query redo it, and write nothing.
    let i = min(first + place.x, params.queries - 1u);
    let row = head * params.queries + i;
    let qs = head_start(params.q_strides, params.offsets.x, head);
    let dq_quads = (params.head_dim + 3u) / 4u;
    let dv_quads = (params.value_dim + 3u) / 4u;
    let os = head_start(params.output_strides, 0u, head);
    let gs = head_start(params.grad_strides, params.offsets.w, head);
    // Constant loop bounds with a guard inside, as in attention.wgsl.
    var qr: array<vec4<f32>, ATTENTION_QUADS>;
    var g: array<vec4<f32>, ATTENTION_QUADS>;
    var acc: array<vec4<f32>, ATTENTION_QUADS>;
    var d4 = vec4<f32>(0.0);
    for (var c = 0u; c < ATTENTION_QUADS; c++) {
        if (c < dq_quads) {
            qr[c] = quad(Q, params.q_strides, qs, i, c, params.head_dim) * params.scale;
        }
        if (c < dv_quads) {
            g[c] = quad(GRAD, params.grad_strides, gs, i, c, params.value_dim);
            d4 += g[c] * quad(OUT, params.output_strides, os, i, c, params.value_dim);
        }
        acc[c] = vec4<f32>(0.0);
    }
    let d = d4.x + d4.y + d4.z + d4.w;
    let l = lse[row];
    let seen = keys_seen(i);
    let end = keys_seen(min(first + block_rows(), params.queries) - 1u);
    for (var t0 = 0u; t0 < end; t0 += ATTENTION_TILE) {
        workgroupBarrier();
        stage_keys(t0, head, lid);
        workgroupBarrier();
        let n = min(ATTENTION_TILE, seen - min(seen, t0));
        for (var jj = lane; jj < n; jj += params.lanes) {
            var s4 = vec4<f32>(0.0);
            var dp4 = vec4<f32>(0.0);
            for (var c = 0u; c < ATTENTION_QUADS; c++) {
                if (c < dq_quads) {
                    s4 += qr[c] * k_tile[jj][c];
                }
                if (c < dv_quads) {
                    dp4 += g[c] * v_tile[jj][c];
                }
            }
            let p = exp(s4.x + s4.y + s4.z + s4.w - l);
            let ds = p * (dp4.x + dp4.y + dp4.z + dp4.w - d);
            for (var c = 0u; c < ATTENTION_QUADS; c++) {
                if (c < dq_quads) {
                    acc[c] += ds * k_tile[jj][c];
                }
            }
        }
    }
    // A split row: each lane saw every lanes-th key.
    if (params.lanes > 1u) {
        acc = sum_lanes(acc, 1.0, lid);
    }
    if (lane == 0u && first + place.x < params.queries) {
        for (var c = 0u; c < ATTENTION_QUADS; c++) {
            if (c < dq_quads) {
                store_quad(params.dq_strides, params.dq_offset, head, i, c, params.head_dim, acc[c] * params.scale);
            }
        }
        delta[row] = d;
    }
}
