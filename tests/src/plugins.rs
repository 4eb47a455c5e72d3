//! Driving the plugin service (`conclave.plugin.Plugin`) from tests: deploy, list, get, remove and
//! invoke over a real gRPC connection, a background etcd load that counts its errors, and the
//! assertions the plugin tests share.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conclave_proto::conclave::plugin::plugin_client::PluginClient;
use conclave_proto::conclave::plugin::{
    DeployRequest, DeployResponse, GetRequest, InvokeRequest, ListRequest, PluginInfo, RemoveRequest,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::catch_up::connect;

/// The manifest tests grant the `misbehave` guest: `allowed/` only, with `limits` (a JSON object,
/// e.g. `{"timeout_ms": 3000}`; `{}` for the defaults).
pub fn misbehave_manifest(limits: &str) -> String {
    format!(r#"{{"read":["allowed/"],"write":["allowed/"],"limits":{limits}}}"#)
}

/// The plugins every member serves from its start: the crates of the workspace's `plugins/` with
/// a manifest, as host/build.rs finds them.
pub fn builtins() -> Vec<String> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let entries = std::fs::read_dir(&plugins).unwrap_or_else(|e| panic!("{}: {e}", plugins.display()));
    let mut names: Vec<String> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|dir| dir.join("manifest.json").is_file())
        .map(|dir| dir.file_name().expect("a name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The names a member serving the built-ins and `deployed` lists, sorted.
pub fn with_builtins(deployed: &[&str]) -> Vec<String> {
    let mut names = builtins();
    names.extend(deployed.iter().map(|n| n.to_string()));
    names.sort();
    names
}

/// A client of the plugin service on one member (`endpoint` as [`crate::Node::endpoint`] gives it).
#[derive(Clone)]
pub struct Plugins {
    client: PluginClient<Channel>,
    endpoint: String,
}

impl Plugins {
    /// Connects to `endpoint` (`http://host:port` or `host:port`); panics if it cannot.
    pub async fn connect(endpoint: &str) -> Plugins {
        let (url, channel) = Plugins::channel(endpoint);
        let channel = channel.connect().await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Plugins::on(url, channel)
    }

    /// A client of `endpoint` that connects at its first call (and again after the member was
    /// down): calls fail while it cannot, and after 10 s.
    pub fn connect_lazy(endpoint: &str) -> Plugins {
        let (url, channel) = Plugins::channel(endpoint);
        let channel = channel.timeout(Duration::from_secs(10)).connect_lazy();
        Plugins::on(url, channel)
    }

    fn channel(endpoint: &str) -> (String, tonic::transport::Endpoint) {
        let url = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
        let channel = Channel::from_shared(url.clone()).unwrap_or_else(|e| panic!("endpoint {url}: {e}"));
        (url, channel)
    }

    fn on(endpoint: String, channel: Channel) -> Plugins {
        Plugins { client: PluginClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20), endpoint }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn deploy(&self, name: &str, wasm: Vec<u8>, manifest: &str) -> Result<DeployResponse, Status> {
        let request = DeployRequest { name: name.to_string(), wasm, manifest: manifest.to_string() };
        Ok(self.client.clone().deploy(request).await?.into_inner())
    }

    /// Deploys the file at `wasm`; the plugin as the answer describes it.
    pub async fn deploy_file(&self, name: &str, wasm: &Path, manifest: &str) -> Result<PluginInfo, Status> {
        let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("reading {}: {e}", wasm.display()));
        let answer = self.deploy(name, bytes, manifest).await?;
        Ok(answer.plugin.expect("a deploy answers with the plugin"))
    }

    pub async fn list(&self) -> Result<Vec<PluginInfo>, Status> {
        Ok(self.client.clone().list(ListRequest {}).await?.into_inner().plugins)
    }

    /// The names [`Plugins::list`] gives, sorted.
    pub async fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.list().await.expect("list").into_iter().map(|p| p.name).collect();
        names.sort();
        names
    }

    pub async fn get(&self, name: &str) -> Result<PluginInfo, Status> {
        let answer = self.client.clone().get(GetRequest { name: name.to_string() }).await?.into_inner();
        Ok(answer.plugin.expect("a get answers with the plugin"))
    }

    pub async fn remove(&self, name: &str) -> Result<(), Status> {
        self.client.clone().remove(RemoveRequest { name: name.to_string() }).await?;
        Ok(())
    }

    /// Calls the unary `method`; the answer's payload.
    pub async fn invoke(&self, plugin: &str, method: &str, payload: impl Into<Vec<u8>>) -> Result<Vec<u8>, Status> {
        let request = InvokeRequest { plugin: plugin.to_string(), method: method.to_string(), payload: payload.into() };
        Ok(self.client.clone().invoke(request).await?.into_inner().payload)
    }

    /// [`Plugins::invoke`] with a text answer.
    pub async fn invoke_text(&self, plugin: &str, method: &str, payload: impl Into<Vec<u8>>) -> Result<String, Status> {
        let bytes = self.invoke(plugin, method, payload).await?;
        Ok(String::from_utf8(bytes).expect("a text answer"))
    }

    /// Calls the streaming `method`: the stream of its messages.
    pub async fn invoke_stream(
        &self,
        plugin: &str,
        method: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<tonic::Streaming<conclave_proto::conclave::plugin::InvokeResponse>, Status> {
        let request = InvokeRequest { plugin: plugin.to_string(), method: method.to_string(), payload: payload.into() };
        Ok(self.client.clone().invoke_stream(request).await?.into_inner())
    }

    /// Every message of a streaming call until it ends, as text; the first error ends it.
    pub async fn collect_stream(&self, plugin: &str, method: &str, payload: impl Into<Vec<u8>>) -> Result<Vec<String>, Status> {
        let mut stream = self.invoke_stream(plugin, method, payload).await?;
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await? {
            messages.push(String::from_utf8(message.payload).expect("a text message"));
        }
        Ok(messages)
    }

    /// Polls [`Plugins::get`] until `name` is served with `hash` (or, with `None`, until it is
    /// not found), up to `timeout`; how long that took.
    pub async fn wait_for(&self, name: &str, hash: Option<&str>, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.get(name).await;
            let done = match (&got, hash) {
                (Ok(info), Some(hash)) => info.hash == hash,
                (Err(status), None) => status.code() == Code::NotFound,
                _ => false,
            };
            if done {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "{}: plugin {name} still {got:?} after {timeout:?}, waiting for {}",
                self.endpoint,
                hash.map_or("it to be gone".to_string(), |h| format!("hash {h}"))
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Asserts that `result` failed with `code` and a message containing every one of `parts`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, parts: &[&str]) -> Status {
    let status = match result {
        Err(status) => status,
        Ok(value) => panic!("expected {code:?} {parts:?}, got Ok({value:?})"),
    };
    assert_eq!(status.code(), code, "{status:?}");
    for part in parts {
        assert!(status.message().contains(part), "{:?} is not in the message of {status:?}", part);
    }
    status
}

/// Asserts that the log shows no panic of the server itself: a line starting "thread '…'
/// panicked" (a guest's panic shows only inside log lines about the plugin call).
#[track_caller]
pub fn assert_no_server_panic(log: &str) {
    let panics: Vec<&str> = log.lines().filter(|l| l.starts_with("thread '") && l.contains("panicked")).collect();
    assert!(panics.is_empty(), "the server panicked: {panics:#?}\n--- log ---\n{log}");
}

/// Clients reading and writing their own keys in a loop until stopped, counting operations and
/// errors: what must keep working while plugin calls misbehave.
pub struct Background {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Vec<String>>>,
}

impl Background {
    /// `clients` tasks, each a put of `bg/<task>/<n>` then a linearizable get of it, in a loop.
    pub async fn start(endpoint: &str, clients: usize) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for task in 0..clients {
            let mut client = connect(endpoint).await;
            let (stop, ops) = (stop.clone(), ops.clone());
            tasks.push(tokio::spawn(async move {
                let mut errors = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("bg/{task}/{}", n % 100);
                    let value = n.to_string();
                    let call = async {
                        client.put(key.as_str(), value.as_str(), None).await.map_err(|e| format!("put {key}: {e}"))?;
                        let got = client.get(key.as_str(), None).await.map_err(|e| format!("get {key}: {e}"))?;
                        match got.kvs().first().map(|kv| kv.value()) {
                            Some(v) if v == value.as_bytes() => Ok(()),
                            other => Err(format!("get {key}: {other:?}, wrote {value}")),
                        }
                    };
                    match tokio::time::timeout(Duration::from_secs(5), call).await {
                        Ok(Ok(())) => {
                            ops.fetch_add(2, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => errors.push(e),
                        Err(_) => errors.push(format!("put+get of {key} took over 5 s")),
                    }
                    n += 1;
                }
                errors
            }));
        }
        Background { stop, ops, tasks }
    }

    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Waits until the load has made `more` operations beyond what it had made at the call.
    pub async fn wait_for_progress(&self, more: u64, timeout: Duration) {
        let target = self.ops() + more;
        let deadline = Instant::now() + timeout;
        while self.ops() < target {
            assert!(Instant::now() < deadline, "the background load made {} of {target} operations in {timeout:?}", self.ops());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the load: (operations made, errors seen).
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for task in self.tasks {
            errors.extend(task.await.expect("a background client task"));
        }
        (self.ops.load(Ordering::Relaxed), errors)
    }
}
