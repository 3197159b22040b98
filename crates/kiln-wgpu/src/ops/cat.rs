//! Concatenation: pieces side by side along one dim of a new compact tensor, one launch
//! of `shaders/elementwise/cat.wgsl` per `pieces_per_launch` of them, where a copy per
//! piece into a zeroed tensor took a fill and a launch each (an LSTM stacks its 64
//! steps' outputs, and its backward pass stacks 64 steps' gradients twice over). The
//! kernel is built for as many pieces as the device lets it bind, up to `CAT_PIECES`:
//! WebGPU's default of eight storage buffers per stage held a launch to seven pieces,
//! ten launches a stack; lavapipe allows 32, hardware GPUs more.

use crate::byte_span::ByteSpan;
use crate::device::GpuDevice;
use crate::fusion::FusedParams;
use crate::kernels::Kernel;
use crate::launch::Bindings;
use crate::params::{to_u32, CatParams};
use crate::shader_constants::CAT_PIECES;
use crate::storage::GpuStorage;
use bytemuck::Zeroable;
use kiln_core::{DType, Error, Layout, Result, Shape, MAX_RANK};
use std::fmt::Write;
use std::time::Instant;

// Every launch's params take a slot the size of the largest struct: the cat's stays
// within the fused kernels'.
const _: () = assert!(std::mem::size_of::<CatParams>() <= std::mem::size_of::<FusedParams>());

/// The section of `cat.wgsl` that binds the pieces and the output.
const PIECES: &str = "// kiln:pieces";
const PIECES_END: &str = "// kiln:pieces end";

/// Pieces one launch takes on `device`: one storage buffer is the output.
fn pieces_per_launch(device: &GpuDevice) -> Result<usize> {
    let limit = device.inner.limits.max_storage_buffers_per_shader_stage as usize;
    match limit.saturating_sub(1).min(CAT_PIECES as usize) {
        0 => Err(Error::Unsupported {
            op: "cat",
            reason: format!("the adapter lets a kernel bind {limit} storage buffers; cat needs 2"),
        }),
        n => Ok(n),
    }
}

/// `cat.wgsl` for `dtype`, its pieces section binding `n` pieces (bindings 1..=n) and
/// the output (binding n + 1).
pub(crate) fn source(dtype: DType, n: usize) -> Result<String> {
    let kernel = Kernel::Cat;
    let text = kernel.specialise(&[dtype])?;
    let mut s = format!("// Built for {n} pieces by kiln-wgpu's ops/cat.rs.\n");
    for p in 0..n {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read> in{p}: array<T>;",
            p + 1
        );
    }
    let _ = writeln!(
        s,
        "@group(0) @binding({}) var<storage, read_write> output: array<T>;",
        n + 1
    );
    s.push_str("fn load(p: u32, at: u32) -> T {\n    switch p {\n");
    for p in 0..n - 1 {
        let _ = writeln!(s, "        case {p}u: {{ return in{p}[at]; }}");
    }
    let _ = write!(
        s,
        "        default: {{ return in{}[at]; }}\n    }}\n}}",
        n - 1
    );
    kernel.splice(&text, PIECES, Some(PIECES_END), &s)
}

/// `pieces` (each with its layout) side by side along `dim` in a compact tensor of
/// `shape`: the pieces' shapes are `shape`'s but along `dim`, where their lengths add
/// up to `shape`'s.
pub(crate) fn cat(
    pieces: &[(&GpuStorage, &Layout)],
    dim: usize,
    shape: &Shape,
) -> Result<GpuStorage> {
    let op = "cat";
    let (first, _) = pieces.first().ok_or(Error::InvalidArgument {
        op,
        reason: "no tensors given".into(),
    })?;
    if shape.rank() > MAX_RANK {
        return Err(Error::RankTooLarge {
            op,
            rank: shape.rank(),
            max: MAX_RANK,
        });
    }
    let device = &first.device;
    let dtype = first.dtype;
    let buffer = device.alloc_output(op, shape.elem_count(), dtype)?;
    let mut out = GpuStorage::new(buffer, dtype, shape.elem_count(), device);
    if shape.elem_count() == 0 {
        return Ok(out);
    }
    let inner: usize = shape.dims()[dim + 1..].iter().product();
    let outer: usize = shape.dims()[..dim].iter().product();
    let most = pieces_per_launch(device)?;
    let elem_bytes = dtype.size_in_bytes() as u64;
    // Empty pieces have nothing to copy; the rest go `most` to a launch.
    let filled: Vec<_> = pieces
        .iter()
        .scan(0, |start, &(s, l)| {
            let at = *start;
            *start += l.dims()[dim];
            Some((at, s, l))
        })
        .filter(|(_, _, l)| l.dims()[dim] > 0)
        .collect();
    for launch in filled.chunks(most) {
        let first_at = launch[0].0;
        let span = launch.iter().map(|(_, _, l)| l.dims()[dim]).sum::<usize>();
        let mut p = CatParams::zeroed();
        p.numel = to_u32(op, "element count", outer * span * inner)?;
        p.rank = shape.rank() as u32;
        p.dim = dim as u32;
        p.first = to_u32(op, "start", first_at)?;
        p.span = to_u32(op, "length", span)?;
        p.inner = to_u32(op, "element count", inner.max(1))?;
        p.pieces = launch.len() as u32;
        for (d, &size) in shape.dims().iter().enumerate() {
            p.shape[d / 4][d % 4] = to_u32(op, "size", size)?;
        }
        let mut buffers = Vec::with_capacity(most + 1);
        let mut spans = Vec::with_capacity(most + 1);
        for (k, &(at, s, l)) in launch.iter().enumerate() {
            p.piece[k] = [
                to_u32(op, "offset", l.offset())?,
                to_u32(op, "start", at - first_at)?,
                to_u32(op, "length", l.dims()[dim])?,
                0,
            ];
            for (d, &stride) in l.strides().iter().enumerate() {
                p.strides[2 * k + d / 4][d % 4] = to_u32(op, "stride", stride)?;
            }
            buffers.push(s.raw()?);
            spans.push(ByteSpan::of_layout(l, elem_bytes));
        }
        // Bindings the launch does not use hold its last piece.
        let last = *buffers.last().expect("a launch has a piece");
        buffers.resize(most, last);
        spans.resize(most, spans.last().expect("a launch has a piece").clone());
        buffers.push(out.raw()?);
        let written = Layout::contiguous(shape.clone()).narrow(dim, first_at, span);
        spans.push(ByteSpan::of_layout(&written, elem_bytes));
        let groups = device.groups_1d(op, outer * span * inner)?;
        launch_built(device, dtype, most, &p, &buffers, spans, groups)?;
    }
    // Integer pieces' bounds carry over, as a copy's do.
    out.value_range = pieces
        .iter()
        .try_fold(None::<(i32, i32)>, |range, (s, _)| {
            let (lo, hi) = s.value_range?;
            Some(Some(
                range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))),
            ))
        })
        .flatten();
    Ok(out)
}

/// Records one launch of the cat kernel built for `n` pieces, binding `buffers`, of
/// which it accesses `spans`.
fn launch_built(
    device: &GpuDevice,
    dtype: DType,
    n: usize,
    params: &CatParams,
    buffers: &[&wgpu::Buffer],
    spans: Vec<ByteSpan>,
    groups: [u32; 3],
) -> Result<()> {
    let op = "cat";
    let start = Instant::now();
    if !device.supports(dtype) {
        return Err(GpuDevice::unsupported(op, dtype));
    }
    let key = format!("{:?} [{dtype:?}] x{n}", Kernel::Cat);
    let written = vec![(0, n as u32 + 1)];
    let pipeline = device.cached_pipeline(key, Kernel::Cat, 1, written, || source(dtype, n))?;
    let resources: Vec<_> = buffers.iter().map(|b| b.as_entire_binding()).collect();
    let spans = (1..).zip(spans).collect();
    let bind = Bindings::numbered(bytemuck::bytes_of(params), &resources, 1).spanning(spans);
    let name = || format!("{} [{dtype:?}] x{n} pieces", Kernel::Cat.label());
    device.launch(op, &pipeline, &[bind], groups, start, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated_check::{bindings, struct_size};
    use crate::params::ShaderParams;

    /// The kernel built for every piece count is valid WGSL whose params are
    /// `CatParams` and which writes only its output, bound after the pieces.
    #[test]
    fn builds_validate_and_match_their_params() {
        for n in 1..=CAT_PIECES as usize {
            let text = source(DType::F32, n).unwrap();
            let size = struct_size(&text, "Params", &format!("x{n}"));
            assert_eq!(size, CatParams::LAYOUT.size, "x{n}");
            assert_eq!(bindings(&text, "read_write>"), [n as u32 + 1], "x{n}");
            let pieces: Vec<u32> = (1..=n as u32).collect();
            assert_eq!(bindings(&text, "storage, read>"), pieces, "x{n}");
        }
    }
}
