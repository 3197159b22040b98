// The gradient of the fused LSTM step (lstm_cell.wgsl), one invocation per (row, unit):
// recomputes the gates from z and c, and from the upstream gradients of h and c' writes
// the gradients of the four gate pre-activations and of c. Math in f32.
// kiln:constants workgroup lstm_gradient
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
// [batch, hidden] each: the gradients of h and of c'
// kiln:load grad_h (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(3) var<storage, read> grad_h: array<T>;
fn load_grad_h(i: u32) -> f32 { return f32(grad_h[i]); }
// kiln:load grad_h end
// kiln:load grad_c (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(4) var<storage, read> grad_c: array<T>;
fn load_grad_c(i: u32) -> f32 { return f32(grad_c[i]); }
// kiln:load grad_c end
// [batch, 4 * hidden]
@group(0) @binding(5) var<storage, read_write> dz: array<T>;
// [batch, hidden]
@group(0) @binding(6) var<storage, read_write> dc: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    let h = params.hidden;
    if (e >= params.batch * h) { return; }
    let b = e / h;
    let j = e % h;
    let row = b * 4u * h + j;
    let z = vec4<f32>(load_z(row), load_z(row + h), load_z(row + 2u * h), load_z(row + 3u * h));
    let d = lstm_gradient(z, load_c(e), load_grad_h(e), load_grad_c(e));
    dz[row] = T(d.dz.x);
    dz[row + h] = T(d.dz.y);
    dz[row + 2u * h] = T(d.dz.z);
    dz[row + 3u * h] = T(d.dz.w);
    dc[e] = T(d.dc);
}
