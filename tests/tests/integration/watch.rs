//! The Watch service through the `etcd-client` crate, compared with real etcd: every scenario
//! runs against a fresh etcd and a fresh Conclave, and their transcripts (full events, response
//! flags, watch ids, header revisions where deterministic) must be equal.
//!
//! No sleeps: every wait is a stream read bounded by a timeout, and "nothing more arrived" is
//! shown by a later write whose event must be the very next response.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use conclave_tests::watch::{
    Ev, Resp, assert_next_is_only, assert_once_in_order, events, next, next_raw, read_until, reached, resp, watch,
};
use conclave_tests::{
    Kind, Node, assert_same_as_etcd, ctl, ctl_lines, ctl_stdin, put, put_concurrently,
    same_on_etcd_and_subject, txn,
};
use etcd_client::proto::PbWatchResponse;
use etcd_client::{Client, CompactionOptions, DeleteOptions, TxnOp, WatchFilterType, WatchOptions};
use prost::Message;

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
        // 2 KB values: more than the client's HTTP/2 window and the server's queues hold, yet a
        // 1000-event replay response stays under the client's 4 MB message limit.
        let item = |i: usize| (format!("s/{i:05}"), format!("{i:0>2000}"));
        let written = tokio::time::timeout(Duration::from_secs(120), put_concurrently(&writer, WRITERS, KEYS, item))
            .await
            .unwrap_or_else(|_| panic!("{kind:?}: writers blocked for 120 s"));
        let took = began.elapsed();
        println!("{kind:?}: {KEYS} writes with an unread watcher took {took:?}");
        assert!(
            took < Duration::from_secs(30),
            "{kind:?}: writers took {took:?}"
        );

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

// ----- 8. Restart -----

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
