//! Element types a tensor can hold.

use std::fmt;

/// The element type of a tensor.
///
/// Floating types carry data; `I32` carries indices and labels. Comparisons return a
/// mask in the dtype of their inputs (1 for true, 0 for false). `F64` exists on the
/// CPU only (WGSL has no f64): it is what `gradcheck` differentiates in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    I32,
    F64,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::F64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I32 => "i32",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of dtypes: what an op accepts (see the op table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DTypeSet(u8);

impl DTypeSet {
    pub const FLOAT: DTypeSet = DTypeSet(1 | 2 | 8);
    pub const ALL: DTypeSet = DTypeSet(1 | 2 | 4 | 8);

    const fn bit(dtype: DType) -> u8 {
        match dtype {
            DType::F32 => 1,
            DType::F16 => 2,
            DType::I32 => 4,
            DType::F64 => 8,
        }
    }

    pub const fn contains(self, dtype: DType) -> bool {
        self.0 & Self::bit(dtype) != 0
    }

    /// Why a dtype outside the set is refused, for `Error::UnsupportedDType`.
    pub fn refusal(self) -> &'static str {
        if self == Self::FLOAT {
            "this op needs a floating-point tensor"
        } else {
            "this op does not take this dtype"
        }
    }
}

impl DType {
    /// Every dtype, for iterating over a `DTypeSet`.
    pub const ALL: [DType; 4] = [DType::F32, DType::F16, DType::I32, DType::F64];

    /// `Err(UnsupportedDType)` unless this is a floating-point dtype: the check of
    /// every float-only op that is not in the op table (matmul, conv, softmax, ...).
    pub fn require_float(self, op: &'static str) -> crate::Result<()> {
        if self.is_float() {
            return Ok(());
        }
        Err(crate::Error::UnsupportedDType {
            op,
            dtype: self,
            reason: DTypeSet::FLOAT.refusal(),
        })
    }
}
