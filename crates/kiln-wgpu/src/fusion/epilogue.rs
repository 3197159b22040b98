//! Epilogue fusion: a deferred launch (`deferred`: a matmul, a reduction) whose output
//! a pending expression reads element for element computes that expression in its
//! stores (a bias, an activation, a residual, a reduction's scale); the kernel writes
//! its own output too, which autograd may keep.

use super::program::{Program, ReadKind};
use crate::storage::GpuStorage;
use std::sync::Arc;

/// A program a kernel computes in its stores: its element `i` from the kernel's value
/// at `i`, which stands for the program's read `given`. The kernel writes its own
/// output as ever, and the program's to `out`.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub(crate) program: &'a Program,
    pub(crate) given: usize,
    pub(crate) out: &'a wgpu::Buffer,
}

/// The read of `program` that is a deferred launch the program can be the epilogue
/// of: read once, element for element from its start. The kernel then writes its own
/// output too. (Leaving it unwritten where reference counts said nothing else could
/// read it failed in CI: a random graph later needed such an output. Until that check
/// is proven, every epilogue writes both.)
pub(crate) fn epilogue_read(program: &Program) -> Option<usize> {
    program.reads.iter().position(|r| {
        let s = &r.arg.storage;
        r.kind() == ReadKind::Contiguous
            && r.arg.layout.offset() == 0
            && s.len == program.len
            && reads_of(program, s) == 1
            && s.is_deferred()
    })
}

fn reads_of(program: &Program, s: &GpuStorage) -> usize {
    let same = |r: &&super::program::Read| Arc::ptr_eq(&r.arg.storage.data, &s.data);
    program.reads.iter().filter(same).count()
}
