//! One wgpu device: its queue, pipeline cache, buffer pool and the command batch
//! being recorded. Errors wgpu reports (validation, out of memory) are caught with
//! error scopes and an uncaptured-error handler and returned as `Err`, never panics.

use crate::adapter::{self, AdapterSummary};
use crate::kernels::Kernel;
use crate::ops::matmul::MatmulVariant;
use crate::pool::{size_class, BufferPool, PoolStats, PooledBuffer};
use kiln_core::{DType, Error, GpuErrorKind, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use wgpu::util::DeviceExt;

/// Dispatches recorded before the batch is submitted without waiting for a sync point.
const MAX_BATCH: usize = 64;

/// Threads per workgroup of every 1-D kernel.
pub(crate) const WORKGROUP: u32 = 256;

/// Compute pipelines by kernel and the dtypes it was specialised to.
type PipelineCache = HashMap<(Kernel, Vec<DType>), Arc<wgpu::ComputePipeline>>;

#[derive(Default)]
struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: usize,
}

struct Inner {
    id: usize,
    summary: AdapterSummary,
    device: wgpu::Device,
    queue: wgpu::Queue,
    limits: wgpu::Limits,
    shader_f16: bool,
    /// Read per launch by the variant choices, so kept rather than derived each time.
    software: bool,
    matmul_variant: Mutex<MatmulVariant>,
    pipelines: Mutex<PipelineCache>,
    pool: Arc<BufferPool>,
    batch: Mutex<Batch>,
    poison: AtomicBool,
    /// Kept for reads to the host (see `read_with`).
    staging: Mutex<Option<wgpu::Buffer>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
}

/// A handle to one GPU; cheap to clone.
#[derive(Clone)]
pub struct GpuDevice {
    inner: Arc<Inner>,
}

impl fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gpu:{}({}, {})",
            self.inner.id, self.inner.summary.name, self.inner.summary.backend
        )
    }
}

impl PartialEq for GpuDevice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl GpuDevice {
    /// Opens the preferred adapter (see `adapter` for the environment variables) with
    /// its real limits, and `SHADER_F16` where it has it.
    pub fn new() -> Result<Self> {
        let instance = adapter::instance();
        let adapter = adapter::choose(&instance)?;
        let summary = AdapterSummary::of(&adapter);
        let features =
            adapter.features() & (wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::NoAdapter {
            reason: format!("{} refused a device: {e}", summary.name),
        })?;
        let software = summary.is_software();
        let matmul_variant = Mutex::new(MatmulVariant::for_adapter(software, &limits));
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string())
        }));
        Ok(GpuDevice {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                summary,
                device,
                queue,
                limits,
                shader_f16: features.contains(wgpu::Features::SHADER_F16),
                software,
                matmul_variant,
                pipelines: Mutex::default(),
                pool: Arc::default(),
                batch: Mutex::default(),
                poison: AtomicBool::new(false),
                staging: Mutex::default(),
                uncaptured,
            }),
        })
    }

    pub fn summary(&self) -> &AdapterSummary {
        &self.inner.summary
    }

    /// True for adapters that run on the CPU (Mesa's lavapipe, WARP, SwiftShader).
    pub fn is_software(&self) -> bool {
        self.inner.software
    }

    /// f16 needs `SHADER_F16`; f64 is never available (WGSL has no f64).
    pub fn supports(&self, dtype: DType) -> bool {
        match dtype {
            DType::F16 => self.inner.shader_f16,
            DType::F64 => false,
            DType::F32 | DType::I32 => true,
        }
    }

    fn unsupported(op: &'static str, dtype: DType) -> Error {
        let reason = match dtype {
            DType::F64 => "WGSL has no f64; use F32 on the GPU or F64 on the CPU",
            _ => "this adapter lacks SHADER_F16; convert with to_dtype(F32)",
        };
        Error::UnsupportedDType { op, dtype, reason }
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Releases pooled buffers that no tensor uses, and the readback staging buffer.
    pub fn trim_pool(&self) -> Result<()> {
        self.flush("trim_pool")?;
        self.inner.pool.trim();
        *self.inner.staging.lock().unwrap() = None;
        Ok(())
    }

    /// When on, every kernel output is filled with NaN bits (0xFFFFFFFF) before the
    /// kernel runs, so a test sees any element a kernel fails to write.
    pub fn set_poison_outputs(&self, on: bool) {
        self.inner.poison.store(on, Ordering::Relaxed);
    }

    /// A buffer for `n` elements of `dtype`, checked against the device's limits.
    pub(crate) fn alloc(&self, op: &'static str, n: usize, dtype: DType) -> Result<PooledBuffer> {
        if !self.supports(dtype) {
            return Err(Self::unsupported(op, dtype));
        }
        let bytes = (n as u64) * dtype.size_in_bytes() as u64;
        let limit = self
            .inner
            .limits
            .max_storage_buffer_binding_size
            .min(self.inner.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::LimitExceeded {
                op,
                what: "a storage buffer of that many bytes",
                needed: bytes,
                limit,
            });
        }
        // Round up to the pool's size class, but never past what one binding may hold.
        let size = size_class(bytes)
            .min(limit)
            .max(bytes.div_ceil(4) * 4)
            .max(4);
        Ok(self.inner.pool.acquire(&self.inner.device, size))
    }

    /// A buffer for a kernel's output, poisoned when poisoning is on.
    pub(crate) fn alloc_output(
        &self,
        op: &'static str,
        n: usize,
        dtype: DType,
    ) -> Result<PooledBuffer> {
        let buffer = self.alloc(op, n, dtype)?;
        if self.inner.poison.load(Ordering::Relaxed) {
            self.fill_words(op, &buffer, u32::MAX)?;
        }
        Ok(buffer)
    }

    /// Writes `pattern` into every 32-bit word of the buffer (a kernel in the batch).
    pub(crate) fn fill_words(
        &self,
        op: &'static str,
        buffer: &PooledBuffer,
        pattern: u32,
    ) -> Result<()> {
        let words = (buffer.size() / 4) as usize;
        let params = crate::params::Words([words as u32, pattern, 0, 0]);
        self.dispatch(
            op,
            Kernel::Fill,
            &[],
            bytemuck::bytes_of(&params),
            &[buffer.buffer()],
            self.groups_1d(op, words)?,
        )
    }

    /// Uploads bytes into a fresh buffer. The queue runs the write before the next batch.
    pub(crate) fn upload_bytes(
        &self,
        op: &'static str,
        bytes: &[u8],
        n: usize,
        dtype: DType,
    ) -> Result<PooledBuffer> {
        let buffer = self.alloc(op, n, dtype)?;
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
        Ok(buffer)
    }

    /// Workgroup counts for one thread per item in 256-wide workgroups; counts beyond
    /// the per-dimension limit spill into y.
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

    /// The matmul kernel this device runs (see `ops/matmul.rs`).
    pub fn matmul_variant(&self) -> MatmulVariant {
        *self.inner.matmul_variant.lock().unwrap()
    }

    /// Chooses the matmul kernel, e.g. to compare variants on one adapter.
    pub fn set_matmul_variant(&self, variant: MatmulVariant) -> Result<()> {
        if !variant.fits(&self.inner.limits) {
            return Err(Error::Unsupported {
                op: "set_matmul_variant",
                reason: format!("{variant:?} needs 64 KiB uniform buffers at 64 KiB offsets"),
            });
        }
        *self.inner.matmul_variant.lock().unwrap() = variant;
        Ok(())
    }

    pub(crate) fn max_workgroups_per_dim(&self) -> u32 {
        self.inner.limits.max_compute_workgroups_per_dimension
    }

    /// Builds (once) the pipeline of `kernel` specialised to `dtypes`.
    fn pipeline(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        for &d in dtypes {
            if !self.supports(d) {
                return Err(Self::unsupported(op, d));
            }
        }
        let key = (kernel, dtypes.to_vec());
        if let Some(p) = self.inner.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let source = kernel.specialise(dtypes)?;
        let pipeline = Arc::new(self.compile_wgsl(op, kernel.file().0, &source, kernel.entry())?);
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Compiles WGSL into a compute pipeline; a shader that fails to parse or validate
    /// comes back as `Err(Error::Gpu { kind: Validation, .. })`.
    pub fn compile_wgsl(
        &self,
        op: &'static str,
        label: &str,
        source: &str,
        entry: &str,
    ) -> Result<wgpu::ComputePipeline> {
        self.scoped(op, || {
            let module = self
                .inner
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(label),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
            self.inner
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(label),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })
    }

    /// Runs `f` inside validation and out-of-memory error scopes.
    fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> Result<T> {
        let validation = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let value = f();
        let oom = pollster::block_on(oom.pop());
        let validation = pollster::block_on(validation.pop());
        if let Some(e) = oom.or(validation) {
            return Err(gpu_error(op, e));
        }
        self.take_uncaptured(op)?;
        Ok(value)
    }

    fn take_uncaptured(&self, op: &'static str) -> Result<()> {
        let mut errors = self.inner.uncaptured.lock().unwrap();
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.drain(..).collect::<Vec<_>>().join("; ");
        Err(Error::Gpu {
            op,
            kind: GpuErrorKind::Validation,
            message,
        })
    }

    /// Records one kernel launch into the current batch. `buffers` bind in order from
    /// binding 1; binding 0 is the uniform `params`.
    pub(crate) fn dispatch(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let resources: Vec<_> = buffers.iter().map(|b| b.as_entire_binding()).collect();
        self.dispatch_bound(op, kernel, dtypes, params, &resources, groups)
    }

    /// As `dispatch`, with each binding given as a resource (e.g. a window of a buffer).
    pub(crate) fn dispatch_bound(
        &self,
        op: &'static str,
        kernel: Kernel,
        dtypes: &[DType],
        params: &[u8],
        resources: &[wgpu::BindingResource<'_>],
        groups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.pipeline(op, kernel, dtypes)?;
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
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            batch.dispatches += 1;
            batch.dispatches >= MAX_BATCH
        })?;
        if full {
            self.flush(op)?;
        }
        Ok(())
    }

    fn new_encoder(&self) -> wgpu::CommandEncoder {
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

    pub(crate) fn has_feature(&self, feature: wgpu::Features) -> bool {
        self.inner.device.features().contains(feature)
    }

    /// Nanoseconds per timestamp-query tick.
    pub(crate) fn timestamp_period(&self) -> f32 {
        self.inner.queue.get_timestamp_period()
    }

    /// Records a buffer clear (zeros) into the current batch.
    pub(crate) fn clear(&self, op: &'static str, buffer: &PooledBuffer) -> Result<()> {
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
        if let Some(encoder) = batch.encoder.take() {
            self.scoped(op, || {
                self.inner.queue.submit([encoder.finish()]);
            })?;
        }
        self.inner.pool.recycle();
        Ok(())
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
        self.record(op, |_, encoder| {
            encoder.copy_buffer_to_buffer(buffer.buffer(), 0, staging, 0, size)
        })?;
        self.flush(op)?;
        let slice = staging.slice(..size);
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
            decode(&mapped[..bytes])
        };
        staging.unmap();
        self.take_uncaptured(op)?;
        Ok(value)
    }
}

fn gpu_error(op: &'static str, e: wgpu::Error) -> Error {
    let kind = match &e {
        wgpu::Error::OutOfMemory { .. } => GpuErrorKind::OutOfMemory,
        wgpu::Error::Validation { .. } => GpuErrorKind::Validation,
        wgpu::Error::Internal { .. } => GpuErrorKind::Internal,
    };
    Error::Gpu {
        op,
        kind,
        message: e.to_string(),
    }
}
