// Concatenation: up to CAT_PIECES pieces, side by side along one dim of a compact
// output, one invocation per element of the span they cover; each element is read
// through its piece's strides. A cat of more pieces is one launch per so many of them,
// each writing only its span, so every element is written once.
// kiln:constants workgroup cat
// Generated from kiln's op table and shader_constants.rs; do not edit.
const WORKGROUP: u32 = 256u;
const CAT_PIECES: u32 = 25u;
// kiln:end
alias T = f32;

struct Params {
    // elements of the span: the output's shape with `span` along `dim`
    numel: u32,
    rank: u32,
    dim: u32,
    // where the span starts along dim, and its length
    first: u32,
    span: u32,
    // elements after dim in the output (its stride along dim)
    inner: u32,
    pieces: u32,
    _pad0: u32,
    shape: array<vec4<u32>, 2>,
    // per piece: x its element offset, y its start within the span, z its length
    piece: array<vec4<u32>, CAT_PIECES>,
    // per piece, two vec4s: its strides
    strides: array<vec4<u32>, 2u * CAT_PIECES>,
}

@group(0) @binding(0) var<uniform> params: Params;
// kiln:pieces (kiln-wgpu's ops/cat.rs writes this section for as many pieces as the
// device lets a kernel bind, up to CAT_PIECES; as written it binds one)
// the pieces, in order along dim (unused ones bound to the last)
@group(0) @binding(1) var<storage, read> in0: array<T>;
// [params.shape], compact
@group(0) @binding(2) var<storage, read_write> output: array<T>;
// Piece p's element at `at` (bindings cannot be indexed).
fn load(p: u32, at: u32) -> T { return in0[at]; }
// kiln:pieces end

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WORKGROUP + lid;
    if (i >= params.numel) { return; }
    // The piece: the last whose start along dim is at or before this element's (the
    // first starts at 0), by halving.
    let along = (i / params.inner) % params.span;
    var p = 0u;
    var past = params.pieces;
    while (past - p > 1u) {
        let mid = (p + past) / 2u;
        if (params.piece[mid].y <= along) { p = mid; } else { past = mid; }
    }
    var rem = i;
    var src = params.piece[p].x;
    var dst = 0u;
    var out_stride = 1u;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let full = params.shape[d / 4][d % 4];
        let on_dim = u32(d) == params.dim;
        let size = select(full, params.span, on_dim);
        let c = rem % size;
        rem = rem / size;
        let stride = params.strides[p * 2u + u32(d) / 4u][d % 4];
        src += select(c, c - params.piece[p].y, on_dim) * stride;
        dst += select(c, params.first + c, on_dim) * out_stride;
        out_stride *= full;
    }
    output[dst] = load(p, src);
}
