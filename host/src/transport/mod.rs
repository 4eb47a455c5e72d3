//! How bytes reach the API: listeners on the configured URLs (TLS on `https://` ones, [`tls`]),
//! the connector members and clients dial TLS with, and the shims that make the Rust gRPC stack
//! accept and answer what etcd's Go clients send ([`h2_compat`], [`message_size`]).

mod connection;
mod h2_compat;
pub mod message_size;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

pub use connection::{Connection, connect_tls};
pub use h2_compat::AuthorityFix;
use tls::Rejections;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 128;
/// What Go's TLS server answers a plaintext HTTP request with, so a client that forgot TLS
/// learns why.
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
/// A TLS record carrying a handshake starts with this byte; anything else is not TLS.
const TLS_HANDSHAKE: u8 = 0x16;

/// A listener and whether its URL asked for TLS.
pub struct Listener {
    pub tcp: TcpListener,
    pub https: bool,
}

impl Listener {
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        self.tcp.local_addr().map_or_else(|e| format!("{scheme}://? ({e})"), |a| format!("{scheme}://{a}"))
    }
}

/// `http(s)://host:port` → (`host:port`, https).
fn listen_address(url: &str) -> anyhow::Result<(String, bool)> {
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("bad URL {url:?}: {e}"))?;
    let https = match parsed.scheme() {
        "http" => false,
        "https" => true,
        _ => anyhow::bail!("unsupported scheme in {url:?}: only http:// and https:// are served"),
    };
    let host = parsed.host_str().ok_or_else(|| anyhow::anyhow!("no host in {url:?}"))?;
    let port = parsed.port().ok_or_else(|| anyhow::anyhow!("no port in {url:?}"))?;
    Ok((format!("{host}:{port}"), https))
}

/// Bind every URL of `urls` (before the member starts, so a taken port fails fast).
pub async fn bind_all(urls: &[String]) -> anyhow::Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for url in urls {
        let (address, https) = listen_address(url)?;
        let tcp = TcpListener::bind(&address).await.map_err(|e| anyhow::anyhow!("listen on {address}: {e}"))?;
        listeners.push(Listener { tcp, https });
    }
    Ok(listeners)
}

/// The connections a listener accepts, with TCP_NODELAY (requests and answers are small, so
/// each goes at once rather than waiting to coalesce) and, on a TLS port, after their handshake
/// (done off the accept loop, so a slow client holds up no other). `port` names the listener in
/// logs.
pub fn accepted(
    listener: Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
    port: &'static str,
) -> impl Stream<Item = std::io::Result<Connection>> {
    let (connections, accepted) = mpsc::channel(ACCEPT_QUEUE);
    let acceptor = tls.filter(|_| listener.https).map(TlsAcceptor::from);
    let rejections = Arc::new(Rejections::default());
    tokio::spawn(async move {
        loop {
            let tcp = match listener.tcp.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("accepting a {port} connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let Some(acceptor) = acceptor.clone() else {
                if connections.send(Ok(Connection::plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let (handed, rejections) = (connections.clone(), rejections.clone());
            tokio::spawn(async move {
                if let Some(connection) = handshake(acceptor, tcp, port, &rejections).await {
                    let _ = handed.send(Ok(connection)).await;
                }
            });
            if connections.is_closed() {
                return;
            }
        }
    });
    ReceiverStream::new(accepted)
}

/// A TLS handshake, or `None` (logged) if the client is not speaking TLS or is refused.
async fn handshake(acceptor: TlsAcceptor, mut tcp: TcpStream, port: &str, rejections: &Rejections) -> Option<Connection> {
    let remote = tcp.peer_addr().ok()?.ip();
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != TLS_HANDSHAKE {
        rejections.record(port, remote, "the client is not using TLS on this TLS port");
        let _ = tcp.write_all(PLAINTEXT_ANSWER).await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Connection::tls(tls)),
        Ok(Err(e)) => {
            rejections.record(port, remote, &format!("TLS handshake failed: {}", tls::reason(&e)));
            None
        }
        Err(_) => {
            rejections.record(port, remote, "TLS handshake timed out");
            None
        }
    }
}

/// An endpoint for `url`; an `https://` one is dialed with TLS (see [`connect_lazy`]).
pub fn dial(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> anyhow::Result<tonic::transport::Endpoint> {
    let plain = match url.strip_prefix("https://") {
        Some(rest) if tls.is_some() => format!("http://{rest}"),
        Some(_) => anyhow::bail!("{url} is an https:// URL but no TLS client settings were given"),
        None => url.to_string(),
    };
    Ok(tonic::transport::Endpoint::from_shared(plain)?)
}

/// A channel that connects on first use: over TLS with `tls` if `url` is `https://`.
pub fn connect_lazy(endpoint: tonic::transport::Endpoint, url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> tonic::transport::Channel {
    match tls.filter(|_| url.starts_with("https://")) {
        Some(tls) => endpoint.connect_with_connector_lazy(tower::service_fn(move |uri| connect_tls(tls.clone(), uri))),
        None => endpoint.connect_lazy(),
    }
}

/// A channel connected now: over TLS with `tls` if `url` is `https://`.
pub async fn connect(
    endpoint: tonic::transport::Endpoint,
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    match tls.filter(|_| url.starts_with("https://")) {
        Some(tls) => endpoint.connect_with_connector(tower::service_fn(move |uri| connect_tls(tls.clone(), uri))).await,
        None => endpoint.connect().await,
    }
}

/// Accepted client connections, repaired for etcdctl's per-endpoint dialer.
pub fn client_connections(
    listener: Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> impl Stream<Item = std::io::Result<AuthorityFix<Connection>>> {
    use futures::TryStreamExt;
    accepted(listener, tls, "client").map_ok(AuthorityFix::new)
}
