//! Running out of space as on etcd: once the database outgrows `--quota-backend-bytes` a write
//! fails with "database space exceeded" and raises the NOSPACE alarm; while it is active writes
//! that add data are refused (even small ones), reads and deletes are not; `etcdctl alarm list`,
//! `endpoint status` and `alarm disarm` show and clear it, and the next write over the quota
//! raises it again; `/health` is false while the alarm is active. The transcript after the first
//! refused write must match etcd's.

use conclave_tests::curl::curl;
use conclave_tests::{Cluster, Kind, Node, etcdctl};
use etcd_client::Client;

/// Small enough to fill in a few megabytes on either server.
const QUOTA: &str = "100000";
/// No server takes more than this many 20 KB puts before refusing.
const MAX_PUTS: usize = 500;

/// Put 20 KB values through `client` until one is refused; how it was refused.
async fn fill(client: &mut Client) -> String {
    let value = "x".repeat(20_000);
    for i in 0..MAX_PUTS {
        match client.put(format!("k{i}"), value.as_str(), None).await {
            Ok(_) => continue,
            Err(etcd_client::Error::GRpcStatus(status)) => return format!("{:?} {}", status.code(), status.message()),
            Err(other) => return other.to_string(),
        }
    }
    panic!("{MAX_PUTS} puts of 20 KB fit in a quota of {QUOTA} bytes");
}

/// Fill `node` until a put is refused, then run the alarm session; its transcript.
async fn session(node: &Node) -> Vec<String> {
    let mut client = Client::connect([node.endpoint()], None).await.expect("connect");
    let mut transcript = vec![format!("first refusal: {}", fill(&mut client).await)];
    transcript.push(health(node));
    let id = format!("{}", client.status().await.expect("status").header().expect("header").member_id());
    let steps: &[(&str, &str)] = &[
        ("alarm list", ""),
        ("put small v", ""),
        ("get k0 --keys-only", ""),
        ("del k0", ""),
        ("lease grant 10", ""),
        ("txn", "\n\nget k1 --keys-only\n\n"),
        ("txn", "\nput z 1\n\n\n"),
        ("endpoint status -w json", ""),
        ("alarm disarm", ""),
        ("alarm list", ""),
        ("put small v", ""),
        ("alarm list", ""),
    ];
    for (index, (command, stdin)) in steps.iter().enumerate() {
        if index == steps.len() - 2 {
            // Disarmed, before the next write over the quota raises the alarm again.
            transcript.push(health(node));
        }
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = etcdctl(&node.endpoint(), &args, (!stdin.is_empty()).then_some(*stdin)).expect("etcdctl runs");
        let stdout = if command.starts_with("endpoint status") { errors_of(&out.stdout) } else { out.stdout };
        let last = out.stderr.lines().last().unwrap_or("").to_string();
        transcript.push(format!("$ {command}\n{} {stdout}{last}", out.code).replace(&id, "<member>"));
    }
    transcript
}

/// `/health`'s status and verdict (Conclave adds the reason etcd 3.5 gives).
fn health(node: &Node) -> String {
    let answer = curl(&format!("{}/health", node.endpoint()), &[]);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    if node.kind() == Kind::Conclave && answer.status != 200 {
        assert_eq!(body["reason"], "ALARM NOSPACE", "{answer:?}");
    }
    format!("/health {} {}", answer.status, body["health"])
}

/// The `errors` of the one endpoint in `endpoint status -w json` output.
fn errors_of(stdout: &str) -> String {
    let status: serde_json::Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    format!("errors: {}\n", status[0]["Status"]["errors"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_space_raises_and_clears_the_alarm_as_on_etcd() {
    let args = ["--quota-backend-bytes", QUOTA];
    let etcd = Node::start(Kind::Etcd, &args).expect("etcd starts");
    let expected = session(&etcd).await;
    let subject = Node::start(Kind::subject(), &args).expect("server starts");
    assert_eq!(session(&subject).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alarm_holds_on_every_member_and_across_restarts() {
    let mut cluster = Cluster::start(Kind::subject(), 3, &["--quota-backend-bytes", QUOTA]).expect("cluster starts");
    let mut client = Client::connect([cluster.members[0].endpoint()], None).await.expect("connect");
    fill(&mut client).await;
    cluster.members[1].restart().expect("a member restarts");
    for member in &cluster.members {
        let mut client = Client::connect([member.endpoint()], None).await.expect("connect");
        let refused = client.put("small", "v", None).await.expect_err("NOSPACE refuses writes everywhere");
        assert!(refused.to_string().contains("database space exceeded"), "{refused}");
        let listed = etcdctl(&member.endpoint(), &["alarm", "list"], None).expect("etcdctl runs");
        assert!(listed.stdout.contains("alarm:NOSPACE"), "{listed:?}");
    }
}
