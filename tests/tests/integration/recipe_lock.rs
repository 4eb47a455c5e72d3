//! The lock recipe behind etcd's v3lock service, driven with the `etcd-client` crate against
//! etcd 3.4 and Conclave with the same outcomes: exclusion in request order, release by unlock,
//! by lease revocation and by a cancelled wait, fencing revisions, and exclusion with `etcdctl
//! lock` (the same key layout, client-side). Then the plugin's own JSON methods.

use std::time::Duration;

use conclave_tests::plugins::{Plugins, assert_status};
use conclave_tests::recipes::{keys, wait_for_keys};
use conclave_tests::clients::same_on_both;
use conclave_tests::{Kind, Node, conclavectl_bin, err, etcdctl, same_on_etcd_and_subject, status};
use etcd_client::{Client, LockOptions};
use tonic::Code;

/// Long enough for a waiter that should stay blocked to have been wrongly woken.
const BLOCKED: Duration = Duration::from_millis(700);
const WAKE: Duration = Duration::from_secs(10);

async fn lease(client: &mut Client) -> i64 {
    client.lease_grant(60, None).await.expect("lease grant").id()
}

async fn lock(client: &mut Client, name: &str, lease: i64) -> (String, i64) {
    let key = client.lock(name, Some(LockOptions::new().with_lease(lease))).await.expect("lock").key().to_vec();
    let key = String::from_utf8(key).expect("a UTF-8 key");
    let revision = create_revision(client, &key).await.expect("the lock key exists");
    (key, revision)
}

async fn create_revision(client: &mut Client, key: &str) -> Option<i64> {
    client.get(key, None).await.expect("get").kvs().first().map(|kv| kv.create_revision())
}

/// A lock taken in the background on its own connection.
fn lock_later(client: &Client, name: &'static str, lease: i64) -> tokio::task::JoinHandle<(String, i64)> {
    let mut client = client.clone();
    tokio::spawn(async move { lock(&mut client, name, lease).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_keys_errors_and_fencing_match_etcd() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let a = lease(&mut client).await;
        let (key, first) = lock(&mut client, "jobs", a).await;
        assert_eq!(key, format!("jobs/{a:x}"), "the key is NAME/<lease hex>");
        let kv = client.get(key.as_str(), None).await.expect("get").kvs()[0].clone();
        assert_eq!((kv.lease(), kv.value()), (a, &b""[..]), "on the caller's lease, empty");
        // The same lease locking again re-uses its key (and so holds it already).
        let (again, same) = lock(&mut client, "jobs", a).await;
        assert_eq!((again.as_str(), same), (key.as_str(), first));
        let bad = client.lock("jobs", Some(LockOptions::new().with_lease(0x7777))).await;
        let bad = status(bad);
        assert_eq!(bad, err(Code::Unknown, "etcdserver: requested lease not found"));
        client.unlock(key.as_str()).await.expect("unlock");
        assert_eq!(keys(&mut client, "jobs/").await, Vec::<String>::new());
        // Unlocking what is not held is not an error.
        client.unlock(key.as_str()).await.expect("unlock again");
        let (_, second) = lock(&mut client, "jobs", a).await;
        assert!(second > first, "fencing: each acquisition's revision is higher ({first} then {second})");
        (bad, keys(&mut client, "jobs/").await.len())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_locker_waits_until_the_first_unlocks() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let (a, b, c) = (lease(&mut client).await, lease(&mut client).await, lease(&mut client).await);
        let (held, first) = lock(&mut client, "l", a).await;
        let second = lock_later(&client, "l", b);
        tokio::time::sleep(BLOCKED).await;
        let third = lock_later(&client, "l", c);
        tokio::time::sleep(BLOCKED).await;
        assert!(!second.is_finished() && !third.is_finished(), "both wait while the first holds");
        client.unlock(held).await.expect("unlock");
        let (next, next_rev) = tokio::time::timeout(WAKE, second).await.expect("the second gets it").unwrap();
        assert_eq!(next, format!("l/{b:x}"));
        assert!(next_rev > first);
        tokio::time::sleep(BLOCKED).await;
        assert!(!third.is_finished(), "first come, first served: the third still waits");
        client.unlock(next).await.expect("unlock");
        let (last, _) = tokio::time::timeout(WAKE, third).await.expect("the third gets it").unwrap();
        assert_eq!(last, format!("l/{c:x}"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_is_revoked_releases() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let (a, b) = (lease(&mut client).await, lease(&mut client).await);
        lock(&mut client, "l", a).await;
        let waiter = lock_later(&client, "l", b);
        tokio::time::sleep(BLOCKED).await;
        assert!(!waiter.is_finished());
        client.lease_revoke(a).await.expect("revoke");
        let (key, _) = tokio::time::timeout(WAKE, waiter).await.expect("the waiter gets it").unwrap();
        assert_eq!(keys(&mut client, "l/").await, [key]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_removes_its_key() {
    same_on_etcd_and_subject(&[], |mut client| async move {
        let (a, b) = (lease(&mut client).await, lease(&mut client).await);
        let (held, _) = lock(&mut client, "l", a).await;
        let mut waiter = client.clone();
        let gave_up = tokio::time::timeout(BLOCKED, lock(&mut waiter, "l", b)).await;
        assert!(gave_up.is_err(), "still waiting when dropped");
        wait_for_keys(&mut client, "l/", &[held], WAKE, "the cancelled waiter's key is still there").await;
        keys(&mut client, "l/").await.len()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_v3lock_exclude_each_other() {
    same_on_both(
        |kind| Node::start(kind, &[]),
        |node: Node| async move {
            let endpoint = node.endpoint();
            let mut client = Client::connect([endpoint.clone()], None).await.expect("connect");
            let a = lease(&mut client).await;
            let (held, _) = lock(&mut client, "shared", a).await;
            let ep = endpoint.clone();
            let ctl = tokio::task::spawn_blocking(move || etcdctl(&ep, &["lock", "shared", "--", "sh", "-c", "echo got it"], None));
            tokio::time::sleep(BLOCKED * 2).await;
            assert!(!ctl.is_finished(), "etcdctl lock waits for the v3lock holder");
            assert_eq!(keys(&mut client, "shared/").await.len(), 2, "etcdctl queued its own key");
            client.unlock(held).await.expect("unlock");
            let out = tokio::time::timeout(WAKE, ctl).await.expect("etcdctl gets it").unwrap().expect("etcdctl runs");
            assert_eq!((out.code, out.stdout.as_str()), (0, "got it\n"), "{}", out.stderr);

            let ep = endpoint.clone();
            let ctl = tokio::task::spawn_blocking(move || etcdctl(&ep, &["lock", "shared", "--", "sh", "-c", "sleep 2"], None));
            let deadline = tokio::time::Instant::now() + WAKE;
            while keys(&mut client, "shared/").await.is_empty() {
                assert!(tokio::time::Instant::now() < deadline, "etcdctl never took the lock");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let asked = tokio::time::Instant::now();
            let b = lease(&mut client).await;
            lock(&mut client, "shared", b).await;
            assert!(asked.elapsed() > Duration::from_secs(1), "v3lock waited for etcdctl's holder");
            assert_eq!(ctl.await.unwrap().expect("etcdctl runs").code, 0);
            out.stdout
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_acquire_with_timeout_and_release_through_plugin_invoke() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let mut client = Client::connect([node.endpoint()], None).await.expect("connect");
    let plugins = Plugins::connect(&node.endpoint()).await;
    let (a, b) = (lease(&mut client).await, lease(&mut client).await);
    let call = |method: &'static str, payload: String| {
        let plugins = &plugins;
        async move { plugins.invoke_text("lock", method, payload).await }
    };
    let held: serde_json::Value =
        serde_json::from_str(&call("try-acquire", format!(r#"{{"name":"t","lease":{a}}}"#)).await.expect("free")).unwrap();
    let key = format!("t/{a:x}");
    assert_eq!(held["key"], key.as_str());
    assert_eq!(Some(held["revision"].as_i64().unwrap()), create_revision(&mut client, &key).await);

    let busy = call("try-acquire", format!(r#"{{"name":"t","lease":{b}}}"#)).await;
    assert_status(busy, Code::FailedPrecondition, &[&format!("locked by {key}")]);
    let timed_out = call("acquire", format!(r#"{{"name":"t","lease":{b},"timeout_ms":300}}"#)).await;
    assert_status(timed_out, Code::DeadlineExceeded, &["timed out"]);
    assert_eq!(keys(&mut client, "t/").await, std::slice::from_ref(&key), "neither failure left its key");

    call("release", format!(r#"{{"key":"{key}"}}"#)).await.expect("release");
    let gone = call("release", format!(r#"{{"key":"{key}"}}"#)).await;
    assert_status(gone, Code::FailedPrecondition, &["lock not held"]);
    let next: serde_json::Value =
        serde_json::from_str(&call("acquire", format!(r#"{{"name":"t","lease":{b},"timeout_ms":300}}"#)).await.expect("free again")).unwrap();
    assert_eq!(next["key"], format!("t/{b:x}").as_str());
    assert!(next["revision"].as_i64() > held["revision"].as_i64());
}

/// `conclavectl --endpoints ENDPOINT lock ARGS…`, started.
fn conclavectl_lock(endpoint: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new(conclavectl_bin().expect("conclavectl is built"))
        .args(["--endpoints", endpoint.trim_start_matches("http://"), "lock"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("conclavectl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclavectl_lock_runs_a_command_while_holding_and_exits_with_its_status() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let endpoint = node.endpoint();
    let mut client = Client::connect([endpoint.clone()], None).await.expect("connect");

    let failing = conclavectl_lock(&endpoint, &["job", "--", "sh", "-c", "exit 3"]);
    let out = tokio::task::spawn_blocking(move || failing.wait_with_output()).await.unwrap().expect("wait");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(keys(&mut client, "job/").await, Vec::<String>::new(), "its lease was revoked");

    let a = lease(&mut client).await;
    let (held, _) = lock(&mut client, "job", a).await;
    let waiting = conclavectl_lock(&endpoint, &["job", "--ttl", "5", "sh", "-c", "echo \"$ETCD_LOCK_KEY\""]);
    let waiting = tokio::task::spawn_blocking(move || waiting.wait_with_output());
    tokio::time::sleep(BLOCKED).await;
    assert!(!waiting.is_finished(), "conclavectl lock waits for the holder");
    client.unlock(held).await.expect("unlock");
    let out = tokio::time::timeout(WAKE, waiting).await.expect("it gets the lock").unwrap().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(key.starts_with("job/") && key.ends_with('\n') && key.len() > 5, "the command saw the key: {key:?}");
    assert_eq!(keys(&mut client, "job/").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclavectl_lock_without_a_command_prints_the_key_and_holds_until_interrupted() {
    use std::io::BufRead;
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let endpoint = node.endpoint();
    let mut client = Client::connect([endpoint.clone()], None).await.expect("connect");
    let mut holder = conclavectl_lock(&endpoint, &["job"]);
    let stdout = holder.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || std::io::BufReader::new(stdout).lines().next()).await.unwrap();
    let key = line.expect("a line").expect("readable");
    assert_eq!(keys(&mut client, "job/").await, [key]);
    let interrupted = std::process::Command::new("kill").args(["-INT", &holder.id().to_string()]).status().expect("kill");
    assert!(interrupted.success());
    let status = tokio::task::spawn_blocking(move || holder.wait()).await.unwrap().expect("wait");
    assert!(status.success(), "{status}");
    assert_eq!(keys(&mut client, "job/").await, Vec::<String>::new(), "released at Ctrl-C");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conclavectl_lock_try_and_timeout_fail_in_one_line_and_leave_no_key() {
    let node = Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let endpoint = node.endpoint();
    let mut client = Client::connect([endpoint.clone()], None).await.expect("connect");
    let a = lease(&mut client).await;
    let (held, _) = lock(&mut client, "job", a).await;
    let run = |args: &'static [&'static str]| {
        let child = conclavectl_lock(&endpoint, args);
        tokio::task::spawn_blocking(move || child.wait_with_output())
    };

    let tried = run(&["job", "--try", "--", "true"]).await.unwrap().expect("wait");
    let stderr = String::from_utf8_lossy(&tried.stderr).into_owned();
    assert!(!tried.status.success() && stderr.contains(&format!("locked by {held}")), "{stderr}");
    let timed_out = run(&["job", "--timeout", "300ms", "--", "true"]).await.unwrap().expect("wait");
    let stderr = String::from_utf8_lossy(&timed_out.stderr).into_owned();
    assert!(!timed_out.status.success() && stderr.contains("timed out after 300ms waiting for lock job"), "{stderr}");
    for stderr in [&tried.stderr, &timed_out.stderr] {
        assert_eq!(String::from_utf8_lossy(stderr).lines().count(), 1, "one line");
    }
    assert_eq!(keys(&mut client, "job/").await, std::slice::from_ref(&held), "neither left a key");

    client.unlock(held).await.expect("unlock");
    let free = run(&["job", "--try", "--", "sh", "-c", "echo \"$ETCD_LOCK_KEY\""]).await.unwrap().expect("wait");
    assert!(free.status.success(), "{}", String::from_utf8_lossy(&free.stderr));
    assert!(String::from_utf8_lossy(&free.stdout).starts_with("job/"));
}
