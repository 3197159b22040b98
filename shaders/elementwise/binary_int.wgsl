// Integer elementwise ops of two inputs (i32 indices and labels). Op codes are the
// BINARY_* constants from kiln's op table; division by zero gives the dividend, as WGSL
// defines it (and the CPU backend follows).
// kiln:constants workgroup binary_ops
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const BINARY_ADD: u32 = 0u;
const BINARY_SUB: u32 = 1u;
const BINARY_MUL: u32 = 2u;
const BINARY_DIV: u32 = 3u;
const BINARY_POW: u32 = 4u;
const BINARY_ATAN2: u32 = 5u;
const BINARY_MAXIMUM: u32 = 6u;
const BINARY_MINIMUM: u32 = 7u;
const BINARY_EQ: u32 = 8u;
const BINARY_NE: u32 = 9u;
const BINARY_LT: u32 = 10u;
const BINARY_LE: u32 = 11u;
const BINARY_GT: u32 = 12u;
const BINARY_GE: u32 = 13u;
// kiln:end

struct Params {
    numel: u32,
    rank: u32,
    // the op's code (unary and binary kernels)
    op: u32,
    // bit i: operand i (inputs 0..2, output 3) is contiguous from its offset, so the
    // kernel skips its stride walk
    contiguous: u32,
    // the op's scalar parameters (unary kernel)
    p0: f32,
    p1: f32,
    _pad0: u32,
    _pad1: u32,
    // element offsets of inputs 0..2 (x, y, z) and of the output (w)
    offsets: vec4<u32>,
    shape: array<vec4<u32>, 2>,
    strides0: array<vec4<u32>, 2>,
    strides1: array<vec4<u32>, 2>,
    strides2: array<vec4<u32>, 2>,
    strides_out: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [params.shape] at params.strides0 from params.offsets.x
@group(0) @binding(1) var<storage, read> lhs: array<i32>;
// [params.shape] at params.strides1 from params.offsets.y
@group(0) @binding(2) var<storage, read> rhs: array<i32>;
// [params.numel], contiguous
@group(0) @binding(3) var<storage, read_write> output: array<i32>;

fn strided_offset(i: u32, strides: array<vec4<u32>, 2>, base: u32) -> u32 {
    var rem = i;
    var off = base;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let size = params.shape[d / 4][d % 4];
        off += (rem % size) * strides[d / 4][d % 4];
        rem = rem / size;
    }
    return off;
}

fn apply(op: u32, a: i32, b: i32) -> i32 {
    switch op {
        case BINARY_ADD: { return a + b; }
        case BINARY_SUB: { return a - b; }
        case BINARY_MUL: { return a * b; }
        // WGSL defines x / 0 and i32's least / -1 as x, which naga's GLSL output
        // leaves to the driver (GL's llvmpipe gave 0): dividing by 1 there says it.
        case BINARY_DIV: { return a / select(b, 1, b == 0 || (b == -1 && a == -2147483647 - 1)); }
        case BINARY_MAXIMUM: { return max(a, b); }
        case BINARY_MINIMUM: { return min(a, b); }
        case BINARY_EQ: { return select(0, 1, a == b); }
        case BINARY_NE: { return select(0, 1, a != b); }
        case BINARY_LT: { return select(0, 1, a < b); }
        case BINARY_LE: { return select(0, 1, a <= b); }
        case BINARY_GT: { return select(0, 1, a > b); }
        case BINARY_GE: { return select(0, 1, a >= b); }
        default: { return 0; }
    }
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.numel) { return; }
    var a = params.offsets.x + i;
    if ((params.contiguous & 1u) == 0u) { a = strided_offset(i, params.strides0, params.offsets.x); }
    var b = params.offsets.y + i;
    if ((params.contiguous & 2u) == 0u) { b = strided_offset(i, params.strides1, params.offsets.y); }
    output[i] = apply(params.op, lhs[a], rhs[b]);
}
