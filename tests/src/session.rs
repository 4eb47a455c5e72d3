//! Sessions: a list of `etcdctl` invocations run against the reference (etcd) and the
//! subject (Conclave), each on a fresh server, whose normalised transcripts must be identical.

use std::fmt::Write;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Result;
use regex::Regex;

use crate::etcdctl::{etcdctl, etcdctl_lines};
use crate::node::{Kind, Node};
use crate::normalize::Normalizer;

/// Placeholder in a step's arguments for the (hex) id of the last lease `lease grant` printed.
pub const LEASE: &str = "{lease}";
static GRANTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"lease ([0-9a-f]+) granted").unwrap());

/// One `etcdctl` invocation.
#[derive(Clone, Debug)]
pub struct Step {
    pub args: Vec<String>,
    pub stdin: Option<String>,
    /// For commands that run until stopped (`watch`): stop after this many stdout lines.
    pub lines: Option<usize>,
}

/// How long a step that runs until stopped may take to print its lines.
const LINES_TIMEOUT: Duration = Duration::from_secs(20);

/// A step from a command line split on whitespace; `'...'` groups words, `''` is an empty
/// argument (e.g. `put '' v`).
pub fn ctl(cmdline: &str) -> Step {
    let mut args = Vec::new();
    let mut rest = cmdline.trim_start();
    while !rest.is_empty() {
        let (arg, tail) = match rest.strip_prefix('\'') {
            Some(quoted) => quoted.split_once('\'').expect("unterminated quote"),
            None => rest.split_once(char::is_whitespace).unwrap_or((rest, "")),
        };
        args.push(arg.to_string());
        rest = tail.trim_start();
    }
    Step { args, stdin: None, lines: None }
}

/// One step per command line, each run as [`ctl`] runs it.
pub fn ctls(cmdlines: &[&str]) -> Vec<Step> {
    cmdlines.iter().map(|c| ctl(c)).collect()
}

/// A step reading `stdin`, e.g. `txn` with its compares, success and failure sections.
pub fn ctl_stdin(cmdline: &str, stdin: &str) -> Step {
    Step {
        stdin: Some(stdin.to_string()),
        ..ctl(cmdline)
    }
}

/// A step that runs until it has printed `lines` lines (e.g. `watch`), with optional `stdin` kept
/// open meanwhile (e.g. `watch -i`).
pub fn ctl_lines(cmdline: &str, stdin: Option<&str>, lines: usize) -> Step {
    Step { stdin: stdin.map(str::to_string), lines: Some(lines), ..ctl(cmdline) }
}

/// The same read in the three output formats: simple, `-w json` and `-w fields`.
pub fn formats(cmdline: &str) -> Vec<Step> {
    ["", " -w json", " -w fields"]
        .iter()
        .map(|w| ctl(&format!("{cmdline}{w}")))
        .collect()
}

/// Runs `steps` in order against `endpoint` and returns the normalised transcript.
pub fn transcript(endpoint: &str, steps: &[Step]) -> Result<String> {
    let mut normalizer = Normalizer::new();
    let mut lease = String::new();
    let mut out = String::new();
    for step in steps {
        let args: Vec<String> = step.args.iter().map(|a| a.replace(LEASE, &lease)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = match step.lines {
            Some(lines) => etcdctl_lines(endpoint, &args, step.stdin.as_deref(), lines, LINES_TIMEOUT)?,
            None => etcdctl(endpoint, &args, step.stdin.as_deref())?,
        };
        if let Some(id) = GRANTED.captures(&result.stdout) {
            lease = id[1].to_string();
        }
        let shown_args: Vec<String> = step.args.iter().map(|a| shown(a)).collect();
        writeln!(out, "$ etcdctl {}", shown_args.join(" "))?;
        for line in step.stdin.iter().flat_map(|s| s.lines()) {
            writeln!(out, "< {}", elided(line))?;
        }
        writeln!(out, "exit {}", result.code)?;
        for (name, text) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
            if !text.is_empty() {
                writeln!(out, "{name}:\n{}", normalizer.output(text.trim_end()))?;
            }
        }
    }
    Ok(out)
}

/// An argument as shown in a transcript: quoted if empty or spaced, elided if long.
fn shown(arg: &str) -> String {
    match elided(arg) {
        arg if arg.is_empty() || arg.contains(' ') => format!("'{arg}'"),
        arg => arg,
    }
}

/// Long text (a value testing size limits) as its start and length.
fn elided(text: &str) -> String {
    match text.len() {
        n if n > 60 => format!("{}…({n} bytes)", &text[..20]),
        _ => text.into(),
    }
}

/// Starts a fresh etcd and a fresh [`Kind::subject`] with the same server flags, runs the
/// session on both and panics with a diff of the transcripts if they differ.
pub fn assert_same_as_etcd(server_args: &[&str], steps: &[Step]) {
    let (etcd, subject) = std::thread::scope(|s| {
        let etcd = s.spawn(|| run_on(Kind::Etcd, server_args, steps));
        let subject = run_on(Kind::subject(), server_args, steps);
        (etcd.join().unwrap(), subject)
    });
    let (expected, _) = etcd.unwrap_or_else(|e| panic!("etcd: {e:#}"));
    let (actual, node) = subject.unwrap_or_else(|e| panic!("subject: {e:#}"));
    // Captured by the test runner: shown on failure, or with --nocapture.
    println!("etcd's transcript:\n{expected}");
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, &actual);
        let log = node.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{:?} differs from etcd (- etcd, + {:?}):\n{}\n--- last lines of its log ---\n{}",
            node.kind(),
            node.kind(),
            diff.unified_diff().context_radius(4),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

fn run_on(kind: Kind, server_args: &[&str], steps: &[Step]) -> Result<(String, Node)> {
    let node = Node::start(kind, server_args)?;
    Ok((transcript(&node.endpoint(), steps)?, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_command_lines() {
        assert_eq!(ctl("put '' v").args, ["put", "", "v"]);
        assert_eq!(ctl("  get a  --prefix ").args, ["get", "a", "--prefix"]);
        assert_eq!(ctl("put k 'two words'").args, ["put", "k", "two words"]);
    }
}
