//! The backward pass: one topological sort and one gradient rule per op. Rules are
//! written with tensor ops, so gradients are computed on the forward's device. Each
//! op's saved inputs are released as soon as its rule has run.

use super::edge::{Edge, Input};
use super::grad_mode::no_grad;
use super::op::{Node, Op};
use super::pending::{Gradient, Part, Pending, Slice};
use super::product::Product;
use super::row_sum::RowSum;
use super::stacks::Stacks;
use super::Gradients;
use crate::{Conv2dOptions, Tensor};
use kiln_core::{BinaryOp, Error, Layout, ReduceOp, Result, Shape, UnaryOp};
use std::collections::{HashMap, HashSet};

impl Tensor {
    /// True for a trainable leaf and for anything computed from one (while grad mode
    /// was on).
    pub fn requires_grad(&self) -> bool {
        !matches!(*self.node(), Node::Constant)
    }

    /// True for a trainable leaf (a variable).
    pub fn is_leaf_var(&self) -> bool {
        matches!(*self.node(), Node::Leaf)
    }

    /// Makes this tensor a trainable leaf (or a constant again). Computed tensors
    /// cannot be changed: `detach()` them first.
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        let mut node = self.node();
        match *node {
            Node::Constant | Node::Leaf => {
                *node = if on { Node::Leaf } else { Node::Constant };
                Ok(())
            }
            _ => Err(Error::InvalidArgument {
                op: "set_requires_grad",
                reason: "only leaf tensors can change; detach() a computed tensor first".into(),
            }),
        }
    }

    /// This tensor as a trainable leaf: `Tensor::randn(..)?.into_var()?`.
    pub fn into_var(self) -> Result<Tensor> {
        self.set_requires_grad(true)?;
        Ok(self)
    }

    /// The same data as a constant: gradients do not flow through it.
    pub fn detach(&self) -> Tensor {
        self.with_node(Node::Constant)
    }

    /// Gradients of this one-element tensor with respect to every trainable leaf it
    /// depends on. The graph's saved inputs are released as the pass goes: calling
    /// `backward` again on the same graph is an error.
    pub fn backward(&self) -> Result<Gradients> {
        let mut grads = Gradients::default();
        self.backward_into(&mut grads)?;
        Ok(grads)
    }

    /// `backward`, adding into `grads` (gradient accumulation over several passes).
    pub fn backward_into(&self, grads: &mut Gradients) -> Result<()> {
        self.backward_with(grads, &mut |_, _| Ok(()))
    }

    /// `backward_into`, calling `ready(variable, grads)` as soon as each trainable
    /// variable's gradient is complete, while the pass goes on: data-parallel training
    /// starts exchanging a group of gradients while the rest are still being computed.
    /// Variables are reached as early as the graph allows (each right after the last op
    /// that used it); an error from `ready` ends the pass.
    pub fn backward_with(
        &self,
        grads: &mut Gradients,
        ready: &mut dyn FnMut(&Tensor, &Gradients) -> Result<()>,
    ) -> Result<()> {
        if self.elem_count() != 1 {
            let reason = "backward needs a one-element tensor (reduce the loss first, or give the output's gradient: backward_from)".into();
            return Err(Error::InvalidShape {
                op: "backward",
                shape: self.shape().clone(),
                reason,
            });
        }
        let seed = no_grad(|| self.ones_like())?;
        self.backward_from_into(&seed, grads, ready)
    }

    /// The vector-Jacobian product: gradients of `sum(self * grad_output)` with respect
    /// to every trainable leaf, for an output of any shape (PyTorch's
    /// `y.backward(gradient=grad_output)`). `grad_output` has this tensor's shape,
    /// dtype and device.
    pub fn backward_from(&self, grad_output: &Tensor) -> Result<Gradients> {
        let mut grads = Gradients::default();
        self.backward_from_into(grad_output, &mut grads, &mut |_, _| Ok(()))?;
        Ok(grads)
    }

    fn backward_from_into(
        &self,
        grad_output: &Tensor,
        grads: &mut Gradients,
        ready: &mut dyn FnMut(&Tensor, &Gradients) -> Result<()>,
    ) -> Result<()> {
        check_seed("backward", self, grad_output)?;
        reverse_pass(vec![(self.clone(), grad_output.detach())], &mut |t, g| {
            if let Some(var) = t.variable() {
                grads.accumulate(var.id(), g.whole()?)?;
                ready(var, grads)?;
            }
            Ok(())
        })
    }
}

/// The gradients of `outputs` with respect to `inputs`, which may be any tensors the
/// outputs were computed from (not only trainable leaves): PyTorch's
/// `torch.autograd.grad(outputs, inputs, grad_outputs)`. Each output's gradient is its
/// entry of `grad_outputs`, or 1 for a one-element output when `None`. An input the
/// outputs do not depend on gets `None` (PyTorch's `allow_unused=True`). As with
/// `backward`, the graph is used up: run the forward pass again for another pass.
pub fn grad(
    outputs: &[Tensor],
    inputs: &[Tensor],
    grad_outputs: Option<&[Tensor]>,
) -> Result<Vec<Option<Tensor>>> {
    let op = "grad";
    if outputs.is_empty() || grad_outputs.is_some_and(|g| g.len() != outputs.len()) {
        let reason = format!(
            "{} outputs and {} output gradients: at least one output, and one gradient each",
            outputs.len(),
            grad_outputs.map_or(outputs.len(), <[Tensor]>::len)
        );
        return Err(Error::InvalidArgument { op, reason });
    }
    if let Some(i) = inputs.iter().position(|t| !t.requires_grad()) {
        let reason = format!("input {i} does not require a gradient; nothing can reach it");
        return Err(Error::InvalidArgument { op, reason });
    }
    let mut seeds = Vec::new();
    for (i, y) in outputs.iter().enumerate() {
        let seed = match grad_outputs {
            Some(g) => g[i].detach(),
            None if y.elem_count() == 1 => no_grad(|| y.ones_like())?,
            None => {
                let reason = format!(
                    "output {i} has shape {:?}: give its gradient in grad_outputs",
                    y.dims()
                );
                return Err(Error::InvalidArgument { op, reason });
            }
        };
        check_seed(op, y, &seed)?;
        seeds.push((y.clone(), seed));
    }
    let wanted: HashMap<_, usize> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id(), i))
        .collect();
    let mut found: Vec<Option<Tensor>> = vec![None; inputs.len()];
    reverse_pass(seeds, &mut |t, g| {
        if let Some(&i) = wanted.get(&t.id()) {
            found[i] = Some(g.whole()?);
        }
        Ok(())
    })?;
    // The same tensor given twice as an input gets its gradient in both places.
    for (i, t) in inputs.iter().enumerate() {
        if found[i].is_none() {
            found[i] = found[wanted[&t.id()]].clone();
        }
    }
    Ok(found)
}

/// An error unless `seed` can be `output`'s gradient: the output tracks a gradient,
/// and the seed has its shape, dtype and device.
fn check_seed(op: &'static str, output: &Tensor, seed: &Tensor) -> Result<()> {
    if !output.requires_grad() {
        let reason = "the tensor does not depend on any variable that requires a gradient".into();
        return Err(Error::InvalidArgument { op, reason });
    }
    if seed.shape() != output.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: output.shape().clone(),
            rhs: seed.shape().clone(),
        });
    }
    output.same_dtype(op, seed)?;
    output.same_device(op, seed)
}

/// The reverse pass from `seeds` (each output with its gradient): one rule per recorded
/// op, consumers before producers, each tensor's gradient summed over its consumers and
/// handed to `reached` once complete (for every tensor that tracks a gradient: leaves
/// and intermediate results). Each op's saved inputs are released as its rule runs.
fn reverse_pass(
    seeds: Vec<(Tensor, Tensor)>,
    reached: &mut dyn FnMut(&Edge, &Gradient) -> Result<()>,
) -> Result<()> {
    let op = "backward";
    no_grad(|| {
        let roots: Vec<Edge> = seeds.iter().map(|(t, _)| t.edge()).collect();
        let order = topological_order(&roots);
        let mut pending: HashMap<_, Pending> = HashMap::new();
        let mut stacks = Stacks::default();
        for (root, seed) in seeds {
            pending.entry(root.id()).or_default().add(seed.into())?;
        }
        for node in order {
            let Some(parts) = pending.remove(&node.id()) else {
                continue;
            };
            let split = match &*node.node() {
                Node::Op(recorded) => recorded.op.split_gradient(),
                _ => None,
            };
            let Some(grad) = parts.gradient(node.shape(), split, &mut stacks)? else {
                continue;
            };
            let recorded = std::mem::replace(&mut *node.node(), Node::Constant);
            match recorded {
                Node::Leaf => {
                    *node.node() = Node::Leaf;
                    reached(&node, &grad)?;
                }
                Node::Op(recorded) => {
                    *node.node() = Node::Freed(recorded.op.name());
                    reached(&node, &grad)?;
                    let parents = recorded.op.parents();
                    let needs = wanting(&recorded.needs, &parents);
                    let out = Input::of(node.clone(), recorded.output.clone());
                    let parent_grads = gradient(&recorded.op, &out, &grad, &needs)?;
                    for ((parent, g), need) in parents.into_iter().zip(parent_grads).zip(needs) {
                        if let (Some(g), true) = (g, need) {
                            if let Some(piece) = g.stacked_piece() {
                                stacks.want(piece)?;
                            }
                            pending.entry(parent.edge().id()).or_default().add(g)?;
                        }
                    }
                }
                Node::Freed(name) => {
                    *node.node() = Node::Freed(name);
                    let reason = format!("the graph through {name} was already used by an earlier backward pass; run the forward pass again");
                    return Err(Error::InvalidArgument { op, reason });
                }
                Node::Constant => {}
            }
        }
        Ok(())
    })
}

/// Which of an op's parents get a gradient: those that tracked one when it ran
/// (`recorded`) and still do.
fn wanting(recorded: &[bool], parents: &[&Input]) -> Vec<bool> {
    let tracks = parents.iter().map(|p| p.edge().requires_grad());
    recorded.iter().zip(tracks).map(|(&r, t)| r && t).collect()
}

/// Every tensor reachable from `roots` through recorded ops, consumers before
/// producers. (The roots' searches share what they have seen: a tensor first reached
/// from a later root is not reachable from an earlier one, so it cannot produce
/// anything the earlier search ordered, and reversing the whole post-order is valid.)
fn topological_order(roots: &[Edge]) -> Vec<Edge> {
    let mut post = Vec::new();
    let mut seen = HashSet::new();
    // Iterative depth-first search: (tensor, children pushed?).
    let mut stack: Vec<(Edge, bool)> = roots.iter().rev().map(|r| (r.clone(), false)).collect();
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            post.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let recorded = match &*t.node() {
            Node::Op(recorded) => Some(recorded.clone()),
            _ => None,
        };
        stack.push((t, true));
        if let Some(recorded) = recorded {
            // Variables are pushed first, so explored last: each lands in the order
            // right after its last consumer, and its gradient is ready that early. The
            // ops keep their relative order, so the sums of gradients do too.
            let parents = recorded.op.parents();
            let needs = wanting(&recorded.needs, &parents);
            let parents: Vec<Edge> = parents
                .into_iter()
                .zip(needs)
                .filter(|(p, need)| *need && !seen.contains(&p.edge().id()))
                .map(|(p, _)| p.edge().clone())
                .collect();
            let (leaves, ops): (Vec<_>, Vec<_>) =
                parents.into_iter().partition(|p| p.is_leaf_var());
            for p in leaves.into_iter().chain(ops) {
                stack.push((p, false));
            }
        }
    }
    post.reverse();
    post
}

/// Sums `g` over the dims that broadcasting added or stretched, giving `shape`.
pub(crate) fn sum_to(g: &Tensor, shape: &Shape) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let lead = g.rank() - shape.rank();
    let mut dims: Vec<isize> = (0..lead as isize).collect();
    for (i, &d) in shape.dims().iter().enumerate() {
        if d == 1 && g.dims()[lead + i] != 1 {
            dims.push((lead + i) as isize);
        }
    }
    let summed = if dims.is_empty() {
        g.clone()
    } else {
        g.sum(&dims, true)?
    };
    summed.reshape(shape.clone())
}

/// `sum_to` as a part: a sum over leading dims kept as rows (`RowSum`), to be summed
/// with the tensor's other such parts at once.
fn summed_to(g: &Tensor, shape: &Shape) -> Result<Part> {
    match RowSum::of(g, shape) {
        Some(rows) => Ok(Part::RowSum(rows)),
        None => sum_to(g, shape).map(Part::Whole),
    }
}

/// `g` with the reduced dims restored as size 1, so that it broadcasts against the
/// input (of shape `x`).
fn unreduce(g: &Tensor, x: &Shape, dims: &[usize], keepdim: bool) -> Result<Tensor> {
    if keepdim {
        return Ok(g.clone());
    }
    let shape: Vec<usize> = (0..x.rank())
        .map(|d| if dims.contains(&d) { 1 } else { x.dims()[d] })
        .collect();
    g.reshape(shape)
}

/// 1 where `x > 0`, -1 where `x < 0`, 0 at 0.
fn sign(x: &Tensor) -> Result<Tensor> {
    x.gt_scalar(0.0)?.sub(&x.lt_scalar(0.0)?)
}

/// `f()` where `need`, else `None`: a rule computes a parent's gradient only when the
/// parent asked for one (a CNN's first convolution has no use for the gradient of the
/// images, which cost a product and a col2im per step).
fn when(need: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    need.then(f).transpose()
}

/// Whole gradients as the parts a rule gives.
fn wholes(grads: Vec<Option<Tensor>>) -> Result<Vec<Option<Part>>> {
    Ok(grads.into_iter().map(|g| g.map(Part::Whole)).collect())
}

/// The gradient of each parent of `op` (in `Op::parents` order) given the output
/// `out` and its gradient `g`; `None` for a parent that gets none. `needs` says which
/// parents want one: the rules of ops with several parents skip the others' work (a
/// single-parent op is only reached when its parent wants a gradient). Rules read
/// values only where `Op::release` kept them.
fn gradient(op: &Op, out: &Input, g: &Gradient, needs: &[bool]) -> Result<Vec<Option<Part>>> {
    use std::f64::consts::PI;
    // Before the whole gradient is asked for: this rule reads its parts.
    if let Op::LstmCell { z, c } = op {
        return lstm_cell_rule(z, c, g);
    }
    let g = &g.whole()?;
    let one = |t: Tensor| Ok(vec![Some(Part::Whole(t))]);
    let y = || out.value();
    match op {
        Op::Unary(x, u) => {
            let x = || x.value();
            let d = match *u {
                UnaryOp::Neg => return one(g.neg()?),
                UnaryOp::AddScalar(_) => return one(g.clone()),
                UnaryOp::MulScalar(s) => return one(g.mul_scalar(s as f64)?),
                UnaryOp::Abs => sign(x()?)?,
                UnaryOp::Exp => y()?.clone(),
                UnaryOp::Log => x()?.recip()?,
                UnaryOp::Sqrt => y()?.recip()?.mul_scalar(0.5)?,
                // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
                UnaryOp::Rsqrt => y()?.pow_scalar(3.0)?.mul_scalar(-0.5)?,
                UnaryOp::Sin => x()?.cos()?,
                UnaryOp::Cos => x()?.sin()?.neg()?,
                UnaryOp::Tanh => y()?.square()?.neg()?.add_scalar(1.0)?,
                UnaryOp::Sigmoid => y()?.mul(&y()?.neg()?.add_scalar(1.0)?)?,
                UnaryOp::Relu => x()?.gt_scalar(0.0)?,
                UnaryOp::LeakyRelu(a) => {
                    let positive = x()?.ge_scalar(0.0)?;
                    positive.mul_scalar(1.0 - a as f64)?.add_scalar(a as f64)?
                }
                UnaryOp::GeluErf => x()?.gelu_derivative()?,
                UnaryOp::GeluErfDerivative => {
                    // d/dx (Phi + x phi) = 2 phi + x phi' = phi (2 - x^2)
                    let x2 = x()?.square()?;
                    let pdf = x2
                        .mul_scalar(-0.5)?
                        .exp()?
                        .mul_scalar(1.0 / (2.0 * PI).sqrt())?;
                    pdf.mul(&x2.neg()?.add_scalar(2.0)?)?
                }
                UnaryOp::GeluTanh => {
                    // u = c (x + 0.044715 x^3), t = tanh u:
                    // 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2)
                    let c = (2.0 / PI).sqrt();
                    let x2 = x()?.square()?;
                    let t = x()?
                        .mul(&x2.mul_scalar(0.044715)?.add_scalar(1.0)?)?
                        .mul_scalar(c)?
                        .tanh()?;
                    let left = t.add_scalar(1.0)?.mul_scalar(0.5)?;
                    let du = x2
                        .mul_scalar(3.0 * 0.044715)?
                        .add_scalar(1.0)?
                        .mul_scalar(c)?;
                    let right = x()?
                        .mul(&t.square()?.neg()?.add_scalar(1.0)?)?
                        .mul(&du)?
                        .mul_scalar(0.5)?;
                    left.add(&right)?
                }
                UnaryOp::Silu => {
                    // s (1 + x (1 - s)), s = sigmoid(x)
                    let s = x()?.sigmoid()?;
                    s.mul(&x()?.mul(&s.neg()?.add_scalar(1.0)?)?.add_scalar(1.0)?)?
                }
                UnaryOp::Clamp(min, max) => x()?
                    .ge(&x()?.full_like(min as f64)?)?
                    .mul(&x()?.le(&x()?.full_like(max as f64)?)?)?,
                UnaryOp::PowScalar(p) => x()?.pow_scalar(p as f64 - 1.0)?.mul_scalar(p as f64)?,
                UnaryOp::Recip => y()?.square()?.neg()?,
                UnaryOp::Square => x()?.mul_scalar(2.0)?,
                UnaryOp::Erf => x()?.square()?.neg()?.exp()?.mul_scalar(2.0 / PI.sqrt())?,
            };
            one(g.mul(&d)?)
        }
        Op::Binary(a_in, b_in, op) => {
            let (na, nb) = (needs[0], needs[1]);
            let (a, b) = (|| a_in.value(), || b_in.value());
            let (ga, gb) = match op {
                BinaryOp::Add => (when(na, || Ok(g.clone()))?, when(nb, || Ok(g.clone()))?),
                BinaryOp::Sub => (when(na, || Ok(g.clone()))?, when(nb, || g.neg())?),
                BinaryOp::Mul => (when(na, || g.mul(b()?))?, when(nb, || g.mul(a()?))?),
                BinaryOp::Div => (
                    when(na, || g.div(b()?))?,
                    when(nb, || g.mul(y()?)?.div(b()?)?.neg())?,
                ),
                BinaryOp::Pow => (
                    when(na, || g.mul(b()?)?.mul(&a()?.pow(&b()?.sub_scalar(1.0)?)?))?,
                    when(nb, || g.mul(y()?)?.mul(&a()?.log()?))?,
                ),
                // d atan2(a, b) = (b da - a db) / (a^2 + b^2)
                BinaryOp::Atan2 => {
                    let r2 = a()?.square()?.add(&b()?.square()?)?;
                    (
                        when(na, || g.mul(b()?)?.div(&r2))?,
                        when(nb, || g.mul(a()?)?.neg()?.div(&r2))?,
                    )
                }
                // Ties send the gradient to the left operand.
                BinaryOp::Maximum | BinaryOp::Minimum => {
                    let left = if *op == BinaryOp::Maximum {
                        a()?.ge(b()?)?
                    } else {
                        a()?.le(b()?)?
                    };
                    let left = left.broadcast_to(out.shape().clone())?;
                    (
                        when(na, || g.mul(&left))?,
                        when(nb, || g.mul(&left.neg()?.add_scalar(1.0)?))?,
                    )
                }
                // Piecewise constant: never recorded (`Gradient::Constant` in the table).
                BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge => return Ok(vec![None, None]),
            };
            Ok(vec![
                ga.map(|ga| summed_to(&ga, a_in.shape())).transpose()?,
                gb.map(|gb| summed_to(&gb, b_in.shape())).transpose()?,
            ])
        }
        Op::Where {
            cond,
            on_true,
            on_false,
        } => {
            // A zero broadcast from one element, where a tensor of zeros was cleared.
            // A branch that is a constant (a masked fill's value) gets no gradient:
            // one made anyway held the incoming gradient, which a fused kernel then
            // had to write out beside its own result.
            let zero = g.scalar_like(0.0)?;
            let gt = when(needs[0], || {
                sum_to(&cond.where_cond(g, &zero)?, on_true.shape())
            })?;
            let gf = when(needs[1], || {
                sum_to(&cond.where_cond(&zero, g)?, on_false.shape())
            })?;
            wholes(vec![gt, gf])
        }
        Op::Cast(x) => one(g.to_dtype(x.edge().dtype())?),
        Op::ToDevice(x) => one(g.to_device(x.edge().device())?),
        Op::Identity(_) => one(g.clone()),
        Op::Reshape(x) => one(g.reshape(x.shape().clone())?),
        Op::Permute(_, perm) => {
            let mut inverse = vec![0isize; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i as isize;
            }
            one(g.permute(&inverse)?)
        }
        Op::Broadcast(x) => one(sum_to(g, x.shape())?),
        // Kept apart: the input's slices are put in place together (`pending.rs`).
        Op::Narrow { dim, start, .. } => Ok(vec![Some(Part::Slice(Slice::new(*dim, *start, g)))]),
        Op::Reduce {
            x,
            op,
            dims,
            keepdim,
        } => {
            let gk = unreduce(g, x.shape(), dims, *keepdim)?;
            let gx = match op {
                ReduceOp::Sum => gk.broadcast_to(x.shape().clone())?,
                ReduceOp::Mean => {
                    let n: usize = dims.iter().map(|&d| x.dims()[d]).product();
                    gk.mul_scalar(1.0 / n as f64)?
                        .broadcast_to(x.shape().clone())?
                }
                // Ties share the gradient equally.
                ReduceOp::Max | ReduceOp::Min => {
                    let yk = unreduce(y()?, x.shape(), dims, *keepdim)?;
                    let hits = x.value()?.eq(&yk)?;
                    let dims: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
                    let count = hits.sum(&dims, true)?;
                    hits.mul(&gk.div(&count)?)?
                }
                // Never recorded: `Missing` and `Constant` in the op table.
                ReduceOp::Prod | ReduceOp::ArgMax | ReduceOp::ArgMin => {
                    return Err(Error::NoGradient {
                        op: op.name(),
                        reason: "no gradient rule".into(),
                    })
                }
            };
            one(gx)
        }
        Op::Softmax { dim, log, .. } => one(y()?.softmax_backward(g, *dim, *log)?),
        Op::Matmul(a, b) => {
            // Work on the 2-D-or-more forms; 1-D operands were a row / a column.
            let a2 = || match a.rank() {
                1 => a.value()?.unsqueeze(0),
                _ => Ok(a.value()?.clone()),
            };
            let b2 = || match b.rank() {
                1 => b.value()?.unsqueeze(1),
                _ => Ok(b.value()?.clone()),
            };
            let (a2_layout, b2_layout) = (matrix_layout(a, 0), matrix_layout(b, 1));
            let mut g2 = g.clone();
            if b.rank() == 1 {
                g2 = g2.unsqueeze(-1)?;
            }
            if a.rank() == 1 {
                g2 = g2.unsqueeze(-2)?;
            }
            // An operand that is a transposed view (a weight used as `w.t()`) gets its
            // gradient computed transposed, so that the gradient reaching the weight is
            // compact like it: the optimizer then needs no copy.
            let ga = when(needs[0], || match transposed_view(&a2_layout) {
                true => sum_to(&b2()?.matmul(&g2.t()?)?, swap_last(&a2_layout).shape())?.t(),
                false => sum_to(&g2.matmul(&b2()?.t()?)?, a2_layout.shape()),
            })?;
            let ga = ga.map(|ga| ga.reshape(a.shape().clone())).transpose()?;
            let gb = match (needs[1], b.rank(), a2_layout.dims().len()) {
                (false, ..) => None,
                // A matrix's gradient is `a^T g` over all the rows that met it. A matrix
                // every product of a batch shares (a linear layer's weight against
                // `[batch, rows, in]`) takes all the batch's rows in one product, not a
                // product per matrix and a sum over the batch after; a matrix used in
                // several products (a recurrent weight, once a step) gets one product
                // over all of theirs (`product.rs`).
                (true, 2, rank) => {
                    let rows = |t: &Tensor| t.view(&[-1, t.dims()[t.rank() - 1] as isize]);
                    let (x, y) = match rank {
                        2 => (a2()?, g2.clone()),
                        _ => (rows(&a2()?)?, rows(&g2)?),
                    };
                    let transposed = transposed_view(b.edge().layout());
                    Some(Part::Product(Product::new(x, y, transposed)))
                }
                (true, ..) => Some(Part::Whole(
                    match transposed_view(&b2_layout) {
                        true => {
                            sum_to(&g2.t()?.matmul(&a2()?)?, swap_last(&b2_layout).shape())?.t()?
                        }
                        false => sum_to(&a2()?.t()?.matmul(&g2)?, b2_layout.shape())?,
                    }
                    .reshape(b.shape().clone())?,
                )),
            };
            Ok(vec![ga.map(Part::Whole), gb])
        }
        Op::Conv2d { x, w, spec, groups } => {
            // Transposed convolution of the gradient gives back the input's size once
            // the rows and columns the forward's stride skipped are restored.
            let span = |o: usize, s: usize, p: usize, d: usize, k: usize| {
                ((o - 1) * s + d * (k - 1) + 1).saturating_sub(2 * p)
            };
            let extra = (
                spec.h
                    - span(
                        spec.oh,
                        spec.stride.0,
                        spec.padding.0,
                        spec.dilation.0,
                        spec.kh,
                    ),
                spec.w
                    - span(
                        spec.ow,
                        spec.stride.1,
                        spec.padding.1,
                        spec.dilation.1,
                        spec.kw,
                    ),
            );
            let opts = Conv2dOptions {
                stride: spec.stride,
                padding: spec.padding,
                dilation: spec.dilation,
                groups: *groups,
            };
            let gx = when(needs[0], || {
                g.conv_transpose2d(w.value()?, None, opts, extra)
            })?;
            let gw = when(needs[1], || {
                x.value()?.conv2d_weight_grad(g, spec, w.dims()[0], *groups)
            })?;
            wholes(vec![gx, gw])
        }
        Op::ConvTranspose2d { x, w, spec, groups } => {
            let opts = Conv2dOptions {
                stride: spec.stride,
                padding: spec.padding,
                dilation: spec.dilation,
                groups: *groups,
            };
            let gx = when(needs[0], || g.conv2d(w.value()?, None, opts))?;
            let gw = when(needs[1], || {
                g.conv2d_weight_grad(x.value()?, spec, w.dims()[0], *groups)
            })?;
            wholes(vec![gx, gw])
        }
        Op::Attention { q, k, v, saved } => {
            let grads = y()?.attention_backward(g, saved, [q.shape(), k.shape(), v.shape()])?;
            let parts = grads.into_iter().zip(needs).map(|(d, &n)| n.then_some(d));
            wholes(parts.collect())
        }
        Op::MaxPool2d { indices, spec, .. } => one(g.max_pool2d_backward(indices, spec)?),
        Op::AvgPool2d { spec, kind, .. } => one(g.avg_pool2d_backward(spec, *kind)?),
        Op::Cat { xs, dim } => {
            let mut start = 0;
            let mut out = Vec::new();
            for x in xs {
                let len = x.dims()[*dim];
                out.push(Some(g.narrow(*dim as isize, start, len)?));
                start += len;
            }
            wholes(out)
        }
        Op::Pad { x, pads } => {
            let mut gx = g.clone();
            for (i, &(before, _)) in pads.iter().enumerate() {
                let d = x.rank() - 1 - i;
                gx = gx.narrow(d as isize, before, x.dims()[d])?;
            }
            one(gx)
        }
        Op::IndexSelect { x, dim, index } => one(x.edge().zeros()?.index_add(*dim, index, g)?),
        Op::Gather { x, dim, index } => {
            one(x.edge().zeros()?.scatter_add(*dim as isize, index, g)?)
        }
        Op::ScatterAdd { dim, index, .. } => {
            wholes(vec![Some(g.clone()), Some(g.gather(*dim as isize, index)?)])
        }
        Op::LayerNorm {
            x,
            weight,
            bias,
            dims,
            eps,
        } => {
            let (x, w) = (x.value()?, weight.as_ref().map(Input::value).transpose()?);
            if let Some((dx, products)) = x.layer_norm_backward(g, w, *dims, *eps)? {
                let mut out = vec![Some(dx)];
                if let (Some(w), Some(p)) = (weight, products) {
                    out.push(Some(sum_to(&p, w.shape())?));
                }
                if let Some(b) = bias {
                    out.push(Some(sum_to(g, b.shape())?));
                }
                return wholes(out);
            }
            let norm: Vec<isize> = (x.rank() - dims..x.rank()).map(|d| d as isize).collect();
            let mean = x.mean(&norm, true)?;
            let centered = x.sub(&mean)?;
            let rstd = centered
                .square()?
                .mean(&norm, true)?
                .add_scalar(*eps)?
                .rsqrt()?;
            let xhat = centered.mul(&rstd)?;
            let gxhat = match w {
                Some(w) => g.mul(w)?,
                None => g.clone(),
            };
            // dx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
            let inner = gxhat
                .sub(&gxhat.mean(&norm, true)?)?
                .sub(&xhat.mul(&gxhat.mul(&xhat)?.mean(&norm, true)?)?)?;
            let mut out = vec![Some(inner.mul(&rstd)?)];
            if let Some(w) = weight {
                out.push(Some(sum_to(&g.mul(&xhat)?, w.shape())?));
            }
            if let Some(b) = bias {
                out.push(Some(sum_to(g, b.shape())?));
            }
            wholes(out)
        }
        Op::BatchNorm {
            x,
            weight,
            bias,
            mean,
            rstd,
        } => {
            // With s1 = sum(g) and s2 = sum(g x_hat) over a channel's n elements (one
            // pass of the backend's): dx = w rstd (g - (s1 + x_hat s2) / n), dw = s2,
            // db = s1. The 1 / n scales the full-size term, so that the whole of dx is
            // elementwise over x's shape (one fused kernel on a GPU).
            let x = x.value()?;
            let n = (x.elem_count() / x.dims()[1]) as f64;
            let [s1, s2] = x.batch_norm_backward_sums(g, mean, rstd)?;
            let gx = when(needs[0], || {
                let xhat = x.sub(mean)?.mul(rstd)?;
                let scale = match weight {
                    Some(w) => rstd.mul(&w.value()?.reshape(mean.shape().clone())?)?,
                    None => rstd.clone(),
                };
                let shared = xhat.mul(&s2)?.add(&s1)?.mul_scalar(1.0 / n)?;
                g.sub(&shared)?.mul(&scale)
            })?;
            let mut out = vec![gx];
            if let Some(w) = weight {
                out.push(Some(s2.reshape(w.shape().clone())?));
            }
            if let Some(b) = bias {
                out.push(Some(s1.reshape(b.shape().clone())?));
            }
            wholes(out)
        }
        Op::CrossEntropy {
            logits,
            targets,
            smoothing,
        } => one(logits
            .value()?
            .cross_entropy_backward(targets, g, *smoothing)?),
        Op::LstmCell { z, c } => lstm_cell_rule(z, c, &Gradient::Whole(g.clone())),
        Op::GruCell { x, hp, h } => {
            let (dx, dhp, dh) = x.value()?.gru_cell_backward(hp.value()?, h.value()?, g)?;
            wholes(vec![Some(dx), Some(dhp), Some(dh)])
        }
    }
}

/// `lstm_cell`'s rule, on the gradients of its `h` and `c'`.
fn lstm_cell_rule(z: &Input, c: &Input, g: &Gradient) -> Result<Vec<Option<Part>>> {
    let [dh, dc] = g.parts(1, c.dims()[1])?;
    let (dz, dc) = z.value()?.lstm_cell_backward(c.value()?, &dh, &dc)?;
    wholes(vec![Some(dz), Some(dc)])
}

/// True when `x` (rank 2 or more) is the transpose of a compact tensor: its last two
/// dims swapped make it contiguous.
fn transposed_view(x: &Layout) -> bool {
    x.dims().len() >= 2 && !x.is_contiguous() && swap_last(x).is_contiguous()
}

/// `x` (rank 2 or more) with its last two dims swapped.
fn swap_last(x: &Layout) -> Layout {
    let r = x.dims().len();
    x.transpose(r - 2, r - 1)
}

/// A matmul operand's layout in its 2-D-or-more form: a vector `[n]` as a row `[1, n]`
/// (`at == 0`) or a column `[n, 1]` (`at == 1`).
fn matrix_layout(x: &Input, at: usize) -> Layout {
    let layout = x.edge().layout();
    match x.rank() {
        1 => {
            let mut dims = vec![1; 2];
            dims[1 - at] = x.dims()[0];
            Layout::contiguous(dims)
        }
        _ => layout.clone(),
    }
}
