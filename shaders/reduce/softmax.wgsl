// Numerically stable softmax (log = 0) or log-softmax (log = 1) over each row of a
// compact [rows, k] tensor, `lanes` invocations per row as in reduce.wgsl: max, then sum
// of exp(x - max), then the outputs. Each pass keeps ROW_LOADS loads in flight per
// invocation; the second and third reads of a row come from cache.
// kiln:constants workgroup row_loads
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const ROW_LOADS: u32 = 4u;
fn load4(at: u32, lanes: u32) -> vec4<f32> {
    return vec4<f32>(load(at), load(at + lanes), load(at + 2u * lanes), load(at + 3u * lanes));
}
fn store4(at: u32, lanes: u32, v: vec4<f32>) {
    store(at, v.x);
    store(at + lanes, v.y);
    store(at + 2u * lanes, v.z);
    store(at + 3u * lanes, v.w);
}
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    log: u32,
    // invocations per row: a power of two dividing WORKGROUP
    lanes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [rows, k]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

var<workgroup> partial: array<f32, WORKGROUP>;

fn normalised(x: vec4<f32>, row_max: f32, total: f32, log_total: f32) -> vec4<f32> {
    let shifted = x - row_max;
    if (params.log == 1u) {
        return shifted - log_total;
    }
    return exp(shifted) / total;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lanes = params.lanes;
    let lane = lid % lanes;
    let row = (wid.y * nwg.x + wid.x) * (WORKGROUP / lanes) + lid / lanes;
    // A slot past the last row reads and writes nothing, but meets every barrier.
    let k = select(0u, params.k, row < params.rows);
    let base = row * params.k;
    let step = ROW_LOADS * lanes;

    var m = vec4<f32>(bitcast<f32>(0xff800000u));
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) { m = max(m, load4(base + i, lanes)); }
    for (; i < k; i += lanes) { m.x = max(m.x, load(base + i)); }
    partial[lid] = max(max(m.x, m.y), max(m.z, m.w));
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
        workgroupBarrier();
    }
    let row_max = partial[lid - lane];
    workgroupBarrier();

    var sum = vec4<f32>(0.0);
    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) { sum += exp(load4(base + i, lanes) - row_max); }
    for (; i < k; i += lanes) { sum.x += exp(load(base + i) - row_max); }
    partial[lid] = (sum.x + sum.y) + (sum.z + sum.w);
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) { partial[lid] += partial[lid + stride]; }
        workgroupBarrier();
    }
    let total = partial[lid - lane];
    let log_total = log(total);

    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) {
        store4(base + i, lanes, normalised(load4(base + i, lanes), row_max, total, log_total));
    }
    for (; i < k; i += lanes) {
        store(base + i, normalised(vec4<f32>(load(base + i)), row_max, total, log_total).x);
    }
}
