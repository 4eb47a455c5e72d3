//! `etcdctl snapshot save` takes a consistent copy of a running Conclave that seeds a new node.

use conclave_tests::{Kind, Node, etcdctl};

fn ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args, None).expect("etcdctl runs");
    assert_eq!(out.code, 0, "etcdctl {args:?}: {}", out.stderr);
    out.stdout
}

#[test]
fn snapshot_save_restores_a_node() {
    let source = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    for i in 0..20 {
        ok(&source.endpoint(), &["put", &format!("key{i:02}"), &format!("value{i}")]);
    }
    ok(&source.endpoint(), &["del", "key05"]);
    ok(&source.endpoint(), &["compaction", "10"]);
    let file = source.data_dir().join("backup.snap");
    ok(&source.endpoint(), &["snapshot", "save", file.to_str().unwrap()]);
    let expected = ok(&source.endpoint(), &["get", "key", "--prefix", "-w", "json"]);

    let restored = Node::start(Kind::Conclave, &["--restore-snapshot", file.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let got = ok(&restored.endpoint(), &["get", "key", "--prefix", "-w", "json"]);
    let strip_ids = |json: &str| -> serde_json::Value {
        let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["header"] = serde_json::Value::Null;
        value
    };
    assert_eq!(strip_ids(&got), strip_ids(&expected));
    // History and the revision counter came along: the compaction point holds, new writes go on.
    let compacted = etcdctl(&restored.endpoint(), &["get", "key00", "--rev", "9"], None).unwrap();
    assert!(compacted.stderr.contains("required revision has been compacted"), "{}", compacted.stderr);
    let put = ok(&restored.endpoint(), &["put", "after", "x", "-w", "json"]);
    assert!(put.contains("\"revision\":23"), "{put}");
}

#[test]
fn damaged_snapshot_is_refused() {
    let source = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    ok(&source.endpoint(), &["put", "k", "v"]);
    let file = source.data_dir().join("backup.snap");
    ok(&source.endpoint(), &["snapshot", "save", file.to_str().unwrap()]);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();

    let err = Node::start(Kind::Conclave, &["--restore-snapshot", file.to_str().unwrap()])
        .err()
        .expect("a truncated snapshot must be refused");
    assert!(format!("{err:#}").contains("SHA-256"), "{err:#}");
}
