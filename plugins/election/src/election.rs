//! etcd's `concurrency.Election`, as etcd's v3election server runs it for each request: a
//! candidate's key is `NAME/<lease hex>` on its lease, the oldest key under `NAME/` leads, and a
//! candidate waits for the deletion of the key just older than its own only.

use std::time::Duration;

use concurrency::{Deadline, enqueue, first, wait_turn};
use conclave_guest::kv::Header;
use conclave_guest::node::log;
use conclave_guest::watch::{EventKind, Watcher};
use conclave_guest::{Compare, Error, KeyValue, Op, Result, Txn, lease};

/// etcd's words, which its clients match on.
pub const NOT_LEADER: &str = "election: not leader";
pub const NO_LEADER: &str = "election: no leader";
/// Our key was gone (its lease ended) when the wait for leadership was over.
pub const SESSION_EXPIRED: &str = "election: session expired";

/// The TTL of the lease etcd's server grants a campaign that names none (its session default).
const SESSION_TTL: i64 = 60;
/// Longest single watch wait while observing; an observer follows until its caller leaves.
const OBSERVE_SLICE: Duration = Duration::from_secs(30);

/// A candidate's key, as v3election's LeaderKey carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct Leader {
    pub name: Vec<u8>,
    pub key: Vec<u8>,
    /// The key's create revision: its place in the election.
    pub rev: i64,
    pub lease: i64,
}

fn prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Stand for `name` with `value` on `lease` and wait until elected (or `deadline`). Lease 0 gets
/// a fresh lease of etcd's session TTL, as etcd's server grants one. A lease that already stands
/// keeps its key and place, and proclaims `value` if it differs. When the wait fails (the caller
/// went away, the deadline passed, our lease ended) our key is removed before failing. The
/// header is the one of the txn that entered the election, as etcd answers.
pub fn campaign(name: &[u8], lease: i64, value: &[u8], deadline: Deadline) -> Result<(Leader, Header)> {
    let lease = if lease == 0 { lease::grant(SESSION_TTL)?.id } else { lease };
    let prefix = prefix(name);
    let queued = enqueue(&prefix, lease, value)?;
    let leader = Leader { name: name.to_vec(), key: queued.key.clone(), rev: queued.revision, lease };
    if let Some(existing) = &queued.existing
        && existing.value != value
        && let Err(e) = proclaim(&leader, value)
    {
        withdraw(&leader);
        return Err(e);
    }
    let elected = wait_turn(&prefix, &queued, deadline)
        .and_then(|turn| turn.map(drop).ok_or_else(|| Error::failed_precondition(SESSION_EXPIRED)));
    match elected {
        Ok(()) => Ok((leader, queued.header)),
        Err(e) => {
            withdraw(&leader);
            Err(e)
        }
    }
}

/// Set the leader's value, if `leader` still holds its key (same create revision).
pub fn proclaim(leader: &Leader, value: &[u8]) -> Result<Header> {
    let response = Txn::new()
        .when([Compare::create_revision(leader.key.clone()).eq(leader.rev)])
        .and_then([Op::put_with_lease(leader.key.clone(), value.to_vec(), leader.lease)])
        .commit()?;
    if !response.succeeded {
        return Err(Error::failed_precondition(NOT_LEADER));
    }
    Ok(response.header)
}

/// Delete the candidate's key if it is still this one (same create revision); not standing is
/// no error, as with etcd.
pub fn resign(leader: &Leader) -> Result<Header> {
    let response = Txn::new()
        .when([Compare::create_revision(leader.key.clone()).eq(leader.rev)])
        .and_then([Op::delete(leader.key.clone())])
        .commit()?;
    Ok(response.header)
}

/// Resign after a failed campaign; the campaign's error is what the caller needs to hear.
fn withdraw(leader: &Leader) {
    if let Err(e) = resign(leader) {
        log::warn(&format!("cannot remove {}: {e}", String::from_utf8_lossy(&leader.key)));
    }
}

/// The leader's key and value: the oldest key under `name`.
pub fn leader(name: &[u8]) -> Result<(KeyValue, Header)> {
    match first(&prefix(name))? {
        (Some(kv), header) => Ok((kv, header)),
        (None, _) => Err(Error::not_found(NO_LEADER)),
    }
}

/// Pass `send` the current leader (once there is one), then each value it proclaims, then each
/// next leader, in order, until `send` or a wait fails (the caller leaving ends the waits), as
/// etcd's Observe does.
pub fn observe(name: &[u8], mut send: impl FnMut(Header, KeyValue) -> Result<()>) -> Result<()> {
    let prefix = prefix(name);
    loop {
        let (header, kv) = match first(&prefix)? {
            (Some(kv), header) => (header, kv),
            (None, header) => first_put(&prefix, header.revision)?,
        };
        let mut follow = Watcher::key(kv.key.clone()).from_revision(header.revision + 1);
        send(header, kv)?;
        'leading: loop {
            let answer = follow.next_response(OBSERVE_SLICE)?;
            for event in answer.events {
                if event.kind == EventKind::Delete {
                    break 'leading;
                }
                send(answer.header.clone(), event.kv)?;
            }
        }
    }
}

/// The first key put under `prefix` at or after `revision`, with the header at its revision.
fn first_put(prefix: &[u8], revision: i64) -> Result<(Header, KeyValue)> {
    let mut puts = Watcher::prefix(prefix).from_revision(revision);
    loop {
        let answer = puts.next_response(OBSERVE_SLICE)?;
        if let Some(event) = answer.events.into_iter().find(|e| e.kind == EventKind::Put) {
            let header = Header { revision: event.kv.mod_revision, ..answer.header };
            return Ok((header, event.kv));
        }
    }
}
