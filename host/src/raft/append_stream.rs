//! AppendEntries, raft's busiest message, over a connection of its own on the peer port rather
//! than as a gRPC call. A unary call through tonic passed each message through a buffer task, a
//! body-pipe task and both HTTP/2 connection tasks, and spawned a task for it on the follower:
//! on a loaded machine those hand-offs cost more than the follower's fdatasync (a 3-member write
//! at one client spent ~210 µs of its ~870 µs in them). Here the leader's replication task writes
//! the message to the socket itself and reads the answer, and one task per connection on the
//! follower reads, hands the message to raft and writes the answer.
//!
//! The protocol: the dialer sends [`MAGIC`] and its cluster id (u64, big-endian); the member
//! answers one byte, [`ACCEPTED`], or [`REFUSED`] and closes (another cluster's member must not
//! append to this one's log). Then each request is one frame (u32 big-endian length, then the
//! postcard-encoded `AppendEntriesRequest`) answered by one frame (the postcard-encoded
//! `Result<AppendEntriesResponse, RaftError>`), one at a time, as openraft sends them. The gRPC
//! peer service shares the port: a connection whose first bytes are not [`MAGIC`] goes to it.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::raft::AppendEntriesRequest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::peers::MAX_PEER_MESSAGE;
use super::{decode, encode, Raft, TypeConfig};
use crate::transport::Connection;

/// What an append connection opens with (an HTTP/2 client starts with "PRI * HTTP/2.0\r\n").
const MAGIC: &[u8; 16] = b"conclave-append1";
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;
/// How long a new connection may take to say what it speaks, and a dialer to be answered.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections sorted out for the gRPC server that it has not taken yet.
const GRPC_QUEUE: usize = 128;

/// Why an append could not be made.
#[derive(Debug)]
pub enum AppendError {
    /// The member could not be reached, or the connection broke.
    Unreachable(io::Error),
    /// The member belongs to another cluster.
    Refused,
}

/// Idle append connections to one member, shared by its clients.
pub type AppendConnections = Arc<Mutex<Vec<Connection>>>;

/// The TLS settings `config` makes for append connections: the protocol is not HTTP/2, so they
/// offer no ALPN protocol.
pub fn tls_config(config: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut config = (**config).clone();
    config.alpn_protocols.clear();
    Arc::new(config)
}

/// The leader's side of appends to one member: each takes an idle connection, or dials one, and
/// gives it back once answered.
pub struct AppendClient {
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: AppendConnections,
}

impl AppendClient {
    /// A client for the member at `url` (over TLS with `tls`, from [`tls_config`], if the URL is
    /// `https://`), sharing `idle` connections with the other clients for that member.
    pub fn new(url: &str, tls: Option<Arc<rustls::ClientConfig>>, idle: AppendConnections) -> Self {
        AppendClient { url: url.to_string(), tls, idle }
    }

    /// Send one encoded request as a member of `cluster_id` and return the encoded answer. An
    /// idle connection that broke meanwhile (the member restarted) is replaced by a new one at
    /// once; appends are idempotent. Dropping the future mid-way drops the connection.
    pub async fn append(&mut self, cluster_id: u64, request: &[u8]) -> Result<Vec<u8>, AppendError> {
        let reused = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        if let Some(mut connection) = reused
            && let Ok(answer) = exchange(&mut connection, request).await
        {
            self.give_back(connection);
            return Ok(answer);
        }
        let mut connection = self.open(cluster_id).await?;
        let answer = exchange(&mut connection, request).await.map_err(AppendError::Unreachable)?;
        self.give_back(connection);
        Ok(answer)
    }

    fn give_back(&self, connection: Connection) {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(connection);
    }

    async fn open(&self, cluster_id: u64) -> Result<Connection, AppendError> {
        let mut connection = Connection::dial(&self.url, self.tls.as_ref()).await.map_err(AppendError::Unreachable)?;
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&cluster_id.to_be_bytes());
        connection.write_all(&hello).await.map_err(AppendError::Unreachable)?;
        connection.flush().await.map_err(AppendError::Unreachable)?;
        match connection.read_u8().await.map_err(AppendError::Unreachable)? {
            ACCEPTED => Ok(connection),
            _ => Err(AppendError::Refused),
        }
    }
}

async fn exchange(connection: &mut Connection, request: &[u8]) -> io::Result<Vec<u8>> {
    write_frame(connection, request).await?;
    read_frame(connection).await
}

/// One frame: its length, then its bytes, in one write.
async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, body: &[u8]) -> io::Result<()> {
    let length = u32::try_from(body.len()).ok().filter(|&n| n as usize <= MAX_PEER_MESSAGE);
    let length = length.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("a {}-byte append frame is too large", body.len())))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let length = stream.read_u32().await? as usize;
    if length > MAX_PEER_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a {length}-byte append frame is too large")));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// The connections of `incoming` that are not append connections, for the gRPC server; append
/// connections are served here, appending to `raft` for members of `cluster_id`.
pub fn split_appends(
    incoming: impl Stream<Item = io::Result<Connection>> + Send + 'static,
    raft: Raft,
    cluster_id: u64,
) -> impl Stream<Item = io::Result<Connection>> {
    let (grpc, for_grpc) = mpsc::channel(GRPC_QUEUE);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(accepted) = incoming.next().await {
            let Ok(mut connection) = accepted else { continue };
            let (grpc, raft) = (grpc.clone(), raft.clone());
            tokio::spawn(async move {
                let mut first = [0u8; MAGIC.len()];
                match tokio::time::timeout(HELLO_TIMEOUT, connection.read_exact(&mut first)).await {
                    Ok(Ok(_)) if &first == MAGIC => serve_appends(connection, raft, cluster_id).await,
                    Ok(Ok(_)) => {
                        let _ = grpc.send(Ok(connection.unread(&first))).await;
                    }
                    // Closed or silent before saying anything.
                    Ok(Err(_)) | Err(_) => {}
                }
            });
        }
    });
    ReceiverStream::new(for_grpc)
}

/// Answer the appends of one connection, whose [`MAGIC`] has been read, until it closes.
async fn serve_appends(mut connection: Connection, raft: Raft, cluster_id: u64) {
    let theirs = match tokio::time::timeout(HELLO_TIMEOUT, connection.read_u64()).await {
        Ok(Ok(theirs)) => theirs,
        Ok(Err(_)) | Err(_) => return,
    };
    if theirs != cluster_id {
        tracing::warn!(
            local = format!("{cluster_id:x}"),
            remote = format!("{theirs:x}"),
            "refusing a peer request from another cluster (cluster ID mismatch)"
        );
        // Flushed: over TLS the byte would otherwise wait in the session's buffer and be lost.
        let _ = connection.write_all(&[REFUSED]).await;
        let _ = connection.flush().await;
        return;
    }
    if connection.write_all(&[ACCEPTED]).await.is_err() || connection.flush().await.is_err() {
        return;
    }
    while let Ok(frame) = read_frame(&mut connection).await {
        let request: AppendEntriesRequest<TypeConfig> = match decode(&frame) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("undecodable append from a peer, closing its connection: {e}");
                return;
            }
        };
        let answer = match encode(&raft.append_entries(request).await) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!("encoding an append answer: {e}");
                return;
            }
        };
        if write_frame(&mut connection, &answer).await.is_err() {
            return;
        }
    }
}
