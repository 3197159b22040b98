//! Philox4x32-10, the counter-based generator behind `rand`, `randn`, `bernoulli` and
//! dropout. Element `i` of a draw reads lane `i % 4` of block `i / 4` under
//! key = seed and counter = (block, stream). `shaders/random/philox.wgsl` computes the
//! same function with the same integer operations, so CPU and GPU agree bit for bit.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block: four random words for `(key, counter)`.
pub fn philox4x32(key: [u32; 2], counter: [u32; 4]) -> [u32; 4] {
    let (mut k, mut c) = (key, counter);
    for _ in 0..10 {
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The `i`-th random word of stream `stream` under `seed`.
pub fn random_word(seed: u64, stream: u64, i: u64) -> u32 {
    let block = i / 4;
    let key = [seed as u32, (seed >> 32) as u32];
    let counter = [
        block as u32,
        (block >> 32) as u32,
        stream as u32,
        (stream >> 32) as u32,
    ];
    philox4x32(key, counter)[(i % 4) as usize]
}

/// A word's top 24 bits as a float in `[0, 1)`; exact in f32 on every device.
pub fn word_to_unit(word: u32) -> f32 {
    (word >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The 24-bit threshold below which a word's top 24 bits mean "keep" with probability `p`.
pub fn bernoulli_threshold(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * 16_777_216.0).round() as u32
}

/// Standard normals by Box–Muller, computed on the host for every device: GPU
/// transcendental functions are not bit-reproducible across drivers, so normals are
/// drawn here and uploaded, and `randn` agrees bitwise everywhere.
pub fn normals(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            // Element i uses the two words of its half of block i / 2.
            let base = (i / 2) * 4 + (i % 2) * 2;
            let u1 = 1.0 - word_to_unit(random_word(seed, stream, base)) as f64; // (0, 1]
            let u2 = word_to_unit(random_word(seed, stream, base + 1)) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // Random123's published known-answer vector for philox4x32-10 with zero key and counter.
        assert_eq!(
            philox4x32([0, 0], [0, 0, 0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
    }

    #[test]
    fn normals_look_normal() {
        let v = normals(7, 0, 20_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
}
