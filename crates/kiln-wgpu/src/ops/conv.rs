//! Launchers for `shaders/conv/`: im2col and col2im around the matmul, the direct
//! grouped convolution and the weight gradient; one thread per output element (the
//! weight gradient: per weight element and segment of the batch's rows). And the
//! convolution as one product, unfolded first or with its columns read in place.

use super::launch_window;
use super::matmul::{matmul, tile_launch, tile_of};
use super::reduce::reduce_middle;
use crate::autotune;
use crate::conv_algorithm::ConvAlgorithm;
use crate::kernels::Kernel;
use crate::params::{to_u32, DirectConvParams, WeightGradParams, WindowParams};
use crate::shader_constants::SMALL_TILE;
use crate::storage::GpuStorage;
use kiln_core::{MatmulOperand, MatmulSpec, ReduceOp, Result, WindowSpec};

/// Threads the weight gradient aims for, about what an NVIDIA H200 keeps resident (132
/// SMs of 2,048). With one thread per weight element, a small layer's gradient ran on a
/// few thousand threads, each down the whole batch: 4.3 of the CNN's 5.0 ms per training
/// step there. Fewer weights than this split the batch's output rows into segments.
const WEIGHT_GRAD_THREADS: usize = 1 << 18;

pub(crate) fn im2col(x: &GpuStorage, s: &WindowSpec) -> Result<GpuStorage> {
    let n = s.n * s.c * s.kh * s.kw * s.oh * s.ow;
    Ok(launch_window(
        "conv2d",
        Kernel::Im2col,
        &[x],
        WindowParams::new("conv2d", s, n, 0)?,
        &[(n, x.dtype)],
    )?
    .remove(0))
}

pub(crate) fn conv2d_direct(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let op = "conv2d";
    let n = s.n * out_channels * s.oh * s.ow;
    let w = WindowParams::new(op, s, n, 0)?;
    let p = DirectConvParams {
        image: w.image,
        window: w.window,
        step: w.step,
        extra: w.extra,
        channels: [
            to_u32(op, "channels", out_channels)?,
            to_u32(op, "groups", groups)?,
            0,
            0,
        ],
    };
    Ok(launch_window(op, Kernel::Conv2dDirect, &[x, weight], p, &[(n, x.dtype)])?.remove(0))
}

/// `[n, c, h, w]` images (compact) convolved with `[out, c / groups, kh, kw]`
/// filters, as the device's `ConvAlgorithm` chooses (timing both for a new shape class
/// under `Autotune`).
pub(crate) fn conv2d(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let device = &x.device;
    let product = unfolded_product(s, out_channels, groups);
    let algorithm = match device.conv_algorithm() {
        ConvAlgorithm::Autotune if !autotune::worth_tuning(&product) => {
            device.fixed_conv_algorithm()
        }
        ConvAlgorithm::Autotune => {
            let class = autotune::conv_class(&product, x.dtype);
            match device.tuned(&class) {
                Some(a) => a,
                None => {
                    let winner = autotune::fastest(&ConvAlgorithm::CANDIDATES, |a| {
                        autotune::seconds(device, || {
                            run(a, x, weight, s, out_channels, groups)?.buffer()?;
                            Ok(())
                        })
                    })?;
                    device.keep_tuned(class, winner);
                    winner
                }
            }
        }
        a => a,
    };
    run(algorithm, x, weight, s, out_channels, groups)
}

fn run(
    algorithm: ConvAlgorithm,
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    match algorithm {
        ConvAlgorithm::Implicit => conv2d_implicit(x, weight, s, out_channels, groups),
        _ => {
            let cols = im2col(x, s)?;
            matmul(weight, &cols, &unfolded_product(s, out_channels, groups))
        }
    }
}

/// The convolution's product: per image and group, the filters `[out / groups, kdim]`
/// times the image's columns `[kdim, oh * ow]` (`kdim = c / groups * kh * kw`), compact
/// as `im2col` writes them.
fn unfolded_product(s: &WindowSpec, out_channels: usize, groups: usize) -> MatmulSpec {
    let per_group = out_channels / groups;
    let kdim = s.c / groups * s.kh * s.kw;
    let columns = s.oh * s.ow;
    MatmulSpec {
        batch: [s.n, groups],
        m: per_group,
        n: columns,
        k: kdim,
        lhs: MatmulOperand {
            batch: [0, per_group * kdim],
            row_stride: kdim,
            col_stride: 1,
            offset: 0,
        },
        rhs: MatmulOperand {
            batch: [groups * kdim * columns, kdim * columns],
            row_stride: columns,
            col_stride: 1,
            offset: 0,
        },
    }
}

/// The product of `unfolded_product` with its columns read from the image where it
/// lies (`MatmulRhs::ImageColumns`): no column matrix is written. Groups of at most
/// `SMALL_TILE` filters take the small-tile build, which wastes fewer of its rows.
fn conv2d_implicit(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let op = "conv2d";
    let device = &x.device;
    let mut product = unfolded_product(s, out_channels, groups);
    let len = product.batch[0] * product.batch[1] * product.m * product.n;
    if len == 0 {
        let out = device.alloc_output(op, len, x.dtype)?;
        return Ok(GpuStorage::new(out, x.dtype, len, device));
    }
    let kernel = match product.m <= SMALL_TILE as usize {
        true => Kernel::Conv2dImplicitSmallTiled,
        false => Kernel::Conv2dImplicit,
    };
    // Where each image and group starts in the image; the kernel finds the rest.
    let plane = s.h * s.w;
    product.rhs = MatmulOperand {
        batch: [s.c * plane, s.c / groups * plane],
        row_stride: 0,
        col_stride: 0,
        offset: 0,
    };
    let (mut params, workgroups) = tile_launch(weight, &product, tile_of(kernel))?;
    let u = |v: usize| to_u32(op, "window size", v);
    params.conv_image = [u(s.h)?, u(s.w)?, u(s.kh)?, u(s.kw)?];
    params.conv_step = [
        u(s.stride.0)?,
        u(s.stride.1)?,
        u(s.padding.0)?,
        u(s.padding.1)?,
    ];
    params.conv_taps = [u(s.dilation.0)?, u(s.dilation.1)?, u(s.ow)?, 0];
    let dtypes = [x.dtype];
    if device.defers(kernel) {
        let inputs = [weight, x];
        return device.defer(
            op, kernel, &dtypes, params, &inputs, workgroups, len, x.dtype,
        );
    }
    let out = device.alloc_output(op, len, x.dtype)?;
    device.dispatch_with_inputs(
        op,
        kernel,
        &dtypes,
        &params,
        &[weight, x],
        &[out.buffer()],
        workgroups,
    )?;
    Ok(GpuStorage::new(out, x.dtype, len, device))
}

pub(crate) fn col2im(cols: &GpuStorage, s: &WindowSpec) -> Result<GpuStorage> {
    let n = s.n * s.c * s.h * s.w;
    Ok(launch_window(
        "conv_transpose2d",
        Kernel::Col2im,
        &[cols],
        WindowParams::new("conv_transpose2d", s, n, 0)?,
        &[(n, cols.dtype)],
    )?
    .remove(0))
}

pub(crate) fn conv2d_weight_grad(
    x: &GpuStorage,
    dy: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let op = "conv2d_backward";
    let weights = out_channels * (s.c / groups) * s.kh * s.kw;
    // The split follows from the shape alone, so results do not vary by adapter.
    let rows = (s.n * s.oh).max(1);
    let per_segment = rows.div_ceil((WEIGHT_GRAD_THREADS / weights.max(1)).clamp(1, rows));
    let segments = rows.div_ceil(per_segment);
    let threads = weights * segments;
    let w = WindowParams::new(op, s, threads, to_u32(op, "groups", groups)?)?;
    let p = WeightGradParams {
        image: w.image,
        window: w.window,
        step: w.step,
        extra: w.extra,
        split: [
            to_u32(op, "segments", segments)?,
            to_u32(op, "rows per segment", per_segment)?,
            to_u32(op, "weights", weights)?,
            0,
        ],
    };
    let outputs = [(threads, x.dtype)];
    let partial = launch_window(op, Kernel::ConvWeightGrad, &[x, dy], p, &outputs)?.remove(0);
    match segments {
        1 => Ok(partial),
        _ => reduce_middle(&partial, ReduceOp::Sum, 1, segments, weights),
    }
}
