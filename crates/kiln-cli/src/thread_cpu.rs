//! The CPU time of the calling thread: what recording a GPU step costs the host, which
//! bounds the steps a second of a model whose kernels finish faster than they are
//! recorded.

use std::time::Duration;

/// CPU time the calling thread has used; `None` where the platform does not say.
#[cfg(unix)]
pub fn now() -> Option<Duration> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    ok.then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

#[cfg(not(unix))]
pub fn now() -> Option<Duration> {
    None
}
