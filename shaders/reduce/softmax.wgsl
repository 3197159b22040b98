// Numerically stable softmax (log = 0) or log-softmax (log = 1) over each row of a
// compact [rows, k] tensor, `lanes` invocations per row as in reduce.wgsl: max, then sum
// of exp(x - max), then the outputs. Each pass keeps ROW_LOADS loads in flight per
// invocation; the second and third reads of a row come from cache.
// kiln:constants workgroup row_loads
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const ROW_LOADS: u32 = 4u;
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

fn normalised(x: f32, row_max: f32, total: f32, log_total: f32) -> f32 {
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

    var m0 = bitcast<f32>(0xff800000u);
    var m1 = m0;
    var m2 = m0;
    var m3 = m0;
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) {
        let x0 = load(base + i);
        let x1 = load(base + i + lanes);
        let x2 = load(base + i + 2u * lanes);
        let x3 = load(base + i + 3u * lanes);
        m0 = max(m0, x0);
        m1 = max(m1, x1);
        m2 = max(m2, x2);
        m3 = max(m3, x3);
    }
    for (; i < k; i += lanes) { m0 = max(m0, load(base + i)); }
    partial[lid] = max(max(m0, m1), max(m2, m3));
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
        workgroupBarrier();
    }
    let row_max = partial[lid - lane];
    workgroupBarrier();

    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) {
        let x0 = load(base + i);
        let x1 = load(base + i + lanes);
        let x2 = load(base + i + 2u * lanes);
        let x3 = load(base + i + 3u * lanes);
        s0 += exp(x0 - row_max);
        s1 += exp(x1 - row_max);
        s2 += exp(x2 - row_max);
        s3 += exp(x3 - row_max);
    }
    for (; i < k; i += lanes) { s0 += exp(load(base + i) - row_max); }
    partial[lid] = (s0 + s1) + (s2 + s3);
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) { partial[lid] += partial[lid + stride]; }
        workgroupBarrier();
    }
    let total = partial[lid - lane];
    let log_total = log(total);

    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) {
        let x0 = load(base + i);
        let x1 = load(base + i + lanes);
        let x2 = load(base + i + 2u * lanes);
        let x3 = load(base + i + 3u * lanes);
        store(base + i, normalised(x0, row_max, total, log_total));
        store(base + i + lanes, normalised(x1, row_max, total, log_total));
        store(base + i + 2u * lanes, normalised(x2, row_max, total, log_total));
        store(base + i + 3u * lanes, normalised(x3, row_max, total, log_total));
    }
    for (; i < k; i += lanes) {
        store(base + i, normalised(load(base + i), row_max, total, log_total));
    }
}
