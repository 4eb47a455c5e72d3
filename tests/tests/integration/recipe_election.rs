//! The election recipe behind etcd's v3election service, driven with the `etcd-client` crate
//! against etcd 3.4 and Conclave with the same outcomes: campaign, leader, proclaim, resign and
//! observe, their errors, hand-over on resignation and on lease revocation, a cancelled campaign,
//! interplay with `etcdctl elect` (the same key layout, client-side), failover when the leader's
//! process is killed, and `conclavectl elect`. Then the plugin's own JSON methods.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conclave_tests::recipes::{Recipe, keys, wait_for_keys};
use conclave_tests::plugins::assert_status;
use conclave_tests::clients::same_on_both;
use conclave_tests::{Kind, Node, conclavectl_bin, err, same_on_etcd_and_subject, status};
use etcd_client::{Client, LeaderKey, ObserveStream, ProclaimOptions, ResignOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tonic::Code;

/// Long enough for a campaigner that should stay blocked to have been wrongly elected.
const BLOCKED: Duration = Duration::from_millis(700);
const WAKE: Duration = Duration::from_secs(10);
/// The TTL of the killed leader's lease in the failover test, and how much longer than it a
/// hand-over may take (expiry is checked by the leader about every half second on both).
const FAILOVER_TTL: u64 = 2;
const FAILOVER_SLACK: Duration = Duration::from_secs(3);

async fn lease(client: &mut Client) -> i64 {
    client.lease_grant(60, None).await.expect("lease grant").id()
}

async fn campaign(client: &mut Client, name: &str, value: &str, lease: i64) -> LeaderKey {
    let mut response = client.campaign(name, value, lease).await.expect("campaign");
    response.take_leader().expect("a leader key")
}

fn campaign_later(client: &Client, name: &'static str, value: &'static str, lease: i64) -> tokio::task::JoinHandle<LeaderKey> {
    let mut client = client.clone();
    tokio::spawn(async move { campaign(&mut client, name, value, lease).await })
}

/// The leader's key and value, or the error.
async fn leader(client: &mut Client, name: &str) -> Result<(String, String), (Code, String)> {
    match client.leader(name).await {
        Ok(response) => {
            let kv = response.kv().expect("a kv");
            Ok((kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string()))
        }
        Err(e) => Err(status::<()>(Err(e))),
    }
}

/// Proclaim `value` as `leader` (none: a request without its leader), and how it went.
async fn proclaim(client: &mut Client, value: &str, leader: Option<LeaderKey>) -> String {
    let options = leader.map_or_else(ProclaimOptions::new, |l| ProclaimOptions::new().with_leader(l));
    format!("{:?}", outcome(client.proclaim(value, Some(options)).await))
}

/// Success, or the gRPC code and message of the failure.
fn outcome<T>(result: Result<T, etcd_client::Error>) -> Result<(), (Code, String)> {
    result.map(drop).map_err(|e| status::<()>(Err(e)))
}

async fn create_revision(client: &mut Client, key: &[u8]) -> Option<i64> {
    client.get(key, None).await.expect("get").kvs().first().map(|kv| kv.create_revision())
}

/// Start observing `name` in the background: etcd answers an Observe (its response headers too)
/// only once there is a leader, so the call itself waits until then.
fn observe(client: &Client, name: &'static str) -> tokio::task::JoinHandle<ObserveStream> {
    let mut client = client.clone();
    tokio::spawn(async move { client.observe(name).await.expect("observe") })
}

/// An observer started with [`observe`], once there is a leader.
async fn observing(observer: tokio::task::JoinHandle<ObserveStream>) -> ObserveStream {
    tokio::time::timeout(WAKE, observer).await.expect("observing once there is a leader").unwrap()
}

/// The next (key, value) an observer sees.
async fn observed(stream: &mut ObserveStream) -> (String, String) {
    let message = tokio::time::timeout(WAKE, stream.message()).await.expect("an observation in time");
    let message = message.expect("the stream works").expect("the stream goes on");
    let kv = message.kv().expect("a kv");
    (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string())
}

/// Nothing more is observed for a while.
async fn quiet(stream: &mut ObserveStream) {
    if let Ok(more) = tokio::time::timeout(BLOCKED, stream.message()).await {
        panic!("observed more than expected: {more:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_leader_proclaim_and_resign_match_etcd() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let mut seen = Vec::new();
        seen.push(format!("{:?}", leader(&mut client, "e").await));
        let a = lease(&mut client).await;
        let mut elected = client.campaign("e", "one", a).await.expect("campaign");
        let header_rev = elected.header().expect("a header").revision();
        let me = elected.take_leader().expect("a leader key");
        assert_eq!((me.name(), me.key(), me.lease()), (&b"e"[..], format!("e/{a:x}").as_bytes(), a));
        assert_eq!(Some(me.rev()), create_revision(&mut client, me.key()).await, "rev is the key's create revision");
        assert_eq!(header_rev, me.rev(), "the header is the campaign's txn");
        seen.push(format!("{:?}", leader(&mut client, "e").await.map(|(_, v)| v)));

        seen.push(proclaim(&mut client, "two", Some(me.clone())).await);
        seen.push(format!("{:?}", leader(&mut client, "e").await.map(|(_, v)| v)));
        // Campaigning again on the same lease keeps the key and its place, and proclaims.
        let again = campaign(&mut client, "e", "three", a).await;
        assert_eq!((again.key(), again.rev()), (me.key(), me.rev()));
        seen.push(format!("{:?}", leader(&mut client, "e").await.map(|(_, v)| v)));
        seen.push(proclaim(&mut client, "four", None).await);

        client.resign(Some(ResignOptions::new().with_leader(me.clone()))).await.expect("resign");
        seen.push(format!("{:?}", leader(&mut client, "e").await));
        seen.push(proclaim(&mut client, "five", Some(me.clone())).await);
        // Resigning what is not held is not an error.
        seen.push(format!("{:?}", outcome(client.resign(Some(ResignOptions::new().with_leader(me.clone()))).await)));
        seen.push(format!("{:?}", outcome(client.resign(None).await)));
        seen.push(format!("{:?}", outcome(client.campaign("e", "x", 0x7777).await)));
        assert_eq!(keys(&mut client, "e/").await, Vec::<String>::new());
        assert_eq!(status(client.leader("e").await), err(Code::Unknown, "election: no leader"));
        seen
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_campaigner_waits_and_wins_when_the_first_resigns_or_its_lease_is_revoked() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let (a, b, c) = (lease(&mut client).await, lease(&mut client).await, lease(&mut client).await);
        let first = campaign(&mut client, "e", "a", a).await;
        let second = campaign_later(&client, "e", "b", b);
        tokio::time::sleep(BLOCKED).await;
        let third = campaign_later(&client, "e", "c", c);
        tokio::time::sleep(BLOCKED).await;
        assert!(!second.is_finished() && !third.is_finished(), "both wait while the first leads");
        assert_eq!(leader(&mut client, "e").await.unwrap().1, "a");
        client.resign(Some(ResignOptions::new().with_leader(first))).await.expect("resign");
        let next = tokio::time::timeout(WAKE, second).await.expect("the second is elected").unwrap();
        assert_eq!(next.key(), format!("e/{b:x}").as_bytes());
        assert_eq!(leader(&mut client, "e").await.unwrap().1, "b");
        tokio::time::sleep(BLOCKED).await;
        assert!(!third.is_finished(), "in campaign order: the third still waits");
        client.lease_revoke(b).await.expect("revoke");
        let last = tokio::time::timeout(WAKE, third).await.expect("the third is elected").unwrap();
        assert_eq!(last.key(), format!("e/{c:x}").as_bytes());
        leader(&mut client, "e").await.unwrap().1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_campaign_removes_its_key() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let (a, b) = (lease(&mut client).await, lease(&mut client).await);
        let held = campaign(&mut client, "e", "a", a).await;
        let mut waiter = client.clone();
        let gave_up = tokio::time::timeout(BLOCKED, campaign(&mut waiter, "e", "b", b)).await;
        assert!(gave_up.is_err(), "still waiting when dropped");
        let held = String::from_utf8(held.key().to_vec()).unwrap();
        wait_for_keys(&mut client, "e/", &[held], WAKE, "the cancelled campaign's key is still there").await;
        keys(&mut client, "e/").await.len()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_sees_the_leader_then_every_change_in_order() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let (a, b) = (lease(&mut client).await, lease(&mut client).await);
        let label = move |(key, value): (String, String)| {
            let who = if key == format!("o/{a:x}") { "a" } else if key == format!("o/{b:x}") { "b" } else { "?" };
            format!("{who}={value}")
        };
        let mut seen = Vec::new();
        // An observer started before there is a leader waits for the first.
        let early = observe(&client, "o");
        tokio::time::sleep(BLOCKED).await;
        let first = campaign(&mut client, "o", "one", a).await;
        let mut early = observing(early).await;
        seen.push(label(observed(&mut early).await));
        client.proclaim("two", Some(ProclaimOptions::new().with_leader(first.clone()))).await.expect("proclaim");
        seen.push(label(observed(&mut early).await));
        // One started later sees the current leader first.
        let mut late = client.observe("o").await.expect("observe");
        seen.push(label(observed(&mut late).await));
        let second = campaign_later(&client, "o", "three", b);
        tokio::time::sleep(BLOCKED).await;
        quiet(&mut early).await;
        client.resign(Some(ResignOptions::new().with_leader(first))).await.expect("resign");
        tokio::time::timeout(WAKE, second).await.expect("elected").unwrap();
        seen.push(label(observed(&mut early).await));
        seen.push(label(observed(&mut late).await));
        client.lease_revoke(b).await.expect("revoke");
        quiet(&mut early).await;
        seen
    })
    .await;
}

/// A child process whose stdout lines arrive on a channel.
struct Process {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Process {
    fn start(mut command: Command) -> Process {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("it runs");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Process { child, lines }
    }

    /// `etcdctl elect ARGS…` against `endpoint`.
    fn etcdctl(endpoint: &str, args: &[&str]) -> Process {
        let mut command = Command::new(std::env::var_os("ETCDCTL_BIN").unwrap_or("etcdctl".into()));
        command.env("ETCDCTL_API", "3").env_remove("ETCDCTL_ENDPOINTS").args(["--endpoints", endpoint, "elect"]).args(args);
        Process::start(command)
    }

    /// `conclavectl elect ARGS…` against `endpoint`.
    fn conclavectl(endpoint: &str, args: &[&str]) -> Process {
        let mut command = Command::new(conclavectl_bin().expect("conclavectl is built"));
        command.args(["--endpoints", endpoint.trim_start_matches("http://"), "elect"]).args(args);
        Process::start(command)
    }

    /// The next line, within `timeout`.
    async fn line(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.lines.recv()).await.ok().flatten()
    }

    /// The next two lines: a leader's key and value, as both CLIs print them.
    async fn leader(&mut self) -> (String, String) {
        let key = self.line(WAKE).await.expect("a key line");
        (key, self.line(WAKE).await.expect("a value line"))
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(sent.success());
    }

    /// Its exit status and stderr, once it has ended.
    async fn end(mut self) -> (Option<i32>, String) {
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().expect("true"));
        let out = tokio::task::spawn_blocking(move || {
            child.stdout.take();
            let status = child.wait().expect("wait");
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).expect("stderr");
            (status.code(), stderr)
        });
        tokio::time::timeout(WAKE, out).await.expect("it ends").unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_and_v3election_exclude_each_other_and_observe_sees_both() {
    same_on_both(
        |kind| Node::start(kind, &[]),
        |node: Node| async move {
            let endpoint = node.endpoint();
            let mut client = Client::connect([endpoint.clone()], None).await.expect("connect");
            let observer = observe(&client, "shared");
            let mut seen = Vec::new();
            let a = lease(&mut client).await;
            let held = campaign(&mut client, "shared", "grpc", a).await;
            let mut observer = observing(observer).await;
            seen.push(observed(&mut observer).await.1);

            let mut ctl = Process::etcdctl(&endpoint, &["shared", "ctl"]);
            assert_eq!(ctl.line(BLOCKED * 2).await, None, "etcdctl elect waits for the v3election leader");
            assert_eq!(keys(&mut client, "shared/").await.len(), 2, "etcdctl stands with its own key");
            client.resign(Some(ResignOptions::new().with_leader(held))).await.expect("resign");
            let (key, value) = ctl.leader().await;
            assert_eq!(value, "ctl");
            assert_eq!(observed(&mut observer).await, (key.clone(), value.clone()), "observe sees etcdctl's leader");
            seen.push(value);

            let b = lease(&mut client).await;
            let next = campaign_later(&client, "shared", "grpc again", b);
            tokio::time::sleep(BLOCKED).await;
            assert!(!next.is_finished(), "the v3election campaign waits for etcdctl");
            assert_eq!(leader(&mut client, "shared").await.unwrap(), (key, "ctl".to_string()));
            ctl.signal("-INT");
            let (code, stderr) = ctl.end().await;
            assert_eq!(code, Some(0), "{stderr}");
            tokio::time::timeout(WAKE, next).await.expect("elected after etcdctl resigned").unwrap();
            seen.push(observed(&mut observer).await.1);
            seen
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leaders_process_hands_over_within_the_ttl_and_observers_see_it_in_order() {
    same_on_both(
        |kind| Node::start(kind, &[]),
        |node: Node| async move {
            let endpoint = node.endpoint();
            let mut client = Client::connect([endpoint.clone()], None).await.expect("connect");
            let observer = observe(&client, "failover");
            let ttl = FAILOVER_TTL.to_string();
            let mut leader_process = Process::conclavectl(&endpoint, &["failover", "first", "--ttl", &ttl]);
            let (key, value) = leader_process.leader().await;
            let mut observer = observing(observer).await;
            assert_eq!(observed(&mut observer).await, (key.clone(), value));

            let b = lease(&mut client).await;
            let next = campaign_later(&client, "failover", "second", b);
            tokio::time::sleep(BLOCKED).await;
            assert!(!next.is_finished(), "the second waits while the first's process lives");
            leader_process.signal("-KILL");
            let killed = Instant::now();
            let elected = tokio::time::timeout(Duration::from_secs(FAILOVER_TTL) + FAILOVER_SLACK + WAKE, next)
                .await
                .expect("a new leader")
                .unwrap();
            let took = killed.elapsed();
            println!("failover on {:?}: new leader {:?} after {took:?} (lease TTL {FAILOVER_TTL}s)", node.kind(), elected.key_str());
            assert!(took <= Duration::from_secs(FAILOVER_TTL) + FAILOVER_SLACK, "failover took {took:?}");
            let (new_key, new_value) = observed(&mut observer).await;
            assert_eq!(new_key.as_bytes(), elected.key());
            assert_eq!(keys(&mut client, "failover/").await, [new_key]);
            quiet(&mut observer).await;
            let (code, _) = leader_process.end().await;
            (code, new_value)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclavectl_elect_prints_the_leader_holds_until_interrupted_and_listen_follows() {
    same_on_both(
        |kind| Node::start(kind, &[]),
        |node: Node| async move {
            let endpoint = node.endpoint();
            let mut client = Client::connect([endpoint.clone()], None).await.expect("connect");
            let mut listener = Process::conclavectl(&endpoint, &["--listen", "job"]);
            let mut first = Process::conclavectl(&endpoint, &["job", "alpha"]);
            let (key, value) = first.leader().await;
            assert!(key.starts_with("job/") && key.len() > 4, "{key}");
            assert_eq!(value, "alpha");
            assert_eq!(listener.leader().await, (key.clone(), value));
            let mut second = Process::conclavectl(&endpoint, &["job", "beta"]);
            assert_eq!(second.line(BLOCKED).await, None, "the second waits");
            first.signal("-INT");
            let (code, stderr) = first.end().await;
            assert_eq!((code, stderr.as_str()), (Some(0), ""));
            let (next_key, next_value) = second.leader().await;
            assert_eq!(listener.leader().await, (next_key.clone(), next_value.clone()));
            assert_eq!(keys(&mut client, "job/").await, [next_key], "the first resigned and revoked its lease");
            second.signal("-INT");
            assert_eq!(second.end().await.0, Some(0));
            assert_eq!(keys(&mut client, "job/").await, Vec::<String>::new());
            listener.signal("-INT");
            assert_eq!(listener.end().await.0, Some(0));

            let usage = Process::conclavectl(&endpoint, &["job"]).end().await;
            assert_eq!(usage, (Some(1), "Error: no proposal argument but --listen is not set\n".to_string()));
            next_value
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_methods_campaign_with_a_timeout_proclaim_observe_and_resign() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = Client::connect([node.endpoint()], None).await.expect("connect");
    let election = Recipe::connect(&node.endpoint(), "election").await;
    let (a, b) = (lease(&mut client).await, lease(&mut client).await);
    assert_status(election.call("leader", json!({"name": "j"})).await, Code::NotFound, &["election: no leader"]);
    let mut observer = election.stream("observe", json!({"name": "j"})).await.expect("observe");
    let me = election.must("campaign", json!({"name": "j", "lease": a, "value": "one"})).await;
    let key = format!("j/{a:x}");
    assert_eq!(me["key"], key.as_str());
    assert_eq!(observer.next(WAKE).await["value"], "one");
    let timed_out = election.call("campaign", json!({"name": "j", "lease": b, "value": "x", "timeout_ms": 300})).await;
    assert_status(timed_out, Code::DeadlineExceeded, &["timed out"]);
    assert_eq!(keys(&mut client, "j/").await, std::slice::from_ref(&key), "the timed-out campaign left no key");
    election.must("proclaim", json!({"leader": me, "value": "two"})).await;
    let now = election.must("leader", json!({"name": "j"})).await;
    assert_eq!((now["key"].as_str(), now["value"].as_str()), (Some(key.as_str()), Some("two")));
    assert_eq!(observer.next(WAKE).await["value"], "two");
    election.must("resign", json!({"leader": me})).await;
    let stale = election.call("proclaim", json!({"leader": me, "value": "three"})).await;
    assert_status(stale, Code::FailedPrecondition, &["election: not leader"]);
    assert_eq!(keys(&mut client, "j/").await, Vec::<String>::new());
}
