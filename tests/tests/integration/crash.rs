//! kill -9 at an arbitrary moment under concurrent writes, then restart: every acknowledged write
//! is there with the revision it was acknowledged at, and the revision counter carries on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use conclave_tests::{Kind, Node};
use etcd_client::Client;
use tokio::sync::Notify;

const WRITERS: usize = 8;
/// Kill once this many writes have been acknowledged in the current round.
const ACKS_BEFORE_KILL: usize = 200;
const ROUNDS: usize = 3;

/// key → (value, mod_revision) of every acknowledged put.
type Acked = Arc<Mutex<HashMap<String, (String, i64)>>>;

async fn write_until_killed(endpoint: String, writer: usize, round: usize, acked: Acked, enough: Arc<Notify>) {
    let Ok(mut client) = Client::connect([endpoint], None).await else { return };
    for seq in 0.. {
        let key = format!("w{writer}/r{round}/{seq}");
        let value = format!("{writer}-{round}-{seq}");
        let Ok(resp) = client.put(key.clone(), value.clone(), None).await else { return };
        let revision = resp.header().expect("put has a header").revision();
        let mut acked = acked.lock().unwrap();
        acked.insert(key, (value, revision));
        if acked.len() >= ACKS_BEFORE_KILL * (round + 1) {
            enough.notify_one();
        }
    }
}

async fn check_all_acked(endpoint: &str, acked: &Acked) -> i64 {
    let mut client = Client::connect([endpoint], None).await.expect("connect after restart");
    let acked = acked.lock().unwrap().clone();
    let mut newest = 0;
    for (key, (value, revision)) in &acked {
        let resp = client.get(key.as_str(), None).await.expect("get after restart");
        let kv = resp.kvs().first().unwrap_or_else(|| panic!("acknowledged {key} is lost"));
        assert_eq!(kv.value_str().unwrap(), value, "{key}");
        assert_eq!(kv.mod_revision(), *revision, "{key}");
        newest = newest.max(*revision);
    }
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill9() {
    let mut node = Node::start(Kind::subject(), &[]).expect("server starts");
    let acked: Acked = Arc::default();
    for round in 0..ROUNDS {
        let enough = Arc::new(Notify::new());
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(write_until_killed(node.endpoint(), w, round, acked.clone(), enough.clone())))
            .collect();
        enough.notified().await;
        node.kill9();
        for writer in writers {
            writer.await.expect("writer task");
        }
        node.restart().expect("server restarts after kill -9");

        let newest = check_all_acked(&node.endpoint(), &acked).await;
        let mut client = Client::connect([node.endpoint()], None).await.unwrap();
        let resp = client.put("after-restart", "x", None).await.expect("write after restart");
        let revision = resp.header().unwrap().revision();
        assert!(revision > newest, "revision went back: {revision} after acknowledged {newest}");
    }
}
