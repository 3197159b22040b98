// Dtype conversion from S to D, read through any strides, written contiguously.
// Float to integer truncates towards zero and saturates; NaN becomes 0 (`to_i32`).
// kiln:constants workgroup to_i32
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// Towards zero, saturating at i32's own bounds; NaN (by its bits) to 0.
fn to_i32(x: f32) -> i32 {
    if ((bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u) { return 0; }
    if (x >= 2147483648.0) { return 2147483647; }
    return i32(max(x, -2147483648.0));
}
// kiln:end
alias S = f32;
alias D = f32;

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
@group(0) @binding(1) var<storage, read> input: array<S>;
// [params.numel], contiguous
@group(0) @binding(2) var<storage, read_write> output: array<D>;

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

fn convert(x: S) -> D {
    // D is i32 where a half truncates to 0 (`to_i32`: as the CPU converts).
    if (D(0.5) == D(0.0)) { return D(to_i32(f32(x))); }
    return D(x);
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.numel) { return; }
    var s = params.offsets.x + i;
    if ((params.contiguous & 1u) == 0u) { s = strided_offset(i, params.strides0, params.offsets.x); }
    output[i] = convert(input[s]);
}
