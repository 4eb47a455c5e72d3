//! The JSON methods for `conclavectl` and `plugin invoke`. Values are text.

use concurrency::Deadline;
use conclave_guest::{Error, KeyValue, Result, json};
use serde::{Deserialize, Serialize};

use crate::election::{self, Leader};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Campaign {
    name: String,
    lease: i64,
    #[serde(default)]
    value: String,
    timeout_ms: Option<u64>,
}

/// A candidate's key: what `campaign` answers and `proclaim`/`resign` take.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderKey {
    name: String,
    key: String,
    rev: i64,
    lease: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Proclaim {
    leader: LeaderKey,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resign {
    leader: LeaderKey,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    name: String,
}

#[derive(Serialize)]
struct Revision {
    revision: i64,
}

/// The leader as `leader` and `observe` show it; `revision` is the store's at the answer.
#[derive(Serialize)]
struct Proposal {
    key: String,
    value: String,
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
    revision: i64,
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

fn proposal(kv: KeyValue, revision: i64) -> Proposal {
    Proposal {
        key: text(kv.key),
        value: text(kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: kv.lease,
        revision,
    }
}

impl From<LeaderKey> for Leader {
    fn from(l: LeaderKey) -> Self {
        Leader { name: l.name.into_bytes(), key: l.key.into_bytes(), rev: l.rev, lease: l.lease }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument("an election needs a name"));
    }
    Ok(())
}

pub fn campaign(payload: &[u8]) -> Result<Vec<u8>> {
    let Campaign { name, lease, value, timeout_ms } = json::parse(payload)?;
    check_name(&name)?;
    let deadline = Deadline::within_ms(timeout_ms);
    let (leader, _) = election::campaign(name.as_bytes(), lease, value.as_bytes(), deadline)?;
    json::to_vec(&LeaderKey { name, key: text(leader.key), rev: leader.rev, lease: leader.lease })
}

pub fn proclaim(payload: &[u8]) -> Result<Vec<u8>> {
    let Proclaim { leader, value } = json::parse(payload)?;
    let header = election::proclaim(&leader.into(), value.as_bytes())?;
    json::to_vec(&Revision { revision: header.revision })
}

pub fn resign(payload: &[u8]) -> Result<Vec<u8>> {
    let Resign { leader } = json::parse(payload)?;
    let header = election::resign(&leader.into())?;
    json::to_vec(&Revision { revision: header.revision })
}

pub fn leader(payload: &[u8]) -> Result<Vec<u8>> {
    let Name { name } = json::parse(payload)?;
    check_name(&name)?;
    let (kv, header) = election::leader(name.as_bytes())?;
    json::to_vec(&proposal(kv, header.revision))
}

/// Streaming: one message per leader and per proclaimed value.
pub fn observe(payload: &[u8]) -> Result<Vec<u8>> {
    let Name { name } = json::parse(payload)?;
    check_name(&name)?;
    election::observe(name.as_bytes(), |header, kv| json::emit(&proposal(kv, header.revision)))?;
    Ok(Vec::new())
}
