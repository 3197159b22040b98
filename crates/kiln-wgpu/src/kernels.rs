//! The WGSL kernel library, declared in one table: each kernel's file under `shaders/`,
//! entry point, element-type aliases, the dtypes it is built for, and its params struct.
//! Each file is valid WGSL on its own with its element types written as
//! `alias T = f32;` (or `S`, `D`, `C`); a specialisation rewrites those aliases (adding
//! `enable f16;` when needed) and regenerates its constants block (`shader_constants`).

use crate::matmul_rhs::MatmulRhs;
use crate::params::{self, ParamsLayout, ShaderParams};
use crate::row_reduction::RowReduction;
use crate::shader_constants::{
    self, Build, ATTENTION_NARROW_QUADS, ATTENTION_QUADS, ROW_LOADS, SMALL_TILE, TILE,
};
use kiln_core::{BinaryOp, DType, Error, OpInfo, ReduceOp, Result, UnaryOp};
use std::sync::OnceLock;

/// Which dtypes a kernel is specialised to: one alias each, or a pair for two aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variants {
    /// No aliases: the kernel's types are fixed.
    Fixed,
    Floats,
    All,
    /// Two aliases, every pair of `All`.
    Pairs,
}

macro_rules! kernels {
    ($(
        $(#[doc = $doc:literal])*
        $K:ident => $path:literal, $entry:literal, [$($alias:literal),*], $variants:ident, $P:ident;
    )*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $($(#[doc = $doc])* $K,)*
        }

        impl Kernel {
            pub const ALL: &'static [Kernel] = &[$(Kernel::$K,)*];

            /// The file under `shaders/` and its text as written.
            pub fn file(self) -> (&'static str, &'static str) {
                match self {
                    $(Kernel::$K => ($path, include_str!(concat!("../../../shaders/", $path))),)*
                }
            }

            /// The entry point: kernels that share a file differ in it.
            pub fn entry(self) -> &'static str {
                match self {
                    $(Kernel::$K => $entry,)*
                }
            }

            /// The type aliases a specialisation fills, in order.
            pub fn type_params(self) -> &'static [&'static str] {
                match self {
                    $(Kernel::$K => &[$($alias),*],)*
                }
            }

            fn variant_kind(self) -> Variants {
                match self {
                    $(Kernel::$K => Variants::$variants,)*
                }
            }

            /// The uniform struct the kernel reads at binding 0.
            pub fn params(self) -> &'static ParamsLayout {
                match self {
                    $(Kernel::$K => &<params::$P as ShaderParams>::LAYOUT,)*
                }
            }
        }
    };
}

kernels! {
    Unary => "elementwise/unary.wgsl", "main", ["T"], Floats, ElementwiseParams;
    /// Contiguous, vec4-aligned operands: `VEC4_PER_INVOCATION` vec4s per invocation.
    UnaryVec4 => "elementwise/unary.wgsl", "main_vec4", ["T"], Floats, ElementwiseParams;
    Binary => "elementwise/binary.wgsl", "main", ["T"], Floats, ElementwiseParams;
    BinaryVec4 => "elementwise/binary.wgsl", "main_vec4", ["T"], Floats, ElementwiseParams;
    BinaryInt => "elementwise/binary_int.wgsl", "main", [], Fixed, ElementwiseParams;
    Where => "elementwise/where.wgsl", "main", ["C", "T"], Pairs, ElementwiseParams;
    Copy => "elementwise/copy.wgsl", "main", ["T"], All, ElementwiseParams;
    Cat => "elementwise/cat.wgsl", "main", ["T"], All, CatParams;
    Cast => "elementwise/cast.wgsl", "main", ["S", "D"], Pairs, ElementwiseParams;
    Fill => "elementwise/fill.wgsl", "main", [], Fixed, FillParams;
    Reduce => "reduce/reduce.wgsl", "main", ["T"], Floats, RowsParams;
    ArgReduce => "reduce/arg_reduce.wgsl", "main", ["T"], Floats, RowsParams;
    Softmax => "reduce/softmax.wgsl", "main", ["T"], Floats, SoftmaxParams;
    ReduceRowsSerial => "reduce/reduce_rows_serial.wgsl", "main", ["T"], Floats, RowsParams;
    ReduceColumns => "reduce/reduce_columns.wgsl", "main", ["T"], Floats, ColumnsParams;
    /// i32 reductions, exact (the float kernels sum in f32).
    ReduceInt => "reduce/reduce_int.wgsl", "main", [], Fixed, IntReduceParams;
    SoftmaxRowsSerial => "reduce/softmax_rows_serial.wgsl", "main", ["T"], Floats, SoftmaxParams;
    SoftmaxBackward => "reduce/softmax_backward.wgsl", "main", ["T"], Floats, SoftmaxParams;
    SoftmaxBackwardRowsSerial => "reduce/softmax_backward_rows_serial.wgsl", "main", ["T"], Floats, SoftmaxParams;
    LayerNorm => "norm/layer_norm.wgsl", "main", ["T"], Floats, LayerNormParams;
    LayerNormRowsSerial => "norm/layer_norm_rows_serial.wgsl", "main", ["T"], Floats, LayerNormParams;
    LayerNormBackward => "norm/layer_norm_backward.wgsl", "main", ["T"], Floats, LayerNormBackwardParams;
    LayerNormBackwardRowsSerial => "norm/layer_norm_backward_rows_serial.wgsl", "main", ["T"], Floats, LayerNormBackwardParams;
    /// Batch norm's channels, each reduced as a row is.
    BatchNormStats => "norm/batch_norm_stats.wgsl", "main", ["T"], Floats, BatchNormParams;
    BatchNormBackwardSums => "norm/batch_norm_backward_sums.wgsl", "main", ["T"], Floats, BatchNormParams;
    /// Channels cut into parts by the two above, put together.
    BatchNormCombine => "norm/batch_norm_combine.wgsl", "main", ["T"], Floats, BatchNormCombineParams;
    /// The row kernels above, combining each row's lanes with subgroup shuffles
    /// (`row_reduction.rs`).
    ReduceSubgroup => "reduce/reduce.wgsl", "main", ["T"], Floats, RowsParams;
    ArgReduceSubgroup => "reduce/arg_reduce.wgsl", "main", ["T"], Floats, RowsParams;
    SoftmaxSubgroup => "reduce/softmax.wgsl", "main", ["T"], Floats, SoftmaxParams;
    SoftmaxBackwardSubgroup => "reduce/softmax_backward.wgsl", "main", ["T"], Floats, SoftmaxParams;
    LayerNormSubgroup => "norm/layer_norm.wgsl", "main", ["T"], Floats, LayerNormParams;
    LayerNormBackwardSubgroup => "norm/layer_norm_backward.wgsl", "main", ["T"], Floats, LayerNormBackwardParams;
    BatchNormStatsSubgroup => "norm/batch_norm_stats.wgsl", "main", ["T"], Floats, BatchNormParams;
    BatchNormBackwardSumsSubgroup => "norm/batch_norm_backward_sums.wgsl", "main", ["T"], Floats, BatchNormParams;
    Attention => "attention/attention.wgsl", "main", [], Fixed, AttentionParams;
    AttentionBackwardQueries => "attention/attention_backward_queries.wgsl", "main", [], Fixed, AttentionParams;
    AttentionBackwardKeys => "attention/attention_backward_keys.wgsl", "main", [], Fixed, AttentionParams;
    /// The attention kernels for heads of up to 32 features (`ATTENTION_NARROW_QUADS`).
    AttentionNarrow => "attention/attention.wgsl", "main", [], Fixed, AttentionParams;
    AttentionBackwardQueriesNarrow => "attention/attention_backward_queries.wgsl", "main", [], Fixed, AttentionParams;
    AttentionBackwardKeysNarrow => "attention/attention_backward_keys.wgsl", "main", [], Fixed, AttentionParams;
    Matmul => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    /// `Matmul` with `SMALL_TILE` tiles.
    MatmulSmallTiled => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    /// A convolution as `Matmul` whose rhs is the image's columns, read in place
    /// (`MatmulRhs::ImageColumns`); then with `SMALL_TILE` tiles.
    Conv2dImplicit => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    Conv2dImplicitSmallTiled => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    /// A convolution's weight gradient as `Matmul` of the output's gradient by the
    /// image's columns transposed, both read in place (`MatmulRhs::WeightGradient`);
    /// then with `SMALL_TILE` tiles.
    ConvWeightGradImplicit => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    ConvWeightGradImplicitSmallTiled => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    /// An LSTM or GRU step in one launch: `Matmul` over the recurrent product in its
    /// gates' order (`MatmulRhs::GateColumns`), its finish computing the cell
    /// (`ops/recurrent_step.rs`).
    MatmulLstmCell => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    MatmulGruCell => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    /// An LSTM or GRU step's backward in one launch: `Matmul` over the recurrent
    /// product of the step after, its finish adding the rest of the gradient of the
    /// step's output and computing the cell's gradients (`ops/recurrent_backward.rs`).
    MatmulLstmCellBackward => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    MatmulGruCellBackward => "matmul/matmul.wgsl", "main", ["T"], Floats, MatmulParams;
    MatmulBlocked => "matmul/blocked.wgsl", "main", ["T"], Floats, MatmulParams;
    /// `MatmulBlocked` reading an image's columns in place, for wide convolutions; then
    /// a wide convolution's weight gradient.
    Conv2dImplicitBlocked => "matmul/blocked.wgsl", "main", ["T"], Floats, MatmulParams;
    ConvWeightGradImplicitBlocked => "matmul/blocked.wgsl", "main", ["T"], Floats, MatmulParams;
    /// Aligned shapes, both operands with unit column stride: vec4 loads, no bounds checks.
    MatmulBlockedVec4 => "matmul/blocked_vec4.wgsl", "main", ["T"], Floats, MatmulParams;
    MatmulPack => "matmul/pack.wgsl", "main", ["T"], Floats, PackParams;
    MatmulUniformLhs => "matmul/matmul_uniform_lhs.wgsl", "main", ["T"], Floats, UniformLhsParams;
    Im2col => "conv/im2col.wgsl", "main", ["T"], Floats, WindowParams;
    Conv2dDirect => "conv/conv2d_direct.wgsl", "main", ["T"], Floats, DirectConvParams;
    Col2im => "conv/col2im.wgsl", "main", ["T"], Floats, WindowParams;
    ConvWeightGrad => "conv/weight_grad.wgsl", "main", ["T"], Floats, WeightGradParams;
    MaxPool2d => "pool/max_pool2d.wgsl", "main", ["T"], Floats, WindowParams;
    AvgPool2d => "pool/avg_pool2d.wgsl", "main", ["T"], Floats, WindowParams;
    MaxPool2dBackward => "pool/max_pool2d_backward.wgsl", "main", ["T"], Floats, WindowParams;
    AvgPool2dBackward => "pool/avg_pool2d_backward.wgsl", "main", ["T"], Floats, WindowParams;
    Gather => "index/gather.wgsl", "main", ["T"], All, GatherParams;
    ScatterAdd => "index/scatter_add.wgsl", "main", ["T"], Floats, ScatterParams;
    IndexAddRows => "index/index_add_rows.wgsl", "main", ["T"], Floats, ScatterParams;
    Philox => "random/philox.wgsl", "main", ["T"], Floats, PhiloxParams;
    CrossEntropy => "loss/cross_entropy.wgsl", "main", ["T"], Floats, CrossEntropyParams;
    CrossEntropyBackward => "loss/cross_entropy_backward.wgsl", "main", ["T"], Floats, CrossEntropyParams;
    /// The loss kernels combining each row's lanes with subgroup shuffles.
    CrossEntropySubgroup => "loss/cross_entropy.wgsl", "main", ["T"], Floats, CrossEntropyParams;
    CrossEntropyBackwardSubgroup => "loss/cross_entropy_backward.wgsl", "main", ["T"], Floats, CrossEntropyParams;
    LstmCell => "rnn/lstm_cell.wgsl", "main", ["T"], Floats, RecurrentParams;
    LstmCellBackward => "rnn/lstm_cell_backward.wgsl", "main", ["T"], Floats, RecurrentParams;
    GruCell => "rnn/gru_cell.wgsl", "main", ["T"], Floats, RecurrentParams;
    GruCellBackward => "rnn/gru_cell_backward.wgsl", "main", ["T"], Floats, RecurrentParams;
    AdamUpdate => "optim/adam.wgsl", "main", ["T"], Floats, AdamParams;
    SgdUpdate => "optim/sgd.wgsl", "main", ["T"], Floats, SgdParams;
    RmsPropUpdate => "optim/rmsprop.wgsl", "main", ["T"], Floats, RmsPropParams;
    MovingAverageUpdate => "optim/moving_average.wgsl", "main", ["T"], Floats, MovingAverageParams;
    ProbeFma => "probe/fma.wgsl", "main", ["T"], Floats, FmaParams;
    ProbeCopy => "probe/copy.wgsl", "main", ["T"], Floats, CopyProbeParams;
    /// Where each invocation's subgroup puts it, checked before the subgroup row
    /// kernels run (`subgroup_probe.rs`).
    ProbeSubgroups => "probe/subgroups.wgsl", "main", [], Fixed, SubgroupProbeParams;
}

impl Kernel {
    /// `file:entry` as profiles name the kernel; a build of a file and entry that an
    /// earlier kernel of the table also runs adds its own name, e.g.
    /// `matmul/matmul.wgsl:main (Conv2dImplicit)`.
    pub fn label(self) -> String {
        let (file, _) = self.file();
        let first = Kernel::ALL
            .iter()
            .find(|k| k.file().0 == file && k.entry() == self.entry());
        match first == Some(&self) {
            true => format!("{file}:{}", self.entry()),
            false => format!("{file}:{} ({self:?})", self.entry()),
        }
    }

    /// The same kernel combining its rows' lanes with subgroup shuffles, for the row
    /// kernels that have such a build.
    pub fn with_subgroups(self) -> Option<Kernel> {
        use Kernel::*;
        match self {
            Reduce => Some(ReduceSubgroup),
            ArgReduce => Some(ArgReduceSubgroup),
            Softmax => Some(SoftmaxSubgroup),
            SoftmaxBackward => Some(SoftmaxBackwardSubgroup),
            LayerNorm => Some(LayerNormSubgroup),
            LayerNormBackward => Some(LayerNormBackwardSubgroup),
            BatchNormStats => Some(BatchNormStatsSubgroup),
            BatchNormBackwardSums => Some(BatchNormBackwardSumsSubgroup),
            CrossEntropy => Some(CrossEntropySubgroup),
            CrossEntropyBackward => Some(CrossEntropyBackwardSubgroup),
            _ => None,
        }
    }

    /// The one-invocation-per-row build of a row kernel, for adapters that run on the
    /// CPU (`*_rows_serial.wgsl`), for the row kernels that have one.
    pub fn serial(self) -> Option<Kernel> {
        use Kernel::*;
        match self {
            Reduce => Some(ReduceRowsSerial),
            Softmax => Some(SoftmaxRowsSerial),
            SoftmaxBackward => Some(SoftmaxBackwardRowsSerial),
            LayerNorm => Some(LayerNormRowsSerial),
            LayerNormBackward => Some(LayerNormBackwardRowsSerial),
            _ => None,
        }
    }

    /// Loop iterations one invocation of this row kernel's lanes build makes over a row
    /// of `k` elements with `lanes` lanes, counted from its source: each pass of
    /// `ROW_LOADS` loads an iteration (`i + (ROW_LOADS - 1u) * lanes < k`, or a stretch
    /// of `row_held` an iteration, `for (var s = lane; ...`), and each of one load an
    /// iteration (`for (var j = lane; ...`, the loss and index kernels). Their tails and
    /// the lane trees add a few more.
    pub fn row_loop_iterations(self, k: usize, lanes: usize) -> usize {
        static LOOPS: OnceLock<Vec<[usize; 2]>> = OnceLock::new();
        let [wide, single] = *self.read_once(&LOOPS, |kernel| {
            let (_, text) = kernel.file();
            let wide = text.matches("(ROW_LOADS - 1u) * lanes <").count()
                + text.matches("for (var s = lane;").count();
            let single = text.matches("for (var j = lane;").count()
                + text.matches("for (var i = lane;").count();
            [wide, single]
        });
        let lanes = lanes.max(1);
        wide * k.div_ceil(ROW_LOADS as usize * lanes) + single * k.div_ceil(lanes)
    }

    /// Whether this is a row kernel's serial build (one invocation per row).
    pub fn is_serial(self) -> bool {
        Kernel::ALL.iter().any(|k| k.serial() == Some(self))
    }

    /// The kernel this is the subgroup build of, or itself.
    pub fn plain(self) -> Kernel {
        let of = Kernel::ALL
            .iter()
            .find(|k| k.with_subgroups() == Some(self));
        of.copied().unwrap_or(self)
    }

    /// What the kernel's build chooses among its file's variants: subgroups for the
    /// builds that `with_subgroups` names (and the probe that checks them), the small
    /// tile and the image's columns for the matmuls' other builds.
    pub fn build(self) -> Build {
        let subgroup_build = self.plain() != self;
        let rows = match subgroup_build || self == Kernel::ProbeSubgroups {
            true => RowReduction::Subgroup,
            false => RowReduction::Workgroup,
        };
        let tile = match self {
            Kernel::MatmulSmallTiled
            | Kernel::Conv2dImplicitSmallTiled
            | Kernel::ConvWeightGradImplicitSmallTiled => SMALL_TILE,
            _ => TILE,
        };
        let rhs = match self {
            Kernel::Conv2dImplicit
            | Kernel::Conv2dImplicitSmallTiled
            | Kernel::Conv2dImplicitBlocked => MatmulRhs::ImageColumns,
            Kernel::MatmulLstmCell | Kernel::MatmulGruCell => MatmulRhs::GateColumns,
            Kernel::ConvWeightGradImplicit
            | Kernel::ConvWeightGradImplicitSmallTiled
            | Kernel::ConvWeightGradImplicitBlocked => MatmulRhs::WeightGradient,
            _ => MatmulRhs::Strided,
        };
        // The builds `narrow_attention` names, found as `plain` finds subgroup builds.
        let narrow = Kernel::ALL
            .iter()
            .any(|k| k.narrow_attention() == Some(self));
        let attention_quads = match narrow {
            true => ATTENTION_NARROW_QUADS,
            false => ATTENTION_QUADS,
        };
        Build {
            rows,
            tile,
            rhs,
            attention_quads,
        }
    }

    /// The attention kernel's build for heads of up to `4 * ATTENTION_NARROW_QUADS`
    /// features.
    pub fn narrow_attention(self) -> Option<Kernel> {
        use Kernel::*;
        match self {
            Attention => Some(AttentionNarrow),
            AttentionBackwardQueries => Some(AttentionBackwardQueriesNarrow),
            AttentionBackwardKeys => Some(AttentionBackwardKeysNarrow),
            _ => None,
        }
    }

    /// The dtype combinations kiln dispatches this kernel with.
    pub fn variants(self) -> Vec<Vec<DType>> {
        const ALL: [DType; 3] = [DType::F32, DType::F16, DType::I32];
        const FLOATS: [DType; 2] = [DType::F32, DType::F16];
        match self.variant_kind() {
            Variants::Fixed => vec![vec![]],
            Variants::Floats => FLOATS.iter().map(|&d| vec![d]).collect(),
            Variants::All => ALL.iter().map(|&d| vec![d]).collect(),
            Variants::Pairs => ALL
                .iter()
                .flat_map(|&a| ALL.iter().map(move |&b| vec![a, b]))
                .collect(),
        }
    }

    /// Whether the kernel is built with wgpu's runtime bounds checks. Kernels whose
    /// addresses follow from shapes and strides alone (validated on the host, and each
    /// kernel's indexing covered by the parity tests on odd shapes, strided views and
    /// poisoned outputs) are built without them: on an NVIDIA H200 the checks made the
    /// tiled matmul 7.6x slower (docs/BENCHMARKS.md, "Hardware GPU"). Kernels that
    /// address memory with index values read from a tensor keep them, since no test
    /// covers every value a user may pass. `KILN_BOUNDS_CHECKS=all` keeps them everywhere.
    pub fn bounds_checked(self) -> bool {
        use Kernel::*;
        let reads_indices = matches!(
            self.plain(),
            Gather
                | ScatterAdd
                | IndexAddRows
                | CrossEntropy
                | CrossEntropyBackward
                | MaxPool2dBackward
        );
        reads_indices || std::env::var("KILN_BOUNDS_CHECKS").as_deref() == Ok("all")
    }

    /// The bindings the kernel may write (`var<storage, read_write>`), read from its
    /// source: the outputs whose bytes a profile counts as written.
    pub fn written_bindings(self) -> &'static [u32] {
        static WRITTEN: OnceLock<Vec<Vec<u32>>> = OnceLock::new();
        self.read_once::<Vec<_>>(&WRITTEN, |kernel| {
            let (_, text) = kernel.file();
            text.lines()
                .filter(|l| l.contains("var<storage, read_write>"))
                .filter_map(|l| {
                    let at = l.find("@binding(")? + "@binding(".len();
                    let end = at + l[at..].find(')')?;
                    l[at..end].parse().ok()
                })
                .collect()
        })
    }

    /// What `read` finds in this kernel, read for every kernel at the first call: facts
    /// read from the sources as written, which each launch asks for (scanning the text
    /// at each launch took a sixth of a training step's host time in kiln's code).
    pub(crate) fn read_once<T: Send + Sync>(
        self,
        cell: &'static OnceLock<Vec<T>>,
        read: fn(Kernel) -> T,
    ) -> &'static T {
        &cell.get_or_init(|| Kernel::ALL.iter().map(|&k| read(k)).collect())[self as usize]
    }

    /// The ops of the op table this kernel computes: its source must name each one's
    /// WGSL constant (checked by `tests/shaders.rs`).
    pub fn table_ops(self) -> Vec<&'static OpInfo> {
        let float = |o: &&OpInfo| o.dtypes.contains(DType::F32);
        let int = |o: &&OpInfo| o.dtypes.contains(DType::I32);
        let reductions = |index: bool| {
            let ops = ReduceOp::EXAMPLES.iter();
            ops.filter(move |o| o.returns_index() == index)
                .map(|o| o.info())
                .collect()
        };
        match self.plain() {
            Kernel::Unary | Kernel::UnaryVec4 => UnaryOp::INFO.iter().filter(float).collect(),
            Kernel::Binary | Kernel::BinaryVec4 => BinaryOp::INFO.iter().filter(float).collect(),
            Kernel::BinaryInt => BinaryOp::INFO.iter().filter(int).collect(),
            Kernel::Reduce | Kernel::ReduceRowsSerial | Kernel::ReduceColumns => reductions(false),
            Kernel::ArgReduce => reductions(true),
            _ => Vec::new(),
        }
    }

    /// The source to compile: the constants block generated afresh, and each type
    /// alias set to the given dtype.
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
        let mut source = shader_constants::expand_for(text, self.build())?;
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
    /// `text`, this kernel's specialised source, with its section from `from` up to the
    /// end of `to` (or to the end of the text) replaced by `with`: how a build generated
    /// per device fills in a section its file marks.
    pub(crate) fn splice(
        self,
        text: &str,
        from: &str,
        to: Option<&str>,
        with: &str,
    ) -> Result<String> {
        let missing = || Error::InvalidArgument {
            op: "specialise",
            reason: format!("{} lacks `{from}`", self.file().0),
        };
        let start = text.find(from).ok_or_else(missing)?;
        let end = match to {
            Some(to) => text[start..].find(to).ok_or_else(missing)? + start + to.len(),
            None => text.len(),
        };
        Ok(format!("{}{with}{}", &text[..start], &text[end..]))
    }
}

/// Every (label, source) that kiln may compile, for offline validation with naga.
pub fn specialised_sources() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for &kernel in Kernel::ALL {
        for dtypes in kernel.variants() {
            let label = format!("{} {:?}", kernel.file().0, dtypes);
            out.push((label, kernel.specialise(&dtypes)?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_once` finds a kernel's facts at its discriminant: the table's order.
    #[test]
    fn each_kernel_sits_at_its_own_index() {
        for (i, &kernel) in Kernel::ALL.iter().enumerate() {
            assert_eq!(kernel as usize, i, "{kernel:?}");
        }
    }

    /// The loops each row kernel's source shows, as read by hand: a kernel whose passes
    /// were rewritten in another form would count none, and its rows would go
    /// unchecked on software adapters.
    #[test]
    fn row_kernels_count_their_passes() {
        use Kernel::*;
        let k = 4096;
        for (kernel, wide, single) in [
            (Reduce, 1, 0),
            (ArgReduce, 0, 1),
            (Softmax, 3, 0),
            (SoftmaxBackward, 2, 0),
            (LayerNorm, 3, 0),
            (LayerNormBackward, 4, 0),
            (BatchNormStats, 2, 0),
            (BatchNormBackwardSums, 1, 0),
            (CrossEntropy, 0, 2),
            (CrossEntropyBackward, 0, 3),
        ] {
            let want = wide * k / ROW_LOADS as usize + single * k;
            assert_eq!(kernel.row_loop_iterations(k, 1), want, "{kernel:?}");
        }
        // Every row kernel with a lanes build is among them.
        for kernel in Kernel::ALL.iter().filter(|k| k.with_subgroups().is_some()) {
            assert!(kernel.row_loop_iterations(k, 1) > 0, "{kernel:?}");
        }
    }
}
