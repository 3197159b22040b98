//! Software adapters (Mesa's llvmpipe, which lavapipe runs on) end a shader
//! invocation's loops after 65,535 iterations in all, counting every loop it runs (a
//! guard against shaders that never end), and skip the rest of its work without an
//! error: a column sum over two million rows read 116,504 of them. On such an adapter
//! the kernels whose loops grow with the data are launched so that no invocation comes
//! near that.

/// Loop iterations kiln plans for one invocation's main loop on a software adapter:
/// half the limit, leaving room for the loops around it and inside it.
pub(crate) const SOFTWARE_LOOP_BUDGET: usize = 1 << 15;
