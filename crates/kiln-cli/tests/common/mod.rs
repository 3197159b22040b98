//! Running the `kiln` binary as a user does, for the CLI's integration tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// `kiln args`, with `XDG_RUNTIME_DIR` set so Mesa's driver stays quiet.
pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("kiln runs")
}

/// The run's stdout; it must have succeeded.
pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kiln failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The run's stderr; it must have failed.
pub fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "kiln should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
