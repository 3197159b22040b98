//! An LSTM or GRU step in one launch. A step's cell reads a sum over the recurrent
//! product `h @ w_hh^T`: an LSTM's gates `x_t + h @ w_hh^T`, a GRU's hidden projection
//! `h @ w_hh^T + b_hh`. With fusion on, the product is a deferred launch and the sum a
//! pending expression that runs as its epilogue, and the cell kernel then reads the sum
//! back. Where the cell finds its sum pending in that form, the product runs in
//! `MatmulLstmCell` or `MatmulGruCell` instead: the tiled matmul reading `w_hh^T`'s
//! columns in the gates' order (`MatmulRhs::GateColumns`), so that each thread holds
//! one unit's gates for each of its rows, and computing the cell there. One launch a
//! step where there were two; the sum is written once (the backward pass reads it) and
//! not read back.

use crate::byte_span::ByteSpan;
use crate::fusion::{Arg, Expr, FusedOp};
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::{to_u32, MatmulParams, RecurrentStepParams};
use crate::shader_constants::TILE;
use crate::storage::{GpuStorage, LaunchClaim};
use kiln_core::{
    BinaryOp, DType, Error, GpuErrorKind, GruCellSpec, Layout, LstmCellSpec, Result, Shape,
};
use std::sync::Arc;
use std::time::Instant;

/// The section of `matmul.wgsl` that stores the product, which the recurrent builds
/// replace (`recurrent_backward`'s too).
pub(super) const FINISH: &str = "// kiln:finish";
pub(super) const FINISH_END: &str = "// kiln:finish end";

/// What both finishes begin with: `acc[i]` holds the gates of unit `col0 / 4 + local.x`
/// (`rhs_at`'s order) for the thread's row `i`; `sum` is the product plus what its sum
/// adds, rounded as the unfused step stores the product and then the sum, and written.
const SUM: &str = "\
    let hidden = cell.hidden;
    let unit = col0 / 4u + local.x;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + local.y + SIDE * i;
        if (row >= params.m || unit >= hidden) { continue; }
        let a = cell.add_offset + row * cell.add_row + unit * cell.add_col;
        let ga = hidden * cell.add_col;
        let at = row * cell.gates * hidden + unit;
        let state = f32(cell_state[cell.state_offset + row * cell.state_row + unit * cell.state_col]);
";

/// An LSTM's: the gates written, then `[h | c']`.
const LSTM_FINISH: &str = "\
        let adds = vec4<f32>(f32(cell_add[a]), f32(cell_add[a + ga]), f32(cell_add[a + 2u * ga]), f32(cell_add[a + 3u * ga]));
        let sum = vec4<T>(adds + vec4<f32>(vec4<T>(acc[i])));
        cell_gates[at] = sum.x;
        cell_gates[at + hidden] = sum.y;
        cell_gates[at + 2u * hidden] = sum.z;
        cell_gates[at + 3u * hidden] = sum.w;
        let hc = lstm_update(vec4<f32>(sum), state);
        cell_out[row * 2u * hidden + unit] = T(hc.x);
        cell_out[row * 2u * hidden + hidden + unit] = T(hc.y);
    }
";

/// A GRU's: the hidden projection written, then `h'` with the input projection's gates.
const GRU_FINISH: &str = "\
        let adds = vec3<f32>(f32(cell_add[a]), f32(cell_add[a + ga]), f32(cell_add[a + 2u * ga]));
        let sum = vec3<T>(vec3<f32>(vec3<T>(acc[i].xyz)) + adds);
        cell_gates[at] = sum.x;
        cell_gates[at + hidden] = sum.y;
        cell_gates[at + 2u * hidden] = sum.z;
        let x = cell.x_offset + row * cell.x_row + unit * cell.x_col;
        let gx = hidden * cell.x_col;
        let xs = vec3<f32>(f32(cell_x[x]), f32(cell_x[x + gx]), f32(cell_x[x + 2u * gx]));
        cell_out[row * hidden + unit] = T(gru_update(xs, vec3<f32>(sum), state));
    }
";

/// Which cell a step computes, and the inputs it has besides the product's sum.
#[derive(Clone, Copy)]
enum Cell<'a> {
    /// The cell state `c`.
    Lstm { c: &'a GpuStorage },
    /// The input projection's step `x` and the hidden state `h`.
    Gru {
        x: &'a GpuStorage,
        h: &'a GpuStorage,
    },
}

impl Cell<'_> {
    fn kernel(self) -> Kernel {
        match self {
            Cell::Lstm { .. } => Kernel::MatmulLstmCell,
            Cell::Gru { .. } => Kernel::MatmulGruCell,
        }
    }

    fn gates(self) -> usize {
        match self {
            Cell::Lstm { .. } => 4,
            Cell::Gru { .. } => 3,
        }
    }

    /// Elements of the cell's output per (row, unit).
    fn outputs(self) -> usize {
        match self {
            Cell::Lstm { .. } => 2,
            Cell::Gru { .. } => 1,
        }
    }
}

/// The build of `matmul.wgsl` for `kernel` (`MatmulLstmCell`, `MatmulGruCell`) and
/// `dtype`, its finish computing the cell.
pub(crate) fn source(kernel: Kernel, dtype: DType) -> Result<String> {
    let finish = match kernel {
        Kernel::MatmulLstmCell => LSTM_FINISH,
        Kernel::MatmulGruCell => GRU_FINISH,
        _ => return Err(internal(&format!("{kernel:?} computes no cell"))),
    };
    let text = kernel.specialise(&[dtype])?;
    let body =
        format!("    // The recurrent build's finish (ops/recurrent_step.rs).\n{SUM}{finish}");
    kernel.splice(&text, FINISH, Some(FINISH_END), &body)
}

/// `[h | c']` of `lstm_cell(z, c)` in one launch with the product behind `z` (`step`);
/// `None` where `z` is not such a sum, for the cell kernel.
pub(crate) fn lstm_step(
    z: &GpuStorage,
    c: &GpuStorage,
    spec: &LstmCellSpec,
) -> Result<Option<GpuStorage>> {
    step(z, Cell::Lstm { c }, spec.batch, spec.hidden)
}

/// `h'` of `gru_cell(x, hp, h)` in one launch with the product behind `hp`; `None`
/// where `hp` is not such a sum.
pub(crate) fn gru_step(
    x: &GpuStorage,
    hp: &GpuStorage,
    h: &GpuStorage,
    spec: &GruCellSpec,
) -> Result<Option<GpuStorage>> {
    step(hp, Cell::Gru { x, h }, spec.batch, spec.hidden)
}

/// The cell's output from `sum`, in one launch: where `sum` is a pending sum of a view
/// of its shape and a deferred single matmul of `[batch, k] x [k, gates * hidden]`
/// that nothing else holds (whose own output no one can then ask for).
fn step(sum: &GpuStorage, cell: Cell, batch: usize, hidden: usize) -> Result<Option<GpuStorage>> {
    let kernel = cell.kernel();
    let op = match cell {
        Cell::Lstm { .. } => "lstm_cell",
        Cell::Gru { .. } => "gru_cell",
    };
    let start = Instant::now();
    let device = &sum.device;
    let dtype = sum.dtype;
    let mut pending = sum.data.expr.lock().unwrap();
    let Some(expr) = pending.as_ref() else {
        return Ok(None);
    };
    let shape = [batch, cell.gates() * hidden];
    let Some((p, _claim)) = product_in_sum(expr, dtype, &shape) else {
        return Ok(None);
    };
    let (product, add) = (&expr.args[p], &expr.args[1 - p]);
    let (state, x) = match cell {
        Cell::Lstm { c } => (read_as_view(c, batch, hidden)?, None),
        Cell::Gru { x, h } => (
            read_as_view(h, batch, hidden)?,
            Some(read_as_view(x, batch, 3 * hidden)?),
        ),
    };
    let add_buffer = add.storage.raw()?;
    let mut product = Product::take(product)?;
    // A workgroup takes a quarter tile of units, all the gates of each.
    let units_per_group = TILE as usize / 4;
    let groups = [
        hidden.div_ceil(units_per_group),
        batch.div_ceil(TILE as usize),
        1,
    ];
    let groups = device.checked_groups(op, groups)?;
    // The kernel's columns are the gates in this order, a whole tile a workgroup.
    product.params.n = groups[0] * TILE;
    let u = |what, v: usize| to_u32(op, what, v);
    let view = |l: &Layout| -> Result<[u32; 3]> {
        Ok([
            u("offset", l.offset())?,
            u("stride", l.strides()[0])?,
            u("stride", l.strides()[1])?,
        ])
    };
    let [add_offset, add_row, add_col] = view(&add.layout)?;
    let [state_offset, state_row, state_col] = view(&state.1)?;
    let [x_offset, x_row, x_col] = x.as_ref().map_or(Ok([0; 3]), |(_, l)| view(l))?;
    let cell_params = RecurrentStepParams {
        hidden: u("hidden size", hidden)?,
        gates: cell.gates() as u32,
        add_offset,
        add_row,
        add_col,
        state_offset,
        state_row,
        state_col,
        x_offset,
        x_row,
        x_col,
        _pad0: 0,
    };
    let gates_out = device.alloc_output(op, batch * shape[1], dtype)?;
    let out_len = batch * cell.outputs() * hidden;
    let out = device.alloc_output(op, out_len, dtype)?;
    let key = format!("{kernel:?} [{dtype:?}]");
    let written = vec![(1, 3), (1, 4)];
    let pipeline = device.cached_pipeline(key, kernel, 2, written, || source(kernel, dtype))?;
    let mut resources = vec![
        add_buffer.as_entire_binding(),
        state.0.raw()?.as_entire_binding(),
        gates_out.buffer().as_entire_binding(),
        out.buffer().as_entire_binding(),
    ];
    let size = dtype.size_in_bytes() as u64;
    let mut spans = vec![
        (1, ByteSpan::of_layout(&add.layout, size)),
        (2, ByteSpan::of_layout(&state.1, size)),
    ];
    if let Some((x, layout)) = &x {
        resources.push(x.raw()?.as_entire_binding());
        spans.push((5, ByteSpan::of_layout(layout, size)));
    }
    let cell_group =
        Bindings::numbered(bytemuck::bytes_of(&cell_params), &resources, 1).spanning(spans);
    let name = || format!("{} [{dtype:?}]", kernel.label());
    let bind = [product.bindings()?, cell_group];
    device.launch(op, &pipeline, &bind, groups, start, name)?;
    // The sum is the pending storage's value; the product's own output stays unwritten
    // (nothing held it but the sum).
    sum.data.fill(gates_out)?;
    *pending = None;
    Ok(Some(GpuStorage::new(out, dtype, out_len, device)))
}

/// A pending sum's deferred product, taken to run in a recurrent build instead: its
/// params and operands, and what it reads of them.
pub(super) struct Product {
    pub(super) params: MatmulParams,
    operands: [GpuStorage; 2],
    spans: Vec<(u32, ByteSpan)>,
}

impl Product {
    /// The launch behind `arg` (which `is_product`), taken: it does not run on its own.
    pub(super) fn take(arg: &Arg) -> Result<Product> {
        let launch = arg.storage.data.deferred.lock().unwrap().take();
        let launch = launch.ok_or_else(|| internal("the step's product has run"))?;
        let params: MatmulParams = bytemuck::pod_read_unaligned(launch.params());
        for input in launch.inputs() {
            input.buffer()?;
        }
        let dtype = launch.dtype();
        // What the product reads of its operands.
        let operand = |rows: u32, cols: u32, strides: [u32; 4], offset: u32| {
            let dims = Shape::from([rows as usize, cols as usize]);
            let layout = Layout::new(
                dims,
                vec![strides[2] as usize, strides[3] as usize],
                offset as usize,
            );
            ByteSpan::of_layout(&layout, dtype.size_in_bytes() as u64)
        };
        let spans = vec![
            (
                1,
                operand(params.m, params.k, params.lhs_strides, params.offsets[0]),
            ),
            (
                2,
                operand(params.k, params.n, params.rhs_strides, params.offsets[1]),
            ),
        ];
        Ok(Product {
            params,
            operands: [0, 1].map(|i| launch.inputs()[i].clone()),
            spans,
        })
    }

    /// The build's group 0: the product's params and operands.
    pub(super) fn bindings(&self) -> Result<Bindings<'_>> {
        let [lhs, rhs] = &self.operands;
        let operands = [
            lhs.raw()?.as_entire_binding(),
            rhs.raw()?.as_entire_binding(),
        ];
        let params = bytemuck::bytes_of(&self.params);
        Ok(Bindings::numbered(params, &operands, 1).spanning(self.spans.clone()))
    }
}

/// Where `expr` is a sum of two tensors of `shape` and `dtype` whose one is the output
/// of a deferred single product that nothing else holds (whose own output no one can
/// then ask for): which of its args the product is, and a claim on its launch, to hold
/// until `Product::take` (another thread's group of products would take it meanwhile).
pub(super) fn product_in_sum(
    expr: &Expr,
    dtype: DType,
    shape: &[usize; 2],
) -> Option<(usize, LaunchClaim)> {
    let is_sum = expr.op == FusedOp::Binary(BinaryOp::Add)
        && expr.dtype == dtype
        && expr.args.len() == 2
        && (expr.args.iter()).all(|a| a.layout.dims() == shape && a.storage.dtype == dtype);
    if !is_sum {
        return None;
    }
    let alone = |a: &Arg| Arc::strong_count(&a.storage.data) == 1;
    let p = (expr.args.iter()).position(|a| alone(a) && is_product(a, shape))?;
    let claim = LaunchClaim::new(&expr.args[p].storage.data);
    // A group that locked the launch before the claim may have run it.
    is_product(&expr.args[p], shape).then_some((p, claim))
}

/// Whether `arg` reads, in order, the output of a deferred single product of `shape`
/// by a tiled or blocked kernel through strides.
fn is_product(arg: &Arg, shape: &[usize; 2]) -> bool {
    if !arg.in_order() {
        return false;
    }
    let slot = arg.storage.data.deferred.lock().unwrap();
    let Some(launch) = slot.as_ref() else {
        return false;
    };
    let strided = matches!(
        launch.kernel(),
        Kernel::Matmul | Kernel::MatmulSmallTiled | Kernel::MatmulBlocked
    );
    let params: MatmulParams = bytemuck::pod_read_unaligned(launch.params());
    let dims = [params.m as usize, params.n as usize];
    let single = params.batch1 == 1 && launch.len() == shape[0] * shape[1];
    strided && single && dims == *shape && launch.dtype() == arg.storage.dtype
}

/// Where a compact `[rows, cols]` input's elements lie. A pending copy of a view (the
/// last LSTM step's `c'`, half of its `[h | c']`; a GRU step's input projection, a
/// time step of the sequence's) is read through the view, and never runs; anything
/// else from its buffer.
pub(super) fn read_as_view(
    t: &GpuStorage,
    rows: usize,
    cols: usize,
) -> Result<(GpuStorage, Layout)> {
    let copied = (t.data.expr.lock().unwrap().as_ref())
        .and_then(Expr::copy_source)
        .cloned();
    match copied {
        Some(view) if view.layout.dims() == [rows, cols] => {
            view.storage.buffer()?;
            Ok((view.storage, view.layout))
        }
        _ => {
            t.buffer()?;
            Ok((t.clone(), Layout::contiguous([rows, cols])))
        }
    }
}

pub(super) fn internal(message: &str) -> Error {
    Error::Gpu {
        op: "recurrent step",
        kind: GpuErrorKind::Internal,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated_check::{bindings, struct_size};
    use crate::params::ShaderParams;

    /// Both builds are valid WGSL whose cell params are `RecurrentStepParams` and which
    /// write the sum and the cell's output (group 1, bindings 3 and 4; the product's own
    /// output, binding 3 of group 0, stays declared and unused).
    #[test]
    fn the_builds_validate_and_match_their_params() {
        for kernel in [Kernel::MatmulLstmCell, Kernel::MatmulGruCell] {
            for dtype in [DType::F32, DType::F16] {
                let text = source(kernel, dtype).unwrap();
                let label = format!("{kernel:?} {dtype:?}");
                let size = struct_size(&text, "RecurrentStepParams", &label);
                assert_eq!(size, RecurrentStepParams::LAYOUT.size, "{label}");
                assert!(!text.contains(FINISH), "{text}");
                assert_eq!(bindings(&text, "read_write>"), [3, 4, 3], "{label}");
            }
        }
        assert!(source(Kernel::Matmul, DType::F32).is_err());
    }
}
