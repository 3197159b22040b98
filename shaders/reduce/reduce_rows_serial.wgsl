// Reduces each row of a compact [rows, k] tensor, k a multiple of 4, one invocation
// per row reading vec4s in order. The variant for adapters that run on the CPU
// (lavapipe): there a workgroup barrier is a coroutine switch and each storage load a
// loop over the SIMD lanes, so one serial pass per row with wide loads is faster than
// a tree in workgroup memory. Op codes are the REDUCE_* constants from kiln's op table.
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
    rows: u32,
    k: u32,
    op: u32,
    // one invocation per row here: unused (the workgroup kernel's invocations per row)
    lanes: u32,
    // whole rows here, never cut into parts: 1 and k (reduce.wgsl's parts)
    parts: u32,
    part_len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k] as vec4s
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<vec4<T>>;
fn load4(i: u32) -> vec4<f32> { return vec4<f32>(input[i]); }
// kiln:load end
// [rows]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

const CHUNK: u32 = 16u;

@compute @workgroup_size(SERIAL_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * SERIAL_WORKGROUP;
    if (row >= params.rows) { return; }
    let k4 = params.k / 4u;
    let base = row * k4;
    var r: f32;
    switch params.op {
        // WGSL's max and min may drop a NaN: the largest magnitude's bits are kept
        // beside them, and above infinity's they are a NaN, which the result becomes.
        case REDUCE_MAX: {
            var acc = vec4<f32>(bitcast<f32>(0xff800000u));
            var bits = vec4<u32>();
            for (var i = 0u; i < k4; i++) {
                let v = load4(base + i);
                acc = max(acc, v);
                bits = max(bits, bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu));
            }
            r = max(max(acc.x, acc.y), max(acc.z, acc.w));
            if (any(bits > vec4<u32>(0x7f800000u))) { r = bitcast<f32>(0x7fc00000u); }
        }
        case REDUCE_MIN: {
            var acc = vec4<f32>(bitcast<f32>(0x7f800000u));
            var bits = vec4<u32>();
            for (var i = 0u; i < k4; i++) {
                let v = load4(base + i);
                acc = min(acc, v);
                bits = max(bits, bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu));
            }
            r = min(min(acc.x, acc.y), min(acc.z, acc.w));
            if (any(bits > vec4<u32>(0x7f800000u))) { r = bitcast<f32>(0x7fc00000u); }
        }
        case REDUCE_PROD: {
            var acc = vec4<f32>(1.0);
            for (var i = 0u; i < k4; i++) { acc *= load4(base + i); }
            r = acc.x * acc.y * acc.z * acc.w;
        }
        case REDUCE_SUM, REDUCE_MEAN, default: {
            // Chunks of 16 summed into a total: the rounding error stays near a tree's
            // rather than growing with k as one running sum's does.
            var acc = vec4<f32>();
            for (var i0 = 0u; i0 < k4; i0 += CHUNK) {
                var part = vec4<f32>();
                for (var i = i0; i < min(i0 + CHUNK, k4); i++) { part += load4(base + i); }
                acc += part;
            }
            r = (acc.x + acc.y) + (acc.z + acc.w);
            if (params.op == REDUCE_MEAN) { r = r / f32(params.k); }
        }
    }
    store(row, r);
}
