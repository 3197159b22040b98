//! How the tiled matmul (`matmul.wgsl`) finds an element of its rhs: through the
//! operand's strides, or as an element of an image's column matrix (im2col) computed
//! from the image where it lies, so that a convolution is one matmul that writes no
//! columns (`ops::conv_product`). Both are WGSL functions of the constants
//! group `matmul_rhs` (`rhs_at`, and `rhs_columns` and `rhs_slice`, which prepare what
//! it reads), so the kernel is written once and built either way.

/// The two ways the tiled matmul reads its rhs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulRhs {
    /// `rhs[k, col]` of the batch at `base`, through `params.rhs_strides`.
    Strided,
    /// The columns of a compact `[c, h, w]` image (batch and group at `base`) against
    /// `params.conv_*`: `k` walks (channel, tap row, tap column), `col` (output row,
    /// output column); taps outside the image read zero.
    ImageColumns,
}

impl MatmulRhs {
    /// The WGSL of the `matmul_rhs` constants group.
    pub(crate) fn group(self) -> &'static str {
        match self {
            MatmulRhs::Strided => STRIDED,
            MatmulRhs::ImageColumns => IMAGE_COLUMNS,
        }
    }
}

const STRIDED: &str = "\
fn rhs_columns(col0: u32, lid: u32) {}
fn rhs_slice(k0: u32, lid: u32) {}
fn rhs_at(base: u32, k0: u32, kr: u32, col0: u32, c: u32) -> f32 {
    return read_rhs(base + (k0 + kr) * params.rhs_strides.z + (col0 + c) * params.rhs_strides.w);
}
";

// Integer division by sizes known only at run time costs tens of instructions, so no
// load divides: `rhs_columns` finds where each of the workgroup's columns starts in
// the image once, and `rhs_slice` each k of the next slice's channel and tap offsets,
// one thread each. Padding and dilation are signed (bitcast): a stride-1 transposed
// convolution is this one with its taps stepping backwards from past the image's
// start (`ops::conv::conv_transpose2d_as_conv`).
const IMAGE_COLUMNS: &str = "\
// The tile's columns: output row and column times the stride, less the padding.
var<workgroup> conv_columns: array<vec2<i32>, TILE>;
// The slice's k: the channel's offset in the image, the tap's row and column offsets.
var<workgroup> conv_channels: array<u32, SLICE>;
var<workgroup> conv_offsets: array<vec2<i32>, SLICE>;
fn rhs_columns(col0: u32, lid: u32) {
    if (lid < TILE) {
        let col = col0 + lid;
        let oy = col / params.conv_taps.z;
        let ox = col % params.conv_taps.z;
        let y = i32(oy * params.conv_step.x) - bitcast<i32>(params.conv_step.z);
        let x = i32(ox * params.conv_step.y) - bitcast<i32>(params.conv_step.w);
        conv_columns[lid] = vec2<i32>(y, x);
    }
}
fn rhs_slice(k0: u32, lid: u32) {
    if (lid < SLICE) {
        let k = k0 + lid;
        let kw = params.conv_image.w;
        let taps = params.conv_image.z * kw;
        let ty = i32((k % taps) / kw);
        let tx = i32(k % kw);
        conv_channels[lid] = k / taps * params.conv_image.x * params.conv_image.y;
        let dilation = bitcast<vec2<i32>>(params.conv_taps.xy);
        conv_offsets[lid] = vec2<i32>(ty, tx) * dilation;
    }
}
fn rhs_at(base: u32, k0: u32, kr: u32, col0: u32, c: u32) -> f32 {
    let at = conv_columns[c] + conv_offsets[kr];
    let h = params.conv_image.x;
    let w = params.conv_image.y;
    if (at.x < 0 || at.y < 0 || u32(at.x) >= h || u32(at.y) >= w) {
        return 0.0;
    }
    return read_rhs(base + conv_channels[kr] + u32(at.x) * w + u32(at.y));
}
";
