//! Reading and writing strided views a run at a time. Dims that lie back to back in
//! storage are merged and the innermost run is copied in one tight loop, instead of
//! stepping a multi-dimensional index for every element: a transposed head split or a
//! broadcast bias then costs about what a `memcpy` of it would.

use kiln_core::Layout;
use std::mem::MaybeUninit;

/// A dim of `N` layouts walked together: its size, and its stride in each.
type Dim<const N: usize> = (usize, [usize; N]);

/// The dims of `N` equally shaped layouts as `(size, strides)`, with size-1 dims dropped
/// and dims that lie back to back in every layout merged (a dim whose stride spans
/// exactly the next dim continues it); the innermost is split off as the run.
fn merged_dims<const N: usize>(layouts: [&Layout; N]) -> (Vec<Dim<N>>, Dim<N>) {
    let rank = layouts.first().map_or(0, |l| l.dims().len());
    let mut dims: Vec<Dim<N>> = Vec::with_capacity(rank);
    for d in 0..rank {
        let size = layouts[0].dims()[d];
        if size == 1 {
            continue;
        }
        let strides = layouts.map(|l| l.strides()[d]);
        match dims.last_mut() {
            Some(last) if (0..N).all(|i| last.1[i] == size * strides[i]) => {
                *last = (last.0 * size, strides)
            }
            _ => dims.push((size, strides)),
        }
    }
    let run = dims.pop().unwrap_or((1, [1; N]));
    (dims, run)
}

/// Calls `run(start, len, stride)` for every innermost run of `layout`, in row-major
/// order: the run's elements are at `start + i * stride` for `i < len`.
pub fn for_each_run(layout: &Layout, run: impl FnMut(usize, usize, usize)) {
    for_each_run_in(layout, 0, layout.elem_count(), run)
}

/// Like `for_each_run`, for the `count` elements from row-major position `first` on:
/// the first and last runs may be parts of runs. Lets a chunk of a long view be walked
/// on its own.
fn for_each_run_in(
    layout: &Layout,
    first: usize,
    count: usize,
    mut run: impl FnMut(usize, usize, usize),
) {
    for_each_run_of([layout], first, count, |[start], len, [stride]| {
        run(start, len, stride)
    })
}

/// Like `for_each_run_in`, over `N` equally shaped layouts walked together (a binary
/// op's operands): `run(starts, len, strides)`, the run's `i`-th element of layout `j`
/// at `starts[j] + i * strides[j]`. A broadcast operand has stride 0 in its run or in
/// an outer dim, and is read in place rather than copied out to the full shape.
pub fn for_each_run_of<const N: usize>(
    layouts: [&Layout; N],
    first: usize,
    count: usize,
    mut run: impl FnMut([usize; N], usize, [usize; N]),
) {
    if count == 0 {
        return;
    }
    let (dims, (len, strides)) = merged_dims(layouts);
    // The odometer's position at `first`: outer indices, and the offset into the run.
    let (mut outer, inner) = (first / len, first % len);
    let mut index = vec![0usize; dims.len()];
    let mut base = layouts.map(|l| l.offset());
    for (d, &(size, steps)) in dims.iter().enumerate().rev() {
        index[d] = outer % size;
        for (b, step) in base.iter_mut().zip(steps) {
            *b += index[d] * step;
        }
        outer /= size;
    }
    let (mut inner, mut left) = (inner, count);
    loop {
        let take = (len - inner).min(left);
        let starts = std::array::from_fn(|i| base[i] + inner * strides[i]);
        run(starts, take, strides);
        left -= take;
        if left == 0 {
            return;
        }
        inner = 0;
        // Step the outer dims like an odometer (`left > 0` keeps it inside the view).
        let mut d = dims.len();
        loop {
            d -= 1;
            let (size, steps) = dims[d];
            index[d] += 1;
            if index[d] < size {
                for (b, step) in base.iter_mut().zip(steps) {
                    *b += step;
                }
                break;
            }
            for (b, step) in base.iter_mut().zip(steps) {
                *b -= step * (size - 1);
            }
            index[d] = 0;
        }
    }
}

/// The elements of `layout` in `v`, converted by `f`, compact and in row-major order.
/// Long views are gathered in parallel chunks, each walking its own part of the view.
pub fn gather_map<T: Copy + Sync, U: Send>(
    v: &[T],
    layout: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let fill = |first: usize, part: &mut [MaybeUninit<U>]| {
        let mut at = 0;
        for_each_run_in(layout, first, part.len(), |start, len, stride| {
            let out = &mut part[at..at + len];
            at += len;
            match stride {
                1 => out
                    .iter_mut()
                    .zip(&v[start..start + len])
                    .for_each(|(o, &x)| _ = o.write(f(x))),
                0 => out.fill_with(|| MaybeUninit::new(f(v[start]))),
                s => out
                    .iter_mut()
                    .zip(v[start..].iter().step_by(s))
                    .for_each(|(o, &x)| _ = o.write(f(x))),
            }
        });
    };
    // SAFETY: the runs of a chunk cover its `part.len()` elements exactly, and each run
    // writes `len` of them.
    unsafe { crate::threads::build(layout.elem_count(), crate::threads::CHUNK_ELEMENTS, fill) }
}

/// The elements of `layout` in `v`, compact and in row-major order (a contiguous layout
/// is one run: a single copy).
pub fn gather<T: Copy + Send + Sync>(v: &[T], layout: &Layout) -> Vec<T> {
    gather_map(v, layout, |x| x)
}

/// Writes the compact, row-major `src` into `dst` at the places `layout` names.
pub fn scatter<T: Copy>(src: &[T], dst: &mut [T], layout: &Layout) {
    let mut next = 0;
    for_each_run(layout, |start, len, stride| {
        let part = &src[next..next + len];
        if stride == 1 {
            dst[start..start + len].copy_from_slice(part);
        } else {
            for (i, &x) in part.iter().enumerate() {
                dst[start + i * stride] = x;
            }
        }
        next += len;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every view kind against the element-by-element walk it replaces.
    #[test]
    fn runs_match_the_elementwise_walk() {
        let v: Vec<u32> = (0..1000).collect();
        let base = Layout::contiguous([2, 3, 4, 5]);
        let views = [
            base.clone(),
            base.transpose(1, 3),
            base.permute(&[0, 2, 1, 3]),
            base.narrow(2, 1, 2),
            base.narrow(3, 2, 3).transpose(0, 2),
            Layout::contiguous([5])
                .reshape(&[1, 5].into())
                .expect("reshape")
                .broadcast_to("test", &[4, 5].into())
                .expect("broadcast"),
            Layout::contiguous([4, 1])
                .broadcast_to("test", &[4, 6].into())
                .expect("broadcast"),
            Layout::contiguous([3, 1, 4]).narrow(0, 1, 2),
            Layout::contiguous([0, 3]),
        ];
        for view in views {
            let walk: Vec<u32> = view.offsets().map(|i| v[i]).collect();
            assert_eq!(gather(&v, &view), walk, "{view:?}");
            // Every part of the view walked on its own, as a parallel chunk walks it.
            for first in 0..walk.len() {
                for count in 0..=walk.len() - first {
                    let mut part = Vec::new();
                    for_each_run_in(&view, first, count, |start, len, stride| {
                        part.extend((0..len).map(|i| v[start + i * stride]));
                    });
                    assert_eq!(part, walk[first..first + count], "{view:?} {first}+{count}");
                }
            }
            assert_eq!(gather_map(&v, &view, |x| x as u64 * 2).len(), walk.len());
            let mut dst = vec![u32::MAX; 1000];
            scatter(&walk, &mut dst, &view);
            for i in view.offsets() {
                assert_eq!(dst[i], v[i], "{view:?} at {i}");
            }
        }
    }

    /// Two equally shaped views walked together give the pairs of their own walks, in
    /// every part: transposed against compact, broadcast rows and columns, a narrowed
    /// view, and dims that merge in one view but not the other.
    #[test]
    fn pairs_of_views_walk_together() {
        let v: Vec<u32> = (0..1000).collect();
        let broadcast = |from: &[usize], to: &[usize]| {
            Layout::contiguous(from.to_vec())
                .broadcast_to("test", &to.to_vec().into())
                .expect("broadcast")
        };
        let pairs = [
            (
                Layout::contiguous([2, 5, 4, 3]),
                Layout::contiguous([2, 3, 4, 5]).transpose(1, 3),
            ),
            (Layout::contiguous([4, 5]), broadcast(&[1, 5], &[4, 5])),
            (
                broadcast(&[4, 1], &[4, 6]),
                Layout::contiguous([6, 4]).transpose(0, 1),
            ),
            (
                Layout::contiguous([3, 7]).narrow(1, 2, 4),
                broadcast(&[3, 1], &[3, 4]),
            ),
            (broadcast(&[1, 1], &[3, 4]), Layout::contiguous([3, 4])),
        ];
        for (a, b) in pairs {
            let walk: Vec<(u32, u32)> = a
                .offsets()
                .zip(b.offsets())
                .map(|(i, j)| (v[i], v[j]))
                .collect();
            for first in 0..walk.len() {
                for count in 0..=walk.len() - first {
                    let mut part = Vec::new();
                    for_each_run_of([&a, &b], first, count, |[i, j], len, [si, sj]| {
                        part.extend((0..len).map(|k| (v[i + k * si], v[j + k * sj])));
                    });
                    assert_eq!(
                        part,
                        walk[first..first + count],
                        "{a:?} {b:?} {first}+{count}"
                    );
                }
            }
        }
    }

    /// Views long enough to be gathered in parallel chunks, against the walk.
    #[test]
    fn long_views_gather_in_chunks() {
        let v: Vec<u32> = (0..70 * 601).collect();
        let views = [
            Layout::contiguous([70, 601]).transpose(0, 1),
            Layout::contiguous([70, 601]).narrow(1, 3, 597),
            Layout::contiguous([1, 601])
                .broadcast_to("test", &[301, 601].into())
                .expect("broadcast"),
        ];
        for view in views {
            assert!(view.elem_count() > crate::threads::PARALLEL_ELEMENTS);
            let walk: Vec<u32> = view.offsets().map(|i| v[i]).collect();
            assert_eq!(gather(&v, &view), walk, "{view:?}");
        }
    }
}
