//! An LSTM or GRU step's backward in one launch. Going back through a sequence, the
//! gradient of a step's output (an LSTM's `h`, a GRU's `h'`) is a sum: the product that
//! carries the gradient of the next step's gates back through `w_hh`, the output's own
//! gradient as the layer's output, and a GRU's through the next step's cell. With
//! fusion on, the product is a deferred launch and the sum a pending expression that
//! runs as its epilogue, and the cell's backward kernel then read the sum back: two
//! launches a step. Where the cell's backward finds its gradient pending in that form,
//! the product runs in `MatmulLstmCellBackward` or `MatmulGruCellBackward` instead: the
//! tiled matmul whose finish adds the sum's other terms, each value rounded as the
//! unfused sum stores it, and computes the cell's gradients there (`cell_updates`'
//! `lstm_gradient` and `gru_gradient`, which the cell kernels run too). The sum is
//! written as well, as its pending storage's value.

use super::recurrent_step::{internal, product_in_sum, read_as_view, Product, FINISH, FINISH_END};
use crate::byte_span::ByteSpan;
use crate::fusion::{Arg, FusedOp};
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::{to_u32, RecurrentGradientParams, ShaderParams};
use crate::shader_constants::TILE;
use crate::storage::GpuStorage;
use kiln_core::{BinaryOp, DType, GruCellSpec, Layout, LstmCellSpec, Result};
use std::time::Instant;

/// Each of the thread's products in bounds is the recurrent term of the gradient of
/// the step's output at (row, unit).
const SUM: &str = "\
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + local.y + SIDE * i;
        if (row >= params.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let unit = col0 + local.x + SIDE * j;
            if (unit < params.n) {
                cell_finish(row, unit, cell_sum_at(row, unit, acc[i][j]));
            }
        }
    }
";

/// What both builds declare, after `RecurrentGradientParams`' declaration.
const CELL: &str = "\
// The cell's gradients this build computes in its finish (ops/recurrent_backward.rs).
@group(1) @binding(0) var<uniform> cell: RecurrentGradientParams;
// What the product's sum adds: one or two [batch, hidden] views.
@group(1) @binding(1) var<storage, read> cell_term0: array<T>;
@group(1) @binding(2) var<storage, read> cell_term1: array<T>;
// The state the step read, [batch, hidden] at cell.state: an LSTM's c, a GRU's h.
@group(1) @binding(3) var<storage, read> cell_state: array<T>;
// The sum, [batch, hidden], compact: the gradient of the step's output.
@group(1) @binding(4) var<storage, read_write> cell_sum: array<T>;
fn cell_at(view: vec4<u32>, row: u32, col: u32) -> u32 {
    return view.x + row * view.y + col * view.z;
}
// The sum at (row, unit) from the product there, written, each value rounded as the
// unfused sum stores it: the product, the terms' own sum, the sum.
fn cell_sum_at(row: u32, unit: u32, product: f32) -> f32 {
    var terms = f32(cell_term0[cell_at(cell.term0, row, unit)]);
    if (cell.terms == 2u) {
        terms = f32(T(terms + f32(cell_term1[cell_at(cell.term1, row, unit)])));
    }
    let sum = T(terms + f32(T(product)));
    cell_sum[row * cell.hidden + unit] = sum;
    return f32(sum);
}
";

/// An LSTM's: the gradients of its gates and of `c`.
const LSTM: &str = "\
// The step's gate pre-activations, [batch, 4 * hidden], compact.
@group(1) @binding(5) var<storage, read> cell_gates: array<T>;
// The gradient of c', [batch, hidden] at cell.grad_c.
@group(1) @binding(6) var<storage, read> cell_grad_c: array<T>;
// The gradients of the gates and of c, compact.
@group(1) @binding(7) var<storage, read_write> cell_dz: array<T>;
@group(1) @binding(8) var<storage, read_write> cell_dc: array<T>;
fn cell_finish(row: u32, unit: u32, dh: f32) {
    let hidden = cell.hidden;
    let at = row * 4u * hidden + unit;
    let z = vec4<f32>(f32(cell_gates[at]), f32(cell_gates[at + hidden]), f32(cell_gates[at + 2u * hidden]), f32(cell_gates[at + 3u * hidden]));
    let c = f32(cell_state[cell_at(cell.state, row, unit)]);
    let d = lstm_gradient(z, c, dh, f32(cell_grad_c[cell_at(cell.grad_c, row, unit)]));
    cell_dz[at] = T(d.dz.x);
    cell_dz[at + hidden] = T(d.dz.y);
    cell_dz[at + 2u * hidden] = T(d.dz.z);
    cell_dz[at + 3u * hidden] = T(d.dz.w);
    cell_dc[row * hidden + unit] = T(d.dc);
}
";

/// A GRU's: the gradients of both projections and of `h`.
const GRU: &str = "\
// The step's hidden projection, [batch, 3 * hidden], compact.
@group(1) @binding(5) var<storage, read> cell_hp: array<T>;
// The step's input projection, [batch, 3 * hidden] at cell.x.
@group(1) @binding(6) var<storage, read> cell_x: array<T>;
// The gradients of both projections and of h, compact.
@group(1) @binding(7) var<storage, read_write> cell_dx: array<T>;
@group(1) @binding(8) var<storage, read_write> cell_dhp: array<T>;
@group(1) @binding(9) var<storage, read_write> cell_dh: array<T>;
fn cell_finish(row: u32, unit: u32, dh1: f32) {
    let hidden = cell.hidden;
    let at = row * 3u * hidden + unit;
    let hp = vec3<f32>(f32(cell_hp[at]), f32(cell_hp[at + hidden]), f32(cell_hp[at + 2u * hidden]));
    let x0 = cell_at(cell.x, row, unit);
    let gx = hidden * cell.x.z;
    let x = vec3<f32>(f32(cell_x[x0]), f32(cell_x[x0 + gx]), f32(cell_x[x0 + 2u * gx]));
    let d = gru_gradient(x, hp, f32(cell_state[cell_at(cell.state, row, unit)]), dh1);
    cell_dx[at] = T(d.dx.x);
    cell_dx[at + hidden] = T(d.dx.y);
    cell_dx[at + 2u * hidden] = T(d.dx.z);
    cell_dhp[at] = T(d.dhp.x);
    cell_dhp[at + hidden] = T(d.dhp.y);
    cell_dhp[at + 2u * hidden] = T(d.dhp.z);
    cell_dh[row * hidden + unit] = T(d.dh);
}
";

/// Which cell's gradients a step computes, and what it reads besides the gradient of
/// its output.
#[derive(Clone, Copy)]
enum Cell<'a> {
    /// The gate pre-activations `z`, the cell state `c` and the gradient of `c'`.
    Lstm {
        z: &'a GpuStorage,
        c: &'a GpuStorage,
        dc: &'a GpuStorage,
    },
    /// The input projection `x`, the hidden projection `hp` and the state `h`.
    Gru {
        x: &'a GpuStorage,
        hp: &'a GpuStorage,
        h: &'a GpuStorage,
    },
}

impl Cell<'_> {
    fn kernel(self) -> Kernel {
        match self {
            Cell::Lstm { .. } => Kernel::MatmulLstmCellBackward,
            Cell::Gru { .. } => Kernel::MatmulGruCellBackward,
        }
    }
}

/// Elements per (row, unit) of each gradient `kernel`'s cell writes besides the sum.
fn outputs(kernel: Kernel) -> &'static [usize] {
    match kernel {
        Kernel::MatmulLstmCellBackward => &[4, 1],
        _ => &[3, 3, 1],
    }
}

/// Storage buffers `kernel` binds: the product's operands, the terms, the state, the
/// sum, the cell's two further inputs and its outputs.
fn storage_buffers(kernel: Kernel) -> u32 {
    2 + 2 + 1 + 1 + 2 + outputs(kernel).len() as u32
}

/// The build of `matmul.wgsl` for `kernel` (`MatmulLstmCellBackward`,
/// `MatmulGruCellBackward`) and `dtype`, its finish computing the cell's gradients.
pub(crate) fn source(kernel: Kernel, dtype: DType) -> Result<String> {
    let (cell, gradient) = match kernel {
        Kernel::MatmulLstmCellBackward => (LSTM, "lstm_gradient"),
        Kernel::MatmulGruCellBackward => (GRU, "gru_gradient"),
        _ => {
            return Err(internal(&format!(
                "{kernel:?} computes no cell's gradients"
            )))
        }
    };
    let functions = crate::cell_updates::group(gradient)
        .ok_or_else(|| internal(&format!("no constants group {gradient}")))?;
    let text = kernel.specialise(&[dtype])?;
    let body =
        format!("    // The recurrent backward build's finish (ops/recurrent_backward.rs).\n{SUM}");
    let text = kernel.splice(&text, FINISH, Some(FINISH_END), &body)?;
    let params = RecurrentGradientParams::LAYOUT.wgsl_struct();
    Ok(format!("{text}\n{params}{CELL}{cell}{functions}"))
}

/// The gradients of `lstm_cell(z, c)`'s inputs from those of its `h` (`dh`) and `c'`
/// (`dc`), in one launch with the product behind `dh`; `None` where `dh` is not such a
/// sum, for the cell's backward kernel.
pub(crate) fn lstm_step(
    z: &GpuStorage,
    c: &GpuStorage,
    dh: &GpuStorage,
    dc: &GpuStorage,
    spec: &LstmCellSpec,
) -> Result<Option<(GpuStorage, GpuStorage)>> {
    let cell = Cell::Lstm { z, c, dc };
    let found = step(dh, cell, spec.batch, spec.hidden)?;
    let pair = found.and_then(|g| <[GpuStorage; 2]>::try_from(g).ok());
    Ok(pair.map(|[dz, dc]| (dz, dc)))
}

/// The gradients of `gru_cell(x, hp, h)`'s inputs from that of its output (`grad`), in
/// one launch with the product behind `grad`; `None` where `grad` is not such a sum.
pub(crate) fn gru_step(
    x: &GpuStorage,
    hp: &GpuStorage,
    h: &GpuStorage,
    grad: &GpuStorage,
    spec: &GruCellSpec,
) -> Result<Option<(GpuStorage, GpuStorage, GpuStorage)>> {
    let found = step(grad, Cell::Gru { x, hp, h }, spec.batch, spec.hidden)?;
    let three = found.and_then(|g| <[GpuStorage; 3]>::try_from(g).ok());
    Ok(three.map(|[dx, dhp, dh]| (dx, dhp, dh)))
}

/// The cell's gradients (in `Cell::outputs`' order) in one launch: where `sum`, the
/// gradient of the step's output, is a pending sum of `[batch, hidden]` whose one term
/// is a deferred single product that nothing else holds, and the device binds enough
/// storage buffers.
fn step(
    sum: &GpuStorage,
    cell: Cell,
    batch: usize,
    hidden: usize,
) -> Result<Option<Vec<GpuStorage>>> {
    let kernel = cell.kernel();
    let op = match cell {
        Cell::Lstm { .. } => "lstm_cell_backward",
        Cell::Gru { .. } => "gru_cell_backward",
    };
    let start = Instant::now();
    let device = &sum.device;
    let dtype = sum.dtype;
    if device.inner.limits.max_storage_buffers_per_shader_stage < storage_buffers(kernel) {
        return Ok(None);
    }
    let mut pending = sum.data.expr.lock().unwrap();
    let Some(expr) = pending.as_ref() else {
        return Ok(None);
    };
    let shape = [batch, hidden];
    let Some((p, _claim)) = product_in_sum(expr, dtype, &shape) else {
        return Ok(None);
    };
    let (product, rest) = (&expr.args[p], &expr.args[1 - p]);
    let terms = terms(rest, dtype, shape)?;
    let (state, saved, second) = match cell {
        Cell::Lstm { z, c, dc } => (c, z, read_as_view(dc, batch, hidden)?),
        Cell::Gru { x, hp, h } => (h, hp, read_as_view(x, batch, 3 * hidden)?),
    };
    let state = read_as_view(state, batch, hidden)?;
    let saved_buffer = saved.raw()?;
    let product = Product::take(product)?;
    let groups = [
        hidden.div_ceil(TILE as usize),
        batch.div_ceil(TILE as usize),
        1,
    ];
    let groups = device.checked_groups(op, groups)?;
    let u = |what, v: usize| to_u32(op, what, v);
    let view = |l: &Layout| -> Result<[u32; 4]> {
        Ok([
            u("offset", l.offset())?,
            u("stride", l.strides()[0])?,
            u("stride", l.strides()[1])?,
            0,
        ])
    };
    // With one term, binding 2 holds the first again (and the kernel reads it not).
    let term1 = &terms[terms.len() - 1];
    let (grad_c, x) = match cell {
        Cell::Lstm { .. } => (view(&second.1)?, [0; 4]),
        Cell::Gru { .. } => ([0; 4], view(&second.1)?),
    };
    let params = RecurrentGradientParams {
        hidden: u("hidden size", hidden)?,
        terms: terms.len() as u32,
        _pad0: 0,
        _pad1: 0,
        term0: view(&terms[0].1)?,
        term1: view(&term1.1)?,
        state: view(&state.1)?,
        grad_c,
        x,
    };
    let units = batch * hidden;
    let sum_out = device.alloc_output(op, units, dtype)?;
    let mut outs = Vec::with_capacity(outputs(kernel).len());
    for &n in outputs(kernel) {
        outs.push(device.alloc_output(op, n * units, dtype)?);
    }
    let key = format!("{kernel:?} [{dtype:?}]");
    // The sum, then the gradients from binding 7.
    let gradients = 7..7 + outputs(kernel).len() as u32;
    let written = std::iter::once(4)
        .chain(gradients)
        .map(|b| (1, b))
        .collect();
    let pipeline = device.cached_pipeline(key, kernel, 2, written, || source(kernel, dtype))?;
    let mut resources = vec![
        terms[0].0.raw()?.as_entire_binding(),
        term1.0.raw()?.as_entire_binding(),
        state.0.raw()?.as_entire_binding(),
        sum_out.buffer().as_entire_binding(),
        saved_buffer.as_entire_binding(),
        second.0.raw()?.as_entire_binding(),
    ];
    resources.extend(outs.iter().map(|b| b.buffer().as_entire_binding()));
    let size = dtype.size_in_bytes() as u64;
    // One term bound twice is the same span, counted once.
    let spans = vec![
        (1, ByteSpan::of_layout(&terms[0].1, size)),
        (2, ByteSpan::of_layout(&term1.1, size)),
        (3, ByteSpan::of_layout(&state.1, size)),
        (6, ByteSpan::of_layout(&second.1, size)),
    ];
    let cell_group = Bindings::numbered(bytemuck::bytes_of(&params), &resources, 1).spanning(spans);
    let name = || format!("{} [{dtype:?}]", kernel.label());
    device.launch(
        op,
        &pipeline,
        &[product.bindings()?, cell_group],
        groups,
        start,
        name,
    )?;
    sum.data.fill(sum_out)?;
    *pending = None;
    let wrap = |(b, &n): (_, &usize)| GpuStorage::new(b, dtype, n * units, device);
    Ok(Some(
        outs.into_iter().zip(outputs(kernel)).map(wrap).collect(),
    ))
}

/// The views `rest` adds to the product, of `shape` and `dtype`: its own, or where it
/// is a pending sum of two it reads in order (a GRU's output gradient and its state's
/// through the cell), theirs. A copy read in order is read where its source lies; any
/// other pending term runs.
fn terms(rest: &Arg, dtype: DType, shape: [usize; 2]) -> Result<Vec<(GpuStorage, Layout)>> {
    let pair = {
        let expr = rest.storage.data.expr.lock().unwrap();
        match expr.as_ref() {
            Some(e)
                if rest.in_order()
                    && e.op == FusedOp::Binary(BinaryOp::Add)
                    && e.dtype == dtype
                    && e.args.len() == 2
                    && (e.args.iter())
                        .all(|a| a.storage.dtype == dtype && a.layout.dims() == shape) =>
            {
                Some(e.args.clone())
            }
            _ => None,
        }
    };
    let args = pair.unwrap_or_else(|| vec![rest.clone()]);
    let mut views = Vec::with_capacity(args.len());
    for a in args {
        if a.in_order() {
            views.push(read_as_view(&a.storage, shape[0], shape[1])?);
        } else {
            a.storage.buffer()?;
            views.push((a.storage, a.layout));
        }
    }
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated_check::{bindings, struct_size};

    /// Both builds are valid WGSL whose cell params are `RecurrentGradientParams`,
    /// which write the sum and the cell's gradients (group 1) and no product (binding 3
    /// of group 0 stays declared and unused), and bind what `storage_buffers` counts.
    #[test]
    fn the_builds_validate_and_match_their_params() {
        for kernel in [
            Kernel::MatmulLstmCellBackward,
            Kernel::MatmulGruCellBackward,
        ] {
            for dtype in [DType::F32, DType::F16] {
                let text = source(kernel, dtype).unwrap();
                let label = format!("{kernel:?} {dtype:?}");
                let size = struct_size(&text, "RecurrentGradientParams", &label);
                assert_eq!(size, RecurrentGradientParams::LAYOUT.size, "{label}");
                assert!(!text.contains(FINISH), "{text}");
                let written = match kernel {
                    Kernel::MatmulLstmCellBackward => vec![3, 4, 7, 8],
                    _ => vec![3, 4, 7, 8, 9],
                };
                assert_eq!(bindings(&text, "read_write>"), written, "{label}");
                let read = bindings(&text, "var<storage, read>").len();
                let bound = read + written.len() - 1;
                assert_eq!(bound as u32, storage_buffers(kernel), "{label}");
            }
        }
        assert!(source(Kernel::Matmul, DType::F32).is_err());
    }
}
