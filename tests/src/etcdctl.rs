//! Running the real `etcdctl` (API v3) against an endpoint.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    let mut child = spawn(endpoint, args)?;
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

/// Runs a command that does not end by itself (`watch`), with `stdin` written and kept open,
/// until it has printed `lines` lines of stdout (or `timeout` passes); then kills it. The exit
/// code reads -1.
pub fn etcdctl_lines(endpoint: &str, args: &[&str], stdin: Option<&str>, lines: usize, timeout: Duration) -> Result<CtlOutput> {
    let mut child = spawn(endpoint, args)?;
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin.unwrap_or("").as_bytes());
    let stdout = child.stdout.take().unwrap();
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < lines {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => out.push(line),
            Err(_) => break,
        }
    }
    child.kill()?;
    drop(input);
    let rest = child.wait_with_output()?;
    Ok(CtlOutput {
        code: -1,
        stdout: out.iter().map(|l| format!("{l}\n")).collect(),
        stderr: String::from_utf8_lossy(&rest.stderr).into_owned(),
    })
}

fn spawn(endpoint: &str, args: &[&str]) -> Result<Child> {
    let binary = std::env::var_os("ETCDCTL_BIN").unwrap_or("etcdctl".into());
    Command::new(&binary)
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
        .with_context(|| format!("spawning {binary:?}"))
}
