// out = input; out[o, index[o, j, i], i] += src[o, j, i] for j in first..first +
// count. One thread per output element gathers its sources in ascending j:
// deterministic, no float atomics. Many sources take several launches, each adding
// its run to the last's output (the same additions in the same order).
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    outer: u32,
    dim: u32,
    src_dim: u32,
    inner: u32,
    first: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
    // where the index is read: outer, source and inner strides
    index_strides: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [outer, dim, inner]
@group(0) @binding(1) var<storage, read> input: array<T>;
// [outer, src_dim, inner] at params.index_strides
@group(0) @binding(2) var<storage, read> index: array<i32>;
// [outer, src_dim, inner]
@group(0) @binding(3) var<storage, read> src: array<T>;
// [outer, dim, inner]; one thread per element
@group(0) @binding(4) var<storage, read_write> output: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (e >= params.outer * params.dim * params.inner) { return; }
    let i = e % params.inner;
    let t = i32((e / params.inner) % params.dim);
    let o = e / (params.inner * params.dim);
    var acc = f32(input[e]);
    let s = params.index_strides;
    for (var j = params.first; j < params.first + params.count; j++) {
        let at = (o * params.src_dim + j) * params.inner + i;
        if (index[o * s.x + j * s.y + i * s.z] == t) { acc += f32(src[at]); }
    }
    output[e] = T(acc);
}
