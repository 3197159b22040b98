//! Parameter initialisation as PyTorch does it, from a seeded generator.

use kiln::{DType, Device, Result, Rng, Tensor};

/// Uniform on `[-bound, bound)`, as a trainable leaf.
pub fn uniform(shape: &[usize], bound: f64, device: &Device, rng: &mut Rng) -> Result<Tensor> {
    Tensor::rand(shape.to_vec(), DType::F32, device, rng)?
        .mul_scalar(2.0 * bound)?
        .add_scalar(-bound)?
        .into_var()
}

/// PyTorch's default for Linear and Conv weights: Kaiming-uniform with `a = sqrt(5)`,
/// which is uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in))`.
pub fn kaiming_uniform(
    shape: &[usize],
    fan_in: usize,
    device: &Device,
    rng: &mut Rng,
) -> Result<Tensor> {
    uniform(shape, 1.0 / (fan_in.max(1) as f64).sqrt(), device, rng)
}

/// A layer's weight and bias as PyTorch initialises them: Kaiming-uniform weight and a
/// bias uniform on `[-1/sqrt(fan_in), 1/sqrt(fan_in))`, in that draw order.
pub(crate) fn weight_and_bias(
    weight_shape: &[usize],
    fan_in: usize,
    bias_len: usize,
    device: &Device,
    rng: &mut Rng,
) -> Result<(Tensor, Tensor)> {
    let weight = kaiming_uniform(weight_shape, fan_in, device, rng)?;
    let bias = uniform(
        &[bias_len],
        1.0 / (fan_in.max(1) as f64).sqrt(),
        device,
        rng,
    )?;
    Ok((weight, bias))
}
