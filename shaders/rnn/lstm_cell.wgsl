// One fused LSTM step, one invocation per (row, unit): reads the four gate
// pre-activations and the cell state, writes [h | c'] (kiln-core's `LstmCellSpec`),
// where the step was ten elementwise kernels. Math in f32 whatever T is.
// kiln:constants workgroup lstm_update
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
// NaN through (WGSL leaves it to the driver: GL's llvmpipe gave -1), and +-1 past 15
// (some drivers compute tanh as a ratio of exponentials that overflows to NaN).
fn tanh_real(x: f32) -> f32 {
    if (is_nan(x)) { return x; }
    return select(tanh(x), sign(x), abs(x) > 15.0);
}
fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}
// The new [h, c'] from the gates' pre-activations i | f | g | o and the cell state.
fn lstm_update(z: vec4<f32>, c: f32) -> vec2<f32> {
    let i = sigmoid(z.x);
    let f = sigmoid(z.y);
    let g = tanh_real(z.z);
    let o = sigmoid(z.w);
    let c1 = f * c + i * g;
    return vec2<f32>(o * tanh_real(c1), c1);
}
// kiln:end
alias T = f32;

struct Params {
    batch: u32,
    hidden: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [batch, 4 * hidden]: i | f | g | o
// kiln:load z (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> z: array<T>;
fn load_z(i: u32) -> f32 { return f32(z[i]); }
// kiln:load z end
// [batch, hidden]
// kiln:load c (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read> c: array<T>;
fn load_c(i: u32) -> f32 { return f32(c[i]); }
// kiln:load c end
// [batch, 2 * hidden]: h | c'
@group(0) @binding(3) var<storage, read_write> output: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    let h = params.hidden;
    if (e >= params.batch * h) { return; }
    let b = e / h;
    let j = e % h;
    let row = b * 4u * h + j;
    let z = vec4<f32>(load_z(row), load_z(row + h), load_z(row + 2u * h), load_z(row + 3u * h));
    let hc = lstm_update(z, load_c(e));
    output[b * 2u * h + j] = T(hc.x);
    output[b * 2u * h + h + j] = T(hc.y);
}
