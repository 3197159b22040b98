// Gradient of average pooling: each image pixel sums grad / divisor over the windows
// that average it. Modes as in avg_pool2d.wgsl (params.extra.w): 0 padding counts in
// the divisor, 1 it does not, 2 adaptive windows. One thread per pixel.
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
// [n, c, h, w]; one thread per pixel
@group(0) @binding(2) var<storage, read_write> dx: array<T>;

// The window of output (oy, ox) on the real image, as (y0, y1, x0, x1), and its divisor.
struct Window {
    rows: vec2<u32>,
    cols: vec2<u32>,
    divisor: f32,
}

fn window_of(oy: u32, ox: u32) -> Window {
    let h = params.image.z;
    let w = params.image.w;
    var win: Window;
    if (params.extra.w == 2u) {
        win.rows = vec2<u32>(oy * h / params.window.z, ((oy + 1u) * h + params.window.z - 1u) / params.window.z);
        win.cols = vec2<u32>(ox * w / params.window.w, ((ox + 1u) * w + params.window.w - 1u) / params.window.w);
        win.divisor = f32((win.rows.y - win.rows.x) * (win.cols.y - win.cols.x));
        return win;
    }
    let py0 = oy * params.step.x;
    let px0 = ox * params.step.y;
    let py1 = min(py0 + params.window.x, h + 2u * params.step.z);
    let px1 = min(px0 + params.window.y, w + 2u * params.step.w);
    win.rows = vec2<u32>(min(u32(max(i32(py0) - i32(params.step.z), 0)), h), min(u32(max(i32(py1) - i32(params.step.z), 0)), h));
    win.cols = vec2<u32>(min(u32(max(i32(px0) - i32(params.step.w), 0)), w), min(u32(max(i32(px1) - i32(params.step.w), 0)), w));
    let real = f32((win.rows.y - win.rows.x) * (win.cols.y - win.cols.x));
    win.divisor = select(real, f32((py1 - py0) * (px1 - px0)), params.extra.w == 0u);
    return win;
}

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
    // Outputs whose window can reach this pixel: all of them for adaptive windows,
    // else those with oy * stride - pad in (iy - kernel, iy].
    var oy0 = 0u; var oy1 = oh; var ox0 = 0u; var ox1 = ow;
    if (params.extra.w != 2u) {
        let ty = i32(iy + params.step.z) - i32(params.window.x) + 1;
        let tx = i32(ix + params.step.w) - i32(params.window.y) + 1;
        oy0 = u32(max(ty + i32(params.step.x) - 1, 0)) / params.step.x;
        ox0 = u32(max(tx + i32(params.step.y) - 1, 0)) / params.step.y;
        oy1 = min((iy + params.step.z) / params.step.x + 1u, oh);
        ox1 = min((ix + params.step.w) / params.step.y + 1u, ow);
    }
    var acc = 0.0;
    for (var oy = oy0; oy < oy1; oy++) {
        for (var ox = ox0; ox < ox1; ox++) {
            let win = window_of(oy, ox);
            if (iy >= win.rows.x && iy < win.rows.y && ix >= win.cols.x && ix < win.cols.y) {
                acc += f32(grad[(plane * oh + oy) * ow + ox]) / win.divisor;
            }
        }
    }
    dx[e] = T(acc);
}
