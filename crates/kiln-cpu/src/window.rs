//! Sliding windows over compact NCHW data: im2col/col2im for convolution, and pooling.

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

/// `[n, c, h, w]` -> `[n, c*kh*kw, oh*ow]`; out-of-image taps are zero.
pub fn im2col(x: &[f32], s: &WindowSpec) -> Vec<f32> {
    let (l, rows) = (s.oh * s.ow, s.c * s.kh * s.kw);
    let mut out = vec![0.0; s.n * rows * l];
    for n in 0..s.n {
        for c in 0..s.c {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let row = (c * s.kh + ky) * s.kw + kx;
                    for oy in 0..s.oh {
                        let Some(iy) = source(oy, ky, s.stride.0, s.padding.0, s.dilation.0, s.h)
                        else {
                            continue;
                        };
                        for ox in 0..s.ow {
                            let Some(ix) =
                                source(ox, kx, s.stride.1, s.padding.1, s.dilation.1, s.w)
                            else {
                                continue;
                            };
                            out[(n * rows + row) * l + oy * s.ow + ox] =
                                x[((n * s.c + c) * s.h + iy) * s.w + ix];
                        }
                    }
                }
            }
        }
    }
    out
}

/// `[n, c*kh*kw, oh*ow]` columns -> `[n, c, h, w]` image, summing every tap that lands
/// on a pixel: the adjoint of `im2col` (here `h, w` is the image being rebuilt).
pub fn col2im(cols: &[f32], s: &WindowSpec) -> Vec<f32> {
    let (l, rows) = (s.oh * s.ow, s.c * s.kh * s.kw);
    let mut out = vec![0.0; s.n * s.c * s.h * s.w];
    for n in 0..s.n {
        for c in 0..s.c {
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let row = (c * s.kh + ky) * s.kw + kx;
                    for oy in 0..s.oh {
                        let Some(iy) = source(oy, ky, s.stride.0, s.padding.0, s.dilation.0, s.h)
                        else {
                            continue;
                        };
                        for ox in 0..s.ow {
                            let Some(ix) =
                                source(ox, kx, s.stride.1, s.padding.1, s.dilation.1, s.w)
                            else {
                                continue;
                            };
                            out[((n * s.c + c) * s.h + iy) * s.w + ix] +=
                                cols[(n * rows + row) * l + oy * s.ow + ox];
                        }
                    }
                }
            }
        }
    }
    out
}

/// Values and flat `iy*w + ix` indices of each window's first maximum; padding is -inf.
pub fn max_pool2d(x: &[f32], s: &WindowSpec) -> (Vec<f32>, Vec<i32>) {
    let planes = s.n * s.c;
    let mut values = vec![0.0; planes * s.oh * s.ow];
    let mut indices = vec![0; planes * s.oh * s.ow];
    for p in 0..planes {
        let plane = &x[p * s.h * s.w..(p + 1) * s.h * s.w];
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                let (mut best, mut idx) = (f32::NEG_INFINITY, -1i32);
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

pub fn avg_pool2d(x: &[f32], s: &WindowSpec, kind: PoolKind) -> Vec<f32> {
    let planes = s.n * s.c;
    let mut out = vec![0.0; planes * s.oh * s.ow];
    for p in 0..planes {
        let plane = &x[p * s.h * s.w..(p + 1) * s.h * s.w];
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                let (y0, y1, x0, x1, divisor) = match kind {
                    PoolKind::AdaptiveAvg => {
                        let (y0, y1) = (oy * s.h / s.oh, ((oy + 1) * s.h).div_ceil(s.oh));
                        let (x0, x1) = (ox * s.w / s.ow, ((ox + 1) * s.w).div_ceil(s.ow));
                        (y0, y1, x0, x1, ((y1 - y0) * (x1 - x0)) as f32)
                    }
                    PoolKind::Avg { count_include_pad } => {
                        // Window in padded coordinates, clipped to the padded image for the
                        // divisor (PyTorch) and to the real image for the sum.
                        let py0 = oy * s.stride.0;
                        let px0 = ox * s.stride.1;
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
                        (y0, y1, x0, x1, divisor as f32)
                    }
                };
                let mut sum = 0.0;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        sum += plane[iy * s.w + ix];
                    }
                }
                out[(p * s.oh + oy) * s.ow + ox] = sum / divisor;
            }
        }
    }
    out
}
