// Batched matmul: out[b0, b1] = lhs[b0, b1] (m x k) @ rhs[b0, b1] (k x n).
// Operands are read through strides (transposes and broadcast batches cost no copy);
// the output is compact. A workgroup computes a TILE x TILE tile (64, or 32 in kiln's
// small-tile build), each of its SIDE x SIDE threads a 4x4 block, stepping through k in
// slices of 16 staged in workgroup memory. Accumulation is f32 whatever T is. Built
// with `MatmulRhs::ImageColumns`, rhs is an image's im2col columns read in place
// (kiln's implicit convolution); with `MatmulRhs::WeightGradient`, lhs is a
// convolution's output gradient and rhs the image's columns transposed (its weight
// gradient); with `MatmulRhs::GateColumns`, an LSTM's recurrent product whose finish
// computes the cell (kiln's `MatmulLstmCell`).
// kiln:constants matmul_tiled matmul_rhs
// Generated from kiln's op table and shader_constants.rs; do not edit.
const TILE: u32 = 64u;
const RHS_TILE: u32 = TILE;
const RHS_SLICE: u32 = SLICE;
fn lhs_at(base: u32, k0: u32, kk: u32, row0: u32, r: u32) -> f32 {
    return read_lhs(base + (row0 + r) * params.lhs_strides.z + (k0 + kk) * params.lhs_strides.w);
}
fn rhs_start(col0: u32, lid: u32, b0: u32) {}
fn rhs_slice(k0: u32, lid: u32) {}
fn rhs_at(base: u32, k0: u32, kk: u32, col0: u32, c: u32) -> f32 {
    return read_rhs(base + (k0 + kk) * params.rhs_strides.z + (col0 + c) * params.rhs_strides.w);
}
fn store_product(z: u32, row: u32, col: u32, v: f32) -> bool {
    store((z * params.m + row) * params.n + col, v);
    return false;
}
fn store_again(z: u32, row: u32, col: u32) {}
// kiln:end
alias T = f32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // size of the second batch dim; z = b0 * batch1 + b1
    batch1: u32,
    // batch0 stride, batch1 stride, row stride, col stride
    lhs_strides: vec4<u32>,
    rhs_strides: vec4<u32>,
    // x: lhs offset, y: rhs offset; z, w: a transposed convolution by phases' grid
    // rows and columns before its output (matmul_rhs.rs)
    offsets: vec4<u32>,
    // An implicit convolution's image (matmul_rhs.rs): height, width, kernel height,
    // kernel width; stride y, stride x, padding y, padding x; dilation y, dilation x,
    // output width, 1 for a transposed convolution. Unused by a product of matrices.
    conv_image: vec4<u32>,
    conv_step: vec4<u32>,
    conv_taps: vec4<u32>,
    // A weight gradient's batch (matmul_rhs.rs): elements of an image, elements of an
    // image's output gradient, terms in all, output positions per image. A transposed
    // convolution by phases': its stride (y, x), output height and width.
    conv_batch: vec4<u32>,
    // A transposed convolution's kernel among the taps walked: zeros before it (y, x),
    // its taps (y, x).
    conv_kernel: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [batch.., m, k] at params.lhs_strides
// kiln:load lhs (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> lhs: array<T>;
fn read_lhs(i: u32) -> f32 { return f32(lhs[i]); }
// kiln:load lhs end
// [batch.., k, n] at params.rhs_strides
// kiln:load rhs (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read> rhs: array<T>;
fn read_rhs(i: u32) -> f32 { return f32(rhs[i]); }
// kiln:load rhs end
// [batch.., m, n], compact
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(3) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

const SLICE: u32 = 16u;
// Threads along each side of the tile; a thread's outputs lie SIDE rows and columns apart.
const SIDE: u32 = TILE / 4u;
// Elements of each operand's slice that one thread stages.
const STAGED: u32 = TILE * SLICE / (SIDE * SIDE);

// lhs_tile[kk][y][i] holds lhs[row0 + y + SIDE * i, k0 + kk], the four rows thread row y
// multiplies, so it reads them as one vec4; rhs_tile[kk][x][j] likewise holds
// rhs[k0 + kk, col0 + x + SIDE * j]. Per step of kk a thread then issues two
// workgroup-memory reads for its sixteen multiply-adds, where scalars took eight: on
// NVIDIA, eight a warp would take about twice the cycles of its multiply-adds.
var<workgroup> lhs_tile: array<array<vec4<f32>, SIDE>, SLICE>;
var<workgroup> rhs_tile: array<array<vec4<f32>, SIDE>, SLICE>;

// The tile at `wid` (its column, row and batch).
fn product(wid: vec3<u32>, local: vec3<u32>, lid: u32) {
    let b0 = wid.z / params.batch1;
    let b1 = wid.z % params.batch1;
    let lhs_base = params.offsets.x + b0 * params.lhs_strides.x + b1 * params.lhs_strides.y;
    let rhs_base = params.offsets.y + b0 * params.rhs_strides.x + b1 * params.rhs_strides.y;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;

    var acc: array<vec4<f32>, 4>;
    rhs_start(col0, lid, b0);
    for (var k0 = 0u; k0 < params.k; k0 += SLICE) {
        for (var l = 0u; l < STAGED; l++) {
            let e = lid + SIDE * SIDE * l;
            // lhs: TILE rows x SLICE columns of k
            let r = e / SLICE;
            let kk = e % SLICE;
            var a = 0.0;
            if (row0 + r < params.m && k0 + kk < params.k) {
                a = lhs_at(lhs_base, k0, kk, row0, r);
            }
            lhs_tile[kk][r % SIDE][r / SIDE] = a;
            // rhs: SLICE rows of k x TILE columns
            let kr = e / TILE;
            let c = e % TILE;
            var b = 0.0;
            if (k0 + kr < params.k && col0 + c < params.n) {
                b = rhs_at(rhs_base, k0, kr, col0, c);
            }
            rhs_tile[kr][c % SIDE][c / SIDE] = b;
        }
        workgroupBarrier();
        // The next slice's rhs offsets, read by its loads after the barrier below.
        rhs_slice(k0 + SLICE, lid);
        for (var kk = 0u; kk < SLICE; kk++) {
            let a = lhs_tile[kk][local.y];
            let b = rhs_tile[kk][local.x];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }

    // kiln:finish (the LSTM build computes its cell here instead: ops/recurrent_step.rs)
    // Bit 4i + j: the element (i, j) store_product kept aside, which store_again stores.
    var aside = 0u;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + local.y + SIDE * i;
        if (row >= params.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + local.x + SIDE * j;
            if (col < params.n && store_product(wid.z, row, col, acc[i][j])) {
                aside |= 1u << (4u * i + j);
            }
        }
    }
    for (var rest = aside; rest != 0u; rest &= rest - 1u) {
        let b = firstTrailingBit(rest);
        store_again(wid.z, row0 + local.y + SIDE * (b / 4u), col0 + local.x + SIDE * (b % 4u));
    }
    // kiln:finish end
}

// kiln:entry (kiln-wgpu's ops/matmul_group.rs replaces the entry point to run several
// products in one launch)
@compute @workgroup_size(SIDE, SIDE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    product(wid, local, lid);
}
