//! Matmul launchers, one per kernel variant; `MatmulVariant` says which an adapter uses.
//! - `Tiled` (`shaders/matmul/matmul.wgsl`): 64x64 output tiles staged in workgroup
//!   memory, batches along z. Reads any strides; hardware GPUs run it on small products.
//!   `SmallTiled` is the same kernel built with 32x32 tiles.
//! - `SplitK`: k cut into chunks (`split_k_chunks`), the tiled kernel over the chunks as
//!   a batch, then `reduce_columns.wgsl` sums them.
//! - `Blocked` (`shaders/matmul/blocked*.wgsl`): 128x128 output tiles, 8x8 outputs per
//!   thread in registers, double-buffered k slices; `blocked_vec4.wgsl` when the shape
//!   and strides are aligned (`is_aligned`), `blocked.wgsl` for any strides otherwise.
//! - `BySize`: `Tiled` for small products, `Blocked` for large ones (`BLOCKED_FROM`).
//! - `UniformLhs` (`shaders/matmul/matmul_uniform_lhs.wgsl`): lhs packed into 64 KiB
//!   blocks read through a uniform buffer, one dispatch per block. On lavapipe it runs
//!   about 9x faster than `Tiled` (docs/BENCHMARKS.md).

use super::reduce::{reduce_middle, reduce_middle_into};
use crate::autotune;
use crate::kernels::Kernel;
use crate::loop_budget::SOFTWARE_LOOP_BUDGET;
use crate::matmul_variant::{MatmulVariant, BLOCKED_FROM, BLOCK_BYTES};
use crate::params::{to_u32, MatmulParams, PackParams, UniformLhsParams};
use crate::pool::PooledBuffer;
use crate::shader_constants;
use crate::storage::GpuStorage;
use kiln_core::{DType, Error, MatmulOperand, MatmulSpec, ReduceOp, Result};
use std::num::NonZeroU64;

const BLOCKED_TILE: usize = shader_constants::BLOCKED_TILE as usize;
const BLOCKED_SLICE: usize = shader_constants::BLOCKED_SLICE as usize;
/// Rows of lhs per uniform block (the kernel's accumulators), and f32s per block.
const BLOCK_ROWS: usize = shader_constants::BLOCK_ROWS as usize;
const BLOCK_ELEMS: usize = shader_constants::BLOCK_VEC4S as usize * 4;
/// How much rhs one dispatch may sweep when batches share an lhs block (about an L2).
const RHS_SWEEP_BYTES: usize = 1 << 20;

pub(crate) fn strides(op: &'static str, o: &MatmulOperand) -> Result<[u32; 4]> {
    Ok([
        to_u32(op, "stride", o.batch[0])?,
        to_u32(op, "stride", o.batch[1])?,
        to_u32(op, "stride", o.row_stride)?,
        to_u32(op, "stride", o.col_stride)?,
    ])
}

pub(crate) fn matmul(lhs: &GpuStorage, rhs: &GpuStorage, spec: &MatmulSpec) -> Result<GpuStorage> {
    let op = "matmul";
    let device = &lhs.device;
    let batches = spec.batch[0] * spec.batch[1];
    let len = batches * spec.m * spec.n;
    if len == 0 {
        let out = device.alloc_output(op, len, lhs.dtype)?;
        return Ok(GpuStorage::new(out, lhs.dtype, len, device));
    }
    let variant = choose(lhs, rhs, spec)?;
    if let Some(kernel) = epilogue_kernel(variant, spec).filter(|&k| device.defers(k)) {
        let (params, groups) = tile_launch(lhs, spec, tile_of(kernel))?;
        let dtypes = [lhs.dtype];
        return device.defer(
            op,
            kernel,
            &dtypes,
            params,
            &[lhs, rhs],
            groups,
            len,
            lhs.dtype,
        );
    }
    if let (MatmulVariant::SplitK, Some(chunks)) = (variant, split_k_chunks(spec, lhs.dtype)) {
        let partials = split_k_partials(lhs, rhs, spec, chunks)?;
        return reduce_middle(&partials, ReduceOp::Sum, 1, chunks, len);
    }
    let out = device.alloc_output(op, len, lhs.dtype)?;
    run(variant, lhs, rhs, spec, &out)?;
    Ok(GpuStorage::new(out, lhs.dtype, len, device))
}

/// Workgroups split-k aims for: about two per SM of a 132-SM card. The count follows
/// from the shape alone, so a product's bits do not vary by adapter.
pub(crate) const SPLIT_K_WORKGROUPS: usize = 256;
/// Terms each chunk of k keeps at least: fewer and the partial sums' traffic outweighs
/// the product.
pub(crate) const MIN_CHUNK: usize = 256;

/// How many equal chunks `SplitK` cuts k into, or `None` where it runs `Tiled`: batched
/// or non-f32 products (f16 partial sums would round twice), and products whose 64x64
/// tiles already fill `SPLIT_K_WORKGROUPS` or whose k does not split into chunks of
/// `MIN_CHUNK` or more.
pub(crate) fn split_k_chunks(spec: &MatmulSpec, dtype: DType) -> Option<usize> {
    if dtype != DType::F32 || spec.batch[0] * spec.batch[1] != 1 {
        return None;
    }
    let tile = tile_of(Kernel::Matmul);
    let tiles = spec.m.div_ceil(tile) * spec.n.div_ceil(tile);
    let mut chunks = SPLIT_K_WORKGROUPS.div_ceil(tiles).min(spec.k / MIN_CHUNK);
    while chunks > 1 && !spec.k.is_multiple_of(chunks) {
        chunks -= 1;
    }
    (chunks > 1).then_some(chunks)
}

/// The product of each chunk of k into its own [m, n] slice, by the tiled kernel run
/// over the chunks as a batch whose operands step one chunk along k.
fn split_k_partials(
    lhs: &GpuStorage,
    rhs: &GpuStorage,
    spec: &MatmulSpec,
    chunks: usize,
) -> Result<GpuStorage> {
    let chunk = spec.k / chunks;
    let mut part = *spec;
    part.batch = [1, chunks];
    part.k = chunk;
    part.lhs.batch = [0, chunk * spec.lhs.col_stride];
    part.rhs.batch = [0, chunk * spec.rhs.row_stride];
    let len = chunks * spec.m * spec.n;
    let device = &lhs.device;
    let partials = device.alloc_output("matmul", len, DType::F32)?;
    tiles(lhs, rhs, &part, &partials, Kernel::Matmul)?;
    Ok(GpuStorage::new(partials, DType::F32, len, device))
}

/// The kernel of `variant` for `spec` when it is one of `tiles`' (the tiled kernel, and
/// the blocked one for unaligned shapes), which defer and take epilogues.
fn epilogue_kernel(variant: MatmulVariant, spec: &MatmulSpec) -> Option<Kernel> {
    match variant {
        MatmulVariant::Tiled => Some(Kernel::Matmul),
        MatmulVariant::SmallTiled => Some(Kernel::MatmulSmallTiled),
        MatmulVariant::Blocked if !is_aligned(spec) => Some(Kernel::MatmulBlocked),
        _ => None,
    }
}

pub(crate) fn tile_of(kernel: Kernel) -> usize {
    match kernel {
        Kernel::Matmul
        | Kernel::MatmulSmallTiled
        | Kernel::Conv2dImplicit
        | Kernel::Conv2dImplicitSmallTiled
        | Kernel::ConvWeightGradImplicit
        | Kernel::ConvWeightGradImplicitSmallTiled => kernel.build().tile as usize,
        _ => BLOCKED_TILE,
    }
}

/// The kernel to run: the device's variant, with `BySize` resolved by the output's
/// size and `Autotune` by the tuner's decision for the shape class (timing the
/// candidates on these operands, into a scratch output, when the class is new).
fn choose(lhs: &GpuStorage, rhs: &GpuStorage, spec: &MatmulSpec) -> Result<MatmulVariant> {
    let device = &lhs.device;
    if device.is_software() && spec.k > SOFTWARE_LOOP_BUDGET {
        return long_k_on_software(spec, lhs.dtype);
    }
    let variant = match device.matmul_variant() {
        MatmulVariant::Autotune if !autotune::worth_tuning(spec) => device.fixed_matmul_variant(),
        MatmulVariant::Autotune => {
            let class = autotune::shape_class(spec, lhs.dtype, is_aligned(spec));
            autotune::decide(device, class, || {
                let mut candidates = device.matmul_candidates();
                // Where split-k would run the tiled kernel, timing it twice is waste.
                let splits = split_k_chunks(spec, lhs.dtype).is_some();
                candidates.retain(|&v| v != MatmulVariant::SplitK || splits);
                let len = spec.batch[0] * spec.batch[1] * spec.m * spec.n;
                let out = device.alloc("matmul", len, lhs.dtype)?;
                autotune::fastest(&candidates, |v| {
                    autotune::seconds(device, || run(v, lhs, rhs, spec, &out))
                })
            })?
        }
        v => v,
    };
    let outputs = spec.batch[0] * spec.batch[1] * spec.m * spec.n;
    Ok(match variant {
        MatmulVariant::BySize if outputs >= BLOCKED_FROM => MatmulVariant::Blocked,
        MatmulVariant::BySize => MatmulVariant::Tiled,
        MatmulVariant::SplitK if split_k_chunks(spec, lhs.dtype).is_none() => MatmulVariant::Tiled,
        v => v,
    })
}

/// The kernel for a product whose k runs past what one invocation's loops may on a
/// software adapter (`loop_budget`): the tiled and blocked kernels walk k in one loop
/// and came out short (58,255 of 70,000 terms), where uniform-lhs steps through k in
/// blocks of 512, a dispatch each. It reads f32 only: other dtypes are refused, not
/// summed short.
fn long_k_on_software(spec: &MatmulSpec, dtype: DType) -> Result<MatmulVariant> {
    match dtype {
        DType::F32 => Ok(MatmulVariant::UniformLhs),
        _ => Err(Error::Unsupported {
            op: "matmul",
            reason: format!(
                "a product over {} terms of {dtype:?} on a software adapter, whose shader loops stop after 65,535 iterations; convert to F32",
                spec.k
            ),
        }),
    }
}

/// Records `variant`'s kernels for `lhs @ rhs` into `out`.
fn run(
    variant: MatmulVariant,
    lhs: &GpuStorage,
    rhs: &GpuStorage,
    spec: &MatmulSpec,
    out: &PooledBuffer,
) -> Result<()> {
    match variant {
        MatmulVariant::UniformLhs if lhs.dtype == DType::F32 && spec.k > 0 => {
            uniform_lhs(lhs, rhs, spec, out)?
        }
        MatmulVariant::Blocked if is_aligned(spec) => {
            tiles(lhs, rhs, spec, out, Kernel::MatmulBlockedVec4)?
        }
        MatmulVariant::Blocked => tiles(lhs, rhs, spec, out, Kernel::MatmulBlocked)?,
        MatmulVariant::SmallTiled => tiles(lhs, rhs, spec, out, Kernel::MatmulSmallTiled)?,
        MatmulVariant::SplitK => match split_k_chunks(spec, lhs.dtype) {
            Some(chunks) => {
                let partials = split_k_partials(lhs, rhs, spec, chunks)?;
                let len = spec.m * spec.n;
                reduce_middle_into(&partials, ReduceOp::Sum, 1, chunks, len, out)?
            }
            None => tiles(lhs, rhs, spec, out, Kernel::Matmul)?,
        },
        _ => tiles(lhs, rhs, spec, out, Kernel::Matmul)?,
    }
    Ok(())
}

/// True when `blocked_vec4.wgsl` may run: whole tiles and slices, and both operands
/// readable as vec4s along their rows.
fn is_aligned(spec: &MatmulSpec) -> bool {
    let quads = |o: &MatmulOperand| {
        o.col_stride == 1
            && [o.row_stride, o.batch[0], o.batch[1], o.offset]
                .iter()
                .all(|v| v % 4 == 0)
    };
    spec.m.is_multiple_of(BLOCKED_TILE)
        && spec.n.is_multiple_of(BLOCKED_TILE)
        && spec.k.is_multiple_of(BLOCKED_SLICE)
        && quads(&spec.lhs)
        && quads(&spec.rhs)
}

/// One workgroup per `tile x tile` output tile, batches along z: the tiled and blocked
/// kernels, which share their params.
fn tiles(
    lhs: &GpuStorage,
    rhs: &GpuStorage,
    spec: &MatmulSpec,
    out: &PooledBuffer,
    kernel: Kernel,
) -> Result<()> {
    let (params, groups) = tile_launch(lhs, spec, tile_of(kernel))?;
    lhs.device.dispatch_with_inputs(
        "matmul",
        kernel,
        &[lhs.dtype],
        &params,
        &[lhs, rhs],
        &[out.buffer()],
        groups,
    )
}

/// One workgroup per `tile x tile` output tile, batches along z (unchecked).
pub(crate) fn tile_groups(spec: &MatmulSpec, tile: usize) -> [usize; 3] {
    [
        spec.n.div_ceil(tile),
        spec.m.div_ceil(tile),
        spec.batch[0] * spec.batch[1],
    ]
}

/// The params and workgroups of `tiles`, checked against the device's limits.
pub(crate) fn tile_launch(
    lhs: &GpuStorage,
    spec: &MatmulSpec,
    tile: usize,
) -> Result<(MatmulParams, [u32; 3])> {
    let op = "matmul";
    let device = &lhs.device;
    let groups = device.checked_groups(op, tile_groups(spec, tile))?;
    let params = MatmulParams {
        m: to_u32(op, "rows", spec.m)?,
        n: to_u32(op, "columns", spec.n)?,
        k: to_u32(op, "inner size", spec.k)?,
        batch1: to_u32(op, "batch", spec.batch[1].max(1))?,
        lhs_strides: strides(op, &spec.lhs)?,
        rhs_strides: strides(op, &spec.rhs)?,
        offsets: [
            to_u32(op, "offset", spec.lhs.offset)?,
            to_u32(op, "offset", spec.rhs.offset)?,
            0,
            0,
        ],
        conv_image: [0; 4],
        conv_step: [0; 4],
        conv_taps: [0; 4],
        conv_batch: [0; 4],
        conv_kernel: [0; 4],
    };
    Ok((params, groups))
}

/// Copies `rows x cols` of each matrix of `operand` into zero-padded f32 blocks of
/// `block` elements at a stride of `block_stride`; returns the packed buffer.
#[allow(clippy::too_many_arguments)]
fn pack(
    source: &GpuStorage,
    operand: &MatmulOperand,
    spec: &MatmulSpec,
    [rows, cols]: [usize; 2],
    [block_rows, block_cols]: [usize; 2],
    block_stride: usize,
) -> Result<PooledBuffer> {
    let op = "matmul";
    let device = &source.device;
    let [row_blocks, col_blocks] = [rows.div_ceil(block_rows), cols.div_ceil(block_cols)];
    let blocks = spec.batch[0] * spec.batch[1] * row_blocks * col_blocks;
    let packed = device.alloc(op, blocks * block_stride, DType::F32)?;
    let written = blocks * block_rows * block_cols;
    let params = PackParams {
        rows: to_u32(op, "rows", rows)?,
        cols: to_u32(op, "columns", cols)?,
        block_rows: block_rows as u32,
        block_cols: block_cols as u32,
        row_blocks: to_u32(op, "blocks", row_blocks)?,
        col_blocks: to_u32(op, "blocks", col_blocks)?,
        block_stride: to_u32(op, "block stride", block_stride)?,
        batch1: to_u32(op, "batch", spec.batch[1].max(1))?,
        strides: strides(op, operand)?,
        extent: [
            to_u32(op, "offset", operand.offset)?,
            to_u32(op, "packed size", written)?,
            0,
            0,
        ],
    };
    device.dispatch(
        op,
        Kernel::MatmulPack,
        &[source.dtype],
        &params,
        &[source.raw()?, packed.buffer()],
        device.groups_1d(op, written)?,
    )?;
    Ok(packed)
}

/// True when rhs can be read as vec4 rows where it lies: unit column stride, and row
/// stride, batch strides, offset and n all multiples of 4, and k a multiple of 4 (the
/// kernel reads whole groups of 4 rows).
fn rhs_is_vec4(spec: &MatmulSpec) -> bool {
    let r = &spec.rhs;
    r.col_stride == 1
        && [
            r.row_stride,
            r.batch[0],
            r.batch[1],
            r.offset,
            spec.n,
            spec.k,
        ]
        .iter()
        .all(|v| v % 4 == 0)
}

fn uniform_lhs(
    lhs: &GpuStorage,
    rhs: &GpuStorage,
    spec: &MatmulSpec,
    out: &PooledBuffer,
) -> Result<()> {
    let op = "matmul";
    let device = &lhs.device;
    let (m, n, k) = (spec.m, spec.n, spec.k);
    // k per block: all of it (rounded up to 4) when it fits, else 512.
    let kc = (k.div_ceil(4) * 4).min(BLOCK_ELEMS / BLOCK_ROWS);
    let (row_blocks, k_blocks) = (m.div_ceil(BLOCK_ROWS), k.div_ceil(kc));
    // An lhs with no batch strides (conv filters against a batch of images) is packed
    // once, for every batch.
    let lhs_shared = spec.lhs.batch == [0, 0];
    let lhs_spec = MatmulSpec {
        batch: if lhs_shared { [1, 1] } else { spec.batch },
        ..*spec
    };
    let packed_lhs = pack(
        lhs,
        &spec.lhs,
        &lhs_spec,
        [m, k],
        [BLOCK_ROWS, kc],
        BLOCK_ELEMS,
    )?;

    // rhs as vec4 rows: in place, or packed to [batch][k rounded up to kc][n rounded up to 4].
    let n4 = n.div_ceil(4);
    let packed_rhs;
    let (rhs_buffer, rhs_row4, rhs_batch4, rhs_base4) = if rhs_is_vec4(spec) {
        let r = &spec.rhs;
        (rhs.raw()?, r.row_stride / 4, None, r.offset / 4)
    } else {
        let rows = k_blocks * kc;
        packed_rhs = pack(rhs, &spec.rhs, spec, [k, n], [rows, n4 * 4], rows * n4 * 4)?;
        (packed_rhs.buffer(), n4, Some(rows * n4), 0)
    };

    let x_groups = n4.div_ceil(shader_constants::UNIFORM_LHS_WORKGROUP as usize);
    device.checked_groups(op, [x_groups, 1, 1])?;
    let max = device.max_workgroups_per_dim() as usize;
    let batches = spec.batch[0] * spec.batch[1];
    let batch1 = spec.batch[1].max(1);
    // vec4 offset of batch z of rhs.
    let rhs_z = |z: usize| match rhs_batch4 {
        Some(per_batch) => z * per_batch,
        None => (z / batch1 * spec.rhs.batch[0] + z % batch1 * spec.rhs.batch[1]) / 4,
    };
    // Batches share an lhs block, and rhs batches lie one stride apart: a dispatch runs
    // several batches along y (rhs and output steps per batch); otherwise one each.
    let linear = rhs_batch4.is_some()
        || spec.batch[0] == 1
        || spec.rhs.batch[0] == batch1 * spec.rhs.batch[1];
    let y_steps = (lhs_shared && linear && batches <= max).then(|| (rhs_z(1) - rhs_z(0), m * n));
    let (rhs_batch, out_batch) = y_steps.unwrap_or((0, 0));
    // Not all at once: every batch sweeping rhs once per block would lose the cache, so
    // as many as keep one block's rhs rows within RHS_SWEEP_BYTES.
    let per_pass = match y_steps {
        Some(_) => (RHS_SWEEP_BYTES / (kc * n4 * 16).max(1)).clamp(1, batches),
        None => 1,
    };
    for z in (0..batches).step_by(per_pass) {
        let groups = [x_groups as u32, per_pass.min(batches - z) as u32, 1];
        let lhs_z = if lhs_shared { 0 } else { z };
        for i in 0..row_blocks {
            for j in 0..k_blocks {
                let block = (lhs_z * row_blocks + i) * k_blocks + j;
                let params = UniformLhsParams {
                    n: n as u32,
                    rows: (m - i * BLOCK_ROWS).min(BLOCK_ROWS) as u32,
                    k4: (k - j * kc).min(kc).div_ceil(4) as u32,
                    lhs_row: (kc / 4) as u32,
                    rhs_base: to_u32(op, "offset", rhs_base4 + rhs_z(z) + j * kc * rhs_row4)?,
                    rhs_row: to_u32(op, "stride", rhs_row4)?,
                    out_base: to_u32(op, "offset", (z * m + i * BLOCK_ROWS) * n)?,
                    accumulate: (j > 0) as u32,
                    rhs_batch: to_u32(op, "stride", rhs_batch)?,
                    out_batch: to_u32(op, "stride", out_batch)?,
                    _pad0: 0,
                    _pad1: 0,
                };
                let window = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: packed_lhs.buffer(),
                    offset: block as u64 * BLOCK_BYTES,
                    size: NonZeroU64::new(BLOCK_BYTES),
                });
                device.dispatch_bound(
                    op,
                    Kernel::MatmulUniformLhs,
                    &[DType::F32],
                    &params,
                    &[
                        window,
                        rhs_buffer.as_entire_binding(),
                        out.buffer().as_entire_binding(),
                    ],
                    groups,
                )?;
            }
        }
    }
    Ok(())
}
