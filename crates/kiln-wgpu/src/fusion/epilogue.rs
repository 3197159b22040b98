//! Epilogue fusion: a deferred launch (`deferred`: a matmul, a reduction) whose output
//! a pending expression reads element for element computes that expression in its
//! stores (a bias, an activation, a residual, a reduction's scale). Where nothing else
//! can want the launch's output, it is never written; otherwise (autograd keeps an
//! op's input while its gradient may need it) the kernel writes both.

use super::expr::Expr;
use super::program::{Program, ReadKind};
use crate::storage::{GpuStorage, StorageData};
use std::sync::Arc;

/// A program a kernel computes in its stores: its element `i` from the kernel's value
/// at `i`, which stands for the program's read `given`. With `out`, the kernel also
/// writes its own output, and the program's goes to `out`; without, the kernel's
/// output binding takes the program's.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub(crate) program: &'a Program,
    pub(crate) given: usize,
    pub(crate) out: Option<&'a wgpu::Buffer>,
}

/// The read of `program` (lowered from `root`) that is a deferred launch the program
/// can be the epilogue of (read once, element for element from its start), and
/// whether it is private: held by nothing but the program's expressions, as is every
/// storage the program computes inline, so that no tensor can ask for its output later.
pub(crate) fn epilogue_read(program: &Program, root: &Expr) -> Option<(usize, bool)> {
    let uses = |e: &Expr, target: &Arc<StorageData>| {
        let args = e
            .args
            .iter()
            .filter(|a| Arc::ptr_eq(&a.storage.data, target));
        args.count()
    };
    // The clones of `s` the program and its expressions hold.
    let held_inside = |s: &GpuStorage| {
        let mut n = uses(root, &s.data);
        for inlined in &program.inlined {
            if Arc::ptr_eq(&inlined.data, &s.data) {
                n += 1;
            }
            if let Some(e) = inlined.data.expr.lock().unwrap().as_ref() {
                n += uses(e, &s.data);
            }
        }
        n + reads_of(program, s)
    };
    let private = |s: &GpuStorage| Arc::strong_count(&s.data) == held_inside(s);
    let given = program.reads.iter().position(|r| {
        let s = &r.arg.storage;
        r.kind() == ReadKind::Contiguous
            && r.arg.layout.offset() == 0
            && s.len == program.len
            && reads_of(program, s) == 1
            && s.is_deferred()
    })?;
    let source = &program.reads[given].arg.storage;
    Some((
        given,
        program.inlined.iter().all(private) && private(source),
    ))
}

fn reads_of(program: &Program, s: &GpuStorage) -> usize {
    let same = |r: &&super::program::Read| Arc::ptr_eq(&r.arg.storage.data, &s.data);
    program.reads.iter().filter(same).count()
}
