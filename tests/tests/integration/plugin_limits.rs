//! A plugin call that breaks a limit (CPU, memory, wall-clock time, payload size, concurrency) or
//! its key grant, or that traps, fails alone with a clear status naming the plugin, the method and
//! the limit, while other clients of the member keep reading and writing without a single error
//! and other plugins keep answering.

use std::time::{Duration, Instant};

use conclave_tests::guests::guest_wasm;
use conclave_tests::plugins::{Background, Plugins, assert_no_server_panic, assert_status, misbehave_manifest};
use conclave_tests::{Kind, Node, etcdctl};
use tonic::Code;

const MIB: u64 = 1 << 20;

fn start() -> Node {
    Node::start(Kind::Conclave, &[]).unwrap_or_else(|e| panic!("{e:#}"))
}

fn misbehave() -> std::path::PathBuf {
    tokio::task::block_in_place(|| guest_wasm("misbehave")).unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_limit_and_bad_input_fails_only_its_call_while_other_clients_keep_working() {
    let wasm = misbehave();
    let bad_output = tokio::task::block_in_place(|| conclave_tests::guests::guest_wasm("bad-output")).expect("bad-output builds");
    let node = start();
    let plugins = Plugins::connect(&node.endpoint()).await;
    let limits = format!(r#"{{"fuel": 200000000, "timeout_ms": 1500, "memory_bytes": {}, "max_payload_bytes": 65536}}"#, 16 * MIB);
    plugins.deploy_file("misbehave", &wasm, &misbehave_manifest(&limits)).await.expect("deploy misbehave");
    plugins.deploy_file("bad-output", &bad_output, "").await.expect("deploy bad-output");

    let load = Background::start(&node.endpoint(), 2).await;
    load.wait_for_progress(20, Duration::from_secs(10)).await;

    let p = |method: &'static str| {
        let plugins = plugins.clone();
        async move { plugins.invoke("misbehave", method, Vec::new()).await }
    };
    let cases: Vec<(&str, Code, Vec<&str>)> = vec![
        ("spin", Code::ResourceExhausted, vec!["CPU limit exceeded", "limits.fuel 200000000"]),
        ("trap", Code::Internal, vec!["trapped", "misbehave: trap requested"]),
        ("unreachable", Code::Internal, vec!["trapped"]),
        ("memory-bomb", Code::ResourceExhausted, vec!["memory limit exceeded", "limits.memory_bytes 16777216"]),
        ("forbidden-put", Code::PermissionDenied, vec!["permission denied", "\"forbidden/x\"", "outside the plugin's grant"]),
        ("forbidden-get", Code::PermissionDenied, vec!["permission denied", "\"forbidden/x\"", "outside the plugin's grant"]),
        ("forbidden-txn-op", Code::PermissionDenied, vec!["a txn compare or op on a key outside"]),
        ("forbidden-txn-compare", Code::PermissionDenied, vec!["a txn compare or op on a key outside"]),
        ("forbidden-watch", Code::PermissionDenied, vec!["watch of keys", "outside"]),
        ("stuck-watch", Code::DeadlineExceeded, vec!["call timed out (limits.timeout_ms 1500)"]),
    ];
    for (method, code, parts) in cases {
        let started = Instant::now();
        let result = p(method).await;
        let mut all = vec!["plugin misbehave", method];
        all.extend(parts);
        assert_status(result, code, &all);
        eprintln!("{method}: {code:?} after {:?}", started.elapsed());
    }

    // Running out of stack is a trap or a resource limit, depending on where it runs out.
    let deep = p("deep-recursion").await.expect_err("deep recursion fails");
    assert!(matches!(deep.code(), Code::Internal | Code::ResourceExhausted), "{deep:?}");
    assert!(deep.message().contains("plugin misbehave") && deep.message().contains("method deep-recursion"), "{deep:?}");

    // Payloads past max_payload_bytes, in and out.
    assert_status(
        plugins.invoke("misbehave", "big-output", "100000").await,
        Code::ResourceExhausted,
        &["plugin misbehave", "big-output", "output of 100000 bytes is above limits.max_payload_bytes 65536"],
    );
    assert_eq!(plugins.invoke("misbehave", "big-output", "65536").await.expect("an answer at the limit").len(), 65536);
    assert_status(
        plugins.invoke("misbehave", "echo", vec![b'x'; 65537]).await,
        Code::InvalidArgument,
        &["plugin misbehave", "payload of 65537 bytes is above limits.max_payload_bytes 65536"],
    );

    // Calls that do not fit the plugin.
    assert_status(plugins.invoke("misbehave", "no-such-method", "").await, Code::Unimplemented, &["no-such-method"]);
    assert_status(plugins.invoke("no-such-plugin", "noop", "").await, Code::NotFound, &["no-such-plugin"]);
    assert_status(plugins.invoke("misbehave", "emit", "3").await, Code::FailedPrecondition, &["emit"]);
    assert_status(plugins.collect_stream("misbehave", "noop", "").await, Code::FailedPrecondition, &["noop"]);
    assert_status(
        plugins.invoke("bad-output", "handle-bad", "").await,
        Code::Internal,
        &["plugin bad-output", "handle-bad", "malformed call or answer"],
    );

    // The guest's log line and stderr reach the node's log, tagged with the plugin.
    let marker = format!("log-marker-{}", std::process::id());
    plugins.invoke("misbehave", "log", marker.as_str()).await.expect("log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = node.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&marker)).collect();
        if lines.iter().any(|l| l.contains("misbehave")) && lines.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the guest's log and stderr ({marker}) are not both in the node log: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The member's other clients never noticed.
    load.wait_for_progress(20, Duration::from_secs(10)).await;
    let (ops, errors) = load.finish().await;
    assert!(errors.is_empty(), "the background clients saw errors: {errors:#?}");
    assert!(ops > 40, "the background clients made only {ops} operations");
    eprintln!("background clients: {ops} operations, no errors");

    // The plugin still answers, as does another plugin.
    assert_eq!(plugins.invoke("misbehave", "noop", "").await.expect("noop"), b"");
    assert_eq!(plugins.invoke("misbehave", "echo", "still here").await.expect("echo"), b"still here");
    assert!(!plugins.invoke_text("misbehave", "allowed-put", "k=v").await.expect("allowed-put").is_empty());
    let counted = plugins.invoke_text("counter", "add", r#"{"name":"limits","delta":2}"#).await.expect("counter add");
    assert!(counted.contains(r#""value":2"#), "{counted}");

    // Nothing the refused calls tried to write was written.
    let forbidden = etcdctl(&node.endpoint(), &["get", "forbidden/", "--prefix"], None).expect("etcdctl");
    assert_eq!((forbidden.code, forbidden.stdout.as_str()), (0, ""), "{forbidden:?}");
    let allowed = etcdctl(&node.endpoint(), &["get", "allowed/k", "--print-value-only"], None).expect("etcdctl");
    assert_eq!(allowed.stdout, "v\n");
    assert_no_server_panic(&node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_past_max_concurrent_calls_are_refused_until_running_ones_end() {
    let wasm = misbehave();
    let node = start();
    let plugins = Plugins::connect(&node.endpoint()).await;
    let limits = r#"{"timeout_ms": 20000, "max_concurrent_calls": 2}"#;
    plugins.deploy_file("busy", &wasm, &misbehave_manifest(limits)).await.expect("deploy");

    // Two calls that wait for ever (20 s here) hold both slots.
    let (stuck, full) = fill_slots(&plugins, "busy", 2).await;
    assert_status(Err::<(), _>(full), Code::ResourceExhausted, &["plugin busy", "too many concurrent calls (limits.max_concurrent_calls 2)"]);
    // Still full: a streaming call is refused the same way.
    assert_status(plugins.collect_stream("busy", "emit", "1").await, Code::ResourceExhausted, &["max_concurrent_calls 2"]);

    // The callers go away: their calls end and free the slots.
    for call in &stuck {
        call.abort();
    }
    let freed = Instant::now();
    wait_until_answers(&plugins, "busy", Duration::from_secs(10)).await;
    eprintln!("slots freed {:?} after the callers went away", freed.elapsed());
    for call in stuck {
        assert!(call.await.expect_err("aborted").is_cancelled());
    }

    // Calls that time out free their slot too.
    let limits = r#"{"timeout_ms": 1000, "max_concurrent_calls": 1}"#;
    plugins.deploy_file("brief", &wasm, &misbehave_manifest(limits)).await.expect("deploy");
    let (mut timing_out, _) = fill_slots(&plugins, "brief", 1).await;
    assert_status(timing_out.remove(0).await.expect("the call task"), Code::DeadlineExceeded, &["limits.timeout_ms 1000"]);
    assert_eq!(plugins.invoke("brief", "echo", "free").await.expect("a slot is free after the timeout"), b"free");
    assert_no_server_panic(&node.log());
}

type Call = tokio::task::JoinHandle<Result<Vec<u8>, tonic::Status>>;

/// Fill the plugin's `slots` with `stuck-watch` calls, then call `noop` until the plugin refuses
/// it for want of a slot (the stuck calls may take a moment to start); the stuck calls and that
/// refusal, which must come at once. A stuck call that was itself refused, because a `noop` held
/// a slot when it came, is made again.
async fn fill_slots(plugins: &Plugins, plugin: &str, slots: usize) -> (Vec<Call>, tonic::Status) {
    let stuck_call = || {
        let (plugins, plugin) = (plugins.clone(), plugin.to_string());
        tokio::spawn(async move { plugins.invoke(&plugin, "stuck-watch", "").await })
    };
    let mut stuck: Vec<Call> = (0..slots).map(|_| stuck_call()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for call in &mut stuck {
            if call.is_finished() {
                let refused = std::mem::replace(call, stuck_call()).await.expect("the call task");
                assert_status(refused, Code::ResourceExhausted, &["max_concurrent_calls"]);
            }
        }
        let started = Instant::now();
        match plugins.invoke(plugin, "noop", "").await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(started.elapsed() < Duration::from_secs(1), "the refusal took {:?}", started.elapsed());
                if stuck.iter().all(|call| !call.is_finished()) {
                    return (stuck, status);
                }
            }
            Err(status) => panic!("noop failed otherwise: {status:?}"),
            Ok(_) => {
                assert!(Instant::now() < deadline, "{plugin} still takes calls; its slots never filled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Polls `noop` until it answers (refusals for want of a slot allowed meanwhile).
async fn wait_until_answers(plugins: &Plugins, plugin: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match plugins.invoke(plugin, "noop", "").await {
            Ok(_) => return,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "{plugin} still refuses calls {timeout:?} after its callers left: {status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("noop failed otherwise: {status:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_arrive_in_order_and_end_when_the_caller_goes_away() {
    let wasm = misbehave();
    let node = start();
    let plugins = Plugins::connect(&node.endpoint()).await;
    let limits = r#"{"max_concurrent_calls": 1, "max_payload_bytes": 1024}"#;
    plugins.deploy_file("streams", &wasm, &misbehave_manifest(limits)).await.expect("deploy");

    assert_eq!(plugins.collect_stream("streams", "emit", "5").await.expect("emit 5"), ["0", "1", "2", "3", "4"]);
    assert_eq!(plugins.collect_stream("streams", "emit", "0").await.expect("emit 0"), Vec::<String>::new());
    assert_status(
        plugins.collect_stream("streams", "emit", vec![b'1'; 1025]).await,
        Code::InvalidArgument,
        &["plugin streams", "payload of 1025 bytes is above limits.max_payload_bytes 1024"],
    );

    // A stream that would never end: read some of it, then hang up.
    for round in 0..3 {
        let mut stream = plugins.invoke_stream("streams", "emit-forever", "").await.expect("emit-forever");
        for i in 0..10 {
            let message = stream.message().await.expect("a message").expect("the stream goes on");
            assert_eq!(message.payload, i.to_string().as_bytes(), "round {round}");
        }
        drop(stream);
        // The only slot comes back once the server notices the caller left.
        let hung_up = Instant::now();
        wait_until_answers(&plugins, "streams", Duration::from_secs(10)).await;
        eprintln!("round {round}: slot back {:?} after the hang-up", hung_up.elapsed());
    }
    assert_eq!(plugins.collect_stream("streams", "emit", "2").await.expect("emit 2"), ["0", "1"]);
    assert_no_server_panic(&node.log());
}

/// `stream_timeout_ms` lets a streaming call outlive `timeout_ms` (an election's Observe follows
/// for as long as its caller), and still ends it at its own limit; unary calls keep `timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_lives_until_its_stream_timeout_not_the_call_timeout() {
    let wasm = misbehave();
    let node = start();
    let plugins = Plugins::connect(&node.endpoint()).await;
    let limits = r#"{"timeout_ms": 500, "stream_timeout_ms": 2500}"#;
    plugins.deploy_file("long", &wasm, &misbehave_manifest(limits)).await.expect("deploy");

    let started = Instant::now();
    let mut stream = plugins.invoke_stream("long", "emit-forever", "").await.expect("emit-forever");
    // Read all along: a caller that stops reading while many small messages arrive is cut off by
    // its own h2 (0.4.20 counts unread small DATA frames: "too_many_data_frames").
    let failure = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without its timeout"),
            Err(status) => break status,
        }
    };
    let lived = started.elapsed();
    assert_status::<()>(Err(failure), Code::DeadlineExceeded, &["plugin long", "call timed out (limits.stream_timeout_ms 2500)"]);
    assert!(lived >= Duration::from_millis(2500), "the stream ended after {lived:?}");
    assert_status(plugins.invoke("long", "stuck-watch", "").await, Code::DeadlineExceeded, &["limits.timeout_ms 500"]);
    assert_no_server_panic(&node.log());
}

/// A stream's CPU limit is per message: a long-lived stream that does a little work per message
/// never runs out, while one that spins between messages still fails on its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streams_fuel_is_per_message() {
    let wasm = misbehave();
    let node = start();
    let plugins = Plugins::connect(&node.endpoint()).await;
    let limits = r#"{"fuel": 2000000, "timeout_ms": 20000}"#;
    plugins.deploy_file("frugal", &wasm, &misbehave_manifest(limits)).await.expect("deploy");

    // Far more work in all than one message's fuel.
    let messages = plugins.collect_stream("frugal", "emit", "20000").await.expect("every message");
    assert_eq!(messages.len(), 20000);
    assert_eq!(messages.last().map(String::as_str), Some("19999"));

    let mut stream = plugins.invoke_stream("frugal", "emit-then-spin", "").await.expect("emit-then-spin");
    assert_eq!(stream.message().await.expect("the first message").expect("a message").payload, b"spinning");
    let failure = stream.message().await.expect_err("the spin runs out of fuel");
    assert_status::<()>(Err(failure), Code::ResourceExhausted, &["plugin frugal", "emit-then-spin", "CPU limit exceeded (limits.fuel 2000000)"]);
    assert_no_server_panic(&node.log());
}

/// When its caller goes away, a call is not cut off mid-way: its waits end with `cancelled` and it
/// can still undo what it did (as a lock waiter removes its key) before it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_whose_caller_went_away_can_clean_up() {
    let wasm = misbehave();
    let node = start();
    let plugins = Plugins::connect(&node.endpoint()).await;
    plugins.deploy_file("tidy", &wasm, &misbehave_manifest(r#"{"timeout_ms": 20000}"#)).await.expect("deploy");
    let mut kv = conclave_tests::catch_up::connect(&node.endpoint()).await;
    let value = |resp: etcd_client::GetResponse| resp.kvs().first().map(|kv| kv.value().to_vec());

    let waiting = {
        let plugins = plugins.clone();
        tokio::spawn(async move { plugins.invoke("tidy", "clean-up-when-cancelled", "mark").await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(kv.get("allowed/mark", None).await.expect("get")).is_none() {
        assert!(Instant::now() < deadline, "the call never left its mark");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    waiting.abort();
    let gone = Instant::now();
    while value(kv.get("allowed/mark", None).await.expect("get")).is_some() {
        assert!(gone.elapsed() < Duration::from_secs(10), "the call did not clean up after its caller went away");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("cleaned up {:?} after the caller went away", gone.elapsed());
    assert_eq!(plugins.invoke("tidy", "echo", "ok").await.expect("the plugin still answers"), b"ok");
    assert_no_server_panic(&node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_serves_again_only_when_its_manifest_allows_and_its_last_call_ended_cleanly() {
    let wasm = misbehave();
    let node = start();
    let plugins = Plugins::connect(&node.endpoint()).await;
    plugins.deploy_file("fresh", &wasm, &misbehave_manifest("{}")).await.expect("deploy fresh");
    let reused = r#"{"read":["allowed/"],"write":["allowed/"],"reuse_instances":true}"#;
    plugins.deploy_file("reused", &wasm, reused).await.expect("deploy reused");
    let calls = |plugin: &'static str| {
        let plugins = plugins.clone();
        async move { plugins.invoke_text(plugin, "calls", "").await.expect("calls") }
    };

    // By default every call has an instance of its own.
    assert_eq!((calls("fresh").await, calls("fresh").await), ("1".to_string(), "1".to_string()));

    // Allowed, one caller after another finds the same instance, after answers and the guest's
    // own errors alike.
    assert_eq!((calls("reused").await, calls("reused").await), ("1".to_string(), "2".to_string()));
    assert_status(plugins.invoke("reused", "sleep", "not a number").await, Code::InvalidArgument, &["not a decimal number"]);
    assert_eq!(calls("reused").await, "4");

    // A call that traps, is refused a key, writes to stderr or answers past its payload limit
    // leaves its instance behind: the next call starts afresh.
    let unclean: [(&str, &str, Code); 4] = [
        ("trap", "", Code::Internal),
        ("forbidden-put", "", Code::PermissionDenied),
        ("log", "to stderr", Code::Ok),
        ("big-output", "2000000", Code::ResourceExhausted),
    ];
    for (method, payload, code) in unclean {
        calls("reused").await;
        let outcome = plugins.invoke("reused", method, payload).await;
        assert_eq!(outcome.as_ref().map_or_else(|s| s.code(), |_| Code::Ok), code, "{method}: {outcome:?}");
        assert_eq!(calls("reused").await, "1", "after {method}");
    }
    assert_no_server_panic(&node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_instances_give_up_their_slots_to_calls_that_need_them() {
    let wasm = misbehave();
    let node = Node::start(Kind::Conclave, &["--plugin-instances", "4"]).unwrap_or_else(|e| panic!("{e:#}"));
    let plugins = Plugins::connect(&node.endpoint()).await;
    let reused = r#"{"read":["allowed/"],"write":["allowed/"],"reuse_instances":true}"#;
    plugins.deploy_file("reused", &wasm, reused).await.expect("deploy reused");
    plugins.deploy_file("plain", &wasm, &misbehave_manifest(r#"{"timeout_ms": 20000}"#)).await.expect("deploy plain");
    assert_eq!(plugins.invoke_text("reused", "calls", "").await.expect("calls"), "1");

    // One instance of `reused` idles in one of the four slots; four waiting calls (each marks a
    // key once it runs) take them all.
    let stuck: Vec<Call> = (0..4)
        .map(|i| {
            let plugins = plugins.clone();
            tokio::spawn(async move { plugins.invoke("plain", "clean-up-when-cancelled", format!("stuck{i}")).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let marks = etcdctl(&node.endpoint(), &["get", "allowed/stuck", "--prefix", "--keys-only"], None).expect("etcdctl");
        if marks.stdout.lines().filter(|l| !l.is_empty()).count() == 4 {
            break;
        }
        assert!(stuck.iter().all(|call| !call.is_finished()), "a waiting call was refused a slot: {:?}", answers_of_finished(stuck).await);
        assert!(Instant::now() < deadline, "the four waiting calls never all ran: {marks:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_status(plugins.invoke("plain", "noop", "").await, Code::ResourceExhausted, &["no free instance slot on this member (--plugin-instances)"]);

    for call in &stuck {
        call.abort();
    }
    wait_until_answers(&plugins, "plain", Duration::from_secs(10)).await;
    // The idle instance made room: the next call of `reused` starts afresh.
    assert_eq!(plugins.invoke_text("reused", "calls", "").await.expect("calls"), "1");
    assert_no_server_panic(&node.log());
}

/// What the finished calls among `calls` answered.
async fn answers_of_finished(calls: Vec<Call>) -> Vec<Result<Vec<u8>, tonic::Status>> {
    let mut answers = Vec::new();
    for call in calls.into_iter().filter(|call| call.is_finished()) {
        answers.push(call.await.expect("the call task"));
    }
    answers
}
