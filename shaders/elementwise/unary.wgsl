// Elementwise ops of one input, read through any strides, written contiguously.
// Op codes are the UNARY_* constants from kiln's op table; math is in f32 whatever T is.
// kiln:constants workgroup vec4_elementwise unary_ops real_edges
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const VEC4_WORKGROUP: u32 = 64u;
const VEC4_PER_INVOCATION: u32 = 4u;
const UNARY_NEG: u32 = 0u;
const UNARY_ABS: u32 = 1u;
const UNARY_EXP: u32 = 2u;
const UNARY_LOG: u32 = 3u;
const UNARY_SQRT: u32 = 4u;
const UNARY_RSQRT: u32 = 5u;
const UNARY_SIN: u32 = 6u;
const UNARY_COS: u32 = 7u;
const UNARY_TANH: u32 = 8u;
const UNARY_SIGMOID: u32 = 9u;
const UNARY_RELU: u32 = 10u;
const UNARY_LEAKY_RELU: u32 = 11u;
const UNARY_GELU_TANH: u32 = 12u;
const UNARY_GELU: u32 = 13u;
const UNARY_GELU_DERIVATIVE: u32 = 14u;
const UNARY_SILU: u32 = 15u;
const UNARY_CLAMP: u32 = 16u;
const UNARY_ADD_SCALAR: u32 = 17u;
const UNARY_MUL_SCALAR: u32 = 18u;
const UNARY_POW_SCALAR: u32 = 19u;
const UNARY_RECIP: u32 = 20u;
const UNARY_SQUARE: u32 = 21u;
const UNARY_ERF: u32 = 22u;
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
@group(0) @binding(1) var<storage, read> input: array<T>;
// [params.numel], contiguous
@group(0) @binding(2) var<storage, read_write> output: array<T>;
// The same buffers seen as vec4s, for `main_vec4`.
@group(0) @binding(1) var<storage, read> input4: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> output4: array<vec4<T>>;

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

// kiln:formulas (fused kernels include the functions up to `kiln:formulas end`)
fn erf_approx(x: f32) -> f32 {
    // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7.
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    let y = 1.0 - poly * exp(-x * x);
    return select(-y, y, x >= 0.0);
}

fn unary_op(op: u32, x: f32, p0: f32, p1: f32) -> f32 {
    switch op {
        case UNARY_NEG: { return -x; }
        case UNARY_ABS: { return abs(x); }
        case UNARY_EXP: { return exp(x); }
        case UNARY_LOG: { return log(x); }
        case UNARY_SQRT: { return sqrt(x); }
        case UNARY_RSQRT: { return 1.0 / sqrt(x); }
        case UNARY_SIN: { return sin(x); }
        case UNARY_COS: { return cos(x); }
        case UNARY_TANH: { return tanh_real(x); }
        case UNARY_SIGMOID: { return 1.0 / (1.0 + exp(-x)); }
        // NaN in, NaN out, as in PyTorch (WGSL's max and min may drop it).
        case UNARY_RELU: { return select(max(x, 0.0), x, is_nan(x)); }
        case UNARY_LEAKY_RELU: { return select(p0 * x, x, x >= 0.0); }
        case UNARY_GELU_TANH: { return 0.5 * x * (1.0 + tanh_real(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
        case UNARY_GELU: { return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476)); }
        // Phi(x) + x phi(x); phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
        case UNARY_GELU_DERIVATIVE: { return 0.5 * (1.0 + erf_approx(x * 0.7071067811865476)) + x * exp(-0.5 * x * x) * 0.3989422804014327; }
        case UNARY_SILU: { return x / (1.0 + exp(-x)); }
        case UNARY_CLAMP: { return select(min(max(x, p0), p1), x, is_nan(x)); }
        case UNARY_ADD_SCALAR: { return x + p0; }
        case UNARY_MUL_SCALAR: { return x * p0; }
        case UNARY_POW_SCALAR: { return pow_real(x, p0); }
        case UNARY_RECIP: { return 1.0 / x; }
        case UNARY_SQUARE: { return x * x; }
        case UNARY_ERF: { return erf_approx(x); }
        default: { return bitcast<f32>(0x7fc00000u); }
    }
}
// kiln:formulas end

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.numel) { return; }
    var src = params.offsets.x + i;
    if ((params.contiguous & 1u) == 0u) { src = strided_offset(i, params.strides0, params.offsets.x); }
    output[i] = T(unary_op(params.op, f32(input[src]), params.p0, params.p1));
}

fn apply4(x: vec4<T>) -> vec4<T> {
    let v = vec4<f32>(x);
    let op = params.op;
    let p0 = params.p0;
    let p1 = params.p1;
    return vec4<T>(vec4<f32>(unary_op(op, v.x, p0, p1), unary_op(op, v.y, p0, p1), unary_op(op, v.z, p0, p1), unary_op(op, v.w, p0, p1)));
}

// Contiguous input, offset and numel multiples of 4: four vec4s per invocation. Wide
// loads matter most on software adapters, where each load is a loop over SIMD lanes.
@compute @workgroup_size(VEC4_WORKGROUP)
fn main_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = ((wid.y * nwg.x + wid.x) * VEC4_WORKGROUP + lid) * VEC4_PER_INVOCATION;
    let n4 = params.numel / 4u;
    let base = params.offsets.x / 4u;
    for (var j = 0u; j < VEC4_PER_INVOCATION; j++) {
        let v = first + j;
        if (v < n4) { output4[v] = apply4(input4[base + v]); }
    }
}
