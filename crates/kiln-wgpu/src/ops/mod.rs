//! Kernel launchers, one module per family of `shaders/`.

pub(crate) mod attention;
pub(crate) mod batch_norm;
pub(crate) mod cat;
pub(crate) mod column_group;
pub(crate) mod conv;
pub(crate) mod conv_phases;
pub(crate) mod conv_product;
pub(crate) mod conv_weight_grad;
pub(crate) mod create;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod loss;
pub(crate) mod matmul;
pub(crate) mod matmul_group;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod optim_group;
pub(crate) mod pool;
pub(crate) mod random;
pub(crate) mod recurrent_backward;
pub(crate) mod recurrent_step;
pub(crate) mod reduce;
pub(crate) mod rnn;

use crate::kernels::Kernel;
use crate::params::{DirectConvParams, ShaderParams, WeightGradParams, WindowParams};
use crate::storage::GpuStorage;
use kiln_core::{DType, Result};

/// The params of the window kernels, which open with `WindowParams`' members: their
/// thread count is `extra[2]`.
pub(crate) trait WindowLaunch: ShaderParams {
    fn threads(&self) -> usize;
}

macro_rules! window_launch {
    ($($P:ty),*) => {
        $(impl WindowLaunch for $P {
            fn threads(&self) -> usize {
                self.extra[2] as usize
            }
        })*
    };
}
window_launch!(WindowParams, DirectConvParams, WeightGradParams);

/// Runs a window kernel, one thread per `p.threads()`; `inputs[0]` is the
/// floating-point tensor that sets the dtype.
pub(crate) fn launch_window<P: WindowLaunch>(
    op: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    p: P,
    outputs: &[(usize, DType)],
) -> Result<Vec<GpuStorage>> {
    let x = inputs[0];
    let device = &x.device;
    let outs = outputs
        .iter()
        .map(|&(n, d)| device.alloc_output(op, n, d))
        .collect::<Result<Vec<_>>>()?;
    let mut buffers = inputs.iter().map(|t| t.raw()).collect::<Result<Vec<_>>>()?;
    buffers.extend(outs.iter().map(|b| b.buffer()));
    let groups = device.groups_1d(op, p.threads())?;
    device.dispatch(op, kernel, &[x.dtype], &p, &buffers, groups)?;
    Ok(outs
        .into_iter()
        .zip(outputs)
        .map(|(b, &(n, d))| GpuStorage::new(b, d, n, device))
        .collect())
}
