//! Creating tensors on the GPU: zeros, constants and uploads (random draws are in
//! `random.rs`).

use crate::device::GpuDevice;
use crate::fusion::{self, FusedOp};
use crate::storage::GpuStorage;
use half::f16;
use kiln_core::{DType, HostSlice, Result};

pub(crate) fn zeros(device: &GpuDevice, n: usize, dtype: DType) -> Result<GpuStorage> {
    let buffer = device.alloc("zeros", n, dtype)?;
    device.clear("zeros", &buffer)?;
    Ok(GpuStorage::new(buffer, dtype, n, device).with_range(0, 0))
}

/// The 32-bit word that repeats `value` in `dtype` (two halves for f16).
fn pattern(dtype: DType, value: f64) -> u32 {
    match dtype {
        DType::F32 => (value as f32).to_bits(),
        DType::F16 => {
            let h = f16::from_f64(value).to_bits() as u32;
            h | (h << 16)
        }
        DType::I32 => (value as i32) as u32,
        DType::F64 => unreachable!("alloc rejects f64 before a pattern is needed"),
    }
}

pub(crate) fn full(device: &GpuDevice, n: usize, dtype: DType, value: f64) -> Result<GpuStorage> {
    // A float constant is pending: a fused consumer reads it as a scalar.
    if device.fusion() && n > 0 && matches!(dtype, DType::F32 | DType::F16) {
        return fusion::record(device, FusedOp::Full(value as f32), Vec::new(), dtype, n);
    }
    let buffer = device.alloc("full", n, dtype)?;
    // An empty tensor has nothing to fill.
    if n > 0 {
        device.fill_words("full", &buffer, pattern(dtype, value))?;
    }
    let v = value as i32;
    Ok(GpuStorage::new(buffer, dtype, n, device).with_range(v, v))
}

pub(crate) fn upload(device: &GpuDevice, data: HostSlice<'_>) -> Result<GpuStorage> {
    let buffer = device.upload_bytes("from_vec", data.as_bytes(), data.len(), data.dtype())?;
    let storage = GpuStorage::new(buffer, data.dtype(), data.len(), device);
    // The host sees i32 values as they go up: their bounds spare index checks a readback.
    Ok(match data {
        HostSlice::I32(v) => {
            let (min, max) = v
                .iter()
                .fold((i32::MAX, i32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            storage.with_range(min, max)
        }
        _ => storage,
    })
}
