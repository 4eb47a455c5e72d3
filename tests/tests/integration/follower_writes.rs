//! A write through a follower is answered once that follower has applied it, as etcd answers a
//! proposal once the local member applied it: a serializable read on the same member right after
//! the answer sees the write, at its revision (put, txn, delete).

use conclave_tests::same_on_etcd_and_subject_clusters;
use etcd_client::{Client, GetOptions, Txn, TxnOp};

use conclave_tests::connect;

/// Writes of each kind, each followed at once by a serializable read: the answer to a forwarded
/// write and the entry's commit reach the follower at about the same time, so a follower that
/// answered before applying misses some of these reads.
const ROUNDS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serializable_read_right_after_a_write_through_a_follower_sees_it() {
    let misses = same_on_etcd_and_subject_clusters(3, &[], |cluster| async move {
        let leader = cluster.leader().await.expect("a leader");
        let mut client = connect(&cluster.members[(leader + 1) % 3].endpoint()).await;
        let mut misses = Vec::new();
        for round in 0..ROUNDS {
            let key = format!("k{round}");
            let put = client.put(key.as_str(), "put", None).await.expect("put through a follower");
            misses.extend(unseen(&mut client, &key, Some("put"), header_revision(put.header())).await);
            let txn = Txn::new().and_then([TxnOp::put(key.as_str(), "txn", None)]);
            let txn = client.txn(txn).await.expect("txn through a follower");
            misses.extend(unseen(&mut client, &key, Some("txn"), header_revision(txn.header())).await);
            let delete = client.delete(key.as_str(), None).await.expect("delete through a follower");
            misses.extend(unseen(&mut client, &key, None, header_revision(delete.header())).await);
        }
        misses
    })
    .await;
    assert!(misses.is_empty(), "serializable reads missed writes acknowledged by the same member: {misses:?}");
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.expect("a write answers with a header").revision()
}

/// What a serializable read of `key` on `client` gets wrong, if anything, just after a write at
/// `revision` left it with `value` (`None`: deleted).
async fn unseen(client: &mut Client, key: &str, value: Option<&str>, revision: i64) -> Option<String> {
    let read = client.get(key, Some(GetOptions::new().with_serializable())).await.expect("serializable get");
    let seen_revision = header_revision(read.header());
    let seen = read.kvs().first().map(|kv| (kv.value_str().expect("utf-8").to_string(), kv.mod_revision()));
    let expected = value.map(|v| (v.to_string(), revision));
    (seen != expected || seen_revision < revision)
        .then(|| format!("{key} after the write at {revision}: {seen:?} at store revision {seen_revision}"))
}
