//! A strided transposed convolution split into its output's phases (a sub-pixel
//! convolution). Along a dim of stride `s` and padding `p`, output row `y = s q + r`
//! sums the taps `t` with `t = r + p (mod s)`, tap `t` reading input row
//! `q + (r + p - t) / s`: each phase `r` is a stride-1 convolution over the input whose
//! taps are every `s`-th of the kernel's. Stacked as extra output channels, with zeros
//! where a phase has fewer taps than the widest, the phases are one implicit product
//! (`conv_product`), and a copy interleaves them back. Nothing is unfolded: the columns
//! the unfolded way writes and folds are `kh kw / (sh sw)` times the output. The price
//! is the zeros: 4x4 taps at stride 2 multiply 9 taps per phase where 4 count.
//!
//! This file holds the geometry: the taps each phase reads, the stacked filters as a
//! view of the kernel padded with zeros, and the interleaving as a view of the product.

use kiln_core::Layout;

/// How one spatial dim of a transposed convolution (dilation 1) splits into phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Phases {
    pub(crate) stride: usize,
    /// Output rows of each phase: the output's, divided by the stride and rounded up
    /// (the last phases' surplus row, if any, is cut when interleaving).
    pub(crate) rows: usize,
    /// Taps of each phase.
    pub(crate) taps: usize,
    /// Phase tap `j` of output row `q` reads input row `q + reach - j`.
    pub(crate) reach: i64,
    /// Zeros before and after the kernel's taps in the padded kernel, whose tap `r + s j`
    /// is phase `r`'s tap `j`.
    pub(crate) before: usize,
    pub(crate) after: usize,
}

impl Phases {
    /// `out` output rows from a kernel of `kernel` taps at `stride` with `padding`.
    pub(crate) fn new(out: usize, kernel: usize, stride: usize, padding: usize) -> Phases {
        let (k, s, p) = (kernel as i64, stride as i64, padding as i64);
        // `(r + p - t) / s` over 0 <= r < s and 0 <= t < k: the multiples of s in
        // [p + 1 - k, p + s - 1].
        let reach = (p + s - 1).div_euclid(s);
        let least = -(k - 1 - p).div_euclid(s);
        let taps = reach - least + 1;
        // Phase r's tap j is kernel tap `r + p - s (reach - j)`.
        let before = s * reach - p;
        let after = s * taps - before - k;
        debug_assert!(before >= 0 && after >= 0, "{before} {after}");
        Phases {
            stride,
            rows: out.div_ceil(stride),
            taps: taps as usize,
            reach,
            before: before as usize,
            after: after as usize,
        }
    }

    /// Taps of the padded kernel: every phase's, in `stride * taps`.
    pub(crate) fn padded(&self) -> usize {
        self.stride * self.taps
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

/// The product's output `[n, channels, sh, sw, rows, columns]` (each channel's phases
/// one after the other) read as `[n, channels, rows, sh, columns, sw]`: compacted, the
/// interleaved output `[n, channels, rows * sh, columns * sw]`.
pub(crate) fn interleaved(n: usize, channels: usize, [h, w]: [Phases; 2]) -> Layout {
    let phase = h.rows * w.rows;
    let channel = h.stride * w.stride * phase;
    Layout::new(
        [n, channels, h.rows, h.stride, w.rows, w.stride].into(),
        vec![
            channels * channel,
            channel,
            w.rows,
            w.stride * phase,
            1,
            phase,
        ],
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each phase's taps against the definition: output row y sums `w[t] x[i]` over
    /// `i s - p + t = y`.
    #[test]
    fn every_tap_lands_in_its_phase_once() {
        for stride in 1usize..5 {
            for kernel in 1..8 {
                for padding in 0..kernel {
                    for input in 1..6 {
                        let Some(out) = ((input - 1) * stride + kernel).checked_sub(2 * padding)
                        else {
                            continue;
                        };
                        if out == 0 {
                            continue;
                        }
                        check(input, out, kernel, stride, padding);
                    }
                }
            }
        }
    }

    fn check(input: usize, out: usize, kernel: usize, stride: usize, padding: usize) {
        let ph = Phases::new(out, kernel, stride, padding);
        let case = format!("in {input} out {out} k {kernel} s {stride} p {padding}: {ph:?}");
        assert_eq!(ph.before + kernel + ph.after, ph.padded(), "{case}");
        for y in 0..out {
            let mut want: Vec<(usize, usize)> = (0..kernel)
                .flat_map(|t| (0..input).map(move |i| (t, i)))
                .filter(|&(t, i)| (i * stride + t) as i64 - padding as i64 == y as i64)
                .collect();
            let (q, r) = (y / stride, y % stride);
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
