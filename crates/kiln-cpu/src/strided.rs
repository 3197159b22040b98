//! Reading and writing strided views a run at a time. Dims that lie back to back in
//! storage are merged and the innermost run is copied in one tight loop, instead of
//! stepping a multi-dimensional index for every element: a transposed head split or a
//! broadcast bias then costs about what a `memcpy` of it would.

use kiln_core::Layout;

/// Calls `run(start, len, stride)` for every innermost run of `layout`, in row-major
/// order: the run's elements are at `start + i * stride` for `i < len`.
pub fn for_each_run(layout: &Layout, mut run: impl FnMut(usize, usize, usize)) {
    if layout.elem_count() == 0 {
        return;
    }
    // Size-1 dims say nothing; a dim whose stride spans exactly the next dim continues it.
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(layout.dims().len());
    for (&size, &stride) in layout.dims().iter().zip(layout.strides()) {
        if size == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(last) if last.1 == size * stride => *last = (last.0 * size, stride),
            _ => dims.push((size, stride)),
        }
    }
    let (len, stride) = dims.pop().unwrap_or((1, 1));
    let mut index = vec![0usize; dims.len()];
    let mut base = layout.offset();
    loop {
        run(base, len, stride);
        // Step the outer dims like an odometer.
        let mut d = dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            let (size, step) = dims[d];
            index[d] += 1;
            base += step;
            if index[d] < size {
                break;
            }
            base -= step * size;
            index[d] = 0;
        }
    }
}

/// The elements of `layout` in `v`, converted by `f`, compact and in row-major order.
pub fn gather_map<T: Copy, U>(v: &[T], layout: &Layout, f: impl Fn(T) -> U) -> Vec<U> {
    let mut out = Vec::with_capacity(layout.elem_count());
    for_each_run(layout, |start, len, stride| match stride {
        1 => out.extend(v[start..start + len].iter().map(|&x| f(x))),
        0 => out.extend((0..len).map(|_| f(v[start]))),
        s => out.extend((0..len).map(|i| f(v[start + i * s]))),
    });
    out
}

/// The elements of `layout` in `v`, compact and in row-major order (a contiguous layout
/// is one run: a single copy).
pub fn gather<T: Copy>(v: &[T], layout: &Layout) -> Vec<T> {
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
            assert_eq!(gather_map(&v, &view, |x| x as u64 * 2).len(), walk.len());
            let mut dst = vec![u32::MAX; 1000];
            scatter(&walk, &mut dst, &view);
            for i in view.offsets() {
                assert_eq!(dst[i], v[i], "{view:?} at {i}");
            }
        }
    }
}
