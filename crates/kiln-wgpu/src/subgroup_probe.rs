//! The check a device runs once, at opening, before its row kernels may combine lanes
//! with subgroups (`row_reduction.rs`): WGSL promises no relation between subgroups and
//! a workgroup's invocations, and the kernels need whole subgroups that tile it.

use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::params::SubgroupProbeParams;
use crate::shader_constants::WORKGROUP;
use kiln_core::{DType, Error, Result};

/// The op a refusal of the subgroup row kernels names.
pub(crate) const REFUSED_OP: &str = "subgroup row kernels";

/// Runs `probe/subgroups.wgsl` and returns the subgroup size, or why the subgroup row
/// kernels cannot run.
pub(crate) fn check(device: &GpuDevice) -> Result<u32> {
    let op = "subgroup probe";
    let n = WORKGROUP as usize;
    let words = 2 * n + 2;
    let out = device.alloc(op, words, DType::I32)?;
    device.fill_words(op, &out, 0)?;
    let params = SubgroupProbeParams {
        lanes: WORKGROUP,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let groups = device.groups_for(op, 1)?;
    device.dispatch(
        op,
        Kernel::ProbeSubgroups,
        &[],
        &params,
        &[out.buffer()],
        groups,
    )?;
    let bytes = device.read_bytes(op, &out, words * 4)?;
    let word: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
    judge(&word)
}

/// The subgroup size, if the probe's output shows what the row kernels assume.
fn judge(word: &[u32]) -> Result<u32> {
    let n = WORKGROUP as usize;
    let refuse = |reason: String| Error::Unsupported {
        op: REFUSED_OP,
        reason,
    };
    let size = word[2 * n];
    if word[2 * n + 1] != 0 {
        return Err(refuse("a subgroup slot fell outside the workgroup".into()));
    }
    if !size.is_power_of_two() || size > WORKGROUP {
        return Err(refuse(format!("subgroup size {size}")));
    }
    if let Some(slot) = (0..n).find(|&s| word[s] != s as u32 + 1) {
        return Err(refuse(format!(
            "subgroups of {size} do not tile a workgroup of {WORKGROUP}: slot {slot} not taken once"
        )));
    }
    let size = size as usize;
    for slot in 0..n {
        let first = slot - slot % size;
        let expected = (first..first + size).sum::<usize>() as u32;
        if word[n + slot] != expected {
            return Err(refuse(format!(
                "shuffles over a subgroup of {size} added to {} at slot {slot}, not {expected}",
                word[n + slot]
            )));
        }
    }
    Ok(size as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an adapter with full subgroups of `size` in order writes.
    fn tiled(size: usize) -> Vec<u32> {
        let n = WORKGROUP as usize;
        let mut word = vec![0u32; 2 * n + 2];
        for slot in 0..n {
            word[slot] = slot as u32 + 1;
            let first = slot - slot % size;
            word[n + slot] = (first..first + size).sum::<usize>() as u32;
        }
        word[2 * n] = size as u32;
        word
    }

    #[test]
    fn full_subgroups_pass_and_anything_else_is_refused() {
        for size in [1, 4, 8, 32, 64, 128] {
            assert_eq!(judge(&tiled(size)).unwrap(), size as u32);
        }
        let n = WORKGROUP as usize;
        let mut hole = tiled(32);
        hole[40] = 0;
        let mut wrong_sum = tiled(32);
        wrong_sum[n + 7] += 1;
        let mut outside = tiled(32);
        outside[2 * n + 1] = 1;
        let mut odd = tiled(32);
        odd[2 * n] = 24;
        for (case, word) in [
            ("hole", hole),
            ("sum", wrong_sum),
            ("outside", outside),
            ("odd size", odd),
        ] {
            assert!(judge(&word).is_err(), "{case} passed");
        }
    }
}
