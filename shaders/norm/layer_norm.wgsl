// Fused layer norm over each row of a compact [rows, k] tensor, one workgroup per
// row: mean, then biased variance of the deviations, then scale and shift.
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
@group(0) @binding(1) var<storage, read> input: array<T>;
// [k]
@group(0) @binding(2) var<storage, read> weight: array<T>;
// [k]
@group(0) @binding(3) var<storage, read> bias: array<T>;
// [rows, k]
@group(0) @binding(4) var<storage, read_write> output: array<T>;

var<workgroup> partial: array<f32, 256>;

fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { partial[lid] += partial[lid + stride]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) { return; }
    let base = row * params.k;
    let k = f32(params.k);

    var s = 0.0;
    for (var i = lid; i < params.k; i += 256u) { s += f32(input[base + i]); }
    let mean = workgroup_sum(lid, s) / k;

    var q = 0.0;
    for (var i = lid; i < params.k; i += 256u) {
        let d = f32(input[base + i]) - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(lid, q) / k + params.eps);

    for (var i = lid; i < params.k; i += 256u) {
        let y = (f32(input[base + i]) - mean) * rstd * f32(weight[i]) + f32(bias[i]);
        output[base + i] = T(y);
    }
}
