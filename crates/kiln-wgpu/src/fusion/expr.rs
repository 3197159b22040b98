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
    /// No arguments: every element is the value.
    Full(f32),
    /// The argument inside a larger tensor of the value (the expression's `window`).
    Pad(f32),
}

/// Where a pad's argument lies in its output: the output's dims, and the argument's
/// first element in each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) dims: Vec<usize>,
    pub(crate) before: Vec<usize>,
}

impl FusedOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FusedOp::Unary(op) => op.name(),
            FusedOp::Binary(op) => op.name(),
            FusedOp::Where => "where",
            FusedOp::Cast => "to_dtype",
            FusedOp::Full(_) => "full",
            FusedOp::Pad(_) => "pad",
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
    /// A constant is the same through any layout.
    pub(crate) fn inlines(&self) -> bool {
        if !self.storage.is_pending() {
            return false;
        }
        let same_index = self.layout.is_compact() && self.layout.elem_count() == self.storage.len;
        same_index || self.is_constant()
    }

    fn is_constant(&self) -> bool {
        let expr = self.storage.data.expr.lock().unwrap();
        expr.as_ref()
            .is_some_and(|e| matches!(e.op, FusedOp::Full(_)))
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
    /// For `Pad`: where its argument lies.
    pub(crate) window: Option<Window>,
}

/// Records `op` over `args` (of one shape, `len` elements) as a pending storage of
/// `dtype`. Inputs that cannot be inlined, or that would make the kernel too large,
/// run now.
pub(crate) fn record(
    device: &GpuDevice,
    op: FusedOp,
    args: Vec<Arg>,
    dtype: DType,
    len: usize,
) -> Result<GpuStorage> {
    record_in(device, op, args, dtype, len, None)
}

/// Records `x` padded into `window` with `value` (f32 or f16) as a pending storage.
/// The kernel reads `x` through its layout, so a pending `x` runs now, unless it is
/// a copy, whose source the pad reads instead.
pub(crate) fn record_pad(
    device: &GpuDevice,
    x: Arg,
    window: Window,
    value: f32,
    dtype: DType,
) -> Result<GpuStorage> {
    let (x, window) = through_copy(x, window);
    x.storage.buffer()?;
    let len = window.dims.iter().product();
    record_in(
        device,
        FusedOp::Pad(value),
        vec![x],
        dtype,
        len,
        Some(window),
    )
}

/// `x` in `window`, or where `x` reads a pending copy (a cast to its own dtype, as
/// `contiguous` records) element for element, the copy's source in a window that
/// gives the same elements in the same order. A copy exists because its source's
/// layout could not take `x`'s dims (attention's heads, permuted, merged into one
/// dim), so the window is split to the source's dims instead; the gradients of the
/// heads padded into the fused projection's are then read where they lie.
fn through_copy(x: Arg, window: Window) -> (Arg, Window) {
    if !x.inlines() {
        return (x, window);
    }
    let source = {
        let expr = x.storage.data.expr.lock().unwrap();
        match expr.as_ref().map(|e| (e.op, e.args.as_slice(), e.dtype)) {
            Some((FusedOp::Cast, [a], dtype)) if a.storage.dtype == dtype => Some(a.clone()),
            _ => None,
        }
    };
    let Some(source) = source else {
        return (x, window);
    };
    if let Some(layout) = source.layout.reshape(x.layout.shape()) {
        let arg = Arg {
            storage: source.storage,
            layout,
        };
        return (arg, window);
    }
    match split_window(&window, x.layout.dims(), source.layout.dims()) {
        Some(split) => (source, split),
        None => (x, window),
    }
}

/// `window` (over a tensor of `dims`) over the same tensor with `fine` dims, which
/// split each of `dims` into consecutive parts: a padded dim pads its first part, so
/// its padding must be a whole number of the other parts. None where `fine` does not
/// split `dims` so.
fn split_window(window: &Window, dims: &[usize], fine: &[usize]) -> Option<Window> {
    let mut split = Window {
        dims: Vec::with_capacity(fine.len()),
        before: Vec::with_capacity(fine.len()),
    };
    let mut parts = fine.iter().copied();
    for (i, &d) in dims.iter().enumerate() {
        let mut group = Vec::new();
        while group.iter().product::<usize>() < d {
            group.push(parts.next().filter(|&p| p > 0)?);
        }
        if group.iter().product::<usize>() != d {
            return None;
        }
        let (full, before) = (window.dims[i], window.before[i]);
        if full == d {
            split.dims.extend(&group);
            split.before.extend(vec![0; group.len()]);
            continue;
        }
        let inner: usize = group.iter().skip(1).product();
        if group.is_empty() || full % inner != 0 || before % inner != 0 {
            return None;
        }
        split.dims.push(full / inner);
        split.before.push(before / inner);
        split.dims.extend(&group[1..]);
        split.before.extend(vec![0; group.len() - 1]);
    }
    // Trailing dims of one element, as in `[n, 1]`.
    for p in parts {
        if p != 1 {
            return None;
        }
        split.dims.push(1);
        split.before.push(0);
    }
    Some(split)
}

fn record_in(
    device: &GpuDevice,
    op: FusedOp,
    args: Vec<Arg>,
    dtype: DType,
    len: usize,
    window: Option<Window>,
) -> Result<GpuStorage> {
    let start = std::time::Instant::now();
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
        window,
    };
    let storage = GpuStorage::pending(expr, dtype, len, device)?;
    // Recording is the host's cost of the op, as a launch is without fusion.
    device.count_launch_time(start);
    Ok(storage)
}
