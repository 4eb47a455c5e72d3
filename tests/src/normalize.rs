//! Normalising client output so two servers' answers to the same session can be compared.
//!
//! Replaced: what legitimately differs between two servers — cluster, member and lease ids,
//! raft term and index, db size, server version, ports, timings, log timestamps, client uuids,
//! and a lease's remaining TTL while it is at most [`TTL_LAG`] seconds under the granted one (how
//! far under depends on how long the session took to get there). Revisions, versions of keys,
//! counts and everything else stay untouched: both stores start at revision 1, so those must
//! match exactly.
//!
//! Ids become `<idN>`, numbered in order of first appearance within one [`Normalizer`], so
//! equal ids stay equal (a header's member_id and the member list's ID) whether printed in
//! decimal (`-w json`, `-w fields`) or hex (simple output). Zero is never replaced: a zero
//! where etcd has a real id (or the reverse) must show up as a difference.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

/// JSON keys (`-w json`) and field names (`-w fields`) holding ids.
const ID_KEYS: &[&str] = &[
    "cluster_id",
    "member_id",
    "ID",
    // Lease ids in `lease timetolive -w json` and `lease list -w json`.
    "id",
    "leader",
    "lease",
    "ClusterID",
    "MemberID",
    "Leader",
    "Lease",
];
/// Keys whose non-zero numeric value depends on the server's raft log or storage.
const VOLATILE_KEYS: &[&str] = &[
    "raft_term",
    "raftTerm",
    "raftIndex",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
    "RaftTerm",
    "RaftIndex",
    "RaftAppliedIndex",
    "DBSize",
    "DBSizeInUse",
];
/// Keys whose string value is the server's version ("3.4.23"), a timestamp or a duration.
const STRING_KEYS: &[&str] = &["version", "Version", "ts", "took"];

/// Seconds a lease's remaining TTL may lag its granted TTL and still count as "just granted".
const TTL_LAG: i64 = 10;

static FIELD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"^"(\w+)" : (.*)$"#).unwrap());
static PORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(127\.0\.0\.1|localhost):\d+").unwrap());
static TOOK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"took = \S+").unwrap());
/// `lease timetolive`'s simple output.
static REMAINING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"granted with TTL\((\d+)s\), remaining\((-?\d+)s\)").unwrap());
static CLIENT_UUID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"client-[0-9a-f-]{36}").unwrap());
/// Hex ids in simple/table output (`%x`/`%016x`): 8–16 hex digits with a letter and a digit,
/// which plain words and numbers in the sessions avoid.
static HEX_ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[0-9a-f]{8,16}\b").unwrap());

/// Stateful across one session: the same id gets the same placeholder in every output.
#[derive(Default)]
pub struct Normalizer {
    ids: HashMap<u64, usize>,
}

impl Normalizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Normalises one whole output (stdout or stderr), line by line.
    pub fn output(&mut self, text: &str) -> String {
        let lines: Vec<String> = text.split('\n').map(|line| self.line(line)).collect();
        lines.join("\n")
    }

    fn line(&mut self, line: &str) -> String {
        if line.starts_with(['{', '['])
            && let Ok(mut json) = serde_json::from_str::<Value>(line)
        {
            self.json(&mut json);
            return json.to_string();
        }
        if let Some(field) = FIELD.captures(line) {
            let value = self.keyed(&field[1], &field[2]);
            return format!("\"{}\" : {}", &field[1], common(&value));
        }
        let line = common(line);
        HEX_ID
            .replace_all(&line, |c: &Captures| {
                let token = &c[0];
                let looks_like_id = token.contains(|ch: char| ch.is_ascii_digit())
                    && token.contains(|ch: char| ch.is_ascii_lowercase());
                match u64::from_str_radix(token, 16) {
                    Ok(id) if looks_like_id => self.id(id),
                    _ => token.to_string(),
                }
            })
            .into_owned()
    }

    fn json(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                // `lease timetolive -w json`: "ttl" is the remaining TTL.
                let ttl = |key: &str| map.get(key).and_then(Value::as_i64);
                if let (Some(granted), Some(remaining)) = (ttl("granted-ttl"), ttl("ttl"))
                    && just_granted(granted, remaining)
                {
                    map.insert("ttl".into(), Value::from("<just under granted-ttl>"));
                }
                for (key, value) in map.iter_mut() {
                    match value {
                        Value::Number(_) | Value::String(_) => {
                            let raw = value
                                .as_str()
                                .map_or_else(|| value.to_string(), |s| format!("\"{s}\""));
                            let new = self.keyed(key, &raw);
                            if new != raw {
                                *value = Value::String(new);
                            } else if let Value::String(s) = value {
                                *s = common(s);
                            }
                        }
                        _ => self.json(value),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.json(item)),
            Value::String(s) => *s = common(s),
            _ => {}
        }
    }

    /// The normalised form of `raw` (a number, or a string in double quotes) under `key`.
    fn keyed(&mut self, key: &str, raw: &str) -> String {
        // The JSON gateway writes 64-bit numbers as strings.
        let digits = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
        let number = digits.parse::<u64>().ok().filter(|&n| n != 0);
        match number {
            Some(id) if ID_KEYS.contains(&key) => self.id(id),
            Some(_) if VOLATILE_KEYS.contains(&key) => format!("<{key}>"),
            None if raw.starts_with('"') && STRING_KEYS.contains(&key) => format!("<{key}>"),
            _ => raw.to_string(),
        }
    }

    fn id(&mut self, id: u64) -> String {
        let next = self.ids.len() + 1;
        format!("<id{}>", self.ids.entry(id).or_insert(next))
    }
}

/// The structure of a JSON output: objects keep their keys and arrays their items, while every
/// number and string becomes the name of its type (booleans stay). etcdctl leaves zero fields
/// out, so a zero where etcd has a value (or the reverse) still changes the shape.
pub fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(key, value)| (key.clone(), shape(value))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Number(_) => Value::from("<number>"),
        Value::String(_) => Value::from("<string>"),
        Value::Bool(_) | Value::Null => value.clone(),
    }
}

/// Whether a lease granted `granted` seconds has `remaining` seconds left for lack of time only.
fn just_granted(granted: i64, remaining: i64) -> bool {
    (granted - TTL_LAG..=granted).contains(&remaining)
}

/// Rules that apply to any text: ports, durations, client uuids, a just granted lease's TTL.
fn common(text: &str) -> String {
    let text = REMAINING.replace_all(text, |c: &Captures| match (c[1].parse::<i64>(), c[2].parse::<i64>()) {
        (Ok(granted), Ok(remaining)) if just_granted(granted, remaining) => format!("granted with TTL({granted}s), remaining(<just under>)"),
        _ => c[0].to_string(),
    });
    let text = PORT.replace_all(&text, "$1:<port>");
    let text = TOOK.replace_all(&text, "took = <duration>");
    CLIENT_UUID.replace_all(&text, "client-<uuid>").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbered_consistently_across_formats() {
        let mut n = Normalizer::new();
        let json = r#"{"header":{"cluster_id":10,"member_id":3319814642761637952,"revision":2,"raft_term":2},"kvs":[{"key":"Zm9v","version":1,"lease":0}]}"#;
        assert_eq!(
            n.output(json),
            r#"{"header":{"cluster_id":"<id1>","member_id":"<id2>","raft_term":"<raft_term>","revision":2},"kvs":[{"key":"Zm9v","lease":0,"version":1}]}"#
        );
        assert_eq!(
            n.output("\"MemberID\" : 3319814642761637952\n\"Revision\" : 2"),
            "\"MemberID\" : <id2>\n\"Revision\" : 2"
        );
        assert_eq!(
            n.output(
                "2e1259d415f2a040, started, node, http://127.0.0.1:23800, http://localhost:1, false"
            ),
            "<id2>, started, node, http://127.0.0.1:<port>, http://localhost:<port>, false"
        );
    }

    #[test]
    fn a_just_granted_lease_s_remaining_ttl_is_timing_and_an_older_one_s_is_not() {
        let mut n = Normalizer::new();
        for remaining in [600, 598, 590] {
            let text = format!("lease 694d77a19f0c0a0b granted with TTL(600s), remaining({remaining}s)");
            assert_eq!(n.output(&text), "lease <id1> granted with TTL(600s), remaining(<just under>)");
        }
        assert_eq!(n.output("lease 694d77a19f0c0a0b granted with TTL(600s), remaining(589s)"), "lease <id1> granted with TTL(600s), remaining(589s)");
        let json = |ttl: i64| format!(r#"{{"id":7587852483230960139,"ttl":{ttl},"granted-ttl":600}}"#);
        assert_eq!(n.output(&json(599)), r#"{"granted-ttl":600,"id":"<id1>","ttl":"<just under granted-ttl>"}"#);
        assert_eq!(n.output(&json(-1)), r#"{"granted-ttl":600,"id":"<id1>","ttl":-1}"#);
    }

    #[test]
    fn shapes_keep_keys_and_booleans() {
        let json: Value = serde_json::from_str(r#"[{"endpoint":"http://x","health":true,"took":"1ms","n":[1,2]}]"#).unwrap();
        let expected = r#"[{"endpoint":"<string>","health":true,"n":["<number>","<number>"],"took":"<string>"}]"#;
        assert_eq!(shape(&json).to_string(), expected);
    }

    #[test]
    fn versions_durations_and_log_lines() {
        let mut n = Normalizer::new();
        assert_eq!(
            n.output(r#""Version" : "3.4.23""#),
            r#""Version" : <Version>"#
        );
        assert_eq!(n.output(r#""Version" : 3"#), r#""Version" : 3"#);
        assert_eq!(
            n.output(
                "http://127.0.0.1:5 is healthy: successfully committed proposal: took = 1.04725ms"
            ),
            "http://127.0.0.1:<port> is healthy: successfully committed proposal: took = <duration>"
        );
        let log = r#"{"level":"warn","ts":"2026-11-25T12:55:18.418Z","target":"endpoint://client-c766a61b-8bca-433b-8cf2-b5570259e8cb/127.0.0.1:23790","attempt":0}"#;
        assert_eq!(
            n.output(log),
            r#"{"attempt":0,"level":"warn","target":"endpoint://client-<uuid>/127.0.0.1:<port>","ts":"<ts>"}"#
        );
    }
}
