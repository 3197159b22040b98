// Index of the first maximum (op 5) or minimum (op 6) of each row of a compact
// [rows, k] tensor, one workgroup per row; ties go to the lower index.
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
@group(0) @binding(2) var<storage, read_write> output: array<i32>;

var<workgroup> best_value: array<f32, 256>;
var<workgroup> best_index: array<u32, 256>;

// Does candidate (v, i) beat the incumbent (w, j)?
fn better(op: u32, v: f32, i: u32, w: f32, j: u32) -> bool {
    if (j == 0xffffffffu) { return true; }
    if (i == 0xffffffffu) { return false; }
    if (v == w) { return i < j; }
    return select((v < w), (v > w), op == 5u);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= params.rows) { return; }
    let base = row * params.k;
    var v = 0.0;
    var idx = 0xffffffffu;
    for (var i = lid; i < params.k; i += 256u) {
        let x = f32(input[base + i]);
        if (better(params.op, x, i, v, idx)) {
            v = x;
            idx = i;
        }
    }
    best_value[lid] = v;
    best_index[lid] = idx;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let w = best_value[lid + stride];
            let j = best_index[lid + stride];
            if (better(params.op, w, j, best_value[lid], best_index[lid])) {
                best_value[lid] = w;
                best_index[lid] = j;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        output[row] = i32(best_index[0]);
    }
}
