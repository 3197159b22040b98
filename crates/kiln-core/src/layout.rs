//! Where a tensor's elements sit in its storage: shape, strides and offset.
//! Every view op (transpose, permute, broadcast, narrow, reshape, squeeze)
//! only rewrites a `Layout`; no data moves.

use crate::{Error, Result, Shape};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Shape,
    /// Elements to step per index of each dim; 0 for broadcast dims.
    strides: Vec<usize>,
    /// Index of the first element in the storage.
    offset: usize,
}

impl Layout {
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout {
            shape,
            strides,
            offset: 0,
        }
    }

    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.rank(), strides.len());
        Layout {
            shape,
            strides,
            offset,
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// True when the elements are laid out row-major with no gaps (any offset).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// Contiguous and starting at the storage's first element.
    pub fn is_compact(&self) -> bool {
        self.offset == 0 && self.is_contiguous()
    }

    /// One past the largest storage index this layout touches (0 when empty).
    pub fn storage_span(&self) -> usize {
        if self.elem_count() == 0 {
            return 0;
        }
        self.offset
            + self
                .dims()
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    pub fn transpose(&self, d0: usize, d1: usize) -> Layout {
        let mut l = self.clone();
        l.strides.swap(d0, d1);
        let mut dims = l.shape.dims().to_vec();
        dims.swap(d0, d1);
        l.shape = Shape::new(dims);
        l
    }

    /// Reorders dims: result dim `i` is input dim `perm[i]`. `perm` must be a permutation.
    pub fn permute(&self, perm: &[usize]) -> Layout {
        let dims = perm.iter().map(|&p| self.dims()[p]).collect::<Vec<_>>();
        let strides = perm.iter().map(|&p| self.strides[p]).collect();
        Layout {
            shape: Shape::new(dims),
            strides,
            offset: self.offset,
        }
    }

    /// Broadcasts to `target`, giving size-1 and missing leading dims stride 0.
    pub fn broadcast_to(&self, op: &'static str, target: &Shape) -> Result<Layout> {
        let (rank, trank) = (self.shape.rank(), target.rank());
        let err = || Error::ShapeMismatch {
            op,
            lhs: self.shape.clone(),
            rhs: target.clone(),
        };
        if trank < rank {
            return Err(err());
        }
        let mut strides = vec![0; trank];
        let lead = trank - rank;
        for (j, stride) in strides[lead..].iter_mut().enumerate() {
            let (d, t) = (self.dims()[j], target.dims()[lead + j]);
            if d == t {
                *stride = self.strides[j];
            } else if d != 1 {
                return Err(err());
            }
        }
        Ok(Layout {
            shape: target.clone(),
            strides,
            offset: self.offset,
        })
    }

    /// The window of a compact tensor of `dims` that starts at `start` (per dim) and
    /// has the shape `inner`: where a padded tensor holds what it pads.
    pub fn window(dims: &[usize], start: &[usize], inner: &[usize]) -> Layout {
        let mut out = Layout::contiguous(Shape::new(dims.to_vec()));
        for (d, (&s, &n)) in start.iter().zip(inner).enumerate() {
            out = out.narrow(d, s, n);
        }
        out
    }

    /// The sub-range `start..start + len` of dim `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        dims[dim] = len;
        Layout {
            shape: Shape::new(dims),
            strides: self.strides.clone(),
            offset: self.offset + start * self.strides[dim],
        }
    }

    /// A view with a new shape of the same element count, when the strides allow one
    /// without a copy; `None` means the caller must make the data contiguous first.
    /// The dims fall into runs that step through memory as one (each dim's stride is
    /// the next one's times its size); a new dim may split a run or merge several dims
    /// of one run, never span two. So a narrowed row splits into heads without a copy,
    /// and a transposed matrix cannot be flattened.
    pub fn reshape(&self, shape: &Shape) -> Option<Layout> {
        let (old, new) = (self.dims(), shape.dims());
        let view = |strides: Vec<usize>| Layout {
            shape: shape.clone(),
            strides,
            offset: self.offset,
        };
        if self.is_contiguous() || self.elem_count() == 0 {
            return Some(view(shape.contiguous_strides()));
        }
        // Size-1 dims take no part in the runs; a new one gets any stride.
        let kept: Vec<usize> = (0..old.len()).filter(|&d| old[d] != 1).collect();
        let mut strides = vec![0; new.len()];
        // Walk both shapes from the innermost dim: each run of old dims is matched by
        // new dims of the same element count.
        let mut next_new = new.len();
        let mut i = kept.len();
        while i > 0 {
            let base = self.strides[kept[i - 1]];
            let mut run = 1;
            loop {
                i -= 1;
                run *= old[kept[i]];
                let outer = i.checked_sub(1).map(|j| kept[j]);
                if outer.is_none_or(|o| self.strides[o] != run * base) {
                    break;
                }
            }
            let mut matched = 1;
            while next_new > 0 && (matched < run || new[next_new - 1] == 1) {
                next_new -= 1;
                strides[next_new] = matched * base;
                matched *= new[next_new];
            }
            if matched != run {
                return None;
            }
        }
        // What is left of the new shape is size-1 dims.
        Some(view(strides))
    }

    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        let stride = if dim < dims.len() {
            dims[dim] * strides[dim]
        } else {
            1
        };
        dims.insert(dim, 1);
        strides.insert(dim, stride);
        Layout {
            shape: Shape::new(dims),
            strides,
            offset: self.offset,
        }
    }

    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut dims = self.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.remove(dim);
        strides.remove(dim);
        Layout {
            shape: Shape::new(dims),
            strides,
            offset: self.offset,
        }
    }

    /// Storage index of every element, in row-major order of the view.
    pub fn offsets(&self) -> StridedIndex<'_> {
        StridedIndex::new(self)
    }
}

/// Iterates the storage indices of a layout in row-major order.
pub struct StridedIndex<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
}

impl<'a> StridedIndex<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = (layout.elem_count() > 0).then_some(layout.offset);
        StridedIndex {
            layout,
            index: vec![0; layout.shape.rank()],
            next,
        }
    }
}

impl Iterator for StridedIndex<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let current = self.next?;
        let dims = self.layout.dims();
        let strides = self.layout.strides();
        let mut pos = current;
        let mut d = dims.len();
        loop {
            if d == 0 {
                self.next = None;
                break;
            }
            d -= 1;
            self.index[d] += 1;
            pos += strides[d];
            if self.index[d] < dims[d] {
                self.next = Some(pos);
                break;
            }
            pos -= strides[d] * dims[d];
            self.index[d] = 0;
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_offsets() {
        let l = Layout::contiguous([2, 3]).transpose(0, 1);
        assert_eq!(l.dims(), &[3, 2]);
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
    }

    #[test]
    fn broadcast_and_narrow() {
        let l = Layout::contiguous([3, 1])
            .broadcast_to("t", &Shape::new([2, 3, 2]))
            .unwrap();
        assert_eq!(l.strides(), &[0, 1, 0]);
        assert_eq!(
            l.offsets().collect::<Vec<_>>(),
            vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
        );
        let n = Layout::contiguous([4, 5]).narrow(1, 2, 2);
        assert_eq!(
            n.offsets().collect::<Vec<_>>(),
            vec![2, 3, 7, 8, 12, 13, 17, 18]
        );
        assert_eq!(n.storage_span(), 19);
    }

    #[test]
    fn reshape_views_where_the_strides_allow() {
        let same = |a: &Layout, b: &Layout| {
            assert_eq!(
                a.offsets().collect::<Vec<_>>(),
                b.offsets().collect::<Vec<_>>()
            );
        };
        // A transposed matrix: size-1 dims come and go, flattening needs a copy.
        let t = Layout::contiguous([2, 3]).transpose(0, 1);
        assert!(t.reshape(&Shape::new([6])).is_none());
        same(&t.reshape(&Shape::new([3, 1, 2])).unwrap(), &t);
        // A third of each row ([b, l, 3e] narrowed to e): split into heads, merged back;
        // the batch and rows merge (one run: 60 = 5 * 12), rows and columns cannot.
        let q = Layout::contiguous([2, 5, 12]).narrow(2, 4, 4);
        let heads = q.reshape(&Shape::new([2, 5, 2, 2])).unwrap();
        assert_eq!(heads.strides(), [60, 12, 2, 1]);
        same(&heads, &q);
        same(&heads.reshape(&Shape::new([2, 5, 4])).unwrap(), &q);
        same(&q.reshape(&Shape::new([10, 4])).unwrap(), &q);
        assert!(q.reshape(&Shape::new([2, 20])).is_none());
        // Merging rows of a column slice: dims 0 and 1 of [4, 3, 6][.., .., 0..2] form
        // one run (stride 18 = 3 * 6), so [12, 2] is a view; [4, 6] is not.
        let c = Layout::contiguous([4, 3, 6]).narrow(2, 0, 2);
        same(&c.reshape(&Shape::new([12, 2])).unwrap(), &c);
        same(&c.reshape(&Shape::new([2, 2, 3, 1, 2])).unwrap(), &c);
        assert!(c.reshape(&Shape::new([4, 6])).is_none());
        // Broadcast (stride 0) dims split too; empty and scalar shapes.
        let b = Layout::contiguous([3])
            .broadcast_to("test", &Shape::new([4, 3]))
            .unwrap();
        same(&b.reshape(&Shape::new([2, 2, 3])).unwrap(), &b);
        assert!(b.reshape(&Shape::new([12])).is_none());
        let e = Layout::contiguous([0, 3]).transpose(0, 1);
        assert_eq!(e.reshape(&Shape::new([0])).unwrap().elem_count(), 0);
        let one = Layout::contiguous([1, 1]).transpose(0, 1);
        same(&one.reshape(&Shape::new([])).unwrap(), &one);
    }
}
