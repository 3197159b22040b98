//! The bytes of a buffer that one binding of a launch reads or writes, as a profile
//! counts them: a view's range, less the gaps between its rows.

use kiln_core::Layout;
use std::ops::Range;

/// Where in its buffer a binding's accesses lie (`range`, first byte to one past the
/// last) and how many bytes within it they touch (`touched`: fewer where a strided view
/// skips between its rows, as one time step of a `[batch, time, features]` sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ByteSpan {
    pub(crate) range: Range<u64>,
    pub(crate) touched: u64,
}

impl ByteSpan {
    /// Every byte of `range`.
    pub(crate) fn whole(range: Range<u64>) -> Self {
        let touched = range.end.saturating_sub(range.start);
        ByteSpan { range, touched }
    }

    /// The elements of `layout`, each `size` bytes. A broadcast dim (stride 0) reads
    /// the same elements again; other views in kiln do not alias, so each distinct
    /// element is counted once.
    pub(crate) fn of_layout(layout: &Layout, size: u64) -> Self {
        let span = layout.storage_span().max(layout.offset()) as u64;
        let range = layout.offset() as u64 * size..span * size;
        let distinct: u64 = (layout.dims().iter().zip(layout.strides()))
            .filter(|&(_, &s)| s != 0)
            .map(|(&d, _)| d as u64)
            .product();
        let touched = (distinct * size).min(range.end - range.start);
        ByteSpan { range, touched }
    }

    /// Within `bound`, the part of a binding the span says it accesses.
    pub(crate) fn within(&self, bound: &Range<u64>) -> Self {
        let start = self.range.start.max(bound.start);
        let range = start..self.range.end.min(bound.end).max(start);
        let touched = self.touched.min(range.end - range.start);
        ByteSpan { range, touched }
    }
}

/// The bytes several spans of one buffer account for: each byte of their union once,
/// and no more than they touch together (two strided reads that interleave, such as
/// attention's queries, keys and values, thirds of one projection, count what each
/// touches; one read of a single time step counts that step's rows). Two different
/// strided views that overlap count a byte they share twice: the spans do not say
/// which bytes within them each touches.
pub(crate) fn bytes_in(mut spans: Vec<ByteSpan>) -> u64 {
    // The same view bound twice (a cat's unused bindings hold its last piece) is read
    // once.
    spans.sort_by_key(|s| (s.range.start, s.range.end, s.touched));
    spans.dedup();
    let touched: u64 = spans.iter().map(|s| s.touched).sum();
    let (mut union, mut covered) = (0, 0);
    for s in spans {
        let start = s.range.start.max(covered);
        union += s.range.end.saturating_sub(start);
        covered = covered.max(s.range.end);
    }
    union.min(touched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::Shape;

    #[test]
    fn a_time_step_of_a_sequence_counts_its_rows() {
        // [batch 4, time 10, features 8], step 3: rows of 8 floats, 80 apart.
        let seq = Layout::contiguous([4, 10, 8]);
        let step = seq.narrow(1, 3, 1);
        let span = ByteSpan::of_layout(&step, 4);
        assert_eq!(span.range, 24 * 4..(3 * 80 + 24 + 8) * 4);
        assert_eq!(span.touched, 4 * 8 * 4);
        assert_eq!(bytes_in(vec![span]), 128);
    }

    #[test]
    fn interleaved_thirds_count_the_whole_buffer_once() {
        // q, k and v: thirds of the last dim of [2, 5, 3 * 4].
        let proj = Layout::contiguous([2, 5, 12]);
        let thirds: Vec<_> = (0..3)
            .map(|i| ByteSpan::of_layout(&proj.narrow(2, 4 * i, 4), 4))
            .collect();
        assert!(thirds.iter().all(|s| s.touched == 2 * 5 * 4 * 4));
        assert_eq!(bytes_in(thirds), 2 * 5 * 12 * 4);
    }

    #[test]
    fn a_broadcast_read_counts_its_elements_once() {
        let row = Layout::contiguous([1, 6]);
        let wide = row.broadcast_to("test", &Shape::from([5, 6])).unwrap();
        let span = ByteSpan::of_layout(&wide, 2);
        assert_eq!((span.range.clone(), span.touched), (0..12, 12));
    }

    #[test]
    fn overlapping_reads_count_each_byte_once() {
        let spans = vec![ByteSpan::whole(0..100), ByteSpan::whole(50..150)];
        assert_eq!(bytes_in(spans), 150);
        let step = ByteSpan::of_layout(&Layout::contiguous([4, 16]).narrow(1, 0, 8), 4);
        assert_eq!(bytes_in(vec![step.clone(), step]), 128);
        let empty = ByteSpan::of_layout(&Layout::contiguous([0, 3]), 4);
        assert_eq!(bytes_in(vec![empty]), 0);
        let clipped = ByteSpan::whole(0..100).within(&(40..60));
        assert_eq!((clipped.range, clipped.touched), (40..60, 20));
    }
}
