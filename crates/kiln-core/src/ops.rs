//! `UnaryOp`, `BinaryOp` and `ReduceOp`, generated from the op table (`op_table.rs`):
//! each op's variant, name, code, accepted dtypes and gradient kind.

use crate::{DType, DTypeSet, Error, Result};

/// How autograd treats an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gradient {
    /// Differentiable: kiln's `backward.rs` has its rule.
    Rule,
    /// Piecewise constant (comparisons, argmax): its output never requires a gradient.
    Constant,
    /// No rule yet: recording it on a tensor that requires a gradient is
    /// `Error::NoGradient`.
    Missing,
}

/// Which table an op comes from; it prefixes the op's WGSL constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Unary,
    Binary,
    Reduce,
}

/// One row of the op table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    pub kind: OpKind,
    /// The `Tensor` method and the name in errors.
    pub name: &'static str,
    /// The number kernels switch on: the op's position in its table.
    pub code: u32,
    pub dtypes: DTypeSet,
    pub gradient: Gradient,
    /// Names of the op's f32 parameters (at most two).
    pub params: &'static [&'static str],
}

impl OpInfo {
    /// The name of the WGSL constant that holds `code`, e.g. `BINARY_ADD`.
    pub fn wgsl_constant(&self) -> String {
        let prefix = match self.kind {
            OpKind::Unary => "UNARY",
            OpKind::Binary => "BINARY",
            OpKind::Reduce => "REDUCE",
        };
        format!("{prefix}_{}", self.name.to_uppercase())
    }
}

/// An op parameter's type inside a generated enum variant.
macro_rules! scalar_param {
    ($p:ident) => {
        f32
    };
}

/// Generates an op enum and its table accessors from a `for_each_*_op!` table.
macro_rules! define_ops {
    (
        [$($derive:ident),*] $kind:ident $Enum:ident $codes:ident;
        $(
            $(#[doc = $doc:literal])*
            $V:ident $(( $($p:ident = $ex:expr),* ))? => $name:ident, $dtypes:ident, $grad:ident;
        )*
    ) => {
        #[derive($($derive),*)]
        pub enum $Enum {
            $(
                $(#[doc = $doc])*
                $V $(( $(scalar_param!($p)),* ))?,
            )*
        }

        /// Positions in the table: the codes kernels switch on.
        #[allow(dead_code)]
        mod $codes {
            pub(super) enum Code { $($V),* }
        }

        impl $Enum {
            /// Every row of the table, in code order.
            pub const INFO: &'static [OpInfo] = &[
                $(OpInfo {
                    kind: OpKind::$kind,
                    name: stringify!($name),
                    code: $codes::Code::$V as u32,
                    dtypes: DTypeSet::$dtypes,
                    gradient: Gradient::$grad,
                    params: &[$($(stringify!($p)),*)?],
                },)*
            ];

            /// One instance of every op, parameters at their example values.
            pub const EXAMPLES: &'static [$Enum] = &[$($Enum::$V $(( $($ex),* ))?,)*];

            /// The op's number in the kernels (its WGSL constant holds the same).
            pub fn code(self) -> u32 {
                match self {
                    $($Enum::$V { .. } => $codes::Code::$V as u32,)*
                }
            }

            pub fn info(self) -> &'static OpInfo {
                &Self::INFO[self.code() as usize]
            }

            pub fn name(self) -> &'static str {
                self.info().name
            }

            pub fn gradient(self) -> Gradient {
                self.info().gradient
            }

            /// The op's f32 parameters in the order declared, zero-padded to two.
            pub fn scalars(self) -> [f32; 2] {
                let given: &[f32] = match self {
                    $($Enum::$V $(( $($p),* ))? => &[$($($p),*)?],)*
                };
                let mut out = [0.0; 2];
                out[..given.len()].copy_from_slice(given);
                out
            }

            /// `Err(UnsupportedDType)` for a dtype the op does not take.
            pub fn check_dtype(self, dtype: DType) -> Result<()> {
                let info = self.info();
                if info.dtypes.contains(dtype) {
                    return Ok(());
                }
                Err(Error::UnsupportedDType {
                    op: info.name,
                    dtype,
                    reason: info.dtypes.refusal(),
                })
            }
        }

        // The kernels carry two scalar parameters.
        const _: () = {
            let mut i = 0;
            while i < $Enum::INFO.len() {
                assert!($Enum::INFO[i].params.len() <= 2, "an op takes at most two scalars");
                i += 1;
            }
        };
    };
}

macro_rules! define_unary_ops {
    ($($table:tt)*) => {
        define_ops! { [Clone, Copy, Debug, PartialEq] Unary UnaryOp unary_codes; $($table)* }
    };
}
macro_rules! define_binary_ops {
    ($($table:tt)*) => {
        define_ops! { [Clone, Copy, Debug, PartialEq, Eq, Hash] Binary BinaryOp binary_codes; $($table)* }
    };
}
macro_rules! define_reduce_ops {
    ($($table:tt)*) => {
        define_ops! { [Clone, Copy, Debug, PartialEq, Eq, Hash] Reduce ReduceOp reduce_codes; $($table)* }
    };
}

crate::for_each_unary_op!(define_unary_ops);
crate::for_each_binary_op!(define_binary_ops);
crate::for_each_reduce_op!(define_reduce_ops);

impl UnaryOp {
    /// The dtype check, then the checks of the op's parameters.
    pub fn check(self, dtype: DType) -> Result<()> {
        self.check_dtype(dtype)?;
        if let UnaryOp::Clamp(min, max) = self {
            if min > max {
                return Err(Error::InvalidArgument {
                    op: "clamp",
                    reason: format!("min {min} exceeds max {max}"),
                });
            }
        }
        Ok(())
    }
}

impl ReduceOp {
    /// The index reductions, whose output is i32.
    pub fn returns_index(self) -> bool {
        matches!(self, ReduceOp::ArgMax | ReduceOp::ArgMin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_table_positions_and_names_are_unique() {
        for table in [UnaryOp::INFO, BinaryOp::INFO, ReduceOp::INFO] {
            for (i, info) in table.iter().enumerate() {
                assert_eq!(info.code as usize, i, "{}", info.name);
            }
            let mut names: Vec<_> = table.iter().map(|i| i.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), table.len());
        }
        for op in UnaryOp::EXAMPLES {
            assert_eq!(UnaryOp::INFO[op.code() as usize].name, op.name());
        }
    }

    #[test]
    fn scalars_follow_the_declared_order() {
        assert_eq!(UnaryOp::Clamp(-1.0, 2.0).scalars(), [-1.0, 2.0]);
        assert_eq!(UnaryOp::LeakyRelu(0.5).scalars(), [0.5, 0.0]);
        assert_eq!(UnaryOp::Neg.scalars(), [0.0, 0.0]);
        assert_eq!(UnaryOp::Clamp(0.0, 0.0).info().params, ["min", "max"]);
    }

    #[test]
    fn dtype_and_argument_checks() {
        assert!(BinaryOp::Pow.check_dtype(DType::I32).is_err());
        assert!(BinaryOp::Add.check_dtype(DType::I32).is_ok());
        assert!(UnaryOp::Exp.check(DType::I32).is_err());
        assert!(UnaryOp::Clamp(1.0, 0.0).check(DType::F32).is_err());
        assert_eq!(BinaryOp::Maximum.info().wgsl_constant(), "BINARY_MAXIMUM");
    }
}
