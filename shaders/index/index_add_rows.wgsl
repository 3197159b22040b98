// out = input; out[o, t, i] += src[o, j, i] for each j in first..first + count with
// index[j] == t: index_select's gradient, whose 1-D index is shared by every outer
// and inner element. One workgroup per output row (o, t): a chunk of the index at a
// time, each invocation tests one entry, a scan packs the matches in ascending j,
// and the invocations add the matched source rows' elements in that order:
// deterministic, no float atomics. The index is read once per output row, where a
// thread per output element read all of it (scatter_add.wgsl), so a vocabulary of
// V rows costs V * N tests for N ids, not V * N * features.
// kiln:constants workgroup
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
// kiln:end
alias T = f32;

struct Params {
    outer: u32,
    dim: u32,
    src_dim: u32,
    inner: u32,
    first: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
    // unused here: the index is 1-D
    index_strides: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
// [outer, dim, inner]
@group(0) @binding(1) var<storage, read> input: array<T>;
// [src_dim]
@group(0) @binding(2) var<storage, read> index: array<i32>;
// [outer, src_dim, inner]
@group(0) @binding(3) var<storage, read> src: array<T>;
// [outer, dim, inner]; its rows, one a workgroup
@group(0) @binding(4) var<storage, read_write> output: array<T>;

// Each invocation's count of matches, scanned into where its match goes.
var<workgroup> scan: array<u32, WORKGROUP>;
// The chunk's matching sources, in ascending j.
var<workgroup> matched: array<u32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    // Whole workgroups leave: the barriers below stay uniform.
    if (row >= params.outer * params.dim) { return; }
    let t = i32(row % params.dim);
    let o = row / params.dim;
    let out_row = row * params.inner;
    let src_rows = o * params.src_dim;
    for (var i = lid; i < params.inner; i += WORKGROUP) {
        output[out_row + i] = input[out_row + i];
    }
    let end = params.first + params.count;
    for (var c = params.first; c < end; c += WORKGROUP) {
        let j = c + lid;
        let hit = j < end && index[j] == t;
        scan[lid] = u32(hit);
        workgroupBarrier();
        // Inclusive sum of the counts (Hillis-Steele): where each match goes.
        for (var step = 1u; step < WORKGROUP; step *= 2u) {
            var add = 0u;
            if (lid >= step) { add = scan[lid - step]; }
            workgroupBarrier();
            scan[lid] += add;
            workgroupBarrier();
        }
        if (hit) { matched[scan[lid] - 1u] = j; }
        let found = scan[WORKGROUP - 1u];
        workgroupBarrier();
        for (var k = 0u; k < found; k++) {
            let source = (src_rows + matched[k]) * params.inner;
            for (var i = lid; i < params.inner; i += WORKGROUP) {
                output[out_row + i] = T(f32(output[out_row + i]) + f32(src[source + i]));
            }
        }
        // The next chunk's scan overwrites `matched` only after every read of it.
        workgroupBarrier();
    }
}
