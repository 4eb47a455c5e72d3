//! etcd's alarms. A member whose database outgrows `--quota-backend-bytes` raises NOSPACE
//! through the log, so every member applies it; while it is active the apply refuses requests
//! that add data (puts, txns that put, lease grants), as etcd's capped applier does, and lets
//! deletes, compactions and revokes through so space can be reclaimed. Operators list and disarm
//! alarms with `etcdctl alarm`. The active alarms live in the store's metadata (snapshots carry
//! them) with a copy in memory for the apply and for status.

use std::sync::RwLock;

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::etcdserverpb::alarm_request::AlarmAction;
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType, TxnRequest};
use prost::Message;

use crate::mvcc::{Store, StoreError};

/// Store metadata holding the active alarms (an encoded `AlarmResponse`).
pub const ALARMS_META: &[u8] = b"m/alarms";

/// The active alarms, as last applied.
#[derive(Default)]
pub struct Alarms {
    active: RwLock<Vec<AlarmMember>>,
}

impl Alarms {
    /// The alarms recorded in `store`.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let alarms = Alarms::default();
        alarms.reload(store)?;
        Ok(alarms)
    }

    /// Take the alarms from `store` again (after a snapshot replaced it).
    pub fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let active = match store.meta(ALARMS_META)? {
            Some(bytes) => AlarmResponse::decode(bytes.as_ref())
                .map_err(|e| StoreError::Storage(format!("corrupt alarms: {e}")))?
                .alarms,
            None => Vec::new(),
        };
        self.replace(active);
        Ok(())
    }

    pub fn list(&self) -> Vec<AlarmMember> {
        self.active.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, active: Vec<AlarmMember>) {
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = active;
    }

    /// Whether NOSPACE is active.
    pub fn no_space(&self) -> bool {
        no_space(&self.active.read().unwrap_or_else(|e| e.into_inner()))
    }
}

pub fn no_space(active: &[AlarmMember]) -> bool {
    active.iter().any(|a| a.alarm == AlarmType::Nospace as i32)
}

/// The metadata value recording `active`.
pub fn encode(active: &[AlarmMember]) -> Vec<u8> {
    AlarmResponse { header: None, alarms: active.to_vec() }.encode_to_vec()
}

/// Apply an ACTIVATE or DEACTIVATE to `active`: the response lists the alarm raised (or already
/// active) or the one cleared, as etcd's does; NONE and unknown alarms change nothing.
pub fn apply(active: &mut Vec<AlarmMember>, request: &AlarmRequest) -> AlarmResponse {
    let member = AlarmMember { member_id: request.member_id, alarm: request.alarm };
    let mut changed = Vec::new();
    let known = matches!(AlarmType::try_from(request.alarm), Ok(AlarmType::Nospace | AlarmType::Corrupt));
    match AlarmAction::try_from(request.action) {
        Ok(AlarmAction::Activate) if known => {
            if !active.contains(&member) {
                active.push(member);
            }
            changed.push(member);
        }
        Ok(AlarmAction::Deactivate) => {
            if let Some(at) = active.iter().position(|a| *a == member) {
                changed.push(active.remove(at));
            }
        }
        _ => {}
    }
    AlarmResponse { header: None, alarms: changed }
}

/// Whether applying `request` would add data, which NOSPACE forbids.
pub fn adds_data(request: &Req) -> bool {
    match request {
        Req::Put(_) | Req::LeaseGrant(_) | Req::PluginDeploy(_) => true,
        Req::Txn(txn) => txn_puts(txn),
        _ => false,
    }
}

fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(Op::RequestPut(_)) => true,
        Some(Op::RequestTxn(nested)) => txn_puts(nested),
        _ => false,
    })
}

/// How etcd prints an alarm in status errors and `etcdctl alarm list` (protobuf text format).
pub fn describe(alarm: &AlarmMember) -> String {
    let name = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |t| t.as_str_name());
    format!("memberID:{} alarm:{name} ", alarm.member_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: AlarmAction, member_id: u64) -> AlarmRequest {
        AlarmRequest { action: action as i32, member_id, alarm: AlarmType::Nospace as i32 }
    }

    #[test]
    fn activate_and_deactivate() {
        let mut active = Vec::new();
        assert_eq!(apply(&mut active, &request(AlarmAction::Activate, 7)).alarms.len(), 1);
        apply(&mut active, &request(AlarmAction::Activate, 7));
        assert_eq!(active.len(), 1, "raising an active alarm again changes nothing");
        assert!(no_space(&active));
        assert!(apply(&mut active, &request(AlarmAction::Deactivate, 8)).alarms.is_empty());
        assert_eq!(apply(&mut active, &request(AlarmAction::Deactivate, 7)).alarms.len(), 1);
        assert!(active.is_empty());
        let none = AlarmRequest { action: AlarmAction::Activate as i32, member_id: 7, alarm: AlarmType::None as i32 };
        assert!(apply(&mut active, &none).alarms.is_empty());
    }

    #[test]
    fn described_as_etcd_prints_it() {
        let alarm = AlarmMember { member_id: 10276657743932975437, alarm: AlarmType::Nospace as i32 };
        assert_eq!(describe(&alarm), "memberID:10276657743932975437 alarm:NOSPACE ");
    }
}
