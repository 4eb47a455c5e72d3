//! Client side of the peer service: one lazily connected gRPC channel per peer URL, shared by
//! raft's network, write forwarding, follower reads and membership changes; when each peer last
//! answered raft; and how to find (and call) the current leader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::future::Future;
use std::time::{Duration, Instant};

use conclave_proto::conclave::raft::peer_client::PeerClient;
use conclave_proto::conclave::raft::{
    CampaignRequest, MemberChangeRequest, MemberChangeResponse, MembershipRequest, MembershipResponse, RaftBatch, RaftBatchResponse,
};
use conclave_proto::etcdserverpb::{
    LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::direct::{self, DirectClient, IdleConnections, Kind};
use super::peer_service::NOT_LEADER;
use super::{Metrics, NodeId, Raft};
use crate::error::EtcdError;

/// Largest peer message: the answer to a forwarded write can carry a txn's range, which etcd lets
/// reach 2 GiB (gRPC-Go's limit); raft messages themselves stay small (entries are sent 2 MiB at a
/// time, snapshots in 1 MiB chunks).
pub const MAX_PEER_MESSAGE: usize = i32::MAX as usize;
/// Pause between attempts to reach a leader that is changing.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a connection attempt to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// gRPC metadata every peer call carries: the sender's cluster id, in hex.
pub const CLUSTER_ID_METADATA: &str = "conclave-cluster-id";

/// Channels to peers by URL; cheap to clone.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// This member's cluster id, sent with every call (0 until the member knows it).
    cluster_id: Arc<AtomicU64>,
    /// How each peer answers raft messages (only the leader talks to every peer).
    health: Arc<Mutex<HashMap<NodeId, PeerHealth>>>,
    /// How to dial `https://` peers.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Idle direct connections by kind and peer URL, and how to dial them over TLS.
    direct: Arc<Mutex<HashMap<(Kind, String), IdleConnections>>>,
    direct_tls: Option<Arc<rustls::ClientConfig>>,
}

/// How one peer has been answering raft messages.
#[derive(Default)]
struct PeerHealth {
    last_answer: Option<Instant>,
    /// Since when it could not be reached, and when that was last logged.
    unreachable: Option<(Instant, Instant)>,
}

/// How often a peer that stays unreachable is logged again (openraft's own retries, every
/// 500 ms, are not logged).
const UNREACHABLE_LOG_INTERVAL: Duration = Duration::from_secs(30);

impl Peers {
    /// Peers dialed over TLS with `tls` where their URL is `https://`.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let direct_tls = tls.as_ref().map(direct::tls_config);
        Peers { tls, direct_tls, ..Peers::default() }
    }

    /// Send `cluster_id` with every call from now on.
    pub fn set_cluster_id(&self, cluster_id: u64) {
        self.cluster_id.store(cluster_id, Ordering::Relaxed);
    }

    /// This member's cluster id (0 until it knows it).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    /// A client for requests of `kind` to the member at `url`. Its connections are shared with
    /// every other such client: openraft makes an AppendEntries client for each leadership check
    /// (each linearizable read round), which must not dial a connection of its own.
    pub fn direct_client(&self, url: &str, kind: Kind) -> DirectClient {
        let mut direct = self.direct.lock().expect("direct connection map poisoned");
        let idle = direct.entry((kind, url.to_string())).or_default().clone();
        DirectClient::new(url, kind, self.direct_tls.clone(), idle)
    }

    /// A call carrying `message` and this member's cluster id.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let id = format!("{:x}", self.cluster_id());
        request.metadata_mut().insert(CLUSTER_ID_METADATA, id.parse().expect("hex digits are valid metadata"));
        request
    }

    /// A client for the peer at `url`; connects on first use (and reconnects after failures).
    pub fn client(&self, url: &str) -> Result<PeerClient<Channel>, Status> {
        let mut channels = self.channels.lock().expect("peer channel map poisoned");
        let channel = match channels.get(url) {
            Some(channel) => channel.clone(),
            None => {
                let channel = crate::transport::dial(url, self.tls.as_ref())
                    .map_err(|e| Status::invalid_argument(format!("bad peer URL {url:?}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true);
                let channel = crate::transport::connect_lazy(channel, url, self.tls.clone());
                channels.insert(url.to_string(), channel.clone());
                channel
            }
        };
        Ok(PeerClient::new(channel).max_decoding_message_size(MAX_PEER_MESSAGE).max_encoding_message_size(MAX_PEER_MESSAGE))
    }

    /// Have the leader at `url` propose `batch` and return the outcome once applied.
    pub async fn propose(&self, url: &str, batch: &RaftBatch) -> Result<RaftBatchResponse, Status> {
        direct::propose(&self.direct_client(url, Kind::Propose), self.cluster_id(), batch).await
    }

    /// Have the leader at `url` renew lease `id`.
    pub async fn keep_alive(&self, url: &str, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        direct::keep_alive(&self.direct_client(url, Kind::KeepAlive), self.cluster_id(), id).await
    }

    /// How long lease `request.id` has left, by the deadline the leader at `url` keeps.
    pub async fn time_to_live(&self, url: &str, request: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse, Status> {
        let answer = self.client(url)?.lease_time_to_live(self.request(request)).await;
        Ok(answer.map_err(|status| answer_or_lost(url, status))?.into_inner())
    }

    /// Have the member at `url` campaign now, for the leader of `term` handing leadership over.
    pub async fn campaign(&self, url: &str, term: u64) -> Result<(), Status> {
        self.client(url)?.campaign(self.request(CampaignRequest { term })).await?;
        Ok(())
    }

    /// The read index of the leader at `url`.
    pub async fn read_index(&self, url: &str) -> Result<u64, Status> {
        direct::read_index(&self.direct_client(url, Kind::ReadIndex), self.cluster_id()).await
    }
}

impl Peers {
    /// Have the leader at `url` make a membership change.
    pub async fn change_membership(&self, url: &str, change: MemberChangeRequest) -> Result<MemberChangeResponse, Status> {
        let answer = self.client(url)?.change_membership(self.request(change)).await;
        Ok(answer.map_err(|status| answer_or_lost(url, status))?.into_inner())
    }

    /// The cluster as the member at `url` knows it, if it answers within `wait`.
    pub async fn membership(&self, url: &str, wait: Duration) -> Result<MembershipResponse, Status> {
        let mut client = self.client(url)?;
        match tokio::time::timeout(wait, client.membership(self.request(MembershipRequest {}))).await {
            Ok(answer) => Ok(answer?.into_inner()),
            Err(_) => Err(Status::deadline_exceeded(format!("{url} did not answer within {wait:?}"))),
        }
    }

    /// Record that peer `id` answered a raft message.
    pub fn answered(&self, id: NodeId) {
        let mut health = self.health.lock().expect("peer health map poisoned");
        let peer = health.entry(id).or_default();
        peer.last_answer = Some(Instant::now());
        if let Some((since, _)) = peer.unreachable.take() {
            tracing::info!(peer = format!("{id:x}"), after = ?since.elapsed(), "peer is reachable again");
        }
    }

    /// Record that peer `id` at `url` could not be reached; logged when it starts, then every
    /// [`UNREACHABLE_LOG_INTERVAL`] while it lasts.
    pub fn unreachable(&self, id: NodeId, url: &str, error: &str) {
        let mut health = self.health.lock().expect("peer health map poisoned");
        let peer = health.entry(id).or_default();
        let now = Instant::now();
        match &mut peer.unreachable {
            None => {
                tracing::warn!(peer = format!("{id:x}"), url, error, "peer is unreachable");
                peer.unreachable = Some((now, now));
            }
            Some((since, logged)) if logged.elapsed() >= UNREACHABLE_LOG_INTERVAL => {
                tracing::warn!(peer = format!("{id:x}"), url, error, down_for = ?since.elapsed(), "peer is still unreachable");
                *logged = now;
            }
            Some(_) => {}
        }
    }

    /// Whether peer `id` answered a raft message within `window`.
    pub fn active_within(&self, id: NodeId, window: Duration) -> bool {
        let health = self.health.lock().expect("peer health map poisoned");
        health.get(&id).and_then(|peer| peer.last_answer).is_some_and(|at| at.elapsed() <= window)
    }
}

/// Where the leader is, as seen by this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leader {
    /// This member leads.
    Local,
    /// Another member leads; its peer URL.
    Remote(String),
}

/// The leader this member recognises: raft's, except that a leader which has not heard from a
/// quorum for longer than any follower waits before campaigning does not count. etcd's
/// check-quorum makes such a leader step down; openraft's stays leader, unable to commit.
pub fn recognised_leader(metrics: &Metrics, check_quorum: Duration) -> Option<NodeId> {
    let leader = metrics.current_leader?;
    // `None` on a leader: just elected, no follower answered yet.
    let quorum_silence = Duration::from_millis(metrics.millis_since_quorum_ack.unwrap_or(0));
    if leader == metrics.id && quorum_silence > check_quorum {
        return None;
    }
    Some(leader)
}

/// How long a leader may go without a quorum's answer: twice openraft's longest election
/// timeout (1.5 x --election-timeout), longer than any follower waits before campaigning.
pub fn check_quorum(raft: &Raft) -> Duration {
    Duration::from_millis(raft.config().election_timeout_max * 2)
}

/// The current leader, waiting up to `wait` for one to be known; `None` if there is none by then.
pub async fn find_leader(raft: &Raft, wait: Duration) -> Option<Leader> {
    let check_quorum = check_quorum(raft);
    // The common case, without copying the metrics: this member leads.
    {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        if recognised_leader(&metrics, check_quorum) == Some(metrics.id) {
            return Some(Leader::Local);
        }
    }
    let known = |m: &Metrics| recognised_leader(m, check_quorum).is_some();
    let metrics = raft.wait(Some(wait)).metrics(known, "a leader is known").await.ok()?;
    let leader = recognised_leader(&metrics, check_quorum)?;
    if leader == metrics.id {
        return Some(Leader::Local);
    }
    let node = metrics.membership_config.membership().get_node(&leader)?;
    Some(Leader::Remote(node.peer_url().to_string()))
}

/// Who answered a call made with [`on_leader`].
pub enum Answer<T> {
    /// This member leads: the caller acts locally.
    Local,
    /// The remote leader's answer.
    Remote(T),
}

/// Call the leader with `call(leader_url)`, or answer [`Answer::Local`] if this member leads,
/// following leadership changes for up to `wait`. A remote call is retried only when the member
/// said it does not lead or could not be connected to (the request surely did nothing); any
/// other failure goes back to the caller.
pub async fn on_leader<T, Fut>(raft: &Raft, wait: Duration, call: impl Fn(String) -> Fut) -> Result<Answer<T>, Status>
where
    Fut: Future<Output = Result<T, Status>>,
{
    let deadline = Instant::now() + wait;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match find_leader(raft, remaining).await {
            None => return Err(EtcdError::NoLeader.into()),
            Some(Leader::Local) => return Ok(Answer::Local),
            Some(Leader::Remote(url)) => match call(url).await {
                Err(status) if retryable(&status) => {
                    if Instant::now() >= deadline {
                        return Err(EtcdError::NoLeader.into());
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                outcome => return outcome.map(Answer::Remote),
            },
        }
    }
}

/// A forwarded request whose answer was lost after it was sent (the peer went away mid-call): it
/// may or may not have been acted on, which etcd answers "request timed out".
pub(super) fn lost_answer(url: &str, error: &str) -> Status {
    tracing::warn!(peer = url, error, "lost a peer's answer to a forwarded request");
    EtcdError::Timeout.into()
}

/// `status` as it came if the peer answered it or it was never sent ([`connect_failed`]), else
/// [`lost_answer`]. A status the peer sent has no source error; one the transport made (the
/// connection broke, the stream was reset) has the transport's error as its source.
fn answer_or_lost(url: &str, status: Status) -> Status {
    if connect_failed(&status) || std::error::Error::source(&status).is_none() {
        return status;
    }
    lost_answer(url, &status.to_string())
}

/// The peer does not lead, or could not be connected to: the request did nothing there.
fn retryable(status: &Status) -> bool {
    (status.code() == Code::FailedPrecondition && status.message() == NOT_LEADER) || connect_failed(status)
}

/// Whether the call failed to connect (so it was never sent): tonic keeps the connection error
/// in the status's source chain, and so does a direct connection ([`direct::Unsent`]).
fn connect_failed(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() || error.is::<direct::Unsent>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_cut_off_from_the_quorum_is_not_recognised() {
        let check_quorum = Duration::from_millis(1500);
        let mut metrics = Metrics::new_initial(1);
        assert_eq!(recognised_leader(&metrics, check_quorum), None, "no leader known");
        metrics.current_leader = Some(2);
        assert_eq!(recognised_leader(&metrics, check_quorum), Some(2), "a follower names the leader");
        metrics.current_leader = Some(1);
        assert_eq!(recognised_leader(&metrics, check_quorum), Some(1), "just elected: no follower answered yet");
        metrics.millis_since_quorum_ack = Some(200);
        assert_eq!(recognised_leader(&metrics, check_quorum), Some(1));
        metrics.millis_since_quorum_ack = Some(1600);
        assert_eq!(recognised_leader(&metrics, check_quorum), None, "no quorum heard from for too long");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let ttl = LeaseTimeToLiveRequest { id: 1, keys: false };
        let status = Peers::default().time_to_live(&url, ttl).await.expect_err("nothing listens there");
        assert!(retryable(&status), "a gRPC call: {status:?}");
        let status = Peers::default().propose(&url, &RaftBatch::default()).await.expect_err("nothing listens there");
        assert!(retryable(&status), "a write forwarded over a direct connection: {status:?}");
        let status = Peers::default().read_index(&url).await.expect_err("nothing listens there");
        assert!(retryable(&status), "a read index asked over a direct connection: {status:?}");
        let status = Peers::default().keep_alive(&url, 1).await.expect_err("nothing listens there");
        assert!(retryable(&status), "a renewal over a direct connection: {status:?}");
        assert!(!retryable(&Status::failed_precondition("etcdserver: can only promote a learner member")));
        assert!(retryable(&Status::failed_precondition(NOT_LEADER)));
    }

    /// A peer that takes each call and hangs up without answering, on a free port: its URL.
    async fn peer_hanging_up() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let mut connection = h2::server::handshake(socket).await.unwrap();
                // The call arrived whole; then the connection goes, unanswered.
                let (request, _answer) = connection.accept().await.unwrap().unwrap();
                let _ = request.into_body().data().await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_forwarded_call_whose_answer_is_lost_times_out_as_on_etcd() {
        let url = peer_hanging_up().await;
        let change = MemberChangeRequest::default();
        let status = Peers::default().change_membership(&url, change).await.expect_err("no answer comes");
        assert!(!retryable(&status), "it was sent: {status:?}");
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: request timed out"));
        let ttl = LeaseTimeToLiveRequest { id: 1, keys: false };
        let status = Peers::default().time_to_live(&url, ttl).await.expect_err("no answer comes");
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "etcdserver: request timed out"));
    }
}
