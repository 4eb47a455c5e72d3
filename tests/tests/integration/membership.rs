//! Membership changes on three-member clusters, made with etcdctl as an operator would: a member
//! added and started with `--initial-cluster-state existing` and one removed while writes go on
//! (nothing acknowledged is lost; the removed member stops); a learner that catches up, serves
//! only serializable reads, and is promoted; refused changes failing as etcd's do; a member that
//! was never added failing to join.

use std::time::Instant;

use conclave_tests::{
    Cluster, Kind, Load, Node, POLL, PROGRESS_TIMEOUT, assert_all_readable, assert_caught_up, connect, etcdctl,
    free_port, put_keys, wait_until_caught_up,
};
use etcd_client::GetOptions;

/// `etcdctl member list` lines of the member at `endpoint`.
fn member_list(endpoint: &str) -> Vec<String> {
    let out = etcdctl(endpoint, &["member", "list"], None).expect("etcdctl runs");
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_added_and_removed_under_writes_lose_nothing() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let load = Load::start(cluster.endpoints());
    let acks = &load.acks;
    acks.wait_for(50).await;

    let added = tokio::task::block_in_place(|| cluster.add_member(false, &[])).expect("a member is added and joins");
    let joined_at = acks.count();
    acks.wait_for(joined_at + 50).await;
    let new_endpoint = cluster.members[added].endpoint();
    wait_until_caught_up(&new_endpoint, &acks.snapshot()).await;
    let listed = member_list(&new_endpoint);
    assert_eq!(listed.len(), 4, "{listed:#?}");
    let line = format!(", started, m{added}, {}, {new_endpoint}, false", cluster.members[added].peer_url());
    assert!(listed.iter().any(|l| l.ends_with(&line)), "{line} missing from {listed:#?}");

    let leader = cluster.leader().await.expect("a leader");
    let removed = (0..3).find(|&i| i != leader).expect("a follower");
    let removed_peer = cluster.members[removed].peer_url();
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(cluster.remove_member(removed)))
        .expect("a follower is removed and stops");
    let removed_at = acks.count();
    acks.wait_for(removed_at + 50).await;
    let acked = load.finish().await;
    for endpoint in cluster.endpoints() {
        assert_all_readable(&endpoint, &acked).await;
        let listed = member_list(&endpoint);
        assert_eq!(listed.len(), 3, "{listed:#?}");
        assert!(listed.iter().all(|l| !l.contains(&removed_peer)), "{removed_peer} still listed: {listed:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_catches_up_serves_serializable_reads_and_is_promoted() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let mut client = connect(&cluster.members[0].endpoint()).await;
    let written = put_keys(&mut client, "l", 20, |i| format!("v{i}")).await;
    let learner = tokio::task::block_in_place(|| cluster.add_member(true, &[])).expect("a learner is added and joins");
    let endpoint = cluster.members[learner].endpoint();
    wait_until_caught_up(&endpoint, &written).await;

    let mut on_learner = connect(&endpoint).await;
    let refused = on_learner.put("l0", "through the learner", None).await.expect_err("a learner refuses writes");
    assert!(refused.to_string().contains("etcdserver: rpc not supported for learner"), "{refused}");
    let refused = on_learner.get("l0", None).await.expect_err("a learner refuses linearizable reads");
    assert!(refused.to_string().contains("etcdserver: rpc not supported for learner"), "{refused}");
    let read = on_learner.get("l0", Some(GetOptions::new().with_serializable())).await.expect("serializable read");
    assert_eq!(read.kvs()[0].value_str().unwrap(), "v0");
    let listed = member_list(&cluster.members[0].endpoint());
    assert!(listed.iter().any(|l| l.contains(&endpoint) && l.ends_with(", true")), "{listed:#?}");

    let id = format!("{:x}", cluster.member_id(learner).await.expect("the learner's status"));
    tokio::task::block_in_place(|| cluster.reconfigure(&["member", "promote", &id])).expect("the learner is promoted");
    let listed = member_list(&cluster.members[0].endpoint());
    assert!(listed.iter().any(|l| l.contains(&endpoint) && l.ends_with(", false")), "{listed:#?}");
    // The promoted member takes writes once it has applied its promotion.
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while let Err(e) = on_learner.put("l0", "through the promoted member", None).await {
        assert!(Instant::now() < deadline, "the promoted member still refuses writes: {e}");
        tokio::time::sleep(POLL).await;
    }
}

/// The exit code and last stderr line of each refused change, in order.
async fn refusals(cluster: &Cluster) -> Vec<String> {
    let endpoint = cluster.members[0].endpoint();
    let learner_url = format!("--peer-urls=http://127.0.0.1:{}", free_port());
    let added = tokio::task::block_in_place(|| cluster.reconfigure(&["member", "add", "l1", "--learner", &learner_url]))
        .expect("a learner is added");
    let learner = added.split_whitespace().nth(1).expect("etcdctl names the added member").to_string();
    let voter = format!("{:x}", cluster.member_id(0).await.expect("status"));
    let taken = format!("--peer-urls={}", cluster.members[1].peer_url());
    let second_learner = format!("--peer-urls=http://127.0.0.1:{}", free_port());
    let cases: Vec<Vec<&str>> = vec![
        vec!["member", "remove", "1234"],
        vec!["member", "promote", "1234"],
        vec!["member", "promote", &voter],
        vec!["member", "promote", &learner],
        vec!["member", "update", &voter, &taken],
        vec!["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"],
        vec!["member", "add", "x", &taken],
        vec!["member", "add", "l2", "--learner", &second_learner],
    ];
    let mut outcomes: Vec<String> = cases
        .iter()
        .map(|args| {
            let out = etcdctl(&endpoint, args, None).expect("etcdctl runs");
            format!("{args:?} -> {} {}", out.code, out.stderr.lines().last().unwrap_or(""))
                .replace(&learner, "<learner>")
                .replace(&voter, "<voter>")
                .replace(&taken, "<taken URL>")
                .replace(&second_learner, "<free URL>")
        })
        .collect();
    // etcdctl checks URLs itself; a client that does not gets the server's error.
    let mut client = connect(&endpoint).await;
    let bad = client.member_add(["not a url"], None).await.expect_err("a bad peer URL is refused");
    outcomes.push(match bad {
        etcd_client::Error::GRpcStatus(status) => format!("bad URL -> {:?} {}", status.code(), status.message()),
        other => format!("bad URL -> {other}"),
    });
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_membership_changes_fail_as_on_etcd() {
    let etcd = Cluster::start(Kind::Etcd, 3, &[]).expect("etcd cluster starts");
    let expected = refusals(&etcd).await;
    drop(etcd);
    let subject = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    assert_eq!(refusals(&subject).await, expected);
}

/// Starts a member `name` that was never added to `cluster`, with `--initial-cluster` listing the
/// cluster's members and itself; it must fail to start: how it failed.
fn start_unadded(cluster: &Cluster, name: &str, extra_args: &[&str]) -> String {
    let (client, peer) = (free_port(), free_port());
    let initial_cluster = cluster
        .members
        .iter()
        .map(|m| format!("{}={}", m.name(), m.peer_url()))
        .chain([format!("{name}=http://127.0.0.1:{peer}")])
        .collect::<Vec<_>>()
        .join(",");
    let mut member = Node::member(Kind::subject(), name, client, peer, &initial_cluster, extra_args).expect("member set up");
    let starting = member.launch().expect("spawns");
    member.wait_ready(starting).expect_err("a member never added does not start").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_never_added_cannot_join() {
    let cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let failure = start_unadded(&cluster, "stray", &["--initial-cluster-state", "existing"]);
    if Kind::subject() == Kind::Conclave {
        assert!(failure.contains("etcdctl member add"), "{failure}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_leader_under_writes_hands_over_and_loses_nothing() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let leader = cluster.leader().await.expect("a leader");
    let load = Load::start(cluster.endpoints());
    load.acks.wait_for(50).await;
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(cluster.remove_member(leader)))
        .expect("the leader is removed and stops");
    let new_leader = cluster.leader().await.expect("a new leader");
    assert_ne!(new_leader, leader);
    let removed_at = load.acks.count();
    load.acks.wait_for(removed_at + 50).await;
    let acked = load.finish().await;
    for endpoint in cluster.endpoints() {
        assert_all_readable(&endpoint, &acked).await;
        assert_eq!(member_list(&endpoint).len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_added_after_the_log_was_purged_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &["--snapshot-count", "20"]).expect("cluster starts");
    let mut client = connect(&cluster.members[0].endpoint()).await;
    let written = put_keys(&mut client, "s", 200, |i| format!("v{i}")).await;
    let added = tokio::task::block_in_place(|| cluster.add_member(false, &["--snapshot-count", "20"]))
        .expect("a member is added and joins");
    assert_caught_up(&cluster.members[added].endpoint(), &written).await;
    if Kind::subject() == Kind::Conclave {
        let log = cluster.members[added].log();
        assert!(log.contains("applied incoming snapshot"), "caught up without a snapshot:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_moved_to_new_peer_urls_keeps_working() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let leader = cluster.leader().await.expect("a leader");
    let moved = (leader + 1) % 3;
    let id = format!("{:x}", cluster.member_id(moved).await.expect("status"));
    let new_peer = free_port();
    let new_url = format!("http://127.0.0.1:{new_peer}");
    tokio::task::block_in_place(|| cluster.reconfigure(&["member", "update", &id, &format!("--peer-urls={new_url}")]))
        .expect("the peer URLs are updated");
    let listed = member_list(&cluster.members[leader].endpoint());
    assert!(listed.iter().any(|l| l.starts_with(&id) && l.contains(&new_url)), "{listed:#?}");

    // The member restarts listening on its new peer URL, and takes part again.
    cluster.members[moved].move_peer_port(new_peer);
    cluster.members[moved].restart().expect("the moved member restarts");
    let mut client = connect(&cluster.members[leader].endpoint()).await;
    client.put("after-move", "1", None).await.expect("put");
    let written = std::collections::HashMap::from([("after-move".to_string(), "1".to_string())]);
    wait_until_caught_up(&cluster.members[moved].endpoint(), &written).await;
    cluster.members[leader].kill9();
    cluster.leader().await.expect("the remaining two, one of them moved, elect a leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_started_next_to_another_cluster_fails_clearly() {
    // etcd starts such a member and leaves it waiting for a leader forever; Conclave refuses.
    if Kind::subject() != Kind::Conclave {
        return;
    }
    let cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    // The classic mistake: a fourth member started as if the cluster were new.
    let failure = start_unadded(&cluster, "m3", &[]);
    assert!(failure.contains("belongs to cluster") && failure.contains("--initial-cluster-state existing"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_on_another_clusters_data_dir_gets_nothing_from_this_one() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let mut other = Node::start(Kind::subject(), &[]).expect("a one-member cluster starts");
    connect(&other.endpoint()).await.put("only-in-the-other-cluster", "1", None).await.expect("put");
    other.kill9();

    // The other cluster's member comes up where a member of this cluster was.
    let leader = cluster.leader().await.expect("a leader");
    let replaced = (leader + 1) % 3;
    cluster.members[replaced].kill9();
    let peer_port = cluster.members[replaced].peer_url().rsplit(':').next().unwrap().parse().unwrap();
    other.move_peer_port(peer_port);
    other.restart().expect("the other cluster's member restarts on its data dir");

    // This cluster goes on without it, and sends it nothing.
    let mut client = connect(&cluster.members[leader].endpoint()).await;
    for i in 0..20 {
        client.put(format!("k{i}"), "v", None).await.expect("put with one member replaced");
    }
    let mut on_other = connect(&other.endpoint()).await;
    let read = on_other.get("k", Some(GetOptions::new().with_prefix().with_serializable())).await.expect("get");
    assert_eq!(read.count(), 0, "the other cluster's member received this cluster's keys");
    let kept = on_other.get("only-in-the-other-cluster", Some(GetOptions::new().with_serializable())).await.expect("get");
    assert_eq!(kept.count(), 1, "the other cluster's member lost its own data");
    if Kind::subject() == Kind::Conclave {
        // The leader retries the member it lost with a backoff: its next message is refused.
        assert!(other.logged("cluster ID mismatch", PROGRESS_TIMEOUT).await, "no cluster ID mismatch logged:\n{}", other.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_strict_reconfig_check_unready_changes_are_made() {
    let cluster = Cluster::start(Kind::subject(), 3, &["--strict-reconfig-check=false"]).expect("cluster starts");
    let endpoint = cluster.members[0].endpoint();
    // The second member added is not connected (never started): strict mode would refuse it.
    let mut added = Vec::new();
    for name in ["a1", "a2"] {
        let url = format!("--peer-urls=http://127.0.0.1:{}", free_port());
        let out = tokio::task::block_in_place(|| cluster.reconfigure(&["member", "add", name, &url])).expect("member added");
        added.push(out.split_whitespace().nth(1).expect("etcdctl names the added member").to_string());
    }
    assert_eq!(member_list(&endpoint).len(), 5);
    for id in &added {
        tokio::task::block_in_place(|| cluster.reconfigure(&["member", "remove", id])).expect("member removed");
    }
    assert_eq!(member_list(&endpoint).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_an_added_member_survives_a_whole_cluster_kill() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let added = tokio::task::block_in_place(|| cluster.add_member(false, &[])).expect("a member is added and joins");
    let mut client = connect(&cluster.members[added].endpoint()).await;
    let written = put_keys(&mut client, "r", 20, |i| format!("v{i}")).await;
    tokio::task::block_in_place(|| cluster.restart_all()).expect("every member restarts");
    for endpoint in cluster.endpoints() {
        assert_all_readable(&endpoint, &written).await;
        let listed = member_list(&endpoint);
        assert_eq!(listed.iter().filter(|l| l.contains(", started, ")).count(), 4, "{listed:#?}");
    }
}
