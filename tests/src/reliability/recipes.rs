//! Lock and election clients: each takes a lease, acquires the lock (etcd's v3lock service) or
//! wins the election (v3election), holds it a moment, then unlocks or resigns and revokes the
//! lease. On Conclave both services are recipe plugins, so these are plugin calls. Every grant is
//! recorded with the revision it was answered at (a lock's) and the revision of a read made just
//! after it: the ownership check then asks the log whether the key it was given was the oldest
//! one under the name there — the fencing revision that makes the lock exclusive and the
//! election's leader one per term.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use etcd_client::{GetOptions, LockOptions, ResignOptions};
use rand::Rng;
use rand::rngs::StdRng;

use super::history::Ownership;
use super::workload::{Clock, PREFIX, connect_unless_stopped, header_revision};

/// The lock's name: its owners' keys are `k/lock/<lease>`.
pub fn lock_name() -> String {
    format!("{PREFIX}lock")
}

/// The election's name: its candidates' keys are `k/election/<lease>`.
pub fn election_name() -> String {
    format!("{PREFIX}election")
}

/// The owners' leases: long enough to outlive a hold and a few faults.
const OWNER_TTL: i64 = 5;
/// How long a lock or election client waits to be granted before it gives up.
const GRANT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a recipe client takes.
#[derive(Clone, Copy, Debug)]
pub enum Recipe {
    Lock,
    Election,
}

/// A recipe client's loop until `stop`: every grant it was answered.
pub async fn recipe_loop(client: usize, recipe: Recipe, endpoints: Vec<String>, mut rng: StdRng, clock: Clock, stop: Arc<AtomicBool>) -> Vec<Ownership> {
    let mut grants = Vec::new();
    for sequence in 0.. {
        let Some(mut etcd) = connect_unless_stopped(&endpoints, GRANT_TIMEOUT, &stop).await else { break };
        let Ok(lease) = etcd.lease_grant(OWNER_TTL, None).await else { continue };
        let invoked = clock.now();
        let granted = match recipe {
            Recipe::Lock => etcd.lock(lock_name(), Some(LockOptions::new().with_lease(lease.id()))).await.map(|locked| {
                let grant = (lock_name(), String::from_utf8_lossy(locked.key()).into_owned(), Some(header_revision(locked.header())));
                (grant, None)
            }),
            Recipe::Election => etcd.campaign(election_name(), format!("e{client}-{sequence}"), lease.id()).await.map(|won| {
                let leader = won.leader().cloned();
                let key = leader.as_ref().map_or(String::new(), |l| String::from_utf8_lossy(l.key()).into_owned());
                ((election_name(), key, None), leader)
            }),
        };
        if let Ok(((name, key, granted_at), leader)) = granted {
            let completed = clock.now();
            let confirmed_at = etcd.get(name.as_str(), Some(GetOptions::new().with_prefix().with_keys_only())).await.ok().map(|got| header_revision(got.header()));
            grants.push(Ownership { client, name, key: key.clone(), granted_at, confirmed_at, invoked, completed });
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            let _ = match leader {
                Some(leader) => etcd.resign(Some(ResignOptions::new().with_leader(leader))).await.map(drop),
                None => etcd.unlock(key).await.map(drop),
            };
        }
        let _ = etcd.lease_revoke(lease.id()).await;
    }
    grants
}

/// Whether `key` is one of the recipes' own keys (written by the lock and election services,
/// checked by ownership, not by the clients' operations).
pub fn is_recipe_key(key: &str) -> bool {
    [lock_name(), election_name()].iter().any(|name| key.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with('/')))
}
