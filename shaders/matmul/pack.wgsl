// Copies a batch of strided matrices into zero-padded f32 blocks for the
// uniform-lhs matmul: block (z, i, j) holds rows [i*block_rows, +block_rows) and
// columns [j*block_cols, +block_cols) of matrix z, row-major, at a fixed block stride.
// Elements past the matrix edge are written as zero so the matmul needs no bounds checks.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    cols: u32,
    block_rows: u32,
    block_cols: u32,
    // blocks along rows and columns per matrix; elements between block starts
    row_blocks: u32,
    col_blocks: u32,
    block_stride: u32,
    // size of the second batch dim; z = b0 * batch1 + b1
    batch1: u32,
    // batch0 stride, batch1 stride, row stride, col stride
    strides: vec4<u32>,
    // x: offset; y: elements to write (all blocks, without the slack between them)
    extent: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<T>;
@group(0) @binding(2) var<storage, read_write> packed: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * WORKGROUP;
    if (e >= params.extent.y) { return; }
    let per_block = params.block_rows * params.block_cols;
    let block = e / per_block;
    let within = e % per_block;
    let r = within / params.block_cols;
    let c = within % params.block_cols;
    let j = block % params.col_blocks;
    let i = (block / params.col_blocks) % params.row_blocks;
    let z = block / (params.col_blocks * params.row_blocks);
    let row = i * params.block_rows + r;
    let col = j * params.block_cols + c;
    var value = 0.0;
    if (row < params.rows && col < params.cols) {
        let b0 = z / params.batch1;
        let b1 = z % params.batch1;
        let at = params.extent.x + b0 * params.strides.x + b1 * params.strides.y + row * params.strides.z + col * params.strides.w;
        value = f32(source[at]);
    }
    packed[block * params.block_stride + within] = value;
}
