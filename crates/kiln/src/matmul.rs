//! Matrix products: 2-D, batched, with broadcast batch dims; transposed operands are
//! read through their strides.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{Error, Layout, MatmulOperand, MatmulSpec, Result, Shape};

/// One batch dim: its size and each operand's stride along it.
#[derive(Clone, Copy)]
struct BatchDim {
    size: usize,
    lhs: usize,
    rhs: usize,
}

/// Merges adjacent batch dims wherever both operands step through them as one.
fn collapse(dims: &[BatchDim]) -> Vec<BatchDim> {
    let mut out: Vec<BatchDim> = Vec::new();
    for &d in dims.iter().filter(|d| d.size != 1) {
        match out.last_mut() {
            Some(prev) if prev.lhs == d.lhs * d.size && prev.rhs == d.rhs * d.size => {
                prev.size *= d.size;
                prev.lhs = d.lhs;
                prev.rhs = d.rhs;
            }
            _ => out.push(d),
        }
    }
    out
}

fn operand(l: &Layout, batch: &[BatchDim], pick: fn(&BatchDim) -> usize) -> MatmulOperand {
    let r = l.strides().len();
    let mut strides = [0; 2];
    for (slot, d) in strides.iter_mut().rev().zip(batch.iter().rev()) {
        *slot = pick(d);
    }
    MatmulOperand {
        batch: strides,
        row_stride: l.strides()[r - 2],
        col_stride: l.strides()[r - 1],
        offset: l.offset(),
    }
}

impl Tensor {
    /// Matrix product with PyTorch's rules: 1-D operands become a row (lhs) or a
    /// column (rhs) vector and that dim is dropped from the result; batch dims broadcast.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        track(Op::Matmul(self.into(), rhs.into()), || {
            self.matmul_compute(rhs)
        })
    }

    fn matmul_compute(&self, rhs: &Tensor) -> Result<Tensor> {
        let op = "matmul";
        self.same_device(op, rhs)?;
        self.same_dtype(op, rhs)?;
        self.require_float(op)?;
        let mismatch = || Error::ShapeMismatch {
            op,
            lhs: self.shape().clone(),
            rhs: rhs.shape().clone(),
        };
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(mismatch());
        }
        let lhs2 = if self.rank() == 1 {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        let rhs2 = if rhs.rank() == 1 {
            rhs.unsqueeze(1)?
        } else {
            rhs.clone()
        };
        let (lr, rr) = (lhs2.rank(), rhs2.rank());
        let (m, k) = (lhs2.dims()[lr - 2], lhs2.dims()[lr - 1]);
        let (k2, n) = (rhs2.dims()[rr - 2], rhs2.dims()[rr - 1]);
        if k != k2 {
            return Err(mismatch());
        }
        let batch_shape = Shape::broadcast(
            op,
            &Shape::from(&lhs2.dims()[..lr - 2]),
            &Shape::from(&rhs2.dims()[..rr - 2]),
        )
        .map_err(|_| mismatch())?;
        let full = |b: &Shape, a: usize, c: usize| {
            Shape::new(b.dims().iter().copied().chain([a, c]).collect::<Vec<_>>())
        };
        let mut l = lhs2.broadcast_to(full(&batch_shape, m, k))?;
        let mut r = rhs2.broadcast_to(full(&batch_shape, k, n))?;
        let nb = batch_shape.rank();
        let dims_of = |l: &Tensor, r: &Tensor| -> Vec<BatchDim> {
            (0..nb)
                .map(|i| BatchDim {
                    size: batch_shape.dims()[i],
                    lhs: l.layout().strides()[i],
                    rhs: r.layout().strides()[i],
                })
                .collect()
        };
        let mut batch = collapse(&dims_of(&l, &r));
        if batch.len() > 2 {
            // The kernel walks two batch dims; compact operands always collapse to one.
            l = l.contiguous()?;
            r = r.contiguous()?;
            batch = collapse(&dims_of(&l, &r));
        }
        let sizes = match batch.as_slice() {
            [] => [1, 1],
            [a] => [1, a.size],
            [a, b] => [a.size, b.size],
            _ => unreachable!("compact operands collapse to one batch dim"),
        };
        let spec = MatmulSpec {
            batch: sizes,
            m,
            n,
            k,
            lhs: operand(l.layout(), &batch, |d| d.lhs),
            rhs: operand(r.layout(), &batch, |d| d.rhs),
        };
        let storage = l.storage().matmul(&r.storage(), &spec)?;
        let mut out = Tensor::from_storage(storage, full(&batch_shape, m, n));
        if rhs.rank() == 1 {
            out = out.squeeze(-1)?;
        }
        if self.rank() == 1 {
            // The row dim is last once a vector rhs has dropped its column dim.
            out = out.squeeze(if rhs.rank() == 1 { -1 } else { -2 })?;
        }
        Ok(out)
    }
}
