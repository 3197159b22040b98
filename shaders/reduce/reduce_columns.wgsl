// Reduces the middle dim of a compact [outer, k, inner] tensor (inner > 1) in one
// dispatch. A workgroup holds `WORKGROUP / lanes` neighbouring outputs (columns, at
// least 8) and `lanes` invocations for each, every lane reducing one contiguous segment
// of k: neighbouring invocations read neighbouring elements, so the loads coalesce on a
// GPU, no transposed copy is needed first, and few outputs over a long k still fill the
// GPU. The first lane of each column then combines the lanes' partials in order, so
// the result depends on the shape alone, never on the adapter. Sums run in chunks of
// 16 (four partial sums, four rows loaded a step) added into a total, which keeps the
// rounding error near that of a tree.
// Op codes are the REDUCE_* constants from kiln's op table; math in f32.
// kiln:constants workgroup reduce_ops
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const REDUCE_SUM: u32 = 0u;
const REDUCE_MEAN: u32 = 1u;
const REDUCE_MAX: u32 = 2u;
const REDUCE_MIN: u32 = 3u;
const REDUCE_PROD: u32 = 4u;
const REDUCE_ARGMAX: u32 = 5u;
const REDUCE_ARGMIN: u32 = 6u;
// kiln:end
alias T = f32;

struct Params {
    outer: u32,
    k: u32,
    inner: u32,
    op: u32,
    // invocations per output, a power of two dividing WORKGROUP
    lanes: u32,
    // rows of a run each lane reduces (the last lanes may have fewer or none)
    segment: u32,
    // k's rows cut into `splits` runs of `split_len` (the last shorter), each reduced
    // to an output of its own: [outer, splits, inner]; 1 and k for one run. A mean's
    // runs divide by k, so that their sum is the mean.
    splits: u32,
    split_len: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [outer, k, inner]
// kiln:load (a fused prologue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(1) var<storage, read> input: array<T>;
fn load(i: u32) -> f32 { return f32(input[i]); }
// kiln:load end
// [outer, inner]
// kiln:store (a fused epilogue may replace this section: see kiln-wgpu's fusion)
@group(0) @binding(2) var<storage, read_write> output: array<T>;
fn store(i: u32, v: f32) { output[i] = T(v); }
// kiln:store end

const CHUNK: u32 = 16u;

// A lane's result: the value, and for max and min the largest magnitude's bits seen
// (WGSL's max and min may drop a NaN; bits above infinity's mean one was there).
var<workgroup> partial: array<f32, WORKGROUP>;
var<workgroup> magnitude: array<u32, WORKGROUP>;

// Reduces `rows` elements from `at` on, `params.inner` apart, into partial[t].
fn fold(t: u32, start: u32, rows: u32) {
    var at = start;
    var r: f32;
    var bits = 0u;
    switch params.op {
        case REDUCE_MAX: {
            r = bitcast<f32>(0xff800000u);
            for (var j = 0u; j < rows; j++) {
                let x = load(at);
                r = max(r, x);
                bits = max(bits, bitcast<u32>(x) & 0x7fffffffu);
                at += params.inner;
            }
        }
        case REDUCE_MIN: {
            r = bitcast<f32>(0x7f800000u);
            for (var j = 0u; j < rows; j++) {
                let x = load(at);
                r = min(r, x);
                bits = max(bits, bitcast<u32>(x) & 0x7fffffffu);
                at += params.inner;
            }
        }
        case REDUCE_PROD: {
            r = 1.0;
            for (var j = 0u; j < rows; j++) { r *= load(at); at += params.inner; }
        }
        case REDUCE_SUM, REDUCE_MEAN, default: {
            // Four rows' loads in flight a step, into four partial sums: one load a
            // step left each lane waiting on memory in turn (the row kernels' lesson).
            let step = params.inner;
            r = 0.0;
            for (var j0 = 0u; j0 < rows; j0 += CHUNK) {
                let end = min(j0 + CHUNK, rows);
                var part = vec4<f32>(0.0);
                var j = j0;
                for (; j + 3u < end; j += 4u) {
                    part += vec4<f32>(load(at), load(at + step), load(at + 2u * step), load(at + 3u * step));
                    at += 4u * step;
                }
                for (; j < end; j++) { part.x += load(at); at += step; }
                r += (part.x + part.y) + (part.z + part.w);
            }
        }
    }
    partial[t] = r;
    magnitude[t] = bits;
}

// Combines the partials of column `col` (lanes `cols` apart), in lane order.
fn combine(col: u32, cols: u32) -> f32 {
    var r = partial[col];
    var bits = magnitude[col];
    switch params.op {
        case REDUCE_MAX: {
            for (var l = 1u; l < params.lanes; l++) {
                r = max(r, partial[col + l * cols]);
                bits = max(bits, magnitude[col + l * cols]);
            }
        }
        case REDUCE_MIN: {
            for (var l = 1u; l < params.lanes; l++) {
                r = min(r, partial[col + l * cols]);
                bits = max(bits, magnitude[col + l * cols]);
            }
        }
        case REDUCE_PROD: {
            for (var l = 1u; l < params.lanes; l++) { r *= partial[col + l * cols]; }
        }
        case REDUCE_SUM, REDUCE_MEAN, default: {
            for (var l0 = 1u; l0 < params.lanes; l0 += CHUNK) {
                var part = 0.0;
                for (var l = l0; l < min(l0 + CHUNK, params.lanes); l++) { part += partial[col + l * cols]; }
                r += part;
            }
            if (params.op == REDUCE_MEAN) { r = r / f32(params.k); }
        }
    }
    if (bits > 0x7f800000u) { r = bitcast<f32>(0x7fc00000u); }
    return r;
}

// Workgroup `w` of the reduction: outputs w * cols.. of it.
fn reduce_columns(w: u32, t: u32) {
    let cols = WORKGROUP / params.lanes;
    let col = t % cols;
    let lane = t / cols;
    let e = w * cols + col;
    let live = e < params.outer * params.splits * params.inner;
    let run = e / params.inner;
    let o = run / params.splits;
    let start = (run % params.splits) * params.split_len;
    let end = min(start + params.split_len, params.k);
    let first = start + lane * params.segment;
    var rows = 0u;
    if (live && first < end) { rows = min(params.segment, end - first); }
    let i = e % params.inner;
    fold(t, (o * params.k + first) * params.inner + i, rows);
    workgroupBarrier();
    if (live && lane == 0u) { store(e, combine(col, cols)); }
}

// kiln:entry (kiln-wgpu's ops/column_group.rs replaces the entry point to run several
// reductions in one launch)
@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    reduce_columns(wid.x + wid.y * groups.x, t);
}
