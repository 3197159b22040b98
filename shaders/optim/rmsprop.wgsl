// One fused RMSprop step per element (kiln-core's `RmsPropSpec`): the parameter,
// gradient and running average of squared gradients read once, the new parameter and
// average written once. Math in f32 whatever T is.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    n: u32,
    lr: f32,
    alpha: f32,
    eps: f32,
    weight_decay: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> param: array<T>;
@group(0) @binding(2) var<storage, read> grad: array<T>;
@group(0) @binding(3) var<storage, read> avg: array<T>;
@group(0) @binding(4) var<storage, read_write> param_out: array<T>;
@group(0) @binding(5) var<storage, read_write> avg_out: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.n) { return; }
    let p = f32(param[i]);
    let g = f32(grad[i]) + params.weight_decay * p;
    let a = params.alpha * f32(avg[i]) + (1.0 - params.alpha) * g * g;
    param_out[i] = T(p - params.lr * g / (sqrt(a) + params.eps));
    avg_out[i] = T(a);
}
