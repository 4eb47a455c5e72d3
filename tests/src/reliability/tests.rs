//! The checker on small hand-made histories: good ones pass, and each kind of broken one fails
//! with the rule it breaks.

use super::check::{check, grants_of_gone_keys};
use super::history::{Event, History, LeaseRecord, Operation, Outcome, Ownership, Request, Version, WatchRecord};

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
        watches: vec![WatchRecord { watcher: 0, from_revision: 1, events: vec![event(2, "k", Some("a")), event(3, "k", Some("b"))], compacted: vec![], starts: vec![1] }],
        log: vec![event(2, "k", Some("a")), event(3, "k", Some("b"))],
        compactions: vec![],
        leases: vec![],
        grants: vec![],
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
fn a_watch_may_skip_only_what_it_was_told_a_compaction_removed() {
    let mut history = good();
    history.compactions = vec![3];
    history.watches[0].compacted = vec![(1, 3)];
    history.watches[0].events.remove(0);
    assert_eq!(rules(&history), Vec::<&str>::new());
    // Told a compaction nobody asked for.
    history.compactions = vec![2];
    assert_eq!(rules(&history), ["watch compaction"]);
    // Told the truth, but skipped past the compacted revision.
    history.compactions = vec![3];
    history.watches[0].compacted = vec![(1, 2)];
    history.compactions = vec![2];
    assert_eq!(rules(&history), ["watch"]);
}

#[test]
fn a_watch_resumed_at_a_compaction_may_miss_only_a_delete_there() {
    let mut history = good();
    let delete = Operation { client: 0, request: Request::Delete { key: "k".into() }, invoked: 41, completed: Some(50), outcome: Outcome::Written { revision: 4 } };
    history.operations.push(delete);
    history.log.push(event(4, "k", None));
    history.compactions = vec![4];
    // Received revision 2, then told 3 was compacted at 4: it may miss the delete at 4.
    history.watches[0].events = vec![event(2, "k", Some("a"))];
    history.watches[0].compacted = vec![(3, 4)];
    history.watches[0].starts = vec![1, 3, 4];
    assert_eq!(rules(&history), Vec::<&str>::new());
    // Asking for revision 4 as it was compacted at 4 is the same.
    history.watches[0].compacted = vec![];
    history.watches[0].events = vec![event(2, "k", Some("a")), event(3, "k", Some("b"))];
    history.watches[0].starts = vec![1, 4];
    assert_eq!(rules(&history), Vec::<&str>::new());
    // A stream that went past revision 4 must have had it.
    history.watches[0].starts = vec![1, 3];
    assert_eq!(rules(&history), ["watch"]);
    history.watches[0].starts = vec![1, 3, 4];
    // A put at the compacted revision must still arrive.
    history.log[2] = event(4, "k", Some("c"));
    history.operations[4] = put(0, "k", "c", 41, 50, 4);
    assert_eq!(rules(&history), ["watch"]);
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

/// `good()` and a lease's key put at revision 4, its lease answered alive at revision 4 and
/// (TTL 2 s) at 100 ns, the key deleted by the lease at revision 5.
fn with_lease() -> History {
    let mut history = good();
    history.operations.push(put(2, "k/lease", "l", 41, 50, 4));
    history.leases.push(LeaseRecord { key: "k/lease".into(), alive: vec![(35, 2, 3), (100, 2, 4)], revoked: None });
    for e in [event(4, "k/lease", Some("l")), event(5, "k/lease", None)] {
        history.log.push(e.clone());
        history.watches[0].events.push(e);
    }
    history
}

#[test]
fn a_lease_deletes_its_key_once_it_is_no_longer_kept_alive() {
    assert_eq!(rules(&with_lease()), Vec::<&str>::new());
}

#[test]
fn a_lease_key_deleted_while_its_lease_was_alive_fails() {
    let mut history = with_lease();
    history.leases[0].alive.push((200, 2, 5));
    assert_eq!(rules(&history), ["lease expired early"]);
}

#[test]
fn a_lease_key_read_absent_before_its_ttl_ran_out_fails() {
    let mut history = with_lease();
    history.operations.push(get(2, "k/lease", 150, 160, 5, None));
    assert_eq!(rules(&history), ["lease expired early"]);
    // Read absent after the TTL the last keepalive gave: expired in time.
    history.operations.last_mut().unwrap().completed = Some(2_000_000_200);
    assert_eq!(rules(&history), Vec::<&str>::new());
}

#[test]
fn a_revoke_deletes_the_key_at_its_own_revision() {
    let mut history = with_lease();
    history.leases[0].revoked = Some((110, Outcome::Written { revision: 5 }));
    assert_eq!(rules(&history), Vec::<&str>::new());
    history.leases[0].revoked = Some((110, Outcome::Written { revision: 6 }));
    assert_eq!(rules(&history), ["lease revoke"]);
}

/// `good()` and two lock owners' keys, put at 4 and 5; the first deleted at 6.
fn with_lock_keys() -> History {
    let mut history = good();
    for e in [event(4, "k/lock/a", Some("")), event(5, "k/lock/b", Some("")), event(6, "k/lock/a", None)] {
        history.log.push(e.clone());
        history.watches[0].events.push(e);
    }
    history
}

fn grant(key: &str, revision: i64) -> Ownership {
    Ownership { client: 3, name: "k/lock".into(), key: key.into(), granted_at: Some(revision), confirmed_at: Some(revision), invoked: 41, completed: 60 }
}

#[test]
fn a_lock_granted_to_the_oldest_key_passes() {
    let mut history = with_lock_keys();
    history.grants = vec![grant("k/lock/a", 4), grant("k/lock/a", 5), grant("k/lock/b", 6)];
    assert_eq!(rules(&history), Vec::<&str>::new());
}

#[test]
fn a_lock_granted_for_a_key_already_gone_is_no_owner_and_no_violation() {
    let mut history = with_lock_keys();
    let mut stale = grant("k/lock/a", 7);
    stale.confirmed_at = None;
    history.grants = vec![stale];
    assert_eq!(rules(&history), Vec::<&str>::new());
    assert_eq!(grants_of_gone_keys(&history), 1);
}

#[test]
fn a_lock_granted_while_an_older_key_holds_it_fails() {
    let mut history = with_lock_keys();
    let mut early = grant("k/lock/b", 5);
    early.confirmed_at = None;
    history.grants = vec![grant("k/lock/a", 4), early];
    assert_eq!(rules(&history), ["ownership"]);
}

#[test]
fn a_campaign_won_while_an_older_candidate_is_left_fails() {
    let mut history = with_lock_keys();
    let mut won = grant("k/lock/b", 5);
    won.granted_at = None;
    history.grants = vec![won.clone()];
    assert_eq!(rules(&history), ["ownership"]);
    won.confirmed_at = Some(6);
    history.grants = vec![won];
    assert_eq!(rules(&history), Vec::<&str>::new());
}

#[test]
fn the_compactor_never_reaches_the_last_revision_the_recorder_saw() {
    // The recorder saw revision 100 and waits for 101: the run's last revision is at least 100,
    // and its closing HashKV there must not meet a compaction (a CI run on etcd did, once).
    for behind in 0..20 {
        assert!(super::watchers::compaction_target(101, behind) < 100);
    }
}
