//! Concatenation: pieces side by side along one dim of a new compact tensor, one launch
//! of `shaders/elementwise/cat.wgsl` per `CAT_PIECES` of them, where a copy per piece
//! into a zeroed tensor took a fill and a launch each (an LSTM stacks its 64 steps'
//! outputs, and its backward pass puts 64 steps' gradients side by side).

use crate::kernels::Kernel;
use crate::params::{to_u32, CatParams};
use crate::shader_constants::CAT_PIECES;
use crate::storage::GpuStorage;
use bytemuck::Zeroable;
use kiln_core::{Error, Layout, Result, Shape, MAX_RANK};

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
    // Empty pieces have nothing to copy; the rest go CAT_PIECES to a launch.
    let filled: Vec<_> = pieces
        .iter()
        .scan(0, |start, &(s, l)| {
            let at = *start;
            *start += l.dims()[dim];
            Some((at, s, l))
        })
        .filter(|(_, _, l)| l.dims()[dim] > 0)
        .collect();
    for launch in filled.chunks(CAT_PIECES as usize) {
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
        let mut buffers = Vec::with_capacity(CAT_PIECES as usize + 1);
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
        }
        // Bindings the launch does not use hold its last piece.
        let last = *buffers.last().expect("a launch has a piece");
        buffers.resize(CAT_PIECES as usize, last);
        buffers.push(out.raw()?);
        let groups = device.groups_1d(op, outer * span * inner)?;
        device.dispatch(op, Kernel::Cat, &[dtype], &p, &buffers, groups)?;
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
