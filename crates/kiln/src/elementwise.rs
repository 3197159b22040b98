//! Elementwise math with NumPy broadcasting, activations and selection.

use crate::autograd::{track, track_by_kind, Op};
use crate::Tensor;
use kiln_core::{BinaryOp, Result, Shape, UnaryOp};

impl Tensor {
    /// Applies a unary op from the op table. Its dtype and parameters are checked here,
    /// before any backend sees it.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        // Integer ids shifted or scaled by a whole number (labels - 1, say) stay
        // integers, as in PyTorch; the op table's kernels are for floats only.
        if let (false, UnaryOp::AddScalar(v) | UnaryOp::MulScalar(v)) =
            (self.dtype().is_float(), op)
        {
            let binary = match op {
                UnaryOp::AddScalar(_) => BinaryOp::Add,
                _ => BinaryOp::Mul,
            };
            if v.fract() != 0.0 {
                return Err(kiln_core::Error::UnsupportedDType {
                    op: op.name(),
                    dtype: self.dtype(),
                    reason: "an integer tensor takes a whole-number scalar; convert it with to_dtype for a fractional one",
                });
            }
            return self.binary(&self.scalar_like(v as f64)?, binary);
        }
        op.check(self.dtype())?;
        let record = Op::Unary(self.into(), op);
        track_by_kind(op.gradient(), record, || {
            let storage = self.storage().unary(self.layout(), op)?;
            Ok(Tensor::from_storage(storage, self.shape().clone()))
        })
    }

    /// Applies a binary op from the op table to `self` and `rhs`, broadcast together.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        self.same_device(op.name(), rhs)?;
        self.same_dtype(op.name(), rhs)?;
        op.check_dtype(self.dtype())?;
        let shape = Shape::broadcast(op.name(), self.shape(), rhs.shape())?;
        crate::tensor::check_shape(op.name(), &shape)?;
        let l = self.layout().broadcast_to(op.name(), &shape)?;
        let r = rhs.layout().broadcast_to(op.name(), &shape)?;
        let record = Op::Binary(self.into(), rhs.into(), op);
        track_by_kind(op.gradient(), record, || {
            Ok(Tensor::from_storage(
                self.storage().binary(&l, &rhs.storage(), &r, op)?,
                shape.clone(),
            ))
        })
    }
}

/// One method per unary op of the table: `x.exp()`, `x.clamp(min, max)`; scalar
/// parameters are taken as f64, as everywhere in the API, and kept as f32.
macro_rules! unary_methods {
    ($($(#[doc = $doc:literal])* $V:ident $(($($p:ident = $ex:expr),*))? => $name:ident, $($rest:ident),*;)*) => {
        impl Tensor {
            $(
                $(#[doc = $doc])*
                pub fn $name(&self $($(, $p: f64)*)?) -> Result<Tensor> {
                    self.unary(UnaryOp::$V $(($($p as f32),*))?)
                }
            )*
        }
    };
}
kiln_core::for_each_unary_op!(unary_methods);

/// One method per binary op of the table: `a.add(&b)`, `a.lt(&b)`.
macro_rules! binary_methods {
    ($($(#[doc = $doc:literal])* $V:ident => $name:ident, $($rest:ident),*;)*) => {
        impl Tensor {
            $(
                $(#[doc = $doc])*
                pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                    self.binary(rhs, BinaryOp::$V)
                }
            )*
        }
    };
}
kiln_core::for_each_binary_op!(binary_methods);

impl Tensor {
    /// A scalar as a tensor of this one's dtype and device, broadcastable to anything.
    pub(crate) fn scalar_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(Shape::new([]), value, self.dtype(), &self.device())
    }

    /// `self - value`.
    pub fn sub_scalar(&self, value: f64) -> Result<Tensor> {
        self.add_scalar(-value)
    }
    /// `self / value`.
    pub fn div_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary(&self.scalar_like(value)?, BinaryOp::Div)
    }
    /// The larger of each element and `value` (NaN propagates).
    pub fn maximum_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary(&self.scalar_like(value)?, BinaryOp::Maximum)
    }
    /// The smaller of each element and `value` (NaN propagates).
    pub fn minimum_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary(&self.scalar_like(value)?, BinaryOp::Minimum)
    }
    /// 1 where an element equals `value`, else 0, in this tensor's dtype.
    pub fn eq_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary(&self.scalar_like(value)?, BinaryOp::Eq)
    }
    /// 1 where an element is below `value`, else 0.
    pub fn lt_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary(&self.scalar_like(value)?, BinaryOp::Lt)
    }
    /// 1 where an element is above `value`, else 0.
    pub fn gt_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary(&self.scalar_like(value)?, BinaryOp::Gt)
    }
    /// 1 where an element is at least `value`, else 0.
    pub fn ge_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary(&self.scalar_like(value)?, BinaryOp::Ge)
    }

    /// `self != 0 ? on_true : on_false`, all three broadcast together; `self` is the mask.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let op = "where";
        self.same_device(op, on_true)?;
        self.same_device(op, on_false)?;
        on_true.same_dtype(op, on_false)?;
        let shape = Shape::broadcast(
            op,
            &Shape::broadcast(op, self.shape(), on_true.shape())?,
            on_false.shape(),
        )?;
        let c = self.layout().broadcast_to(op, &shape)?;
        let t = on_true.layout().broadcast_to(op, &shape)?;
        let f = on_false.layout().broadcast_to(op, &shape)?;
        let op = Op::Where {
            cond: self.detach(),
            on_true: on_true.into(),
            on_false: on_false.into(),
        };
        track(op, || {
            let storage =
                self.storage()
                    .where_cond(&c, &on_true.storage(), &t, &on_false.storage(), &f)?;
            Ok(Tensor::from_storage(storage, shape))
        })
    }

    /// `value` where `mask` is non-zero, else `self`.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        mask.where_cond(&self.scalar_like(value)?, self)
    }
}
