//! How bytes reach the API: listeners on the configured URLs, and the shims that make the Rust
//! gRPC stack accept and answer what etcd's Go clients send ([`h2_compat`], [`message_size`]).

mod h2_compat;
pub mod message_size;

use futures::{Stream, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

pub use h2_compat::AuthorityFix;

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

/// Bind every URL of `urls` (before the member starts, so a taken port fails fast).
pub async fn bind_all(urls: &[String]) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for url in urls {
        let address = listen_address(url)?;
        let listener = TcpListener::bind(&address).await.map_err(|e| anyhow::anyhow!("listen on {address}: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Accepted connections with TCP_NODELAY: requests and answers are small, so each goes at once
/// rather than waiting to coalesce (tonic sets no TCP options on listeners it did not bind).
pub fn accepted(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map_ok(|tcp| {
        let _ = tcp.set_nodelay(true);
        tcp
    })
}

/// Accepted client connections, repaired for etcdctl's per-endpoint dialer.
pub fn client_connections(listener: TcpListener) -> impl Stream<Item = std::io::Result<AuthorityFix<TcpStream>>> {
    accepted(listener).map_ok(AuthorityFix::new)
}
