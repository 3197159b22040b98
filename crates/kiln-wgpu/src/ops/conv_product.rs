//! Convolutions as one product per image and group, filters by the image's columns:
//! unfolded into a column matrix first (`ConvAlgorithm::Unfold`: im2col or col2im
//! around the device's matmul), or with the columns read from the image in place by
//! the tiled or blocked matmul's `MatmulRhs::ImageColumns` build (`Implicit`), as the
//! device's algorithm says; under `Autotune`, the faster of the two for the shape class.

use super::conv::{col2im, im2col};
use super::conv_phases::{self, Phases};
use super::elementwise::{compact, pad};
use super::matmul::{matmul, tile_launch, tile_of};
use crate::autotune;
use crate::conv_algorithm::ConvAlgorithm;
use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::loop_budget::SOFTWARE_LOOP_BUDGET;
use crate::matmul_variant::BLOCKED_FROM;
use crate::params::to_u32;
use crate::shader_constants::{BLOCKED_TILE, SMALL_TILE};
use crate::storage::GpuStorage;
use kiln_core::{DType, Error, Layout, MatmulOperand, MatmulSpec, Result, WindowSpec};

/// `[n, c, h, w]` images (compact) convolved with `[out, c / groups, kh, kw]` filters.
pub(crate) fn conv2d(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let per_group = out_channels / groups;
    let kdim = s.c / groups * s.kh * s.kw;
    let columns = s.oh * s.ow;
    // Per image and group: the filters [per_group, kdim] by the columns [kdim, columns],
    // compact as im2col writes them.
    let product = MatmulSpec {
        batch: [s.n, groups],
        m: per_group,
        n: columns,
        k: kdim,
        lhs: operand([0, per_group * kdim], kdim, 1),
        rhs: operand([groups * kdim * columns, kdim * columns], columns, 1),
    };
    let run = |algorithm| match algorithm {
        ConvAlgorithm::Implicit => {
            let plane = s.h * s.w;
            let implicit = Implicit {
                product,
                image: [s.c * plane, s.c / groups * plane],
                size: [s.h, s.w],
                taps: [s.kh, s.kw],
                out_width: s.ow,
                stride: [s.stride.0, s.stride.1],
                padding: [s.padding.0 as i64, s.padding.1 as i64],
                dilation: [s.dilation.0 as i64, s.dilation.1 as i64],
                phases: None,
                transposed: false,
            };
            implicit.launch(x, weight)
        }
        _ => matmul(weight, &im2col(x, s)?, &product),
    };
    let untuned = x.device.fixed_conv_algorithm();
    let algorithm = choose(&x.device, "conv", &product, x.dtype, untuned, &run)?;
    run(algorithm)
}

/// A transposed convolution as a convolution, its image's columns read in place and
/// nothing folded: at stride 1, one whose taps step backwards (`out[y] = sum over taps t
/// of w[t] * x[y + padding - t * dilation]`); strided (dilation 1), one over the
/// output's phases (`conv_phases`). `x` is compact `[n, in_channels, s.oh, s.ow]`,
/// `weight` `[in_channels, out / groups, kh, kw]`, `s` the fold's geometry (`s.c`,
/// `s.h`, `s.w`: the output's). `None` for strides with dilation, or where the device
/// runs it unfolded (then the caller multiplies and folds).
pub(crate) fn conv_transpose2d_as_conv(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    in_channels: usize,
    groups: usize,
) -> Result<Option<GpuStorage>> {
    if s.stride == (1, 1) {
        stride_one_transpose(x, weight, s, in_channels, groups)
    } else if s.dilation == (1, 1) {
        transpose_by_phases(x, weight, s, in_channels, groups)
    } else {
        Ok(None)
    }
}

/// `conv_transpose2d_as_conv` at stride 1.
fn stride_one_transpose(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    in_channels: usize,
    groups: usize,
) -> Result<Option<GpuStorage>> {
    let (in_per_group, out_per_group) = (in_channels / groups, s.c / groups);
    let taps = s.kh * s.kw;
    let product = transposed_product(s, groups, out_per_group, s.h * s.w, in_per_group * taps);
    let split = [in_per_group, groups];
    transpose_unless_unfolded(x, weight, s, split, "conv-transpose", product, || {
        // The weights as filters, [groups, out / groups, c / groups, kh * kw]: compacted
        // (with fusion on, inside the product's loads).
        let filters = compact(
            weight,
            &Layout::new(
                [groups, out_per_group, in_per_group, taps].into(),
                vec![
                    in_per_group * out_per_group * taps,
                    taps,
                    out_per_group * taps,
                    1,
                ],
                0,
            ),
        )?;
        let backwards = |v: usize| -(v as i64);
        let [image, size] = transposed_image(s, groups, in_per_group);
        let implicit = Implicit {
            product,
            image,
            size,
            taps: [s.kh, s.kw],
            out_width: s.w,
            stride: [1, 1],
            padding: [backwards(s.padding.0), backwards(s.padding.1)],
            dilation: [backwards(s.dilation.0), backwards(s.dilation.1)],
            phases: None,
            transposed: true,
        };
        implicit.launch(x, &filters)
    })
}

/// `conv_transpose2d_as_conv` at a stride above 1 (dilation 1): the phases' filters
/// stacked (`conv_phases::filters`) by the image's columns, stored interleaved.
fn transpose_by_phases(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    in_channels: usize,
    groups: usize,
) -> Result<Option<GpuStorage>> {
    let (in_per_group, out_per_group) = (in_channels / groups, s.c / groups);
    let dims = [
        Phases::new(s.h, s.kh, s.stride.0, s.padding.0),
        Phases::new(s.w, s.kw, s.stride.1, s.padding.1),
    ];
    let [h, w] = dims;
    let product = transposed_product(
        s,
        groups,
        out_per_group * h.stride * w.stride,
        h.rows * w.rows,
        in_per_group * h.taps * w.taps,
    );
    let (kind, split) = ("conv-transpose phases", [in_per_group, groups]);
    transpose_unless_unfolded(x, weight, s, split, kind, product, || {
        // Every phase's taps lie in the kernel (a kernel of whole strides, as 2x2 or 4x4
        // at stride 2, unpadded or with the grid shifted): the filters are a view of the
        // kernel itself.
        let padded = if [h.before, h.after, w.before, w.after] == [0; 4] {
            weight.clone()
        } else {
            let kernel = Layout::contiguous([in_channels, out_per_group, s.kh, s.kw]);
            pad(
                weight,
                &kernel,
                &[in_channels, out_per_group, h.padded(), w.padded()],
                &[0, 0, h.before, w.before],
                0.0,
            )?
        };
        let filters = compact(
            &padded,
            &conv_phases::filters(groups, in_per_group, out_per_group, dims),
        )?;
        let [image, size] = transposed_image(s, groups, in_per_group);
        let implicit = Implicit {
            product,
            image,
            size,
            taps: [h.taps, w.taps],
            out_width: w.rows,
            stride: [1, 1],
            padding: [-h.reach, -w.reach],
            dilation: [-1, -1],
            phases: Some(dims),
            transposed: true,
        };
        implicit.launch(x, &filters)
    })
}

/// Where a transposed convolution's compact input `[n, groups * in_per_group, s.oh,
/// s.ow]` lies (`s`: the fold's geometry), as `Implicit`'s image: elements from one image
/// to the next and one group's channels to the next, and its height and width.
fn transposed_image(s: &WindowSpec, groups: usize, in_per_group: usize) -> [[usize; 2]; 2] {
    let plane = s.oh * s.ow;
    [
        [groups * in_per_group * plane, in_per_group * plane],
        [s.oh, s.ow],
    ]
}

/// A transposed convolution's product as `Implicit` runs it: per image and group, `m`
/// filters (compact) by `columns` output positions, over `k` terms; the image's operand
/// is `Implicit`'s to set.
fn transposed_product(
    s: &WindowSpec,
    groups: usize,
    m: usize,
    columns: usize,
    k: usize,
) -> MatmulSpec {
    MatmulSpec {
        batch: [s.n, groups],
        m,
        n: columns,
        k,
        lhs: operand([0, m * k], k, 1),
        rhs: operand([0, 0], 0, 0),
    }
}

/// Runs `implicit` where the device's algorithm for `kind` (tuned against the unfolded
/// way) is `Implicit`; `None` where it unfolds.
fn transpose_unless_unfolded(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    [in_per_group, groups]: [usize; 2],
    kind: &str,
    product: MatmulSpec,
    implicit: impl Fn() -> Result<GpuStorage>,
) -> Result<Option<GpuStorage>> {
    let run = |algorithm| match algorithm {
        ConvAlgorithm::Implicit => implicit(),
        _ => unfolded_transpose(x, weight, s, in_per_group, groups),
    };
    let untuned = x.device.fixed_conv_algorithm();
    let algorithm = choose(&x.device, kind, &product, x.dtype, untuned, &run)?;
    match algorithm {
        ConvAlgorithm::Implicit => run(algorithm).map(Some),
        _ => Ok(None),
    }
}

/// What the caller composes when `conv_transpose2d_as_conv` returns `None` (timed
/// against it by the autotuner): columns `[n, g, kdim, h * w]` = the filters transposed
/// `[g, kdim, c / g]` by the input `[n, g, c / g, h * w]`, folded.
fn unfolded_transpose(
    x: &GpuStorage,
    weight: &GpuStorage,
    s: &WindowSpec,
    in_per_group: usize,
    groups: usize,
) -> Result<GpuStorage> {
    let kdim = s.c / groups * s.kh * s.kw;
    let plane = s.oh * s.ow;
    let product = MatmulSpec {
        batch: [s.n, groups],
        m: kdim,
        n: plane,
        k: in_per_group,
        lhs: operand([0, in_per_group * kdim], 1, kdim),
        rhs: operand(
            [groups * in_per_group * plane, in_per_group * plane],
            plane,
            1,
        ),
    };
    col2im(&matmul(weight, x, &product)?, s)
}

/// The algorithm for a product: the device's, with `Autotune` resolved by the tuner's
/// decision for the class (`kind` and the product's shape), timing `run` with each
/// candidate when the class is new, or `untuned` for a product too small to tune.
pub(crate) fn choose(
    device: &GpuDevice,
    kind: &str,
    product: &MatmulSpec,
    dtype: DType,
    untuned: ConvAlgorithm,
    run: &dyn Fn(ConvAlgorithm) -> Result<GpuStorage>,
) -> Result<ConvAlgorithm> {
    // The implicit kernel walks k in one invocation's loop, which a software adapter
    // ends early (`loop_budget`); unfolded, the product is a matmul, which steps
    // through a long k there.
    if device.is_software() && product.k > SOFTWARE_LOOP_BUDGET {
        return Ok(ConvAlgorithm::Unfold);
    }
    match device.conv_algorithm() {
        ConvAlgorithm::Autotune if !autotune::worth_tuning(product) => Ok(untuned),
        ConvAlgorithm::Autotune => {
            let class = autotune::conv_class(kind, product, dtype);
            autotune::tune(device, class, &ConvAlgorithm::CANDIDATES, run)
        }
        a => Ok(a),
    }
}

/// An operand from offset 0: its batch strides, row stride and column stride.
fn operand(batch: [usize; 2], row_stride: usize, col_stride: usize) -> MatmulOperand {
    MatmulOperand {
        batch,
        row_stride,
        col_stride,
        offset: 0,
    }
}

/// A product whose rhs is an image's columns, read in place.
struct Implicit {
    /// The filters as lhs; m, n, k and the batches `[images, groups]`.
    product: MatmulSpec,
    /// Elements from one image to the next, and from one group's channels to the next.
    image: [usize; 2],
    /// The image's height and width, the kernel's, and the output's width.
    size: [usize; 2],
    taps: [usize; 2],
    out_width: usize,
    /// Along (rows, columns). A tap lands at `out * stride - padding + tap * dilation`.
    stride: [usize; 2],
    padding: [i64; 2],
    dilation: [i64; 2],
    /// A transposed convolution's phases, which the product stores interleaved.
    phases: Option<[Phases; 2]>,
    /// A transposed convolution, which adds only its kernel's products with the image
    /// (`MatmulRhs::ImageColumns`' store sums an element again where the zeros of the
    /// padding or of missing taps met an infinity or a NaN).
    transposed: bool,
}

impl Implicit {
    /// Launches the product (deferred, to take an epilogue, when fusion is on) on the
    /// tiled kernel; groups of at most `SMALL_TILE` filters on its small-tile build,
    /// which wastes fewer of its rows; groups of `BLOCKED_TILE` filters or more on the
    /// blocked kernel from `BLOCKED_FROM` outputs, as `MatmulVariant::BySize` runs
    /// matmuls (on an NVIDIA H200 the blocked kernel ran 1.9x the tiled one from 2048
    /// square; its 128-row tiles would idle half their rows on 64 filters).
    fn launch(&self, x: &GpuStorage, filters: &GpuStorage) -> Result<GpuStorage> {
        let op = "conv2d";
        let device = &x.device;
        let p = &self.product;
        let len = match self.phases {
            // The output, interleaved: its channels by its height and width.
            Some([h, w]) => {
                let channels = p.batch[0] * p.batch[1] * p.m / (h.stride * w.stride);
                channels * h.out * w.out
            }
            None => p.batch[0] * p.batch[1] * p.m * p.n,
        };
        if len == 0 {
            let out = device.alloc_output(op, len, x.dtype)?;
            return Ok(GpuStorage::new(out, x.dtype, len, device));
        }
        let kernel = if p.m <= SMALL_TILE as usize {
            Kernel::Conv2dImplicitSmallTiled
        } else if p.m >= BLOCKED_TILE as usize && len >= BLOCKED_FROM {
            Kernel::Conv2dImplicitBlocked
        } else {
            Kernel::Conv2dImplicit
        };
        let mut product = *p;
        product.rhs = operand(self.image, 0, 0);
        let (mut params, workgroups) = tile_launch(filters, &product, tile_of(kernel))?;
        let u = |v: usize| to_u32(op, "window size", v);
        let signed = |v: i64| match i32::try_from(v) {
            Ok(v) => Ok(v as u32),
            Err(_) => Err(Error::LimitExceeded {
                op,
                what: "padding or dilation",
                needed: v.unsigned_abs(),
                limit: i32::MAX as u64,
            }),
        };
        let [h, w] = self.size;
        let [kh, kw] = self.taps;
        params.conv_image = [u(h)?, u(w)?, u(kh)?, u(kw)?];
        params.conv_step = [
            u(self.stride[0])?,
            u(self.stride[1])?,
            signed(self.padding[0])?,
            signed(self.padding[1])?,
        ];
        params.conv_taps = [
            signed(self.dilation[0])?,
            signed(self.dilation[1])?,
            u(self.out_width)?,
            u32::from(self.transposed),
        ];
        if self.transposed {
            params.conv_kernel = [0, 0, u(kh)?, u(kw)?];
        }
        if let Some([h, w]) = self.phases {
            params.offsets[2..].copy_from_slice(&[u(h.shift)?, u(w.shift)?]);
            params.conv_batch = [u(h.stride)?, u(w.stride)?, u(h.out)?, u(w.out)?];
            params.conv_kernel = [u(h.before)?, u(w.before)?, u(h.kernel())?, u(w.kernel())?];
        }
        let dtypes = [x.dtype];
        if device.defers(kernel) {
            let inputs = [filters, x];
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
            &[filters, x],
            &[out.buffer()],
            workgroups,
        )?;
        Ok(GpuStorage::new(out, x.dtype, len, device))
    }
}
