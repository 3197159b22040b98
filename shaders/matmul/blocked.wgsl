// Register-blocked batched matmul for hardware GPUs: out[b0, b1] = lhs (m x k) @ rhs (k x n).
// A workgroup of 16x16 threads computes a BLOCKED_TILE x BLOCKED_TILE output tile, each
// thread an 8x8 block held in registers (rows ty*4.. and 64+ty*4.., columns likewise, so
// its workgroup-memory reads are vec4s). k is walked in slices of BLOCKED_SLICE,
// double-buffered: the next slice's loads are issued before the current one is used,
// so one barrier per slice suffices. Operands are read through any strides; each
// operand is loaded along whichever of its dimensions is contiguous (a uniform branch),
// so transposed operands are read coalesced too. Bounds are checked; the aligned-shape
// variant without checks is blocked_vec4.wgsl. Accumulation is f32 whatever T is. Built
// with `MatmulRhs::ImageColumns`, rhs is an image's im2col columns read in place; with
// `MatmulRhs::WeightGradient`, lhs is a convolution's output gradient and rhs the
// image's columns transposed.
// kiln:constants matmul_blocked blocked_rhs
// Generated from kiln's op table and shader_constants.rs; do not edit.
const BLOCKED_TILE: u32 = 128u;
const BLOCKED_SLICE: u32 = 8u;
const RHS_TILE: u32 = BLOCKED_TILE;
const RHS_SLICE: u32 = BLOCKED_SLICE;
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

const QUADS: u32 = BLOCKED_TILE / 4u;
// A thread's 8x8 block is two 4x4 blocks half a tile apart in each direction.
const HALF: u32 = BLOCKED_TILE / 2u;
const HALF_QUADS: u32 = QUADS / 2u;
// 16x16 threads, 8x8 outputs each: the tile.
const THREADS: u32 = 256u;
// Each thread loads four elements of each operand's slice (one vec4 of loads):
// BLOCKED_TILE * BLOCKED_SLICE == 4 * THREADS.

// Two slices each: lhs_tile[s * BLOCKED_SLICE + kk][q] holds lhs rows 4q..4q+3 at k0 + kk;
// rhs_tile[s * BLOCKED_SLICE + kk][q] holds rhs columns 4q..4q+3 at k0 + kk.
var<workgroup> lhs_tile: array<array<vec4<f32>, QUADS>, 2u * BLOCKED_SLICE>;
var<workgroup> rhs_tile: array<array<vec4<f32>, QUADS>, 2u * BLOCKED_SLICE>;

// Position (row or column within the tile, kk within the slice) of load `e` of 1024:
// along the tile first when that dimension is contiguous in memory, along k otherwise.
fn position(e: u32, tile_contiguous: bool) -> vec2<u32> {
    if (tile_contiguous) {
        return vec2<u32>(e % BLOCKED_TILE, e / BLOCKED_TILE);
    }
    return vec2<u32>(e / BLOCKED_SLICE, e % BLOCKED_SLICE);
}

// Load `e` of lhs's slice from k0: its value (`lhs_at`), zero outside the matrix.
fn lhs_load(e: u32, base: u32, row0: u32, k0: u32, rows_contiguous: bool) -> f32 {
    let p = position(e, rows_contiguous);
    if (row0 + p.x < params.m && k0 + p.y < params.k) {
        return lhs_at(base, k0, p.y, row0, p.x);
    }
    return 0.0;
}

// Load `e` of rhs's slice from k0: its value (`rhs_at`), zero outside the matrix.
fn rhs_load(e: u32, base: u32, col0: u32, k0: u32, cols_contiguous: bool) -> f32 {
    let q = position(e, cols_contiguous);
    if (k0 + q.y < params.k && col0 + q.x < params.n) {
        return rhs_at(base, k0, q.y, col0, q.x);
    }
    return 0.0;
}

// The four loads of this thread (`lid`) for the slice from k0.
fn load_lhs(lid: u32, base: u32, row0: u32, k0: u32, rows: bool) -> vec4<f32> {
    return vec4<f32>(
        lhs_load(lid, base, row0, k0, rows),
        lhs_load(lid + THREADS, base, row0, k0, rows),
        lhs_load(lid + 2u * THREADS, base, row0, k0, rows),
        lhs_load(lid + 3u * THREADS, base, row0, k0, rows),
    );
}

fn load_rhs(lid: u32, base: u32, col0: u32, k0: u32, cols: bool) -> vec4<f32> {
    return vec4<f32>(
        rhs_load(lid, base, col0, k0, cols),
        rhs_load(lid + THREADS, base, col0, k0, cols),
        rhs_load(lid + 2u * THREADS, base, col0, k0, cols),
        rhs_load(lid + 3u * THREADS, base, col0, k0, cols),
    );
}

// Puts element `e` of a slice at its place in buffer `buf` of a tile.
fn put_lhs(buf: u32, e: u32, rows: bool, value: f32) {
    let p = position(e, rows);
    lhs_tile[buf + p.y][p.x / 4u][p.x % 4u] = value;
}

fn put_rhs(buf: u32, e: u32, cols: bool, value: f32) {
    let q = position(e, cols);
    rhs_tile[buf + q.y][q.x / 4u][q.x % 4u] = value;
}

fn store_lhs(buf: u32, lid: u32, rows: bool, v: vec4<f32>) {
    put_lhs(buf, lid, rows, v.x);
    put_lhs(buf, lid + THREADS, rows, v.y);
    put_lhs(buf, lid + 2u * THREADS, rows, v.z);
    put_lhs(buf, lid + 3u * THREADS, rows, v.w);
}

fn store_rhs(buf: u32, lid: u32, cols: bool, v: vec4<f32>) {
    put_rhs(buf, lid, cols, v.x);
    put_rhs(buf, lid + THREADS, cols, v.y);
    put_rhs(buf, lid + 2u * THREADS, cols, v.z);
    put_rhs(buf, lid + 3u * THREADS, cols, v.w);
}

// Writes the four columns at.y.. of row at.x of batch z that lie inside the product;
// bit j of the result: column at.y + j, which store_product kept aside.
fn store_output(z: u32, at: vec2<u32>, v: vec4<f32>) -> u32 {
    let row = at.x;
    let col = at.y;
    var aside = 0u;
    if (row >= params.m) {
        return aside;
    }
    if (col < params.n && store_product(z, row, col, v.x)) { aside |= 1u; }
    if (col + 1u < params.n && store_product(z, row, col + 1u, v.y)) { aside |= 2u; }
    if (col + 2u < params.n && store_product(z, row, col + 2u, v.z)) { aside |= 4u; }
    if (col + 3u < params.n && store_product(z, row, col + 3u, v.w)) { aside |= 8u; }
    return aside;
}

// Where a thread's store q (of acc[q], 0..15) starts, from its block's corner: rows
// q % 4 and, from q = 8, HALF below; columns HALF right for q % 8 from 4.
fn store_corner(q: u32) -> vec2<u32> {
    return vec2<u32>(q % 4u + HALF * (q / 8u), HALF * (q / 4u % 2u));
}

// Stores again what store_product kept aside: four bits a store, stores 0-7 in
// aside.x and 8-15 in aside.y. One loop, so one copy of what store_again runs.
fn store_aside(z: u32, corner: vec2<u32>, aside: vec2<u32>) {
    var rest = aside;
    while (any(rest != vec2<u32>(0u))) {
        let word = select(1u, 0u, rest.x != 0u);
        let bits = rest[word];
        rest[word] = bits & (bits - 1u);
        let b = firstTrailingBit(bits);
        let at = corner + store_corner(8u * word + b / 4u) + vec2<u32>(0u, b % 4u);
        store_again(z, at.x, at.y);
    }
}

// The tile at `wid` (its column, row and batch).
fn product(wid: vec3<u32>, local: vec3<u32>, lid: u32) {
    let b0 = wid.z / params.batch1;
    let b1 = wid.z % params.batch1;
    let ls = params.lhs_strides;
    let rs = params.rhs_strides;
    let lhs_base = params.offsets.x + b0 * ls.x + b1 * ls.y;
    let rhs_base = params.offsets.y + b0 * rs.x + b1 * rs.y;
    let row0 = wid.y * BLOCKED_TILE;
    let col0 = wid.x * BLOCKED_TILE;
    // lhs rows are contiguous when its row stride is 1 (a transposed operand).
    let lhs_rows = ls.z == 1u && ls.w != 1u;
    let rhs_cols = rs.w == 1u || rs.z != 1u;

    // This thread's four loads of each operand, in flight across a slice's arithmetic.
    // Each is named by a constant (here and below): indexing a register array by a loop
    // counter kept it in local memory on NVIDIA.
    rhs_start(col0, lid, b0);
    var lhs_next = load_lhs(lid, lhs_base, row0, 0u, lhs_rows);
    var rhs_next = load_rhs(lid, rhs_base, col0, 0u, rhs_cols);
    // The second slice's rhs offsets, read by its loads after the first barrier below.
    rhs_slice(BLOCKED_SLICE, lid);

    var acc: array<vec4<f32>, 16>;
    let slices = (params.k + BLOCKED_SLICE - 1u) / BLOCKED_SLICE;
    for (var s = 0u; s < slices; s++) {
        // Store the loaded slice into its buffer, then issue the next slice's loads,
        // which are in flight while this one is multiplied.
        let buf = (s % 2u) * BLOCKED_SLICE;
        store_lhs(buf, lid, lhs_rows, lhs_next);
        store_rhs(buf, lid, rhs_cols, rhs_next);
        workgroupBarrier();
        if (s + 1u < slices) {
            let k0 = (s + 1u) * BLOCKED_SLICE;
            lhs_next = load_lhs(lid, lhs_base, row0, k0, lhs_rows);
            rhs_next = load_rhs(lid, rhs_base, col0, k0, rhs_cols);
        }
        // The offsets of the slice after, in the buffer this slice's loads read (every
        // thread has passed the barrier above, so those loads are done); its loads
        // follow the next barrier.
        rhs_slice((s + 2u) * BLOCKED_SLICE, lid);
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
        // The other buffer is written next; it was last read a whole slice ago, before
        // this slice's barrier, so no second barrier is needed.
    }

    let corner = vec2<u32>(row0 + local.y * 4u, col0 + local.x * 4u);
    // Four bits a store (store_output): stores 0-7 in x, 8-15 in y.
    var aside = vec2<u32>(0u);
    aside.x |= store_output(wid.z, corner + store_corner(0u), acc[0]);
    aside.x |= store_output(wid.z, corner + store_corner(1u), acc[1]) << 4u;
    aside.x |= store_output(wid.z, corner + store_corner(2u), acc[2]) << 8u;
    aside.x |= store_output(wid.z, corner + store_corner(3u), acc[3]) << 12u;
    aside.x |= store_output(wid.z, corner + store_corner(4u), acc[4]) << 16u;
    aside.x |= store_output(wid.z, corner + store_corner(5u), acc[5]) << 20u;
    aside.x |= store_output(wid.z, corner + store_corner(6u), acc[6]) << 24u;
    aside.x |= store_output(wid.z, corner + store_corner(7u), acc[7]) << 28u;
    aside.y |= store_output(wid.z, corner + store_corner(8u), acc[8]);
    aside.y |= store_output(wid.z, corner + store_corner(9u), acc[9]) << 4u;
    aside.y |= store_output(wid.z, corner + store_corner(10u), acc[10]) << 8u;
    aside.y |= store_output(wid.z, corner + store_corner(11u), acc[11]) << 12u;
    aside.y |= store_output(wid.z, corner + store_corner(12u), acc[12]) << 16u;
    aside.y |= store_output(wid.z, corner + store_corner(13u), acc[13]) << 20u;
    aside.y |= store_output(wid.z, corner + store_corner(14u), acc[14]) << 24u;
    aside.y |= store_output(wid.z, corner + store_corner(15u), acc[15]) << 28u;
    store_aside(wid.z, corner, aside);
}

// kiln:entry (kiln-wgpu's ops/matmul_group.rs replaces the entry point to run several
// products in one launch)
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    product(wid, local, lid);
}
