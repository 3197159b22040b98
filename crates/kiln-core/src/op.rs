//! Ops as values: what backends are asked to compute, and the geometry of the
//! fused kernels (matmul, convolution, pooling, gather/scatter).

/// Elementwise ops of one input; some carry scalar parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Relu,
    LeakyRelu(f32),
    GeluTanh,
    GeluErf,
    Silu,
    Clamp { min: f32, max: f32 },
    AddScalar(f32),
    MulScalar(f32),
    PowScalar(f32),
    Recip,
    Square,
    Erf,
}

impl UnaryOp {
    /// The op's number in `shaders/elementwise/unary.wgsl` and its two scalar parameters.
    pub fn code(self) -> (u32, f32, f32) {
        use UnaryOp::*;
        match self {
            Neg => (0, 0.0, 0.0),
            Abs => (1, 0.0, 0.0),
            Exp => (2, 0.0, 0.0),
            Log => (3, 0.0, 0.0),
            Sqrt => (4, 0.0, 0.0),
            Rsqrt => (5, 0.0, 0.0),
            Sin => (6, 0.0, 0.0),
            Cos => (7, 0.0, 0.0),
            Tanh => (8, 0.0, 0.0),
            Sigmoid => (9, 0.0, 0.0),
            Relu => (10, 0.0, 0.0),
            LeakyRelu(a) => (11, a, 0.0),
            GeluTanh => (12, 0.0, 0.0),
            GeluErf => (13, 0.0, 0.0),
            Silu => (14, 0.0, 0.0),
            Clamp { min, max } => (15, min, max),
            AddScalar(s) => (16, s, 0.0),
            MulScalar(s) => (17, s, 0.0),
            PowScalar(p) => (18, p, 0.0),
            Recip => (19, 0.0, 0.0),
            Square => (20, 0.0, 0.0),
            Erf => (21, 0.0, 0.0),
        }
    }

    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Abs => "abs",
            Exp => "exp",
            Log => "log",
            Sqrt => "sqrt",
            Rsqrt => "rsqrt",
            Sin => "sin",
            Cos => "cos",
            Tanh => "tanh",
            Sigmoid => "sigmoid",
            Relu => "relu",
            LeakyRelu(_) => "leaky_relu",
            GeluTanh => "gelu_tanh",
            GeluErf => "gelu",
            Silu => "silu",
            Clamp { .. } => "clamp",
            AddScalar(_) => "add_scalar",
            MulScalar(_) => "mul_scalar",
            PowScalar(_) => "pow_scalar",
            Recip => "recip",
            Square => "square",
            Erf => "erf",
        }
    }
}

/// Elementwise ops of two inputs of the same (broadcast) shape.
/// Comparisons produce 1 or 0 in the inputs' dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinaryOp {
    /// The op's number in `shaders/elementwise/binary*.wgsl`.
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Pow => "pow",
            Maximum => "maximum",
            Minimum => "minimum",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
        }
    }
}

/// Reductions over the last dim of a compact `[rows, k]` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    /// Index of the first maximum, as i32.
    ArgMax,
    /// Index of the first minimum, as i32.
    ArgMin,
}

impl ReduceOp {
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Prod => "prod",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::ArgMin => "argmin",
        }
    }

    pub fn returns_index(self) -> bool {
        matches!(self, ReduceOp::ArgMax | ReduceOp::ArgMin)
    }
}

/// How one matmul operand is read: element `(b0, b1, row, col)` sits at
/// `offset + b0*batch[0] + b1*batch[1] + row*row_stride + col*col_stride`.
/// Transposed and broadcast operands are just other strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MatmulOperand {
    pub batch: [usize; 2],
    pub row_stride: usize,
    pub col_stride: usize,
    pub offset: usize,
}

/// `out[b0, b1] = lhs[b0, b1] (m x k) @ rhs[b0, b1] (k x n)`, output compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    pub batch: [usize; 2],
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs: MatmulOperand,
    pub rhs: MatmulOperand,
}

/// Geometry of a 2-D sliding window over a compact NCHW tensor: used by im2col
/// (convolution), col2im (transposed convolution) and pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub n: usize,
    pub c: usize,
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl WindowSpec {
    /// Output size of a window sweep, or `None` when the window does not fit.
    pub fn out_size(
        input: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> Option<usize> {
        let span = dilation * (k - 1) + 1;
        (input + 2 * pad).checked_sub(span).map(|r| r / stride + 1)
    }
}

/// `out[o, j, i] = input[o, index[o, j, i], i]` over compact `[outer, dim, inner]` input;
/// the index is read through `index_strides` (outer, j, inner) so that one kernel
/// serves gather (a full index) and index_select (a 1-D index, strides `[0, 1, 0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherSpec {
    pub outer: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    pub inner: usize,
    pub index_strides: [usize; 3],
}

/// `out = input; out[o, index[o, j, i], i] += src[o, j, i]`, summed in index order so
/// the result is deterministic (no float atomics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterSpec {
    pub outer: usize,
    pub dim: usize,
    pub src_dim: usize,
    pub inner: usize,
}

/// Pooling flavours sharing one window geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Average over the window; padding counts towards the divisor when set.
    Avg { count_include_pad: bool },
    /// PyTorch's adaptive windows: `[floor(i*H/OH), ceil((i+1)*H/OH))`.
    AdaptiveAvg,
}
