// out[o, j, i] = input[o, index[o, j, i], i] over a compact [outer, in_dim, inner]
// input. The index is read through strides so that a 1-D index_select (strides
// 0, 1, 0) uses the same kernel. Indices were range-checked before dispatch; an
// out-of-range one still never reads outside the tensor (it yields zero).
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    outer: u32,
    in_dim: u32,
    out_dim: u32,
    inner: u32,
    // index strides for (o, j, i); w unused
    index_strides: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [outer, in_dim, inner]
@group(0) @binding(1) var<storage, read> input: array<T>;
// [outer, out_dim, inner] at params.index_strides
@group(0) @binding(2) var<storage, read> index: array<i32>;
// [outer, out_dim, inner]; one thread per element
@group(0) @binding(3) var<storage, read_write> output: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (e >= params.outer * params.out_dim * params.inner) { return; }
    let i = e % params.inner;
    let j = (e / params.inner) % params.out_dim;
    let o = e / (params.inner * params.out_dim);
    let s = params.index_strides;
    let idx = index[o * s.x + j * s.y + i * s.z];
    var v = T(0);
    if (idx >= 0 && u32(idx) < params.in_dim) {
        v = input[(o * params.in_dim + u32(idx)) * params.inner + i];
    }
    output[e] = v;
}
