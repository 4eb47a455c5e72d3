//! `--snapshot-count` snapshots the store and purges the log behind it; a node killed after that
//! restarts from the snapshot plus the remaining log with nothing lost.

use conclave_tests::{Kind, Node};
use etcd_client::{Client, GetOptions};

#[tokio::test]
async fn restart_after_snapshots_and_log_purges_keeps_everything() {
    let mut node = Node::start(Kind::subject(), &["--snapshot-count", "10"]).unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = Client::connect([node.endpoint()], None).await.unwrap();
    for i in 0..100 {
        client.put(format!("key{i:03}"), format!("v{i}"), None).await.unwrap();
    }
    client.delete("key050", None).await.unwrap();
    node.kill9();
    node.restart().unwrap_or_else(|e| panic!("{e:#}"));

    let mut client = Client::connect([node.endpoint()], None).await.unwrap();
    let all = client.get("key", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(all.count(), 99);
    assert_eq!(all.header().unwrap().revision(), 102);
    let old = client.get("key050", Some(GetOptions::new().with_revision(52))).await.unwrap();
    assert_eq!(old.kvs()[0].value_str().unwrap(), "v50", "history before the snapshot is readable");
    let put = client.put("after", "x", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 103);
}
