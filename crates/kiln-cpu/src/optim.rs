//! Fused optimizer updates, element by element in f64: the reference the GPU kernels
//! are checked against. The formula is `AdamSpec`'s.

use kiln_core::AdamSpec;

/// The new parameter, first and second moment of every element.
pub fn adam_update(
    p: &[f64],
    g: &[f64],
    m: &[f64],
    v: &[f64],
    s: &AdamSpec,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [b1, b2, eps, step, inv_c2, coupled, factor] = [
        s.beta1,
        s.beta2,
        s.eps,
        s.step_size,
        s.inv_correction2,
        s.coupled_decay,
        s.decay_factor,
    ]
    .map(f64::from);
    let n = p.len();
    let (mut p_out, mut m_out, mut v_out) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let grad = g[i] + coupled * p[i];
        let m1 = b1 * m[i] + (1.0 - b1) * grad;
        let v1 = b2 * v[i] + (1.0 - b2) * grad * grad;
        p_out[i] = p[i] * factor - step * m1 / ((v1 * inv_c2).sqrt() + eps);
        m_out[i] = m1;
        v_out[i] = v1;
    }
    (p_out, m_out, v_out)
}
