// Weight gradient of a convolution: dw[o, c', ky, kx] is the sum over n, oy, ox of
// dy[n, o, oy, ox] * x[n, g*cg + c', iy, ix], g being o's group. The batch's output rows
// (n, oy) are split into segments; one thread per weight element and segment sums its
// rows into partial[segment, element], and a column sum over the segments follows
// (one segment: the weight gradient itself). Deterministic, no atomics. With input and
// gradient exchanged this is also the weight gradient of a transposed convolution.
// params.extra.w holds the group count; params.split the segments.
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
    // dilation y, dilation x, number of threads needed, groups
    extra: vec4<u32>,
    // segments, rows (n, oy) per segment, weight elements, unused
    split: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [n, c, h, w], the convolution's input
@group(0) @binding(1) var<storage, read> image: array<T>;
// [n, o, oh, ow], the gradient of the convolution's output
@group(0) @binding(2) var<storage, read> grad: array<T>;
// [segments, o, c / groups, kh, kw]; one thread per element
@group(0) @binding(3) var<storage, read_write> partial: array<T>;

// Image coordinate hit by output position o and kernel tap t along one axis, or -1.
fn source(o: u32, t: u32, stride: u32, pad: u32, dilation: u32, size: u32) -> i32 {
    let i = i32(o * stride + t * dilation) - i32(pad);
    return select(-1, i, i >= 0 && i < i32(size));
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (t >= params.extra.z) { return; }
    let weights = params.split.z;
    let e = t % weights;
    let segment = t / weights;
    let kh = params.window.x;
    let kw = params.window.y;
    let oh = params.window.z;
    let ow = params.window.w;
    let c_all = params.image.y;
    let cg = c_all / params.extra.w;
    let out_channels = weights / (cg * kh * kw);
    let og = out_channels / params.extra.w;
    let kx = e % kw;
    let ky = (e / kw) % kh;
    let ci = (e / (kw * kh)) % cg;
    let o = e / (kw * kh * cg);
    let c = (o / og) * cg + ci;
    let plane = params.image.z * params.image.w;
    let first = segment * params.split.y;
    let last = min(first + params.split.y, params.image.x * oh);
    var acc = 0.0;
    for (var r = first; r < last; r++) {
        let n = r / oh;
        let oy = r % oh;
        let iy = source(oy, ky, params.step.x, params.step.z, params.extra.x, params.image.z);
        let image_row = ((n * c_all + c) * plane) + u32(max(iy, 0)) * params.image.w;
        let grad_row = ((n * out_channels + o) * oh + oy) * ow;
        for (var ox = 0u; ox < ow; ox++) {
            let ix = source(ox, kx, params.step.y, params.step.w, params.extra.y, params.image.w);
            // A tap in the padding multiplies zero, not nothing: a NaN or infinite
            // gradient there makes the weight's NaN, as the column matrix's zeros do.
            var v = 0.0;
            if (iy >= 0 && ix >= 0) {
                v = f32(image[image_row + u32(ix)]);
            }
            acc += f32(grad[grad_row + ox]) * v;
        }
    }
    partial[t] = T(acc);
}
