// Register-blocked batched matmul for hardware GPUs: out[b0, b1] = lhs (m x k) @ rhs (k x n).
// A workgroup of 16x16 threads computes a BLOCKED_TILE x BLOCKED_TILE output tile, each
// thread an 8x8 block held in registers (rows ty*4.. and 64+ty*4.., columns likewise, so
// its workgroup-memory reads are vec4s). k is walked in slices of BLOCKED_SLICE,
// double-buffered: the next slice's loads are issued before the current one is used,
// so one barrier per slice suffices. Operands are read through any strides; each
// operand is loaded along whichever of its dimensions is contiguous (a uniform branch),
// so transposed operands are read coalesced too. Bounds are checked; the aligned-shape
// variant without checks is blocked_vec4.wgsl. Accumulation is f32 whatever T is.
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
    // batch0 stride, batch1 stride, row stride, col stride
    lhs_strides: vec4<u32>,
    rhs_strides: vec4<u32>,
    // x: lhs offset, y: rhs offset
    offsets: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [batch.., m, k] at params.lhs_strides
@group(0) @binding(1) var<storage, read> lhs: array<T>;
// [batch.., k, n] at params.rhs_strides
@group(0) @binding(2) var<storage, read> rhs: array<T>;
// [batch.., m, n], compact
@group(0) @binding(3) var<storage, read_write> output: array<T>;

const QUADS: u32 = BLOCKED_TILE / 4u;
// A thread's 8x8 block is two 4x4 blocks half a tile apart in each direction.
const HALF: u32 = BLOCKED_TILE / 2u;
const HALF_QUADS: u32 = QUADS / 2u;
// 16x16 threads, 8x8 outputs each: the tile.
const THREADS: u32 = 256u;
// Elements of one operand's slice each thread loads (blocked.wgsl).
const LOADS: u32 = BLOCKED_TILE * BLOCKED_SLICE / THREADS;

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

// Load `e` of lhs's slice from k0: its value, zero outside the matrix.
fn lhs_at(e: u32, base: u32, row0: u32, k0: u32, rows_contiguous: bool) -> f32 {
    let p = position(e, rows_contiguous);
    let ls = params.lhs_strides;
    if (row0 + p.x < params.m && k0 + p.y < params.k) {
        return f32(lhs[base + (row0 + p.x) * ls.z + (k0 + p.y) * ls.w]);
    }
    return 0.0;
}

// Load `e` of rhs's slice from k0: its value, zero outside the matrix.
fn rhs_at(e: u32, base: u32, col0: u32, k0: u32, cols_contiguous: bool) -> f32 {
    let q = position(e, cols_contiguous);
    let rs = params.rhs_strides;
    if (k0 + q.y < params.k && col0 + q.x < params.n) {
        return f32(rhs[base + (k0 + q.y) * rs.z + (col0 + q.x) * rs.w]);
    }
    return 0.0;
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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

    var lhs_next: array<f32, LOADS>;
    var rhs_next: array<f32, LOADS>;
    for (var l = 0u; l < LOADS; l++) {
        lhs_next[l] = lhs_at(lid + THREADS * l, lhs_base, row0, 0u, lhs_rows);
        rhs_next[l] = rhs_at(lid + THREADS * l, rhs_base, col0, 0u, rhs_cols);
    }

    var acc: array<vec4<f32>, 16>;
    let slices = (params.k + BLOCKED_SLICE - 1u) / BLOCKED_SLICE;
    for (var s = 0u; s < slices; s++) {
        // Store the loaded slice into its buffer, then issue the next slice's loads,
        // which are in flight while this one is multiplied.
        let buf = (s % 2u) * BLOCKED_SLICE;
        for (var l = 0u; l < LOADS; l++) {
            let e = lid + THREADS * l;
            let p = position(e, lhs_rows);
            lhs_tile[buf + p.y][p.x / 4u][p.x % 4u] = lhs_next[l];
            let q = position(e, rhs_cols);
            rhs_tile[buf + q.y][q.x / 4u][q.x % 4u] = rhs_next[l];
        }
        workgroupBarrier();
        if (s + 1u < slices) {
            let k0 = (s + 1u) * BLOCKED_SLICE;
            for (var l = 0u; l < LOADS; l++) {
                lhs_next[l] = lhs_at(lid + THREADS * l, lhs_base, row0, k0, lhs_rows);
                rhs_next[l] = rhs_at(lid + THREADS * l, rhs_base, col0, k0, rhs_cols);
            }
        }
        for (var kk = 0u; kk < BLOCKED_SLICE; kk++) {
            let a_lo = lhs_tile[buf + kk][local.y];
            let a_hi = lhs_tile[buf + kk][HALF_QUADS + local.y];
            let b_lo = rhs_tile[buf + kk][local.x];
            let b_hi = rhs_tile[buf + kk][HALF_QUADS + local.x];
            for (var i = 0u; i < 4u; i++) {
                acc[i] += a_lo[i] * b_lo;
                acc[4u + i] += a_lo[i] * b_hi;
                acc[8u + i] += a_hi[i] * b_lo;
                acc[12u + i] += a_hi[i] * b_hi;
            }
        }
        // The other buffer is written next; it was last read a whole slice ago, before
        // this slice's barrier, so no second barrier is needed.
    }

    let out_base = wid.z * params.m * params.n;
    for (var half = 0u; half < 2u; half++) {
        for (var i = 0u; i < 4u; i++) {
            let row = row0 + half * HALF + local.y * 4u + i;
            if (row >= params.m) {
                continue;
            }
            for (var side = 0u; side < 2u; side++) {
                let v = acc[half * 8u + side * 4u + i];
                let col = col0 + side * HALF + local.x * 4u;
                for (var j = 0u; j < 4u; j++) {
                    if (col + j < params.n) {
                        output[out_base + row * params.n + col + j] = T(v[j]);
                    }
                }
            }
        }
    }
}
