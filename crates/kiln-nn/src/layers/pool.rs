//! Pooling layers.

use crate::module::Module;
use kiln::{Result, Tensor};

/// Max pooling; `stride` defaults to the kernel size, as in PyTorch.
pub struct MaxPool2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl MaxPool2d {
    pub fn new(kernel: usize) -> Self {
        MaxPool2d {
            kernel: (kernel, kernel),
            stride: (kernel, kernel),
            padding: (0, 0),
        }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool2d(self.kernel, self.stride, self.padding)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Average pooling; padding counts in the divisor unless `count_include_pad` is off.
pub struct AvgPool2d {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub count_include_pad: bool,
}

impl AvgPool2d {
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

pub struct AdaptiveAvgPool2d {
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
