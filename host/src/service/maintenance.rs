//! Maintenance: what `etcdctl endpoint status/health/hashkv`, `defrag`, `alarm` and
//! `snapshot save` need.

use std::io::{Read, Seek, Write};
use std::sync::Arc;

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::etcdserverpb::alarm_request::AlarmAction;
use conclave_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotResponse, StatusRequest, StatusResponse,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Code;

use super::{Caller, Service};
use crate::error::EtcdError;
use crate::node::Node;
use crate::raft::{check_quorum, move_leader, recognised_leader, store_hash};

/// The etcd API version Conclave reports and implements.
pub const VERSION: &str = "3.5.0";

/// The cluster version etcd reports beside its own: the major.minor of the API.
pub fn cluster_version() -> &'static str {
    VERSION.rsplit_once('.').map_or(VERSION, |(minor, _)| minor)
}

/// Snapshot stream chunk size, as etcd's 32 KiB.
const CHUNK: usize = 32 * 1024;
/// etcdctl checks that a snapshot (a bolt file for etcd) is a whole number of 512-byte blocks.
const BLOCK: u64 = 512;
/// Snapshot chunks that may wait for the caller before the copy waits too.
const SNAPSHOT_QUEUE: usize = 4;

impl Service {
    pub async fn alarm(&self, caller: &Caller, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        self.refuse_if_learner()?;
        let alarms = if req.action == AlarmAction::Get as i32 {
            // etcd's alarm requests all go through raft: a list reflects every alarm raised before.
            self.node.linearize().await?;
            // Every active alarm, or those of one type.
            let wanted = |a: &AlarmMember| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm;
            self.node.alarms.list().into_iter().filter(wanted).collect()
        } else {
            caller.check_admin()?;
            self.write(Req::Alarm(req), |r| if let Resp::Alarm(r) = r { Some(r) } else { None }).await?.alarms
        };
        // etcd answers alarm requests with no header (its applier builds the response bare).
        Ok(AlarmResponse { header: None, alarms })
    }

    /// Served by learners too, as etcd does.
    pub async fn status(&self, _caller: &Caller, _req: StatusRequest) -> Result<StatusResponse, EtcdError> {
        let metrics = self.node.raft.metrics().borrow().clone();
        // Measured now: the cached size is refreshed only every second, and a member that just
        // started would show 0 B (etcd's database is never empty).
        let db_size = self.node.db.size_on_disk().unwrap_or_else(|_| self.node.db_size()) as i64;
        // None during an election, and none on a leader cut off from its quorum, as etcd reports.
        let leader = recognised_leader(&metrics, check_quorum(&self.node.raft)).unwrap_or(0);
        let applied = self.node.applied_index();
        // etcd lists the active alarms and a missing leader as errors.
        let mut errors: Vec<String> = self.node.alarms.list().iter().map(crate::alarm::describe).collect();
        if leader == 0 {
            errors.push(EtcdError::NoLeader.to_string());
        }
        Ok(StatusResponse {
            header: self.node.header(self.node.store.current_rev_async().await),
            version: VERSION.to_string(),
            db_size,
            leader,
            // etcd's raft index is the committed index (an installed snapshot may be ahead of it).
            raft_index: self.node.committed.get().max(applied),
            raft_term: metrics.current_term,
            raft_applied_index: applied,
            db_size_in_use: db_size,
            is_learner: self.node.is_learner(),
            errors,
            ..Default::default()
        })
    }

    pub async fn defragment(&self, caller: &Caller, _req: DefragmentRequest) -> Result<DefragmentResponse, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        // sled reclaims space itself; a defrag request just makes everything durable.
        self.node.db.flush_async().await.map_err(|e| EtcdError::internal(e.to_string()))?;
        // etcd 3.4 answers a defragmentation with no header.
        Ok(DefragmentResponse { header: None })
    }

    pub async fn hash(&self, caller: &Caller, _req: HashRequest) -> Result<HashResponse, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        let store = self.node.store.clone();
        // A scan of the whole store: off the async workers.
        let (hash, revision) = tokio::task::spawn_blocking(move || store_hash(&store))
            .await
            .map_err(|e| EtcdError::internal(format!("hashing the store: {e}")))?
            .map_err(|e| EtcdError::internal(format!("hashing the store: {e}")))?;
        Ok(HashResponse { header: self.node.header(revision), hash })
    }

    pub async fn hash_kv(&self, caller: &Caller, req: HashKvRequest) -> Result<HashKvResponse, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        let store = self.node.store.clone();
        // A scan of the whole history: off the async workers.
        let hashed = tokio::task::spawn_blocking(move || store.hash_kv(req.revision))
            .await
            .map_err(|e| EtcdError::internal(format!("hashing the store: {e}")))??;
        Ok(HashKvResponse {
            header: self.node.header(hashed.current),
            hash: hashed.hash,
            compact_revision: hashed.compacted,
            hash_revision: hashed.upto,
        })
    }

    /// A copy of the whole store as etcd streams one: chunks, then the SHA-256 of their content.
    pub fn snapshot(&self, caller: &Caller) -> Result<mpsc::Receiver<Result<SnapshotResponse, EtcdError>>, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE);
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = stream_snapshot(node, tx.clone()) {
                let _ = tx.blocking_send(Err(EtcdError::internal(format!("snapshot: {e}"))));
            }
        });
        Ok(rx)
    }

    pub async fn move_leader(&self, caller: &Caller, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        move_leader(&self.node.raft, &self.node.peers, &self.node.handover, req.target_id).await?;
        // etcd 3.4 answers a move with no header.
        Ok(MoveLeaderResponse { header: None })
    }

    pub async fn downgrade(&self, caller: &Caller, _req: DowngradeRequest) -> Result<DowngradeResponse, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        Err(EtcdError::other(Code::Unimplemented, "Downgrade is not supported by Conclave"))
    }
}

/// Copy the store to an unnamed temporary file, then stream it in chunks followed by the SHA-256
/// of the content, as etcd does, so a truncated download can be detected.
fn stream_snapshot(node: Arc<Node>, tx: mpsc::Sender<Result<SnapshotResponse, EtcdError>>) -> std::io::Result<()> {
    let mut file = tempfile::tempfile_in(node.config.data_dir())?;
    node.store.export(&mut std::io::BufWriter::new(&mut file), &[])?;
    let exported = file.stream_position()?;
    let total = exported.div_ceil(BLOCK) * BLOCK;
    file.write_all(&vec![0u8; (total - exported) as usize])?;
    file.rewind()?;
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sent += n as u64;
        let chunk = SnapshotResponse {
            header: node.header(0),
            remaining_bytes: total - sent + 32,
            blob: buf[..n].to_vec(),
            version: VERSION.to_string(),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            return Ok(());
        }
    }
    let trailer = SnapshotResponse {
        header: node.header(0),
        remaining_bytes: 0,
        blob: hasher.finalize().to_vec(),
        version: VERSION.to_string(),
    };
    let _ = tx.blocking_send(Ok(trailer));
    Ok(())
}
