//! Convolution over compact NCHW data: im2col and col2im around the GEMM, direct
//! grouped convolution, and the weight gradient. Floating-point work in f64 unless
//! noted.

use crate::matmul::{column_blocks, product, share_pool, Operand};
use crate::threads::WEIGHT_GRAD_RUN_FLOPS;
use crate::window::{for_each_run, source, tap_row, Real, TapReach};
use kiln_core::WindowSpec;
use std::mem::MaybeUninit;
use std::ops::Range;

/// `[n, c, h, w]` -> `[n, c*kh*kw, oh*ow]`; out-of-image taps are zero. Generic so
/// that f32 data is unfolded without widening. Images unfold in parallel.
pub fn im2col<T: Copy + Default + Send + Sync>(x: &[T], s: &WindowSpec) -> Vec<T> {
    let (image, unfolded) = (s.c * s.h * s.w, s.c * s.kh * s.kw * s.oh * s.ow);
    let unfold = |start: usize, out: &mut [MaybeUninit<T>]| {
        let n = start / unfolded.max(1);
        unfold_image(&x[n * image..][..image], s, out)
    };
    // SAFETY: each chunk is one image's unfolding, which `unfold_image` writes whole.
    unsafe { crate::threads::build(s.n * unfolded, unfolded.max(1), unfold) }
}

/// Elements in a block of columns (`cg*kh*kw` rows by whole output rows) that
/// `conv2d_unfolded` unfolds and multiplies at a time: half a MiB of f32, so that the
/// block stays in a core's cache from its unfolding to the product's last read of it.
/// (The 3x3 case of `kiln bench` unfolds 2.4 MB an image.)
const COLUMN_BLOCK_ELEMENTS: usize = 1 << 17;

/// Columns in a block at least, and the multiple they are rounded up to where the image
/// allows: the GEMM kernel's height on AVX-512 (64 f32), so that none runs part-empty.
const COLUMN_BLOCK_STEP: usize = 64;

/// Outputs (here output channels) the `gemm` crate's x86 kernels compute side by side.
const KERNEL_WIDTH: usize = 6;

/// Output channels per product at most. The `gemm` crate copies its left operand (here,
/// in its transposed view of the product, the block of columns) into its kernels'
/// layout when more than 8 kernel widths of outputs read it. The block is already laid
/// out as the kernel reads it, contiguous along the pixels, so the copy was waste: a
/// fifth of the 3x3 bench case's time, which splitting its 64 output channels in two
/// removed.
const CHANNELS_PER_PRODUCT: usize = 8 * KERNEL_WIDTH;

/// conv2d of f32 data as `im2col` then the batched GEMM `weight[g] (og x cg*kh*kw) @
/// cols[n, g]`, an image's group unfolded a block of output rows at a time
/// (`COLUMN_BLOCK_ELEMENTS`), into a buffer of its task, just before the block's
/// products: the columns are read back while still in cache, and the batch's columns
/// are never held at once. Each output is summed in the same order as by the composed
/// path (`product`'s depth blocks depend on the depth alone), so the result is the same
/// to the bit.
pub fn conv2d_unfolded(
    x: &[f32],
    weight: &[f32],
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Vec<f32> {
    let (cg, og) = (s.c / groups, out_channels / groups);
    let (l, kdim) = (s.oh * s.ow, cg * s.kh * s.kw);
    let len = s.n * out_channels * l;
    if l == 0 || og == 0 || kdim == 0 {
        return vec![0.0; len]; // nothing to compute, or an empty sum: zeros
    }
    let group = WindowSpec { c: cg, ..*s };
    let group_input = cg * s.h * s.w;
    // A padded image is unfolded from a copy inside a border of zeros, as an unpadded
    // one: each row of columns is then whole runs of the image, without the fills and
    // shorter copies of padded rows (the 3x3 bench case: 3.12 -> 2.97 ms).
    let bordered = WindowSpec {
        h: s.h + 2 * s.padding.0,
        w: s.w + 2 * s.padding.1,
        padding: (0, 0),
        ..group
    };
    let reach = TapReach::new(&bordered);
    let columns = (COLUMN_BLOCK_ELEMENTS / kdim).next_multiple_of(COLUMN_BLOCK_STEP);
    let block_rows = columns.div_ceil(s.ow).min(s.oh);
    // Balanced in whole kernel widths, so that no product is left a sliver (49
    // channels: 30 and 19, not 48 and 1).
    let channels_per_product = og
        .div_ceil(og.div_ceil(CHANNELS_PER_PRODUCT))
        .next_multiple_of(KERNEL_WIDTH)
        .min(CHANNELS_PER_PRODUCT);
    let mut out = Vec::with_capacity(len);
    // (the task's image and group, its outputs)
    let tasks: Vec<_> = out.spare_capacity_mut()[..len]
        .chunks_mut(og * l)
        .enumerate()
        .collect();
    let (spread, threads) = share_pool(tasks.len(), len * kdim);
    let run = |(i, part): (usize, &mut [MaybeUninit<f32>])| {
        let (n, g) = (i / groups, i % groups);
        let image = &x[(n * s.c + g * cg) * s.h * s.w..][..group_input];
        let image = if s.padding == (0, 0) {
            image
        } else {
            &with_border(image, &group)
        };
        let mut cols = Vec::with_capacity(kdim * block_rows * s.ow);
        for first_row in (0..s.oh).step_by(block_rows) {
            let rows = first_row..(first_row + block_rows).min(s.oh);
            let (first, count) = (first_row * s.ow, rows.len() * s.ow);
            let block = &mut cols.spare_capacity_mut()[..kdim * count];
            unfold_rows(image, &bordered, &reach, rows, block, count);
            // SAFETY: `unfold_rows` wrote the block's kdim rows of `count` columns.
            unsafe { cols.set_len(kdim * count) };
            for first_channel in (0..og).step_by(channels_per_product) {
                let channels = channels_per_product.min(og - first_channel);
                // SAFETY: the group's weights are og x kdim, of which these channels'
                // rows are read; the block is kdim x count; part is the og x l outputs,
                // of which these channels' `count` columns at `first` are written (not
                // accumulating), never read.
                unsafe {
                    product(
                        (channels, count, kdim),
                        part.as_mut_ptr()
                            .cast::<f32>()
                            .add(first_channel * l + first),
                        l,
                        false,
                        Operand {
                            at: weight[(g * og + first_channel) * kdim..].as_ptr(),
                            row_stride: kdim as isize,
                            col_stride: 1,
                        },
                        Operand {
                            at: cols.as_ptr(),
                            row_stride: count as isize,
                            col_stride: 1,
                        },
                        threads,
                    );
                }
            }
            cols.clear();
        }
    };
    crate::threads::run_tasks(tasks, spread, run);
    // SAFETY: the tasks' parts cover the `len` elements, and each GEMM wrote its part.
    unsafe { out.set_len(len) };
    out
}

/// A `[c, h, w]` image inside a border of zeros `s.padding` wide: `[c, h + 2*padding.0,
/// w + 2*padding.1]`, each element written once.
fn with_border<T: Copy + Default>(image: &[T], s: &WindowSpec) -> Vec<T> {
    let (ph, pw) = s.padding;
    let width = s.w + 2 * pw;
    let rows = s.c * (s.h + 2 * ph);
    let zero = MaybeUninit::new(T::default());
    let mut out = Vec::with_capacity(rows * width);
    let spare = &mut out.spare_capacity_mut()[..rows * width];
    for (c, channel) in spare.chunks_exact_mut((s.h + 2 * ph) * width).enumerate() {
        let (above, rest) = channel.split_at_mut(ph * width);
        let (inside, below) = rest.split_at_mut(s.h * width);
        above.fill(zero);
        below.fill(zero);
        for (y, row) in inside.chunks_exact_mut(width).enumerate() {
            row[..pw].fill(zero);
            row[pw + s.w..].fill(zero);
            let from = &image[(c * s.h + y) * s.w..][..s.w];
            copy_short(&mut row[pw..pw + s.w], from);
        }
    }
    // SAFETY: every channel's rows above, inside and below the image were written whole.
    unsafe { out.set_len(rows * width) };
    out
}

/// One `[c, h, w]` image -> its `[c*kh*kw, oh*ow]` columns in `unfolded`, every element
/// written once (zeros only where a tap falls in the padding).
fn unfold_image<T: Copy + Default>(image: &[T], s: &WindowSpec, unfolded: &mut [MaybeUninit<T>]) {
    unfold_rows(image, s, &TapReach::new(s), 0..s.oh, unfolded, s.oh * s.ow);
}

widest_loop! {
/// Output rows `rows` of `unfold_image`, with the columns' rows `row_stride` apart in
/// `unfolded`, so that a block of an image, or several images side by side, can be laid
/// out as a product reads them; only the `rows.len() * ow` elements of each row are
/// written. Compiled for the widest vector unit: a small image's rows are a vector or
/// two each.
fn unfold_rows<T>(
    image: &[T],
    s: &WindowSpec,
    reach: &TapReach,
    rows: Range<usize>,
    unfolded: &mut [MaybeUninit<T>],
    row_stride: usize,
) where [T: Copy + Default] {
    let first_row = rows.start;
    let l = rows.len() * s.ow;
    if s.padding == (0, 0) && s.stride.1 == 1 {
        // Every tap of every output lies in the image: each row of columns is whole rows
        // of it, `step` apart, found without the reach of each tap (for a small image,
        // that bookkeeping cost more than the copies).
        let step = s.stride.0 * s.w;
        for c in 0..s.c {
            for ky in 0..s.kh {
                let iy = first_row * s.stride.0 + ky * s.dilation.0;
                let taps = &image[(c * s.h + iy) * s.w..];
                for kx in 0..s.kw {
                    let row = (c * s.kh + ky) * s.kw + kx;
                    let out = &mut unfolded[row * row_stride..][..l];
                    copy_rows(out, &taps[kx * s.dilation.1..], s.ow, step);
                }
            }
        }
        return;
    }
    let zero = MaybeUninit::new(T::default());
    for c in 0..s.c {
        let image = &image[c * s.h * s.w..][..s.h * s.w];
        for (ky, kx) in (0..s.kh).flat_map(|ky| (0..s.kw).map(move |kx| (ky, kx))) {
            let row = (c * s.kh + ky) * s.kw + kx;
            let reached = &reach.rows[ky];
            let ys = reached.start.max(rows.start)..reached.end.min(rows.end);
            let xs = reach.columns[kx].clone();
            let out = &mut unfolded[row * row_stride..][..l];
            if ys.is_empty() || xs.is_empty() {
                out.fill(zero);
                continue;
            }
            // Output rows whose tap falls above or below the image, in one fill each.
            let (above, below) = ((ys.start - first_row) * s.ow, (ys.end - first_row) * s.ow);
            out[..above].fill(zero);
            out[below..].fill(zero);
            let out = &mut out[above..below];
            let padded = xs.start > 0 || xs.end < s.ow;
            if s.stride.1 == 1 {
                // Runs of consecutive taps `step` apart in the image, one per output row:
                // one slice of the image and one of the output walked together (the
                // general loop below spent more on its indexing than on the copy).
                let step = s.stride.0 * s.w;
                let iy = ys.start * s.stride.0 + ky * s.dilation.0 - s.padding.0;
                let first = tap_row(image, s, iy, kx, xs.clone()).0;
                let taps = &image[first..][..(ys.len() - 1) * step + xs.len()];
                // Apart, the two loops ran a quarter faster than one that tested `padded`
                // per row (conv2 of the CNN, where no row is padded).
                if padded {
                    for (i, out) in out.chunks_exact_mut(s.ow).enumerate() {
                        out[..xs.start].fill(zero);
                        out[xs.end..].fill(zero);
                        copy_short(&mut out[xs.clone()], &taps[i * step..][..xs.len()]);
                    }
                } else {
                    copy_rows(out, taps, s.ow, step);
                }
                continue;
            }
            // A column stride: every `stride.1`-th tap of each row.
            for (oy, out) in ys.zip(out.chunks_exact_mut(s.ow)) {
                let iy = oy * s.stride.0 + ky * s.dilation.0 - s.padding.0;
                if padded {
                    out[..xs.start].fill(zero);
                    out[xs.end..].fill(zero);
                }
                let (_, taps) = tap_row(image, s, iy, kx, xs.clone());
                let taps = taps.iter().step_by(s.stride.1);
                let out = &mut out[xs.clone()];
                out.iter_mut().zip(taps).for_each(|(o, &v)| _ = o.write(v));
            }
        }
    }
}
}

/// Whole rows of `width` into `out` from rows `step` apart in `taps`: row `i` of `out` is
/// `taps[i*step..][..width]`. A small image's unfolding is thousands of such rows of a
/// vector or two: the lengths are checked once here, not per row, and each row is
/// copied in fixed blocks of 8, the last overlapping the one before.
#[inline(always)]
fn copy_rows<T: Copy>(out: &mut [MaybeUninit<T>], taps: &[T], width: usize, step: usize) {
    const BLOCK: usize = 8;
    let rows = out.len() / width.max(1);
    assert!(out.len() == rows * width && (rows == 0 || taps.len() >= (rows - 1) * step + width));
    if width < BLOCK {
        for (i, out) in out.chunks_exact_mut(width).enumerate() {
            copy_short(out, &taps[i * step..][..width]);
        }
        return;
    }
    let (to, from) = (out.as_mut_ptr().cast::<T>(), taps.as_ptr());
    for i in 0..rows {
        // SAFETY: row `i` is `out[i*width..][..width]` and `taps[i*step..][..width]`,
        // inside both slices by the assertion above, and every block lies within the
        // row (`width >= BLOCK`). `out` and `taps` are distinct borrows, so the copies
        // do not overlap.
        unsafe {
            let (to, from) = (to.add(i * width), from.add(i * step));
            let mut at = 0;
            while at + BLOCK <= width {
                std::ptr::copy_nonoverlapping(from.add(at), to.add(at), BLOCK);
                at += BLOCK;
            }
            if at < width {
                let last = width - BLOCK;
                std::ptr::copy_nonoverlapping(from.add(last), to.add(last), BLOCK);
            }
        }
    }
}

/// Copies `src` into `out` (equally long). Rows of a small image are a few dozen
/// elements, and a `memcpy` call for each cost as much as the copy: whole blocks of 8
/// are fixed-size moves the compiler writes inline.
#[inline(always)]
fn copy_short<T: Copy>(out: &mut [MaybeUninit<T>], src: &[T]) {
    const BLOCK: usize = 8;
    let mut blocks = out.chunks_exact_mut(BLOCK);
    let mut from = src.chunks_exact(BLOCK);
    for (o, v) in (&mut blocks).zip(&mut from) {
        let v: &[T; BLOCK] = v.try_into().expect("chunks_exact gives whole blocks");
        o.copy_from_slice(&v.map(MaybeUninit::new));
    }
    let rest = from.remainder().len();
    if rest > 0 && src.len() >= BLOCK {
        // The last whole block, overlapping some already written: one move, not `rest`.
        let at = src.len() - BLOCK;
        let v: &[T; BLOCK] = src[at..].try_into().expect("a block of BLOCK elements");
        out[at..].copy_from_slice(&v.map(MaybeUninit::new));
        return;
    }
    let rest = blocks.into_remainder().iter_mut().zip(from.remainder());
    rest.for_each(|(o, &v)| _ = o.write(v));
}

/// The weight gradient through im2col and GEMM, for f32 data:
/// `dw[g] = sum over n of dy[n, g] (og x l) @ cols[n, g]^T (l x cg*kh*kw)`.
/// Same value as `conv2d_weight_grad`, in a different summation order. The images are
/// split into runs by size alone. A run's images are unfolded side by side, into
/// `[c*kh*kw, images*l]` columns its task reuses, and their `dy` gathered into
/// `[out_channels, images*l]`, so that each group's gradient over the run is one product
/// with `images*l` terms per output: with one product per image (64 terms for a small
/// image) the products' packing and the gradient's reads and writes outweighed the
/// arithmetic. The runs' partial gradients are added in run order, so the result does
/// not depend on the thread count.
pub fn conv2d_weight_grad_gemm(
    x: &[f32],
    dy: &[f32],
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Vec<f32> {
    let (cg, og) = (s.c / groups, out_channels / groups);
    let (l, kk) = (s.oh * s.ow, s.kh * s.kw);
    let width = cg * kk;
    let size = out_channels * width;
    if l == 0 || size == 0 || s.n == 0 {
        return vec![0.0; size];
    }
    let per_image = out_channels * l * width;
    let images = (WEIGHT_GRAD_RUN_FLOPS / per_image.max(1)).clamp(1, s.n);
    let runs = s.n.div_ceil(images);
    let image = s.c * s.h * s.w;
    let reach = TapReach::new(s);
    let partial = |run: usize, threads: usize| {
        let first_image = run * images;
        let count = images.min(s.n - first_image);
        let terms = count * l; // per output: the product's inner dimension
        let mut cols = Vec::with_capacity(s.c * kk * terms);
        let mut grads = Vec::with_capacity(out_channels * terms);
        for i in 0..count {
            let n = first_image + i;
            let at = &mut cols.spare_capacity_mut()[i * l..];
            unfold_rows(&x[n * image..][..image], s, &reach, 0..s.oh, at, terms);
            for o in 0..out_channels {
                let from = &dy[(n * out_channels + o) * l..][..l];
                let to = &mut grads.spare_capacity_mut()[o * terms + i * l..][..l];
                copy_short(to, from);
            }
        }
        // SAFETY: the images' unfoldings and dy rows tile the two buffers' rows whole.
        unsafe {
            cols.set_len(s.c * kk * terms);
            grads.set_len(out_channels * terms);
        }
        let mut dw = Vec::with_capacity(size);
        let out = dw.spare_capacity_mut();
        for g in 0..groups {
            let (cols, dw) = (&cols[g * width * terms..], &mut out[g * og * width..]);
            for (first, count) in column_blocks(og, width, terms) {
                // SAFETY: the group's gathered dy is og x terms, its columns are read as
                // terms x cg*kk (row stride 1, column stride terms), and dw's group is
                // og x cg*kk, of which the block's og x count are written.
                unsafe {
                    product(
                        (og, count, terms),
                        dw.as_mut_ptr().cast::<f32>().add(first),
                        width,
                        false,
                        Operand {
                            at: grads[g * og * terms..].as_ptr(),
                            row_stride: terms as isize,
                            col_stride: 1,
                        },
                        Operand {
                            at: cols[first * terms..].as_ptr(),
                            row_stride: 1,
                            col_stride: terms as isize,
                        },
                        threads,
                    );
                }
            }
        }
        // SAFETY: the groups' products wrote all og x width elements of each group.
        unsafe { dw.set_len(size) };
        dw
    };
    let (spread, threads) = share_pool(runs, per_image * s.n);
    let partial = |run| partial(run, threads);
    let mut partials = crate::threads::map_indices(runs, spread, partial).into_iter();
    let mut dw = partials.next().unwrap_or_else(|| vec![0.0; size]);
    for p in partials {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    dw
}

/// Grouped conv2d by direct summation over each output's taps, in f64 from inputs of
/// any float type (widened as they are read). Each output plane adds its taps in runs
/// along the rows, in the order input channel, kernel row, kernel column, as the plain
/// per-element sum does; planes in parallel.
pub fn conv2d_direct<T: Copy + Sync + Into<f64>>(
    x: &[T],
    weight: &[T],
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Vec<f64> {
    let (in_per_group, out_per_group) = (s.c / groups, out_channels / groups);
    let l = s.oh * s.ow;
    let mut out = vec![0.0; s.n * out_channels * l];
    let reach = TapReach::new(s);
    crate::threads::for_chunks(&mut out, l.max(1), |start, y| {
        let (oc, n) = (
            (start / l.max(1)) % out_channels,
            start / l.max(1) / out_channels,
        );
        let first_in = oc / out_per_group * in_per_group;
        for ci in 0..in_per_group {
            let plane = &x[(n * s.c + first_in + ci) * s.h * s.w..][..s.h * s.w];
            let taps = &weight[(oc * in_per_group + ci) * s.kh * s.kw..][..s.kh * s.kw];
            add_taps(y, plane, taps, s, &reach);
        }
    });
    out
}

widest_loop! {
    /// `y += taps (*) plane` for one input plane into one output plane, a run at a time.
    fn add_taps<T>(y: &mut [f64], plane: &[T], taps: &[T], s: &WindowSpec, reach: &TapReach)
    where [T: Copy + Into<f64>] {
        for (ky, kx) in (0..s.kh).flat_map(|ky| (0..s.kw).map(move |kx| (ky, kx))) {
            let tap: f64 = taps[ky * s.kw + kx].into();
            for_each_run(s, reach, ky, kx, |iy, ix, oy, ox, len| {
                let into = &mut y[oy * s.ow + ox..][..len];
                for (o, &v) in into.iter_mut().zip(&plane[iy * s.w + ix..][..len]) {
                    *o += v.into() * tap;
                }
            });
        }
    }
}

/// `[n, c*kh*kw, oh*ow]` columns -> `[n, c, h, w]` image, summing every tap that lands
/// on a pixel: the adjoint of `im2col` (here `h, w` is the image being rebuilt). Images
/// fold in parallel; each pixel sums its taps in one fixed order.
pub fn col2im<T: Real + Send + Sync>(cols: &[T], s: &WindowSpec) -> Vec<T> {
    let (l, rows) = (s.oh * s.ow, s.c * s.kh * s.kw);
    let image = s.c * s.h * s.w;
    let mut out = vec![T::default(); s.n * image];
    let reach = TapReach::new(s);
    crate::threads::for_chunks(&mut out, image.max(1), |start, folded| {
        let n = start / image.max(1);
        fold_image(&cols[n * rows * l..][..rows * l], s, &reach, folded);
    });
    out
}

widest_loop! {
    /// One image's columns added into its pixels (`folded`, `[c, h, w]`), each pixel's
    /// taps in the order channel, kernel row, kernel column. Compiled for the widest
    /// vector unit: a small image's runs are a vector or two each.
    fn fold_image<T>(cols: &[T], s: &WindowSpec, reach: &TapReach, folded: &mut [T])
    where [T: Real] {
        let (l, plane) = (s.oh * s.ow, s.h * s.w);
        for c in 0..s.c {
            let image = &mut folded[c * plane..][..plane];
            for (ky, kx) in (0..s.kh).flat_map(|ky| (0..s.kw).map(move |kx| (ky, kx))) {
                let row = (c * s.kh + ky) * s.kw + kx;
                let col = &cols[row * l..][..l];
                for_each_run(s, reach, ky, kx, |iy, ix, oy, ox, len| {
                    let into = &mut image[iy * s.w + ix..][..len];
                    for (p, &v) in into.iter_mut().zip(&col[oy * s.ow + ox..][..len]) {
                        *p += v;
                    }
                });
            }
        }
    }
}

/// `dw[o, c', ky, kx] = sum over n, oy, ox of dy[n, o, oy, ox] * x[n, g*cg + c', iy, ix]`
/// where `g` is `o`'s group: `[o, c/groups, kh, kw]`, in f64 (the dtypes but f32). A tap
/// in the padding multiplies its zero, as the f32 product over unfolded columns
/// (`conv2d_weight_grad_gemm`) and the GPU's do: a NaN or infinite `dy` there gives NaN.
pub fn conv2d_weight_grad(
    x: &[f64],
    dy: &[f64],
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Vec<f64> {
    let (cg, og) = (s.c / groups, out_channels / groups);
    let mut dw = vec![0.0; out_channels * cg * s.kh * s.kw];
    for o in 0..out_channels {
        for ci in 0..cg {
            let c = (o / og) * cg + ci;
            for (ky, kx) in (0..s.kh).flat_map(|ky| (0..s.kw).map(move |kx| (ky, kx))) {
                let mut acc = 0.0;
                for n in 0..s.n {
                    let image = &x[(n * s.c + c) * s.h * s.w..][..s.h * s.w];
                    let grad = &dy[(n * out_channels + o) * s.oh * s.ow..][..s.oh * s.ow];
                    for oy in 0..s.oh {
                        let iy = source(oy, ky, s.stride.0, s.padding.0, s.dilation.0, s.h);
                        for ox in 0..s.ow {
                            let ix = source(ox, kx, s.stride.1, s.padding.1, s.dilation.1, s.w);
                            let pixel = match (iy, ix) {
                                (Some(iy), Some(ix)) => image[iy * s.w + ix],
                                _ => 0.0,
                            };
                            acc += grad[oy * s.ow + ox] * pixel;
                        }
                    }
                }
                dw[((o * cg + ci) * s.kh + ky) * s.kw + kx] = acc;
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (n, c, h, w, k, stride, padding, dilation, out_channels, groups)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        (usize, usize),
        (usize, usize),
        (usize, usize),
        usize,
        usize,
    );

    /// A case's window, and an input and weights of varied values.
    fn case_data(case: Case) -> (WindowSpec, Vec<f32>, Vec<f32>) {
        let (n, c, h, w, k, stride, padding, dilation, out_c, groups) = case;
        let size = |i, s, p, d| WindowSpec::out_size(i, k, s, p, d).expect("the window fits");
        let s = WindowSpec {
            n,
            c,
            h,
            w,
            kh: k,
            kw: k,
            stride,
            padding,
            dilation,
            oh: size(h, stride.0, padding.0, dilation.0),
            ow: size(w, stride.1, padding.1, dilation.1),
        };
        let x = (0..n * c * h * w)
            .map(|i| ((i * 7919) % 201) as f32 / 37.0 - 2.5)
            .collect();
        let wt = (0..out_c * c / groups * k * k)
            .map(|i| ((i * 104729) % 97) as f32 / 13.0 - 3.0)
            .collect();
        (s, x, wt)
    }

    /// Unfolding against the plain gather (each column row's element is its tap of the
    /// image, or zero where the tap falls in the padding), exactly: on every path of
    /// `unfold_rows` (no padding with a row stride and dilation, a column stride,
    /// padding), rows shorter and longer than a block of 8, and a block of output rows
    /// from the middle of the image written into poisoned columns.
    #[test]
    fn unfolding_is_the_plain_gather() {
        let cases: [Case; _] = [
            (2, 3, 9, 7, 3, (1, 1), (0, 0), (1, 1), 3, 1),
            (1, 2, 13, 30, 3, (2, 1), (0, 0), (2, 2), 2, 1),
            (1, 2, 9, 9, 2, (1, 2), (0, 0), (1, 1), 2, 1),
            (2, 3, 8, 21, 3, (1, 1), (1, 2), (1, 1), 3, 1),
        ];
        for case in cases {
            let (s, x, _) = case_data(case);
            let (l, image) = (s.oh * s.ow, s.c * s.h * s.w);
            let want = |n: usize, row: usize, p: usize| {
                let (c, ky, kx) = (row / (s.kh * s.kw), row / s.kw % s.kh, row % s.kw);
                let iy = source(p / s.ow, ky, s.stride.0, s.padding.0, s.dilation.0, s.h);
                let ix = source(p % s.ow, kx, s.stride.1, s.padding.1, s.dilation.1, s.w);
                match (iy, ix) {
                    (Some(iy), Some(ix)) => x[((n * s.c + c) * s.h + iy) * s.w + ix],
                    _ => 0.0,
                }
            };
            let rows = s.c * s.kh * s.kw;
            let cols = im2col(&x, &s);
            for (i, &got) in cols.iter().enumerate() {
                let (n, row, p) = (i / (rows * l), i / l % rows, i % l);
                assert_eq!(got.to_bits(), want(n, row, p).to_bits(), "{case:?} at {i}");
            }
            let middle = 1..s.oh - 1;
            let width = middle.len() * s.ow;
            let mut block = vec![MaybeUninit::new(f32::NAN); rows * width];
            let reach = TapReach::new(&s);
            let n = 1 % s.n; // the second image where there is one
            unfold_rows(
                &x[n * image..][..image],
                &s,
                &reach,
                middle,
                &mut block,
                width,
            );
            for (i, got) in block.iter().enumerate() {
                // SAFETY: the block was initialised (with NaN) before unfolding.
                let got = unsafe { got.assume_init() };
                let (row, p) = (i / width, s.ow + i % width);
                assert_eq!(
                    got.to_bits(),
                    want(n, row, p).to_bits(),
                    "{case:?} rows 1.. at {i}"
                );
            }
        }
    }

    /// The direct convolution on f32 read in place against the plain per-output sum
    /// (taps in the order input channel, kernel row, kernel column, in f64): bitwise, on
    /// odd shapes with padding, stride, dilation, depthwise and grouped channels, and
    /// enough planes to be split between threads.
    #[test]
    fn direct_conv_is_the_plain_sum() {
        let cases: [Case; _] = [
            (2, 6, 7, 9, 3, (1, 1), (1, 1), (1, 1), 6, 6),
            (3, 4, 11, 6, 3, (2, 1), (2, 0), (1, 2), 8, 4),
            (1, 6, 5, 5, 2, (1, 2), (0, 1), (2, 1), 6, 2),
            (16, 64, 32, 32, 3, (1, 1), (1, 1), (1, 1), 64, 64),
        ];
        for case in cases {
            let (s, x, wt) = case_data(case);
            let (n, c, h, w, k, stride, padding, dilation, out_c, groups) = case;
            let cg = c / groups;
            let got = conv2d_direct(&x, &wt, &s, out_c, groups);
            for (b, o, oy, ox) in (0..n).flat_map(|b| {
                (0..out_c).flat_map(move |o| {
                    (0..s.oh).flat_map(move |oy| (0..s.ow).map(move |ox| (b, o, oy, ox)))
                })
            }) {
                let mut want = 0.0f64;
                for ci in 0..cg {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = source(oy, ky, stride.0, padding.0, dilation.0, h);
                            let ix = source(ox, kx, stride.1, padding.1, dilation.1, w);
                            if let (Some(iy), Some(ix)) = (iy, ix) {
                                let ch = o / (out_c / groups) * cg + ci;
                                want += x[((b * c + ch) * h + iy) * w + ix] as f64
                                    * wt[((o * cg + ci) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                }
                let at = ((b * out_c + o) * s.oh + oy) * s.ow + ox;
                assert_eq!(
                    got[at], want,
                    "case {n}x{c}x{h}x{w} g{groups} at {b},{o},{oy},{ox}"
                );
            }
        }
    }

    /// The block-by-block convolution against the composed one (`im2col`, then the
    /// batched product the tensor layer asks for): bitwise, with padding, stride,
    /// dilation, groups, several blocks of rows and of channels, and sums of more than
    /// 512 terms (which `product` splits), on large images and on small ones, where the
    /// two paths' products have different shapes.
    #[test]
    fn unfolded_conv_is_im2col_then_matmul() {
        use crate::CpuStorage;
        use kiln_core::{HostBuffer, MatmulOperand, MatmulSpec};
        let cases: [Case; _] = [
            (3, 4, 9, 7, 3, (1, 2), (1, 0), (2, 1), 6, 2),
            (2, 16, 12, 12, 5, (1, 1), (0, 0), (1, 1), 32, 1),
            (1, 8, 40, 40, 3, (1, 1), (1, 1), (1, 1), 300, 1),
            (1, 64, 41, 37, 3, (1, 1), (1, 1), (1, 1), 50, 1),
            (2, 128, 6, 6, 3, (1, 1), (1, 1), (1, 1), 80, 1),
            (1, 130, 9, 9, 3, (2, 2), (1, 1), (1, 1), 98, 2),
        ];
        for case in cases {
            let (s, x, wt) = case_data(case);
            let (n, c, h, w, k, _, _, _, out_c, groups) = case;
            let (cg, og, l) = (c / groups, out_c / groups, s.oh * s.ow);
            let kdim = cg * k * k;
            let spec = MatmulSpec {
                batch: [n, groups],
                m: og,
                n: l,
                k: kdim,
                lhs: MatmulOperand {
                    batch: [0, og * kdim],
                    row_stride: kdim,
                    col_stride: 1,
                    offset: 0,
                },
                rhs: MatmulOperand {
                    batch: [groups * kdim * l, kdim * l],
                    row_stride: l,
                    col_stride: 1,
                    offset: 0,
                },
            };
            let filters = CpuStorage(HostBuffer::F32(wt.clone()));
            let cols = CpuStorage(HostBuffer::F32(im2col(&x, &s)));
            let composed = crate::matmul::matmul(&filters, &cols, &spec).expect("matmul");
            let got = conv2d_unfolded(&x, &wt, &s, out_c, groups);
            let HostBuffer::F32(want) = composed.0 else {
                panic!("an f32 product")
            };
            let differs = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(
                got.len() == want.len() && differs.is_none(),
                "{n}x{c}x{h}x{w} k{k} g{groups}: first difference at {differs:?}"
            );
        }
    }

    /// The f32 weight gradient (runs of images unfolded side by side, one product per
    /// group and run) against the f64 per-tap sum, within f32 rounding of the sum of
    /// the terms' sizes: odd shapes with padding, stride, dilation and groups, a batch
    /// split into several runs with a short last one, and a single image.
    #[test]
    fn weight_grad_by_runs_is_the_plain_sum() {
        let cases: [Case; _] = [
            (3, 4, 9, 7, 3, (1, 2), (1, 0), (2, 1), 6, 2),
            (37, 16, 12, 12, 5, (1, 1), (0, 0), (1, 1), 32, 1),
            (1, 6, 11, 13, 3, (2, 1), (1, 2), (1, 1), 9, 3),
        ];
        for case in cases {
            let (s, x, _) = case_data(case);
            let (n, c, _, _, k, _, _, _, out_c, groups) = case;
            let dy: Vec<f32> = (0..n * out_c * s.oh * s.ow)
                .map(|i| ((i * 613) % 89) as f32 / 17.0 - 2.6)
                .collect();
            let runs =
                n.div_ceil(WEIGHT_GRAD_RUN_FLOPS / (out_c * s.oh * s.ow * c / groups * k * k));
            assert!(
                n < 30 || runs > 2,
                "case {case:?} is meant to span several runs"
            );
            let got = conv2d_weight_grad_gemm(&x, &dy, &s, out_c, groups);
            let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
            let want = conv2d_weight_grad(&wide(&x), &wide(&dy), &s, out_c, groups);
            let abs = |v: &[f32]| v.iter().map(|a| a.abs() as f64).collect::<Vec<_>>();
            let bound = conv2d_weight_grad(&abs(&x), &abs(&dy), &s, out_c, groups);
            for (i, ((&g, &w), &b)) in got.iter().zip(&want).zip(&bound).enumerate() {
                let allowed = 1e-6 * b + 1e-30;
                assert!(
                    (g as f64 - w).abs() <= allowed,
                    "{case:?} at {i}: {g} vs {w}"
                );
            }
        }
    }

    /// Both weight gradients multiply the padding's zeros (the f32 one unfolds them into
    /// its columns): a NaN and an infinity in the output gradient, at a corner whose taps
    /// reach the padding and in the middle, leave NaN and infinities in the same weights
    /// of each. The f64 sum once skipped the padding's taps, so an f16 gradient kept
    /// finite the weights the f32 one, and the GPU's in any dtype, made NaN.
    #[test]
    fn weight_grads_multiply_the_padding_in_every_dtype() {
        let (s, x, _) = case_data((2, 3, 7, 6, 3, (1, 2), (1, 1), (1, 1), 4, 1));
        let mut dy: Vec<f32> = (0..2 * 4 * s.oh * s.ow)
            .map(|i| ((i * 613) % 89) as f32 / 17.0 - 2.6)
            .collect();
        dy[0] = f32::NAN;
        dy[s.oh * s.ow + s.ow + 1] = f32::INFINITY;
        let got = conv2d_weight_grad_gemm(&x, &dy, &s, 4, 1);
        let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let want = conv2d_weight_grad(&wide(&x), &wide(&dy), &s, 4, 1);
        let nans = want.iter().filter(|w| w.is_nan()).count();
        assert_eq!(nans, 3 * 9, "the NaN reaches every tap of output channel 0");
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let same = match w.is_finite() {
                true => (g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0),
                false => g.is_nan() == w.is_nan() && (w.is_nan() || g as f64 == w),
            };
            assert!(same, "weight {i}: f32 {g}, f64 {w}");
        }
    }
}
