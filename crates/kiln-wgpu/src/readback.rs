//! Reading buffers back to the host: the only sync points.

use crate::copy_pool::copy_parallel;
use crate::device::GpuDevice;
use crate::ops;
use crate::pool::PooledBuffer;
use crate::storage::GpuStorage;
use kiln_core::{DType, Error, GpuErrorKind, HostBuffer, Layout, Result};
use std::sync::mpsc;

/// The first `n` elements of `dtype` in `bytes` (a mapped staging buffer) as a host
/// buffer, a large one copied on several threads.
pub(crate) fn host_from_mapped(dtype: DType, bytes: &[u8], n: usize) -> HostBuffer {
    // SAFETY: copy_parallel writes every byte of its destination.
    unsafe { HostBuffer::from_bytes_with(dtype, bytes, n, copy_parallel) }
}

/// Bytes read back from a device, still in the mapped staging buffer they landed in:
/// readable on the host without a copy of their own (what burn's `into_data` hands
/// out too). Dropping it unmaps the buffer and gives it back to the device for its
/// next readback; while one is held, other readbacks stage through buffers of their own.
pub struct MappedRead {
    view: Option<wgpu::BufferView>,
    buffer: Option<wgpu::Buffer>,
    len: usize,
    device: GpuDevice,
}

impl MappedRead {
    /// The bytes read.
    pub fn bytes(&self) -> &[u8] {
        &self.view.as_ref().expect("mapped until dropped")[..self.len]
    }
}

impl std::fmt::Debug for MappedRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedRead({} bytes)", self.len)
    }
}

impl Drop for MappedRead {
    fn drop(&mut self) {
        self.view = None;
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        buffer.unmap();
        // Keep the larger of this buffer and one a concurrent readback may have left.
        // (A panic here, while a panic unwinds, would abort: a poisoned lock is taken.)
        let mut slot = self
            .device
            .inner
            .staging
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|s| s.size() < buffer.size()) {
            *slot = Some(buffer);
        }
    }
}

impl GpuStorage {
    /// The elements of `layout` in row-major order, read back and left mapped: a sync
    /// point.
    pub fn read_mapped(&self, op: &'static str, layout: &Layout) -> Result<MappedRead> {
        let compact;
        let source = if layout.is_compact() {
            self
        } else {
            compact = ops::elementwise::copy_compact(self, layout)?;
            &compact
        };
        let bytes = layout.elem_count() * self.dtype.size_in_bytes();
        self.device.read_mapped(op, source.buffer()?, bytes)
    }
}

impl GpuDevice {
    /// Copies the first `bytes` of `buffer` to the host: a sync point.
    pub(crate) fn read_bytes(
        &self,
        op: &'static str,
        buffer: &PooledBuffer,
        bytes: usize,
    ) -> Result<Vec<u8>> {
        self.read_with(op, buffer, bytes, |b| b.to_vec())
    }

    /// Reads the first `bytes` of `buffer` and hands them, mapped, to `decode`.
    pub(crate) fn read_with<R>(
        &self,
        op: &'static str,
        buffer: &PooledBuffer,
        bytes: usize,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        Ok(decode(self.read_mapped(op, buffer, bytes)?.bytes()))
    }

    /// Copies the first `bytes` of `buffer` into a staging buffer, waits, and returns
    /// them mapped. The device keeps its staging buffer between reads (and grows it
    /// when needed): allocating and faulting in a fresh one per read cost more than the
    /// copy itself.
    pub(crate) fn read_mapped(
        &self,
        op: &'static str,
        buffer: &PooledBuffer,
        bytes: usize,
    ) -> Result<MappedRead> {
        let size = (bytes.div_ceil(4) * 4).max(4) as u64;
        let kept = self.inner.staging.lock().unwrap().take();
        let staging = match kept {
            Some(s) if s.size() >= size => s,
            _ => self.scoped(op, || {
                self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln readback"),
                    size: size
                        .next_power_of_two()
                        .min(self.inner.limits.max_buffer_size)
                        .max(size),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?,
        };
        self.profile_transfer();
        self.profile_readback();
        self.record(op, |_, encoder| {
            encoder.copy_buffer_to_buffer(buffer.buffer(), 0, &staging, 0, size)
        })?;
        self.flush(op)?;
        let view = self.map(op, &staging, size)?;
        self.take_uncaptured(op)?;
        Ok(MappedRead {
            view: Some(view),
            buffer: Some(staging),
            len: bytes,
            device: self.clone(),
        })
    }

    /// Maps the first `size` bytes of `buffer` (MAP_READ, filled by work already
    /// submitted), waits for the GPU, hands the mapped bytes to `decode` and unmaps.
    pub(crate) fn map_read<R>(
        &self,
        op: &'static str,
        buffer: &wgpu::Buffer,
        size: u64,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let value = decode(&self.map(op, buffer, size)?);
        buffer.unmap();
        Ok(value)
    }

    /// Maps the first `size` bytes of `buffer` (MAP_READ, filled by work already
    /// submitted) once the GPU is done with them; the caller unmaps it after the view.
    fn map(&self, op: &'static str, buffer: &wgpu::Buffer, size: u64) -> Result<wgpu::BufferView> {
        let slice = buffer.slice(..size);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                op,
                kind: GpuErrorKind::DeviceLost,
                message: e.to_string(),
            })?;
        let readback = |e: String| Error::Gpu {
            op,
            kind: GpuErrorKind::Readback,
            message: e,
        };
        rx.recv()
            .map_err(|e| readback(e.to_string()))?
            .map_err(|e| readback(e.to_string()))?;
        slice
            .get_mapped_range()
            .map_err(|e| readback(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_readback_copies_every_byte_in_place() {
        // Enough for several threads, not a whole number of pages, and a mapped range
        // longer than the elements read.
        let n = (9 << 20) / 4 + 1001;
        let mapped: Vec<u8> = (0..n * 4 + 64).map(|i| (i * 7 + i / 4096) as u8).collect();
        for dtype in [DType::F32, DType::I32] {
            let host = host_from_mapped(dtype, &mapped, n);
            assert_eq!(host.as_bytes(), &mapped[..n * 4], "{dtype:?}");
        }
        let host = host_from_mapped(DType::F16, &mapped, 3);
        assert_eq!(host.as_bytes(), &mapped[..6]);
    }
}
