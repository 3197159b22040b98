//! How the graph reaches a tensor without holding its data: an op keeps an `Edge` to
//! each parent, and the parent's values only where its gradient rule reads them
//! (`Input`), so that a result only ever added to a bias is freed (or, on a GPU, never
//! written) once its consumers have run.

use super::op::Node;
use crate::{Device, Tensor, TensorId};
use kiln_core::{DType, Error, Layout, Result, Shape};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// A tensor's identity, graph node, layout, dtype and device: all a backward pass
/// needs to reach it and to shape its gradient. An edge to a trainable variable also
/// holds the variable (which its user holds anyway), to hand it to `backward_with`.
#[derive(Clone)]
pub(crate) struct Edge {
    id: TensorId,
    node: Arc<Mutex<Node>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    variable: Option<Tensor>,
}

impl Edge {
    /// The edge to `t`.
    pub(crate) fn to(t: &Tensor, node: Arc<Mutex<Node>>) -> Self {
        let storage = t.storage();
        Edge {
            id: t.id(),
            layout: t.layout().clone(),
            dtype: storage.dtype(),
            device: storage.device(),
            variable: t.is_leaf_var().then(|| t.clone()),
            node,
        }
    }

    /// The trainable variable this edge reaches, if it reaches one.
    pub(crate) fn variable(&self) -> Option<&Tensor> {
        self.variable.as_ref().filter(|_| self.is_leaf_var())
    }

    pub(crate) fn id(&self) -> TensorId {
        self.id
    }

    pub(crate) fn node(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn requires_grad(&self) -> bool {
        !matches!(*self.node(), Node::Constant)
    }

    pub(crate) fn is_leaf_var(&self) -> bool {
        matches!(*self.node(), Node::Leaf)
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn shape(&self) -> &Shape {
        self.layout.shape()
    }

    pub(crate) fn dims(&self) -> &[usize] {
        self.layout.dims()
    }

    pub(crate) fn rank(&self) -> usize {
        self.dims().len()
    }

    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Zeros of this tensor's shape, dtype and device.
    pub(crate) fn zeros(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape().clone(), self.dtype, &self.device)
    }
}

/// A parent (or an output) as a recorded op keeps it: its edge always, its values
/// only if the gradient rule reads them. An op built and not recorded (no parent
/// tracks a gradient) holds its parents as tensors and never makes their edges.
pub(crate) struct Input {
    /// Made from the values when first asked for: `Op::release` asks when the op is
    /// recorded, and `keep_if` before it drops the values, so an input without values
    /// always has its edge.
    edge: OnceLock<Edge>,
    value: Option<Tensor>,
}

impl Input {
    /// The edge alone.
    pub(crate) fn edge(&self) -> &Edge {
        self.edge.get_or_init(|| {
            let t = self.value.as_ref();
            t.expect("an input holds its values until its edge is made")
                .edge()
        })
    }

    /// Whether the parent tracks a gradient, without making its edge.
    pub(crate) fn requires_grad(&self) -> bool {
        match (self.edge.get(), &self.value) {
            (Some(edge), _) => edge.requires_grad(),
            (None, Some(t)) => t.requires_grad(),
            (None, None) => false,
        }
    }

    /// The values, which the op kept because its rule reads them. Asking for values
    /// it released is a bug in `Op::release` (an error, never a panic).
    pub(crate) fn value(&self) -> Result<&Tensor> {
        self.value.as_ref().ok_or_else(|| Error::NoGradient {
            op: "backward",
            reason: "internal: a gradient rule read an input its op released".into(),
        })
    }

    /// Drops the values unless `keep` (the edge stays).
    pub(crate) fn keep_if(&mut self, keep: bool) {
        if !keep {
            self.edge();
            self.value = None;
        }
    }

    /// `edge` with `value` (the output of a record, which keeps its values apart from
    /// the output itself).
    pub(crate) fn of(edge: Edge, value: Option<Tensor>) -> Self {
        Input {
            edge: OnceLock::from(edge),
            value,
        }
    }

    pub(crate) fn shape(&self) -> &Shape {
        self.edge().shape()
    }

    pub(crate) fn dims(&self) -> &[usize] {
        self.edge().dims()
    }

    pub(crate) fn rank(&self) -> usize {
        self.edge().rank()
    }
}

impl From<&Tensor> for Input {
    fn from(t: &Tensor) -> Self {
        Input {
            edge: OnceLock::new(),
            value: Some(t.clone()),
        }
    }
}
