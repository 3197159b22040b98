//! wgpu's errors as `Err`: validation and out-of-memory error scopes around device
//! calls, and the uncaptured-error sink, never a panic.

use crate::device::GpuDevice;
use kiln_core::{Error, GpuErrorKind, Result};

impl GpuDevice {
    /// Runs `f` inside validation and out-of-memory error scopes.
    pub(crate) fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> Result<T> {
        let validation = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let value = f();
        let oom = pollster::block_on(oom.pop());
        let validation = pollster::block_on(validation.pop());
        if let Some(e) = oom.or(validation) {
            return Err(gpu_error(op, e));
        }
        self.take_uncaptured(op)?;
        Ok(value)
    }

    pub(crate) fn take_uncaptured(&self, op: &'static str) -> Result<()> {
        let mut errors = self.inner.uncaptured.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.drain(..).collect::<Vec<_>>().join("; ");
        Err(Error::Gpu {
            op,
            kind: GpuErrorKind::Validation,
            message,
        })
    }
}

fn gpu_error(op: &'static str, e: wgpu::Error) -> Error {
    let kind = match &e {
        wgpu::Error::OutOfMemory { .. } => GpuErrorKind::OutOfMemory,
        wgpu::Error::Validation { .. } => GpuErrorKind::Validation,
        wgpu::Error::Internal { .. } => GpuErrorKind::Internal,
    };
    Error::Gpu {
        op,
        kind,
        message: e.to_string(),
    }
}
