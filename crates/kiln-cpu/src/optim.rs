//! Fused optimizer steps, element by element in f64: the reference the GPU kernels are
//! checked against. Each formula is its spec's (kiln-core's `spec.rs`).

use kiln_core::{AdamSpec, OptimizerStep, RmsPropSpec, SgdSpec};

/// The new parameter and states of every element (at most two states), in parallel
/// chunks for large parameters.
pub fn update(
    p: &[f64],
    g: &[f64],
    states: &[Vec<f64>],
    step: &OptimizerStep,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let count = states.len();
    // Each element's new parameter and states, side by side.
    let mut rows = vec![[0.0; 3]; p.len()];
    crate::threads::for_chunks(&mut rows, crate::threads::CHUNK_ELEMENTS, |start, part| {
        for (j, row) in part.iter_mut().enumerate() {
            let i = start + j;
            let mut s_in = [0.0; 2];
            for (slot, s) in s_in.iter_mut().zip(states) {
                *slot = s[i];
            }
            let (p1, s1) = match step {
                OptimizerStep::Adam(spec) => adam(p[i], g[i], &s_in, spec),
                OptimizerStep::SgdMomentum(spec) => sgd(p[i], g[i], &s_in, spec),
                OptimizerStep::RmsProp(spec) => rmsprop(p[i], g[i], &s_in, spec),
            };
            *row = [p1, s1[0], s1[1]];
        }
    });
    let p_out = rows.iter().map(|r| r[0]).collect();
    let s_out = (0..count)
        .map(|k| rows.iter().map(|r| r[k + 1]).collect())
        .collect();
    (p_out, s_out)
}

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

fn rmsprop(p: f64, g: f64, s: &[f64; 2], spec: &RmsPropSpec) -> (f64, [f64; 2]) {
    let [lr, c, eps, decay] =
        [spec.lr, spec.one_minus_alpha, spec.eps, spec.weight_decay].map(f64::from);
    let g = g + decay * p;
    let avg = s[0] + c * (g * g - s[0]);
    (p - lr * g / (avg.sqrt() + eps), [avg, 0.0])
}
