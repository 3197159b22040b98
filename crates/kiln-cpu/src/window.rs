//! The taps of a sliding window over compact NCHW data: which input pixel each output
//! position's kernel tap reads. Convolution (`conv.rs`) and pooling (`pool.rs`) walk
//! their windows with these.

use kiln_core::WindowSpec;
use std::ops::Range;

/// Input coordinate hit by output position `o` and kernel tap `k`, if inside the image.
pub(crate) fn source(
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    size: usize,
) -> Option<usize> {
    (o * stride + k * dilation)
        .checked_sub(pad)
        .filter(|&i| i < size)
}

/// The element types the window code runs on natively (f32 stays f32).
pub trait Real: Copy + Default + PartialOrd + std::ops::AddAssign {
    const NEG_INFINITY: Self;
    /// `new` if `take`, else `old`, by masking bits: no branch to mispredict.
    fn choose(take: bool, new: Self, old: Self) -> Self;
}

impl Real for f32 {
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    #[inline(always)]
    fn choose(take: bool, new: Self, old: Self) -> Self {
        let mask = (take as u32).wrapping_neg();
        f32::from_bits((new.to_bits() & mask) | (old.to_bits() & !mask))
    }
}

impl Real for f64 {
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    #[inline(always)]
    fn choose(take: bool, new: Self, old: Self) -> Self {
        let mask = (take as u64).wrapping_neg();
        f64::from_bits((new.to_bits() & mask) | (old.to_bits() & !mask))
    }
}

/// The output positions `o` whose tap `k` lands inside an axis of length `size`.
pub(crate) fn valid_outputs(
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    size: usize,
    outputs: usize,
) -> std::ops::Range<usize> {
    let offset = k * dilation; // input = o * stride + offset - pad
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    let hi = if size + pad > offset {
        (size + pad - offset).div_ceil(stride)
    } else {
        0
    };
    lo.min(outputs)..hi.min(outputs)
}

/// Where in `image` kernel column `kx` reads along image row `iy` for the output columns
/// `xs` (from `valid_outputs`, not empty): the first tap's flat index, and the image
/// from it to the last tap, every `s.stride.1`-th element a tap. Exactly `xs.len()`
/// taps: the slice panics rather than run short.
pub(crate) fn tap_row<'a, T>(
    image: &'a [T],
    s: &WindowSpec,
    iy: usize,
    kx: usize,
    xs: std::ops::Range<usize>,
) -> (usize, &'a [T]) {
    let first = iy * s.w + xs.start * s.stride.1 + kx * s.dilation.1 - s.padding.1;
    (first, &image[first..][..(xs.len() - 1) * s.stride.1 + 1])
}

/// The output rows each kernel row reaches and the output columns each kernel column
/// reaches (`valid_outputs` of every tap). They depend on the tap, not the channel: a
/// loop over channels finds them once (each takes two divisions, which a small image's
/// unfold had paid per channel and tap).
pub(crate) struct TapReach {
    pub rows: Vec<Range<usize>>,
    pub columns: Vec<Range<usize>>,
}

impl TapReach {
    pub fn new(s: &WindowSpec) -> Self {
        let (stride, padding, dilation) = (s.stride, s.padding, s.dilation);
        Self {
            rows: (0..s.kh)
                .map(|ky| valid_outputs(ky, stride.0, padding.0, dilation.0, s.h, s.oh))
                .collect(),
            columns: (0..s.kw)
                .map(|kx| valid_outputs(kx, stride.1, padding.1, dilation.1, s.w, s.ow))
                .collect(),
        }
    }
}

/// Calls `f(iy, ix0, oy, ox0, len)` for every tap of every output position that lands
/// inside the image, in runs contiguous in the image and in the columns (whole valid
/// rows when the column stride is 1): the loop nest behind col2im and the direct
/// convolution. Inlined, so that a caller compiled
/// for a wider vector unit (`widest_loop!`) compiles the loops it passes in for that
/// unit too.
#[inline(always)]
pub(crate) fn for_each_run(
    s: &WindowSpec,
    reach: &TapReach,
    ky: usize,
    kx: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let cols = reach.columns[kx].clone();
    if cols.is_empty() {
        return;
    }
    for oy in reach.rows[ky].clone() {
        let iy = oy * s.stride.0 + ky * s.dilation.0 - s.padding.0;
        if s.stride.1 == 1 {
            f(
                iy,
                cols.start + kx * s.dilation.1 - s.padding.1,
                oy,
                cols.start,
                cols.len(),
            );
        } else {
            for ox in cols.clone() {
                f(
                    iy,
                    ox * s.stride.1 + kx * s.dilation.1 - s.padding.1,
                    oy,
                    ox,
                    1,
                );
            }
        }
    }
}
