//! etcdctl sessions over the whole KV surface, run on a fresh etcd and a fresh Conclave:
//! the normalised transcripts (stdout, stderr, exit code of every step) must be identical.
//!
//! Values avoid 8–16 character hex-looking words, which the normaliser takes for ids.

use conclave_tests::{Step, assert_same_as_etcd, ctl, ctl_stdin, ctls, formats};

/// Flags for the limits session; small so the error cases are cheap to reach.
const LIMITS: &[&str] = &["--max-txn-ops", "3", "--max-request-bytes", "4096"];

/// Concatenates groups of steps.
fn steps<const N: usize>(groups: [Vec<Step>; N]) -> Vec<Step> {
    groups.concat()
}

/// The same step once per output format — for writes too: both servers see the same
/// sequence, so the revisions each one bumps stay comparable.
fn all_formats(cmdlines: &[&str]) -> Vec<Step> {
    cmdlines.iter().flat_map(|c| formats(c)).collect()
}

/// Keys spread over a range, for range/prefix/from-key reads and deletes.
const SEED: &[&str] = &[
    "put a 1",
    "put ab 2",
    "put abc 3",
    "put b 4",
    "put b1 5",
    "put c 6",
    "put d 7",
];

#[test]
fn put() {
    assert_same_as_etcd(
        &[],
        &steps([
            ctls(&["put foo bar", "put foo 'bar with spaces'"]),
            all_formats(&["put foo bar2 --prev-kv"]),
            // A fresh key each time: no previous kv to return.
            ctls(&[
                "put new1 v --prev-kv",
                "put new2 v --prev-kv -w json",
                "put new3 v --prev-kv -w fields",
            ]),
            ctls(&["put new4 v -w json", "put new5 v -w fields"]),
            vec![
                ctl_stdin("put from-stdin", "value read from stdin"),
                ctl("get from-stdin"),
            ],
            ctls(&[
                "put foo --ignore-value",
                "put foo v3 --ignore-lease",
                "get foo -w json",
                // Both need an existing key.
                "put missing --ignore-value",
                "put missing v --ignore-lease",
                "put foo v --lease 1234",
                "put '' v",
                "put --hex foo v",
                "get foo --hex",
            ]),
        ]),
    );
}

#[test]
fn get_ranges() {
    assert_same_as_etcd(
        &[],
        &steps([
            ctls(SEED),
            all_formats(&[
                "get a",
                "get missing",
                "get a --prefix",
                "get b --from-key",
                "get '' --from-key",
                "get '' --prefix",
                "get ab c",
                "get c a",
                "get a --prefix --limit 2",
                "get '' --from-key --limit 3",
                "get a --prefix --keys-only",
                "get a --prefix --consistency=s",
                "get ab c --consistency=l",
            ]),
            // Empty key with a range end; negative revision and limit mean "none".
            ctls(&["get '' c", "get a --rev -1", "get a --prefix --limit -1"]),
            ctls(&[
                "get a --prefix --print-value-only",
                "get a --prefix --print-value-only --keys-only",
                "get ''",
            ]),
        ]),
    );
}

#[test]
fn get_sorted() {
    // No ties on any target: each key has a distinct version, create, mod revision and value.
    let seed = ctls(&[
        "put k2 m", "put k1 z", "put k3 a", "put k1 y", "put k3 b", "put k3 c",
    ]);
    let mut sorted = Vec::new();
    for target in ["KEY", "VERSION", "CREATE", "MODIFY", "VALUE"] {
        for order in ["ASCEND", "DESCEND"] {
            sorted.extend(ctls(&[&format!(
                "get k --prefix --sort-by {target} --order {order}"
            )]));
            sorted.extend(formats(&format!(
                "get k --prefix --sort-by {target} --order {order} --limit 2"
            )));
        }
    }
    let defaults = ctls(&[
        "get k --prefix --order DESCEND",
        "get k --prefix --sort-by VALUE",
        "get k1 --sort-by VERSION",
    ]);
    assert_same_as_etcd(&[], &steps([seed, sorted, defaults]));
}

#[test]
fn get_history() {
    assert_same_as_etcd(
        &[],
        &steps([
            ctls(&[
                "put h v1", "put h v2", "put h2 x", "put h v3", "del h", "put h v4",
            ]),
            ctls(&[
                "get h --rev 1",
                "get h --rev 2",
                "get h --rev 3",
                "get h --rev 6",
                "get h --prefix --rev 4",
            ]),
            all_formats(&[
                "get h --prefix --rev 5",
                "get h --rev 7",
                "get h --rev 8",
                "get h --rev 100",
            ]),
        ]),
    );
}

#[test]
fn delete() {
    assert_same_as_etcd(
        &[],
        &steps([
            ctls(SEED),
            ctls(&["del a", "del ab -w json", "del abc -w fields"]),
            ctls(&[
                "del b --prev-kv",
                "del b1 --prev-kv -w json",
                "del c --prev-kv -w fields",
            ]),
            all_formats(&["del missing"]),
            ctls(&["get '' --from-key", "del '' --from-key"]),
            ctls(SEED),
            ctls(&["del a --prefix --prev-kv", "get '' --from-key"]),
            ctls(SEED),
            ctls(&[
                "del b c --prev-kv",
                "get '' --from-key --keys-only",
                "del c --from-key",
                "get '' --from-key -w json",
            ]),
            ctls(SEED),
            ctls(&[
                "del '' --from-key --prev-kv -w json",
                "del ''",
                "get '' --from-key",
            ]),
        ]),
    );
}

#[test]
fn txn() {
    let seed = ctls(&["put k1 v1", "put k2 v2", "put k2 v2b", "put n 0"]);
    // Each txn: compares, blank line, success ops, blank line, failure ops, blank line.
    let txns = [
        // success: every compare target and operator holds
        "value(\"k1\") = \"v1\"\nversion(\"k2\") = \"2\"\ncreate(\"k1\") = \"2\"\nmod(\"k2\") > \"3\"\n\nput k3 v3\nget k1\ndel n\n\nput failed yes\n\n",
        // failure: the value differs
        "value(\"k1\") = \"nope\"\n\nput never x\n\nget k --prefix\nput k1 v1b\n\n",
        "value(\"k1\") != \"v1\"\nversion(\"k2\") < \"2\"\n\nput a 1\n\ndel k3 --prev-kv\n\n",
        "mod(\"k1\") < \"100\"\ncreate(\"missing\") = \"0\"\nversion(\"missing\") = \"0\"\n\nget k --prefix --keys-only\nput k4 v4 --prev-kv\n\n\n",
        // value ordering, and a value compare on a missing key (false even against "")
        "value(\"k1\") > \"a\"\nvalue(\"k2\") < \"w\"\n\nget k2\n\n\n",
        "value(\"missing\") = \"\"\n\nput never x\n\nput m 1\n\n",
        // empty keys in compares and operations
        "value(\"\") = \"v\"\n\nput a 1\n\n\n",
        "\nput \"\" 1\n\n\n",
        "\nget \"\"\n\n\n",
        // no compares: success branch
        "\nput k5 v5\nget k5\n\n\n",
        // empty txn
        "\n\n\n",
    ];
    let mut runs = Vec::new();
    for stdin in txns {
        for w in ["", " -w json", " -w fields", " --interactive=false"] {
            runs.push(ctl_stdin(&format!("txn{w}"), stdin));
        }
    }
    assert_same_as_etcd(
        &[],
        &steps([seed, runs, ctls(&["get '' --from-key -w json"])]),
    );
}

#[test]
fn compaction() {
    assert_same_as_etcd(
        &[],
        &steps([
            ctls(&[
                "put c v1", "put c v2", "put c v3", "put d v1", "put c v4", "del d",
            ]),
            ctls(&[
                "compaction 0",
                "compaction -- -1",
                "compaction 3",
                "compaction 3",
                "compaction 2",
                "compaction 100",
                "compaction --physical 4",
                "compaction 4 -w json",
            ]),
            all_formats(&[
                "get c --rev 2",
                "get c --rev 3",
                "get c --rev 4",
                "get c --rev 5",
                "get d --prefix --rev 6",
                "get c --rev 100",
            ]),
            ctls(&[
                "compaction --physical 7",
                "get c --rev 6",
                "get c --rev 7 -w json",
                "get '' --from-key -w json",
            ]),
        ]),
    );
}

#[test]
fn limits() {
    let big = "x".repeat(5000);
    let fits = "y".repeat(3000);
    let txns = [
        // too many operations (max 3), in either branch
        "\nput a 1\nput b 2\nput c 3\nput d 4\n\n\n",
        "value(\"a\") = \"no\"\n\nput a 1\n\nget a\nget b\nget c\nget d\n\n",
        "value(\"a\") = \"1\"\nvalue(\"a\") = \"1\"\nvalue(\"a\") = \"1\"\nvalue(\"a\") = \"1\"\n\nput a 1\n\n\n",
        // three ops per branch is allowed
        "\nput a 1\nput b 2\nput c 3\n\nput d 1\nput e 2\nput f 3\n\n",
        // duplicate keys among writes
        "\nput a 1\nput a 2\n\n\n",
        "\nput a 1\ndel a\n\n\n",
        "\nput ab 1\ndel a --prefix\n\n\n",
        "\n\ndel a\nput a 2\n\n",
        // ...but a from-key delete is not checked against puts (etcd's interval check)
        "\ndel a --from-key\nput b 1\n\n\n",
        "\nput c 1\ndel a --from-key\n\n\n",
        // reads of the same key are not duplicates
        "\nget a\nget a\nput a 3\n\n\n",
    ];
    let mut runs: Vec<Step> = txns.iter().map(|t| ctl_stdin("txn", t)).collect();
    // Over --max-request-bytes plus gRPC's 512 KiB allowance: refused before it is decoded.
    runs.push(ctl_stdin("put huge", &"z".repeat(600_000)));
    runs.extend(ctls(&[
        &format!("put big {big}"),
        &format!("put fits {fits}"),
        "get fits --keys-only",
        "put '' v",
        "get ''",
        "del ''",
        "get '' --from-key --keys-only",
    ]));
    assert_same_as_etcd(LIMITS, &runs);
}

#[test]
fn cluster_info() {
    assert_same_as_etcd(
        &[],
        &steps([
            ctls(&["put k v"]),
            ctls(&["endpoint health", "endpoint health -w json", "member list"]),
            formats("member list").split_off(1),
            formats("endpoint status").split_off(1),
        ]),
    );
}

#[test]
fn lease_attached_keys() {
    assert_same_as_etcd(
        &[],
        &ctls(&[
            "lease grant 600",
            "put k v --lease {lease}",
            "get k -w json",
            "put k v2 --ignore-lease",
            "get k -w fields",
            "put k v3",
            "get k -w json",
        ]),
    );
}
