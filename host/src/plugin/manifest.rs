//! A plugin's manifest: the key ranges it may read and write, and the limits of each call.
//! Given as JSON at deploy; checked here against the member's ceilings ([`PluginFlags`]) and
//! stored (and shown) with every default filled in, so each member enforces the same numbers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PluginFlags;
use crate::mvcc::KeySpan;
use crate::service::Access;

/// Most key prefixes one manifest may grant (each is checked on every key a call names).
const MAX_GRANTS: usize = 64;
/// Longest granted prefix, in bytes (etcd's keys are at most 1.5 MiB; prefixes need far less).
const MAX_PREFIX_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Key prefixes the plugin may read (range, watch, txn compares); "" is every key.
    #[serde(default)]
    pub read: Vec<String>,
    /// Key prefixes the plugin may write (put, delete, txn ops, keys of leases it revokes).
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Whether an instance may serve more than one call (see [`super::idle`]): faster, but the
    /// guest's memory then lasts from one call to the next.
    #[serde(default)]
    pub reuse_instances: bool,
}

/// What one call may use. Every field is optional in a manifest; the defaults are safe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// CPU: fuel per call, or per message of a streaming call (about one unit per WebAssembly
    /// instruction; waiting costs none).
    pub fuel: u64,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time per call, waits included, in milliseconds.
    pub timeout_ms: u64,
    /// Wall-clock time of a streaming call, in milliseconds, when it should differ from
    /// `timeout_ms`: a stream that follows changes (an election's Observe) lives as long as its
    /// caller, so its ceiling (`--plugin-max-stream-timeout`) is far above a unary call's.
    pub stream_timeout_ms: Option<u64>,
    /// Calls of this plugin running at once on one member.
    pub max_concurrent_calls: u32,
    /// Largest payload into a call, out of it, or in one streamed message, in bytes.
    pub max_payload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000_000,
            memory_bytes: 32 * 1024 * 1024,
            timeout_ms: 30_000,
            stream_timeout_ms: None,
            max_concurrent_calls: 1_000,
            max_payload_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// The wall-clock limit of a streaming call: its name in the manifest and its value.
    pub fn stream_timeout(&self) -> (&'static str, u64) {
        match self.stream_timeout_ms {
            Some(ms) => ("stream_timeout_ms", ms),
            None => ("timeout_ms", self.timeout_ms),
        }
    }
}

impl Manifest {
    /// Read a manifest from JSON ("" is the default manifest: no keys, default limits) and check
    /// it against this member's ceilings.
    pub fn parse(json: &str, ceilings: &PluginFlags) -> Result<Manifest, String> {
        let manifest: Manifest = if json.trim().is_empty() {
            Manifest { read: Vec::new(), write: Vec::new(), limits: Limits::default(), reuse_instances: false }
        } else {
            serde_json::from_str(json).map_err(|e| format!("invalid manifest: {e}"))?
        };
        manifest.check(ceilings)?;
        Ok(manifest)
    }

    fn check(&self, ceilings: &PluginFlags) -> Result<(), String> {
        for (what, prefixes) in [("read", &self.read), ("write", &self.write)] {
            if prefixes.len() > MAX_GRANTS {
                return Err(format!("invalid manifest: {} {what} prefixes (at most {MAX_GRANTS})", prefixes.len()));
            }
            for (i, prefix) in prefixes.iter().enumerate() {
                if prefix.len() > MAX_PREFIX_BYTES {
                    return Err(format!("invalid manifest: a {what} prefix is longer than {MAX_PREFIX_BYTES} bytes"));
                }
                if prefixes[..i].contains(prefix) {
                    return Err(format!("invalid manifest: {what} prefix {prefix:?} is given twice"));
                }
            }
        }
        let l = &self.limits;
        let millis = |d: Duration| d.as_millis().try_into().unwrap_or(u64::MAX);
        let checks: [(&str, u64, u64); 6] = [
            ("fuel", l.fuel, ceilings.plugin_max_fuel),
            ("memory_bytes", l.memory_bytes, ceilings.plugin_max_memory_bytes),
            ("timeout_ms", l.timeout_ms, millis(ceilings.plugin_max_call_timeout)),
            ("stream_timeout_ms", l.stream_timeout().1, millis(ceilings.plugin_max_stream_timeout)),
            ("max_concurrent_calls", l.max_concurrent_calls.into(), ceilings.plugin_max_concurrent_calls.into()),
            ("max_payload_bytes", l.max_payload_bytes, ceilings.plugin_max_payload_bytes),
        ];
        for (name, value, ceiling) in checks {
            if value == 0 {
                return Err(format!("invalid manifest: limits.{name} must be above 0"));
            }
            if value > ceiling {
                return Err(format!("invalid manifest: limits.{name} {value} is above this server's maximum {ceiling}"));
            }
        }
        Ok(())
    }

    /// The manifest as stored and shown: JSON with every field.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a manifest always serializes")
    }

    pub fn read_access(&self) -> Access {
        access(&self.read)
    }

    pub fn write_access(&self) -> Access {
        access(&self.write)
    }
}

/// The spans of some prefixes, etcd's way: "" is every key (range end "\0").
fn access(prefixes: &[String]) -> Access {
    Access::Only(prefixes.iter().map(|p| KeySpan::prefix(p.as_bytes())).collect())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Config;

    fn ceilings() -> PluginFlags {
        Config::parse_from(["conclave"]).plugin
    }

    #[test]
    fn empty_is_the_defaults_with_no_keys() {
        let m = Manifest::parse("", &ceilings()).unwrap();
        assert_eq!(m.limits, Limits::default());
        assert!(m.read.is_empty() && m.write.is_empty());
        assert_eq!(m.read_access(), Access::Only(vec![]));
    }

    #[test]
    fn fills_defaults_and_round_trips() {
        let m = Manifest::parse(r#"{"read":["a/"],"write":["a/"],"limits":{"fuel":5}}"#, &ceilings()).unwrap();
        assert_eq!(m.limits.fuel, 5);
        assert_eq!(m.limits.memory_bytes, Limits::default().memory_bytes);
        assert_eq!(Manifest::parse(&m.to_json(), &ceilings()).unwrap(), m);
        assert!(!m.reuse_instances, "a fresh instance per call unless asked");
        let reused = Manifest::parse(r#"{"reuse_instances":true}"#, &ceilings()).unwrap();
        assert!(reused.reuse_instances);
        assert_eq!(Manifest::parse(&reused.to_json(), &ceilings()).unwrap(), reused);
    }

    #[test]
    fn refuses_what_makes_no_sense() {
        let c = ceilings();
        for (json, says) in [
            ("{", "invalid manifest"),
            (r#"{"reed":["a/"]}"#, "unknown field `reed`"),
            (r#"{"read":"a/"}"#, "invalid type"),
            (r#"{"limits":{"fuel":0}}"#, "limits.fuel must be above 0"),
            (r#"{"limits":{"memory_bytes":1099511627776}}"#, "above this server's maximum"),
            (r#"{"limits":{"cpu":1}}"#, "unknown field `cpu`"),
            (r#"{"write":["a/","a/"]}"#, "given twice"),
            (r#"{"limits":{"stream_timeout_ms":0}}"#, "limits.stream_timeout_ms must be above 0"),
            (r#"{"limits":{"stream_timeout_ms":31536000001}}"#, "limits.stream_timeout_ms 31536000001 is above"),
        ] {
            let e = Manifest::parse(json, &c).unwrap_err();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn a_stream_may_outlive_a_unary_call() {
        let c = ceilings();
        let unset = Manifest::parse(r#"{"limits":{"timeout_ms":5000}}"#, &c).unwrap();
        assert_eq!(unset.limits.stream_timeout(), ("timeout_ms", 5000));
        let year = Manifest::parse(r#"{"limits":{"stream_timeout_ms":31536000000}}"#, &c).unwrap();
        assert_eq!(year.limits.stream_timeout(), ("stream_timeout_ms", 31_536_000_000));
        assert_eq!(Manifest::parse(&year.to_json(), &c).unwrap(), year);
        let long_unary = Manifest::parse(r#"{"limits":{"timeout_ms":31536000000}}"#, &c).unwrap_err();
        assert!(long_unary.contains("limits.timeout_ms 31536000000 is above"), "{long_unary}");
    }

    #[test]
    fn prefixes_become_etcd_spans() {
        let m = Manifest::parse(r#"{"read":[""]}"#, &ceilings()).unwrap();
        assert_eq!(m.read_access(), Access::Only(vec![KeySpan::new(b"", b"\0")]));
    }
}
