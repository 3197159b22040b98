// Softmax (or log-softmax) of each row of a compact [rows, k] tensor, k a multiple of
// 4, one invocation per row: one pass keeps a running max and a sum rescaled whenever
// the max grows (online softmax), a second writes the result. The variant for adapters
// that run on the CPU, for the reasons in reduce_rows_serial.wgsl.
// kiln:constants serial_workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const SERIAL_WORKGROUP: u32 = 64u;
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    // 1: log_softmax
    log: u32,
    // one invocation per row here: unused (the workgroup kernel's invocations per row)
    lanes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<vec4<T>>;
fn load4(i: u32) -> vec4<f32> { return vec4<f32>(input[i]); }
// kiln:load end
// [rows, k] as vec4s
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read_write> output: array<vec4<T>>;
fn store4(i: u32, v: vec4<f32>) { output[i] = vec4<T>(v); }
// kiln:store end

@compute @workgroup_size(SERIAL_WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let row = gid.x + gid.y * groups.x * SERIAL_WORKGROUP;
    if (row >= params.rows) { return; }
    let k4 = params.k / 4u;
    let base = row * k4;
    var m = bitcast<f32>(0xff800000u);
    var s = 0.0;
    for (var i = 0u; i < k4; i++) {
        let v = load4(base + i);
        let top = max(m, max(max(v.x, v.y), max(v.z, v.w)));
        // exp(-inf - -inf) would be NaN: a row that starts at -inf adds nothing yet.
        var scale = 0.0;
        if (m > bitcast<f32>(0xff800000u)) { scale = exp(m - top); }
        let e = exp(v - top);
        s = s * scale + e.x + e.y + e.z + e.w;
        m = top;
    }
    let log_s = log(s);
    for (var i = 0u; i < k4; i++) {
        let v = load4(base + i) - m;
        if (params.log != 0u) {
            store4(base + i, v - log_s);
        } else {
            store4(base + i, exp(v) / s);
        }
    }
}
