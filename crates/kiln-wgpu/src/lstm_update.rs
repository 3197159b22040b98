//! The LSTM cell's update in WGSL, one text for the cell kernel
//! (`shaders/rnn/lstm_cell.wgsl`, constants group `lstm_update`) and the matmul's LSTM
//! build (`MatmulRhs::GateColumns`), so that a step fused into its product computes
//! what the cell kernel does, to the bit.

/// `sigmoid`, and `lstm_update`: from the gate pre-activations `i | f | g | o` (in
/// PyTorch's order) and the cell state `c`, `[h, c']`.
pub(crate) const LSTM_UPDATE: &str = "\
fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}
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
