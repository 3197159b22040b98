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
    // x: lhs offset, y: rhs offset, in elements
    offsets: vec4<u32>,
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
        for (var c = 0u; c < 4u; c++) {
            lhs_tile[buf + lhs_quad * 4u + c][lhs_row / 4u][lhs_row % 4u] = lhs_next[c];
        }
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
            for (var i = 0u; i < 4u; i++) {
                acc[i] += a_lo[i] * b_lo;
                acc[4u + i] += a_lo[i] * b_hi;
                acc[8u + i] += a_hi[i] * b_lo;
                acc[12u + i] += a_hi[i] * b_hi;
            }
        }
        // One barrier per slice: see blocked.wgsl.
    }

    let out_base = wid.z * params.m * params.n;
    for (var half = 0u; half < 2u; half++) {
        for (var i = 0u; i < 4u; i++) {
            let row = wid.y * BLOCKED_TILE + half * HALF + local.y * 4u + i;
            for (var side = 0u; side < 2u; side++) {
                let col = wid.x * BLOCKED_TILE + side * HALF + local.x * 4u;
                output[(out_base + row * params.n + col) / 4u] = vec4<T>(acc[half * 8u + side * 4u + i]);
            }
        }
    }
}
