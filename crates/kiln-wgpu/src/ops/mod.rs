//! Kernel launchers, one module per family of `shaders/`.

pub(crate) mod create;
pub(crate) mod elementwise;
pub(crate) mod index;
pub(crate) mod loss;
pub mod matmul;
pub(crate) mod reduce;
pub(crate) mod window;

use kiln_core::{DType, Error, Result};

/// The error every launcher of a float-only kernel returns for other dtypes.
pub(crate) fn require_float(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype,
            reason: "this op needs a floating-point tensor",
        })
    }
}
