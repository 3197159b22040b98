// Batch norm's backward sums over a compact [outer, channels, inner] input and its
// output's gradient: each channel's sum of the gradient and of the gradient times the
// normalised input, the bias's and the weight's gradients (whose sums the input's
// gradient needs too). Channels are rows, and long ones are cut into parts, as in
// norm/batch_norm_stats.wgsl: with parts, each part's two sums go to `partials`, which
// norm/batch_norm_combine.wgsl adds up. One pass, math in f32, ROW_LOADS loads of each
// in flight per invocation.
// kiln:constants workgroup reduce_ops row_loads_only reduce_combine row_place row_total channel_at
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
// The channel this invocation reads, of a compact [outer, channels, inner] tensor.
var<private> channel: u32;
// Where element j of the channel lies: place (j / inner, j % inner) of its [outer, inner].
fn channel_at(j: u32) -> u32 {
    let o = j / params.inner;
    return (o * params.channels + channel) * params.inner + j - o * params.inner;
}
// kiln:end
alias T = f32;

struct Params {
    channels: u32,
    outer: u32,
    inner: u32,
    // invocations per channel: a power of two dividing WORKGROUP
    lanes: u32,
    // unused: the statistics hold 1 / sqrt(variance + eps)
    eps: f32,
    // each channel's elements are cut into `parts` of `part_len` (the last may be
    // shorter)
    parts: u32,
    part_len: u32,
    // unused: the statistics' running averages
    running: u32,
    decay: f32,
    one_minus_decay: f32,
    var_scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [outer, channels, inner]: the norm's input
@group(0) @binding(1) var<storage, read> input: array<T>;
// [outer, channels, inner]: the gradient of its output
@group(0) @binding(2) var<storage, read> grad: array<T>;
// [channels] each: norm/batch_norm_stats.wgsl's means and 1 / sqrt(variance + eps)
@group(0) @binding(3) var<storage, read> means: array<T>;
@group(0) @binding(4) var<storage, read> rstds: array<T>;
// [channels] each: the sums of the gradient, and of the gradient times the normalised
// input
@group(0) @binding(5) var<storage, read_write> grad_sums: array<T>;
@group(0) @binding(6) var<storage, read_write> grad_x_hat_sums: array<T>;
// With parts: [2, channels, parts], each part's two sums (one element, never written,
// without parts)
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

// Element j of this invocation's channel.
fn load(j: u32) -> f32 {
    return f32(input[channel_at(j)]);
}
fn load_grad4(j: u32, lanes: u32) -> vec4<f32> {
    return vec4<f32>(
        f32(grad[channel_at(j)]),
        f32(grad[channel_at(j + lanes)]),
        f32(grad[channel_at(j + 2u * lanes)]),
        f32(grad[channel_at(j + 3u * lanes)]),
    );
}

@compute @workgroup_size(WORKGROUP)
fn main(inv: RowInvocation) {
    let lanes = params.lanes;
    let at = row_start(inv, lanes);
    let slot = at.x;
    channel = slot / params.parts;
    let lane = at.y;
    // A slot past the last part reads and writes nothing, but meets every barrier.
    let live = channel < params.channels;
    let start = (slot % params.parts) * params.part_len;
    let len = select(0u, min(params.part_len, params.outer * params.inner - start), live);
    let end = start + len;
    var mean = 0.0;
    if (live) {
        mean = f32(means[channel]);
    }
    var gs = vec4<f32>(0.0);
    var gxs = vec4<f32>(0.0);
    var i = start + lane;
    for (; i + (ROW_LOADS - 1u) * lanes < end; i += ROW_LOADS * lanes) {
        let g = load_grad4(i, lanes);
        gs += g;
        gxs += g * (load4(i, lanes) - mean);
    }
    for (; i < end; i += lanes) {
        let g = f32(grad[channel_at(i)]);
        gs.x += g;
        gxs.x += g * (load(i) - mean);
    }
    let g_sum = row_total(REDUCE_SUM, (gs.x + gs.y) + (gs.z + gs.w));
    let gx_sum = row_total(REDUCE_SUM, (gxs.x + gxs.y) + (gxs.z + gxs.w));
    if (lane != 0u || !live) {
        return;
    }
    let x_hat_sum = gx_sum * f32(rstds[channel]);
    if (params.parts == 1u) {
        grad_sums[channel] = T(g_sum);
        grad_x_hat_sums[channel] = T(x_hat_sum);
        return;
    }
    partials[slot] = g_sum;
    partials[params.channels * params.parts + slot] = x_hat_sum;
}
