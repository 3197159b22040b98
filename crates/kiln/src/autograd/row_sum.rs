//! The gradient of a tensor broadcast over leading dims (a bias) from one use: the sum
//! of the rows of the use's output gradient, kept as those rows until every use has
//! come. A bias added once a step (a GRU's hidden bias) got a reduction a step and the
//! adds of their results, which on a GPU fused a few to a kernel: 22 launches a
//! step for the char GRU's 64 steps. Stacked, the steps' rows are one `cat` and one
//! reduction. The rows kept are as large as the uses' outputs, not the bias: past
//! `MAX_KEPT` elements they are summed at once, so a long loop's backward pass keeps
//! no more than that for a bias.

use super::stacks::Stacks;
use crate::Tensor;
use kiln_core::{Result, Shape};

/// Elements of kept rows past which a tensor's row sums are summed at once (16 MiB of
/// f32; the char GRU's 64 steps keep 1.5M).
pub(crate) const MAX_KEPT: usize = 1 << 22;

/// One use's gradient, summed over its first `lead` dims to give the tensor's.
pub(crate) struct RowSum {
    grad: Tensor,
    lead: usize,
}

impl RowSum {
    /// `g` to be summed over its leading dims, when the tensor's `shape` is its
    /// trailing dims (broadcast over the leading ones only) and `g` is on a GPU;
    /// `None` when broadcasting also stretched a dim of `shape`, or added none, and on
    /// the CPU, where a sum costs no launch and the `cat` would only copy.
    pub(crate) fn of(g: &Tensor, shape: &Shape) -> Option<RowSum> {
        let lead = g.rank().checked_sub(shape.rank())?;
        let over_leading = lead > 0 && g.dims()[lead..] == *shape.dims();
        (over_leading && g.device().is_gpu()).then(|| RowSum {
            grad: g.clone(),
            lead,
        })
    }

    /// The use's gradient, whose rows are stacked with other uses'.
    pub(crate) fn grad(&self) -> &Tensor {
        &self.grad
    }

    /// Elements of the use's gradient, kept until the sum.
    pub(crate) fn elem_count(&self) -> usize {
        self.grad.elem_count()
    }

    /// The gradient as rows: `[rows, elements of the tensor]`.
    fn rows(&self) -> Result<Tensor> {
        let n: usize = self.grad.dims()[self.lead..].iter().product();
        let rows = self.grad.elem_count().checked_div(n).unwrap_or(0);
        self.grad.reshape([rows, n])
    }

    /// This use's gradient summed alone.
    fn alone(&self) -> Result<Tensor> {
        let lead: Vec<isize> = (0..self.lead as isize).collect();
        self.grad.sum(&lead, false)
    }
}

/// Uses from which the rows are stacked: with fewer, the `cat`'s copy costs more than
/// the launches it saves (a GAN's discriminator sees each bias twice a step).
const MIN_STACKED: usize = 4;

/// The parts of the gradient that `sums` (of one tensor) add up to: each summed alone
/// when they are few, else one reduction over their rows stacked by one `cat`: side by
/// side, the last first, as a product stacks its operands (`Stacks::rows_last_first`),
/// where each use has as many rows (a GRU's hidden bias and weight stack the same
/// steps' gradients).
pub(crate) fn summed(sums: Vec<RowSum>, stacks: &mut Stacks) -> Result<Vec<Tensor>> {
    if sums.len() < MIN_STACKED {
        return sums.iter().map(RowSum::alone).collect();
    }
    let shape = Shape::from(sums[0].grad.dims()[sums[0].lead..].to_vec());
    let pieces = sums.iter().map(RowSum::rows).collect::<Result<Vec<_>>>()?;
    let rows = pieces[0].dims()[0];
    let stacked = match pieces.iter().all(|p| p.dims()[0] == rows) {
        true => stacks.rows_last_first(&pieces.iter().collect::<Vec<_>>())?,
        false => Tensor::cat(&pieces, 0)?,
    };
    Ok(vec![stacked.sum(&[0], false)?.reshape(shape)?])
}
