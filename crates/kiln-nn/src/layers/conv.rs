//! Convolution layers: `Conv1d`, `Conv2d` and `ConvTranspose2d`, PyTorch's weight
//! layouts and initialisation.

use crate::init::weight_and_bias;
use crate::module::Module;
use kiln::{Conv2dOptions, Device, Result, Rng, Tensor};

fn params(weight: &Tensor, bias: &Option<Tensor>) -> Vec<(String, Tensor)> {
    let mut p = vec![("weight".to_string(), weight.clone())];
    p.extend(bias.iter().map(|b| ("bias".to_string(), b.clone())));
    p
}

/// A 2-D convolution over `[n, c, h, w]`, PyTorch's `Conv2d`.
pub struct Conv2d {
    /// `[out, in / groups, kh, kw]`
    pub weight: Tensor,
    /// `[out]`, or none.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation and groups.
    pub options: Conv2dOptions,
}

impl Conv2d {
    /// A convolution from `in_channels` to `out_channels` with a `kernel` window, with
    /// PyTorch's initialisation (uniform in ±1/sqrt(fan_in)).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        options: Conv2dOptions,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let groups = options.groups.max(1);
        let fan_in = in_channels / groups * kernel.0 * kernel.1;
        let shape = [out_channels, in_channels / groups, kernel.0, kernel.1];
        let (weight, bias) = weight_and_bias(&shape, fan_in, out_channels, device, rng)?;
        Ok(Conv2d {
            weight,
            bias: Some(bias),
            options,
        })
    }
}

impl Module for Conv2d {
    /// `[n, in, h, w]` -> `[n, out, oh, ow]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.options)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}

/// A 1-D convolution over `[n, c, length]`, PyTorch's `Conv1d`.
pub struct Conv1d {
    /// `[out, in / groups, k]`
    pub weight: Tensor,
    /// `[out]`, or none.
    pub bias: Option<Tensor>,
    /// The window's step.
    pub stride: usize,
    /// Zeros added at both ends.
    pub padding: usize,
    /// The spacing between the window's taps.
    pub dilation: usize,
    /// Channel groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
}

impl Conv1d {
    /// A 1-D convolution with PyTorch's initialisation.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let fan_in = in_channels * kernel;
        let (weight, bias) = weight_and_bias(
            &[out_channels, in_channels, kernel],
            fan_in,
            out_channels,
            device,
            rng,
        )?;
        Ok(Conv1d {
            weight,
            bias: Some(bias),
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        })
    }
}

impl Module for Conv1d {
    /// `[n, in, l]` -> `[n, out, ol]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv1d(
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}

/// A transposed 2-D convolution (the gradient of `Conv2d` with respect to its
/// input, as a layer that upsamples), PyTorch's `ConvTranspose2d`.
pub struct ConvTranspose2d {
    /// `[in, out / groups, kh, kw]`
    pub weight: Tensor,
    /// `[out]`, or none.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation and groups, as the convolution it transposes.
    pub options: Conv2dOptions,
    /// Rows and columns added to one side of the output (see `output_padding`).
    pub output_padding: (usize, usize),
}

impl ConvTranspose2d {
    /// A transposed convolution with PyTorch's initialisation (fan-in from the
    /// weight's second dim, as PyTorch computes it).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        options: Conv2dOptions,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        let groups = options.groups.max(1);
        // PyTorch computes fan_in from the weight's second dim for transposed convolutions.
        let fan_in = out_channels / groups * kernel.0 * kernel.1;
        let shape = [in_channels, out_channels / groups, kernel.0, kernel.1];
        let (weight, bias) = weight_and_bias(&shape, fan_in, out_channels, device, rng)?;
        Ok(ConvTranspose2d {
            weight,
            bias: Some(bias),
            options,
            output_padding: (0, 0),
        })
    }

    /// PyTorch's `output_padding`: rows and columns added on one side of the output, to
    /// pick among the output sizes a strided convolution maps to the same input size.
    /// Each must be below the stride or the dilation (checked when it runs).
    pub fn output_padding(mut self, output_padding: (usize, usize)) -> Self {
        self.output_padding = output_padding;
        self
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose2d(
            &self.weight,
            self.bias.as_ref(),
            self.options,
            self.output_padding,
        )
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        params(&self.weight, &self.bias)
    }
}
