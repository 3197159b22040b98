// One fused Adam (or AdamW) update per element: the parameter, its gradient and both
// moments are read once and the three new tensors written once, where the unfused
// update took about a dozen kernels per parameter. The formula is kiln-core's
// `AdamSpec`; math in f32 whatever T is.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    n: u32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    step_size: f32,
    inv_correction2: f32,
    coupled_decay: f32,
    decay_factor: f32,
}

// The update of one element; `ops/optim_group.rs` builds kernels that call it for
// several parameters in one launch.
struct Updated {
    param: f32,
    states: array<f32, 2>,
}

fn update(s: Params, p: f32, grad: f32, state: array<f32, 2>) -> Updated {
    let g = grad + s.coupled_decay * p;
    let m1 = state[0] + s.one_minus_beta1 * (g - state[0]);
    let v1 = state[1] + s.one_minus_beta2 * (g * g - state[1]);
    let denom = sqrt(v1 * s.inv_correction2) + s.eps;
    return Updated(p * s.decay_factor - s.step_size * m1 / denom, array(m1, v1));
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> param: array<T>;
@group(0) @binding(2) var<storage, read> grad: array<T>;
@group(0) @binding(3) var<storage, read> m: array<T>;
@group(0) @binding(4) var<storage, read> v: array<T>;
@group(0) @binding(5) var<storage, read_write> param_out: array<T>;
@group(0) @binding(6) var<storage, read_write> m_out: array<T>;
@group(0) @binding(7) var<storage, read_write> v_out: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.n) { return; }
    let r = update(params, f32(param[i]), f32(grad[i]), array(f32(m[i]), f32(v[i])));
    param_out[i] = T(r.param);
    m_out[i] = T(r.states[0]);
    v_out[i] = T(r.states[1]);
}
