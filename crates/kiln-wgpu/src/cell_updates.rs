//! The recurrent cells' updates and their gradients in WGSL, one text for each cell
//! kernel (`shaders/rnn/`, constants groups `lstm_update`, `gru_update`,
//! `lstm_gradient` and `gru_gradient`) and the matmul's recurrent builds
//! (`MatmulRhs::GateColumns` forward, `ops::recurrent_backward` back), so that a step
//! fused into its product computes what the cell kernel does, to the bit.

use crate::shader_constants::tanh_real;

const SIGMOID: &str = "\
fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}
";

/// From the gate pre-activations `i | f | g | o` (PyTorch's order) and the cell state
/// `c`, `[h, c']`.
const LSTM_UPDATE: &str = "\
// The new [h, c'] from the gates' pre-activations i | f | g | o and the cell state.
fn lstm_update(z: vec4<f32>, c: f32) -> vec2<f32> {
    let i = sigmoid(z.x);
    let f = sigmoid(z.y);
    let g = tanh_real(z.z);
    let o = sigmoid(z.w);
    let c1 = f * c + i * g;
    return vec2<f32>(o * tanh_real(c1), c1);
}
";

/// From the input and hidden projections' gates `r | z | n` (PyTorch's order, biases
/// included) and the hidden state `h`, `h'`.
const GRU_UPDATE: &str = "\
// The new h from the input and hidden projections' gates r | z | n and the state.
fn gru_update(x: vec3<f32>, hp: vec3<f32>, h: f32) -> f32 {
    let r = sigmoid(x.x + hp.x);
    let z = sigmoid(x.y + hp.y);
    let n = tanh_real(x.z + r * hp.z);
    return (1.0 - z) * n + z * h;
}
";

/// From the gate pre-activations, the cell state `c` and the gradients of `h` and `c'`,
/// the gradients of the four pre-activations and of `c`.
const LSTM_GRADIENT: &str = "\
struct LstmGradient {
    dz: vec4<f32>,
    dc: f32,
}
// The gradients of the gates' pre-activations i | f | g | o and of the cell state c,
// from those of h and c'.
fn lstm_gradient(z: vec4<f32>, c: f32, dh: f32, dc1: f32) -> LstmGradient {
    let i = sigmoid(z.x);
    let f = sigmoid(z.y);
    let g = tanh_real(z.z);
    let o = sigmoid(z.w);
    let tc = tanh_real(f * c + i * g);
    // Through h = o * tanh(c') into c', plus c''s own upstream gradient.
    let d = dc1 + dh * o * (1.0 - tc * tc);
    let gates = vec4<f32>(d * g * i * (1.0 - i), d * c * f * (1.0 - f), d * i * (1.0 - g * g), dh * tc * o * (1.0 - o));
    return LstmGradient(gates, d * f);
}
";

/// From the input and hidden projections' gates, the state `h` and the gradient of
/// `h'`, the gradients of both projections and of `h`.
const GRU_GRADIENT: &str = "\
struct GruGradient {
    dx: vec3<f32>,
    dhp: vec3<f32>,
    dh: f32,
}
// The gradients of the input and hidden projections' gates r | z | n and of the state
// h, from that of h'.
fn gru_gradient(x: vec3<f32>, hp: vec3<f32>, h: f32, dh1: f32) -> GruGradient {
    let r = sigmoid(x.x + hp.x);
    let z = sigmoid(x.y + hp.y);
    let n = tanh_real(x.z + r * hp.z);
    let gn = dh1 * (1.0 - z) * (1.0 - n * n);
    let gz = dh1 * (h - n) * z * (1.0 - z);
    let gr = gn * hp.z * r * (1.0 - r);
    return GruGradient(vec3<f32>(gr, gz, gn), vec3<f32>(gr, gz, gn * r), dh1 * z);
}
";

/// The functions of constants group `name`, or `None` for another group.
pub(crate) fn group(name: &str) -> Option<String> {
    let cell = match name {
        "lstm_update" => LSTM_UPDATE,
        "gru_update" => GRU_UPDATE,
        "lstm_gradient" => LSTM_GRADIENT,
        "gru_gradient" => GRU_GRADIENT,
        _ => return None,
    };
    Some(format!("{}{SIGMOID}{cell}", tanh_real()))
}

/// Every cell's update, for a build that may compute either.
pub(crate) fn all() -> String {
    format!("{}{SIGMOID}{LSTM_UPDATE}{GRU_UPDATE}", tanh_real())
}
