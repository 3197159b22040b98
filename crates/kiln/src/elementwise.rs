//! Elementwise math with NumPy broadcasting, activations and selection.

use crate::autograd::{track, Op};
use crate::Tensor;
use kiln_core::{BinaryOp, Error, Result, Shape, UnaryOp};

impl Tensor {
    pub(crate) fn unary_op(&self, op: UnaryOp) -> Result<Tensor> {
        self.require_float(op.name())?;
        track(Op::Unary(self.clone(), op), || {
            let storage = self.storage().unary(self.layout(), op)?;
            Ok(Tensor::from_storage(storage, self.shape().clone()))
        })
    }

    pub(crate) fn binary_op(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        self.same_device(op.name(), rhs)?;
        self.same_dtype(op.name(), rhs)?;
        let shape = Shape::broadcast(op.name(), self.shape(), rhs.shape())?;
        crate::tensor::check_shape(op.name(), &shape)?;
        let l = self.layout().broadcast_to(op.name(), &shape)?;
        let r = rhs.layout().broadcast_to(op.name(), &shape)?;
        let compute = || {
            Ok(Tensor::from_storage(
                self.storage().binary(&l, &rhs.storage(), &r, op)?,
                shape.clone(),
            ))
        };
        if matches!(
            op,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        ) {
            // A comparison is piecewise constant: its result carries no gradient.
            return crate::no_grad(compute);
        }
        track(Op::Binary(self.clone(), rhs.clone(), op), compute)
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Add)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Mul)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Div)
    }
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Pow)
    }
    /// Elementwise larger value. Gradient: on a tie it goes to `self`.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Maximum)
    }
    /// Elementwise smaller value. Gradient: on a tie it goes to `self`.
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Minimum)
    }

    /// Comparisons return 1 where true and 0 where false, in the inputs' dtype.
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Eq)
    }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Ne)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Lt)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Le)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Gt)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Ge)
    }

    /// A scalar as a tensor of this one's dtype and device, broadcastable to anything.
    fn scalar_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(Shape::new([]), value, self.dtype(), &self.device())
    }

    pub fn add_scalar(&self, value: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::AddScalar(value as f32))
    }
    pub fn sub_scalar(&self, value: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::AddScalar(-value as f32))
    }
    pub fn mul_scalar(&self, value: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::MulScalar(value as f32))
    }
    pub fn div_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary_op(&self.scalar_like(value)?, BinaryOp::Div)
    }
    pub fn pow_scalar(&self, exponent: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::PowScalar(exponent as f32))
    }
    pub fn maximum_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary_op(&self.scalar_like(value)?, BinaryOp::Maximum)
    }
    pub fn minimum_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary_op(&self.scalar_like(value)?, BinaryOp::Minimum)
    }
    pub fn eq_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary_op(&self.scalar_like(value)?, BinaryOp::Eq)
    }
    pub fn lt_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary_op(&self.scalar_like(value)?, BinaryOp::Lt)
    }
    pub fn gt_scalar(&self, value: f64) -> Result<Tensor> {
        self.binary_op(&self.scalar_like(value)?, BinaryOp::Gt)
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Neg)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Abs)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Exp)
    }
    pub fn log(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Log)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Sqrt)
    }
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Rsqrt)
    }
    pub fn sin(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Sin)
    }
    pub fn cos(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Cos)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Tanh)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Sigmoid)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Relu)
    }
    pub fn leaky_relu(&self, negative_slope: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::LeakyRelu(negative_slope as f32))
    }
    /// GELU with the exact erf form (PyTorch's default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::GeluErf)
    }
    /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::GeluTanh)
    }
    pub fn silu(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Silu)
    }
    pub fn square(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Square)
    }
    pub fn recip(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Recip)
    }
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        if min > max {
            return Err(Error::InvalidArgument {
                op: "clamp",
                reason: format!("min {min} exceeds max {max}"),
            });
        }
        self.unary_op(UnaryOp::Clamp {
            min: min as f32,
            max: max as f32,
        })
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
            on_true: on_true.clone(),
            on_false: on_false.clone(),
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

impl Tensor {
    /// The Gauss error function.
    pub fn erf(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Erf)
    }
}
