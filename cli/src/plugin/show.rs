//! How plugins are shown: `plugin list` and `plugin get`, the JSON form of a plugin that
//! deploy shares, and `plugin remove`'s answer.

use std::io::Write;

use anyhow::{Result, anyhow};
use conclave_proto::conclave::plugin::method::Kind;
use conclave_proto::conclave::plugin::{GetResponse, ListResponse, Method, PluginInfo, RemoveResponse};
use serde::Serialize;

use crate::output::{Header, OutputFormat, write_json};
use crate::table;

/// Enough of the SHA-256 to tell plugins apart in a line or a table.
const SHORT_HASH: usize = 12;

const TABLE_HEADER: [&str; 6] = ["NAME", "VERSION", "HASH", "SIZE", "SOURCE", "METHODS"];

#[derive(Serialize)]
pub struct PluginJson<'a> {
    name: &'a str,
    version: &'a str,
    hash: &'a str,
    size: u64,
    builtin: bool,
    methods: Vec<MethodJson<'a>>,
    manifest: &'a str,
}

#[derive(Serialize)]
struct MethodJson<'a> {
    name: &'a str,
    kind: &'static str,
}

impl<'a> From<&'a PluginInfo> for PluginJson<'a> {
    fn from(p: &'a PluginInfo) -> Self {
        PluginJson {
            name: &p.name,
            version: &p.version,
            hash: &p.hash,
            size: p.size,
            builtin: p.builtin,
            methods: p.methods.iter().map(|m| MethodJson { name: &m.name, kind: kind(m) }).collect(),
            manifest: &p.manifest,
        }
    }
}

#[derive(Serialize)]
struct ListJson<'a> {
    header: Header,
    plugins: Vec<PluginJson<'a>>,
}

#[derive(Serialize)]
struct GetJson<'a> {
    header: Header,
    plugin: PluginJson<'a>,
}

#[derive(Serialize)]
struct RemoveJson {
    header: Header,
}

pub fn list(response: &ListResponse, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    match format {
        OutputFormat::Simple => {
            for p in &response.plugins {
                writeln!(out, "{} {} {} {} {}", p.name, p.version, short_hash(p), p.size, source(p))?;
            }
        }
        OutputFormat::Json => write_json(
            out,
            &ListJson { header: response.header.as_ref().into(), plugins: response.plugins.iter().map(Into::into).collect() },
        )?,
        OutputFormat::Table => table(out, &response.plugins)?,
    }
    Ok(())
}

pub fn get(response: &GetResponse, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    let p = plugin(response.plugin.as_ref())?;
    match format {
        OutputFormat::Simple => {
            writeln!(out, "name: {}", p.name)?;
            writeln!(out, "version: {}", p.version)?;
            writeln!(out, "hash: {}", p.hash)?;
            writeln!(out, "size: {}", p.size)?;
            writeln!(out, "builtin: {}", p.builtin)?;
            writeln!(out, "methods: {}", methods(p))?;
            writeln!(out, "manifest:\n{}", pretty(&p.manifest))?;
        }
        OutputFormat::Json => write_json(out, &GetJson { header: response.header.as_ref().into(), plugin: p.into() })?,
        OutputFormat::Table => table(out, std::slice::from_ref(p))?,
    }
    Ok(())
}

pub fn removed(name: &str, response: &RemoveResponse, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    match format {
        OutputFormat::Json => write_json(out, &RemoveJson { header: response.header.as_ref().into() })?,
        _ => writeln!(out, "Plugin {name} removed")?,
    }
    Ok(())
}

pub fn table(out: &mut impl Write, plugins: &[PluginInfo]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let cells = [&p.name, &p.version, short_hash(p), &p.size.to_string(), source(p), &methods(p)];
            cells.map(str::to_string).to_vec()
        })
        .collect();
    table::render(out, &TABLE_HEADER, &rows)
}

/// The plugin a response must carry.
pub fn plugin(plugin: Option<&PluginInfo>) -> Result<&PluginInfo> {
    plugin.ok_or_else(|| anyhow!("the server's response has no plugin"))
}

/// `a (unary), b (streaming)`.
pub fn methods(p: &PluginInfo) -> String {
    if p.methods.is_empty() {
        return "none".to_string();
    }
    p.methods.iter().map(|m| format!("{} ({})", m.name, kind(m))).collect::<Vec<_>>().join(", ")
}

fn kind(m: &Method) -> &'static str {
    match m.kind() {
        Kind::Unary => "unary",
        Kind::Streaming => "streaming",
    }
}

fn short_hash(p: &PluginInfo) -> &str {
    p.hash.get(..SHORT_HASH).unwrap_or(&p.hash)
}

fn source(p: &PluginInfo) -> &'static str {
    if p.builtin { "builtin" } else { "deployed" }
}

/// The manifest indented for reading; shown as it came if it is not JSON.
fn pretty(manifest: &str) -> String {
    serde_json::from_str::<serde_json::Value>(manifest)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| manifest.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use conclave_proto::etcdserverpb::ResponseHeader;

    pub fn counter() -> PluginInfo {
        PluginInfo {
            name: "counter".into(),
            version: "0.2.0".into(),
            hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            size: 43210,
            methods: vec![
                Method { name: "incr".into(), kind: Kind::Unary.into() },
                Method { name: "watch".into(), kind: Kind::Streaming.into() },
            ],
            manifest: r#"{"name":"counter","keys":["counter/"]}"#.into(),
            builtin: false,
        }
    }

    fn lock() -> PluginInfo {
        PluginInfo { name: "lock".into(), version: "1.0.0".into(), hash: "abc".into(), size: 7, builtin: true, ..Default::default() }
    }

    fn listed(format: OutputFormat) -> String {
        let response = ListResponse { header: None, plugins: vec![counter(), lock()] };
        let mut out = Vec::new();
        list(&response, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn list_simple_is_a_line_per_plugin() {
        assert_eq!(listed(OutputFormat::Simple), "counter 0.2.0 9f86d081884c 43210 deployed\nlock 1.0.0 abc 7 builtin\n");
    }

    #[test]
    fn list_table() {
        assert_eq!(
            listed(OutputFormat::Table),
            "+---------+---------+--------------+-------+----------+---------------------------------+\n\
             |  NAME   | VERSION |     HASH     | SIZE  |  SOURCE  |             METHODS             |\n\
             +---------+---------+--------------+-------+----------+---------------------------------+\n\
             | counter |   0.2.0 | 9f86d081884c | 43210 | deployed | incr (unary), watch (streaming) |\n\
             |    lock |   1.0.0 |          abc |     7 |  builtin |                            none |\n\
             +---------+---------+--------------+-------+----------+---------------------------------+\n"
        );
    }

    #[test]
    fn list_json_has_the_header_and_every_field() {
        let response = ListResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            plugins: vec![lock()],
        };
        let mut out = Vec::new();
        list(&response, OutputFormat::Json, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"header\":{\"cluster_id\":1,\"member_id\":2,\"revision\":3,\"raft_term\":4},\"plugins\":[{\"name\":\"lock\",\
             \"version\":\"1.0.0\",\"hash\":\"abc\",\"size\":7,\"builtin\":true,\"methods\":[],\"manifest\":\"\"}]}\n"
        );
    }

    #[test]
    fn get_simple_shows_the_manifest_pretty() {
        let mut out = Vec::new();
        get(&GetResponse { header: None, plugin: Some(counter()) }, OutputFormat::Simple, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "name: counter\nversion: 0.2.0\nhash: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n\
             size: 43210\nbuiltin: false\nmethods: incr (unary), watch (streaming)\nmanifest:\n\
             {\n  \"keys\": [\n    \"counter/\"\n  ],\n  \"name\": \"counter\"\n}\n"
        );
    }

    #[test]
    fn get_json_keeps_method_kinds_as_words() {
        let mut out = Vec::new();
        get(&GetResponse { header: None, plugin: Some(counter()) }, OutputFormat::Json, &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(json.contains(r#""methods":[{"name":"incr","kind":"unary"},{"name":"watch","kind":"streaming"}]"#), "{json}");
    }

    #[test]
    fn a_response_without_a_plugin_is_an_error() {
        let err = get(&GetResponse::default(), OutputFormat::Simple, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "the server's response has no plugin");
    }

    #[test]
    fn removed_simple_and_json() {
        let mut out = Vec::new();
        removed("counter", &RemoveResponse::default(), OutputFormat::Simple, &mut out).unwrap();
        removed("counter", &RemoveResponse::default(), OutputFormat::Json, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Plugin counter removed\n{\"header\":{\"cluster_id\":0,\"member_id\":0,\"revision\":0,\"raft_term\":0}}\n"
        );
    }
}
