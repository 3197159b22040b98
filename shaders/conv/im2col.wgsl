// Unfolds a compact [n, c, h, w] image into [n, c*kh*kw, oh*ow] columns, so that a
// convolution becomes one batched matmul. Taps outside the image read zero.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    // n, c, h, w of the image
    image: vec4<u32>,
    // kernel height, kernel width, output height, output width
    window: vec4<u32>,
    // stride y, stride x, padding y, padding x
    step: vec4<u32>,
    // dilation y, dilation x, number of threads needed, mode
    extra: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [n, c, h, w]
@group(0) @binding(1) var<storage, read> image: array<T>;
// [n, c*kh*kw, oh*ow]; one thread per element
@group(0) @binding(2) var<storage, read_write> cols: array<T>;

// Image coordinate hit by output position o and kernel tap t along one axis, or -1.
fn source(o: u32, t: u32, stride: u32, pad: u32, dilation: u32, size: u32) -> i32 {
    let i = i32(o * stride + t * dilation) - i32(pad);
    return select(-1, i, i >= 0 && i < i32(size));
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (e >= params.extra.z) { return; }
    let kh = params.window.x;
    let kw = params.window.y;
    let l = params.window.z * params.window.w;
    let rows = params.image.y * kh * kw;
    let pos = e % l;
    let row = (e / l) % rows;
    let n = e / (l * rows);
    let c = row / (kh * kw);
    let ky = (row / kw) % kh;
    let kx = row % kw;
    let oy = pos / params.window.w;
    let ox = pos % params.window.w;
    let iy = source(oy, ky, params.step.x, params.step.z, params.extra.x, params.image.z);
    let ix = source(ox, kx, params.step.y, params.step.w, params.extra.y, params.image.w);
    var v = T(0);
    if (iy >= 0 && ix >= 0) {
        v = image[((n * params.image.y + c) * params.image.z + u32(iy)) * params.image.w + u32(ix)];
    }
    cols[e] = v;
}
