//! Applying committed client requests, in log order, on every member: each request's effect on
//! the MVCC store (puts, deletes, txns, compactions, lease grants and revokes), etcd's alarm
//! gating (while NOSPACE is active, requests that add data are refused, as etcd's capped applier
//! does), and, once the batch commits, its side effects: watch events to the hub, alarm changes,
//! on the leader the TTL of each lease granted, and a signal to the plugin registry when plugins
//! were deployed or removed.
//!
//! The raft state machine ([`crate::raft::StateMachine`]) hands every log entry's requests to an
//! [`Applier`] and commits it together with raft's own applied state.

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::conclave::raft::{RaftRequest, RaftResponse};
use conclave_proto::etcdserverpb::{AlarmMember, ResponseHeader};
use prost::Message;

use crate::alarm::{self, Alarms};
use crate::error::EtcdError;
use crate::lease::{self, Lessor};
use crate::mvcc::{self, ApplyBatch, Store, StoreError, View, Writer};
use crate::watch::Hub;

/// What applying touches besides the store: shared with the rest of the member.
pub struct Effects<'a> {
    pub hub: &'a Hub,
    pub alarms: &'a Alarms,
    pub lessor: &'a Lessor,
    /// Counts the applied batches that deployed or removed plugins: the registry follows it.
    pub plugins: &'a tokio::sync::watch::Sender<u64>,
}

/// One batch of requests being applied: nothing is visible or durable until [`Applier::commit`].
pub struct Applier<'a> {
    batch: ApplyBatch<'a>,
    /// The active alarms as the requests applied so far left them.
    alarms: Vec<AlarmMember>,
    alarms_before: Vec<AlarmMember>,
    /// Leases granted by this batch: (id, TTL).
    granted: Vec<(i64, i64)>,
    plugins_changed: bool,
}

impl<'a> Applier<'a> {
    /// Start applying to `store` with the alarms active now.
    pub fn begin(store: &'a Store, alarms: &Alarms) -> Self {
        let alarms_before = alarms.list();
        Applier { batch: store.begin(), alarms: alarms_before.clone(), alarms_before, granted: Vec::new(), plugins_changed: false }
    }

    /// Apply one client request. A refused request (an etcd error) still consumes its entry and
    /// answers with the error's code; only a storage failure is an `Err`, and stops the state
    /// machine.
    pub fn execute(&mut self, request: &RaftRequest) -> Result<RaftResponse, StoreError> {
        match self.outcome(request) {
            Ok(response) => {
                if let Resp::LeaseGrant(grant) = &response {
                    self.granted.push((grant.id, grant.ttl));
                }
                Ok(RaftResponse { response: Some(response), error_code: 0 })
            }
            Err(StoreError::Etcd(e)) => Ok(RaftResponse { response: None, error_code: e.wire_code() }),
            Err(storage) => Err(storage),
        }
    }

    fn outcome(&mut self, request: &RaftRequest) -> Result<Resp, StoreError> {
        let Some(request) = &request.request else { return Err(EtcdError::NotCapable.into()) };
        if alarm::no_space(&self.alarms) && alarm::adds_data(request) {
            return Err(EtcdError::NoSpace.into());
        }
        let mut writer = Writer::new(&mut self.batch);
        match request {
            Req::Alarm(change) => Ok(Resp::Alarm(alarm::apply(&mut self.alarms, change))),
            Req::Put(put) => writer.put(put).map(Resp::Put),
            Req::DeleteRange(del) => writer.delete_range(del).map(Resp::DeleteRange),
            Req::Txn(txn) => mvcc::txn(&mut writer, txn).map(Resp::Txn),
            Req::Compaction(compact) => writer.compact(compact).map(Resp::Compaction),
            Req::LeaseGrant(grant) => lease::apply::grant(&mut writer, grant).map(Resp::LeaseGrant),
            Req::LeaseRevoke(revoke) => lease::apply::revoke(&mut writer, revoke).map(Resp::LeaseRevoke),
            Req::PluginDeploy(plugin) => {
                self.plugins_changed = true;
                self.batch.put_plugin(&plugin.name, plugin.encode_to_vec());
                Ok(Resp::Plugin(self.header()))
            }
            Req::PluginRemove(remove) => {
                self.plugins_changed = true;
                self.batch.remove_plugin(&remove.name);
                Ok(Resp::Plugin(self.header()))
            }
        }
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader { revision: self.batch.current_rev(), ..Default::default() }
    }

    /// Commit the batch with the caller's metadata (raft's applied state) in one atomic write,
    /// then publish its events and alarm changes and start the TTLs of the leases it granted.
    pub fn commit(self, mut meta: Vec<(&[u8], Vec<u8>)>, effects: Effects<'_>) -> Result<(), StoreError> {
        let alarms_changed = self.alarms != self.alarms_before;
        if alarms_changed {
            meta.push((alarm::ALARMS_META, alarm::encode(&self.alarms)));
        }
        self.batch.commit(meta, |events| effects.hub.publish(events))?;
        if alarms_changed {
            effects.alarms.replace(self.alarms);
        }
        for (id, ttl) in self.granted {
            effects.lessor.granted(id, ttl);
        }
        if self.plugins_changed {
            effects.plugins.send_modify(|generation| *generation += 1);
        }
        Ok(())
    }
}
