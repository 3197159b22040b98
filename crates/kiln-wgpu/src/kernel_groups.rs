//! How many bind groups one kernel may take on an adapter. Each kiln bind group
//! carries its own uniform params, so this is also the uniform buffers a kernel binds.
//!
//! Mesa's lavapipe before 23.3 corrupts its own state when a large shader's loop reads
//! a fourth uniform buffer: its uniform-inlining pass records the offsets it may inline
//! at `ubo * 32 + n` in a table of 32 rows of 4 (`lvp_inline_uniforms.c`; later Mesa
//! indexes rows of 4), so the fourth buffer's offsets land on the per-buffer counts
//! behind the table. A count for buffer 0 then appears, and the first dispatch reads
//! `const_buffer[0 - 1]`: seen here as a segfault on lavapipe's queue thread in about
//! one run in four of the fusion suite. Three uniform buffers stay inside the table.

use crate::launch::MAX_BIND_GROUPS;

/// Uniform buffers a kernel may bind on a lavapipe that mis-records a fourth.
const LAVAPIPE_INLINING_SAFE: usize = 3;
/// The first Mesa release whose lavapipe records inlinable uniforms by rows of four.
const LAVAPIPE_FIXED: (u32, u32) = (23, 3);

/// Bind groups one kernel may use: the adapter's limits, kiln's params arena, and on a
/// lavapipe older than `LAVAPIPE_FIXED` (or of a version it cannot read) three.
pub(crate) fn kernel_groups(backend: &str, driver: &str, limits: &wgpu::Limits) -> usize {
    let most = (limits.max_bind_groups as usize)
        .min(limits.max_uniform_buffers_per_shader_stage as usize)
        .clamp(1, MAX_BIND_GROUPS);
    match inlining_mis_records(backend, driver) {
        true => most.min(LAVAPIPE_INLINING_SAFE),
        false => most,
    }
}

/// Whether `driver` (wgpu's driver name and driver info, as `AdapterSummary::driver`
/// joins them) is a Vulkan lavapipe whose uniform inlining mis-records a fourth buffer.
fn inlining_mis_records(backend: &str, driver: &str) -> bool {
    if backend != "Vulkan" || !driver.starts_with("llvmpipe") {
        return false;
    }
    mesa_version(driver).is_none_or(|version| version < LAVAPIPE_FIXED)
}

/// Major and minor of the "Mesa X.Y[.Z]" in a driver description.
fn mesa_version(driver: &str) -> Option<(u32, u32)> {
    let after = &driver[driver.find("Mesa ")? + "Mesa ".len()..];
    let mut parts = after.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lavapipe_before_23_3_takes_three_groups_and_others_their_limit() {
        let limits = wgpu::Limits::default();
        assert_eq!(limits.max_bind_groups, 4);
        let groups = |backend, driver| kernel_groups(backend, driver, &limits);
        assert_eq!(groups("Vulkan", "llvmpipe Mesa 22.3.6 (LLVM 15.0.6)"), 3);
        assert_eq!(groups("Vulkan", "llvmpipe Mesa 23.2.1-1ubuntu3"), 3);
        assert_eq!(groups("Vulkan", "llvmpipe Mesa 23.3.0"), 4);
        assert_eq!(groups("Vulkan", "llvmpipe Mesa 24.0.5-1 (LLVM 17.0.6)"), 4);
        // A version it cannot read: the safe side.
        assert_eq!(groups("Vulkan", "llvmpipe"), 3);
        // Not lavapipe: Mesa's GL llvmpipe, a hardware driver.
        assert_eq!(groups("Gl", "4.5 (Core Profile) Mesa 22.3.6"), 4);
        assert_eq!(groups("Vulkan", "NVIDIA 550.54.14"), 4);
        assert_eq!(groups("Vulkan", "radv Mesa 22.3.6"), 4);
        // The adapter's own limits still bound it.
        let two = wgpu::Limits {
            max_bind_groups: 2,
            ..wgpu::Limits::default()
        };
        assert_eq!(kernel_groups("Vulkan", "NVIDIA 550.54.14", &two), 2);
    }
}
