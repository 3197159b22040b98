// Reduces each row of a compact [rows, k] tensor, one workgroup per row.
// Op codes are the REDUCE_* constants from kiln's op table; math in f32.
// kiln:constants workgroup reduce_ops
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
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
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [rows]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

var<workgroup> partial: array<f32, WORKGROUP>;

// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn identity(op: u32) -> f32 {
    switch op {
        case REDUCE_MAX: { return bitcast<f32>(0xff800000u); }
        case REDUCE_MIN: { return bitcast<f32>(0x7f800000u); }
        case REDUCE_PROD: { return 1.0; }
        case REDUCE_SUM, REDUCE_MEAN, default: { return 0.0; }
    }
}

fn combine(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        // NaN if either is NaN, as in PyTorch (WGSL's max and min may drop it).
        case REDUCE_MAX: { return select(max(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        case REDUCE_MIN: { return select(min(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        case REDUCE_PROD: { return a * b; }
        case REDUCE_SUM, REDUCE_MEAN, default: { return a + b; }
    }
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) { return; }
    let base = row * params.k;
    var acc = identity(params.op);
    for (var i = lid; i < params.k; i += WORKGROUP) {
        acc = combine(params.op, acc, load(base + i));
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] = combine(params.op, partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var r = partial[0];
        if (params.op == REDUCE_MEAN) { r = r / f32(params.k); }
        store(row, r);
    }
}
