//! The HTTP/JSON gateway, driven with the real curl: the same session against etcd 3.4 and
//! Conclave gives the same statuses and bodies after normalising ids (errors from the gRPC layer
//! included; for malformed JSON only the status, since the decoders' words differ).

use std::time::Duration;

use conclave_tests::curl::{Answer, Stream, curl, post};
use conclave_tests::{Kind, Node, Normalizer, shape};

/// Base64 of the session's keys and values.
const FOO: &str = "Zm9v";
const BAR: &str = "YmFy";
const BAZ: &str = "YmF6";
/// A lease id both servers grant when asked for it.
const LEASE: &str = "7587870000000000001";

struct Session {
    base: String,
    normalizer: Normalizer,
    lines: Vec<String>,
}

impl Session {
    fn record(&mut self, what: &str, answer: Answer) {
        let body = self.normalizer.output(answer.body.trim_end());
        self.lines.push(format!("{what} -> {} {body}", answer.status));
    }

    /// A lease's remaining TTL depends on how long the session took to get there: between 1
    /// and its granted TTL it reads `<ttl>`.
    fn post_remaining_ttl(&mut self, path: &str, body: &str) {
        let mut answer = post(&self.base, path, body, &[]);
        if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(&answer.body) {
            let granted = json["grantedTTL"].as_str().and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
            let remaining = json["TTL"].as_str().and_then(|t| t.parse::<i64>().ok());
            if remaining.is_some_and(|ttl| (1..=granted).contains(&ttl)) {
                json["TTL"] = serde_json::Value::from("<ttl>");
                answer.body = json.to_string();
            }
        }
        self.record(&format!("POST {path} {body}"), answer);
    }

    fn post(&mut self, path: &str, body: &str) {
        let answer = post(&self.base, path, body, &[]);
        self.record(&format!("POST {path} {body}"), answer);
    }

    /// A request whose status must match but whose body is the JSON decoder's own words.
    fn post_status_only(&mut self, path: &str, body: &str) {
        let answer = post(&self.base, path, body, &[]);
        self.lines.push(format!("POST {path} {body} -> {}", answer.status));
    }
}

fn session(node: &Node) -> Vec<String> {
    let mut s = Session { base: node.endpoint(), normalizer: Normalizer::new(), lines: Vec::new() };
    let version = curl(&format!("{}/version", s.base), &[]);
    let shape = shape(&serde_json::from_str(&version.body).expect("/version is JSON"));
    s.lines.push(format!("GET /version -> {} {shape}", version.status));
    s.record("GET /health", curl(&format!("{}/health", s.base), &[]));
    s.record("GET /health?serializable=true", curl(&format!("{}/health?serializable=true", s.base), &[]));

    let watch = Stream::open(&s.base, "/v3/watch", &format!(r#"{{"create_request":{{"key":"{FOO}","prev_kv":true}}}}"#), &[]);
    let created = watch.next_line(Duration::from_secs(10)).expect("the watch is created");
    s.record("watch created", Answer { status: 200, body: created });

    s.post("/v3/kv/put", &format!(r#"{{"key":"{FOO}","value":"{BAR}"}}"#));
    s.post("/v3/kv/put", &format!(r#"{{"key":"{FOO}","value":"{BAZ}","prev_kv":true}}"#));
    s.post("/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#);
    s.post("/v3/kv/put", r#"{"key":"Yg==","value":"Mg==","unknown_field":1}"#);
    s.post("/v3/kv/range", &format!(r#"{{"key":"{FOO}"}}"#));
    s.post("/v3/kv/range", r#"{"key":"YQ==","range_end":"Yw=="}"#);
    s.post("/v3/kv/range", r#"{"key":"AA==","range_end":"AA==","limit":1,"sort_order":"DESCEND","sort_target":"KEY"}"#);
    s.post("/v3/kv/range", r#"{"key":"AA==","range_end":"AA==","count_only":true}"#);
    s.post("/v3/kv/range", r#"{"key":"YQ==","range_end":"Yw==","keys_only":true,"limit":"5"}"#);
    s.post("/v3/kv/range", r#"{"key":"bm9wZQ=="}"#);
    s.post("/v3beta/kv/range", &format!(r#"{{"key":"{FOO}","serializable":true}}"#));
    s.post(
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"result":"EQUAL","target":"VALUE","key":"{FOO}","value":"{BAZ}"}}],"success":[{{"request_put":{{"key":"{FOO}","value":"{BAR}"}}}},{{"request_range":{{"key":"YQ=="}}}}],"failure":[{{"request_range":{{"key":"{FOO}"}}}}]}}"#
        ),
    );
    s.post(
        "/v3/kv/txn",
        &format!(
            r#"{{"compare":[{{"result":"GREATER","target":"MOD","key":"{FOO}","mod_revision":"100"}}],"failure":[{{"request_delete_range":{{"key":"Yg==","prev_kv":true}}}}]}}"#
        ),
    );
    s.post("/v3/kv/deleterange", r#"{"key":"YQ==","prev_kv":true}"#);
    s.post("/v3/kv/deleterange", r#"{"key":"YQ=="}"#);

    // The watch saw every change of foo, in order, with the previous values.
    for _ in 0..3 {
        let line = watch.next_line(Duration::from_secs(10)).expect("a watch event");
        s.record("watch event", Answer { status: 200, body: line });
    }
    drop(watch);

    s.post("/v3/kv/compaction", r#"{"revision":"4"}"#);
    s.post("/v3/kv/range", &format!(r#"{{"key":"{FOO}","revision":"3"}}"#));
    s.post("/v3/kv/range", &format!(r#"{{"key":"{FOO}","revision":"100"}}"#));
    s.post("/v3/kv/compaction", r#"{"revision":"3"}"#);
    s.post("/v3/kv/compaction", r#"{"revision":"100"}"#);
    let compacted = Stream::open(&s.base, "/v3/watch", &format!(r#"{{"create_request":{{"key":"{FOO}","start_revision":"2"}}}}"#), &[]);
    for what in ["watch from a compacted revision", "then"] {
        let line = compacted.next_line(Duration::from_secs(10)).expect("an answer");
        s.record(what, Answer { status: 200, body: line });
    }
    drop(compacted);

    s.post("/v3/lease/grant", &format!(r#"{{"TTL":60,"ID":"{LEASE}"}}"#));
    s.post("/v3/lease/grant", &format!(r#"{{"TTL":60,"ID":{LEASE}}}"#));
    s.post("/v3/kv/put", &format!(r#"{{"key":"bGVhc2Vk","value":"eA==","lease":"{LEASE}"}}"#));
    s.post("/v3/kv/put", r#"{"key":"bGVhc2Vk","value":"eA==","lease":"12345"}"#);
    s.post_remaining_ttl("/v3/lease/timetolive", &format!(r#"{{"ID":"{LEASE}","keys":true}}"#));
    s.post("/v3/kv/lease/timetolive", r#"{"ID":"12345"}"#);
    s.post("/v3/lease/leases", "{}");
    s.post("/v3/kv/lease/leases", "");
    s.post("/v3/lease/keepalive", &format!(r#"{{"ID":"{LEASE}"}}"#));
    s.post("/v3/lease/keepalive", r#"{"ID":"12345"}"#);
    s.post("/v3/lock/lock", &format!(r#"{{"name":"bG9jaw==","lease":"{LEASE}"}}"#));
    s.post("/v3/election/campaign", &format!(r#"{{"name":"ZWxlY3Rpb24=","lease":"{LEASE}","value":"b25l"}}"#));
    s.post("/v3/election/leader", r#"{"name":"ZWxlY3Rpb24="}"#);
    s.post("/v3/election/leader", r#"{"name":"bm9uZQ=="}"#);
    s.post("/v3/lease/revoke", &format!(r#"{{"ID":"{LEASE}"}}"#));
    s.post("/v3/kv/lease/revoke", &format!(r#"{{"ID":"{LEASE}"}}"#));
    s.post("/v3/kv/range", r#"{"key":"bGVhc2Vk"}"#);

    s.post("/v3/cluster/member/list", "{}");
    s.post("/v3/cluster/member/remove", r#"{"ID":"1"}"#);
    s.post("/v3/cluster/member/promote", r#"{"ID":"1"}"#);
    s.post("/v3/maintenance/alarm", r#"{"action":"GET"}"#);
    s.post("/v3/maintenance/defragment", "{}");

    // Authentication disabled, no users or roles.
    s.post("/v3/auth/authenticate", r#"{"name":"root","password":"x"}"#);
    s.post("/v3/auth/user/list", "{}");
    s.post("/v3/auth/role/list", "{}");
    s.post("/v3/auth/user/get", r#"{"name":"nobody"}"#);
    s.post("/v3/auth/role/get", r#"{"role":"nobody"}"#);
    s.post("/v3/auth/user/delete", r#"{"name":"nobody"}"#);
    s.post("/v3/auth/disable", "{}");
    s.post("/v3/auth/enable", "{}");

    s.post_status_only("/v3/kv/range", r#"{"key":5}"#);
    s.post_status_only("/v3/kv/range", r#"{"key":"#);
    s.post_status_only("/v3/kv/range", r#"{"key":"Zm9v","limit":"abc"}"#);
    s.record("GET /v3/kv/range", curl(&format!("{}/v3/kv/range", s.base), &[]));
    s.record("POST /v3/kv/nope", curl(&format!("{}/v3/kv/nope", s.base), &["-X", "POST"]));
    s.record("GET /nope", curl(&format!("{}/nope", s.base), &[]));
    s.lines
}

#[tokio::test]
async fn curl_session_matches_etcd() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::subject()] {
        let node = Node::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        transcripts.push(tokio::task::spawn_blocking(move || session(&node)).await.unwrap());
    }
    let (etcd, subject) = (&transcripts[0], &transcripts[1]);
    println!("{}", subject.join("\n"));
    for (etcd, subject) in etcd.iter().zip(subject) {
        assert_eq!(etcd, subject, "left: etcd, right: {:?}", Kind::subject());
    }
    assert_eq!(etcd.len(), subject.len());
}

/// A body of `size` bytes of JSON: a put of a value of `value_bytes` zero bytes.
fn big_put(value_bytes: usize) -> String {
    // Base64 of zero bytes is "A" repeated, "=" padded.
    let mut value = "A".repeat(value_bytes / 3 * 4);
    match value_bytes % 3 {
        1 => value.push_str("AA=="),
        2 => value.push_str("AAA="),
        _ => {}
    }
    format!(r#"{{"key":"Zm9v","value":"{value}"}}"#)
}

/// Oversized and malformed requests get etcd's statuses, and the server keeps serving: many
/// stalled connections (headers never finished) hold up nobody.
#[tokio::test]
async fn oversized_and_stalled_requests_cannot_exhaust_the_server() {
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::subject()] {
        let node = Node::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        let transcript = tokio::task::spawn_blocking(move || {
            let base = node.endpoint();
            let dir = tempfile::tempdir().unwrap();
            let mut statuses = Vec::new();
            for value_bytes in [1_600_000, 4_000_000] {
                let file = dir.path().join("body.json");
                std::fs::write(&file, big_put(value_bytes)).unwrap();
                let answer = post(&base, "/v3/kv/put", &format!("@{}", file.display()), &[]);
                let code = serde_json::from_str::<serde_json::Value>(&answer.body).ok().and_then(|v| v["code"].as_i64());
                statuses.push((value_bytes, answer.status, code));
            }
            // Connections that never finish their headers.
            let address = base.trim_start_matches("http://").to_string();
            let stalled: Vec<_> = (0..200)
                .map(|_| {
                    let mut tcp = std::net::TcpStream::connect(&address).unwrap();
                    std::io::Write::write_all(&mut tcp, b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\n").unwrap();
                    tcp
                })
                .collect();
            let answer = post(&base, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, &[]);
            statuses.push((0, answer.status, None));
            drop(stalled);
            statuses
        })
        .await
        .unwrap();
        transcripts.push(transcript);
    }
    assert_eq!(transcripts[0], transcripts[1], "left: etcd, right: {:?}", Kind::subject());
}

/// HTTP/2 with prior knowledge (h2c) reaches the gateway too, and HTTP/1.1 connections are kept
/// alive across requests.
#[test]
fn the_gateway_answers_h2c_and_keeps_http1_connections_alive() {
    let node = Node::start(Kind::Conclave, &[]).unwrap();
    let base = node.endpoint();
    let h2 = post(&base, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, &["--http2-prior-knowledge"]);
    assert_eq!(h2.status, 200, "{h2:?}");
    let range = format!("{base}/v3/kv/range");
    // curl sends both requests on one connection.
    let both = curl(&range, &["-X", "POST", "-d", r#"{"key":"Zm9v"}"#, &range]);
    assert_eq!(both.status, 200, "{both:?}");
    assert_eq!(both.body.matches(r#""value":"YmFy""#).count(), 2, "{both:?}");
}
