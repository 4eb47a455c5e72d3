//! A fresh cluster of Conclave or etcd members on loopback, started with the same etcd flags:
//! every member's ports picked up front (its `--initial-cluster` names them all), data and logs
//! in one temporary directory, ready once every member's Status RPC names a leader. The members
//! are killed and the directory removed when it drops.

use std::fmt;
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conclave_proto::etcdserverpb::StatusRequest;
use conclave_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use serde::Serialize;
use tempfile::TempDir;

use super::process::{self, Guarded};
use crate::connect::{Dial, connect};

/// A debug build on a busy machine may take a while; a member that never gets there still fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Between polls of the members' status.
const POLL: Duration = Duration::from_millis(100);

/// Which server a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Conclave,
    Etcd,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Conclave => "Conclave",
            System::Etcd => "etcd",
        })
    }
}

pub struct Cluster {
    pub system: System,
    // Before `dir`: the members die before their data is removed.
    members: Vec<Member>,
    dir: TempDir,
}

struct Member {
    name: String,
    client_url: String,
    process: Guarded,
}

impl Cluster {
    /// Starts `size` members of `binary` with data under `root`, and waits until each serves.
    pub fn start(system: System, binary: &Path, size: usize, root: &Path) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bench-{}-", system.to_string().to_lowercase()))
            .tempdir_in(root)
            .with_context(|| format!("creating a directory in {}", root.display()))?;
        process::remove_on_signal(dir.path().to_path_buf());
        let ports = free_ports(2 * size)?;
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let initial_cluster =
            (0..size).map(|i| format!("m{i}={}", url(ports[2 * i + 1]))).collect::<Vec<_>>().join(",");
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            let (name, client_url, peer_url) = (format!("m{i}"), url(ports[2 * i]), url(ports[2 * i + 1]));
            let log = File::create(dir.path().join(format!("{name}.log")))?;
            let mut command = Command::new(binary);
            command
                .args(["--name", &name, "--data-dir"])
                .arg(dir.path().join(&name))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster, "--initial-cluster-state", "new"])
                // etcd 3.4 defaults to the deprecated capnslog; Conclave to zap.
                .args(["--logger", "zap"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // Both servers read their flags from ETCD_* too: only the flags above count.
            for (var, _) in std::env::vars_os() {
                if var.to_string_lossy().starts_with("ETCD_") {
                    command.env_remove(var);
                }
            }
            members.push(Member { process: Guarded::spawn(&mut command)?, name, client_url });
        }
        let mut cluster = Cluster { system, members, dir };
        crate::rpc::block_on(cluster.wait_ready())?;
        Ok(cluster)
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.process.id()).collect()
    }

    /// Polls every member's status until each names a leader; fails with the log of a member
    /// that exited or of the first not ready in time.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for index in 0..self.members.len() {
            loop {
                if let Some(status) = self.members[index].process.exited() {
                    bail!("{} member m{index} exited with {status}; its log:\n{}", self.system, self.log(index));
                }
                if has_leader(&self.members[index].client_url).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} member m{index} not ready after {READY_TIMEOUT:?}; its log:\n{}", self.system, self.log(index));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// The end of a member's log, for a failure message.
    fn log(&self, index: usize) -> String {
        let path = self.dir.path().join(format!("{}.log", self.members[index].name));
        let log = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Whether the member at `url` answers Status and names a leader.
async fn has_leader(url: &str) -> bool {
    let dial = Dial { endpoints: vec![url.to_string()], timeout: Duration::from_secs(1), tls: None };
    let Ok(channel) = connect(&dial).await else { return false };
    let mut maintenance = MaintenanceClient::new(channel);
    let status = maintenance.status(StatusRequest {});
    matches!(tokio::time::timeout(Duration::from_secs(2), status).await, Ok(Ok(reply)) if reply.get_ref().leader != 0)
}

/// `count` distinct free loopback ports: all bound at once, then released for the members.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<_>>()?)
}

/// The first line `binary --version` prints.
pub fn version(binary: &Path) -> Result<String> {
    let out = process::output(Command::new(binary).arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}
