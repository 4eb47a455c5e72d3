//! The config plugin against a real member: concurrent compare-and-publish has one winner per
//! version, a subscriber that reconnects from its last version sees every version in order, old
//! versions read back until compacted, and then the error names the current version.

use std::time::Duration;

use conclave_tests::conclavectl::{failed, ok, run as ctl};
use conclave_tests::recipes::Recipe;
use conclave_tests::{Kind, Node, connect};
use serde_json::{Value, json};
use tonic::Code;

const PUBLISHERS: usize = 100;
const WINS: usize = 40;
const WAIT: Duration = Duration::from_secs(20);

fn version(answer: &Value) -> i64 {
    answer["version"].as_i64().unwrap_or_else(|| panic!("no version in {answer}"))
}

/// Each publisher: read the current version, compare-and-publish on it, until `WINS` in all.
/// The answer: every win as (the version it replaced, the version it wrote).
async fn race(config: &Recipe) -> Vec<(i64, i64)> {
    let wins = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (config, wins) = (config.clone(), wins.clone());
            tokio::spawn(async move {
                while wins.lock().unwrap().len() < WINS {
                    let base = version(&config.must("get", json!({"name": "doc"})).await);
                    let attempt = json!({"name": "doc", "value": {"by": p, "base": base}, "version": base});
                    match config.call("compare-and-publish", attempt).await {
                        Ok(answer) => wins.lock().unwrap().push((base, version(&answer))),
                        Err(status) => {
                            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                            assert!(status.message().contains(&format!("stale version {base}, current is ")), "{status:?}");
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a publisher");
    }
    let mut wins = wins.lock().unwrap().clone();
    wins.sort_by_key(|&(_, new)| new);
    wins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_wins_each_version_and_a_resumed_subscriber_sees_them_all() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let config = Recipe::connect(&node.endpoint(), "config").await;
    let first = version(&config.must("compare-and-publish", json!({"name": "doc", "value": "v0", "version": 0})).await);
    let again = config.call("compare-and-publish", json!({"name": "doc", "value": "v0", "version": 0})).await;
    assert_eq!(again.unwrap_err().message().rsplit(": ").next().unwrap(), format!("stale version 0, current is {first}"));
    let mut subscriber = config.stream("subscribe", json!({"name": "doc", "from_version": first})).await.expect("subscribe");

    let wins = race(&config).await;
    let mut expected_base = first;
    for &(base, new) in &wins {
        assert_eq!(base, expected_base, "each version is replaced by exactly one winner: {wins:?}");
        expected_base = new;
    }

    let mut versions = Vec::new();
    for _ in 0..WINS / 2 {
        versions.push(subscriber.next(WAIT).await);
    }
    drop(subscriber);
    let resume = version(versions.last().unwrap()) + 1;
    let mut subscriber = config.stream("subscribe", json!({"name": "doc", "from_version": resume})).await.expect("resubscribe");
    while versions.len() < wins.len() + 1 {
        versions.push(subscriber.next(WAIT).await);
    }
    let seen: Vec<i64> = versions.iter().map(version).collect();
    let published: Vec<i64> = std::iter::once(first).chain(wins.iter().map(|&(_, new)| new)).collect();
    assert_eq!(seen, published, "every version once, in order");
    assert_eq!(versions[0]["value"], "v0");
    assert_eq!(versions[1]["value"]["base"], first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_read_back_until_compacted_then_the_error_names_the_current_one() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let config = Recipe::connect(&node.endpoint(), "config").await;
    let mut published = Vec::new();
    for n in 1..=3 {
        published.push(version(&config.must("publish", json!({"name": "app", "value": {"n": n}})).await));
        config.must("publish", json!({"name": "other", "value": n})).await;
    }
    let [v1, v2, v3] = published[..] else { unreachable!() };
    assert_eq!(config.must("get", json!({"name": "app", "version": v1})).await, json!({"version": v1, "value": {"n": 1}}));
    assert_eq!(config.must("get", json!({"name": "app"})).await, json!({"version": v3, "value": {"n": 3}}));
    let not_mine = config.call("get", json!({"name": "app", "version": v1 + 1})).await.unwrap_err();
    assert_eq!(not_mine.code(), Code::NotFound, "a revision of another key is no version of this one");
    let history = config.must("history", json!({"name": "app"})).await;
    let listed: Vec<i64> = history["versions"].as_array().unwrap().iter().map(version).collect();
    assert_eq!((listed, &history["compacted"]), (vec![v3, v2, v1], &json!(false)));

    connect(&node.endpoint()).await.compact(v3, None).await.expect("compact");
    let gone = config.call("get", json!({"name": "app", "version": v1})).await.unwrap_err();
    assert_eq!(gone.code(), Code::OutOfRange, "{gone:?}");
    assert!(gone.message().ends_with(&format!("version {v1} is compacted; the current version is {v3}")), "{gone:?}");
    let history = config.must("history", json!({"name": "app"})).await;
    assert_eq!(history, json!({"versions": [{"version": v3, "value": {"n": 3}}], "compacted": true}));
    let status = config.stream("subscribe", json!({"name": "app", "from_version": v1})).await.expect("subscribe").error(WAIT).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains(&format!("the current version is {v3}")), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclavectl_publishes_and_gets() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let ep = node.endpoint();
    let cli = |args: &[&str]| tokio::task::block_in_place(|| ctl(&ep, args));
    let published = ok(cli(&["config", "publish", "site", r#"{"theme":"dark"}"#]));
    let v: i64 = published.trim().strip_prefix("Published site version ").expect(&published).parse().unwrap();
    assert_eq!(ok(cli(&["config", "get", "site"])), format!("site version {v}\n{{\"theme\":\"dark\"}}\n"));
    let error = failed(cli(&["config", "publish", "site", "light", "--version", "1"]));
    assert_eq!(error, format!("Error: plugin config: method compare-and-publish: config site: stale version 1, current is {v}"));
    let error = failed(cli(&["config", "get", "nothing"]));
    assert_eq!(error, "Error: plugin config: method get: config nothing does not exist");
}
