//! `conclavectl bench`: a load generator speaking the etcd v3 API, so the same code measures etcd
//! and Conclave. Flags follow etcd's `benchmark` tool. Each client sends one request at a time
//! over one of `--conns` connections; latencies go into an HDR histogram, failures are counted
//! by kind. The watch workloads' watchers are set up before the first request.

pub mod compare;
mod mutex_recipe;
mod progress;
mod report;
mod tally;
mod watch;
mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::connect::{Dial, connect};
use conclave_proto::etcdserverpb::StatusRequest;
use conclave_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::global::GlobalArgs;
use crate::output::OutputFormat;
use report::Report;
use workload::{Keys, Order};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Put one key per request.
    Put,
    /// Range one key per request.
    Range,
    /// A txn putting one key per request.
    TxnPut,
    /// Renew the client's lease once per request, on its keep-alive stream.
    LeaseKeepalive,
    /// Txns putting a key, and ranges of one, `--rw-ratio` reads per write.
    TxnMixed,
    /// Take and release a v3lock lock (the client's own; with --contended, one for all).
    Lock,
    /// Take and release a lock with etcd's client-side recipe (concurrency.Mutex, as `etcdctl
    /// lock` runs it: txns, reads and watches), the client's own or with --contended one for all.
    LockRecipe,
    /// Campaign and resign in a v3election election (the client's own; with --contended, one for all).
    Election,
    /// Call a plugin method that only reads (the built-in counter's `get`).
    Plugin,
    /// Put keys that `--watchers` watchers all watch: puts/s, events/s and put-to-event latency.
    Watch,
    /// Put one key that `--watchers` watchers watch, at `--rate` (100/s unless given): put-to-event latency.
    WatchLatency,
}

impl Workload {
    fn watched(self) -> bool {
        matches!(self, Workload::Watch | Workload::WatchLatency)
    }
}

/// `watch-latency`'s puts per second without `--rate`: it measures latency, not throughput.
const WATCH_LATENCY_RATE: u64 = 100;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What each request does.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Connections the clients share.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests in all (ignored with --duration).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Run for this long instead of a number of requests, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Bytes per key.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Distinct keys written or read.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Keys in order instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Reads: `l` (linearizable) or `s` (serializable).
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    pub consistency: String,
    /// Requests per second across all clients (0: as fast as they go).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// `lock`, `election`: every client takes the same lock or runs in the same election.
    #[arg(long)]
    pub contended: bool,
    /// `txn-mixed`: ranges per txn put.
    #[arg(long, default_value_t = 1)]
    pub rw_ratio: u32,
    /// Send everything to the leader among --endpoints.
    #[arg(long, conflicts_with = "target_follower")]
    pub target_leader: bool,
    /// Send everything to a follower among --endpoints: the member most requests reach when
    /// clients spread over a cluster, which forwards writes and read indexes to the leader.
    #[arg(long)]
    pub target_follower: bool,
    /// `watch`, `watch-latency`: watchers of the keys put, in all.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// `watch`, `watch-latency`: watch streams the watchers share, over the connections in turn.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// `watch`: each watcher watches one key of the key space (watcher i the i-th key, round the
    /// space) instead of all of them, as a client holding a watch per key has them on one stream.
    #[arg(long)]
    pub watch_each_key: bool,
}

impl BenchArgs {
    /// `--rate`, or `watch-latency`'s own.
    fn rate(&self) -> u64 {
        if self.rate == 0 && self.workload == Workload::WatchLatency { WATCH_LATENCY_RATE } else { self.rate }
    }

    /// `--key-space-size`; `watch-latency` puts one key.
    fn key_space(&self) -> u64 {
        if self.workload == Workload::WatchLatency { 1 } else { self.key_space_size }
    }
}

/// Run the benchmark and print its report.
pub fn run(args: BenchArgs, global: &GlobalArgs, out: &mut impl std::io::Write) -> Result<()> {
    if args.clients == 0 || args.conns == 0 || args.key_space_size == 0 {
        bail!("--clients, --conns and --key-space-size must be at least 1");
    }
    if args.workload.watched() && (args.watchers == 0 || args.streams == 0) {
        bail!("--watchers and --streams must be at least 1");
    }
    if args.watch_each_key && args.workload != Workload::Watch {
        bail!("--watch-each-key is for the watch workload");
    }
    // Keys are the index in decimal, cut to the key size: a wider space would watch one key twice.
    if args.watch_each_key && 10f64.powi(args.key_size.min(19) as i32) < args.key_space() as f64 {
        bail!("--watch-each-key needs --key-size digits enough for --key-space-size distinct keys");
    }
    let report = crate::rpc::block_on(measure(&args, global))?;
    match global.write_out {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&report.json())?)?,
        _ => write!(out, "{}", report.text())?,
    }
    Ok(())
}

async fn measure(args: &BenchArgs, global: &GlobalArgs) -> Result<Report> {
    let mut dial = global.dial()?;
    if args.target_leader || args.target_follower {
        dial.endpoints = vec![member(&dial, args.target_leader).await?];
    }
    let mut channels = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        channels.push(connect(&dial).await?);
    }
    let keys = Keys::new(args.key_size, args.key_space(), Order::random(0));
    let puts_per_key: Option<Arc<[AtomicU64]>> = args.watch_each_key.then(|| (0..args.key_space()).map(|_| AtomicU64::new(0)).collect());
    let watchers = if args.workload.watched() {
        let watched = match &puts_per_key {
            Some(puts) => watch::Watched::EachKey { keys, puts: puts.clone() },
            None => {
                let (key, range_end) = keys.range();
                watch::Watched::All(key, range_end)
            }
        };
        Some(watch::Watchers::open(dial.clone(), args.conns, args.streams, args.watchers, watched).await?)
    } else {
        None
    };
    let rate = args.rate();
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        total: if args.duration.is_some() { u64::MAX } else { args.total },
        deadline: args.duration.map(|d| Instant::now() + d),
        interval: (rate > 0).then(|| Duration::from_secs_f64(args.clients as f64 / rate as f64)),
        progress: progress::Progress::new(args.total, args.duration),
        puts_per_key,
    });
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    let sequence = Arc::new(AtomicU64::new(0));
    for index in 0..args.clients {
        let channel: Channel = channels[index % channels.len()].clone();
        let order = if args.sequential_keys { Order::Sequential(sequence.clone()) } else { Order::random(index as u64) };
        let keys = Keys::new(args.key_size, args.key_space(), order);
        let request = workload::Request::new(args.workload, args.val_size, args.consistency == "s", args.contended, args.rw_ratio);
        clients.spawn(client(channel, index, keys, request, shared.clone()));
    }
    let mut report = Report::default();
    while let Some(done) = clients.join_next().await {
        report.add(done??);
    }
    report.elapsed = started.elapsed();
    shared.progress.finish();
    if let Some(watchers) = watchers {
        watchers.finish(started, &mut report).await;
    }
    Ok(report)
}

/// The endpoint of `dial` that is the leader (`leader`) or a follower, as its own status says.
async fn member(dial: &Dial, leader: bool) -> Result<String> {
    for endpoint in crate::connect::urls(&dial.endpoints)? {
        let one = Dial { endpoints: vec![endpoint.clone()], timeout: dial.timeout, tls: dial.tls.clone() };
        let Ok(channel) = connect(&one).await else { continue };
        let Ok(status) = MaintenanceClient::new(channel).status(StatusRequest {}).await else { continue };
        let status = status.into_inner();
        let leads = status.header.is_some_and(|h| h.member_id == status.leader);
        // A follower that knows no leader would only fail the requests it forwards.
        if leads == leader && status.leader != 0 {
            return Ok(endpoint);
        }
    }
    bail!("no endpoint of --endpoints is {}", if leader { "the leader" } else { "a follower" })
}

/// What all clients share: how many requests were taken, and when to stop.
struct Shared {
    issued: AtomicU64,
    total: u64,
    deadline: Option<Instant>,
    /// Each client's pause between requests under `--rate`.
    interval: Option<Duration>,
    progress: progress::Progress,
    /// `--watch-each-key`: the requests that succeeded per key, by the key's index.
    puts_per_key: Option<Arc<[AtomicU64]>>,
}

impl Shared {
    fn take(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        self.issued.fetch_add(1, Ordering::Relaxed) < self.total
    }
}

/// One client's requests until the total or the deadline; its latencies and failures. It fails
/// if it cannot set up what its requests need (its lease, say).
async fn client(
    channel: Channel,
    index: usize,
    mut keys: Keys,
    request: workload::Request,
    shared: Arc<Shared>,
) -> Result<report::Part> {
    let mut session = request.open(&channel, index).await.map_err(crate::rpc::status_error)?;
    let mut part = report::Part::new();
    let mut ticks = shared.interval.map(tokio::time::interval);
    while shared.take() {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        let started = Instant::now();
        let (index, key) = keys.next();
        let outcome = request.send(&channel, &mut session, key).await;
        if let (Ok(()), Some(puts)) = (&outcome, &shared.puts_per_key) {
            puts[index as usize].fetch_add(1, Ordering::Relaxed);
        }
        part.record(started.elapsed(), outcome.err());
        shared.progress.advance();
    }
    Ok(part)
}

/// A fresh histogram of microseconds, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}
