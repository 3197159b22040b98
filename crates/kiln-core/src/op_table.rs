//! The op table: the one place each elementwise and reduction op is declared. Every
//! other list of ops is generated from it: the enums and their names, codes, dtypes and
//! gradient kinds (`ops.rs`), the WGSL constants the shaders switch on (kiln-wgpu's
//! `shader_constants.rs`), the CPU backend's per-op loops and the `Tensor` methods.
//!
//! Each `for_each_*_op!(callback)` expands to `callback! { entries }`. An entry reads
//!
//! ```text
//! /// doc comment (becomes the enum variant's and the Tensor method's doc)
//! Variant(param = example, ..) => method, DTYPES, Gradient;
//! ```
//!
//! - `Variant` names the enum variant; its f32 parameters (at most two: the GPU kernels
//!   carry two scalar slots) are listed with an example value, used by tests and docs.
//! - `method` is the op's name: the `Tensor` method, the name in errors, and (upper-cased,
//!   behind `UNARY_`, `BINARY_` or `REDUCE_`) the WGSL constant holding its code.
//! - `DTYPES` is a `DTypeSet` constant: the dtypes the op accepts.
//! - `Gradient` says how autograd treats it (see `Gradient`); `Rule` needs an arm in
//!   kiln's `backward.rs`, whose `match` is exhaustive.
//!
//! Codes are positions in the table: reordering entries is safe, because the shaders
//! read the codes by name from constants generated here.
//!
//! Adding an op: an entry here, its formula in kiln-cpu's `elementwise.rs` and in the
//! WGSL kernel, and its gradient rule; the compiler and `tests/shaders.rs` name any of
//! them that is missing.

/// Elementwise ops of one input.
#[macro_export]
macro_rules! for_each_unary_op {
    ($callback:ident) => {
        $callback! {
            /// `-x`.
            Neg => neg, FLOAT, Rule;
            /// `|x|`.
            Abs => abs, FLOAT, Rule;
            /// `e^x`.
            Exp => exp, FLOAT, Rule;
            /// Natural logarithm.
            Log => log, FLOAT, Rule;
            /// Square root.
            Sqrt => sqrt, FLOAT, Rule;
            /// `1 / sqrt(x)`.
            Rsqrt => rsqrt, FLOAT, Rule;
            /// Sine (radians).
            Sin => sin, FLOAT, Rule;
            /// Cosine (radians).
            Cos => cos, FLOAT, Rule;
            /// Hyperbolic tangent.
            Tanh => tanh, FLOAT, Rule;
            /// `1 / (1 + e^-x)`.
            Sigmoid => sigmoid, FLOAT, Rule;
            /// `max(x, 0)`.
            Relu => relu, FLOAT, Rule;
            /// `x` where `x >= 0`, else `negative_slope * x`.
            LeakyRelu(negative_slope = 0.03) => leaky_relu, FLOAT, Rule;
            /// GELU with the tanh approximation (PyTorch's `approximate="tanh"`).
            GeluTanh => gelu_tanh, FLOAT, Rule;
            /// GELU with the exact erf form (PyTorch's default).
            GeluErf => gelu, FLOAT, Rule;
            /// GELU's derivative (erf form), `Phi(x) + x phi(x)` with `Phi` the normal
            /// CDF and `phi` its density: `gelu`'s gradient in one pass, not ten.
            GeluErfDerivative => gelu_derivative, FLOAT, Rule;
            /// `x * sigmoid(x)`.
            Silu => silu, FLOAT, Rule;
            /// `min(max(x, min), max)`; `min <= max`.
            Clamp(min = -0.5, max = 0.75) => clamp, FLOAT, Rule;
            /// `x + value`.
            AddScalar(value = 1.5) => add_scalar, FLOAT, Rule;
            /// `x * value`.
            MulScalar(value = -2.5) => mul_scalar, FLOAT, Rule;
            /// `x^exponent`; a negative base needs a whole exponent (else NaN).
            PowScalar(exponent = 3.0) => pow_scalar, FLOAT, Rule;
            /// `1 / x`.
            Recip => recip, FLOAT, Rule;
            /// `x * x`.
            Square => square, FLOAT, Rule;
            /// The Gauss error function.
            Erf => erf, FLOAT, Rule;
        }
    };
}

/// Elementwise ops of two inputs of one broadcast shape. Comparisons give 1 or 0 in
/// the inputs' dtype.
#[macro_export]
macro_rules! for_each_binary_op {
    ($callback:ident) => {
        $callback! {
            /// Elementwise sum.
            Add => add, ALL, Rule;
            /// Elementwise difference.
            Sub => sub, ALL, Rule;
            /// Elementwise product.
            Mul => mul, ALL, Rule;
            /// Elementwise quotient; on i32 it truncates, and a division by zero gives
            /// the dividend (as WGSL defines it).
            Div => div, ALL, Rule;
            /// `self^rhs`; a negative base needs a whole exponent (else NaN).
            Pow => pow, FLOAT, Rule;
            /// Four-quadrant arctangent of `self / rhs`, in `(-pi, pi]`; 0 at `(0, 0)`,
            /// as in PyTorch.
            Atan2 => atan2, FLOAT, Rule;
            /// Elementwise larger value. Gradient: on a tie it goes to `self`.
            Maximum => maximum, ALL, Rule;
            /// Elementwise smaller value. Gradient: on a tie it goes to `self`.
            Minimum => minimum, ALL, Rule;
            /// 1 where `self == rhs`, else 0.
            Eq => eq, ALL, Constant;
            /// 1 where `self != rhs`, else 0.
            Ne => ne, ALL, Constant;
            /// 1 where `self < rhs`, else 0.
            Lt => lt, ALL, Constant;
            /// 1 where `self <= rhs`, else 0.
            Le => le, ALL, Constant;
            /// 1 where `self > rhs`, else 0.
            Gt => gt, ALL, Constant;
            /// 1 where `self >= rhs`, else 0.
            Ge => ge, ALL, Constant;
        }
    };
}

/// Reductions over the last dim of a compact `[rows, k]` input (or the middle dim of
/// `[outer, k, inner]`). The index reductions return i32.
#[macro_export]
macro_rules! for_each_reduce_op {
    ($callback:ident) => {
        $callback! {
            /// Sum.
            Sum => sum, ALL, Rule;
            /// Arithmetic mean.
            Mean => mean, ALL, Rule;
            /// Largest value.
            Max => max, ALL, Rule;
            /// Smallest value.
            Min => min, ALL, Rule;
            /// Product.
            Prod => prod, ALL, Missing;
            /// Index of the first maximum, as i32.
            ArgMax => argmax, ALL, Constant;
            /// Index of the first minimum, as i32.
            ArgMin => argmin, ALL, Constant;
        }
    };
}
