//! `conclave`: start one member with etcd's flags.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use conclave_host::config::Config;
use conclave_host::raft::LocalMember;
use conclave_host::{api, node::Node};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// `http://host:port` → `host:port`; only plain HTTP until TLS lands.
fn listen_address(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("bad URL {url:?}: {e}"))?;
    if parsed.scheme() != "http" {
        anyhow::bail!("unsupported scheme in {url:?}: only http:// is supported yet");
    }
    let host = parsed.host_str().ok_or_else(|| anyhow::anyhow!("no host in {url:?}"))?;
    let port = parsed.port().ok_or_else(|| anyhow::anyhow!("no port in {url:?}"))?;
    Ok(format!("{host}:{port}"))
}

/// Bind every URL of `urls` (before the node starts, so a taken port fails fast).
async fn bind_all(urls: &[String]) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for url in urls {
        let address = listen_address(url)?;
        let listener = TcpListener::bind(&address).await.map_err(|e| anyhow::anyhow!("listen on {address}: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listeners = bind_all(&config.listen_client_urls).await?;
    let peer_listeners = bind_all(&config.listen_peer_urls).await?;
    let node = Node::start(config).await?;
    let mut servers = tokio::task::JoinSet::new();
    for listener in peer_listeners {
        tracing::info!("listening for peers on http://{}", listener.local_addr()?);
        let (renewer, timer, changer) = (node.clone(), node.clone(), node.clone());
        let member = LocalMember {
            raft: node.raft.clone(),
            handover: node.handover.clone(),
            cluster_id: node.identity.cluster_id,
            keep_alive: Box::new(move |id| api::keep_alive_as_leader(&renewer, id)),
            time_to_live: Box::new(move |req| api::time_to_live_as_leader(&timer, req)),
            change_membership: Box::new(move |change| {
                let node = changer.clone();
                Box::pin(async move { node.change_membership_as_leader(change).await })
            }),
        };
        servers.spawn(conclave_host::raft::serve_peers(member, listener));
    }
    let serving = async {
        // Like etcd, serve clients only once this member is part of the cluster with its
        // attributes published (a joining member has caught up with the membership by then).
        conclave_host::membership::publish(Arc::downgrade(&node)).await;
        for listener in listeners {
            tracing::info!("ready to serve client requests on http://{}", listener.local_addr()?);
            servers.spawn(api::serve(node.clone(), listener));
        }
        tokio::select! {
            Some(finished) = servers.join_next() => finished?.map(|()| false).map_err(anyhow::Error::from),
            _ = node.removed.notified() => Ok(true),
        }
    };
    let removed = tokio::select! {
        removed = serving => removed?,
        _ = shutdown_signal() => { tracing::info!("shutting down"); false }
    };
    node.raft.shutdown().await.ok();
    node.db.flush_async().await?;
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            // openraft logs every failed retry to an unreachable peer (several lines each 500 ms);
            // the peer network logs when a peer goes and comes back instead. RUST_LOG overrides.
            EnvFilter::new(format!(
                "{},openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off",
                config.log_level
            ))
        }))
        .init();
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
