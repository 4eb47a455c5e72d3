//! What the v3lock and v3election adapters share: calling a recipe plugin with protobuf bytes
//! and answering its failures as etcd's servers do.

use futures::{Stream, StreamExt};
use prost::Message;
use tonic::{Response, Status};

use crate::plugin::call::Failure;
use crate::service::{Caller, Service};

/// etcd serves these recipes through an internal client, so every failure of the recipe itself
/// reaches the caller as `Unknown` with etcd's words (e.g. "etcdserver: requested lease not
/// found", "election: not leader"); the host's own failures (limits, refused keys) keep theirs.
pub fn status(failure: Failure) -> Status {
    match failure {
        Failure::Guest { error, .. } => Status::unknown(error.to_string()),
        Failure::Host(error) => error.into(),
    }
}

/// Call `method` of `plugin` with `request`'s bytes and decode its answer.
pub async fn call<Req: Message, Resp: Message + Default>(
    service: &Service,
    plugin: &str,
    method: &str,
    request: Req,
) -> Result<Response<Resp>, Status> {
    let answer = service.call_plugin(&Caller::client(), plugin, method, request.encode_to_vec()).await.map_err(status)?;
    Ok(Response::new(decode(plugin, method, &answer)?))
}

/// Call streaming `method` of `plugin` with `request`'s bytes: each message decoded, then the
/// call's failure if it fails.
pub async fn call_stream<Req: Message, Resp: Message + Default + 'static>(
    service: &Service,
    plugin: &str,
    method: &str,
    request: Req,
) -> Result<impl Stream<Item = Result<Resp, Status>> + Send + 'static, Status> {
    let messages =
        service.call_plugin_stream(&Caller::client(), plugin, method, request.encode_to_vec()).await.map_err(status)?;
    let (plugin, method) = (plugin.to_owned(), method.to_owned());
    Ok(messages.map(move |message| decode(&plugin, &method, &message.map_err(status)?)))
}

fn decode<Resp: Message + Default>(plugin: &str, method: &str, answer: &[u8]) -> Result<Resp, Status> {
    Resp::decode(answer).map_err(|e| Status::internal(format!("plugin {plugin}: method {method}: bad answer: {e}")))
}
