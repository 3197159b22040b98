//! Launchers for `shaders/reduce/`: reductions and softmax over rows, `row_lanes`
//! invocations per row (their lanes combined as the device's `row_reduction` says), or
//! on adapters that run on the CPU one invocation per row (`*_rows_serial.wgsl`) when
//! the rows are many and vec4-aligned; and reductions over a middle dim. i32 takes its
//! own exact kernel (`reduce_int.wgsl`).

use crate::kernels::Kernel;
use crate::loop_budget::{self, SOFTWARE_LOOP_BUDGET};
use crate::params::{
    to_u32, ColumnsParams, IntReduceParams, RowsParams, ShaderParams, SoftmaxParams,
};
use crate::pool::PooledBuffer;
use crate::shader_constants::{ROW_LOADS, SERIAL_WORKGROUP, WORKGROUP};
use crate::storage::GpuStorage;
use kiln_core::{DType, GatherSpec, Layout, ReduceOp, Result, Shape};

/// Rows below which the serial variant leaves too few invocations to fill the cores.
const SERIAL_MIN_ROWS: usize = 64;

/// The build of row kernel `kernel` to run over `rows` rows of `k` of `x`: its serial
/// build on adapters that run on the CPU when the rows are many and vec4-aligned (and
/// short enough for one invocation's loops: up to three passes over a row's vec4s), else
/// the lanes build the device's `row_reduction` says.
pub(crate) fn row_kernel_for(
    op: &'static str,
    x: &GpuStorage,
    kernel: Kernel,
    rows: usize,
    k: usize,
) -> Result<Kernel> {
    let serial = x.device.is_software()
        && rows >= SERIAL_MIN_ROWS
        && k > 0
        && k <= SOFTWARE_LOOP_BUDGET
        && k.is_multiple_of(4);
    match kernel.serial() {
        Some(build) if serial => Ok(build),
        _ => {
            check_row_loops(op, x, kernel, k)?;
            Ok(x.device.row_kernel(kernel))
        }
    }
}

/// On a software adapter, an error for rows of `k` too long for the loops of
/// `kernel`'s lanes build (`loop_budget`), which would end early and leave a wrong
/// result: softmax's rows from about 11M elements, say. Sums and the like cut long
/// rows into parts (`row_parts`) and never come near.
pub(crate) fn check_row_loops(
    op: &'static str,
    x: &GpuStorage,
    kernel: Kernel,
    k: usize,
) -> Result<()> {
    // Counting reads the kernel's source: not on every launch of a hardware GPU.
    if !x.device.is_software() {
        return Ok(());
    }
    let iterations = kernel.row_loop_iterations(k, row_lanes(k) as usize);
    loop_budget::check(op, &x.device, iterations, || {
        format!("rows of {k} elements")
    })
}

/// Invocations per row of the workgroup row kernels for rows of `k` elements: the
/// largest power of two, up to the workgroup, that leaves each at least `ROW_LOADS`
/// elements to keep in flight. Each then has fewer than `2 * ROW_LOADS` up to rows of
/// `8 * WORKGROUP`, which the kernels that read a row more than once hold in two
/// stretches (`row_held` in shader_constants.rs) and read once.
/// Short rows share a workgroup: attention's softmax over 64 keys left three quarters
/// of a 256-invocation workgroup idle. It follows from the shape alone, so results do
/// not vary by adapter.
pub(crate) fn row_lanes(k: usize) -> u32 {
    let wanted = k.div_ceil(ROW_LOADS as usize).max(1);
    (1u32 << wanted.ilog2()).min(WORKGROUP)
}

/// Workgroups a row kernel takes for `rows` rows, `lanes` invocations per row (the
/// serial kernels give each row one).
pub(crate) fn row_groups(kernel: Kernel, rows: usize, lanes: u32) -> usize {
    let rows_per_group = match kernel.is_serial() {
        true => SERIAL_WORKGROUP,
        false => WORKGROUP / lanes,
    };
    rows.div_ceil(rows_per_group as usize)
}

/// Runs a row kernel on `inputs[0]` in `row_groups` workgroups, writing `out_len`
/// elements. A kernel with a store section defers (`deferred`), to take its consumer
/// as an epilogue.
pub(crate) fn rows_kernel<P: ShaderParams + Send + 'static>(
    op: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    params: &P,
    row_groups: usize,
    out_len: usize,
    out_dtype: DType,
) -> Result<GpuStorage> {
    let x = inputs[0];
    let device = &x.device;
    let groups = device.groups_for(op, row_groups)?;
    if device.defers(kernel) {
        let dtypes = [x.dtype];
        return device.defer(
            op, kernel, &dtypes, *params, inputs, groups, out_len, out_dtype,
        );
    }
    let out = device.alloc_output(op, out_len, out_dtype)?;
    let mut rest = inputs[1..]
        .iter()
        .map(|s| s.raw())
        .collect::<Result<Vec<_>>>()?;
    rest.push(out.buffer());
    device.dispatch_with_inputs(op, kernel, &[x.dtype], params, &[x], &rest, groups)?;
    Ok(GpuStorage::new(out, out_dtype, out_len, device))
}

pub(crate) fn reduce(x: &GpuStorage, op: ReduceOp, rows: usize, k: usize) -> Result<GpuStorage> {
    if x.dtype == DType::I32 {
        return int_reduce(x, op, rows, k, 1);
    }
    let name = op.name();
    let (parts, part_len) = row_parts(rows, k);
    // The parts' results in f32 whatever the input (an f16 input's cast runs in the
    // first pass's loads): f16 partial sums could overflow where the whole does not.
    if parts > 1 && x.dtype == DType::F16 && !op.returns_index() {
        let compact = |n: usize| Layout::contiguous(Shape::new([n]));
        let wide = super::elementwise::cast(x, &compact(rows * k), DType::F32)?;
        let out = reduce(&wide, op, rows, k)?;
        return super::elementwise::cast(&out, &compact(rows), DType::F16);
    }
    let (kernel, out_dtype) = match op.returns_index() {
        true => (Kernel::ArgReduce, DType::I32),
        false => (Kernel::Reduce, x.dtype),
    };
    // Whole rows may take the serial build; parts take the lanes build.
    let kernel = match parts {
        1 => row_kernel_for(name, x, kernel, rows, k)?,
        _ => {
            check_row_loops(name, x, kernel, part_len)?;
            x.device.row_kernel(kernel)
        }
    };
    let lanes = row_lanes(part_len);
    let params = RowsParams {
        rows: to_u32(name, "rows", rows)?,
        k: to_u32(name, "row length", k)?,
        op: op.code(),
        lanes,
        parts: to_u32(name, "row parts", parts)?,
        part_len: to_u32(name, "row part length", part_len)?,
        _pad0: 0,
        _pad1: 0,
    };
    let groups = row_groups(kernel, rows * parts, lanes);
    let out = rows_kernel(name, kernel, &[x], &params, groups, rows * parts, out_dtype)?;
    match (parts, op.returns_index()) {
        (1, _) => Ok(out),
        (_, true) => best_of_parts(x, op, &out, rows, k, parts),
        (_, false) => reduce(&out, op.of_runs(), rows, parts),
    }
}

/// The index in each row of `x` (`[rows, k]`) of the best of its parts' best, whose
/// indices are `best` (`[rows, parts]`): their values gathered, the best of those
/// found (the first of equals, so the first in the row), and its index gathered.
fn best_of_parts(
    x: &GpuStorage,
    op: ReduceOp,
    best: &GpuStorage,
    rows: usize,
    k: usize,
    parts: usize,
) -> Result<GpuStorage> {
    let spec = |in_dim, out_dim| GatherSpec {
        outer: rows,
        in_dim,
        out_dim,
        inner: 1,
        index_strides: [out_dim, 1, 0],
    };
    let values = super::index::gather(x, best, &spec(k, parts))?;
    let part = reduce(&values, op, rows, parts)?;
    super::index::gather(best, &part, &spec(parts, 1))
}

/// Workgroups a reduction over few long rows aims for: one workgroup per row left a
/// sum over a whole tensor on one of a GPU's cores.
const ROW_PART_GROUPS: usize = 1024;

/// Elements a part of a row holds at least: sixteen loads for each of a workgroup's
/// lanes.
const MIN_ROW_PART: usize = 16 * ROW_LOADS as usize * WORKGROUP as usize;

/// Rows shorter than this stay whole: one workgroup reads them in a few microseconds,
/// about what the second pass's launch costs (a convolution's bias gradient, a few
/// channels over 37K elements, would otherwise take two launches).
const MIN_SPLIT_ROW: usize = 8 * MIN_ROW_PART;

/// How `reduce.wgsl` (and batch norm's channel kernels) cut rows of `k` into parts,
/// and their length: enough parts for `ROW_PART_GROUPS` workgroups in all, none
/// shorter than `MIN_ROW_PART`. It follows from the shape alone, so results do not
/// vary by adapter. With u32 sizes a part is then at most 4M elements, well within a
/// software adapter's loops.
pub(crate) fn row_parts(rows: usize, k: usize) -> (usize, usize) {
    let parts = (k / MIN_ROW_PART).min(ROW_PART_GROUPS.div_ceil(rows.max(1)));
    if parts <= 1 || k < MIN_SPLIT_ROW {
        return (1, k);
    }
    let part_len = k.div_ceil(parts);
    (k.div_ceil(part_len), part_len)
}

/// Invocations a column reduction aims for: below it, each output gets several lanes.
const COLUMN_INVOCATIONS: usize = 1 << 16;
/// Rows each lane reduces at least.
const MIN_SEGMENT: usize = 32;
/// Neighbouring columns a workgroup reads of each row at least: 32 bytes of f32, a
/// whole DRAM sector, so that the loads stay coalesced however many lanes there are.
const MIN_COLUMNS: usize = 8;

/// `reduce_columns.wgsl`: [outer, k, inner] to [outer, inner] in one dispatch, deferred
/// to take its consumer as an epilogue; on a software adapter, a k too long for its
/// lanes' loops is cut into runs reduced first (`loop_budget`).
pub(crate) fn reduce_middle(
    x: &GpuStorage,
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
) -> Result<GpuStorage> {
    if x.dtype == DType::I32 {
        return int_reduce(x, op, outer, k, inner);
    }
    let name = op.name();
    let n = outer * inner;
    let device = &x.device;
    let kernel = Kernel::ReduceColumns;
    let (params, groups) = columns_launch(x, op, outer, k, inner)?;
    if params.splits > 1 {
        let runs = reduce_runs(x, params, groups)?;
        return reduce_middle(&runs, op.of_runs(), outer, params.splits as usize, inner);
    }
    if device.defers(kernel) {
        return device.defer(name, kernel, &[x.dtype], params, &[x], groups, n, x.dtype);
    }
    let out = device.alloc_output(name, n, x.dtype)?;
    device.dispatch_with_inputs(
        name,
        kernel,
        &[x.dtype],
        &params,
        &[x],
        &[out.buffer()],
        groups,
    )?;
    Ok(GpuStorage::new(out, x.dtype, n, device))
}

/// Elements (or partials) of k one invocation of `reduce_int.wgsl` reduces: under a
/// software adapter's loop limit, with the mean's division.
const INT_PART: usize = 4096;

/// An i32 reduction over the middle dim of compact `[outer, k, inner]`, exact as the
/// CPU's (`reduce_int.wgsl`): in launches of `INT_PART` elements an invocation, the
/// first writing partial accumulators (two words each) while k has more than one part.
fn int_reduce(
    x: &GpuStorage,
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
) -> Result<GpuStorage> {
    let name = op.name();
    let device = &x.device;
    let mut partials: Option<PooledBuffer> = None;
    let mut len = k;
    loop {
        let parts = len.div_ceil(INT_PART).max(1);
        let outputs = outer * parts * inner;
        let last = parts == 1;
        let out = match last {
            true => device.alloc_output(name, outputs, DType::I32)?,
            false => device.alloc(name, 2 * outputs, DType::I32)?,
        };
        let params = IntReduceParams {
            outer: to_u32(name, "outer size", outer)?,
            k: to_u32(name, "reduced size", len)?,
            inner: to_u32(name, "inner size", inner)?,
            op: op.code(),
            part_len: INT_PART as u32,
            partial_in: u32::from(partials.is_some()),
            partial_out: u32::from(!last),
            count: to_u32(name, "reduced size", k)?,
        };
        let input = match &partials {
            Some(p) => p.buffer(),
            None => x.raw()?,
        };
        let groups = device.groups_1d(name, outputs)?;
        device.dispatch(
            name,
            Kernel::ReduceInt,
            &[],
            &params,
            &[input, out.buffer()],
            groups,
        )?;
        if last {
            return Ok(GpuStorage::new(out, DType::I32, outer * inner, device));
        }
        partials = Some(out);
        len = parts;
    }
}

/// `reduce_middle` into `out`, recorded now.
pub(crate) fn reduce_middle_into(
    x: &GpuStorage,
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
    out: &PooledBuffer,
) -> Result<()> {
    let (params, groups) = columns_launch(x, op, outer, k, inner)?;
    if params.splits > 1 {
        let runs = reduce_runs(x, params, groups)?;
        let splits = params.splits as usize;
        return reduce_middle_into(&runs, op.of_runs(), outer, splits, inner, out);
    }
    x.device.dispatch_with_inputs(
        op.name(),
        Kernel::ReduceColumns,
        &[x.dtype],
        &params,
        &[x],
        &[out.buffer()],
        groups,
    )
}

/// The first pass of a reduction cut into runs: `[outer, splits, inner]`, recorded now.
fn reduce_runs(x: &GpuStorage, params: ColumnsParams, groups: [u32; 3]) -> Result<GpuStorage> {
    let name = "reduce runs";
    let len = (params.outer * params.splits * params.inner) as usize;
    let out = x.device.alloc_output(name, len, x.dtype)?;
    let kernel = Kernel::ReduceColumns;
    let (dtypes, bound) = ([x.dtype], [out.buffer()]);
    x.device
        .dispatch_with_inputs(name, kernel, &dtypes, &params, &[x], &bound, groups)?;
    Ok(GpuStorage::new(out, x.dtype, len, &x.device))
}

/// The op that combines a reduction's runs: a mean's runs are already divided by the
/// whole length, so they add up.
trait OfRuns {
    fn of_runs(self) -> ReduceOp;
}

impl OfRuns for ReduceOp {
    fn of_runs(self) -> ReduceOp {
        match self {
            ReduceOp::Mean => ReduceOp::Sum,
            op => op,
        }
    }
}

/// The params and workgroups of `reduce_columns.wgsl` for [outer, k, inner].
fn columns_launch(
    x: &GpuStorage,
    op: ReduceOp,
    outer: usize,
    k: usize,
    inner: usize,
) -> Result<(ColumnsParams, [u32; 3])> {
    let name = op.name();
    let n = outer * inner;
    // Lanes per output: a power of two dividing the workgroup. It depends on the shape
    // alone, so results do not vary by adapter.
    let wanted = COLUMN_INVOCATIONS
        .div_ceil(n.max(1))
        .min(k.div_ceil(MIN_SEGMENT))
        .clamp(1, WORKGROUP as usize / MIN_COLUMNS);
    let lanes = 1usize << wanted.ilog2();
    // On a software adapter, runs short enough for each lane's loop.
    let splits = match x.device.is_software() {
        true => k.div_ceil(lanes * SOFTWARE_LOOP_BUDGET).max(1),
        false => 1,
    };
    let split_len = k.div_ceil(splits);
    let params = ColumnsParams {
        outer: to_u32(name, "rows", outer)?,
        k: to_u32(name, "reduced size", k)?,
        inner: to_u32(name, "columns", inner)?,
        op: op.code(),
        lanes: lanes as u32,
        segment: to_u32(name, "segment", split_len.div_ceil(lanes))?,
        splits: to_u32(name, "runs", splits)?,
        split_len: to_u32(name, "run length", split_len)?,
    };
    let groups = x.device.groups_for(name, column_workgroups(&params))?;
    Ok((params, groups))
}

/// Workgroups `reduce_columns.wgsl` takes for `params`: each lane group one output
/// (of a run, where k is cut into runs).
pub(crate) fn column_workgroups(params: &ColumnsParams) -> usize {
    let columns_per_group = (WORKGROUP / params.lanes.max(1)) as usize;
    let outputs = params.outer as usize * params.splits as usize * params.inner as usize;
    outputs.div_ceil(columns_per_group)
}

pub(crate) fn softmax(x: &GpuStorage, rows: usize, k: usize, log: bool) -> Result<GpuStorage> {
    let name = if log { "log_softmax" } else { "softmax" };
    softmax_launch(name, Kernel::Softmax, &[x], rows, k, log)
}

/// The gradient of `softmax` (or `log_softmax`) over compact `[rows, k]`, from the
/// forward's output `y` and its gradient `grad`: one launch, where the composed formula
/// took two (the row sum of `grad * y`, then the rest) and wrote the products between.
pub(crate) fn softmax_backward(
    y: &GpuStorage,
    grad: &GpuStorage,
    rows: usize,
    k: usize,
    log: bool,
) -> Result<GpuStorage> {
    let name = if log {
        "log_softmax backward"
    } else {
        "softmax backward"
    };
    softmax_launch(name, Kernel::SoftmaxBackward, &[y, grad], rows, k, log)
}

/// A launch of softmax's row kernel `kernel`, forward or backward, over `inputs`
/// (compact `[rows, k]` each), whose first gives the output's dtype.
fn softmax_launch(
    name: &'static str,
    kernel: Kernel,
    inputs: &[&GpuStorage],
    rows: usize,
    k: usize,
    log: bool,
) -> Result<GpuStorage> {
    let x = inputs[0];
    let lanes = row_lanes(k);
    let params = SoftmaxParams {
        rows: to_u32(name, "rows", rows)?,
        k: to_u32(name, "row length", k)?,
        log: log as u32,
        lanes,
    };
    let kernel = row_kernel_for(name, x, kernel, rows, k)?;
    let groups = row_groups(kernel, rows, lanes);
    rows_kernel(name, kernel, inputs, &params, groups, rows * k, x.dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Few long rows are cut into parts that cover them; short or many rows stay whole.
    #[test]
    fn row_parts_cover_long_rows_and_leave_the_rest() {
        for (rows, k) in [
            (1, 70_000_000),
            (3, 1_000_003),
            (1, 131_072),
            (600, 5_000_000),
        ] {
            let (parts, len) = row_parts(rows, k);
            assert!(parts > 1, "{rows}x{k}");
            assert!(len >= MIN_ROW_PART && (parts - 1) * len < k && parts * len >= k);
            assert!(
                rows * parts <= 2 * ROW_PART_GROUPS,
                "{rows}x{k}: {parts} parts"
            );
        }
        // A convolution's bias gradient (6 channels over 64 images of 24x24), a sum
        // of rows too short to be worth a second launch, and many rows.
        for (rows, k) in [(6, 36_864), (1, 131_071), (4096, 1_000_000)] {
            assert_eq!(row_parts(rows, k), (1, k), "{rows}x{k}");
        }
    }
}
