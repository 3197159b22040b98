//! Launcher for `shaders/norm/`: layer norm over rows, fused (mean, variance, scale
//! and shift in one pass over each row).

use super::reduce::{row_groups, row_lanes, rows_kernel, serial_rows};
use crate::kernels::Kernel;
use crate::params::{to_u32, LayerNormParams};
use crate::storage::GpuStorage;
use kiln_core::Result;

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
    let kernel = match serial_rows(x, rows, k) {
        true => Kernel::LayerNormRowsSerial,
        false => x.device.row_kernel(Kernel::LayerNorm),
    };
    let inputs = [x, weight, bias];
    let groups = row_groups(kernel, rows, lanes);
    rows_kernel(name, kernel, &inputs, &params, groups, rows * k, x.dtype)
}
