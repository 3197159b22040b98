//! Max and average pooling over compact NCHW data, and their gradients.

use crate::window::{source, tap_row, valid_outputs, Real};
use kiln_core::{PoolKind, WindowSpec};
use std::mem::MaybeUninit;

/// Values and flat `iy*w + ix` indices of each window's first maximum; padding is -inf.
/// A NaN wins (the window's last NaN), as in PyTorch.
/// Planes pool in parallel.
pub fn max_pool2d<T: Real + Send + Sync>(x: &[T], s: &WindowSpec) -> (Vec<T>, Vec<i32>) {
    let (plane, l) = (s.h * s.w, s.oh * s.ow);
    let halves = s.kh == 2 && s.kw == 2 && s.stride == (2, 2) && s.padding == (0, 0);
    let halves = halves && s.dilation == (1, 1);
    // SAFETY: each chunk is one plane's `oh` rows of `ow` outputs, and both functions
    // write every output of the plane they are given.
    let indices = unsafe {
        crate::threads::build(s.n * s.c * l, l.max(1), |start, out| {
            let image = &x[start / l.max(1) * plane..][..plane];
            if halves {
                argmax_2x2(image, s, out)
            } else {
                argmax_windows(image, s, out)
            }
        })
    };
    // Plane by plane (a division per output to find its plane cost as much as pooling),
    // in parallel, a plane per chunk: collected on the calling thread, this pass made a
    // CNN's first max pool half as slow again at two threads (186 against 128 us).
    // SAFETY: each chunk is one plane's outputs, and the zip writes each of them.
    let values = unsafe {
        crate::threads::build(s.n * s.c * l, l.max(1), |start, out| {
            let image = &x[start / l.max(1) * plane..][..plane];
            for (o, &i) in out.iter_mut().zip(&indices[start..]) {
                o.write(match usize::try_from(i) {
                    Ok(i) => image[i],
                    Err(_) => T::NEG_INFINITY,
                });
            }
        })
    };
    (values, indices)
}

/// Whether a window's next tap `v` beats the best so far: larger, or NaN.
#[inline(always)]
fn beats<T: Real>(v: T, best: T) -> bool {
    // `v != v`: NaN, without a float trait for it. `|`, not `||`: nothing to branch on.
    #[allow(clippy::eq_op)]
    let nan = v != v;
    (v > best) | nan
}

/// Makes tap `(v, i)` the window's best if `take`. Masks, not `if`: LLVM turned an `if`
/// into a branch, and which tap wins is data.
#[inline(always)]
fn keep<T: Real>(take: bool, (v, i): (T, i32), best: &mut T, idx: &mut i32) {
    let mask = -(take as i32);
    *best = T::choose(take, v, *best);
    *idx = (i & mask) | (*idx & !mask);
}

/// Each window's first maximum in one image plane, for any window: one output row at a
/// time, tap by tap across the row. Every output still meets its taps in row-major
/// order (so the first maximum wins), and the choice is a select, not a branch (which
/// tap wins is data: a mispredicted branch per tap made pooling a fifth of a CNN step).
fn argmax_windows<T: Real>(image: &[T], s: &WindowSpec, out: &mut [MaybeUninit<i32>]) {
    let mut best = vec![T::NEG_INFINITY; s.ow];
    let mut idx = vec![-1i32; s.ow];
    for (oy, out) in out.chunks_exact_mut(s.ow.max(1)).enumerate() {
        best.fill(T::NEG_INFINITY);
        idx.fill(-1);
        for ky in 0..s.kh {
            let Some(iy) = source(oy, ky, s.stride.0, s.padding.0, s.dilation.0, s.h) else {
                continue;
            };
            for kx in 0..s.kw {
                let xs = valid_outputs(kx, s.stride.1, s.padding.1, s.dilation.1, s.w, s.ow);
                if xs.is_empty() {
                    continue;
                }
                let (first, taps) = tap_row(image, s, iy, kx, xs.clone());
                let taps = taps.iter().step_by(s.stride.1);
                let outs = best[xs.clone()].iter_mut().zip(&mut idx[xs]);
                for (((b, j), &v), i) in outs.zip(taps).zip((first..).step_by(s.stride.1)) {
                    keep(beats(v, *b) | (*j < 0), (v, i as i32), b, j);
                }
            }
        }
        out.iter_mut().zip(&idx).for_each(|(o, &i)| _ = o.write(i));
    }
}

/// `argmax_windows` for 2x2 windows at stride 2 without padding (most CNNs' pooling):
/// each output's four taps are read as two pairs, and the first is the starting best, so
/// no output needs a "nothing yet" test. `argmax_windows` is the reference in a test.
fn argmax_2x2<T: Real>(image: &[T], s: &WindowSpec, out: &mut [MaybeUninit<i32>]) {
    for (oy, out) in out.chunks_exact_mut(s.ow.max(1)).enumerate() {
        let top = 2 * oy * s.w;
        let rows = (&image[top..][..2 * s.ow], &image[top + s.w..][..2 * s.ow]);
        let pairs = rows.0.chunks_exact(2).zip(rows.1.chunks_exact(2));
        for (ox, (o, (upper, lower))) in out.iter_mut().zip(pairs).enumerate() {
            let first = (top + 2 * ox) as i32;
            let (mut best, mut idx) = (upper[0], first);
            let below = first + s.w as i32;
            for (v, i) in [
                (upper[1], first + 1),
                (lower[0], below),
                (lower[1], below + 1),
            ] {
                keep(beats(v, best), (v, i), &mut best, &mut idx);
            }
            o.write(idx);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs an argmax over a whole `h x w` plane and returns its indices.
    fn indices(
        f: fn(&[f32], &WindowSpec, &mut [MaybeUninit<i32>]),
        image: &[f32],
        s: &WindowSpec,
    ) -> Vec<i32> {
        let mut out = vec![MaybeUninit::new(i32::MIN); s.oh * s.ow];
        f(image, s, &mut out);
        // SAFETY: every element was initialised (to i32::MIN) before `f` ran.
        out.iter().map(|o| unsafe { o.assume_init() }).collect()
    }

    #[test]
    fn the_2x2_path_picks_the_same_taps_as_the_general_one() {
        // Odd sizes (a last row and column no window reads), ties everywhere (values
        // from a small set), NaNs and infinities.
        let (h, w) = (9, 11);
        let pick = [
            0.0,
            1.0,
            1.0,
            -2.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
        ];
        for seed in 0..50usize {
            let image: Vec<f32> = (0..h * w)
                .map(|i| pick[(i * 7 + seed * 13 + i * i * seed) % pick.len()])
                .collect();
            let s = WindowSpec {
                n: 1,
                c: 1,
                h,
                w,
                kh: 2,
                kw: 2,
                stride: (2, 2),
                padding: (0, 0),
                dilation: (1, 1),
                oh: 4,
                ow: 5,
            };
            let want = indices(argmax_windows, &image, &s);
            assert_eq!(indices(argmax_2x2, &image, &s), want, "seed {seed}");
            assert!(want.iter().all(|&i| i >= 0), "every window has taps");
        }
    }
}
