//! Host bytes into device buffers. The queue's own write stages each upload in a
//! mapped buffer made for it; for large uploads, making and faulting in that memory
//! cost more than the copy (256 MiB moved at 1.1-1.3 GB/s on both lavapipe and an
//! NVIDIA H200). So uploads past `DIRECT_UP_TO` stream through staging chunks the device
//! keeps mapped between uploads, `STAGING_CHUNKS` of `CHUNK_BYTES` used in turn: the
//! host fills one (on the transfer threads) while the GPU copies another out, and a
//! chunk is written again only once the copy out of it has run.

use crate::copy_pool::copy_into_mapped;
use crate::device::GpuDevice;
use crate::pool::PooledBuffer;
use kiln_core::{Error, GpuErrorKind, Result};
use std::sync::mpsc;

/// Uploads up to this many bytes go through the queue's write, whose small staging
/// allocations wgpu takes from blocks it keeps.
pub const DIRECT_UP_TO: usize = 1 << 20;
/// Bytes per staging chunk.
const CHUNK_BYTES: usize = 8 << 20;
/// Staging chunks: two, so that filling one overlaps the copy out of the other.
const STAGING_CHUNKS: usize = 2;

/// The device's staging chunks for large uploads, used in turn.
#[derive(Default)]
pub(crate) struct StagingRing {
    chunks: [Option<Chunk>; STAGING_CHUNKS],
    next: usize,
}

/// A staging buffer, mapped for writing or on its way back to being mapped.
struct Chunk {
    buffer: wgpu::Buffer,
    /// While the copy out of it has not been seen to finish: that copy's submission, and
    /// where the result of mapping the buffer again arrives.
    remapping: Option<(wgpu::SubmissionIndex, mpsc::Receiver<MapResult>)>,
}

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

impl GpuDevice {
    /// Writes `bytes` to the start of `buffer`, which holds at least `bytes` rounded up
    /// to a whole number of 32-bit words (the tail is zeroed). The write reaches the GPU
    /// before any work recorded after this call.
    pub(crate) fn upload_into(
        &self,
        op: &'static str,
        buffer: &PooledBuffer,
        bytes: &[u8],
    ) -> Result<()> {
        if bytes.len() <= DIRECT_UP_TO {
            let mut padded;
            let mut data = bytes;
            if !bytes.len().is_multiple_of(4) {
                padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(4) * 4, 0);
                data = &padded;
            }
            if !data.is_empty() {
                self.inner.queue.write_buffer(buffer.buffer(), 0, data);
            }
            return Ok(());
        }
        let mut ring = self.inner.uploads.lock().unwrap();
        for (i, piece) in bytes.chunks(CHUNK_BYTES).enumerate() {
            let slot = ring.next;
            ring.next = (slot + 1) % STAGING_CHUNKS;
            // Taken out while in use: a chunk an error leaves in an unknown state is
            // dropped, and the next upload makes a new one.
            let chunk = match ring.chunks[slot].take() {
                Some(chunk) => chunk,
                None => self.new_chunk(op)?,
            };
            let chunk = self.stage(op, chunk, piece)?;
            let offset = (i * CHUNK_BYTES) as u64;
            let len = piece.len().div_ceil(4) * 4;
            self.profile_transfer();
            let submitted = self.record_and_submit(op, |_, encoder| {
                encoder.copy_buffer_to_buffer(&chunk.buffer, 0, buffer.buffer(), offset, len as u64)
            })?;
            let (tx, rx) = mpsc::channel();
            chunk.buffer.map_async(wgpu::MapMode::Write, .., move |r| {
                let _ = tx.send(r);
            });
            ring.chunks[slot] = Some(Chunk {
                remapping: Some((submitted, rx)),
                ..chunk
            });
        }
        Ok(())
    }

    fn new_chunk(&self, op: &'static str) -> Result<Chunk> {
        let buffer = self.scoped(op, || {
            self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln upload"),
                size: CHUNK_BYTES as u64,
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            })
        })?;
        Ok(Chunk {
            buffer,
            remapping: None,
        })
    }

    /// `piece` (at most a chunk) written into the chunk once it is mapped again, the
    /// tail of its last word zeroed, and the chunk unmapped for the copy out of it.
    fn stage(&self, op: &'static str, mut chunk: Chunk, piece: &[u8]) -> Result<Chunk> {
        let failed = |kind, message: String| Error::Gpu { op, kind, message };
        if let Some((submitted, mapped)) = chunk.remapping.take() {
            self.inner
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(submitted),
                    timeout: None,
                })
                .map_err(|e| failed(GpuErrorKind::DeviceLost, e.to_string()))?;
            mapped
                .recv()
                .map_err(|e| failed(GpuErrorKind::Internal, e.to_string()))?
                .map_err(|e| failed(GpuErrorKind::Internal, e.to_string()))?;
        }
        let len = piece.len().div_ceil(4) * 4;
        {
            let mut view = chunk
                .buffer
                .get_mapped_range_mut(..len as u64)
                .map_err(|e| failed(GpuErrorKind::Internal, e.to_string()))?;
            let (head, mut tail) = view.slice(..).split_at(piece.len());
            copy_into_mapped(head, piece);
            tail.fill(0);
        }
        chunk.buffer.unmap();
        Ok(chunk)
    }
}
