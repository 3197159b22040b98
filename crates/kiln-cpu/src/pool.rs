//! Max and average pooling over compact NCHW data, and their gradients.

use crate::window::{source, Real};
use kiln_core::{PoolKind, WindowSpec};

/// Values and flat `iy*w + ix` indices of each window's first maximum; padding is -inf.
/// A NaN wins (the window's last NaN), as in PyTorch.
/// Planes pool in parallel.
pub fn max_pool2d<T: Real + Send + Sync>(x: &[T], s: &WindowSpec) -> (Vec<T>, Vec<i32>) {
    let (planes, l) = (s.n * s.c, s.oh * s.ow);
    // The taps of each output row and column that land inside the image, found once.
    let rows: Vec<Vec<usize>> = (0..s.oh)
        .map(|oy| taps(oy, s.kh, s.stride.0, s.padding.0, s.dilation.0, s.h))
        .collect();
    let cols: Vec<Vec<usize>> = (0..s.ow)
        .map(|ox| taps(ox, s.kw, s.stride.1, s.padding.1, s.dilation.1, s.w))
        .collect();
    let parallel = planes * l >= crate::threads::PARALLEL_ELEMENTS;
    let pooled = crate::threads::map_indices(planes, parallel, |p| {
        let plane = &x[p * s.h * s.w..(p + 1) * s.h * s.w];
        let mut values = Vec::with_capacity(l);
        let mut indices = Vec::with_capacity(l);
        for ys in &rows {
            for xs in &cols {
                let (mut best, mut idx) = (T::NEG_INFINITY, -1i32);
                for &iy in ys {
                    for &ix in xs {
                        let v = plane[iy * s.w + ix];
                        // `v != v`: NaN, without a float trait for it.
                        #[allow(clippy::eq_op)]
                        let nan = v != v;
                        if v > best || nan || idx < 0 {
                            best = v;
                            idx = (iy * s.w + ix) as i32;
                        }
                    }
                }
                values.push(best);
                indices.push(idx);
            }
        }
        (values, indices)
    });
    let mut values = Vec::with_capacity(planes * l);
    let mut indices = Vec::with_capacity(planes * l);
    for (v, i) in pooled {
        values.extend(v);
        indices.extend(i);
    }
    (values, indices)
}

/// The input coordinates, in tap order, that output position `o`'s taps read inside an
/// axis of length `size`.
fn taps(
    o: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    size: usize,
) -> Vec<usize> {
    (0..kernel)
        .filter_map(|k| source(o, k, stride, pad, dilation, size))
        .collect()
}

/// Each output's gradient goes to the pixel its maximum came from. Planes in parallel.
pub fn max_pool2d_backward<T: Real + Send + Sync>(
    dy: &[T],
    indices: &[i32],
    s: &WindowSpec,
) -> Vec<T> {
    let (planes, l, plane) = (s.n * s.c, s.oh * s.ow, s.h * s.w);
    let mut dx = vec![T::default(); planes * plane];
    crate::threads::for_chunks(&mut dx, plane.max(1), |start, image| {
        let p = start / plane.max(1);
        for o in 0..l {
            image[indices[p * l + o] as usize] += dy[p * l + o];
        }
    });
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
