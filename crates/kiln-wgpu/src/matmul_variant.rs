//! Which matmul kernel a device runs, chosen from the adapter alone: below both the
//! device (which keeps the choice) and the launchers (which follow it).

use crate::shader_constants::BLOCK_VEC4S;

/// Bytes of one packed lhs block of the uniform-lhs kernel: one uniform binding.
pub(crate) const BLOCK_BYTES: u64 = BLOCK_VEC4S as u64 * 16;

/// Which matmul kernel a device runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulVariant {
    /// 64x64 tiles, 4x4 outputs per thread.
    Tiled,
    /// 128x128 tiles, 8x8 outputs per thread, double-buffered; vec4 loads when aligned.
    Blocked,
    /// lhs through a uniform buffer: for adapters that run on the CPU.
    UniformLhs,
    /// `Tiled` below `BLOCKED_FROM` outputs per matmul, `Blocked` from there: the
    /// default for hardware GPUs. On an NVIDIA H200 the blocked kernel ran 1.9x faster
    /// at 2048 and 4096 and the same at 1024, and up to 5x slower on small matrices,
    /// where its 128x128 tiles leave most of the cores idle (docs/BENCHMARKS.md).
    BySize,
}

/// Outputs (batch x m x n) from which `BySize` runs the blocked kernel.
pub(crate) const BLOCKED_FROM: usize = 1024 * 1024;

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 4] = [
        MatmulVariant::Tiled,
        MatmulVariant::Blocked,
        MatmulVariant::UniformLhs,
        MatmulVariant::BySize,
    ];

    /// `KILN_MATMUL=tiled|blocked|uniform-lhs|by-size` overrides; otherwise adapters
    /// that run on the CPU get `UniformLhs` and hardware GPUs `BySize`.
    pub(crate) fn for_adapter(software: bool, limits: &wgpu::Limits) -> Self {
        match std::env::var("KILN_MATMUL").as_deref() {
            Ok("tiled") => MatmulVariant::Tiled,
            Ok("blocked") => MatmulVariant::Blocked,
            Ok("by-size") => MatmulVariant::BySize,
            Ok("uniform-lhs") if Self::UniformLhs.fits(limits) => MatmulVariant::UniformLhs,
            _ if software && Self::UniformLhs.fits(limits) => MatmulVariant::UniformLhs,
            _ => MatmulVariant::BySize,
        }
    }

    /// Whether the adapter's limits allow this variant.
    pub(crate) fn fits(self, limits: &wgpu::Limits) -> bool {
        match self {
            MatmulVariant::Tiled | MatmulVariant::Blocked | MatmulVariant::BySize => true,
            MatmulVariant::UniformLhs => {
                limits.max_uniform_buffer_binding_size >= BLOCK_BYTES
                    && u64::from(limits.min_uniform_buffer_offset_alignment) <= BLOCK_BYTES
            }
        }
    }
}
