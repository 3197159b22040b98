//! A row's layer-norm statistics, written once for the forward and backward kernels
//! (`shaders/norm/`): the backward's `x_hat` must round as the forward's did. The
//! constants groups `norm_stats` (lanes per row, with `row_total`, `row_held` and the
//! kernel's `load`) and `norm_stats_serial` (one invocation per row, with the kernel's
//! one-argument `load4` over vec4s).

/// Elements (vec4s) the serial kernels add up before adding into a row's total,
/// keeping the rounding error near a tree's rather than growing with the row.
pub const NORM_CHUNK: u32 = 16;

/// A row's statistics and its normalisation, shared by both groups. The mean is taken
/// of the row less its first element: its rounding error is then relative to the
/// row's spread rather than its magnitude, so a row far from zero with a small spread
/// (a large `rstd`) keeps the digits of its deviations. From the row's mean itself, one
/// rounding of the mean moves every deviation alike, and the backward's
/// `x_hat * mean(h * x_hat)` turned that into errors of 2e-4 in rows of three values.
const ROW_STATS: &str = "\
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
";

pub(crate) fn norm_stats() -> String {
    format!("{ROW_STATS}{NORM_STATS}")
}

pub(crate) fn norm_stats_serial() -> String {
    format!("{ROW_STATS}{NORM_STATS_SERIAL}")
}

const NORM_STATS: &str = "\
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
";

const NORM_STATS_SERIAL: &str = "\
// A row's statistics from the `k4` vec4s at `base`, the variance from the deviations in
// a second pass, each sum in chunks of NORM_CHUNK.
fn norm_stats(base: u32, k4: u32, eps: f32) -> RowStats {
    let k = f32(4u * k4);
    var shift = 0.0;
    if (k4 > 0u) {
        shift = load4(base).x;
    }
    var sum = vec4<f32>();
    for (var i0 = 0u; i0 < k4; i0 += NORM_CHUNK) {
        var part = vec4<f32>();
        for (var i = i0; i < min(i0 + NORM_CHUNK, k4); i++) { part += load4(base + i) - shift; }
        sum += part;
    }
    let mean = ((sum.x + sum.y) + (sum.z + sum.w)) / k;
    var squares = vec4<f32>();
    for (var i0 = 0u; i0 < k4; i0 += NORM_CHUNK) {
        var part = vec4<f32>();
        for (var i = i0; i < min(i0 + NORM_CHUNK, k4); i++) {
            let d = load4(base + i) - shift - mean;
            part += d * d;
        }
        squares += part;
    }
    let variance = ((squares.x + squares.y) + (squares.z + squares.w)) / k;
    return RowStats(shift, mean, 1.0 / sqrt(variance + eps));
}
";
