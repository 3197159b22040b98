// Fills a buffer with one 32-bit pattern: `full`, and the NaN poison tests write into
// outputs before a kernel runs so that an element the kernel skips is caught.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end

struct Params {
    // number of 32-bit words to write
    words: u32,
    pattern: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [params.words] raw words, whatever the tensor's dtype
@group(0) @binding(1) var<storage, read_write> output: array<u32>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.words) { return; }
    output[i] = params.pattern;
}
