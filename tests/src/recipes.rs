//! Calling the recipe plugins (registry, config) with JSON from tests.

use std::time::Duration;

use conclave_proto::conclave::plugin::InvokeResponse;
use etcd_client::{Client, GetOptions};
use serde_json::Value;
use tonic::{Status, Streaming};

use crate::plugins::Plugins;

/// One recipe plugin on one member, spoken to in JSON.
#[derive(Clone)]
pub struct Recipe {
    plugins: Plugins,
    plugin: &'static str,
}

impl Recipe {
    pub async fn connect(endpoint: &str, plugin: &'static str) -> Recipe {
        Recipe { plugins: Plugins::connect(endpoint).await, plugin }
    }

    pub async fn call(&self, method: &str, payload: Value) -> Result<Value, Status> {
        let answer = self.plugins.invoke(self.plugin, method, payload.to_string()).await?;
        Ok(serde_json::from_slice(&answer).unwrap_or_else(|e| panic!("{} {method}: answer is not JSON: {e}", self.plugin)))
    }

    /// [`Recipe::call`] that must succeed.
    pub async fn must(&self, method: &str, payload: Value) -> Value {
        self.call(method, payload.clone()).await.unwrap_or_else(|e| panic!("{} {method} {payload}: {e:?}", self.plugin))
    }

    pub async fn stream(&self, method: &str, payload: Value) -> Result<JsonStream, Status> {
        Ok(JsonStream(self.plugins.invoke_stream(self.plugin, method, payload.to_string()).await?))
    }
}

/// The messages of a streaming call, each parsed.
pub struct JsonStream(Streaming<InvokeResponse>);

impl JsonStream {
    /// The next message; panics if none comes within `timeout` or the stream ends.
    pub async fn next(&mut self, timeout: Duration) -> Value {
        match tokio::time::timeout(timeout, self.0.message()).await {
            Ok(Ok(Some(message))) => serde_json::from_slice(&message.payload).expect("a JSON message"),
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Err(status)) => panic!("the stream failed: {status:?}"),
            Err(_) => panic!("no message within {timeout:?}"),
        }
    }

    /// The stream's error, asserting that it fails within `timeout` before sending anything.
    pub async fn error(mut self, timeout: Duration) -> Status {
        match tokio::time::timeout(timeout, self.0.message()).await {
            Ok(Err(status)) => status,
            other => panic!("expected the stream to fail, got {other:?}"),
        }
    }
}

/// The keys under `prefix`, in key order.
pub async fn keys(client: &mut Client, prefix: &str) -> Vec<String> {
    let range = client.get(prefix, Some(GetOptions::new().with_prefix())).await.expect("get prefix");
    range.kvs().iter().map(|kv| kv.key_str().expect("UTF-8").to_string()).collect()
}

/// Wait until the keys under `prefix` are `expected` (a recipe removes a key after its caller
/// left, say); panics with `why` if they are not within `timeout`.
pub async fn wait_for_keys(client: &mut Client, prefix: &str, expected: &[String], timeout: Duration, why: &str) {
    let deadline = tokio::time::Instant::now() + timeout;
    while keys(client, prefix).await != expected {
        assert!(tokio::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
