//! etcd's server-side leader election (the v3election service) as a plugin. A candidate for
//! NAME owns `NAME/<lease id in hex>` on its own lease; the oldest key under `NAME/` (lowest
//! create revision) is the leader and its value the leader's proposal. Because the layout is
//! etcd's, `etcdctl elect` (the same recipe, client-side) and this plugin's callers take part in
//! the same elections.
//!
//! Methods:
//! - `v3election-campaign`, `-proclaim`, `-leader`, `-resign`, and streaming `-observe`: the
//!   protobuf bytes of v3electionpb's requests and responses, for the v3election gRPC adapter.
//! - `campaign` `{"name": "web", "lease": 7587, "value": "10.0.0.1", "timeout_ms": 5000}`
//!   (value and timeout optional) → `{"name", "key": "web/1da3", "rev": 42, "lease": 7587}` once
//!   elected; on timeout the key is removed and the call fails with `timeout`.
//! - `proclaim` `{"leader": {…as campaign answered}, "value"}` → `{"revision"}`; fails with
//!   failed-precondition `election: not leader` when the key is gone.
//! - `resign` `{"leader"}` → `{"revision"}`: deletes the key if it is still this one.
//! - `leader` `{"name"}` → `{"key", "value", "create_revision", "mod_revision", "lease",
//!   "revision"}`; not-found `election: no leader`.
//! - `observe` `{"name"}` (streaming): the same record for the current leader, then for each
//!   proclaimed value and each next leader, in order.

mod election;
mod json_api;
mod v3election;

use conclave_guest::{Error, Metadata, Plugin, Result};

struct Election;

impl Plugin for Election {
    fn metadata() -> Metadata {
        Metadata::new("election", env!("CARGO_PKG_VERSION"))
            .unary("v3election-campaign")
            .unary("v3election-proclaim")
            .unary("v3election-leader")
            .streaming("v3election-observe")
            .unary("v3election-resign")
            .unary("campaign")
            .unary("proclaim")
            .unary("leader")
            .streaming("observe")
            .unary("resign")
    }

    fn handle(method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        match method {
            "v3election-campaign" => v3election::campaign(&payload),
            "v3election-proclaim" => v3election::proclaim(&payload),
            "v3election-leader" => v3election::leader(&payload),
            "v3election-observe" => v3election::observe(&payload),
            "v3election-resign" => v3election::resign(&payload),
            "campaign" => json_api::campaign(&payload),
            "proclaim" => json_api::proclaim(&payload),
            "leader" => json_api::leader(&payload),
            "observe" => json_api::observe(&payload),
            "resign" => json_api::resign(&payload),
            _ => Err(Error::unknown_method(method)),
        }
    }
}

conclave_guest::export_plugin!(Election);
