//! Recording work: kernel launches and other commands go into one command encoder
//! (the batch), submitted when it holds `MAX_BATCH` dispatches or at a sync point.

use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::params::ShaderParams;
use crate::pool::PooledBuffer;
use crate::shader_constants::WORKGROUP;
use kiln_core::{DType, Error, GpuErrorKind, Result};
use std::time::Instant;
use wgpu::util::DeviceExt;

/// Dispatches recorded before the batch is submitted without waiting for a sync point.
const MAX_BATCH: usize = 64;

/// The command encoder being recorded and how many dispatches it holds.
#[derive(Default)]
pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: usize,
}

impl GpuDevice {
    /// Workgroup counts for one thread per item in `WORKGROUP`-wide workgroups; counts
    /// beyond the per-dimension limit spill into y.
    pub(crate) fn groups_1d(&self, op: &'static str, items: usize) -> Result<[u32; 3]> {
        self.groups_for(op, items.div_ceil(WORKGROUP as usize))
    }

    /// `groups` workgroups laid out as x * y within the device's per-dimension limit.
    pub(crate) fn groups_for(&self, op: &'static str, groups: usize) -> Result<[u32; 3]> {
        let max = self.inner.limits.max_compute_workgroups_per_dimension as usize;
        let x = groups.clamp(1, max);
        let y = groups.div_ceil(x).max(1);
        if y > max {
            return Err(Error::LimitExceeded {
                op,
                what: "workgroups",
                needed: groups as u64,
                limit: (max * max) as u64,
            });
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Records one kernel launch into the current batch. `buffers` bind in order from
    /// binding 1; binding 0 is the uniform `params`, which must be the kernel's struct.
    pub(crate) fn dispatch<P: ShaderParams>(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let resources: Vec<_> = buffers.iter().map(|b| b.as_entire_binding()).collect();
        self.dispatch_bound(op, kernel, dtypes, params, &resources, groups)
    }

    /// As `dispatch`, with each binding given as a resource (e.g. a window of a buffer).
    pub(crate) fn dispatch_bound<P: ShaderParams>(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: &P,
        resources: &[wgpu::BindingResource<'_>],
        groups: [u32; 3],
    ) -> Result<()> {
        if kernel.params().name != P::LAYOUT.name {
            return Err(Error::Gpu {
                op,
                kind: GpuErrorKind::Internal,
                message: format!(
                    "{kernel:?} reads {}, not {}",
                    kernel.params().name,
                    P::LAYOUT.name
                ),
            });
        }
        let start = Instant::now();
        let params = bytemuck::bytes_of(params);
        let pipeline = self.pipeline(op, kernel, dtypes)?;
        let timestamps = self.profile_launch(kernel, dtypes, resources);
        let full = self.scoped(op, || {
            let uniform = self
                .inner
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("kiln params"),
                    contents: params,
                    usage: wgpu::BufferUsages::UNIFORM,
                });
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform.as_entire_binding(),
            }];
            for (i, resource) in resources.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: resource.clone(),
                });
            }
            let bind_group = self
                .inner
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(kernel.file().0),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
            let mut batch = self.inner.batch.lock().unwrap();
            let encoder = batch.encoder.get_or_insert_with(|| self.new_encoder());
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(kernel.file().0),
                    timestamp_writes: timestamps.as_ref().map(|(queries, first)| {
                        wgpu::ComputePassTimestampWrites {
                            query_set: queries,
                            beginning_of_pass_write_index: Some(*first),
                            end_of_pass_write_index: Some(*first + 1),
                        }
                    }),
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            batch.dispatches += 1;
            batch.dispatches >= MAX_BATCH
        })?;
        self.count_launch_time(start);
        if full {
            self.flush(op)?;
        }
        Ok(())
    }

    pub(crate) fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln batch"),
            })
    }

    /// Records commands of `f` into the current batch, inside the error scopes.
    pub(crate) fn record<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&wgpu::Device, &mut wgpu::CommandEncoder) -> R,
    ) -> Result<R> {
        self.scoped(op, || {
            let mut batch = self.inner.batch.lock().unwrap();
            let encoder = batch.encoder.get_or_insert_with(|| self.new_encoder());
            f(&self.inner.device, encoder)
        })
    }

    /// Records a buffer clear (zeros) into the current batch.
    pub(crate) fn clear(&self, op: &'static str, buffer: &PooledBuffer) -> Result<()> {
        self.profile_transfer();
        self.record(op, |_, encoder| {
            encoder.clear_buffer(buffer.buffer(), 0, None)
        })
    }

    /// Submits everything recorded so far. The batch lock is held from taking the
    /// encoder until buffers are recycled, so batches reach the queue in recording
    /// order and no buffer is reused while an unsubmitted command still reads it.
    pub fn flush(&self, op: &'static str) -> Result<()> {
        let mut batch = self.inner.batch.lock().unwrap();
        batch.dispatches = 0;
        let mut timed = None;
        if let Some(mut encoder) = batch.encoder.take() {
            let start = Instant::now();
            timed = self.profile_resolve(&mut encoder);
            let commands = encoder.finish();
            self.count_launch_time(start);
            self.scoped(op, || {
                self.inner.queue.submit([commands]);
            })?;
        }
        self.inner.pool.recycle();
        drop(batch);
        match timed {
            Some((readable, kernels)) => self.profile_collect(readable, kernels),
            None => Ok(()),
        }
    }

    /// Submits everything recorded so far and waits until the GPU has finished it.
    pub fn synchronize(&self) -> Result<()> {
        self.flush("synchronize")?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                op: "synchronize",
                kind: GpuErrorKind::DeviceLost,
                message: e.to_string(),
            })?;
        self.take_uncaptured("synchronize")
    }
}
