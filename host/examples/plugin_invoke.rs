//! In-process cost of a plugin call: a one-member node (no gRPC), a plugin deployed, then calls
//! of one method through the service layer — each a fresh instance from the pre-linked component
//! — timed one by one, and the time to compile the plugin.
//!
//! `cargo run --release -p conclave-host --example plugin_invoke -- FILE.wasm [METHOD] [CALLS] [PAYLOAD]`
//! (METHOD defaults to `noop`, CALLS to 20000).

use std::time::{Duration, Instant};

use clap::Parser;
use conclave_host::config::Config;
use conclave_host::node::Node;
use conclave_host::plugin::registry::Registry;
use conclave_host::service::{Caller, Service};
use conclave_proto::conclave::plugin::{DeployRequest, InvokeRequest};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let wasm = std::fs::read(args.get(1).expect("usage: plugin_invoke FILE.wasm [METHOD] [CALLS] [PAYLOAD]"))?;
    let method = args.get(2).cloned().unwrap_or_else(|| "noop".into());
    let calls: usize = args.get(3).map_or(Ok(20_000), |n| n.parse())?;
    let payload = args.get(4).cloned().unwrap_or_default().into_bytes();
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("member");
    let config = Config::parse_from([
        "conclave",
        "--data-dir",
        data_dir.to_str().expect("temp dir is UTF-8"),
        "--listen-peer-urls",
        "http://127.0.0.1:1",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:1",
    ]);
    let plugins = Registry::with_builtins(&config.plugin, None).await?;
    let service = Service::start(Node::start(config).await?, plugins).await;
    let client = Caller::client();
    let started = Instant::now();
    let deploy = DeployRequest { name: "bench".into(), wasm: wasm.clone(), manifest: String::new() };
    service.plugin_deploy(&client, deploy).await?;
    println!("deploy (compile, check, metadata, commit): {:?}", started.elapsed());
    let request = InvokeRequest { plugin: "bench".into(), method, payload };
    for _ in 0..1000 {
        service.plugin_invoke(&client, request.clone()).await?;
    }
    let mut took = Vec::with_capacity(calls);
    let all = Instant::now();
    for _ in 0..calls {
        let one = Instant::now();
        service.plugin_invoke(&client, request.clone()).await?;
        took.push(one.elapsed());
    }
    let total = all.elapsed();
    took.sort();
    println!(
        "{calls} calls in {total:?}: {:.0} calls/s; p50 {:?} p90 {:?} p99 {:?} max {:?}",
        calls as f64 / total.as_secs_f64(),
        percentile(&took, 0.5),
        percentile(&took, 0.9),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );
    Ok(())
}
