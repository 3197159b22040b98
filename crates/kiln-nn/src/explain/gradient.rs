//! Gradient methods: the plain gradient of the class score, gradient times input, and
//! SmoothGrad (the gradient averaged over noisy copies of the input, which removes
//! much of a plain gradient's speckle; Smilkov et al., 2017).

use super::{check_batch, repeat_batch, score_gradient, Model};
use kiln::{Error, Result, Rng, Tensor};

/// d score / d input, the shape of `x`.
pub fn gradient(model: &Model<'_>, x: &Tensor, classes: &[usize]) -> Result<Tensor> {
    check_batch("gradient", x, classes)?;
    score_gradient(model, x, classes)
}

/// The gradient times the input, element by element.
pub fn gradient_x_input(model: &Model<'_>, x: &Tensor, classes: &[usize]) -> Result<Tensor> {
    check_batch("gradient_x_input", x, classes)?;
    score_gradient(model, x, classes)?.mul(&x.detach())
}

/// SmoothGrad's settings.
#[derive(Clone, Copy, Debug)]
pub struct SmoothGrad {
    /// Noisy copies per input.
    pub samples: usize,
    /// The noise's standard deviation as a fraction of each input's range (max - min);
    /// the paper found 10-20% best.
    pub noise: f64,
    /// The noise's seed.
    pub seed: u64,
}

impl Default for SmoothGrad {
    fn default() -> Self {
        SmoothGrad {
            samples: 25,
            noise: 0.15,
            seed: 0,
        }
    }
}

/// The gradient averaged over `samples` copies of each input with Gaussian noise added,
/// all copies of all inputs run as one batch.
pub fn smoothgrad(
    model: &Model<'_>,
    x: &Tensor,
    classes: &[usize],
    opts: SmoothGrad,
) -> Result<Tensor> {
    let op = "smoothgrad";
    check_batch(op, x, classes)?;
    if opts.samples == 0 || !(opts.noise >= 0.0 && opts.noise.is_finite()) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "samples must be at least 1 and noise finite and not negative, got {} and {}",
                opts.samples, opts.noise
            ),
        });
    }
    let n = classes.len();
    let per_input = x.elem_count() / n.max(1);
    // Each input's own range sets its noise.
    let values = x.to_dtype(kiln::DType::F32)?.to_vec::<f32>()?;
    let sigmas: Vec<f32> = values
        .chunks(per_input.max(1))
        .map(|v| {
            let (lo, hi) = v
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            (opts.noise as f32) * (hi - lo).max(0.0)
        })
        .collect();
    let mut shape = vec![n];
    shape.extend(std::iter::repeat_n(1, x.rank() - 1));
    let sigma = Tensor::from_vec(sigmas, shape, &x.device())?.to_dtype(x.dtype())?;
    let copies = repeat_batch(&x.detach(), opts.samples)?;
    let mut rng = Rng::new(opts.seed);
    let noise = Tensor::randn(copies.dims().to_vec(), x.dtype(), &x.device(), &mut rng)?
        .mul(&repeat_batch(&sigma, opts.samples)?)?;
    let all_classes: Vec<usize> = (0..opts.samples)
        .flat_map(|_| classes.iter().copied())
        .collect();
    let grads = score_gradient(model, &copies.add(&noise)?, &all_classes)?;
    let mut dims = vec![opts.samples];
    dims.extend_from_slice(x.dims());
    grads.reshape(dims)?.mean(&[0], false)
}
