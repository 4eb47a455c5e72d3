//! Lease clients: each grants a lease, puts a key of its own under it, keeps it alive a few
//! times (reading the key back after each keepalive), then revokes it or lets it expire.
//! Everything is recorded for the lease checks: a key must outlive every keepalive and TTL its
//! lease was given, a revoke deletes the key at the revoke's revision, and once nobody keeps a
//! lease alive its key goes.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use etcd_client::PutOptions;
use rand::Rng;
use rand::rngs::StdRng;

use super::history::{LeaseRecord, Operation, Outcome, Request};
use super::workload::{Clock, PREFIX, connect_unless_stopped, header_revision, recorded};

/// How long a lease client waits for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest TTL a lease client asks for; its key goes at most this long after it stops.
pub const MAX_TTL: i64 = 4;

/// A lease client's loop until `stop`: its leases, and the puts and gets it made (as any
/// client's operations).
pub async fn lease_loop(client: usize, endpoints: Vec<String>, mut rng: StdRng, clock: Clock, stop: Arc<AtomicBool>) -> (Vec<LeaseRecord>, Vec<Operation>) {
    let mut leases = Vec::new();
    let mut operations = Vec::new();
    for sequence in 0.. {
        let Some(mut etcd) = connect_unless_stopped(&endpoints, REQUEST_TIMEOUT, &stop).await else { break };
        let ttl = rng.random_range(2..=MAX_TTL);
        let invoked = clock.now();
        let Ok(granted) = etcd.lease_grant(ttl, None).await else { continue };
        let key = format!("{PREFIX}lease{client}-{sequence}");
        let mut lease = LeaseRecord { key: key.clone(), alive: vec![(invoked, granted.ttl(), header_revision(granted.header()))], revoked: None };
        let value = format!("l{client}-{sequence}");
        let invoked = clock.now();
        let put = etcd.put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(granted.id()))).await;
        let outcome = match put {
            Ok(put) => Outcome::Written { revision: header_revision(put.header()) },
            Err(e) => Outcome::Unknown(e.to_string()),
        };
        let completed = (!matches!(outcome, Outcome::Unknown(_))).then(|| clock.now());
        operations.push(Operation { client, request: Request::Put { key: key.clone(), value }, invoked, completed, outcome });
        if let Ok((mut keeper, mut stream)) = etcd.lease_keep_alive(granted.id()).await {
            for _ in 0..rng.random_range(0..4) {
                tokio::time::sleep(Duration::from_millis(ttl as u64 * 1000 / 3)).await;
                let invoked = clock.now();
                let answer = async {
                    keeper.keep_alive().await.ok()?;
                    tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await.ok()?.ok().flatten()
                };
                let Some(kept) = answer.await else { break };
                lease.alive.push((invoked, kept.ttl(), header_revision(kept.header())));
                if kept.ttl() <= 0 {
                    break;
                }
                let request = Request::Get { key: key.clone(), serializable: false };
                operations.push(recorded(&mut etcd, client, request, clock).await);
            }
        }
        if rng.random_bool(0.5) {
            let invoked = clock.now();
            let outcome = match etcd.lease_revoke(granted.id()).await {
                Ok(revoked) => Outcome::Written { revision: header_revision(revoked.header()) },
                Err(e) => Outcome::Unknown(e.to_string()),
            };
            lease.revoked = Some((invoked, outcome));
        }
        leases.push(lease);
    }
    (leases, operations)
}
