//! The WGSL kernel library. Each kernel is one file under `shaders/`, valid WGSL on its
//! own with its element types written as `alias T = f32;` (or `S`, `D`, `C`); a
//! specialisation rewrites those aliases, adding `enable f16;` when needed.

use kiln_core::{DType, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Unary,
    UnaryVec4,
    Binary,
    BinaryVec4,
    BinaryInt,
    Where,
    Copy,
    Cast,
    Fill,
    Reduce,
    ArgReduce,
    Softmax,
    ReduceRowsSerial,
    ReduceColumns,
    SoftmaxRowsSerial,
    LayerNorm,
    LayerNormRowsSerial,
    Matmul,
    MatmulPack,
    MatmulUniformLhs,
    Im2col,
    Conv2dDirect,
    Col2im,
    MaxPool2d,
    AvgPool2d,
    Gather,
    ScatterAdd,
    Philox,
    ConvWeightGrad,
    MaxPool2dBackward,
    AvgPool2dBackward,
    CrossEntropy,
    CrossEntropyBackward,
    ProbeFma,
}

macro_rules! shader {
    ($path:literal) => {
        ($path, include_str!(concat!("../../../shaders/", $path)))
    };
}

impl Kernel {
    pub const ALL: [Kernel; 34] = [
        Kernel::Unary,
        Kernel::UnaryVec4,
        Kernel::Binary,
        Kernel::BinaryVec4,
        Kernel::BinaryInt,
        Kernel::Where,
        Kernel::Copy,
        Kernel::Cast,
        Kernel::Fill,
        Kernel::Reduce,
        Kernel::ArgReduce,
        Kernel::Softmax,
        Kernel::ReduceRowsSerial,
        Kernel::ReduceColumns,
        Kernel::SoftmaxRowsSerial,
        Kernel::LayerNorm,
        Kernel::LayerNormRowsSerial,
        Kernel::Matmul,
        Kernel::MatmulPack,
        Kernel::MatmulUniformLhs,
        Kernel::Im2col,
        Kernel::Conv2dDirect,
        Kernel::Col2im,
        Kernel::MaxPool2d,
        Kernel::AvgPool2d,
        Kernel::Gather,
        Kernel::ScatterAdd,
        Kernel::Philox,
        Kernel::ConvWeightGrad,
        Kernel::MaxPool2dBackward,
        Kernel::AvgPool2dBackward,
        Kernel::CrossEntropy,
        Kernel::CrossEntropyBackward,
        Kernel::ProbeFma,
    ];

    /// The file under `shaders/` and its text.
    pub fn file(self) -> (&'static str, &'static str) {
        match self {
            Kernel::Unary | Kernel::UnaryVec4 => shader!("elementwise/unary.wgsl"),
            Kernel::Binary | Kernel::BinaryVec4 => shader!("elementwise/binary.wgsl"),
            Kernel::BinaryInt => shader!("elementwise/binary_int.wgsl"),
            Kernel::Where => shader!("elementwise/where.wgsl"),
            Kernel::Copy => shader!("elementwise/copy.wgsl"),
            Kernel::Cast => shader!("elementwise/cast.wgsl"),
            Kernel::Fill => shader!("elementwise/fill.wgsl"),
            Kernel::Reduce => shader!("reduce/reduce.wgsl"),
            Kernel::ArgReduce => shader!("reduce/arg_reduce.wgsl"),
            Kernel::Softmax => shader!("reduce/softmax.wgsl"),
            Kernel::ReduceRowsSerial => shader!("reduce/reduce_rows_serial.wgsl"),
            Kernel::ReduceColumns => shader!("reduce/reduce_columns.wgsl"),
            Kernel::SoftmaxRowsSerial => shader!("reduce/softmax_rows_serial.wgsl"),
            Kernel::LayerNorm => shader!("norm/layer_norm.wgsl"),
            Kernel::LayerNormRowsSerial => shader!("norm/layer_norm_rows_serial.wgsl"),
            Kernel::Matmul => shader!("matmul/matmul.wgsl"),
            Kernel::MatmulPack => shader!("matmul/pack.wgsl"),
            Kernel::MatmulUniformLhs => shader!("matmul/matmul_uniform_lhs.wgsl"),
            Kernel::Im2col => shader!("conv/im2col.wgsl"),
            Kernel::Conv2dDirect => shader!("conv/conv2d_direct.wgsl"),
            Kernel::Col2im => shader!("conv/col2im.wgsl"),
            Kernel::MaxPool2d => shader!("pool/max_pool2d.wgsl"),
            Kernel::AvgPool2d => shader!("pool/avg_pool2d.wgsl"),
            Kernel::Gather => shader!("index/gather.wgsl"),
            Kernel::ScatterAdd => shader!("index/scatter_add.wgsl"),
            Kernel::Philox => shader!("random/philox.wgsl"),
            Kernel::ConvWeightGrad => shader!("conv/weight_grad.wgsl"),
            Kernel::MaxPool2dBackward => shader!("pool/max_pool2d_backward.wgsl"),
            Kernel::AvgPool2dBackward => shader!("pool/avg_pool2d_backward.wgsl"),
            Kernel::CrossEntropy => shader!("loss/cross_entropy.wgsl"),
            Kernel::CrossEntropyBackward => shader!("loss/cross_entropy_backward.wgsl"),
            Kernel::ProbeFma => shader!("probe/fma.wgsl"),
        }
    }

    /// The entry point: kernels that share a file differ in it.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::UnaryVec4 | Kernel::BinaryVec4 => "main_vec4",
            _ => "main",
        }
    }

    /// The type aliases a specialisation fills, in order.
    pub fn type_params(self) -> &'static [&'static str] {
        match self {
            Kernel::BinaryInt | Kernel::Fill => &[],
            Kernel::Where => &["C", "T"],
            Kernel::Cast => &["S", "D"],
            _ => &["T"],
        }
    }

    /// The dtype combinations kiln dispatches this kernel with.
    pub fn variants(self) -> Vec<Vec<DType>> {
        const ALL: [DType; 3] = [DType::F32, DType::F16, DType::I32];
        const FLOATS: [DType; 2] = [DType::F32, DType::F16];
        match self {
            Kernel::BinaryInt | Kernel::Fill => vec![vec![]],
            Kernel::Where | Kernel::Cast => ALL
                .iter()
                .flat_map(|&a| ALL.iter().map(move |&b| vec![a, b]))
                .collect(),
            Kernel::Copy
            | Kernel::Gather
            | Kernel::Reduce
            | Kernel::ReduceRowsSerial
            | Kernel::ReduceColumns
            | Kernel::ArgReduce => ALL.iter().map(|&d| vec![d]).collect(),
            _ => FLOATS.iter().map(|&d| vec![d]).collect(),
        }
    }

    /// The source with each type alias set to the given dtype.
    pub fn specialise(self, dtypes: &[DType]) -> Result<String> {
        let (path, text) = self.file();
        let params = self.type_params();
        if params.len() != dtypes.len() {
            return Err(Error::InvalidArgument {
                op: "specialise",
                reason: format!(
                    "{path} takes {} element types, got {}",
                    params.len(),
                    dtypes.len()
                ),
            });
        }
        let mut source = text.to_string();
        for (name, dtype) in params.iter().zip(dtypes) {
            let default = format!("alias {name} = f32;");
            if !source.contains(&default) {
                return Err(Error::InvalidArgument {
                    op: "specialise",
                    reason: format!("{path} lacks `{default}`"),
                });
            }
            source = source.replacen(&default, &format!("alias {name} = {};", dtype.name()), 1);
        }
        if dtypes.contains(&DType::F16) {
            source.insert_str(0, "enable f16;\n");
        }
        Ok(source)
    }
}

/// Every (label, source) that kiln may compile, for offline validation with naga.
pub fn specialised_sources() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for kernel in Kernel::ALL {
        for dtypes in kernel.variants() {
            let label = format!("{} {:?}", kernel.file().0, dtypes);
            out.push((label, kernel.specialise(&dtypes)?));
        }
    }
    Ok(out)
}
