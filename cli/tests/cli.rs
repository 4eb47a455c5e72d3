//! `conclavectl` on its own (the integration suite in `tests/` runs it against real members).

use std::process::Command;

#[test]
fn dump_log_refuses_a_missing_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = Command::new(env!("CARGO_BIN_EXE_conclavectl")).arg("dump-log").arg("--data-dir").arg(&missing).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no member database"), "unexpected error: {stderr}");
    // Nothing was created on the way.
    assert!(!missing.exists());
}
