//! Reading a member's keys back: waiting (bounded, polled) until it has caught up with what was
//! written, and checking that linearizable reads there return it all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

/// Bound on waits for the cluster to make progress or catch up.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between polls of a member that is catching up, and after a failed write.
pub const POLL: Duration = Duration::from_millis(50);

/// A client of `endpoint` alone; panics if it cannot connect.
pub async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], None).await.unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// The value of `key` read from `client`, linearizably or serializably.
pub async fn value(client: &mut Client, key: &str, serializable: bool) -> Option<String> {
    let options = serializable.then(|| GetOptions::new().with_serializable());
    let resp = client.get(key, options).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
    resp.kvs().first().map(|kv| kv.value_str().unwrap().to_string())
}

/// Polls serializable reads on `endpoint` until every key of `want` has its value.
pub async fn wait_until_caught_up(endpoint: &str, want: &HashMap<String, String>) {
    let mut client = connect(endpoint).await;
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    for (key, expected) in want {
        while value(&mut client, key, true).await.as_ref() != Some(expected) {
            assert!(Instant::now() < deadline, "{endpoint} did not catch up with {key} in {PROGRESS_TIMEOUT:?}");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Linearizable reads on `endpoint` return every key of `want` with its value.
pub async fn assert_all_readable(endpoint: &str, want: &HashMap<String, String>) {
    let mut client = connect(endpoint).await;
    for (key, expected) in want {
        assert_eq!(value(&mut client, key, false).await.as_ref(), Some(expected), "{key} read from {endpoint}");
    }
}

/// Waits until `endpoint` has caught up with every key of `want` (serializable reads), then
/// checks that linearizable reads there return them all.
pub async fn assert_caught_up(endpoint: &str, want: &HashMap<String, String>) {
    wait_until_caught_up(endpoint, want).await;
    assert_all_readable(endpoint, want).await;
}
