//! Running this workspace's `conclavectl` against a member and checking how it ended.

use std::process::{Command, Output};

use crate::node::conclavectl_bin;

/// `conclavectl --endpoints ENDPOINT ARGS…` (the endpoint as host:port).
pub fn run(endpoint: &str, args: &[&str]) -> Output {
    let bin = conclavectl_bin().expect("conclavectl is built");
    Command::new(bin)
        .arg("--endpoints")
        .arg(endpoint.trim_start_matches("http://"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("conclavectl runs")
}

/// Its stdout, asserting that it succeeded with nothing on stderr.
#[track_caller]
pub fn ok(out: Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "conclavectl failed ({}): {stderr}{stdout}", out.status);
    assert_eq!(stderr, "", "a successful command prints nothing on stderr");
    stdout.into_owned()
}

/// Its one `Error:` line, asserting that it failed with nothing on stdout.
#[track_caller]
pub fn failed(out: Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "conclavectl succeeded: {stdout}");
    assert_eq!(stdout, "");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    assert!(lines[0].starts_with("Error: "), "{stderr:?}");
    lines[0].to_string()
}
