//! Checks a recorded [`History`] against etcd's guarantees.
//!
//! etcd orders every write by its revision, one revision per write, with no gaps; that order is
//! the linearization to check. The committed log (what a watcher from revision 1 received) says
//! what each revision wrote, and each operation gets its place in it:
//! - a write at its revision; a write with no answer at the revision its value shows up at,
//!   or nowhere if it never does;
//! - a read (a get, a delete of an absent key, a compare-and-put whose compare failed) just
//!   after its header's revision.
//!
//! Then the history is linearizable when each operation's result is what the log holds at its
//! place (the value read, the compare's outcome, the key written), and the places respect real
//! time: an operation answered before another was invoked has the earlier place. Serializable
//! gets may be stale, so they are checked against the log at their revision only.
//!
//! Leases: a lease's key outlives the lease's grant and every keepalive (no delete at or before a
//! revision the lease was answered alive at, no read of it absent before a TTL it was given ran
//! out); a revoke deletes it at the revoke's revision; nothing else deletes it.
//!
//! Locks and elections: the key a grant was answered with was, at the revision of the answer,
//! the oldest key under the lock's (the election's) name — its fencing revision came first, so
//! no two owners overlap and an election has one leader per term.
//!
//! Watches: what each watcher received is the log from its start revision, in order, each event
//! once, nothing missing — but for the revisions it was told were compacted (each time told a
//! revision the compactor did compact to, above the one it asked for), and a delete at the
//! compacted revision itself (etcd 3.4 removes that tombstone with the compaction).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::history::{Event, History, LeaseRecord, Nanos, Operation, Outcome, Ownership, Request, Version, WatchRecord};
use super::recipes::is_recipe_key;

/// A broken guarantee, with the smallest piece of the history that shows it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
    pub evidence: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.rule, self.detail)?;
        for line in &self.evidence {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

fn violation(rule: &'static str, detail: String, evidence: Vec<String>) -> Violation {
    Violation { rule, detail, evidence }
}

/// Every violation in `history` (empty when it holds).
pub fn check(history: &History) -> Vec<Violation> {
    let (log, mut found) = Log::new(&history.log);
    found.extend(check_operations(&log, &history.operations, &history.leases));
    found.extend(check_leases(&log, &history.operations, &history.leases));
    found.extend(check_grants(&log, &history.grants));
    for record in &history.watches {
        found.extend(check_watch(&history.log, &history.compactions, record));
    }
    found
}

/// The committed log, by revision and by key.
struct Log {
    last_revision: i64,
    by_revision: BTreeMap<i64, Event>,
    /// Each key's writes in revision order: (revision, value or `None` for a delete).
    by_key: HashMap<String, Vec<(i64, Option<String>)>>,
}

impl Log {
    /// The log, and what is wrong with it: revisions must follow each other from 2 (revision 1
    /// is the empty store), one event each (the workload writes one key per revision).
    fn new(events: &[Event]) -> (Log, Vec<Violation>) {
        let mut found = Vec::new();
        let mut log = Log { last_revision: 1, by_revision: BTreeMap::new(), by_key: HashMap::new() };
        for event in events {
            if event.revision != log.last_revision + 1 {
                found.push(violation(
                    "log",
                    format!("after revision {} the log goes on at {}", log.last_revision, event.revision),
                    vec![format!("{event:?}")],
                ));
            }
            log.last_revision = log.last_revision.max(event.revision);
            log.by_revision.insert(event.revision, event.clone());
            log.by_key.entry(event.key.clone()).or_default().push((event.revision, event.value.clone()));
        }
        (log, found)
    }

    /// `key` as of `revision`.
    fn state(&self, key: &str, revision: i64) -> Option<Version> {
        let writes = self.by_key.get(key)?;
        let at = writes.partition_point(|(r, _)| *r <= revision);
        let (mod_revision, value) = writes[..at].last()?;
        value.clone().map(|value| Version { value, mod_revision: *mod_revision })
    }
}

/// Where an operation sits in the revision order: writes at their revision, reads just after
/// theirs. Ordered so that "earlier in real time" must mean "not later here".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    revision: i64,
    /// 0 for a write, 1 for a read.
    after: u8,
}

fn write_at(revision: i64) -> Place {
    Place { revision, after: 0 }
}

fn read_at(revision: i64) -> Place {
    Place { revision, after: 1 }
}

fn check_operations(log: &Log, operations: &[Operation], leases: &[LeaseRecord]) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut claimed: HashMap<i64, usize> = HashMap::new();
    let mut placed: Vec<(usize, Place)> = Vec::new();
    let put_at: HashMap<&str, i64> = log
        .by_revision
        .values()
        .filter_map(|e| e.value.as_deref().map(|v| (v, e.revision)))
        .collect();
    for (i, op) in operations.iter().enumerate() {
        let evidence = |extra: Vec<String>| [vec![op.to_string()], extra].concat();
        let key = op.request.key();
        let logged = |revision: i64| log.by_revision.get(&revision).map_or("nothing".to_string(), |e| format!("{e:?}"));
        let place = match (&op.request, &op.outcome) {
            (Request::Put { value, .. } | Request::CompareAndPut { value, .. }, Outcome::Written { revision }) => {
                let event = log.by_revision.get(revision);
                if event.is_none_or(|e| e.key != key || e.value.as_deref() != Some(value)) {
                    found.push(violation("lost write", format!("acknowledged at revision {revision}, the log holds {}", logged(*revision)), evidence(vec![])));
                }
                Some(write_at(*revision))
            }
            (Request::Put { value, .. } | Request::CompareAndPut { value, .. }, Outcome::Unknown(_)) => put_at.get(value.as_str()).map(|r| write_at(*r)),
            (Request::Put { value, .. } | Request::CompareAndPut { value, .. }, Outcome::Failed(why)) => {
                if let Some(revision) = put_at.get(value.as_str()) {
                    found.push(violation("failed write applied", format!("refused ({why}) yet written at revision {revision}"), evidence(vec![])));
                }
                None
            }
            (Request::Delete { .. }, Outcome::Written { revision }) => {
                let event = log.by_revision.get(revision);
                if event.is_none_or(|e| e.key != key || e.value.is_some()) {
                    found.push(violation("lost write", format!("delete acknowledged at revision {revision}, the log holds {}", logged(*revision)), evidence(vec![])));
                }
                Some(write_at(*revision))
            }
            (Request::Delete { .. } | Request::Get { .. } | Request::CompareAndPut { .. }, Outcome::Read { revision, found: read }) => {
                let want = log.state(key, *revision);
                let read_matches = match &op.request {
                    // A delete that deleted nothing read the key as absent.
                    Request::Delete { .. } => want.is_none() && read.is_none(),
                    _ => want == *read,
                };
                if *revision > log.last_revision || !read_matches {
                    found.push(violation(
                        "wrong read",
                        format!("as of revision {revision} the log holds {want:?} (the log ends at {})", log.last_revision),
                        evidence(vec![]),
                    ));
                }
                if let Request::CompareAndPut { expect, .. } = op.request
                    && read.as_ref().map_or(0, |v| v.mod_revision) == expect
                    && read_matches
                {
                    found.push(violation("wrong compare", format!("the compare on mod revision {expect} held, yet it failed"), evidence(vec![])));
                }
                let serializable = matches!(op.request, Request::Get { serializable: true, .. });
                (!serializable).then_some(read_at(*revision))
            }
            _ => None,
        };
        if let (Request::CompareAndPut { expect, .. }, Some(Place { revision, after: 0 })) = (&op.request, place) {
            let before = log.state(key, revision - 1).map_or(0, |v| v.mod_revision);
            if before != *expect {
                found.push(violation("wrong compare", format!("written at {revision}, but the key's mod revision before was {before}"), evidence(vec![])));
            }
        }
        if let Some(place) = place {
            if place.after == 0
                && let Some(other) = claimed.insert(place.revision, i)
            {
                found.push(violation("write twice", format!("two writes at revision {}", place.revision), evidence(vec![operations[other].to_string()])));
            }
            placed.push((i, place));
        }
    }
    found.extend(unexplained_writes(log, operations, leases, &claimed));
    found.extend(real_time(operations, &placed));
    found
}

/// Log entries no operation explains: a put of a value nobody sent, or a delete of a key with
/// no delete in flight that could be it (a lease's key is deleted once, by its lease).
fn unexplained_writes(log: &Log, operations: &[Operation], leases: &[LeaseRecord], claimed: &HashMap<i64, usize>) -> Vec<Violation> {
    // Per key: deletes that could have happened unanswered, and the lease's delete of its key.
    let mut explainable: HashMap<&str, usize> = HashMap::new();
    for op in operations.iter().filter(|op| matches!(op.request, Request::Delete { .. }) && matches!(op.outcome, Outcome::Unknown(_))) {
        *explainable.entry(op.request.key()).or_default() += 1;
    }
    for lease in leases {
        *explainable.entry(&lease.key).or_default() += 1;
    }
    let mut deletes_explained: HashMap<&str, usize> = HashMap::new();
    let mut found = Vec::new();
    for event in log.by_revision.values().filter(|e| !claimed.contains_key(&e.revision) && !is_recipe_key(&e.key)) {
        let explained = match &event.value {
            Some(_) => false,
            None => {
                let used = deletes_explained.entry(&event.key).or_default();
                *used += 1;
                *used <= explainable.get(event.key.as_str()).copied().unwrap_or(0)
            }
        };
        if !explained {
            found.push(violation("invented write", "a write in the log that no client made".into(), vec![format!("{event:?}")]));
        }
    }
    found
}

/// Each lease's key against the log and the reads of it (see the module's comment).
fn check_leases(log: &Log, operations: &[Operation], leases: &[LeaseRecord]) -> Vec<Violation> {
    let mut reads: HashMap<&str, Vec<&Operation>> = leases.iter().map(|lease| (lease.key.as_str(), Vec::new())).collect();
    for op in operations.iter().filter(|op| matches!(op.request, Request::Get { serializable: false, .. })) {
        if let Some(of_lease) = reads.get_mut(op.request.key()) {
            of_lease.push(op);
        }
    }
    let mut found = Vec::new();
    for lease in leases {
        let Some(writes) = log.by_key.get(&lease.key) else { continue };
        let Some(&(put, _)) = writes.iter().find(|(_, value)| value.is_some()) else { continue };
        let deleted = writes.iter().find(|(revision, value)| *revision > put && value.is_none()).map(|(revision, _)| *revision);
        let shown = |extra: String| vec![format!("{lease:?}"), extra];
        for &(_, ttl, alive_at) in lease.alive.iter().filter(|(_, ttl, _)| *ttl > 0) {
            if deleted.is_some_and(|d| d <= alive_at) {
                let detail = format!("{} deleted at revision {}, yet its lease was answered alive (TTL {ttl}) at revision {alive_at}", lease.key, deleted.unwrap());
                found.push(violation("lease expired early", detail, shown(String::new())));
            }
        }
        let alive_until = lease.alive.iter().filter(|(_, ttl, _)| *ttl > 0).map(|&(invoked, ttl, _)| invoked + ttl as Nanos * 1_000_000_000).max().unwrap_or(0);
        let read_absent_early = reads[lease.key.as_str()].iter().find(|op| {
            op.completed.is_some_and(|c| c < alive_until)
                && matches!(op.outcome, Outcome::Read { revision, found: None } if revision >= put)
        });
        if let Some(op) = read_absent_early {
            let detail = format!("{} read absent before its lease's TTL ran out", lease.key);
            found.push(violation("lease expired early", detail, shown(op.to_string())));
        }
        if let Some((_, Outcome::Written { revision })) = &lease.revoked
            && deleted != Some(*revision)
        {
            let detail = format!("revoke answered at revision {revision}, the key's delete is at {deleted:?}");
            found.push(violation("lease revoke", detail, shown(String::new())));
        }
    }
    found
}

/// Each grant's key was the oldest under its name: at the revision the grant was answered at
/// (where the answer says when ownership began), and no key older than it was left by a read just
/// after the grant. The recipes put each key once, so a key's mod revision is its create revision.
fn check_grants(log: &Log, grants: &[Ownership]) -> Vec<Violation> {
    let mut under: HashMap<&str, Vec<&str>> = HashMap::new();
    for grant in grants {
        under.entry(&grant.name).or_insert_with(|| {
            let prefix = format!("{}/", grant.name);
            log.by_key.keys().filter(|k| k.starts_with(&prefix)).map(String::as_str).collect()
        });
    }
    let live = |name: &str, revision: i64| -> Vec<(i64, &str)> {
        let mut live: Vec<(i64, &str)> = under[name].iter().filter_map(|&k| log.state(k, revision).map(|v| (v.mod_revision, k))).collect();
        live.sort();
        live
    };
    let mut found = Vec::new();
    for grant in grants {
        let shown = |live: &[(i64, &str)]| {
            let mut evidence = vec![format!("{grant:?}")];
            evidence.extend(live.iter().map(|(revision, key)| format!("live: {key} put at {revision}")));
            evidence
        };
        // A grant of a key already gone (its lease ran out while it waited) is no owner: the
        // key's fencing revision is what a holder's writes must compare, and they fail.
        if let Some(at) = grant.granted_at.filter(|&at| log.state(&grant.key, at).is_some()) {
            let live = live(&grant.name, at);
            if live.first().map(|&(_, k)| k) != Some(grant.key.as_str()) {
                let detail = format!("{} granted {} at revision {at}, when it was not the oldest key under it", grant.name, grant.key);
                found.push(violation("ownership", detail, shown(&live)));
            }
        }
        if let Some(at) = grant.confirmed_at {
            let created = log.by_key.get(&grant.key).and_then(|writes| writes.first()).map(|&(revision, _)| revision);
            let live = live(&grant.name, at);
            let older_left = live.first().filter(|&&(revision, _)| created.is_none_or(|c| revision < c));
            if created.is_none_or(|c| c > at) || older_left.is_some() {
                let detail = format!("{} granted {}, yet a read just after (revision {at}) finds an older key, or not the key", grant.name, grant.key);
                found.push(violation("ownership", detail, shown(&live)));
            }
        }
    }
    found
}

/// Grants answered for a key that was already gone at the grant's revision (its lease expired
/// while the client waited): no ownership, but a client that does not fence its writes on the
/// key would take it for one.
pub fn grants_of_gone_keys(history: &History) -> usize {
    let (log, _) = Log::new(&history.log);
    history.grants.iter().filter(|g| g.granted_at.is_some_and(|at| log.state(&g.key, at).is_none())).count()
}

/// An operation answered before another was invoked must not have a later place.
fn real_time(operations: &[Operation], placed: &[(usize, Place)]) -> Vec<Violation> {
    let mut by_invoked: Vec<(Nanos, usize, Place)> = placed.iter().map(|&(i, p)| (operations[i].invoked, i, p)).collect();
    by_invoked.sort();
    let mut by_completed: Vec<(Nanos, usize, Place)> = placed.iter().filter_map(|&(i, p)| operations[i].completed.map(|c| (c, i, p))).collect();
    by_completed.sort();
    let mut found = Vec::new();
    let mut latest: Option<(Place, usize)> = None;
    let mut done = by_completed.iter().peekable();
    for &(invoked, i, place) in &by_invoked {
        while let Some(&&(_, j, p)) = done.peek().filter(|(completed, ..)| *completed < invoked) {
            if latest.is_none_or(|(q, _)| p > q) {
                latest = Some((p, j));
            }
            done.next();
        }
        if let Some((before, j)) = latest.filter(|(q, _)| *q > place) {
            found.push(violation(
                "real-time order",
                format!("answered first, yet placed at {before:?}, after {place:?}"),
                vec![operations[j].to_string(), operations[i].to_string()],
            ));
        }
    }
    found
}

/// What `record` received must be the log from its start revision, but for what it was told was
/// compacted: in order, each event once, none missing.
fn check_watch(log: &[Event], compactions: &[i64], record: &WatchRecord) -> Vec<Violation> {
    let mut found = Vec::new();
    for &(asked, told) in &record.compacted {
        if told <= asked || !compactions.contains(&told) {
            let detail = format!("watcher {} asked for revision {asked} and was told it was compacted at {told}", record.watcher);
            found.push(violation("watch compaction", detail, vec![format!("compactions asked for: {compactions:?}")]));
        }
    }
    // Skipped: what a compaction removed, and a delete at a compaction revision that the watcher
    // did not get from a stream it started there (etcd 3.4 drops a tombstone at the compaction
    // revision, yet serves a watch from that revision: told it was compacted, or asking for it).
    let skipped = |e: &Event| {
        record.compacted.iter().any(|&(asked, told)| (asked..told).contains(&e.revision))
            || (e.value.is_none() && compactions.contains(&e.revision) && record.starts.contains(&e.revision) && !record.events.contains(e))
    };
    let want: Vec<&Event> = log.iter().filter(|e| e.revision >= record.from_revision && !skipped(e)).collect();
    let first_difference = (0..want.len().max(record.events.len())).find(|&i| want.get(i).copied() != record.events.get(i));
    let Some(i) = first_difference else { return found };
    let around = |events: &[&Event]| events[i.saturating_sub(1)..(i + 2).min(events.len())].iter().map(|e| format!("{e:?}")).collect::<Vec<_>>();
    let got: Vec<&Event> = record.events.iter().collect();
    let mut evidence: Vec<String> = around(&want).into_iter().map(|e| format!("log:      {e}")).collect();
    evidence.extend(around(&got).into_iter().map(|e| format!("received: {e}")));
    let revision = want.get(i).or(got.get(i)).map_or(0, |e| e.revision);
    let near = |revisions: &[i64]| revisions.iter().filter(|r| (revision - 20..=revision + 20).contains(*r)).copied().collect::<Vec<_>>();
    evidence.push(format!("compactions near: {:?}; its streams started near: {:?}", near(compactions), near(&record.starts)));
    found.push(violation(
        "watch",
        format!("watcher {} (from revision {}) differs from the log at its event {i}", record.watcher, record.from_revision),
        evidence,
    ));
    found
}
