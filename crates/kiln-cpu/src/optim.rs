//! Fused optimizer steps, element by element in f64: the reference the GPU kernels are
//! checked against. Each formula is its spec's (kiln-core's `spec.rs`).

use kiln_core::{AdamSpec, OptimizerStep, RmsPropSpec, SgdSpec};

/// The new parameter and states of every element.
pub fn update(
    p: &[f64],
    g: &[f64],
    states: &[Vec<f64>],
    step: &OptimizerStep,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = p.len();
    let mut p_out = vec![0.0; n];
    let mut s_out = vec![vec![0.0; n]; states.len()];
    for i in 0..n {
        let s_in: Vec<f64> = states.iter().map(|s| s[i]).collect();
        let (p1, s1) = match step {
            OptimizerStep::Adam(spec) => adam(p[i], g[i], &s_in, spec),
            OptimizerStep::SgdMomentum(spec) => sgd(p[i], g[i], &s_in, spec),
            OptimizerStep::RmsProp(spec) => rmsprop(p[i], g[i], &s_in, spec),
        };
        p_out[i] = p1;
        for (out, v) in s_out.iter_mut().zip(s1) {
            out[i] = v;
        }
    }
    (p_out, s_out)
}

fn adam(p: f64, g: f64, s: &[f64], spec: &AdamSpec) -> (f64, Vec<f64>) {
    let [b1, b2, eps, step, inv_c2, coupled, factor] = [
        spec.beta1,
        spec.beta2,
        spec.eps,
        spec.step_size,
        spec.inv_correction2,
        spec.coupled_decay,
        spec.decay_factor,
    ]
    .map(f64::from);
    let g = g + coupled * p;
    let m = b1 * s[0] + (1.0 - b1) * g;
    let v = b2 * s[1] + (1.0 - b2) * g * g;
    (
        p * factor - step * m / ((v * inv_c2).sqrt() + eps),
        vec![m, v],
    )
}

fn sgd(p: f64, g: f64, s: &[f64], spec: &SgdSpec) -> (f64, Vec<f64>) {
    let [lr, momentum, decay] = [spec.lr, spec.momentum, spec.weight_decay].map(f64::from);
    let g = g + decay * p;
    let buf = momentum * s[0] + g;
    let direction = if spec.nesterov {
        g + momentum * buf
    } else {
        buf
    };
    (p - lr * direction, vec![buf])
}

fn rmsprop(p: f64, g: f64, s: &[f64], spec: &RmsPropSpec) -> (f64, Vec<f64>) {
    let [lr, alpha, eps, decay] = [spec.lr, spec.alpha, spec.eps, spec.weight_decay].map(f64::from);
    let g = g + decay * p;
    let avg = alpha * s[0] + (1.0 - alpha) * g * g;
    (p - lr * g / (avg.sqrt() + eps), vec![avg])
}
