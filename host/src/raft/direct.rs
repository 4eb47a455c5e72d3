//! Raft's busiest peer messages over connections of their own on the peer port rather than as
//! gRPC calls: the leader's AppendEntries, and a follower's batches of writes, read-index
//! requests and lease renewals to the leader. A unary call through tonic passed each message through a buffer task, a body-pipe task
//! and both HTTP/2 connection tasks, and spawned a task for it on the receiver: on a loaded
//! machine those hand-offs cost more than the follower's fdatasync (a 3-member write at one client
//! spent ~210 µs of its ~870 µs in them for AppendEntries, and a forwarded write ~250 µs more in
//! its Propose call). Here the sender's task writes the message to the socket itself and reads
//! the answer, and one task per connection on the receiver reads, hands the message to raft and
//! writes the answer.
//!
//! The protocol: the dialer sends the magic of its [`Kind`] and its cluster id (u64, big-endian);
//! the member answers one byte, [`ACCEPTED`], or [`REFUSED`] and closes (another cluster's member
//! must not append to this one's log nor propose into it). Then each request is one frame (u32
//! big-endian length, then the body) answered by one frame, one at a time. An append's body is
//! the postcard-encoded `AppendEntriesRequest`, answered by the postcard-encoded
//! `Result<AppendEntriesResponse, RaftError>`. A proposal's is the protobuf `RaftBatch`, a
//! read-index request's is empty, a renewal's is the protobuf `LeaseKeepAliveRequest`; each is
//! answered by the postcard-encoded [`Answered`] (the protobuf `RaftBatchResponse`, the read index
//! as a big-endian u64, the protobuf `LeaseKeepAliveResponse`). The gRPC peer service shares the port: a connection whose
//! first bytes are no kind's magic goes to it.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::conclave::raft::{RaftBatch, RaftBatchResponse};
use conclave_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use futures::{FutureExt, Stream, StreamExt};
use openraft::raft::AppendEntriesRequest;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::peer_service::{LeaderDuties, NOT_LEADER};
use super::peers::MAX_PEER_MESSAGE;
use super::transfer::Handover;
use super::proposer::propose_as_leader;
use super::read_index::ReadRounds;
use super::{decode, encode, Raft, TypeConfig};
use crate::transport::Connection;

/// What a connection carries, named by the magic it opens with (an HTTP/2 client starts with
/// "PRI * HTTP/2.0\r\n").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A leader's AppendEntries to a follower.
    Append,
    /// A follower's batches of writes to the leader.
    Propose,
    /// A follower's requests for the leader's read index.
    ReadIndex,
    /// A follower's lease renewals, which only the leader makes (it keeps the deadlines).
    KeepAlive,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Append, Kind::Propose, Kind::ReadIndex, Kind::KeepAlive];

    fn magic(self) -> &'static [u8; 16] {
        match self {
            Kind::Append => b"conclave-append1",
            Kind::Propose => b"conclave-propose",
            Kind::ReadIndex => b"conclave-readidx",
            Kind::KeepAlive => b"conclave-keepalv",
        }
    }

    /// Whether a request may be sent again when the connection broke after it was written: an
    /// append may (raft takes the same entries twice alike), and so may a read-index request or a
    /// renewal, but not a proposal (the leader may have committed it already).
    fn resendable(self) -> bool {
        self != Kind::Propose
    }
}

const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;
/// How long a new connection may take to say what it speaks, and a dialer to be answered.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections sorted out for the gRPC server that it has not taken yet.
const GRPC_QUEUE: usize = 128;

/// Why a request got no answer.
#[derive(Debug)]
pub enum DirectError {
    /// The member could not be reached: the request was not sent.
    Unreachable(io::Error),
    /// The connection broke after the request was sent: it may have been acted on.
    Broken(io::Error),
    /// The member belongs to another cluster.
    Refused,
}

/// The leader's answer to a request other than an append: its body, or the code and message of
/// the gRPC status it failed with.
#[derive(Serialize, Deserialize)]
enum Answered {
    Done(Vec<u8>),
    Failed { code: i32, message: String },
}

impl From<Result<Vec<u8>, Status>> for Answered {
    fn from(outcome: Result<Vec<u8>, Status>) -> Self {
        match outcome {
            Ok(body) => Answered::Done(body),
            Err(status) => Answered::Failed { code: status.code() as i32, message: status.message().to_string() },
        }
    }
}

/// Idle connections to one member, shared by its clients.
pub type IdleConnections = Arc<Mutex<Vec<Connection>>>;

/// The TLS settings `config` makes for direct connections: the protocol is not HTTP/2, so they
/// offer no ALPN protocol.
pub fn tls_config(config: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut config = (**config).clone();
    config.alpn_protocols.clear();
    Arc::new(config)
}

/// One side's requests of one kind to one member: each takes an idle connection, or dials one,
/// and gives it back once answered.
pub struct DirectClient {
    url: String,
    kind: Kind,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: IdleConnections,
}

impl DirectClient {
    /// A client for the member at `url` (over TLS with `tls`, from [`tls_config`], if the URL is
    /// `https://`), sharing `idle` connections of `kind` with the other clients for that member.
    pub fn new(url: &str, kind: Kind, tls: Option<Arc<rustls::ClientConfig>>, idle: IdleConnections) -> Self {
        DirectClient { url: url.to_string(), kind, tls, idle }
    }

    /// Send one request body as a member of `cluster_id` and return the answer's. An idle
    /// connection the member closed meanwhile (it restarted) is left for a new one; one that
    /// breaks once the request is written is replaced at once only for a resendable kind.
    /// Dropping the future mid-way drops the connection.
    pub async fn exchange(&self, cluster_id: u64, request: &[u8]) -> Result<Vec<u8>, DirectError> {
        if let Some(mut connection) = self.reuse() {
            match exchange(&mut connection, request).await {
                Ok(answer) => {
                    self.give_back(connection);
                    return Ok(answer);
                }
                Err(e) if !self.kind.resendable() => return Err(DirectError::Broken(e)),
                Err(_) => {}
            }
        }
        let mut connection = self.open(cluster_id).await?;
        let answer = exchange(&mut connection, request).await.map_err(DirectError::Broken)?;
        self.give_back(connection);
        Ok(answer)
    }

    /// An idle connection the member has not closed: one it closed is readable at once (its end
    /// of file), an open one has nothing to read between exchanges.
    fn reuse(&self) -> Option<Connection> {
        loop {
            let mut connection = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop()?;
            if connection.read_u8().now_or_never().is_none() {
                return Some(connection);
            }
        }
    }

    fn give_back(&self, connection: Connection) {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(connection);
    }

    async fn open(&self, cluster_id: u64) -> Result<Connection, DirectError> {
        let mut connection = Connection::dial(&self.url, self.tls.as_ref()).await.map_err(DirectError::Unreachable)?;
        let mut hello = self.kind.magic().to_vec();
        hello.extend_from_slice(&cluster_id.to_be_bytes());
        connection.write_all(&hello).await.map_err(DirectError::Unreachable)?;
        connection.flush().await.map_err(DirectError::Unreachable)?;
        match connection.read_u8().await.map_err(DirectError::Unreachable)? {
            ACCEPTED => Ok(connection),
            _ => Err(DirectError::Refused),
        }
    }
}

/// Have the leader this client reaches propose `batch`, and return the outcome once applied.
pub async fn propose(client: &DirectClient, cluster_id: u64, batch: &RaftBatch) -> Result<RaftBatchResponse, Status> {
    ask_message(client, cluster_id, batch).await
}

/// The read index of the leader this client reaches.
pub async fn read_index(client: &DirectClient, cluster_id: u64) -> Result<u64, Status> {
    let index = ask(client, cluster_id, &[]).await?;
    let index: [u8; 8] = index.as_slice().try_into().map_err(|_| undecodable(client.kind, &format!("{} bytes", index.len())))?;
    Ok(u64::from_be_bytes(index))
}

/// Have the leader this client reaches renew lease `id`.
pub async fn keep_alive(client: &DirectClient, cluster_id: u64, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
    ask_message(client, cluster_id, &LeaseKeepAliveRequest { id }).await
}

/// Send the protobuf `request` and decode the protobuf answer.
async fn ask_message<M: Message + Default>(client: &DirectClient, cluster_id: u64, request: &impl Message) -> Result<M, Status> {
    let answer = ask(client, cluster_id, &request.encode_to_vec()).await?;
    M::decode(answer.as_slice()).map_err(|e| undecodable(client.kind, &e))
}

/// Send `request` and return the body of the [`Answered`] it got, as a status if it failed.
async fn ask(client: &DirectClient, cluster_id: u64, request: &[u8]) -> Result<Vec<u8>, Status> {
    let answer = match client.exchange(cluster_id, request).await {
        Ok(answer) => answer,
        Err(DirectError::Unreachable(e)) => return Err(unreachable(&client.url, e)),
        Err(DirectError::Broken(e)) => return Err(super::peers::lost_answer(&client.url, &format!("{:?}: {e}", client.kind))),
        Err(DirectError::Refused) => return Err(crate::error::EtcdError::ClusterIdMismatch.to_peer_status()),
    };
    match decode::<Answered>(&answer).map_err(|e| undecodable(client.kind, &e))? {
        Answered::Done(body) => Ok(body),
        Answered::Failed { code, message } => Err(Status::new(Code::from_i32(code), message)),
    }
}

fn undecodable(kind: Kind, error: &dyn std::fmt::Display) -> Status {
    Status::internal(format!("undecodable answer from the leader ({kind:?}): {error}"))
}

/// The member at `url` could not be reached, so the request was not sent: [`Unsent`] in the
/// status's sources says so.
fn unreachable(url: &str, error: io::Error) -> Status {
    let mut status = Status::unavailable(format!("cannot reach {url}: {error}"));
    status.set_source(Arc::new(Unsent(error)));
    status
}

/// A request that was never sent, because its member could not be reached.
#[derive(Debug)]
pub struct Unsent(io::Error);

impl std::fmt::Display for Unsent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not sent: {}", self.0)
    }
}

impl std::error::Error for Unsent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

async fn exchange(connection: &mut Connection, request: &[u8]) -> io::Result<Vec<u8>> {
    write_frame(connection, request).await?;
    read_frame(connection).await
}

/// One frame: its length, then its bytes, in one write.
async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, body: &[u8]) -> io::Result<()> {
    let length = u32::try_from(body.len()).ok().filter(|&n| n as usize <= MAX_PEER_MESSAGE);
    let length = length.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("a {}-byte peer frame is too large", body.len())))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await?;
    stream.flush().await
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let length = stream.read_u32().await? as usize;
    if length > MAX_PEER_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a {length}-byte peer frame is too large")));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// What direct connections are served with: this member's raft, its cluster id, its leadership
/// hand-over (which proposals wait for), its read-index rounds, and the service layer's duties
/// as leader (renewals).
#[derive(Clone)]
pub struct Served {
    pub raft: Raft,
    pub cluster_id: u64,
    pub handover: Handover,
    pub reads: Arc<ReadRounds<Status>>,
    pub duties: Arc<dyn LeaderDuties>,
}

/// The connections of `incoming` that are not direct connections, for the gRPC server; direct
/// connections are served here, for members of the same cluster.
pub fn split_direct(incoming: impl Stream<Item = io::Result<Connection>> + Send + 'static, served: Served) -> impl Stream<Item = io::Result<Connection>> {
    let (grpc, for_grpc) = mpsc::channel(GRPC_QUEUE);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        while let Some(accepted) = incoming.next().await {
            let Ok(mut connection) = accepted else { continue };
            let (grpc, served) = (grpc.clone(), served.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 16];
                // Closed or silent before saying anything: dropped.
                if let Ok(Ok(_)) = tokio::time::timeout(HELLO_TIMEOUT, connection.read_exact(&mut first)).await {
                    match Kind::ALL.into_iter().find(|kind| kind.magic() == &first) {
                        Some(kind) => serve(connection, kind, served).await,
                        None => {
                            let _ = grpc.send(Ok(connection.unread(&first))).await;
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(for_grpc)
}

/// Answer the requests of one connection of `kind`, whose magic has been read, until it closes.
async fn serve(mut connection: Connection, kind: Kind, served: Served) {
    let theirs = match tokio::time::timeout(HELLO_TIMEOUT, connection.read_u64()).await {
        Ok(Ok(theirs)) => theirs,
        Ok(Err(_)) | Err(_) => return,
    };
    if theirs != served.cluster_id {
        tracing::warn!(
            local = format!("{:x}", served.cluster_id),
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
        let answer = match kind {
            Kind::Append => append(&served.raft, &frame).await,
            Kind::Propose => proposal(&served, &frame).await,
            Kind::ReadIndex => encoded(served.reads.next().await.map(|index| index.to_be_bytes().to_vec())),
            Kind::KeepAlive => renewal(&served, &frame).await,
        };
        let Some(answer) = answer else { return };
        if write_frame(&mut connection, &answer).await.is_err() {
            return;
        }
    }
}

/// The encoded answer to an append, or None to close the connection.
async fn append(raft: &Raft, frame: &[u8]) -> Option<Vec<u8>> {
    let request: AppendEntriesRequest<TypeConfig> = decode(frame)
        .inspect_err(|e| tracing::warn!("undecodable append from a peer, closing its connection: {e}"))
        .ok()?;
    encode(&raft.append_entries(request).await).inspect_err(|e| tracing::error!("encoding an append answer: {e}")).ok()
}

/// The encoded answer to a forwarded batch, or None to close the connection.
async fn proposal(served: &Served, frame: &[u8]) -> Option<Vec<u8>> {
    let batch = RaftBatch::decode(frame)
        .inspect_err(|e| tracing::warn!("undecodable forwarded write from a peer, closing its connection: {e}"))
        .ok()?;
    encoded(propose_as_leader(&served.raft, &served.handover, batch).await.map(|response| response.encode_to_vec()))
}

/// The encoded answer to a lease renewal, or None to close the connection.
async fn renewal(served: &Served, frame: &[u8]) -> Option<Vec<u8>> {
    let request = LeaseKeepAliveRequest::decode(frame)
        .inspect_err(|e| tracing::warn!("undecodable lease renewal from a peer, closing its connection: {e}"))
        .ok()?;
    let renewed = served.duties.keep_alive(request.id).await.ok_or_else(|| Status::failed_precondition(NOT_LEADER));
    encoded(renewed.map(|response| response.encode_to_vec()))
}

/// `outcome` as an encoded [`Answered`], or None to close the connection.
fn encoded(outcome: Result<Vec<u8>, Status>) -> Option<Vec<u8>> {
    encode(&Answered::from(outcome)).inspect_err(|e| tracing::error!("encoding an answer to a peer: {e}")).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A member that accepts any cluster, answers the first frame of its first connection with
    /// the frame itself, takes the second and closes without answering (as if it died while
    /// proposing), and answers every frame of later connections. Counts the frames it took.
    async fn member_dying_at_the_second_frame() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let taken = Arc::new(AtomicUsize::new(0));
        let count = taken.clone();
        tokio::spawn(async move {
            let mut first_connection = true;
            while let Ok((stream, _)) = listener.accept().await {
                let (dies, count) = (std::mem::take(&mut first_connection), count.clone());
                tokio::spawn(answer(stream, dies, count));
            }
        });
        (url, taken)
    }

    async fn answer(mut stream: TcpStream, dies: bool, taken: Arc<AtomicUsize>) {
        let mut hello = [0u8; 24];
        stream.read_exact(&mut hello).await.unwrap();
        stream.write_all(&[ACCEPTED]).await.unwrap();
        let mut answered = 0;
        while let Ok(frame) = read_frame(&mut stream).await {
            taken.fetch_add(1, Ordering::SeqCst);
            if dies && answered == 1 {
                return;
            }
            write_frame(&mut stream, &frame).await.unwrap();
            answered += 1;
        }
    }

    fn client(url: &str, kind: Kind) -> DirectClient {
        DirectClient::new(url, kind, None, IdleConnections::default())
    }

    #[tokio::test]
    async fn a_proposal_whose_connection_breaks_once_sent_is_not_sent_again() {
        let (url, taken) = member_dying_at_the_second_frame().await;
        let proposals = client(&url, Kind::Propose);
        assert_eq!(proposals.exchange(1, b"first").await.unwrap(), b"first");
        let broken = proposals.exchange(1, b"second").await;
        assert!(matches!(broken, Err(DirectError::Broken(_))), "{broken:?}");
        assert_eq!(taken.load(Ordering::SeqCst), 2, "the member took each proposal once");
    }

    #[tokio::test]
    async fn an_append_whose_connection_breaks_once_sent_goes_again_on_a_new_one() {
        let (url, taken) = member_dying_at_the_second_frame().await;
        let appends = client(&url, Kind::Append);
        assert_eq!(appends.exchange(1, b"first").await.unwrap(), b"first");
        assert_eq!(appends.exchange(1, b"second").await.unwrap(), b"second");
        assert_eq!(taken.load(Ordering::SeqCst), 3, "the second append went twice");
    }
}
