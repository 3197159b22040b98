//! Pooling layers.

use crate::module::Module;
use kiln::{Result, Tensor};

/// Max pooling; `stride` defaults to the kernel size, as in PyTorch.
/// Max pooling with PyTorch's `MaxPool2d` parameters (stride defaults to the kernel).
pub struct MaxPool2d {
    /// The window's height and width.
    pub kernel: (usize, usize),
    /// The window's step (the kernel by default).
    pub stride: (usize, usize),
    /// Implicit -inf padding on each side.
    pub padding: (usize, usize),
    /// The spacing between a window's taps (1: adjacent).
    pub dilation: (usize, usize),
}

impl MaxPool2d {
    /// Square windows of `kernel`, moving by `kernel`.
    pub fn new(kernel: usize) -> Self {
        MaxPool2d {
            kernel: (kernel, kernel),
            stride: (kernel, kernel),
            padding: (0, 0),
            dilation: (1, 1),
        }
    }

    /// Moves the window by `stride`.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = (stride, stride);
        self
    }

    /// Pads each side by `padding` (never chosen as a maximum).
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = (padding, padding);
        self
    }

    /// Spaces the window's taps `dilation` apart.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = (dilation, dilation);
        self
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(
            x.max_pool2d_with_indices(self.kernel, self.stride, self.padding, self.dilation)?
                .0,
        )
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Average pooling; padding counts in the divisor unless `count_include_pad` is off.
pub struct AvgPool2d {
    /// The window's height and width.
    pub kernel: (usize, usize),
    /// The window's step (the kernel by default).
    pub stride: (usize, usize),
    /// Zero padding on each side.
    pub padding: (usize, usize),
    /// Count the padding in each window's divisor (PyTorch's default).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// Square windows of `kernel`, moving by `kernel`.
    pub fn new(kernel: usize) -> Self {
        AvgPool2d {
            kernel: (kernel, kernel),
            stride: (kernel, kernel),
            padding: (0, 0),
            count_include_pad: true,
        }
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool2d(
            self.kernel,
            self.stride,
            self.padding,
            self.count_include_pad,
        )
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Averages over PyTorch's adaptive windows, to a fixed output size.
pub struct AdaptiveAvgPool2d {
    /// The output's height and width.
    pub output: (usize, usize),
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.adaptive_avg_pool2d(self.output)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
