//! Epilogue fusion: a deferred launch (`deferred`: a matmul, a reduction) whose output
//! a pending expression reads element for element computes that expression in its
//! stores (a bias, an activation, a residual, a reduction's scale). The kernel writes
//! its own output too, unless nothing else can ever read it (`private`): autograd
//! keeps the forward's intermediate results, but a backward pass's usually go
//! unheld.

use super::expr::Expr;
use super::program::{Program, ReadKind};
use crate::storage::{GpuStorage, StorageData};
use std::sync::{Arc, MutexGuard};

/// A program a kernel computes in its stores: its element `i` from the kernel's value
/// at `i`, which stands for the program's read `given`. With `out`, the kernel writes
/// its own output as ever, and the program's to `out`; without, the kernel's output
/// binding takes the program's, and its own values are never stored.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub(crate) program: &'a Program,
    pub(crate) given: usize,
    pub(crate) out: Option<&'a wgpu::Buffer>,
}

/// The read of `program` that is a deferred launch the program can be the epilogue
/// of: read once, element for element from its start; of several, the one recorded
/// last, which the others cannot depend on (running them first, as `run` does, leaves
/// it deferred; the reverse would run it alone). (A first version of `private`
/// failed in CI: a random graph's other read needed such an unwritten output. The
/// other reads now run before the launch is taken, and `private` is asked after.)
pub(crate) fn epilogue_read(program: &Program) -> Option<usize> {
    let candidates = program.reads.iter().enumerate().filter(|(_, r)| {
        let s = &r.arg.storage;
        r.kind() == ReadKind::Contiguous
            && r.arg.layout.offset() == 0
            && s.len == program.len
            && reads_of(program, s) == 1
            && s.is_deferred()
    });
    candidates
        .max_by_key(|(_, r)| r.arg.storage.data.recorded)
        .map(|(i, _)| i)
}

/// Whether the launch output that `program` (lowered from `root`, the expression of
/// the storage being run) reads at `given` is private: every clone of it lies in the
/// program and its expressions, as does every clone of each storage the program
/// computes inline that reads it (whose expression, run later for another holder,
/// would read the launch's output; one that does not, as a bias sum read through a
/// broadcast, may be held anywhere). No tensor can then ask for that output once the
/// program has run. Counting only the holders known here errs one way: a clone held
/// anywhere else (a tensor, autograd, another pending launch or expression) makes the
/// count larger, and the output is written. (The side outputs of the launch are
/// counted apart: they hold it to run it, and it fills them when it runs.)
///
/// If it is private, the inlined storages that read it lose their expressions, as the
/// output loses its launch: the device's pending list holds them weakly, and a thread
/// running that list (`synchronize`) could take one up after the count and run it,
/// reading an output never written (seen in `tests/threads.rs`). So the inlined
/// expressions are counted and taken under their locks, which a thread running one
/// holds: a lock held elsewhere means one is in use, and the output is written.
pub(crate) fn seal_if_private(program: &Program, root: &Expr, given: usize) -> bool {
    let mut exprs = Vec::with_capacity(program.inlined.len());
    for s in &program.inlined {
        let Ok(guard) = s.data.expr.try_lock() else {
            return false;
        };
        exprs.push(guard);
    }
    let uses = |e: &Expr, target: &Arc<StorageData>| {
        let same = |a: &&super::expr::Arg| Arc::ptr_eq(&a.storage.data, target);
        e.args.iter().filter(same).count()
    };
    let held_inside = |s: &GpuStorage| {
        let mut n = uses(root, &s.data) + reads_of(program, s);
        for (inlined, e) in program.inlined.iter().zip(&exprs) {
            n += usize::from(Arc::ptr_eq(&inlined.data, &s.data));
            n += e.as_ref().map_or(0, |e| uses(e, &s.data));
        }
        n
    };
    // A side output holds its launch's storage to run the launch, not to read it.
    let only_inside = |s: &GpuStorage| {
        let followers = s.data.followers.load(std::sync::atomic::Ordering::SeqCst);
        Arc::strong_count(&s.data) == held_inside(s) + followers
    };
    let source = &program.reads[given].arg.storage;
    let mut readers = Vec::new();
    for (i, s) in program.inlined.iter().enumerate() {
        match reads_from(&s.data, &source.data, &program.inlined, &exprs) {
            Some(true) => readers.push(i),
            Some(false) => {}
            None => return false,
        }
    }
    let private = readers.iter().all(|&i| only_inside(&program.inlined[i])) && only_inside(source);
    if private {
        // Dropped once the locks are let go: an expression may hold a storage's last
        // clone.
        let taken: Vec<Option<Expr>> = readers.iter().map(|&i| exprs[i].take()).collect();
        drop(exprs);
        drop(taken);
    }
    private
}

/// Whether `data`'s pending expression reads `target`, itself or through pending
/// inputs, the expressions of `inlined` read from `exprs` (their locks held); `None`
/// where another's lock is held elsewhere. (Expressions are recorded after their
/// inputs, so the walk ends, and takes each input's lock after its reader's, as
/// lowering does.)
fn reads_from(
    data: &Arc<StorageData>,
    target: &Arc<StorageData>,
    inlined: &[GpuStorage],
    exprs: &[MutexGuard<'_, Option<Expr>>],
) -> Option<bool> {
    let walk = |e: &Option<Expr>| {
        for a in e.iter().flat_map(|e| &e.args) {
            let data = &a.storage.data;
            if Arc::ptr_eq(data, target) || reads_from(data, target, inlined, exprs)? {
                return Some(true);
            }
        }
        Some(false)
    };
    match inlined.iter().position(|s| Arc::ptr_eq(&s.data, data)) {
        Some(i) => walk(&exprs[i]),
        None => walk(&*data.expr.try_lock().ok()?),
    }
}

fn reads_of(program: &Program, s: &GpuStorage) -> usize {
    let same = |r: &&super::program::Read| Arc::ptr_eq(&r.arg.storage.data, &s.data);
    program.reads.iter().filter(same).count()
}
