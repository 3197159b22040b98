//! A pending elementwise op (`Expr`) and how one is recorded.

use crate::device::GpuDevice;
use crate::storage::GpuStorage;
use kiln_core::{BinaryOp, DType, Layout, Result, UnaryOp};

/// The elementwise ops that fuse.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum FusedOp {
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// Arguments: condition, value where it is non-zero, value where it is zero.
    Where,
    /// To the expression's dtype.
    Cast,
}

impl FusedOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FusedOp::Unary(op) => op.name(),
            FusedOp::Binary(op) => op.name(),
            FusedOp::Where => "where",
            FusedOp::Cast => "to_dtype",
        }
    }
}

/// An input of a pending op: a storage read through a layout of the op's shape.
#[derive(Clone)]
pub(crate) struct Arg {
    pub(crate) storage: GpuStorage,
    pub(crate) layout: Layout,
}

impl Arg {
    /// A pending input read element for element (compact, every element) is computed
    /// inside the consumer's kernel; any other read needs its buffer.
    pub(crate) fn inlines(&self) -> bool {
        self.storage.is_pending()
            && self.layout.is_compact()
            && self.layout.elem_count() == self.storage.len
    }

    /// Upper bounds of the ops and reads this input adds to a consumer's kernel.
    fn cost(&self) -> (usize, usize) {
        if self.inlines() {
            if let Some(e) = self.storage.data.expr.lock().unwrap().as_ref() {
                return (e.ops, e.reads);
            }
        }
        (0, 1)
    }
}

/// A pending op: its output is `len` compact elements of `dtype`.
#[derive(Clone)]
pub(crate) struct Expr {
    pub(crate) op: FusedOp,
    pub(crate) args: Vec<Arg>,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    /// Upper bounds of the ops and buffer reads of this expression's kernel, pending
    /// inputs included (shared inputs count once per use).
    pub(crate) ops: usize,
    pub(crate) reads: usize,
}

/// Records `op` over `args` (of one shape) as a pending storage of `dtype`. Inputs
/// that cannot be inlined, or that would make the kernel too large, run now.
pub(crate) fn record(
    device: &GpuDevice,
    op: FusedOp,
    args: Vec<Arg>,
    dtype: DType,
) -> Result<GpuStorage> {
    let len = args[0].layout.elem_count();
    for arg in &args {
        if arg.storage.is_pending() && !arg.inlines() {
            arg.storage.buffer()?;
        }
    }
    let (mut ops, mut reads) = args
        .iter()
        .map(Arg::cost)
        .fold((1, 0), |(o, r), (ao, ar)| (o + ao, r + ar));
    if ops > super::MAX_OPS || reads > device.max_fused_reads() {
        for arg in &args {
            arg.storage.buffer()?;
        }
        (ops, reads) = (1, args.len());
    }
    let expr = Expr {
        op,
        args,
        dtype,
        len,
        ops,
        reads,
    };
    Ok(GpuStorage::pending(expr, dtype, len, device))
}
