//! The reliability suite's short runs: a 3-member cluster under concurrent clients, lease, lock
//! and election clients, watchers and compactions, and seeded faults of every kind (see
//! `conclave_tests::reliability::faults`), then the history checks. Conclave and etcd 3.4 must
//! both pass; the same checks must catch each planted bug.
//! `cargo run -p conclave-tests --example reliability -- --duration 30m` is the long run.

use std::time::Duration;

use conclave_tests::Kind;
use conclave_tests::reliability::faults::FaultKind;
use conclave_tests::reliability::run::{Report, RunConfig, run};

fn config(kind: Kind, seconds: u64, planted_bug: Option<&'static str>) -> RunConfig {
    RunConfig { kind, members: 3, clients: 8, watchers: 4, lease_clients: 2, recipe_clients: 2, keys: 10, duration: Duration::from_secs(seconds), seed: 1, faults: FaultKind::defaults(kind), planted_bug }
}

async fn passes(config: RunConfig) {
    let report = run(config).await.expect("the run completes");
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    assert!(report.history.operations.iter().filter(|op| op.completed.is_some()).count() > 100, "too little was answered: {report}");
}

/// The rules the run broke, once each.
async fn broken_rules(config: RunConfig) -> (Vec<&'static str>, Report) {
    let report = run(config).await.expect("the run completes");
    println!("{report}");
    let mut rules: Vec<&'static str> = report.violations.iter().map(|v| v.rule).collect();
    rules.sort();
    rules.dedup();
    (rules, report)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_run_on_conclave_breaks_no_guarantee() {
    passes(config(Kind::Conclave, 60, None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_run_on_etcd_breaks_no_guarantee() {
    passes(config(Kind::Etcd, 30, None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checks_find_planted_stale_reads() {
    let (rules, report) = broken_rules(config(Kind::Conclave, 15, Some("stale-reads"))).await;
    assert!(rules.contains(&"real-time order"), "{rules:?}\n{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checks_find_a_planted_lost_watch_event() {
    let (rules, report) = broken_rules(config(Kind::Conclave, 15, Some("drop-watch-event"))).await;
    // The recorder (the run's log) is a watcher too: it misses the event, or another one does.
    assert!(rules.contains(&"watch") || rules.contains(&"log"), "{rules:?}\n{report}");
}

/// Only power cuts: the acknowledged writes a member had not synced go with its power, on every
/// member at once. Whether a cut loses an acknowledged write depends on where it lands, and on a
/// slow machine a 15 s run makes only two cuts (CI once saw both miss: 2,243 operations, no
/// violation). So up to three runs, each with its own seed, until one breaks a rule.
#[tokio::test(flavor = "multi_thread")]
async fn the_checks_find_a_planted_ack_before_fsync() {
    let mut reports = Vec::new();
    for seed in 1..=3 {
        let config = RunConfig { faults: vec![FaultKind::PowerCut], seed, ..config(Kind::Conclave, 15, Some("ack-before-fsync")) };
        let (rules, report) = broken_rules(config).await;
        if !rules.is_empty() {
            return;
        }
        reports.push(report.to_string());
    }
    panic!("no run lost an acknowledged write:\n{}", reports.join("\n"));
}
