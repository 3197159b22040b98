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
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 3] = [
        MatmulVariant::Tiled,
        MatmulVariant::Blocked,
        MatmulVariant::UniformLhs,
    ];

    /// `KILN_MATMUL=tiled|blocked|uniform-lhs` overrides; otherwise adapters that run on
    /// the CPU get `UniformLhs` and hardware GPUs `Tiled`.
    pub(crate) fn for_adapter(software: bool, limits: &wgpu::Limits) -> Self {
        match std::env::var("KILN_MATMUL").as_deref() {
            Ok("tiled") => MatmulVariant::Tiled,
            Ok("blocked") => MatmulVariant::Blocked,
            Ok("uniform-lhs") if Self::UniformLhs.fits(limits) => MatmulVariant::UniformLhs,
            _ if software && Self::UniformLhs.fits(limits) => MatmulVariant::UniformLhs,
            _ => MatmulVariant::Tiled,
        }
    }

    /// Whether the adapter's limits allow this variant.
    pub(crate) fn fits(self, limits: &wgpu::Limits) -> bool {
        match self {
            MatmulVariant::Tiled | MatmulVariant::Blocked => true,
            MatmulVariant::UniformLhs => {
                limits.max_uniform_buffer_binding_size >= BLOCK_BYTES
                    && u64::from(limits.min_uniform_buffer_offset_alignment) <= BLOCK_BYTES
            }
        }
    }
}
