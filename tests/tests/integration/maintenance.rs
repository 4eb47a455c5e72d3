//! Maintenance calls etcd 3.4 answers in its own way, compared with etcd on the same requests:
//! `Defragment` answers with no header; `Hash` (the v2-style hash of the whole backend, which
//! python-etcd3's `hash()` calls — `etcdctl endpoint hash` is `hashkv`) is the same on every
//! member after the same writes and carries a header; `MoveLeader` (`etcdctl move-leader`) hands
//! leadership to the member named, answers with no header, and refuses what etcd refuses with
//! etcd's errors.

use conclave_tests::{Cluster, Kind, etcdctl, free_port, same_on_etcd_and_subject, same_on_etcd_and_subject_clusters};
use etcd_client::{Client, Error};

use conclave_tests::{Load, assert_all_readable, connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defragment_answers_without_a_header() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        client.put("k", "v", None).await.expect("put");
        let defragmented = client.defragment().await.expect("defragment");
        assert!(defragmented.header().is_none(), "etcd 3.4 sends no header: {defragmented:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hash_is_the_same_on_every_member_after_the_same_writes() {
    same_on_etcd_and_subject_clusters(3, &[], |cluster| async move {
        let mut clients = Vec::new();
        for (i, endpoint) in cluster.endpoints().iter().enumerate() {
            let mut client = connect(endpoint).await;
            client.put(format!("k{i}"), "v", None).await.expect("put");
            client.delete("k0", None).await.expect("delete");
            clients.push(client);
        }
        let mut hashes = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            // A linearizable read: this member has applied every write above.
            let revision = client.get("k1", None).await.expect("get").header().expect("a header").revision();
            let hashed = client.hash().await.expect("hash");
            let header = hashed.header().expect("Hash answers with a header");
            assert_eq!(header.member_id(), cluster.member_id(i).await.expect("status"), "the member's own id");
            assert_ne!(header.cluster_id(), 0);
            assert!(header.raft_term() > 0);
            assert_eq!(header.revision(), revision, "the header has the store's revision");
            hashes.push(hashed.hash());
        }
        assert!(hashes.iter().all(|&h| h == hashes[0]), "members that applied the same log differ: {hashes:?}");
        assert_ne!(hashes[0], 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_leader_hands_leadership_to_the_member_named() {
    let transcript = same_on_etcd_and_subject_clusters(3, &[], |cluster| async move {
        let leader = cluster.leader().await.expect("a leader");
        let (target, other) = ((leader + 1) % 3, (leader + 2) % 3);
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(cluster.member_id(i).await.expect("status"));
        }
        let mut roles = Roles(vec![(ids[leader], "<leader>"), (ids[target], "<target>"), (ids[other], "<other>")]);
        let all = cluster.endpoints().join(",");
        let mut transcript = vec![roles.ctl(&all, &["move-leader", &format!("{:x}", ids[leader])])];

        let mut on_leader = connect(&cluster.members[leader].endpoint()).await;
        let mut on_target = connect(&cluster.members[target].endpoint()).await;
        transcript.push(format!("to itself: {}", moved(&mut on_leader, ids[leader]).await));
        transcript.push(format!("asked of a follower: {}", moved(&mut on_target, ids[target]).await));
        transcript.push(format!("to a member not in the cluster: {}", moved(&mut on_leader, ids.iter().max().unwrap() + 1).await));

        transcript.push(roles.ctl(&all, &["move-leader", &format!("{:x}", ids[target])]));
        let now_leads = cluster.leader().await.expect("a leader after the move");
        transcript.push(format!("leads afterwards: {}", roles.name(ids[now_leads])));
        on_leader.put("k", "through the old leader", None).await.expect("a write after the move");
        transcript.push(format!("back, asked of the old leader: {}", moved(&mut on_leader, ids[leader]).await));

        let learner = tokio::task::block_in_place(|| add_learner(&cluster));
        roles.0.push((u64::from_str_radix(&learner, 16).expect("a hex id"), "<learner>"));
        transcript.push(roles.ctl(&all, &["move-leader", &learner]));
        transcript
    })
    .await;
    assert_eq!(transcript[5], "leads afterwards: <target>");
}

/// Under writes through every member, each move hands leadership to the member named (the leader
/// holds new proposals back meanwhile, or the target would never hold every entry), and no
/// acknowledged write is lost. Not compared with etcd, whose leader fails writes during a move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_leader_under_writes_hands_leadership_over() {
    let cluster = Cluster::start(Kind::subject(), 3, &[]).expect("cluster starts");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(cluster.member_id(i).await.expect("status"));
    }
    let load = Load::start(cluster.endpoints().into_iter().cycle().take(6));
    load.acks.wait_for(50).await;
    let all = cluster.endpoints().join(",");
    for _ in 0..3 {
        let target = (cluster.leader().await.expect("a leader") + 1) % 3;
        let out = tokio::task::block_in_place(|| etcdctl(&all, &["move-leader", &format!("{:x}", ids[target])], None)).expect("etcdctl runs");
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(cluster.leader().await.expect("a leader after the move"), target);
    }
    let written = load.finish().await;
    assert_all_readable(&cluster.members[0].endpoint(), &written).await;
}

/// Member ids and the role each plays in a test, so transcripts of two clusters compare.
struct Roles(Vec<(u64, &'static str)>);

impl Roles {
    fn name(&self, id: u64) -> &'static str {
        self.0.iter().find(|(known, _)| *known == id).map_or("<unknown>", |(_, role)| role)
    }

    /// `etcdctl args` through `endpoints`: exit code, stdout and the last line of stderr (etcdctl's
    /// error; the lines before are clientv3's retry log), hex ids replaced by roles.
    fn ctl(&self, endpoints: &str, args: &[&str]) -> String {
        let out = tokio::task::block_in_place(|| etcdctl(endpoints, args, None)).expect("etcdctl runs");
        let text = format!("{args:?} -> {}: {} {}", out.code, out.stdout.trim(), out.stderr.trim().lines().last().unwrap_or(""));
        self.0.iter().fold(text, |text, (id, role)| text.replace(&format!("{id:x}"), role))
    }
}

/// The outcome of a MoveLeader call to `target` through `client`.
async fn moved(client: &mut Client, target: u64) -> String {
    match client.move_leader(target).await {
        Ok(answer) => format!("ok, header: {:?}", answer.header()),
        Err(Error::GRpcStatus(status)) => format!("{:?}: {}", status.code(), status.message()),
        Err(other) => format!("{other}"),
    }
}

/// Adds a learner that is never started; its id in hex.
fn add_learner(cluster: &Cluster) -> String {
    let peer_urls = format!("--peer-urls=http://127.0.0.1:{}", free_port());
    let added = cluster.reconfigure(&["member", "add", "learner", "--learner", &peer_urls]).expect("a learner is added");
    added.split_whitespace().nth(1).expect("etcdctl names the added member").to_string()
}
