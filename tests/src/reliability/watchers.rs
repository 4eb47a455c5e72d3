//! The watchers of a run, and the compactor that works behind them.
//!
//! Every watcher watches the workload's keys from its start revision to the run's last one,
//! hopping to another member now and then (and whenever its stream breaks), so it resumes from
//! many revisions on every member. One of them, the recorder, starts at revision 1 and is the
//! run's log; the compactor compacts up to just behind it, so the log is never compacted away
//! while other watchers meet compactions: a watch told its next revision is compacted goes on
//! from the compacted revision it was told, and says so in its record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use etcd_client::{Client, ConnectOptions, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::history::{Event, WatchRecord};
use super::workload::PREFIX;
use crate::POLL;

/// Bound on the waits once the faults stop (the cluster healing, watchers catching up).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many responses on one stream before a watcher hops to another member.
const MAX_RESPONSES_PER_STREAM: u32 = 40;

/// Where a watcher is: its record so far, and the revision it asks for next.
struct Progress {
    record: WatchRecord,
    next: i64,
}

/// A watcher of every workload key from `from_revision` until it has seen revision `target`
/// (once known) or the settle time is up; `next` tells, all along, the revision it waits for.
pub async fn watch_all(watcher: usize, endpoints: Vec<String>, from_revision: i64, mut target: watch::Receiver<i64>, next: watch::Sender<i64>) -> WatchRecord {
    let mut rng = StdRng::seed_from_u64(watcher as u64);
    let mut progress = Progress { record: WatchRecord { watcher, from_revision, events: Vec::new(), compacted: Vec::new(), starts: Vec::new() }, next: from_revision };
    let mut attempt = watcher;
    let mut target_known_at: Option<Instant> = None;
    loop {
        next.send_replace(progress.next);
        if progress.next > *target.borrow() || target_known_at.is_some_and(|t| t.elapsed() > SETTLE_TIMEOUT) {
            break;
        }
        if target_known_at.is_none() && *target.borrow() != i64::MAX {
            target_known_at = Some(Instant::now());
        }
        attempt = attempt.wrapping_add(1);
        let endpoint = &endpoints[attempt % endpoints.len()];
        let Ok(mut client) = Client::connect([endpoint], None).await else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(progress.next);
        let Ok(mut stream) = client.watch(PREFIX, Some(options)).await else { continue };
        progress.record.starts.push(progress.next);
        // Once the target is known, a stream that stops short of it is left after the settle time.
        let settle = async {
            match target_known_at {
                Some(at) => tokio::time::sleep_until((at + SETTLE_TIMEOUT).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(settle);
        let hop_after = rng.random_range(1..=MAX_RESPONSES_PER_STREAM);
        for _ in 0..hop_after {
            let message = tokio::select! {
                message = stream.message() => message,
                // The target is known now: start the settle time on a fresh stream.
                _ = target.changed(), if target_known_at.is_none() => break,
                () = &mut settle => break,
            };
            let Ok(Some(response)) = message else { break };
            if response.canceled() && response.compact_revision() > 0 {
                progress.record.compacted.push((progress.next, response.compact_revision()));
                progress.next = response.compact_revision();
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let value = (event.event_type() == etcd_client::EventType::Put).then(|| String::from_utf8_lossy(kv.value()).into_owned());
                progress.record.events.push(Event { revision: kv.mod_revision(), key: String::from_utf8_lossy(kv.key()).into_owned(), value });
                progress.next = kv.mod_revision() + 1;
            }
            next.send_replace(progress.next);
            if progress.next > *target.borrow() {
                break;
            }
        }
    }
    progress.record
}

/// The run's log: what the recorder (a watcher from revision 1, never compacted away) received,
/// up to `last`.
pub fn the_log(mut recorder: WatchRecord, last: i64) -> Result<Vec<Event>> {
    if !recorder.compacted.is_empty() {
        bail!("the recorder's history was compacted away: {:?}", recorder.compacted);
    }
    if recorder.events.last().map_or(1, |e| e.revision) < last {
        bail!("the recorder's log ends before revision {last}");
    }
    recorder.events.retain(|e| e.revision <= last);
    Ok(recorder.events)
}

/// Compact, every 0.2–1 s until `stop`, to a revision a little behind `recorder` (the revision
/// it waits for); returns every revision it asked to compact to.
pub async fn compact_behind(endpoints: Vec<String>, mut recorder: watch::Receiver<i64>, seed: u64, stop: Arc<AtomicBool>) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC0_4AC7);
    let options = ConnectOptions::new().with_timeout(Duration::from_secs(3)).with_connect_timeout(Duration::from_secs(3));
    let mut asked: Vec<i64> = Vec::new();
    let mut connection = None;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1000))).await;
        let revision = compaction_target(*recorder.borrow_and_update(), rng.random_range(0..20));
        if revision <= asked.last().copied().unwrap_or(1) {
            continue;
        }
        if connection.is_none() {
            connection = Client::connect(&endpoints, Some(options.clone())).await.ok();
        }
        let Some(etcd) = connection.as_mut() else { continue };
        asked.push(revision);
        if etcd.compact(revision, None).await.is_err() {
            connection = None;
        }
    }
    asked
}

/// The revision to compact to, `behind` revisions below the last one the recorder saw (it waits
/// for `recorder_next`), and always below it: the run ends with HashKV at its last revision, which
/// both etcd and Conclave refuse as compacted once a compaction reaches it.
pub(super) fn compaction_target(recorder_next: i64, behind: i64) -> i64 {
    recorder_next - 2 - behind
}
