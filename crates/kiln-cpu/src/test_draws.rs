//! Reproducible test inputs without a dependency: a 64-bit linear congruential
//! generator's top bits, as f32 in [-0.5, 0.5).

/// Draws in [-0.5, 0.5), the same sequence for the same seed.
pub(crate) fn uniform_draws(mut seed: u64) -> impl FnMut() -> f32 {
    move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}
