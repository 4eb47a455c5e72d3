//! `conclavectl dump-log`: a member's raft log printed entry by entry (term, index, type, decoded
//! requests) after the member is killed, and refused while the member runs.

use std::process::{Command, Output};

use conclave_tests::{Kind, Node, conclavectl_bin};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

fn dump_log(node: &Node) -> Output {
    let bin = conclavectl_bin().expect("conclavectl is built");
    Command::new(bin).arg("dump-log").arg("--data-dir").arg(node.data_dir()).output().expect("conclavectl runs")
}

/// (term, index) of the last entry applied by the member, just after a write it acknowledged.
async fn applied(client: &mut Client) -> (u64, u64) {
    let status = client.status().await.expect("status");
    (status.raft_term(), status.raft_applied_index())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_log_prints_every_request_with_term_index_and_type() {
    let mut node = Node::start(Kind::Conclave, &[]).expect("conclave starts");
    let mut client = Client::connect([node.endpoint()], None).await.expect("connect");

    let mut expected = Vec::new();
    client.put("a", "1", None).await.expect("put");
    expected.push((applied(&mut client).await, r#"put key="a" value="1" lease=0"#.to_string()));
    client.put("b", "2", None).await.expect("put");
    client.delete("b", None).await.expect("delete");
    expected.push((applied(&mut client).await, r#"delete_range key="b" range_end="""#.to_string()));
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("c", "3", None)])
        .or_else([TxnOp::delete("a", None)]);
    client.txn(txn).await.expect("txn");
    expected.push((
        applied(&mut client).await,
        r#"txn compare=[value(key="a") = "1"] success=[put key="c" value="3" lease=0] failure=[delete_range key="a" range_end=""]"#
            .to_string(),
    ));
    let revision = client.put("d", "4", None).await.expect("put").header().unwrap().revision();
    client.compact(revision, None).await.expect("compact");
    expected.push((applied(&mut client).await, format!("compaction revision={revision} ")));
    let lease = client.lease_grant(600, None).await.expect("lease grant");
    expected.push((applied(&mut client).await, format!("lease_grant id={} ttl=600", lease.id())));

    let refused = dump_log(&node);
    assert!(!refused.status.success(), "dump-log ran on the data dir of a running member");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is in use (is conclave running?)"), "unexpected refusal: {stderr}");

    node.kill9();
    let dumped = dump_log(&node);
    let stdout = String::from_utf8_lossy(&dumped.stdout);
    assert!(dumped.status.success(), "dump-log failed: {}\n{stdout}", String::from_utf8_lossy(&dumped.stderr));
    assert!(stdout.starts_with("Snapshot:"), "no snapshot section:\n{stdout}");

    let entries: Vec<Vec<&str>> =
        stdout.lines().map(|line| line.split('\t').map(str::trim).collect::<Vec<_>>()).filter(|f| f.len() == 4).collect();
    for ((term, index), request) in &expected {
        let line = entries
            .iter()
            .find(|f| f[1] == index.to_string())
            .unwrap_or_else(|| panic!("no entry with index {index} in:\n{stdout}"));
        assert_eq!(line[0], term.to_string(), "term of entry {index}:\n{stdout}");
        assert_eq!(line[2], "normal", "type of entry {index}:\n{stdout}");
        assert!(line[3].contains(request.as_str()), "entry {index} is {:?}, expected {request:?}", line[3]);
    }
    // The single member's first entries: the initial membership, then the leader's blank entry.
    assert!(
        entries.iter().any(|f| f[2] == "conf change" && f[3].starts_with("voters=[")),
        "no membership entry:\n{stdout}"
    );
    assert!(entries.iter().any(|f| f[2] == "blank"), "no blank entry:\n{stdout}");
}
