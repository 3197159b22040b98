//! How a device runs a convolution that is not grouped thinly enough to sum directly:
//! unfold the image into columns and multiply (`Unfold`), or multiply with the columns
//! read from the image where it lies (`Implicit`; both in `ops::conv_product`, the
//! weight gradient's in `ops::conv_weight_grad`); by default the autotuner times the
//! two per shape class.

use crate::autotune::{self, Tunable};
use crate::env_warning::warn_once;

/// The two ways of running a convolution as a matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// im2col into a column matrix, then the device's matmul. A weight gradient,
    /// whose columns would be the whole batch's, runs its direct kernel
    /// (`conv/weight_grad.wgsl`).
    Unfold,
    /// One tiled-matmul launch that reads the columns in place: no column matrix is
    /// written or read back (for a 3x3 kernel, nine times the image), one launch
    /// fewer, and the bias and activation after it fuse as its epilogue. It runs
    /// the tiled kernel whatever the matmul variant. A weight gradient (f32) is the
    /// tiled kernel's product of the output's gradient by the columns transposed,
    /// both read in place (`ops::conv_weight_grad`).
    Implicit,
    /// Per shape class, the faster of the two as timed on this adapter at first use
    /// (`autotune.rs`); convolutions too small to tune take `fixed_default`, weight
    /// gradients `Implicit`. The default unless `KILN_AUTOTUNE=0` or `KILN_CONV` is
    /// set.
    Autotune,
}

impl ConvAlgorithm {
    pub const ALL: [ConvAlgorithm; 3] = [
        ConvAlgorithm::Unfold,
        ConvAlgorithm::Implicit,
        ConvAlgorithm::Autotune,
    ];
    /// What the autotuner times.
    pub(crate) const CANDIDATES: [ConvAlgorithm; 2] =
        [ConvAlgorithm::Unfold, ConvAlgorithm::Implicit];

    /// The name `KILN_CONV` takes.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Unfold => "unfold",
            ConvAlgorithm::Implicit => "implicit",
            ConvAlgorithm::Autotune => "autotune",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// `KILN_CONV=<name>` overrides; otherwise `Autotune`, or with `KILN_AUTOTUNE=0`
    /// the fixed default.
    pub(crate) fn for_adapter(software: bool) -> Self {
        if let Ok(name) = std::env::var("KILN_CONV") {
            match Self::from_name(&name) {
                Some(a) => return a,
                None => warn_once(&format!("KILN_CONV={name}: not a convolution algorithm")),
            }
        }
        match autotune::enabled() {
            true => ConvAlgorithm::Autotune,
            false => Self::fixed_default(software),
        }
    }

    /// Without tuning: `Unfold` on adapters that run on the CPU, whose fast matmul
    /// (`MatmulVariant::UniformLhs`) reads its operands from buffers (on lavapipe the
    /// implicit kernel ran the bench's 3x3 convolution about 2x slower); `Implicit` on
    /// hardware GPUs, where small convolutions are bound by launches and traffic,
    /// both of which it saves.
    pub(crate) fn fixed_default(software: bool) -> Self {
        match software {
            true => ConvAlgorithm::Unfold,
            false => ConvAlgorithm::Implicit,
        }
    }
}

impl Tunable for ConvAlgorithm {
    fn name(self) -> &'static str {
        ConvAlgorithm::name(self)
    }

    fn from_name(name: &str) -> Option<Self> {
        ConvAlgorithm::from_name(name)
    }
}
