//! One accepted or dialed connection, in the clear or over TLS.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, TlsStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::tls::server_name;

pub struct Connection {
    stream: Stream,
    /// Bytes already read to tell what the peer speaks, handed out again before the stream's.
    unread: Vec<u8>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection {
    pub fn plain(tcp: TcpStream) -> Self {
        Connection { stream: Stream::Plain(tcp), unread: Vec::new() }
    }

    pub fn tls(tls: impl Into<TlsStream<TcpStream>>) -> Self {
        Connection { stream: Stream::Tls(Box::new(tls.into())), unread: Vec::new() }
    }

    /// Dial `url` (`http://host:port`, or `https://` over TLS with `tls`), with TCP_NODELAY.
    pub async fn dial(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<Self> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("bad URL {url:?}: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| invalid(format!("no host in {url:?}")))?;
        let port = parsed.port_or_known_default().ok_or_else(|| invalid(format!("no port in {url:?}")))?;
        match (parsed.scheme(), tls) {
            ("http", _) => Ok(Connection::plain(tcp_to(host, port).await?)),
            ("https", Some(config)) => Ok(Connection::tls(tls_to(config.clone(), host, port).await?)),
            ("https", None) => Err(invalid(format!("{url} is an https:// URL but no TLS client settings were given"))),
            (scheme, _) => Err(invalid(format!("unsupported scheme {scheme:?} in {url:?}"))),
        }
    }

    /// Have reading return `bytes` first: they were read to see what the peer speaks.
    pub fn unread(mut self, bytes: &[u8]) -> Self {
        self.unread.splice(0..0, bytes.iter().copied());
        self
    }

    fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp().connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.drain(..n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

async fn tcp_to(host: &str, port: u16) -> io::Result<TcpStream> {
    let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn tls_to(config: Arc<rustls::ClientConfig>, host: &str, port: u16) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp_to(host, port).await?;
    TlsConnector::from(config).connect(server_name(host)?, tcp).await
}

/// Dial `uri`'s host and port over TLS with `config`: the connector a tonic `Endpoint` is given
/// (`connect_with_connector`) to reach an `https://` server.
pub async fn connect_tls(
    config: Arc<rustls::ClientConfig>,
    uri: http::Uri,
) -> io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
    let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
    Ok(TokioIo::new(tls_to(config, host, uri.port_u16().unwrap_or(443)).await?))
}
