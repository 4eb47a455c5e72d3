//! Damaged data files at start-up: a raft log or snapshot with a flipped bit or cut short is
//! refused with an error naming the file, never served; a damaged state file (sled's) is
//! recovered from the snapshot and the raft log with every acknowledged write.

use std::path::{Path, PathBuf};

use conclave_tests::{Kind, Node, connect, put};

/// A member that has written `count` keys and taken a snapshot (every 100 entries), then was
/// killed: its data dir and what it acknowledged.
async fn member_with_a_snapshot(count: usize) -> (Node, Vec<(String, String)>) {
    let mut node = Node::start(Kind::Conclave, &["--snapshot-count", "100"]).expect("node starts");
    let mut client = connect(&node.endpoint()).await;
    let mut written = Vec::new();
    for i in 0..count {
        let (key, value) = (format!("k{i:04}"), format!("v{i}"));
        put(&mut client, &key, &value).await;
        written.push((key, value));
    }
    node.kill9();
    assert!(snapshot(&node).exists(), "the member took a snapshot");
    (node, written)
}

fn snapshot(node: &Node) -> PathBuf {
    node.data_dir().join("snap/current.snap")
}

fn raft_log_segment(node: &Node) -> PathBuf {
    let wal = node.data_dir().join("wal");
    std::fs::read_dir(&wal).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "wal")).expect("a segment")
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn cut_to(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Restarting must fail, and the log must name `file` as damaged.
fn refuses_to_start_naming(node: &mut Node, file: &Path) {
    let started = node.restart();
    assert!(started.is_err(), "the member started on a damaged {}", file.display());
    let log = node.log();
    assert!(log.contains(&file.display().to_string()) && log.contains("corrupt"), "{log}");
}

#[tokio::test]
async fn a_flipped_bit_in_the_raft_log_stops_start_up_naming_the_segment() {
    let (mut node, _) = member_with_a_snapshot(150).await;
    let segment = raft_log_segment(&node);
    flip_byte(&segment, 3000);
    refuses_to_start_naming(&mut node, &segment);
}

#[tokio::test]
async fn a_flipped_bit_in_the_snapshot_stops_start_up_naming_it() {
    let (mut node, _) = member_with_a_snapshot(150).await;
    let file = snapshot(&node);
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    flip_byte(&file, len / 2);
    refuses_to_start_naming(&mut node, &file);
}

#[tokio::test]
async fn a_snapshot_cut_short_stops_start_up_naming_it() {
    let (mut node, _) = member_with_a_snapshot(150).await;
    let file = snapshot(&node);
    let len = std::fs::metadata(&file).unwrap().len();
    cut_to(&file, len - 3);
    refuses_to_start_naming(&mut node, &file);
}

#[tokio::test]
async fn a_state_file_cut_short_is_recovered_with_every_acknowledged_write() {
    let (mut node, written) = member_with_a_snapshot(250).await;
    let state = node.data_dir().join("db/db");
    let len = std::fs::metadata(&state).unwrap().len();
    cut_to(&state, len / 3);
    node.restart().expect("the member recovers from its snapshot and raft log");
    let mut client = connect(&node.endpoint()).await;
    for (key, value) in &written {
        let got = client.get(key.as_str(), None).await.expect("get");
        assert_eq!(got.kvs().first().map(|kv| kv.value_str().unwrap().to_string()).as_ref(), Some(value), "{key}");
    }
}
