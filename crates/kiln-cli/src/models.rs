//! The architectures `kiln train` builds.

use kiln::{Conv2dOptions, Device, Result, Rng};
use kiln_nn::layers::{Activation, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Sequential};

/// The CNN's dropout probability, before its last linear layer (as PyTorch's reproduction).
pub const CNN_DROPOUT: f64 = 0.25;
/// The MLP's dropout probability, after its first hidden layer.
pub const MLP_DROPOUT: f64 = 0.2;

/// Two 5x5 convolutions with max pooling, then two linear layers: 28x28 digits to 10
/// logits, with dropout probability `p` before the last (0 turns it off). The layer
/// draws its seed whatever `p` is, so a seed gives the same initial weights at every `p`.
pub fn cnn(device: &Device, rng: &mut Rng, p: f64) -> Result<Sequential> {
    let k5 = (5, 5);
    Ok(Sequential::new()
        .append(Conv2d::new(
            1,
            16,
            k5,
            Conv2dOptions::default(),
            device,
            rng,
        )?)
        .append(Activation::ReLU)
        .append(MaxPool2d::new(2))
        .append(Conv2d::new(
            16,
            32,
            k5,
            Conv2dOptions::default(),
            device,
            rng,
        )?)
        .append(Activation::ReLU)
        .append(MaxPool2d::new(2))
        .append(Flatten)
        .append(Linear::new(32 * 4 * 4, 128, device, rng)?)
        .append(Activation::ReLU)
        .append(Dropout::new(p, rng.next_seed()))
        .append(Linear::new(128, 10, device, rng)?))
}

/// A multilayer perceptron: 784 -> 256 -> 128 -> 10 with ReLU and dropout `p` (see
/// [`cnn`]).
pub fn mlp(device: &Device, rng: &mut Rng, p: f64) -> Result<Sequential> {
    Ok(Sequential::new()
        .append(Flatten)
        .append(Linear::new(28 * 28, 256, device, rng)?)
        .append(Activation::ReLU)
        .append(Dropout::new(p, rng.next_seed()))
        .append(Linear::new(256, 128, device, rng)?)
        .append(Activation::ReLU)
        .append(Linear::new(128, 10, device, rng)?))
}
