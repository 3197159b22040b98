//! Counting what a device runs: kernel launches, the bytes they bind, and (where the
//! adapter has timestamp queries) the GPU time of each launch. The figures that do not
//! depend on the machine, dispatches, bytes bound and the peak of memory held, are how
//! launch and memory work are compared between versions.

use crate::byte_span::{bytes_in, ByteSpan};
use crate::device::GpuDevice;
use crate::launch::Bindings;
use kiln_core::{Error, Result};
use std::collections::HashMap;
use std::time::Duration;

/// One kernel (a pipeline: kernel and dtypes) in a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProfile {
    /// `Kernel::label` and the dtypes, e.g. `elementwise/binary.wgsl:main_vec4 [F32]`.
    pub name: String,
    pub launches: u64,
    /// Bytes of the buffers bound read-only (each buffer once a launch), summed over
    /// launches: each binding's range, or where the launcher knows the kernel reads less
    /// of it (a fused read of a view: the bytes of its elements), that.
    pub bytes_read: u64,
    /// Bytes of the buffers bound read-write (outputs), summed over launches: each
    /// binding's range, or what the launcher knows the kernel writes of it.
    pub bytes_written: u64,
    /// GPU time summed over launches; `None` without timestamp queries.
    pub gpu_time: Option<Duration>,
}

/// What ran while a closure was being profiled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Kernels by total GPU time (or launches), largest first.
    pub kernels: Vec<KernelProfile>,
    /// Buffer copies and clears recorded outside kernels.
    pub transfers: u64,
    /// Reads to the host: each one waits for the GPU to finish (a sync point).
    pub readbacks: u64,
    /// Batches submitted to the queue (each a fixed cost on the host and in the driver).
    pub submissions: u64,
    /// Bind groups made (a cost on the host at each launch): a launch whose buffers and
    /// params' place an earlier launch bound reuses its group.
    pub bind_groups: u64,
    /// The most bytes live tensors held at once: what the work needs of the device's
    /// memory (the pool may keep more, for reuse).
    pub peak_live_bytes: u64,
}

impl Profile {
    pub fn dispatches(&self) -> u64 {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    /// Bytes read and written by every launch.
    pub fn bytes(&self) -> u64 {
        self.kernels
            .iter()
            .map(|k| k.bytes_read + k.bytes_written)
            .sum()
    }

    pub fn gpu_time(&self) -> Option<Duration> {
        self.kernels.iter().map(|k| k.gpu_time).sum()
    }
}

/// Timestamp pairs of the launches in the batch being recorded.
struct Timestamps {
    queries: wgpu::QuerySet,
    /// The kernel of each pair, in query order.
    kernels: Vec<String>,
}

/// Counts kept while profiling is on.
#[derive(Default)]
pub(crate) struct Recorder {
    kernels: HashMap<String, KernelProfile>,
    transfers: u64,
    readbacks: u64,
    submissions: u64,
    pending: Option<Timestamps>,
}

/// Query pairs one batch can hold: a batch is submitted at `MAX_BATCH` dispatches.
const QUERY_PAIRS: u32 = 128;

impl GpuDevice {
    /// Runs `f` and reports every kernel it launched. The device is synchronised before
    /// and after, so the profile holds `f`'s work alone. With timestamp queries each
    /// launch is timed on the GPU, which makes every batch a sync point while profiling.
    pub fn profile<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, Profile)> {
        self.synchronize()?;
        {
            let mut recorder = self.inner.profiler.lock().unwrap();
            if recorder.is_some() {
                return Err(Error::InvalidArgument {
                    op: "profile",
                    reason: "a profile is already running on this device".into(),
                });
            }
            *recorder = Some(Recorder::default());
        }
        self.inner.pool.reset_peak();
        let bind_groups = self.bind_groups_made();
        let value = f().and_then(|v| self.synchronize().map(|_| v));
        let recorder = self.inner.profiler.lock().unwrap().take();
        let value = value?;
        let recorder = recorder.unwrap_or_default();
        let mut kernels: Vec<KernelProfile> = recorder.kernels.into_values().collect();
        kernels.sort_by(|a, b| {
            (b.gpu_time, b.launches, &a.name).cmp(&(a.gpu_time, a.launches, &b.name))
        });
        let profile = Profile {
            kernels,
            transfers: recorder.transfers,
            readbacks: recorder.readbacks,
            submissions: recorder.submissions,
            bind_groups: self.bind_groups_made() - bind_groups,
            peak_live_bytes: self.inner.pool.stats().peak_live_bytes,
        };
        Ok((value, profile))
    }

    fn profiling(&self) -> bool {
        self.inner.profiler.lock().unwrap().is_some()
    }

    /// Counts one launch, whose pipeline writes the bindings `written` (group, binding);
    /// returns the pass's timestamp writes when launches are timed.
    pub(crate) fn profile_launch(
        &self,
        name: impl FnOnce() -> String,
        written: &[(u32, u32)],
        bind: &[Bindings<'_>],
    ) -> Option<(wgpu::QuerySet, u32)> {
        let mut guard = self.inner.profiler.lock().unwrap();
        let recorder = guard.as_mut()?;
        let name = name();
        let mut write = 0;
        let resources = bind.iter().enumerate().flat_map(|(g, group)| {
            let known = |binding: u32| group.spans.iter().find(|(b, _)| *b == binding);
            let member = |binding: u32| group.per_member.map(|n| (binding.max(1) - 1) / n);
            (group.resources.iter())
                .map(move |(b, r)| (g, *b, r, known(*b).map(|(_, s)| s.clone()), member(*b)))
        });
        // A buffer several read bindings view (attention's q, k and v, thirds of one
        // projection; a sequence's time steps) is counted once: the bytes of the
        // spans they read, together; once per member in a launch of several.
        let mut reads: Vec<(&wgpu::Buffer, Option<u32>, Vec<ByteSpan>)> = Vec::new();
        for (group, binding, resource, known, member) in resources {
            let wgpu::BindingResource::Buffer(b) = resource else {
                continue;
            };
            let bytes = b.size.map_or(b.buffer.size() - b.offset, |s| s.get());
            let bound = b.offset..b.offset + bytes;
            let span = known.map_or(ByteSpan::whole(bound.clone()), |s| s.within(&bound));
            if written.contains(&(group as u32, binding)) {
                write += span.touched;
                continue;
            }
            let same = |(buffer, m, _): &&mut (&wgpu::Buffer, Option<u32>, _)| {
                *buffer == b.buffer && *m == member
            };
            match reads.iter_mut().find(same) {
                Some((_, _, spans)) => spans.push(span),
                None => reads.push((b.buffer, member, vec![span])),
            }
        }
        let read: u64 = reads.into_iter().map(|(_, _, spans)| bytes_in(spans)).sum();
        let entry = recorder
            .kernels
            .entry(name.clone())
            .or_insert_with(|| KernelProfile {
                name: name.clone(),
                launches: 0,
                bytes_read: 0,
                bytes_written: 0,
                gpu_time: None,
            });
        entry.launches += 1;
        entry.bytes_read += read;
        entry.bytes_written += write;
        if !self.has_timestamps() {
            return None;
        }
        let pending = recorder.pending.get_or_insert_with(|| Timestamps {
            queries: self
                .inner
                .device
                .create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kiln profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERY_PAIRS * 2,
                }),
            kernels: Vec::new(),
        });
        let pair = pending.kernels.len() as u32;
        if pair >= QUERY_PAIRS {
            return None;
        }
        pending.kernels.push(name);
        Some((pending.queries.clone(), pair * 2))
    }

    /// Counts a copy or clear recorded outside a kernel.
    pub(crate) fn profile_transfer(&self) {
        if let Some(recorder) = self.inner.profiler.lock().unwrap().as_mut() {
            recorder.transfers += 1;
        }
    }

    /// Counts a batch submitted.
    pub(crate) fn profile_submission(&self) {
        if let Some(recorder) = self.inner.profiler.lock().unwrap().as_mut() {
            recorder.submissions += 1;
        }
    }

    /// Counts a read to the host.
    pub(crate) fn profile_readback(&self) {
        if let Some(recorder) = self.inner.profiler.lock().unwrap().as_mut() {
            recorder.readbacks += 1;
        }
    }

    /// Before a batch is submitted: resolves its timestamps into a readable buffer.
    /// After the submission, `profile_collect` reads them.
    pub(crate) fn profile_resolve(
        &self,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Option<(wgpu::Buffer, Vec<String>)> {
        if !self.profiling() {
            return None;
        }
        let pending = self
            .inner
            .profiler
            .lock()
            .unwrap()
            .as_mut()?
            .pending
            .take()?;
        let bytes = pending.kernels.len() as u64 * 16;
        let resolved = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readable = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln profile read"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let count = pending.kernels.len() as u32 * 2;
        encoder.resolve_query_set(&pending.queries, 0..count, &resolved, 0);
        encoder.copy_buffer_to_buffer(&resolved, 0, &readable, 0, bytes);
        Some((readable, pending.kernels))
    }

    /// After the batch that `profile_resolve` prepared was submitted: waits for it and
    /// adds each launch's GPU time to its kernel.
    pub(crate) fn profile_collect(
        &self,
        readable: wgpu::Buffer,
        kernels: Vec<String>,
    ) -> Result<()> {
        let ticks: Vec<u64> = self.map_read("profile", &readable, readable.size(), |mapped| {
            mapped
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        })?;
        let period = f64::from(self.timestamp_period());
        let mut guard = self.inner.profiler.lock().unwrap();
        let Some(recorder) = guard.as_mut() else {
            return Ok(());
        };
        for (name, pair) in kernels.iter().zip(ticks.chunks_exact(2)) {
            let nanos = pair[1].saturating_sub(pair[0]) as f64 * period;
            if let Some(k) = recorder.kernels.get_mut(name) {
                let t = k.gpu_time.unwrap_or_default() + Duration::from_nanos(nanos as u64);
                k.gpu_time = Some(t);
            }
        }
        Ok(())
    }
}
