//! `GpuStorage`: a tensor's buffer on a GPU. The backend contract over it is in
//! `backend.rs`, the launchers in `ops/`.

use crate::device::GpuDevice;
use crate::pool::PooledBuffer;
use kiln_core::DType;
use std::sync::Arc;

#[derive(Clone)]
pub struct GpuStorage {
    pub(crate) buffer: Arc<PooledBuffer>,
    pub(crate) dtype: DType,
    /// Elements the buffer holds (it may be larger: pool size classes).
    pub(crate) len: usize,
    pub(crate) device: GpuDevice,
}

impl GpuStorage {
    pub(crate) fn new(buffer: PooledBuffer, dtype: DType, len: usize, device: &GpuDevice) -> Self {
        GpuStorage {
            buffer: Arc::new(buffer),
            dtype,
            len,
            device: device.clone(),
        }
    }

    /// Elements the storage holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.buffer()
    }
}
