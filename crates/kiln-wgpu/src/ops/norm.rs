//! Launchers for `shaders/norm/`: layer norm over rows, fused (mean, variance, scale
//! and shift in one pass over each row), and its backward pass, fused the same way.

use super::reduce::{row_groups, row_kernel_for, row_lanes, rows_kernel};
use crate::kernels::Kernel;
use crate::params::{to_u32, LayerNormBackwardParams, LayerNormParams};
use crate::storage::GpuStorage;
use kiln_core::{LayerNormGrads, Result};

pub(crate) fn layer_norm(
    x: &GpuStorage,
    weight: &GpuStorage,
    bias: &GpuStorage,
    rows: usize,
    k: usize,
    eps: f32,
) -> Result<GpuStorage> {
    let name = "layer_norm";
    let lanes = row_lanes(k);
    let params = LayerNormParams {
        rows: to_u32(name, "rows", rows)?,
        k: to_u32(name, "row length", k)?,
        eps,
        lanes,
    };
    let kernel = row_kernel_for(name, x, Kernel::LayerNorm, rows, k)?;
    let inputs = [x, weight, bias];
    let groups = row_groups(kernel, rows, lanes);
    rows_kernel(name, kernel, &inputs, &params, groups, rows * k, x.dtype)
}

/// The input's gradient of `layer_norm` over compact `[rows, k]` `x` given the output's
/// gradient `grad` (compact), and with a weight `grad * x_hat`: one launch where the
/// composed formula took seven (two row sums recomputing the statistics, two more for
/// the means, the elementwise rest).
pub(crate) fn layer_norm_backward(
    x: &GpuStorage,
    grad: &GpuStorage,
    weight: Option<&GpuStorage>,
    rows: usize,
    k: usize,
    eps: f32,
) -> Result<LayerNormGrads<GpuStorage>> {
    let name = "layer_norm_backward";
    let device = &x.device;
    let lanes = row_lanes(k);
    let params = LayerNormBackwardParams {
        rows: to_u32(name, "rows", rows)?,
        k: to_u32(name, "row length", k)?,
        eps,
        lanes,
        has_weight: weight.is_some() as u32,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let kernel = row_kernel_for(name, x, Kernel::LayerNormBackward, rows, k)?;
    let n = rows * k;
    // Without a weight, the weight and products bindings take the input and a word of
    // their own, which the kernel never touches.
    let products_len = if weight.is_some() { n } else { 1 };
    let inputs = [x, grad, weight.unwrap_or(x)];
    let groups = || device.groups_for(name, row_groups(kernel, rows, lanes));
    if n > 0 && device.defers(kernel) {
        // Deferred, dx takes the residual gradient it is added to as its epilogue.
        let (dx, mut sides) = device.defer_with_sides(
            name,
            kernel,
            &[x.dtype],
            params,
            &inputs,
            groups()?,
            (n, x.dtype),
            &[(products_len, x.dtype)],
        )?;
        return Ok((dx, weight.and_then(|_| sides.pop())));
    }
    let dx = device.alloc_output(name, n, x.dtype)?;
    let products = device.alloc_output(name, products_len, x.dtype)?;
    if n > 0 {
        device.dispatch_with_inputs(
            name,
            kernel,
            &[x.dtype],
            &params,
            &inputs,
            &[dx.buffer(), products.buffer()],
            groups()?,
        )?;
    }
    let products = weight.map(|_| GpuStorage::new(products, x.dtype, n, device));
    Ok((GpuStorage::new(dx, x.dtype, n, device), products))
}
