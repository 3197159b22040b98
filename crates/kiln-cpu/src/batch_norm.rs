//! Batch norm's channel statistics and backward sums over compact `[outer, c, inner]`
//! data, in f64: the reference the GPU's channel kernels are checked against.

use crate::threads::map_indices;

/// A channel's elements, widened: `inner` consecutive values in each of `outer` blocks.
fn channel<T: Copy + Into<f64>>(
    x: &[T],
    ch: usize,
    [outer, c, inner]: [usize; 3],
) -> impl Iterator<Item = f64> + Clone + '_ {
    (0..outer).flat_map(move |o| x[(o * c + ch) * inner..][..inner].iter().map(|&v| v.into()))
}

/// Channels in parallel from this many elements in all.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// Each channel's mean, biased variance and `1 / sqrt(variance + eps)`. Channels in
/// parallel.
pub fn batch_norm_stats<T: Copy + Into<f64> + Sync>(
    x: &[T],
    dims: [usize; 3],
    eps: f64,
) -> [Vec<f64>; 3] {
    let [outer, c, inner] = dims;
    let n = (outer * inner) as f64;
    let stats = map_indices(c, x.len() >= PARALLEL_ELEMENTS, |ch| {
        let values = channel(x, ch, dims);
        let mean = values.clone().sum::<f64>() / n;
        let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        [mean, var, 1.0 / (var + eps).sqrt()]
    });
    [0, 1, 2].map(|k| stats.iter().map(|s| s[k]).collect())
}

/// Each channel's sum of `g` and of `g * (x - mean) * rstd`, given `[mean, rstd]`.
/// Channels in parallel.
pub fn batch_norm_backward_sums<T: Copy + Into<f64> + Sync>(
    x: &[T],
    g: &[T],
    [mean, rstd]: &[Vec<f64>; 2],
    dims: [usize; 3],
) -> [Vec<f64>; 2] {
    let sums = map_indices(dims[1], x.len() >= PARALLEL_ELEMENTS, |ch| {
        let pairs = channel(x, ch, dims).zip(channel(g, ch, dims));
        let (s1, s2) = pairs.fold((0.0, 0.0), |(s1, s2), (x, g)| {
            (s1 + g, s2 + g * (x - mean[ch]))
        });
        [s1, s2 * rstd[ch]]
    });
    [0, 1].map(|k| sums.iter().map(|s| s[k]).collect())
}
