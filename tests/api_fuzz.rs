//! Random calls of the tensor API, well-formed and not, on the CPU and on the GPU: odd
//! and empty shapes, strided and broadcast views, dims and indices out of range, NaN
//! and infinity among the values; elementwise ops, conversions, reductions, views,
//! products, convolutions, pools, norms, attention, recurrent cells, indexing and
//! creation. No call may panic; the two backends must agree on whether a call succeeds
//! (the GPU may refuse a dtype the CPU takes, with `UnsupportedDType`), and where both
//! succeed, on the shape, dtype and values, and for a float result on the gradients of
//! its float inputs. `KILN_API_CALLS` sets how many calls (default 1000) and
//! `KILN_API_THREADS` how many threads make them at once on the one GPU (default 1); the
//! seed is printed to replay.

mod common;

use common::{on, on_strided, seed_from, tol_for, SplitMix, Tol, F32_MATH};
use kiln::{
    AdamSpec, BinaryOp, Conv2dOptions, DType, Device, Error, OptimizerStep, ReduceOp, Result,
    RmsPropSpec, Rng, RunningStats, SgdSpec, Tensor, UnaryOp,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Small random choices: `SplitMix`'s, and a few more. `f16`: whether inputs may be
/// f16 (the GPU has `SHADER_F16`; without it, its refusal of an f16 result is checked).
struct Pick {
    mix: SplitMix,
    f16: bool,
}

impl Pick {
    fn below(&mut self, n: usize) -> usize {
        self.mix.below(n)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.mix.next() % (hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn of<T: Copy>(&mut self, items: &[T]) -> T {
        self.mix.pick(items)
    }
    /// A dim argument for a tensor of rank `rank`: mostly in range (either sign),
    /// sometimes one past either end.
    fn dim(&mut self, rank: usize) -> isize {
        let r = rank as i64;
        self.range(-r - 1, r) as isize
    }
    /// An index into `size` items: mostly in range, now and then -1 or `size`.
    fn index(&mut self, size: i64) -> i32 {
        match self.below(20) {
            0 => -1,
            1 => size as i32,
            _ => self.range(0, (size - 1).max(0)) as i32,
        }
    }
    /// Rank 0 to 4, sizes 1 to 5, now and then a 0; one in ten rank 1 to 3 with sizes up
    /// to 150 (at most 20,000 elements), past the kernels' tiles and lanes.
    fn shape(&mut self) -> Vec<usize> {
        if self.chance(10) {
            let rank = self.below(3) + 1;
            let mut dims: Vec<usize> = (0..rank).map(|_| self.below(150) + 1).collect();
            while dims.iter().product::<usize>() > 20_000 {
                let largest = dims.iter_mut().max().unwrap();
                *largest = largest.div_ceil(2);
            }
            return dims;
        }
        let rank = self.below(5);
        (0..rank)
            .map(|_| {
                if self.chance(15) {
                    0
                } else {
                    self.below(5) + 1
                }
            })
            .collect()
    }
}

/// A CPU tensor of `shape` and `dtype` with random values (a NaN or infinity now and
/// then in float ones), laid out contiguously, transposed, cut from a larger tensor,
/// or broadcast from size-1 dims.
fn tensor(p: &mut Pick, rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let dev = Device::cpu();
    let make = |p: &mut Pick, rng: &mut Rng, shape: &[usize]| -> Tensor {
        let n: usize = shape.iter().product();
        let mut values: Vec<f32> = Tensor::rand(vec![n], DType::F32, &dev, rng)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(|u| {
                if dtype == DType::I32 {
                    (u * 11.0).floor() - 5.0
                } else {
                    u * 6.0 - 3.0
                }
            })
            .collect();
        if dtype != DType::I32 && n > 0 && p.chance(6) {
            let at = p.below(n);
            values[at] = p.of(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        }
        Tensor::from_vec(values, shape.to_vec(), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    let rank = shape.len();
    match p.below(4) {
        1 if rank >= 2 => {
            let mut swapped = shape.to_vec();
            swapped.swap(rank - 1, rank - 2);
            make(p, rng, &swapped).transpose(-1, -2).unwrap()
        }
        2 if rank >= 1 => {
            let mut big = shape.to_vec();
            big[0] += 2;
            make(p, rng, &big).narrow(0, 1, shape[0]).unwrap()
        }
        3 if rank >= 1 => {
            let ones: Vec<usize> = shape
                .iter()
                .map(|&d| if p.chance(2) { 1 } else { d })
                .collect();
            make(p, rng, &ones).broadcast_to(shape.to_vec()).unwrap()
        }
        _ => make(p, rng, shape),
    }
}

/// A shape that broadcasts against `shape` (size-1 dims, fewer leading dims), or now
/// and then one that likely does not.
fn broadcast_partner(p: &mut Pick, shape: &[usize]) -> Vec<usize> {
    if p.chance(5) {
        return p.shape();
    }
    let drop = p.below(shape.len() + 1);
    shape[drop..]
        .iter()
        .map(|&d| if p.chance(3) { 1 } else { d })
        .collect()
}

/// An image batch's shape `[n, c, h, w]` (sides up to 7) for the windowed ops, or now and
/// then `shape` as drawn.
fn image_shape(p: &mut Pick, shape: &[usize]) -> Vec<usize> {
    if p.chance(5) {
        return shape.to_vec();
    }
    vec![
        p.below(3) + 1,
        p.below(4) + 1,
        p.below(7) + 1,
        p.below(7) + 1,
    ]
}

fn dims_of(p: &mut Pick, rank: usize) -> Vec<isize> {
    (0..p.below(rank + 1)).map(|_| p.dim(rank)).collect()
}

type Call = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// One random call: its description, its CPU inputs, the call, and the tolerance its
/// float results are compared with.
struct Case {
    label: String,
    inputs: Vec<Tensor>,
    call: Call,
    tol: Option<Tol>,
    /// Elements are sums of many terms, compared as `common::assert_near` compares:
    /// the tolerance's `atol` scaled by the largest wanted magnitude, as a near-zero
    /// sum keeps the rounding error of its terms.
    sums: bool,
}

fn case(p: &mut Pick, rng: &mut Rng) -> Case {
    let dtype = match p.f16 {
        true => p.of(&[DType::F32, DType::F32, DType::F32, DType::F16, DType::I32]),
        false => p.of(&[DType::F32, DType::F32, DType::F32, DType::I32]),
    };
    let shape = p.shape();
    let rank = shape.len();
    let a = tensor(p, rng, &shape, dtype);
    let mut label = format!("{dtype:?} {shape:?}: ");
    let mut inputs = vec![a];
    let mut tol = None;
    let mut sums = false;
    // The 31 numbered kinds of call and the last.
    let call: Call = match p.below(32) {
        0 => {
            let op = p.of(UnaryOp::EXAMPLES);
            label += &format!("{op:?}");
            tol = Some(F32_MATH);
            Box::new(move |t| t[0].unary(op))
        }
        1 => {
            let op = p.of(BinaryOp::EXAMPLES);
            let other = broadcast_partner(p, &shape);
            let dt = if p.chance(8) { DType::F32 } else { dtype };
            label += &format!("{op:?} with {dt:?} {other:?}");
            inputs.push(tensor(p, rng, &other, dt));
            tol = Some(F32_MATH);
            Box::new(move |t| t[0].binary(&t[1], op))
        }
        2 => {
            let op = p.of(ReduceOp::EXAMPLES);
            let dims = dims_of(p, rank);
            let keep = p.chance(2);
            label += &format!("reduce {op:?} over {dims:?} keepdim {keep}");
            sums = true;
            Box::new(move |t| t[0].reduce(op, &dims, keep))
        }
        3 => {
            let dim = p.dim(rank);
            let log = p.chance(2);
            label += &format!("{} over {dim}", if log { "log_softmax" } else { "softmax" });
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| match log {
                true => t[0].log_softmax(dim),
                false => t[0].softmax(dim),
            })
        }
        4 => {
            let dims = dims_of(p, rank);
            let correction = p.below(3);
            let keep = p.chance(2);
            label += &format!("var over {dims:?} correction {correction} keepdim {keep}");
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| t[0].var_with_correction(&dims, correction, keep))
        }
        5 => {
            let (d0, d1) = (p.dim(rank), p.dim(rank));
            label += &format!("transpose {d0} {d1}, then abs");
            Box::new(move |t| t[0].transpose(d0, d1)?.contiguous()?.unary(UnaryOp::Abs))
        }
        6 => {
            let mut perm: Vec<isize> = (0..rank as isize).collect();
            for i in (1..rank).rev() {
                perm.swap(i, p.below(i + 1));
            }
            if p.chance(5) && rank > 0 {
                let at = p.below(rank);
                perm[at] = p.dim(rank);
            }
            label += &format!("permute {perm:?}");
            Box::new(move |t| t[0].permute(&perm)?.contiguous())
        }
        7 => {
            let target = if p.chance(3) {
                p.shape()
            } else {
                let n: usize = shape.iter().product();
                if n > 1 && p.chance(2) {
                    vec![n / 2 + n % 2, 2]
                } else {
                    vec![n]
                }
            };
            label += &format!("reshape to {target:?}");
            Box::new(move |t| t[0].reshape(target.clone()))
        }
        8 => {
            let dim = p.dim(rank);
            let (start, len) = (p.below(4), p.below(4));
            label += &format!("narrow {dim} from {start} by {len}, then neg");
            Box::new(move |t| t[0].narrow(dim, start, len)?.unary(UnaryOp::Neg))
        }
        9 => {
            let dim = p.dim(rank + 1);
            let squeeze = p.chance(2);
            label += &format!("{} {dim}", if squeeze { "squeeze" } else { "unsqueeze" });
            Box::new(move |t| match squeeze {
                true => t[0].squeeze(dim)?.contiguous(),
                false => t[0].unsqueeze(dim)?.contiguous(),
            })
        }
        10 => {
            let target = if p.chance(3) {
                p.shape()
            } else {
                let mut s: Vec<usize> = shape.clone();
                if p.chance(2) {
                    s.insert(0, p.below(3) + 1);
                }
                s
            };
            label += &format!("expand to {target:?}, then sum");
            sums = true;
            Box::new(move |t| t[0].expand(target.clone())?.sum(&[-1], false))
        }
        11 => {
            let dim = p.dim(rank + 1);
            let stack = p.chance(3);
            let mut pieces = vec![shape.clone()];
            for _ in 0..p.below(3) + 1 {
                let mut s = shape.clone();
                if rank > 0 && !stack && p.chance(2) {
                    let d = p.below(rank);
                    s[d] = p.below(4);
                }
                if p.chance(10) {
                    s = p.shape();
                }
                inputs.push(tensor(p, rng, &s, dtype));
                pieces.push(s);
            }
            label += &format!(
                "{} along {dim} of {pieces:?}",
                if stack { "stack" } else { "cat" }
            );
            Box::new(move |t| match stack {
                true => Tensor::stack(t, dim),
                false => Tensor::cat(t, dim),
            })
        }
        12 => {
            let pads: Vec<(usize, usize)> = (0..p.below(rank + 2))
                .map(|_| (p.below(3), p.below(3)))
                .collect();
            let value = p.of(&[0.0, -1.5, f64::NAN]);
            label += &format!("pad {pads:?} with {value}");
            Box::new(move |t| t[0].pad(&pads, value))
        }
        13 => {
            let diagonal = p.range(-3, 3);
            let upper = p.chance(2);
            label += &format!("{} {diagonal}", if upper { "triu" } else { "tril" });
            Box::new(move |t| match upper {
                true => t[0].triu(diagonal),
                false => t[0].tril(diagonal),
            })
        }
        14 => {
            let mut other = if rank == 0 || p.chance(6) {
                p.shape()
            } else {
                let mut s = shape.clone();
                let k = *s.last().unwrap();
                if rank >= 2 {
                    let l = s.len();
                    s[l - 1] = p.below(5) + 1;
                    s[l - 2] = k;
                } else {
                    s = vec![k, p.below(5) + 1];
                }
                s
            };
            if p.chance(4) && !other.is_empty() {
                other.remove(0);
            }
            label += &format!("matmul with {other:?}");
            inputs.push(tensor(p, rng, &other, dtype));
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| t[0].matmul(&t[1]))
        }
        15 => {
            let dim = p.dim(rank);
            let size = if rank == 0 {
                1
            } else {
                shape[(dim.rem_euclid(rank as isize)) as usize]
            } as i64;
            let count = p.below(5);
            let gather = p.chance(2);
            let idx_shape = if gather {
                shape.iter().map(|&d| d.min(p.below(3) + 1)).collect()
            } else {
                vec![count]
            };
            let n: usize = idx_shape.iter().product();
            let ids: Vec<i32> = (0..n).map(|_| p.index(size)).collect();
            label += &format!(
                "{} along {dim} at {ids:?} shaped {idx_shape:?}",
                if gather { "gather" } else { "index_select" }
            );
            inputs.push(Tensor::from_vec(ids, idx_shape, &Device::cpu()).unwrap());
            Box::new(move |t| match gather {
                true => t[0].gather(dim, &t[1]),
                false => t[0].index_select(dim, &t[1]),
            })
        }
        16 => {
            let cond_shape = broadcast_partner(p, &shape);
            let other_shape = broadcast_partner(p, &shape);
            label += &format!("where_cond({cond_shape:?} > 0, a, {other_shape:?})");
            inputs.push(tensor(p, rng, &cond_shape, DType::F32));
            inputs.push(tensor(p, rng, &other_shape, dtype));
            Box::new(move |t| {
                t[1].gt_scalar(0.0)?
                    .to_dtype(DType::F32)?
                    .where_cond(&t[0], &t[2])
            })
        }
        17 => {
            let classes = p.below(12);
            label += &format!("one_hot {classes}");
            Box::new(move |t| t[0].one_hot(classes))
        }
        18 => {
            let k = p.below(rank + 1);
            let mut normalized: Vec<usize> = shape[rank - k..].to_vec();
            if p.chance(6) {
                normalized = p.shape();
            }
            let affine = p.chance(2);
            label += &format!("layer_norm over {normalized:?} affine {affine}");
            inputs.push(tensor(p, rng, &normalized, dtype));
            inputs.push(tensor(p, rng, &normalized, dtype));
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| match affine {
                true => t[0].layer_norm(&normalized, Some(&t[1]), Some(&t[2]), 1e-5),
                false => t[0].layer_norm(&normalized, None, None, 1e-5),
            })
        }
        19 => {
            let image = image_shape(p, &shape);
            inputs[0] = tensor(p, rng, &image, dtype);
            // Mostly well-formed: sides and steps from 1, padding up to half the side.
            let mut side = || p.below(3) + usize::from(!p.chance(10));
            let (kernel, stride) = ((side(), side()), (side(), side()));
            let mut pad = |k: usize| if p.chance(10) { k } else { p.below(k / 2 + 1) };
            let padding = (pad(kernel.0), pad(kernel.1));
            let kind = p.of(&["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]);
            label = format!("{dtype:?} {image:?}: {kind} kernel {kernel:?} stride {stride:?} padding {padding:?}");
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| match kind {
                "max_pool2d" => t[0].max_pool2d(kernel, stride, padding),
                "avg_pool2d" => t[0].avg_pool2d(kernel, stride, padding, padding.0 == 1),
                _ => t[0].adaptive_avg_pool2d(kernel),
            })
        }
        20 => {
            let image = image_shape(p, &shape);
            inputs[0] = tensor(p, rng, &image, dtype);
            let c = image.get(1).copied().unwrap_or(1);
            let groups = p.of(&[1, 1, 1, c.max(1), 2, 0]);
            let transpose = p.chance(3);
            let per_group = p.below(3) + 1;
            let mut w_shape = match transpose {
                true => vec![c, per_group, p.below(3) + 1, p.below(3) + 1],
                false => vec![
                    per_group * groups.max(1),
                    c / groups.max(1),
                    p.below(3) + 1,
                    p.below(3) + 1,
                ],
            };
            if p.chance(10) {
                w_shape[1] += 1;
            }
            let o = Conv2dOptions {
                stride: (p.below(3) + usize::from(!p.chance(10)), p.below(2) + 1),
                padding: (p.below(2), p.below(3)),
                dilation: (p.below(2) + 1, p.below(3) + usize::from(!p.chance(10))),
                groups,
            };
            let op = if transpose {
                "conv_transpose2d"
            } else {
                "conv2d"
            };
            label = format!("{dtype:?} {image:?}: {op} weight {w_shape:?} {o:?}");
            inputs[0] = tensor(p, rng, &image, dtype);
            inputs.push(tensor(p, rng, &w_shape, dtype));
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| match transpose {
                true => t[0].conv_transpose2d(&t[1], None, o, (0, 0)),
                false => t[0].conv2d(&t[1], None, o),
            })
        }
        21 => {
            let to = p.of(&[DType::F32, DType::F16, DType::I32]);
            label += &format!("to_dtype {to:?}");
            Box::new(move |t| t[0].to_dtype(to))
        }
        22 => {
            // q [.., tq, d], k [.., tk, d], v [.., tk, dv]; now and then a mismatch.
            let batch: Vec<usize> = (0..p.below(3)).map(|_| p.below(3) + 1).collect();
            let (tq, tk, d, dv) = (
                p.below(6) + 1,
                p.below(6) + 1,
                p.below(5) + 1,
                p.below(5) + 1,
            );
            let mut dims = |rows: usize, cols: usize| {
                let mut s = batch.clone();
                s.extend([rows, cols + usize::from(p.chance(15))]);
                s
            };
            let (qs, ks, vs) = (dims(tq, d), dims(tk, d), dims(tk, dv));
            let causal = p.chance(2);
            let scale = 1.0 / (d as f64).sqrt();
            label = format!("{dtype:?}: attention q {qs:?} k {ks:?} v {vs:?} causal {causal}");
            inputs = vec![
                tensor(p, rng, &qs, dtype),
                tensor(p, rng, &ks, dtype),
                tensor(p, rng, &vs, dtype),
            ];
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| t[0].attention(&t[1], &t[2], causal, scale))
        }
        23 => {
            let dim = p.dim(rank);
            let d = if rank == 0 {
                0
            } else {
                dim.rem_euclid(rank as isize) as usize
            };
            let mut index_shape = shape.clone();
            if rank > 0 {
                index_shape[d] = p.below(4);
            }
            let size = shape.get(d).copied().unwrap_or(1) as i64;
            let n: usize = index_shape.iter().product();
            let ids: Vec<i32> = (0..n).map(|_| p.index(size)).collect();
            label += &format!("scatter_add along {dim} at {ids:?} shaped {index_shape:?}");
            inputs.push(Tensor::from_vec(ids, index_shape.clone(), &Device::cpu()).unwrap());
            inputs.push(tensor(p, rng, &index_shape, dtype));
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| t[0].scatter_add(dim, &t[1], &t[2]))
        }
        24 => {
            let (batch, hidden) = (p.below(4) + 1, p.below(5) + 1);
            let lstm = p.chance(2);
            let gates = hidden * if lstm { 4 } else { 3 } + usize::from(p.chance(15));
            let op = if lstm { "lstm_cell" } else { "gru_cell" };
            label = format!("{dtype:?}: {op} batch {batch} hidden {hidden} gates {gates}");
            inputs = vec![tensor(p, rng, &[batch, gates], dtype)];
            for _ in 0..2 {
                inputs.push(tensor(p, rng, &[batch, hidden], dtype));
            }
            if !lstm {
                inputs[1] = tensor(p, rng, &[batch, gates], dtype);
            }
            tol = Some(F32_MATH);
            Box::new(move |t| match lstm {
                true => t[0].lstm_cell(&t[1]),
                false => t[0].gru_cell(&t[1], &t[2]),
            })
        }
        25 => {
            let (start, end, step) = (
                p.range(-4, 4) as f64 / 2.0,
                p.range(-4, 8) as f64,
                p.of(&[0.5, 1.0, -1.0, 0.0, f64::NAN]),
            );
            let (n, value) = (p.below(5), p.of(&[0.0, -2.5, f64::NAN, f64::INFINITY, 1e6]));
            let kind = p.of(&["arange", "full", "eye"]);
            label += &format!(
                "{kind} of {dtype:?}: arange {start}..{end} by {step}, full {value}, eye {n}"
            );
            Box::new(move |t| {
                let device = t[0].device();
                match kind {
                    "arange" => Tensor::arange(start, end, step, dtype, &device),
                    "full" => Tensor::full(vec![n, 2], value, dtype, &device),
                    _ => Tensor::eye(n, dtype, &device),
                }
            })
        }
        26 => {
            let image = image_shape(p, &shape);
            // Few distinct values, so that windows hold ties.
            inputs[0] = tensor(p, rng, &image, DType::I32).to_dtype(dtype).unwrap();
            let mut side = || p.below(3) + usize::from(!p.chance(10));
            let (kernel, stride, dilation) = ((side(), side()), (side(), side()), (side(), side()));
            let padding = (p.below(kernel.0 / 2 + 1), p.below(kernel.1 / 2 + 1));
            label = format!("{dtype:?} {image:?}: max_pool2d indices kernel {kernel:?} stride {stride:?} padding {padding:?} dilation {dilation:?}");
            Box::new(move |t| {
                Ok(t[0]
                    .max_pool2d_with_indices(kernel, stride, padding, dilation)?
                    .1)
            })
        }
        27 => {
            let image = image_shape(p, &shape);
            inputs[0] = tensor(p, rng, &image, dtype);
            let c = image.get(1).copied().unwrap_or(1);
            let affine = p.chance(2);
            label = format!("{dtype:?} {image:?}: batch_norm affine {affine}");
            inputs.push(tensor(p, rng, &[c], dtype));
            inputs.push(tensor(p, rng, &[c], dtype));
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| {
                let stats = match affine {
                    true => t[0].batch_norm(Some(&t[1]), Some(&t[2]), 1e-5)?,
                    false => t[0].batch_norm(None, None, 1e-5)?,
                };
                Tensor::cat(&[stats.output.flatten_all()?, stats.mean, stats.var], 0)
            })
        }
        28 => {
            let rows = if rank == 2 { shape[0] } else { p.below(5) + 1 };
            let table_shape = vec![rows, p.below(4) + 1];
            let ids_shape: Vec<usize> = (0..p.below(3)).map(|_| p.below(4)).collect();
            let n: usize = ids_shape.iter().product();
            let ids: Vec<i32> = (0..n).map(|_| p.index(rows as i64)).collect();
            label = format!("{dtype:?} {table_shape:?}: embedding of {ids:?} shaped {ids_shape:?}");
            inputs = vec![
                tensor(p, rng, &table_shape, dtype),
                Tensor::from_vec(ids, ids_shape, &Device::cpu()).unwrap(),
            ];
            Box::new(move |t| t[0].embedding(&t[1]))
        }
        29 => {
            // Settings a user would give: a running average kept at 1 - alpha = 1 is the
            // new value less the old plus the old, which f32 rounds differently with and
            // without fused multiply-adds when the new value is small.
            let f = |p: &mut Pick, values: &[f32]| p.of(values);
            let step = match p.below(3) {
                0 => OptimizerStep::Adam(AdamSpec {
                    one_minus_beta1: f(p, &[0.1, 0.5]),
                    one_minus_beta2: f(p, &[0.001, 0.5]),
                    eps: f(p, &[1e-8, 0.0]),
                    step_size: f(p, &[1e-3, 0.5]),
                    inv_correction2: f(p, &[1.0, 31.6]),
                    coupled_decay: f(p, &[0.0, 0.01]),
                    decay_factor: f(p, &[1.0, 0.99]),
                }),
                1 => OptimizerStep::SgdMomentum(SgdSpec {
                    lr: f(p, &[0.1, 1e-3]),
                    momentum: f(p, &[0.0, 0.9]),
                    weight_decay: f(p, &[0.0, 1e-4]),
                    nesterov: p.chance(2),
                }),
                _ => OptimizerStep::RmsProp(RmsPropSpec {
                    lr: f(p, &[0.01, 1.0]),
                    one_minus_alpha: f(p, &[0.01, 0.1]),
                    eps: f(p, &[1e-8, 0.0]),
                    weight_decay: f(p, &[0.0, 0.1]),
                }),
            };
            let states = step.states();
            label += &format!("optimizer_update {step:?}");
            inputs.push(tensor(p, rng, &shape, dtype));
            for _ in 0..states {
                // Second moments are never negative.
                let state = tensor(p, rng, &shape, dtype);
                inputs.push(match dtype.is_float() {
                    true => state.abs().unwrap(),
                    false => state,
                });
            }
            tol = Some(F32_MATH);
            Box::new(move |t| {
                let states: Vec<&Tensor> = t[2..].iter().collect();
                let (param, states) = t[0].optimizer_update(&t[1], &states, &step)?;
                let mut all = vec![param.flatten_all()?];
                for s in states {
                    all.push(s.flatten_all()?);
                }
                Tensor::cat(&all, 0)
            })
        }
        30 => {
            // A few steps of an LSTM or GRU as kiln-nn writes one: the hidden state's
            // product summed into the input's, then the cell (the GPU fuses the
            // products, the sum and the cell, forward and back).
            let (batch, features, hidden) = (p.below(4) + 1, p.below(5) + 1, p.below(5) + 1);
            let (steps, lstm) = (p.below(3) + 1, p.chance(2));
            // Float (the weights are scaled down).
            let dtype = if dtype == DType::I32 {
                DType::F32
            } else {
                dtype
            };
            let gates = hidden * if lstm { 4 } else { 3 };
            let op = if lstm { "lstm" } else { "gru" };
            label = format!(
                "{dtype:?}: {op} steps {steps} batch {batch} features {features} hidden {hidden}"
            );
            inputs = vec![
                tensor(p, rng, &[steps, batch, features], dtype),
                tensor(p, rng, &[features, gates], dtype)
                    .mul_scalar(0.5)
                    .unwrap(),
                tensor(p, rng, &[hidden, gates], dtype)
                    .mul_scalar(0.5)
                    .unwrap(),
                tensor(p, rng, &[batch, hidden], dtype),
                tensor(p, rng, &[batch, hidden], dtype),
            ];
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| {
                let (mut h, mut c) = (t[3].clone(), t[4].clone());
                let mut outputs = Vec::new();
                for step in 0..steps {
                    let xt = t[0].narrow(0, step, 1)?.squeeze(0)?.matmul(&t[1])?;
                    let ht = h.matmul(&t[2])?;
                    h = match lstm {
                        true => {
                            let hc = xt.add(&ht)?.lstm_cell(&c)?;
                            c = hc.narrow(1, hidden, hidden)?;
                            hc.narrow(1, 0, hidden)?
                        }
                        false => xt.gru_cell(&ht, &h)?,
                    };
                    outputs.push(h.clone());
                }
                outputs.push(c);
                Tensor::cat(&outputs, 1)
            })
        }
        31 => {
            // Batch norm that moves running statistics in place (each device its own
            // copies), then their values after the move.
            let image = image_shape(p, &shape);
            inputs[0] = tensor(p, rng, &image, dtype);
            let c = image.get(1).copied().unwrap_or(1) + usize::from(p.chance(15));
            let momentum = p.of(&[0.1, 1.0, 0.0]);
            label = format!("{dtype:?} {image:?}: batch_norm_running momentum {momentum}");
            inputs.push(tensor(p, rng, &[c], dtype));
            let var = tensor(p, rng, &[c], dtype);
            inputs.push(match dtype.is_float() {
                true => var.abs().unwrap(),
                false => var,
            });
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| {
                let running = RunningStats {
                    mean: &t[1],
                    var: &t[2],
                    momentum,
                };
                let stats = t[0].batch_norm_running(None, None, 1e-5, running)?;
                let after = [&t[1], &t[2]].map(|s| s.detach());
                Tensor::cat(
                    &[
                        stats.output.flatten_all()?,
                        after[0].clone(),
                        after[1].clone(),
                    ],
                    0,
                )
            })
        }
        _ => {
            let rows = if rank >= 1 { shape[0] } else { 1 };
            let classes = if rank >= 2 { shape[1] } else { 3 } as i64;
            let ids: Vec<i32> = (0..rows).map(|_| p.index(classes)).collect();
            let smoothing = p.of(&[0.0, 0.1]);
            label += &format!("cross_entropy at {ids:?} smoothing {smoothing}");
            inputs.push(Tensor::from_vec(ids, vec![rows], &Device::cpu()).unwrap());
            tol = Some(F32_MATH);
            sums = true;
            Box::new(move |t| t[0].cross_entropy_smoothed(&t[1], smoothing))
        }
    };
    Case {
        label,
        inputs,
        call,
        tol,
        sums,
    }
}

/// The op a case's label names, after its input's dtype and shape.
fn op_name(label: &str) -> String {
    let op = label.split(": ").nth(1).unwrap_or("");
    op.split(['(', ' ']).next().unwrap_or("").to_string()
}

/// The call's outcome, a panic caught as its message.
fn outcome(case: &Case, inputs: &[Tensor]) -> std::result::Result<Result<Tensor>, String> {
    catch_unwind(AssertUnwindSafe(|| (case.call)(inputs)?.contiguous())).map_err(panic_text)
}

/// Per input, the gradient of `sum(output * seed)` (`None` for an input that gets
/// none: an integer one, or one the output does not depend on); a panic caught as its
/// message.
type Grads = std::result::Result<Result<Vec<Option<Tensor>>>, String>;

fn gradients(case: &Case, inputs: &[Tensor], seed: &Tensor) -> Grads {
    catch_unwind(AssertUnwindSafe(|| {
        let vars = inputs
            .iter()
            .map(|t| match t.dtype().is_float() {
                true => t.detach().into_var(),
                false => Ok(t.clone()),
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let grads = (case.call)(&vars)?.backward_from(seed)?;
        vars.iter()
            .map(|v| grads.get(v).map(Tensor::contiguous).transpose())
            .collect()
    }))
    .map_err(panic_text)
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Where the two devices' gradients differ, how (`Compare::Gradients`).
fn gradient_difference(got: Grads, want: Grads, tol: impl Fn(DType) -> Tol) -> Option<String> {
    match (got, want) {
        (Err(panic), _) => Some(format!("GPU gradient panicked: {panic}")),
        (_, Err(panic)) => Some(format!("CPU gradient panicked: {panic}")),
        (Ok(Err(_)), Ok(Err(_))) => None,
        (Ok(Err(e)), Ok(Ok(_))) => {
            Some(format!("GPU gradient failed where the CPU's did not: {e}"))
        }
        (Ok(Ok(_)), Ok(Err(e))) => {
            Some(format!("CPU gradient failed where the GPU's did not: {e}"))
        }
        (Ok(Ok(got)), Ok(Ok(want))) => {
            got.iter()
                .zip(&want)
                .enumerate()
                .find_map(|(i, pair)| match pair {
                    (None, None) => None,
                    (Some(g), Some(w)) => difference(g, w, tol(w.dtype()), Compare::Gradients)
                        .map(|d| format!("gradient of input {i}: {d}")),
                    (g, w) => Some(format!(
                        "gradient of input {i}: GPU has one: {}, CPU: {}",
                        g.is_some(),
                        w.is_some()
                    )),
                })
        }
    }
}

/// How two results are compared.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Element by element: NaN only against NaN, infinities exactly.
    Elements,
    /// As `Elements`, with `atol` scaled by the largest wanted magnitude (sums).
    Sums,
    /// As `Sums`, NaN and the infinities alike: a gradient with an infinite input is
    /// sums of products in which an infinity meets a zero (a saturated activation's
    /// derivative) in one grouping of the terms and not in another.
    Gradients,
}

/// Where two results differ, how.
fn difference(got: &Tensor, want: &Tensor, tol: Tol, how: Compare) -> Option<String> {
    if got.dims() != want.dims() || got.dtype() != want.dtype() {
        return Some(format!(
            "GPU gave {:?} {:?}, CPU {:?} {:?}",
            got.dtype(),
            got.dims(),
            want.dtype(),
            want.dims()
        ));
    }
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    let scale = match how {
        Compare::Elements => 1.0,
        _ => w
            .iter()
            .filter(|x| x.is_finite())
            .fold(1.0f64, |m, x| m.max(x.abs())),
    };
    g.iter().zip(&w).enumerate().find_map(|(i, (&a, &b))| {
        let ok = if !b.is_finite() && how == Compare::Gradients {
            !a.is_finite()
        } else if b.is_nan() {
            a.is_nan()
        } else if b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= tol.atol * scale + tol.rtol * b.abs()
        };
        (!ok).then(|| format!("element {i}: GPU {a}, CPU {b}"))
    })
}

#[test]
fn random_calls_agree_and_never_panic() {
    let Some(gpu) = common::gpu() else { return };
    let seed = seed_from("KILN_TEST_SEED");
    let calls: usize = std::env::var("KILN_API_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    // Threads calling at once on the one device, each from its own seed (`seed + t`):
    // they share its pending work and group each other's launches. A fault seen only
    // with several may not come back on replay.
    let threads: u64 = std::env::var("KILN_API_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    eprintln!("api fuzz seed {seed} ({calls} calls, {threads} threads; KILN_TEST_SEED replays)");
    let faults: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..threads)
            .map(|t| {
                let gpu = &gpu;
                scope.spawn(move || fuzz(gpu, seed.wrapping_add(t), calls))
            })
            .collect();
        let joined = runs.into_iter().map(|r| r.join().expect("a fuzz thread"));
        joined.flatten().collect()
    });
    assert!(
        faults.is_empty(),
        "{} of {} calls went wrong (seed {seed}):\n{}",
        faults.len(),
        calls * threads as usize,
        faults.join("\n")
    );
}

/// `calls` random calls from `seed` on the CPU and on `gpu`: what went wrong.
fn fuzz(gpu: &Device, seed: u64, calls: usize) -> Vec<String> {
    let f16 = gpu.as_gpu().unwrap().supports(DType::F16);
    let mut p = Pick {
        mix: SplitMix(seed),
        f16,
    };
    let mut rng = Rng::new(seed);
    let mut faults = Vec::new();
    // Calls both backends refused, and per op the calls both ran.
    let (mut refused, mut graded) = (0, 0);
    let mut ran = std::collections::BTreeMap::new();
    for n in 0..calls {
        let case = case(&mut p, &mut rng);
        // The same layouts (views, broadcasts, offsets) as the CPU's inputs.
        let gpu_inputs: Vec<Tensor> = case.inputs.iter().map(|t| on_strided(gpu, t)).collect();
        let want = outcome(&case, &case.inputs);
        let got = outcome(&case, &gpu_inputs);
        let fault = match (got, want) {
            (Err(panic), _) => Some(format!("GPU panicked: {panic}")),
            (_, Err(panic)) => Some(format!("CPU panicked: {panic}")),
            (Ok(Err(Error::UnsupportedDType { .. })), Ok(_)) => None,
            (Ok(Err(e)), Ok(Ok(_))) => Some(format!("GPU refused what the CPU took: {e}")),
            (Ok(Ok(_)), Ok(Err(e))) => Some(format!("GPU took what the CPU refused: {e}")),
            (Ok(Err(_)), Ok(Err(_))) => {
                refused += 1;
                None
            }
            (Ok(Ok(g)), Ok(Ok(w))) => {
                *ran.entry(op_name(&case.label)).or_insert(0usize) += 1;
                let tol = |dtype| match (case.tol, dtype) {
                    (Some(t), DType::F32) => t,
                    _ => tol_for(dtype),
                };
                let how = match case.sums {
                    true => Compare::Sums,
                    false => Compare::Elements,
                };
                difference(&g, &w, tol(w.dtype()), how).or_else(|| {
                    // Then the gradients, for float outputs.
                    if !w.dtype().is_float() {
                        return None;
                    }
                    let seed = common::rand(w.dims(), &mut rng)
                        .to_dtype(w.dtype())
                        .unwrap();
                    let want = gradients(&case, &case.inputs, &seed);
                    let got = gradients(&case, &gpu_inputs, &on(gpu, &seed));
                    graded += usize::from(matches!(want, Ok(Ok(_))));
                    gradient_difference(got, want, tol)
                })
            }
        };
        if let Some(f) = fault {
            let fault = format!("seed {seed}, call {n}, {}: {f}", case.label);
            let values: Vec<Vec<f64>> = case
                .inputs
                .iter()
                .map(|t| t.to_f64_vec().unwrap().into_iter().take(64).collect())
                .collect();
            eprintln!("{fault}\n  inputs (first 64 of each): {values:?}");
            faults.push(fault);
        }
    }
    let compared: usize = ran.values().sum();
    eprintln!(
        "seed {seed}: {compared} calls compared ({graded} with gradients), {refused} refused by both; compared per op: {ran:?}"
    );
    faults
}
