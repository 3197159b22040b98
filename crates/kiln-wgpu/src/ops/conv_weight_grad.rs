//! A convolution's weight gradient, per group the product of the output's gradient
//! `[o / groups, n * oh * ow]` by the image's columns transposed `[n * oh * ow, c /
//! groups * kh * kw]`: run by the tiled or blocked matmul's `MatmulRhs::WeightGradient`
//! build, which reads both where they lie (`ConvAlgorithm::Implicit`), or by the direct
//! kernel (`conv.rs`, one thread per weight and segment of the batch: `Unfold`, since
//! the columns unfolded would be the whole batch's); under `Autotune`, the faster of
//! the two for the shape class, the product for shapes too small to time. A product
//! that would leave over three quarters of its tiles empty (thin groups, depthwise)
//! runs the direct kernel. The product's k, every output position of the batch, is long
//! and its output small, so k is cut into chunks that run as a batch and are summed
//! after, as `MatmulVariant::SplitK` sums a product's.

use super::conv;
use super::conv_product::choose;
use super::elementwise::cast;
use super::matmul::{tile_groups, tile_launch, tile_of, MIN_CHUNK, SPLIT_K_WORKGROUPS};
use super::reduce::reduce_middle;
use crate::conv_algorithm::ConvAlgorithm;
use crate::device::GpuDevice;
use crate::kernels::Kernel;
use crate::params::to_u32;
use crate::shader_constants::{BLOCKED_TILE, SMALL_TILE};
use crate::storage::GpuStorage;
use kiln_core::{DType, Layout, MatmulOperand, MatmulSpec, ReduceOp, Result, WindowSpec};

/// `dy`'s weight gradient of a convolution of the compact `x` (`Backend::
/// conv2d_weight_grad`).
pub(crate) fn conv2d_weight_grad(
    x: &GpuStorage,
    dy: &GpuStorage,
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Result<GpuStorage> {
    // f16 is summed in f32 and rounded once: a chunk's or a segment's sum rounded to
    // f16 before their sum missed F16's tolerance (tests/parity.rs). With fusion on,
    // the casts run in the kernel's loads and the last sum's stores.
    if x.dtype != DType::F32 {
        let wide = |t: &GpuStorage| cast(t, &Layout::contiguous([t.len()]), DType::F32);
        let grad = conv2d_weight_grad(&wide(x)?, &wide(dy)?, s, out_channels, groups)?;
        return cast(&grad, &Layout::contiguous([grad.len()]), x.dtype);
    }
    let direct = || conv::weight_grad_direct(x, dy, s, out_channels, groups);
    let implicit = Implicit::new(s, out_channels, groups);
    if implicit.is_thin() || !implicit.fits(&x.device) {
        return direct();
    }
    let run = |algorithm| match algorithm {
        ConvAlgorithm::Implicit => implicit.launch(x, dy),
        _ => direct(),
    };
    // Untuned, the product: on lavapipe too, where the forward's default is to unfold,
    // it ran the CNN's weight gradients 2.1x and the GAN's 3.1x faster than the direct
    // kernel (docs/BENCHMARKS.md).
    let (kind, untuned) = ("conv-weight-grad", ConvAlgorithm::Implicit);
    let algorithm = choose(&x.device, kind, &implicit.product, x.dtype, untuned, &run)?;
    run(algorithm)
}

/// The weight gradient as the tiled or blocked kernel runs it.
struct Implicit {
    /// Per chunk of k and group: `o / groups` rows by `c / groups * kh * kw` columns
    /// over a chunk's terms. The operands are the kernel's to find (`conv_batch`).
    product: MatmulSpec,
    kernel: Kernel,
    /// Terms in all: output positions of the whole batch.
    terms: usize,
    positions: usize,
    spec: WindowSpec,
    out_channels: usize,
}

impl Implicit {
    /// Chunks enough for `SPLIT_K_WORKGROUPS` workgroups, of `MIN_CHUNK` terms or more,
    /// counted from the shape alone so that the sums' order does not vary by adapter. The
    /// kernel: the tiled one, with `SMALL_TILE` tiles for as many filters a group or
    /// fewer, the blocked one where filters and columns each fill its tile (as the
    /// forward runs wide groups; the chunks give it workgroups enough whatever the
    /// output's size, where a matmul waits for `BLOCKED_FROM` outputs).
    fn new(s: &WindowSpec, out_channels: usize, groups: usize) -> Self {
        let (rows, columns) = (out_channels / groups, s.c / groups * s.kh * s.kw);
        let kernel = if rows <= SMALL_TILE as usize {
            Kernel::ConvWeightGradImplicitSmallTiled
        } else if rows.min(columns) >= BLOCKED_TILE as usize {
            Kernel::ConvWeightGradImplicitBlocked
        } else {
            Kernel::ConvWeightGradImplicit
        };
        let tile = tile_of(kernel);
        let positions = s.oh * s.ow;
        let terms = s.n * positions;
        let tiles = rows.div_ceil(tile) * columns.div_ceil(tile) * groups;
        let wanted = SPLIT_K_WORKGROUPS.div_ceil(tiles.max(1));
        let chunk = terms.div_ceil(wanted.min(terms / MIN_CHUNK).max(1));
        let chunks = terms.div_ceil(chunk.max(1)).max(1);
        let product = MatmulSpec {
            batch: [chunks, groups],
            m: rows,
            n: columns,
            k: chunk,
            lhs: MatmulOperand {
                batch: [0, rows * positions],
                row_stride: positions,
                col_stride: 0,
                offset: 0,
            },
            rhs: MatmulOperand {
                batch: [0, s.c / groups * s.h * s.w],
                row_stride: 0,
                col_stride: 0,
                offset: 0,
            },
        };
        Implicit {
            product,
            kernel,
            terms,
            positions,
            spec: *s,
            out_channels,
        }
    }

    /// Whether the product would fill under a quarter of its tiles, where the direct
    /// kernel's threads, one per weight, do no empty work. On lavapipe, 3x3 taps over
    /// 16 images of 64 x 32 x 32: depthwise (1 filter of 1 channel a group, 0.9% of
    /// the tiles filled) the product ran 33x slower, 4 filters of 4 channels (7%) 4.2x
    /// and 8 of 4 (14%) 2.4x slower, 16 of 16 (45%) 1.2x faster; the CNN's first layer
    /// (39%) 2.1x faster. Such products are not tuned either.
    fn is_thin(&self) -> bool {
        let (p, tile) = (&self.product, tile_of(self.kernel));
        let tiles = p.m.div_ceil(tile) * p.n.div_ceil(tile);
        4 * p.m * p.n < tiles * tile * tile
    }

    /// Whether the device launches as many workgroups along each dimension.
    fn fits(&self, device: &GpuDevice) -> bool {
        let groups = tile_groups(&self.product, tile_of(self.kernel));
        device.checked_groups("conv2d_backward", groups).is_ok()
    }

    /// Each chunk's sums into its own copy of the gradient, then their sum.
    fn launch(&self, x: &GpuStorage, dy: &GpuStorage) -> Result<GpuStorage> {
        let op = "conv2d_backward";
        let device = &x.device;
        let (p, s) = (&self.product, &self.spec);
        let [chunks, groups] = p.batch;
        let weights = groups * p.m * p.n;
        let len = chunks * weights;
        let partials = device.alloc_output(op, len, DType::F32)?;
        if len == 0 {
            return Ok(GpuStorage::new(partials, DType::F32, len, device));
        }
        let u = |what, v: usize| to_u32(op, what, v);
        let (mut params, workgroups) = tile_launch(dy, p, tile_of(self.kernel))?;
        params.conv_image = [
            u("height", s.h)?,
            u("width", s.w)?,
            u("kernel height", s.kh)?,
            u("kernel width", s.kw)?,
        ];
        params.conv_step = [
            u("stride", s.stride.0)?,
            u("stride", s.stride.1)?,
            u("padding", s.padding.0)?,
            u("padding", s.padding.1)?,
        ];
        params.conv_taps = [
            u("dilation", s.dilation.0)?,
            u("dilation", s.dilation.1)?,
            u("output width", s.ow)?,
            0,
        ];
        params.conv_batch = [
            u("image size", s.c * s.h * s.w)?,
            u("image size", self.out_channels * self.positions)?,
            u("batch's output positions", self.terms)?,
            u("output positions", self.positions)?,
        ];
        device.dispatch_with_inputs(
            op,
            self.kernel,
            &[DType::F32],
            &params,
            &[dy, x],
            &[partials.buffer()],
            workgroups,
        )?;
        let partials = GpuStorage::new(partials, DType::F32, len, device);
        match chunks {
            1 => Ok(partials),
            _ => reduce_middle(&partials, ReduceOp::Sum, 1, chunks, weights),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, c: usize, side: usize, taps: usize) -> WindowSpec {
        WindowSpec {
            n,
            c,
            h: side,
            w: side,
            kh: taps,
            kw: taps,
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            oh: side + 1 - taps,
            ow: side + 1 - taps,
        }
    }

    /// The chunks cover every term once, none empty, each of `MIN_CHUNK` terms or more
    /// when there are several, and no more of them than `SPLIT_K_WORKGROUPS` wants;
    /// with no terms, one empty chunk (the kernel writes zeros).
    #[test]
    fn chunks_cover_the_terms_once() {
        for n in [0, 1, 2, 3, 7, 16, 64, 129] {
            for side in [1, 3, 5, 14, 28, 33] {
                for (c, out, groups) in [(1, 16, 1), (16, 32, 1), (64, 130, 2), (3, 7, 1)] {
                    let taps = side.min(3);
                    let s = spec(n, c, side, taps);
                    let implicit = Implicit::new(&s, out, groups);
                    let p = &implicit.product;
                    let [chunks, batch_groups] = p.batch;
                    let label = format!("n {n} side {side} c {c} out {out}: {p:?}");
                    assert_eq!(batch_groups, groups, "{label}");
                    assert_eq!(implicit.terms, n * s.oh * s.ow, "{label}");
                    assert!(chunks >= 1, "{label}");
                    if implicit.terms == 0 {
                        assert_eq!((chunks, p.k), (1, 0), "{label}");
                        continue;
                    }
                    assert!(
                        (chunks - 1) * p.k < implicit.terms,
                        "an empty chunk: {label}"
                    );
                    assert!(chunks * p.k >= implicit.terms, "terms left out: {label}");
                    if chunks > 1 {
                        assert!(p.k >= MIN_CHUNK, "{label}");
                        let tile = tile_of(implicit.kernel);
                        let tiles = p.m.div_ceil(tile) * p.n.div_ceil(tile) * groups;
                        assert!(chunks <= SPLIT_K_WORKGROUPS.div_ceil(tiles), "{label}");
                    }
                }
            }
        }
    }

    /// Which build a product runs and whether it is thin, by its filters and columns.
    #[test]
    fn builds_follow_the_groups_width() {
        let cases = [
            // (c, out, groups, taps): kernel, thin
            (
                (1, 16, 1, 5),
                Kernel::ConvWeightGradImplicitSmallTiled,
                false,
            ),
            (
                (16, 32, 1, 5),
                Kernel::ConvWeightGradImplicitSmallTiled,
                false,
            ),
            ((3, 40, 1, 3), Kernel::ConvWeightGradImplicit, false),
            (
                (16, 128, 1, 3),
                Kernel::ConvWeightGradImplicitBlocked,
                false,
            ),
            (
                (64, 64, 64, 3),
                Kernel::ConvWeightGradImplicitSmallTiled,
                true,
            ),
            ((5, 7, 1, 3), Kernel::ConvWeightGradImplicitSmallTiled, true),
            ((8, 130, 1, 3), Kernel::ConvWeightGradImplicit, false),
        ];
        for ((c, out, groups, taps), kernel, thin) in cases {
            let implicit = Implicit::new(&spec(4, c, 12, taps), out, groups);
            let label = format!("c {c} out {out} groups {groups} taps {taps}");
            assert_eq!(implicit.kernel, kernel, "{label}");
            assert_eq!(implicit.is_thin(), thin, "{label}");
        }
    }
}
