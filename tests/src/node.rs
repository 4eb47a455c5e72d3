//! One server process — real etcd or Conclave — on loopback ports with its own data dir.
//!
//! Both binaries take the same etcd flags. Readiness is the "ready to serve client requests"
//! line on the child's stderr (etcd prints it too); after that, stdout and stderr keep being
//! drained into a buffer so the child never blocks on a full pipe and failures can show the log.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// The phrase both servers print once they serve clients.
const READY: &str = "ready to serve client requests";
/// Generous: a debug build on a busy machine, but a hang still fails with the log.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGSTOPped process may take to stop every thread (a loaded machine).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Same member name for every node, so outputs that show it compare equal across servers.
const NAME: &str = "node";

/// Which server binary a [`Node`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Real etcd (the reference): `ETCD_BIN` or `etcd` on `PATH`.
    Etcd,
    /// This workspace's `conclave` binary: `CONCLAVE_BIN` or `target/<profile>/conclave`.
    Conclave,
}

impl Kind {
    /// The server under test: Conclave, unless `CONCLAVE_TEST_SUBJECT=etcd` asks to run the
    /// comparison suites etcd-vs-etcd (a self-check of the harness and of the sessions).
    pub fn subject() -> Kind {
        match std::env::var("CONCLAVE_TEST_SUBJECT").as_deref() {
            Ok("etcd") => Kind::Etcd,
            _ => Kind::Conclave,
        }
    }

    fn binary(self) -> Result<PathBuf> {
        match self {
            Kind::Etcd => Ok(std::env::var_os("ETCD_BIN").map_or("etcd".into(), PathBuf::from)),
            Kind::Conclave => conclave_bin(),
        }
    }
}

/// `CONCLAVE_BIN`, else `conclave` next to the test executable's `deps/` directory.
fn conclave_bin() -> Result<PathBuf> {
    workspace_bin("conclave", "CONCLAVE_BIN", "conclave-host")
}

/// This workspace's `conclavectl`: `CONCLAVECTL_BIN`, else `conclavectl` next to the test
/// executable's `deps/` directory.
pub fn conclavectl_bin() -> Result<PathBuf> {
    workspace_bin("conclavectl", "CONCLAVECTL_BIN", "conclave-cli")
}

/// The binary `name`: the path in the environment variable `var`, else `target/<profile>/name`
/// (next to the test executable's `deps/` directory), built by `package`.
fn workspace_bin(name: &str, var: &str, package: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().context("locating the test executable")?;
            let mut dir = exe.parent().context("test executable has no parent")?;
            // Tests run from target/<profile>/deps, examples from target/<profile>/examples.
            if dir.ends_with("deps") || dir.ends_with("examples") {
                dir = dir.parent().context("deps/ has no parent")?;
            }
            dir.join(name)
        }
    };
    if !path.is_file() {
        bail!(
            "{name} binary not found at {}: build it with `cargo build -p {package}` \
             (or point {var} at it)",
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port: bind port 0 and release it. Ports handed out by this process are
/// remembered so parallel tests never get the same one twice.
pub fn free_port() -> u16 {
    static GIVEN: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Mutex::default);
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding an ephemeral loopback port")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A running (or killed) server process. Killed with SIGKILL on drop.
pub struct Node {
    kind: Kind,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// The peer port other members are told to dial, when not `peer_port` (a proxy in front).
    advertised_peer_port: Option<u16>,
    extra_args: Vec<String>,
    /// Member name and `--initial-cluster` (None: this member alone).
    name: String,
    initial_cluster: Option<String>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    /// `http` or `https`, for the client and the peer URLs.
    schemes: Schemes,
    /// Environment variables set for the process (on top of this one's).
    env: Vec<(String, String)>,
}

/// The URL schemes of a node's client and peer ports.
#[derive(Clone, Copy, Debug)]
pub struct Schemes {
    pub client: &'static str,
    pub peer: &'static str,
}

impl Schemes {
    pub const PLAIN: Schemes = Schemes { client: "http", peer: "http" };
}

/// A spawned process that has not said it is ready yet.
pub struct Starting {
    ready: mpsc::Receiver<()>,
}

impl Node {
    /// Starts a one-member cluster of `kind` with extra server flags (e.g. `--max-txn-ops 3`)
    /// and waits until it serves clients.
    pub fn start(kind: Kind, extra_args: &[&str]) -> Result<Node> {
        Node::start_with(kind, extra_args, Schemes::PLAIN)
    }

    /// [`Node::start`] with `https` URLs where `schemes` asks (the TLS flags in `extra_args`).
    pub fn start_with(kind: Kind, extra_args: &[&str], schemes: Schemes) -> Result<Node> {
        Node::start_in(kind, &std::env::temp_dir(), extra_args, schemes)
    }

    /// [`Node::start_with`], its data dir made in `parent` (e.g. a small file system).
    pub fn start_in(kind: Kind, parent: &Path, extra_args: &[&str], schemes: Schemes) -> Result<Node> {
        let mut attempts = 0;
        loop {
            let mut node = Node {
                kind,
                dir: tempfile::Builder::new()
                    .prefix("conclave-test-")
                    .tempdir_in(parent)?,
                client_port: free_port(),
                peer_port: free_port(),
                advertised_peer_port: None,
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                name: NAME.to_string(),
                initial_cluster: None,
                child: None,
                log: Arc::default(),
                schemes,
                env: Vec::new(),
            };
            attempts += 1;
            match node.spawn() {
                // Another process took a port between free_port() and the bind: new ports.
                Err(_) if attempts < 3 && node.log().contains("already in use") => continue,
                result => return result.map(|()| node),
            }
        }
    }

    /// A member of a cluster, not started: `name` on the given ports, `initial_cluster` being
    /// etcd's `--initial-cluster` for every member. Start it with [`Node::launch`].
    pub fn member(kind: Kind, name: &str, client_port: u16, peer_port: u16, initial_cluster: &str, extra_args: &[&str]) -> Result<Node> {
        Ok(Node {
            kind,
            dir: tempfile::Builder::new().prefix("conclave-test-").tempdir()?,
            client_port,
            peer_port,
            advertised_peer_port: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            name: name.to_string(),
            initial_cluster: Some(initial_cluster.to_string()),
            child: None,
            log: Arc::default(),
            schemes: Schemes::PLAIN,
            env: Vec::new(),
        })
    }

    /// Keep the data dir in `parent` (a small disk of the test's) instead, from the first launch
    /// on.
    pub fn place_data_dir_in(&mut self, parent: &Path) -> Result<()> {
        self.dir = tempfile::Builder::new().prefix("conclave-test-").tempdir_in(parent)?;
        Ok(())
    }

    /// This member again, as a new member of its cluster after it was removed: the same name,
    /// ports, flags and environment, an empty data dir (beside the old one), `initial_cluster`
    /// as `etcdctl member add` printed it, and `--initial-cluster-state existing`. Not started.
    pub fn rejoining(&self, initial_cluster: &str) -> Result<Node> {
        let mut extra_args = self.extra_args.clone();
        // A member replaced before already has it.
        if !extra_args.iter().any(|arg| arg == "--initial-cluster-state") {
            extra_args.extend(["--initial-cluster-state".to_string(), "existing".to_string()]);
        }
        let parent = self.dir.path().parent().context("a data dir has a parent")?;
        Ok(Node {
            dir: tempfile::Builder::new().prefix("conclave-test-").tempdir_in(parent)?,
            extra_args,
            initial_cluster: Some(initial_cluster.to_string()),
            child: None,
            log: Arc::default(),
            name: self.name.clone(),
            env: self.env.clone(),
            ..*self
        })
    }

    /// Set an environment variable for the process from the next launch on.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Keep the data dir when this node is dropped, with the log so far written into it as
    /// `log.txt`; returns where it is.
    pub fn keep_data_dir(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        let _ = std::fs::write(self.dir.path().join("log.txt"), self.log());
        self.dir.path().to_path_buf()
    }

    /// Serve and dial with `https` where `schemes` asks, from the next launch on.
    pub fn set_schemes(&mut self, schemes: Schemes) {
        self.schemes = schemes;
    }

    /// Listen on (and advertise) `port` for peers from the next start on, as after
    /// `etcdctl member update`.
    pub fn move_peer_port(&mut self, port: u16) {
        self.peer_port = port;
    }

    /// Tell other members to dial `port` (a proxy forwarding to this member's peer port), from
    /// the next launch on.
    pub fn advertise_peer_port(&mut self, port: u16) {
        self.advertised_peer_port = Some(port);
    }

    /// The peer URL other members dial, e.g. `http://127.0.0.1:41235`.
    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.schemes.peer, self.advertised_peer_port.unwrap_or(self.peer_port))
    }

    fn listen_peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.schemes.peer, self.peer_port)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process runs (it has not been killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// How the process ended, if it was launched and has exited since (without being killed by
    /// the harness): a crash shows here even when it left nothing in the log.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.schemes.client, self.client_port)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the process printed so far (stdout and stderr, all runs).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the process prints `text` within `timeout` (its output is collected as it comes,
    /// so a line it printed may not be in [`Node::log`] yet).
    pub async fn logged(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// SIGKILL and reap the process; the data dir stays. No-op if not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process as an operator would (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        assert!(self.wait_exit(STOP_TIMEOUT), "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM", self.name());
    }

    /// Waits up to `timeout` for the process to exit on its own (polled); whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(child) = &mut self.child {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// SIGSTOP the process: it stays alive, holding its ports and data dir, but does nothing (a
    /// member cut off from its peers and clients). Returns once every thread of it has stopped:
    /// the kernel wakes one thread to begin the stop, and until the scheduler runs it (a while,
    /// on a loaded machine) the other threads go on, answering peers. No-op if not running.
    pub fn pause(&self) {
        self.signal("-STOP");
        if let Some(child) = &self.child {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while !all_threads_stopped(child.id()) {
                assert!(Instant::now() < deadline, "process {} did not stop within {STOP_TIMEOUT:?} of SIGSTOP", child.id());
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// SIGCONT a process stopped by [`Node::pause`]. No-op if not running.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status()
                .unwrap_or_else(|e| panic!("kill {signal}: {e}"));
            assert!(status.success(), "kill {signal} {} failed: {status}", child.id());
        }
    }

    /// Kills the process if running, then starts it again on the same data dir and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.log.lock().unwrap().push_str("\n----- restart -----\n");
        self.spawn()
    }

    fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = self.peer_url();
        let listen_peer = self.listen_peer_url();
        let initial_cluster = self.initial_cluster.clone().unwrap_or_else(|| format!("{}={peer}", self.name));
        let mut args: Vec<String> = [
            "--name",
            &self.name,
            "--data-dir",
            &self.dir.path().to_string_lossy(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &listen_peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &initial_cluster,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) -> Result<()> {
        let starting = self.launch()?;
        self.wait_ready(starting)
    }

    /// Spawns the process without waiting for it to be ready (see [`Node::wait_ready`]).
    pub fn launch(&mut self) -> Result<Starting> {
        let binary = self.kind.binary()?;
        let mut child = Command::new(&binary)
            .args(self.args())
            // Plain logs: they end up in failure messages.
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        drain(child.stdout.take().unwrap(), self.log.clone(), None);
        drain(
            child.stderr.take().unwrap(),
            self.log.clone(),
            Some(ready_tx),
        );
        self.child = Some(child);
        Ok(Starting { ready: ready_rx })
    }

    /// Waits until a launched process serves clients; kills it and fails with its log if it
    /// exits or is not ready in time.
    pub fn wait_ready(&mut self, starting: Starting) -> Result<()> {
        let failure = match starting.ready.recv_timeout(START_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => format!("not ready after {START_TIMEOUT:?}"),
            // The stderr reader hung up: the process closed stderr, i.e. it exited.
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.take().unwrap().wait()?;
                format!("exited with {status} before it was ready")
            }
        };
        self.kill9();
        bail!("{:?} {} {failure}; its output:\n{}", self.kind, self.name, self.log())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Copies `stream` line by line into `log` on a background thread until EOF; signals `ready`
/// once, at the first line containing [`READY`].
fn drain(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>, ready: Option<Sender<()>>) {
    std::thread::spawn(move || {
        let mut ready = ready;
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let text = String::from_utf8_lossy(&line);
            if text.contains(READY)
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
            log.lock().unwrap().push_str(&text);
            line.clear();
        }
    });
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`), or
/// the process is gone.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return true };
    tasks.flatten().all(|task| {
        // The state follows the command name, which is in parentheses and may hold any byte.
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with(['T', 't', 'Z', 'X']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_replaced_twice_is_told_once_that_its_cluster_exists() {
        let member = Node::member(Kind::Conclave, "m0", 1, 2, "m0=http://127.0.0.1:2", &[]).unwrap();
        let again = member.rejoining("m0=http://127.0.0.1:2").unwrap().rejoining("m0=http://127.0.0.1:2").unwrap();
        assert_eq!(again.extra_args.iter().filter(|arg| *arg == "--initial-cluster-state").count(), 1);
    }
}

