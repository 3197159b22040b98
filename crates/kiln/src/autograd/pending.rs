//! A tensor's gradient while the rules of its consumers run: whole gradients summed as
//! they come, the gradients of `narrow`ed slices kept apart and put in place once, and
//! a matrix's gradients from several products kept as operands and multiplied once
//! (`product.rs`), a bias's from several uses kept as rows and summed once
//! (`row_sum.rs`). Padding each slice to the whole shape and adding it, as `narrow`'s
//! rule would, moves the whole tensor per slice: an LSTM that narrows its input
//! projections once a step spent most of its CPU backward pass zeroing, copying and
//! adding them, and on a GPU the padded slices, fused six to a kernel, still wrote the
//! whole tensor each time. Side by side they are one `cat` (on a GPU one launch per
//! up to 25 slices). A GPU keeps padding a few slices, which fuse into one kernel, or
//! into the kernel that reads their sum. A rule that reads its output's gradient in two
//! parts (an LSTM cell's `h` and `c'`, which the model narrows) gets them apart, never
//! put together (`Gradient::Split`): on a GPU the gradient of `h` is then still the
//! pending sum that the cell's backward can compute in the stores of its product.

use super::product::{self, Product};
use super::row_sum::{self, RowSum};
use super::stacks::Stacks;
use crate::Tensor;
use kiln_core::{Error, Layout, Result, Shape};
use std::sync::Arc;

/// What one consumer's rule gives a tensor towards its gradient.
pub(crate) enum Part {
    /// A gradient of the tensor's shape.
    Whole(Tensor),
    /// The gradient of one slice (a `narrow` of the tensor).
    Slice(Slice),
    /// A matrix's gradient from one product it took part in.
    Product(Product),
    /// The gradient of a tensor broadcast over leading dims, from one use.
    RowSum(RowSum),
}

impl Part {
    /// The tensor this part puts side by side with other parts' when the gradient is
    /// complete, if any: a slice's gradient, a product's right operand (one kept for
    /// stacking: `Pending::add` multiplies the others at once), a use's rows to sum.
    pub(crate) fn stacked_piece(&self) -> Option<&Tensor> {
        match self {
            Part::Slice(s) => Some(&s.grad),
            Part::Product(p) if p.small() => Some(p.rows_gradient()),
            Part::RowSum(r) => Some(r.grad()),
            Part::Product(_) | Part::Whole(_) => None,
        }
    }
}

impl From<Tensor> for Part {
    fn from(g: Tensor) -> Part {
        Part::Whole(g)
    }
}

/// The gradient of one slice of a tensor along `dim`, from `start`.
pub(crate) struct Slice {
    dim: usize,
    start: usize,
    grad: Tensor,
}

impl Slice {
    pub(crate) fn new(dim: usize, start: usize, grad: &Tensor) -> Slice {
        Slice {
            dim,
            start,
            grad: grad.clone(),
        }
    }

    fn len(&self) -> usize {
        self.grad.dims()[self.dim]
    }

    /// The slice's gradient zero-padded to `shape`.
    fn padded(&self, shape: &Shape) -> Result<Tensor> {
        let rank = shape.rank();
        let after = shape.dims()[self.dim] - self.start - self.len();
        let mut pads = vec![(0, 0); rank - self.dim];
        pads[rank - 1 - self.dim] = (self.start, after);
        self.grad.pad(&pads, 0.0)
    }
}

/// A tensor's complete gradient, as a rule reads it.
pub(crate) enum Gradient {
    Whole(Tensor),
    /// In two parts along `dim`, before `at` and from it (each `None` where no consumer
    /// gave it a gradient), of a tensor of `shape`.
    Split {
        dim: usize,
        at: usize,
        shape: Shape,
        parts: [Option<Tensor>; 2],
    },
}

impl Gradient {
    /// The whole gradient (a split one put together).
    pub(crate) fn whole(&self) -> Result<Tensor> {
        match self {
            Gradient::Whole(g) => Ok(g.clone()),
            Gradient::Split {
                dim,
                at,
                shape,
                parts,
            } => {
                let starts = [0, *at];
                let slices = (parts.iter().zip(starts))
                    .filter_map(|(p, start)| p.as_ref().map(|p| Slice::new(*dim, start, p)));
                assemble(&slices.collect::<Vec<_>>(), shape, None)
            }
        }
    }

    /// The gradient's two parts along `dim`, before `at` and from it: zeros for a part
    /// no consumer gave a gradient, views of a whole gradient.
    pub(crate) fn parts(&self, dim: usize, at: usize) -> Result<[Tensor; 2]> {
        match self {
            Gradient::Split {
                dim: d,
                at: a,
                shape,
                parts,
            } if (*d, *a) == (dim, at) => {
                let part = |i: usize| -> Result<Tensor> {
                    if let Some(p) = &parts[i] {
                        return Ok(p.clone());
                    }
                    let mut dims = shape.dims().to_vec();
                    dims[dim] = [at, dims[dim] - at][i];
                    // `Pending::gradient` splits only where a part came.
                    let like = parts
                        .iter()
                        .flatten()
                        .next()
                        .ok_or(Error::InvalidArgument {
                            op: "backward",
                            reason: "a split gradient with no parts".into(),
                        })?;
                    // A constant, which a GPU computes in the loads of its reader.
                    Tensor::full(dims, 0.0, like.dtype(), &like.device())
                };
                Ok([part(0)?, part(1)?])
            }
            _ => {
                let g = self.whole()?;
                let len = g.dims()[dim];
                Ok([
                    g.narrow(dim as isize, 0, at)?,
                    g.narrow(dim as isize, at, len - at)?,
                ])
            }
        }
    }
}

/// The gradient of one tensor so far.
#[derive(Default)]
pub(crate) struct Pending {
    whole: Option<Tensor>,
    slices: Vec<Slice>,
    products: Vec<Product>,
    row_sums: Vec<RowSum>,
}

impl Pending {
    pub(crate) fn add(&mut self, part: Part) -> Result<()> {
        match part {
            Part::Whole(g) => {
                self.whole = Some(match self.whole.take() {
                    Some(previous) => previous.add(&g)?,
                    None => g,
                });
            }
            Part::Slice(slice) => self.slices.push(slice),
            // A product with many rows is cheaper alone than copied into a stack.
            Part::Product(p) if !p.small() => self.add(Part::Whole(p.evaluate()?))?,
            Part::Product(p) => self.products.push(p),
            Part::RowSum(r) => {
                self.row_sums.push(r);
                let kept: usize = self.row_sums.iter().map(RowSum::elem_count).sum();
                if kept > row_sum::MAX_KEPT {
                    // Summed now, to hold less: with nothing to share.
                    self.add_row_sums(&mut Stacks::default())?;
                }
            }
        }
        Ok(())
    }

    /// The complete gradient of a tensor of `shape`, in two parts along `split`'s dim
    /// before and from its index where every part came as a slice within one of them;
    /// `None` before any part came.
    pub(crate) fn gradient(
        self,
        shape: &Shape,
        split: Option<(usize, usize)>,
        stacks: &mut Stacks,
    ) -> Result<Option<Gradient>> {
        let Some((dim, at)) = split else {
            return Ok(self.total(shape, stacks)?.map(Gradient::Whole));
        };
        let within = |s: &Slice| s.dim == dim && (s.start + s.len() <= at || s.start >= at);
        let only_slices = self.whole.is_none()
            && self.products.is_empty()
            && self.row_sums.is_empty()
            && self.slices.iter().all(within);
        if !only_slices {
            return Ok(self.total(shape, stacks)?.map(Gradient::Whole));
        }
        let mut halves = [Pending::default(), Pending::default()];
        for mut s in self.slices {
            let second = s.start >= at;
            s.start -= if second { at } else { 0 };
            halves[usize::from(second)].slices.push(s);
        }
        let mut parts = [None, None];
        for (i, (half, len)) in halves
            .into_iter()
            .zip([at, shape.dims()[dim] - at])
            .enumerate()
        {
            let mut dims = shape.dims().to_vec();
            dims[dim] = len;
            parts[i] = half.total(&Shape::new(dims), stacks)?;
        }
        if parts.iter().all(Option::is_none) {
            return Ok(None);
        }
        let shape = shape.clone();
        Ok(Some(Gradient::Split {
            dim,
            at,
            shape,
            parts,
        }))
    }

    /// The whole gradient of a tensor of `shape`; `None` before any part came. What
    /// is stacked goes side by side through `stacks`.
    fn total(mut self, shape: &Shape, stacks: &mut Stacks) -> Result<Option<Tensor>> {
        if !self.slices.is_empty() {
            let slices = std::mem::take(&mut self.slices);
            let assembled = assemble(&slices, shape, Some(stacks))?;
            self.add(Part::Whole(assembled))?;
        }
        let products = std::mem::take(&mut self.products);
        if let Some(multiplied) = product::stacked(products, stacks)? {
            self.add(Part::Whole(multiplied))?;
        }
        self.add_row_sums(stacks)?;
        Ok(self.whole)
    }

    /// Sums the row sums kept so far into the whole gradient.
    fn add_row_sums(&mut self, stacks: &mut Stacks) -> Result<()> {
        for part in row_sum::summed(std::mem::take(&mut self.row_sums), stacks)? {
            self.add(Part::Whole(part))?;
        }
        Ok(())
    }
}

/// The sum of `slices` of a tensor of `shape`: slices whose gradients already lie in
/// one storage as the slices lay in the tensor, as they are; disjoint slices along one
/// dim side by side (with zeros between them) in one `cat`, through the pass's
/// `stacks` where they cover the middle of three dims (a recurrent layer's steps,
/// whose gradients its weight's product stacks too); others, and on a GPU fewer than
/// one fused kernel reads, padded and summed in turn.
fn assemble(slices: &[Slice], shape: &Shape, stacks: Option<&mut Stacks>) -> Result<Tensor> {
    let dim = slices[0].dim;
    let mut order: Vec<&Slice> = slices.iter().collect();
    order.sort_by_key(|s| s.start);
    if let Some(whole) = in_place(&order, shape) {
        return Ok(whole);
    }
    let side_by_side = slices.iter().all(|s| s.dim == dim)
        && order
            .windows(2)
            .all(|w| w[0].start + w[0].len() <= w[1].start);
    let fuse = slices[0].grad.device().is_gpu() && slices.len() < kiln_wgpu::MAX_FUSED_READS;
    if !side_by_side || fuse {
        let mut sum = Pending::default();
        for s in slices {
            sum.add(Part::Whole(s.padded(shape)?))?;
        }
        return Ok(sum.whole.expect("at least one slice"));
    }
    // Side by side with no gaps along the middle of three dims: a recurrent layer's
    // steps.
    let ends = order
        .iter()
        .try_fold(0, |at, s| (s.start == at).then(|| at + s.len()));
    let steps = shape.rank() == 3 && dim == 1 && ends == Some(shape.dims()[1]);
    if let (Some(stacks), true) = (stacks, steps) {
        let pieces: Vec<&Tensor> = order.iter().map(|s| &s.grad).collect();
        return stacks.side_by_side(&pieces);
    }
    let grad = &slices[0].grad;
    let zeros = |len: usize| {
        let mut dims = shape.dims().to_vec();
        dims[dim] = len;
        Tensor::zeros(dims, grad.dtype(), &grad.device())
    };
    let mut pieces = Vec::with_capacity(2 * order.len() + 1);
    let mut at = 0;
    for s in order {
        if s.start > at {
            pieces.push(zeros(s.start - at)?);
        }
        pieces.push(s.grad.clone());
        at = s.start + s.len();
    }
    if at < shape.dims()[dim] {
        pieces.push(zeros(shape.dims()[dim] - at)?);
    }
    Tensor::cat(&pieces, dim as isize)
}

/// The whole gradient as a view, where the slices' gradients (`order`, by start) cover
/// the tensor along one dim and are views of one storage, each where its slice lies in
/// that view (attention writes the gradients of heads split from one projection so).
fn in_place(order: &[&Slice], shape: &Shape) -> Option<Tensor> {
    let first = order[0];
    let (dim, storage) = (first.dim, first.grad.storage());
    let mut at = 0;
    for s in order {
        if s.dim != dim || s.start != at || !Arc::ptr_eq(&s.grad.storage(), &storage) {
            return None;
        }
        at += s.len();
    }
    let strides = first.grad.layout().strides().to_vec();
    let whole = Layout::new(shape.clone(), strides, first.grad.layout().offset());
    let placed = |s: &&Slice| whole.narrow(dim, s.start, s.len()) == *s.grad.layout();
    (at == shape.dims()[dim] && order.iter().all(placed)).then(|| first.grad.with_layout(whole))
}
