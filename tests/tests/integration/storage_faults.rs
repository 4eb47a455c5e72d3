//! Damaged data files at start-up: a raft log or snapshot with a flipped bit or cut short is
//! refused with an error naming the file, never served; a damaged state file (sled's) is
//! recovered from the snapshot and the raft log with every acknowledged write. A disk that fills
//! up (a tmpfs of the test's) refuses writes with NOSPACE before it is full, loses nothing, and
//! takes writes again once it has space and the alarm is disarmed.

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
    // Mid-segment, so the damaged record is never the last one (a damaged last record is a torn
    // write, cut off): entries vary in size with the proposal ids they carry.
    let len = std::fs::metadata(&segment).unwrap().len() as usize;
    flip_byte(&segment, len / 2);
    refuses_to_start_naming(&mut node, &segment);
}

/// The offsets of the entry records in raft log segment `path` (`length u32 | crc u32 | kind u8 |
/// payload`, kind 1 an entry, as `host/src/raft/wal/record.rs` frames them).
fn entry_records(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if length == 0 {
            break;
        }
        if bytes[at + 8] == 1 {
            entries.push(at);
        }
        at += 8 + length;
    }
    entries
}

#[tokio::test]
async fn a_damaged_record_length_in_the_raft_log_stops_start_up_naming_the_segment() {
    let (mut node, _) = member_with_a_snapshot(150).await;
    let segment = raft_log_segment(&node);
    let entries = entry_records(&segment);
    // The length's high byte: the record now runs past the end of the segment. Taken for a torn
    // write, it would drop every entry after it.
    flip_byte(&segment, entries[entries.len() / 2] + 3);
    refuses_to_start_naming(&mut node, &segment);
}

#[tokio::test]
async fn a_raft_log_cut_short_stops_start_up_naming_the_segment() {
    let (mut node, _) = member_with_a_snapshot(150).await;
    let segment = raft_log_segment(&node);
    let last_entry = *entry_records(&segment).last().unwrap();
    cut_to(&segment, last_entry as u64 + 12);
    refuses_to_start_naming(&mut node, &segment);
}

#[tokio::test]
async fn a_raft_log_that_lost_entries_the_state_applied_stops_start_up_naming_it() {
    let mut node = Node::start(Kind::Conclave, &["--snapshot-count", "100"]).expect("node starts");
    let mut client = connect(&node.endpoint()).await;
    for i in 0..150 {
        put(&mut client, &format!("k{i:04}"), "v").await;
    }
    // A clean stop: the state is flushed, with the last entries applied.
    node.stop();
    let segment = raft_log_segment(&node);
    // Zeros from the last two entries on, as a torn write would leave: the log alone cannot tell.
    let entries = entry_records(&segment);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[entries[entries.len() - 2]..].fill(0);
    std::fs::write(&segment, bytes).unwrap();
    let wal = node.data_dir().join("wal");
    refuses_to_start_naming(&mut node, &wal);
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

/// Free space below which a member raises NOSPACE (`DISK_RESERVE_BYTES` in
/// host/src/node/space.rs: a log segment and 32 MiB).
const DISK_RESERVE: u64 = (64 + 32) << 20;
/// What a fresh member takes on the small disk: its first log segment, preallocated, and sled.
const MEMBER_FOOTPRINT: u64 = 72 << 20;

/// Put 256 KiB values through `client` until one is refused; what was acknowledged, and how
/// the refusal read.
async fn fill_disk(client: &mut etcd_client::Client) -> (Vec<String>, String) {
    let value = "x".repeat(256 << 10);
    let mut written = Vec::new();
    for i in 0..1000 {
        let key = format!("big{i:04}");
        match client.put(key.as_str(), value.as_str(), None).await {
            Ok(_) => written.push(key),
            Err(etcd_client::Error::GRpcStatus(status)) => return (written, format!("{:?} {}", status.code(), status.message())),
            Err(other) => return (written, other.to_string()),
        }
    }
    panic!("1000 puts of 256 KiB fit on a disk of {} MiB", (DISK_RESERVE + MEMBER_FOOTPRINT) >> 20);
}

async fn alarms(client: &mut etcd_client::Client) -> Vec<etcd_client::AlarmType> {
    use etcd_client::{AlarmAction, AlarmType};
    let listed = client.alarm(AlarmAction::Get, AlarmType::None, None).await.expect("alarm list");
    listed.alarms().iter().map(|a| a.alarm()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_that_fills_up_refuses_writes_with_nospace_and_loses_nothing() {
    use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
    let disk = conclave_tests::small_disk::SmallDisk::mount(MEMBER_FOOTPRINT + DISK_RESERVE + (48 << 20)).expect("a small disk");
    let mut node = Node::start_in(Kind::Conclave, disk.path(), &[], conclave_tests::Schemes::PLAIN).expect("node starts");
    let mut client = connect(&node.endpoint()).await;
    let (written, refusal) = fill_disk(&mut client).await;
    assert!(!written.is_empty(), "nothing fit: {refusal}");
    assert_eq!(refusal, "ResourceExhausted etcdserver: mvcc: database space exceeded");
    assert_eq!(alarms(&mut client).await, [AlarmType::Nospace], "NOSPACE raised");
    // Reads and deletes go on; everything acknowledged is there.
    for key in &written {
        assert_eq!(client.get(key.as_str(), None).await.expect("get").kvs().len(), 1, "{key} was acknowledged");
    }
    client.delete(written[0].as_str(), None).await.expect("a delete frees space");

    // Space comes back: once the member has seen it, disarming lets writes through.
    disk.resize(1 << 30).expect("the disk grows");
    let member_id = client.status().await.expect("status").header().expect("header").member_id();
    let disarm = || {
        let mut options = AlarmOptions::new();
        options.with_member(member_id);
        options
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        client.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(disarm())).await.expect("alarm disarm");
        if client.put("after", "space", None).await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "writes still refused 10 s after the disk grew");
        tokio::time::sleep(conclave_tests::POLL).await;
    }
    assert!(alarms(&mut client).await.is_empty());

    // A kill -9 then: everything acknowledged survives.
    node.restart().expect("the member restarts");
    let mut client = connect(&node.endpoint()).await;
    for key in written.iter().skip(1).chain([&"after".to_string()]) {
        assert_eq!(client.get(key.as_str(), None).await.expect("get").kvs().len(), 1, "{key} after the restart");
    }
}
