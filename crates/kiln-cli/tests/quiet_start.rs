//! On a headless machine with Mesa's Vulkan driver (CI's lavapipe), opening the GPU
//! without `XDG_RUNTIME_DIR` makes Mesa print "XDG_RUNTIME_DIR is invalid or not set"
//! on stderr, twice. The `kiln` binary sets the variable before its first thread; this
//! checks that a user of the CLI sees nothing of it.

use std::process::Command;

#[test]
fn opening_the_gpu_prints_nothing_from_mesa() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("info")
        .env("KILN_DEVICE", "gpu")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .expect("kiln runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "kiln info failed:\n{stdout}\n{stderr}"
    );
    // `kiln info` ends with the adapter the GPU tests run on: the GPU was opened.
    assert!(
        stdout.lines().last().is_some_and(|l| !l.is_empty()),
        "no adapter line:\n{stdout}"
    );
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "stderr:\n{stderr}");
}
