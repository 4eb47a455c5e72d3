//! The keys a client uses and the request it sends with each.

use conclave_proto::conclave::plugin::InvokeRequest;
use conclave_proto::conclave::plugin::plugin_client::PluginClient;
use conclave_proto::etcdserverpb::kv_client::KvClient;
use conclave_proto::etcdserverpb::lease_client::LeaseClient;
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use conclave_proto::v3electionpb::election_client::ElectionClient;
use conclave_proto::v3electionpb::{CampaignRequest, ResignRequest};
use conclave_proto::v3lockpb::lock_client::LockClient;
use conclave_proto::v3lockpb::{LockRequest, UnlockRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::Workload;

/// Keys of `size` bytes among `space` distinct ones: in turn, or at random (a small xorshift,
/// seeded per client, is enough to spread keys).
pub struct Keys {
    size: usize,
    space: u64,
    order: Order,
}

/// How the next key is picked.
pub enum Order {
    /// In turn from a counter every client shares, as etcd's tool does, so N puts write the first
    /// N keys of the space.
    Sequential(Arc<AtomicU64>),
    /// At random: the state of this client's xorshift.
    Random(u64),
}

impl Order {
    /// Random keys for client number `client`.
    pub fn random(client: u64) -> Self {
        Order::Random(client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
}

impl Keys {
    pub fn new(size: usize, space: u64, order: Order) -> Self {
        Keys { size, space, order }
    }

    /// The next key, with its index in the space.
    pub fn next(&mut self) -> (u64, Vec<u8>) {
        let index = match &mut self.order {
            Order::Sequential(counter) => counter.fetch_add(1, Ordering::Relaxed) % self.space,
            Order::Random(state) => {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                *state % self.space
            }
        };
        (index, self.key(index))
    }

    /// The key at `index` in the space.
    pub fn key(&self, index: u64) -> Vec<u8> {
        // The index in decimal, zero-padded (or cut) to the key size, as etcd's tool pads.
        let digits = format!("{index:0width$}", width = self.size.max(1));
        digits.as_bytes()[digits.len().saturating_sub(self.size.max(1))..].to_vec()
    }

    /// The key range `[start, end)` that holds every key these can be, for the watchers.
    pub fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let width = self.size.max(1);
        let last = format!("{:0width$}", self.space - 1);
        // A space wider than the keys wraps around: every key of the size is then in it.
        let mut end = if last.len() > width { vec![b'9'; width] } else { last.into_bytes() };
        end.push(0);
        (vec![b'0'; width], end)
    }
}

/// What one request of a workload is.
pub struct Request {
    workload: Workload,
    value: Vec<u8>,
    serializable: bool,
    /// The lock or election every client uses with `--contended` (else each its own).
    shared_lock: bool,
    /// `txn-mixed`: ranges per put.
    reads_per_write: u32,
}

/// A client's own state: its lease (for `lease-keepalive` and the locks) and keep-alive stream.
pub struct Session {
    lease: i64,
    keepalive: Option<(mpsc::Sender<LeaseKeepAliveRequest>, Streaming<LeaseKeepAliveResponse>)>,
    name: Vec<u8>,
    /// Requests sent so far (`txn-mixed` picks reads and writes by it).
    sent: u64,
}

/// How long a client's lease lives if it stops renewing it (the run ends first).
const LEASE_TTL: i64 = 600;

impl Request {
    pub fn new(workload: Workload, value_size: usize, serializable: bool, shared_lock: bool, reads_per_write: u32) -> Self {
        Request { workload, value: vec![b'x'; value_size], serializable, shared_lock, reads_per_write }
    }

    /// What client `index` needs before its first request.
    pub async fn open(&self, channel: &Channel, index: usize) -> Result<Session, Status> {
        let mut session = Session { lease: 0, keepalive: None, name: format!("bench-{index}").into_bytes(), sent: 0 };
        if self.shared_lock {
            session.name = b"bench".to_vec();
        }
        if matches!(self.workload, Workload::LeaseKeepalive | Workload::Lock | Workload::LockRecipe | Workload::Election) {
            let grant = LeaseGrantRequest { ttl: LEASE_TTL, id: 0 };
            session.lease = LeaseClient::new(channel.clone()).lease_grant(grant).await?.into_inner().id;
        }
        if self.workload == Workload::LeaseKeepalive {
            // etcd answers the call (its headers) only with its first renewal, so the first
            // request goes before the call is awaited, and its answer is not counted.
            let (send, requests) = mpsc::channel(1);
            let first = LeaseKeepAliveRequest { id: session.lease };
            send.send(first).await.map_err(|_| Status::internal("keep-alive queue closed"))?;
            let mut leases = LeaseClient::new(channel.clone());
            let mut responses = leases.lease_keep_alive(ReceiverStream::new(requests)).await?.into_inner();
            responses.message().await?;
            session.keepalive = Some((send, responses));
        }
        Ok(session)
    }

    pub async fn send(&self, channel: &Channel, session: &mut Session, key: Vec<u8>) -> Result<(), Status> {
        let mut kv = KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
        session.sent += 1;
        let workload = match self.workload {
            Workload::TxnMixed if session.sent.is_multiple_of(u64::from(self.reads_per_write) + 1) => Workload::TxnPut,
            Workload::TxnMixed => Workload::Range,
            other => other,
        };
        match workload {
            Workload::Put => kv.put(PutRequest { key, value: self.value.clone(), ..Default::default() }).await.map(drop),
            Workload::Watch | Workload::WatchLatency => {
                kv.put(PutRequest { key, value: super::watch::stamped(self.value.len()), ..Default::default() }).await.map(drop)
            }
            Workload::Range => {
                kv.range(RangeRequest { key, serializable: self.serializable, ..Default::default() }).await.map(drop)
            }
            Workload::TxnPut => {
                let put = Op::RequestPut(PutRequest { key, value: self.value.clone(), ..Default::default() });
                let txn = TxnRequest { success: vec![RequestOp { request: Some(put) }], ..Default::default() };
                kv.txn(txn).await.map(drop)
            }
            Workload::LeaseKeepalive => {
                let (send, responses) = session.keepalive.as_mut().expect("opened with a keep-alive stream");
                send.send(LeaseKeepAliveRequest { id: session.lease }).await.map_err(|_| Status::unavailable("keep-alive stream closed"))?;
                match responses.message().await? {
                    Some(renewed) if renewed.ttl > 0 => Ok(()),
                    Some(_) => Err(Status::not_found("etcdserver: requested lease not found")),
                    None => Err(Status::unavailable("keep-alive stream ended")),
                }
            }
            Workload::Lock => {
                let mut lock = LockClient::new(channel.clone());
                let held = lock.lock(LockRequest { name: session.name.clone(), lease: session.lease }).await?.into_inner();
                lock.unlock(UnlockRequest { key: held.key }).await.map(drop)
            }
            Workload::LockRecipe => super::mutex_recipe::lock_and_unlock(channel, &session.name, session.lease).await,
            Workload::Election => {
                let mut election = ElectionClient::new(channel.clone());
                let campaign = CampaignRequest { name: session.name.clone(), lease: session.lease, value: b"bench".to_vec() };
                let leader = election.campaign(campaign).await?.into_inner().leader;
                election.resign(ResignRequest { leader }).await.map(drop)
            }
            Workload::TxnMixed => unreachable!("txn-mixed sends a txn put or a range"),
            Workload::Plugin => {
                let call = InvokeRequest { plugin: "counter".into(), method: "get".into(), payload: br#"{"name":"bench"}"#.to_vec() };
                PluginClient::new(channel.clone()).invoke(call).await.map(drop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_size_and_stay_in_the_space() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut first = Keys::new(6, 10, Order::Sequential(counter.clone()));
        let mut second = Keys::new(6, 10, Order::Sequential(counter));
        let keys: Vec<_> = (0..6).map(|i| String::from_utf8(if i % 2 == 0 { first.next().1 } else { second.next().1 }).unwrap()).collect();
        assert_eq!(keys, ["000000", "000001", "000002", "000003", "000004", "000005"], "clients share the sequence");
        let mut random = Keys::new(3, 50, Order::random(7));
        for _ in 0..1000 {
            let (index, key) = random.next();
            assert_eq!(key, random.key(index));
            assert_eq!(key.len(), 3);
            assert!(std::str::from_utf8(&key).unwrap().parse::<u64>().unwrap() < 50);
        }
    }

    #[test]
    fn the_range_holds_every_key_and_no_more() {
        assert_eq!(Keys::new(4, 1, Order::random(0)).range(), (b"0000".to_vec(), b"0000\0".to_vec()));
        assert_eq!(Keys::new(4, 250, Order::random(0)).range(), (b"0000".to_vec(), b"0249\0".to_vec()));
        assert_eq!(Keys::new(2, 1000, Order::random(0)).range(), (b"00".to_vec(), b"99\0".to_vec()));
        let mut keys = Keys::new(3, 20, Order::random(5));
        let (start, end) = keys.range();
        assert!((0..200).map(|_| keys.next().1).all(|key| start <= key && key < end));
    }
}
