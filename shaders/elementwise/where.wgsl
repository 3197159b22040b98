// where(cond, on_true, on_false): cond != 0 picks on_true. All three share one
// broadcast shape; C is the mask's dtype, T the values'.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;
alias C = f32;

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
@group(0) @binding(1) var<storage, read> cond: array<C>;
// [params.shape] at params.strides1 from params.offsets.y
@group(0) @binding(2) var<storage, read> on_true: array<T>;
// [params.shape] at params.strides2 from params.offsets.z
@group(0) @binding(3) var<storage, read> on_false: array<T>;
// [params.numel], contiguous
@group(0) @binding(4) var<storage, read_write> output: array<T>;

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

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.numel) { return; }
    var c = params.offsets.x + i;
    if ((params.contiguous & 1u) == 0u) { c = strided_offset(i, params.strides0, params.offsets.x); }
    var t = params.offsets.y + i;
    if ((params.contiguous & 2u) == 0u) { t = strided_offset(i, params.strides1, params.offsets.y); }
    var f = params.offsets.z + i;
    if ((params.contiguous & 4u) == 0u) { f = strided_offset(i, params.strides2, params.offsets.z); }
    // Zero picks on_false, anything else (NaN too) on_true: `cond != 0` said NaN was
    // zero on lavapipe, WGSL letting implementations assume no NaN.
    output[i] = select(on_true[t], on_false[f], cond[c] == C(0));
}
