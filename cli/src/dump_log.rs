//! `conclavectl dump-log --data-dir DIR`: the raft log of a stopped member, like etcd's
//! etcd-dump-logs. Reads `DIR/wal` and `DIR/snap/current.meta` with the host's own decoding.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use conclave_host::raft::{read_log, read_snapshot_meta, Membership, NodeId, TypeConfig};
use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::RaftRequest;
use conclave_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use conclave_proto::etcdserverpb::alarm_request::AlarmAction;
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::AlarmType;
use conclave_proto::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use openraft::{Entry, EntryPayload, LogId};

pub fn run(data_dir: &Path, out: &mut impl Write) -> Result<()> {
    let db_path = data_dir.join("db");
    if !db_path.is_dir() {
        bail!("data dir {} has no member database ({} is missing)", data_dir.display(), db_path.display());
    }
    // Opening the database takes its lock: a running member, still writing its log, is refused.
    let _db = sled::Config::new().path(&db_path).open().map_err(|e| {
        if e.to_string().contains("could not acquire lock") {
            anyhow::anyhow!("data dir {} is in use (is conclave running?)", data_dir.display())
        } else {
            anyhow::Error::new(e).context(format!("opening {}", db_path.display()))
        }
    })?;
    let snapshot = read_snapshot_meta(&data_dir.join("snap")).context("reading the snapshot metadata")?;
    let log = read_log(&data_dir.join("wal")).context("reading the raft log")?;

    match snapshot {
        Some(meta) => {
            writeln!(out, "Snapshot:")?;
            writeln!(out, "term={} index={} id={}", term(&meta.last_log_id), index(&meta.last_log_id), meta.snapshot_id)?;
            writeln!(out, "membership: {}", membership(meta.last_membership.membership()))?;
        }
        None => writeln!(out, "Snapshot:\nempty")?,
    }
    writeln!(
        out,
        "Start dumping log entries from snapshot (last purged: term={} index={}; committed: term={} index={}).",
        term(&log.last_purged),
        index(&log.last_purged),
        term(&log.committed),
        index(&log.committed),
    )?;
    if let Some(vote) = &log.vote {
        writeln!(out, "vote: term={} node={:x} committed={}", vote.leader_id.term, vote.leader_id.node_id, vote.committed)?;
    }
    writeln!(out, "WAL entries: {}", log.entries.len())?;
    writeln!(out, "{:>6}\t{:>8}\t{:<11}\tdata", "term", "index", "type")?;
    for entry in &log.entries {
        writeln!(out, "{}", entry_line(entry))?;
    }
    Ok(())
}

/// One tab-separated line: term, index, type, decoded data.
pub fn entry_line(entry: &Entry<TypeConfig>) -> String {
    let (kind, data) = match &entry.payload {
        EntryPayload::Blank => ("blank", String::new()),
        EntryPayload::Normal(batch) => ("normal", batch.0.requests.iter().map(request).collect::<Vec<_>>().join("; ")),
        EntryPayload::Membership(m) => ("conf change", membership(m)),
    };
    format!("{:>6}\t{:>8}\t{:<11}\t{}", entry.log_id.leader_id.term, entry.log_id.index, kind, data)
}

fn term(id: &Option<LogId<NodeId>>) -> u64 {
    id.map_or(0, |id| id.leader_id.term)
}

fn index(id: &Option<LogId<NodeId>>) -> u64 {
    id.map_or(0, |id| id.index)
}

fn membership(m: &Membership) -> String {
    let configs: Vec<String> = m
        .get_joint_config()
        .iter()
        .map(|voters| voters.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>().join(","))
        .collect();
    let nodes: Vec<String> = m.nodes().map(|(id, node)| format!("{id:x}={}:{}", node.name, node.peer_urls.join(","))).collect();
    let learners: Vec<String> = m.learner_ids().map(|id| format!("{id:x}")).collect();
    format!("voters=[{}] learners=[{}] nodes=[{}]", configs.join("] ["), learners.join(","), nodes.join(","))
}

fn bytes(b: &[u8]) -> String {
    format!("\"{}\"", b.escape_ascii())
}

fn request(r: &RaftRequest) -> String {
    match &r.request {
        Some(Req::Put(p)) => put(p),
        Some(Req::DeleteRange(d)) => delete_range(d),
        Some(Req::Txn(t)) => txn(t),
        Some(Req::Compaction(c)) => format!("compaction revision={} physical={}", c.revision, c.physical),
        Some(Req::LeaseGrant(g)) => format!("lease_grant id={} ttl={}", g.id, g.ttl),
        Some(Req::LeaseRevoke(r)) => format!("lease_revoke id={}", r.id),
        Some(Req::Alarm(a)) => {
            let action = AlarmAction::try_from(a.action).map_or("UNKNOWN", |a| a.as_str_name());
            let alarm = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |a| a.as_str_name());
            format!("alarm action={action} member={:x} alarm={alarm}", a.member_id)
        }
        // The wasm itself is only counted: a log dump is for reading.
        Some(Req::PluginDeploy(p)) => {
            format!("plugin_deploy name={} wasm={} bytes manifest={}", p.name, p.wasm.len(), bytes(p.manifest.as_bytes()))
        }
        Some(Req::PluginRemove(p)) => format!("plugin_remove name={}", p.name),
        None => "empty request".to_string(),
    }
}

fn put(p: &PutRequest) -> String {
    let mut s = format!("put key={} value={} lease={}", bytes(&p.key), bytes(&p.value), p.lease);
    for (flag, on) in [("prev_kv", p.prev_kv), ("ignore_value", p.ignore_value), ("ignore_lease", p.ignore_lease)] {
        if on {
            s.push(' ');
            s.push_str(flag);
        }
    }
    s
}

fn delete_range(d: &DeleteRangeRequest) -> String {
    format!("delete_range key={} range_end={}{}", bytes(&d.key), bytes(&d.range_end), if d.prev_kv { " prev_kv" } else { "" })
}

fn range(r: &RangeRequest) -> String {
    format!("range key={} range_end={} limit={} revision={}", bytes(&r.key), bytes(&r.range_end), r.limit, r.revision)
}

fn txn(t: &TxnRequest) -> String {
    let ops = |ops: &[RequestOp]| ops.iter().map(op).collect::<Vec<_>>().join(", ");
    format!(
        "txn compare=[{}] success=[{}] failure=[{}]",
        t.compare.iter().map(compare).collect::<Vec<_>>().join(", "),
        ops(&t.success),
        ops(&t.failure)
    )
}

fn op(o: &RequestOp) -> String {
    match &o.request {
        Some(Op::RequestRange(r)) => range(r),
        Some(Op::RequestPut(p)) => put(p),
        Some(Op::RequestDeleteRange(d)) => delete_range(d),
        Some(Op::RequestTxn(t)) => txn(t),
        None => "empty op".to_string(),
    }
}

fn compare(c: &Compare) -> String {
    let target = CompareTarget::try_from(c.target).map_or_else(|_| c.target.to_string(), |t| t.as_str_name().to_lowercase());
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => "=",
        Ok(CompareResult::Greater) => ">",
        Ok(CompareResult::Less) => "<",
        Ok(CompareResult::NotEqual) => "!=",
        Err(_) => "?",
    };
    let value = match &c.target_union {
        Some(TargetUnion::Version(v) | TargetUnion::CreateRevision(v) | TargetUnion::ModRevision(v) | TargetUnion::Lease(v)) => {
            v.to_string()
        }
        Some(TargetUnion::Value(v)) => bytes(v),
        None => "none".to_string(),
    };
    let range_end = if c.range_end.is_empty() { String::new() } else { format!(" range_end={}", bytes(&c.range_end)) };
    format!("{target}(key={}{range_end}) {result} {value}", bytes(&c.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::conclave::plugin::{PluginRemove, StoredPlugin};

    #[test]
    fn plugin_requests_show_name_size_and_manifest() {
        let deploy = StoredPlugin { name: "counter".into(), wasm: vec![0; 42], manifest: r#"{"keys":[]}"#.into() };
        let deploy = RaftRequest { id: 0, request: Some(Req::PluginDeploy(deploy)) };
        assert_eq!(request(&deploy), r#"plugin_deploy name=counter wasm=42 bytes manifest="{\"keys\":[]}""#);
        let remove = RaftRequest { id: 0, request: Some(Req::PluginRemove(PluginRemove { name: "counter".into() })) };
        assert_eq!(request(&remove), "plugin_remove name=counter");
    }
}
