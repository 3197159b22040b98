// The gradient of the fused GRU step (gru_cell.wgsl), one invocation per (row, unit):
// recomputes the gates, and from dh' writes the gradients of both projections and of
// the hidden state. Math in f32.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    batch: u32,
    hidden: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [batch, 3 * hidden] each: r | z | n
// kiln:load x (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> x: array<T>;
fn load_x(i: u32) -> f32 { return f32(x[i]); }
// kiln:load x end
// kiln:load hp (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read> hp: array<T>;
fn load_hp(i: u32) -> f32 { return f32(hp[i]); }
// kiln:load hp end
// [batch, hidden]
// kiln:load h (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(3) var<storage, read> h: array<T>;
fn load_h(i: u32) -> f32 { return f32(h[i]); }
// kiln:load h end
// [batch, hidden]: dh'
// kiln:load grad (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(4) var<storage, read> grad: array<T>;
fn load_grad(i: u32) -> f32 { return f32(grad[i]); }
// kiln:load grad end
// [batch, 3 * hidden] each
@group(0) @binding(5) var<storage, read_write> dx: array<T>;
@group(0) @binding(6) var<storage, read_write> dhp: array<T>;
// [batch, hidden]
@group(0) @binding(7) var<storage, read_write> dh: array<T>;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    let hs = params.hidden;
    if (e >= params.batch * hs) { return; }
    let row = e / hs * 3u * hs + e % hs;
    let r = sigmoid(load_x(row) + load_hp(row));
    let z = sigmoid(load_x(row + hs) + load_hp(row + hs));
    let hp_n = load_hp(row + 2u * hs);
    let n = tanh(load_x(row + 2u * hs) + r * hp_n);
    let g = load_grad(e);
    let dn = g * (1.0 - z) * (1.0 - n * n);
    let dz = g * (load_h(e) - n) * z * (1.0 - z);
    let dr = dn * hp_n * r * (1.0 - r);
    dx[row] = T(dr);
    dx[row + hs] = T(dz);
    dx[row + 2u * hs] = T(dn);
    dhp[row] = T(dr);
    dhp[row + hs] = T(dz);
    dhp[row + 2u * hs] = T(dn * r);
    dh[e] = T(g * z);
}
