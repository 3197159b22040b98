// Matmul for adapters that run on the CPU (lavapipe, SwiftShader, WARP). There a
// storage-buffer load costs a loop over the SIMD lanes, while a uniform-buffer load
// at an index every invocation shares is one scalar load. So each dispatch binds one
// packed block of lhs (32 rows x at most 512 of k, 64 KiB; see pack.wgsl) as a
// uniform buffer, and each invocation multiplies it by one vec4 column of rhs,
// keeping 32 vec4 accumulators in registers. Blocks along k accumulate into the output.
// rhs must have unit column stride, and its row stride, offset and n a multiple of 4
// (the launcher packs it otherwise); the output is compact.
// kiln:constants matmul_uniform_lhs
// Generated from kiln's op table and shader_constants.rs; do not edit.
const BLOCK_ROWS: u32 = 32u;
const BLOCK_VEC4S: u32 = 4096u;
const UNIFORM_LHS_WORKGROUP: u32 = 8u;
// kiln:end
alias T = f32;

struct Params {
    n: u32,
    // rows of the output this block covers (<= 32)
    rows: u32,
    // vec4s of k this block covers, and vec4s per row of the packed lhs block
    k4: u32,
    lhs_row: u32,
    // rhs: vec4 index of the block's first element, and vec4s per row
    rhs_base: u32,
    rhs_row: u32,
    // output index of the block's first element
    out_base: u32,
    // 1: add to the output (every k block but the first)
    accumulate: u32,
    // when one lhs serves every batch, batches run along y: rhs vec4s and output
    // elements between consecutive batches (0 otherwise)
    rhs_batch: u32,
    out_batch: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<uniform> lhs: array<vec4<f32>, BLOCK_VEC4S>;
@group(0) @binding(2) var<storage, read> rhs: array<vec4<T>>;
@group(0) @binding(3) var<storage, read_write> output: array<T>;

// Writes (or adds) row r of the block's output at vec4 column col4, its first `cols` lanes.
fn store(r: u32, v: vec4<f32>, col4: u32, cols: u32, z: u32) {
    if (r >= params.rows) { return; }
    let at = params.out_base + z * params.out_batch + r * params.n + col4 * 4u;
    for (var c = 0u; c < cols; c++) {
        var x = v[c];
        if (params.accumulate != 0u) { x += f32(output[at + c]); }
        output[at + c] = T(x);
    }
}

@compute @workgroup_size(UNIFORM_LHS_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col4 = gid.x;
    if (col4 * 4u >= params.n) { return; }
    let k4 = params.k4;
    let row = params.lhs_row;
    let step = params.rhs_row;

    var c0 = vec4<f32>();
    var c1 = vec4<f32>();
    var c2 = vec4<f32>();
    var c3 = vec4<f32>();
    var c4 = vec4<f32>();
    var c5 = vec4<f32>();
    var c6 = vec4<f32>();
    var c7 = vec4<f32>();
    var c8 = vec4<f32>();
    var c9 = vec4<f32>();
    var c10 = vec4<f32>();
    var c11 = vec4<f32>();
    var c12 = vec4<f32>();
    var c13 = vec4<f32>();
    var c14 = vec4<f32>();
    var c15 = vec4<f32>();
    var c16 = vec4<f32>();
    var c17 = vec4<f32>();
    var c18 = vec4<f32>();
    var c19 = vec4<f32>();
    var c20 = vec4<f32>();
    var c21 = vec4<f32>();
    var c22 = vec4<f32>();
    var c23 = vec4<f32>();
    var c24 = vec4<f32>();
    var c25 = vec4<f32>();
    var c26 = vec4<f32>();
    var c27 = vec4<f32>();
    var c28 = vec4<f32>();
    var c29 = vec4<f32>();
    var c30 = vec4<f32>();
    var c31 = vec4<f32>();
    var b = params.rhs_base + gid.y * params.rhs_batch + col4;
    for (var kk = 0u; kk < k4; kk++) {
        let b0 = vec4<f32>(rhs[b]);
        let b1 = vec4<f32>(rhs[b + step]);
        let b2 = vec4<f32>(rhs[b + 2u * step]);
        let b3 = vec4<f32>(rhs[b + 3u * step]);
        { let a = lhs[0u * row + kk]; c0 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[1u * row + kk]; c1 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[2u * row + kk]; c2 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[3u * row + kk]; c3 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[4u * row + kk]; c4 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[5u * row + kk]; c5 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[6u * row + kk]; c6 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[7u * row + kk]; c7 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[8u * row + kk]; c8 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[9u * row + kk]; c9 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[10u * row + kk]; c10 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[11u * row + kk]; c11 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[12u * row + kk]; c12 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[13u * row + kk]; c13 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[14u * row + kk]; c14 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[15u * row + kk]; c15 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[16u * row + kk]; c16 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[17u * row + kk]; c17 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[18u * row + kk]; c18 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[19u * row + kk]; c19 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[20u * row + kk]; c20 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[21u * row + kk]; c21 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[22u * row + kk]; c22 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[23u * row + kk]; c23 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[24u * row + kk]; c24 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[25u * row + kk]; c25 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[26u * row + kk]; c26 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[27u * row + kk]; c27 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[28u * row + kk]; c28 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[29u * row + kk]; c29 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[30u * row + kk]; c30 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        { let a = lhs[31u * row + kk]; c31 += a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3; }
        b += 4u * step;
    }
    let cols = min(4u, params.n - col4 * 4u);
    store(0u, c0, col4, cols, gid.y);
    store(1u, c1, col4, cols, gid.y);
    store(2u, c2, col4, cols, gid.y);
    store(3u, c3, col4, cols, gid.y);
    store(4u, c4, col4, cols, gid.y);
    store(5u, c5, col4, cols, gid.y);
    store(6u, c6, col4, cols, gid.y);
    store(7u, c7, col4, cols, gid.y);
    store(8u, c8, col4, cols, gid.y);
    store(9u, c9, col4, cols, gid.y);
    store(10u, c10, col4, cols, gid.y);
    store(11u, c11, col4, cols, gid.y);
    store(12u, c12, col4, cols, gid.y);
    store(13u, c13, col4, cols, gid.y);
    store(14u, c14, col4, cols, gid.y);
    store(15u, c15, col4, cols, gid.y);
    store(16u, c16, col4, cols, gid.y);
    store(17u, c17, col4, cols, gid.y);
    store(18u, c18, col4, cols, gid.y);
    store(19u, c19, col4, cols, gid.y);
    store(20u, c20, col4, cols, gid.y);
    store(21u, c21, col4, cols, gid.y);
    store(22u, c22, col4, cols, gid.y);
    store(23u, c23, col4, cols, gid.y);
    store(24u, c24, col4, cols, gid.y);
    store(25u, c25, col4, cols, gid.y);
    store(26u, c26, col4, cols, gid.y);
    store(27u, c27, col4, cols, gid.y);
    store(28u, c28, col4, cols, gid.y);
    store(29u, c29, col4, cols, gid.y);
    store(30u, c30, col4, cols, gid.y);
    store(31u, c31, col4, cols, gid.y);
}
