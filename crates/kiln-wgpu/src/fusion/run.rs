//! Running pending storages: each as one generated kernel, built once per program
//! structure; all of a device's at `synchronize`.

use super::epilogue::{epilogue_read, Epilogue};
use super::expr::Expr;
use super::program::Program;
use super::wgsl::{self, FusedParams};
use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::ops::matmul_group;
use crate::pipelines::Pipeline;
use crate::storage::{GpuStorage, LaunchClaim, StorageData};
use kiln_core::{Error, GpuErrorKind, Result};
use std::sync::{Arc, Weak};

/// Runs a storage's pending expression or deferred launch, if it still has one, and
/// stores its buffer. An expression that reads a deferred launch's output element for
/// element runs as the launch's epilogue.
pub(crate) fn run(data: &StorageData, device: &GpuDevice) -> Result<()> {
    let mut pending = data.expr.lock().unwrap();
    let Some(expr) = pending.as_ref() else {
        drop(pending);
        return run_deferred(data, device);
    };
    let start = std::time::Instant::now();
    let (program, candidate, _claim) = lower_with_epilogue(expr, device)?;
    let op = "fusion";
    let out = device.alloc_output(op, program.len, program.out_dtype())?;
    // The launch, its slot locked until its buffer is in: a thread that reads it
    // meanwhile (its own, or one running the device's pending work) waits, where an
    // empty slot and no buffer would tell it the launch had run and left nothing. One
    // that ran the launch since `lower_with_epilogue` found it (the claim keeps only
    // groups away) left its buffer, which the program then reads.
    let source = candidate.map(|given| (given, &program.reads[given].arg.storage));
    let mut slot = source.map(|(_, s)| s.data.deferred.lock().unwrap());
    let launch = slot.as_mut().and_then(|s| s.take());
    if let (Some((given, source)), Some(launch)) = (source, launch) {
        // Asked after the other reads ran, which let go of what their expressions held.
        let private = super::epilogue::seal_if_private(&program, expr, given);
        if private {
            // The launch's storage is left without a buffer: asking for it is an
            // internal error, never a read of stale values.
            let epilogue = Epilogue {
                program: &program,
                given,
                out: None,
            };
            launch.run(&out, Some(epilogue))?;
        } else {
            let own = device.alloc_output(op, launch.len(), launch.dtype())?;
            let epilogue = Epilogue {
                program: &program,
                given,
                out: Some(out.buffer()),
            };
            launch.run(&own, Some(epilogue))?;
            source.data.fill(own)?;
        }
    } else {
        drop(slot);
        let pipeline = device.fused_pipeline(&program)?;
        let params = FusedParams::of(&program)?;
        let mut resources = program.resources()?;
        resources.push(out.buffer().as_entire_binding());
        let bind = Bindings::numbered(bytemuck::bytes_of(&params), &resources, 1)
            .spanning(program.read_spans(1));
        let groups = device.groups_1d(op, program.len)?;
        device.launch(op, &pipeline, &[bind], groups, start, || program.summary())?;
    }
    data.fill(out)?;
    // Lets go of the inputs.
    *pending = None;
    Ok(())
}

/// The program of `expr`, and the read whose deferred launch it is to be the epilogue
/// of, its other reads run, with a claim on that launch (held until it is taken).
/// Running them may run that launch (one needed its output), or fill a storage the
/// program computes inline (a residual sum the next layer's launches read); then the
/// expression is lowered again, to read what is now there rather than compute it
/// twice, and may find another launch to follow.
fn lower_with_epilogue(
    expr: &Expr,
    device: &GpuDevice,
) -> Result<(Program, Option<usize>, Option<LaunchClaim>)> {
    // The launch's buffers, the program's other reads, and its output.
    let fits = |program: &Program, given: usize| {
        let source = program.reads[given].arg.storage.data.deferred.lock();
        let own = source
            .unwrap()
            .as_ref()
            .map_or(usize::MAX / 2, |d| d.buffers());
        own + program.reads.len()
            <= device.inner.limits.max_storage_buffers_per_shader_stage as usize
    };
    loop {
        let program = Program::lower(expr, device.max_fused_reads())?;
        let Some(given) = epilogue_read(&program).filter(|&g| fits(&program, g)) else {
            return Ok((program, None, None));
        };
        // The launch's own inputs first, those it reads as buffers: they may fill a
        // storage this program computes inline.
        let source = &program.reads[given].arg.storage;
        let claim = LaunchClaim::new(&source.data);
        let launch_inputs = {
            let slot = source.data.deferred.lock().unwrap();
            slot.as_ref().map(|l| (l.kernel(), l.inputs().to_vec()))
        };
        if let Some((kernel, inputs)) = launch_inputs {
            device.run_bound_inputs(kernel, &inputs)?;
        }
        for (i, read) in program.reads.iter().enumerate() {
            if i != given {
                read.arg.storage.buffer()?;
            }
        }
        // Each pass through here fills one more storage the program inlined.
        if program.inlined.iter().all(GpuStorage::is_pending) {
            let still = program.reads[given].arg.storage.is_deferred();
            return Ok((program, still.then_some(given), Some(claim)));
        }
    }
}

/// Runs a deferred launch into its own buffer; a column reduction or a small product
/// with the others pending (`ops::column_group`, `ops::matmul_group`).
fn run_deferred(data: &StorageData, device: &GpuDevice) -> Result<()> {
    let mut slot = data.deferred.lock().unwrap();
    let Some(launch) = slot.take() else {
        drop(slot);
        return data.run_side(device);
    };
    match launch.kernel() {
        Kernel::ReduceColumns => crate::ops::column_group::run_with_others(device, data, launch),
        k if matmul_group::groups(k) && device.matmul_groups() => {
            matmul_group::run_with_others(device, data, launch)
        }
        _ => data.run_alone(device, launch),
    }
}

/// The pending storages a device has recorded, to run at `synchronize`.
#[derive(Default)]
pub(crate) struct PendingList {
    entries: Vec<Weak<StorageData>>,
    /// Length after the last pruning of dropped entries.
    pruned_len: usize,
}

impl GpuDevice {
    /// Adds a pending storage to the list `synchronize` runs. The list is pruned of
    /// finished work when it doubles, and at `MAX_PENDING` entries at the latest; if
    /// half of that is still live then, all of it runs now: pending work keeps its
    /// inputs' buffers alive, so an unbounded graph would hold memory that running it
    /// frees.
    pub(crate) fn track_pending(&self, data: &Arc<StorageData>) -> Result<()> {
        let over = {
            let mut list = self.inner.pending.lock().unwrap();
            list.entries.push(Arc::downgrade(data));
            let next = (2 * list.pruned_len).clamp(512, super::MAX_PENDING);
            if list.entries.len() >= next {
                list.entries
                    .retain(|w| w.upgrade().is_some_and(|d| d.has_work()));
                list.pruned_len = list.entries.len();
            }
            list.pruned_len >= super::MAX_PENDING / 2
        };
        match over {
            true => self.run_pending("recording past the graph's bound"),
            false => Ok(()),
        }
    }

    /// The storages the device tracks that some tensor still holds, oldest first
    /// (finished ones among them until the list is next pruned).
    pub(crate) fn live_pending(&self) -> Vec<Arc<StorageData>> {
        let list = self.inner.pending.lock().unwrap();
        list.entries.iter().filter_map(Weak::upgrade).collect()
    }

    /// Runs the pending expressions the device tracks that read `data` element for
    /// element or through a view, newest first, so that no expression still to run
    /// reads it. (A deferred launch's inputs are not known here.)
    pub(crate) fn run_readers(&self, data: &Arc<StorageData>) -> Result<()> {
        for pending in self.live_pending().iter().rev() {
            let reads = |e: &Expr| e.args.iter().any(|a| Arc::ptr_eq(&a.storage.data, data));
            if pending.expr.lock().unwrap().as_ref().is_some_and(reads) {
                run(pending, self)?;
            }
        }
        Ok(())
    }

    /// Pending storages the device tracks that some tensor still holds.
    pub fn pending_count(&self) -> usize {
        let list = self.inner.pending.lock().unwrap();
        let live = list.entries.iter().filter_map(Weak::upgrade);
        live.filter(|d| d.has_work()).count()
    }

    /// Runs every pending storage some tensor still holds, newest first (so that an
    /// input only its consumer holds is computed inside the consumer's kernel).
    pub(crate) fn run_pending(&self, op: &'static str) -> Result<()> {
        let entries = std::mem::take(&mut self.inner.pending.lock().unwrap().entries);
        for weak in entries.iter().rev() {
            let Some(data) = weak.upgrade() else { continue };
            run(&data, self).map_err(|e| with_context(e, op))?;
        }
        self.inner.pending.lock().unwrap().pruned_len = 0;
        Ok(())
    }

    /// Buffers one fused kernel may read on this device.
    pub(crate) fn max_fused_reads(&self) -> usize {
        let limit = self.inner.limits.max_storage_buffers_per_shader_stage as usize;
        super::MAX_READS.min(limit.saturating_sub(1)).max(3)
    }

    /// Builds (once per structure) the kernel of `program`.
    fn fused_pipeline(&self, program: &Program) -> Result<Arc<Pipeline>> {
        // Addressed like the elementwise kernels: their bounds-check policy.
        let like = Kernel::Unary;
        let written = vec![(0, program.reads.len() as u32 + 1)];
        self.cached_pipeline(program.key(), like, 1, written, || wgsl::source(program))
    }

    /// The generated kernel cached under `key`, built from `source()` on first use
    /// (with `like`'s bounds-check policy) and kept for `fused_kernel_sources`.
    pub(crate) fn cached_pipeline(
        &self,
        key: String,
        like: Kernel,
        groups: u32,
        written: Vec<(u32, u32)>,
        source: impl FnOnce() -> Result<String>,
    ) -> Result<Arc<Pipeline>> {
        if let Some(p) = self.inner.fused_pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        if groups as usize > self.inner.kernel_groups {
            return Err(Error::Gpu {
                op: "fusion",
                kind: GpuErrorKind::Internal,
                message: format!(
                    "a generated kernel takes {groups} bind groups; {} may take {}",
                    self.inner.summary.name, self.inner.kernel_groups
                ),
            });
        }
        let source = source()?;
        dump_kernel(&key, &source)?;
        let pipeline = Arc::new(self.build_pipeline("fusion", like, &source, groups, written)?);
        let mut cache = self.inner.fused_pipelines.lock().unwrap();
        cache.insert(key, pipeline.clone());
        self.inner.fused_sources.lock().unwrap().push(source);
        Ok(pipeline)
    }

    /// The WGSL of every fused kernel this device has built, in build order.
    pub fn fused_kernel_sources(&self) -> Vec<String> {
        self.inner.fused_sources.lock().unwrap().clone()
    }
}

/// With `KILN_DUMP_KERNELS=DIR`, writes a generated kernel's source to
/// `DIR/fused_<hash of its structure>.wgsl`.
fn dump_kernel(key: &str, source: &str) -> Result<()> {
    use std::hash::{Hash, Hasher};
    let Some(dir) = std::env::var_os("KILN_DUMP_KERNELS") else {
        return Ok(());
    };
    let dir = std::path::Path::new(&dir);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let path = dir.join(format!("fused_{:016x}.wgsl", h.finish()));
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, source))
        .map_err(|e| Error::io("KILN_DUMP_KERNELS", &path, e))
}

/// An error from running pending work at a sync point, naming the sync point.
fn with_context(e: Error, op: &'static str) -> Error {
    match e {
        Error::Gpu {
            op: inner,
            kind,
            message,
        } => Error::Gpu {
            op: inner,
            kind,
            message: format!("{message} (running fused work at `{op}`)"),
        },
        other => other,
    }
}
