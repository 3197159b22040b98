// Elementwise ops of two inputs of one broadcast shape (broadcast dims have stride 0).
// Op codes are the BINARY_* constants from kiln's op table; comparisons give 1 or 0.
// Math in f32.
// kiln:constants workgroup vec4_elementwise binary_ops real_edges
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const VEC4_WORKGROUP: u32 = 64u;
const VEC4_PER_INVOCATION: u32 = 4u;
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
// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
fn is_inf(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}
fn sign_bit(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x80000000u) != 0u;
}
// Neither is NaN: a comparison with NaN is false, but for `!=`.
fn ordered(a: f32, b: f32) -> bool {
    return !(is_nan(a) || is_nan(b));
}
fn pow_real(x: f32, p: f32) -> f32 {
    // 1 even against NaN, as C's pow.
    if (p == 0.0 || x == 1.0) { return 1.0; }
    if (is_nan(x) || is_nan(p)) { return bitcast<f32>(0x7fc00000u); }
    let inf = bitcast<f32>(0x7f800000u);
    if (is_inf(p)) {
        if (abs(x) == 1.0) { return 1.0; }
        return select(0.0, inf, (abs(x) > 1.0) == (p > 0.0));
    }
    let is_int = floor(p) == p;
    let odd = is_int && (abs(p) % 2.0) == 1.0;
    // A zero or infinite base: 0 or inf by the signs, negative for a negative base
    // to an odd power.
    if (x == 0.0 || is_inf(x)) {
        let r = select(0.0, inf, (x == 0.0) == (p < 0.0));
        return select(r, -r, odd && sign_bit(x));
    }
    if (x > 0.0) { return pow(x, p); }
    if (!is_int) { return bitcast<f32>(0x7fc00000u); }
    let r = pow(-x, p);
    return select(r, -r, odd);
}
fn atan2_real(y: f32, x: f32) -> f32 {
    if (is_nan(y) || is_nan(x)) { return bitcast<f32>(0x7fc00000u); }
    // Both zero: 0 or pi by the sign of x, with the sign of y.
    if (y == 0.0 && x == 0.0) {
        let r = select(0.0, 3.1415927, sign_bit(x));
        return select(r, -r, sign_bit(y));
    }
    return atan2(y, x);
}
// NaN through (WGSL leaves it to the driver: GL's llvmpipe gave -1), and +-1 past 15
// (some drivers compute tanh as a ratio of exponentials that overflows to NaN).
fn tanh_real(x: f32) -> f32 {
    if (is_nan(x)) { return x; }
    return select(tanh(x), sign(x), abs(x) > 15.0);
}
// kiln:end
alias T = f32;

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
@group(0) @binding(1) var<storage, read> lhs: array<T>;
// [params.shape] at params.strides1 from params.offsets.y
@group(0) @binding(2) var<storage, read> rhs: array<T>;
// [params.numel], contiguous
@group(0) @binding(3) var<storage, read_write> output: array<T>;
// The same buffers seen as vec4s, for `main_vec4`.
@group(0) @binding(1) var<storage, read> lhs4: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> rhs4: array<vec4<T>>;
@group(0) @binding(3) var<storage, read_write> output4: array<vec4<T>>;

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

// kiln:formulas (fused kernels include the functions up to `kiln:formulas end`,
// and `real_edges`' as these do)
fn binary_op(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case BINARY_ADD: { return a + b; }
        case BINARY_SUB: { return a - b; }
        case BINARY_MUL: { return a * b; }
        case BINARY_DIV: { return a / b; }
        case BINARY_POW: { return pow_real(a, b); }
        case BINARY_ATAN2: { return atan2_real(a, b); }
        // NaN if either is NaN, as in PyTorch (WGSL's max and min may drop it).
        case BINARY_MAXIMUM: { return select(max(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        case BINARY_MINIMUM: { return select(min(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        // NaN by its bits (`ordered`), as WGSL may assume no NaN: lavapipe's `!=` said
        // NaN equals everything.
        case BINARY_EQ: { return select(0.0, 1.0, a == b && ordered(a, b)); }
        case BINARY_NE: { return select(1.0, 0.0, a == b && ordered(a, b)); }
        case BINARY_LT: { return select(0.0, 1.0, a < b && ordered(a, b)); }
        case BINARY_LE: { return select(0.0, 1.0, a <= b && ordered(a, b)); }
        case BINARY_GT: { return select(0.0, 1.0, a > b && ordered(a, b)); }
        case BINARY_GE: { return select(0.0, 1.0, a >= b && ordered(a, b)); }
        default: { return bitcast<f32>(0x7fc00000u); }
    }
}
// kiln:formulas end

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.numel) { return; }
    var a = params.offsets.x + i;
    if ((params.contiguous & 1u) == 0u) { a = strided_offset(i, params.strides0, params.offsets.x); }
    var b = params.offsets.y + i;
    if ((params.contiguous & 2u) == 0u) { b = strided_offset(i, params.strides1, params.offsets.y); }
    output[i] = T(binary_op(params.op, f32(lhs[a]), f32(rhs[b])));
}

// Both inputs contiguous, offsets and numel multiples of 4: four vec4s per invocation.
// Wide loads matter most on software adapters, where each load is a loop over SIMD lanes.
@compute @workgroup_size(VEC4_WORKGROUP)
fn main_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = ((wid.y * nwg.x + wid.x) * VEC4_WORKGROUP + lid) * VEC4_PER_INVOCATION;
    let n4 = params.numel / 4u;
    let a0 = params.offsets.x / 4u + first;
    let b0 = params.offsets.y / 4u + first;
    let op = params.op;
    for (var j = 0u; j < VEC4_PER_INVOCATION; j++) {
        if (first + j < n4) {
            let x = vec4<f32>(lhs4[a0 + j]);
            let y = vec4<f32>(rhs4[b0 + j]);
            var r: vec4<f32>;
            switch op {
                case BINARY_ADD: { r = x + y; }
                case BINARY_SUB: { r = x - y; }
                case BINARY_MUL: { r = x * y; }
                case BINARY_DIV: { r = x / y; }
                default: { r = vec4<f32>(binary_op(op, x.x, y.x), binary_op(op, x.y, y.y), binary_op(op, x.z, y.z), binary_op(op, x.w, y.w)); }
            }
            output4[first + j] = vec4<T>(r);
        }
    }
}
