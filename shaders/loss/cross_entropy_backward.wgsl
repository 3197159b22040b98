// Gradient of cross_entropy.wgsl with respect to the logits, in one pass:
// dlogits[r, j] = dloss[r] * (softmax(row)[j] - target[j]), where the target
// distribution is (1 - s) * one_hot + s / classes. One workgroup per row.
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
// [rows], the gradient of each row's loss
@group(0) @binding(3) var<storage, read> dloss: array<T>;
// [rows, classes]
@group(0) @binding(4) var<storage, read_write> dlogits: array<T>;

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
    for (var j = lid; j < params.classes; j += WORKGROUP) { s += exp(f32(logits[base + j]) - row_max); }
    let sum_exp = workgroup_reduce(lid, s, false);
    let g = f32(dloss[row]);
    let target_class = u32(targets[row]);
    let spread = params.smoothing / f32(params.classes);
    for (var j = lid; j < params.classes; j += WORKGROUP) {
        let p = exp(f32(logits[base + j]) - row_max) / sum_exp;
        let t = select(0.0, 1.0 - params.smoothing, j == target_class) + spread;
        dlogits[base + j] = T(g * (p - t));
    }
}
