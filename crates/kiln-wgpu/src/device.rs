//! One wgpu device and the state its jobs share: the adapter's limits and features,
//! the dtype policy, the matmul variant, the convolution algorithm, how row kernels
//! combine their lanes, the output-poisoning switch. The jobs live beside it: `alloc` (buffers), `pipelines`,
//! `launch` (the batch), `readback` and `error_scopes`.

use crate::adapter::{self, AdapterSummary};
use crate::attention_split::AttentionSplit;
use crate::attention_way::AttentionWay;
use crate::autotune::{self, Autotuner, Tunable};
use crate::conv_algorithm::ConvAlgorithm;
use crate::fusion::{FusedParams, PendingList};
use crate::kernel_groups::kernel_groups;
use crate::kernels::Kernel;
use crate::launch::{Batch, MAX_BATCH, MAX_BIND_GROUPS};
use crate::matmul_variant::MatmulVariant;
use crate::ops::optim_group;
use crate::pipelines::{Pipeline, PipelineCache};
use crate::pool::{BufferPool, PoolStats};
use crate::profile::Recorder;
use crate::row_reduction::RowReduction;
use crate::subgroup_probe;
use crate::upload::StagingRing;
use kiln_core::{DType, Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) struct Inner {
    pub(crate) id: usize,
    pub(crate) summary: AdapterSummary,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    /// Bind groups one kernel may use (`kernel_groups`).
    pub(crate) kernel_groups: usize,
    pub(crate) shader_f16: bool,
    /// Read per launch by the variant choices, so kept rather than derived each time.
    pub(crate) software: bool,
    pub(crate) matmul_variant: Mutex<MatmulVariant>,
    pub(crate) conv_algorithm: Mutex<ConvAlgorithm>,
    /// The subgroup size the row kernels may combine lanes with, or why they may not
    /// (`subgroup_probe`); set once, just after opening.
    pub(crate) subgroups: OnceLock<std::result::Result<u32, String>>,
    /// Whether the row kernels combine lanes with subgroups (`set_row_reduction`).
    pub(crate) subgroup_rows: AtomicBool,
    /// The autotuner's decisions for `MatmulVariant::Autotune`.
    pub(crate) autotuner: Mutex<Autotuner>,
    pub(crate) pipelines: Mutex<PipelineCache>,
    /// Whether elementwise ops record pending storages (`fusion`).
    pub(crate) fusion: AtomicBool,
    /// Whether small pending products run several to a launch (`ops::matmul_group`).
    pub(crate) matmul_groups: AtomicBool,
    /// How attention without masks runs (see `AttentionWay`).
    pub(crate) attention_way: Mutex<AttentionWay>,
    /// How the fused attention kernels spread a row (see `AttentionSplit`).
    pub(crate) attention_split: Mutex<AttentionSplit>,
    /// Generated kernels by program structure, and their sources in build order.
    pub(crate) fused_pipelines: Mutex<HashMap<String, Arc<Pipeline>>>,
    pub(crate) fused_sources: Mutex<Vec<String>>,
    /// Pending storages to run at `synchronize`.
    pub(crate) pending: Mutex<PendingList>,
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) batch: Mutex<Batch>,
    pub(crate) poison: AtomicBool,
    /// Kept for reads to the host (see `readback`).
    pub(crate) staging: Mutex<Option<wgpu::Buffer>>,
    /// Staging chunks for large uploads.
    pub(crate) uploads: Mutex<StagingRing>,
    pub(crate) uncaptured: Arc<Mutex<Vec<String>>>,
    /// Counts launches while `profile` runs.
    pub(crate) profiler: Mutex<Option<Recorder>>,
    /// Every launch's params in a batch, at multiples of `params_stride` (see `launch`).
    pub(crate) params_arena: wgpu::Buffer,
    pub(crate) params_stride: u64,
    /// Host time spent recording launches (see `host_launch_time`).
    pub(crate) launch_nanos: AtomicU64,
}

/// A handle to one GPU; cheap to clone.
#[derive(Clone)]
pub struct GpuDevice {
    pub(crate) inner: Arc<Inner>,
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

/// `KILN_AS_HARDWARE=1`: a software adapter runs what a hardware GPU would (row
/// kernels, matmul variants and groups, reductions not cut into runs), so that tests
/// reach those paths on lavapipe, at the subgroup size `LP_NATIVE_VECTOR_WIDTH` gives it.
/// Loops past lavapipe's limit (`loop_budget`) then end early: such results are wrong.
fn as_hardware() -> bool {
    crate::env_warning::switch("KILN_AS_HARDWARE", false)
}

/// Whether small pending products run several to a launch (`ops::matmul_group`):
/// `KILN_MATMUL_GROUPS=0` or `=1`, else on hardware GPUs only. A group fills cores that
/// one small product leaves idle; a software adapter has few, and its compiler runs
/// every product's code in the group's switch under a mask (lavapipe: the grouped
/// products 6% slower two to a launch, 20-28% eight to a launch).
fn matmul_groups_by_default(software: bool) -> bool {
    crate::env_warning::switch("KILN_MATMUL_GROUPS", !software)
}

impl GpuDevice {
    /// Opens the preferred adapter (see `adapter` for the environment variables) with
    /// its real limits, and `SHADER_F16` and `SUBGROUP` where it has them. With
    /// `SUBGROUP`, the row kernels combine lanes with subgroups if the adapter's
    /// subgroups pass `subgroup_probe`'s check, unless `KILN_SUBGROUPS=0`.
    pub fn new() -> Result<Self> {
        let instance = adapter::instance();
        let adapter = adapter::choose(&instance)?;
        let summary = AdapterSummary::of(&adapter);
        let subgroups_wanted = std::env::var("KILN_SUBGROUPS").as_deref() != Ok("0");
        let mut wanted = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        if subgroups_wanted {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = adapter.features() & wanted;
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
        let software = summary.is_software() && !as_hardware();
        if summary.is_software() && !software {
            crate::env_warning::say_once(&format!(
                "KILN_AS_HARDWARE=1: {} runs a hardware GPU's paths, for tests; loops past \
                 its limit give wrong results",
                summary.name
            ));
        }
        // Room for a batch's params: the largest params struct, at the alignment that
        // uniform bindings need.
        let kernels = Kernel::ALL.iter().map(|k| k.params().size).max();
        // A launch of an optimizer over several parameters adds their starts.
        let largest =
            optim_group::params_size(kernels.unwrap_or(16)).max(std::mem::size_of::<FusedParams>());
        let align = u64::from(limits.min_uniform_buffer_offset_alignment).max(16);
        let params_stride = (largest as u64).div_ceil(align) * align;
        let params_arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln params"),
            size: params_stride * (MAX_BATCH * MAX_BIND_GROUPS) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let matmul_variant = Mutex::new(MatmulVariant::for_adapter(software, &limits));
        let autotuner = Autotuner::load(
            &summary.name,
            &summary.driver,
            &tuned_candidates(software, &limits),
            autotune::cache_path(),
        );
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string())
        }));
        let kernel_groups = kernel_groups(&summary.backend, &summary.driver, &limits);
        let gpu = GpuDevice {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                summary,
                device,
                queue,
                limits,
                kernel_groups,
                shader_f16: features.contains(wgpu::Features::SHADER_F16),
                software,
                matmul_variant,
                conv_algorithm: Mutex::new(ConvAlgorithm::for_adapter(software)),
                subgroups: OnceLock::new(),
                subgroup_rows: AtomicBool::new(false),
                autotuner: Mutex::new(autotuner),
                pipelines: Mutex::default(),
                fusion: AtomicBool::new(std::env::var("KILN_FUSION").as_deref() != Ok("0")),
                matmul_groups: AtomicBool::new(matmul_groups_by_default(software)),
                attention_way: Mutex::new(AttentionWay::from_env()),
                attention_split: Mutex::new(AttentionSplit::from_env()),
                fused_pipelines: Mutex::default(),
                fused_sources: Mutex::default(),
                pending: Mutex::default(),
                pool: Arc::default(),
                batch: Mutex::default(),
                poison: AtomicBool::new(false),
                staging: Mutex::default(),
                uploads: Mutex::default(),
                uncaptured,
                profiler: Mutex::default(),
                launch_nanos: AtomicU64::new(0),
                params_arena,
                params_stride,
            }),
        };
        let subgroups = if !subgroups_wanted {
            Err("KILN_SUBGROUPS=0".to_string())
        } else if !features.contains(wgpu::Features::SUBGROUP) {
            Err("the adapter lacks wgpu's SUBGROUP feature".to_string())
        } else {
            // `subgroup_size` names the op; the probe's refusal keeps only its reason.
            subgroup_probe::check(&gpu).map_err(|e| match e {
                Error::Unsupported { op, reason } if op == subgroup_probe::REFUSED_OP => reason,
                e => e.to_string(),
            })
        };
        gpu.inner
            .subgroup_rows
            .store(subgroups.is_ok(), Ordering::Relaxed);
        gpu.inner.subgroups.set(subgroups).expect("set once, here");
        Ok(gpu)
    }

    pub fn summary(&self) -> &AdapterSummary {
        &self.inner.summary
    }

    /// Bind groups one kernel may use, each with its own params: how many pending
    /// expressions one fused launch computes, and a fused kernel's prologues and
    /// epilogue with the kernel's own group. Three on a lavapipe older than Mesa 23.3
    /// (see `kernel_groups.rs`), four elsewhere unless the adapter allows fewer.
    pub fn kernel_groups(&self) -> usize {
        self.inner.kernel_groups
    }

    /// True for adapters that run on the CPU (Mesa's lavapipe, WARP, SwiftShader), unless
    /// `KILN_AS_HARDWARE=1` has one run a hardware GPU's paths (`summary().is_software()`
    /// still says what the adapter is).
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

    pub(crate) fn unsupported(op: &'static str, dtype: DType) -> Error {
        let reason = match dtype {
            DType::F64 => "WGSL has no f64; use F32 on the GPU or F64 on the CPU",
            _ => "this adapter lacks SHADER_F16; convert with to_dtype(F32)",
        };
        Error::UnsupportedDType { op, dtype, reason }
    }

    /// Host time this device has spent recording work since it opened: recording
    /// pending ops and generating their kernels (fusion), params, bind groups, passes,
    /// finishing command buffers, but not `queue.submit`, where a software adapter runs
    /// the work itself. The launch cost kiln controls.
    pub fn host_launch_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.inner.launch_nanos.load(Ordering::Relaxed))
    }

    /// Adds the time since `start` to `host_launch_time`.
    pub(crate) fn count_launch_time(&self, start: std::time::Instant) {
        let nanos = start.elapsed().as_nanos() as u64;
        self.inner.launch_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Bind groups made since the device started. Each costs host time at its launch;
    /// a training step repeated from the same state finds the groups it made before.
    pub fn bind_groups_made(&self) -> u64 {
        self.inner.batch.lock().unwrap().bind_groups.made
    }

    /// Releases pooled buffers that no tensor uses, and the staging buffers of readbacks
    /// and uploads.
    pub fn trim_pool(&self) -> Result<()> {
        self.flush("trim_pool")?;
        // Kept bind groups hold the buffers they bind.
        self.inner.batch.lock().unwrap().bind_groups.clear();
        self.inner.pool.trim();
        *self.inner.staging.lock().unwrap() = None;
        *self.inner.uploads.lock().unwrap() = StagingRing::default();
        Ok(())
    }

    /// When on, every kernel output is filled with NaN bits (0xFFFFFFFF) before the
    /// kernel runs, so a test sees any element a kernel fails to write.
    pub fn set_poison_outputs(&self, on: bool) {
        self.inner.poison.store(on, Ordering::Relaxed);
    }

    /// Turns elementwise fusion on or off (see `fusion`; on unless `KILN_FUSION=0`).
    /// Storages already pending still run fused.
    pub fn set_fusion(&self, on: bool) {
        self.inner.fusion.store(on, Ordering::Relaxed);
    }

    pub fn fusion(&self) -> bool {
        self.inner.fusion.load(Ordering::Relaxed)
    }

    /// Turns on or off running small pending products several to a launch (see
    /// `matmul_groups_by_default`).
    pub fn set_matmul_groups(&self, on: bool) {
        self.inner.matmul_groups.store(on, Ordering::Relaxed);
    }

    pub fn matmul_groups(&self) -> bool {
        self.inner.matmul_groups.load(Ordering::Relaxed)
    }

    /// How this device runs attention without masks (see `AttentionWay`).
    pub fn attention_way(&self) -> AttentionWay {
        *self.inner.attention_way.lock().unwrap()
    }

    /// Chooses how attention runs, e.g. to compare the two ways on one adapter. With
    /// `Composed`, `Tensor::attention` is refused (`Error::Unsupported`) for new forwards
    /// and the layers compose attention from products and a softmax.
    pub fn set_attention_way(&self, way: AttentionWay) {
        *self.inner.attention_way.lock().unwrap() = way;
    }

    /// How attention of shape class `class` (from `attention_class`) runs here: the
    /// device's setting, or with `Autotune` the faster way as `run` times it (one
    /// untimed run, then the best of a few), kept per class like the matmul decisions.
    /// `run(way)` runs one attention of the class that way, forward and, in training,
    /// backward, and returns what it computed: it is held until the clock stops, so
    /// that kernels deferred for fusion run inside the timed window.
    pub fn attention_way_for<T>(
        &self,
        class: &str,
        run: impl FnMut(AttentionWay) -> Result<T>,
    ) -> Result<AttentionWay> {
        match self.attention_way() {
            AttentionWay::Autotune => {
                autotune::tune(self, class.to_string(), &AttentionWay::CANDIDATES, run)
            }
            way => Ok(way),
        }
    }

    /// How the fused attention kernels spread a row over invocations here (see
    /// `AttentionSplit`).
    pub fn attention_split(&self) -> AttentionSplit {
        *self.inner.attention_split.lock().unwrap()
    }

    /// Chooses how the fused attention kernels spread a row, e.g. to compare the two
    /// ways on one adapter.
    pub fn set_attention_split(&self, split: AttentionSplit) {
        *self.inner.attention_split.lock().unwrap() = split;
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

    /// The subgroup size the row kernels may combine lanes with, or why they may not.
    pub fn subgroup_size(&self) -> Result<u32> {
        match self.inner.subgroups.get() {
            Some(Ok(size)) => Ok(*size),
            Some(Err(reason)) => Err(Error::Unsupported {
                op: subgroup_probe::REFUSED_OP,
                reason: reason.clone(),
            }),
            None => unreachable!("set when the device opens"),
        }
    }

    /// How the row kernels (reductions, softmax, layer_norm, argmax) combine their
    /// lanes: with subgroups where the adapter passed the check, else workgroup memory.
    /// Both give the same bits.
    pub fn row_reduction(&self) -> RowReduction {
        match self.inner.subgroup_rows.load(Ordering::Relaxed) {
            true => RowReduction::Subgroup,
            false => RowReduction::Workgroup,
        }
    }

    /// Chooses how the row kernels combine their lanes, e.g. to compare the two;
    /// `Subgroup` is refused where `subgroup_size` says why.
    pub fn set_row_reduction(&self, rows: RowReduction) -> Result<()> {
        if rows == RowReduction::Subgroup {
            self.subgroup_size()?;
        }
        let on = rows == RowReduction::Subgroup;
        self.inner.subgroup_rows.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// `kernel`, or its subgroup build when the row kernels use subgroups.
    pub(crate) fn row_kernel(&self, kernel: Kernel) -> Kernel {
        match self.row_reduction() {
            RowReduction::Subgroup => kernel.with_subgroups().unwrap_or(kernel),
            RowReduction::Workgroup => kernel,
        }
    }

    /// How this device runs convolutions (see `ConvAlgorithm`).
    pub fn conv_algorithm(&self) -> ConvAlgorithm {
        *self.inner.conv_algorithm.lock().unwrap()
    }

    /// Chooses how convolutions run, e.g. to compare the two on one adapter.
    pub fn set_conv_algorithm(&self, algorithm: ConvAlgorithm) {
        *self.inner.conv_algorithm.lock().unwrap() = algorithm;
    }

    /// Without tuning, the variant this adapter runs (`KILN_AUTOTUNE=0`, and products
    /// too small to tune).
    pub(crate) fn fixed_matmul_variant(&self) -> MatmulVariant {
        MatmulVariant::fixed_default(self.inner.software, &self.inner.limits)
    }

    pub(crate) fn matmul_candidates(&self) -> Vec<MatmulVariant> {
        MatmulVariant::candidates(self.inner.software, &self.inner.limits)
    }

    /// Without tuning, the convolution algorithm this adapter runs (`KILN_AUTOTUNE=0`,
    /// and convolutions too small to tune).
    pub fn fixed_conv_algorithm(&self) -> ConvAlgorithm {
        ConvAlgorithm::fixed_default(self.inner.software)
    }

    /// The autotuner's decision for a shape class, if it has one of a `T`.
    pub(crate) fn tuned<T: Tunable>(&self, class: &str) -> Option<T> {
        self.inner.autotuner.lock().unwrap().decision(class)
    }

    pub(crate) fn keep_tuned(&self, class: String, winner: impl Tunable) {
        self.inner.autotuner.lock().unwrap().keep(class, winner)
    }

    /// The autotuner's decisions on this device: the winner's name by shape class.
    pub fn autotune_decisions(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.autotuner.lock().unwrap().decisions()
    }

    /// Keeps this device's autotune decisions in `path` (`None`: in memory only),
    /// starting from what the file holds for the adapter. Tests use it to tune without
    /// touching the user's cache.
    pub fn use_autotune_cache(&self, path: Option<std::path::PathBuf>) {
        let s = &self.inner.summary;
        let candidates = tuned_candidates(self.inner.software, &self.inner.limits);
        *self.inner.autotuner.lock().unwrap() =
            Autotuner::load(&s.name, &s.driver, &candidates, path);
    }

    pub(crate) fn max_workgroups_per_dim(&self) -> u32 {
        self.inner.limits.max_compute_workgroups_per_dimension
    }

    pub(crate) fn has_feature(&self, feature: wgpu::Features) -> bool {
        self.inner.device.features().contains(feature)
    }

    /// Nanoseconds per timestamp-query tick.
    pub(crate) fn timestamp_period(&self) -> f32 {
        self.inner.queue.get_timestamp_period()
    }
}

/// The names of everything the autotuner times on an adapter: its matmul kernels, the
/// convolution algorithms, the ways of attention, then of splitting its rows.
fn tuned_candidates(software: bool, limits: &wgpu::Limits) -> Vec<&'static str> {
    let matmuls = MatmulVariant::candidates(software, limits);
    let mut names: Vec<&str> = matmuls.iter().map(|v| v.name()).collect();
    names.extend(ConvAlgorithm::CANDIDATES.iter().map(|a| a.name()));
    names.extend(AttentionWay::CANDIDATES.iter().map(|a| a.name()));
    names.extend(AttentionSplit::CANDIDATES.iter().map(|a| a.name()));
    names
}
