// Fused layer norm over each row of a compact [rows, k] tensor, `lanes` invocations per
// row as in reduce/reduce.wgsl: mean, then biased variance of the deviations, then
// scale and shift. Each pass keeps ROW_LOADS loads in flight per invocation; the second
// and third reads of a row come from cache.
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

// Columns `c`, `c + lanes`, ... of a row, normalised, scaled and shifted.
fn affine4(c: u32, lanes: u32, x: vec4<f32>, mean: f32, rstd: f32) -> vec4<f32> {
    let at = vec4<u32>(c, c + lanes, c + 2u * lanes, c + 3u * lanes);
    let w = vec4<f32>(f32(weight[at.x]), f32(weight[at.y]), f32(weight[at.z]), f32(weight[at.w]));
    let b = vec4<f32>(f32(bias[at.x]), f32(bias[at.y]), f32(bias[at.z]), f32(bias[at.w]));
    return (x - mean) * rstd * w + b;
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

    var sum = vec4<f32>(0.0);
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) { sum += load4(base + i, lanes); }
    for (; i < len; i += lanes) { sum.x += load(base + i); }
    let mean = row_sum(lid, lane, lanes, (sum.x + sum.y) + (sum.z + sum.w)) / k;

    var squares = vec4<f32>(0.0);
    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        let d = load4(base + i, lanes) - mean;
        squares += d * d;
    }
    for (; i < len; i += lanes) {
        let d = load(base + i) - mean;
        squares.x += d * d;
    }
    let q = (squares.x + squares.y) + (squares.z + squares.w);
    let rstd = 1.0 / sqrt(row_sum(lid, lane, lanes, q) / k + params.eps);

    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < len; i += step) {
        store4(base + i, lanes, affine4(i, lanes, load4(base + i, lanes), mean, rstd));
    }
    for (; i < len; i += lanes) {
        store(base + i, affine4(i, 0u, vec4<f32>(load(base + i)), mean, rstd).x);
    }
}
