//! etcd's `concurrency.Mutex`: join the queue under `NAME/`, then wait until every older key
//! is gone.

use concurrency::{Deadline, enqueue, wait_turn};
use conclave_guest::kv::Header;
use conclave_guest::node::log;
use conclave_guest::{Error, Result, kv};

/// A held lock.
pub struct Held {
    pub key: Vec<u8>,
    /// The key's create revision: the fencing token.
    pub revision: i64,
    pub header: Header,
}

/// How long to wait for older holders.
pub enum Wait {
    Until(Deadline),
    /// Not at all: fail when another key holds the lock.
    No,
}

/// Take the lock `name` for `lease`. When waiting fails (the caller went away, the deadline
/// passed) or it is taken and `wait` is [`Wait::No`], our key is removed before failing.
pub fn lock(name: &[u8], lease: i64, wait: Wait) -> Result<Held> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let queued = enqueue(&prefix, lease, b"")?;
    if queued.is_first() {
        return Ok(Held { key: queued.key, revision: queued.revision, header: queued.header });
    }
    let deadline = match wait {
        Wait::Until(deadline) => deadline,
        Wait::No => {
            remove(&queued.key);
            let holder = queued.first.map(|kv| kv.key).unwrap_or_default();
            return Err(Error::failed_precondition(format!("locked by {}", String::from_utf8_lossy(&holder))));
        }
    };
    // Our lease may have ended while we waited: then the lock is not ours.
    let waited = wait_turn(&prefix, &queued, deadline)
        .and_then(|turn| turn.ok_or_else(|| Error::failed_precondition("mutex: session is expired")));
    match waited {
        Ok(header) => Ok(Held { key: queued.key, revision: queued.revision, header }),
        Err(e) => {
            remove(&queued.key);
            Err(e)
        }
    }
}

/// Delete our key after a failed wait; the wait's error is what the caller needs to hear.
fn remove(key: &[u8]) {
    if let Err(e) = kv::delete(key) {
        log::warn(&format!("cannot remove {}: {e}", String::from_utf8_lossy(key)));
    }
}
