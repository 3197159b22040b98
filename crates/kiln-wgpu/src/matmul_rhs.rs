//! How the tiled and blocked matmuls (`matmul.wgsl`, `blocked.wgsl`) find an element of
//! their rhs: through the operand's strides, or as an element of an image's column
//! matrix (im2col) computed from the image where it lies, so that a convolution is one
//! matmul that writes no columns (`ops::conv_product`), and its weight gradient one
//! that reads the columns transposed (`ops::conv_weight_grad`). Both are WGSL functions
//! of the constants groups `matmul_rhs` (tiled) and `blocked_rhs` (blocked): `rhs_at`,
//! and `rhs_start` and `rhs_slice`, which prepare what it reads (nothing, through
//! strides: the plain builds run as they were), and `lhs_at`, which the weight
//! gradient reads its lhs by. Each kernel is written once and built each way.

use crate::params::{RecurrentStepParams, ShaderParams};

/// The two ways the matmuls read their rhs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulRhs {
    /// `rhs[k, col]` of the batch at `base`, through `params.rhs_strides`.
    Strided,
    /// The columns of a compact `[c, h, w]` image (batch and group at `base`) against
    /// `params.conv_*`: `k` walks (channel, tap row, tap column), `col` (output row,
    /// output column); taps outside the image read zero.
    ImageColumns,
    /// A recurrent cell's product `h @ w_hh^T` (`[batch, gates * hidden]`: an LSTM's
    /// four gates, a GRU's three) in its gates' order: a tile's column `c` is gate
    /// `c / (RHS_TILE / 4)` of unit `col0 / 4 + c % (RHS_TILE / 4)`, so that the four
    /// columns a thread of the tiled kernel holds, a quarter tile apart, are one unit's
    /// gates (a GRU's fourth quarter reads zeros), and the cell can be computed where
    /// they are (`ops::recurrent_step`). The tiled kernel only; with the cell's
    /// bindings, in group 1.
    GateColumns,
    /// A convolution's weight gradient, per group: lhs the output's gradient `[n, o,
    /// oh, ow]` (batch and group at `base`, rows at `params.lhs_strides.z`), rhs the
    /// image's column matrix transposed, against `params.conv_*`: `k` walks (image,
    /// output row, output column) from the chunk's first term, `b0 * params.k`, to at
    /// most `params.conv_batch.z`; `col` walks (channel, tap row, tap column).
    WeightGradient,
}

impl MatmulRhs {
    /// The WGSL of the constants group `name` (`matmul_rhs`, `blocked_rhs`), or `None`
    /// for another group. The functions name the kernel's tile and k slice as
    /// `RHS_TILE` and `RHS_SLICE`.
    pub(crate) fn group(self, name: &str) -> Option<String> {
        let sizes = match name {
            "matmul_rhs" => "const RHS_TILE: u32 = TILE;\nconst RHS_SLICE: u32 = SLICE;\n",
            "blocked_rhs" => {
                "const RHS_TILE: u32 = BLOCKED_TILE;\nconst RHS_SLICE: u32 = BLOCKED_SLICE;\n"
            }
            _ => return None,
        };
        let functions = match self {
            MatmulRhs::Strided => format!("{STRIDED}{COMPACT_STORE}"),
            MatmulRhs::ImageColumns => format!("{IMAGE_READS}{IMAGE_COLUMNS}{IMAGE_STORE}"),
            MatmulRhs::GateColumns if name == "matmul_rhs" => format!(
                "{}{GATE_COLUMNS}{COMPACT_STORE}{}",
                RecurrentStepParams::LAYOUT.wgsl_struct(),
                crate::cell_updates::all()
            ),
            MatmulRhs::WeightGradient => {
                return Some(format!(
                    "{sizes}{IMAGE_READS}{WEIGHT_GRADIENT}{COMPACT_STORE}"
                ));
            }
            MatmulRhs::GateColumns => return None,
        };
        Some(format!("{sizes}{STRIDED_LHS}{functions}"))
    }
}

// `kk` and `r`: the element's k within the slice from `k0` and row within the tile from
// `row0`.
const STRIDED_LHS: &str = "\
fn lhs_at(base: u32, k0: u32, kk: u32, row0: u32, r: u32) -> f32 {
    return read_lhs(base + (row0 + r) * params.lhs_strides.z + (k0 + kk) * params.lhs_strides.w);
}
";

// `kk` and `c`: the element's k within the slice from `k0` and column within the tile
// from `col0`; `b0` the workgroup's first batch index.
const STRIDED: &str = "\
fn rhs_start(col0: u32, lid: u32, b0: u32) {}
fn rhs_slice(k0: u32, lid: u32) {}
fn rhs_at(base: u32, k0: u32, kk: u32, col0: u32, c: u32) -> f32 {
    return read_rhs(base + (k0 + kk) * params.rhs_strides.z + (col0 + c) * params.rhs_strides.w);
}
";

// Where the product's element (row, col) of batch z goes: the compact output
// `[batch.., m, n]`. Nothing is kept aside (see `IMAGE_STORE`).
const COMPACT_STORE: &str = "\
fn store_product(z: u32, row: u32, col: u32, v: f32) -> bool {
    store((z * params.m + row) * params.n + col, v);
    return false;
}
fn store_again(z: u32, row: u32, col: u32) {}
";

// A transposed convolution by phases (`ops::conv_phases`) stores its output
// interleaved, where the compact product would need a copy to interleave it and another
// to cut it: its rows are (channel, phase row, phase column), its columns a phase's grid
// rows and columns (`params.conv_taps.z` a row), `params.conv_batch` holds the stride
// and the output's height and width, `params.offsets.zw` the grid's rows and columns
// before the output's first. Grid cells outside the output are dropped. A convolution
// (`conv_batch.x` zero) stores the compact product.
//
// A transposed convolution (`params.conv_taps.w` 1) is, on the CPU as in PyTorch, a
// fold of the kernel's products with its input alone; the product here also multiplies
// the zeros of the image's padding and of the phases' missing taps. Those add zero,
// except where they meet an infinite weight or a NaN or infinite input: then NaN, in
// outputs the fold leaves finite. Only a sum that is not finite can hold such a NaN
// (a finite one is the fold's, plus zeros): `store_product` keeps it aside (returns
// true), and the kernel, once its stores are done, has `store_again` add each such
// element again without the zeros (`kernel_sum`). Once per invocation, in one loop: a
// software adapter runs the code of an `if` whether or not a lane takes it (lavapipe
// ran a convolution 5x slower with `kernel_sum` in every store), and a GPU branches
// past it.
const IMAGE_STORE: &str = "\
const DROPPED: u32 = 0xffffffffu;
// Where the product's element (row, col) of batch z goes, or DROPPED.
fn product_at(z: u32, row: u32, col: u32) -> u32 {
    let stride = params.conv_batch.xy;
    if (stride.x == 0u) {
        return (z * params.m + row) * params.n + col;
    }
    let phases = stride.x * stride.y;
    let phase = row % phases;
    let width = params.conv_taps.z;
    let grid = vec2<u32>(col / width, col % width) * stride
        + vec2<u32>(phase / stride.y, phase % stride.y);
    let size = params.conv_batch.zw;
    let shift = params.offsets.zw;
    if (any(grid < shift) || any(grid - shift >= size)) {
        return DROPPED;
    }
    let at = grid - shift;
    let channel = z * (params.m / phases) + row / phases;
    return (channel * size.x + at.x) * size.y + at.y;
}
fn store_product(z: u32, row: u32, col: u32, v: f32) -> bool {
    let at = product_at(z, row, col);
    if (at == DROPPED) {
        return false;
    }
    let finite = (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
    if (params.conv_taps.w != 0u && !finite) {
        return true;
    }
    store(at, v);
    return false;
}
fn store_again(z: u32, row: u32, col: u32) {
    store(product_at(z, row, col), kernel_sum(z, row, col));
}
// The product's element (row, col) of batch z over the kernel's taps inside the image.
// By phases, this row's phase's tap t is tap `phase + stride t` of the padded kernel,
// whose taps from `params.conv_kernel.xy` are the kernel's; at stride 1, the kernel's.
fn kernel_sum(z: u32, row: u32, col: u32) -> f32 {
    let b0 = z / params.batch1;
    let b1 = z % params.batch1;
    let filter_row = params.offsets.x + b0 * params.lhs_strides.x + b1 * params.lhs_strides.y
        + row * params.lhs_strides.z;
    let image = params.offsets.y + b0 * params.rhs_strides.x + b1 * params.rhs_strides.y;
    let size = params.conv_image.xy;
    let kw = params.conv_image.w;
    let taps = params.conv_image.z * kw;
    let width = params.conv_taps.z;
    let corner = vec2<i32>(vec2<u32>(col / width, col % width) * params.conv_step.xy)
        - bitcast<vec2<i32>>(params.conv_step.zw);
    let dilation = bitcast<vec2<i32>>(params.conv_taps.xy);
    let stride = max(params.conv_batch.xy, vec2<u32>(1u));
    let phase = row % (stride.x * stride.y);
    let first = vec2<u32>(phase / stride.y, phase % stride.y);
    let kernel_end = params.conv_kernel.xy + params.conv_kernel.zw;
    var sum = 0.0;
    for (var k = 0u; k < params.k; k++) {
        let tap = vec2<u32>((k % taps) / kw, k % kw);
        let padded = first + stride * tap;
        let at = corner + vec2<i32>(tap) * dilation;
        let inside = all(at >= vec2<i32>(0)) && all(vec2<u32>(at) < size);
        if (inside && all(padded >= params.conv_kernel.xy) && all(padded < kernel_end)) {
            let pixel = image + k / taps * size.x * size.y + u32(at.x) * size.y + u32(at.y);
            sum += read_lhs(filter_row + k * params.lhs_strides.w) * read_rhs(pixel);
        }
    }
    return sum;
}
";

// Integer division by sizes known only at run time costs tens of instructions, so no
// load divides: `rhs_start` finds where each of the workgroup's columns starts in
// the image once, and `rhs_slice` each k of a slice's channel and tap offsets, one
// thread each, into one of two buffers (`IMAGE_READS`). Padding
// and dilation are signed (bitcast): a stride-1 transposed convolution is this one
// with its taps stepping backwards from past the image's start
// (`ops::conv_product::conv_transpose2d_as_conv`).
const IMAGE_COLUMNS: &str = "\
// The tile's columns: output row and column times the stride, less the padding.
var<workgroup> conv_columns: array<vec2<i32>, RHS_TILE>;
// Two slices' k: the channel's offset in the image, the tap's row and column offsets.
var<workgroup> conv_channels: array<u32, 2u * RHS_SLICE>;
var<workgroup> conv_offsets: array<vec2<i32>, 2u * RHS_SLICE>;
// The columns' starts and the first slice's offsets, before the kernel's first loads.
fn rhs_start(col0: u32, lid: u32, b0: u32) {
    if (lid < RHS_TILE) {
        let col = col0 + lid;
        let oy = col / params.conv_taps.z;
        let ox = col % params.conv_taps.z;
        let y = i32(oy * params.conv_step.x) - bitcast<i32>(params.conv_step.z);
        let x = i32(ox * params.conv_step.y) - bitcast<i32>(params.conv_step.w);
        conv_columns[lid] = vec2<i32>(y, x);
    }
    rhs_slice(0u, lid);
    workgroupBarrier();
}
fn rhs_slice(k0: u32, lid: u32) {
    if (lid < RHS_SLICE) {
        let k = k0 + lid;
        let kw = params.conv_image.w;
        let taps = params.conv_image.z * kw;
        let ty = i32((k % taps) / kw);
        let tx = i32(k % kw);
        let at = slice_entry(k0, lid);
        conv_channels[at] = k / taps * params.conv_image.x * params.conv_image.y;
        let dilation = bitcast<vec2<i32>>(params.conv_taps.xy);
        conv_offsets[at] = vec2<i32>(ty, tx) * dilation;
    }
}
fn rhs_at(base: u32, k0: u32, kk: u32, col0: u32, c: u32) -> f32 {
    let entry = slice_entry(k0, kk);
    return image_at(base + conv_channels[entry], conv_columns[c] + conv_offsets[entry]);
}
";

// What the image builds share. They prepare each slice's k into two buffers, by the
// slice's parity (a kernel prepares the next slice's while other threads may still
// load from the current one's): `slice_entry` is where the slice from k0 keeps its k.
// `image_at` reads an image's channel at `channel` at (row, column) `at`, zero
// outside `params.conv_image`'s height and width.
const IMAGE_READS: &str = "\
fn slice_entry(k0: u32, kk: u32) -> u32 {
    return (k0 / RHS_SLICE) % 2u * RHS_SLICE + kk;
}
fn image_at(channel: u32, at: vec2<i32>) -> f32 {
    let h = params.conv_image.x;
    let w = params.conv_image.y;
    if (at.x < 0 || at.y < 0 || u32(at.x) >= h || u32(at.y) >= w) {
        return 0.0;
    }
    return read_rhs(channel + u32(at.x) * w + u32(at.y));
}
";

// The transposed columns' counterpart of IMAGE_COLUMNS: here the tile's columns are
// (channel, tap) and a slice's k output positions, which each table holds instead. A k
// past the chunk or the batch reads zeros: its gradient offset is NO_TERM, its corner
// far enough outside the image that no tap reaches in.
const WEIGHT_GRADIENT: &str = "\
const NO_TERM: u32 = 0xffffffffu;
// This workgroup's chunk of k starts here.
var<private> k_first: u32;
// The tile's columns: the channel's offset in an image, the tap's row and column offsets.
var<workgroup> grad_channels: array<u32, RHS_TILE>;
var<workgroup> grad_taps: array<vec2<i32>, RHS_TILE>;
// Two slices' k: the image's offset, the output position times the stride less the
// padding, and the term's offset in the output's gradient.
var<workgroup> grad_images: array<u32, 2u * RHS_SLICE>;
var<workgroup> grad_corners: array<vec2<i32>, 2u * RHS_SLICE>;
var<workgroup> grad_terms: array<u32, 2u * RHS_SLICE>;
fn rhs_start(col0: u32, lid: u32, b0: u32) {
    k_first = b0 * params.k;
    if (lid < RHS_TILE) {
        let col = col0 + lid;
        let kw = params.conv_image.w;
        let taps = params.conv_image.z * kw;
        let ty = i32((col % taps) / kw);
        let tx = i32(col % kw);
        grad_channels[lid] = col / taps * params.conv_image.x * params.conv_image.y;
        grad_taps[lid] = vec2<i32>(ty, tx) * bitcast<vec2<i32>>(params.conv_taps.xy);
    }
    rhs_slice(0u, lid);
    workgroupBarrier();
}
fn rhs_slice(k0: u32, lid: u32) {
    if (lid < RHS_SLICE) {
        let k = k_first + k0 + lid;
        let positions = params.conv_batch.w;
        let image = k / positions;
        let p = k % positions;
        let oy = p / params.conv_taps.z;
        let ox = p % params.conv_taps.z;
        let y = i32(oy * params.conv_step.x) - bitcast<i32>(params.conv_step.z);
        let x = i32(ox * params.conv_step.y) - bitcast<i32>(params.conv_step.w);
        let inside = k0 + lid < params.k && k < params.conv_batch.z;
        let at = slice_entry(k0, lid);
        grad_images[at] = image * params.conv_batch.x;
        grad_corners[at] = select(vec2<i32>(-(1 << 30)), vec2<i32>(y, x), inside);
        grad_terms[at] = select(NO_TERM, image * params.conv_batch.y + p, inside);
    }
}
fn lhs_at(base: u32, k0: u32, kk: u32, row0: u32, r: u32) -> f32 {
    let term = grad_terms[slice_entry(k0, kk)];
    if (term == NO_TERM) {
        return 0.0;
    }
    return read_lhs(base + (row0 + r) * params.lhs_strides.z + term);
}
fn rhs_at(base: u32, k0: u32, kk: u32, col0: u32, c: u32) -> f32 {
    let entry = slice_entry(k0, kk);
    let channel = base + grad_images[entry] + grad_channels[c];
    return image_at(channel, grad_corners[entry] + grad_taps[c]);
}
";

// After `RecurrentStepParams`' declaration, from its Rust mirror.
const GATE_COLUMNS: &str = "\
// The recurrent cell this build computes in its finish (ops/recurrent_step.rs), in
// group 1.
@group(1) @binding(0) var<uniform> cell: RecurrentStepParams;
// What the product's sum adds, [batch, gates * hidden] at add_*: an LSTM step's input
// projection, a GRU's hidden bias.
@group(1) @binding(1) var<storage, read> cell_add: array<T>;
// The state, [batch, hidden] at state_*: an LSTM's c, a GRU's h.
@group(1) @binding(2) var<storage, read> cell_state: array<T>;
// The sum, [batch, gates * hidden], compact: the backward pass reads it.
@group(1) @binding(3) var<storage, read_write> cell_gates: array<T>;
// The cell's output: an LSTM's [h | c'], a GRU's h'.
@group(1) @binding(4) var<storage, read_write> cell_out: array<T>;
// A GRU's input projection, [batch, 3 * hidden] at x_*.
@group(1) @binding(5) var<storage, read> cell_x: array<T>;
fn rhs_start(col0: u32, lid: u32, b0: u32) {}
fn rhs_slice(k0: u32, lid: u32) {}
fn rhs_at(base: u32, k0: u32, kk: u32, col0: u32, c: u32) -> f32 {
    let quarter = RHS_TILE / 4u;
    let unit = col0 / 4u + c % quarter;
    let gate = c / quarter;
    if (unit >= cell.hidden || gate >= cell.gates) {
        return 0.0;
    }
    return read_rhs(base + (k0 + kk) * params.rhs_strides.z + (gate * cell.hidden + unit) * params.rhs_strides.w);
}
";
