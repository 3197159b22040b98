//! A matrix's gradient from the products it took part in, kept as their operands and
//! multiplied once. A recurrent layer multiplies its hidden weight once a step, so the
//! weight's gradient is a sum over the steps of `h^T dz` with a few rows each: one
//! product a step writes the whole weight-sized result, and the sum reads them all
//! again. Stacked, the steps' operands are one product with a long inner dimension
//! (what cuDNN computes for an RNN's weights), two `cat`s and one launch instead of a
//! launch a step and the sums, and far better shaped for a GPU.

use super::stacks::Stacks;
use crate::Tensor;
use kiln_core::Result;

/// The gradient `x^T y` of a matrix, from `x` `[k, m]` (the product's left operand, as
/// rows) and `y` `[k, n]` (its output's gradient, as rows).
pub(crate) struct Product {
    x: Tensor,
    y: Tensor,
    /// The matrix is a transposed view (a weight used as `w.t()`): its gradient is made
    /// as `(y^T x)^T`, compact like the weight, so the optimizer needs no copy.
    transposed: bool,
}

impl Product {
    pub(crate) fn new(x: Tensor, y: Tensor, transposed: bool) -> Product {
        Product { x, y, transposed }
    }

    /// Whether this product is worth stacking with others: its operands, copied once
    /// more by the `cat`s, are smaller than its `m x n` result, which a product of its own
    /// would write and the sum read again.
    pub(crate) fn small(&self) -> bool {
        let (k, m, n) = (self.x.dims()[0], self.x.dims()[1], self.y.dims()[1]);
        k * (m + n) < m * n
    }

    /// The right operand: the rows of the product's output gradient.
    pub(crate) fn rows_gradient(&self) -> &Tensor {
        &self.y
    }

    pub(crate) fn evaluate(&self) -> Result<Tensor> {
        match self.transposed {
            true => self.y.t()?.matmul(&self.x)?.t(),
            false => self.x.t()?.matmul(&self.y),
        }
    }
}

/// The sum of `products` (of one matrix's gradient) as one product of their operands
/// stacked by rows; `None` for none. The products share the matrix's layout, so the
/// first says whether the sum is made transposed (either way gives the same values).
/// Operands with as many rows each go side by side, the last first
/// (`Stacks::rows_last_first`: a recurrent layer's steps in order).
pub(crate) fn stacked(products: Vec<Product>, stacks: &mut Stacks) -> Result<Option<Tensor>> {
    let Some(first) = products.first() else {
        return Ok(None);
    };
    if products.len() == 1 {
        return first.evaluate().map(Some);
    }
    let rows = first.x.dims()[0];
    if products.iter().any(|p| p.x.dims()[0] != rows) {
        let xs: Vec<Tensor> = products.iter().map(|p| p.x.clone()).collect();
        let ys: Vec<Tensor> = products.iter().map(|p| p.y.clone()).collect();
        let stack = Product::new(Tensor::cat(&xs, 0)?, Tensor::cat(&ys, 0)?, first.transposed);
        return stack.evaluate().map(Some);
    }
    let mut side_by_side = |operand: fn(&Product) -> &Tensor| {
        stacks.rows_last_first(&products.iter().map(operand).collect::<Vec<_>>())
    };
    let x = side_by_side(|p| &p.x)?;
    let y = side_by_side(|p| &p.y)?;
    Product::new(x, y, first.transposed).evaluate().map(Some)
}
