//! Indexing with i32 index tensors: index_select, gather, scatter_add, embedding and
//! one_hot. Index values are range-checked before any kernel runs: from the bounds a
//! GPU index tensor keeps of the host values it was uploaded from (no sync point), or
//! else by reading the values back.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{DType, Error, GatherSpec, Result, ScatterSpec, Shape};

impl Tensor {
    pub(crate) fn check_indices(&self, op: &'static str, size: usize) -> Result<()> {
        if self.dtype() != DType::I32 {
            return Err(Error::UnsupportedDType {
                op,
                dtype: self.dtype(),
                reason: "indices must be i32",
            });
        }
        // Bounds kept from the host values: no readback. Reading back finds the culprit.
        if let Some((min, max)) = self.storage().known_range() {
            if min >= 0 && (max as i64) < size as i64 {
                return Ok(());
            }
        }
        if let Some(&bad) = self
            .to_vec::<i32>()?
            .iter()
            .find(|&&i| i < 0 || i as usize >= size)
        {
            return Err(Error::IndexOutOfRange {
                op,
                index: bad as i64,
                size,
            });
        }
        Ok(())
    }

    /// `[outer, dim, inner]` sizes around dim `d`.
    fn split_at(&self, d: usize) -> (usize, usize, usize) {
        (
            self.dims()[..d].iter().product(),
            self.dims()[d],
            self.dims()[d + 1..].iter().product(),
        )
    }

    /// `self` with each slice `src[.., j, ..]` along `d` added at `index[j]` (PyTorch's
    /// `index_add`), untracked: `index_select`'s gradient. The 1-D index is read once
    /// per slice where it lies (`ScatterSpec::index_strides` `[0, 1, 0]`), not expanded
    /// to `src`'s shape first.
    pub(crate) fn index_add(&self, d: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let (outer, dim, inner) = self.split_at(d);
        let spec = ScatterSpec {
            outer,
            dim,
            src_dim: index.elem_count(),
            inner,
            index_strides: [0, 1, 0],
        };
        self.scattered(index, src, &spec)
    }

    /// `scatter_add`'s values for `spec`, untracked.
    fn scattered(&self, index: &Tensor, src: &Tensor, spec: &ScatterSpec) -> Result<Tensor> {
        let (index, src) = (index.contiguous()?, src.contiguous()?);
        let storage =
            self.contiguous()?
                .storage()
                .scatter_add(&index.storage(), &src.storage(), spec)?;
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    /// Entries `index[j]` along `dim`; `index` is 1-D i32.
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let op = "index_select";
        self.same_device(op, index)?;
        let d = self.shape().dim(op, dim)?;
        index.require_rank(op, 1)?;
        index.check_indices(op, self.dims()[d])?;
        let (outer, in_dim, inner) = self.split_at(d);
        let spec = GatherSpec {
            outer,
            in_dim,
            out_dim: index.elem_count(),
            inner,
            index_strides: [0, 1, 0],
        };
        let mut dims = self.dims().to_vec();
        dims[d] = index.elem_count();
        let record = Op::IndexSelect {
            x: self.into(),
            dim: d,
            index: index.clone(),
        };
        track(record, || {
            let storage = self
                .contiguous()?
                .storage()
                .gather(&index.contiguous()?.storage(), &spec)?;
            Ok(Tensor::from_storage(storage, Shape::new(dims)))
        })
    }

    /// `out[.., j, ..] = self[.., index[.., j, ..], ..]` along `dim`; `index` has the
    /// rank of `self` and the same sizes in every other dim.
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let op = "gather";
        self.same_device(op, index)?;
        let d = self.shape().dim(op, dim)?;
        let same_rest = index.rank() == self.rank()
            && (0..self.rank()).all(|i| i == d || index.dims()[i] == self.dims()[i]);
        if !same_rest {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: index.shape().clone(),
            });
        }
        index.check_indices(op, self.dims()[d])?;
        let (outer, in_dim, inner) = self.split_at(d);
        let out_dim = index.dims()[d];
        let spec = GatherSpec {
            outer,
            in_dim,
            out_dim,
            inner,
            index_strides: [out_dim * inner, inner, 1],
        };
        track(
            Op::Gather {
                x: self.into(),
                dim: d,
                index: index.clone(),
            },
            || {
                let storage = self
                    .contiguous()?
                    .storage()
                    .gather(&index.contiguous()?.storage(), &spec)?;
                Ok(Tensor::from_storage(storage, index.shape().clone()))
            },
        )
    }

    /// A copy of `self` with `src[.., j, ..]` added at `index[.., j, ..]` along `dim`.
    /// Summation order is fixed, so results are deterministic on every device.
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let op = "scatter_add";
        self.same_device(op, index)?;
        self.same_device(op, src)?;
        self.same_dtype(op, src)?;
        self.require_float(op)?;
        let d = self.shape().dim(op, dim)?;
        let fits = index.shape() == src.shape()
            && index.rank() == self.rank()
            && (0..self.rank()).all(|i| i == d || index.dims()[i] == self.dims()[i]);
        if !fits {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: index.shape().clone(),
            });
        }
        index.check_indices(op, self.dims()[d])?;
        let (outer, dim_size, inner) = self.split_at(d);
        let spec = ScatterSpec {
            outer,
            dim: dim_size,
            src_dim: index.dims()[d],
            inner,
            index_strides: [index.dims()[d] * inner, inner, 1],
        };
        let record = Op::ScatterAdd {
            x: self.into(),
            dim: d,
            index: index.clone(),
            src: src.into(),
        };
        track(record, || self.scattered(index, src, &spec))
    }

    /// Rows of `self` (`[vocab, dim]`) for each id: output `ids.shape + [dim]`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        self.require_rank("embedding", 2)?;
        let rows = self.index_select(0, &ids.flatten_all()?)?;
        let mut dims = ids.dims().to_vec();
        dims.push(self.dims()[1]);
        rows.reshape(dims)
    }

    /// i32 class ids to i32 one-hot rows of length `classes`.
    pub fn one_hot(&self, classes: usize) -> Result<Tensor> {
        let op = "one_hot";
        self.check_indices(op, classes)?;
        let range = Tensor::arange(0.0, classes as f64, 1.0, DType::I32, &self.device())?;
        self.unsqueeze(-1)?.eq(&range)
    }
}
