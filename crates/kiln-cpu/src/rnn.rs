//! The fused LSTM and GRU steps and their gradients, element by element in f64: the
//! reference for the GPU kernels. The formulas are kiln-core's `LstmCellSpec` and
//! `GruCellSpec`. The loops are compiled for the widest vector unit, with `exp` and
//! `tanh` from `special` (plain arithmetic: `exp`'s multiply-adds run in hardware, not
//! as C library calls, and a cell's elements vectorise).

use crate::special::{exp, tanh};
use kiln_core::{GruCellSpec, LstmCellSpec};

#[inline(always)]
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + exp(-x))
}

/// A row of gate pre-activations `[i | f | g | o]` split into its four gates, each
/// `hidden` long: indexing them by unit lets the loops vectorise, where offsets into
/// the whole row kept a bounds check per element (the backward loop ran scalar).
#[inline(always)]
fn split_gates(row: &[f64], hidden: usize) -> [&[f64]; 4] {
    let (i, rest) = row.split_at(hidden);
    let (f, rest) = rest.split_at(hidden);
    let (g, o) = rest.split_at(hidden);
    [i, f, g, &o[..hidden]]
}

/// The activated gates of unit `j`: (i, f, g, o).
#[inline(always)]
fn gates(z: &[&[f64]; 4], j: usize) -> (f64, f64, f64, f64) {
    (
        sigmoid(z[0][j]),
        sigmoid(z[1][j]),
        tanh(z[2][j]),
        sigmoid(z[3][j]),
    )
}

/// `[h | c']`, `[batch, 2 * hidden]`.
pub fn lstm_cell(z: &[f64], c: &[f64], s: &LstmCellSpec) -> Vec<f64> {
    let mut out = vec![0.0; s.batch * 2 * s.hidden];
    lstm_cell_into(&mut out, z, c, s);
    out
}

widest_loop! {
fn lstm_cell_into<>(out: &mut [f64], z: &[f64], c: &[f64], s: &LstmCellSpec) {
    let h = s.hidden;
    for b in 0..s.batch {
        let zb = split_gates(&z[b * 4 * h..(b + 1) * 4 * h], h);
        let cb = &c[b * h..(b + 1) * h];
        let (hb, c1b) = out[b * 2 * h..(b + 1) * 2 * h].split_at_mut(h);
        for j in 0..h {
            let (i, f, g, o) = gates(&zb, j);
            let c1 = f * cb[j] + i * g;
            hb[j] = o * tanh(c1);
            c1b[j] = c1;
        }
    }
}
}

/// The gradients of `z` and `c` given those of `h` and `c'` (`grads`).
pub fn lstm_cell_backward(
    z: &[f64],
    c: &[f64],
    grads: [&[f64]; 2],
    s: &LstmCellSpec,
) -> (Vec<f64>, Vec<f64>) {
    let (mut dz, mut dc) = (
        vec![0.0; s.batch * 4 * s.hidden],
        vec![0.0; s.batch * s.hidden],
    );
    lstm_cell_backward_into(&mut dz, &mut dc, z, c, grads, s);
    (dz, dc)
}

widest_loop! {
fn lstm_cell_backward_into<>(
    dz: &mut [f64],
    dc: &mut [f64],
    z: &[f64],
    c: &[f64],
    grads: [&[f64]; 2],
    s: &LstmCellSpec,
) {
    let h = s.hidden;
    for b in 0..s.batch {
        let zb = split_gates(&z[b * 4 * h..(b + 1) * 4 * h], h);
        let cb = &c[b * h..(b + 1) * h];
        let [dhb, dc1b] = grads.map(|g| &g[b * h..(b + 1) * h]);
        let dcb = &mut dc[b * h..(b + 1) * h];
        let (di, rest) = dz[b * 4 * h..(b + 1) * 4 * h].split_at_mut(h);
        let (df, rest) = rest.split_at_mut(h);
        let (dg, d_o) = rest.split_at_mut(h);
        for j in 0..h {
            let (i, f, g, o) = gates(&zb, j);
            let c0 = cb[j];
            let tc = tanh(f * c0 + i * g);
            let dh = dhb[j];
            // Through h = o * tanh(c') into c', plus c''s own upstream gradient.
            let dc1 = dc1b[j] + dh * o * (1.0 - tc * tc);
            di[j] = dc1 * g * i * (1.0 - i);
            df[j] = dc1 * c0 * f * (1.0 - f);
            dg[j] = dc1 * i * (1.0 - g * g);
            d_o[j] = dh * tc * o * (1.0 - o);
            dcb[j] = dc1 * f;
        }
    }
}
}

/// The activated gates and candidate of row `b`, unit `j` of a GRU step: (r, z, n, hp_n).
#[inline(always)]
fn gru_gates(x: &[f64], hp: &[f64], b: usize, j: usize, hidden: usize) -> (f64, f64, f64, f64) {
    let at = |t: &[f64], k: usize| t[b * 3 * hidden + k * hidden + j];
    let r = sigmoid(at(x, 0) + at(hp, 0));
    let z = sigmoid(at(x, 1) + at(hp, 1));
    let hp_n = at(hp, 2);
    (r, z, tanh(at(x, 2) + r * hp_n), hp_n)
}

/// `h'`, `[batch, hidden]`.
pub fn gru_cell(x: &[f64], hp: &[f64], h: &[f64], s: &GruCellSpec) -> Vec<f64> {
    let mut out = vec![0.0; s.batch * s.hidden];
    gru_cell_into(&mut out, x, hp, h, s);
    out
}

widest_loop! {
fn gru_cell_into<>(out: &mut [f64], x: &[f64], hp: &[f64], h: &[f64], s: &GruCellSpec) {
    let hs = s.hidden;
    for b in 0..s.batch {
        for j in 0..hs {
            let (_, z, n, _) = gru_gates(x, hp, b, j, hs);
            out[b * hs + j] = (1.0 - z) * n + z * h[b * hs + j];
        }
    }
}
}

/// The gradients of `x`, `hp` and `h` given `grad = dh'`.
pub fn gru_cell_backward(
    x: &[f64],
    hp: &[f64],
    h: &[f64],
    grad: &[f64],
    s: &GruCellSpec,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let hs = s.hidden;
    let mut dx = vec![0.0; s.batch * 3 * hs];
    let mut dhp = vec![0.0; s.batch * 3 * hs];
    let mut dh = vec![0.0; s.batch * hs];
    gru_cell_backward_into(&mut dx, &mut dhp, &mut dh, x, hp, h, grad, s);
    (dx, dhp, dh)
}

widest_loop! {
#[allow(clippy::too_many_arguments)] // the cell's three gradients and four inputs
fn gru_cell_backward_into<>(
    dx: &mut [f64],
    dhp: &mut [f64],
    dh: &mut [f64],
    x: &[f64],
    hp: &[f64],
    h: &[f64],
    grad: &[f64],
    s: &GruCellSpec,
) {
    let hs = s.hidden;
    for b in 0..s.batch {
        for j in 0..hs {
            let (r, z, n, hp_n) = gru_gates(x, hp, b, j, hs);
            let g = grad[b * hs + j];
            let dn = g * (1.0 - z) * (1.0 - n * n);
            let dz = g * (h[b * hs + j] - n) * z * (1.0 - z);
            let dr = dn * hp_n * r * (1.0 - r);
            let row = b * 3 * hs + j;
            (dx[row], dx[row + hs], dx[row + 2 * hs]) = (dr, dz, dn);
            (dhp[row], dhp[row + hs], dhp[row + 2 * hs]) = (dr, dz, dn * r);
            dh[b * hs + j] = g * z;
        }
    }
}
}
