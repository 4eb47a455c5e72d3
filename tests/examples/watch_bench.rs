//! Watch benchmark against any etcd v3 endpoint (Conclave or etcd), so both are measured alike.
//!
//! Opens `--streams` watch streams holding `--watchers` watchers in all on one prefix, then writes
//! `--writes` keys under it from `--writers` concurrent clients, and reports the write throughput
//! and latency percentiles and how fast the events (writes × watchers) were delivered. With
//! `--stuck`, one more stream watches the prefix and never reads: writers must not notice.
//!
//! cargo run --release -p conclave-tests --example watch_bench -- --endpoint http://127.0.0.1:2379

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, WatchOptions};
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    #[arg(long, default_value_t = 10)]
    streams: usize,
    #[arg(long, default_value_t = 10_000)]
    writes: usize,
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Also open a stream that watches the prefix and never reads.
    #[arg(long)]
    stuck: bool,
}

const PREFIX: &str = "bench/";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let streams = args.streams.clamp(1, args.watchers.max(1));
    let delivered = Arc::new(AtomicU64::new(0));
    let expected = (args.writes * args.watchers) as u64;

    let mut keep = Vec::new();
    for stream in 0..streams {
        let mut client = Client::connect([args.endpoint.clone()], None).await?;
        let per_stream = args.watchers / streams + usize::from(stream < args.watchers % streams);
        if per_stream == 0 {
            continue;
        }
        let (mut watcher, mut events) = client.watch(PREFIX, Some(WatchOptions::new().with_prefix())).await?.split();
        for _ in 1..per_stream {
            watcher.watch(PREFIX, Some(WatchOptions::new().with_prefix())).await?;
        }
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Ok(Some(response)) = events.message().await {
                delivered.fetch_add(response.events().len() as u64, Ordering::Relaxed);
            }
        });
        keep.push((client, watcher));
    }
    if args.stuck {
        let mut client = Client::connect([args.endpoint.clone()], None).await?;
        let (watcher, never_read) = client.watch(PREFIX, Some(WatchOptions::new().with_prefix())).await?.split();
        keep.push((client, watcher));
        std::mem::forget(never_read);
    }

    let started = Instant::now();
    let per_writer = args.writes / args.writers;
    let mut tasks = Vec::new();
    for writer in 0..args.writers {
        let mut client = Client::connect([args.endpoint.clone()], None).await?;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            for i in 0..per_writer {
                let sent = Instant::now();
                client.put(format!("{PREFIX}{writer}/{i}"), "x".repeat(64), None).await.expect("put");
                latencies.record(sent.elapsed().as_micros() as u64).expect("record");
            }
            latencies
        }));
    }
    let mut latencies = Histogram::<u64>::new(3)?;
    for task in tasks {
        latencies.add(task.await?)?;
    }
    let write_time = started.elapsed();
    let writes = per_writer * args.writers;
    let expected = expected.min((writes * args.watchers) as u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_time = started.elapsed();
    let got = delivered.load(Ordering::Relaxed);

    println!("endpoint {} watchers {} streams {} stuck {}", args.endpoint, args.watchers, streams, args.stuck);
    println!(
        "writes {writes} in {:.2}s: {:.0}/s, latency p50 {:.2}ms p99 {:.2}ms p99.9 {:.2}ms max {:.2}ms",
        write_time.as_secs_f64(),
        writes as f64 / write_time.as_secs_f64(),
        latencies.value_at_quantile(0.5) as f64 / 1000.0,
        latencies.value_at_quantile(0.99) as f64 / 1000.0,
        latencies.value_at_quantile(0.999) as f64 / 1000.0,
        latencies.max() as f64 / 1000.0,
    );
    println!(
        "events delivered {got}/{expected} in {:.2}s: {:.0}/s",
        all_time.as_secs_f64(),
        got as f64 / all_time.as_secs_f64()
    );
    drop(keep);
    Ok(())
}
