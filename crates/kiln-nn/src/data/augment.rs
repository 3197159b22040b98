//! Data augmentation for images.

use kiln::{Device, Error, Result, Tensor};
use kiln_core::philox::random_word;

/// Shifts each image of `[n, c, h, w]` by its own random offset of up to `max_shift`
/// pixels in each direction, filling with zeros: a padded copy read through one gather
/// whose indices are drawn from Philox under `(seed, stream)`.
pub fn random_translate(
    images: &Tensor,
    max_shift: usize,
    seed: u64,
    stream: u64,
) -> Result<Tensor> {
    if images.rank() != 4 {
        return Err(Error::InvalidShape {
            op: "random_translate",
            shape: images.shape().clone(),
            reason: "expected [n, c, h, w]".into(),
        });
    }
    let (n, c, h, w) = (
        images.dims()[0],
        images.dims()[1],
        images.dims()[2],
        images.dims()[3],
    );
    let (ph, pw) = (h + 2 * max_shift, w + 2 * max_shift);
    let padded = images
        .pad(&[(max_shift, max_shift), (max_shift, max_shift)], 0.0)?
        .reshape([n, c, ph * pw])?;
    let span = 2 * max_shift as u64 + 1;
    let mut index = Vec::with_capacity(n * c * h * w);
    for i in 0..n {
        let dy = (random_word(seed, stream, 2 * i as u64) as u64 % span) as usize;
        let dx = (random_word(seed, stream, 2 * i as u64 + 1) as u64 % span) as usize;
        for _ in 0..c {
            for y in 0..h {
                index.extend((0..w).map(|x| ((y + dy) * pw + x + dx) as i32));
            }
        }
    }
    let index =
        Tensor::from_vec(index, [n, c, h * w], &Device::cpu())?.to_device(&images.device())?;
    padded.gather(2, &index)?.reshape([n, c, h, w])
}
