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
    pub fn reshape(&self, shape: &Shape) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout {
                shape: shape.clone(),
                strides: shape.contiguous_strides(),
                offset: self.offset,
            });
        }
        // Size-1 dims can be added or removed freely; anything else needs a copy.
        let kept: Vec<(usize, usize)> = self
            .dims()
            .iter()
            .zip(&self.strides)
            .filter(|(&d, _)| d != 1)
            .map(|(&d, &s)| (d, s))
            .collect();
        let target: Vec<usize> = shape.dims().iter().copied().filter(|&d| d != 1).collect();
        if kept.iter().map(|k| k.0).ne(target.iter().copied()) {
            return None;
        }
        let mut it = kept.iter();
        let strides = shape
            .dims()
            .iter()
            .map(|&d| {
                if d == 1 {
                    0
                } else {
                    it.next().map_or(0, |k| k.1)
                }
            })
            .collect();
        Some(Layout {
            shape: shape.clone(),
            strides,
            offset: self.offset,
        })
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
    fn reshape_needs_contiguity() {
        let t = Layout::contiguous([2, 3]).transpose(0, 1);
        assert!(t.reshape(&Shape::new([6])).is_none());
        let u = t.reshape(&Shape::new([3, 1, 2])).unwrap();
        assert_eq!(
            u.offsets().collect::<Vec<_>>(),
            t.offsets().collect::<Vec<_>>()
        );
    }
}
