//! Lease benchmark against any etcd v3 endpoint (Conclave or etcd), so both are measured alike.
//!
//! Measures lease grants/s and keep-alives/s from `--clients` concurrent clients, then (with
//! `--expire N`) grants N short leases each holding a key, lets them all expire together, and
//! reports write latency during the expiry storm and how long until every key was gone.
//!
//! cargo run --release -p conclave-tests --example lease_bench -- --endpoint http://127.0.0.1:2379

use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, GetOptions, PutOptions};
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Grants (and as many keep-alives) per client.
    #[arg(long, default_value_t = 500)]
    per_client: usize,
    /// Leases to expire together afterwards (0: skip).
    #[arg(long, default_value_t = 0)]
    expire: usize,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn report(what: &str, count: usize, took: Duration, latencies: &Histogram<u64>) {
    println!(
        "{what}: {count} in {:.2}s = {:.0}/s, latency p50 {:.2}ms p99 {:.2}ms max {:.2}ms",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64(),
        ms(latencies.value_at_quantile(0.5)),
        ms(latencies.value_at_quantile(0.99)),
        ms(latencies.max()),
    );
}

/// Runs `per_client` grants on each client, then as many keep-alives on one stream per client.
async fn grants_and_keep_alives(args: &Args) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..args.clients {
        let mut client = Client::connect([args.endpoint.clone()], None).await?;
        let per_client = args.per_client;
        tasks.push(tokio::spawn(async move {
            let mut grants = Histogram::<u64>::new(3).expect("histogram");
            let mut ids = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let sent = Instant::now();
                ids.push(client.lease_grant(600, None).await.expect("grant").id());
                grants.record(sent.elapsed().as_micros() as u64).expect("record");
            }
            (client, ids, grants)
        }));
    }
    let mut grants = Histogram::<u64>::new(3)?;
    let mut granted = Vec::new();
    for task in tasks {
        let (client, ids, latencies) = task.await?;
        grants.add(latencies)?;
        granted.push((client, ids));
    }
    report("lease grants", args.clients * args.per_client, started.elapsed(), &grants);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut client, ids) in granted {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            // etcd-client keeps one lease per stream: renew this client's first lease repeatedly.
            let (mut keeper, mut responses) = client.lease_keep_alive(ids[0]).await.expect("keep-alive stream");
            for _ in &ids {
                let sent = Instant::now();
                keeper.keep_alive().await.expect("keep-alive");
                responses.message().await.expect("keep-alive response").expect("stream open");
                latencies.record(sent.elapsed().as_micros() as u64).expect("record");
            }
            latencies
        }));
    }
    let mut keep_alives = Histogram::<u64>::new(3)?;
    for task in tasks {
        keep_alives.add(task.await?)?;
    }
    report("keep-alives", args.clients * args.per_client, started.elapsed(), &keep_alives);
    Ok(())
}

/// Grants `count` leases of the minimum TTL with a key each, then writes while they all expire.
async fn expiry_storm(args: &Args, count: usize) -> anyhow::Result<()> {
    let mut client = Client::connect([args.endpoint.clone()], None).await?;
    let per_task = count.div_ceil(args.clients);
    let mut tasks = Vec::new();
    for task in 0..args.clients {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let id = client.lease_grant(5, None).await.expect("grant").id();
                let options = PutOptions::new().with_lease(id);
                client.put(format!("storm/{task}/{i}"), "x", Some(options)).await.expect("put");
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let granted_at = Instant::now();
    println!("granted {} leases with a key each; writing while they expire", per_task * args.clients);

    let mut latencies = Histogram::<u64>::new(3)?;
    let mut writes = 0;
    loop {
        let sent = Instant::now();
        client.put("storm-writer", writes.to_string(), None).await?;
        latencies.record(sent.elapsed().as_micros() as u64)?;
        writes += 1;
        if writes % 50 == 0 {
            let left = client.get("storm/", Some(GetOptions::new().with_prefix().with_count_only())).await?.count();
            if left == 0 {
                break;
            }
            if granted_at.elapsed() > Duration::from_secs(300) {
                println!("gave up: {left} keys still there after 300 s");
                break;
            }
        }
    }
    println!("all leased keys gone {:.2}s after the last grant", granted_at.elapsed().as_secs_f64());
    report("writes during the expiry", writes, granted_at.elapsed(), &latencies);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("endpoint {}", args.endpoint);
    grants_and_keep_alives(&args).await?;
    if args.expire > 0 {
        expiry_storm(&args, args.expire).await?;
    }
    Ok(())
}
