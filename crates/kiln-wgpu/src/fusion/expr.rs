//! A pending elementwise op (`Expr`) and how one is recorded.

use super::program::Program;
use crate::device::GpuDevice;
use crate::storage::GpuStorage;
use kiln_core::{BinaryOp, DType, Layout, Result, Shape, UnaryOp};

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
    /// A pending input is computed inside the consumer's kernel where the consumer
    /// reads it element for element, or broadcast (a per-channel scale across an
    /// image: the expression's inputs are then read through the same broadcast, see
    /// `Expr::through`); any other read needs its buffer. A constant is the same
    /// through any layout.
    pub(crate) fn inlines(&self) -> bool {
        if !self.storage.is_pending() {
            return false;
        }
        if self.in_order() {
            return true;
        }
        let expr = self.storage.data.expr.lock().unwrap();
        expr.as_ref()
            .is_some_and(|e| e.through(&self.layout).is_some())
    }

    /// Whether this is a pending constant (the same through any layout).
    fn is_constant(&self) -> bool {
        let expr = self.storage.data.expr.lock().unwrap();
        expr.as_ref().is_some_and(|e| e.args.is_empty())
    }

    /// Whether this reads its storage element for element: compact, every element.
    pub(crate) fn in_order(&self) -> bool {
        self.layout.is_compact() && self.layout.elem_count() == self.storage.len
    }

    /// Upper bounds of the ops and reads this input adds to a consumer's kernel. An
    /// inlined input counts at least one read: had it run meanwhile, it is one.
    fn cost(&self) -> (usize, usize) {
        if self.inlines() {
            if let Some(e) = self.storage.data.expr.lock().unwrap().as_ref() {
                return (e.ops, e.reads.max(1));
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

impl Expr {
    /// What a copy reads (a cast to its own dtype, as `contiguous` records); `None`
    /// for another op.
    pub(crate) fn copy_source(&self) -> Option<&Arg> {
        match (self.op, self.args.as_slice()) {
            (FusedOp::Cast, [a]) if a.storage.dtype == self.dtype => Some(a),
            _ => None,
        }
    }

    /// This expression as read through `layout` (over the consumer's shape), its
    /// inputs read through the same walk: where `layout` reads the expression's
    /// elements in order, some dims broadcast (offset 0, and the dims it steps through
    /// the compact strides of the shape it has before the broadcast). `None` for
    /// another read (a slice, a transpose), for a pad (whose argument is found by
    /// where an element lies in its output), and where an input's layout does not
    /// reshape to that shape. A constant reads the same through any layout.
    pub(crate) fn through(&self, layout: &Layout) -> Option<Expr> {
        if self.args.is_empty() {
            return Some(self.clone());
        }
        if self.window.is_some() || layout.offset() != 0 {
            return None;
        }
        let before: Vec<usize> = (layout.dims().iter().zip(layout.strides()))
            .map(|(&size, &stride)| if stride == 0 { 1 } else { size })
            .collect();
        let before = Shape::new(before);
        if before.elem_count() != self.len {
            return None;
        }
        let steps = |(&size, (&stride, &compact))| size == 1 || stride == compact;
        let compact = before.contiguous_strides();
        let ordered = (before
            .dims()
            .iter()
            .zip(layout.strides().iter().zip(&compact)))
        .all(steps);
        if !ordered {
            return None;
        }
        let mut args = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            let reshaped = arg.layout.reshape(&before)?;
            args.push(Arg {
                storage: arg.storage.clone(),
                layout: reshaped.broadcast_to("fusion", layout.shape()).ok()?,
            });
        }
        Some(Expr {
            args,
            len: layout.elem_count(),
            ..self.clone()
        })
    }
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
    if !(x.storage.is_pending() && x.in_order()) {
        return (x, window);
    }
    let source = {
        let expr = x.storage.data.expr.lock().unwrap();
        expr.as_ref().and_then(Expr::copy_source).cloned()
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

/// The ops and reads of `expr`'s kernel, its pending inputs computed inside it, after
/// running inputs until it fits: none; else those read through a broadcast (small, as
/// a rule); else all. The quick count, each input's own bounds added up, counts what
/// several inputs read once per use; only where that is over the bounds is the kernel
/// lowered and its reads counted once each.
fn fitted_cost(expr: &Expr, max_reads: usize) -> Result<(usize, usize)> {
    let fits = |(ops, reads): (usize, usize)| ops <= super::MAX_OPS && reads <= max_reads;
    for broadcasts_run in [false, true] {
        if broadcasts_run {
            for arg in expr.args.iter().filter(|a| a.inlines() && !a.in_order()) {
                if !arg.is_constant() {
                    arg.storage.buffer()?;
                }
            }
        }
        let quick =
            (expr.args.iter().map(Arg::cost)).fold((1, 0), |(o, r), (ao, ar)| (o + ao, r + ar));
        if fits(quick) {
            return Ok(quick);
        }
        if let Some(program) = Program::lower_within(expr, max_reads)? {
            return Ok((program.steps.len(), program.reads.len()));
        }
    }
    for arg in &expr.args {
        arg.storage.buffer()?;
    }
    Ok((1, expr.args.len()))
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
    let mut expr = Expr {
        op,
        args,
        dtype,
        len,
        ops: 0,
        reads: 0,
        window,
    };
    (expr.ops, expr.reads) = fitted_cost(&expr, device.max_fused_reads())?;
    let storage = GpuStorage::pending(expr, dtype, len, device)?;
    // Recording is the host's cost of the op, as a launch is without fusion.
    device.count_launch_time(start);
    Ok(storage)
}
