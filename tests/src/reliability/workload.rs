//! The clients of a run: each sends random requests on a few shared keys and records every
//! invocation and answer; a burst of concurrent puts serves the catch-up fault.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;

use super::history::{Nanos, Operation, Outcome, Request, Version};
use crate::POLL;

/// Every key the workload touches starts with this.
pub const PREFIX: &str = "k/";
/// How long a client waits for one answer before counting it unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys a burst spreads its puts over (apart from the clients' keys).
const BURST_KEYS: usize = 100;

/// One clock for every client, fault and watcher of a run.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(self) -> Nanos {
        self.0.elapsed().as_nanos() as Nanos
    }
}

/// A client's loop until `stop`: random requests on the shared keys, each recorded.
pub async fn client_loop(client: usize, endpoints: Vec<String>, keys: usize, mut rng: StdRng, clock: Clock, stop: Arc<AtomicBool>) -> Vec<Operation> {
    let options = ConnectOptions::new().with_timeout(REQUEST_TIMEOUT).with_connect_timeout(REQUEST_TIMEOUT);
    let mut connection = None;
    let mut operations = Vec::new();
    let mut seen_mod_revision = vec![0i64; keys];
    for sequence in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if connection.is_none() {
            connection = Client::connect(&endpoints, Some(options.clone())).await.ok();
        }
        let Some(etcd) = connection.as_mut() else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let index = rng.random_range(0..keys);
        let key = format!("{PREFIX}{index}");
        let value = format!("c{client}-{sequence}");
        let request = match rng.random_range(0..100) {
            0..40 => Request::Put { key, value },
            40..65 => Request::Get { key, serializable: false },
            65..75 => Request::Get { key, serializable: true },
            75..85 => Request::Delete { key },
            _ => Request::CompareAndPut { key, expect: seen_mod_revision[index], value },
        };
        let op = recorded(etcd, client, request, clock).await;
        match &op.outcome {
            Outcome::Written { revision } => seen_mod_revision[index] = if matches!(op.request, Request::Delete { .. }) { 0 } else { *revision },
            Outcome::Read { found, .. } => seen_mod_revision[index] = found.as_ref().map_or(0, |v| v.mod_revision),
            Outcome::Unknown(_) => connection = None,
            Outcome::Failed(_) => {}
        }
        operations.push(op);
    }
    operations
}

/// `request` sent by `client`, with the times it was invoked and (unless its outcome is unknown)
/// answered.
pub async fn recorded(etcd: &mut Client, client: usize, request: Request, clock: Clock) -> Operation {
    let invoked = clock.now();
    let outcome = send(etcd, &request).await;
    let completed = (!matches!(outcome, Outcome::Unknown(_))).then(|| clock.now());
    Operation { client, request, invoked, completed, outcome }
}

/// Send one request; a write without an answer is unknown (it may still commit), a read without
/// one changed nothing.
async fn send(etcd: &mut Client, request: &Request) -> Outcome {
    let answer: Result<Outcome, etcd_client::Error> = async {
        Ok(match request {
            Request::Put { key, value } => Outcome::Written { revision: header_revision(etcd.put(key.as_str(), value.as_str(), None).await?.header()) },
            Request::Delete { key } => {
                let deleted = etcd.delete(key.as_str(), None).await?;
                let revision = header_revision(deleted.header());
                if deleted.deleted() > 0 { Outcome::Written { revision } } else { Outcome::Read { revision, found: None } }
            }
            Request::Get { key, serializable } => {
                let options = serializable.then(|| GetOptions::new().with_serializable());
                let got = etcd.get(key.as_str(), options).await?;
                Outcome::Read { revision: header_revision(got.header()), found: got.kvs().first().map(version) }
            }
            Request::CompareAndPut { key, expect, value } => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, *expect)])
                    .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                let done = etcd.txn(txn).await?;
                let revision = header_revision(done.header());
                if done.succeeded() {
                    Outcome::Written { revision }
                } else {
                    let found = done.op_responses().into_iter().find_map(|op| match op {
                        TxnOpResponse::Get(got) => Some(got.kvs().first().map(version)),
                        _ => None,
                    });
                    Outcome::Read { revision, found: found.flatten() }
                }
            }
        })
    }
    .await;
    match answer {
        Ok(outcome) => outcome,
        Err(e) if matches!(request, Request::Get { .. }) => Outcome::Failed(e.to_string()),
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

pub fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

fn version(kv: &etcd_client::KeyValue) -> Version {
    Version { value: String::from_utf8_lossy(kv.value()).into_owned(), mod_revision: kv.mod_revision() }
}

/// A client of `endpoints` (waiting at most `timeout` for an answer), retried until it connects;
/// `None` once `stop` is set.
pub async fn connect_unless_stopped(endpoints: &[String], timeout: Duration, stop: &AtomicBool) -> Option<Client> {
    let options = ConnectOptions::new().with_timeout(timeout).with_connect_timeout(timeout);
    while !stop.load(Ordering::Relaxed) {
        if let Ok(client) = Client::connect(endpoints, Some(options.clone())).await {
            return Some(client);
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// `writes` puts from `concurrency` concurrent clients of `endpoints`, recorded like any
/// client's; burst `burst` of the run gives its values a mark of their own.
pub async fn put_burst(endpoints: &[String], burst: usize, writes: usize, concurrency: usize, clock: Clock) -> Vec<Operation> {
    let options = ConnectOptions::new().with_timeout(REQUEST_TIMEOUT).with_connect_timeout(REQUEST_TIMEOUT);
    let Ok(etcd) = Client::connect(endpoints, Some(options)).await else { return Vec::new() };
    let mut tasks = JoinSet::new();
    for task in 0..concurrency {
        let mut etcd = etcd.clone();
        tasks.spawn(async move {
            let mut operations = Vec::new();
            for sequence in (task..writes).step_by(concurrency) {
                let request = Request::Put { key: format!("{PREFIX}burst{}", sequence % BURST_KEYS), value: format!("b{burst}-{sequence}") };
                operations.push(recorded(&mut etcd, usize::MAX - task, request, clock).await);
            }
            operations
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}
