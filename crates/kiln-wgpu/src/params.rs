//! Uniform structs: one `#[repr(C)]` Rust struct per `Params` struct of the shaders,
//! member for member (WGSL's `vec4<u32>` is `[u32; 4]`, `array<vec4<u32>, 2>` is
//! `[[u32; 4]; 2]`). Each records its members' names, WGSL types and offsets, which
//! `tests/shaders.rs` checks against every shader with naga, and which `dispatch` uses
//! to refuse params of the wrong struct for a kernel.

use crate::shader_constants::CAT_PIECES;
use bytemuck::{Pod, Zeroable};
use kiln_core::{Error, Layout, Result, WindowSpec, MAX_RANK};

/// One member of a params struct as the shader must declare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamsMember {
    pub name: &'static str,
    /// The WGSL type, written as naga prints it (`u32`, `vec4<u32>`, `array<vec4<u32>, 2>`).
    pub wgsl: &'static str,
    pub offset: usize,
}

/// A params struct's name, size and members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamsLayout {
    pub name: &'static str,
    pub size: usize,
    pub members: &'static [ParamsMember],
}

impl ParamsLayout {
    /// The struct's WGSL declaration, for generated WGSL that declares its params from
    /// the Rust mirror rather than beside it.
    pub(crate) fn wgsl_struct(&self) -> String {
        let members: String = (self.members.iter())
            .map(|m| format!("    {}: {},\n", m.name, m.wgsl))
            .collect();
        format!("struct {} {{\n{members}}}\n", self.name)
    }
}

/// A Rust struct that mirrors a shader's `Params`.
pub trait ShaderParams: Pod {
    const LAYOUT: ParamsLayout;
}

/// The WGSL type a Rust member type stands for.
pub trait WgslType {
    const WGSL: &'static str;
}

impl WgslType for u32 {
    const WGSL: &'static str = "u32";
}
impl WgslType for f32 {
    const WGSL: &'static str = "f32";
}
impl WgslType for [u32; 4] {
    const WGSL: &'static str = "vec4<u32>";
}
impl WgslType for [[u32; 4]; 2] {
    const WGSL: &'static str = "array<vec4<u32>, 2>";
}
// The two strings below name the cat's piece count and twice it.
const _: () = assert!(CAT_PIECES == 25);
impl WgslType for [[u32; 4]; CAT_PIECES as usize] {
    const WGSL: &'static str = "array<vec4<u32>, 25>";
}
impl WgslType for [[u32; 4]; 2 * CAT_PIECES as usize] {
    const WGSL: &'static str = "array<vec4<u32>, 50>";
}

/// Declares a params struct and its `ShaderParams` layout.
macro_rules! shader_params {
    ($(
        $(#[doc = $doc:literal])*
        $Name:ident { $($(#[doc = $fdoc:literal])* $field:ident: $ty:ty,)* }
    )*) => {$(
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Pod, Zeroable)]
        pub struct $Name {
            $($(#[doc = $fdoc])* pub $field: $ty,)*
        }

        impl ShaderParams for $Name {
            const LAYOUT: ParamsLayout = ParamsLayout {
                name: stringify!($Name),
                size: std::mem::size_of::<$Name>(),
                members: &[$(ParamsMember {
                    name: stringify!($field),
                    wgsl: <$ty as WgslType>::WGSL,
                    offset: std::mem::offset_of!($Name, $field),
                },)*],
            };
        }
    )*};
}

shader_params! {
    /// `shaders/elementwise/cat.wgsl`: one launch's span of a cat and its pieces.
    CatParams {
        numel: u32,
        rank: u32,
        dim: u32,
        first: u32,
        span: u32,
        inner: u32,
        pieces: u32,
        _pad0: u32,
        shape: [[u32; 4]; 2],
        /// Per piece: its element offset, its start within the span, its length.
        piece: [[u32; 4]; CAT_PIECES as usize],
        /// Per piece, two rows: its strides.
        strides: [[u32; 4]; 2 * CAT_PIECES as usize],
    }
    /// Every kernel in `shaders/elementwise/` but `fill` and `cat`. Operands 0..3 are inputs,
    /// operand 3 (`offsets[3]`, `strides_out`) the output.
    ElementwiseParams {
        numel: u32,
        rank: u32,
        op: u32,
        /// Bit i set: operand i is contiguous from its offset.
        contiguous: u32,
        p0: f32,
        p1: f32,
        _pad0: u32,
        _pad1: u32,
        offsets: [u32; 4],
        shape: [[u32; 4]; 2],
        strides0: [[u32; 4]; 2],
        strides1: [[u32; 4]; 2],
        strides2: [[u32; 4]; 2],
        strides_out: [[u32; 4]; 2],
    }
    /// `elementwise/fill.wgsl`.
    FillParams {
        words: u32,
        pattern: u32,
        _pad0: u32,
        _pad1: u32,
    }
    /// `reduce/reduce.wgsl`, `reduce/reduce_rows_serial.wgsl`, `reduce/arg_reduce.wgsl`.
    RowsParams {
        rows: u32,
        k: u32,
        op: u32,
        /// Invocations per row of the workgroup kernels (`row_lanes`); the serial
        /// kernels give each row one.
        lanes: u32,
        /// `reduce.wgsl` cuts each row into `parts` of `part_len` (`row_parts`);
        /// the other kernels take whole rows (1 and k).
        parts: u32,
        part_len: u32,
        _pad0: u32,
        _pad1: u32,
    }
    /// `reduce/reduce_columns.wgsl`.
    ColumnsParams {
        outer: u32,
        k: u32,
        inner: u32,
        op: u32,
        lanes: u32,
        segment: u32,
        /// Runs the reduced dim is cut into, each reduced to an output of its own.
        splits: u32,
        split_len: u32,
    }
    /// `reduce/reduce_int.wgsl`.
    IntReduceParams {
        outer: u32,
        k: u32,
        inner: u32,
        op: u32,
        /// Elements (or partials) of k one invocation reduces.
        part_len: u32,
        /// 1: the input holds a first launch's partial accumulators.
        partial_in: u32,
        /// 1: write partial accumulators, 0: the results.
        partial_out: u32,
        /// What a mean divides by.
        count: u32,
    }
    /// `reduce/softmax.wgsl`, `reduce/softmax_rows_serial.wgsl`.
    SoftmaxParams {
        rows: u32,
        k: u32,
        log: u32,
        /// Invocations per row of the workgroup kernels (`row_lanes`); the serial
        /// kernels give each row one.
        lanes: u32,
    }
    /// `norm/layer_norm.wgsl`, `norm/layer_norm_rows_serial.wgsl`.
    LayerNormParams {
        rows: u32,
        k: u32,
        eps: f32,
        /// Invocations per row of the workgroup kernels (`row_lanes`); the serial
        /// kernels give each row one.
        lanes: u32,
    }
    /// `norm/layer_norm_backward.wgsl`, `norm/layer_norm_backward_rows_serial.wgsl`.
    LayerNormBackwardParams {
        rows: u32,
        k: u32,
        eps: f32,
        /// As `LayerNormParams`.
        lanes: u32,
        /// 1 when the norm has a weight (bound, and its products written).
        has_weight: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
    /// `norm/batch_norm_stats.wgsl`, `norm/batch_norm_backward_sums.wgsl`.
    BatchNormParams {
        channels: u32,
        outer: u32,
        inner: u32,
        /// Invocations per channel (`row_lanes` of its `outer * inner` elements).
        lanes: u32,
        /// Added to the variance before its square root (the statistics' only).
        eps: f32,
        /// Each channel is cut into `parts` of `part_len` (`row_parts`).
        parts: u32,
        part_len: u32,
        /// The statistics' running averages (`RunningAverage`).
        running: u32,
        decay: f32,
        one_minus_decay: f32,
        var_scale: f32,
        _pad0: u32,
    }
    /// `norm/batch_norm_combine.wgsl`.
    BatchNormCombineParams {
        channels: u32,
        parts: u32,
        part_len: u32,
        /// Elements per channel.
        n: u32,
        eps: f32,
        /// 1 for the backward's sums, 0 for the statistics.
        sums: u32,
        /// As `BatchNormParams`'.
        running: u32,
        decay: f32,
        one_minus_decay: f32,
        var_scale: f32,
        _pad0: u32,
        _pad1: u32,
    }
    /// `matmul/*.wgsl` but `pack` and `matmul_uniform_lhs`.
    MatmulParams {
        m: u32,
        n: u32,
        k: u32,
        batch1: u32,
        lhs_strides: [u32; 4],
        rhs_strides: [u32; 4],
        /// The lhs's and rhs's offsets; a transposed convolution by phases' grid rows
        /// and columns before its output (`MatmulRhs::ImageColumns`).
        offsets: [u32; 4],
        /// The image an implicit convolution's rhs is the columns of
        /// (`MatmulRhs::ImageColumns`): its height and width, the kernel's height and
        /// width; then stride, padding (y, x each); then dilation (y, x), output
        /// width, and 1 for a transposed convolution (which adds only the products of
        /// its kernel's taps inside the image). Zero for a product of matrices.
        conv_image: [u32; 4],
        conv_step: [u32; 4],
        conv_taps: [u32; 4],
        /// A weight gradient's batch (`MatmulRhs::WeightGradient`): elements of an
        /// image, elements of an image's output gradient, terms over all the chunks,
        /// output positions per image. A transposed convolution by phases'
        /// (`MatmulRhs::ImageColumns`): its stride (y, x), the output's height and
        /// width. Zero otherwise.
        conv_batch: [u32; 4],
        /// A transposed convolution's kernel among the taps the product walks: the
        /// zeros before its taps (y, x; by phases, in the padded kernel the phases take
        /// their taps from), and its taps (y, x). Zero otherwise.
        conv_kernel: [u32; 4],
    }
    /// One product of a launch of several (`ops/matmul_group.rs`): the members of
    /// `MatmulParams` a product of matrices reads, then its workgroups.
    MatmulMember {
        m: u32,
        n: u32,
        k: u32,
        batch1: u32,
        lhs_strides: [u32; 4],
        rhs_strides: [u32; 4],
        offsets: [u32; 4],
        /// The group's first workgroup this product takes; its tiles across, its
        /// tiles down.
        tiles: [u32; 4],
    }
    /// `attention/*.wgsl`.
    AttentionParams {
        queries: u32,
        keys: u32,
        head_dim: u32,
        value_dim: u32,
        batch1: u32,
        heads: u32,
        causal: u32,
        scale: f32,
        /// Batch 0, batch 1, row and feature strides of q, k and v, in elements.
        q_strides: [u32; 4],
        k_strides: [u32; 4],
        v_strides: [u32; 4],
        /// q, k, v and (backward) the output's gradient's offsets, in elements.
        offsets: [u32; 4],
        /// Backward: the output's gradient's strides, and those the gradients of q, k
        /// and v are written at.
        grad_strides: [u32; 4],
        dq_strides: [u32; 4],
        dk_strides: [u32; 4],
        dv_strides: [u32; 4],
        /// Invocations that walk each row together (`AttentionSplit`).
        lanes: u32,
        /// Backward: where the gradients of q, k and v start in their one buffer.
        dq_offset: u32,
        dk_offset: u32,
        dv_offset: u32,
        /// Where the output lies (`AttentionSpec::out`): written forward, read backward.
        output_strides: [u32; 4],
    }
    /// `matmul/pack.wgsl`.
    PackParams {
        rows: u32,
        cols: u32,
        block_rows: u32,
        block_cols: u32,
        row_blocks: u32,
        col_blocks: u32,
        block_stride: u32,
        batch1: u32,
        strides: [u32; 4],
        extent: [u32; 4],
    }
    /// `matmul/matmul_uniform_lhs.wgsl`, one per dispatch (one lhs block).
    UniformLhsParams {
        n: u32,
        rows: u32,
        k4: u32,
        lhs_row: u32,
        rhs_base: u32,
        rhs_row: u32,
        out_base: u32,
        accumulate: u32,
        rhs_batch: u32,
        out_batch: u32,
        _pad0: u32,
        _pad1: u32,
    }
    /// `conv/*` and `pool/*` but `conv2d_direct`.
    WindowParams {
        image: [u32; 4],
        window: [u32; 4],
        step: [u32; 4],
        extra: [u32; 4],
    }
    /// `conv/conv2d_direct.wgsl`: the window, then output channels and groups.
    DirectConvParams {
        image: [u32; 4],
        window: [u32; 4],
        step: [u32; 4],
        extra: [u32; 4],
        channels: [u32; 4],
    }
    /// `conv/weight_grad.wgsl`: the window, then how the batch's rows are split.
    WeightGradParams {
        image: [u32; 4],
        window: [u32; 4],
        step: [u32; 4],
        extra: [u32; 4],
        split: [u32; 4],
    }
    /// `index/gather.wgsl`.
    GatherParams {
        outer: u32,
        in_dim: u32,
        out_dim: u32,
        inner: u32,
        index_strides: [u32; 4],
    }
    /// `index/scatter_add.wgsl`.
    ScatterParams {
        outer: u32,
        dim: u32,
        src_dim: u32,
        inner: u32,
        /// The run of the sources this launch adds: `first..first + count`.
        first: u32,
        count: u32,
        _pad0: u32,
        _pad1: u32,
        /// Where the index is read: (outer, source, inner) strides.
        index_strides: [u32; 4],
    }
    /// `loss/cross_entropy.wgsl`, `loss/cross_entropy_backward.wgsl`.
    CrossEntropyParams {
        rows: u32,
        classes: u32,
        smoothing: f32,
        /// Invocations per row (`row_lanes`).
        lanes: u32,
    }
    /// `random/philox.wgsl`.
    PhiloxParams {
        numel: u32,
        mode: u32,
        threshold: u32,
        _pad: u32,
        key: [u32; 4],
    }
    /// `probe/fma.wgsl`.
    FmaParams {
        iterations: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
    /// The recurrent steps of `shaders/rnn/` (LSTM and GRU, forward and backward).
    RecurrentParams {
        batch: u32,
        hidden: u32,
        _pad0: u32,
        _pad1: u32,
    }
    /// The cell of the recurrent builds of `matmul/matmul.wgsl`
    /// (`MatmulRhs::GateColumns`), in bind group 1: `hidden` units of `gates` gates;
    /// what the product's sum adds, the state and a GRU's input projection as views
    /// (element offset, row stride, column stride).
    RecurrentStepParams {
        hidden: u32,
        gates: u32,
        add_offset: u32,
        add_row: u32,
        add_col: u32,
        state_offset: u32,
        state_row: u32,
        state_col: u32,
        x_offset: u32,
        x_row: u32,
        x_col: u32,
        _pad0: u32,
    }
    /// The cell of the recurrent backward builds of `matmul/matmul.wgsl`
    /// (`ops::recurrent_backward`), in bind group 1: `hidden` units; the product's sum
    /// adds `terms` (1 or 2) views; the state, an LSTM's gradient of `c'` and a GRU's
    /// input projection are views too (element offset, row stride, column stride, and
    /// a fourth word unused).
    RecurrentGradientParams {
        hidden: u32,
        terms: u32,
        _pad0: u32,
        _pad1: u32,
        term0: [u32; 4],
        term1: [u32; 4],
        state: [u32; 4],
        grad_c: [u32; 4],
        x: [u32; 4],
    }
    /// `optim/adam.wgsl`.
    AdamParams {
        n: u32,
        one_minus_beta1: f32,
        one_minus_beta2: f32,
        eps: f32,
        step_size: f32,
        inv_correction2: f32,
        coupled_decay: f32,
        decay_factor: f32,
    }
    /// `optim/sgd.wgsl`.
    SgdParams {
        n: u32,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
    /// `optim/rmsprop.wgsl`.
    RmsPropParams {
        n: u32,
        lr: f32,
        one_minus_alpha: f32,
        eps: f32,
        weight_decay: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
    /// `optim/moving_average.wgsl`.
    MovingAverageParams {
        n: u32,
        decay: f32,
        one_minus_decay: f32,
        _pad0: u32,
    }
    /// `probe/copy.wgsl`.
    CopyProbeParams {
        count: u32,
        row: u32,
        _pad0: u32,
        _pad1: u32,
    }
    SubgroupProbeParams {
        /// Lanes per row for `row_start`: the whole workgroup.
        lanes: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

pub(crate) fn to_u32(op: &'static str, what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::LimitExceeded {
        op,
        what,
        needed: v as u64,
        limit: u32::MAX as u64,
    })
}

/// Sets dim `d` of a WGSL `array<vec4<u32>, 2>`.
fn set(words: &mut [[u32; 4]; 2], d: usize, v: u32) {
    words[d / 4][d % 4] = v;
}

impl ElementwiseParams {
    /// Operands 0..3 are inputs, 3 is the output; all share the first layout's shape.
    pub fn new(
        op: &'static str,
        code: u32,
        inputs: &[&Layout],
        output: Option<&Layout>,
    ) -> Result<Self> {
        let shape = inputs[0].dims();
        if shape.len() > MAX_RANK {
            return Err(Error::RankTooLarge {
                op,
                rank: shape.len(),
                max: MAX_RANK,
            });
        }
        let mut p = ElementwiseParams::zeroed();
        p.numel = to_u32(op, "element count", inputs[0].elem_count())?;
        p.rank = shape.len() as u32;
        p.op = code;
        for (d, &s) in shape.iter().enumerate() {
            set(&mut p.shape, d, s as u32);
        }
        let slots = inputs
            .iter()
            .enumerate()
            .map(|(i, l)| (i, *l))
            .chain(output.map(|l| (3, l)));
        for (slot, layout) in slots {
            p.offsets[slot] = to_u32(op, "offset", layout.offset())?;
            if layout.is_contiguous() {
                p.contiguous |= 1 << slot;
            }
            let strides = match slot {
                0 => &mut p.strides0,
                1 => &mut p.strides1,
                2 => &mut p.strides2,
                _ => &mut p.strides_out,
            };
            for (d, &s) in layout.strides().iter().enumerate() {
                set(strides, d, to_u32(op, "stride", s)?);
            }
        }
        if output.is_none() {
            p.contiguous |= 1 << 3;
        }
        Ok(p)
    }
}

impl WindowParams {
    /// The geometry of `s`, with the number of threads the kernel needs and its mode.
    pub fn new(op: &'static str, s: &WindowSpec, threads: usize, mode: u32) -> Result<Self> {
        let u = |v: usize| to_u32(op, "window size", v);
        Ok(WindowParams {
            image: [u(s.n)?, u(s.c)?, u(s.h)?, u(s.w)?],
            window: [u(s.kh)?, u(s.kw)?, u(s.oh)?, u(s.ow)?],
            step: [
                u(s.stride.0)?,
                u(s.stride.1)?,
                u(s.padding.0)?,
                u(s.padding.1)?,
            ],
            extra: [
                u(s.dilation.0)?,
                u(s.dilation.1)?,
                to_u32(op, "element count", threads)?,
                mode,
            ],
        })
    }
}
