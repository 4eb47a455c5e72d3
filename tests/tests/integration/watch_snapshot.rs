//! A watcher on a member that falls so far behind that it catches up by installing a snapshot
//! still gets every event exactly once, in order, as on etcd 3.4 (which moves its watchers back
//! to catch-up after a restore).

use std::time::Duration;

use conclave_tests::{Cluster, Kind, put_concurrently};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_on_a_follower_that_installs_a_snapshot_gets_every_event() {
    let kind = Kind::subject();
    let cluster = Cluster::start(kind, 3, &["--snapshot-count", "100"]).unwrap_or_else(|e| panic!("{e:#}"));
    let leader = cluster.leader().await.unwrap();
    let follower = &cluster.members[(leader + 1) % 3];
    let mut watching = Client::connect([follower.endpoint()], None).await.unwrap();
    let mut stream = watching.watch("k", Some(WatchOptions::new().with_prefix())).await.unwrap();
    let created = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
    assert!(created.created(), "{created:?}");

    follower.pause();
    let writer = Client::connect([cluster.members[leader].endpoint()], None).await.unwrap();
    let written = put_concurrently(&writer, WRITERS, PUTS, |i| (format!("k{i:05}"), format!("v{i}"))).await;
    follower.resume();

    let last = *written.keys().last().unwrap();
    let got = events_until(&mut stream, last).await;
    assert!(
        follower.log().contains("applied incoming snapshot"),
        "{kind:?}: the follower caught up without installing a snapshot; the test proves nothing"
    );
    assert!(got.windows(2).all(|pair| pair[0].0 < pair[1].0), "{kind:?}: revisions not strictly increasing");
    let want: Vec<(i64, String, String)> =
        written.iter().map(|(&rev, i)| (rev, format!("k{i:05}"), format!("v{i}"))).collect();
    assert_eq!(got.len(), want.len(), "{kind:?}: events received");
    assert!(got == want, "{kind:?}: events differ from the puts");
}
