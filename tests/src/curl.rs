//! HTTP requests with the real `curl`, as a user of the JSON gateway sends them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// How long one request may take.
const REQUEST_TIMEOUT: &str = "20";
/// Marks the status code `-w` appends after the body.
const STATUS_MARK: &str = "\n@@status ";

/// An HTTP answer (or curl's own failure: status 0 and curl's message as the body).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Runs curl with `args` against `url`, returning the status and body.
pub fn curl(url: &str, args: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", REQUEST_TIMEOUT, "-w", &format!("{STATUS_MARK}%{{http_code}}")])
        .args(args)
        .arg(url)
        .output()
        .expect("running curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, status) = stdout.rsplit_once(STATUS_MARK).unwrap_or((&stdout, "0"));
    let status = status.trim().parse().unwrap_or(0);
    if status == 0 {
        return Answer { status, body: String::from_utf8_lossy(&out.stderr).trim().to_string() };
    }
    Answer { status, body: body.to_string() }
}

/// `POST base+path` with a JSON body.
pub fn post(base: &str, path: &str, body: &str, args: &[&str]) -> Answer {
    let mut all = vec!["-X", "POST", "-d", body];
    all.extend_from_slice(args);
    curl(&format!("{base}{path}"), &all)
}

/// A streaming request held open (`curl -N`), read line by line as the server writes.
pub struct Stream {
    child: Child,
    lines: Receiver<String>,
}

impl Stream {
    pub fn open(base: &str, path: &str, body: &str, args: &[&str]) -> Stream {
        let mut child = Command::new("curl")
            .args(["-sS", "-N", "-X", "POST", "-d", body])
            .args(args)
            .arg(format!("{base}{path}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running curl");
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Stream { child, lines }
    }

    /// The next line, waiting up to `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
