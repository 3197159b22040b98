// Roofline probe: eight independent vec4 FMA chains per invocation, no memory traffic
// inside the loop. `kiln bench` times it to estimate the adapter's peak f32 FMA rate.
// kiln:constants fma_probe
// Generated from kiln's op table and shader_constants.rs; do not edit.
const FMA_WORKGROUP: u32 = 64u;
// kiln:end
alias T = f32;

struct Params {
    iterations: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// One vec4 per invocation: the seed in, the sum of the chains out (so none is dead code).
@group(0) @binding(1) var<storage, read_write> data: array<vec4<T>>;

@compute @workgroup_size(FMA_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = vec4<f32>(data[gid.x]);
    let m = x * 0.999;
    var a0 = x;
    var a1 = x + 1.0;
    var a2 = x + 2.0;
    var a3 = x + 3.0;
    var a4 = x + 4.0;
    var a5 = x + 5.0;
    var a6 = x + 6.0;
    var a7 = x + 7.0;
    for (var i = 0u; i < params.iterations; i++) {
        a0 = fma(a0, m, x);
        a1 = fma(a1, m, x);
        a2 = fma(a2, m, x);
        a3 = fma(a3, m, x);
        a4 = fma(a4, m, x);
        a5 = fma(a5, m, x);
        a6 = fma(a6, m, x);
        a7 = fma(a7, m, x);
    }
    data[gid.x] = vec4<T>(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7);
}
