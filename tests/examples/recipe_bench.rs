//! Lock recipe figures, Conclave beside etcd 3.4 in one run (fresh single-member servers, release
//! Conclave, data dirs in the system temp dir, loopback ports), driven with the `etcd-client` crate:
//!
//! - `lock`: `--clients` clients, each on a lock of its own (uncontended) and a lease granted once,
//!   doing lock+unlock for `--duration`: cycles/s and latency percentiles of one cycle, through
//!   v3lock on Conclave (the lock plugin) and on etcd, and through the client-side recipe that
//!   `etcdctl lock` uses (etcd's `concurrency.Mutex`: a txn to queue, a range for the oldest key,
//!   a watch of the predecessor, a delete) against both servers.
//! - `handoff`: `--clients` clients contending for one lock for `--duration`, each holding it only
//!   to release it: the latency from a holder's release until the next holder has the lock.
//!
//! The targets run one after another, twice in alternating order, so machine noise hits both.
//!
//! CARGO_TARGET_DIR=/work/target-release cargo build --release -p conclave-host --bins
//! CARGO_TARGET_DIR=/work/target-release cargo run --release -p conclave-tests --example recipe_bench -- lock --clients 1
//! (likewise `lock --clients 16`, `handoff --clients 8`)

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use conclave_tests::latency::percentiles;
use conclave_tests::{Kind, Node};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LockOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Uncontended lock+unlock cycles.
    Lock {
        #[arg(long, default_value_t = 1)]
        clients: usize,
        #[arg(long, default_value = "5", value_parser = seconds)]
        duration: Duration,
    },
    /// Release → next holder latency with every client contending for one lock.
    Handoff {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value = "5", value_parser = seconds)]
        duration: Duration,
    },
}

fn seconds(text: &str) -> Result<Duration, std::num::ParseFloatError> {
    text.parse().map(Duration::from_secs_f64)
}

#[derive(Clone, Copy, Debug)]
enum Recipe {
    /// The server's v3lock service.
    V3lock,
    /// `etcdctl lock`'s client-side recipe over KV and Watch.
    ClientSide,
}

impl Recipe {
    async fn lock(self, client: &mut Client, name: &str, lease: i64) -> anyhow::Result<Vec<u8>> {
        match self {
            Recipe::V3lock => Ok(client.lock(name, Some(LockOptions::new().with_lease(lease))).await?.key().to_vec()),
            Recipe::ClientSide => client_side_lock(client, name, lease).await,
        }
    }

    async fn unlock(self, client: &mut Client, key: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Recipe::V3lock => client.unlock(key).await.map(drop)?,
            Recipe::ClientSide => client.delete(key, None).await.map(drop)?,
        }
        Ok(())
    }
}

/// etcd's `concurrency.Mutex.Lock` over the plain API: queue a key on the lease, then wait until
/// every older key under the prefix is deleted, watching only the youngest of them each time.
async fn client_side_lock(client: &mut Client, name: &str, lease: i64) -> anyhow::Result<Vec<u8>> {
    let prefix = format!("{name}/");
    let key = format!("{prefix}{lease:x}");
    let oldest = || TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1)));
    let queued = client
        .txn(
            Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), "", Some(etcd_client::PutOptions::new().with_lease(lease))), oldest()])
                .or_else([TxnOp::get(key.as_str(), None), oldest()]),
        )
        .await?;
    let header_revision = queued.header().context("a header")?.revision();
    let mine = if queued.succeeded() {
        header_revision
    } else {
        match &queued.op_responses()[0] {
            TxnOpResponse::Get(get) => get.kvs().first().context("our key")?.create_revision(),
            _ => anyhow::bail!("unexpected txn answer"),
        }
    };
    let first_is_mine = match &queued.op_responses()[1] {
        TxnOpResponse::Get(get) => get.kvs().first().is_none_or(|kv| kv.create_revision() == mine),
        _ => anyhow::bail!("unexpected txn answer"),
    };
    if first_is_mine {
        return Ok(key.into_bytes());
    }
    let mut revision = header_revision;
    loop {
        let older = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(mine - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1);
        let range = client.get(prefix.as_str(), Some(older)).await?;
        let Some(last) = range.kvs().first() else { return Ok(key.into_bytes()) };
        revision = revision.max(range.header().context("a header")?.revision());
        let mut events = client.watch(last.key(), Some(WatchOptions::new().with_start_revision(revision + 1))).await?;
        'deleted: while let Some(answer) = events.message().await? {
            if answer.events().iter().any(|e| e.event_type() == EventType::Delete) {
                break 'deleted;
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Server {
    Conclave,
    Etcd,
}

impl Server {
    fn start(self) -> anyhow::Result<Node> {
        Node::start(match self { Server::Conclave => Kind::Conclave, Server::Etcd => Kind::Etcd }, &[])
    }
}

/// Every (server, recipe) pair, twice in alternating order.
fn targets() -> Vec<(Server, Recipe)> {
    let once = [(Server::Conclave, Recipe::V3lock), (Server::Etcd, Recipe::V3lock), (Server::Etcd, Recipe::ClientSide), (Server::Conclave, Recipe::ClientSide)];
    once.iter().chain(once.iter().rev()).copied().collect()
}

/// Clients, each with a connection and a lease of its own.
async fn clients(node: &Node, count: usize) -> anyhow::Result<Vec<(Client, i64)>> {
    let mut clients = Vec::new();
    for _ in 0..count {
        let mut client = Client::connect([node.endpoint()], None).await?;
        let lease = client.lease_grant(600, None).await?.id();
        clients.push((client, lease));
    }
    Ok(clients)
}

/// Each client cycles lock+unlock on its own lock (`contended`: all on one) until `duration` has
/// passed; the histogram of cycle latencies and, per cycle, the instants it acquired and began
/// to release.
async fn cycles(
    recipe: Recipe,
    clients: Vec<(Client, i64)>,
    contended: bool,
    duration: Duration,
) -> anyhow::Result<(Histogram<u64>, Vec<(Instant, Instant)>)> {
    let end = Instant::now() + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (mut client, lease))| {
            let name = if contended { "bench-lock".to_string() } else { format!("bench-lock-{i}") };
            tokio::spawn(async move {
                let (mut latencies, mut held) = (Histogram::<u64>::new(3)?, Vec::new());
                while Instant::now() < end {
                    let started = Instant::now();
                    let key = recipe.lock(&mut client, &name, lease).await?;
                    let acquired = Instant::now();
                    held.push((acquired, Instant::now()));
                    recipe.unlock(&mut client, key).await?;
                    latencies.record(started.elapsed().as_micros() as u64)?;
                }
                anyhow::Ok((latencies, held))
            })
        })
        .collect();
    let (mut latencies, mut held) = (Histogram::<u64>::new(3)?, Vec::new());
    for task in tasks {
        let (l, h) = task.await??;
        latencies.add(l)?;
        held.extend(h);
    }
    Ok((latencies, held))
}

async fn lock(clients_count: usize, duration: Duration) -> anyhow::Result<()> {
    for (server, recipe) in targets() {
        let node = server.start()?;
        let (latencies, _) = cycles(recipe, clients(&node, clients_count).await?, false, duration).await?;
        println!(
            "lock+unlock {server:?} {recipe:?}, {clients_count} clients: {:.0} cycles/s, {}",
            latencies.len() as f64 / duration.as_secs_f64(),
            percentiles(&latencies)
        );
    }
    Ok(())
}

async fn handoff(clients_count: usize, duration: Duration) -> anyhow::Result<()> {
    for (server, recipe) in targets() {
        let node = server.start()?;
        let (_, mut held) = cycles(recipe, clients(&node, clients_count).await?, true, duration).await?;
        held.sort();
        let mut gaps = Histogram::<u64>::new(3)?;
        for pair in held.windows(2) {
            gaps.record(pair[1].0.saturating_duration_since(pair[0].1).as_micros().max(1) as u64)?;
        }
        println!(
            "hand-off {server:?} {recipe:?}, {clients_count} contending: {:.0} acquisitions/s, release → next holder {}",
            held.len() as f64 / duration.as_secs_f64(),
            percentiles(&gaps)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Bench::Lock { clients, duration } => lock(clients, duration).await,
        Bench::Handoff { clients, duration } => handoff(clients, duration).await,
    }
}
