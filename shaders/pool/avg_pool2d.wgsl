// Average pooling over a compact [n, c, h, w] image. Mode (params.extra.w):
// 0 = padding counts in the divisor, 1 = it does not, 2 = adaptive windows
// [floor(o*h/oh), ceil((o+1)*h/oh)) as PyTorch defines them.
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
@group(0) @binding(2) var<storage, read_write> output: array<T>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (e >= params.extra.z) { return; }
    let h = params.image.z;
    let w = params.image.w;
    let oh = params.window.z;
    let ow = params.window.w;
    let ox = e % ow;
    let oy = (e / ow) % oh;
    let plane = e / (ow * oh);
    var y0: u32; var y1: u32; var x0: u32; var x1: u32; var divisor: f32;
    if (params.extra.w == 2u) {
        y0 = oy * h / oh;
        y1 = ((oy + 1u) * h + oh - 1u) / oh;
        x0 = ox * w / ow;
        x1 = ((ox + 1u) * w + ow - 1u) / ow;
        divisor = f32((y1 - y0) * (x1 - x0));
    } else {
        // Window in padded coordinates, clipped to the padded image for the divisor
        // and to the real image for the sum.
        let py0 = oy * params.step.x;
        let px0 = ox * params.step.y;
        let py1 = min(py0 + params.window.x, h + 2u * params.step.z);
        let px1 = min(px0 + params.window.y, w + 2u * params.step.w);
        y0 = min(u32(max(i32(py0) - i32(params.step.z), 0)), h);
        y1 = min(u32(max(i32(py1) - i32(params.step.z), 0)), h);
        x0 = min(u32(max(i32(px0) - i32(params.step.w), 0)), w);
        x1 = min(u32(max(i32(px1) - i32(params.step.w), 0)), w);
        divisor = select(f32((y1 - y0) * (x1 - x0)), f32((py1 - py0) * (px1 - px0)), params.extra.w == 0u);
    }
    var sum = 0.0;
    for (var iy = y0; iy < y1; iy++) {
        for (var ix = x0; ix < x1; ix++) {
            sum += f32(image[(plane * h + iy) * w + ix]);
        }
    }
    output[e] = T(sum / divisor);
}
