//! `conclave`: start one member with etcd's flags.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use conclave_host::config::Config;
use conclave_host::node::Node;
use conclave_host::plugin::registry::Registry;
use conclave_host::service::Service;
use conclave_host::transport::bind_all;
use conclave_host::transport::tls::MemberTls;
use conclave_host::{api, membership, raft};

/// mimalloc: under a member's load it spends less CPU per request than glibc's malloc and holds
/// less memory per stored key (measured in the README's Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let tls = MemberTls::new(&config)?;
    let listeners = bind_all(&config.listen_client_urls).await?;
    let peer_listeners = bind_all(&config.listen_peer_urls).await?;
    let metrics_listeners = bind_all(&config.listen_metrics_urls).await?;
    let plugins = Registry::with_builtins(&config.plugin, Some(&config.compiled_plugins_dir())).await?;
    let node = Node::start(config).await?;
    let service = Service::start(node.clone(), plugins).await;
    let mut servers = tokio::task::JoinSet::new();
    for listener in peer_listeners {
        tracing::info!("listening for peers on {}", listener.url());
        servers.spawn(raft::serve_peers(node.peer_service(Arc::new(service.clone())), listener, tls.peer.clone()));
    }
    // An https:// metrics URL uses the client certificate, as etcd's does.
    for listener in metrics_listeners {
        tracing::info!("serving /metrics and /health on {}", listener.url());
        servers.spawn(api::serve(api::metrics_routes(service.clone()), listener, tls.client.clone()));
    }
    let serving = async {
        // Like etcd, serve clients only once this member is part of the cluster with its
        // attributes published (a joining member has caught up with the membership by then).
        membership::publish(Arc::downgrade(&node)).await;
        for listener in listeners {
            tracing::info!("ready to serve client requests on {}", listener.url());
            servers.spawn(api::serve(api::client_routes(service.clone()), listener, tls.client.clone()));
        }
        tokio::select! {
            Some(finished) = servers.join_next() => finished?.map(|()| false).map_err(anyhow::Error::from),
            _ = node.removed() => Ok(true),
        }
    };
    let removed = tokio::select! {
        removed = serving => removed?,
        _ = shutdown_signal() => { tracing::info!("shutting down"); false }
    };
    node.shutdown().await?;
    if removed {
        anyhow::bail!("the member has been permanently removed from the cluster; its data dir must be removed before it joins again");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = conclave_host::logging::init(&config) {
        eprintln!("conclave: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("conclave: {e:#}");
            ExitCode::FAILURE
        }
    }
}
