//! Checks a recorded [`History`] against etcd's guarantees.
//!
//! etcd orders every write by its revision, one revision per write, with no gaps; that order is
//! the linearization to check. The committed log (a watch from revision 1 after the run) says
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
//! Watches: what each watcher received is the log from its start revision, in order, each event
//! once, nothing missing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::history::{Event, History, Nanos, Operation, Outcome, Request, Version, WatchRecord};

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
    found.extend(check_operations(&log, &history.operations));
    for record in &history.watches {
        found.extend(check_watch(&history.log, record));
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

fn check_operations(log: &Log, operations: &[Operation]) -> Vec<Violation> {
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
    found.extend(unexplained_writes(log, operations, &claimed));
    found.extend(real_time(operations, &placed));
    found
}

/// Log entries no operation explains: a put of a value nobody sent, or a delete of a key with
/// no delete in flight that could be it.
fn unexplained_writes(log: &Log, operations: &[Operation], claimed: &HashMap<i64, usize>) -> Vec<Violation> {
    let unanswered_deletes = |key: &str| {
        operations
            .iter()
            .filter(|op| matches!(&op.request, Request::Delete { key: k } if k == key) && matches!(op.outcome, Outcome::Unknown(_)))
            .count()
    };
    let mut deletes_explained: HashMap<&str, usize> = HashMap::new();
    let mut found = Vec::new();
    for event in log.by_revision.values().filter(|e| !claimed.contains_key(&e.revision)) {
        let explained = match &event.value {
            Some(_) => false,
            None => {
                let used = deletes_explained.entry(&event.key).or_default();
                *used += 1;
                *used <= unanswered_deletes(&event.key)
            }
        };
        if !explained {
            found.push(violation("invented write", "a write in the log that no client made".into(), vec![format!("{event:?}")]));
        }
    }
    found
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

/// What `record` received must be the log from its start revision: in order, each event once,
/// none missing.
fn check_watch(log: &[Event], record: &WatchRecord) -> Vec<Violation> {
    let want: Vec<&Event> = log.iter().filter(|e| e.revision >= record.from_revision).collect();
    let first_difference = (0..want.len().max(record.events.len())).find(|&i| want.get(i).copied() != record.events.get(i));
    let Some(i) = first_difference else { return Vec::new() };
    let around = |events: &[&Event]| events[i.saturating_sub(1)..(i + 2).min(events.len())].iter().map(|e| format!("{e:?}")).collect::<Vec<_>>();
    let got: Vec<&Event> = record.events.iter().collect();
    let mut evidence: Vec<String> = around(&want).into_iter().map(|e| format!("log:      {e}")).collect();
    evidence.extend(around(&got).into_iter().map(|e| format!("received: {e}")));
    vec![violation(
        "watch",
        format!("watcher {} (from revision {}) differs from the log at its event {i}", record.watcher, record.from_revision),
        evidence,
    )]
}
