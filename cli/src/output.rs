//! `-w/--write-out`: etcdctl's output formats, and the JSON pieces every command shares.

use std::io::{self, Write};
use std::str::FromStr;

use anyhow::{Result, bail};
use conclave_proto::etcdserverpb::ResponseHeader;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Simple,
    Json,
    Table,
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "simple" => Ok(Self::Simple),
            "json" => Ok(Self::Json),
            "table" => Ok(Self::Table),
            _ => Err("unsupported output format".to_string()),
        }
    }
}

/// etcdctl refuses `-w table` for commands whose answer is not a list of rows, in these words.
pub fn refuse_table(format: OutputFormat) -> Result<()> {
    if format == OutputFormat::Table {
        bail!("table not supported as output format");
    }
    Ok(())
}

/// The response header under etcdctl's JSON field names, in its order.
#[derive(Serialize)]
pub struct Header {
    cluster_id: u64,
    member_id: u64,
    revision: i64,
    raft_term: u64,
}

impl From<Option<&ResponseHeader>> for Header {
    fn from(header: Option<&ResponseHeader>) -> Self {
        let h = header.cloned().unwrap_or_default();
        Header { cluster_id: h.cluster_id, member_id: h.member_id, revision: h.revision, raft_term: h.raft_term }
    }
}

/// One compact JSON document per line, as etcdctl writes them.
pub fn write_json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_etcdctl_names() {
        assert_eq!("simple".parse(), Ok(OutputFormat::Simple));
        assert_eq!("json".parse(), Ok(OutputFormat::Json));
        assert_eq!("table".parse(), Ok(OutputFormat::Table));
        assert_eq!("yaml".parse::<OutputFormat>(), Err("unsupported output format".to_string()));
    }

    #[test]
    fn header_uses_etcdctl_field_names() {
        let header = ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 };
        let mut out = Vec::new();
        write_json(&mut out, &Header::from(Some(&header))).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"cluster_id\":1,\"member_id\":2,\"revision\":3,\"raft_term\":4}\n");
    }
}
