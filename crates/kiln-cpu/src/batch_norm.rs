//! Batch norm's channel statistics and backward sums over compact `[outer, c, inner]`
//! data, in f64: the reference the GPU's channel kernels are checked against.

/// A channel's elements: `inner` consecutive values in each of `outer` blocks.
fn channel(
    x: &[f64],
    ch: usize,
    [outer, c, inner]: [usize; 3],
) -> impl Iterator<Item = &f64> + Clone {
    (0..outer).flat_map(move |o| &x[(o * c + ch) * inner..][..inner])
}

/// Each channel's mean, biased variance and `1 / sqrt(variance + eps)`.
pub fn batch_norm_stats(x: &[f64], dims: [usize; 3], eps: f64) -> [Vec<f64>; 3] {
    let [outer, c, inner] = dims;
    let n = (outer * inner) as f64;
    let (mut means, mut vars, mut rstds) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let values = channel(x, ch, dims);
        let mean = values.clone().sum::<f64>() / n;
        let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        means[ch] = mean;
        vars[ch] = var;
        rstds[ch] = 1.0 / (var + eps).sqrt();
    }
    [means, vars, rstds]
}

/// Each channel's sum of `g` and of `g * (x - mean) * rstd`, given `[mean, rstd]`.
pub fn batch_norm_backward_sums(
    x: &[f64],
    g: &[f64],
    [mean, rstd]: &[Vec<f64>; 2],
    dims: [usize; 3],
) -> [Vec<f64>; 2] {
    let c = dims[1];
    let (mut g_sums, mut gx_sums) = (vec![0.0; c], vec![0.0; c]);
    for ch in 0..c {
        let pairs = channel(x, ch, dims).zip(channel(g, ch, dims));
        let (s1, s2) = pairs.fold((0.0, 0.0), |(s1, s2), (x, g)| {
            (s1 + g, s2 + g * (x - mean[ch]))
        });
        g_sums[ch] = s1;
        gx_sums[ch] = s2 * rstd[ch];
    }
    [g_sums, gx_sums]
}
