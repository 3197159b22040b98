// Per-row cross-entropy of compact logits [rows, classes] against i32 class ids, with
// label smoothing s: logsumexp(row) - (1 - s) * row[target] - s * mean(row).
// One workgroup per row.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    classes: u32,
    smoothing: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, classes]
@group(0) @binding(1) var<storage, read> logits: array<T>;
// [rows], validated to lie in [0, classes)
@group(0) @binding(2) var<storage, read> targets: array<i32>;
// [rows]
@group(0) @binding(3) var<storage, read_write> losses: array<T>;

var<workgroup> partial: array<f32, WORKGROUP>;

fn workgroup_reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let other = partial[lid + stride];
            partial[lid] = select(partial[lid] + other, max(partial[lid], other), is_max);
        }
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
    let base = row * params.classes;
    var m = bitcast<f32>(0xff800000u);
    for (var j = lid; j < params.classes; j += WORKGROUP) { m = max(m, f32(logits[base + j])); }
    let row_max = workgroup_reduce(lid, m, true);
    var s = 0.0;
    var total = 0.0;
    for (var j = lid; j < params.classes; j += WORKGROUP) {
        let x = f32(logits[base + j]);
        s += exp(x - row_max);
        total += x;
    }
    let sum_exp = workgroup_reduce(lid, s, false);
    let sum_x = workgroup_reduce(lid, total, false);
    if (lid == 0u) {
        let lse = row_max + log(sum_exp);
        let target_logit = f32(logits[base + u32(targets[row])]);
        let mean = sum_x / f32(params.classes);
        losses[row] = T(lse - (1.0 - params.smoothing) * target_logit - params.smoothing * mean);
    }
}
