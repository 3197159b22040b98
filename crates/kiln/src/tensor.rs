//! `Tensor`: a cheap handle to shared storage seen through a `Layout`.

use crate::storage::Storage;
use crate::{Device, Element};
use kiln_core::{DType, Error, HostBuffer, Layout, Result, Shape, MAX_RANK};
use std::fmt;
use std::sync::Arc;

/// An n-dimensional array on a [`Device`]. Cloning is cheap (the data is shared);
/// view ops (`reshape`, `transpose`, `narrow`, ...) share the data too.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

struct TensorInner {
    storage: Arc<Storage>,
    layout: Layout,
}

impl Tensor {
    pub(crate) fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Self {
        Tensor(Arc::new(TensorInner {
            storage: Arc::new(storage),
            layout: Layout::contiguous(shape),
        }))
    }

    /// The same data seen through another layout.
    pub(crate) fn with_layout(&self, layout: Layout) -> Self {
        Tensor(Arc::new(TensorInner {
            storage: self.0.storage.clone(),
            layout,
        }))
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }

    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }

    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }

    pub fn rank(&self) -> usize {
        self.dims().len()
    }

    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }

    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }

    pub fn device(&self) -> Device {
        self.0.storage.device()
    }

    /// Size of one dim; negative counts from the end.
    pub fn dim(&self, op: &'static str, dim: isize) -> Result<usize> {
        Ok(self.dims()[self.shape().dim(op, dim)?])
    }

    /// The elements in row-major order, copied to the host (a sync point on a GPU).
    /// `T` must match the dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        let host = self.storage().to_host(self.layout())?;
        Ok(T::from_host(host).expect("the host buffer has the tensor's dtype"))
    }

    /// The elements as f64 whatever the dtype (a sync point on a GPU).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.storage().to_host(self.layout())?.to_f64_vec())
    }

    pub(crate) fn to_host(&self) -> Result<HostBuffer> {
        self.storage().to_host(self.layout())
    }

    /// The single value of a one-element tensor.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::InvalidShape {
                op: "item",
                shape: self.shape().clone(),
                reason: "item needs exactly one element".into(),
            });
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// A copy on `device` (the same tensor when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if &self.device() == device {
            return Ok(self.clone());
        }
        let host = self.to_host()?;
        Tensor::from_host(host, self.shape().clone(), device)
    }

    /// A copy converted to `dtype`. Floats to i32 truncate towards zero and saturate.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let storage = self.storage().cast(self.layout(), dtype)?;
        Ok(Tensor::from_storage(storage, self.shape().clone()))
    }

    /// A compact copy (row-major, no gaps, from the first element) unless already one.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.layout().is_compact() {
            return Ok(self.clone());
        }
        let mut dst = self
            .device()
            .zeros_storage(self.elem_count(), self.dtype())?;
        let out_layout = Layout::contiguous(self.shape().clone());
        self.storage()
            .copy_into(self.layout(), &mut dst, &out_layout)?;
        Ok(Tensor::from_storage(dst, self.shape().clone()))
    }

    pub fn is_contiguous(&self) -> bool {
        self.layout().is_contiguous()
    }

    pub(crate) fn same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        let (a, b) = (self.device(), other.device());
        if a != b {
            return Err(Error::DeviceMismatch {
                op,
                lhs: a.to_string(),
                rhs: b.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) fn same_dtype(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: other.dtype(),
            });
        }
        Ok(())
    }

    pub(crate) fn require_float(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op,
                dtype: self.dtype(),
                reason: "this op needs a floating-point tensor",
            });
        }
        Ok(())
    }

    pub(crate) fn require_rank(&self, op: &'static str, rank: usize) -> Result<()> {
        if self.rank() != rank {
            return Err(Error::InvalidShape {
                op,
                shape: self.shape().clone(),
                reason: format!("expected a rank-{rank} tensor"),
            });
        }
        Ok(())
    }
}

/// A shape kiln can hold: rank within `MAX_RANK` and an element count whose bytes
/// fit in memory's address range.
pub(crate) fn check_shape(op: &'static str, shape: &Shape) -> Result<()> {
    if shape.rank() > MAX_RANK {
        return Err(Error::RankTooLarge {
            op,
            rank: shape.rank(),
            max: MAX_RANK,
        });
    }
    let fits = shape
        .checked_elem_count()
        .and_then(|n| n.checked_mul(8))
        .is_some_and(|b| b <= isize::MAX as usize);
    if !fits {
        return Err(Error::InvalidShape {
            op,
            shape: shape.clone(),
            reason: "too many elements to address".into(),
        });
    }
    Ok(())
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({}, {}, {})",
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}
