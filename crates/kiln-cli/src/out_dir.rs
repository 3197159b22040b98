//! The folder a command writes into.

use std::path::Path;

/// Creates `dir` and its parents; an error names `op` and the folder.
pub fn create(op: &'static str, dir: &Path) -> kiln::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| kiln::Error::Io {
        op,
        path: dir.display().to_string(),
        reason: e.to_string(),
    })
}
