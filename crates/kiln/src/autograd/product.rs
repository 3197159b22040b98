//! A matrix's gradient from the products it took part in, kept as their operands and
//! multiplied once. A recurrent layer multiplies its hidden weight once a step, so the
//! weight's gradient is a sum over the steps of `h^T dz` with a few rows each: one
//! product a step writes the whole weight-sized result, and the sum reads them all
//! again. Stacked, the steps' operands are one product with a long inner dimension
//! (what cuDNN computes for an RNN's weights), two `cat`s and one launch instead of a
//! launch a step and the sums, and far better shaped for a GPU.

use kiln_core::Result;

use crate::Tensor;

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

    pub(crate) fn evaluate(&self) -> Result<Tensor> {
        match self.transposed {
            true => self.y.t()?.matmul(&self.x)?.t(),
            false => self.x.t()?.matmul(&self.y),
        }
    }
}

/// `products` (of one matrix's gradient) multiplied as one product of their operands
/// stacked by rows; the sum of the results is the gradient. Products of differently
/// laid out views (not seen in practice: one tensor has one layout) are stacked apart.
pub(crate) fn stacked(products: Vec<Product>) -> Result<Vec<Tensor>> {
    let (transposed, plain): (Vec<_>, Vec<_>) = products.into_iter().partition(|p| p.transposed);
    let mut out = Vec::new();
    for group in [transposed, plain] {
        out.push(match group.len() {
            0 => continue,
            1 => group[0].evaluate()?,
            _ => {
                let xs: Vec<Tensor> = group.iter().map(|p| p.x.clone()).collect();
                let ys: Vec<Tensor> = group.iter().map(|p| p.y.clone()).collect();
                let transposed = group[0].transposed;
                Product::new(Tensor::cat(&xs, 0)?, Tensor::cat(&ys, 0)?, transposed).evaluate()?
            }
        });
    }
    Ok(out)
}
