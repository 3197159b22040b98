// The gradient of the fused LSTM step (lstm_cell.wgsl), one invocation per (row, unit):
// recomputes the gates from z and c, and from the upstream gradient of [h | c'] writes
// the gradients of the four gate pre-activations and of c. Math in f32.
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
// [batch, 2 * hidden]: dh | dc'
// kiln:load grad (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(3) var<storage, read> grad: array<T>;
fn load_grad(i: u32) -> f32 { return f32(grad[i]); }
// kiln:load grad end
// [batch, 4 * hidden]
@group(0) @binding(4) var<storage, read_write> dz: array<T>;
// [batch, hidden]
@group(0) @binding(5) var<storage, read_write> dc: array<T>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    let h = params.hidden;
    if (e >= params.batch * h) { return; }
    let b = e / h;
    let j = e % h;
    let row = b * 4u * h + j;
    let i = sigmoid(load_z(row));
    let f = sigmoid(load_z(row + h));
    let g = tanh(load_z(row + 2u * h));
    let o = sigmoid(load_z(row + 3u * h));
    let c0 = load_c(e);
    let tc = tanh(f * c0 + i * g);
    let dh = load_grad(b * 2u * h + j);
    // Through h = o * tanh(c') into c', plus c''s own upstream gradient.
    let dc1 = load_grad(b * 2u * h + h + j) + dh * o * (1.0 - tc * tc);
    dz[row] = T(dc1 * g * i * (1.0 - i));
    dz[row + h] = T(dc1 * c0 * f * (1.0 - f));
    dz[row + 2u * h] = T(dc1 * i * (1.0 - g * g));
    dz[row + 3u * h] = T(dh * tc * o * (1.0 - o));
    dc[e] = T(dc1 * f);
}
