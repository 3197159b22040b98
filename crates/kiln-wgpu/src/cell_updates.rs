//! The recurrent cells' updates in WGSL, one text for each cell kernel
//! (`shaders/rnn/lstm_cell.wgsl` and `gru_cell.wgsl`, constants groups `lstm_update`
//! and `gru_update`) and the matmul's recurrent builds (`MatmulRhs::GateColumns`), so
//! that a step fused into its product computes what the cell kernel does, to the bit.

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
    let g = tanh(z.z);
    let o = sigmoid(z.w);
    let c1 = f * c + i * g;
    return vec2<f32>(o * tanh(c1), c1);
}
";

/// From the input and hidden projections' gates `r | z | n` (PyTorch's order, biases
/// included) and the hidden state `h`, `h'`.
const GRU_UPDATE: &str = "\
// The new h from the input and hidden projections' gates r | z | n and the state.
fn gru_update(x: vec3<f32>, hp: vec3<f32>, h: f32) -> f32 {
    let r = sigmoid(x.x + hp.x);
    let z = sigmoid(x.y + hp.y);
    let n = tanh(x.z + r * hp.z);
    return (1.0 - z) * n + z * h;
}
";

/// The functions of constants group `name`, or `None` for another group.
pub(crate) fn group(name: &str) -> Option<String> {
    match name {
        "lstm_update" => Some(format!("{SIGMOID}{LSTM_UPDATE}")),
        "gru_update" => Some(format!("{SIGMOID}{GRU_UPDATE}")),
        _ => None,
    }
}

/// Every cell's update, for a build that may compute either.
pub(crate) fn all() -> String {
    format!("{SIGMOID}{LSTM_UPDATE}{GRU_UPDATE}")
}
