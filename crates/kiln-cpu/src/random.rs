//! Philox draws on the host; the GPU's `random/philox.wgsl` matches them bit for bit.
//! Each Philox block yields four words, used for four consecutive elements.

use kiln_core::philox::{bernoulli_threshold, philox4x32, word_to_unit};

/// The random words for elements `0..n` of stream `stream`: element `i` is lane `i % 4`
/// of block `i / 4`, exactly as `kiln_core::philox::random_word` defines it.
fn words(n: usize, seed: u64, stream: u64) -> impl Iterator<Item = u32> {
    let key = [seed as u32, (seed >> 32) as u32];
    (0..n.div_ceil(4) as u64)
        .flat_map(move |block| {
            philox4x32(
                key,
                [
                    block as u32,
                    (block >> 32) as u32,
                    stream as u32,
                    (stream >> 32) as u32,
                ],
            )
        })
        .take(n)
}

/// Values are exact multiples of 2^-24, so every float dtype holds them exactly.
pub fn uniform(n: usize, seed: u64, stream: u64) -> Vec<f64> {
    words(n, seed, stream)
        .map(|w| word_to_unit(w) as f64)
        .collect()
}

pub fn bernoulli(n: usize, p: f64, seed: u64, stream: u64) -> Vec<f64> {
    let threshold = bernoulli_threshold(p);
    words(n, seed, stream)
        .map(|w| if (w >> 8) < threshold { 1.0 } else { 0.0 })
        .collect()
}
