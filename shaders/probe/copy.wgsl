// Roofline probe: a streaming copy, one vec4 per invocation. `kiln bench` times it to
// estimate the bandwidth a kernel can reach (a buffer-to-buffer copy may run on a DMA
// engine, which on an NVIDIA H200 moved about a fifth of what the cores move).
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    // vec4s to copy
    count: u32,
    // invocations per row of workgroups (x groups * WORKGROUP)
    row: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> destination: array<vec4<T>>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * params.row;
    if (i < params.count) {
        destination[i] = source[i];
    }
}
