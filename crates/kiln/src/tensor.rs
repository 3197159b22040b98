//! `Tensor`: a cheap handle to shared storage seen through a `Layout`.

use crate::autograd::{track, Edge, Node, Op};
use crate::storage::Storage;
use crate::{Device, Element};
use kiln_core::{DType, Error, HostBuffer, Layout, Result, Shape, MAX_RANK};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard, TryLockError};

/// An n-dimensional array on a [`Device`]. Cloning is cheap (the data is shared);
/// view ops (`reshape`, `transpose`, `narrow`, ...) share the data too.
///
/// A tensor also carries its place in the autograd graph: a constant, a leaf that
/// requires a gradient, or the result of an op whose parents track gradients.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

/// Identifies a tensor in a [`crate::Gradients`] map; views get their own id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(usize);

impl TensorId {
    fn next() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

struct TensorInner {
    id: TensorId,
    /// Replaceable so that optimizers can update a parameter in place (`set_data`).
    storage: RwLock<Arc<Storage>>,
    layout: Layout,
    /// Shared with the edges that reach this tensor from the ops that consumed it.
    node: Arc<Mutex<Node>>,
}

impl Tensor {
    fn build(storage: Arc<Storage>, layout: Layout, node: Node) -> Self {
        Tensor(Arc::new(TensorInner {
            id: TensorId::next(),
            storage: RwLock::new(storage),
            layout,
            node: Arc::new(Mutex::new(node)),
        }))
    }

    pub(crate) fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Self {
        Tensor::build(Arc::new(storage), Layout::contiguous(shape), Node::Constant)
    }

    /// The same data seen through another layout (a new, untracked tensor).
    pub(crate) fn with_layout(&self, layout: Layout) -> Self {
        Tensor::build(self.storage(), layout, Node::Constant)
    }

    /// The same data and layout under a new id with the given graph node.
    pub(crate) fn with_node(&self, node: Node) -> Self {
        Tensor::build(self.storage(), self.layout().clone(), node)
    }

    pub(crate) fn storage(&self) -> Arc<Storage> {
        self.0
            .storage
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The storage slot, locked for writing unless another thread holds it: an
    /// optimizer writing over the data (`Tensor::optimizer_update_in_place`).
    pub(crate) fn try_write_storage(&self) -> Option<RwLockWriteGuard<'_, Arc<Storage>>> {
        match self.0.storage.try_write() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn node(&self) -> MutexGuard<'_, Node> {
        self.0.node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How the graph reaches this tensor without holding its data.
    pub(crate) fn edge(&self) -> Edge {
        Edge::to(self, self.0.node.clone())
    }

    /// An identity shared by the clones of this tensor (gradients are keyed by it).
    pub fn id(&self) -> TensorId {
        self.0.id
    }

    /// Replaces this tensor's data with `value`'s (same shape, dtype and device),
    /// keeping its id and graph role: how optimizers update parameters. Only compact
    /// tensors can be updated; `value` is copied if it is a view, and computed now if
    /// it is pending on a GPU.
    pub fn set_data(&self, value: &Tensor) -> Result<()> {
        let op = "set_data";
        self.same_device(op, value)?;
        self.same_dtype(op, value)?;
        if self.shape() != value.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: value.shape().clone(),
            });
        }
        if !self.layout().is_compact() {
            let reason = "only a compact tensor (not a view) can be updated in place".into();
            return Err(Error::InvalidArgument { op, reason });
        }
        let storage = crate::autograd::no_grad(|| value.contiguous())?.storage();
        // Computed now: a value kept across steps (a running statistic, an average of
        // the weights) is often recorded from its own last value, and pending it would
        // hold each step's inputs (old weights, say) until a chain of them ran.
        if let Storage::Gpu(s) = &*storage {
            s.realize()?;
        }
        *self.0.storage.write().unwrap_or_else(|e| e.into_inner()) = storage;
        Ok(())
    }

    /// Converts this compact tensor's values to `dtype` in place: the same tensor (a
    /// module's parameter, say) holds them from now on, as PyTorch's `module.double()`
    /// does to parameters. f64 is for the CPU only.
    pub fn set_dtype(&self, dtype: DType) -> Result<()> {
        if !self.layout().is_compact() {
            let reason = "only a compact tensor (not a view) can change in place".into();
            return Err(Error::InvalidArgument {
                op: "set_dtype",
                reason,
            });
        }
        let converted = crate::autograd::no_grad(|| self.to_dtype(dtype)?.contiguous())?;
        *self.0.storage.write().unwrap_or_else(|e| e.into_inner()) = converted.storage();
        Ok(())
    }

    /// Shape, strides and offset into the storage.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }

    /// The dims' sizes.
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }

    /// How many dims.
    pub fn rank(&self) -> usize {
        self.dims().len()
    }

    /// How many elements.
    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage().dtype()
    }

    /// Where the tensor lives.
    pub fn device(&self) -> Device {
        self.storage().device()
    }

    /// Size of one dim; negative counts from the end.
    pub fn dim(&self, op: &'static str, dim: isize) -> Result<usize> {
        Ok(self.dims()[self.shape().dim(op, dim)?])
    }

    /// The elements in row-major order, copied to the host (a sync point on a GPU).
    /// `T` must match the dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.check_element::<T>("to_vec")?;
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
        track(Op::ToDevice(self.into()), || {
            Tensor::from_host(self.to_host()?, self.shape().clone(), device)
        })
    }

    /// A copy converted to `dtype`. Floats to i32 truncate towards zero and saturate.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if !dtype.is_float() && self.requires_grad() && crate::is_grad_enabled() {
            let reason = format!("a cast to {dtype} has no gradient; detach() first");
            return Err(Error::NoGradient {
                op: "to_dtype",
                reason,
            });
        }
        track(Op::Cast(self.into()), || {
            let storage = self.storage().cast(self.layout(), dtype)?;
            Ok(Tensor::from_storage(storage, self.shape().clone()))
        })
    }

    /// A compact copy (row-major, no gaps, from the first element) unless already one.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.layout().is_compact() {
            return Ok(self.clone());
        }
        track(Op::Identity(self.into()), || {
            let out = self.storage().compact(self.layout())?;
            Ok(Tensor::from_storage(out, self.shape().clone()))
        })
    }

    /// True when the elements lie row-major without gaps (no copy needed).
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
        self.dtype().require_float(op)
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
