// Grouped conv2d computed directly, one thread per output element: for groups with few
// input channels (a depthwise conv has one) the im2col + per-group matmul route launches
// tiny matmuls and wastes most of their work. Taps outside the image read zero.
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
    // dilation y, dilation x, number of outputs, unused
    extra: vec4<u32>,
    // output channels, groups, unused, unused
    channels: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [n, c, h, w]
@group(0) @binding(1) var<storage, read> image: array<T>;
// [out, c / groups, kh, kw]
@group(0) @binding(2) var<storage, read> weight: array<T>;
// [n, out, oh, ow]
@group(0) @binding(3) var<storage, read_write> output: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (e >= params.extra.z) { return; }
    let c = params.image.y;
    let h = params.image.z;
    let w = params.image.w;
    let kh = params.window.x;
    let kw = params.window.y;
    let oh = params.window.z;
    let ow = params.window.w;
    let out_c = params.channels.x;
    let per_group_in = c / params.channels.y;
    let per_group_out = out_c / params.channels.y;
    let ox = e % ow;
    let oy = (e / ow) % oh;
    let oc = (e / (ow * oh)) % out_c;
    let n = e / (ow * oh * out_c);
    let first_in = (oc / per_group_out) * per_group_in;
    var acc = 0.0;
    for (var ci = 0u; ci < per_group_in; ci++) {
        let plane = (n * c + first_in + ci) * h * w;
        let taps = (oc * per_group_in + ci) * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            let y = i32(oy * params.step.x + ky * params.extra.x) - i32(params.step.z);
            if (y < 0 || y >= i32(h)) { continue; }
            for (var kx = 0u; kx < kw; kx++) {
                let x = i32(ox * params.step.y + kx * params.extra.y) - i32(params.step.w);
                if (x < 0 || x >= i32(w)) { continue; }
                acc += f32(image[plane + u32(y) * w + u32(x)]) * f32(weight[taps + ky * kw + kx]);
            }
        }
    }
    output[e] = T(acc);
}
