//! Software adapters (Mesa's llvmpipe, which lavapipe runs on) end a shader
//! invocation's loops after 65,535 iterations in all, counting every loop it runs (a
//! guard against shaders that never end), and skip the rest of its work without an
//! error: a column sum over two million rows read 116,504 of them. On such an adapter
//! the kernels whose loops grow with the data are launched so that no invocation comes
//! near that, and what cannot be launched so is refused (`check`).

use crate::device::GpuDevice;
use kiln_core::{Error, Result};

/// Loop iterations kiln plans for one invocation's main loop on a software adapter:
/// half the limit, leaving room for the loops around it and inside it.
pub(crate) const SOFTWARE_LOOP_BUDGET: usize = 1 << 15;

/// On a software adapter, an error for a launch whose invocations loop `iterations`
/// times, past the budget, where its result would be cut short; `what` says what asks
/// for that many (e.g. "rows of 12000000 elements").
pub(crate) fn check(
    op: &'static str,
    device: &GpuDevice,
    iterations: usize,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if !device.is_software() || iterations <= SOFTWARE_LOOP_BUDGET {
        return Ok(());
    }
    Err(Error::Unsupported {
        op,
        reason: format!(
            "{} take {iterations} loop iterations an invocation, and a software adapter's \
             shaders stop after 65,535 (kiln plans for {SOFTWARE_LOOP_BUDGET}); use the CPU \
             device or a hardware GPU",
            what()
        ),
    })
}
