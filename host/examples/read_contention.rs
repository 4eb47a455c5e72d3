//! How reads of the MVCC store fare while write batches hold it, on a 2-worker runtime like a
//! small server's: 64 reader tasks range over 10k keys while one writer applies batches of 100
//! puts, and a timer task measures how late the runtime wakes it.
//!
//! `cargo run --release -p conclave-host --example read_contention -- <mode> [seconds] [readers]`, with
//! mode `blocking` (read on the worker, as before), `spawn-blocking` (every read on the blocking
//! pool), `block-in-place` (every read on the worker, its other tasks handed to another thread)
//! or `read-async` (`Store::read_async`: on the worker unless a batch holds the store).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conclave_host::mvcc::{self, Store, Writer};
use conclave_proto::etcdserverpb::{PutRequest, RangeRequest};

const KEYS: u64 = 10_000;
/// Reader tasks unless the command line says otherwise.
const READERS: usize = 64;
const BATCH: u64 = 100;
/// Keys per range read.
const SPAN: u64 = 10;
const TICK: Duration = Duration::from_millis(1);

fn key(i: u64) -> Vec<u8> {
    format!("key/{:05}", i % KEYS).into_bytes()
}

/// A cheap deterministic sequence of key numbers, one per task.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn apply_batch(store: &Store, seed: &mut u64) {
    let mut batch = store.begin();
    for _ in 0..BATCH {
        let put = PutRequest { key: key(next(seed)), value: vec![b'v'; 100], ..Default::default() };
        Writer::new(&mut batch).put(&put).expect("put");
    }
    batch.commit(Vec::new(), |_| {}).expect("commit");
}

fn range_request(seed: &mut u64) -> RangeRequest {
    let start = next(seed) % (KEYS - SPAN);
    RangeRequest { key: key(start), range_end: key(start + SPAN), ..Default::default() }
}

async fn read(store: &Arc<Store>, mode: &str, req: RangeRequest) -> usize {
    let range = move |view: &mut mvcc::ReadView<'_>| mvcc::range(&*view, &req).expect("range").kvs.len();
    match mode {
        "blocking" => range(&mut store.read()),
        "spawn-blocking" => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || range(&mut store.read())).await.expect("read task")
        }
        "block-in-place" => tokio::task::block_in_place(|| range(&mut store.read())),
        "read-async" => store.read_async(range).await,
        other => panic!("unknown mode {other:?}: blocking, spawn-blocking, block-in-place or read-async"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode: &'static str = args.next().unwrap_or_else(|| "read-async".into()).leak();
    let seconds: u64 = args.next().map(|s| s.parse().expect("seconds")).unwrap_or(5);
    let readers: usize = args.next().map(|s| s.parse().expect("readers")).unwrap_or(READERS);
    let store = Arc::new(Store::open(sled::Config::new().temporary(true).open().unwrap().open_tree("mvcc").unwrap()).unwrap());
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..KEYS / BATCH {
        apply_batch(&store, &mut seed);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, writes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let lateness = Arc::new(Mutex::new(Vec::new()));
    // How long each write batch held the store.
    let held = Arc::new(Mutex::new(Vec::new()));
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for reader in 0..readers as u64 {
            let (store, stop, reads, latencies) = (store.clone(), stop.clone(), reads.clone(), latencies.clone());
            tasks.spawn(async move {
                let mut seed = reader + 1;
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // From the back of the run queue, as a request arriving on a busy runtime.
                    let started = Instant::now();
                    tokio::task::yield_now().await;
                    read(&store, mode, range_request(&mut seed)).await;
                    mine.push(started.elapsed());
                }
                reads.fetch_add(mine.len() as u64, Ordering::Relaxed);
                latencies.lock().unwrap().extend(mine);
            });
        }
        // Apply runs on a runtime worker, as openraft's state machine task does.
        let (writer_store, writer_stop, writer_count) = (store.clone(), stop.clone(), writes.clone());
        let writer_held = held.clone();
        tasks.spawn(async move {
            let mut seed = 42;
            let mut held = Vec::new();
            while !writer_stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                apply_batch(&writer_store, &mut seed);
                held.push(started.elapsed());
                writer_count.fetch_add(BATCH, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            writer_held.lock().unwrap().extend(held);
        });
        let (timer_stop, timer_lateness) = (stop.clone(), lateness.clone());
        tasks.spawn(async move {
            let mut late = Vec::new();
            while !timer_stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                tokio::time::sleep(TICK).await;
                late.push(started.elapsed().saturating_sub(TICK));
            }
            timer_lateness.lock().unwrap().extend(late);
        });
        // The clock runs on its own thread: the runtime's workers may be the stalled ones.
        let clock_stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(seconds));
            clock_stop.store(true, Ordering::Relaxed);
        });
        while tasks.join_next().await.is_some() {}
    });
    let sorted = |samples: &Mutex<Vec<Duration>>| {
        let mut samples = std::mem::take(&mut *samples.lock().unwrap());
        samples.sort();
        samples
    };
    let (latencies, lateness, held) = (sorted(&latencies), sorted(&lateness), sorted(&held));
    let secs = seconds as f64;
    println!(
        "{mode:>14} x{readers}: {:>6.0} reads/s {:>6.0} writes/s | read p50 {:>9.3?} p99 {:>9.3?} | timer late p50 {:>9.3?} p99 {:>9.3?} max {:>9.3?} | batch held p50 {:>9.3?}",
        reads.load(Ordering::Relaxed) as f64 / secs,
        writes.load(Ordering::Relaxed) as f64 / secs,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&lateness, 0.50),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or_default(),
        percentile(&held, 0.50),
    );
}
