// One fused GRU step, one invocation per (row, unit): reads the input and hidden
// projections' three gates and the hidden state, writes h' (kiln-core's
// `GruCellSpec`), where the step was eleven elementwise kernels. Math in f32.
// kiln:constants workgroup gru_update
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
// The new h from the input and hidden projections' gates r | z | n and the state.
fn gru_update(x: vec3<f32>, hp: vec3<f32>, h: f32) -> f32 {
    let r = sigmoid(x.x + hp.x);
    let z = sigmoid(x.y + hp.y);
    let n = tanh_real(x.z + r * hp.z);
    return (1.0 - z) * n + z * h;
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
// [batch, 3 * hidden]: r | z | n, the input projection
// kiln:load x (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> x: array<T>;
fn load_x(i: u32) -> f32 { return f32(x[i]); }
// kiln:load x end
// [batch, 3 * hidden]: r | z | n, the hidden projection
// kiln:load hp (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read> hp: array<T>;
fn load_hp(i: u32) -> f32 { return f32(hp[i]); }
// kiln:load hp end
// [batch, hidden]
// kiln:load h (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(3) var<storage, read> h: array<T>;
fn load_h(i: u32) -> f32 { return f32(h[i]); }
// kiln:load h end
// [batch, hidden]
@group(0) @binding(4) var<storage, read_write> output: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    let hs = params.hidden;
    if (e >= params.batch * hs) { return; }
    let row = e / hs * 3u * hs + e % hs;
    let x = vec3<f32>(load_x(row), load_x(row + hs), load_x(row + 2u * hs));
    let hp = vec3<f32>(load_hp(row), load_hp(row + hs), load_hp(row + 2u * hs));
    output[e] = T(gru_update(x, hp, load_h(e)));
}
