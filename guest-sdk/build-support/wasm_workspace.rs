//! Building a cargo workspace of guests for `wasm32-wasip2` from inside another cargo run (a
//! build script, a test): std only, shared by `host/build.rs` and the tests' harness with
//! `#[path]`, so the two builds cannot drift apart.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";

/// Settings of the outer cargo run that would change or break the nested one: its target dir,
/// flags for the host target, the package being built.
const OUTER_ENV: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
];

/// `$CARGO_TARGET_DIR/NAME` when that is set, else `<workspace_root>/target/NAME`: a place that
/// survives between builds, so the nested build is incremental.
pub fn target_dir(workspace_root: &Path, name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root.join("target")).join(name)
}

/// `cargo build --release --target wasm32-wasip2` of the workspace at `manifest` into
/// `target_dir`, with `env` set; the answer is the directory holding the `.wasm` files.
pub fn build(manifest: &Path, target_dir: &Path, env: &[(&str, &str)]) -> Result<PathBuf, String> {
    check_target_installed()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for name in OUTER_ENV {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = command.output().map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!(
            "building {} for {TARGET} failed ({}):\n{}",
            manifest.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(target_dir.join(TARGET).join("release"))
}

/// rustup installs a target's standard library under rustc's target-libdir; without it the
/// nested build would fail with a far less helpful "can't find crate for `core`".
fn check_target_installed() -> Result<(), String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rustc.to_string_lossy()))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && libdir.is_dir() {
        Ok(())
    } else {
        Err(format!("the {TARGET} target is not installed; install it with `rustup target add {TARGET}`"))
    }
}
