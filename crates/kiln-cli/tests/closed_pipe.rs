//! Output into a pipe whose reader has gone (`kiln info | head -1`) ends `kiln` quietly,
//! as it ends other Unix tools, not with Rust's panic on the broken pipe.

#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_kiln_info_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("info")
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln runs");
    // The reader goes before kiln has listed its first adapter.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("kiln ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}, stderr:\n{stderr}",
        out.status
    );
}
