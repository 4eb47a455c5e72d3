//! A comparable view of watch responses (events, flags, ids and header revisions; not the
//! server's cluster/member ids or term), and reading them off a stream with bounded waits.

use std::fmt;
use std::time::Duration;

use etcd_client::{Client, EventType, KeyValue, WatchOptions, WatchResponse, WatchStream};

use crate::writes::put;

/// Bound on any single wait for a response; generous for debug builds on a busy machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// A key-value as an event carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create: i64,
    pub modr: i64,
    pub version: i64,
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.value.len() > 24 {
            format!("<{} bytes>", self.value.len())
        } else {
            self.value.clone()
        };
        write!(
            f,
            "{}={value} c{} m{} v{}",
            self.key, self.create, self.modr, self.version
        )
    }
}

/// The comparable view of a client `KeyValue`.
pub fn kv(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create: kv.create_revision(),
        modr: kv.mod_revision(),
        version: kv.version(),
    }
}

/// One event: a put or a delete, with the value it replaced when asked for.
#[derive(Clone, PartialEq, Eq)]
pub struct Ev {
    pub put: bool,
    pub kv: Kv,
    pub prev: Option<Kv>,
}

impl Ev {
    pub fn rev(&self) -> i64 {
        self.kv.modr
    }
}

impl fmt::Debug for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", if self.put { "PUT" } else { "DEL" }, self.kv)?;
        if let Some(prev) = &self.prev {
            write!(f, " (prev {prev:?})")?;
        }
        Ok(())
    }
}

/// Everything observable in one watch response except the server's cluster/member ids and term.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Resp {
    pub id: i64,
    pub created: bool,
    pub canceled: bool,
    pub compact: i64,
    pub reason: String,
    pub fragment: bool,
    /// Header revision (`None` when the response has no header).
    pub rev: Option<i64>,
    pub events: Vec<Ev>,
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[id {} rev {:?}", self.id, self.rev)?;
        for (flag, on) in [
            ("created", self.created),
            ("canceled", self.canceled),
            ("fragment", self.fragment),
        ] {
            if on {
                write!(f, " {flag}")?;
            }
        }
        if self.compact != 0 {
            write!(f, " compact_revision {}", self.compact)?;
        }
        if !self.reason.is_empty() {
            write!(f, " reason {:?}", self.reason)?;
        }
        if !self.events.is_empty() {
            write!(f, " events {:?}", self.events)?;
        }
        write!(f, "]")
    }
}

/// The comparable view of a client `WatchResponse`.
pub fn resp(r: &WatchResponse) -> Resp {
    Resp {
        id: r.watch_id(),
        created: r.created(),
        canceled: r.canceled(),
        compact: r.compact_revision(),
        reason: r.cancel_reason().to_string(),
        fragment: r.0.fragment,
        rev: r.header().map(|h| h.revision()),
        events: r
            .events()
            .iter()
            .map(|e| Ev {
                put: e.event_type() == EventType::Put,
                kv: self::kv(e.kv().expect("event without kv")),
                prev: e.prev_kv().map(self::kv),
            })
            .collect(),
    }
}

/// The next response on `stream`, raw; panics on timeout, error or end of stream.
pub async fn next_raw(stream: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => panic!("watch stream ended"),
        Ok(Err(e)) => panic!("watch stream failed: {e}"),
        Err(_) => panic!("no watch response within {WAIT:?}"),
    }
}

/// The next response on `stream`, comparable; panics as [`next_raw`] does.
pub async fn next(stream: &mut WatchStream) -> Resp {
    resp(&next_raw(stream).await)
}

/// Reads responses until `done` holds for everything read so far.
pub async fn read_until(stream: &mut WatchStream, done: impl Fn(&[Resp]) -> bool) -> Vec<Resp> {
    let mut got = Vec::new();
    while !done(&got) {
        let r = tokio::time::timeout(WAIT, stream.message()).await;
        match r {
            Ok(Ok(Some(r))) => got.push(resp(&r)),
            other => panic!("waiting for more responses: {other:?}; so far: {got:#?}"),
        }
    }
    got
}

/// Until a complete (non-fragment) response carrying an event at revision `rev` or later.
pub fn reached(rev: i64) -> impl Fn(&[Resp]) -> bool {
    move |got: &[Resp]| {
        got.last()
            .is_some_and(|r| !r.fragment && r.events.iter().any(|e| e.rev() >= rev))
    }
}

/// Every event of `resps`, in the order received.
pub fn events(resps: &[Resp]) -> Vec<Ev> {
    resps.iter().flat_map(|r| r.events.clone()).collect()
}

/// Opens a watch stream with one watcher and returns it with its created response.
pub async fn watch(c: &mut Client, key: &str, opts: WatchOptions) -> (WatchStream, Resp) {
    let mut stream = c.watch(key, Some(opts)).await.expect("watch");
    let created = next(&mut stream).await;
    (stream, created)
}

/// Each event once, in revision order (several events may share a revision: one txn).
pub fn assert_once_in_order(evs: &[Ev]) {
    for pair in evs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.rev() < b.rev() || (a.rev() == b.rev() && a.kv.key != b.kv.key),
            "out of order or duplicate: {a:?} then {b:?}"
        );
    }
}

/// Puts a key nothing else writes and asserts the very next response on `stream` carries
/// exactly its event: proof that nothing else (duplicates, stray events) was pending.
pub async fn assert_next_is_only(c: &mut Client, stream: &mut WatchStream, key: &str) -> Resp {
    let rev = put(c, key, "sentinel").await;
    let r = next(stream).await;
    assert_eq!(
        r.events
            .iter()
            .map(|e| (e.kv.key.as_str(), e.rev()))
            .collect::<Vec<_>>(),
        [(key, rev)],
        "expected only the sentinel's event next, got {r:?}"
    );
    r
}
