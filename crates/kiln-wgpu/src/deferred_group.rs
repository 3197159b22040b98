//! Deferred launches run several to a launch (`ops::column_group`, `ops::matmul_group`).
//! When one must run, the device's other pending launches that can join it (of its
//! kernel, their inputs computed) run in the same launch, each workgroup running one
//! member with that member's params and bindings, each member into its own storage.

use crate::deferred::Deferred;
use crate::device::GpuDevice;
use crate::pool::PooledBuffer;
use crate::storage::StorageData;
use kiln_core::Result;
use std::fmt::Write;

/// A launch in a group, and the storage it fills.
pub(crate) type Member<'a> = (&'a StorageData, Box<dyn Deferred>);

/// Runs `own`, taken from `data`, into `data`'s buffer, with the device's other pending
/// launches that `joins` accepts, as many to a launch as the device binds at
/// `buffers_each` storage buffers a launch and `max` at most, each launch of two or more
/// by `launch_group` (which returns their buffers in order). A launch joins only when
/// its inputs are computed, and others join only when `own`'s are (once those it would
/// not compute in its loads have run) and `joins` accepts it too.
pub(crate) fn run_with_others(
    device: &GpuDevice,
    data: &StorageData,
    own: Box<dyn Deferred>,
    (buffers_each, max): (u32, usize),
    joins: impl Fn(&dyn Deferred) -> bool,
    launch_group: impl Fn(&[Member<'_>]) -> Result<Vec<PooledBuffer>>,
) -> Result<()> {
    let limit = device.inner.limits.max_storage_buffers_per_shader_stage;
    let size = ((limit / buffers_each) as usize).min(max);
    let computed = |l: &dyn Deferred| l.inputs().iter().all(|s| !s.is_pending());
    let accepted = |l: &dyn Deferred| computed(l) && joins(l);
    // Inputs `own` would run before it anyway (those no prologue of its kernel takes)
    // run first: then it can join a group, and so can launches whose inputs they are.
    device.run_bound_inputs(own.kernel(), own.inputs())?;
    let live = match size > 1 && accepted(own.as_ref()) {
        true => device.live_pending(),
        false => Vec::new(),
    };
    // Each joining storage's slot stays locked until its buffer is in: a thread that
    // needs it meanwhile waits, where an empty slot would tell it the launch had run.
    let mut slots = Vec::new();
    for other in &live {
        // A lock held elsewhere is a launch being run or fused now: left alone.
        let Ok(slot) = other.deferred.try_lock() else {
            continue;
        };
        // A run in progress means to take it into its own launch (an expression as its
        // epilogue, a recurrent step). Asked with the slot locked: a claimant that
        // finds the launch still there after claiming then keeps it.
        if other.claimed() {
            continue;
        }
        if slot.as_deref().is_some_and(accepted) {
            slots.push((other.as_ref(), slot));
        }
    }
    let mut members = vec![(data, own)];
    for (other, slot) in &mut slots {
        members.push((
            *other,
            slot.take().expect("a joining slot holds its launch"),
        ));
    }
    let mut members = members.into_iter().peekable();
    while members.peek().is_some() {
        let launch: Vec<_> = members.by_ref().take(size.max(1)).collect();
        if let [_] = launch[..] {
            let (target, l) = launch.into_iter().next().expect("one launch");
            target.run_alone(device, l)?;
            continue;
        }
        let outs = launch_group(&launch)?;
        for ((target, _), out) in launch.into_iter().zip(outs) {
            target.fill(out)?;
        }
    }
    Ok(())
}

/// A WGSL `switch` on the private `member` (0 to `k` - 1, the last as the default, so
/// that a function whose every case returns is seen to return), case j's body `body(j)`.
pub(crate) fn switch_on_member(k: usize, body: impl Fn(usize) -> String) -> String {
    let mut s = String::from("    switch member {\n");
    for j in 0..k.saturating_sub(1) {
        let _ = writeln!(s, "        case {j}u: {{ {} }}", body(j));
    }
    let _ = write!(s, "        default: {{ {} }}\n    }}", body(k.max(1) - 1));
    s
}
