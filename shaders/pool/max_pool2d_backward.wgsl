// Gradient of max pooling: each image pixel sums the gradients of the windows whose
// recorded maximum (the forward's flat iy*w + ix index) is that pixel. One thread per
// pixel visits only the windows that can contain it: deterministic, no atomics. Its
// launch is deferred: the elementwise work after it (the mask of the activation before
// the pool) runs in its stores as an epilogue.
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
// [n, c, oh, ow], the gradient of the pooled output
@group(0) @binding(1) var<storage, read> grad: array<T>;
// [n, c, oh, ow], the forward's indices
@group(0) @binding(2) var<storage, read> indices: array<i32>;
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
// [n, c, h, w]; one thread per pixel
@group(0) @binding(3) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (e >= params.extra.z) { return; }
    let h = params.image.z;
    let w = params.image.w;
    let oh = params.window.z;
    let ow = params.window.w;
    let ix = e % w;
    let iy = (e / w) % h;
    let plane = e / (w * h);
    let flat = i32(iy * w + ix);
    var acc = 0.0;
    for (var ky = 0u; ky < params.window.x; ky++) {
        // oy * stride = iy + pad - ky * dilation
        let ty = i32(iy + params.step.z) - i32(ky * params.extra.x);
        if (ty < 0 || u32(ty) % params.step.x != 0u) { continue; }
        let oy = u32(ty) / params.step.x;
        if (oy >= oh) { continue; }
        for (var kx = 0u; kx < params.window.y; kx++) {
            let tx = i32(ix + params.step.w) - i32(kx * params.extra.y);
            if (tx < 0 || u32(tx) % params.step.y != 0u) { continue; }
            let ox = u32(tx) / params.step.y;
            if (ox >= ow) { continue; }
            let o = (plane * oh + oy) * ow + ox;
            if (indices[o] == flat) { acc += f32(grad[o]); }
        }
    }
    store(e, acc);
}
