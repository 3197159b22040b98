//! Reading buffers back to the host: the only sync points.

use crate::copy_pool::copy_parallel;
use crate::device::GpuDevice;
use crate::pool::PooledBuffer;
use kiln_core::{DType, Error, GpuErrorKind, HostBuffer, Result};
use std::sync::mpsc;

/// The first `n` elements of `dtype` in `bytes` (a mapped staging buffer) as a host
/// buffer, a large one copied on several threads.
pub(crate) fn host_from_mapped(dtype: DType, bytes: &[u8], n: usize) -> HostBuffer {
    // SAFETY: copy_parallel writes every byte of its destination.
    unsafe { HostBuffer::from_bytes_with(dtype, bytes, n, copy_parallel) }
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

    /// Copies the first `bytes` of `buffer` into the device's staging buffer, waits, and
    /// hands the mapped bytes to `decode`. The staging buffer is kept between reads (and
    /// grown when needed): allocating and faulting in a fresh one per read cost more than
    /// the copy itself.
    pub(crate) fn read_with<R>(
        &self,
        op: &'static str,
        buffer: &PooledBuffer,
        bytes: usize,
        decode: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let size = (bytes.div_ceil(4) * 4).max(4) as u64;
        let mut staging = self.inner.staging.lock().unwrap();
        if staging.as_ref().is_none_or(|s| s.size() < size) {
            *staging = None;
            *staging = Some(self.scoped(op, || {
                self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln readback"),
                    size: size
                        .next_power_of_two()
                        .min(self.inner.limits.max_buffer_size)
                        .max(size),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?);
        }
        let staging = staging.as_ref().expect("made above");
        self.profile_transfer();
        self.profile_readback();
        self.record(op, |_, encoder| {
            encoder.copy_buffer_to_buffer(buffer.buffer(), 0, staging, 0, size)
        })?;
        self.flush(op)?;
        let value = self.map_read(op, staging, size, |mapped| decode(&mapped[..bytes]))?;
        self.take_uncaptured(op)?;
        Ok(value)
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
        let value = {
            let mapped = slice
                .get_mapped_range()
                .map_err(|e| readback(e.to_string()))?;
            decode(&mapped)
        };
        buffer.unmap();
        Ok(value)
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
