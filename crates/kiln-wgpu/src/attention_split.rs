//! How many invocations the fused attention kernels (`ops::attention`) walk a row
//! with. Whole, one invocation walks all of a query's keys (or a key's queries) alone:
//! the char transformer's 128 heads of 64 queries are then 8,192 invocations, where an
//! H200 keeps about 2^18 resident. Split, a row's lanes take every lanes-th key each
//! and add up what they found at the end, through workgroup memory. By default the
//! autotuner times the two per kernel and shape class.

use crate::autotune::{self, Tunable};
use crate::env_warning::warn_once;
use crate::shader_constants::{ATTENTION_ROWS, ATTENTION_TILE};

/// Invocations a split row's kernel aims to fill: about what an NVIDIA H200 keeps
/// resident, as the convolution's weight gradient aims for.
const SPLIT_THREADS: usize = 1 << 18;
/// The most lanes a row is split into: 8 of a workgroup's 64 invocations, and half of
/// a tile of keys each.
const MAX_LANES: usize = 8;
const _: () = assert!((ATTENTION_ROWS as usize).is_multiple_of(MAX_LANES));
/// Rows of the other operand each lane keeps at least, so that the merge stays small
/// beside the walk.
const MIN_WALK: usize = ATTENTION_TILE as usize / 2;

/// The two ways the fused attention kernels spread a row, and the choice between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionSplit {
    /// One invocation a row.
    Whole,
    /// Each row walked by `split_lanes` neighbouring invocations (at least two).
    Split,
    /// Per kernel and shape class, the faster of the two as timed on this adapter at
    /// first use. The default unless `KILN_AUTOTUNE=0` or `KILN_ATTENTION_SPLIT` is set.
    Autotune,
}

impl AttentionSplit {
    pub const ALL: [AttentionSplit; 3] = [
        AttentionSplit::Whole,
        AttentionSplit::Split,
        AttentionSplit::Autotune,
    ];
    /// What the autotuner times.
    pub(crate) const CANDIDATES: [AttentionSplit; 2] =
        [AttentionSplit::Whole, AttentionSplit::Split];

    /// The name `KILN_ATTENTION_SPLIT` takes.
    pub fn name(self) -> &'static str {
        match self {
            AttentionSplit::Whole => "whole",
            AttentionSplit::Split => "split",
            AttentionSplit::Autotune => "autotune",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// `KILN_ATTENTION_SPLIT=<name>` overrides; otherwise `Autotune`, or with
    /// `KILN_AUTOTUNE=0` the fixed default.
    pub(crate) fn from_env() -> Self {
        if let Ok(name) = std::env::var("KILN_ATTENTION_SPLIT") {
            match Self::from_name(&name) {
                Some(a) => return a,
                None => warn_once(&format!(
                    "KILN_ATTENTION_SPLIT={name}: not whole, split or autotune"
                )),
            }
        }
        match autotune::enabled() {
            true => AttentionSplit::Autotune,
            false => Self::FIXED_DEFAULT,
        }
    }

    /// Without tuning: whole rows, as the kernels ran before splitting was built. No
    /// hardware GPU has timed the two yet.
    pub const FIXED_DEFAULT: AttentionSplit = AttentionSplit::Whole;

    /// Lanes a row takes this way, for a kernel over `rows` rows in all (every head's)
    /// that each walk `walked` rows of the other operand.
    pub(crate) fn lanes(self, rows: usize, walked: usize) -> u32 {
        match self {
            AttentionSplit::Split => split_lanes(rows, walked),
            _ => 1,
        }
    }
}

/// A split row's lanes: two, doubled while the kernel's invocations fall short of
/// `SPLIT_THREADS`, up to `MAX_LANES`, and while each lane keeps `MIN_WALK` rows.
fn split_lanes(rows: usize, walked: usize) -> u32 {
    let mut lanes = 2;
    while lanes < MAX_LANES
        && rows.saturating_mul(lanes) < SPLIT_THREADS
        && walked >= 2 * lanes * MIN_WALK
    {
        lanes *= 2;
    }
    lanes as u32
}

impl Tunable for AttentionSplit {
    fn name(self) -> &'static str {
        AttentionSplit::name(self)
    }

    fn from_name(name: &str) -> Option<Self> {
        AttentionSplit::from_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rows_fill_the_card_but_keep_a_walk_each() {
        // The char transformer: 128 heads of 64 queries over 64 keys.
        assert_eq!(split_lanes(128 * 64, 64), 8);
        // Few keys: two lanes whatever the rows, so the merge always runs; four from
        // 32 keys, eight from 64.
        assert_eq!(split_lanes(128 * 64, 5), 2);
        assert_eq!(split_lanes(128 * 64, 31), 2);
        assert_eq!(split_lanes(128 * 64, 32), 4);
        assert_eq!(split_lanes(128 * 64, 63), 4);
        // Enough rows already: two lanes; a quarter of them, four.
        assert_eq!(split_lanes(SPLIT_THREADS, 4096), 2);
        assert_eq!(split_lanes(SPLIT_THREADS / 4, 4096), 4);
        assert_eq!(AttentionSplit::Whole.lanes(8, 4096), 1);
        assert_eq!(AttentionSplit::Autotune.lanes(8, 4096), 1);
    }
}
