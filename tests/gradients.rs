//! Autograd: every differentiable op passes gradcheck (f64 finite differences on the
//! CPU), its GPU gradients match the CPU's, a hand-derived case per op family checks
//! the rules against algebra, and the graph behaves: no_grad, detach, accumulation,
//! loud errors for ops without a rule, the gradient-flow audit, flat GPU memory.

mod common;

use common::*;
use kiln::{
    gradcheck, BinaryOp, Conv2dOptions, DType, Device, Error, GradIssueKind, GradcheckOptions,
    Gradient, ReduceOp, Rng, Tensor, UnaryOp,
};

type F = Box<dyn Fn(&[Tensor]) -> kiln::Result<Tensor>>;

/// The ops under test: a name, its inputs (CPU, f32; i32 inputs are indices) and a
/// function of them. Broadcast and non-contiguous cases are built inside the functions.
fn cases(rng: &mut Rng) -> Vec<(&'static str, Vec<Tensor>, F)> {
    let cpu = Device::cpu();
    let pos = |shape: &[usize], rng: &mut Rng| uniform(shape, 0.5, 2.0, rng);
    let ids = |v: Vec<i32>, shape: &[usize]| Tensor::from_vec(v, shape.to_vec(), &cpu).unwrap();
    let mut c: Vec<(&'static str, Vec<Tensor>, F)> = Vec::new();
    macro_rules! case {
        ($name:expr, [$($input:expr),*], $f:expr) => {
            c.push(($name, vec![$($input),*], Box::new($f)));
        };
    }
    // Every differentiable op of the table, at its example parameters, inside the
    // range where it is smooth; binary ops broadcast their right operand.
    let differentiable = |g: Gradient| g == Gradient::Rule;
    for &op in UnaryOp::EXAMPLES
        .iter()
        .filter(|op| differentiable(op.gradient()))
    {
        let (lo, hi) = unary_domain(op);
        case!(op.name(), [uniform(&[3, 4], lo, hi, rng)], move |t| t[0]
            .unary(op));
    }
    for &op in BinaryOp::EXAMPLES
        .iter()
        .filter(|op| differentiable(op.gradient()))
    {
        let ([(a_lo, a_hi), (b_lo, b_hi)], _) = binary_domain(op);
        let (a, b) = (
            uniform(&[3, 4], a_lo, a_hi, rng),
            uniform(&[4], b_lo, b_hi, rng),
        );
        case!(op.name(), [a, b], move |t| t[0].binary(&t[1], op));
    }
    for &op in ReduceOp::EXAMPLES
        .iter()
        .filter(|op| differentiable(op.gradient()))
    {
        let ((lo, hi), _) = reduce_domain(op);
        case!(op.name(), [uniform(&[3, 5], lo, hi, rng)], move |t| t[0]
            .reduce(op, &[1], false));
    }
    // Methods composed from table ops, and operands in other layouts.
    case!("pow_scalar 2.5", [pos(&[3, 4], rng)], |t| t[0]
        .pow_scalar(2.5));
    case!("scalar arithmetic", [rand(&[3, 4], rng)], |t| t[0]
        .add_scalar(1.5)?
        .mul_scalar(-2.0)?
        .div_scalar(3.0)?
        .sub_scalar(0.5));
    case!(
        "sub broadcast both ways",
        [rand(&[2, 1, 3], rng), rand(&[4, 1], rng)],
        |t| t[0].sub(&t[1])
    );
    case!(
        "mul transposed",
        [rand(&[4, 3], rng), rand(&[3, 4], rng)],
        |t| t[0].t()?.mul(&t[1])
    );
    case!(
        "div by a column",
        [rand(&[3, 4], rng), pos(&[3, 1], rng)],
        |t| t[0].div(&t[1])
    );
    case!(
        "minimum broadcast",
        [rand(&[3, 4], rng), rand(&[1, 4], rng)],
        |t| t[0].minimum(&t[1])
    );
    case!(
        "where",
        [rand(&[3, 4], rng), rand(&[3, 4], rng), rand(&[4], rng)],
        |t| t[0].gt_scalar(0.0)?.where_cond(&t[1], &t[2])
    );
    case!("masked_fill", [rand(&[3, 4], rng)], |t| t[0]
        .masked_fill(&t[0].lt_scalar(0.0)?, 0.25));
    // Views and copies.
    case!("reshape of transpose", [rand(&[3, 4], rng)], |t| t[0]
        .t()?
        .reshape([2, 6])?
        .mul(&t[0].reshape([2, 6])?));
    case!("permute", [rand(&[2, 3, 4], rng)], |t| t[0]
        .permute(&[2, 0, 1])?
        .exp());
    case!("broadcast_to", [rand(&[3, 1], rng)], |t| t[0]
        .broadcast_to([2, 3, 4])?
        .sin());
    case!("narrow", [rand(&[5, 4], rng)], |t| t[0]
        .narrow(0, 1, 3)?
        .narrow(1, 2, 2)?
        .exp());
    case!("squeeze unsqueeze", [rand(&[3, 1, 4], rng)], |t| t[0]
        .squeeze(1)?
        .unsqueeze(0)?
        .tanh());
    case!("contiguous", [rand(&[3, 4], rng)], |t| t[0]
        .t()?
        .contiguous()?
        .square());
    // Reductions.
    case!("sum", [rand(&[3, 4, 2], rng)], |t| t[0]
        .sum(&[0, 2], false)?
        .square());
    case!("sum keepdim", [rand(&[3, 4], rng)], |t| t[0]
        .sum(&[1], true)?
        .mul(&t[0]));
    case!("mean", [rand(&[3, 4], rng)], |t| t[0]
        .mean(&[0], false)?
        .exp());
    case!("max", [rand(&[3, 5], rng)], |t| t[0].max(&[1], false));
    case!("min keepdim", [rand(&[3, 5], rng)], |t| t[0]
        .min(&[0], true));
    case!("max all", [rand(&[4, 3], rng)], |t| t[0].max_all());
    case!("var", [rand(&[4, 5], rng)], |t| t[0].var(&[1], false));
    case!("std", [rand(&[4, 5], rng)], |t| t[0].std(&[0], true));
    case!("softmax last", [rand(&[3, 5], rng)], |t| t[0].softmax(-1));
    case!("softmax first", [rand(&[3, 5], rng)], |t| t[0].softmax(0));
    case!("log_softmax", [rand(&[3, 5], rng)], |t| t[0].log_softmax(1));
    // Matrix products.
    case!("matmul", [rand(&[3, 4], rng), rand(&[4, 5], rng)], |t| t[0]
        .matmul(&t[1]));
    case!(
        "matmul transposed",
        [rand(&[4, 3], rng), rand(&[5, 4], rng)],
        |t| t[0].t()?.matmul(&t[1].t()?)
    );
    case!(
        "matmul batch broadcast",
        [rand(&[2, 1, 3, 4], rng), rand(&[3, 4, 2], rng)],
        |t| t[0].matmul(&t[1])
    );
    // Activations that a later rule reads again (kept by two records).
    case!(
        "gelu read by a product",
        [rand(&[3, 4], rng), rand(&[4, 5], rng)],
        |t| t[0].unary(UnaryOp::GeluErf)?.matmul(&t[1])
    );
    case!(
        "sin and square read by each other's gradients",
        [rand(&[3, 4], rng), rand(&[3, 4], rng)],
        |t| t[0].unary(UnaryOp::Sin)?.mul(&t[1].square()?)
    );
    // A weight every matrix of the batch shares (a linear layer's), plain and as a
    // transposed view, against a batch that is itself a view.
    case!(
        "matmul shared weight",
        [rand(&[2, 3, 4], rng), rand(&[4, 5], rng)],
        |t| t[0].matmul(&t[1])
    );
    case!(
        "matmul shared transposed weight",
        [rand(&[3, 2, 2, 4], rng), rand(&[5, 4], rng)],
        |t| t[0].transpose(0, 1)?.matmul(&t[1].t()?)
    );
    case!(
        "matmul vectors",
        [rand(&[4], rng), rand(&[4, 3], rng), rand(&[3], rng)],
        |t| t[0].matmul(&t[1])?.matmul(&t[2])
    );
    // Convolution and pooling.
    case!(
        "conv2d",
        [
            rand(&[2, 2, 5, 5], rng),
            rand(&[3, 2, 3, 3], rng),
            rand(&[3], rng)
        ],
        |t| {
            t[0].conv2d(
                &t[1],
                Some(&t[2]),
                Conv2dOptions {
                    padding: (1, 1),
                    ..Default::default()
                },
            )
        }
    );
    case!(
        "conv2d strided grouped dilated",
        [rand(&[1, 4, 7, 6], rng), rand(&[2, 2, 2, 3], rng)],
        |t| {
            t[0].conv2d(
                &t[1],
                None,
                Conv2dOptions {
                    stride: (2, 1),
                    padding: (1, 0),
                    dilation: (2, 1),
                    groups: 2,
                },
            )
        }
    );
    case!(
        "conv2d depthwise",
        [rand(&[1, 3, 5, 5], rng), rand(&[3, 1, 3, 3], rng)],
        |t| {
            t[0].conv2d(
                &t[1],
                None,
                Conv2dOptions {
                    groups: 3,
                    ..Default::default()
                },
            )
        }
    );
    case!(
        "conv2d 1x1",
        [rand(&[2, 3, 4, 4], rng), rand(&[2, 3, 1, 1], rng)],
        |t| t[0].conv2d(&t[1], None, Default::default())
    );
    case!(
        "conv1d",
        [
            rand(&[2, 2, 9], rng),
            rand(&[4, 2, 3], rng),
            rand(&[4], rng)
        ],
        |t| t[0].conv1d(&t[1], Some(&t[2]), 2, 1, 1, 1)
    );
    case!(
        "conv_transpose2d",
        [
            rand(&[1, 2, 3, 4], rng),
            rand(&[2, 3, 3, 3], rng),
            rand(&[3], rng)
        ],
        |t| {
            let o = Conv2dOptions {
                stride: (2, 2),
                padding: (1, 1),
                ..Default::default()
            };
            t[0].conv_transpose2d(&t[1], Some(&t[2]), o, (1, 0))
        }
    );
    case!(
        "conv_transpose2d grouped",
        [rand(&[1, 4, 3, 3], rng), rand(&[4, 1, 2, 2], rng)],
        |t| {
            t[0].conv_transpose2d(
                &t[1],
                None,
                Conv2dOptions {
                    groups: 2,
                    ..Default::default()
                },
                (0, 0),
            )
        }
    );
    case!("max_pool2d", [rand(&[2, 2, 6, 5], rng)], |t| t[0]
        .max_pool2d((2, 2), (2, 2), (0, 0)));
    case!("max_pool2d overlapping", [rand(&[1, 2, 5, 5], rng)], |t| t
        [0]
    .max_pool2d((3, 3), (1, 2), (1, 1)));
    case!("avg_pool2d", [rand(&[2, 2, 5, 6], rng)], |t| t[0]
        .avg_pool2d((3, 2), (2, 2), (1, 1), true));
    case!("avg_pool2d exclude pad", [rand(&[1, 2, 5, 5], rng)], |t| t
        [0]
    .avg_pool2d((3, 3), (2, 1), (1, 1), false));
    case!("adaptive_avg_pool2d", [rand(&[1, 2, 7, 5], rng)], |t| t[0]
        .adaptive_avg_pool2d((3, 2)));
    case!("global_avg_pool2d", [rand(&[2, 3, 4, 4], rng)], |t| t[0]
        .global_avg_pool2d());
    // Assembly and indexing.
    case!("cat", [rand(&[2, 3], rng), rand(&[2, 1], rng)], |t| {
        Tensor::cat(&[t[0].clone(), t[1].clone()], 1)
    });
    case!("stack", [rand(&[2, 3], rng), rand(&[2, 3], rng)], |t| {
        Tensor::stack(&[t[0].clone(), t[1].clone()], 0)
    });
    case!("pad", [rand(&[2, 3], rng)], |t| t[0]
        .pad(&[(1, 2), (2, 0)], 0.5));
    // Many slices of one tensor: side by side along one dim with gaps and an empty one
    // (on the CPU the reverse pass puts their gradients in place in one cat), and
    // overlapping, along two dims, beside a whole use (padded and summed).
    case!(
        "narrow slices side by side",
        [rand(&[3, 16, 4], rng)],
        |t| {
            // Nine slices (more than one fused kernel reads, so a GPU puts them in place too).
            let x = &t[0];
            let parts = [
                (8, 2),
                (0, 2),
                (5, 0),
                (3, 4),
                (10, 1),
                (11, 1),
                (12, 2),
                (14, 1),
                (15, 1),
            ];
            let mut pieces = Vec::new();
            for (k, &(start, len)) in parts.iter().enumerate() {
                pieces.push(x.narrow(1, start, len)?.mul_scalar(1.0 + k as f64)?.exp()?);
            }
            Tensor::cat(&pieces, 1)
        }
    );
    // Slices of every length, an empty one among them, covering the middle dim with no
    // gap: put side by side as a recurrent layer's steps are (`stacks.rs`), on a GPU
    // too (eight, more than one fused kernel reads).
    case!(
        "narrow slices covering a dim",
        [rand(&[3, 12, 4], rng)],
        |t| {
            let mut pieces = Vec::new();
            let mut at = 0;
            for (k, len) in [2, 0, 1, 3, 1, 1, 2, 2].into_iter().enumerate() {
                pieces.push(t[0].narrow(1, at, len)?.mul_scalar(1.0 + k as f64)?.exp()?);
                at += len;
            }
            Tensor::cat(&pieces, 1)
        }
    );
    case!("narrow slices overlapping", [rand(&[3, 10, 4], rng)], |t| {
        let x = &t[0];
        let a = x.narrow(1, 0, 4)?.sum(&[1], true)?;
        let b = x.narrow(1, 2, 5)?.exp()?.sum(&[1], true)?;
        let c = x.narrow(2, 1, 2)?.square()?.sum(&[2], true)?;
        x.mul_scalar(0.5)?.add(&a)?.add(&b)?.add(&c)
    });
    // One matrix in many products, as a recurrent weight is: its gradient from the
    // products with few rows is one product over their stacked operands; those with
    // many rows (more than the matrix is wide and tall) are multiplied alone.
    case!(
        "a matrix in many products",
        [
            rand(&[6, 6], rng),
            rand(&[6, 6], rng),
            rand(&[2, 6], rng),
            rand(&[9, 6], rng),
            rand(&[1, 2, 6], rng),
            rand(&[6], rng)
        ],
        |t| {
            let (w, h0, many_rows, batch, row) = (&t[0], &t[2], &t[3], &t[4], &t[5]);
            // The same transposed view in every step (a weight used as `u.t()`).
            let u = t[1].t()?;
            let mut h = h0.clone();
            let mut outs = Vec::new();
            for _ in 0..5 {
                h = h.matmul(w)?.add(&h.matmul(&u)?.mul_scalar(0.5)?)?.tanh()?;
                outs.push(h.sum(&[0], false)?);
            }
            outs.push(many_rows.matmul(w)?.sum(&[0], false)?);
            outs.push(batch.matmul(w)?.sum(&[0, 1], false)?);
            outs.push(row.matmul(&u)?);
            Tensor::stack(&outs, 0)
        }
    );
    // A recurrent layer's step adds a slice of its input projection to the product of
    // its state and weight, so each step's gradient is both a slice's and a product's
    // operand: the slices' gradients, put together, are the weight's stacked product's
    // right operand (`stacks.rs`). Nine steps from a state: more slices than one fused
    // kernel reads, so a GPU puts them together with a `cat`. Then five (fewer: a
    // fused sum) through the weight's transposed view, from no state, with a bias: the
    // first step's slice has no product, so the product stacks its own operands, as
    // (on a GPU) the bias's row sums stack the same steps' gradients.
    case!(
        "a recurrent weight's products read its input's slices' gradients",
        [
            rand(&[2, 9, 5], rng),
            rand(&[2, 5], rng),
            rand(&[5, 5], rng),
            rand(&[5, 5], rng),
            rand(&[5], rng),
            rand(&[5, 3], rng)
        ],
        |t| {
            let (x, h0, w, u, b, v) = (&t[0], &t[1], &t[2], &t[3], &t[4], &t[5]);
            let step = |x: &Tensor, s: usize| x.narrow(1, s, 1)?.squeeze(1);
            let layer = |x: &Tensor, h0: Option<&Tensor>, w: &Tensor, b: Option<&Tensor>| {
                let mut h = h0.cloned();
                let mut outs = Vec::new();
                for s in 0..x.dims()[1] {
                    let z = match (&h, b) {
                        (Some(h), Some(b)) => step(x, s)?.add(&h.matmul(w)?.add(b)?)?,
                        (Some(h), None) => step(x, s)?.add(&h.matmul(w)?)?,
                        (None, _) => step(x, s)?,
                    };
                    outs.push(z.tanh()?);
                    h = outs.last().cloned();
                }
                Tensor::stack(&outs, 1)
            };
            let first = layer(x, Some(h0), w, None)?;
            let second = layer(&first.narrow(1, 2, 5)?.matmul(u)?, None, &w.t()?, Some(b))?;
            second.matmul(v)
        }
    );
    // One bias in many uses, as a recurrent layer's hidden bias is: the uses that
    // broadcast it over leading dims only (either operand, of add, sub and mul) give
    // their rows, summed in one reduction; one that also stretches a dim of it is
    // summed alone.
    case!(
        "a bias in many uses",
        [
            rand(&[2, 6], rng),
            rand(&[6], rng),
            rand(&[1, 3, 6], rng),
            rand(&[6, 6], rng),
            rand(&[1, 6], rng)
        ],
        |t| {
            let (h0, b, batch, w, row) = (&t[0], &t[1], &t[2], &t[3], &t[4]);
            let mut h = h0.clone();
            let mut outs = Vec::new();
            for _ in 0..4 {
                h = h.matmul(w)?.add(b)?.tanh()?;
                outs.push(h.sum(&[0], false)?);
            }
            outs.push(batch.sub(b)?.square()?.sum(&[0, 1], false)?);
            outs.push(b.add(&w.t()?)?.mul(b)?.sum(&[0], false)?);
            outs.push(row.add(&b.reshape([6, 1])?)?.sum(&[0], false)?);
            Tensor::stack(&outs, 0)
        }
    );
    case!("tril triu", [rand(&[4, 4], rng)], |t| t[0]
        .tril(0)?
        .add(&t[0].triu(1)?.mul_scalar(2.0)?));
    case!(
        "index_select",
        [rand(&[5, 3], rng), ids(vec![4, 0, 4, 2], &[4])],
        |t| t[0].index_select(0, &t[1])
    );
    // A middle dim: the gradient adds each slice at its index across outer and inner.
    case!(
        "index_select dim 1",
        [rand(&[2, 5, 3], rng), ids(vec![4, 0, 4, 2], &[4])],
        |t| t[0].index_select(1, &t[1])
    );
    case!(
        "gather",
        [rand(&[3, 4], rng), ids(vec![3, 0, 0, 1, 2, 2], &[3, 2])],
        |t| t[0].gather(1, &t[1])
    );
    case!(
        "scatter_add",
        [
            rand(&[3, 4], rng),
            ids(vec![1, 1, 0, 3, 2, 1], &[3, 2]),
            rand(&[3, 2], rng)
        ],
        |t| t[0].scatter_add(1, &t[1], &t[2])
    );
    case!(
        "embedding",
        [rand(&[6, 3], rng), ids(vec![5, 1, 1, 0], &[2, 2])],
        |t| t[0].embedding(&t[1])
    );
    // Normalisation, losses, dropout.
    case!(
        "layer_norm",
        [rand(&[3, 6], rng), rand(&[6], rng), rand(&[6], rng)],
        |t| t[0].layer_norm(&[6], Some(&t[1]), Some(&t[2]), 1e-5)
    );
    case!(
        "batch_norm",
        [rand(&[4, 3, 2, 5], rng), rand(&[3], rng), rand(&[3], rng)],
        |t| Ok(t[0].batch_norm(Some(&t[1]), Some(&t[2]), 1e-5)?.output)
    );
    // Without weight and bias, on [n, c] read through a transposed view.
    case!("batch_norm plain", [rand(&[3, 6], rng)], |t| Ok(t[0]
        .t()?
        .batch_norm(None, None, 1e-3)?
        .output));
    case!("layer_norm plain", [rand(&[2, 3, 4], rng)], |t| t[0]
        .layer_norm(&[3, 4], None, None, 1e-5));
    case!(
        "cross_entropy",
        [rand(&[4, 5], rng), ids(vec![0, 4, 2, 2], &[4])],
        |t| t[0].cross_entropy(&t[1])
    );
    case!(
        "cross_entropy smoothed",
        [rand(&[3, 6], rng), ids(vec![5, 0, 3], &[3])],
        |t| t[0].cross_entropy_smoothed(&t[1], 0.1)
    );
    // Fused attention: heads of 4 queries over 5 keys; causal with more queries than
    // keys; a transposed query view, keys broadcast over the heads.
    case!(
        "attention",
        [
            rand(&[2, 4, 3], rng),
            rand(&[2, 5, 3], rng),
            rand(&[2, 5, 2], rng)
        ],
        |t| t[0].attention(&t[1], &t[2], false, 0.7)
    );
    case!(
        "attention causal",
        [
            rand(&[2, 6, 3], rng),
            rand(&[2, 4, 3], rng),
            rand(&[2, 4, 2], rng)
        ],
        |t| t[0].attention(&t[1], &t[2], true, 0.5)
    );
    case!(
        "attention transposed queries, broadcast keys",
        [
            rand(&[2, 3, 5], rng),
            rand(&[4, 3], rng),
            rand(&[2, 4, 2], rng)
        ],
        |t| t[0].transpose(-1, -2)?.attention(&t[1], &t[2], true, 1.0)
    );
    // The fused LSTM step: gates of 3 rows x 2 units (saturating and not), the cell
    // state, and the gate pre-activations read through a transposed view.
    case!(
        "lstm_cell",
        [uniform(&[3, 8], -3.0, 3.0, rng), rand(&[3, 2], rng)],
        |t| t[0].lstm_cell(&t[1])
    );
    case!(
        "lstm_cell transposed gates",
        [rand(&[12, 2], rng), rand(&[2, 3], rng)],
        |t| t[0].t()?.lstm_cell(&t[1])
    );
    case!(
        "gru_cell",
        [
            uniform(&[3, 6], -3.0, 3.0, rng),
            uniform(&[3, 6], -3.0, 3.0, rng),
            rand(&[3, 2], rng)
        ],
        |t| t[0].gru_cell(&t[1], &t[2])
    );
    case!(
        "gru_cell transposed projection",
        [rand(&[9, 2], rng), rand(&[2, 9], rng), rand(&[2, 3], rng)],
        |t| t[0].t()?.gru_cell(&t[1], &t[2])
    );
    case!("dropout", [rand(&[4, 5], rng)], |t| t[0].dropout(
        0.3,
        true,
        &mut Rng::new(11)
    ));
    c
}

#[test]
fn every_op_passes_gradcheck() {
    let mut rng = rng();
    for (name, inputs, f) in cases(&mut rng) {
        let report = gradcheck(&f, &inputs, GradcheckOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let floats: usize = inputs
            .iter()
            .filter(|t| t.dtype().is_float())
            .map(Tensor::elem_count)
            .sum();
        assert_eq!(
            report.checked, floats,
            "{name}: every float input element is checked"
        );
    }
}

/// Gradients of `sum(f(inputs) * r)` with respect to each float input, on `device`.
fn gradients_on(device: &Device, inputs: &[Tensor], r: &Tensor, f: &F) -> Vec<Option<Tensor>> {
    let vars: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            let moved = on_strided(device, t);
            if t.dtype().is_float() {
                moved.detach().into_var().unwrap()
            } else {
                moved
            }
        })
        .collect();
    let y = f(&vars).unwrap();
    let grads = y
        .mul(&r.to_device(device).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    vars.iter().map(|v| grads.get(v).cloned()).collect()
}

#[test]
fn gpu_gradients_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng();
    for (name, inputs, f) in cases(&mut rng) {
        let shape = f(&inputs).unwrap().shape().clone();
        // Upstream values small integers, whose sums are exact in any order: with real
        // ones a row's ~170 could cancel to near zero and leave only rounding, which
        // missed F32's tolerance (seed 10505716516680361831).
        let r = randn_ints(shape, &mut rng);
        let want = gradients_on(&Device::cpu(), &inputs, &r, &f);
        let got = gradients_on(&gpu, &inputs, &r, &f);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            match (g, w) {
                (Some(g), Some(w)) => assert_close(&format!("{name} input {i}"), g, w, F32),
                (None, None) => {}
                _ => panic!("{name} input {i}: gradient present on one device only"),
            }
        }
    }
}

/// index_select's gradient (an embedding's) on the GPU, one workgroup per table row
/// reading the ids a chunk at a time, against the CPU's: more ids than a chunk and
/// than a software adapter's run of sources, rows wider than a workgroup, ids repeated
/// many times, rows no id picks, and a lookup along a middle dim.
#[test]
fn gpu_index_select_gradients_match_cpu_at_scale() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng();
    for (dims, dim, n) in [(vec![300, 270], 0, 40_000), (vec![3, 70, 5], 1, 700)] {
        let rows = dims[dim];
        // Ids from the first four fifths of the rows: the last fifth gets none.
        let draws = uniform(&[n], 0.0, (rows * 4 / 5) as f64, &mut rng);
        let ids: Vec<i32> = draws
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as i32)
            .collect();
        let inputs = [
            rand(&dims, &mut rng),
            Tensor::from_vec(ids, [n], &Device::cpu()).unwrap(),
        ];
        let f: F = Box::new(move |t: &[Tensor]| t[0].index_select(dim as isize, &t[1]));
        let shape = f(&inputs).unwrap().shape().clone();
        // Upstream values small integers, whose sums are exact in any order: with real
        // ones a row's ~170 could cancel to near zero and leave only rounding, which
        // missed F32's tolerance (seed 10505716516680361831).
        let r = randn_ints(shape, &mut rng);
        let want = gradients_on(&Device::cpu(), &inputs, &r, &f);
        let got = gradients_on(&gpu, &inputs, &r, &f);
        let (got, want) = (got[0].as_ref().unwrap(), want[0].as_ref().unwrap());
        assert_close(&format!("{dims:?} along {dim}"), got, want, EXACT);
    }
}

/// Normal draws of `shape` rounded to integers.
fn randn_ints(shape: kiln::Shape, rng: &mut kiln::Rng) -> Tensor {
    let draws = Tensor::randn(shape.clone(), DType::F32, &Device::cpu(), rng).unwrap();
    let values: Vec<f32> = draws
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.round())
        .collect();
    Tensor::from_vec(values, shape, &Device::cpu()).unwrap()
}

/// Layers with thousands of weights, whose weight gradient splits the batch's output rows
/// into segments of several rows (the last one short) summed in a second pass; `cases`
/// keeps to shapes small enough for finite differences, which take one row a segment.
#[test]
fn gpu_weight_gradients_of_wide_layers_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng();
    // (input, weight, options): 9,216 weights over 3 x 17 output rows (26 segments of
    // 2, the last of 1); grouped, strided and dilated, 18,432 weights over 2 x 7 rows.
    let layers = [
        (
            [3, 32, 17, 9],
            [32, 32, 3, 3],
            Conv2dOptions {
                padding: (1, 1),
                ..Default::default()
            },
        ),
        (
            [2, 64, 15, 12],
            [64, 32, 3, 3],
            Conv2dOptions {
                stride: (2, 1),
                padding: (1, 2),
                dilation: (1, 2),
                groups: 2,
            },
        ),
    ];
    for (x, w, o) in layers {
        let inputs = [on_grid(&rand(&x, &mut rng), 64.0), rand(&w, &mut rng)];
        let f: F = Box::new(move |t: &[Tensor]| t[0].conv2d(&t[1], None, o));
        let shape = f(&inputs).unwrap().shape().clone();
        // Upstream values small integers, whose sums are exact in any order: with real
        // ones a row's ~170 could cancel to near zero and leave only rounding, which
        // missed F32's tolerance (seed 10505716516680361831).
        let r = randn_ints(shape, &mut rng);
        // The reference in f64, and the input on a grid of 1/64: each weight's gradient sums 459
        // products of values near 1, and the CPU's f32 GEMM and the GPU's f32 loop, each
        // off by about 1e-5 from the exact sum, disagreed beyond the tolerance in 7 of
        // 300 runs; the GPU alone then missed the f64 sum by 1.14e-5 (seed
        // 1663341875487344592). On the grid every such sum is exact in f32.
        let wide = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let inputs_f64: Vec<Tensor> = inputs.iter().map(wide).collect();
        let want = gradients_on(&Device::cpu(), &inputs_f64, &wide(&r), &f);
        let got = gradients_on(&gpu, &inputs, &r, &f);
        let want = want[1].as_ref().unwrap().to_dtype(DType::F32).unwrap();
        let got = got[1].as_ref().unwrap();
        assert_close(&format!("conv2d {x:?} {w:?} weight"), got, &want, F32);
    }
}

fn var(values: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape.to_vec(), &Device::cpu())
        .unwrap()
        .into_var()
        .unwrap()
}

fn values(grads: &kiln::Gradients, t: &Tensor) -> Vec<f32> {
    grads.get(t).expect("a gradient").to_vec::<f32>().unwrap()
}

/// Backward rules skip the work for parents that want no gradient: the parents that do
/// want one get the same gradient, to the bit, as when every parent wants one. Each op
/// of `cases` with several float inputs, one input a variable at a time.
#[test]
fn a_gradient_does_not_depend_on_which_other_inputs_want_one() {
    let mut rng = rng();
    let cpu = Device::cpu();
    let bits = |t: &Tensor| -> Vec<u32> {
        t.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    for (name, inputs, f) in cases(&mut rng) {
        let floats: Vec<usize> = (0..inputs.len())
            .filter(|&i| inputs[i].dtype().is_float())
            .collect();
        if floats.len() < 2 {
            continue;
        }
        let shape = f(&inputs).unwrap().shape().clone();
        let r = Tensor::randn(shape, DType::F32, &cpu, &mut rng).unwrap();
        let run = |wanted: &dyn Fn(usize) -> bool| {
            let vars: Vec<Tensor> = (0..inputs.len())
                .map(|i| match wanted(i) {
                    true => inputs[i].detach().into_var().unwrap(),
                    false => inputs[i].detach(),
                })
                .collect();
            let loss = f(&vars).unwrap().mul(&r).unwrap().sum_all().unwrap();
            // An input the op takes no gradient through leaves nothing to differentiate.
            match loss.backward() {
                Ok(grads) => vars.iter().map(|v| grads.get(v).map(bits)).collect(),
                Err(Error::InvalidArgument { .. }) => vec![None; vars.len()],
                Err(e) => panic!("{name}: {e}"),
            }
        };
        let every = run(&|i| floats.contains(&i));
        for &only in &floats {
            let alone = run(&|i| i == only);
            assert_eq!(alone[only], every[only], "{name}: input {only} alone");
            for &other in floats.iter().filter(|&&i| i != only) {
                assert_eq!(alone[other], None, "{name}: input {other} wants none");
            }
        }
    }
}

/// A bias in uses whose rows together pass what the reverse pass keeps for one on a
/// GPU (each of these 2^20 + 1 rows of 4): summed as they come, to the same total.
#[test]
fn a_bias_in_uses_past_the_kept_rows_sums_them_early() {
    let Some(gpu) = gpu() else { return };
    let rows = (1usize << 20) + 1;
    let x = Tensor::ones([rows, 4], DType::F32, &gpu).unwrap();
    let b = var(vec![0.5; 4], &[4])
        .detach()
        .to_device(&gpu)
        .unwrap()
        .into_var()
        .unwrap();
    // L = sum(x + b) + sum(2x + b) - sum(x - b) => dL/db = 3 rows per entry.
    let loss = x.add(&b).unwrap().sum_all().unwrap();
    let loss = loss.add(
        &x.mul_scalar(2.0)
            .unwrap()
            .add(&b)
            .unwrap()
            .sum_all()
            .unwrap(),
    );
    let loss = loss
        .unwrap()
        .sub(&x.sub(&b).unwrap().sum_all().unwrap())
        .unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(values(&g, &b), vec![3.0 * rows as f32; 4]);
}

#[test]
fn hand_derived_gradients() {
    // Elementwise: L = sum(x * y + exp(x)) => dL/dx = y + exp(x), dL/dy = x.
    let (x, y) = (var(vec![0.0, 1.0], &[2]), var(vec![3.0, -2.0], &[2]));
    let g = x
        .mul(&y)
        .unwrap()
        .add(&x.exp().unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(&g, &x), vec![3.0 + 1.0, -2.0 + std::f32::consts::E]);
    assert_eq!(values(&g, &y), vec![0.0, 1.0]);

    // Broadcasting: L = sum(a[2,3] + b[3]) => dL/db = 2 per entry (summed over rows).
    let (a, b) = (var(vec![0.0; 6], &[2, 3]), var(vec![0.0; 3], &[3]));
    let g = a.add(&b).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(values(&g, &b), vec![2.0, 2.0, 2.0]);
    assert_eq!(values(&g, &a), vec![1.0; 6]);

    // Reductions: L = max(x) with a tie => the gradient is shared: 1/2 each.
    let x = var(vec![1.0, 5.0, 5.0, 2.0], &[4]);
    let g = x.max_all().unwrap().backward().unwrap();
    assert_eq!(values(&g, &x), vec![0.0, 0.5, 0.5, 0.0]);

    // Matmul: L = sum(A B) with A [1,2], B [2,1] => dL/dA = B^T, dL/dB = A^T.
    let (a, b) = (var(vec![2.0, 3.0], &[1, 2]), var(vec![5.0, 7.0], &[2, 1]));
    let g = a.matmul(&b).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(values(&g, &a), vec![5.0, 7.0]);
    assert_eq!(values(&g, &b), vec![2.0, 3.0]);

    // Softmax: L = softmax(x)[0] for x = [0, 0] => p = [1/2, 1/2];
    // dp0/dx = p0 (e0 - p) = [1/4, -1/4].
    let x = var(vec![0.0, 0.0], &[2]);
    let g = x
        .softmax(0)
        .unwrap()
        .narrow(0, 0, 1)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(&g, &x), vec![0.25, -0.25]);

    // Cross-entropy: one row [0, 0] with target 1 => dL/dx = softmax - one_hot = [1/2, -1/2].
    let x = var(vec![0.0, 0.0], &[1, 2]);
    let t = Tensor::from_vec(vec![1i32], [1], &Device::cpu()).unwrap();
    let g = x.cross_entropy(&t).unwrap().backward().unwrap();
    assert_eq!(values(&g, &x), vec![0.5, -0.5]);

    // Convolution: a 1x1 input and a 1x1 kernel is a product: y = w x => dy/dw = x.
    let (x, w) = (
        var(vec![3.0], &[1, 1, 1, 1]),
        var(vec![-2.0], &[1, 1, 1, 1]),
    );
    let g = x
        .conv2d(&w, None, Default::default())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!((values(&g, &x), values(&g, &w)), (vec![-2.0], vec![3.0]));

    // Max pooling: the gradient goes to the maximum of the window only.
    let x = var(vec![1.0, 4.0, 2.0, 3.0], &[1, 1, 2, 2]);
    let g = x
        .max_pool2d((2, 2), (2, 2), (0, 0))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(&g, &x), vec![0.0, 1.0, 0.0, 0.0]);

    // Indexing: picking row 1 twice => its gradient is 2, the others 0.
    let x = var(vec![1.0, 2.0, 3.0], &[3, 1]);
    let idx = Tensor::from_vec(vec![1i32, 1], [2], &Device::cpu()).unwrap();
    let g = x
        .index_select(0, &idx)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(&g, &x), vec![0.0, 2.0, 0.0]);

    // Layer norm: normalised output sums to zero over the row, so d(sum y)/dx = 0.
    let x = var(vec![1.0, 2.0, 4.0], &[1, 3]);
    let g = x
        .layer_norm(&[3], None, None, 1e-5)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(values(&g, &x).iter().all(|v| v.abs() < 1e-5));
}

#[test]
fn graph_behaviour() {
    let cpu = Device::cpu();
    let w = var(vec![1.0, 2.0], &[2]);
    // A constant input records nothing; no_grad records nothing.
    let c = Tensor::ones([2], DType::F32, &cpu).unwrap();
    assert!(!c.exp().unwrap().requires_grad());
    assert!(!kiln::no_grad(|| w.exp().unwrap()).requires_grad());
    assert!(w.exp().unwrap().requires_grad());
    // detach stops the flow.
    let e = w
        .mul(&w.detach())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(&e, &w), vec![1.0, 2.0]);
    // Accumulation over two passes adds.
    let mut grads = kiln::Gradients::default();
    w.sum_all().unwrap().backward_into(&mut grads).unwrap();
    w.mul_scalar(3.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward_into(&mut grads)
        .unwrap();
    assert_eq!(values(&grads, &w), vec![4.0, 4.0]);
    // The graph's saved inputs are released: a second pass through it is an error.
    let loss = w.square().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    assert!(matches!(
        loss.backward().unwrap_err(),
        Error::InvalidArgument { op: "backward", .. }
    ));
    // Only one-element tensors start a backward pass.
    assert!(matches!(
        w.exp().unwrap().backward().unwrap_err(),
        Error::InvalidShape { .. }
    ));
    // set_data updates a variable in place and keeps it trainable.
    w.set_data(&Tensor::from_vec(vec![5.0f32, 6.0], [2], &cpu).unwrap())
        .unwrap();
    assert!(w.is_leaf_var());
    let g = w.square().unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(values(&g, &w), vec![10.0, 12.0]);
}

/// `backward_with` reports each variable as soon as its gradient is complete: in a
/// three-layer chain the last layer's weight first, while the earlier layers are still
/// to come, which is what lets data-parallel training exchange it early. A variable used
/// twice is reported once, after its last use. The gradients are `backward`'s.
#[test]
fn backward_with_reports_each_gradient_when_it_is_complete() {
    let mut rng = rng();
    let x = rand(&[5, 4], &mut rng);
    let w: Vec<Tensor> = (0..3)
        .map(|_| rand(&[4, 4], &mut rng).into_var().unwrap())
        .collect();
    let shared = rand(&[4], &mut rng).into_var().unwrap();
    let forward = || {
        let mut h = x.clone();
        for (i, wi) in w.iter().enumerate() {
            h = h.matmul(wi).unwrap().tanh().unwrap();
            if i != 1 {
                h = h.add(&shared).unwrap();
            }
        }
        h.sum_all().unwrap()
    };
    let mut grads = kiln::Gradients::default();
    let mut seen: Vec<(usize, Vec<f32>)> = Vec::new();
    let names: Vec<&Tensor> = w.iter().chain([&shared]).collect();
    forward()
        .backward_with(&mut grads, &mut |var, grads| {
            let i = names.iter().position(|n| n.id() == var.id()).unwrap();
            seen.push((i, grads.get(var).unwrap().to_vec().unwrap()));
            Ok(())
        })
        .unwrap();
    let order: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        order,
        vec![2, 1, 3, 0],
        "the order variables were reported in"
    );
    let plain = forward().backward().unwrap();
    for (i, reported) in &seen {
        assert_eq!(
            reported,
            &values(&plain, names[*i]),
            "variable {i}'s gradient"
        );
        assert_eq!(
            reported,
            &values(&grads, names[*i]),
            "variable {i}'s final gradient"
        );
    }
}

/// Every op of the table that has no rule is either never recorded (piecewise
/// constant: its output needs no gradient) or refused where it would be recorded.
#[test]
fn vector_jacobian_products_and_grad_of_intermediate_tensors() {
    let mut r = rng();
    let cpu = Device::cpu();
    let mut devices = vec![cpu.clone()];
    devices.extend(gpu());
    let x0 = uniform(&[3, 4], -1.0, 1.0, &mut r);
    let v0 = uniform(&[3, 4], -1.0, 1.0, &mut r);
    for device in &devices {
        let x = on(device, &x0).detach().into_var().unwrap();
        let v = on(device, &v0);
        // y = x^3: the VJP is v * 3x^2, the same as backward of sum(y * v).
        let y = x.mul(&x).unwrap().mul(&x).unwrap();
        let vjp = y.backward_from(&v).unwrap();
        let y2 = x.mul(&x).unwrap().mul(&x).unwrap();
        let plain = y2.mul(&v).unwrap().sum_all().unwrap().backward().unwrap();
        let want = v.mul(&x.mul(&x).unwrap().mul_scalar(3.0).unwrap()).unwrap();
        assert_close(
            "backward_from",
            vjp.get(&x).unwrap(),
            &want,
            tol_for(DType::F32),
        );
        assert_close(
            "backward of sum(y v)",
            plain.get(&x).unwrap(),
            &want,
            tol_for(DType::F32),
        );

        // grad with respect to an intermediate h = x^2 and the leaf: out = sum(h * x)
        // (= sum x^3) and a second output sum(h); d/dh = x + 1, d/dx = 3x^2 + 2x.
        let h = x.mul(&x).unwrap();
        let out1 = h.mul(&x).unwrap().sum_all().unwrap();
        let out2 = h.sum_all().unwrap();
        let unused = on(device, &uniform(&[2], -1.0, 1.0, &mut r))
            .into_var()
            .unwrap();
        let grads = kiln::grad(&[out1, out2], &[h.clone(), x.clone(), unused], None).unwrap();
        let dh = x.add_scalar(1.0).unwrap();
        let dx = x
            .mul(&x)
            .unwrap()
            .mul_scalar(3.0)
            .unwrap()
            .add(&x.mul_scalar(2.0).unwrap())
            .unwrap();
        assert_close(
            "grad wrt h",
            grads[0].as_ref().unwrap(),
            &dh,
            tol_for(DType::F32),
        );
        assert_close(
            "grad wrt x",
            grads[1].as_ref().unwrap(),
            &dx,
            tol_for(DType::F32),
        );
        assert!(
            grads[2].is_none(),
            "an input the outputs do not use gets None"
        );

        // Mistakes: a seed of another shape, a non-scalar output without one, an input
        // that tracks nothing, a graph used twice.
        let y = x.mul(&x).unwrap();
        let small = on(device, &Tensor::ones([4], DType::F32, &cpu).unwrap());
        assert!(matches!(
            y.backward_from(&small).unwrap_err(),
            Error::ShapeMismatch { .. }
        ));
        assert!(kiln::grad(std::slice::from_ref(&y), std::slice::from_ref(&x), None).is_err());
        assert!(kiln::grad(&[y.sum_all().unwrap()], &[x.detach()], None).is_err());
        let s = y.sum_all().unwrap();
        kiln::grad(std::slice::from_ref(&s), std::slice::from_ref(&x), None).unwrap();
        assert!(
            kiln::grad(&[s], std::slice::from_ref(&x), None).is_err(),
            "the graph is used up"
        );
    }
}

#[test]
fn table_ops_without_a_rule_are_constant_or_refused() {
    let x = var(vec![0.5, -1.0, 2.0], &[3]);
    let y = var(vec![1.0, -1.0, 0.25], &[3]);
    let check = |name: &str, gradient: Gradient, out: kiln::Result<Tensor>| match gradient {
        Gradient::Rule => {}
        Gradient::Constant => {
            let out = out.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                !out.requires_grad(),
                "{name} is piecewise constant but was recorded"
            );
        }
        Gradient::Missing => {
            let e = out.expect_err(name);
            assert!(matches!(e, Error::NoGradient { .. }), "{name}: {e}");
        }
    };
    for &op in UnaryOp::EXAMPLES {
        check(op.name(), op.gradient(), x.unary(op));
    }
    for &op in BinaryOp::EXAMPLES {
        check(op.name(), op.gradient(), x.binary(&y, op));
    }
    for &op in ReduceOp::EXAMPLES {
        check(op.name(), op.gradient(), x.reduce(op, &[0], false));
    }
}

#[test]
fn ops_without_a_rule_are_errors() {
    let x = var(vec![1.0, 2.0, 3.0], &[3]);
    let e = x.prod(&[0], false).unwrap_err();
    assert!(matches!(e, Error::NoGradient { op: "prod", .. }), "{e}");
    let e = x.to_dtype(DType::I32).unwrap_err();
    assert!(matches!(e, Error::NoGradient { op: "to_dtype", .. }), "{e}");
    let e = x.as_strided(&[2], &[1], 1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NoGradient {
                op: "as_strided",
                ..
            }
        ),
        "{e}"
    );
    // The same ops work on detached tensors and under no_grad.
    assert_eq!(
        x.detach().prod(&[0], false).unwrap().item::<f32>().unwrap(),
        6.0
    );
    assert_eq!(
        kiln::no_grad(|| x.to_dtype(DType::I32))
            .unwrap()
            .to_vec::<i32>()
            .unwrap(),
        vec![1, 2, 3]
    );
}

#[test]
fn audit_names_disconnected_and_non_finite_parameters() {
    let used = var(vec![1.0, 2.0], &[2]);
    let unused = var(vec![3.0], &[1]);
    let blowup = var(vec![0.0], &[1]);
    let loss = used
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&blowup.sqrt().unwrap().sum_all().unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    let issues = grads
        .audit([
            ("layer.weight", &used),
            ("head.bias", &unused),
            ("scale", &blowup),
        ])
        .unwrap();
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert_eq!(
        (issues[0].name.as_str(), issues[0].kind),
        ("head.bias", GradIssueKind::Missing)
    );
    assert_eq!(
        (issues[1].name.as_str(), issues[1].kind),
        ("scale", GradIssueKind::NonFinite)
    );
}

#[test]
fn gpu_memory_stays_flat_over_200_training_steps() {
    if gpu().is_none() {
        return;
    }
    // A device of its own, so that tests running beside this one do not move its counters.
    let g = kiln::backend::GpuDevice::new().unwrap();
    let gpu = Device::Gpu(g.clone());
    let mut rng = Rng::new(3);
    let param = |shape: &[usize], rng: &mut Rng| {
        Tensor::randn(shape.to_vec(), DType::F32, &gpu, rng)
            .unwrap()
            .mul_scalar(0.1)
            .unwrap()
            .into_var()
            .unwrap()
    };
    let (w1, b1, w2, b2) = (
        param(&[32, 64], &mut rng),
        param(&[64], &mut rng),
        param(&[64, 10], &mut rng),
        param(&[10], &mut rng),
    );
    let x = Tensor::randn([16, 32], DType::F32, &gpu, &mut rng).unwrap();
    let y = Tensor::from_vec((0..16).map(|i| i % 10).collect::<Vec<i32>>(), [16], &gpu).unwrap();
    let mut live = Vec::new();
    let mut losses = Vec::new();
    for step in 0..200 {
        let hidden = x
            .matmul(&w1)
            .unwrap()
            .add(&b1)
            .unwrap()
            .relu()
            .unwrap()
            .dropout(0.1, true, &mut rng)
            .unwrap();
        let loss = hidden
            .matmul(&w2)
            .unwrap()
            .add(&b2)
            .unwrap()
            .cross_entropy(&y)
            .unwrap();
        let grads = loss.backward().unwrap();
        kiln::no_grad(|| {
            for p in [&w1, &b1, &w2, &b2] {
                p.set_data(
                    &p.sub(&grads.get(p).unwrap().mul_scalar(0.1).unwrap())
                        .unwrap(),
                )
                .unwrap();
            }
        });
        if step % 50 == 0 || step == 199 {
            losses.push(loss.item::<f32>().unwrap());
        }
        drop((loss, grads));
        gpu.synchronize().unwrap();
        live.push(g.pool_stats().live_bytes);
    }
    // After warm-up the bytes held by live tensors do not change from step to step.
    assert!(
        live[10..].iter().all(|&b| b == live[10]),
        "live bytes drift: {:?}",
        &live[10..]
    );
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.5),
        "the model did not learn: {losses:?}"
    );
}

/// The graph keeps the values its rules read and reaches every other parent by an
/// edge alone. Through layers `relu(h w + b)` it holds each biased sum (relu's rule
/// reads it) and each output the next product's weight gradient reads, but not
/// the product `h w`, which only the bias's add read: that add's rule needs shapes.
/// On a GPU the product is then never written, as its matmul writes the biased sum
/// in its epilogue. The gradients still match the CPU's.
#[test]
fn the_graph_holds_only_the_values_its_rules_read() {
    if gpu().is_none() {
        return;
    }
    // A device of its own, so that tests running beside this one do not move its
    // counters; fusion on (the epilogue is what is counted) whatever `KILN_FUSION` says.
    let g = kiln::backend::GpuDevice::new().unwrap();
    g.set_fusion(true);
    // The tiled product, which takes elementwise epilogues (the autotuner's pick for
    // these shapes may be another).
    g.set_matmul_variant(kiln::backend::MatmulVariant::Tiled)
        .unwrap();
    let gpu = Device::Gpu(g.clone());
    let cpu = Device::cpu();
    let (n, layers) = (64, 8);
    let layer_bytes = (n * n * 4) as u64;
    let mut rng = Rng::new(11);
    let x = Tensor::randn([n, n], DType::F32, &cpu, &mut rng).unwrap();
    let w = Tensor::randn([n, n], DType::F32, &cpu, &mut rng)
        .unwrap()
        .mul_scalar(0.2)
        .unwrap();
    let b = Tensor::randn([n], DType::F32, &cpu, &mut rng).unwrap();
    let forward = |x: &Tensor, w: &Tensor, b: &Tensor| -> kiln::Result<Tensor> {
        let mut h = x.clone();
        for _ in 0..layers {
            h = h.matmul(w)?.add(b)?.relu()?;
        }
        h.sum(&[0, 1], false)
    };
    let (wc, bc) = (
        w.detach().into_var().unwrap(),
        b.detach().into_var().unwrap(),
    );
    let want = forward(&x, &wc, &bc).unwrap().backward().unwrap();
    let on_gpu = |t: &Tensor| t.to_device(&gpu).unwrap();
    let (xg, wg, bg) = (on_gpu(&x), on_gpu(&w), on_gpu(&b));
    let (wg, bg) = (wg.into_var().unwrap(), bg.into_var().unwrap());
    gpu.synchronize().unwrap();
    let before = g.pool_stats().live_bytes;
    let (loss, profile) = gpu
        .profile(|| {
            let loss = forward(&xg, &wg, &bg)?;
            loss.to_f64_vec()?;
            Ok(loss)
        })
        .unwrap();
    gpu.synchronize().unwrap();
    let held = g.pool_stats().live_bytes - before;
    // Each biased sum, each output but the last (which only the sum read, whose rule
    // needs its shape), and the loss's one element (its buffer rounded up).
    let kept = (2 * layers as u64 - 1) * layer_bytes;
    assert!(
        (kept..kept + layer_bytes).contains(&held),
        "the graph holds {held} bytes; its rules read {kept}"
    );
    let written: u64 = profile
        .kernels
        .iter()
        .filter(|k| k.name.contains("=> fused add,relu"))
        .map(|k| k.bytes_written)
        .sum();
    assert_eq!(
        written,
        kept + layer_bytes,
        "bytes the layers' matmuls wrote: their biased sums and outputs"
    );
    let grads = loss.backward().unwrap();
    for (name, cpu_var, gpu_var) in [("w", &wc, &wg), ("b", &bc, &bg)] {
        let got = grads.get(gpu_var).unwrap().to_device(&cpu).unwrap();
        assert_near(name, &got, want.get(cpu_var).unwrap(), 1e-4, 1e-3);
    }
}
