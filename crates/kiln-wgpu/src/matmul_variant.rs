//! Which matmul kernel a device runs, chosen from the adapter alone: below both the
//! device (which keeps the choice) and the launchers (which follow it).

use crate::autotune::Tunable;
use crate::env_warning::warn_once;
use crate::shader_constants::BLOCK_VEC4S;

/// Bytes of one packed lhs block of the uniform-lhs kernel: one uniform binding.
pub(crate) const BLOCK_BYTES: u64 = BLOCK_VEC4S as u64 * 16;

/// Which matmul kernel a device runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulVariant {
    /// 64x64 tiles, 4x4 outputs per thread.
    Tiled,
    /// The tiled kernel with 32x32 tiles: four times the workgroups, for products whose
    /// 64x64 tiles leave a large GPU's cores idle (the transformer's 64-row products
    /// made 48 workgroups for an H200's 132 SMs).
    SmallTiled,
    /// Single f32 products with a long k and few output tiles (the transformer's weight
    /// gradients: 128x512 outputs over 2048 terms made 16 workgroups): k cut into
    /// chunks, each chunk's product by the tiled kernel into its own slice, then the
    /// slices summed by the column reduction. Other products run `Tiled`.
    SplitK,
    /// 128x128 tiles, 8x8 outputs per thread, double-buffered; vec4 loads when aligned.
    Blocked,
    /// lhs through a uniform buffer: for adapters that run on the CPU.
    UniformLhs,
    /// `Tiled` below `BLOCKED_FROM` outputs per matmul, `Blocked` from there: the
    /// default for hardware GPUs. On an NVIDIA H200 the blocked kernel ran 1.9x faster
    /// at 2048 and 4096 and the same at 1024, and up to 5x slower on small matrices,
    /// where its 128x128 tiles leave most of the cores idle (docs/BENCHMARKS.md).
    BySize,
    /// Per shape class, the fastest of the candidates as timed on this adapter at first
    /// use (`autotune.rs`): the default unless `KILN_AUTOTUNE=0` or `KILN_MATMUL` is set.
    Autotune,
}

/// Outputs (batch x m x n) from which `BySize` runs the blocked kernel.
pub(crate) const BLOCKED_FROM: usize = 1024 * 1024;

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 7] = [
        MatmulVariant::Tiled,
        MatmulVariant::SmallTiled,
        MatmulVariant::SplitK,
        MatmulVariant::Blocked,
        MatmulVariant::UniformLhs,
        MatmulVariant::BySize,
        MatmulVariant::Autotune,
    ];

    /// The name `KILN_MATMUL` and the autotune cache use.
    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::SmallTiled => "small-tiled",
            MatmulVariant::SplitK => "split-k",
            MatmulVariant::Blocked => "blocked",
            MatmulVariant::UniformLhs => "uniform-lhs",
            MatmulVariant::BySize => "by-size",
            MatmulVariant::Autotune => "autotune",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// `KILN_MATMUL=<name>` overrides (when the adapter can run it); otherwise
    /// `Autotune`, or with `KILN_AUTOTUNE=0` the fixed defaults: `UniformLhs` on
    /// adapters that run on the CPU, `BySize` on hardware GPUs.
    pub(crate) fn for_adapter(software: bool, limits: &wgpu::Limits) -> Self {
        if let Ok(name) = std::env::var("KILN_MATMUL") {
            match Self::from_name(&name) {
                Some(v) if v.fits(limits) => return v,
                Some(_) => warn_once(&format!("KILN_MATMUL={name}: the adapter cannot run it")),
                None => warn_once(&format!("KILN_MATMUL={name}: not a matmul variant")),
            }
        }
        match crate::autotune::enabled() {
            true => MatmulVariant::Autotune,
            false => Self::fixed_default(software, limits),
        }
    }

    /// Without tuning: `UniformLhs` on adapters that run on the CPU (where it fits),
    /// `BySize` on hardware GPUs.
    pub(crate) fn fixed_default(software: bool, limits: &wgpu::Limits) -> Self {
        if software && Self::UniformLhs.fits(limits) {
            MatmulVariant::UniformLhs
        } else {
            MatmulVariant::BySize
        }
    }

    /// The kernels the autotuner times: the uniform-lhs one only on software adapters,
    /// for which it is made (on an H200 it ran 30-60x slower than the others).
    pub(crate) fn candidates(software: bool, limits: &wgpu::Limits) -> Vec<Self> {
        let mut list = vec![
            MatmulVariant::Tiled,
            MatmulVariant::SmallTiled,
            MatmulVariant::SplitK,
            MatmulVariant::Blocked,
        ];
        if software && Self::UniformLhs.fits(limits) {
            list.insert(0, MatmulVariant::UniformLhs);
        }
        list
    }

    /// Whether the adapter's limits allow this variant.
    pub(crate) fn fits(self, limits: &wgpu::Limits) -> bool {
        match self {
            MatmulVariant::Tiled
            | MatmulVariant::SmallTiled
            | MatmulVariant::SplitK
            | MatmulVariant::Blocked
            | MatmulVariant::BySize
            | MatmulVariant::Autotune => true,
            MatmulVariant::UniformLhs => {
                limits.max_uniform_buffer_binding_size >= BLOCK_BYTES
                    && u64::from(limits.min_uniform_buffer_offset_alignment) <= BLOCK_BYTES
            }
        }
    }
}

impl Tunable for MatmulVariant {
    fn name(self) -> &'static str {
        MatmulVariant::name(self)
    }

    fn from_name(name: &str) -> Option<Self> {
        MatmulVariant::from_name(name)
    }
}
