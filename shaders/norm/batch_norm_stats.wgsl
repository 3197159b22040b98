// Batch norm's statistics over a compact [outer, channels, inner] tensor (every dim of
// [n, c, ..] but the channels'): each channel's elements are a row, `lanes` invocations
// to a channel (or to each of its `parts`) as the row kernels take a row
// (reduce/reduce.wgsl), read where they lie. Two passes: the mean, then the sum of the
// squared deviations, each of the elements less the channel's first, so that a
// channel far from zero for its spread keeps its digits. A channel cut into parts (a
// few long channels would otherwise run on a workgroup each) writes each part's mean
// and squared deviations to `partials`, which norm/batch_norm_combine.wgsl merges.
// With `running`, the channel's running mean and variance move toward the batch's where
// they are written (here, or with parts in the combine kernel): a training step's batch
// norm then takes no kernel for them.
// Math in f32; ROW_LOADS loads in flight per invocation.
// kiln:constants workgroup reduce_ops row_loads_only reduce_combine row_place row_total channel_at running_statistics
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
fn moving_average(decay: f32, one_minus_decay: f32, average: f32, value: f32) -> f32 {
    return decay * average + one_minus_decay * value;
}
// Moves channel `c`'s running mean and variance toward the batch's, with `running`.
fn move_running(c: u32, batch_mean: T, batch_var: T) {
    if (params.running != 1u) {
        return;
    }
    let d = params.decay;
    let e = params.one_minus_decay;
    running_means[c] = T(moving_average(d, e, f32(running_means[c]), f32(batch_mean)));
    let value = params.var_scale * f32(batch_var);
    running_vars[c] = T(moving_average(d, e, f32(running_vars[c]), value));
}
// kiln:end
alias T = f32;

struct Params {
    channels: u32,
    outer: u32,
    inner: u32,
    // invocations per channel: a power of two dividing WORKGROUP
    lanes: u32,
    eps: f32,
    // each channel's elements are cut into `parts` of `part_len` (the last may be
    // shorter)
    parts: u32,
    part_len: u32,
    // 1: move `running_means` and `running_vars` (the statistics' only)
    running: u32,
    // the running statistics' moving average, the variance's value times `var_scale`
    decay: f32,
    one_minus_decay: f32,
    var_scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [outer, channels, inner]
@group(0) @binding(1) var<storage, read> input: array<T>;
// [channels] each: the means, the biased variances, and 1 / sqrt(variance + eps)
@group(0) @binding(2) var<storage, read_write> means: array<T>;
@group(0) @binding(3) var<storage, read_write> variances: array<T>;
@group(0) @binding(4) var<storage, read_write> rstds: array<T>;
// With parts: [channels, parts] means of each part less the channel's first element,
// [channels, parts] sums of each part's squared deviations from its mean, then
// [channels] first elements (one element, never written, without parts)
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
// [channels] each with `running` and no parts, written over (one element each, never
// written, otherwise)
@group(0) @binding(6) var<storage, read_write> running_means: array<T>;
@group(0) @binding(7) var<storage, read_write> running_vars: array<T>;

// Element j of this invocation's channel.
fn load(j: u32) -> f32 {
    return f32(input[channel_at(j)]);
}

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) < 0x7f800000u;
}

@compute @workgroup_size(WORKGROUP)
fn main(inv: RowInvocation) {
    let lanes = params.lanes;
    let place = row_start(inv, lanes);
    let slot = place.x;
    channel = slot / params.parts;
    let lane = place.y;
    // A slot past the last part reads and writes nothing, but meets every barrier.
    let live = channel < params.channels;
    let total = params.outer * params.inner;
    let start = (slot % params.parts) * params.part_len;
    let len = select(0u, min(params.part_len, total - start), live);
    let end = start + len;
    // Deviations from an infinite first element would all be NaN: such a channel takes
    // no shift, and its mean is infinite, as PyTorch's.
    var shift = 0.0;
    if (live) {
        shift = load(0u);
    }
    if (!is_finite(shift)) {
        shift = 0.0;
    }
    var sum = vec4<f32>(0.0);
    var i = start + lane;
    for (; i + (ROW_LOADS - 1u) * lanes < end; i += ROW_LOADS * lanes) {
        sum += load4(i, lanes) - shift;
    }
    for (; i < end; i += lanes) {
        sum.x += load(i) - shift;
    }
    let n = f32(max(len, 1u));
    let mean = row_total(REDUCE_SUM, (sum.x + sum.y) + (sum.z + sum.w)) / n;
    var squares = vec4<f32>(0.0);
    i = start + lane;
    for (; i + (ROW_LOADS - 1u) * lanes < end; i += ROW_LOADS * lanes) {
        let d = load4(i, lanes) - shift - mean;
        squares += d * d;
    }
    for (; i < end; i += lanes) {
        let d = load(i) - shift - mean;
        squares.x += d * d;
    }
    let m2 = row_total(REDUCE_SUM, (squares.x + squares.y) + (squares.z + squares.w));
    if (lane != 0u || !live) {
        return;
    }
    if (params.parts == 1u) {
        let variance = m2 / n;
        let batch_mean = T(shift + mean);
        let batch_var = T(variance);
        means[channel] = batch_mean;
        variances[channel] = batch_var;
        rstds[channel] = T(1.0 / sqrt(variance + params.eps));
        move_running(channel, batch_mean, batch_var);
        return;
    }
    let slots = params.channels * params.parts;
    partials[slot] = mean;
    partials[slots + slot] = m2;
    if (start == 0u) {
        partials[2u * slots + channel] = shift;
    }
}
