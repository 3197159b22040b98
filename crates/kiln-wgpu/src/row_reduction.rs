//! How the row kernels (`reduce.wgsl`, `arg_reduce.wgsl`, `softmax.wgsl`,
//! `layer_norm.wgsl`) combine the partial results of a row's lanes: through workgroup
//! memory, one barrier per halving, or with subgroup shuffles where the adapter has
//! them. Both are WGSL functions the kernels take from their constants block (groups
//! `row_place`, `row_total`, `row_best`), so each kernel is written once and built
//! either way (`Kernel::with_subgroups`).
//!
//! Both pair a row's lanes in the same order, neighbours first (lane 0 with 1, 2 with 3,
//! then those pairs' results, ...), so a row's total has the same bits whichever way it
//! is combined and whatever the adapter's subgroup size.

/// The two ways of combining a row's lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowReduction {
    /// Workgroup memory and barriers: every adapter.
    Workgroup,
    /// Subgroup shuffles, then at most one exchange through workgroup memory: adapters
    /// with wgpu's `SUBGROUP` whose subgroups pass `subgroup_probe`'s check.
    Subgroup,
}

impl RowReduction {
    /// The WGSL of a `row_*` constants group, or `None` for another group.
    pub(crate) fn group(self, name: &str) -> Option<String> {
        let text = match (name, self) {
            ("row_place", RowReduction::Workgroup) => PLACE_WORKGROUP.to_string(),
            ("row_place", RowReduction::Subgroup) => PLACE_SUBGROUP.to_string(),
            ("row_total", RowReduction::Workgroup) => format!("{TREE}{TOTAL_WORKGROUP}"),
            ("row_total", RowReduction::Subgroup) => format!("{TREE}{TOTAL_SUBGROUP}"),
            ("row_best", RowReduction::Workgroup) => BEST_WORKGROUP.to_string(),
            ("row_best", RowReduction::Subgroup) => BEST_SUBGROUP.to_string(),
            _ => return None,
        };
        Some(text)
    }
}

/// `row_start` sets the invocation's slot in the workgroup: a row's `lanes` invocations
/// take neighbouring slots, `WORKGROUP / lanes` rows to a workgroup.
const PLACE_WORKGROUP: &str = "\
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
";

/// Slots follow the subgroups, so a row's lanes are whole subgroups or lie within one
/// (the device checks at opening that the subgroups tile the workgroup this way).
const PLACE_SUBGROUP: &str = "\
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
";

/// The pairing through workgroup memory, from pairs `width` lanes apart (the lanes at
/// multiples of `width` hold their block's result); the kernel brings `combine`.
const TREE: &str = "\
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
";

const TOTAL_WORKGROUP: &str = "\
// `v` combined over the row's lanes, neighbours first; every lane gets the result.
fn row_total(op: u32, v: f32) -> f32 {
    return row_tree(op, v, 1u);
}
";

/// A butterfly within each subgroup (the masks rising, so each lane pairs as the tree
/// does); then, for rows of several subgroups, each subgroup fetches the row's subgroup
/// results, one to a lane and repeated, and pairs them the same way. Rows of more
/// subgroups than a subgroup has lanes (small subgroups) finish through the tree.
const TOTAL_SUBGROUP: &str = "\
// `v` combined over each aligned run of `width` lanes of the subgroup, neighbours first.
fn row_butterfly(op: u32, v: f32, width: u32) -> f32 {
    var r = v;
    for (var mask = 1u; mask < width; mask <<= 1u) {
        r = combine(op, r, subgroupShuffleXor(r, mask));
    }
    return r;
}
// `v` combined over the row's lanes, neighbours first; every lane gets the result.
fn row_total(op: u32, v: f32) -> f32 {
    let width = min(row_lanes, row_subgroup_size);
    let r = row_butterfly(op, v, width);
    let blocks = row_lanes / width;
    if (blocks == 1u) {
        return r;
    }
    if (blocks > width) {
        return row_tree(op, r, width);
    }
    row_partial[row_slot] = r;
    workgroupBarrier();
    let first = row_slot - row_slot % row_lanes;
    let t = row_partial[first + (row_slot % blocks) * width];
    workgroupBarrier();
    return row_butterfly(op, t, blocks);
}
";

/// Arg reductions choose rather than add (`better` is a total order, ties broken by
/// index), so their order of pairing does not change the result.
const BEST_WORKGROUP: &str = "\
var<workgroup> best_value: array<f32, WORKGROUP>;
var<workgroup> best_index: array<u32, WORKGROUP>;
// The index of the row's best (value, index) pair; the kernel brings `better`.
fn row_best(op: u32, v: f32, i: u32) -> u32 {
    let lane = row_slot % row_lanes;
    best_value[row_slot] = v;
    best_index[row_slot] = i;
    workgroupBarrier();
    for (var stride = row_lanes / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            let w = best_value[row_slot + stride];
            let j = best_index[row_slot + stride];
            if (better(op, w, j, best_value[row_slot], best_index[row_slot])) {
                best_value[row_slot] = w;
                best_index[row_slot] = j;
            }
        }
        workgroupBarrier();
    }
    let best = best_index[row_slot - lane];
    workgroupBarrier();
    return best;
}
";

const BEST_SUBGROUP: &str = "\
var<workgroup> best_value: array<f32, WORKGROUP>;
var<workgroup> best_index: array<u32, WORKGROUP>;
// The best of the (value bits, index) pairs over each aligned run of `width` lanes of
// the subgroup.
fn best_butterfly(op: u32, pair: vec2<u32>, width: u32) -> vec2<u32> {
    var p = pair;
    for (var mask = 1u; mask < width; mask <<= 1u) {
        let q = subgroupShuffleXor(p, mask);
        if (better(op, bitcast<f32>(q.x), q.y, bitcast<f32>(p.x), p.y)) {
            p = q;
        }
    }
    return p;
}
// The index of the row's best (value, index) pair; the kernel brings `better`.
fn row_best(op: u32, v: f32, i: u32) -> u32 {
    let width = min(row_lanes, row_subgroup_size);
    var p = best_butterfly(op, vec2<u32>(bitcast<u32>(v), i), width);
    let blocks = row_lanes / width;
    if (blocks == 1u) {
        return p.y;
    }
    best_value[row_slot] = bitcast<f32>(p.x);
    best_index[row_slot] = p.y;
    workgroupBarrier();
    // Each lane takes the subgroup results `width` apart, then the subgroup pairs them.
    let first = row_slot - row_slot % row_lanes;
    p = vec2<u32>(0u, 0xffffffffu);
    for (var b = row_slot % width; b < blocks; b += width) {
        let w = best_value[first + b * width];
        let j = best_index[first + b * width];
        if (better(op, w, j, bitcast<f32>(p.x), p.y)) {
            p = vec2<u32>(bitcast<u32>(w), j);
        }
    }
    workgroupBarrier();
    return best_butterfly(op, p, min(blocks, width)).y;
}
";
