//! Recording work: kernel launches and other commands go into one command encoder
//! (the batch), submitted when it holds `MAX_BATCH` dispatches or at a sync point.

use crate::bind_groups::{BindGroupCache, BindKey};
use crate::byte_span::ByteSpan;
use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::params::ShaderParams;
use crate::pipelines::Pipeline;
use crate::pool::PooledBuffer;
use crate::shader_constants::WORKGROUP;
use kiln_core::{DType, Error, GpuErrorKind, Result};
use std::sync::MutexGuard;
use std::time::Instant;

/// Dispatches recorded before the batch is submitted without waiting for a sync point.
pub(crate) const MAX_BATCH: usize = 64;
/// Bind groups one launch may use, each with its own params: the kernel's, one per
/// fused prologue (`fusion`; matmul takes two) and one for an epilogue; WebGPU's
/// minimum of `max_bind_groups`. The params arena holds this many per launch.
pub(crate) const MAX_BIND_GROUPS: usize = 4;

/// One bind group of a launch: its uniform params at binding 0, and its other
/// resources by binding number.
pub(crate) struct Bindings<'a> {
    pub(crate) params: &'a [u8],
    pub(crate) resources: Vec<(u32, wgpu::BindingResource<'a>)>,
    /// By binding, the bytes of a bound buffer the kernel accesses where the launcher
    /// knows them to be fewer than it binds (a fused read of one time step of a whole
    /// sequence): what a profile counts for them.
    pub(crate) spans: Vec<(u32, ByteSpan)>,
    /// In a launch of several members' work (`ops::matmul_group`), the bindings of
    /// each, member j's from `1 + j * n`: a buffer two members read counts once per
    /// member, as each reads it.
    pub(crate) per_member: Option<u32>,
}

impl<'a> Bindings<'a> {
    /// `resources` bound in order from binding `first`.
    pub(crate) fn numbered(
        params: &'a [u8],
        resources: &[wgpu::BindingResource<'a>],
        first: u32,
    ) -> Self {
        let numbered = resources.iter().cloned().enumerate();
        Bindings {
            params,
            resources: numbered.map(|(i, r)| (first + i as u32, r)).collect(),
            spans: Vec::new(),
            per_member: None,
        }
    }

    /// These bindings, the kernel accessing only `spans` of the buffers named there.
    pub(crate) fn spanning(self, spans: Vec<(u32, ByteSpan)>) -> Self {
        Bindings { spans, ..self }
    }

    /// These bindings, `n` to each member of a launch of several (see `per_member`).
    pub(crate) fn per_member(self, n: u32) -> Self {
        Bindings {
            per_member: Some(n),
            ..self
        }
    }
}

/// The work being recorded: a command encoder, the compute pass dispatches go into
/// (open until another command or the submission), and the launches' params.
#[derive(Default)]
pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    /// Each launch's params at a multiple of `params_stride`: copied into the device's
    /// params arena just before the batch is submitted.
    params: Vec<u8>,
    /// The op of each launch in the batch: how many there are, and their names if the
    /// pass fails when it ends.
    ops: Vec<&'static str>,
    /// Bind groups made by earlier launches, found again by what they bind.
    pub(crate) bind_groups: BindGroupCache,
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

    /// `groups` workgroups along each dimension, as a dispatch takes them; an error
    /// where one is past the device's per-dimension limit.
    pub(crate) fn checked_groups(&self, op: &'static str, groups: [usize; 3]) -> Result<[u32; 3]> {
        let max = self.max_workgroups_per_dim() as usize;
        if let Some(&g) = groups.iter().find(|&&g| g > max) {
            return Err(Error::LimitExceeded {
                op,
                what: "workgroups along one dimension",
                needed: g as u64,
                limit: max as u64,
            });
        }
        Ok(groups.map(|g| g as u32))
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
        self.check_params::<P>(op, kernel)?;
        let start = Instant::now();
        let pipeline = self.pipeline(op, kernel, dtypes)?;
        let name = || format!("{} {dtypes:?}", kernel.label());
        let group = Bindings::numbered(bytemuck::bytes_of(params), resources, 1);
        self.launch(op, &pipeline, &[group], groups, start, name)
    }

    /// An error unless `kernel` reads params of type `P`.
    pub(crate) fn check_params<P: ShaderParams>(
        &self,
        op: &'static str,
        kernel: Kernel,
    ) -> Result<()> {
        if kernel.params().name == P::LAYOUT.name {
            return Ok(());
        }
        Err(Error::Gpu {
            op,
            kind: GpuErrorKind::Internal,
            message: format!(
                "{kernel:?} reads {}, not {}",
                kernel.params().name,
                P::LAYOUT.name
            ),
        })
    }

    /// Records one launch of a built pipeline, bind group `g` from `bind[g]`. `start`
    /// is when the caller began (the host cost counted per launch); `name` names the
    /// kernel in profiles.
    pub(crate) fn launch(
        &self,
        op: &'static str,
        pipeline: &Pipeline,
        bind: &[Bindings<'_>],
        groups: [u32; 3],
        start: Instant,
        name: impl FnOnce() -> String,
    ) -> Result<()> {
        let timestamps = self.profile_launch(name, &pipeline.written, bind);
        let mut guard = self.inner.batch.lock().unwrap();
        let batch = &mut *guard;
        let first_params = batch.params.len();
        let mut bind_groups = Vec::with_capacity(bind.len());
        let mut made = Vec::new();
        for (g, group) in bind.iter().enumerate() {
            // The params go into the batch's slice of the arena, written before
            // submission.
            let stride = self.inner.params_stride;
            let offset = batch.params.len() as u64;
            batch.params.extend_from_slice(group.params);
            batch.params.resize((offset + stride) as usize, 0);
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.inner.params_arena,
                    offset,
                    size: wgpu::BufferSize::new(group.params.len() as u64),
                }),
            }];
            for (binding, resource) in &group.resources {
                entries.push(wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: resource.clone(),
                });
            }
            let key = BindKey::of(&pipeline.layouts[g], &entries);
            if let Some(group) = key.as_ref().and_then(|k| batch.bind_groups.get(k)) {
                bind_groups.push(group);
                continue;
            }
            let group = self
                .inner
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(op),
                    layout: &pipeline.layouts[g],
                    entries: &entries,
                });
            made.push((key, group.clone()));
            bind_groups.push(group);
        }
        // No error scope per launch: what wgpu reports while recording reaches the
        // uncaptured-error sink at once, so the error names this op. Checked before the
        // pass sees the bind group, so that a rejected launch leaves the batch sound.
        if let Err(e) = self.take_uncaptured(op) {
            batch.params.truncate(first_params);
            return Err(e);
        }
        // Kept only once wgpu has accepted them.
        for (key, group) in made {
            if let Some(key) = key {
                batch.bind_groups.insert(key, group);
            }
        }
        let encoder = batch.encoder.get_or_insert_with(|| self.new_encoder());
        match timestamps {
            // A timed launch gets a pass of its own: timestamps are written per pass.
            Some((queries, first)) => {
                batch.pass = None;
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(op),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(first),
                        end_of_pass_write_index: Some(first + 1),
                    }),
                });
                pass.set_pipeline(&pipeline.compute);
                for (g, bind_group) in bind_groups.iter().enumerate() {
                    pass.set_bind_group(g as u32, bind_group, &[]);
                }
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            None => {
                let pass = batch.pass.get_or_insert_with(|| {
                    let descriptor = wgpu::ComputePassDescriptor {
                        label: Some("kiln batch"),
                        timestamp_writes: None,
                    };
                    encoder.begin_compute_pass(&descriptor).forget_lifetime()
                });
                pass.set_pipeline(&pipeline.compute);
                for (g, bind_group) in bind_groups.iter().enumerate() {
                    pass.set_bind_group(g as u32, bind_group, &[]);
                }
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
        }
        batch.ops.push(op);
        // A launch takes at most `MAX_BIND_GROUPS` params slots.
        let full = batch.ops.len() >= MAX_BATCH;
        drop(guard);
        self.count_launch_time(start);
        if full {
            self.flush(op)?;
        }
        Ok(())
    }

    pub(crate) fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.inner.pool.open_batch();
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
        let mut batch = self.inner.batch.lock().unwrap();
        self.record_into(op, &mut batch, f)
    }

    /// `record`, then `flush`, under one hold of the batch's lock: another thread's
    /// flush cannot take the commands between the two, so the index returned is that of
    /// the submission that carries them.
    pub(crate) fn record_and_submit(
        &self,
        op: &'static str,
        f: impl FnOnce(&wgpu::Device, &mut wgpu::CommandEncoder),
    ) -> Result<wgpu::SubmissionIndex> {
        let mut batch = self.inner.batch.lock().unwrap();
        self.record_into(op, &mut batch, f)?;
        self.submit_batch(op, batch)?.ok_or_else(|| Error::Gpu {
            op,
            kind: GpuErrorKind::Internal,
            message: "commands just recorded were not in the batch submitted".into(),
        })
    }

    fn record_into<R>(
        &self,
        op: &'static str,
        batch: &mut Batch,
        f: impl FnOnce(&wgpu::Device, &mut wgpu::CommandEncoder) -> R,
    ) -> Result<R> {
        self.close_pass(batch)?;
        self.scoped(op, || {
            let encoder = batch.encoder.get_or_insert_with(|| self.new_encoder());
            f(&self.inner.device, encoder)
        })
    }

    /// Ends the batch's compute pass. A pass reports some errors only when it ends,
    /// after the launch that caused them returned: the error names the pass's ops.
    fn close_pass(&self, batch: &mut Batch) -> Result<()> {
        if batch.pass.take().is_none() {
            return Ok(());
        }
        let last = batch.ops.last().copied().unwrap_or("flush");
        self.take_uncaptured(last).map_err(|e| match e {
            Error::Gpu { op, kind, message } => Error::Gpu {
                op,
                kind,
                message: format!("in a pass of the launches {:?}: {message}", batch.ops),
            },
            other => other,
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
        self.submit_batch(op, self.inner.batch.lock().unwrap())
            .map(|_| ())
    }

    /// Submits the batch whose lock is `batch`, letting it go once submitted; the
    /// submission's index, `None` when nothing was recorded.
    fn submit_batch(
        &self,
        op: &'static str,
        mut batch: MutexGuard<'_, Batch>,
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        let closed = self.close_pass(&mut batch);
        batch.ops.clear();
        let mut timed = None;
        let mut index = None;
        if let Some(mut encoder) = batch.encoder.take() {
            self.profile_submission();
            let start = Instant::now();
            if !batch.params.is_empty() {
                // Runs before the batch's commands: the queue's writes come first.
                let arena = &self.inner.params_arena;
                self.inner.queue.write_buffer(arena, 0, &batch.params);
                batch.params.clear();
            }
            timed = self.profile_resolve(&mut encoder);
            let commands = encoder.finish();
            self.count_launch_time(start);
            index = Some(self.scoped(op, || self.inner.queue.submit([commands]))?);
        }
        closed?;
        self.inner.pool.recycle();
        drop(batch);
        if let Some((readable, kernels)) = timed {
            self.profile_collect(readable, kernels)?;
        }
        Ok(index)
    }

    /// Submits everything recorded so far and waits until the GPU has finished it.
    /// Pending fused work that some tensor still holds runs first.
    pub fn synchronize(&self) -> Result<()> {
        self.run_pending("synchronize")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ElementwiseParams;
    use bytemuck::Zeroable;

    #[test]
    fn a_launch_wgpu_rejects_is_an_error_naming_its_op_and_the_batch_goes_on() {
        let device = match GpuDevice::new() {
            Ok(d) => d,
            Err(e) if std::env::var("KILN_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
                eprintln!("KILN_SKIP_GPU_TESTS=1: skipping a GPU test ({e})");
                return;
            }
            Err(e) => panic!("GPU tests need an adapter: {e}"),
        };
        let kept = || device.inner.batch.lock().unwrap().bind_groups.len();
        // The device's probes at opening launched kernels.
        let kept_at_opening = kept();
        let out = device.alloc("test", 4, DType::F32).unwrap();
        let mut params = ElementwiseParams::zeroed();
        params.numel = 4;
        // The copy kernel binds an input and an output; the output is missing.
        let e = device
            .dispatch(
                "broken_op",
                Kernel::Copy,
                &[DType::F32],
                &params,
                &[out.buffer()],
                [1, 1, 1],
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Gpu {
                    op: "broken_op",
                    ..
                }
            ),
            "{e}"
        );
        // A sound launch after it records, runs and reads back.
        let input = device
            .upload_bytes(
                "test",
                bytemuck::cast_slice(&[1.0f32, 2.0, 3.0, 4.0]),
                4,
                DType::F32,
            )
            .unwrap();
        params.contiguous = 0b1001;
        device
            .dispatch(
                "copy",
                Kernel::Copy,
                &[DType::F32],
                &params,
                &[input.buffer(), out.buffer()],
                [1, 1, 1],
            )
            .unwrap();
        let bytes = device.read_bytes("test", &out, 16).unwrap();
        let got: Vec<f32> = bytemuck::cast_slice(&bytes).to_vec();
        assert_eq!(got, vec![1.0, 2.0, 3.0, 4.0]);
        // The rejected launch's bind group was not kept; the sound one's was, until
        // trimming the pool let it go (a kept group holds its buffers).
        assert_eq!(kept(), kept_at_opening + 1);
        drop((input, out));
        device.trim_pool().unwrap();
        assert_eq!(kept(), 0);
    }
}
