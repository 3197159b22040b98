//! Reductions over one, several or all dims, and softmax.

use crate::autograd::{track, track_by_kind, Op};
use crate::Tensor;
use kiln_core::{Error, ReduceOp, Result, Shape};

impl Tensor {
    /// Applies a reduction from the op table over `dims` (the index reductions take one
    /// dim). Moves `dims` last, makes the result compact and reduces it as `[rows, k]`.
    pub fn reduce(&self, op: ReduceOp, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let name = op.name();
        if dims.is_empty() {
            return Err(Error::InvalidArgument {
                op: name,
                reason: "no dims given; use the *_all form to reduce everything".into(),
            });
        }
        let reduced = self.shape().dims_sorted(name, dims)?;
        let kept: Vec<usize> = (0..self.rank()).filter(|d| !reduced.contains(d)).collect();
        let k: usize = reduced.iter().map(|&d| self.dims()[d]).product();
        if k == 0 && !matches!(op, ReduceOp::Sum | ReduceOp::Prod) {
            return Err(Error::InvalidShape {
                op: name,
                shape: self.shape().clone(),
                reason: "cannot reduce an empty dim".into(),
            });
        }
        op.check_dtype(self.dtype())?;
        let record = Op::Reduce {
            x: self.into(),
            op,
            dims: reduced.clone(),
            keepdim,
        };
        track_by_kind(op.gradient(), record, || {
            self.reduce_compute(op, &reduced, &kept, keepdim)
        })
    }

    fn reduce_compute(
        &self,
        op: ReduceOp,
        reduced: &[usize],
        kept: &[usize],
        keepdim: bool,
    ) -> Result<Tensor> {
        let dims = self.dims();
        let k: usize = reduced.iter().map(|&d| dims[d]).product();
        let rows: usize = kept.iter().map(|&d| dims[d]).product();
        let (first, last) = (reduced[0], reduced[reduced.len() - 1]);
        let consecutive = last - first + 1 == reduced.len();
        let storage = if consecutive && last + 1 < self.rank() && !op.returns_index() {
            // A compact tensor reduced over a block of dims that is not last: read it
            // as [outer, k, inner] in place instead of transposing it first.
            let outer: usize = dims[..first].iter().product();
            let inner: usize = dims[last + 1..].iter().product();
            self.contiguous()?
                .storage()
                .reduce_middle(op, outer, k, inner)?
        } else {
            let perm: Vec<usize> = kept.iter().chain(reduced).copied().collect();
            let moved = self
                .with_layout(self.layout().permute(&perm))
                .contiguous()?;
            moved.storage().reduce(op, rows, k)?
        };
        let out: Vec<usize> = if keepdim {
            (0..self.rank())
                .map(|d| {
                    if reduced.contains(&d) {
                        1
                    } else {
                        self.dims()[d]
                    }
                })
                .collect()
        } else {
            kept.iter().map(|&d| self.dims()[d]).collect()
        };
        Ok(Tensor::from_storage(storage, Shape::new(out)))
    }

    fn all_dims(&self) -> Vec<isize> {
        (0..self.rank() as isize).collect()
    }

    fn reduce_all(&self, op: ReduceOp) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape([1])?.reduce(op, &[0], false);
        }
        self.reduce(op, &self.all_dims(), false)
    }

    /// The sum over `dims` (negative counts from the end), kept as size 1 with `keepdim`.
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dims, keepdim)
    }
    /// The mean over `dims`.
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Mean, dims, keepdim)
    }
    /// Largest value over `dims`. Gradient: shared equally among tied maxima.
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dims, keepdim)
    }
    /// Smallest value over `dims`. Gradient: shared equally among tied minima.
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, dims, keepdim)
    }
    /// Product over `dims`. Not differentiable yet: on a tensor that requires a
    /// gradient it returns `Error::NoGradient`.
    pub fn prod(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Prod, dims, keepdim)
    }
    /// Index (i32) of the first maximum along `dim`.
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::ArgMax, &[dim], keepdim)
    }
    /// Index (i32) of the first minimum along `dim`.
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::ArgMin, &[dim], keepdim)
    }

    /// Sum of every element, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.reduce_all(ReduceOp::Sum)
    }
    /// The mean of every element, as a one-element tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.reduce_all(ReduceOp::Mean)
    }
    /// The largest element (NaN when any is NaN).
    pub fn max_all(&self) -> Result<Tensor> {
        self.reduce_all(ReduceOp::Max)
    }
    /// The smallest element (NaN when any is NaN).
    pub fn min_all(&self) -> Result<Tensor> {
        self.reduce_all(ReduceOp::Min)
    }

    /// Variance with Bessel's correction (divides by n - 1), as PyTorch's default.
    pub fn var(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.var_with_correction(dims, 1, keepdim)
    }

    /// Variance dividing by `n - correction` (0 for the population variance).
    pub fn var_with_correction(
        &self,
        dims: &[isize],
        correction: usize,
        keepdim: bool,
    ) -> Result<Tensor> {
        self.require_float("var")?;
        let n: usize = self
            .shape()
            .dims_sorted("var", dims)?
            .iter()
            .map(|&d| self.dims()[d])
            .product();
        if n <= correction {
            return Err(Error::InvalidShape {
                op: "var",
                shape: self.shape().clone(),
                reason: format!("{n} elements leave no degrees of freedom"),
            });
        }
        let mean = self.mean(dims, true)?;
        let sq = self.sub(&mean)?.square()?.sum(dims, keepdim)?;
        sq.mul_scalar(1.0 / (n - correction) as f64)
    }

    /// The standard deviation over `dims` (Bessel-corrected, as PyTorch's default).
    pub fn std(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        self.var(dims, keepdim)?.sqrt()
    }

    fn softmax_op(&self, dim: isize, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        self.require_float(op)?;
        let d = self.shape().dim(op, dim)?;
        let last = self.rank() - 1;
        let moved = self
            .with_layout(self.layout().transpose(d, last))
            .contiguous()?;
        let k = self.dims()[d];
        let rows = self.elem_count().checked_div(k).unwrap_or(0);
        track(
            Op::Softmax {
                x: self.into(),
                dim: d,
                log,
            },
            || {
                let storage = moved.storage().softmax(rows, k, log)?;
                let out = Tensor::from_storage(storage, moved.shape().clone());
                Ok(out.with_layout(out.layout().transpose(d, last)))
            },
        )
    }

    /// The gradient of `softmax` (`log`: `log_softmax`) along `dim`, from the
    /// forward's output (`self`) and that output's gradient: one row kernel.
    pub(crate) fn softmax_backward(&self, grad: &Tensor, dim: usize, log: bool) -> Result<Tensor> {
        let last = self.rank() - 1;
        // Along the last dim the moves are views of compact tensors, and copy nothing.
        let moved = |t: &Tensor| t.with_layout(t.layout().transpose(dim, last)).contiguous();
        let (y, g) = (moved(self)?, moved(grad)?);
        let k = self.dims()[dim];
        let rows = self.elem_count().checked_div(k).unwrap_or(0);
        let storage = y.storage().softmax_backward(&g.storage(), rows, k, log)?;
        let out = Tensor::from_storage(storage, y.shape().clone());
        Ok(out.with_layout(out.layout().transpose(dim, last)))
    }

    /// `exp(x) / sum(exp(x))` along `dim`, computed stably (the maximum is subtracted first).
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_op(dim, false)
    }

    /// `log(softmax(x))` along `dim`, computed without forming the softmax.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_op(dim, true)
    }
}
