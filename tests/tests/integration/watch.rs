//! The Watch service through the `etcd-client` crate, compared with real etcd: every scenario
//! runs against a fresh etcd and a fresh Conclave, and their transcripts (full events, response
//! flags, watch ids, header revisions where deterministic) must be equal.
//!
//! No sleeps: every wait is a stream read bounded by a timeout, and "nothing more arrived" is
//! shown by a later write whose event must be the very next response.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use conclave_tests::{
    Kind, Node, assert_same_as_etcd, ctl, ctl_lines, ctl_stdin, on_etcd_then_subject,
    same_on_etcd_and_subject,
};
use etcd_client::proto::PbWatchResponse;
use etcd_client::{
    Client, CompactionOptions, DeleteOptions, EventType, KeyValue, Txn, TxnOp, WatchFilterType,
    WatchOptions, WatchResponse, WatchStream,
};
use prost::Message;

/// Bound on any single wait for a response; generous for debug builds on a busy machine.
const WAIT: Duration = Duration::from_secs(20);

// ----- A comparable view of watch responses -----

#[derive(Clone, PartialEq, Eq)]
struct Kv {
    key: String,
    value: String,
    create: i64,
    modr: i64,
    version: i64,
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

fn kv(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create: kv.create_revision(),
        modr: kv.mod_revision(),
        version: kv.version(),
    }
}

#[derive(Clone, PartialEq, Eq)]
struct Ev {
    put: bool,
    kv: Kv,
    prev: Option<Kv>,
}

impl Ev {
    fn rev(&self) -> i64 {
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
struct Resp {
    id: i64,
    created: bool,
    canceled: bool,
    compact: i64,
    reason: String,
    fragment: bool,
    /// Header revision (`None` when the response has no header).
    rev: Option<i64>,
    events: Vec<Ev>,
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

fn resp(r: &WatchResponse) -> Resp {
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
async fn next_raw(stream: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => panic!("watch stream ended"),
        Ok(Err(e)) => panic!("watch stream failed: {e}"),
        Err(_) => panic!("no watch response within {WAIT:?}"),
    }
}

async fn next(stream: &mut WatchStream) -> Resp {
    resp(&next_raw(stream).await)
}

/// Reads responses until `done` holds for everything read so far.
async fn read_until(stream: &mut WatchStream, done: impl Fn(&[Resp]) -> bool) -> Vec<Resp> {
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
fn reached(rev: i64) -> impl Fn(&[Resp]) -> bool {
    move |got: &[Resp]| {
        got.last()
            .is_some_and(|r| !r.fragment && r.events.iter().any(|e| e.rev() >= rev))
    }
}

fn events(resps: &[Resp]) -> Vec<Ev> {
    resps.iter().flat_map(|r| r.events.clone()).collect()
}

/// Opens a watch stream with one watcher and returns it with its created response.
async fn watch(c: &mut Client, key: &str, opts: WatchOptions) -> (WatchStream, Resp) {
    let mut stream = c.watch(key, Some(opts)).await.expect("watch");
    let created = next(&mut stream).await;
    (stream, created)
}

async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    c.put(key, value, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

async fn txn(c: &mut Client, ops: Vec<TxnOp>) -> i64 {
    c.txn(Txn::new().and_then(ops))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Each event once, in revision order (several events may share a revision: one txn).
fn assert_once_in_order(evs: &[Ev]) {
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
async fn assert_next_is_only(c: &mut Client, stream: &mut WatchStream, key: &str) -> Resp {
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

// ----- 1. Historical replay -----

/// Puts, deletes, txns and a range delete: revisions 2..=10.
async fn write_history(c: &mut Client) -> i64 {
    put(c, "a", "1").await; // 2
    put(c, "b", "1").await; // 3
    put(c, "a", "2").await; // 4
    c.delete("a", None).await.unwrap(); // 5
    txn(
        c,
        vec![
            TxnOp::put("c", "1", None),
            TxnOp::put("d", "1", None),
            TxnOp::delete("b", None),
        ],
    )
    .await; // 6
    put(c, "a", "3").await; // 7
    c.delete("c", Some(DeleteOptions::new().with_range("e")))
        .await
        .unwrap(); // 8: c and d
    txn(
        c,
        vec![TxnOp::put("e", "1", None), TxnOp::put("a", "4", None)],
    )
    .await; // 9
    put(c, "c", "2").await // 10
}

#[tokio::test]
async fn historical_replay() {
    let transcript = same_on_etcd_and_subject(&[], |mut c| async move {
        let last = write_history(&mut c).await;
        assert_eq!(last, 10);
        let mut transcript = Vec::new();
        for (i, (start, prev_kv)) in [(1, true), (5, true), (1, false), (9, true), (11, true)]
            .into_iter()
            .enumerate()
        {
            let mut opts = WatchOptions::new().with_prefix().with_start_revision(start);
            if prev_kv {
                opts = opts.with_prev_key();
            }
            let current = c.get("a", None).await.unwrap().header().unwrap().revision();
            let (mut stream, created) = watch(&mut c, "", opts).await;
            let mut resps = vec![created];
            if start <= current {
                resps.extend(read_until(&mut stream, reached(current)).await);
            }
            let evs = events(&resps);
            assert_once_in_order(&evs);
            // Revision 1 is the empty store: the first event is at revision 2.
            assert_eq!(
                evs.first().map(Ev::rev),
                (start <= current).then_some(start.max(2))
            );
            // The three events of the txn at revision 6 come in one response.
            for r in &resps {
                let at6 = r.events.iter().filter(|e| e.rev() == 6).count();
                assert!(
                    at6 == 0 || at6 == 3,
                    "txn split across responses: {resps:?}"
                );
            }
            resps.push(assert_next_is_only(&mut c, &mut stream, &format!("z{i}")).await);
            transcript.push((start, prev_kv, resps));
        }
        transcript
    })
    .await;
    // Spot checks of the shared transcript against the history written above.
    let (_, _, from1) = &transcript[0];
    let evs = events(&from1[..from1.len() - 1]); // without the sentinel
    assert_eq!(evs.len(), 13, "{evs:#?}");
    assert_eq!(
        evs.iter()
            .map(|e| (e.put, e.kv.key.as_str(), e.rev()))
            .collect::<Vec<_>>()[3..7],
        [
            (false, "a", 5),
            (true, "c", 6),
            (true, "d", 6),
            (false, "b", 6)
        ]
    );
}

// ----- 2. Live events, ranges and filters -----

#[tokio::test]
async fn live_events_ranges_and_filters() {
    same_on_etcd_and_subject(&[], |mut c| async move {
        let mut stream = c.watch("k", None).await.unwrap(); // id 0: one key
        let mut created = vec![next(&mut stream).await];
        let watchers: [(&str, WatchOptions); 5] = [
            ("p/", WatchOptions::new().with_prefix()),  // 1
            ("x", WatchOptions::new().with_from_key()), // 2
            ("m", WatchOptions::new().with_range("o")), // 3
            (
                "",
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([WatchFilterType::NoPut]),
            ), // 4
            (
                "",
                WatchOptions::new()
                    .with_from_key()
                    .with_prev_key()
                    .with_filters([WatchFilterType::NoDelete]),
            ), // 5
        ];
        for (key, opts) in watchers {
            stream.watch(key, Some(opts)).await.unwrap();
            created.push(next(&mut stream).await);
        }
        put(&mut c, "k", "1").await; // 2
        put(&mut c, "p/1", "1").await; // 3
        put(&mut c, "p", "0").await; // 4: not under p/
        put(&mut c, "x1", "1").await; // 5
        put(&mut c, "w", "1").await; // 6: before x
        put(&mut c, "m1", "1").await; // 7
        put(&mut c, "n", "1").await; // 8
        put(&mut c, "o", "1").await; // 9: range end is exclusive
        c.delete("k", None).await.unwrap(); // 10
        c.delete("p/1", None).await.unwrap(); // 11
        txn(
            &mut c,
            vec![
                TxnOp::put("k", "2", None),
                TxnOp::put("p/2", "1", None),
                TxnOp::delete("m1", None),
                TxnOp::put("y", "1", None),
            ],
        )
        .await; // 12
        c.delete("n", Some(DeleteOptions::new().with_range("p")))
            .await
            .unwrap(); // 13: n and o
        let last = put(&mut c, "zz", "1").await; // 14
        assert_eq!(last, 14);
        // Watchers 2 and 5 both see the last write; responses of a stream come in revision
        // order, so everything before it has arrived once both have.
        let resps = read_until(&mut stream, |got| {
            [2, 5].iter().all(|id| {
                got.iter()
                    .any(|r| r.id == *id && r.events.iter().any(|e| e.rev() == last))
            })
        })
        .await;
        let mut by_watcher: BTreeMap<i64, Vec<Resp>> = BTreeMap::new();
        for r in resps {
            by_watcher.entry(r.id).or_default().push(r);
        }
        for resps in by_watcher.values() {
            assert_once_in_order(&events(resps));
        }
        // Nothing further is pending for any watcher: the next response is the sentinel's,
        // for watcher 0 (key "k" is watched by 0, 4 (puts filtered) and 5).
        let rev = put(&mut c, "k", "3").await;
        let mut tail = read_until(&mut stream, |got| got.len() == 2).await;
        tail.sort_by_key(|r| r.id);
        assert_eq!(
            tail.iter()
                .map(|r| (r.id, r.events.len(), r.events[0].rev()))
                .collect::<Vec<_>>(),
            [(0, 1, rev), (5, 1, rev)]
        );
        (created, by_watcher, tail)
    })
    .await;
}

// ----- 3. Watch ids -----

#[tokio::test]
async fn watch_ids_duplicates_and_cancel() {
    let t = same_on_etcd_and_subject(&[], |mut c| async move {
        let mut stream = c.watch("a", None).await.unwrap();
        let mut t = vec![("auto a", next(&mut stream).await)];
        let requests: [(&str, &str, WatchOptions); 7] = [
            ("auto b", "b", WatchOptions::new()),
            ("id 7 c", "c", WatchOptions::new().with_watch_id(7)),
            ("id 7 again", "c", WatchOptions::new().with_watch_id(7)),
            ("id 3 d", "d", WatchOptions::new().with_watch_id(3)),
            ("auto e", "e", WatchOptions::new()),
            ("auto f (3 taken)", "f", WatchOptions::new()),
            ("empty range b..a", "b", WatchOptions::new().with_range("a")),
        ];
        for (what, key, opts) in requests {
            stream.watch(key, Some(opts)).await.unwrap();
            t.push((what, next(&mut stream).await));
        }
        stream.cancel(0).await.unwrap();
        t.push(("cancel 0", next(&mut stream).await));
        // Cancelling an unknown id answers nothing: the next response is the progress one.
        stream.cancel(99).await.unwrap();
        stream.request_progress().await.unwrap();
        t.push(("cancel 99 then progress", next(&mut stream).await));
        stream.watch("g", None).await.unwrap();
        t.push(("auto g after cancel", next(&mut stream).await));
        // The cancelled watcher on "a" gets nothing more: the next response is b's event.
        put(&mut c, "a", "1").await;
        put(&mut c, "b", "1").await;
        t.push(("put a, put b", next(&mut stream).await));
        // Cancelling twice: the second is unknown.
        stream.cancel(1).await.unwrap();
        t.push(("cancel 1", next(&mut stream).await));
        stream.cancel(1).await.unwrap();
        stream.request_progress().await.unwrap();
        t.push(("cancel 1 again then progress", next(&mut stream).await));
        t
    })
    .await;
    for (what, r) in &t {
        println!("{what}: {r:?}");
    }
}

// ----- 4. Compacted start revision -----

#[tokio::test]
async fn watch_from_compacted_revision() {
    same_on_etcd_and_subject(&[], |mut c| async move {
        for v in ["1", "2", "3", "4", "5"] {
            put(&mut c, "k", v).await; // revisions 2..=6
        }
        c.compact(4, None).await.unwrap();
        let mut t = Vec::new();
        for (start, prev_kv) in [
            (2, false),
            (3, true),
            (1, false),
            (4, false),
            (4, true),
            (5, true),
        ] {
            let mut opts = WatchOptions::new().with_start_revision(start);
            if prev_kv {
                opts = opts.with_prev_key();
            }
            let (mut stream, created) = watch(&mut c, "k", opts).await;
            let second = next(&mut stream).await;
            t.push((start, prev_kv, created, second));
        }
        t
    })
    .await;
}

/// The header revision of the compacted cancel response is the one thing compared on its own,
/// so the rest of [`watch_from_compacted_revision`] is not hidden behind it.
#[tokio::test]
async fn compacted_cancel_fields() {
    same_on_etcd_and_subject(&[], |mut c| async move {
        for v in ["1", "2", "3"] {
            put(&mut c, "k", v).await; // 2..=4
        }
        c.compact(3, None).await.unwrap();
        let (mut stream, created) =
            watch(&mut c, "k", WatchOptions::new().with_start_revision(2)).await;
        let canceled = next(&mut stream).await;
        assert!(created.created && canceled.canceled && canceled.compact == 3);
        (
            created.id,
            canceled.id,
            canceled.compact,
            canceled.reason,
            canceled.events,
        )
    })
    .await;
}

/// A watch from exactly the compaction revision, where that revision deleted a key. etcd 3.4
/// loses that delete event once compaction has physically run (the tombstone at the
/// compaction revision is removed from its backend), although the API says history can be
/// watched from the compaction revision. Conclave does the same; this pins it.
#[tokio::test]
async fn watch_from_the_compaction_revision_of_a_delete() {
    let got = same_on_etcd_and_subject(&[], |mut c| async move {
        put(&mut c, "a", "1").await; // 2
        put(&mut c, "b", "1").await; // 3
        c.delete("a", None).await.unwrap(); // 4
        put(&mut c, "b", "2").await; // 5
        c.compact(4, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        let opts = WatchOptions::new().with_prefix().with_start_revision(4);
        let (mut stream, created) = watch(&mut c, "", opts).await;
        assert!(created.created && !created.canceled);
        events(&read_until(&mut stream, reached(5)).await)
    })
    .await;
    let got: Vec<(bool, &str, i64)> = got
        .iter()
        .map(|e| (e.put, e.kv.key.as_str(), e.rev()))
        .collect();
    assert_eq!(got, [(true, "b", 5)], "etcd's quirk changed");
}

// ----- 5. Progress -----

#[tokio::test]
async fn progress_request_and_notify() {
    same_on_etcd_and_subject(
        &["--experimental-watch-progress-notify-interval", "1s"],
        |mut c| async move {
            let mut stream = c
                .watch("k", Some(WatchOptions::new().with_progress_notify()))
                .await
                .unwrap();
            let mut t = vec![("created 0 (progress_notify)", next(&mut stream).await)];
            stream.watch("j", None).await.unwrap();
            t.push(("created 1", next(&mut stream).await));
            put(&mut c, "x", "1").await; // 2, outside both ranges
            stream.request_progress().await.unwrap();
            let mut two = read_until(&mut stream, |got| got.len() == 2).await;
            // The requested progress and the first periodic notification (within ~1 s), in
            // either order.
            two.sort_by_key(|r| r.id);
            t.push(("progress / notify", two[0].clone()));
            t.push(("progress / notify", two[1].clone()));
            // Notifications keep coming, only for the watcher that asked.
            put(&mut c, "x", "2").await; // 3
            t.push(("next notify", next(&mut stream).await));
            t
        },
    )
    .await;
}

/// A progress request on a stream with no watchers at all.
#[tokio::test]
async fn progress_request_without_watchers() {
    same_on_etcd_and_subject(&[], |mut c| async move {
        let mut stream = c.watch("k", None).await.unwrap();
        let created = next(&mut stream).await;
        stream.cancel(0).await.unwrap();
        let canceled = next(&mut stream).await;
        put(&mut c, "k", "1").await;
        stream.request_progress().await.unwrap();
        (created, canceled, next(&mut stream).await)
    })
    .await;
}

// ----- 6. Fragmentation -----

/// `--max-request-bytes` for the fragmentation test: big enough for a txn of 20 puts of
/// [`FRAGMENT_VALUE`] bytes.
const MAX_REQUEST_BYTES: usize = 65536;
/// etcd's `grpcOverheadBytes`: its watch server fragments above max-request-bytes plus this
/// (`maxRequestBytes: int(s.Cfg.MaxRequestBytes + grpcOverheadBytes)` in v3rpc/watch.go).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
const FRAGMENT_VALUE: usize = 3000;

/// etcd 3.4's `sendFragments`: how many events each fragment of `full` carries.
fn etcd_fragment_sizes(full: &PbWatchResponse, max: usize) -> Vec<usize> {
    if full.encoded_len() < max || full.events.len() < 2 {
        return vec![full.events.len()];
    }
    let mut sizes = Vec::new();
    let mut idx = 0;
    loop {
        let mut cur = full.clone();
        cur.events.clear();
        cur.fragment = true;
        for ev in &full.events[idx..] {
            cur.events.push(ev.clone());
            if cur.events.len() > 1 && cur.encoded_len() >= max {
                cur.events.pop();
                break;
            }
            idx += 1;
        }
        if idx == full.events.len() {
            cur.fragment = false;
        }
        sizes.push(cur.events.len());
        if !cur.fragment {
            return sizes;
        }
    }
}

/// A range delete of `n` keys holding [`FRAGMENT_VALUE`]-byte values, watched with prev_kv:
/// one revision whose response is about `n * 3 KB`. etcd splits it above
/// max-request-bytes + 512 KiB (about 174 events here): responses are compared with what
/// etcd's own algorithm gives for them, and reassembled with an unfragmented watcher's.
#[tokio::test]
async fn fragmented_responses() {
    let max = MAX_REQUEST_BYTES.to_string();
    same_on_etcd_and_subject(&["--max-request-bytes", &max], |mut c| async move {
        let prefix_opts = || WatchOptions::new().with_prefix().with_prev_key();
        let (mut stream, created) = watch(&mut c, "f/", prefix_opts().with_fragment()).await;
        let (mut whole, _) = watch(&mut c, "f/", prefix_opts()).await;
        let value = "v".repeat(FRAGMENT_VALUE);
        let mut t = Vec::new();
        for n in [20, 160, 174, 175, 180, 400] {
            for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
                let ops = chunk
                    .iter()
                    .map(|i| TxnOp::put(format!("f/{i:03}"), value.as_str(), None))
                    .collect();
                let rev = txn(&mut c, ops).await;
                let puts = next(&mut stream).await;
                assert_eq!((puts.rev, puts.events.len()), (Some(rev), chunk.len()));
                next(&mut whole).await;
            }
            let deleted = c
                .delete("f/", Some(DeleteOptions::new().with_prefix()))
                .await
                .unwrap();
            let rev = deleted.header().unwrap().revision();
            // The fragments of that revision, raw, up to the one that is not a fragment.
            let mut raw = Vec::new();
            loop {
                let r = next_raw(&mut stream).await;
                let last = !r.0.fragment;
                raw.push(r);
                if last {
                    break;
                }
            }
            let resps: Vec<Resp> = raw.iter().map(resp).collect();
            let sizes: Vec<usize> = resps.iter().map(|r| r.events.len()).collect();
            let unfragmented = next(&mut whole).await;
            assert!(!unfragmented.fragment);
            assert_eq!(unfragmented.events.len(), n, "{n} keys");
            let reassembled = events(&resps);
            assert!(
                reassembled == unfragmented.events,
                "{n} keys: reassembled differ"
            );
            assert!(
                resps.iter().all(|r| r.rev == Some(rev) && r.id == 0),
                "{n} keys: {:?}",
                resps.iter().map(|r| (r.id, r.rev)).collect::<Vec<_>>()
            );
            // Split exactly as etcd splits, given this server's own header.
            let mut full = raw[0].0.clone();
            full.fragment = false;
            full.events = raw.iter().flat_map(|r| r.0.events.clone()).collect();
            let etcd_rule = etcd_fragment_sizes(&full, MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES);
            let split = if sizes == etcd_rule {
                format!("{sizes:?} as etcd splits")
            } else {
                format!("{sizes:?} where etcd's rule gives {etcd_rule:?}")
            };
            t.push((n, split));
        }
        (created, t)
    })
    .await;
}

// ----- 7. Slow watcher -----

#[tokio::test]
async fn slow_watcher_does_not_block_writers_nor_lose_events() {
    const KEYS: usize = 3000;
    const WRITERS: usize = 16;
    for kind in [Kind::subject(), Kind::Etcd] {
        let node = Node::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        println!("--- against {kind:?} at {}", node.endpoint());
        let mut reader = Client::connect([node.endpoint()], None).await.unwrap();
        let (mut stream, created) =
            watch(&mut reader, "s/", WatchOptions::new().with_prefix()).await;
        assert!(created.created);

        // The watch is not read while the writers run.
        let writer = Client::connect([node.endpoint()], None).await.unwrap();
        let began = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let mut c = writer.clone();
                tokio::spawn(async move {
                    let mut revs = Vec::new();
                    for i in (w..KEYS).step_by(WRITERS) {
                        // 2 KB: more than the client's HTTP/2 window and the server's queues
                        // hold, yet a 1000-event replay response stays under the client's
                        // 4 MB message limit.
                        let value = format!("{i:0>2000}");
                        revs.push((put(&mut c, &format!("s/{i:05}"), &value).await, i));
                    }
                    revs
                })
            })
            .collect();
        let mut written = BTreeMap::new();
        for task in tasks {
            let result = tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .unwrap_or_else(|_| panic!("{kind:?}: writers blocked for 120 s"));
            written.extend(result.unwrap());
        }
        let took = began.elapsed();
        println!("{kind:?}: {KEYS} writes with an unread watcher took {took:?}");
        assert!(
            took < Duration::from_secs(30),
            "{kind:?}: writers took {took:?}"
        );
        assert_eq!(written.len(), KEYS, "one revision per put");

        let last = *written.keys().last().unwrap();
        let resps = read_until(&mut stream, reached(last)).await;
        let evs = events(&resps);
        assert_once_in_order(&evs);
        let got: Vec<(i64, String)> = evs.iter().map(|e| (e.rev(), e.kv.key.clone())).collect();
        let want: Vec<(i64, String)> = written
            .iter()
            .map(|(rev, i)| (*rev, format!("s/{i:05}")))
            .collect();
        assert_eq!(got.len(), want.len(), "{kind:?}: event count");
        assert!(got == want, "{kind:?}: events differ from the writes");
        if kind == Kind::Conclave {
            assert!(node.log().contains("watch stream fell behind"), "the unread stream was never dropped from live delivery");
        }
        assert!(
            evs.iter()
                .all(|e| e.put && e.kv.version == 1 && e.kv.value.len() == 2000)
        );
        assert_next_is_only(&mut reader, &mut stream, "s/sentinel").await;
    }
}

// ----- 8. Deterministic randomized histories -----

/// A tiny deterministic generator (Knuth's MMIX LCG); the seed fixes the whole test.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

const KEYSET: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];

/// The store as the test expects it: current values and the full event history.
#[derive(Default)]
struct Model {
    rev: i64,
    compacted: i64,
    live: BTreeMap<String, Kv>,
    /// Every event ever, with its prev_kv.
    history: Vec<Ev>,
}

enum Op {
    Put(String),
    Delete(String),
    /// Delete [from, to).
    DeleteRange(String, String),
}

impl Model {
    fn new() -> Self {
        Model {
            rev: 1,
            ..Default::default()
        }
    }

    /// Applies the ops of one request (one revision if anything changes); returns the new
    /// revision.
    fn apply(&mut self, ops: &[Op], value: &str) -> i64 {
        let rev = self.rev + 1;
        let mut evs = Vec::new();
        for op in ops {
            let delete = |model: &mut Model, key: &str, evs: &mut Vec<Ev>| {
                if let Some(prev) = model.live.remove(key) {
                    evs.push(Ev {
                        put: false,
                        kv: Kv {
                            key: key.into(),
                            value: String::new(),
                            create: 0,
                            modr: rev,
                            version: 0,
                        },
                        prev: Some(prev),
                    });
                }
            };
            match op {
                Op::Put(key) => {
                    let prev = self.live.get(key).cloned();
                    let kv = Kv {
                        key: key.clone(),
                        value: value.into(),
                        create: prev.as_ref().map_or(rev, |p| p.create),
                        modr: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                    };
                    self.live.insert(key.clone(), kv.clone());
                    evs.push(Ev {
                        put: true,
                        kv,
                        prev,
                    });
                }
                Op::Delete(key) => delete(self, key, &mut evs),
                Op::DeleteRange(from, to) => {
                    let keys: Vec<String> = self
                        .live
                        .range(from.clone()..to.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in keys {
                        delete(self, &key, &mut evs);
                    }
                }
            }
        }
        if !evs.is_empty() {
            self.rev = rev;
            self.history.extend(evs);
        }
        self.rev
    }
}

fn to_txn_op(op: &Op, value: &str) -> TxnOp {
    match op {
        Op::Put(k) => TxnOp::put(k.as_str(), value, None),
        Op::Delete(k) => TxnOp::delete(k.as_str(), None),
        Op::DeleteRange(a, b) => TxnOp::delete(
            a.as_str(),
            Some(DeleteOptions::new().with_range(b.as_str())),
        ),
    }
}

/// A watched range: [from, to), `to` None for a single key.
#[derive(Clone, Debug)]
struct Span {
    from: String,
    to: Option<String>,
}

impl Span {
    fn contains(&self, key: &str) -> bool {
        match &self.to {
            None => key == self.from,
            Some(to) => key >= self.from.as_str() && (to.is_empty() || key < to.as_str()),
        }
    }
}

struct RandomWatcher {
    name: String,
    stream: WatchStream,
    span: Span,
    start: i64,
    prev_kv: bool,
    /// The compaction revision when it was created (prev_kv of an event at that revision is
    /// compacted away in etcd).
    compacted_at_create: i64,
    received: Vec<Ev>,
}

impl RandomWatcher {
    fn expected(&self, model: &Model) -> Vec<Ev> {
        model
            .history
            .iter()
            .filter(|e| e.rev() >= self.start && self.span.contains(&e.kv.key))
            .map(|e| Ev {
                prev: e
                    .prev
                    .clone()
                    .filter(|_| self.prev_kv && e.rev() - 1 >= self.compacted_at_create),
                ..e.clone()
            })
            .collect()
    }

    /// First revision it may still receive.
    fn position(&self) -> i64 {
        self.received.last().map_or(self.start, |e| e.rev() + 1)
    }

    /// Reads until it has every event the model expects so far; each response must extend
    /// an exact prefix of the expected history.
    async fn catch_up(&mut self, model: &Model) {
        let expected = self.expected(model);
        while self.received.len() < expected.len() {
            let r = tokio::time::timeout(WAIT, self.stream.message()).await;
            let r = match r {
                Ok(Ok(Some(r))) => resp(&r),
                other => panic!(
                    "{}: waiting for {:?}: {other:?}",
                    self.name,
                    &expected[self.received.len()..]
                ),
            };
            assert!(
                !r.canceled && !r.created && !r.events.is_empty(),
                "{}: unexpected {r:?}",
                self.name
            );
            self.received.extend(r.events);
            let n = self.received.len();
            assert!(
                n <= expected.len() && self.received[..] == expected[..n],
                "{} (start {}, span {:?}, prev_kv {}): received {:#?}\nexpected {:#?}",
                self.name,
                self.start,
                self.span,
                self.prev_kv,
                self.received,
                expected
            );
        }
    }
}

async fn random_histories(mut c: Client, seed: u64) -> usize {
    let mut rng = Lcg(seed);
    let mut model = Model::new();
    let mut watchers: Vec<RandomWatcher> = Vec::new();
    let mut created = 0;
    let mut compacted_cancels = 0;
    let key = |rng: &mut Lcg| KEYSET[rng.below(KEYSET.len() as u64) as usize].to_string();
    for step in 0..300 {
        let value = format!("v{step}");
        match rng.below(100) {
            0..=59 => {
                // A write: put, delete, range delete, or a txn of 1-3 ops on distinct keys.
                let rev = match rng.below(4) {
                    0 => {
                        let k = key(&mut rng);
                        let got = put(&mut c, &k, &value).await;
                        assert_eq!(got, model.apply(&[Op::Put(k)], &value));
                        got
                    }
                    1 => {
                        let k = key(&mut rng);
                        let got = c.delete(k.as_str(), None).await.unwrap();
                        let got = got.header().unwrap().revision();
                        assert_eq!(got, model.apply(&[Op::Delete(k)], &value));
                        got
                    }
                    2 => {
                        let (a, b) = (rng.below(8) as usize, rng.below(8) as usize);
                        let (a, b) = (a.min(b), a.max(b) + 1);
                        let to = KEYSET.get(b).map_or("l".to_string(), |k| k.to_string());
                        let got = c
                            .delete(
                                KEYSET[a],
                                Some(DeleteOptions::new().with_range(to.as_str())),
                            )
                            .await
                            .unwrap()
                            .header()
                            .unwrap()
                            .revision();
                        let op = Op::DeleteRange(KEYSET[a].to_string(), to);
                        assert_eq!(got, model.apply(&[op], &value));
                        got
                    }
                    _ => {
                        let mut ops = Vec::new();
                        let mut used = Vec::new();
                        for _ in 0..rng.range(1, 3) {
                            let k = key(&mut rng);
                            if used.contains(&k) {
                                continue;
                            }
                            used.push(k.clone());
                            ops.push(if rng.below(3) == 0 {
                                Op::Delete(k)
                            } else {
                                Op::Put(k)
                            });
                        }
                        let got =
                            txn(&mut c, ops.iter().map(|op| to_txn_op(op, &value)).collect()).await;
                        assert_eq!(got, model.apply(&ops, &value));
                        got
                    }
                };
                assert_eq!(rev, model.rev);
            }
            60..=74 if watchers.len() < 12 => {
                // Mostly after the compaction revision, sometimes before it. Never exactly at
                // it: etcd drops tombstones at the compaction revision once compaction has
                // physically run, which is timing-dependent (see
                // `watch_from_the_compaction_revision_of_a_delete`).
                let start = if model.compacted > 1 && rng.below(5) == 0 {
                    rng.range((model.compacted - 4).max(1), model.compacted - 1)
                } else {
                    rng.range(model.compacted + 1, model.rev + 1)
                };
                let (span, mut opts) = match rng.below(4) {
                    0 => {
                        let k = key(&mut rng);
                        (Span { from: k, to: None }, WatchOptions::new())
                    }
                    1 => (
                        Span {
                            from: "k".into(),
                            to: Some("l".into()),
                        },
                        WatchOptions::new().with_prefix(),
                    ),
                    2 => {
                        let k = key(&mut rng);
                        (
                            Span {
                                from: k,
                                to: Some(String::new()),
                            },
                            WatchOptions::new().with_from_key(),
                        )
                    }
                    _ => {
                        let (a, b) = (rng.below(8) as usize, rng.below(8) as usize);
                        let (a, b) = (a.min(b), a.max(b) + 1);
                        let to = KEYSET.get(b).map_or("l".to_string(), |k| k.to_string());
                        (
                            Span {
                                from: KEYSET[a].into(),
                                to: Some(to.clone()),
                            },
                            WatchOptions::new().with_range(to),
                        )
                    }
                };
                let prev_kv = rng.below(2) == 0;
                if prev_kv {
                    opts = opts.with_prev_key();
                }
                opts = opts.with_start_revision(start);
                let name = format!("watcher #{created} (step {step})");
                created += 1;
                let (mut stream, first) = watch(&mut c, &span.from.clone(), opts).await;
                assert_eq!(
                    (first.created, first.canceled, first.id, first.rev),
                    (true, false, 0, Some(model.rev)),
                    "{name}: {first:?}"
                );
                if start < model.compacted {
                    let r = next(&mut stream).await;
                    assert!(
                        r.canceled && r.compact == model.compacted && r.events.is_empty(),
                        "{name} from compacted {start}: {r:?}"
                    );
                    compacted_cancels += 1;
                    continue;
                }
                let mut w = RandomWatcher {
                    name,
                    stream,
                    span,
                    start,
                    prev_kv,
                    compacted_at_create: model.compacted,
                    received: Vec::new(),
                };
                w.catch_up(&model).await;
                watchers.push(w);
            }
            75..=84 => {
                // Compact no further than any watcher has got: a watcher that is behind may
                // legitimately be cancelled by a compaction, which would make this test
                // timing-dependent.
                for w in &mut watchers {
                    w.catch_up(&model).await;
                }
                let bound = watchers
                    .iter()
                    .map(RandomWatcher::position)
                    .min()
                    .unwrap_or(i64::MAX);
                let upper = model.rev.min(bound);
                if upper > model.compacted {
                    let at = rng.range(model.compacted + 1, upper);
                    c.compact(at, None).await.unwrap();
                    model.compacted = at;
                }
            }
            85..=91 if !watchers.is_empty() => {
                let mut w = watchers.remove(rng.below(watchers.len() as u64) as usize);
                w.catch_up(&model).await;
                w.stream.cancel(0).await.unwrap();
                let r = next(&mut w.stream).await;
                assert!(
                    r.canceled && r.id == 0 && r.events.is_empty(),
                    "{}: {r:?}",
                    w.name
                );
            }
            _ => {
                if !watchers.is_empty() {
                    let i = rng.below(watchers.len() as u64) as usize;
                    watchers[i].catch_up(&model).await;
                }
            }
        }
    }
    // A last txn writes every key: every watcher sees it, after all it was owed.
    let value = "final";
    let ops: Vec<Op> = KEYSET.iter().map(|k| Op::Put(k.to_string())).collect();
    let got = txn(&mut c, ops.iter().map(|op| to_txn_op(op, value)).collect()).await;
    assert_eq!(got, model.apply(&ops, value));
    for w in &mut watchers {
        w.catch_up(&model).await;
    }
    println!(
        "seed {seed}: {created} watchers created, {compacted_cancels} cancelled as compacted, \
         {} live at the end, {} events, compacted at {}",
        watchers.len(),
        model.history.len(),
        model.compacted
    );
    assert!(
        compacted_cancels > 0 && created > 10,
        "the seed should exercise compaction"
    );
    model.history.len()
}

#[tokio::test]
async fn randomized_histories() {
    for seed in [7, 1234] {
        on_etcd_then_subject(&[], |c| async move {
            random_histories(c, seed).await;
        })
        .await;
    }
}

// ----- 9. Restart -----

#[tokio::test]
async fn rewatch_after_kill9_and_restart_gets_exactly_the_missed_events() {
    for kind in [Kind::Etcd, Kind::subject()] {
        let mut node = Node::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        println!("--- against {kind:?} at {}", node.endpoint());
        let mut c = Client::connect([node.endpoint()], None).await.unwrap();
        let (mut stream, _) = watch(&mut c, "r/", WatchOptions::new().with_prefix()).await;
        for i in 0..5 {
            put(&mut c, &format!("r/{i}"), "a").await; // 2..=6
        }
        let seen = read_until(&mut stream, reached(6)).await;
        let last_seen = events(&seen).last().unwrap().rev();
        assert_eq!(last_seen, 6);
        // Acknowledged, but the watcher never reads them.
        for i in 3..8 {
            put(&mut c, &format!("r/{i}"), "b").await; // 7..=11
        }
        node.kill9();
        drop(stream);
        node.restart().unwrap_or_else(|e| panic!("{e:#}"));
        let mut c = Client::connect([node.endpoint()], None).await.unwrap();
        for i in 7..10 {
            put(&mut c, &format!("r/{i}"), "c").await; // 12..=14
        }
        let (mut stream, created) = watch(
            &mut c,
            "r/",
            WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_start_revision(last_seen + 1),
        )
        .await;
        assert!(
            created.created && !created.canceled,
            "{kind:?}: {created:?}"
        );
        let evs = events(&read_until(&mut stream, reached(14)).await);
        let got: Vec<(i64, &str, &str, i64, Option<&str>)> = evs
            .iter()
            .map(|e| {
                (
                    e.rev(),
                    e.kv.key.as_str(),
                    e.kv.value.as_str(),
                    e.kv.version,
                    e.prev.as_ref().map(|p| p.value.as_str()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (7, "r/3", "b", 2, Some("a")),
                (8, "r/4", "b", 2, Some("a")),
                (9, "r/5", "b", 1, None),
                (10, "r/6", "b", 1, None),
                (11, "r/7", "b", 1, None),
                (12, "r/7", "c", 2, Some("b")),
                (13, "r/8", "c", 1, None),
                (14, "r/9", "c", 1, None),
            ],
            "{kind:?}"
        );
        assert_next_is_only(&mut c, &mut stream, "r/sentinel").await;
    }
}

/// `etcdctl watch` (key, prefix, range, history, json, interactive) prints the same on etcd and
/// on Conclave; each watch is stopped once it has printed the lines its history makes.
#[test]
fn etcdctl_watch_sessions() {
    let txn = "\nput a 4\nput c 5\n\n\n";
    assert_same_as_etcd(
        &[],
        &[
            ctl("put a 1"),
            ctl("put ab 2"),
            ctl("put b 3"),
            ctl("del a"),
            ctl_stdin("txn", txn),
            ctl_lines("watch a --rev 1", None, 9),
            ctl_lines("watch a --prefix --rev 1", None, 12),
            ctl_lines("watch a b --rev 1", None, 12),
            ctl_lines("watch a --rev 2 --prev-kv -w json", None, 1),
            ctl_lines("watch --prefix '' --rev 1 -w json", None, 1),
            ctl_lines("watch -i", Some("watch c --rev 1\n"), 3),
        ],
    );
}
