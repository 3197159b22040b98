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
    one_minus_alpha: f32,
    eps: f32,
    weight_decay: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The update of one element; `ops/optim_group.rs` builds kernels that call it for
// several parameters in one launch.
struct Updated {
    param: f32,
    states: array<f32, 1>,
}

fn update(s: Params, p: f32, grad: f32, state: array<f32, 1>) -> Updated {
    let g = grad + s.weight_decay * p;
    let a = state[0] + s.one_minus_alpha * (g * g - state[0]);
    return Updated(p - s.lr * g / (sqrt(a) + s.eps), array(a));
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
    let r = update(params, f32(param[i]), f32(grad[i]), array(f32(avg[i])));
    param_out[i] = T(r.param);
    avg_out[i] = T(r.states[0]);
}
