// The gradient of softmax (log = 0) or log-softmax (log = 1) over each row of compact
// [rows, k] tensors, from the forward's output y and the output's gradient g, `lanes`
// invocations per row as in softmax.wgsl: softmax's is y * (g - sum(g * y)),
// log-softmax's g - exp(y) * sum(g). One pass sums the row, keeping ROW_LOADS loads of
// each input in flight per invocation; the second writes the gradient, its reads from
// cache. The composed formula took two launches and wrote g * y out between them.
// kiln:constants workgroup reduce_ops row_loads reduce_combine row_place row_total
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const REDUCE_SUM: u32 = 0u;
const REDUCE_MEAN: u32 = 1u;
const REDUCE_MAX: u32 = 2u;
const REDUCE_MIN: u32 = 3u;
const REDUCE_PROD: u32 = 4u;
const REDUCE_ARGMAX: u32 = 5u;
const REDUCE_ARGMIN: u32 = 6u;
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
// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
fn identity(op: u32) -> f32 {
    switch op {
        case REDUCE_MAX: { return bitcast<f32>(0xff800000u); }
        case REDUCE_MIN: { return bitcast<f32>(0x7f800000u); }
        case REDUCE_PROD: { return 1.0; }
        case REDUCE_SUM, REDUCE_MEAN, default: { return 0.0; }
    }
}
fn combine(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        // NaN if either is NaN, as in PyTorch (WGSL's max and min may drop it).
        case REDUCE_MAX: { return select(max(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        case REDUCE_MIN: { return select(min(a, b), bitcast<f32>(0x7fc00000u), is_nan(a) || is_nan(b)); }
        case REDUCE_PROD: { return a * b; }
        case REDUCE_SUM, REDUCE_MEAN, default: { return a + b; }
    }
}
struct RowInvocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}
var<private> row_slot: u32;
var<private> row_lanes: u32;
// This invocation's row (past the last row for a spare slot) and its lane in the row.
fn row_start(inv: RowInvocation, lanes: u32) -> vec2<u32> {
    row_slot = inv.lid;
    row_lanes = lanes;
    let group = inv.wid.y * inv.nwg.x + inv.wid.x;
    return vec2<u32>(group * (WORKGROUP / lanes) + row_slot / lanes, row_slot % lanes);
}
var<workgroup> row_partial: array<f32, WORKGROUP>;
fn row_tree(op: u32, v: f32, width: u32) -> f32 {
    let lane = row_slot % row_lanes;
    row_partial[row_slot] = v;
    workgroupBarrier();
    for (var stride = width; stride < row_lanes; stride <<= 1u) {
        if (lane % (2u * stride) == 0u) {
            row_partial[row_slot] = combine(op, row_partial[row_slot], row_partial[row_slot + stride]);
        }
        workgroupBarrier();
    }
    let total = row_partial[row_slot - lane];
    // The next call writes row_partial again.
    workgroupBarrier();
    return total;
}
// `v` combined over the row's lanes, neighbours first; every lane gets the result.
fn row_total(op: u32, v: f32) -> f32 {
    return row_tree(op, v, 1u);
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
// [rows, k]: the forward's output
// kiln:load y (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> forward_out: array<T>;
fn load(i: u32) -> f32 { return f32(forward_out[i]); }
// kiln:load y end
// [rows, k]: the gradient of the forward's output
// kiln:load grad (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read> grad: array<T>;
fn load_grad(i: u32) -> f32 { return f32(grad[i]); }
// kiln:load grad end
// [rows, k]: the gradient of the forward's input
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(3) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

fn grad4(at: u32, lanes: u32) -> vec4<f32> {
    return vec4<f32>(load_grad(at), load_grad(at + lanes), load_grad(at + 2u * lanes), load_grad(at + 3u * lanes));
}

// What the row sums: g * y, or log-softmax's g.
fn summand(y: vec4<f32>, g: vec4<f32>) -> vec4<f32> {
    if (params.log == 1u) { return g; }
    return g * y;
}

fn gradient(y: vec4<f32>, g: vec4<f32>, total: f32) -> vec4<f32> {
    if (params.log == 1u) { return g - exp(y) * total; }
    return y * (g - total);
}

@compute @workgroup_size(WORKGROUP)
fn main(inv: RowInvocation) {
    let lanes = params.lanes;
    let place = row_start(inv, lanes);
    let row = place.x;
    let lane = place.y;
    // A slot past the last row reads and writes nothing, but meets every barrier.
    let k = select(0u, params.k, row < params.rows);
    let base = row * params.k;
    let step = ROW_LOADS * lanes;

    var sum = vec4<f32>(0.0);
    var i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) {
        sum += summand(load4(base + i, lanes), grad4(base + i, lanes));
    }
    for (; i < k; i += lanes) {
        sum.x += summand(vec4<f32>(load(base + i)), vec4<f32>(load_grad(base + i))).x;
    }
    let total = row_total(REDUCE_SUM, (sum.x + sum.y) + (sum.z + sum.w));

    i = lane;
    for (; i + (ROW_LOADS - 1u) * lanes < k; i += step) {
        store4(base + i, lanes, gradient(load4(base + i, lanes), grad4(base + i, lanes), total));
    }
    for (; i < k; i += lanes) {
        let y = vec4<f32>(load(base + i));
        store(base + i, gradient(y, vec4<f32>(load_grad(base + i)), total).x);
    }
}
