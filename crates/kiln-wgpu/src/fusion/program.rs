//! Lowering a pending storage into one kernel's program: the buffers it reads
//! (`reads`) and its ops in order (`steps`), each pending input computed once.

use super::expr::{Arg, Expr, FusedOp, Window};
use super::MAX_SCALARS;
use crate::byte_span::ByteSpan;
use crate::storage::GpuStorage;
use kiln_core::{DType, Error, GpuErrorKind, Layout, Result};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// A value inside the kernel: a buffer read, or the result of an earlier step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Value {
    Read(usize),
    Step(usize),
}

/// One buffer the kernel reads, with the layout it reads it through; for a pad's
/// argument, also where it lies in the pad's output.
pub(crate) struct Read {
    pub(crate) arg: Arg,
    pub(crate) window: Option<Window>,
}

/// How a kernel computes a read's element index; a part of the kernel's structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadKind {
    /// Row-major from its offset: the offset plus the element index.
    Contiguous,
    /// A walk over its shape and strides.
    Strided,
    /// A pad's argument: the walk, with the padding found on the way.
    Padded,
}

impl Read {
    pub(crate) fn kind(&self) -> ReadKind {
        match (&self.window, self.arg.layout.is_contiguous()) {
            (Some(_), _) => ReadKind::Padded,
            (None, true) => ReadKind::Contiguous,
            (None, false) => ReadKind::Strided,
        }
    }
}

pub(crate) struct Step {
    pub(crate) op: FusedOp,
    pub(crate) args: Vec<Value>,
    pub(crate) dtype: DType,
    /// The first of the op's two scalar slots, for ops with parameters.
    pub(crate) scalars: Option<usize>,
}

pub(crate) struct Program {
    pub(crate) reads: Vec<Read>,
    pub(crate) steps: Vec<Step>,
    /// The values of the scalar slots, in slot order.
    pub(crate) scalars: Vec<f32>,
    pub(crate) len: usize,
    /// The pending storages computed inside the program (not the root), each once.
    pub(crate) inlined: Vec<GpuStorage>,
}

impl Program {
    /// The program that computes `expr`. Inputs read through other layouts, or pending
    /// inputs that have run meanwhile, become buffer reads (running them if needed).
    /// Where that leaves the kernel over its bounds (a constant computed inline had
    /// run, and is one read more than counted), `expr`'s pending inputs run first, each
    /// its own kernel, and it reads their buffers.
    pub(crate) fn lower(expr: &Expr, max_reads: usize) -> Result<Program> {
        if let Some(program) = Program::lower_within(expr, max_reads)? {
            return Ok(program);
        }
        for arg in &expr.args {
            arg.storage.buffer()?;
        }
        Program::lower_within(expr, max_reads)?.ok_or_else(|| {
            internal("a fused kernel of its inputs' buffers exceeds its bounds".into())
        })
    }

    /// The program that computes `expr`, or `None` where it would read more than
    /// `max_reads` buffers or compute more than `MAX_OPS` ops.
    pub(crate) fn lower_within(expr: &Expr, max_reads: usize) -> Result<Option<Program>> {
        let mut lowering = Lowering {
            program: Program {
                reads: Vec::new(),
                steps: Vec::new(),
                scalars: Vec::new(),
                len: expr.len,
                inlined: Vec::new(),
            },
            inlined: HashMap::new(),
            over: false,
        };
        lowering.expr(expr)?;
        let p = lowering.program;
        let fits = !lowering.over && p.reads.len() <= max_reads;
        Ok(fits.then_some(p))
    }

    /// The buffers the reads bind, in order.
    pub(crate) fn resources(&self) -> Result<Vec<wgpu::BindingResource<'_>>> {
        let mut out = Vec::with_capacity(self.reads.len() + 1);
        for read in &self.reads {
            out.push(read.arg.storage.raw()?.as_entire_binding());
        }
        Ok(out)
    }

    /// The buffers the reads bind, at bindings 1, 2, ..., but for read `given`, whose
    /// value the kernel hands over (an epilogue's).
    pub(crate) fn resources_except(
        &self,
        given: usize,
    ) -> Result<Vec<(u32, wgpu::BindingResource<'_>)>> {
        let mut out = Vec::with_capacity(self.reads.len());
        for (i, read) in self.reads.iter().enumerate().filter(|&(i, _)| i != given) {
            out.push((i as u32 + 1, read.arg.storage.raw()?.as_entire_binding()));
        }
        Ok(out)
    }

    /// By binding (read `i` at `first + i`), the bytes each read accesses in its
    /// buffer: what a profile counts, where the kernel binds the whole buffer.
    pub(crate) fn read_spans(&self, first: u32) -> Vec<(u32, ByteSpan)> {
        let spans = self.reads.iter().enumerate().map(|(i, read)| {
            let size = read.arg.storage.dtype.size_in_bytes() as u64;
            (
                first + i as u32,
                ByteSpan::of_layout(&read.arg.layout, size),
            )
        });
        spans.collect()
    }

    pub(crate) fn out_dtype(&self) -> DType {
        self.steps.last().map_or(DType::F32, |s| s.dtype)
    }

    /// What identifies the kernel: everything the WGSL depends on, nothing it reads
    /// from its params (sizes, layouts, scalar values).
    pub(crate) fn key(&self) -> String {
        let mut key = String::new();
        let walks = super::wgsl::walk_owners(self);
        for (r, walk) in self.reads.iter().zip(walks) {
            let _ = write!(key, "{:?}{:?}{walk},", r.arg.storage.dtype, r.kind());
        }
        for s in &self.steps {
            let _ = write!(key, "|{:?}{:?}{:?}", s.op_code(), s.args, s.dtype);
        }
        key
    }

    /// The ops' names in order, e.g. `mul,exp,add`: the kernel's name in profiles.
    pub(crate) fn summary(&self) -> String {
        let names: Vec<_> = self.steps.iter().map(|s| s.op.name()).collect();
        format!("fused {} [{:?}]", names.join(","), self.out_dtype())
    }
}

impl Step {
    /// The op without its parameter values, which live in the params.
    fn op_code(&self) -> (u8, u32) {
        match self.op {
            FusedOp::Unary(op) => (0, op.code()),
            FusedOp::Binary(op) => (1, op.code()),
            FusedOp::Where => (2, 0),
            FusedOp::Cast => (3, 0),
            FusedOp::Full(_) => (4, 0),
            FusedOp::Pad(_) => (5, 0),
        }
    }
}

type InlineKey = (usize, Option<(Vec<usize>, Vec<usize>)>);

struct Lowering {
    program: Program,
    /// Pending inputs already lowered, by their shared data and the walk that reads
    /// them (none where read in order).
    inlined: HashMap<InlineKey, Value>,
    /// Whether the program has more than `MAX_OPS` ops: it is not built.
    over: bool,
}

impl Lowering {
    fn expr(&mut self, expr: &Expr) -> Result<Value> {
        let mut args = Vec::with_capacity(expr.args.len());
        for arg in &expr.args {
            if self.over {
                break;
            }
            let value = match &expr.window {
                Some(window) => self.read(arg, Some(window))?,
                None => self.arg(arg)?,
            };
            args.push(value);
        }
        // Past `MAX_OPS` the program is given up (and its scalar slots never run out).
        if self.over || self.program.steps.len() == super::MAX_OPS {
            self.over = true;
            return Ok(Value::Step(0));
        }
        let scalars = match expr.op {
            FusedOp::Unary(op) if !op.info().params.is_empty() => Some(self.scalars(op.scalars())?),
            FusedOp::Full(value) | FusedOp::Pad(value) => Some(self.scalars([value, 0.0])?),
            _ => None,
        };
        self.program.steps.push(Step {
            op: expr.op,
            args,
            dtype: expr.dtype,
            scalars,
        });
        Ok(Value::Step(self.program.steps.len() - 1))
    }

    /// Two scalar slots holding `values`; returns the first.
    fn scalars(&mut self, values: [f32; 2]) -> Result<usize> {
        let first = self.program.scalars.len();
        if first + 2 > MAX_SCALARS {
            return Err(internal("a fused kernel ran out of scalar slots".into()));
        }
        self.program.scalars.extend(values);
        Ok(first)
    }

    fn arg(&mut self, arg: &Arg) -> Result<Value> {
        let id = Arc::as_ptr(&arg.storage.data) as usize;
        // Read in order, an expression's value is the same through any compact layout;
        // through a broadcast, it is another value per walk.
        let walk = match arg.in_order() {
            true => None,
            false => Some((arg.layout.dims().to_vec(), arg.layout.strides().to_vec())),
        };
        let key = (id, walk);
        if let Some(&v) = self.inlined.get(&key) {
            return Ok(v);
        }
        let pending = arg.storage.data.expr.lock().unwrap().clone();
        let expr = match (pending, &key.1) {
            (Some(e), None) => Some(e),
            (Some(e), Some(_)) => e.through(&arg.layout),
            (None, _) => None,
        };
        // (What `Arg::inlines` decides: an expression is pending until it has run.)
        if let Some(expr) = expr {
            let v = self.expr(&expr)?;
            self.inlined.insert(key, v);
            let data = &arg.storage.data;
            if !self
                .program
                .inlined
                .iter()
                .any(|s| Arc::ptr_eq(&s.data, data))
            {
                self.program.inlined.push(arg.storage.clone());
            }
            return Ok(v);
        }
        self.read(arg, None)
    }

    /// `arg`'s buffer as a read (once per buffer, layout and window). A pending input
    /// runs now, but for a deferred launch, which may run with this program as its
    /// epilogue.
    fn read(&mut self, arg: &Arg, window: Option<&Window>) -> Result<Value> {
        if !arg.storage.is_deferred() {
            arg.storage.buffer()?;
        }
        let same = |r: &Read| {
            Arc::ptr_eq(&r.arg.storage.data, &arg.storage.data)
                && same_layout(&r.arg.layout, &arg.layout)
                && r.window.as_ref() == window
        };
        if let Some(i) = self.program.reads.iter().position(same) {
            return Ok(Value::Read(i));
        }
        self.program.reads.push(Read {
            arg: arg.clone(),
            window: window.cloned(),
        });
        Ok(Value::Read(self.program.reads.len() - 1))
    }
}

fn same_layout(a: &Layout, b: &Layout) -> bool {
    a.dims() == b.dims() && a.strides() == b.strides() && a.offset() == b.offset()
}

fn internal(message: String) -> Error {
    Error::Gpu {
        op: "fusion",
        kind: GpuErrorKind::Internal,
        message,
    }
}
