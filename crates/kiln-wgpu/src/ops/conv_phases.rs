//! A strided transposed convolution split into its output's phases (a sub-pixel
//! convolution). Along a dim of stride `s` and padding `p`, output row `y` sums the taps
//! `t = y + p (mod s)`, tap `t` reading input row `(y + p - t) / s`: the rows of one
//! phase are a stride-1 convolution over the input whose taps are every `s`-th of the
//! kernel's. Stacked as extra output channels, with zeros where a phase has fewer taps
//! than the widest, the phases are one implicit product (`conv_product`), which stores
//! them interleaved (`matmul_rhs`). Nothing is unfolded: the columns the unfolded way
//! writes and folds are `kh kw / (sh sw)` times the output. How the phases' taps line
//! up decides how many of them are zeros (`Phases::new`).
//!
//! This file holds the geometry: the taps each phase reads and where its rows land, and
//! the stacked filters as a view of the kernel padded with zeros.

use kiln_core::Layout;

/// How one spatial dim of a transposed convolution (dilation 1) splits into phases.
/// Row `Y = s q + r` of the phases' interleaved grid is output row `Y - shift`; phase
/// `r`'s tap `j` is tap `r + s j` of the kernel padded with `before` zeros, and reads
/// input row `q + reach - j`. The definition (`y = i s - p + t`) then asks that
/// `before - shift = s reach - p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Phases {
    /// Output rows.
    pub(crate) out: usize,
    pub(crate) stride: usize,
    /// Rows each phase computes: the grid's `stride * rows` cover the output from
    /// `shift` (the product stores no row outside it).
    pub(crate) rows: usize,
    /// Taps of each phase.
    pub(crate) taps: usize,
    pub(crate) reach: i64,
    /// Zeros before and after the kernel's taps in the padded kernel.
    pub(crate) before: usize,
    pub(crate) after: usize,
    /// Grid rows before the output's first.
    pub(crate) shift: usize,
}

impl Phases {
    /// `out` output rows from a kernel of `kernel` taps at `stride` with `padding`.
    ///
    /// Two alignments satisfy the definition without wasting a whole tap or grid row:
    /// `reach = ceil(p / s)` pads the kernel in front (phase `r` is output row `r`: no
    /// shift), `reach = floor(p / s)` shifts the grid instead (phase `r` starts at
    /// kernel tap `r`). They differ where `s` does not divide `p`: DCGAN's 4x4 taps at
    /// stride 2 with padding 1 take 3x3 taps a phase padded in front (5 of 9 of them
    /// zeros) and 2x2 shifted, at the price of a grid row and column; a 3x3 kernel
    /// there takes 2 either way, and shifting only adds the row. The one with fewer
    /// products is taken, on a tie the one with fewer zeros in its kernel (none: no
    /// launch to pad the weights).
    pub(crate) fn new(out: usize, kernel: usize, stride: usize, padding: usize) -> Phases {
        let (s, p) = (stride as i64, padding as i64);
        let padded_in_front = Phases::aligned(out, kernel, stride, padding, (p + s - 1) / s);
        let shifted = Phases::aligned(out, kernel, stride, padding, p / s);
        let cost = |ph: &Phases| (ph.taps * ph.rows, ph.before + ph.after);
        if cost(&shifted) < cost(&padded_in_front) {
            shifted
        } else {
            padded_in_front
        }
    }

    /// The phases whose tap `j` reads input row `q + reach - j`.
    fn aligned(out: usize, kernel: usize, stride: usize, padding: usize, reach: i64) -> Phases {
        let (k, s, p) = (kernel as i64, stride as i64, padding as i64);
        let lead = s * reach - p;
        let (before, shift) = (lead.max(0), (-lead).max(0));
        // The kernel's taps and the zeros before them, in whole strides.
        let taps = (before + k + s - 1) / s;
        Phases {
            out,
            stride,
            rows: (out + shift as usize).div_ceil(stride),
            taps: taps as usize,
            reach,
            before: before as usize,
            after: (s * taps - before - k) as usize,
            shift: shift as usize,
        }
    }

    /// Taps of the padded kernel: every phase's, in `stride * taps`.
    pub(crate) fn padded(&self) -> usize {
        self.stride * self.taps
    }

    /// The kernel's own taps, of the padded kernel's.
    pub(crate) fn kernel(&self) -> usize {
        self.padded() - self.before - self.after
    }
}

/// The stacked filters `[groups, out / groups * sh * sw, in / groups * th * tw]` (phases
/// inside each output channel, taps inside each input channel) as a view of the kernel
/// `[in, out / groups, padded rows, padded columns]`, compact and padded with zeros.
pub(crate) fn filters(
    groups: usize,
    in_per_group: usize,
    out_per_group: usize,
    [h, w]: [Phases; 2],
) -> Layout {
    let (rows, cols) = (h.padded(), w.padded());
    let kernel = rows * cols;
    Layout::new(
        [
            groups,
            out_per_group,
            h.stride,
            w.stride,
            in_per_group,
            h.taps,
            w.taps,
        ]
        .into(),
        vec![
            in_per_group * out_per_group * kernel,
            kernel,
            cols,
            1,
            out_per_group * kernel,
            h.stride * cols,
            w.stride,
        ],
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each phase's taps against the definition, both ways of aligning them: output row
    /// y sums `w[t] x[i]` over `i s - p + t = y`. Outputs with each output padding below
    /// the stride.
    #[test]
    fn every_tap_lands_in_its_phase_once() {
        for stride in 1usize..5 {
            for kernel in 1..8 {
                for padding in 0..kernel {
                    for input in 1..6 {
                        let Some(least) = ((input - 1) * stride + kernel).checked_sub(2 * padding)
                        else {
                            continue;
                        };
                        for out in (least..least + stride).filter(|&o| o > 0) {
                            let (s, p) = (stride as i64, padding as i64);
                            let chosen = Phases::new(out, kernel, stride, padding);
                            for reach in [p / s, (p + s - 1) / s] {
                                let ph = Phases::aligned(out, kernel, stride, padding, reach);
                                check(input, out, kernel, stride, padding, ph);
                                let work = |ph: Phases| ph.taps * ph.rows;
                                assert!(work(chosen) <= work(ph), "{chosen:?} {ph:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// DCGAN's 4x4 taps at stride 2, padding 1: 2x2 taps a phase (not 3x3 with zeros), the
    /// kernel unpadded, the grid one row and column wider than the output.
    #[test]
    fn four_taps_at_stride_two_take_two_a_phase() {
        let ph = Phases::new(16, 4, 2, 1);
        assert_eq!((ph.taps, ph.before, ph.after, ph.shift), (2, 0, 0, 1));
        assert_eq!(ph.rows, 9);
        // A 3x3 kernel there takes two taps either way: no shift.
        let ph = Phases::new(16, 3, 2, 1);
        assert_eq!((ph.taps, ph.shift, ph.rows), (2, 0, 8));
    }

    fn check(input: usize, out: usize, kernel: usize, stride: usize, padding: usize, ph: Phases) {
        let case = format!("in {input} out {out} k {kernel} s {stride} p {padding}: {ph:?}");
        assert_eq!(ph.before + kernel + ph.after, ph.padded(), "{case}");
        assert!(ph.before < stride && ph.shift < stride, "{case}");
        assert!(ph.rows * stride >= out + ph.shift, "{case}");
        for y in 0..out {
            let mut want: Vec<(usize, usize)> = (0..kernel)
                .flat_map(|t| (0..input).map(move |i| (t, i)))
                .filter(|&(t, i)| (i * stride + t) as i64 - padding as i64 == y as i64)
                .collect();
            let grid = y + ph.shift;
            let (q, r) = (grid / stride, grid % stride);
            let mut got: Vec<(usize, usize)> = (0..ph.taps)
                .filter_map(|j| {
                    let t = (r + stride * j).checked_sub(ph.before)?;
                    let i = q as i64 + ph.reach - j as i64;
                    (t < kernel && (0..input as i64).contains(&i)).then_some((t, i as usize))
                })
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{case}, y {y}");
        }
    }
}
