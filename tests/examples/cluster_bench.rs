//! Write benchmark of a multi-member cluster, etcd and Conclave side by side in one run.
//!
//! Starts a `--members`-member etcd cluster, loads it, stops it, then does the same with Conclave
//! (data dirs in the system temp dir, loopback ports), and prints for each: puts/s and latency
//! percentiles from `--clients` concurrent clients spread over every member (so followers forward
//! writes to the leader, as real clients do). Then it kills the leader under the same load and
//! reports how long until the members agree on a new one. `--endpoints` loads a running cluster
//! instead.
//!
//! cargo build --release --bin conclave
//! cargo run --release -p conclave-tests --example cluster_bench -- --members 3 --clients 64

use std::time::{Duration, Instant};

use clap::Parser;
use conclave_tests::{Cluster, Kind};
use etcd_client::Client;
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    /// Members of each cluster started.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Concurrent clients, each with its own connection, spread over the members.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long each load runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys written (random among them).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Load this running cluster (comma-separated client URLs) instead of starting two.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// What the clients do.
    #[arg(long, value_enum, default_value = "put")]
    op: Op,
    /// Reads: `l` (linearizable) or `s` (serializable).
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Skip the leader kill after the load.
    #[arg(long)]
    no_failover: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Op {
    Put,
    Range,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// What the clients do.
#[derive(Clone)]
struct Shape {
    clients: usize,
    value: String,
    keys: u64,
    op: Op,
    serializable: bool,
}

impl Shape {
    /// One request of the workload on `key`.
    async fn request(&self, client: &mut Client, key: String) -> Result<(), etcd_client::Error> {
        match self.op {
            Op::Put => client.put(key, self.value.as_str(), None).await.map(drop),
            Op::Range => {
                let options = self.serializable.then(|| etcd_client::GetOptions::new().with_serializable());
                client.get(key, options).await.map(drop)
            }
        }
    }
}

/// The `seq`-th key a client uses: a cheap spread over the key space (Knuth's multiplicative hash).
fn key(seq: u64, keys: u64) -> String {
    format!("bench/{:08}", seq.wrapping_mul(2_654_435_761) % keys)
}

/// Write every key of the key space once, so reads find values.
async fn fill(shape: &Shape, endpoints: &[String]) -> anyhow::Result<()> {
    let mut client = Client::connect(endpoints.to_vec(), None).await?;
    for k in 0..shape.keys {
        client.put(format!("bench/{k:08}"), shape.value.as_str(), None).await?;
    }
    Ok(())
}

/// Requests from `shape.clients` clients round-robin over `endpoints` for `duration`; the
/// latencies of the answered requests (failures are counted, not timed).
async fn load(shape: Shape, endpoints: &[String], duration: Duration) -> anyhow::Result<(Histogram<u64>, u64, Duration)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for c in 0..shape.clients {
        let mut client = Client::connect([endpoints[c % endpoints.len()].clone()], None).await?;
        let shape = shape.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            let mut failures = 0u64;
            let mut seq = c as u64 * 1_000_003;
            while Instant::now() < deadline {
                seq = seq.wrapping_add(1);
                let sent = Instant::now();
                match shape.request(&mut client, key(seq, shape.keys)).await {
                    Ok(_) => latencies.record(sent.elapsed().as_micros() as u64).expect("record"),
                    Err(_) => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    let mut failures = 0;
    for task in tasks {
        let (latencies, failed) = task.await?;
        all.add(latencies)?;
        failures += failed;
    }
    Ok((all, failures, started.elapsed()))
}

fn report(what: &str, latencies: &Histogram<u64>, failures: u64, took: Duration) {
    println!(
        "{what}: {} requests in {:.1}s = {:.0}/s, latency p50 {:.2}ms p90 {:.2}ms p99 {:.2}ms max {:.2}ms, {failures} failed",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.9)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max()),
    );
}

/// Load a fresh cluster of `kind`, then kill its leader under load and time the failover.
async fn bench(args: &Args, shape: &Shape, kind: Kind) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(kind, args.members, &[])?;
    cluster.leader().await?;
    if matches!(shape.op, Op::Range) {
        fill(shape, &cluster.endpoints()).await?;
    }
    let (latencies, failures, took) = load(shape.clone(), &cluster.endpoints(), args.duration).await?;
    report(&format!("{kind:?} x{} {:?}", args.members, shape.op), &latencies, failures, took);
    if args.no_failover {
        return Ok(());
    }

    let leader = cluster.leader().await?;
    let endpoints = cluster.endpoints();
    let light = Shape { clients: (shape.clients / 4).max(1), op: Op::Put, ..shape.clone() };
    let under_load = tokio::spawn(async move { load(light, &endpoints, Duration::from_secs(4)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.members[leader].kill9();
    let killed = Instant::now();
    cluster.leader().await?;
    println!("{kind:?} x{}: new leader agreed {:.2}s after kill -9 of the leader", args.members, killed.elapsed().as_secs_f64());
    under_load.await??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = Shape {
        clients: args.clients,
        value: "x".repeat(args.value_size),
        keys: args.keys,
        op: args.op,
        serializable: args.consistency == "s",
    };
    if !args.endpoints.is_empty() {
        let (latencies, failures, took) = load(shape, &args.endpoints, args.duration).await?;
        report(&args.endpoints.join(","), &latencies, failures, took);
        return Ok(());
    }
    for kind in [Kind::Etcd, Kind::Conclave] {
        bench(&args, &shape, kind).await?;
    }
    Ok(())
}
