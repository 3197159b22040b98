//! An LSTM step in one launch. A step's gates are `x_t + h @ w_hh^T`: with fusion on,
//! the product is a deferred launch and the sum a pending expression that runs as its
//! epilogue, and the cell kernel then reads the gates back. Where `lstm_cell` finds its
//! gates pending in that form, the product runs in `MatmulLstmCell` instead: the tiled
//! matmul reading `w_hh^T`'s columns in the gates' order (`MatmulRhs::GateColumns`), so
//! that each thread holds one unit's four gates for each of its rows, and computing the
//! cell there. One launch a step where there were two; the gates are written once (the
//! backward pass reads them) and not read back.

use crate::byte_span::ByteSpan;
use crate::fusion::{Arg, FusedOp};
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::{to_u32, LstmStepParams, MatmulParams};
use crate::shader_constants::TILE;
use crate::storage::GpuStorage;
use kiln_core::{BinaryOp, DType, Error, GpuErrorKind, Layout, LstmCellSpec, Result};
use std::sync::Arc;
use std::time::Instant;

/// The section of `matmul.wgsl` that stores the product, which this build replaces.
const FINISH: &str = "// kiln:finish";
const FINISH_END: &str = "// kiln:finish end";

/// The cell, where the tiled kernel stores its outputs: `acc[i]` holds the gates of
/// unit `col0 / 4 + local.x` (`rhs_at`'s order) for the thread's row `i`. The sum and
/// the gates are rounded as the unfused step stores the product, then the sum.
const CELL_FINISH: &str = "\
    // The LSTM build's finish (ops/lstm_step.rs).
    let hidden = cell.hidden;
    let unit = col0 / 4u + local.x;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + local.y + SIDE * i;
        if (row >= params.m || unit >= hidden) { continue; }
        let x = cell.x_offset + row * cell.x_row + unit * cell.x_col;
        let gate = hidden * cell.x_col;
        let xs = vec4<f32>(f32(cell_x[x]), f32(cell_x[x + gate]), f32(cell_x[x + 2u * gate]), f32(cell_x[x + 3u * gate]));
        let z = vec4<T>(xs + vec4<f32>(vec4<T>(acc[i])));
        let at = row * 4u * hidden + unit;
        cell_z[at] = z.x;
        cell_z[at + hidden] = z.y;
        cell_z[at + 2u * hidden] = z.z;
        cell_z[at + 3u * hidden] = z.w;
        let c = f32(cell_c[cell.c_offset + row * cell.c_row + unit * cell.c_col]);
        let hc = lstm_update(vec4<f32>(z), c);
        cell_hc[row * 2u * hidden + unit] = T(hc.x);
        cell_hc[row * 2u * hidden + hidden + unit] = T(hc.y);
    }
";

/// `matmul.wgsl`'s LSTM build for `dtype`, its finish computing the cell.
pub(crate) fn source(dtype: DType) -> Result<String> {
    let kernel = Kernel::MatmulLstmCell;
    let text = kernel.specialise(&[dtype])?;
    kernel.splice(&text, FINISH, Some(FINISH_END), CELL_FINISH)
}

/// `[h | c']` of `lstm_cell(z, c)` in one launch with the product behind `z`: where `z`
/// is a pending sum of a view of its shape (the step of the input projection) and a
/// deferred single matmul of `[batch, k] x [k, 4 * hidden]` that nothing else holds
/// (whose own output no one can then ask for). `None` otherwise, for the cell kernel.
pub(crate) fn lstm_step(
    z: &GpuStorage,
    c: &GpuStorage,
    spec: &LstmCellSpec,
) -> Result<Option<GpuStorage>> {
    let op = "lstm_cell";
    let start = Instant::now();
    let device = &z.device;
    let (batch, hidden) = (spec.batch, spec.hidden);
    let dtype = z.dtype;
    let mut pending = z.data.expr.lock().unwrap();
    let Some(expr) = pending.as_ref() else {
        return Ok(None);
    };
    let gates = [batch, 4 * hidden];
    let is_sum = expr.op == FusedOp::Binary(BinaryOp::Add)
        && expr.dtype == dtype
        && expr.args.len() == 2
        && expr.args.iter().all(|a| a.layout.dims() == gates);
    let Some(p) = expr.args.iter().position(|a| product(a, &gates).is_some()) else {
        return Ok(None);
    };
    let (held, x) = (&expr.args[p], &expr.args[1 - p]);
    if !is_sum || Arc::strong_count(&held.storage.data) != 1 || x.storage.dtype != dtype {
        return Ok(None);
    }
    let (c_storage, c_layout) = cell_state(c, batch, hidden)?;
    let x_buffer = x.storage.raw()?;
    let launch = held.storage.data.deferred.lock().unwrap().take();
    let launch = launch.ok_or_else(|| internal("the step's product has run"))?;
    let mut params: MatmulParams = bytemuck::pod_read_unaligned(launch.params());
    for input in launch.inputs() {
        input.buffer()?;
    }
    let (lhs, rhs) = (&launch.inputs()[0], &launch.inputs()[1]);
    // A workgroup takes a quarter tile of units, all four gates of each.
    let units_per_group = TILE as usize / 4;
    let groups = [
        hidden.div_ceil(units_per_group),
        batch.div_ceil(TILE as usize),
        1,
    ];
    let max = device.max_workgroups_per_dim() as usize;
    if let Some(&g) = groups.iter().find(|&&g| g > max) {
        return Err(Error::LimitExceeded {
            op,
            what: "workgroups along one dimension",
            needed: g as u64,
            limit: max as u64,
        });
    }
    // The kernel's columns are the gates in this order, a whole tile a workgroup.
    params.n = to_u32(op, "columns", groups[0] * TILE as usize)?;
    let u = |what, v: usize| to_u32(op, what, v);
    let cell = LstmStepParams {
        hidden: u("hidden size", hidden)?,
        x_offset: u("offset", x.layout.offset())?,
        x_row: u("stride", x.layout.strides()[0])?,
        x_col: u("stride", x.layout.strides()[1])?,
        c_offset: u("offset", c_layout.offset())?,
        c_row: u("stride", c_layout.strides()[0])?,
        c_col: u("stride", c_layout.strides()[1])?,
        _pad0: 0,
    };
    let z_out = device.alloc_output(op, batch * 4 * hidden, dtype)?;
    let hc = device.alloc_output(op, batch * 2 * hidden, dtype)?;
    let kernel = Kernel::MatmulLstmCell;
    let key = format!("{kernel:?} [{dtype:?}]");
    let written = vec![(1, 3), (1, 4)];
    let pipeline = device.cached_pipeline(key, kernel, 2, written, || source(dtype))?;
    let operands = [
        lhs.raw()?.as_entire_binding(),
        rhs.raw()?.as_entire_binding(),
    ];
    let product_group = Bindings::numbered(bytemuck::bytes_of(&params), &operands, 1);
    let cell_bindings = [
        x_buffer.as_entire_binding(),
        c_storage.raw()?.as_entire_binding(),
        z_out.buffer().as_entire_binding(),
        hc.buffer().as_entire_binding(),
    ];
    let size = dtype.size_in_bytes() as u64;
    let spans = vec![
        (1, ByteSpan::of_layout(&x.layout, size)),
        (2, ByteSpan::of_layout(&c_layout, size)),
    ];
    let cell_group =
        Bindings::numbered(bytemuck::bytes_of(&cell), &cell_bindings, 1).spanning(spans);
    let name = || format!("{} [{dtype:?}]", kernel.label());
    let bind = [product_group, cell_group];
    device.launch(op, &pipeline, &bind, groups.map(|g| g as u32), start, name)?;
    // The gates are the pending sum's value; the product's own output stays unwritten
    // (nothing held it but the sum).
    z.data.fill(z_out)?;
    *pending = None;
    Ok(Some(GpuStorage::new(hc, dtype, batch * 2 * hidden, device)))
}

/// The params of the deferred launch behind `arg`, where it is a single product of
/// `gates`' shape read in order, by a tiled or blocked kernel through strides.
fn product(arg: &Arg, gates: &[usize; 2]) -> Option<MatmulParams> {
    if !arg.in_order() {
        return None;
    }
    let slot = arg.storage.data.deferred.lock().unwrap();
    let launch = slot.as_ref()?;
    let strided = matches!(
        launch.kernel(),
        Kernel::Matmul | Kernel::MatmulSmallTiled | Kernel::MatmulBlocked
    );
    let params: MatmulParams = bytemuck::pod_read_unaligned(launch.params());
    let shape = [params.m as usize, params.n as usize];
    let single = params.batch1 == 1 && launch.len() == gates[0] * gates[1];
    (strided && single && shape == *gates && launch.dtype() == arg.storage.dtype).then_some(params)
}

/// Where the cell state's elements lie. A pending copy of a view (the last step's `c'`,
/// half of its `[h | c']`) is read through the view, and never runs; anything else
/// from its buffer.
fn cell_state(c: &GpuStorage, batch: usize, hidden: usize) -> Result<(GpuStorage, Layout)> {
    let copied = c.data.expr.lock().unwrap().as_ref().and_then(|e| {
        let copy = e.op == FusedOp::Cast && e.args.len() == 1 && e.args[0].storage.dtype == e.dtype;
        copy.then(|| e.args[0].clone())
    });
    match copied {
        Some(view) if view.layout.dims() == [batch, hidden] => {
            view.storage.buffer()?;
            Ok((view.storage, view.layout))
        }
        _ => {
            c.buffer()?;
            Ok((c.clone(), Layout::contiguous([batch, hidden])))
        }
    }
}

fn internal(message: &str) -> Error {
    Error::Gpu {
        op: "lstm_cell",
        kind: GpuErrorKind::Internal,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated_check::{bindings, struct_size};
    use crate::params::ShaderParams;

    /// The build is valid WGSL whose cell params are `LstmStepParams` and which writes
    /// the gates and `[h | c']` (group 1, bindings 3 and 4; the product's own output,
    /// binding 3 of group 0, stays declared and unused).
    #[test]
    fn the_build_validates_and_matches_its_params() {
        for dtype in [DType::F32, DType::F16] {
            let text = source(dtype).unwrap();
            let size = struct_size(&text, "LstmStepParams", &format!("{dtype:?}"));
            assert_eq!(size, LstmStepParams::LAYOUT.size);
            assert!(!text.contains(FINISH), "{text}");
            assert!(text.contains("lstm_update(vec4<f32>(z), c)"));
            assert_eq!(bindings(&text, "read_write>"), [3, 4, 3], "{dtype:?}");
        }
    }
}
