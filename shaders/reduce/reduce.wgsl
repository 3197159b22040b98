// Reduces each row of a compact [rows, k] tensor, one workgroup per row.
// Op numbers match kiln_core::ReduceOp::code (sum, mean, max, min, prod); math in f32.
alias T = f32;

struct Params {
    rows: u32,
    k: u32,
    op: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [rows, k]
@group(0) @binding(1) var<storage, read> input: array<T>;
// [rows]
@group(0) @binding(2) var<storage, read_write> output: array<T>;

var<workgroup> partial: array<f32, 256>;

fn identity(op: u32) -> f32 {
    switch op {
        case 2u: { return bitcast<f32>(0xff800000u); }
        case 3u: { return bitcast<f32>(0x7f800000u); }
        case 4u: { return 1.0; }
        default: { return 0.0; }
    }
}

fn combine(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 2u: { return max(a, b); }
        case 3u: { return min(a, b); }
        case 4u: { return a * b; }
        default: { return a + b; }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) { return; }
    let base = row * params.k;
    var acc = identity(params.op);
    for (var i = lid; i < params.k; i += 256u) {
        acc = combine(params.op, acc, f32(input[base + i]));
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] = combine(params.op, partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var r = partial[0];
        if (params.op == 1u) { r = r / f32(params.k); }
        output[row] = T(r);
    }
}
