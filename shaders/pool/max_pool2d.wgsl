// Max pooling over a compact [n, c, h, w] image; also writes the flat iy*w + ix index
// of each window's first maximum (for the backward pass). Padding never wins; a NaN
// does, as in PyTorch (the window's last NaN).
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
// [n, c, oh, ow]; one thread per element
@group(0) @binding(2) var<storage, read_write> values: array<T>;
// [n, c, oh, ow]
@group(0) @binding(3) var<storage, read_write> indices: array<i32>;

// Image coordinate hit by output position o and kernel tap t along one axis, or -1.
fn source(o: u32, t: u32, stride: u32, pad: u32, dilation: u32, size: u32) -> i32 {
    let i = i32(o * stride + t * dilation) - i32(pad);
    return select(-1, i, i >= 0 && i < i32(size));
}

// By the bits: WGSL lets implementations assume floats are never NaN.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (e >= params.extra.z) { return; }
    let oh = params.window.z;
    let ow = params.window.w;
    let ox = e % ow;
    let oy = (e / ow) % oh;
    let plane = e / (ow * oh);
    let base = plane * params.image.z * params.image.w;
    var best = bitcast<f32>(0xff800000u);
    var best_index = -1;
    for (var ky = 0u; ky < params.window.x; ky++) {
        let iy = source(oy, ky, params.step.x, params.step.z, params.extra.x, params.image.z);
        if (iy < 0) { continue; }
        for (var kx = 0u; kx < params.window.y; kx++) {
            let ix = source(ox, kx, params.step.y, params.step.w, params.extra.y, params.image.w);
            if (ix < 0) { continue; }
            let flat = iy * i32(params.image.w) + ix;
            let v = f32(image[base + u32(flat)]);
            if (v > best || is_nan(v) || best_index < 0) {
                best = v;
                best_index = flat;
            }
        }
    }
    values[e] = T(best);
    indices[e] = best_index;
}
