//! Running the real `etcdctl` (API v3) against an endpoint.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// What one `etcdctl` invocation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlOutput {
    /// Exit code; -1 if it died from a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `etcdctl --endpoints <endpoint> <args>` with `ETCDCTL_API=3`, feeding `stdin` if given
/// (e.g. the compares and operations of `txn`). `ETCDCTL_BIN` overrides the binary.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Result<CtlOutput> {
    let binary = std::env::var_os("ETCDCTL_BIN").unwrap_or("etcdctl".into());
    let mut child = Command::new(&binary)
        .env("ETCDCTL_API", "3")
        // Nothing from the caller's environment (e.g. ETCDCTL_ENDPOINTS) may steer it.
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {binary:?}"))?;
    // Dropping stdin closes it, so a command that reads it sees EOF after the input. A write
    // error only means etcdctl exited without reading: its output says why.
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin.unwrap_or("").as_bytes());
    drop(input);
    let out = child.wait_with_output()?;
    Ok(CtlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
