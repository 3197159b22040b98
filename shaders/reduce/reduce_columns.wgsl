// Reduces the middle dim of a compact [outer, k, inner] tensor (inner > 1), one
// invocation per output and segment: neighbouring invocations read neighbouring
// elements, so the loads coalesce on a GPU, and no transposed copy is needed first.
// With several segments each invocation reduces `segment` of the k rows, writing
// [outer, segments, inner] partials that a second dispatch (one segment) reduces: few
// outputs over a long k would otherwise leave most of a GPU idle. Sums run in chunks of
// 16 added into a total, which keeps the rounding error near that of a tree.
// Op codes are the REDUCE_* constants from kiln's op table; math in f32.
// kiln:constants serial_workgroup reduce_ops
// Generated from kiln's op table and shader_constants.rs; do not edit.
const SERIAL_WORKGROUP: u32 = 64u;
const REDUCE_SUM: u32 = 0u;
const REDUCE_MEAN: u32 = 1u;
const REDUCE_MAX: u32 = 2u;
const REDUCE_MIN: u32 = 3u;
const REDUCE_PROD: u32 = 4u;
const REDUCE_ARGMAX: u32 = 5u;
const REDUCE_ARGMIN: u32 = 6u;
// kiln:end
alias T = f32;

struct Params {
    outer: u32,
    k: u32,
    inner: u32,
    op: u32,
    // k is split into `segments` runs of `segment` rows (the last may be shorter)
    segments: u32,
    segment: u32,
    // what a mean divides by: the k of the whole reduction, not of this pass
    count: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [outer, k, inner]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [outer, segments, inner]
@group(0) @binding(2) var<storage, read_write> output: array<T>;

const CHUNK: u32 = 16u;

@compute @workgroup_size(SERIAL_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = gid.x + gid.y * groups.x * SERIAL_WORKGROUP;
    if (e >= params.outer * params.segments * params.inner) { return; }
    let o = e / (params.segments * params.inner);
    let s = e / params.inner % params.segments;
    let i = e % params.inner;
    let stride = params.inner;
    let first = s * params.segment;
    let rows = select(0u, min(params.segment, params.k - first), first < params.k);
    var at = (o * params.k + first) * stride + i;
    var r: f32;
    switch params.op {
        // WGSL's max and min may drop a NaN: the largest magnitude's bits are kept
        // beside them, and above infinity's they are a NaN, which the result becomes.
        case REDUCE_MAX: {
            r = bitcast<f32>(0xff800000u);
            var bits = 0u;
            for (var j = 0u; j < rows; j++) {
                let x = load(at);
                r = max(r, x);
                bits = max(bits, bitcast<u32>(x) & 0x7fffffffu);
                at += stride;
            }
            if (bits > 0x7f800000u) { r = bitcast<f32>(0x7fc00000u); }
        }
        case REDUCE_MIN: {
            r = bitcast<f32>(0x7f800000u);
            var bits = 0u;
            for (var j = 0u; j < rows; j++) {
                let x = load(at);
                r = min(r, x);
                bits = max(bits, bitcast<u32>(x) & 0x7fffffffu);
                at += stride;
            }
            if (bits > 0x7f800000u) { r = bitcast<f32>(0x7fc00000u); }
        }
        case REDUCE_PROD: {
            r = 1.0;
            for (var j = 0u; j < rows; j++) { r *= load(at); at += stride; }
        }
        case REDUCE_SUM, REDUCE_MEAN, default: {
            r = 0.0;
            for (var j0 = 0u; j0 < rows; j0 += CHUNK) {
                var part = 0.0;
                for (var j = j0; j < min(j0 + CHUNK, rows); j++) { part += load(at); at += stride; }
                r += part;
            }
            if (params.op == REDUCE_MEAN) { r = r / f32(params.count); }
        }
    }
    output[e] = T(r);
}
