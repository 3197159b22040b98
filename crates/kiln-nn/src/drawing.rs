//! What every PNG kiln-nn draws shares: the bundled font, and errors that name the
//! file being written.

use kiln::Error;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Makes "sans-serif" the bundled DejaVu Sans, once per process.
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A failure only means text is missing from the picture; drawing will report it.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A failure of `op` while drawing or writing `path`.
pub(crate) fn file_error(op: &'static str, path: &Path, e: impl ToString) -> Error {
    Error::Io {
        op,
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}
