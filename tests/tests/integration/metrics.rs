//! `/metrics` after a known workload: the text parses as the Prometheus exposition format and the
//! counters moved by what the workload did, on the client port and on `--listen-metrics-urls`.

use std::collections::HashMap;

use conclave_tests::curl::{curl, post};
use conclave_tests::{Kind, Node, free_port};

/// Every sample of an exposition as `name{labels}` → value; panics on a line that is neither a
/// comment nor a sample.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

fn scrape(base: &str) -> HashMap<String, f64> {
    let answer = curl(&format!("{base}/metrics"), &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    samples(&answer.body)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let value = |m: &HashMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
    value(after) - value(before)
}

#[test]
fn counters_move_by_the_workload() {
    let metrics_port = free_port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let node = Node::start(Kind::Conclave, &["--listen-metrics-urls", &metrics_url]).unwrap();
    let base = node.endpoint();
    let before = scrape(&base);

    // Keys k0…k4 in base64.
    for key in ["azA=", "azE=", "azI=", "azM=", "azQ="] {
        let answer = post(&base, "/v3/kv/put", &format!(r#"{{"key":"{key}","value":"dg=="}}"#), &[]);
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    for _ in 0..3 {
        post(&base, "/v3/kv/range", r#"{"key":"azA="}"#, &[]);
    }
    post(&base, "/v3/kv/deleterange", r#"{"key":"azA="}"#, &[]);
    post(&base, "/v3/kv/range", r#"{"key":"azA=","revision":"1000"}"#, &[]);
    post(&base, "/v3/lease/grant", r#"{"TTL":60}"#, &[]);
    for _ in 0..2 {
        post(&base, "/v3/plugin/invoke", r#"{"plugin":"counter","method":"add","payload":"eyJuYW1lIjoibSIsImRlbHRhIjoxfQ=="}"#, &[]);
    }
    // Not JSON: the plugin answers with an error of its own.
    post(&base, "/v3/plugin/invoke", r#"{"plugin":"counter","method":"add","payload":"bm9wZQ=="}"#, &[]);

    let after = scrape(&metrics_url);
    // The plugin's own writes are puts too: two calls of `add`.
    assert_eq!(delta(&before, &after, "etcd_mvcc_put_total"), 7.0);
    assert_eq!(delta(&before, &after, "etcd_mvcc_delete_total"), 1.0);
    assert!(delta(&before, &after, "etcd_mvcc_range_total") >= 4.0);
    assert_eq!(delta(&before, &after, "etcd_debugging_lease_granted_total"), 1.0);
    assert_eq!(after["etcd_debugging_mvcc_keys_total"], 5.0, "4 keys left and the plugin's counter");
    assert_eq!(after["etcd_server_has_leader"], 1.0);
    assert_eq!(after["etcd_server_is_leader"], 1.0);
    assert!(after["etcd_server_proposals_applied_total"] >= after["etcd_server_proposals_committed_total"] - 1.0);
    assert!(delta(&before, &after, "etcd_disk_wal_fsync_duration_seconds_count") >= 8.0);
    assert!(delta(&before, &after, "etcd_disk_backend_commit_duration_seconds_count") >= 8.0);
    let handled = |method: &str, code: &str| {
        format!(r#"grpc_server_handled_total{{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="{method}",grpc_code="{code}"}}"#)
    };
    assert_eq!(delta(&before, &after, &handled("Put", "OK")), 5.0);
    assert_eq!(delta(&before, &after, &handled("Range", "OK")), 3.0);
    assert_eq!(delta(&before, &after, &handled("Range", "OutOfRange")), 1.0);
    let calls = |outcome: &str, method: &str| {
        format!(r#"conclave_plugin_calls_total{{plugin="counter",method="{method}",outcome="{outcome}"}}"#)
    };
    assert_eq!(delta(&before, &after, &calls("ok", "add")), 2.0);
    assert_eq!(delta(&before, &after, &calls("guest_error", "add")), 1.0, "{after:?}");
    assert_eq!(after[r#"conclave_plugin_call_duration_seconds_count{plugin="counter",method="add"}"#], 3.0);
    assert!(after[r#"conclave_plugin_fuel_consumed_total{plugin="counter",method="add"}"#] > 0.0);
    // The three calls came one after another: the counter plugin (which allows reuse) ran them
    // all on one instance, idle now.
    assert_eq!(after["conclave_plugin_instances"], 0.0);
    assert_eq!(after["conclave_plugin_idle_instances"], 1.0);

    // The metrics port serves /health too, and nothing of the client API.
    assert_eq!(curl(&format!("{metrics_url}/health"), &[]).body, r#"{"health":"true"}"#);
    assert_eq!(post(&metrics_url, "/v3/kv/range", "{}", &[]).status, 404);
}
