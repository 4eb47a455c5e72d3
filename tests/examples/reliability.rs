//! A fault run of any length: a cluster on loopback under concurrent clients, watchers and
//! seeded faults, then the history checks (see `conclave_tests::reliability`). Prints what it
//! ran, the faults, and every violation with the seed that replays the schedule; exits 1 on a
//! violation, keeping nothing running.
//!
//! cargo run -p conclave-tests --example reliability -- --duration 30m
//! (`--seed N` replays a schedule; `--members 5`; `--etcd` runs the same against etcd 3.4)

use std::time::Duration;

use clap::Parser;
use conclave_tests::Kind;
use conclave_tests::reliability::faults::FaultKind;
use conclave_tests::reliability::run::{RunConfig, run};

#[derive(Parser)]
struct Args {
    /// How long faults are injected.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the workload (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 3)]
    members: usize,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    /// Clients that grant leases and put keys under them.
    #[arg(long, default_value_t = 2)]
    lease_clients: usize,
    /// Clients that take the lock, and as many that campaign in the election.
    #[arg(long, default_value_t = 2)]
    recipe_clients: usize,
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// The kinds of fault to inject (default: every kind; on etcd 3.4 every kind but `pause`).
    #[arg(long, value_delimiter = ',', value_enum)]
    faults: Vec<FaultKind>,
    /// Run against etcd instead of Conclave.
    #[arg(long)]
    etcd: bool,
    /// Plant a bug in every member (a debug build of Conclave): stale-reads, drop-watch-event,
    /// ack-before-fsync.
    #[arg(long)]
    planted_bug: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs()));
    let kind = if args.etcd { Kind::Etcd } else { Kind::Conclave };
    let config = RunConfig { kind, members: args.members, clients: args.clients, watchers: args.watchers, lease_clients: args.lease_clients, recipe_clients: args.recipe_clients, keys: args.keys, duration: args.duration, seed, faults: if args.faults.is_empty() { FaultKind::defaults(kind) } else { args.faults }, planted_bug: args.planted_bug.map(|b| &*b.leak()) };
    let report = run(config).await?;
    print!("{report}");
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
