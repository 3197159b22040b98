// Numerically stable softmax (log = 0) or log-softmax (log = 1) over each row of a
// compact [rows, k] tensor, one workgroup per row: max, then sum of exp(x - max).
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    log: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [rows, k]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) { return; }
    let base = row * params.k;

    var m = bitcast<f32>(0xff800000u);
    for (var i = lid; i < params.k; i += WORKGROUP) { m = max(m, load(base + i)); }
    partial[lid] = m;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
        workgroupBarrier();
    }
    let row_max = partial[0];
    workgroupBarrier();

    var s = 0.0;
    for (var i = lid; i < params.k; i += WORKGROUP) { s += exp(load(base + i) - row_max); }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { partial[lid] += partial[lid + stride]; }
        workgroupBarrier();
    }
    let total = partial[0];

    for (var i = lid; i < params.k; i += WORKGROUP) {
        let shifted = load(base + i) - row_max;
        if (params.log == 1u) {
            store(base + i, shifted - log(total));
        } else {
            store(base + i, exp(shifted) / total);
        }
    }
}
