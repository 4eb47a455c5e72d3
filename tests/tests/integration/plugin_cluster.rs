//! Plugins across a cluster: a deploy on one member is served by every member (and quickly), by a
//! member that was down during it, by a member added later (catching up by snapshot), and a
//! removal reaches them all. A member started with `--plugin-deploy=false` refuses deploys and
//! removals but serves every plugin.

use std::time::{Duration, Instant};

use conclave_tests::guests::{guest_wasm, guest_wasm_with_env};
use conclave_tests::plugins::{Plugins, assert_no_server_panic, assert_status, misbehave_manifest, with_builtins};
use conclave_tests::{Cluster, Kind, Node, connect, put_keys};
use tonic::Code;

/// The bound a deploy must reach every member within (the goal is well under a second) — unless
/// compiling the plugin takes longer than that here: every other member compiles it once it
/// applies the deploy, so the bound is also three times what the deploy took on the member that
/// took it (which compiled it before answering), for debug builds on a loaded machine.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(5);

fn built(name: &str) -> Vec<u8> {
    let path = tokio::task::block_in_place(|| guest_wasm(name)).unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::read(path).expect("read the guest")
}

/// Waits on every endpoint at once until `name` is served with `hash` (None: until it is gone);
/// the time each took.
async fn wait_everywhere(members: &[Plugins], name: &str, hash: Option<&str>, timeout: Duration) -> Vec<Duration> {
    let waits = members.iter().map(|plugins| {
        let (plugins, name, hash) = (plugins.clone(), name.to_string(), hash.map(str::to_string));
        tokio::spawn(async move { plugins.wait_for(&name, hash.as_deref(), timeout).await })
    });
    let mut took = Vec::new();
    for wait in waits.collect::<Vec<_>>() {
        took.push(wait.await.expect("a wait"));
    }
    took
}

fn misbehave_v1() -> Vec<u8> {
    built("misbehave")
}

/// Polls until every member serves `name` with one hash; that hash.
async fn settle(members: &[Plugins], name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut hashes = Vec::new();
        for plugins in members {
            hashes.push(plugins.get(name).await.map(|p| p.hash).ok());
        }
        if let Some(Some(first)) = hashes.first()
            && hashes.iter().all(|h| h.as_ref() == Some(first))
        {
            return first.clone();
        }
        assert!(Instant::now() < deadline, "members still disagree on {name}: {hashes:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deploy_reaches_every_member_including_restarted_and_added_ones() {
    let misbehave = built("misbehave");
    let mut cluster = Cluster::start(Kind::Conclave, 3, &["--snapshot-count", "10"]).unwrap_or_else(|e| panic!("{e:#}"));
    let endpoints = cluster.endpoints();
    // Connected beforehand, so the times below are the spread alone.
    let on: Vec<Plugins> = {
        let mut on = Vec::new();
        for endpoint in &endpoints {
            on.push(Plugins::connect(endpoint).await);
        }
        on
    };
    let manifest = misbehave_manifest("{}");

    let sent = Instant::now();
    let deployed = on[0].deploy("shared", misbehave.clone(), &manifest).await.expect("deploy").plugin.unwrap();
    let answered = Instant::now();
    eprintln!("deploy of {} bytes on m0 answered after {:?}", deployed.size, answered - sent);
    let bound = SPREAD_TIMEOUT.max((answered - sent) * 3);
    let took = wait_everywhere(&on[1..], "shared", Some(&deployed.hash), bound).await;
    eprintln!("deploy answered on m0; served on m1 after {:?}, on m2 after {:?} (from the answer)", took[0], took[1]);
    eprintln!("all served {:?} after the deploy answered", answered.elapsed());
    for (i, plugins) in on.iter().enumerate() {
        assert_eq!(plugins.invoke_text("shared", "echo", format!("m{i}")).await.expect("echo"), format!("m{i}"));
        // A write through the plugin on any member is a cluster write.
        plugins.invoke("shared", "allowed-put", format!("from-m{i}=1")).await.expect("allowed-put");
    }

    // Two deploys of one name through two members at once: every member ends up serving the same one.
    let v2 = tokio::task::block_in_place(|| guest_wasm_with_env("misbehave", &[("MISBEHAVE_VERSION", "2")])).expect("v2 builds");
    let v2 = std::fs::read(v2).expect("read v2");
    let (a, b) = (on[0].clone(), on[1].clone());
    let (m1, m2) = (manifest.clone(), manifest.clone());
    let (one, two) = tokio::join!(
        async move { a.deploy("race", misbehave_v1(), &m1).await },
        async move { b.deploy("race", v2, &m2).await },
    );
    let hashes = [one.expect("deploy v1").plugin.unwrap().hash, two.expect("deploy v2").plugin.unwrap().hash];
    let settled = settle(&on, "race").await;
    assert!(hashes.contains(&settled), "members serve {settled}, neither of the deploys {hashes:?}");
    for plugins in &on {
        assert_eq!(plugins.get("race").await.expect("race").hash, settled, "settled for good");
        let version = plugins.invoke_text("race", "version", "").await.expect("version");
        assert_eq!(plugins.get("race").await.expect("race").version, version);
    }

    // A member that was down while a plugin was deployed, and restarted.
    cluster.members[2].kill9();
    let while_down = on[1].deploy("while-down", misbehave.clone(), "").await.expect("deploy while m2 is down").plugin.unwrap();
    cluster.members[2].restart().expect("m2 restarts");
    let m2 = Plugins::connect(&cluster.members[2].endpoint()).await;
    let caught_up = m2.wait_for("while-down", Some(&while_down.hash), bound).await;
    eprintln!("restarted m2 serves the plugin deployed while it was down {caught_up:?} after it was ready");
    assert_eq!(m2.get("shared").await.expect("shared on m2").hash, deployed.hash);
    assert_eq!(m2.invoke("while-down", "echo", "back").await.expect("echo on m2"), b"back");

    // A member added after the log was purged behind snapshots: it catches up by snapshot, and a
    // member that takes no deploys still serves every plugin.
    let mut client = connect(&endpoints[0]).await;
    put_keys(&mut client, "fill", 60, |i| format!("v{i}")).await;
    let added = tokio::task::block_in_place(|| cluster.add_member(false, &["--snapshot-count", "10", "--plugin-deploy=false"]))
        .expect("a member is added and joins");
    let m3 = Plugins::connect(&cluster.members[added].endpoint()).await;
    m3.wait_for("shared", Some(&deployed.hash), Duration::from_secs(30)).await;
    m3.wait_for("while-down", Some(&while_down.hash), bound).await;
    assert_eq!(m3.names().await, with_builtins(&["race", "shared", "while-down"]));
    assert_eq!(m3.invoke("shared", "echo", "new").await.expect("echo on the added member"), b"new");
    let log = cluster.members[added].log();
    assert!(log.contains("applied incoming snapshot"), "the added member caught up without a snapshot:\n{log}");
    assert_status(
        m3.deploy("refused", misbehave.clone(), "").await,
        Code::FailedPrecondition,
        &["disabled on this member (--plugin-deploy=false)"],
    );
    assert_status(m3.remove("shared").await, Code::FailedPrecondition, &["--plugin-deploy=false"]);

    // A removal through any member reaches them all.
    on[1].remove("shared").await.expect("remove");
    let mut all = Vec::new();
    for endpoint in cluster.endpoints() {
        all.push(Plugins::connect(&endpoint).await);
    }
    let took = wait_everywhere(&all, "shared", None, SPREAD_TIMEOUT).await;
    eprintln!("removal gone everywhere after {took:?}");
    for plugins in &all {
        assert_status(plugins.invoke("shared", "echo", "").await, Code::NotFound, &["shared"]);
    }
    for member in &cluster.members {
        assert_no_server_panic(&member.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_applied_a_deploy_serves_it() {
    let misbehave = built("misbehave");
    let cluster = Cluster::start(Kind::Conclave, 3, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let (m0, m1) = (Plugins::connect(&cluster.members[0].endpoint()).await, Plugins::connect(&cluster.members[1].endpoint()).await);
    let mut on_m1 = connect(&cluster.members[1].endpoint()).await;
    let deployed = m0.deploy("fresh", misbehave, "").await.expect("deploy").plugin.unwrap();
    // A linearizable read through m1 answers once m1 has applied everything committed before it,
    // the deploy included.
    on_m1.get("anything", None).await.expect("a linearizable read on m1");
    let got = m1.get("fresh").await;
    let called = m1.invoke("fresh", "echo", "x").await;
    assert_eq!(got.map(|p| p.hash).map_err(|s| s.message().to_string()), Ok(deployed.hash));
    assert_eq!(called.map_err(|s| s.message().to_string()), Ok(b"x".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_plugin_deploy_false_refuses_deploys_but_serves_the_builtins() {
    let misbehave = built("misbehave");
    let node = Node::start(Kind::Conclave, &["--plugin-deploy=false"]).unwrap_or_else(|e| panic!("{e:#}"));
    let plugins = Plugins::connect(&node.endpoint()).await;
    assert_status(
        plugins.deploy("mine", misbehave, "").await,
        Code::FailedPrecondition,
        &["disabled on this member (--plugin-deploy=false)"],
    );
    assert_status(plugins.remove("mine").await, Code::FailedPrecondition, &["disabled on this member (--plugin-deploy=false)"]);
    assert_eq!(plugins.names().await, with_builtins(&[]));
    let added = plugins.invoke_text("counter", "add", r#"{"name":"x","delta":3}"#).await.expect("counter add");
    assert!(added.contains(r#""value":3"#), "{added}");
    let got = plugins.invoke_text("counter", "get", r#"{"name":"x"}"#).await.expect("counter get");
    assert!(got.contains(r#""value":3"#), "{got}");
}
