//! The fused LSTM step and its gradient, element by element in f64: the reference for
//! the GPU kernels. The formula is kiln-core's `LstmCellSpec`.

use kiln_core::LstmCellSpec;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The activated gates of row `b`, unit `j`: (i, f, g, o).
fn gates(z: &[f64], b: usize, j: usize, hidden: usize) -> (f64, f64, f64, f64) {
    let at = |k: usize| z[b * 4 * hidden + k * hidden + j];
    (sigmoid(at(0)), sigmoid(at(1)), at(2).tanh(), sigmoid(at(3)))
}

/// `[h | c']`, `[batch, 2 * hidden]`.
pub fn lstm_cell(z: &[f64], c: &[f64], s: &LstmCellSpec) -> Vec<f64> {
    let h = s.hidden;
    let mut out = vec![0.0; s.batch * 2 * h];
    for b in 0..s.batch {
        for j in 0..h {
            let (i, f, g, o) = gates(z, b, j, h);
            let c1 = f * c[b * h + j] + i * g;
            out[b * 2 * h + j] = o * c1.tanh();
            out[b * 2 * h + h + j] = c1;
        }
    }
    out
}

/// The gradients of `z` and `c` given `grad = [dh | dc']`.
pub fn lstm_cell_backward(
    z: &[f64],
    c: &[f64],
    grad: &[f64],
    s: &LstmCellSpec,
) -> (Vec<f64>, Vec<f64>) {
    let h = s.hidden;
    let (mut dz, mut dc) = (vec![0.0; s.batch * 4 * h], vec![0.0; s.batch * h]);
    for b in 0..s.batch {
        for j in 0..h {
            let (i, f, g, o) = gates(z, b, j, h);
            let c0 = c[b * h + j];
            let tc = (f * c0 + i * g).tanh();
            let dh = grad[b * 2 * h + j];
            // Through h = o * tanh(c') into c', plus c''s own upstream gradient.
            let dc1 = grad[b * 2 * h + h + j] + dh * o * (1.0 - tc * tc);
            let row = &mut dz[b * 4 * h..(b + 1) * 4 * h];
            row[j] = dc1 * g * i * (1.0 - i);
            row[h + j] = dc1 * c0 * f * (1.0 - f);
            row[2 * h + j] = dc1 * i * (1.0 - g * g);
            row[3 * h + j] = dh * tc * o * (1.0 - o);
            dc[b * h + j] = dc1 * f;
        }
    }
    (dz, dc)
}
