// Checks what the subgroup row kernels assume (`row_reduction.rs`), in one workgroup:
// the slots `row_start` derives from the subgroups are each taken once (the subgroups
// are full and tile the workgroup), and a butterfly of shuffles over a subgroup adds its
// slots. The device runs it once, at opening, before it builds those kernels.
// kiln:constants workgroup row_place
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
struct RowInvocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_size) subgroup_size: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
}
var<private> row_slot: u32;
var<private> row_lanes: u32;
var<private> row_subgroup_size: u32;
// This invocation's row (past the last row for a spare slot) and its lane in the row.
fn row_start(inv: RowInvocation, lanes: u32) -> vec2<u32> {
    row_slot = inv.subgroup * inv.subgroup_size + inv.subgroup_lane;
    row_lanes = lanes;
    row_subgroup_size = inv.subgroup_size;
    let group = inv.wid.y * inv.nwg.x + inv.wid.x;
    return vec2<u32>(group * (WORKGROUP / lanes) + row_slot / lanes, row_slot % lanes);
}
// kiln:end

struct Params {
    // lanes per row for row_start: WORKGROUP
    lanes: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [0, WORKGROUP): slot + 1 at each slot taken; [WORKGROUP, 2 WORKGROUP): the butterfly
// sum of the slots of each slot's subgroup; 2 WORKGROUP: the subgroup size; then 1 if
// a slot fell outside the workgroup. Cleared to zero before the run.
@group(0) @binding(1) var<storage, read_write> output: array<u32>;

@compute @workgroup_size(WORKGROUP)
fn main(inv: RowInvocation) {
    row_start(inv, params.lanes);
    if (row_slot >= WORKGROUP) {
        output[2u * WORKGROUP + 1u] = 1u;
        return;
    }
    output[row_slot] = row_slot + 1u;
    var sum = row_slot;
    for (var mask = 1u; mask < row_subgroup_size; mask <<= 1u) {
        sum += subgroupShuffleXor(sum, mask);
    }
    output[WORKGROUP + row_slot] = sum;
    if (row_slot == 0u) {
        output[2u * WORKGROUP] = row_subgroup_size;
    }
}
