//! kiln's one error type. Variants are structured so callers can match on them, and
//! every message names the op and the shapes or values involved.

use crate::{DType, Shape};

pub type Result<T> = std::result::Result<T, Error>;

/// What class of failure the GPU driver or wgpu reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuErrorKind {
    Validation,
    OutOfMemory,
    Internal,
    DeviceLost,
    Readback,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{op}: shapes {lhs} and {rhs} are incompatible")]
    ShapeMismatch {
        op: &'static str,
        lhs: Shape,
        rhs: Shape,
    },

    #[error("{op}: invalid shape {shape}: {reason}")]
    InvalidShape {
        op: &'static str,
        shape: Shape,
        reason: String,
    },

    #[error("{op}: dim {dim} is out of range for a tensor of rank {rank}")]
    DimOutOfRange {
        op: &'static str,
        dim: isize,
        rank: usize,
    },

    #[error("{op}: expected {expected} elements for shape {shape}, got {got}")]
    ElementCount {
        op: &'static str,
        shape: Shape,
        expected: usize,
        got: usize,
    },

    #[error("{op}: dtypes {lhs} and {rhs} differ")]
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },

    #[error("{op}: dtype {dtype} is not supported: {reason}")]
    UnsupportedDType {
        op: &'static str,
        dtype: DType,
        reason: &'static str,
    },

    #[error("{op}: tensors are on different devices ({lhs} and {rhs})")]
    DeviceMismatch {
        op: &'static str,
        lhs: String,
        rhs: String,
    },

    #[error("{op}: index {index} is out of range for a dim of size {size}")]
    IndexOutOfRange {
        op: &'static str,
        index: i64,
        size: usize,
    },

    #[error("{op}: rank {rank} exceeds kiln's maximum of {max}")]
    RankTooLarge {
        op: &'static str,
        rank: usize,
        max: usize,
    },

    #[error("{op}: {what} needs {needed} but the device allows {limit}")]
    LimitExceeded {
        op: &'static str,
        what: &'static str,
        needed: u64,
        limit: u64,
    },

    #[error("{op}: could not allocate {bytes} bytes of host memory")]
    HostOutOfMemory { op: &'static str, bytes: u64 },

    #[error("{op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    #[error("{op}: {reason}")]
    Unsupported { op: &'static str, reason: String },

    #[error("{op}: cannot differentiate: {reason}")]
    NoGradient { op: &'static str, reason: String },

    #[error("gradcheck: input {input}, element {index}: analytic gradient {analytic} but finite differences give {numeric}")]
    GradcheckFailed {
        input: usize,
        index: usize,
        analytic: f64,
        numeric: f64,
    },

    #[error("training stopped: the loss became {value} at epoch {epoch}, step {step}")]
    NonFiniteLoss {
        epoch: usize,
        step: usize,
        value: f64,
    },

    #[error("training diverged: the loss reached {loss} at epoch {epoch}, step {step}, more than {factor} times its start ({start}); try a smaller learning rate")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
        start: f64,
        factor: f64,
    },

    #[error("{op}: {name} holds a NaN or infinite value")]
    NonFiniteParameter { op: &'static str, name: String },

    #[error(
        "training stopped: parameter {name} became NaN or infinite by epoch {epoch}, step {step}"
    )]
    ParameterNotFinite {
        epoch: usize,
        step: usize,
        name: String,
    },

    #[error("training stopped: the input batch of epoch {epoch}, step {step} holds {value} at element {index} (flat, row-major)")]
    NonFiniteInput {
        epoch: usize,
        step: usize,
        index: usize,
        value: f64,
    },

    #[error("training stopped: the validation loss became {value} after epoch {epoch}")]
    NonFiniteValidationLoss { epoch: usize, value: f64 },

    /// Saved state (a checkpoint, an optimizer's state) that does not fit what it is
    /// loaded into; nothing was changed.
    #[error("{op}: the saved state does not fit, nothing was loaded{}", mismatch_text(.missing, .unexpected, .mismatched))]
    StateMismatch {
        op: &'static str,
        /// Expected names the state lacks.
        missing: Vec<String>,
        /// Names the state holds that nothing expects.
        unexpected: Vec<String>,
        /// Names present on both sides with another shape or dtype, with both.
        mismatched: Vec<String>,
    },

    #[error("no GPU adapter found: {reason}. On Debian/Ubuntu install Mesa's software Vulkan driver with `apt-get install -y mesa-vulkan-drivers` (lavapipe), or set KILN_DEVICE=cpu")]
    NoAdapter { reason: String },

    #[error("GPU {kind:?} error during {op}: {message}")]
    Gpu {
        op: &'static str,
        kind: GpuErrorKind,
        message: String,
    },

    /// A data-parallel run whose processes cannot go on together: they disagree on the
    /// model or the data, or the exchange between them failed.
    #[error("data-parallel training, rank {rank} of {size}: {reason}")]
    Distributed {
        rank: usize,
        size: usize,
        reason: String,
    },

    #[error("{op}: {path}: {reason}")]
    Io {
        op: &'static str,
        path: String,
        reason: String,
    },
}

impl Error {
    /// `Error::Io` for a failed file operation on `path`.
    pub fn io(op: &'static str, path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        Error::Io {
            op,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

fn mismatch_text(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    let mut out = String::new();
    for (what, names) in [
        ("missing", missing),
        ("unexpected", unexpected),
        ("mismatched", mismatched),
    ] {
        if !names.is_empty() {
            out += &format!("; {what}: {}", names.join(", "));
        }
    }
    out
}
