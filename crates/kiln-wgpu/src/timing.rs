//! GPU-side timing with timestamp queries, for benchmarks.

use crate::device::GpuDevice;
use kiln_core::{DType, Result};
use std::time::Duration;

impl GpuDevice {
    /// True when the adapter has timestamp queries, so `gpu_time` measures on the GPU.
    pub fn has_timestamps(&self) -> bool {
        self.has_feature(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Runs `f`, which records GPU work, waits for it, and returns `f`'s result with the
    /// GPU time from the end of the work recorded before `f` to the end of the work `f`
    /// recorded; `None` for the time when the adapter has no timestamp queries. Pending
    /// work runs before the first mark, and what `f` left pending (held by its result)
    /// before the second: a deferred kernel counts in the window that launched it.
    pub fn gpu_time<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, Option<Duration>)> {
        let op = "gpu_time";
        if !self.has_timestamps() {
            let value = f()?;
            self.synchronize()?;
            return Ok((value, None));
        }
        let queries = self.record(op, |device, _| {
            device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kiln timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            })
        })?;
        // An empty pass whose end-of-pass timestamp waits for everything before it.
        let mark = |index: u32| {
            self.record(op, |_, encoder| {
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("kiln timer mark"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: None,
                        end_of_pass_write_index: Some(index),
                    }),
                });
            })
        };
        self.run_pending(op)?;
        mark(0)?;
        let value = f()?;
        self.run_pending(op)?;
        mark(1)?;
        let ticks = self.alloc(op, 4, DType::I32)?;
        self.record(op, |device, encoder| {
            let resolved = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln timer resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            encoder.resolve_query_set(&queries, 0..2, &resolved, 0);
            encoder.copy_buffer_to_buffer(&resolved, 0, ticks.buffer(), 0, 16);
        })?;
        let bytes = self.read_bytes(op, &ticks, 16)?;
        let start = u64::from_le_bytes(bytes[0..8].try_into().unwrap());
        let end = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let nanos = end.saturating_sub(start) as f64 * f64::from(self.timestamp_period());
        Ok((value, Some(Duration::from_nanos(nanos as u64))))
    }
}
