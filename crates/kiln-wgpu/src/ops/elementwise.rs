//! Launchers for `shaders/elementwise/`: strided unary, binary, where, cast and copy.

use crate::fusion::{self, Arg, FusedOp, Window};
use crate::kernels::Kernel;
use crate::params::ElementwiseParams;
use crate::shader_constants::{VEC4_PER_INVOCATION, VEC4_WORKGROUP};
use crate::storage::GpuStorage;
use kiln_core::{BinaryOp, DType, Layout, Result, UnaryOp};

/// Runs an elementwise kernel whose output is a fresh compact tensor of `out_dtype`.
fn launch(
    op: &'static str,
    kernel: Kernel,
    dtypes: &[DType],
    params: ElementwiseParams,
    inputs: &[&GpuStorage],
    out_dtype: DType,
) -> Result<GpuStorage> {
    let device = &inputs[0].device;
    let n = params.numel as usize;
    // Nothing to compute or to poison: no launch.
    if n == 0 {
        return Ok(GpuStorage::new(
            device.alloc(op, 0, out_dtype)?,
            out_dtype,
            0,
            device,
        ));
    }
    let out = device.alloc_output(op, n, out_dtype)?;
    let mut buffers = Vec::with_capacity(inputs.len() + 1);
    for s in inputs {
        buffers.push(s.raw()?);
    }
    buffers.push(out.buffer());
    // Every input contiguous and vec4-aligned: the `main_vec4` entry.
    let per_group = (VEC4_WORKGROUP * VEC4_PER_INVOCATION * 4) as usize;
    let all_contiguous = (1u32 << inputs.len()) - 1;
    let aligned = n.is_multiple_of(4)
        && params.contiguous & all_contiguous == all_contiguous
        && params.offsets[..inputs.len()].iter().all(|o| o % 4 == 0);
    let (kernel, groups) = match (kernel, aligned) {
        (Kernel::Unary, true) => (
            Kernel::UnaryVec4,
            device.groups_for(op, n.div_ceil(per_group))?,
        ),
        (Kernel::Binary, true) => (
            Kernel::BinaryVec4,
            device.groups_for(op, n.div_ceil(per_group))?,
        ),
        _ => (kernel, device.groups_1d(op, n)?),
    };
    device.dispatch(op, kernel, dtypes, &params, &buffers, groups)?;
    Ok(GpuStorage::new(out, out_dtype, n, device))
}

/// The inputs as fusion args, and the element count, when the op should be recorded
/// rather than launched: fusion on, a float output of a dtype the adapter has, and at
/// least one element.
fn fusable(inputs: &[(&GpuStorage, &Layout)], out_dtype: DType) -> Option<(Vec<Arg>, usize)> {
    let device = &inputs[0].0.device;
    // A dtype the adapter lacks takes the kernel's path, which refuses it now rather
    // than at the sync point that would have run the pending expression.
    let floats = out_dtype.is_float() && device.supports(out_dtype);
    if !device.fusion() || !floats || inputs[0].1.elem_count() == 0 {
        return None;
    }
    let arg = |&(s, l): &(&GpuStorage, &Layout)| Arg {
        storage: s.clone(),
        layout: l.clone(),
    };
    Some((inputs.iter().map(arg).collect(), inputs[0].1.elem_count()))
}

pub(crate) fn unary(x: &GpuStorage, layout: &Layout, op: UnaryOp) -> Result<GpuStorage> {
    if let Some((args, n)) = fusable(&[(x, layout)], x.dtype) {
        return fusion::record(&x.device, FusedOp::Unary(op), args, x.dtype, n);
    }
    let mut params = ElementwiseParams::new(op.name(), op.code(), &[layout], None)?;
    [params.p0, params.p1] = op.scalars();
    launch(op.name(), Kernel::Unary, &[x.dtype], params, &[x], x.dtype)
}

pub(crate) fn binary(
    lhs: &GpuStorage,
    ll: &Layout,
    rhs: &GpuStorage,
    rl: &Layout,
    op: BinaryOp,
) -> Result<GpuStorage> {
    if let Some((args, n)) = fusable(&[(lhs, ll), (rhs, rl)], lhs.dtype) {
        return fusion::record(&lhs.device, FusedOp::Binary(op), args, lhs.dtype, n);
    }
    let params = ElementwiseParams::new(op.name(), op.code(), &[ll, rl], None)?;
    if lhs.dtype == DType::I32 {
        return launch(
            op.name(),
            Kernel::BinaryInt,
            &[],
            params,
            &[lhs, rhs],
            DType::I32,
        );
    }
    launch(
        op.name(),
        Kernel::Binary,
        &[lhs.dtype],
        params,
        &[lhs, rhs],
        lhs.dtype,
    )
}

pub(crate) fn where_cond(
    cond: &GpuStorage,
    cl: &Layout,
    t: &GpuStorage,
    tl: &Layout,
    f: &GpuStorage,
    fl: &Layout,
) -> Result<GpuStorage> {
    if let Some((args, n)) = fusable(&[(cond, cl), (t, tl), (f, fl)], t.dtype) {
        return fusion::record(&t.device, FusedOp::Where, args, t.dtype, n);
    }
    let params = ElementwiseParams::new("where", 0, &[cl, tl, fl], None)?;
    launch(
        "where",
        Kernel::Where,
        &[cond.dtype, t.dtype],
        params,
        &[cond, t, f],
        t.dtype,
    )
}

pub(crate) fn cast(x: &GpuStorage, layout: &Layout, dtype: DType) -> Result<GpuStorage> {
    // From i32 to f16 the fused kernel would round twice (through f32).
    let exact = x.dtype.is_float() || dtype == DType::F32;
    if let Some((args, n)) = fusable(&[(x, layout)], dtype).filter(|_| exact) {
        return fusion::record(&x.device, FusedOp::Cast, args, dtype, n);
    }
    let params = ElementwiseParams::new("to_dtype", 0, &[layout], None)?;
    launch(
        "to_dtype",
        Kernel::Cast,
        &[x.dtype, dtype],
        params,
        &[x],
        dtype,
    )
}

/// `x` (at `layout`) inside a compact tensor of `dims` filled with `value`, from
/// `before` in each dim: pending where the dtype fuses, so that consumers read the
/// padding without it being written.
pub(crate) fn pad(
    x: &GpuStorage,
    layout: &Layout,
    dims: &[usize],
    before: &[usize],
    value: f64,
) -> Result<GpuStorage> {
    let device = &x.device;
    let n: usize = dims.iter().product();
    let floats = matches!(x.dtype, DType::F32 | DType::F16);
    if device.fusion() && floats && n > 0 && layout.elem_count() > 0 {
        let arg = Arg {
            storage: x.clone(),
            layout: layout.clone(),
        };
        let window = Window {
            dims: dims.to_vec(),
            before: before.to_vec(),
        };
        return fusion::record_pad(device, arg, window, value as f32, x.dtype);
    }
    let mut out = super::create::full(device, n, x.dtype, value)?;
    if layout.elem_count() > 0 {
        copy_into(
            x,
            layout,
            &mut out,
            &Layout::window(dims, before, layout.dims()),
        )?;
    }
    Ok(out)
}

/// The elements of `layout` as a fresh compact tensor: pending where the dtype fuses,
/// so that the copy runs inside its consumer's or producer's kernel.
pub(crate) fn compact(x: &GpuStorage, layout: &Layout) -> Result<GpuStorage> {
    if let Some((args, n)) = fusable(&[(x, layout)], x.dtype) {
        return fusion::record(&x.device, FusedOp::Cast, args, x.dtype, n);
    }
    copy_compact(x, layout)
}

/// The elements of `layout` as a fresh compact tensor, copied now.
pub(crate) fn copy_compact(x: &GpuStorage, layout: &Layout) -> Result<GpuStorage> {
    let params = ElementwiseParams::new("contiguous", 0, &[layout], None)?;
    let mut out = launch(
        "contiguous",
        Kernel::Copy,
        &[x.dtype],
        params,
        &[x],
        x.dtype,
    )?;
    // A copy holds a subset of the values: the known bounds still hold.
    out.value_range = x.value_range;
    Ok(out)
}

pub(crate) fn copy_into(
    src: &GpuStorage,
    sl: &Layout,
    dst: &mut GpuStorage,
    dl: &Layout,
) -> Result<()> {
    let op = "copy";
    let params = ElementwiseParams::new(op, 0, &[sl], Some(dl))?;
    let device = &src.device;
    let groups = device.groups_1d(op, sl.elem_count())?;
    device.dispatch(
        op,
        Kernel::Copy,
        &[src.dtype],
        &params,
        &[src.raw()?, dst.raw()?],
        groups,
    )?;
    // dst now holds some of its old values and some of src's.
    dst.value_range = match (dst.value_range, src.value_range) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        _ => None,
    };
    Ok(())
}
