//! Output into a pipe whose reader has gone (`kiln info | head -1`) ends the process
//! quietly, as it ends other Unix tools. Rust ignores SIGPIPE, so the write fails
//! instead, and `println!` panics on it.

/// Restores SIGPIPE's default action. `kiln train` keeps Rust's: under MPI its ranks
/// talk over sockets, where a peer gone is an error to report, not a signal to die of.
#[cfg(unix)]
pub fn end_quietly_on_closed_pipe() {
    // SAFETY: sets one signal's action to the default, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
pub fn end_quietly_on_closed_pipe() {}
