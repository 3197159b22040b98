//! Launchers for `shaders/elementwise/`: strided unary, binary, where, cast and copy.

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
    let out = device.alloc_output(op, n, out_dtype)?;
    let mut buffers: Vec<&wgpu::Buffer> = inputs.iter().map(|s| s.raw()).collect();
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

pub(crate) fn unary(x: &GpuStorage, layout: &Layout, op: UnaryOp) -> Result<GpuStorage> {
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

/// The elements of `layout` as a fresh compact tensor.
pub(crate) fn copy_compact(x: &GpuStorage, layout: &Layout) -> Result<GpuStorage> {
    let params = ElementwiseParams::new("contiguous", 0, &[layout], None)?;
    launch(
        "contiguous",
        Kernel::Copy,
        &[x.dtype],
        params,
        &[x],
        x.dtype,
    )
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
        &[src.raw(), dst.raw()],
        groups,
    )?;
    // dst now holds some of its old values and some of src's.
    dst.value_range = match (dst.value_range, src.value_range) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        _ => None,
    };
    Ok(())
}
