//! Whether ops record the graph: on by default, off inside `no_grad` (and while a
//! backward pass computes gradients). Per thread.

use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True unless inside `no_grad` (or a `NoGradGuard`): whether ops record their parents.
pub fn is_grad_enabled() -> bool {
    ENABLED.with(Cell::get)
}

/// Turns recording off until dropped, then restores what was there before.
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    #[allow(clippy::new_without_default)]
    /// Turns gradient recording off until the guard is dropped.
    pub fn new() -> Self {
        NoGradGuard {
            previous: ENABLED.with(|e| e.replace(false)),
        }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        ENABLED.with(|e| e.set(self.previous));
    }
}

/// Runs `f` without recording the graph: for inference and parameter updates.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGradGuard::new();
    f()
}
