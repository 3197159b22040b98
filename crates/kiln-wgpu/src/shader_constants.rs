//! The numbers the launchers and the WGSL kernels must agree on: workgroup and tile
//! sizes, and the op codes of kiln-core's op table; and the few helper functions several
//! kernels share. Each is defined once, here or in the table.
//!
//! A shader that needs some of them carries a block naming their groups:
//!
//! ```text
//! // kiln:constants workgroup unary_ops
//! // (generated lines)
//! // kiln:end
//! ```
//!
//! The generated lines are kept in the file so that it is valid WGSL on its own, but
//! what runs never depends on them: `expand` replaces the block with text generated
//! afresh whenever a kernel is built. `tests/shaders.rs` checks that each file's copy
//! is current; `KILN_BLESS=1 cargo test --test shaders` rewrites the copies.

use crate::matmul_rhs::MatmulRhs;
use crate::norm_stats::{norm_stats, norm_stats_serial, NORM_CHUNK};
use crate::row_reduction::RowReduction;
use kiln_core::{BinaryOp, Error, OpInfo, ReduceOp, Result, UnaryOp};

/// Threads per workgroup of every one-thread-per-element (1-D) kernel.
pub const WORKGROUP: u32 = 256;
/// Loads each invocation of the row kernels (`reduce.wgsl`, `softmax.wgsl`,
/// `layer_norm.wgsl`) keeps in flight per iteration: `ROW_LOADS_ONLY`'s `load4`, written
/// out rather than looped (registers indexed by a loop counter left registers on an
/// H200).
pub const ROW_LOADS: u32 = 4;
const _: () = assert!(ROW_LOADS == 4, "load4, store4 and ROW_HELD move one vec4");
/// The row kernels' loads of `ROW_LOADS` elements `lanes` apart, over their own `load`
/// (which fusion may replace); and their stores (`ROW_STORES`) over their own `store`.
const ROW_LOADS_ONLY: &str = "\
fn load4(at: u32, lanes: u32) -> vec4<f32> {
    return vec4<f32>(load(at), load(at + lanes), load(at + 2u * lanes), load(at + 3u * lanes));
}
";
const ROW_STORES: &str = "\
fn store4(at: u32, lanes: u32, v: vec4<f32>) {
    store(at, v.x);
    store(at + lanes, v.y);
    store(at + 2u * lanes, v.z);
    store(at + 3u * lanes, v.w);
}
";
/// Where batch norm's channel kernels (`batch_norm_stats.wgsl`,
/// `batch_norm_backward_sums.wgsl`) find a channel's elements, written once for both:
/// the channel's elements are a row to them, read where they lie.
const CHANNEL_AT: &str = "\
// The channel this invocation reads, of a compact [outer, channels, inner] tensor.
var<private> channel: u32;
// Where element j of the channel lies: place (j / inner, j % inner) of its [outer, inner].
fn channel_at(j: u32) -> u32 {
    let o = j / params.inner;
    return (o * params.channels + channel) * params.inner + j - o * params.inner;
}
";
/// One step of an exponential moving average (kiln-core's `MovingAverageSpec`), written
/// once for the optimizers' moving average (`moving_average.wgsl`) and batch norm's
/// running statistics, which its statistics' kernels move as they write the batch's.
const MOVING_AVERAGE: &str = "\
fn moving_average(decay: f32, one_minus_decay: f32, average: f32, value: f32) -> f32 {
    return decay * average + one_minus_decay * value;
}
";
/// Batch norm's running statistics moved where its statistics' kernels write the
/// batch's (`batch_norm_stats.wgsl`, `batch_norm_combine.wgsl`: their params' `running`,
/// `decay`, `one_minus_decay` and `var_scale`, and bindings `running_means` and
/// `running_vars`), written once for both.
const MOVE_RUNNING: &str = "\
// Moves channel `c`'s running mean and variance toward the batch's, with `running`.
fn move_running(c: u32, batch_mean: T, batch_var: T) {
    if (params.running != 1u) {
        return;
    }
    let d = params.decay;
    let e = params.one_minus_decay;
    running_means[c] = T(moving_average(d, e, f32(running_means[c]), f32(batch_mean)));
    let value = params.var_scale * f32(batch_var);
    running_vars[c] = T(moving_average(d, e, f32(running_vars[c]), value));
}
";
/// The passes of the row kernels that read a row more than once (`softmax.wgsl`,
/// `layer_norm.wgsl` and their backwards), over their own `load` and `store`: a
/// stretch is `ROW_LOADS` elements `lanes` apart. A lane holds its first two in
/// registers through every pass and loads the rest in each, so rows of up to
/// `2 * ROW_LOADS * lanes` elements (all up to 8 x WORKGROUP, by `row_lanes`) are read
/// from memory, and through any fused prologue, once.
const ROW_HELD: &str = "\
// Where a lane's stretch of a row lies: elements s, s + lanes, s + 2 lanes, s + 3 lanes of
// the `len` from `base`, `count` of them inside the row. Places past the row are its last
// element, so that every load reads the row; an empty row (a spare slot) loads nothing,
// and its places are `base` (column 0).
struct Stretch {
    at: vec4<u32>,
    count: u32,
}
fn stretch_at(base: u32, s: u32, lanes: u32, len: u32) -> Stretch {
    let places = vec4<u32>(s) + vec4<u32>(0u, 1u, 2u, 3u) * lanes;
    let inside = places < vec4<u32>(len);
    var t = Stretch(vec4<u32>(base), 0u);
    if (inside.x) {
        t.count = u32(inside.x) + u32(inside.y) + u32(inside.z) + u32(inside.w);
        t.at = vec4<u32>(base) + min(places, vec4<u32>(len - 1u));
    }
    return t;
}
fn stretch_load(t: Stretch) -> vec4<f32> {
    if (t.count == 0u) { return vec4<f32>(0.0); }
    return vec4<f32>(load(t.at.x), load(t.at.y), load(t.at.z), load(t.at.w));
}
// The values of stretch `t`, which starts at `s`: from registers for the lane's first two
// (`x` from `lane`, `x2` from `lane + step`), else loaded.
fn held_or_load(t: Stretch, s: u32, lane: u32, step: u32, x: vec4<f32>, x2: vec4<f32>) -> vec4<f32> {
    if (s == lane) { return x; }
    if (s == lane + step) { return x2; }
    return stretch_load(t);
}
// `v` where the stretch holds the row's elements, `fill` past the row.
fn stretch_only(t: Stretch, v: vec4<f32>, fill: f32) -> vec4<f32> {
    return select(vec4<f32>(fill), v, vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(t.count));
}
fn stretch_store(t: Stretch, v: vec4<f32>) {
    if (t.count > 0u) { store(t.at.x, v.x); }
    if (t.count > 1u) { store(t.at.y, v.y); }
    if (t.count > 2u) { store(t.at.z, v.z); }
    if (t.count > 3u) { store(t.at.w, v.w); }
}
";
/// The backward row kernels' second input (the output's gradient), over their own
/// `load_grad`, as `ROW_HELD` gives the first: after `ROW_HELD`.
const ROW_HELD_GRAD: &str = "\
// The output gradient's values of stretch `t`, as `stretch_load` and `held_or_load` give
// the first input's.
fn grad_load(t: Stretch) -> vec4<f32> {
    if (t.count == 0u) { return vec4<f32>(0.0); }
    return vec4<f32>(load_grad(t.at.x), load_grad(t.at.y), load_grad(t.at.z), load_grad(t.at.w));
}
fn grad_held_or_load(t: Stretch, s: u32, lane: u32, step: u32, g: vec4<f32>, g2: vec4<f32>) -> vec4<f32> {
    if (s == lane) { return g; }
    if (s == lane + step) { return g2; }
    return grad_load(t);
}
";
/// NaN tests, for the kernels that propagate NaN as PyTorch does.
const IS_NAN: &str = "\
// NaN by its bits: WGSL lets implementations assume that float arithmetic meets no
// NaN, so `x != x` may be folded away.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}
";
/// f32 to i32 as the CPU converts (Rust's `as`), for `cast.wgsl`: WGSL's `i32()`
/// saturates at the f32 below 2^31 (2147483520) and, from f16, at f16's finite range,
/// and lavapipe took NaN to i32's least.
const TO_I32: &str = "\
// Towards zero, saturating at i32's own bounds; NaN (by its bits) to 0.
fn to_i32(x: f32) -> i32 {
    if ((bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u) { return 0; }
    if (x >= 2147483648.0) { return 2147483647; }
    return i32(max(x, -2147483648.0));
}
";
/// The elementwise kernels' real functions at the edges of f32, which WGSL leaves
/// undefined (`pow` of a base <= 0, `atan2(0, 0)`, NaN and infinity anywhere), written
/// to give what C's `pow` and `atan2` and IEEE comparisons give, as the CPU backend and
/// PyTorch do. Shared by `unary.wgsl`, `binary.wgsl` and every fused kernel
/// (`fusion/wgsl.rs`); after `IS_NAN`.
const REAL_EDGES: &str = "\
fn is_inf(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}
fn sign_bit(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x80000000u) != 0u;
}
// Neither is NaN: a comparison with NaN is false, but for `!=`.
fn ordered(a: f32, b: f32) -> bool {
    return !(is_nan(a) || is_nan(b));
}
fn pow_real(x: f32, p: f32) -> f32 {
    // 1 even against NaN, as C's pow.
    if (p == 0.0 || x == 1.0) { return 1.0; }
    if (is_nan(x) || is_nan(p)) { return bitcast<f32>(0x7fc00000u); }
    let inf = bitcast<f32>(0x7f800000u);
    if (is_inf(p)) {
        if (abs(x) == 1.0) { return 1.0; }
        return select(0.0, inf, (abs(x) > 1.0) == (p > 0.0));
    }
    let is_int = floor(p) == p;
    let odd = is_int && (abs(p) % 2.0) == 1.0;
    // A zero or infinite base: 0 or inf by the signs, negative for a negative base
    // to an odd power.
    if (x == 0.0 || is_inf(x)) {
        let r = select(0.0, inf, (x == 0.0) == (p < 0.0));
        return select(r, -r, odd && sign_bit(x));
    }
    if (x > 0.0) { return pow(x, p); }
    if (!is_int) { return bitcast<f32>(0x7fc00000u); }
    let r = pow(-x, p);
    return select(r, -r, odd);
}
fn atan2_real(y: f32, x: f32) -> f32 {
    if (is_nan(y) || is_nan(x)) { return bitcast<f32>(0x7fc00000u); }
    // Both zero: 0 or pi by the sign of x, with the sign of y.
    if (y == 0.0 && x == 0.0) {
        let r = select(0.0, 3.1415927, sign_bit(x));
        return select(r, -r, sign_bit(y));
    }
    return atan2(y, x);
}
";
/// tanh as the CPU gives it at the edges, for the elementwise kernels (in
/// `real_edges`) and the recurrent cells (`cell_updates`); after `IS_NAN`.
const TANH_REAL: &str = "\
// NaN through (WGSL leaves it to the driver: GL's llvmpipe gave -1), and +-1 past 15
// (some drivers compute tanh as a ratio of exponentials that overflows to NaN).
fn tanh_real(x: f32) -> f32 {
    if (is_nan(x)) { return x; }
    return select(tanh(x), sign(x), abs(x) > 15.0);
}
";
/// The functions `REAL_EDGES` brings, with the `is_nan` they need: for fused kernels.
pub(crate) fn real_edges() -> String {
    format!("{IS_NAN}{REAL_EDGES}{TANH_REAL}")
}
/// `tanh_real` with the `is_nan` it needs.
pub(crate) fn tanh_real() -> String {
    format!("{IS_NAN}{TANH_REAL}")
}
/// The reductions' combining step, with PyTorch's NaN rules, for the row kernels and
/// their `row_total` (`row_reduction.rs`), after `IS_NAN`.
const REDUCE_COMBINE: &str = "\
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
";
/// Pieces one launch of the cat kernel copies at most, where the device lets a kernel
/// bind them and its output (`ops/cat.rs`): the most whose params (48 bytes a piece)
/// fit in a fused kernel's, the slot every launch's params take.
pub const CAT_PIECES: u32 = 25;
/// Invocations per workgroup of the kernels that give each invocation a whole row or
/// column (`*_rows_serial`, `reduce_columns`).
pub const SERIAL_WORKGROUP: u32 = 64;
/// The `main_vec4` elementwise entry points: invocations per workgroup, and vec4s
/// each invocation handles.
pub const VEC4_WORKGROUP: u32 = 64;
pub const VEC4_PER_INVOCATION: u32 = 4;
/// Side of the square output tile of the tiled matmul; each of its `TILE/4 x TILE/4`
/// threads computes a 4x4 block.
pub const TILE: u32 = 64;
/// The tile of the same kernel built small (`Kernel::MatmulSmallTiled`): four times the
/// workgroups, for products whose 64x64 tiles leave most of a large GPU's cores idle.
pub const SMALL_TILE: u32 = 32;
/// The register-blocked matmul (`blocked*.wgsl`): side of its square output tile (16x16
/// threads of 8x8 outputs each), and the k extent of one double-buffered slice.
pub const BLOCKED_TILE: u32 = 128;
pub const BLOCKED_SLICE: u32 = 8;
/// The uniform-lhs matmul: rows of lhs per block (the kernel keeps one vec4 accumulator
/// per row), vec4s per block (64 KiB, the uniform binding), invocations per workgroup.
pub const BLOCK_ROWS: u32 = 32;
pub const BLOCK_VEC4S: u32 = 4096;
pub const UNIFORM_LHS_WORKGROUP: u32 = 8;
/// The fused attention kernels (`shaders/attention/`): rows (queries, or keys) per
/// workgroup, an invocation each; rows of the other operand per tile staged in
/// workgroup memory; and the most vec4s of features a row may have (a head of up to
/// 64 features: the arrays each invocation keeps in registers).
pub const ATTENTION_ROWS: u32 = 64;
pub const ATTENTION_TILE: u32 = 16;
pub const ATTENTION_QUADS: u32 = 16;
/// The same kernels built for heads of up to 32 features (`Kernel::narrow_attention`):
/// a key's kernel keeps four rows of features a thread, and 64 vec4s of them would
/// not all fit in registers.
pub const ATTENTION_NARROW_QUADS: u32 = 8;
/// vec4s of a row's sums that the lanes of a split row (`AttentionSplit::Split`) add
/// up through workgroup memory at a time: 4 KiB of it, and a divisor of both builds'
/// `ATTENTION_QUADS`.
pub const ATTENTION_MERGE_QUADS: u32 = 4;
const _: () = assert!(ATTENTION_QUADS.is_multiple_of(ATTENTION_MERGE_QUADS));
const _: () = assert!(ATTENTION_NARROW_QUADS.is_multiple_of(ATTENTION_MERGE_QUADS));
/// What the attention kernels share: where a head's rows start, which keys a query
/// sees, rows read and written four features at a time (each kernel names the buffers
/// it reads in `element`, and writes its one output through `put`), and how the lanes
/// of a split row add up.
const ATTENTION_IO: &str = "\
fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}
fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}
// By its bits, as WGSL may assume no infinities.
fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == 0xff800000u;
}
// Rows (queries, or keys) a workgroup takes: each is walked by params.lanes
// neighbouring invocations, its lanes, which take every lanes-th row of the other
// operand and add up what they found at the end (`sum_lanes`).
fn block_rows() -> u32 {
    return ATTENTION_ROWS / params.lanes;
}
// Invocation `lid`'s row within its workgroup's block, and its lane among the row's.
fn row_and_lane(lid: u32) -> vec2<u32> {
    return vec2<u32>(lid / params.lanes, lid % params.lanes);
}
// The head and first row of this workgroup's block of block_rows() rows (of `rows` a
// head); past the last head for the workgroups past the end.
fn block_of(wid: vec3<u32>, groups: vec3<u32>, rows: u32) -> vec2<u32> {
    let per = block_rows();
    let blocks = (rows + per - 1u) / per;
    let group = wid.x + wid.y * groups.x;
    return vec2<u32>(group / blocks, (group % blocks) * per);
}
// Keys query i sees: a causal query those up to its own position.
fn keys_seen(i: u32) -> u32 {
    if (params.causal != 0u) {
        return min(i + 1u, params.keys);
    }
    return params.keys;
}
fn head_start(strides: vec4<u32>, offset: u32, head: u32) -> u32 {
    return offset + (head / params.batch1) * strides.x + (head % params.batch1) * strides.y;
}
// Features 4c..4c+3 of row `row` of operand `which`, zeros past `features`.
fn quad(which: u32, strides: vec4<u32>, start: u32, row: u32, c: u32, features: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    let at = start + row * strides.z;
    let f = 4u * c;
    if (f < features) { r.x = element(which, at + f * strides.w); }
    if (f + 1u < features) { r.y = element(which, at + (f + 1u) * strides.w); }
    if (f + 2u < features) { r.z = element(which, at + (f + 2u) * strides.w); }
    if (f + 3u < features) { r.w = element(which, at + (f + 3u) * strides.w); }
    return r;
}
// Features 4c.. of row `row` of head `head` of the output placed at `strides` and
// `offset`, those before `features`.
fn store_quad(strides: vec4<u32>, offset: u32, head: u32, row: u32, c: u32, features: u32, x: vec4<f32>) {
    let at = head_start(strides, offset, head) + row * strides.z;
    let f = 4u * c;
    if (f < features) { put(at + f * strides.w, x.x); }
    if (f + 1u < features) { put(at + (f + 1u) * strides.w, x.y); }
    if (f + 2u < features) { put(at + (f + 2u) * strides.w, x.z); }
    if (f + 3u < features) { put(at + (f + 3u) * strides.w, x.w); }
}
var<workgroup> lane_sums: array<array<vec4<f32>, ATTENTION_MERGE_QUADS>, ATTENTION_ROWS>;
// `acc` times `weight`, summed over the row's lanes for lane 0 (in lane order, so the
// bits do not depend on timing), as it was for the others. From uniform control flow
// (it has barriers), with params.lanes > 1. The arrays pass by value: through a
// pointer, llvmpipe kept them in memory all through the kernels' loops, split or not.
fn sum_lanes(acc: array<vec4<f32>, ATTENTION_QUADS>, weight: f32, lid: u32) -> array<vec4<f32>, ATTENTION_QUADS> {
    let lanes = params.lanes;
    var sum = acc;
    for (var c0 = 0u; c0 < ATTENTION_QUADS; c0 += ATTENTION_MERGE_QUADS) {
        workgroupBarrier();
        for (var cc = 0u; cc < ATTENTION_MERGE_QUADS; cc++) {
            lane_sums[lid][cc] = acc[c0 + cc] * weight;
        }
        workgroupBarrier();
        if (lid % lanes == 0u) {
            for (var cc = 0u; cc < ATTENTION_MERGE_QUADS; cc++) {
                var s = lane_sums[lid][cc];
                for (var x = 1u; x < lanes; x++) {
                    s += lane_sums[lid + x][cc];
                }
                sum[c0 + cc] = s;
            }
        }
    }
    return sum;
}
";
/// The tiles of keys and values the forward and query-gradient attention kernels
/// stage, after `ATTENTION_IO` (reading with the kernel's `K` and `V`).
const ATTENTION_KEYS: &str = "\
var<workgroup> k_tile: array<array<vec4<f32>, ATTENTION_QUADS>, ATTENTION_TILE>;
var<workgroup> v_tile: array<array<vec4<f32>, ATTENTION_QUADS>, ATTENTION_TILE>;
// Keys t0.. into the tiles (past the last key: copies of it, never used).
fn stage_keys(t0: u32, head: u32, lid: u32) {
    let ks = head_start(params.k_strides, params.offsets.y, head);
    let vs = head_start(params.v_strides, params.offsets.z, head);
    for (var e = lid; e < ATTENTION_TILE * ATTENTION_QUADS; e += ATTENTION_ROWS) {
        let jj = e / ATTENTION_QUADS;
        let c = e % ATTENTION_QUADS;
        let j = min(t0 + jj, params.keys - 1u);
        k_tile[jj][c] = quad(K, params.k_strides, ks, j, c, params.head_dim);
        v_tile[jj][c] = quad(V, params.v_strides, vs, j, c, params.value_dim);
    }
}
";
/// Invocations per workgroup of the FMA roofline probe.
pub const FMA_WORKGROUP: u32 = 64;

const BEGIN: &str = "// kiln:constants";
const END: &str = "// kiln:end";

/// What one kernel's build chooses among the variants its file is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Build {
    /// How the `row_*` groups combine a row's lanes.
    pub rows: RowReduction,
    /// The tiled matmul's `TILE`.
    pub tile: u32,
    /// How the tiled and blocked matmuls read their rhs (`matmul_rhs`, `blocked_rhs`).
    pub rhs: MatmulRhs,
    /// The attention kernels' `ATTENTION_QUADS`.
    pub attention_quads: u32,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            rows: RowReduction::Workgroup,
            tile: TILE,
            rhs: MatmulRhs::Strided,
            attention_quads: ATTENTION_QUADS,
        }
    }
}

/// The constants of one group, by WGSL name, and the functions it brings, as `build`
/// chooses.
fn group(name: &str, build: Build) -> Option<(Vec<(String, u32)>, String)> {
    let rows = build.rows;
    if name == "row_loads" {
        return Some((
            vec![("ROW_LOADS".to_string(), ROW_LOADS)],
            format!("{ROW_LOADS_ONLY}{ROW_STORES}"),
        ));
    }
    // For kernels whose outputs are not elements of rows (batch norm's channel sums).
    if name == "row_loads_only" {
        return Some((
            vec![("ROW_LOADS".to_string(), ROW_LOADS)],
            ROW_LOADS_ONLY.to_string(),
        ));
    }
    if name == "row_held" {
        return Some((
            vec![("ROW_LOADS".to_string(), ROW_LOADS)],
            ROW_HELD.to_string(),
        ));
    }
    if name == "row_held_grad" {
        return Some((Vec::new(), ROW_HELD_GRAD.to_string()));
    }
    if name == "to_i32" {
        return Some((Vec::new(), TO_I32.to_string()));
    }
    if name == "real_edges" {
        return Some((Vec::new(), real_edges()));
    }
    if name == "reduce_combine" {
        return Some((Vec::new(), format!("{IS_NAN}{REDUCE_COMBINE}")));
    }
    if name == "attention" {
        let sizes = vec![
            ("ATTENTION_ROWS".to_string(), ATTENTION_ROWS),
            ("ATTENTION_TILE".to_string(), ATTENTION_TILE),
            ("ATTENTION_QUADS".to_string(), build.attention_quads),
            ("ATTENTION_MERGE_QUADS".to_string(), ATTENTION_MERGE_QUADS),
        ];
        return Some((sizes, format!("{IS_NAN}{ATTENTION_IO}")));
    }
    if name == "attention_keys" {
        return Some((Vec::new(), ATTENTION_KEYS.to_string()));
    }
    if let Some(functions) = crate::cell_updates::group(name) {
        return Some((Vec::new(), functions));
    }
    if name == "channel_at" {
        return Some((Vec::new(), CHANNEL_AT.to_string()));
    }
    if name == "moving_average" {
        return Some((Vec::new(), MOVING_AVERAGE.to_string()));
    }
    if name == "running_statistics" {
        return Some((Vec::new(), format!("{MOVING_AVERAGE}{MOVE_RUNNING}")));
    }
    if name == "norm_stats" {
        return Some((Vec::new(), norm_stats()));
    }
    if name == "norm_stats_serial" {
        let chunk = vec![("NORM_CHUNK".to_string(), NORM_CHUNK)];
        return Some((chunk, norm_stats_serial()));
    }
    if let Some(functions) = build.rhs.group(name) {
        return Some((Vec::new(), functions));
    }
    if let Some(functions) = rows.group(name) {
        return Some((Vec::new(), functions));
    }
    let sizes = |list: &[(&str, u32)]| list.iter().map(|&(n, v)| (n.to_string(), v)).collect();
    let ops = |table: &[OpInfo]| table.iter().map(|o| (o.wgsl_constant(), o.code)).collect();
    let constants = match name {
        "workgroup" => sizes(&[("WORKGROUP", WORKGROUP)]),
        "serial_workgroup" => sizes(&[("SERIAL_WORKGROUP", SERIAL_WORKGROUP)]),
        "vec4_elementwise" => sizes(&[
            ("VEC4_WORKGROUP", VEC4_WORKGROUP),
            ("VEC4_PER_INVOCATION", VEC4_PER_INVOCATION),
        ]),
        "matmul_tiled" => sizes(&[("TILE", build.tile)]),
        "matmul_blocked" => sizes(&[
            ("BLOCKED_TILE", BLOCKED_TILE),
            ("BLOCKED_SLICE", BLOCKED_SLICE),
        ]),
        "matmul_uniform_lhs" => sizes(&[
            ("BLOCK_ROWS", BLOCK_ROWS),
            ("BLOCK_VEC4S", BLOCK_VEC4S),
            ("UNIFORM_LHS_WORKGROUP", UNIFORM_LHS_WORKGROUP),
        ]),
        "fma_probe" => sizes(&[("FMA_WORKGROUP", FMA_WORKGROUP)]),
        "cat" => sizes(&[("CAT_PIECES", CAT_PIECES)]),
        "unary_ops" => ops(UnaryOp::INFO),
        "binary_ops" => ops(BinaryOp::INFO),
        "reduce_ops" => ops(ReduceOp::INFO),
        _ => return None,
    };
    Some((constants, String::new()))
}

/// The block for `groups`, from its first line to its last, each ending in a newline.
pub fn render_block(groups: &[&str]) -> Result<String> {
    render_block_for(groups, Build::default())
}

/// As `render_block`, as `build` chooses.
pub fn render_block_for(groups: &[&str], build: Build) -> Result<String> {
    let mut out = format!("{BEGIN} {}\n", groups.join(" "));
    out.push_str("// Generated from kiln's op table and shader_constants.rs; do not edit.\n");
    for &g in groups {
        let Some((constants, functions)) = group(g, build) else {
            return Err(Error::InvalidArgument {
                op: "shader constants",
                reason: format!("unknown constant group `{g}`"),
            });
        };
        for (name, value) in constants {
            out.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        out.push_str(&functions);
    }
    out.push_str(END);
    out.push('\n');
    Ok(out)
}

/// Where a shader's block lies: its byte range and its groups. `None` when it has none.
pub fn find_block(source: &str) -> Result<Option<(std::ops::Range<usize>, Vec<&str>)>> {
    let Some(start) = source.find(BEGIN) else {
        return Ok(None);
    };
    let malformed = |reason: &str| Error::InvalidArgument {
        op: "shader constants",
        reason: reason.to_string(),
    };
    let line_end = source[start..]
        .find('\n')
        .map(|i| start + i)
        .ok_or_else(|| malformed("a constants block has no lines"))?;
    let groups = source[start + BEGIN.len()..line_end]
        .split_whitespace()
        .collect();
    let end = source[line_end..]
        .find(END)
        .map(|i| line_end + i + END.len())
        .ok_or_else(|| malformed("a constants block has no `// kiln:end`"))?;
    let end = if source[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    Ok(Some((start..end, groups)))
}

/// `source` with its constants block generated afresh.
pub fn expand(source: &str) -> Result<String> {
    expand_for(source, Build::default())
}

/// As `expand`, as `build` chooses.
pub fn expand_for(source: &str, build: Build) -> Result<String> {
    match find_block(source)? {
        None => Ok(source.to_string()),
        Some((range, groups)) => {
            let block = render_block_for(&groups, build)?;
            Ok(format!(
                "{}{block}{}",
                &source[..range.start],
                &source[range.end..]
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_replaced_by_the_table_values() {
        let stale = "// head\n// kiln:constants workgroup binary_ops\nconst WORKGROUP: u32 = 1u;\n// kiln:end\nfn f() {}\n";
        let fresh = expand(stale).unwrap();
        assert!(fresh.starts_with("// head\n// kiln:constants workgroup binary_ops\n"));
        assert!(fresh.contains("const WORKGROUP: u32 = 256u;\n"));
        assert!(fresh.contains(&format!(
            "const BINARY_GE: u32 = {}u;\n",
            BinaryOp::Ge.code()
        )));
        assert!(fresh.ends_with("// kiln:end\nfn f() {}\n"));
        assert_eq!(expand(&fresh).unwrap(), fresh);
    }

    #[test]
    fn unknown_groups_and_open_blocks_are_errors() {
        assert!(expand("// kiln:constants nonsense\n// kiln:end\n").is_err());
        assert!(expand("// kiln:constants workgroup\nconst X: u32 = 1u;\n").is_err());
    }
}
