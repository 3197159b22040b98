//! Fused optimizer steps, element by element in f64: the reference the GPU kernels are
//! checked against. Each formula is its spec's (kiln-core's `spec.rs`), on the gradient
//! times its update's `grad_scale`.

use crate::threads::{CHUNK_ELEMENTS, PARALLEL_ELEMENTS};
use kiln_core::{AdamSpec, MovingAverageSpec, OptimizerStep, RmsPropSpec, SgdSpec};
use std::mem::MaybeUninit;

/// The new parameter and states of every element (at most two states), each computed in
/// f64 from the inputs as they are read and rounded by `round` as it is written: one
/// pass over the parameter's elements, in parallel chunks for large parameters. The
/// gradient is `scale * g`.
pub fn update<T: Copy + Sync + Into<f64>, U: Send>(
    p: &[T],
    (g, scale): (&[T], f32),
    states: &[&[T]],
    step: &OptimizerStep,
    round: impl Fn(f64) -> U + Sync,
) -> (Vec<U>, Vec<Vec<U>>) {
    let chunk_of = |start: usize, parts: &mut [&mut [MaybeUninit<U>]]| {
        let states: Vec<&[T]> = states.iter().map(|s| &s[start..]).collect();
        let g = (&g[start..], scale);
        step_chunk(parts, &p[start..], g, &states, step, &round)
    };
    // SAFETY: `step_chunk` writes every element of the parameter's and each state's chunk.
    let mut outs = unsafe {
        crate::threads::build_several(1 + states.len(), p.len(), CHUNK_ELEMENTS, chunk_of)
    };
    let p_out = outs.remove(0);
    (p_out, outs)
}

/// Elements an in-place step computes at a time into a buffer of its own, then copies
/// over the parameter and states: `step_chunk` reads its inputs apart from its outputs.
const IN_PLACE_BLOCK: usize = 256;

/// `update` of f32 values written over the parameter and its states (at most two), the
/// same bits: in parallel chunks for large parameters, each stepped in blocks through
/// a buffer on the stack, so no parameter-sized memory is taken.
pub fn update_in_place(
    p: &mut [f32],
    (g, scale): (&[f32], f32),
    states: &mut [&mut [f32]],
    step: &OptimizerStep,
) {
    let len = p.len();
    let mut splits: Vec<_> = std::iter::once(p)
        .chain(states.iter_mut().map(|s| &mut **s))
        .map(|s| s.chunks_mut(CHUNK_ELEMENTS))
        .collect();
    let tasks: Vec<(usize, Vec<&mut [f32]>)> = (0..len.div_ceil(CHUNK_ELEMENTS))
        .map(|i| {
            let parts = splits.iter_mut().map(|s| s.next().expect("equally long"));
            (i * CHUNK_ELEMENTS, parts.collect())
        })
        .collect();
    crate::threads::run_tasks(tasks, len >= PARALLEL_ELEMENTS, |(start, mut parts)| {
        step_in_place(&mut parts, (&g[start..], scale), step)
    });
}

/// One chunk of `update_in_place`: `parts` are the parameter's and states' elements,
/// `g` the gradient from the same element on.
fn step_in_place(parts: &mut [&mut [f32]], (g, scale): (&[f32], f32), step: &OptimizerStep) {
    let n = parts[0].len();
    let mut scratch = [[MaybeUninit::<f32>::uninit(); IN_PLACE_BLOCK]; 3];
    for from in (0..n).step_by(IN_PLACE_BLOCK) {
        let to = (from + IN_PLACE_BLOCK).min(n);
        let block = to - from;
        {
            let [a, b, c] = &mut scratch;
            let mut outs = [&mut a[..block], &mut b[..block], &mut c[..block]];
            let mut states: [&[f32]; 2] = [&[], &[]];
            for (s, part) in states.iter_mut().zip(&parts[1..]) {
                *s = &part[from..to];
            }
            let (outs, states) = (&mut outs[..parts.len()], &states[..parts.len() - 1]);
            step_chunk(
                outs,
                &parts[0][from..to],
                (&g[from..to], scale),
                states,
                step,
                &|v| v as f32,
            );
        }
        for (part, out) in parts.iter_mut().zip(&scratch) {
            for (dst, src) in part[from..to].iter_mut().zip(&out[..block]) {
                // SAFETY: `step_chunk` wrote every element of each of its outputs.
                *dst = unsafe { src.assume_init() };
            }
        }
    }
}

widest_loop! {
    /// One chunk of `update`: `parts` are the chunks of the new parameter and states,
    /// the inputs start at the chunk's first element. The optimizer is matched once per
    /// chunk, so that each one's loop vectorises.
    fn step_chunk<T, U>(
        parts: &mut [&mut [MaybeUninit<U>]],
        p: &[T],
        g_scaled: (&[T], f32),
        states: &[&[T]],
        step: &OptimizerStep,
        round: &impl Fn(f64) -> U,
    ) where [T: Copy + Into<f64>] {
        let (g, scale) = g_scaled;
        let n = parts.first().map_or(0, |part| part.len());
        let (p, g) = (&p[..n], &g[..n]);
        let scale = f64::from(scale);
        let grad = |i: usize| scale * g[i].into();
        match (step, parts, states) {
            (OptimizerStep::Adam(spec), [po, mo, vo], [m, v]) => {
                let (m, v) = (&m[..n], &v[..n]);
                for i in 0..n {
                    let (p1, [m1, v1]) = adam(p[i].into(), grad(i), &[m[i].into(), v[i].into()], spec);
                    po[i].write(round(p1));
                    mo[i].write(round(m1));
                    vo[i].write(round(v1));
                }
            }
            (OptimizerStep::SgdMomentum(spec), [po], []) => {
                for i in 0..n {
                    let (p1, _) = sgd(p[i].into(), grad(i), &[0.0, 0.0], spec);
                    po[i].write(round(p1));
                }
            }
            (OptimizerStep::SgdMomentum(spec), [po, bo], [b]) => {
                let b = &b[..n];
                for i in 0..n {
                    let (p1, [b1, _]) = sgd(p[i].into(), grad(i), &[b[i].into(), 0.0], spec);
                    po[i].write(round(p1));
                    bo[i].write(round(b1));
                }
            }
            (OptimizerStep::RmsProp(spec), [po, ao], [a]) => {
                let a = &a[..n];
                for i in 0..n {
                    let (p1, [a1, _]) = rmsprop(p[i].into(), grad(i), &[a[i].into(), 0.0], spec);
                    po[i].write(round(p1));
                    ao[i].write(round(a1));
                }
            }
            (OptimizerStep::MovingAverage(spec), [po], []) => {
                for i in 0..n {
                    po[i].write(round(moving_average(p[i].into(), grad(i), spec)));
                }
            }
            _ => unreachable!("`OptimizerStep::states` states for each step"),
        }
    }
}

#[inline(always)]
fn adam(p: f64, g: f64, s: &[f64; 2], spec: &AdamSpec) -> (f64, [f64; 2]) {
    let [c1, c2, eps, step, inv_c2, coupled, factor] = [
        spec.one_minus_beta1,
        spec.one_minus_beta2,
        spec.eps,
        spec.step_size,
        spec.inv_correction2,
        spec.coupled_decay,
        spec.decay_factor,
    ]
    .map(f64::from);
    let g = g + coupled * p;
    let m = s[0] + c1 * (g - s[0]);
    let v = s[1] + c2 * (g * g - s[1]);
    (p * factor - step * m / ((v * inv_c2).sqrt() + eps), [m, v])
}

#[inline(always)]
fn sgd(p: f64, g: f64, s: &[f64; 2], spec: &SgdSpec) -> (f64, [f64; 2]) {
    let [lr, momentum, decay] = [spec.lr, spec.momentum, spec.weight_decay].map(f64::from);
    let g = g + decay * p;
    let buf = momentum * s[0] + g;
    let direction = if spec.nesterov {
        g + momentum * buf
    } else {
        buf
    };
    (p - lr * direction, [buf, 0.0])
}

#[inline(always)]
fn rmsprop(p: f64, g: f64, s: &[f64; 2], spec: &RmsPropSpec) -> (f64, [f64; 2]) {
    let [lr, c, eps, decay] =
        [spec.lr, spec.one_minus_alpha, spec.eps, spec.weight_decay].map(f64::from);
    let g = g + decay * p;
    let avg = s[0] + c * (g * g - s[0]);
    (p - lr * g / (avg.sqrt() + eps), [avg, 0.0])
}

#[inline(always)]
fn moving_average(p: f64, g: f64, spec: &MovingAverageSpec) -> f64 {
    f64::from(spec.decay) * p + f64::from(spec.one_minus_decay) * g
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 inputs read in place and rounded as they are written give the bits of the
    /// same step on inputs widened to f64 first and rounded after, for each optimizer,
    /// over a parameter long enough to be split between threads; written over the
    /// inputs, the same bits again.
    #[test]
    fn the_f32_step_is_the_f64_step_rounded() {
        let n = 70_001;
        let wave = |k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin()).collect() };
        let (p, g, m, v) = (wave(0.1), wave(0.37), wave(0.05), wave(0.21));
        let v: Vec<f32> = v.iter().map(|x| x.abs()).collect();
        let steps = [
            OptimizerStep::Adam(AdamSpec {
                one_minus_beta1: 0.1,
                one_minus_beta2: 0.001,
                eps: 1e-8,
                step_size: 1e-3,
                inv_correction2: 10.0,
                coupled_decay: 0.01,
                decay_factor: 0.999,
            }),
            OptimizerStep::SgdMomentum(SgdSpec {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-4,
                nesterov: true,
            }),
            OptimizerStep::RmsProp(RmsPropSpec {
                lr: 0.01,
                one_minus_alpha: 0.01,
                eps: 1e-8,
                weight_decay: 0.0,
            }),
            OptimizerStep::MovingAverage(MovingAverageSpec {
                decay: 0.9,
                one_minus_decay: 0.1,
            }),
        ];
        let wide = |x: &[f32]| -> Vec<f64> { x.iter().map(|&v| v as f64).collect() };
        for step in &steps {
            let states: &[&[f32]] = match step {
                OptimizerStep::Adam(_) => &[&m, &v],
                OptimizerStep::MovingAverage(_) => &[],
                _ => &[&m],
            };
            let (p1, s1) = update(&p, (&g, 0.75), states, step, |x| x as f32);
            let wide_states: Vec<Vec<f64>> = states.iter().map(|s| wide(s)).collect();
            let wide_refs: Vec<&[f64]> = wide_states.iter().map(|s| &s[..]).collect();
            let (p2, s2) = update(&wide(&p), (&wide(&g), 0.75), &wide_refs, step, |x| x);
            let same = |a: &[f32], b: &[f64]| {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, &y)| x.to_bits() == (y as f32).to_bits())
            };
            assert!(same(&p1, &p2), "{step:?}: parameter");
            for (a, b) in s1.iter().zip(&s2) {
                assert!(same(a, b), "{step:?}: state");
            }
            assert_eq!(s1.len(), states.len());
            let (mut p3, mut s3) = (p.clone(), vec![m.clone(), v.clone()]);
            s3.truncate(states.len());
            let mut s3_refs: Vec<&mut [f32]> = s3.iter_mut().map(|s| &mut s[..]).collect();
            update_in_place(&mut p3, (&g, 0.75), &mut s3_refs, step);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p3), bits(&p1), "{step:?}: parameter in place");
            for (a, b) in s3.iter().zip(&s1) {
                assert_eq!(bits(a), bits(b), "{step:?}: state in place");
            }
        }
    }
}
