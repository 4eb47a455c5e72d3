//! What the clients of a fault run did: every operation with when it was invoked, when it was
//! answered (if ever) and what the answer said, and every event each watcher received.

use std::fmt;

/// Nanoseconds since the run started, on one monotonic clock for every client.
pub type Nanos = u64;

/// One request on one key, as the workload sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Put { key: String, value: String },
    Delete { key: String },
    /// A linearizable get, or a serializable one (which may be stale, never invented).
    Get { key: String, serializable: bool },
    /// A txn: if `key`'s mod revision is `expect` (0: the key is absent), put `value`, else get
    /// the key.
    CompareAndPut { key: String, expect: i64, value: String },
}

impl Request {
    pub fn key(&self) -> &str {
        match self {
            Request::Put { key, .. } | Request::Delete { key } | Request::Get { key, .. } | Request::CompareAndPut { key, .. } => key,
        }
    }
}

/// A key's value and mod revision as a read returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub value: String,
    pub mod_revision: i64,
}

/// What the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A put, a delete that deleted the key, or a compare-and-put whose compare held: written at
    /// this revision.
    Written { revision: i64 },
    /// A get, a delete of an absent key, or a compare-and-put whose compare failed: the key as
    /// of the header's revision.
    Read { revision: i64, found: Option<Version> },
    /// A definite refusal: nothing happened.
    Failed(String),
    /// No answer (timeout, connection lost, leader lost): it may or may not have happened.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub request: Request,
    pub invoked: Nanos,
    /// When the answer arrived; `None` when there was none.
    pub completed: Option<Nanos>,
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: Nanos| ns as f64 / 1e6;
        let done = self.completed.map_or("never".to_string(), |c| format!("{:.3} ms", ms(c)));
        write!(f, "client {} {:?} invoked {:.3} ms, answered {done}: {:?}", self.client, self.request, ms(self.invoked), self.outcome)
    }
}

/// One event of the committed history, as a watch reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
}

/// The events one watcher received, from its start revision on (over reconnects).
#[derive(Clone, Debug)]
pub struct WatchRecord {
    pub watcher: usize,
    /// Where it asked to start.
    pub from_revision: i64,
    pub events: Vec<Event>,
    /// Each time it was told the revision it asked for was compacted: (asked, compacted
    /// revision it was told, where it went on from).
    pub compacted: Vec<(i64, i64)>,
    /// The revision each of its streams started at (it hops between members).
    pub starts: Vec<i64>,
}

/// One lease of a lease client, with its one key.
#[derive(Clone, Debug)]
pub struct LeaseRecord {
    pub key: String,
    /// The grant and each keepalive answered: (invoked, TTL answered, header revision).
    pub alive: Vec<(Nanos, i64, i64)>,
    /// A revoke: when it was invoked, and its outcome (written at the revoke's revision, or
    /// unknown).
    pub revoked: Option<(Nanos, Outcome)>,
}

/// A lock or an election won: the key the client was given under `name`.
#[derive(Clone, Debug)]
pub struct Ownership {
    pub client: usize,
    pub name: String,
    pub key: String,
    /// The revision the grant was answered at, where it says when ownership began (a lock's
    /// answer does; a campaign's carries the revision its key was put at).
    pub granted_at: Option<i64>,
    /// The revision of a linearizable read made just after the grant, if it was answered.
    pub confirmed_at: Option<i64>,
    pub invoked: Nanos,
    pub completed: Nanos,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub operations: Vec<Operation>,
    pub watches: Vec<WatchRecord>,
    /// The whole committed history, as the recorder (a watcher from revision 1) received it.
    pub log: Vec<Event>,
    /// Every revision the compactor asked to compact to.
    pub compactions: Vec<i64>,
    pub leases: Vec<LeaseRecord>,
    /// Every lock and election granted.
    pub grants: Vec<Ownership>,
}
