//! The JSON methods for `conclavectl` and `plugin invoke`.

use concurrency::Deadline;
use conclave_guest::{Error, Result, json, kv};
use serde::{Deserialize, Serialize};

use crate::mutex::{Held, Wait, lock};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Acquire {
    name: String,
    lease: i64,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TryAcquire {
    name: String,
    lease: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    key: String,
}

#[derive(Serialize)]
struct Answer {
    key: String,
    revision: i64,
}

fn answer(held: Held) -> Result<Vec<u8>> {
    json::to_vec(&Answer { key: String::from_utf8_lossy(&held.key).into_owned(), revision: held.revision })
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument("a lock needs a name"));
    }
    Ok(())
}

pub fn acquire(payload: &[u8]) -> Result<Vec<u8>> {
    let Acquire { name, lease, timeout_ms } = json::parse(payload)?;
    check_name(&name)?;
    let deadline = Deadline::within_ms(timeout_ms);
    answer(lock(name.as_bytes(), lease, Wait::Until(deadline))?)
}

pub fn try_acquire(payload: &[u8]) -> Result<Vec<u8>> {
    let TryAcquire { name, lease } = json::parse(payload)?;
    check_name(&name)?;
    answer(lock(name.as_bytes(), lease, Wait::No)?)
}

pub fn release(payload: &[u8]) -> Result<Vec<u8>> {
    let Release { key } = json::parse(payload)?;
    let deleted = kv::delete_range(&kv::DeleteRangeRequest::key(key.clone()))?;
    if deleted.deleted == 0 {
        return Err(Error::failed_precondition(format!("lock not held: {key} does not exist")));
    }
    json::to_vec(&Answer { key, revision: deleted.header.revision })
}
