// i32 reductions over the middle dim of a compact [outer, k, inner] tensor, exact as
// the CPU computes them (in f64, then converted as to_dtype does): sums in 64 bits
// saturated at the end, products followed past i32's range (then only their sign
// matters), maxima, minima and their first indices in i32. The float kernels
// accumulate in f32, exact only below 2^24.
// One invocation per output and part of k (`part_len` elements, under a software
// adapter's loop limit). Read from i32 elements, or from a first launch's partial
// accumulators, two words each: [outer, parts, inner].
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

struct Params {
    outer: u32,
    k: u32,
    inner: u32,
    op: u32,
    // elements (or partials) of k each invocation reduces
    part_len: u32,
    // 1: the input holds partial accumulators (two words each), 0: i32 elements
    partial_in: u32,
    // 1: write partial accumulators, 0: the i32 results
    partial_out: u32,
    // the elements a mean divides by (the first launch's k)
    count: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// i32 elements, or pairs of words (partial_in), as bits
@group(0) @binding(1) var<storage, read> input: array<u32>;
@group(0) @binding(2) var<storage, read_write> output: array<u32>;

const MIN: i32 = -2147483647 - 1;
const MAX: i32 = 2147483647;
// A product's flags (word y): past i32's range, and then negative.
const PAST: u32 = 1u;
const NEGATIVE: u32 = 2u;

// The accumulator of one element: a sum's 64 bits (low, high), a product's value and
// flags, an extreme's value and index.
fn of_element(x: i32, j: u32) -> vec2<u32> {
    switch params.op {
        case REDUCE_SUM, REDUCE_MEAN: { return vec2<u32>(bitcast<u32>(x), select(0u, 0xffffffffu, x < 0)); }
        case REDUCE_ARGMAX, REDUCE_ARGMIN: { return vec2<u32>(bitcast<u32>(x), j); }
        default: { return vec2<u32>(bitcast<u32>(x), 0u); }
    }
}

fn identity() -> vec2<u32> {
    switch params.op {
        case REDUCE_MAX, REDUCE_ARGMAX: { return vec2<u32>(bitcast<u32>(MIN), 0u); }
        case REDUCE_MIN, REDUCE_ARGMIN: { return vec2<u32>(bitcast<u32>(MAX), 0u); }
        case REDUCE_PROD: { return vec2<u32>(1u, 0u); }
        default: { return vec2<u32>(0u, 0u); }
    }
}

// |a| * |b| as 64 bits (low, high), from 16-bit halves.
fn product_u64(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let low = al * bl;
    let mid1 = al * bh;
    let mid2 = ah * bl;
    let high = ah * bh;
    let mid = mid1 + mid2;
    let mid_carry = select(0u, 0x10000u, mid < mid1);
    let lo = low + (mid << 16u);
    let lo_carry = select(0u, 1u, lo < low);
    return vec2<u32>(lo, high + (mid >> 16u) + mid_carry + lo_carry);
}

fn magnitude(x: i32) -> u32 {
    return select(bitcast<u32>(x), 0u - bitcast<u32>(x), x < 0);
}

// Products: zero absorbs everything (an f64 product past i32 times zero is zero);
// past the range only the sign is kept.
fn multiply(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let x = bitcast<i32>(a.x);
    let y = bitcast<i32>(b.x);
    if ((a.y & PAST) == 0u && x == 0) || ((b.y & PAST) == 0u && y == 0) { return vec2<u32>(0u, 0u); }
    let negative = (select(x < 0, (a.y & NEGATIVE) != 0u, (a.y & PAST) != 0u))
        != (select(y < 0, (b.y & NEGATIVE) != 0u, (b.y & PAST) != 0u));
    let past = vec2<u32>(0u, PAST | select(0u, NEGATIVE, negative));
    if ((a.y | b.y) & PAST) != 0u { return past; }
    let p = product_u64(magnitude(x), magnitude(y));
    // Within i32: below 2^31, or exactly 2^31 when negative.
    let limit = select(0x7fffffffu, 0x80000000u, negative);
    if p.y != 0u || p.x > limit { return past; }
    return vec2<u32>(select(p.x, 0u - p.x, negative), 0u);
}

fn combine(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    switch params.op {
        case REDUCE_SUM, REDUCE_MEAN: {
            let low = a.x + b.x;
            return vec2<u32>(low, a.y + b.y + select(0u, 1u, low < a.x));
        }
        case REDUCE_MAX: { return select(a, b, bitcast<i32>(b.x) > bitcast<i32>(a.x)); }
        case REDUCE_MIN: { return select(a, b, bitcast<i32>(b.x) < bitcast<i32>(a.x)); }
        // Strictly: the first extreme keeps its index (b comes later in k).
        case REDUCE_ARGMAX: { return select(a, b, bitcast<i32>(b.x) > bitcast<i32>(a.x)); }
        case REDUCE_ARGMIN: { return select(a, b, bitcast<i32>(b.x) < bitcast<i32>(a.x)); }
        default: { return multiply(a, b); }
    }
}

// The 64-bit sum as i32, saturated; a mean first divided by `count` towards zero.
fn sum_result(a: vec2<u32>) -> i32 {
    let negative = (a.y & 0x80000000u) != 0u;
    // |a| as 64 bits.
    var lo = select(a.x, 0u - a.x, negative);
    var hi = select(a.y, ~a.y + select(0u, 1u, a.x == 0u), negative);
    if (params.op == REDUCE_MEAN) {
        if (params.count == 0u) { return 0; }
        // Long division of the 64 bits by count; the quotient fits 32 bits (|mean| is
        // at most the largest |element|).
        var rem = 0u;
        var q = 0u;
        for (var bit = 0u; bit < 64u; bit++) {
            let top = select(hi >> (31u - bit), lo >> (63u - bit), bit >= 32u) & 1u;
            // rem < count < 2^32: rem * 2 + top may need a 33rd bit.
            let carry = (rem >> 31u) != 0u;
            rem = (rem << 1u) | top;
            q = q << 1u;
            if (carry || rem >= params.count) {
                rem = rem - params.count;
                q = q | 1u;
            }
        }
        lo = q;
        hi = 0u;
    }
    if (hi != 0u || lo > select(0x7fffffffu, 0x80000000u, negative)) { return select(MAX, MIN, negative); }
    return bitcast<i32>(select(lo, 0u - lo, negative));
}

fn result(a: vec2<u32>) -> i32 {
    switch params.op {
        case REDUCE_SUM, REDUCE_MEAN: { return sum_result(a); }
        case REDUCE_ARGMAX, REDUCE_ARGMIN: { return bitcast<i32>(a.y); }
        case REDUCE_PROD: {
            if ((a.y & PAST) != 0u) { return select(MAX, MIN, (a.y & NEGATIVE) != 0u); }
            return bitcast<i32>(a.x);
        }
        default: { return bitcast<i32>(a.x); }
    }
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    // An empty k still has one part, which writes the identity's result.
    let parts = max((params.k + params.part_len - 1u) / params.part_len, 1u);
    if (id >= params.outer * parts * params.inner) { return; }
    let i = id % params.inner;
    let part = (id / params.inner) % parts;
    let o = id / (params.inner * parts);
    let first = part * params.part_len;
    let end = min(params.k, first + params.part_len);
    var acc = identity();
    for (var j = first; j < end; j++) {
        let at = (o * params.k + j) * params.inner + i;
        var next: vec2<u32>;
        if (params.partial_in == 1u) {
            next = vec2<u32>(input[2u * at], input[2u * at + 1u]);
        } else {
            next = of_element(bitcast<i32>(input[at]), j);
        }
        // The first as it is: an extreme keeps its own index, even at i32's bound.
        if (j == first) {
            acc = next;
        } else {
            acc = combine(acc, next);
        }
    }
    if (params.partial_out == 1u) {
        output[2u * id] = acc.x;
        output[2u * id + 1u] = acc.y;
    } else {
        output[id] = bitcast<u32>(result(acc));
    }
}
