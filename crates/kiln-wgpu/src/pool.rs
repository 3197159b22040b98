//! Reuses GPU buffers. A buffer released while commands that use it are still being
//! recorded is held back until that batch is submitted; only then may a later upload
//! (which the queue runs before the next batch) overwrite it. One released while no
//! batch is being recorded (the gradients a training step lets go after the
//! optimizer's step submitted it) is free at once: every command that used it is
//! already on the queue.
//!
//! Of the free buffers of a size, the earliest made is lent first. Then the buffers a
//! piece of work gets depend only on what is live when it starts, not on the order in
//! which earlier work let buffers go: a training step repeated from the same state
//! binds the same buffers each time, and reuses its bind groups (`bind_groups`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Byte counts from the pool's own bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held by live tensors.
    pub live_bytes: u64,
    /// The most `live_bytes` has been since the device started or `reset_peak`.
    pub peak_live_bytes: u64,
    /// Bytes kept for reuse (free or awaiting submission).
    pub pooled_bytes: u64,
    /// Buffers created since the device started.
    pub allocations: u64,
}

#[derive(Default)]
struct State {
    /// By size class, then by when each buffer was made (`PooledBuffer::made`).
    free: HashMap<u64, BTreeMap<u64, wgpu::Buffer>>,
    retired: Vec<(u64, u64, wgpu::Buffer)>,
    /// Whether commands are being recorded into a batch not yet submitted.
    batch_open: bool,
    stats: PoolStats,
}

#[derive(Default)]
pub(crate) struct BufferPool {
    state: Mutex<State>,
}

/// Pool sizes are rounded so that buffers of nearly equal size are shared.
pub(crate) fn size_class(bytes: u64) -> u64 {
    bytes.max(4).div_ceil(256) * 256
}

impl BufferPool {
    pub(crate) fn acquire(self: &Arc<Self>, device: &wgpu::Device, size: u64) -> PooledBuffer {
        let mut state = self.state.lock().unwrap();
        state.stats.live_bytes += size;
        state.stats.peak_live_bytes = state.stats.peak_live_bytes.max(state.stats.live_bytes);
        let reused = state.free.get_mut(&size).and_then(BTreeMap::pop_first);
        let (made, buffer) = match reused {
            Some(b) => {
                state.stats.pooled_bytes -= size;
                b
            }
            None => {
                state.stats.allocations += 1;
                let made = state.stats.allocations;
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln tensor"),
                    size,
                    // UNIFORM: the uniform-lhs matmul binds 64 KiB windows of a packed buffer.
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::UNIFORM
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (made, buffer)
            }
        };
        PooledBuffer {
            buffer: Some(buffer),
            size,
            made,
            pool: self.clone(),
        }
    }

    /// Called when a batch starts to be recorded: buffers released from now on wait
    /// for its submission.
    pub(crate) fn open_batch(&self) {
        self.state.lock().unwrap().batch_open = true;
    }

    /// Called after a submission: everything released before it may be reused.
    pub(crate) fn recycle(&self) {
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        state.batch_open = false;
        // Drained, not taken: the list keeps its capacity for the next batch.
        for (size, made, buffer) in state.retired.drain(..) {
            state.free.entry(size).or_default().insert(made, buffer);
        }
    }

    /// Drops every free buffer (not ones awaiting submission).
    pub(crate) fn trim(&self) {
        let mut state = self.state.lock().unwrap();
        let freed: u64 = state
            .free
            .iter()
            .map(|(size, v)| size * v.len() as u64)
            .sum();
        state.free.clear();
        state.stats.pooled_bytes -= freed;
    }

    /// Starts `peak_live_bytes` again from what is live now.
    pub(crate) fn reset_peak(&self) {
        let mut state = self.state.lock().unwrap();
        state.stats.peak_live_bytes = state.stats.live_bytes;
    }

    pub(crate) fn stats(&self) -> PoolStats {
        self.state.lock().unwrap().stats
    }

    fn release(&self, size: u64, made: u64, buffer: wgpu::Buffer) {
        let mut state = self.state.lock().unwrap();
        state.stats.live_bytes -= size;
        state.stats.pooled_bytes += size;
        match state.batch_open {
            true => state.retired.push((size, made, buffer)),
            false => {
                state.free.entry(size).or_default().insert(made, buffer);
            }
        }
    }
}

/// A buffer on loan from the pool; dropping it returns it.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    size: u64,
    /// The buffer's place in the order the pool made its buffers (from 1).
    made: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is only taken in drop")
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.release(self.size, self.made, b);
        }
    }
}
