// Fused layer norm over each row of a compact [rows, k] tensor, `lanes` invocations per
// row as in reduce/reduce.wgsl: mean, then biased variance of the deviations, then
// scale and shift. Each pass keeps ROW_LOADS loads in flight per invocation; the second
// and third reads of a row come from cache.
// kiln:constants workgroup row_loads
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const ROW_LOADS: u32 = 4u;
// kiln:end
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    eps: f32,
    // invocations per row: a power of two dividing WORKGROUP
    lanes: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [k]
@group(0) @binding(2) var<storage, read> weight: array<T>;
// [k]
@group(0) @binding(3) var<storage, read> bias: array<T>;
// [rows, k]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(4) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

var<workgroup> partial: array<f32, WORKGROUP>;

// The sum of `v` over the `lanes` invocations of this invocation's row.
fn row_sum(lid: u32, lane: u32, lanes: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) { partial[lid] += partial[lid + stride]; }
        workgroupBarrier();
    }
    let total = partial[lid - lane];
    workgroupBarrier();
    return total;
}

// Column `c` of a row, normalised, scaled and shifted.
fn affine(c: u32, x: f32, mean: f32, rstd: f32) -> f32 {
    return (x - mean) * rstd * f32(weight[c]) + f32(bias[c]);
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lanes = params.lanes;
    let lane = lid % lanes;
    let row = (wid.y * nwg.x + wid.x) * (WORKGROUP / lanes) + lid / lanes;
    // A slot past the last row reads and writes nothing, but meets every barrier.
    let len = select(0u, params.k, row < params.rows);
    let base = row * params.k;
    let k = f32(params.k);
    let step = ROW_LOADS * lanes;

    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    var s3 = 0.0;
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        let x0 = load(base + i);
        let x1 = load(base + i + lanes);
        let x2 = load(base + i + 2u * lanes);
        let x3 = load(base + i + 3u * lanes);
        s0 += x0;
        s1 += x1;
        s2 += x2;
        s3 += x3;
    }
    for (; i < len; i += lanes) { s0 += load(base + i); }
    let mean = row_sum(lid, lane, lanes, (s0 + s1) + (s2 + s3)) / k;

    var q0 = 0.0;
    var q1 = 0.0;
    var q2 = 0.0;
    var q3 = 0.0;
    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        let d0 = load(base + i) - mean;
        let d1 = load(base + i + lanes) - mean;
        let d2 = load(base + i + 2u * lanes) - mean;
        let d3 = load(base + i + 3u * lanes) - mean;
        q0 += d0 * d0;
        q1 += d1 * d1;
        q2 += d2 * d2;
        q3 += d3 * d3;
    }
    for (; i < len; i += lanes) {
        let d = load(base + i) - mean;
        q0 += d * d;
    }
    let rstd = 1.0 / sqrt(row_sum(lid, lane, lanes, (q0 + q1) + (q2 + q3)) / k + params.eps);

    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        let x0 = load(base + i);
        let x1 = load(base + i + lanes);
        let x2 = load(base + i + 2u * lanes);
        let x3 = load(base + i + 3u * lanes);
        store(base + i, affine(i, x0, mean, rstd));
        store(base + i + lanes, affine(i + lanes, x1, mean, rstd));
        store(base + i + 2u * lanes, affine(i + 2u * lanes, x2, mean, rstd));
        store(base + i + 3u * lanes, affine(i + 3u * lanes, x3, mean, rstd));
    }
    for (; i < len; i += lanes) {
        store(base + i, affine(i, load(base + i), mean, rstd));
    }
}
