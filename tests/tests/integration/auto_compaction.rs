//! `--auto-compaction-mode periodic` with a short retention compacts history older than the
//! retention by itself, as on etcd, and keeps the current values.

use std::time::{Duration, Instant};

use conclave_tests::{Kind, Node};
use etcd_client::{Client, GetOptions};

/// etcd compacts the history of a 2 s window every 2 s; allow for a slow machine.
const COMPACTED_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_drops_history_older_than_the_retention() {
    let node = Node::start(Kind::subject(), &["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"])
        .expect("server starts");
    let mut client = Client::connect([node.endpoint()], None).await.expect("connect");
    let first = client.put("k", "v1", None).await.expect("put").header().expect("header").revision();
    client.put("k", "v2", None).await.expect("put");

    let deadline = Instant::now() + COMPACTED_WITHIN;
    loop {
        match client.get("k", Some(GetOptions::new().with_revision(first))).await {
            Err(e) if e.to_string().contains("required revision has been compacted") => break,
            outcome => {
                assert!(Instant::now() < deadline, "revision {first} not compacted after {COMPACTED_WITHIN:?}: {outcome:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let current = client.get("k", None).await.expect("get");
    assert_eq!(current.kvs()[0].value_str().unwrap(), "v2");
}
