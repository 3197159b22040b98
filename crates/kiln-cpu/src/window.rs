//! Sliding windows over compact NCHW data: im2col/col2im for convolution, the
//! convolution weight gradient, and pooling with its gradients. All in f64.

use kiln_core::{PoolKind, WindowSpec};

/// Input coordinate hit by output position `o` and kernel tap `k`, if inside the image.
fn source(
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
}

impl Real for f32 {
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
}

impl Real for f64 {
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
}

/// The output positions `o` whose tap `k` lands inside an axis of length `size`.
fn valid_outputs(
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

/// Calls `f(iy, ix, oy, ox)` for every tap of every output position that lands inside
/// the image: the loop nest behind the weight gradient.
fn for_each_tap(
    s: &WindowSpec,
    ky: usize,
    kx: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let cols = valid_outputs(kx, s.stride.1, s.padding.1, s.dilation.1, s.w, s.ow);
    for oy in valid_outputs(ky, s.stride.0, s.padding.0, s.dilation.0, s.h, s.oh) {
        let iy = oy * s.stride.0 + ky * s.dilation.0 - s.padding.0;
        for ox in cols.clone() {
            f(
                iy,
                ox * s.stride.1 + kx * s.dilation.1 - s.padding.1,
                oy,
                ox,
            );
        }
    }
}

/// Like `for_each_tap`, in runs `(iy, ix0, oy, ox0, len)` that are contiguous in the
/// image and in the columns (whole valid rows when the column stride is 1): the loop
/// nest behind im2col and col2im.
fn for_each_run(
    s: &WindowSpec,
    ky: usize,
    kx: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let cols = valid_outputs(kx, s.stride.1, s.padding.1, s.dilation.1, s.w, s.ow);
    if cols.is_empty() {
        return;
    }
    for oy in valid_outputs(ky, s.stride.0, s.padding.0, s.dilation.0, s.h, s.oh) {
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

/// `[n, c, h, w]` -> `[n, c*kh*kw, oh*ow]`; out-of-image taps are zero. Generic so
/// that f32 data is unfolded without widening.
pub fn im2col<T: Copy + Default>(x: &[T], s: &WindowSpec) -> Vec<T> {
    let (l, rows) = (s.oh * s.ow, s.c * s.kh * s.kw);
    let mut out = vec![T::default(); s.n * rows * l];
    for n in 0..s.n {
        for c in 0..s.c {
            let image = &x[(n * s.c + c) * s.h * s.w..][..s.h * s.w];
            for (ky, kx) in (0..s.kh).flat_map(|ky| (0..s.kw).map(move |kx| (ky, kx))) {
                let row = (c * s.kh + ky) * s.kw + kx;
                let cols = &mut out[(n * rows + row) * l..][..l];
                for_each_run(s, ky, kx, |iy, ix, oy, ox, len| {
                    cols[oy * s.ow + ox..][..len].copy_from_slice(&image[iy * s.w + ix..][..len]);
                });
            }
        }
    }
    out
}

/// The weight gradient through im2col and SGEMM, for f32 data:
/// `dw[g] = sum over n of dy[n, g] (og x l) @ cols[n, g]^T (l x cg*kh*kw)`.
/// Same value as `conv2d_weight_grad`, in a different summation order.
pub fn conv2d_weight_grad_gemm(
    x: &[f32],
    dy: &[f32],
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Vec<f32> {
    let (cg, og) = (s.c / groups, out_channels / groups);
    let (l, kk) = (s.oh * s.ow, s.kh * s.kw);
    let rows = s.c * kk;
    let cols = im2col(x, s);
    let mut dw = vec![0.0f32; out_channels * cg * kk];
    if l == 0 {
        return dw;
    }
    for n in 0..s.n {
        for g in 0..groups {
            let a = &dy[(n * out_channels + g * og) * l..];
            let b = &cols[(n * rows + g * cg * kk) * l..];
            let c = &mut dw[g * og * cg * kk..];
            // SAFETY: a is og x l (row stride l), b read as l x cg*kk (row stride 1,
            // column stride l) inside cols, c is og x cg*kk inside dw.
            unsafe {
                matrixmultiply::sgemm(
                    og,
                    l,
                    cg * kk,
                    1.0,
                    a.as_ptr(),
                    l as isize,
                    1,
                    b.as_ptr(),
                    1,
                    l as isize,
                    1.0,
                    c.as_mut_ptr(),
                    (cg * kk) as isize,
                    1,
                );
            }
        }
    }
    dw
}

/// Grouped conv2d by direct summation over each output's taps (f64).
pub fn conv2d_direct(
    x: &[f64],
    weight: &[f64],
    s: &WindowSpec,
    out_channels: usize,
    groups: usize,
) -> Vec<f64> {
    let (in_per_group, out_per_group) = (s.c / groups, out_channels / groups);
    let mut out = vec![0.0; s.n * out_channels * s.oh * s.ow];
    for (e, y) in out.iter_mut().enumerate() {
        let (ox, oy) = (e % s.ow, (e / s.ow) % s.oh);
        let (oc, n) = (
            (e / (s.ow * s.oh)) % out_channels,
            e / (s.ow * s.oh * out_channels),
        );
        let first_in = oc / out_per_group * in_per_group;
        for ci in 0..in_per_group {
            let plane = &x[(n * s.c + first_in + ci) * s.h * s.w..][..s.h * s.w];
            let taps = &weight[(oc * in_per_group + ci) * s.kh * s.kw..][..s.kh * s.kw];
            for ky in 0..s.kh {
                let Some(iy) = source(oy, ky, s.stride.0, s.padding.0, s.dilation.0, s.h) else {
                    continue;
                };
                for kx in 0..s.kw {
                    if let Some(ix) = source(ox, kx, s.stride.1, s.padding.1, s.dilation.1, s.w) {
                        *y += plane[iy * s.w + ix] * taps[ky * s.kw + kx];
                    }
                }
            }
        }
    }
    out
}

/// `[n, c*kh*kw, oh*ow]` columns -> `[n, c, h, w]` image, summing every tap that lands
/// on a pixel: the adjoint of `im2col` (here `h, w` is the image being rebuilt).
pub fn col2im<T: Real>(cols: &[T], s: &WindowSpec) -> Vec<T> {
    let (l, rows) = (s.oh * s.ow, s.c * s.kh * s.kw);
    let mut out = vec![T::default(); s.n * s.c * s.h * s.w];
    for n in 0..s.n {
        for c in 0..s.c {
            let image = &mut out[(n * s.c + c) * s.h * s.w..][..s.h * s.w];
            for (ky, kx) in (0..s.kh).flat_map(|ky| (0..s.kw).map(move |kx| (ky, kx))) {
                let row = (c * s.kh + ky) * s.kw + kx;
                let col = &cols[(n * rows + row) * l..][..l];
                for_each_tap(s, ky, kx, |iy, ix, oy, ox| {
                    image[iy * s.w + ix] += col[oy * s.ow + ox]
                });
            }
        }
    }
    out
}

/// `dw[o, c', ky, kx] = sum over n, oy, ox of dy[n, o, oy, ox] * x[n, g*cg + c', iy, ix]`
/// where `g` is `o`'s group: `[o, c/groups, kh, kw]`.
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
                    for_each_tap(s, ky, kx, |iy, ix, oy, ox| {
                        acc += grad[oy * s.ow + ox] * image[iy * s.w + ix]
                    });
                }
                dw[((o * cg + ci) * s.kh + ky) * s.kw + kx] = acc;
            }
        }
    }
    dw
}

/// Values and flat `iy*w + ix` indices of each window's first maximum; padding is -inf.
pub fn max_pool2d<T: Real>(x: &[T], s: &WindowSpec) -> (Vec<T>, Vec<i32>) {
    let planes = s.n * s.c;
    let mut values = vec![T::default(); planes * s.oh * s.ow];
    let mut indices = vec![0; planes * s.oh * s.ow];
    for p in 0..planes {
        let plane = &x[p * s.h * s.w..(p + 1) * s.h * s.w];
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                let (mut best, mut idx) = (T::NEG_INFINITY, -1i32);
                for ky in 0..s.kh {
                    let Some(iy) = source(oy, ky, s.stride.0, s.padding.0, s.dilation.0, s.h)
                    else {
                        continue;
                    };
                    for kx in 0..s.kw {
                        let Some(ix) = source(ox, kx, s.stride.1, s.padding.1, s.dilation.1, s.w)
                        else {
                            continue;
                        };
                        let v = plane[iy * s.w + ix];
                        if v > best || idx < 0 {
                            best = v;
                            idx = (iy * s.w + ix) as i32;
                        }
                    }
                }
                let o = (p * s.oh + oy) * s.ow + ox;
                values[o] = best;
                indices[o] = idx;
            }
        }
    }
    (values, indices)
}

/// Each output's gradient goes to the pixel its maximum came from.
pub fn max_pool2d_backward<T: Real>(dy: &[T], indices: &[i32], s: &WindowSpec) -> Vec<T> {
    let (planes, l) = (s.n * s.c, s.oh * s.ow);
    let mut dx = vec![T::default(); planes * s.h * s.w];
    for p in 0..planes {
        for o in 0..l {
            dx[p * s.h * s.w + indices[p * l + o] as usize] += dy[p * l + o];
        }
    }
    dx
}

/// Rows `y0..y1`, columns `x0..x1` of the real image that output `(oy, ox)` averages,
/// and the divisor.
fn avg_window(
    s: &WindowSpec,
    kind: PoolKind,
    oy: usize,
    ox: usize,
) -> (usize, usize, usize, usize, f64) {
    match kind {
        PoolKind::AdaptiveAvg => {
            let (y0, y1) = (oy * s.h / s.oh, ((oy + 1) * s.h).div_ceil(s.oh));
            let (x0, x1) = (ox * s.w / s.ow, ((ox + 1) * s.w).div_ceil(s.ow));
            (y0, y1, x0, x1, ((y1 - y0) * (x1 - x0)) as f64)
        }
        PoolKind::Avg { count_include_pad } => {
            // Window in padded coordinates, clipped to the padded image for the divisor
            // (PyTorch) and to the real image for the sum.
            let (py0, px0) = (oy * s.stride.0, ox * s.stride.1);
            let py1 = (py0 + s.kh).min(s.h + 2 * s.padding.0);
            let px1 = (px0 + s.kw).min(s.w + 2 * s.padding.1);
            let y0 = py0.saturating_sub(s.padding.0).min(s.h);
            let y1 = py1.saturating_sub(s.padding.0).min(s.h);
            let x0 = px0.saturating_sub(s.padding.1).min(s.w);
            let x1 = px1.saturating_sub(s.padding.1).min(s.w);
            let divisor = if count_include_pad {
                (py1 - py0) * (px1 - px0)
            } else {
                (y1 - y0) * (x1 - x0)
            };
            (y0, y1, x0, x1, divisor as f64)
        }
    }
}

pub fn avg_pool2d(x: &[f64], s: &WindowSpec, kind: PoolKind) -> Vec<f64> {
    let planes = s.n * s.c;
    let mut out = vec![0.0; planes * s.oh * s.ow];
    for p in 0..planes {
        let plane = &x[p * s.h * s.w..(p + 1) * s.h * s.w];
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                let (y0, y1, x0, x1, divisor) = avg_window(s, kind, oy, ox);
                let sum: f64 = (y0..y1)
                    .flat_map(|iy| (x0..x1).map(move |ix| plane[iy * s.w + ix]))
                    .sum();
                out[(p * s.oh + oy) * s.ow + ox] = sum / divisor;
            }
        }
    }
    out
}

/// Each output's gradient, divided by its divisor, goes to every pixel it averaged.
pub fn avg_pool2d_backward(dy: &[f64], s: &WindowSpec, kind: PoolKind) -> Vec<f64> {
    let planes = s.n * s.c;
    let mut dx = vec![0.0; planes * s.h * s.w];
    for p in 0..planes {
        let plane = &mut dx[p * s.h * s.w..(p + 1) * s.h * s.w];
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                let (y0, y1, x0, x1, divisor) = avg_window(s, kind, oy, ox);
                let g = dy[(p * s.oh + oy) * s.ow + ox] / divisor;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        plane[iy * s.w + ix] += g;
                    }
                }
            }
        }
    }
    dx
}
