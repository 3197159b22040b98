// Philox4x32-10 draws, bit-identical to kiln_core::philox on the CPU. Element i reads
// lane i % 4 of block i / 4 under key = seed, counter = (block, 0, stream).
// Mode 0: uniform [0, 1) from the top 24 bits. Mode 1: bernoulli, 1 when the top 24
// bits fall below params.threshold.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    numel: u32,
    mode: u32,
    threshold: u32,
    _pad: u32,
    // seed low, seed high, stream low, stream high
    key: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [numel]
@group(0) @binding(1) var<storage, read_write> output: array<T>;

// Full 32x32 -> 64-bit product as (low, high), from 16-bit halves (WGSL has no mulhi).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let lo = (ll & 0xffffu) | (mid << 16u);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

fn philox(key_in: vec2<u32>, counter: vec4<u32>) -> vec4<u32> {
    var k = key_in;
    var c = counter;
    for (var round = 0u; round < 10u; round++) {
        let p0 = mul_wide(0xD2511F53u, c.x);
        let p1 = mul_wide(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.y ^ c.y ^ k.x, p1.x, p0.y ^ c.w ^ k.y, p0.x);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.numel) { return; }
    let block = philox(params.key.xy, vec4<u32>(i / 4u, 0u, params.key.z, params.key.w));
    let word = block[i % 4u] >> 8u;
    var v: f32;
    if (params.mode == 0u) {
        v = f32(word) * (1.0 / 16777216.0);
    } else {
        v = select(0.0, 1.0, word < params.threshold);
    }
    output[i] = T(v);
}
