//! View ops: they rewrite the layout and share the data; nothing is copied.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{Error, Result, Shape};

impl Tensor {
    /// The same elements with another shape of the same count; copies only when the
    /// current strides cannot express it. One dim may be `-1` (inferred) via `reshape_infer`.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().clone(),
                rhs: shape,
            });
        }
        crate::tensor::check_shape("reshape", &shape)?;
        match self.layout().reshape(&shape) {
            Some(layout) => track(Op::Reshape(self.into()), || Ok(self.with_layout(layout))),
            None => track(Op::Reshape(self.into()), || {
                self.contiguous()?.reshape(shape)
            }),
        }
    }

    /// `reshape` where the dims may contain one `-1`, inferred from the element count.
    pub fn view(&self, dims: &[isize]) -> Result<Tensor> {
        let known: usize = dims
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let unknown = dims.iter().filter(|&&d| d < 0).count();
        let bad = || Error::InvalidArgument {
            op: "view",
            reason: format!("cannot view {} as {dims:?}", self.shape()),
        };
        if unknown > 1 || dims.iter().any(|&d| d < -1) {
            return Err(bad());
        }
        let inferred = if unknown == 1 {
            if known == 0 || !self.elem_count().is_multiple_of(known) {
                return Err(bad());
            }
            self.elem_count() / known
        } else {
            0
        };
        let shape: Vec<usize> = dims
            .iter()
            .map(|&d| if d < 0 { inferred } else { d as usize })
            .collect();
        self.reshape(shape)
    }

    /// A view of this tensor's storage through explicit sizes, strides and offset (in
    /// elements), like PyTorch's `as_strided`. Every element must lie inside the storage.
    pub fn as_strided(&self, shape: &[usize], strides: &[usize], offset: usize) -> Result<Tensor> {
        let op = "as_strided";
        if shape.len() != strides.len() {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("{} sizes but {} strides", shape.len(), strides.len()),
            });
        }
        let layout = kiln_core::Layout::new(Shape::from(shape), strides.to_vec(), offset);
        crate::tensor::check_shape(op, layout.shape())?;
        let span = layout.storage_span();
        if span > self.storage().len() {
            return Err(Error::IndexOutOfRange {
                op,
                index: span as i64 - 1,
                size: self.storage().len(),
            });
        }
        if self.requires_grad() && crate::is_grad_enabled() {
            let reason = "as_strided views have no gradient rule; detach() first".into();
            return Err(Error::NoGradient { op, reason });
        }
        Ok(self.with_layout(layout))
    }

    /// All elements as one dim.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape([self.elem_count()])
    }

    /// Swaps two dims.
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let (a, b) = (
            self.shape().dim("transpose", d0)?,
            self.shape().dim("transpose", d1)?,
        );
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute_resolved(perm)
    }

    /// Swaps the last two dims (a matrix transpose).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::InvalidShape {
                op: "t",
                shape: self.shape().clone(),
                reason: "needs at least two dims".into(),
            });
        }
        self.transpose(-2, -1)
    }

    /// Result dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[isize]) -> Result<Tensor> {
        let resolved = perm
            .iter()
            .map(|&d| self.shape().dim("permute", d))
            .collect::<Result<Vec<_>>>()?;
        let mut seen = resolved.clone();
        seen.sort_unstable();
        if resolved.len() != self.rank() || seen.iter().enumerate().any(|(i, &d)| i != d) {
            return Err(Error::InvalidArgument {
                op: "permute",
                reason: format!("{perm:?} is not a permutation of {} dims", self.rank()),
            });
        }
        self.permute_resolved(resolved)
    }

    fn permute_resolved(&self, perm: Vec<usize>) -> Result<Tensor> {
        let layout = self.layout().permute(&perm);
        track(Op::Permute(self.into(), perm), || {
            Ok(self.with_layout(layout))
        })
    }

    /// Repeats size-1 dims (and adds leading ones) without copying, NumPy-style.
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        crate::tensor::check_shape("broadcast_to", &shape)?;
        let layout = self.layout().broadcast_to("broadcast_to", &shape)?;
        track(Op::Broadcast(self.into()), || Ok(self.with_layout(layout)))
    }

    /// PyTorch's name for `broadcast_to`.
    pub fn expand(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        self.broadcast_to(shape)
    }

    /// Elements `start..start + len` along `dim`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = self.shape().dim("narrow", dim)?;
        let size = self.dims()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::IndexOutOfRange {
                op: "narrow",
                index: (start + len) as i64,
                size,
            });
        }
        let layout = self.layout().narrow(d, start, len);
        track(
            Op::Narrow {
                x: self.into(),
                dim: d,
                start,
            },
            || Ok(self.with_layout(layout)),
        )
    }

    /// Elements `range` along `dim`.
    pub fn slice(&self, dim: isize, range: std::ops::Range<usize>) -> Result<Tensor> {
        if range.end < range.start {
            return Err(Error::InvalidArgument {
                op: "slice",
                reason: format!("range {range:?} is reversed"),
            });
        }
        self.narrow(dim, range.start, range.end - range.start)
    }

    /// Removes a size-1 dim.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = self.shape().dim("squeeze", dim)?;
        if self.dims()[d] != 1 {
            return Err(Error::InvalidShape {
                op: "squeeze",
                shape: self.shape().clone(),
                reason: format!("dim {dim} has size {}, not 1", self.dims()[d]),
            });
        }
        let layout = self.layout().squeeze(d);
        track(Op::Reshape(self.into()), || Ok(self.with_layout(layout)))
    }

    /// Inserts a size-1 dim at `dim` (`-1` appends).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let rank = self.rank() as isize + 1;
        let d = if dim < 0 { dim + rank } else { dim };
        if d < 0 || d >= rank {
            return Err(Error::DimOutOfRange {
                op: "unsqueeze",
                dim,
                rank: self.rank(),
            });
        }
        crate::tensor::check_shape("unsqueeze", &Shape::new(vec![1; rank as usize]))?;
        let layout = self.layout().unsqueeze(d as usize);
        track(Op::Reshape(self.into()), || Ok(self.with_layout(layout)))
    }
}
