//! Normalisation layers: `BatchNorm` (PyTorch's BatchNorm1d and BatchNorm2d: statistics
//! over every dim but the channel dim 1) and `LayerNorm`.

use crate::module::Module;
use kiln::{DType, Device, Error, Result, RunningStats, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// Batch normalisation over the channels of `[n, c, ..]`, PyTorch's `BatchNorm1d`
/// and `BatchNorm2d`: batch statistics in training mode (updating the running ones),
/// running statistics in evaluation mode.
pub struct BatchNorm {
    /// `[c]`
    pub weight: Tensor,
    /// `[c]`
    pub bias: Tensor,
    /// `[c]`, updated in training mode
    pub running_mean: Tensor,
    /// `[c]`, updated in training mode with the unbiased batch variance
    pub running_var: Tensor,
    /// How far each training batch moves the running statistics (PyTorch's 0.1), in
    /// [0, 1]: a forward in training mode refuses another value.
    pub momentum: f64,
    /// Added to the variance before its square root.
    pub eps: f64,
    training: AtomicBool,
}

impl BatchNorm {
    /// Batch norm over `num_features` channels: weight 1, bias 0, running mean 0 and
    /// variance 1.
    pub fn new(num_features: usize, device: &Device) -> Result<Self> {
        let c = [num_features];
        Ok(BatchNorm {
            weight: Tensor::ones(c, DType::F32, device)?.into_var()?,
            bias: Tensor::zeros(c, DType::F32, device)?.into_var()?,
            running_mean: Tensor::zeros(c, DType::F32, device)?,
            running_var: Tensor::ones(c, DType::F32, device)?,
            momentum: 0.1,
            eps: 1e-5,
            training: AtomicBool::new(true),
        })
    }
}

impl Module for BatchNorm {
    /// `[n, c]`, `[n, c, l]` or `[n, c, h, w]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.elem_count();
        if x.rank() < 2 || x.dims()[1] != c {
            return Err(Error::ShapeMismatch {
                op: "BatchNorm",
                lhs: x.shape().clone(),
                rhs: self.weight.shape().clone(),
            });
        }
        if !self.training.load(Ordering::Relaxed) {
            let mut shape = vec![1; x.rank()];
            shape[1] = c;
            let stat = |t: &Tensor| t.reshape(shape.clone());
            // On a GPU the scale is taken over x's shape, the variance read through a
            // broadcast: the whole normalisation is then one fused kernel, with no
            // launch for a channel-sized scale of its own. The CPU takes it once a
            // channel.
            let var = stat(&self.running_var)?;
            let var = match x.device().is_gpu() {
                true => var.broadcast_to(x.shape().clone())?,
                false => var,
            };
            let scale = var.add_scalar(self.eps)?.rsqrt()?;
            return x
                .sub(&stat(&self.running_mean)?)?
                .mul(&scale)?
                .mul(&stat(&self.weight)?)?
                .add(&stat(&self.bias)?);
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            let reason = format!("momentum must be in [0, 1], got {}", self.momentum);
            return Err(Error::InvalidArgument {
                op: "BatchNorm",
                reason,
            });
        }
        // The running statistics move in the statistics' own kernel on a GPU.
        let running = RunningStats {
            mean: &self.running_mean,
            var: &self.running_var,
            momentum: self.momentum,
        };
        let batch =
            x.batch_norm_running(Some(&self.weight), Some(&self.bias), self.eps, running)?;
        Ok(batch.output)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
        ]
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

/// Normalisation over the last dims of each sample, PyTorch's `LayerNorm`.
pub struct LayerNorm {
    /// The scale, `normalized_shape`.
    pub weight: Tensor,
    /// The shift, `normalized_shape`.
    pub bias: Tensor,
    /// The trailing dims normalised together.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance before its square root.
    pub eps: f64,
}

impl LayerNorm {
    /// Layer norm over the trailing dims `normalized_shape`: weight 1, bias 0.
    pub fn new(normalized_shape: &[usize], device: &Device) -> Result<Self> {
        Ok(LayerNorm {
            weight: Tensor::ones(normalized_shape.to_vec(), DType::F32, device)?.into_var()?,
            bias: Tensor::zeros(normalized_shape.to_vec(), DType::F32, device)?.into_var()?,
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(
            &self.normalized_shape,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
        )
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}
