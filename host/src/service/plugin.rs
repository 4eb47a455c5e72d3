//! Plugins: deploy, list, get, remove and invoke. A deploy is compiled and checked on the member
//! that takes it before anything is proposed (so bad bytes are refused with a reason and nothing
//! is stored), then replicated through the log, and answered once this member serves it.

use std::sync::Arc;

use conclave_proto::conclave::plugin::method::Kind;
use conclave_proto::conclave::plugin::{
    DeployRequest, DeployResponse, GetRequest, GetResponse, InvokeRequest, InvokeResponse, ListRequest,
    ListResponse, Method, PluginInfo, PluginRemove, RemoveRequest, RemoveResponse, StoredPlugin,
};
use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Code;

use super::{Caller, Service};
use crate::error::EtcdError;
use crate::plugin::call::{Call, Failure};
use crate::plugin::{Loaded, Manifest, MethodKind};

/// Longest plugin name; names are also what callers type.
const MAX_NAME: usize = 64;
/// Messages of a streaming call buffered towards a slow caller before the plugin waits.
const STREAM_BUFFER: usize = 16;

/// Where a streaming call's messages go, then its outcome.
type Messages = mpsc::Sender<Result<Vec<u8>, Failure>>;

fn invalid(message: impl Into<String>) -> EtcdError {
    EtcdError::other(Code::InvalidArgument, message)
}

fn not_found(name: &str) -> EtcdError {
    EtcdError::other(Code::NotFound, format!("plugin {name}: not found"))
}

/// Letters, digits, '-' and '_', starting with a letter: a name that reads the same everywhere.
fn check_name(name: &str) -> Result<(), EtcdError> {
    let valid = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(invalid(format!(
            "invalid plugin name {name:?}: lowercase letters, digits, '-' and '_', starting with a letter, at most {MAX_NAME}"
        )));
    }
    Ok(())
}

pub fn info(plugin: &Loaded) -> PluginInfo {
    let compiled = &plugin.compiled;
    let methods = compiled
        .metadata
        .methods
        .iter()
        .map(|m| Method {
            name: m.name.clone(),
            kind: match m.kind {
                MethodKind::Unary => Kind::Unary,
                MethodKind::Streaming => Kind::Streaming,
            } as i32,
        })
        .collect();
    PluginInfo {
        name: plugin.name.to_string(),
        version: compiled.metadata.version.clone(),
        hash: compiled.hash_hex(),
        size: compiled.size as u64,
        methods,
        manifest: plugin.manifest.to_json(),
        builtin: plugin.builtin,
    }
}

impl Service {
    pub async fn plugin_deploy(&self, caller: &Caller, req: DeployRequest) -> Result<DeployResponse, EtcdError> {
        self.check_plugin_change(caller, &req.name)?;
        let flags = self.plugins.flags();
        if req.wasm.len() > flags.plugin_max_wasm_bytes {
            return Err(invalid(format!(
                "plugin {}: {} bytes of wasm is above this server's maximum {} (--plugin-max-wasm-bytes)",
                req.name,
                req.wasm.len(),
                flags.plugin_max_wasm_bytes
            )));
        }
        let manifest = Manifest::parse(&req.manifest, flags).map_err(|e| invalid(format!("plugin {}: {e}", req.name)))?;
        // Held until this member serves it, so the registry finds it compiled.
        let compiled = self.plugins.prepare(&req.wasm).await.map_err(|e| invalid(format!("plugin {}: {e}", req.name)))?;
        self.check_quota().await?;
        let stored = StoredPlugin { name: req.name.clone(), wasm: req.wasm, manifest: manifest.to_json() };
        let header = self.plugin_change(Req::PluginDeploy(stored)).await?;
        drop(compiled);
        let plugin = self.plugins.get(&req.name).ok_or_else(|| not_found(&req.name))?;
        Ok(DeployResponse { header: Some(header), plugin: Some(info(&plugin)) })
    }

    pub async fn plugin_remove(&self, caller: &Caller, req: RemoveRequest) -> Result<RemoveResponse, EtcdError> {
        self.check_plugin_change(caller, &req.name)?;
        if self.node.store.plugin(&req.name)?.is_none() {
            return Err(not_found(&req.name));
        }
        let header = self.plugin_change(Req::PluginRemove(PluginRemove { name: req.name })).await?;
        Ok(RemoveResponse { header: Some(header) })
    }

    pub async fn plugin_list(&self, _caller: &Caller, _req: ListRequest) -> Result<ListResponse, EtcdError> {
        self.plugins_applied().await;
        let plugins = self.plugins.list().iter().map(|p| info(p)).collect();
        Ok(ListResponse { header: self.current_header().await, plugins })
    }

    pub async fn plugin_get(&self, _caller: &Caller, req: GetRequest) -> Result<GetResponse, EtcdError> {
        self.plugins_applied().await;
        let plugin = self.plugins.get(&req.name).ok_or_else(|| not_found(&req.name))?;
        Ok(GetResponse { header: self.current_header().await, plugin: Some(info(&plugin)) })
    }

    /// Call a unary method of `plugin` with `payload`, for an adapter serving another protocol
    /// through a plugin (etcd's v3lock through `lock`, say): the failure tells the guest's own
    /// error apart from the host's.
    pub async fn call_plugin(&self, _caller: &Caller, plugin: &str, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let loaded = self.method(plugin, method, MethodKind::Unary).await.map_err(Failure::Host)?;
        let call = Call { method: method.into(), payload, emit: None };
        self.plugins.call(&loaded, self.clone(), call).await
    }

    /// Call a unary method.
    pub async fn plugin_invoke(&self, caller: &Caller, req: InvokeRequest) -> Result<InvokeResponse, EtcdError> {
        let payload = self.call_plugin(caller, &req.plugin, &req.method, req.payload).await.map_err(Failure::named)?;
        Ok(InvokeResponse { header: self.current_header().await, payload })
    }

    /// Call a streaming method: its messages, then the call's outcome (what it returned, when
    /// not empty, or why it failed), each with the header of this member as it is sent.
    pub async fn plugin_invoke_stream(
        &self,
        caller: &Caller,
        req: InvokeRequest,
    ) -> Result<impl Stream<Item = Result<InvokeResponse, EtcdError>> + Send + 'static, EtcdError> {
        let messages = self.call_plugin_stream(caller, &req.plugin, &req.method, req.payload).await.map_err(Failure::named)?;
        let service = self.clone();
        Ok(messages.then(move |message| {
            let service = service.clone();
            async move {
                let payload = message.map_err(Failure::named)?;
                Ok(InvokeResponse { header: service.current_header().await, payload })
            }
        }))
    }

    /// Call a streaming method of `plugin`, for an adapter serving another protocol's stream
    /// through a plugin (etcd's election Observe through `election`, say): its messages as they
    /// come, then its outcome, with the guest's own failure told apart from the host's.
    pub async fn call_plugin_stream(
        &self,
        _caller: &Caller,
        plugin: &str,
        method: &str,
        payload: Vec<u8>,
    ) -> Result<ReceiverStream<Result<Vec<u8>, Failure>>, Failure> {
        let loaded = self.method(plugin, method, MethodKind::Streaming).await.map_err(Failure::Host)?;
        Ok(self.relay(loaded, method.into(), payload))
    }

    /// Start a streaming call whose messages (then outcome) the stream yields as they come; the
    /// call stops (its instance dropped) as soon as the stream is dropped.
    fn relay(&self, plugin: Arc<Loaded>, method: String, payload: Vec<u8>) -> ReceiverStream<Result<Vec<u8>, Failure>> {
        let (out, messages) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().stream(plugin, Call { method, payload, emit: None }, out));
        ReceiverStream::new(messages)
    }

    /// Run a streaming call, passing each message it emits on to `out` as it comes, then its
    /// outcome; stop it as soon as the caller has gone.
    async fn stream(self, plugin: Arc<Loaded>, call: Call, out: Messages) {
        let (emit, mut emitted) = mpsc::channel::<Vec<u8>>(1);
        let call = Call { emit: Some(emit), ..call };
        let running = self.plugins.call(&plugin, self.clone(), call);
        tokio::pin!(running);
        let outcome = loop {
            tokio::select! {
                outcome = &mut running => break outcome,
                // The caller went away while the plugin waits (on a watch, say).
                () = out.closed() => return,
                Some(payload) = emitted.recv() => if out.send(Ok(payload)).await.is_err() { return },
            }
        };
        // Messages emitted just before the call returned are still queued.
        while let Ok(payload) = emitted.try_recv() {
            if out.send(Ok(payload)).await.is_err() {
                return;
            }
        }
        match outcome {
            Ok(payload) if payload.is_empty() => {}
            outcome => {
                let _ = out.send(outcome).await;
            }
        }
    }

    /// The plugin `name`, if it has `method` with that kind.
    async fn method(&self, name: &str, method: &str, kind: MethodKind) -> Result<Arc<Loaded>, EtcdError> {
        self.plugins_applied().await;
        let plugin = self.plugins.get(name).ok_or_else(|| not_found(name))?;
        match plugin.compiled.method(method) {
            None => Err(EtcdError::other(Code::Unimplemented, format!("plugin {name}: no method {method:?}"))),
            Some(found) if found != kind => Err(EtcdError::other(
                Code::FailedPrecondition,
                format!("plugin {name}: method {method} is {}; use {}", kind_name(found), invoke_name(found)),
            )),
            Some(_) => Ok(plugin),
        }
    }

    /// Wait until this member serves the plugins as of every entry it has applied: a deploy it
    /// applied but is still compiling is waited for, not answered "not found".
    async fn plugins_applied(&self) {
        let applied = *self.node.plugin_changes.borrow();
        self.plugins.synced_to(applied).await;
    }

    /// What every deploy and removal must pass: an administrator, on a member that takes them,
    /// for a name that is not built in.
    fn check_plugin_change(&self, caller: &Caller, name: &str) -> Result<(), EtcdError> {
        caller.check_admin()?;
        self.refuse_if_learner()?;
        if !self.plugins.flags().plugin_deploy {
            return Err(EtcdError::other(
                Code::FailedPrecondition,
                "plugin deploys and removals are disabled on this member (--plugin-deploy=false)",
            ));
        }
        check_name(name)?;
        if self.plugins.is_builtin(name) {
            return Err(EtcdError::other(
                Code::FailedPrecondition,
                format!("plugin {name} is built in: it comes with the binary and cannot be replaced or removed"),
            ));
        }
        Ok(())
    }

    /// Put a plugin change through the log, and wait until this member serves it.
    async fn plugin_change(&self, request: Req) -> Result<conclave_proto::etcdserverpb::ResponseHeader, EtcdError> {
        let applied = self.write(request, |r| if let Resp::Plugin(h) = r { Some(h) } else { None }).await?;
        self.plugins_applied().await;
        Ok(self.node.header(applied.revision).unwrap_or_default())
    }

    /// The header of an answer that reads no key: this member at its current revision.
    async fn current_header(&self) -> Option<conclave_proto::etcdserverpb::ResponseHeader> {
        self.node.header(self.node.store.current_rev_async().await)
    }
}

fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::Streaming => "streaming",
    }
}

fn invoke_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "Invoke",
        MethodKind::Streaming => "InvokeStream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        for ok in ["counter", "lock", "a-b_c9"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "Counter", "9lives", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(check_name(bad).unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
        }
    }
}
