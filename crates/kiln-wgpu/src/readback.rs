//! Reading buffers back to the host: the only sync points.

use crate::device::GpuDevice;
use crate::pool::PooledBuffer;
use kiln_core::{DType, Error, GpuErrorKind, HostBuffer, Result};
use std::sync::mpsc;

/// Bytes from which a readback copies out of the mapped staging buffer on several
/// threads. On an NVIDIA H200 one thread moved 8-10 GB/s out of the mapped range, most
/// of a large readback's time (docs/BENCHMARKS.md, "Hardware GPU"); below this size,
/// starting threads costs more than it saves.
const PARALLEL_COPY_BYTES: usize = 4 << 20;
/// Threads a large readback copies with, at most.
const COPY_THREADS: usize = 8;

/// The first `n` elements of `dtype` in `bytes` (a mapped staging buffer) as a host
/// buffer, a large one copied on several threads.
pub(crate) fn host_from_mapped(dtype: DType, bytes: &[u8], n: usize) -> HostBuffer {
    HostBuffer::from_bytes_with(dtype, bytes, n, copy_out)
}

fn copy_out(dst: &mut [u8], src: &[u8]) {
    let threads = match src.len() < PARALLEL_COPY_BYTES {
        true => 1,
        false => std::thread::available_parallelism().map_or(1, |n| n.get().min(COPY_THREADS)),
    };
    if threads == 1 {
        dst.copy_from_slice(src);
        return;
    }
    // Whole pages per thread, so that no two threads fault in the same page.
    let chunk = src.len().div_ceil(threads).next_multiple_of(4096);
    std::thread::scope(|scope| {
        for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
            scope.spawn(move || d.copy_from_slice(s));
        }
    });
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
        // Past the threshold, not a whole number of pages, and a mapped range longer than
        // the elements read.
        let n = (PARALLEL_COPY_BYTES + 4 * 1001) / 4;
        let mapped: Vec<u8> = (0..n * 4 + 64).map(|i| (i * 7 + i / 4096) as u8).collect();
        for dtype in [DType::F32, DType::I32] {
            let host = host_from_mapped(dtype, &mapped, n);
            assert_eq!(host.as_bytes(), &mapped[..n * 4], "{dtype:?}");
        }
        let host = host_from_mapped(DType::F16, &mapped, 3);
        assert_eq!(host.as_bytes(), &mapped[..6]);
    }
}
