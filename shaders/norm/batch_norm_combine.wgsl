// Batch norm's channels cut into parts, put together: one invocation per channel over
// its parts' `partials` (norm/batch_norm_stats.wgsl's or batch_norm_backward_sums.wgsl's).
// Statistics (`sums` 0): the parts' means and squared deviations merged exactly (the
// channel's mean from the parts' means, and each part's deviations from it: Chan et al.'s
// pairwise update, all parts at once), then the variance and 1 / sqrt(variance + eps).
// Sums (`sums` 1): each of the two sums added up. With `running`, the statistics move
// each channel's running mean and variance toward the batch's, as batch_norm_stats.wgsl
// does without parts.
// kiln:constants workgroup running_statistics
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
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
    parts: u32,
    part_len: u32,
    // elements per channel
    n: u32,
    eps: f32,
    // 1 for the backward's sums, 0 for the statistics
    sums: u32,
    // as batch_norm_stats.wgsl's
    running: u32,
    decay: f32,
    one_minus_decay: f32,
    var_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [channels, parts] per quantity (then, for the statistics, the channels' first
// elements)
@group(0) @binding(1) var<storage, read> partials: array<f32>;
// [channels] each: the means, variances and 1 / sqrt(variance + eps); or the two sums
// (`third` one element, never written)
@group(0) @binding(2) var<storage, read_write> first: array<T>;
@group(0) @binding(3) var<storage, read_write> second: array<T>;
@group(0) @binding(4) var<storage, read_write> third: array<T>;
// [channels] each with `running`, written over (one element each, never written,
// otherwise)
@group(0) @binding(5) var<storage, read_write> running_means: array<T>;
@group(0) @binding(6) var<storage, read_write> running_vars: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let channel = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (channel >= params.channels) {
        return;
    }
    let slots = params.channels * params.parts;
    let base = channel * params.parts;
    if (params.sums == 1u) {
        var a = 0.0;
        var b = 0.0;
        for (var p = 0u; p < params.parts; p++) {
            a += partials[base + p];
            b += partials[slots + base + p];
        }
        first[channel] = T(a);
        second[channel] = T(b);
        return;
    }
    let n = f32(params.n);
    var total = 0.0;
    for (var p = 0u; p < params.parts; p++) {
        let count = min(params.part_len, params.n - p * params.part_len);
        total += f32(count) * partials[base + p];
    }
    let mean = total / n;
    var m2 = 0.0;
    for (var p = 0u; p < params.parts; p++) {
        let count = min(params.part_len, params.n - p * params.part_len);
        let d = partials[base + p] - mean;
        m2 += partials[slots + base + p] + f32(count) * d * d;
    }
    let variance = m2 / n;
    let batch_mean = T(partials[2u * slots + channel] + mean);
    let batch_var = T(variance);
    first[channel] = batch_mean;
    second[channel] = batch_var;
    third[channel] = T(1.0 / sqrt(variance + params.eps));
    move_running(channel, batch_mean, batch_var);
}
