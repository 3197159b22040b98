//! Philox draws on the host; the GPU's `random/philox.wgsl` matches them bit for bit.

use kiln_core::philox::{bernoulli_threshold, random_word, word_to_unit};

/// Values are exact multiples of 2^-24, so every float dtype holds them exactly.
pub fn uniform(n: usize, seed: u64, stream: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| word_to_unit(random_word(seed, stream, i)) as f64)
        .collect()
}

pub fn bernoulli(n: usize, p: f64, seed: u64, stream: u64) -> Vec<f64> {
    let threshold = bernoulli_threshold(p);
    (0..n as u64)
        .map(|i| {
            if (random_word(seed, stream, i) >> 8) < threshold {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}
