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

/// Calls `f(iy, ix, oy, ox)` for every tap of every output position that lands inside
/// the image: the one loop nest behind im2col, col2im and the weight gradient.
fn for_each_tap(
    s: &WindowSpec,
    ky: usize,
    kx: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    for oy in 0..s.oh {
        let Some(iy) = source(oy, ky, s.stride.0, s.padding.0, s.dilation.0, s.h) else {
            continue;
        };
        for ox in 0..s.ow {
            let Some(ix) = source(ox, kx, s.stride.1, s.padding.1, s.dilation.1, s.w) else {
                continue;
            };
            f(iy, ix, oy, ox);
        }
    }
}

/// `[n, c, h, w]` -> `[n, c*kh*kw, oh*ow]`; out-of-image taps are zero.
pub fn im2col(x: &[f64], s: &WindowSpec) -> Vec<f64> {
    let (l, rows) = (s.oh * s.ow, s.c * s.kh * s.kw);
    let mut out = vec![0.0; s.n * rows * l];
    for n in 0..s.n {
        for c in 0..s.c {
            let image = &x[(n * s.c + c) * s.h * s.w..][..s.h * s.w];
            for (ky, kx) in (0..s.kh).flat_map(|ky| (0..s.kw).map(move |kx| (ky, kx))) {
                let row = (c * s.kh + ky) * s.kw + kx;
                let cols = &mut out[(n * rows + row) * l..][..l];
                for_each_tap(s, ky, kx, |iy, ix, oy, ox| {
                    cols[oy * s.ow + ox] = image[iy * s.w + ix]
                });
            }
        }
    }
    out
}

/// `[n, c*kh*kw, oh*ow]` columns -> `[n, c, h, w]` image, summing every tap that lands
/// on a pixel: the adjoint of `im2col` (here `h, w` is the image being rebuilt).
pub fn col2im(cols: &[f64], s: &WindowSpec) -> Vec<f64> {
    let (l, rows) = (s.oh * s.ow, s.c * s.kh * s.kw);
    let mut out = vec![0.0; s.n * s.c * s.h * s.w];
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
pub fn max_pool2d(x: &[f64], s: &WindowSpec) -> (Vec<f64>, Vec<i32>) {
    let planes = s.n * s.c;
    let mut values = vec![0.0; planes * s.oh * s.ow];
    let mut indices = vec![0; planes * s.oh * s.ow];
    for p in 0..planes {
        let plane = &x[p * s.h * s.w..(p + 1) * s.h * s.w];
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                let (mut best, mut idx) = (f64::NEG_INFINITY, -1i32);
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
pub fn max_pool2d_backward(dy: &[f64], indices: &[i32], s: &WindowSpec) -> Vec<f64> {
    let (planes, l) = (s.n * s.c, s.oh * s.ow);
    let mut dx = vec![0.0; planes * s.h * s.w];
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
