// Fused layer norm over each row of a compact [rows, k] tensor, one workgroup per
// row: mean, then biased variance of the deviations, then scale and shift.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [k]
@group(0) @binding(2) var<storage, read> weight: array<T>;
// [k]
@group(0) @binding(3) var<storage, read> bias: array<T>;
// [rows, k]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(4) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

var<workgroup> partial: array<f32, WORKGROUP>;

fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { partial[lid] += partial[lid + stride]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) { return; }
    let base = row * params.k;
    let k = f32(params.k);

    var s = 0.0;
    for (var i = lid; i < params.k; i += WORKGROUP) { s += load(base + i); }
    let mean = workgroup_sum(lid, s) / k;

    var q = 0.0;
    for (var i = lid; i < params.k; i += WORKGROUP) {
        let d = load(base + i) - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(lid, q) / k + params.eps);

    for (var i = lid; i < params.k; i += WORKGROUP) {
        let y = (load(base + i) - mean) * rstd * f32(weight[i]) + f32(bias[i]);
        store(base + i, y);
    }
}
