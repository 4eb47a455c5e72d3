//! The Lease service: etcdctl sessions compared with etcd, and lease semantics through the
//! `etcd-client` crate, each check run against etcd first and then against Conclave.

use std::time::{Duration, Instant};

use conclave_tests::{Kind, Node, assert_same_as_etcd, ctls, err, on_etcd_then_subject, status};
use etcd_client::{
    Client, Error, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
};
use tonic::Code;

const NOT_FOUND: &str = "etcdserver: requested lease not found";
/// What etcd grants for any shorter TTL with the default heartbeat and election timeout.
const MIN_TTL: i64 = 2;

#[test]
fn etcdctl_lease_commands() {
    assert_same_as_etcd(
        &[],
        &ctls(&[
            "lease grant 600",
            "put k v --lease {lease}",
            "put other v",
            "lease timetolive {lease}",
            // One key only: etcd lists attached keys in no particular order.
            "lease timetolive {lease} --keys",
            "lease timetolive {lease} --keys -w json",
            "lease list",
            "lease list -w json",
            "lease keep-alive --once {lease}",
            "lease keep-alive --once {lease} -w json",
            "lease revoke {lease}",
            "get k -w json",
            "get '' --prefix --keys-only",
            "lease timetolive {lease}",
            "lease timetolive {lease} -w json",
            "lease revoke {lease}",
            "lease keep-alive --once {lease}",
            "lease timetolive 1234 -w fields",
            "lease grant 1",
            "lease grant 0 -w json",
            "lease grant 9000000001",
        ]),
    );
}

async fn present(c: &mut Client, key: &str) -> bool {
    c.get(key, None).await.expect("get").count() > 0
}

/// Polls until `key` is gone and returns when that was seen, measured from `since`; `None` if it
/// is still there `limit` after `since`.
async fn vanished(c: &mut Client, key: &str, since: Instant, limit: Duration) -> Option<Duration> {
    loop {
        if !present(c, key).await {
            return Some(since.elapsed());
        }
        if since.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn with_lease(id: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(id))
}

#[tokio::test]
async fn revoke_deletes_all_keys_at_one_revision() {
    on_etcd_then_subject(&[], |mut c| async move {
        let id = c.lease_grant(600, None).await.unwrap().id();
        for key in ["a", "b", "c"] {
            c.put(key, "v", with_lease(id)).await.unwrap();
        }
        c.put("d", "v", None).await.unwrap();
        let before = c.get("d", None).await.unwrap().header().unwrap().revision();
        let ttl = c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
        let mut attached: Vec<&[u8]> = ttl.keys().iter().map(Vec::as_slice).collect();
        attached.sort();
        assert_eq!(attached, [b"a", b"b", b"c"]);
        assert_eq!(ttl.granted_ttl(), 600);

        let revoked = c.lease_revoke(id).await.unwrap();
        assert_eq!(revoked.header().unwrap().revision(), before + 1);
        let now = c.get("", Some(GetOptions::new().with_from_key())).await.unwrap();
        assert_eq!(now.kvs().len(), 1, "only d is left");
        let at = |rev| Some(GetOptions::new().with_from_key().with_revision(rev));
        assert_eq!(c.get("", at(before)).await.unwrap().count(), 4);
        assert_eq!(c.get("", at(before + 1)).await.unwrap().count(), 1);
        assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
        // A revoke of a lease with no keys leaves the revision alone.
        let empty = c.lease_grant(600, None).await.unwrap().id();
        assert_eq!(c.lease_revoke(empty).await.unwrap().header().unwrap().revision(), before + 1);
    })
    .await;
}

#[tokio::test]
async fn short_lease_expires_on_time() {
    on_etcd_then_subject(&[], |mut c| async move {
        let grant = c.lease_grant(1, None).await.unwrap();
        let granted = Instant::now();
        assert_eq!(grant.ttl(), MIN_TTL, "a TTL below the minimum is raised to it");
        c.put("k", "v", with_lease(grant.id())).await.unwrap();
        let ttl = Duration::from_secs(MIN_TTL as u64);
        let gone = vanished(&mut c, "k", granted, ttl + Duration::from_secs(2))
            .await
            .expect("the key outlived its lease by more than 2 s");
        assert!(gone >= ttl - Duration::from_secs(1), "expired early, after {gone:?}");
        assert_eq!(c.lease_time_to_live(grant.id(), None).await.unwrap().ttl(), -1);
    })
    .await;
}

#[tokio::test]
async fn keep_alive_keeps_the_lease() {
    on_etcd_then_subject(&[], |mut c| async move {
        let id = c.lease_grant(MIN_TTL, None).await.unwrap().id();
        c.put("k", "v", with_lease(id)).await.unwrap();
        let (mut keeper, mut answers) = c.lease_keep_alive(id).await.unwrap();
        let start = Instant::now();
        // Three TTLs' worth of renewals, twice a second.
        while start.elapsed() < Duration::from_secs(3 * MIN_TTL as u64) {
            keeper.keep_alive().await.unwrap();
            let answer = answers.message().await.unwrap().expect("a keep-alive answer");
            assert_eq!((answer.id(), answer.ttl()), (id, MIN_TTL));
            assert!(present(&mut c, "k").await, "expired while kept alive");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(keeper);
        let stopped = Instant::now();
        vanished(&mut c, "k", stopped, Duration::from_secs(MIN_TTL as u64 + 2))
            .await
            .expect("expires once keep-alives stop");
    })
    .await;
}

#[tokio::test]
async fn client_chosen_ids_and_errors() {
    on_etcd_then_subject(&[], |mut c| async move {
        let chosen = Some(LeaseGrantOptions::new().with_id(0x1234));
        let grant = c.lease_grant(600, chosen.clone()).await.unwrap();
        assert_eq!((grant.id(), grant.ttl()), (0x1234, 600));
        assert_eq!(
            status(c.lease_grant(60, chosen).await),
            err(Code::FailedPrecondition, "etcdserver: lease already exists")
        );
        assert_eq!(
            status(c.lease_grant(9_000_000_001, None).await),
            err(Code::OutOfRange, "etcdserver: too large lease TTL")
        );
        let picked = c.lease_grant(600, None).await.unwrap().id();
        assert!(picked > 0 && picked != 0x1234);
        let mut listed: Vec<i64> = c.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
        listed.sort();
        let mut expected = vec![0x1234, picked];
        expected.sort();
        assert_eq!(listed, expected);
    })
    .await;
}

#[tokio::test]
async fn unknown_leases() {
    on_etcd_then_subject(&[], |mut c| async move {
        assert_eq!(status(c.lease_revoke(99).await), err(Code::NotFound, NOT_FOUND));
        assert_eq!(status(c.put("k", "v", with_lease(99)).await), err(Code::NotFound, NOT_FOUND));
        let txn = Txn::new().and_then([TxnOp::put("k", "v", with_lease(99))]);
        assert_eq!(status(c.txn(txn).await), err(Code::NotFound, NOT_FOUND));
        let ttl = c.lease_time_to_live(99, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
        assert_eq!((ttl.id(), ttl.ttl(), ttl.granted_ttl()), (99, -1, 0));
        assert!(ttl.keys().is_empty());
        // The server answers TTL 0 (not an error); etcd-client turns that into this error.
        let keep_alive = c.lease_keep_alive(99).await;
        assert!(
            matches!(&keep_alive, Err(Error::LeaseKeepAliveError(m)) if m == "lease not found"),
            "{:?}",
            keep_alive.map(|_| ())
        );
        assert!(!present(&mut c, "k").await);
    })
    .await;
}

/// Many leases expiring together are all revoked (in batches, rate-limited), soon after their TTL.
#[tokio::test]
async fn many_leases_expire_together() {
    const LEASES: usize = 500;
    on_etcd_then_subject(&[], |c| async move {
        let granted = Instant::now();
        let grants: Vec<_> = (0..LEASES)
            .map(|i| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    let id = c.lease_grant(MIN_TTL, None).await.unwrap().id();
                    c.put(format!("many/{i}"), "v", with_lease(id)).await.unwrap();
                })
            })
            .collect();
        for grant in grants {
            grant.await.unwrap();
        }
        let mut c = c.clone();
        let prefix = Some(GetOptions::new().with_prefix().with_count_only());
        // TTL, plus the time the grants took, plus half a second of revocations at 1,000/s.
        let limit = granted.elapsed() + Duration::from_secs(MIN_TTL as u64 + 2) + Duration::from_millis(500);
        let all_gone = loop {
            let left = c.get("many/", prefix.clone()).await.unwrap().count();
            if left == 0 {
                break granted.elapsed();
            }
            assert!(granted.elapsed() < limit, "{left} keys left {:?} after the grants began", granted.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!("all {LEASES} leases revoked {all_gone:?} after the grants began");
        assert!(c.leases().await.unwrap().leases().is_empty());
    })
    .await;
}

/// Leases are durable, and a restart gives every lease its full TTL again (as a new leader
/// does), so none expires early because the server was down.
#[tokio::test]
async fn leases_survive_kill9_and_restart() {
    const SHORT: u64 = 5;
    for kind in [Kind::Etcd, Kind::subject()] {
        let mut node = Node::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        println!("--- against {kind:?} at {}", node.endpoint());
        let mut c = Client::connect([node.endpoint()], None).await.unwrap();
        let long = c.lease_grant(600, None).await.unwrap().id();
        c.put("long", "v", with_lease(long)).await.unwrap();
        let short = c.lease_grant(SHORT as i64, None).await.unwrap().id();
        let granted = Instant::now();
        c.put("short", "v", with_lease(short)).await.unwrap();
        // Let most of the short TTL pass before the crash: only a restarted TTL keeps it alive.
        tokio::time::sleep(Duration::from_secs(SHORT - 2).saturating_sub(granted.elapsed())).await;
        node.kill9();
        node.restart().unwrap_or_else(|e| panic!("{e:#}"));
        let restarted = Instant::now();
        let mut c = Client::connect([node.endpoint()], None).await.unwrap();

        let ttl = c.lease_time_to_live(long, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
        assert_eq!((ttl.granted_ttl(), ttl.keys()), (600, &[b"long".to_vec()][..]));
        let ttl = c.lease_time_to_live(short, None).await.unwrap();
        assert_eq!(ttl.granted_ttl(), SHORT as i64);
        assert!(ttl.ttl() >= SHORT as i64 - 2, "TTL not restarted: {} s left", ttl.ttl());
        let gone = vanished(&mut c, "short", restarted, Duration::from_secs(SHORT + 2))
            .await
            .expect("the short lease expires after the restart");
        assert!(gone >= Duration::from_secs(SHORT - 1), "expired {gone:?} after the restart");
        assert!(present(&mut c, "long").await);
    }
}
