//! The registry plugin against a real member: instances that stop heartbeating leave after their
//! TTL, a watcher sees every join and leave once (across a reconnect too), the entries are etcd's
//! naming layout both ways, a compacted revision is a clear error, and conclavectl drives it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use conclave_tests::conclavectl::{failed, ok, run as ctl};
use conclave_tests::recipes::{JsonStream, Recipe};
use conclave_tests::{Kind, Node, connect, etcdctl};
use serde_json::{Value, json};
use tonic::Code;

const INSTANCES: usize = 1000;
/// Long against the heartbeat period, so a heartbeating instance outlives a slow heartbeat on a
/// loaded machine; short, so the silent ones leave soon.
const TTL: i64 = 5;
const HEARTBEAT: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(20);

fn name(i: usize) -> String {
    format!("i{i:04}")
}

/// Reads changes until `count` have come; each as (type, instance, revision).
async fn changes(stream: &mut JsonStream, count: usize) -> Vec<(String, String, i64)> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let change = stream.next(WAIT).await;
        let kind = change["type"].as_str().expect("a type").to_string();
        let instance = change["instance"].as_str().expect("an instance").to_string();
        assert!(change["addr"].is_string(), "a change names its address: {change}");
        seen.push((kind, instance, change["revision"].as_i64().expect("a revision")));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_that_stop_heartbeating_leave_and_a_watcher_sees_each_change_once() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let registry = Recipe::connect(&node.endpoint(), "registry").await;
    let from = registry.must("list", json!({"service": "svc"})).await["revision"].as_i64().unwrap() + 1;
    let mut watcher = registry.stream("watch", json!({"service": "svc", "from_revision": from})).await.expect("watch");

    // Each even instance heartbeats from its registration on; odd ones go silent.
    let (registered, mut receipts) = tokio::sync::mpsc::channel(INSTANCES);
    let instances: Vec<_> = (0..INSTANCES)
        .map(|i| {
            let (registry, registered) = (registry.clone(), registered.clone());
            tokio::spawn(async move {
                let payload = json!({"service": "svc", "instance": name(i), "addr": format!("10.0.0.{i}:80"), "ttl": TTL});
                let lease = registry.must("register", payload).await["lease"].as_i64().expect("a lease");
                registered.send(()).await.expect("the test waits for registrations");
                if i % 2 == 1 {
                    return;
                }
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    registry.must("heartbeat", json!({"lease": lease})).await;
                }
            })
        })
        .collect();
    for _ in 0..INSTANCES {
        receipts.recv().await.expect("an instance registered");
    }
    let alive: BTreeSet<String> = (0..INSTANCES).step_by(2).map(name).collect();
    let deadline = Instant::now() + Duration::from_secs(TTL as u64) + WAIT;
    let listed = loop {
        let list = registry.must("list", json!({"service": "svc"})).await;
        let listed: BTreeSet<String> =
            list["instances"].as_array().unwrap().iter().map(|e| e["instance"].as_str().unwrap().to_string()).collect();
        if listed.len() <= alive.len() || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed, alive, "after the TTL only the heartbeating instances are listed");

    // Every join and leave exactly once, in revision order, across a dropped and resumed stream.
    let total = INSTANCES + INSTANCES / 2;
    let mut seen = changes(&mut watcher, INSTANCES / 2).await;
    drop(watcher);
    let resume = seen.last().unwrap().2 + 1;
    let mut watcher = registry.stream("watch", json!({"service": "svc", "from_revision": resume})).await.expect("re-watch");
    seen.extend(changes(&mut watcher, total - seen.len()).await);
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "revisions increase: {seen:?}");
    let mut count: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (kind, instance, _) in &seen {
        *count.entry((kind.clone(), instance.clone())).or_default() += 1;
    }
    for i in 0..INSTANCES {
        assert_eq!(count.get(&("join".into(), name(i))), Some(&1), "{} joined once", name(i));
        let leaves = count.get(&("leave".into(), name(i))).copied().unwrap_or(0);
        assert_eq!(leaves, i % 2, "{} left {leaves} times", name(i));
    }
    instances.iter().for_each(|task| task.abort());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_etcds_naming_layout_both_ways() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let ep = node.endpoint();
    let registry = Recipe::connect(&ep, "registry").await;
    let register = json!({"service": "web", "instance": "a", "addr": "10.0.0.1:80", "metadata": {"zone": "z1"}, "ttl": 30});
    let lease = registry.must("register", register).await["lease"].as_i64().unwrap();

    let got = tokio::task::block_in_place(|| etcdctl(&ep, &["get", "web/a", "--print-value-only"], None)).expect("etcdctl get");
    assert_eq!(got.stdout.trim_end(), r#"{"Addr":"10.0.0.1:80","Metadata":{"zone":"z1"}}"#, "{got:?}");
    let mut client = connect(&ep).await;
    let kv = client.get("web/a", None).await.expect("get").kvs()[0].clone();
    assert_eq!(kv.lease(), lease, "the entry is on the instance's lease");

    // Written by hand the way etcd's endpoints manager does, on a lease of its own.
    let grant = client.lease_grant(30, None).await.expect("lease grant");
    let by_hand = format!("put web/b {} --lease={:x}", r#"{"Addr":"10.0.0.2:80","Metadata":null}"#, grant.id());
    let args: Vec<&str> = by_hand.split(' ').collect();
    let put = tokio::task::block_in_place(|| etcdctl(&ep, &args, None)).expect("etcdctl put");
    assert_eq!(put.code, 0, "{put:?}");
    let list = registry.must("list", json!({"service": "web"})).await;
    let instances = &list["instances"];
    assert_eq!(instances[0], json!({"instance": "a", "addr": "10.0.0.1:80", "metadata": {"zone": "z1"}, "lease": lease}));
    assert_eq!(instances[1], json!({"instance": "b", "addr": "10.0.0.2:80", "metadata": null, "lease": grant.id()}));
    assert_eq!(instances.as_array().unwrap().len(), 2, "{list}");

    // Deregistering deletes the entry and revokes the lease that held only it.
    let left = registry.must("deregister", json!({"service": "web", "instance": "a"})).await;
    assert_eq!(left["deleted"], json!(true), "{left}");
    assert!(client.get("web/a", None).await.unwrap().kvs().is_empty());
    assert_eq!(client.lease_time_to_live(lease, None).await.unwrap().ttl(), -1, "the lease is revoked");
    let error = registry.call("heartbeat", json!({"lease": lease})).await;
    assert_eq!(error.unwrap_err().code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_from_a_compacted_revision_names_the_current_one() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let registry = Recipe::connect(&node.endpoint(), "registry").await;
    for i in 0..3 {
        registry.must("register", json!({"service": "db", "instance": name(i), "addr": "x:1"})).await;
    }
    let mut client = connect(&node.endpoint()).await;
    let current = client.get("db/", None).await.unwrap().header().unwrap().revision();
    client.compact(current, None).await.expect("compact");
    let status = registry.stream("watch", json!({"service": "db", "from_revision": 2})).await.expect("watch").error(WAIT).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let message = status.message();
    assert!(message.contains("revision 2 is compacted") && message.contains(&format!("the current revision is {current}")), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclavectl_registers_and_lists() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let ep = node.endpoint();
    let cli = |args: &[&str]| tokio::task::block_in_place(|| ctl(&ep, args));
    let registered = ok(cli(&["registry", "register", "api", "n1", "10.1.1.1:443", "--metadata", r#"{"v":2}"#, "--once"]));
    assert!(registered.starts_with("Registered api/n1 at 10.1.1.1:443 with lease "), "{registered}");
    assert_eq!(ok(cli(&["registry", "list", "api"])), "n1 10.1.1.1:443 {\"v\":2}\n");
    let listed: Value = serde_json::from_str(&ok(cli(&["registry", "list", "api", "-w", "json"]))).expect("JSON");
    assert_eq!(listed["instances"][0]["addr"], "10.1.1.1:443");
    assert_eq!(ok(cli(&["registry", "deregister", "api", "n1"])), "Deregistered api/n1\n");
    let error = failed(cli(&["registry", "deregister", "api", "n1"]));
    assert_eq!(error, "Error: api/n1 is not registered");
    let error = failed(cli(&["registry", "register", "api", "n2", "x:1", "--metadata", "{"]));
    assert!(error.starts_with("Error: --metadata is not JSON"), "{error}");
}
