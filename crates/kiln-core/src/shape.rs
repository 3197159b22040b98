//! Tensor shapes, dimension resolution and broadcasting.

use crate::{Error, Result};
use std::fmt;

/// The highest rank kiln supports; GPU kernels carry shapes and strides in
/// fixed-size uniform arrays of this length.
pub const MAX_RANK: usize = 8;

/// The sizes of a tensor's dimensions, outermost first.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }

    /// The element count, or `None` when it overflows `usize`.
    pub fn checked_elem_count(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Row-major strides of a contiguous tensor of this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.rank()];
        for i in (0..self.rank().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }

    /// Resolves a possibly negative dimension (`-1` is the last) against this rank.
    pub fn dim(&self, op: &'static str, dim: isize) -> Result<usize> {
        let rank = self.rank() as isize;
        let d = if dim < 0 { dim + rank } else { dim };
        if d < 0 || d >= rank {
            return Err(Error::DimOutOfRange {
                op,
                dim,
                rank: self.rank(),
            });
        }
        Ok(d as usize)
    }

    /// Resolves several dimensions, rejecting repeats; the result is sorted.
    pub fn dims_sorted(&self, op: &'static str, dims: &[isize]) -> Result<Vec<usize>> {
        let mut out = dims
            .iter()
            .map(|&d| self.dim(op, d))
            .collect::<Result<Vec<_>>>()?;
        out.sort_unstable();
        if out.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("dims {dims:?} repeat a dimension"),
            });
        }
        Ok(out)
    }

    /// NumPy broadcasting: align trailing dims; each pair must match or one must be 1.
    pub fn broadcast(op: &'static str, lhs: &Shape, rhs: &Shape) -> Result<Shape> {
        let rank = lhs.rank().max(rhs.rank());
        let mut out = vec![0; rank];
        for (i, o) in out.iter_mut().enumerate() {
            let l = lhs.dim_from_end(rank - 1 - i);
            let r = rhs.dim_from_end(rank - 1 - i);
            *o = match (l, r) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => {
                    return Err(Error::ShapeMismatch {
                        op,
                        lhs: lhs.clone(),
                        rhs: rhs.clone(),
                    })
                }
            };
        }
        Ok(Shape(out))
    }

    /// The size `i` places from the end, or 1 beyond the rank (broadcast padding).
    fn dim_from_end(&self, i: usize) -> usize {
        if i < self.rank() {
            self.0[self.rank() - 1 - i]
        } else {
            1
        }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_broadcast() {
        let s = Shape::new([2, 3, 4]);
        assert_eq!(s.contiguous_strides(), vec![12, 4, 1]);
        let b = Shape::broadcast("add", &Shape::new([3, 1]), &Shape::new([2, 1, 5])).unwrap();
        assert_eq!(b.dims(), &[2, 3, 5]);
        assert!(Shape::broadcast("add", &Shape::new([3]), &Shape::new([4])).is_err());
        assert_eq!(s.dim("x", -1).unwrap(), 2);
        assert!(s.dim("x", 3).is_err());
    }
}
