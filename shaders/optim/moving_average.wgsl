// One step of an exponential moving average per element (kiln-core's
// `MovingAverageSpec`): the average and the value read once, the new average written
// once. Math in f32 whatever T is.
// kiln:constants workgroup moving_average
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
fn moving_average(decay: f32, one_minus_decay: f32, average: f32, value: f32) -> f32 {
    return decay * average + one_minus_decay * value;
}
// kiln:end
alias T = f32;

struct Params {
    n: u32,
    decay: f32,
    one_minus_decay: f32,
    _pad0: u32,
}

// The update of one element, the value in the gradient's place; `ops/optim_group.rs`
// builds kernels that call it for several averages in one launch, each value times
// its update's scale. There is no state: the one passed is returned as it came.
struct Updated {
    param: f32,
    states: array<f32, 1>,
}

fn update(s: Params, p: f32, value: f32, state: array<f32, 1>) -> Updated {
    return Updated(moving_average(s.decay, s.one_minus_decay, p, value), state);
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> param: array<T>;
@group(0) @binding(2) var<storage, read> grad: array<T>;
@group(0) @binding(3) var<storage, read_write> param_out: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.n) { return; }
    param_out[i] = T(update(params, f32(param[i]), f32(grad[i]), array(0.0)).param);
}
