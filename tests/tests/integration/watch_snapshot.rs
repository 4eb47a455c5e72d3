//! A watcher on a member that falls so far behind that it catches up by installing a snapshot
//! still gets every event exactly once, in order, or, when the snapshot compacted what it still
//! needed, is cancelled as compacted: as on etcd 3.4, which moves its watchers back to catch-up
//! after a restore.

use std::time::{Duration, Instant};

use conclave_tests::{Cluster, Kind, POLL, put_concurrently};
use etcd_client::{Client, EventType, WatchOptions, WatchStream};

/// Puts while the follower is stopped: more than etcd 3.4 keeps behind a snapshot (5,000
/// entries), so both servers must send the follower a snapshot.
const PUTS: usize = 6000;
const WRITERS: usize = 8;
/// Bound on each wait for the next watch response (a snapshot install included).
const WAIT: Duration = Duration::from_secs(60);

/// Every event the stream delivers, as (revision, key, value), until one at `last` or later.
async fn events_until(stream: &mut WatchStream, last: i64) -> Vec<(i64, String, String)> {
    let mut got: Vec<(i64, String, String)> = Vec::new();
    while got.last().is_none_or(|e| e.0 < last) {
        let response = match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            other => panic!("waiting for revision {last} after {} events: {other:?}", got.len()),
        };
        assert!(!response.canceled(), "watch cancelled: {response:?}");
        for event in response.events() {
            let kv = event.kv().expect("event has a kv");
            assert_eq!(event.event_type(), EventType::Put);
            got.push((kv.mod_revision(), kv.key_str().unwrap().into(), kv.value_str().unwrap().into()));
        }
    }
    got
}

/// A cluster of three with frequent snapshots, and a prefix watch on `k` created on a follower.
struct WatchedFollower {
    cluster: Cluster,
    leader: usize,
    follower: usize,
    stream: WatchStream,
}

impl WatchedFollower {
    async fn start() -> Self {
        let cluster = Cluster::start(Kind::subject(), 3, &["--snapshot-count", "100"]).unwrap_or_else(|e| panic!("{e:#}"));
        let leader = cluster.leader().await.unwrap();
        let follower = (leader + 1) % 3;
        let mut watching = Client::connect([cluster.members[follower].endpoint()], None).await.unwrap();
        let mut stream = watching.watch("k", Some(WatchOptions::new().with_prefix())).await.unwrap();
        let created = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
        assert!(created.created(), "{created:?}");
        WatchedFollower { cluster, leader, follower, stream }
    }

    /// Runs `writes` through the leader while the follower is stopped; what they return.
    async fn while_stopped<T>(&self, writes: impl AsyncFnOnce(Client) -> T) -> T {
        let follower = &self.cluster.members[self.follower];
        follower.pause();
        let writer = Client::connect([self.cluster.members[self.leader].endpoint()], None).await.unwrap();
        let out = writes(writer).await;
        follower.resume();
        out
    }

    /// Once the follower has caught up: proof that it did so by installing a snapshot. Polled:
    /// etcd may answer its watchers before it logs that the install is complete.
    async fn assert_installed_a_snapshot(&self) {
        let deadline = Instant::now() + WAIT;
        while !self.cluster.members[self.follower].log().contains("applied incoming snapshot") {
            assert!(
                Instant::now() < deadline,
                "{:?}: the follower caught up without installing a snapshot; the test proves nothing",
                Kind::subject()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

fn item(i: usize) -> (String, String) {
    (format!("k{i:05}"), format!("v{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_on_a_follower_that_installs_a_snapshot_gets_every_event() {
    let mut watched = WatchedFollower::start().await;
    let written = watched.while_stopped(async |writer| put_concurrently(&writer, WRITERS, PUTS, item).await).await;

    let got = events_until(&mut watched.stream, *written.keys().last().unwrap()).await;
    watched.assert_installed_a_snapshot().await;
    assert!(got.windows(2).all(|pair| pair[0].0 < pair[1].0), "revisions not strictly increasing");
    let want: Vec<(i64, String, String)> = written.iter().map(|(&rev, &i)| (rev, item(i).0, item(i).1)).collect();
    assert_eq!(got.len(), want.len(), "events received");
    assert!(got == want, "events differ from the puts");
}

/// When the snapshot holds a compaction past the revision a watcher still needs, the watcher is
/// cancelled with the compaction revision, as etcd cancels it, and gets no events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_whose_history_a_snapshot_compacted_is_cancelled_as_compacted() {
    let mut watched = WatchedFollower::start().await;
    let compacted = watched
        .while_stopped(async |mut writer| {
            let written = put_concurrently(&writer, WRITERS, PUTS, item).await;
            let at = *written.keys().last().unwrap();
            writer.compact(at, None).await.unwrap();
            // Snapshots every 100 entries: after 1,000 more, the snapshot the follower gets was
            // built after the compaction, even if building lags behind the writes.
            put_concurrently(&writer, WRITERS, 1000, |i| (format!("after{i}"), String::new())).await;
            at
        })
        .await;

    // Appends the leader sent as the follower stopped may still be waiting in its socket: it
    // can apply (and deliver) a first stretch of the history before the snapshot. Those events
    // come in order from the first write on; then the watcher is cancelled as compacted.
    let mut next = 2;
    let cancel = loop {
        let response = tokio::time::timeout(WAIT, watched.stream.message()).await.unwrap().unwrap().unwrap();
        if response.canceled() {
            break response;
        }
        for event in response.events() {
            assert_eq!(event.kv().unwrap().mod_revision(), next, "events before the snapshot are the history in order");
            next += 1;
        }
    };
    watched.assert_installed_a_snapshot().await;
    assert!(next <= compacted, "events delivered past the compaction at {compacted}: up to {next}");
    assert!(
        cancel.compact_revision() == compacted && cancel.events().is_empty(),
        "expected a cancel as compacted at {compacted}: {cancel:?}"
    );
}
