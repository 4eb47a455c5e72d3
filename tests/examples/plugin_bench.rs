//! Benchmarks of Conclave's WebAssembly plugin platform on release server processes (data dirs in
//! the system temp dir, loopback ports), with the `misbehave` test guest:
//!
//! - `invoke`: calls/s and latency percentiles of `--clients` concurrent clients (one gRPC channel
//!   per 16) calling the guest's `noop` through `Plugin.Invoke` for `--duration`, then of the same
//!   clients doing a linearizable etcd `Range` of one key on the same node, side by side; plus the
//!   server's CPU time per request.
//! - `blocked`: `--calls` concurrent `watch-once` calls blocked on one key (the node started with
//!   `--plugin-instances calls+100`): the server's RSS and thread count before and with all calls
//!   blocked (and per blocked call), its CPU time while they are blocked, then the time from one put
//!   of the key until every call has answered, and whether each answered the value put.
//! - `idle`: the server's RSS with only the built-in plugins, then after deploying the guest under
//!   `--plugins` names (each its own manifest) and after one call of each: RSS per idle plugin;
//!   and the time of each deploy (the first compiles, the others should hit the compile cache).
//! - `cluster`: a 3-member cluster; a deploy on member 0, then the time from its answer until each
//!   member serves the new version (`Get` polled every 5 ms) and `noop` works there; once, then
//!   over `--redeploys` redeploys (each with another manifest, so a new version): min/median/max.
//!
//! Each result is one line starting with what it measures. The server's CPU time and RSS are read
//! from /proc; `CONCLAVE_BIN` overrides the server binary (default: `conclave` next to `examples/`).
//!
//! CARGO_TARGET_DIR=/work/target-release cargo build --release -p conclave-host -p conclave-cli --bins
//! CARGO_TARGET_DIR=/work/target-release cargo run --release -p conclave-tests --example plugin_bench -- invoke --clients 16 --duration 8
//! (likewise `blocked --calls 10000`, `idle --plugins 20`, `cluster`)

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use conclave_proto::conclave::plugin::InvokeRequest;
use conclave_proto::conclave::plugin::plugin_client::PluginClient;
use conclave_proto::etcdserverpb::kv_client::KvClient;
use conclave_proto::etcdserverpb::{PutRequest, RangeRequest};
use conclave_tests::guests::guest_wasm;
use conclave_tests::latency::percentiles;
use conclave_tests::plugins::{Plugins, misbehave_manifest};
use conclave_tests::{Cluster, Kind, Node};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::transport::Channel;

/// Name the guest is deployed under (except by `idle`, which deploys it under many).
const PLUGIN: &str = "misbehave";
/// Clients sharing one gRPC channel in `invoke`.
const CLIENTS_PER_CHANNEL: usize = 16;
/// Key `invoke` reads and `blocked` waits on (the guest sees `allowed/` + its payload).
const BENCH_KEY: &str = "bench";
/// How long a cluster member may take to serve a new version.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `cluster` polls a member.
const POLL: Duration = Duration::from_millis(5);

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Plugin `noop` calls against etcd `Range`s on one node.
    Invoke {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// How long each load runs: seconds, or a duration like `1m`.
        #[arg(long, default_value = "8", value_parser = seconds_or_duration)]
        duration: Duration,
    },
    /// Many calls blocked in a wait on one key, then released by one put.
    Blocked {
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        /// gRPC channels the calls are spread over.
        #[arg(long, default_value_t = 20)]
        channels: usize,
        /// How long the blocked calls are left alone while the server's CPU time is measured.
        #[arg(long, default_value = "5", value_parser = seconds_or_duration)]
        hold: Duration,
        /// How long the calls may take to answer after the put.
        #[arg(long, default_value = "60", value_parser = seconds_or_duration)]
        release_timeout: Duration,
    },
    /// Memory of idle deployed plugins and the time of deploys.
    Idle {
        #[arg(long, default_value_t = 20)]
        plugins: usize,
    },
    /// How fast a deploy reaches every member of a 3-member cluster.
    Cluster {
        #[arg(long, default_value_t = 5)]
        redeploys: usize,
    },
}

/// A plain number of seconds, or a humantime duration.
fn seconds_or_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    text.parse::<u64>().map(Duration::from_secs).or_else(|_| humantime::parse_duration(text))
}

/// The guest's manifest: `allowed/` and room for `max_concurrent_calls` calls of up to
/// `timeout_ms` each.
fn manifest(timeout_ms: u64, max_concurrent_calls: usize) -> String {
    misbehave_manifest(&format!(r#"{{"timeout_ms":{timeout_ms},"max_concurrent_calls":{max_concurrent_calls}}}"#))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The middle of `values` (the upper one of an even count); zero for none.
fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// "min X ms, median Y ms, max Z ms" of `values`.
fn spread(values: &[Duration]) -> String {
    let min = values.iter().min().copied().unwrap_or_default();
    let max = values.iter().max().copied().unwrap_or_default();
    format!("min {:.1} ms, median {:.1} ms, max {:.1} ms", ms(min), ms(median(values)), ms(max))
}

/// A server process as /proc shows it.
struct Server {
    pid: u32,
    /// Clock ticks per second of /proc/PID/stat's times.
    ticks_per_second: u64,
}

/// One reading of a server's resources.
struct Usage {
    rss_kib: u64,
    threads: u64,
    /// User plus system CPU time so far.
    cpu: Duration,
}

impl Server {
    /// The process of `node`: the one whose arguments include its data dir.
    fn of(node: &Node) -> anyhow::Result<Server> {
        let data_dir = node.data_dir().as_os_str().as_encoded_bytes();
        let pid = std::fs::read_dir("/proc")?
            .filter_map(Result::ok)
            .filter_map(|entry| Some((entry.file_name().to_str()?.parse::<u32>().ok()?, entry.path())))
            .find(|(_, path)| {
                std::fs::read(path.join("cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == data_dir))
            })
            .map(|(pid, _)| pid)
            .with_context(|| format!("no process runs with data dir {}", node.data_dir().display()))?;
        let getconf = Command::new("getconf").arg("CLK_TCK").output().context("getconf CLK_TCK")?;
        let ticks_per_second =
            String::from_utf8_lossy(&getconf.stdout).trim().parse().context("CLK_TCK is a number")?;
        Ok(Server { pid, ticks_per_second })
    }

    fn usage(&self) -> anyhow::Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).context("the server exited")?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("no {name} in /proc/PID/status"))?;
            Ok(line.split_whitespace().next().unwrap_or_default().parse()?)
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
        let fields: Vec<&str> =
            stat.rsplit_once(')').context("/proc/PID/stat has a command name")?.1.split_whitespace().collect();
        if fields[0] == "Z" {
            bail!("the server (pid {}) exited", self.pid);
        }
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Usage {
            rss_kib: field("VmRSS:")?,
            threads: field("Threads:")?,
            cpu: Duration::from_secs_f64(ticks as f64 / self.ticks_per_second as f64),
        })
    }
}

/// A fresh release node serving the guest as [`PLUGIN`] (called once, so its compilation and first
/// instance are behind), with extra server flags.
async fn node_with_guest(wasm: &Path, extra_args: &[&str], manifest: &str) -> anyhow::Result<Node> {
    let node = Node::start(Kind::Conclave, extra_args)?;
    let plugins = Plugins::connect(&node.endpoint()).await;
    plugins.deploy_file(PLUGIN, wasm, manifest).await?;
    plugins.invoke(PLUGIN, "noop", "").await?;
    Ok(node)
}

async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(endpoint.to_string())?.connect().await?)
}

async fn put(endpoint: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let request = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
    KvClient::new(channel(endpoint).await?).put(request).await?;
    Ok(())
}

/// What the `invoke` clients do.
#[derive(Clone, Copy, Debug)]
enum Workload {
    /// `Plugin.Invoke` of the guest's `noop`.
    Noop,
    /// A linearizable etcd `Range` of the bench key.
    Range,
}

/// One client of a [`Workload`], on a shared channel.
enum Caller {
    Plugin(PluginClient<Channel>),
    Kv(KvClient<Channel>),
}

impl Caller {
    fn new(workload: Workload, channel: Channel) -> Caller {
        match workload {
            Workload::Noop => Caller::Plugin(PluginClient::new(channel)),
            Workload::Range => Caller::Kv(KvClient::new(channel)),
        }
    }

    async fn call(&mut self) -> Result<(), Status> {
        match self {
            Caller::Plugin(client) => {
                let request = InvokeRequest { plugin: PLUGIN.into(), method: "noop".into(), payload: Vec::new() };
                client.invoke(request).await.map(drop)
            }
            Caller::Kv(client) => {
                let request = RangeRequest {
                    key: format!("allowed/{BENCH_KEY}").into(),
                    serializable: false,
                    ..Default::default()
                };
                client.range(request).await.map(drop)
            }
        }
    }
}

/// `clients` clients doing `workload` for `duration`, spread over `channels`; prints its line.
async fn load(
    workload: Workload,
    clients: usize,
    channels: &[Channel],
    duration: Duration,
    server: &Server,
) -> anyhow::Result<()> {
    let cpu_before = server.usage()?.cpu;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut caller = Caller::new(workload, channels[c / CLIENTS_PER_CHANNEL].clone());
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).expect("histogram");
                let mut failures = BTreeMap::<String, u64>::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match caller.call().await {
                        Ok(()) => latencies.record(sent.elapsed().as_micros() as u64).expect("record"),
                        Err(status) => {
                            *failures.entry(format!("{:?}: {}", status.code(), status.message())).or_default() += 1
                        }
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new(3)?;
    let mut failures = BTreeMap::<String, u64>::new();
    for task in tasks {
        let (task_latencies, task_failures) = task.await?;
        latencies.add(task_latencies)?;
        for (kind, n) in task_failures {
            *failures.entry(kind).or_default() += n;
        }
    }
    let took = started.elapsed();
    let cpu = server.usage()?.cpu - cpu_before;
    let calls = latencies.len();
    let name = match workload {
        Workload::Noop => "plugin Invoke noop",
        Workload::Range => "etcd Range (linearizable, 1 key)",
    };
    println!(
        "{name}, {clients} clients on {} channels: {calls} calls in {:.1} s = {:.0}/s; {}; server CPU {:.0} µs/call; {} failed{}",
        channels.len(),
        took.as_secs_f64(),
        calls as f64 / took.as_secs_f64(),
        percentiles(&latencies),
        cpu.as_secs_f64() * 1e6 / calls.max(1) as f64,
        failures.values().sum::<u64>(),
        if failures.is_empty() { String::new() } else { format!(" {failures:?}") },
    );
    Ok(())
}

async fn invoke(wasm: &Path, clients: usize, duration: Duration) -> anyhow::Result<()> {
    let node = node_with_guest(wasm, &[], &manifest(600_000, 20_000)).await?;
    let server = Server::of(&node)?;
    put(&node.endpoint(), &format!("allowed/{BENCH_KEY}"), "x").await?;
    let mut channels = Vec::new();
    for _ in 0..clients.div_ceil(CLIENTS_PER_CHANNEL) {
        channels.push(channel(&node.endpoint()).await?);
    }
    load(Workload::Noop, clients, &channels, duration, &server).await?;
    load(Workload::Range, clients, &channels, duration, &server).await?;
    Ok(())
}

/// How one blocked call ended: its answer, and when.
type Answer = (Result<Vec<u8>, Status>, Instant);

/// Waits up to `timeout` for `count` answers; the ones that came.
async fn answers(rx: &mut mpsc::UnboundedReceiver<Answer>, count: usize, timeout: Duration) -> Vec<Answer> {
    let mut got = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(answer)) => got.push(answer),
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Answers counted by kind: the value answered, or the error.
fn kinds(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for (answer, _) in answers {
        let kind = match answer {
            Ok(value) => format!("answered {:?}", String::from_utf8_lossy(value)),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

async fn blocked(
    wasm: &Path,
    calls: usize,
    channel_count: usize,
    hold: Duration,
    release_timeout: Duration,
) -> anyhow::Result<()> {
    let instances = (calls + 100).to_string();
    let concurrent = calls.max(20_000);
    let flags = ["--plugin-instances", &instances, "--plugin-max-concurrent-calls", &concurrent.to_string()];
    let node = node_with_guest(wasm, &flags, &manifest(600_000, concurrent)).await?;
    let outcome = block_and_release(&node, &instances, calls, channel_count, hold, release_timeout).await;
    if outcome.is_err() {
        let log = node.log();
        let lines: Vec<&str> = log.lines().collect();
        println!("server log, last 40 lines:\n{}", lines[lines.len().saturating_sub(40)..].join("\n"));
    }
    outcome
}

/// The `blocked` measurement on a node serving the guest.
async fn block_and_release(
    node: &Node,
    instances: &str,
    calls: usize,
    channel_count: usize,
    hold: Duration,
    release_timeout: Duration,
) -> anyhow::Result<()> {
    let server = Server::of(node)?;
    let before = server.usage()?;
    println!(
        "server before the blocked calls (--plugin-instances {instances}): RSS {:.1} MiB, {} threads",
        mib(before.rss_kib),
        before.threads
    );

    let mut channels = Vec::new();
    for _ in 0..channel_count.max(1) {
        channels.push(channel(&node.endpoint()).await?);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Answer>();
    let launched = Instant::now();
    for c in 0..calls {
        let mut client = PluginClient::new(channels[c % channels.len()].clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            let request =
                InvokeRequest { plugin: PLUGIN.into(), method: "watch-once".into(), payload: BENCH_KEY.into() };
            let answer = client.invoke(request).await.map(|r| r.into_inner().payload);
            let _ = tx.send((answer, Instant::now()));
        });
    }
    drop(tx);

    // Blocked once the server has been idle (at most one clock tick of CPU per 250 ms) for a second:
    // no call is arriving or starting any more. Calls that answer meanwhile did not block.
    let mut early = Vec::new();
    let mut last = server.usage()?;
    let tick = Duration::from_secs_f64(1.0 / server.ticks_per_second as f64);
    let mut busy_until = Duration::ZERO;
    while launched.elapsed() < busy_until.max(Duration::from_secs(1)) + Duration::from_secs(1) {
        early.extend(answers(&mut rx, calls, Duration::from_millis(250)).await);
        let now = server.usage()?;
        if now.cpu - last.cpu > tick {
            busy_until = launched.elapsed();
        }
        last = now;
        if early.len() == calls || launched.elapsed() > Duration::from_secs(300) {
            break;
        }
    }
    println!(
        "launching {calls} watch-once calls on {} channels: server busy until {:.1} s after the launch, then idle; {} answered before the put{}",
        channels.len(),
        busy_until.as_secs_f64(),
        early.len(),
        if early.is_empty() { String::new() } else { format!(" {:?}", kinds(&early)) }
    );
    let held = server.usage()?;
    let blocked = calls - early.len();
    let grown = held.rss_kib.saturating_sub(before.rss_kib);
    println!(
        "server with {blocked} calls blocked: RSS {:.1} MiB (+{:.1} MiB = {:.1} KiB per blocked call), {} threads (+{})",
        mib(held.rss_kib),
        mib(grown),
        grown as f64 / blocked.max(1) as f64,
        held.threads,
        held.threads as i64 - before.threads as i64
    );
    tokio::time::sleep(hold).await;
    let after_hold = server.usage()?;
    println!(
        "server CPU while {blocked} calls blocked: {:.0} ms over {:.1} s; RSS then {:.1} MiB",
        ms(after_hold.cpu - held.cpu),
        hold.as_secs_f64(),
        mib(after_hold.rss_kib)
    );

    let key = format!("allowed/{BENCH_KEY}");
    let put_at = Instant::now();
    put(&node.endpoint(), &key, "go").await?;
    let put_took = put_at.elapsed();
    let released = answers(&mut rx, blocked, release_timeout).await;
    let mut latencies = Histogram::<u64>::new(3)?;
    for (_, at) in &released {
        latencies.record(at.duration_since(put_at).as_micros() as u64)?;
    }
    let last_answer = released.iter().map(|(_, at)| at.duration_since(put_at)).max().unwrap_or_default();
    let correct = released.iter().filter(|(answer, _)| answer.as_ref().is_ok_and(|v| v == b"go")).count();
    println!(
        "release of {blocked} blocked calls by one put: put answered in {:.1} ms; {} answered, the last {:.0} ms after the put; answer times {}",
        ms(put_took),
        released.len(),
        ms(last_answer),
        percentiles(&latencies)
    );
    println!("blocked calls answering the value put: {correct} of {calls}; answers by kind: {:?}", kinds(&released));

    // Calls still waiting missed the put (they read the revision after it): a second put tells them
    // apart from calls that hang.
    let missing = blocked - released.len();
    if missing > 0 {
        put(&node.endpoint(), &key, "late").await?;
        let late = answers(&mut rx, missing, release_timeout).await;
        println!(
            "blocked calls not answered {:.0} s after the put: {missing}; after a second put {} answered {:?}, {} never",
            release_timeout.as_secs_f64(),
            late.len(),
            kinds(&late),
            missing - late.len()
        );
    }
    let after = server.usage()?;
    println!("server after the calls answered: RSS {:.1} MiB, {} threads", mib(after.rss_kib), after.threads);
    let errors: Vec<String> =
        node.log().lines().filter(|l| l.contains("panicked") || l.contains("ERROR")).map(String::from).collect();
    if !errors.is_empty() {
        println!("server log panics and errors: {errors:#?}");
    }
    Ok(())
}

async fn idle(wasm: &Path, count: usize) -> anyhow::Result<()> {
    let node = Node::start(Kind::Conclave, &[])?;
    let server = Server::of(&node)?;
    let plugins = Plugins::connect(&node.endpoint()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let builtins = server.usage()?;
    println!("server with built-in plugins only: RSS {:.1} MiB, {} threads", mib(builtins.rss_kib), builtins.threads);

    let bytes = std::fs::read(wasm)?;
    let mut deploys = Vec::new();
    let mut first = None;
    for i in 0..count {
        let started = Instant::now();
        plugins.deploy(&format!("idle-{i}"), bytes.clone(), &manifest(600_000 + i as u64, 20_000)).await?;
        deploys.push(started.elapsed());
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            first = Some(server.usage()?);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deployed = server.usage()?;
    if let Some(first) = first.filter(|_| count > 1) {
        let grown = deployed.rss_kib.saturating_sub(first.rss_kib);
        println!(
            "server with 1 plugin deployed: RSS {:.1} MiB (+{:.1} MiB over built-ins only); each further one: {:.0} KiB",
            mib(first.rss_kib),
            mib(first.rss_kib.saturating_sub(builtins.rss_kib)),
            grown as f64 / (count - 1) as f64
        );
    }
    let grown = deployed.rss_kib.saturating_sub(builtins.rss_kib);
    println!(
        "server with {count} idle plugins deployed ({} KiB of wasm each): RSS {:.1} MiB (+{:.1} MiB = {:.0} KiB per idle plugin), {} threads",
        bytes.len() / 1024,
        mib(deployed.rss_kib),
        mib(grown),
        grown as f64 / count.max(1) as f64,
        deployed.threads
    );
    for i in 0..count {
        plugins.invoke(&format!("idle-{i}"), "noop", "").await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let called = server.usage()?;
    let grown = called.rss_kib.saturating_sub(builtins.rss_kib);
    println!(
        "server after one noop call of each of the {count} plugins: RSS {:.1} MiB (+{:.1} MiB = {:.0} KiB per plugin over built-ins only)",
        mib(called.rss_kib),
        mib(grown),
        grown as f64 / count.max(1) as f64
    );
    if let Some((first, rest)) = deploys.split_first() {
        println!(
            "deploy time: first (compiles) {:.1} ms; the other {} (same wasm): {}",
            ms(*first),
            rest.len(),
            spread(rest)
        );
    }
    Ok(())
}

/// What a member answered to the polls before the new version was callable there, counted by kind.
type Seen = BTreeMap<String, usize>;

/// Polls `member` until it serves `name` with `hash` and `manifest` and its `noop` answers; how
/// long after `since` that was, and what the earlier polls saw.
async fn callable(
    member: Plugins,
    name: &str,
    hash: &str,
    manifest: &str,
    since: Instant,
) -> anyhow::Result<(Duration, Seen)> {
    let mut seen = Seen::new();
    loop {
        let kind = match member.get(name).await {
            Err(status) => format!("Get {:?}", status.code()),
            Ok(info) if info.hash != hash || info.manifest != manifest => "Get: an older version".to_string(),
            Ok(_) => match member.invoke(name, "noop", "").await {
                Ok(_) => return Ok((since.elapsed(), seen)),
                Err(status) => format!("Invoke {:?}: {}", status.code(), status.message()),
            },
        };
        *seen.entry(kind).or_default() += 1;
        if since.elapsed() > PROPAGATION_TIMEOUT {
            bail!("{} does not serve {name} {hash} {manifest} after {PROPAGATION_TIMEOUT:?}", member.endpoint());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deploys `version` on the first member; (deploy time, time to callable on each member and what
/// its polls saw before).
async fn deploy_everywhere(
    members: &[Plugins],
    bytes: &[u8],
    version: u64,
) -> anyhow::Result<(Duration, Vec<(Duration, Seen)>)> {
    let started = Instant::now();
    let answer = members[0].deploy(PLUGIN, bytes.to_vec(), &manifest(600_000 + version, 20_000)).await?;
    let answered = Instant::now();
    let info = answer.plugin.context("a deploy answers with the plugin")?;
    let waits: Vec<_> = members
        .iter()
        .map(|member| {
            let (member, hash, manifest) = (member.clone(), info.hash.clone(), info.manifest.clone());
            tokio::spawn(async move { callable(member, PLUGIN, &hash, &manifest, answered).await })
        })
        .collect();
    let mut times = Vec::new();
    for wait in waits {
        times.push(wait.await??);
    }
    Ok((answered - started, times))
}

async fn cluster(wasm: &Path, redeploys: usize) -> anyhow::Result<()> {
    let cluster = Cluster::start(Kind::Conclave, 3, &[])?;
    let leader = cluster.leader().await?;
    let mut members = Vec::new();
    for member in &cluster.members {
        members.push(Plugins::connect(&member.endpoint()).await);
    }
    let bytes = std::fs::read(wasm)?;
    let (deploy, first) = deploy_everywhere(&members, &bytes, 0).await?;
    println!("3-member cluster (leader m{leader}), deploys through m0");
    println!("first deploy: answered in {:.1} ms", ms(deploy));
    for (i, (time, seen)) in first.iter().enumerate() {
        println!(
            "first deploy callable on m{i}: {:.1} ms after the deploy's answer; polls before: {seen:?}",
            ms(*time)
        );
    }
    let mut deploys = Vec::new();
    let mut callable_on: Vec<(Vec<Duration>, Seen)> = vec![Default::default(); members.len()];
    for version in 1..=redeploys as u64 {
        let (deploy, times) = deploy_everywhere(&members, &bytes, version).await?;
        deploys.push(deploy);
        for (i, (time, seen)) in times.into_iter().enumerate() {
            callable_on[i].0.push(time);
            for (kind, n) in seen {
                *callable_on[i].1.entry(kind).or_default() += n;
            }
        }
    }
    println!("redeploy ({redeploys}, each a new manifest): answered in {}", spread(&deploys));
    for (i, (times, seen)) in callable_on.iter().enumerate() {
        println!("redeploy callable on m{i} after the deploy's answer: {}; polls before: {seen:?}", spread(times));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wasm = guest_wasm("misbehave")?;
    match args.command {
        Bench::Invoke { clients, duration } => invoke(&wasm, clients, duration).await,
        Bench::Blocked { calls, channels, hold, release_timeout } => {
            blocked(&wasm, calls, channels, hold, release_timeout).await
        }
        Bench::Idle { plugins } => idle(&wasm, plugins).await,
        Bench::Cluster { redeploys } => cluster(&wasm, redeploys).await,
    }
}
