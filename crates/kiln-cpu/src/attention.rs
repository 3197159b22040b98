//! Fused attention and its gradients, query by query in f64: the reference for the GPU
//! kernels (kiln-core's `AttentionSpec`). Heads run in parallel.

use crate::threads::{self, PARALLEL_FLOPS};
use kiln_core::{AttentionGradLayouts, AttentionSpec, MatmulOperand};

/// Where element (head, row, feature) of an operand or a gradient lies.
#[derive(Clone, Copy)]
struct Place {
    at: MatmulOperand,
    batch1: usize,
}

impl Place {
    fn of(s: &AttentionSpec, at: MatmulOperand) -> Place {
        Place {
            at,
            batch1: s.batch[1].max(1),
        }
    }

    fn index(&self, head: usize, row: usize, col: usize) -> usize {
        let (b0, b1, a) = (head / self.batch1, head % self.batch1, &self.at);
        a.offset + b0 * a.batch[0] + b1 * a.batch[1] + row * a.row_stride + col * a.col_stride
    }
}

/// An operand read through its strides.
struct Operand<'a> {
    data: &'a [f64],
    place: Place,
}

impl Operand<'_> {
    fn get(&self, head: usize, row: usize, col: usize) -> f64 {
        self.data[self.place.index(head, row, col)]
    }
}

/// The keys query `i` sees: `0..visible`.
fn visible(s: &AttentionSpec, i: usize) -> usize {
    match s.causal {
        true => (i + 1).min(s.keys),
        false => s.keys,
    }
}

/// Query `i`'s scaled scores over the keys it sees.
fn scores(s: &AttentionSpec, q: &Operand, k: &Operand, head: usize, i: usize) -> Vec<f64> {
    (0..visible(s, i))
        .map(|j| {
            let dot: f64 = (0..s.head_dim)
                .map(|c| q.get(head, i, c) * k.get(head, j, c))
                .sum();
            s.scale * dot
        })
        .collect()
}

/// The largest score; NaN if any is NaN, as PyTorch's softmax.
fn max_of(scores: &[f64]) -> f64 {
    scores
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| match m.is_nan() || x.is_nan() {
            true => f64::NAN,
            false => m.max(x),
        })
}

/// Each head's work, in parallel when there is enough of it.
fn per_head<T: Send>(s: &AttentionSpec, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    let flops = s.heads() * s.queries * s.keys * (s.head_dim + s.value_dim);
    threads::map_indices(s.heads(), flops >= PARALLEL_FLOPS, f)
}

fn operands<'a>(s: &AttentionSpec, q: &'a [f64], k: &'a [f64], v: &'a [f64]) -> [Operand<'a>; 3] {
    [(q, s.q), (k, s.k), (v, s.v)].map(|(data, at)| Operand {
        data,
        place: Place::of(s, at),
    })
}

/// The output (`heads * queries * value_dim` elements, at `s.out`, which
/// `AttentionSpec::check_out` has found dense) and each query's log-sum-exp `[heads,
/// queries]`.
pub fn attention(q: &[f64], k: &[f64], v: &[f64], s: &AttentionSpec) -> (Vec<f64>, Vec<f64>) {
    let [q, k, v] = operands(s, q, k, v);
    let heads = per_head(s, |h| {
        let mut out = Vec::with_capacity(s.queries * s.value_dim);
        let mut lse = Vec::with_capacity(s.queries);
        for i in 0..s.queries {
            let scores = scores(s, &q, &k, h, i);
            let m = max_of(&scores);
            let p: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
            let total: f64 = p.iter().sum();
            for c in 0..s.value_dim {
                let sum: f64 = p.iter().enumerate().map(|(j, p)| p * v.get(h, j, c)).sum();
                out.push(sum / total);
            }
            lse.push(m + total.ln());
        }
        (out, lse)
    });
    let (out, lse): (Vec<_>, Vec<_>) = heads.into_iter().unzip();
    let place = Place::of(s, s.out);
    let mut placed = vec![0.0; s.heads() * s.queries * s.value_dim];
    for (h, head) in out.iter().enumerate() {
        for (r, row) in head.chunks(s.value_dim.max(1)).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                placed[place.index(h, r, c)] = x;
            }
        }
    }
    (placed, lse.concat())
}

/// The gradients of `q`, `k` and `v` in one buffer of `layouts.len`, each where
/// `layouts` says, from the output `out` (at `s.out`) and log-sum-exp `lse`, and the
/// output's gradient `grad` read at `layouts.grad`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    out: &[f64],
    lse: &[f64],
    grad: &[f64],
    s: &AttentionSpec,
    layouts: &AttentionGradLayouts,
) -> Vec<f64> {
    let [q, k, v] = operands(s, q, k, v);
    let grad = Operand {
        data: grad,
        place: Place::of(s, layouts.grad),
    };
    let out = Operand {
        data: out,
        place: Place::of(s, s.out),
    };
    let (d, dv_len) = (s.head_dim, s.value_dim);
    let heads = per_head(s, |h| {
        let mut dq = vec![0.0; s.queries * d];
        let mut dk = vec![0.0; s.keys * d];
        let mut dv = vec![0.0; s.keys * dv_len];
        for i in 0..s.queries {
            let row = h * s.queries + i;
            let g: Vec<f64> = (0..dv_len).map(|c| grad.get(h, i, c)).collect();
            // sum_j p_j dp_j, with dp_j = g . v_j: the softmax's backward term.
            let delta: f64 = (0..dv_len).map(|c| g[c] * out.get(h, i, c)).sum();
            for (j, score) in scores(s, &q, &k, h, i).into_iter().enumerate() {
                let p = (score - lse[row]).exp();
                let dp: f64 = (0..dv_len).map(|c| g[c] * v.get(h, j, c)).sum();
                let ds = p * (dp - delta) * s.scale;
                for c in 0..d {
                    dq[i * d + c] += ds * k.get(h, j, c);
                    dk[j * d + c] += ds * q.get(h, i, c);
                }
                for c in 0..dv_len {
                    dv[j * dv_len + c] += p * g[c];
                }
            }
        }
        [dq, dk, dv]
    });
    let mut placed = vec![0.0; layouts.len];
    // Gradient `which` of each head, its rows placed where `at` puts them.
    let mut place = |at: &MatmulOperand, features: usize, which: usize| {
        let to = Place::of(s, *at);
        for (h, grads) in heads.iter().enumerate() {
            for (e, &x) in grads[which].iter().enumerate() {
                placed[to.index(h, e / features, e % features)] = x;
            }
        }
    };
    place(&layouts.dq, d, 0);
    place(&layouts.dk, d, 1);
    place(&layouts.dv, dv_len, 2);
    placed
}
