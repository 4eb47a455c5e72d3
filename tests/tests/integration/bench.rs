//! `conclavectl bench` on small totals against etcd and Conclave: it counts right (the watch
//! workloads every event to every watcher), classifies failures by kind, and fails clearly on a
//! dead endpoint. Never a timing assertion.

use conclave_tests::conclavectl::{failed, ok, run};
use conclave_tests::{Cluster, Kind, Node};

fn bench_json(node: &Node, args: &[&str]) -> serde_json::Value {
    let out = ok(run(&node.endpoint(), &[&["-w", "json", "bench"], args].concat()));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn counts_requests_and_failures_on_both_servers() {
    for kind in [Kind::Etcd, Kind::subject()] {
        let node = Node::start(kind, &[]).unwrap();
        for workload in ["put", "range", "txn-put"] {
            let report = bench_json(&node, &[workload, "--total", "120", "--clients", "3", "--conns", "2", "--key-space-size", "50"]);
            assert_eq!((report["requests"].as_u64(), report["failed"].as_u64()), (Some(120), Some(0)), "{kind:?} {workload}: {report}");
            let latency = &report["latency_ms"];
            assert!(latency["min"].as_f64() <= latency["p50"].as_f64() && latency["p99"].as_f64() <= latency["max"].as_f64(), "{report}");
        }
        let workloads = [
            &["lease-keepalive"][..],
            &["lock"],
            &["lock", "--contended"],
            &["lock-recipe"],
            &["lock-recipe", "--contended"],
            &["election"],
            &["election", "--contended"],
            &["txn-mixed", "--rw-ratio", "3"],
        ];
        for workload in workloads {
            let report = bench_json(&node, &[workload, &["--total", "40", "--clients", "3"]].concat());
            assert_eq!((report["requests"].as_u64(), report["failed"].as_u64()), (Some(40), Some(0)), "{kind:?} {workload:?}: {report}");
        }
        let plugin = bench_json(&node, &["plugin", "--total", "20", "--clients", "2"]);
        match kind {
            Kind::Conclave => assert_eq!(plugin["requests"], 20, "{plugin}"),
            Kind::Etcd => assert_eq!(plugin["failures"]["Unimplemented: unknown service conclave.plugin.Plugin"], 20, "{plugin}"),
        }
        let serializable = bench_json(&node, &["range", "--total", "50", "--consistency", "s"]);
        assert_eq!(serializable["requests"], 50, "{kind:?}: {serializable}");
        let too_large = bench_json(&node, &["put", "--total", "7", "--val-size", "2000000"]);
        assert_eq!(too_large["requests"], 0, "{kind:?}: {too_large}");
        assert_eq!(too_large["failures"]["InvalidArgument: etcdserver: request is too large"], 7, "{kind:?}: {too_large}");
    }
}

#[test]
fn watch_workloads_deliver_every_event_on_both_servers() {
    let keys = ["requests", "failed", "seconds", "requests_per_second", "latency_ms", "mean_latency_ms", "failures"];
    let watch_keys = ["events", "events_per_second", "event_responses", "event_latency_ms", "mean_event_latency_ms"];
    for kind in [Kind::Etcd, Kind::subject()] {
        let node = Node::start(kind, &[]).unwrap();
        let runs: [(&[&str], u64); 4] = [
            (&["watch", "--watchers", "3", "--streams", "2", "--conns", "2", "--clients", "2", "--total", "20", "--key-space-size", "5"], 3),
            // The default rate of 100 puts/s.
            (&["watch-latency", "--watchers", "4", "--streams", "3", "--total", "15"], 4),
            (&["watch", "--watchers", "3", "--duration", "300ms", "--clients", "2", "--key-size", "3", "--key-space-size", "5000"], 3),
            // Two watchers of each key, on two streams: each put's event goes to two of them.
            (&["watch", "--watch-each-key", "--watchers", "10", "--streams", "2", "--clients", "2", "--total", "30", "--key-space-size", "5"], 2),
        ];
        for (args, watchers) in runs {
            let report = bench_json(&node, args);
            let (puts, events) = (report["requests"].as_u64().unwrap(), report["events"].as_u64());
            assert_eq!((report["failed"].as_u64(), events), (Some(0), Some(puts * watchers)), "{kind:?} {args:?}: {report}");
            for key in keys.iter().chain(&watch_keys) {
                assert!(report.get(key).is_some(), "{kind:?} {args:?}: no {key} in {report}");
            }
            let latency = &report["event_latency_ms"];
            assert!(latency["min"].as_f64() <= latency["p50"].as_f64() && latency["p99"].as_f64() <= latency["max"].as_f64(), "{report}");
            if args.contains(&"--total") {
                assert_eq!(puts, args[args.iter().position(|a| *a == "--total").unwrap() + 1].parse::<u64>().unwrap(), "{report}");
            }
        }
        let text = ok(run(&node.endpoint(), &["bench", "watch-latency", "--watchers", "2", "--total", "5", "--rate", "1000"]));
        assert!(text.starts_with("5 requests in ") && text.contains(", 0 failed\n"), "{kind:?}: {text}");
        assert!(text.contains("\n10 events in ") && text.contains("\nevent latency ms: min "), "{kind:?}: {text}");
        let put = bench_json(&node, &["put", "--total", "5"]);
        assert!(watch_keys.iter().all(|key| put.get(key).is_none()), "only the watch workloads count events: {put}");
    }
}

#[tokio::test]
async fn target_leader_and_target_follower_find_their_member_among_the_endpoints() {
    let cluster = Cluster::start(Kind::subject(), 3, &[]).unwrap();
    let leader = cluster.leader().await.expect("the members agree on a leader");
    for target in ["--target-leader", "--target-follower"] {
        let endpoints = cluster.endpoints().join(",");
        let args = ["-w", "json", "bench", "put", target, "--total", "30", "--clients", "2"];
        let out = tokio::task::spawn_blocking(move || ok(run(&endpoints, &args))).await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!((report["requests"].as_u64(), report["failed"].as_u64()), (Some(30), Some(0)), "{target}: {report}");
    }
    let only_the_leader = cluster.endpoints()[leader].clone();
    let args = ["bench", "put", "--target-follower", "--total", "5"];
    let error = tokio::task::spawn_blocking(move || failed(run(&only_the_leader, &args))).await.unwrap();
    assert_eq!(error, "Error: no endpoint of --endpoints is a follower");
}

#[test]
fn a_dead_endpoint_fails_clearly() {
    let error = failed(run("127.0.0.1:1", &["bench", "put", "--total", "5", "--dial-timeout", "300ms"]));
    assert_eq!(error, "Error: context deadline exceeded");
    let error = failed(run("127.0.0.1:1", &["bench", "put", "--clients", "0"]));
    assert_eq!(error, "Error: --clients, --conns and --key-space-size must be at least 1");
    let error = failed(run("127.0.0.1:1", &["bench", "watch", "--watchers", "0"]));
    assert_eq!(error, "Error: --watchers and --streams must be at least 1");
    let error = failed(run("127.0.0.1:1", &["bench", "put", "--watch-each-key"]));
    assert_eq!(error, "Error: --watch-each-key is for the watch workload");
    let error = failed(run("127.0.0.1:1", &["bench", "watch", "--watch-each-key", "--key-size", "2", "--key-space-size", "101"]));
    assert_eq!(error, "Error: --watch-each-key needs --key-size digits enough for --key-space-size distinct keys");
    let error = failed(run("127.0.0.1:1", &["bench", "compare", "--members", "1,3", "--target", "follower"]));
    assert_eq!(error, "Error: --target follower needs --members of at least 2");
    let error = failed(run("127.0.0.1:1", &["bench", "compare", "--workloads", "put,plugin"]));
    assert_eq!(error, "Error: etcd has no plugins to compare with: run the plugin workload alone (conclavectl bench plugin)");
}

/// `bench compare` on a tiny matrix: fresh clusters of both servers, interleaved runs, and
/// results.md, results.json and the charts with every row; the members' data gone afterwards.
/// Never a timing assertion.
#[test]
fn compare_writes_the_table_the_figures_and_the_charts() {
    let (out, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut command = std::process::Command::new(conclave_tests::conclavectl_bin().unwrap());
    command.args(["bench", "compare", "--members", "1", "--clients", "1,2", "--workloads", "put,range-s"]);
    command.args(["--duration", "300ms", "--rounds", "2", "--memory-keys", "200", "--out"]).arg(out.path()).arg("--tmp-dir").arg(tmp.path());
    command.args(["--", "--val-size", "16"]);
    for (var, flag) in [("CONCLAVE_BIN", "--conclave"), ("ETCD_BIN", "--etcd")] {
        if let Some(path) = std::env::var_os(var) {
            command.arg(flag).arg(path);
        }
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench compare failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), out.path().join("results.md").display().to_string());

    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(md.contains("fdatasync/s") && md.contains("1-client put on one member per fdatasync"), "{md}");
    assert!(md.contains("bench compare --members 1"), "the command line: {md}");
    for row in ["| put | 1 |", "| put | 2 |", "| range-s | 1 |", "| range-s | 2 |", "| 1 | Conclave | 200 |", "| 1 | etcd | 200 |"] {
        assert!(md.contains(row), "no {row:?} in {md}");
    }

    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap()).unwrap();
    assert!(json["fdatasync_per_second"].as_f64() > Some(0.0), "{json}");
    let summary = json["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 4, "{json}");
    for row in summary {
        for system in ["conclave", "etcd"] {
            let figures = &row[system];
            assert_eq!((figures["rounds"].as_u64(), figures["failed"].as_u64()), (Some(2), Some(0)), "{system}: {row}");
            assert!(figures["requests_per_second"].as_f64() > Some(0.0) && figures["cpu_seconds_per_10k"].as_f64() > Some(0.0), "{row}");
            assert!(figures["latency_ms"]["p99"].as_f64() > Some(0.0) && figures["rss_mib"].as_f64() > Some(0.0), "{row}");
        }
    }
    // Interleaved: each round runs both systems, and which goes first alternates.
    let systems: Vec<&str> = json["runs"].as_array().unwrap().iter().map(|run| run["system"].as_str().unwrap()).collect();
    assert_eq!(systems.len(), 16);
    for pair in systems.chunks(2) {
        assert_ne!(pair[0], pair[1], "{systems:?}");
    }
    assert_ne!(systems[0], systems[2], "{systems:?}");
    for memory in json["memory"].as_array().unwrap() {
        assert!(memory["error"].is_null() && memory["keys_stored"].as_u64() > Some(0), "{memory}");
    }

    for chart in ["throughput-1.png", "latency-1.png"] {
        let png = std::fs::read(out.path().join(chart)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{chart} is not a PNG");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the members' data is removed");
}
