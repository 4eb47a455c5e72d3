//! Deploying plugins on one member: what a deploy refuses (and that a refused deploy stores
//! nothing and leaves a deployed plugin of that name alone), that plugins live outside the etcd
//! keyspace (no key, no revision, no watch event), that they survive kill -9 (from the log and
//! from a snapshot), and that a redeploy swaps versions atomically under load.

use std::time::{Duration, Instant};

use conclave_tests::guests::{guest_wasm, guest_wasm_with_env};
use conclave_tests::plugins::{Plugins, assert_no_server_panic, assert_status, misbehave_manifest, with_builtins};
use conclave_tests::{Kind, Node, connect, etcdctl};
use etcd_client::{EventType, GetOptions, WatchOptions};
use tonic::Code;

fn start(args: &[&str]) -> Node {
    Node::start(Kind::Conclave, args).unwrap_or_else(|e| panic!("{e:#}"))
}

fn built(name: &str) -> Vec<u8> {
    let path = tokio::task::block_in_place(|| guest_wasm(name)).unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::read(path).expect("read the guest")
}

/// (name, wasm, manifest, the code refusing it, parts of the message).
type Case<'a> = (&'a str, Vec<u8>, &'a str, Code, Vec<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deploys_are_refused_with_their_reason_and_store_nothing() {
    let misbehave = built("misbehave");
    let other_world = built("other-world");
    // Exactly misbehave's size fits; a byte more does not.
    let max = misbehave.len().to_string();
    let node = start(&["--plugin-max-wasm-bytes", &max]);
    let plugins = Plugins::connect(&node.endpoint()).await;
    let before = plugins.names().await;
    assert_eq!(before, with_builtins(&[]), "a new member serves the built-in plugins only");

    let manifest = misbehave_manifest("{}");
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let mut too_big = misbehave.clone();
    too_big.push(0);
    let tib = format!(r#"{{"limits":{{"memory_bytes":{}}}}}"#, 1u64 << 40);
    let cases: Vec<Case> = vec![
        ("core", core_module, "", Code::InvalidArgument, vec!["plugin core", "not a component", "core WebAssembly module"]),
        ("garbage", b"hello, world".to_vec(), "", Code::InvalidArgument, vec!["plugin garbage", "not WebAssembly"]),
        ("empty", Vec::new(), "", Code::InvalidArgument, vec!["plugin empty"]),
        (
            "other",
            other_world,
            "",
            Code::InvalidArgument,
            vec!["plugin other", "does not export the conclave:plugin@0.1.0 `recipe` world"],
        ),
        ("zero-fuel", misbehave.clone(), r#"{"limits":{"fuel":0}}"#, Code::InvalidArgument, vec!["plugin zero-fuel", "invalid manifest", "fuel"]),
        ("unknown-field", misbehave.clone(), r#"{"reed":["a/"]}"#, Code::InvalidArgument, vec!["invalid manifest", "reed"]),
        ("unknown-limit", misbehave.clone(), r#"{"limits":{"cpus":2}}"#, Code::InvalidArgument, vec!["invalid manifest", "cpus"]),
        ("not-json", misbehave.clone(), "{", Code::InvalidArgument, vec!["plugin not-json", "invalid manifest"]),
        ("huge-memory", misbehave.clone(), &tib, Code::InvalidArgument, vec!["invalid manifest", "memory_bytes"]),
        ("too-big", too_big, &manifest, Code::InvalidArgument, vec!["plugin too-big", "--plugin-max-wasm-bytes"]),
        ("", misbehave.clone(), &manifest, Code::InvalidArgument, vec![]),
        ("Bad Name", misbehave.clone(), &manifest, Code::InvalidArgument, vec!["Bad Name"]),
        ("../escape", misbehave.clone(), &manifest, Code::InvalidArgument, vec!["../escape"]),
        ("counter", misbehave.clone(), &manifest, Code::FailedPrecondition, vec!["plugin counter is built in"]),
    ];
    for (name, wasm, manifest, code, parts) in cases {
        let refused = assert_status(plugins.deploy(name, wasm, manifest).await, code, &parts);
        eprintln!("{name:?}: {refused:?}");
        assert!(!refused.message().contains('\n'), "a one-line reason: {refused:?}");
        if !name.is_empty() && name != "counter" {
            assert_status(plugins.get(name).await, Code::NotFound, &[]);
            assert_status(plugins.invoke(name, "noop", "").await, Code::NotFound, &[]);
        }
    }
    assert_eq!(plugins.names().await, before, "nothing was stored");
    assert!(plugins.get("counter").await.expect("counter").builtin);
    assert_status(plugins.remove("counter").await, Code::FailedPrecondition, &["counter"]);
    assert_status(plugins.remove("x").await, Code::NotFound, &["plugin x: not found"]);
    assert!(plugins.invoke_text("counter", "get", r#"{"name":"x"}"#).await.expect("the counter still works").contains(r#""value":0"#));

    // At the size limit it deploys; a refused redeploy of that name leaves it as it was.
    let deployed = plugins.deploy("keeper", misbehave.clone(), &manifest).await.expect("deploy at the size limit");
    let hash = deployed.plugin.expect("plugin").hash;
    assert_status(plugins.deploy("keeper", b"garbage".to_vec(), &manifest).await, Code::InvalidArgument, &["not WebAssembly"]);
    assert_status(plugins.deploy("keeper", misbehave.clone(), r#"{"limits":{"fuel":0}}"#).await, Code::InvalidArgument, &["invalid manifest"]);
    let kept = plugins.get("keeper").await.expect("keeper");
    assert_eq!((kept.hash.as_str(), kept.version.as_str()), (hash.as_str(), "1"));
    assert!(kept.manifest.contains("allowed/"), "{}", kept.manifest);
    assert_eq!(plugins.invoke("keeper", "echo", "ok").await.expect("keeper answers"), b"ok");
    assert_eq!(plugins.names().await, with_builtins(&["keeper"]));
    assert_no_server_panic(&node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_live_outside_the_keyspace() {
    let misbehave = built("misbehave");
    let node = start(&[]);
    let plugins = Plugins::connect(&node.endpoint()).await;
    let mut client = connect(&node.endpoint()).await;
    client.put("user/a", "1", None).await.expect("put");
    let mut events = client.watch("\0", Some(WatchOptions::new().with_from_key())).await.expect("watch");
    let revision = |client: &mut etcd_client::Client| {
        let mut client = client.clone();
        async move { client.get("user/a", None).await.expect("get").header().expect("header").revision() }
    };
    let hash_kv = |client: &mut etcd_client::Client| {
        let mut client = client.clone();
        async move { client.hash_kv(0).await.expect("hashkv").hash() }
    };
    let (rev0, hash0) = (revision(&mut client).await, hash_kv(&mut client).await);

    let deployed = plugins.deploy("iso", misbehave.clone(), &misbehave_manifest("{}")).await.expect("deploy");
    plugins.deploy("iso", misbehave.clone(), &misbehave_manifest(r#"{"fuel":1000000}"#)).await.expect("redeploy");
    plugins.deploy("iso2", misbehave, "").await.expect("deploy another");
    assert_eq!(revision(&mut client).await, rev0, "a deploy does not change the revision");
    assert_eq!(hash_kv(&mut client).await, hash0, "a deploy does not change the keyspace");
    if let Some(header) = &deployed.header {
        assert_eq!(header.revision, rev0, "the deploy's header has the store's revision");
    }
    client.put("user/marker", "after-deploy", None).await.expect("put");
    let first = next_events(&mut events).await;
    let seen: Vec<_> = first.events().iter().map(|e| (e.event_type(), e.kv().map(|kv| kv.key_str().unwrap().to_string()))).collect();
    assert_eq!(seen, [(EventType::Put, Some("user/marker".to_string()))], "the first event after the deploys");

    // A plugin's own writes are ordinary keys, visible to everyone.
    plugins.invoke("iso", "allowed-put", "p=1").await.expect("allowed-put");
    plugins.invoke("counter", "add", r#"{"name":"iso","delta":1}"#).await.expect("counter add");
    let rev1 = revision(&mut client).await;
    let hash1 = hash_kv(&mut client).await;
    let seen = next_events(&mut events).await;
    assert_eq!(seen.events()[0].kv().unwrap().key(), b"allowed/p");
    let seen = next_events(&mut events).await;
    assert_eq!(seen.events()[0].kv().unwrap().key(), b"counter/iso");

    plugins.remove("iso").await.expect("remove");
    plugins.remove("iso2").await.expect("remove");
    assert_eq!(revision(&mut client).await, rev1, "a remove does not change the revision");
    assert_eq!(hash_kv(&mut client).await, hash1, "a remove does not change the keyspace");
    client.put("user/marker2", "after-remove", None).await.expect("put");
    let next = next_events(&mut events).await;
    assert_eq!(next.events().len(), 1, "{next:?}");
    assert_eq!(next.events()[0].kv().unwrap().key(), b"user/marker2", "the first event after the removals");
    drop(events);

    let all = client.get("\0", Some(GetOptions::new().with_from_key())).await.expect("get all");
    let keys: Vec<&str> = all.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert_eq!(keys, ["allowed/p", "counter/iso", "user/a", "user/marker", "user/marker2"]);
    assert!(all.kvs().iter().all(|kv| !kv.value().starts_with(b"\0asm")), "no wasm in the keyspace");
    let ctl = etcdctl(&node.endpoint(), &["get", "", "--from-key", "--keys-only"], None).expect("etcdctl");
    let ctl_keys: Vec<&str> = ctl.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(ctl_keys, keys, "etcdctl sees the same: {ctl:?}");
}

/// The next watch response that carries events (the "created" answer carries none).
async fn next_events(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    loop {
        let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a watch event within 10 s")
            .expect("watch")
            .expect("the watch goes on");
        if !response.events().is_empty() {
            return response;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_survive_kill_9_from_the_log_and_from_a_snapshot() {
    let misbehave = built("misbehave");
    let mut node = start(&["--snapshot-count", "10"]);
    let plugins = Plugins::connect(&node.endpoint()).await;
    let kept = plugins.deploy("kept", misbehave.clone(), &misbehave_manifest("{}")).await.expect("deploy").plugin.unwrap();
    plugins.deploy("gone", misbehave.clone(), "").await.expect("deploy");
    plugins.remove("gone").await.expect("remove");

    let check = |node: &Node, when: &'static str| {
        let endpoint = node.endpoint();
        let hash = kept.hash.clone();
        async move {
            let plugins = Plugins::connect(&endpoint).await;
            assert_eq!(plugins.get("kept").await.expect(when).hash, hash, "{when}");
            assert_eq!(plugins.names().await, with_builtins(&["kept"]), "{when}");
            assert_status(plugins.get("gone").await, Code::NotFound, &["gone"]);
            assert_eq!(plugins.invoke("kept", "echo", when).await.expect(when), when.as_bytes());
        }
    };
    node.restart().expect("restart");
    check(&node, "after a restart replaying the log").await;

    // Enough writes for snapshots that cover the deploys, and a log purged behind them.
    let mut client = connect(&node.endpoint()).await;
    for i in 0..25 {
        client.put(format!("k{i}"), "v", None).await.expect("put");
    }
    let plugins = Plugins::connect(&node.endpoint()).await;
    plugins.deploy("late", misbehave, "").await.expect("deploy");
    plugins.remove("late").await.expect("remove");
    for i in 0..25 {
        client.put(format!("k{i}"), "w", None).await.expect("put");
    }
    assert!(has_file(node.data_dir(), "current.snap"), "no snapshot in {}", node.data_dir().display());
    node.restart().expect("restart");
    check(&node, "after a restart from a snapshot").await;
    assert_no_server_panic(&node.log());
}

/// Whether a file named `name` is anywhere under `dir`.
fn has_file(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() { has_file(&path, name) } else { entry.file_name() == name }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redeploy_swaps_versions_atomically_under_load() {
    let v1 = built("misbehave");
    let v2 = tokio::task::block_in_place(|| guest_wasm_with_env("misbehave", &[("MISBEHAVE_VERSION", "2")])).expect("v2 builds");
    let v2 = std::fs::read(v2).expect("read v2");
    let node = start(&[]);
    let plugins = Plugins::connect(&node.endpoint()).await;
    let manifest = misbehave_manifest("{}");
    plugins.deploy("ver", v1, &manifest).await.expect("deploy v1");

    let redeployed: std::sync::Arc<std::sync::OnceLock<Instant>> = Default::default();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (plugins, redeployed) = (plugins.clone(), redeployed.clone());
            tokio::spawn(async move {
                // (started after the redeploy answered, answer)
                let mut calls = Vec::new();
                let mut after = 0;
                while after < 30 {
                    let late = redeployed.get().is_some();
                    let answer = plugins.invoke_text("ver", "version", "").await;
                    calls.push((late, answer));
                    after += usize::from(late);
                }
                calls
            })
        })
        .collect();
    // Let every caller get going on v1 first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deployed = plugins.deploy("ver", v2, &manifest).await.expect("deploy v2").plugin.unwrap();
    redeployed.set(Instant::now()).unwrap();
    assert_eq!(deployed.version, "2");

    let mut counts = [0usize; 2];
    for caller in callers {
        let calls = caller.await.expect("a caller");
        let mut seen_v2 = false;
        for (late, answer) in &calls {
            let answer = answer.as_deref().unwrap_or_else(|e| panic!("a call failed during the redeploy: {e:?}"));
            match answer {
                "1" => {
                    assert!(!late, "v1 answered a call made after the redeploy answered");
                    assert!(!seen_v2, "v1 answered after v2 had, on the same caller: {calls:?}");
                    counts[0] += 1;
                }
                "2" => {
                    seen_v2 = true;
                    counts[1] += 1;
                }
                other => panic!("version answered {other:?}"),
            }
        }
    }
    eprintln!("answers: {} from v1, {} from v2", counts[0], counts[1]);
    assert!(counts[0] > 0, "no call reached v1 before the redeploy");
    assert_eq!(plugins.get("ver").await.expect("get").hash, deployed.hash);
    assert_no_server_panic(&node.log());
}
