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
    /// For i32 data: bounds every element is known to lie within, kept from the host
    /// values it was made of, so that an index check needs no readback. `None` when
    /// a kernel wrote it.
    pub(crate) value_range: Option<(i32, i32)>,
}

impl GpuStorage {
    pub(crate) fn new(buffer: PooledBuffer, dtype: DType, len: usize, device: &GpuDevice) -> Self {
        GpuStorage {
            buffer: Arc::new(buffer),
            dtype,
            len,
            device: device.clone(),
            value_range: None,
        }
    }

    /// The same storage, known to hold values within `[min, max]` (i32).
    pub(crate) fn with_range(mut self, min: i32, max: i32) -> Self {
        self.value_range = Some((min, max));
        self
    }

    /// Bounds of every element, for i32 storage made from known values (see
    /// `value_range`); a range check within them needs no readback.
    pub fn known_range(&self) -> Option<(i32, i32)> {
        self.value_range
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
