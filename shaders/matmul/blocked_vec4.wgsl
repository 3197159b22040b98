// blocked.wgsl for aligned shapes: m and n multiples of BLOCKED_TILE, k of
// BLOCKED_SLICE, both operands with unit column stride and their row strides, batch
// strides and offsets multiples of 4. Then every load and store is a whole vec4 inside
// the matrices, so there are no bounds checks. The launcher checks the conditions
// (`ops/matmul.rs`) and runs blocked.wgsl otherwise. Accumulation is f32 whatever T is.
// kiln:constants matmul_blocked
// Generated from kiln's op table and shader_constants.rs; do not edit.
const BLOCKED_TILE: u32 = 128u;
const BLOCKED_SLICE: u32 = 8u;
// kiln:end
alias T = f32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // size of the second batch dim; z = b0 * batch1 + b1
    batch1: u32,
    // batch0 stride, batch1 stride, row stride, col stride (1), in elements
    lhs_strides: vec4<u32>,
    rhs_strides: vec4<u32>,
    // x: lhs offset, y: rhs offset, in elements; z, w: a transposed convolution by
    // phases' grid rows and columns before its output (matmul_rhs.rs)
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
@group(0) @binding(1) var<storage, read> lhs: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> rhs: array<vec4<T>>;
// [batch.., m, n], compact
@group(0) @binding(3) var<storage, read_write> output: array<vec4<T>>;

const QUADS: u32 = BLOCKED_TILE / 4u;
// A thread's 8x8 block is two 4x4 blocks half a tile apart in each direction.
const HALF: u32 = BLOCKED_TILE / 2u;
const HALF_QUADS: u32 = QUADS / 2u;
// 16x16 threads, 8x8 outputs each: the tile.
const THREADS: u32 = 256u;
// vec4s per row of an operand's slice: lhs has BLOCKED_SLICE / 4 (along k), rhs QUADS.
const LHS_ROW_QUADS: u32 = BLOCKED_SLICE / 4u;

// As in blocked.wgsl: two slices each, lhs_tile[s * BLOCKED_SLICE + kk][q] holding lhs
// rows 4q..4q+3 at k0 + kk, rhs_tile[..][q] rhs columns 4q..4q+3.
var<workgroup> lhs_tile: array<array<vec4<f32>, QUADS>, 2u * BLOCKED_SLICE>;
var<workgroup> rhs_tile: array<array<vec4<f32>, QUADS>, 2u * BLOCKED_SLICE>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b0 = wid.z / params.batch1;
    let b1 = wid.z % params.batch1;
    let ls = params.lhs_strides;
    let rs = params.rhs_strides;
    // Each thread loads one vec4 of each operand per slice: lhs row lid / 2 at k quad
    // lid % 2, and rhs row lid / QUADS at column quad lid % QUADS.
    let lhs_row = lid / LHS_ROW_QUADS;
    let lhs_quad = lid % LHS_ROW_QUADS;
    let rhs_row = lid / QUADS;
    let rhs_quad = lid % QUADS;
    // Element indices of this thread's loads at k0 = 0; a slice moves lhs by
    // BLOCKED_SLICE elements and rhs by BLOCKED_SLICE rows.
    let lhs_first = params.offsets.x + b0 * ls.x + b1 * ls.y
        + (wid.y * BLOCKED_TILE + lhs_row) * ls.z + lhs_quad * 4u;
    let rhs_first = params.offsets.y + b0 * rs.x + b1 * rs.y
        + rhs_row * rs.z + wid.x * BLOCKED_TILE + rhs_quad * 4u;
    let rhs_step = BLOCKED_SLICE * rs.z;

    var lhs_next = vec4<f32>(lhs[lhs_first / 4u]);
    var rhs_next = vec4<f32>(rhs[rhs_first / 4u]);

    var acc: array<vec4<f32>, 16>;
    let slices = params.k / BLOCKED_SLICE;
    for (var s = 0u; s < slices; s++) {
        let buf = (s % 2u) * BLOCKED_SLICE;
        // Constant component indices: see blocked.wgsl.
        let kk = buf + lhs_quad * 4u;
        let q = lhs_row / 4u;
        let lane = lhs_row % 4u;
        lhs_tile[kk][q][lane] = lhs_next.x;
        lhs_tile[kk + 1u][q][lane] = lhs_next.y;
        lhs_tile[kk + 2u][q][lane] = lhs_next.z;
        lhs_tile[kk + 3u][q][lane] = lhs_next.w;
        rhs_tile[buf + rhs_row][rhs_quad] = rhs_next;
        workgroupBarrier();
        if (s + 1u < slices) {
            lhs_next = vec4<f32>(lhs[(lhs_first + (s + 1u) * BLOCKED_SLICE) / 4u]);
            rhs_next = vec4<f32>(rhs[(rhs_first + (s + 1u) * rhs_step) / 4u]);
        }
        for (var kk = 0u; kk < BLOCKED_SLICE; kk++) {
            let a_lo = lhs_tile[buf + kk][local.y];
            let a_hi = lhs_tile[buf + kk][HALF_QUADS + local.y];
            let b_lo = rhs_tile[buf + kk][local.x];
            let b_hi = rhs_tile[buf + kk][HALF_QUADS + local.x];
            // Written out with constant indices: a loop indexing acc and the vec4s
            // by its counter kept them in local memory on NVIDIA (7x slower).
            acc[0] += a_lo.x * b_lo;
            acc[1] += a_lo.y * b_lo;
            acc[2] += a_lo.z * b_lo;
            acc[3] += a_lo.w * b_lo;
            acc[4] += a_lo.x * b_hi;
            acc[5] += a_lo.y * b_hi;
            acc[6] += a_lo.z * b_hi;
            acc[7] += a_lo.w * b_hi;
            acc[8] += a_hi.x * b_lo;
            acc[9] += a_hi.y * b_lo;
            acc[10] += a_hi.z * b_lo;
            acc[11] += a_hi.w * b_lo;
            acc[12] += a_hi.x * b_hi;
            acc[13] += a_hi.y * b_hi;
            acc[14] += a_hi.z * b_hi;
            acc[15] += a_hi.w * b_hi;
        }
        // One barrier per slice: see blocked.wgsl.
    }

    let out_base = wid.z * params.m * params.n;
    let r = wid.y * BLOCKED_TILE + local.y * 4u;
    let c = wid.x * BLOCKED_TILE + local.x * 4u;
    // vec4 index of (row, col): the output is compact and n a multiple of 4.
    let n4 = params.n / 4u;
    let at = (out_base + r * params.n + c) / 4u;
    let right = HALF / 4u;
    let down = HALF * n4;
    output[at] = vec4<T>(acc[0]);
    output[at + n4] = vec4<T>(acc[1]);
    output[at + 2u * n4] = vec4<T>(acc[2]);
    output[at + 3u * n4] = vec4<T>(acc[3]);
    output[at + right] = vec4<T>(acc[4]);
    output[at + n4 + right] = vec4<T>(acc[5]);
    output[at + 2u * n4 + right] = vec4<T>(acc[6]);
    output[at + 3u * n4 + right] = vec4<T>(acc[7]);
    output[at + down] = vec4<T>(acc[8]);
    output[at + down + n4] = vec4<T>(acc[9]);
    output[at + down + 2u * n4] = vec4<T>(acc[10]);
    output[at + down + 3u * n4] = vec4<T>(acc[11]);
    output[at + down + right] = vec4<T>(acc[12]);
    output[at + down + n4 + right] = vec4<T>(acc[13]);
    output[at + down + 2u * n4 + right] = vec4<T>(acc[14]);
    output[at + down + 3u * n4 + right] = vec4<T>(acc[15]);
}
