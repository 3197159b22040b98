//! How a device runs attention without masks: the fused kernels (`ops::attention`), or
//! composed from products and a softmax by the layers (kiln-nn's `functional`); by
//! default the autotuner times the two per shape class (`GpuDevice::attention_way_for`).
//! Which wins depends on the card: the fused kernels never write the scores, but each
//! query walks its keys alone, and few long heads leave most of a large GPU idle.

use crate::autotune::{self, Tunable};
use crate::env_warning::warn_once;

/// The two ways of running attention, and the choice between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionWay {
    /// One kernel forward and two backward; the scores are never written.
    Fused,
    /// Two products and a softmax, each its own launch; `Tensor::attention` is refused
    /// (`Error::Unsupported`).
    Composed,
    /// Per shape class, the faster of the two as timed on this adapter at first use.
    /// The default unless `KILN_AUTOTUNE=0` or `KILN_ATTENTION` is set.
    Autotune,
}

impl AttentionWay {
    pub const ALL: [AttentionWay; 3] = [
        AttentionWay::Fused,
        AttentionWay::Composed,
        AttentionWay::Autotune,
    ];
    /// What the autotuner times.
    pub const CANDIDATES: [AttentionWay; 2] = [AttentionWay::Fused, AttentionWay::Composed];

    /// The name `KILN_ATTENTION` takes.
    pub fn name(self) -> &'static str {
        match self {
            AttentionWay::Fused => "fused",
            AttentionWay::Composed => "composed",
            AttentionWay::Autotune => "autotune",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// `KILN_ATTENTION=<name>` overrides; otherwise `Autotune`, or with
    /// `KILN_AUTOTUNE=0` the fixed default.
    pub(crate) fn from_env() -> Self {
        if let Ok(name) = std::env::var("KILN_ATTENTION") {
            match Self::from_name(&name) {
                Some(a) => return a,
                None => warn_once(&format!(
                    "KILN_ATTENTION={name}: not fused, composed or autotune"
                )),
            }
        }
        match autotune::enabled() {
            true => AttentionWay::Autotune,
            false => Self::FIXED_DEFAULT,
        }
    }

    /// Without tuning: fused, which launches and moves less on every adapter measured
    /// (lavapipe: the char transformer's step 100 launches against 118, and 0.45 GB
    /// moved against 0.54).
    pub const FIXED_DEFAULT: AttentionWay = AttentionWay::Fused;
}

impl Tunable for AttentionWay {
    fn name(self) -> &'static str {
        AttentionWay::name(self)
    }

    fn from_name(name: &str) -> Option<Self> {
        AttentionWay::from_name(name)
    }
}
