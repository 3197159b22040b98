//! Ops that assemble or mask whole tensors: cat, stack, pad, tril and triu.

use crate::autograd::{track, Input, Op};
use crate::storage::Storage;
use crate::Tensor;
use kiln_core::{Error, Result, Shape};

impl Tensor {
    /// Joins tensors along `dim`; all other dims must match.
    pub fn cat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let op = "cat";
        let first = tensors.first().ok_or(Error::InvalidArgument {
            op,
            reason: "no tensors given".into(),
        })?;
        let d = first.shape().dim(op, dim)?;
        let mut total = 0;
        for t in tensors {
            first.same_device(op, t)?;
            first.same_dtype(op, t)?;
            let same_rest = t.rank() == first.rank()
                && (0..t.rank()).all(|i| i == d || t.dims()[i] == first.dims()[i]);
            if !same_rest {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                });
            }
            total += t.dims()[d];
        }
        let mut dims = first.dims().to_vec();
        dims[d] = total;
        let shape = Shape::new(dims);
        track(
            Op::Cat {
                xs: tensors.iter().map(Input::from).collect(),
                dim: d,
            },
            || {
                let storages: Vec<_> = tensors.iter().map(|t| t.storage()).collect();
                let pieces: Vec<_> = storages
                    .iter()
                    .zip(tensors)
                    .map(|(s, t)| (&**s, t.layout()))
                    .collect();
                Ok(Tensor::from_storage(
                    Storage::cat(&pieces, d, &shape)?,
                    shape,
                ))
            },
        )
    }

    /// Joins tensors of one shape along a new dim `dim`.
    pub fn stack(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let unsqueezed = tensors
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&unsqueezed, dim)
    }

    /// Pads the trailing dims with `value`: `pads[0]` is `(before, after)` for the last
    /// dim, `pads[1]` for the one before it, and so on (PyTorch's order).
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Result<Tensor> {
        let op = "pad";
        if pads.len() > self.rank() {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("{} pads for a rank-{} tensor", pads.len(), self.rank()),
            });
        }
        let mut dims = self.dims().to_vec();
        let mut region = Vec::new();
        for (i, &(before, after)) in pads.iter().enumerate() {
            let d = self.rank() - 1 - i;
            region.push((d, before));
            let grown = dims[d]
                .checked_add(before)
                .and_then(|v| v.checked_add(after));
            dims[d] = grown.ok_or(Error::InvalidArgument {
                op,
                reason: format!("padding {:?} overflows", (before, after)),
            })?;
        }
        let shape = Shape::new(dims);
        crate::tensor::check_shape(op, &shape)?;
        track(
            Op::Pad {
                x: self.into(),
                pads: pads.to_vec(),
            },
            || {
                let mut start = vec![0; self.rank()];
                for (d, before) in region {
                    start[d] = before;
                }
                let storage = self.storage();
                let out = storage.pad(self.layout(), shape.dims(), &start, value)?;
                Ok(Tensor::from_storage(out, shape))
            },
        )
    }

    /// Keeps elements with `col - row <= diagonal` (lower triangle) of the last two dims.
    pub fn tril(&self, diagonal: i64) -> Result<Tensor> {
        self.triangle("tril", diagonal, true)
    }

    /// Keeps elements with `col - row >= diagonal` (upper triangle) of the last two dims.
    pub fn triu(&self, diagonal: i64) -> Result<Tensor> {
        self.triangle("triu", diagonal, false)
    }

    fn triangle(&self, op: &'static str, diagonal: i64, lower: bool) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::InvalidShape {
                op,
                shape: self.shape().clone(),
                reason: "needs at least two dims".into(),
            });
        }
        let (m, n) = (self.dims()[self.rank() - 2], self.dims()[self.rank() - 1]);
        // The mask depends on the shape alone: made on the host and uploaded, where
        // building it from index ranges took four kernels (causal attention's mask, per
        // layer and step).
        let mut keep = kiln_core::host::try_filled(op, m * n, 0i32)?;
        for (i, row) in keep.chunks_mut(n.max(1)).enumerate() {
            for (j, k) in row.iter_mut().enumerate() {
                let offset = j as i64 - i as i64;
                let kept = if lower {
                    offset <= diagonal
                } else {
                    offset >= diagonal
                };
                *k = i32::from(kept);
            }
        }
        let keep = Tensor::from_vec(keep, [m, n], &self.device())?;
        // A zero broadcast, not a tensor of zeros written out.
        keep.where_cond(self, &self.scalar_like(0.0)?)
    }
}
