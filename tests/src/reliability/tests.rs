//! The checker on small hand-made histories: good ones pass, and each kind of broken one fails
//! with the rule it breaks.

use super::check::check;
use super::history::{Event, History, Operation, Outcome, Request, Version, WatchRecord};

fn put(client: usize, key: &str, value: &str, invoked: u64, completed: u64, revision: i64) -> Operation {
    let request = Request::Put { key: key.into(), value: value.into() };
    Operation { client, request, invoked, completed: Some(completed), outcome: Outcome::Written { revision } }
}

fn get(client: usize, key: &str, invoked: u64, completed: u64, revision: i64, found: Option<(&str, i64)>) -> Operation {
    let request = Request::Get { key: key.into(), serializable: false };
    let found = found.map(|(value, mod_revision)| Version { value: value.into(), mod_revision });
    Operation { client, request, invoked, completed: Some(completed), outcome: Outcome::Read { revision, found } }
}

fn event(revision: i64, key: &str, value: Option<&str>) -> Event {
    Event { revision, key: key.into(), value: value.map(Into::into) }
}

/// Two puts of `k` and a read of each, in order.
fn good() -> History {
    History {
        operations: vec![
            put(0, "k", "a", 0, 10, 2),
            get(1, "k", 11, 20, 2, Some(("a", 2))),
            put(0, "k", "b", 21, 30, 3),
            get(1, "k", 31, 40, 3, Some(("b", 3))),
        ],
        watches: vec![WatchRecord { watcher: 0, from_revision: 1, events: vec![event(2, "k", Some("a")), event(3, "k", Some("b"))] }],
        log: vec![event(2, "k", Some("a")), event(3, "k", Some("b"))],
    }
}

fn rules(history: &History) -> Vec<&'static str> {
    check(history).into_iter().map(|v| v.rule).collect()
}

#[test]
fn a_good_history_passes() {
    assert_eq!(rules(&good()), Vec::<&str>::new());
}

#[test]
fn a_linearizable_read_of_an_old_value_after_a_newer_write_fails() {
    let mut history = good();
    history.operations[3] = get(1, "k", 31, 40, 2, Some(("a", 2)));
    assert_eq!(rules(&history), ["real-time order"]);
}

#[test]
fn a_serializable_read_may_be_stale_but_not_invented() {
    let mut history = good();
    history.operations[3] = get(1, "k", 31, 40, 2, Some(("a", 2)));
    history.operations[3].request = Request::Get { key: "k".into(), serializable: true };
    assert_eq!(rules(&history), Vec::<&str>::new());
    history.operations[3].outcome = Outcome::Read { revision: 2, found: Some(Version { value: "b".into(), mod_revision: 3 }) };
    assert_eq!(rules(&history), ["wrong read"]);
}

#[test]
fn an_acknowledged_write_missing_from_the_log_fails() {
    let mut history = good();
    history.log.pop();
    history.watches[0].events.pop();
    let found = rules(&history);
    assert!(found.contains(&"lost write"), "{found:?}");
}

#[test]
fn a_write_placed_before_one_answered_earlier_fails() {
    let mut history = good();
    // The second put was invoked after the first was answered, yet took the earlier revision.
    history.operations = vec![put(0, "k", "a", 0, 10, 3), put(1, "k", "b", 11, 20, 2)];
    history.log = vec![event(2, "k", Some("b")), event(3, "k", Some("a"))];
    history.watches.clear();
    assert_eq!(rules(&history), ["real-time order"]);
}

#[test]
fn an_unanswered_write_may_land_or_not_but_nothing_is_invented() {
    let mut history = good();
    history.operations[2].completed = None;
    history.operations[2].outcome = Outcome::Unknown("timeout".into());
    assert_eq!(rules(&history), Vec::<&str>::new());
    history.operations.remove(2);
    assert_eq!(rules(&history), ["invented write"]);
}

#[test]
fn a_watch_with_a_gap_or_a_duplicate_fails() {
    let mut gap = good();
    gap.watches[0].events.remove(0);
    assert_eq!(rules(&gap), ["watch"]);
    let mut duplicate = good();
    duplicate.watches[0].events.insert(1, event(2, "k", Some("a")));
    assert_eq!(rules(&duplicate), ["watch"]);
}

#[test]
fn a_log_with_a_missing_revision_fails() {
    let mut history = good();
    history.log[1].revision = 4;
    let found = rules(&history);
    assert!(found.contains(&"log"), "{found:?}");
}

#[test]
fn a_compare_and_put_must_agree_with_the_log() {
    let mut history = good();
    let request = Request::CompareAndPut { key: "k".into(), expect: 2, value: "c".into() };
    history.operations.push(Operation { client: 2, request: request.clone(), invoked: 41, completed: Some(50), outcome: Outcome::Written { revision: 4 } });
    history.log.push(event(4, "k", Some("c")));
    history.watches[0].events.push(event(4, "k", Some("c")));
    // The key's mod revision before revision 4 was 3, not 2.
    assert_eq!(rules(&history), ["wrong compare"]);
    history.operations[4].request = Request::CompareAndPut { key: "k".into(), expect: 3, value: "c".into() };
    assert_eq!(rules(&history), Vec::<&str>::new());
}
