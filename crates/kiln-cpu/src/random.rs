//! Philox draws on the host; the GPU's `random/philox.wgsl` matches them bit for bit.

use kiln_core::philox::{bernoulli_threshold, random_word, word_to_unit};

pub fn uniform(n: usize, seed: u64, stream: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| word_to_unit(random_word(seed, stream, i)))
        .collect()
}

pub fn bernoulli(n: usize, p: f64, seed: u64, stream: u64) -> Vec<f32> {
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
