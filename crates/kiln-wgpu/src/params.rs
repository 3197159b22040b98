//! Uniform structs, `#[repr(C)]` mirrors of the `Params` struct in each shader.
//! WGSL's `array<vec4<u32>, 2>` is laid out as `[u32; 8]`.

use bytemuck::{Pod, Zeroable};
use kiln_core::{Error, Layout, Result, MAX_RANK};

/// Shared by every kernel in `shaders/elementwise/` except `fill`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct ElementwiseParams {
    pub numel: u32,
    pub rank: u32,
    pub op: u32,
    /// Bit i set: operand i (0..3 inputs, 3 output) is contiguous from its offset.
    pub contiguous: u32,
    pub p0: f32,
    pub p1: f32,
    pub _pad: [u32; 2],
    pub offsets: [u32; 4],
    pub shape: [u32; 8],
    pub strides: [[u32; 8]; 4],
}

pub(crate) fn to_u32(op: &'static str, what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::LimitExceeded {
        op,
        what,
        needed: v as u64,
        limit: u32::MAX as u64,
    })
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
            p.shape[d] = s as u32;
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
            for (d, &s) in layout.strides().iter().enumerate() {
                p.strides[slot][d] = to_u32(op, "stride", s)?;
            }
        }
        if output.is_none() {
            p.contiguous |= 1 << 3;
        }
        Ok(p)
    }
}

/// `reduce`, `arg_reduce`, `softmax`, `layer_norm`, `scatter_add`, `fill`: four words.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Words(pub [u32; 4]);

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch1: u32,
    pub lhs_strides: [u32; 4],
    pub rhs_strides: [u32; 4],
    pub offsets: [u32; 4],
}

/// `matmul/pack.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct PackParams {
    pub rows: u32,
    pub cols: u32,
    pub block_rows: u32,
    pub block_cols: u32,
    pub row_blocks: u32,
    pub col_blocks: u32,
    pub block_stride: u32,
    pub batch1: u32,
    pub strides: [u32; 4],
    pub extent: [u32; 4],
}

/// `matmul/matmul_uniform_lhs.wgsl`, one per dispatch (one lhs block).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct UniformLhsParams {
    pub n: u32,
    pub rows: u32,
    pub k4: u32,
    pub lhs_row: u32,
    pub rhs_base: u32,
    pub rhs_row: u32,
    pub out_base: u32,
    pub accumulate: u32,
    pub rhs_batch: u32,
    pub out_batch: u32,
    pub _pad: [u32; 2],
}

/// `conv/*` and `pool/*`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct WindowParams {
    pub image: [u32; 4],
    pub window: [u32; 4],
    pub step: [u32; 4],
    pub extra: [u32; 4],
}

/// `conv/conv2d_direct.wgsl`: the window, then output channels and groups.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct DirectConvParams {
    pub window: WindowParams,
    pub channels: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct GatherParams {
    pub dims: [u32; 4],
    pub index_strides: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct PhiloxParams {
    pub numel: u32,
    pub mode: u32,
    pub threshold: u32,
    pub _pad: u32,
    pub key: [u32; 4],
}
