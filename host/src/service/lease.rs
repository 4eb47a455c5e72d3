//! Leases: grants and revokes go through raft; keep-alives and time-to-live are answered by the
//! leader, which alone keeps deadlines (a follower passes them on, as etcd does); lists are
//! answered from the local lease table, as etcd does too. etcd's learners serve no lease calls.
//! Only a revoke names keys (those it deletes), so only it checks the caller's grants.

use std::future::Future;
use std::time::{Duration, Instant};

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    ResponseHeader,
};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{Caller, Service};
use crate::error::EtcdError;
use crate::lease;
use crate::mvcc::View;
use crate::raft::{on_leader, Answer};

/// Renewals answered before a keep-alive stream waits for its caller to take them.
const KEEP_ALIVE_QUEUE: usize = 16;
/// Before looking for the leader again, when this member's leadership ended under a request.
const LEADERSHIP_MOVED_PAUSE: Duration = Duration::from_millis(20);

impl Service {
    pub async fn lease_grant(&self, _caller: &Caller, mut req: LeaseGrantRequest) -> Result<LeaseGrantResponse, EtcdError> {
        self.refuse_if_learner()?;
        self.check_quota().await?;
        // Settled before proposing, so every member applies the same id and TTL.
        let config = &self.node.config;
        req.ttl = req.ttl.max(lease::min_ttl(config.heartbeat_interval, config.election_timeout));
        if req.id == 0 {
            let node = self.node.clone();
            req.id = self
                .node
                .store
                .read_async(move |view| {
                    std::iter::repeat_with(|| node.lease_ids.next()).find(|id| !view.leases().contains(*id)).expect("repeat_with never ends")
                })
                .await;
        }
        let pick = |r| if let Resp::LeaseGrant(r) = r { Some(r) } else { None };
        let mut resp = self.write(Req::LeaseGrant(req), pick).await?;
        self.node.fill(&mut resp.header);
        Ok(resp)
    }

    /// Revoking deletes the lease's keys: the caller must be allowed to write each of them.
    pub async fn lease_revoke(&self, caller: &Caller, req: LeaseRevokeRequest) -> Result<LeaseRevokeResponse, EtcdError> {
        self.refuse_if_learner()?;
        let checker = caller.clone();
        self.node
            .store
            .read_async(move |view| match view.leases().get(req.id) {
                Some(lease) => lease.keys.iter().try_for_each(|key| checker.check_write(key, &[])),
                None => Ok(()),
            })
            .await?;
        let pick = |r| if let Resp::LeaseRevoke(r) = r { Some(r) } else { None };
        let mut resp = self.write(Req::LeaseRevoke(req), pick).await?;
        self.node.fill(&mut resp.header);
        Ok(resp)
    }

    /// Renew lease `id` (here if this member leads, else through the leader): its granted TTL,
    /// or 0 if it is unknown or already expired (etcd answers a keep-alive for a missing lease
    /// with TTL 0 rather than an error).
    pub async fn lease_keep_alive(&self, _caller: &Caller, id: i64) -> Result<LeaseKeepAliveResponse, EtcdError> {
        self.refuse_if_learner()?;
        let peers = &self.node.peers;
        let remote = |url: String| async move { peers.keep_alive(&url, id).await };
        self.here_or_on_leader(remote, || self.keep_alive_here(id), |renewed| &mut renewed.header).await
    }

    /// A keep-alive stream: one renewal per lease id in `ids`, answered in order; the stream ends
    /// after the first failure (or when `ids` ends). Refused at once on a learner.
    pub fn lease_keep_alive_stream(
        &self,
        caller: &Caller,
        mut ids: impl Stream<Item = i64> + Unpin + Send + 'static,
    ) -> Result<mpsc::Receiver<Result<LeaseKeepAliveResponse, EtcdError>>, EtcdError> {
        self.refuse_if_learner()?;
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let (service, caller) = (self.clone(), caller.clone());
        tokio::spawn(async move {
            while let Some(id) = ids.next().await {
                let renewed = service.lease_keep_alive(&caller, id).await;
                let failed = renewed.is_err();
                if tx.send(renewed).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// Renew a lease if this member leads (the peer service's answer to a follower).
    pub async fn keep_alive_as_leader(&self, id: i64) -> Option<LeaseKeepAliveResponse> {
        self.node.leader_term()?;
        crate::metrics::get().leases_renewed.inc();
        self.keep_alive_here(id).await
    }

    /// Renew a lease on this member's deadlines; `None` if it does not lead by the time it looks,
    /// or cannot confirm that it still does (an answer then would claim a renewal the leader
    /// never made).
    async fn keep_alive_here(&self, id: i64) -> Option<LeaseKeepAliveResponse> {
        if !self.node.confirm_leadership().await {
            return None;
        }
        let node = self.node.clone();
        self.node
            .store
            .read_async(move |view| {
                let leases = view.leases();
                let alive = node.lessor.refresh(node.leader_term(), leases, id)?;
                let ttl = match leases.get(id) {
                    Some(lease) if alive => lease.ttl,
                    _ => 0,
                };
                Some(LeaseKeepAliveResponse { header: node.header(view.current_rev()), id, ttl })
            })
            .await
    }

    /// How long a lease has left, by the leader's deadlines.
    pub async fn lease_time_to_live(&self, _caller: &Caller, req: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        self.refuse_if_learner()?;
        let peers = &self.node.peers;
        let remote = |url: String| async move { peers.time_to_live(&url, req).await };
        self.here_or_on_leader(remote, || async move { Some(self.time_to_live_here(req).await) }, |resp| &mut resp.header).await
    }

    /// A lease's time to live if this member leads (the peer service's answer to a follower).
    pub async fn time_to_live_as_leader(&self, req: LeaseTimeToLiveRequest) -> Option<LeaseTimeToLiveResponse> {
        self.node.leader_term()?;
        Some(self.time_to_live_here(req).await)
    }

    /// How long a lease has left by this member's deadlines, with its granted TTL (and keys if
    /// asked). etcd 3.4 answers an unknown lease with TTL -1, not an error.
    async fn time_to_live_here(&self, req: LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse {
        let node = self.node.clone();
        self.node
            .store
            .read_async(move |view| {
                let header = node.header(view.current_rev());
                match view.leases().get(req.id) {
                    Some(lease) => LeaseTimeToLiveResponse {
                        header,
                        id: req.id,
                        ttl: node.lessor.remaining(req.id, lease.ttl),
                        granted_ttl: lease.ttl,
                        keys: if req.keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
                    },
                    None => LeaseTimeToLiveResponse { header, id: req.id, ttl: -1, ..Default::default() },
                }
            })
            .await
    }

    /// Every lease this member has applied, soonest-expiring first (etcd 3.4 lists them from the
    /// local lessor on every member).
    pub async fn lease_leases(&self, _caller: &Caller, _req: LeaseLeasesRequest) -> Result<LeaseLeasesResponse, EtcdError> {
        self.refuse_if_learner()?;
        let node = self.node.clone();
        let (revision, mut leases) = self
            .node
            .store
            .read_async(move |view| {
                let leases: Vec<_> = view.leases().iter().map(|(id, _)| (node.lessor.deadline(id), id)).collect();
                (view.current_rev(), leases)
            })
            .await;
        leases.sort();
        Ok(LeaseLeasesResponse {
            header: self.node.header(revision),
            leases: leases.into_iter().map(|(_, id)| LeaseStatus { id }).collect(),
        })
    }

    /// Answer with `local` if this member leads, else with the leader's answer to `remote`. The
    /// header is always this member's, at its own revision: etcd fills it where the client asked.
    /// `local` answers `None` when this member found it no longer leads: then the leader is
    /// looked for again, for as long as a request waits for one.
    async fn here_or_on_leader<T, Fut, LocalFut>(
        &self,
        remote: impl Fn(String) -> Fut,
        local: impl Fn() -> LocalFut,
        header: impl FnOnce(&mut T) -> &mut Option<ResponseHeader>,
    ) -> Result<T, EtcdError>
    where
        Fut: Future<Output = Result<T, tonic::Status>>,
        LocalFut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + self.node.leader_wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match on_leader(&self.node.raft, remaining, &remote).await? {
                Answer::Local => match local().await {
                    Some(answer) => return Ok(answer),
                    None if Instant::now() < deadline => tokio::time::sleep(LEADERSHIP_MOVED_PAUSE).await,
                    None => return Err(EtcdError::NoLeader),
                },
                Answer::Remote(mut answer) => {
                    let revision = self.node.store.current_rev_async().await;
                    *header(&mut answer) = self.node.header(revision);
                    return Ok(answer);
                }
            }
        }
    }
}
