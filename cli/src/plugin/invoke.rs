//! `plugin invoke`: the payload to send, and the plugin's answers as they come.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conclave_proto::conclave::plugin::InvokeResponse;
use serde::Serialize;
use tonic::codec::Streaming;

use crate::output::{Header, OutputFormat, write_json};
use crate::rpc::status_error;

/// The argument, stdin for `-`, or nothing.
pub fn payload(arg: Option<&str>, mut stdin: impl Read) -> Result<Vec<u8>> {
    match arg {
        Some("-") => {
            let mut payload = Vec::new();
            stdin.read_to_end(&mut payload).context("reading stdin")?;
            Ok(payload)
        }
        Some(text) => Ok(text.as_bytes().to_vec()),
        None => Ok(Vec::new()),
    }
}

/// A payload is text when it can be, bytes (base64) otherwise.
#[derive(Serialize)]
struct InvokeJson<'a> {
    header: Header,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

pub fn print(response: &InvokeResponse, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    let bytes = &response.payload;
    match format {
        OutputFormat::Json => {
            let text = std::str::from_utf8(bytes).ok();
            let json = InvokeJson {
                header: response.header.as_ref().into(),
                payload: text,
                payload_base64: text.is_none().then(|| STANDARD.encode(bytes)),
            };
            write_json(out, &json)?;
        }
        _ => {
            out.write_all(bytes)?;
            if !bytes.ends_with(b"\n") {
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

/// Each message on its own line the moment it arrives. Ctrl-C keeps its default action (the
/// process ends without a word); a closed stdout ends the stream through main's broken-pipe rule.
pub async fn print_stream(mut messages: Streaming<InvokeResponse>, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    while let Some(message) = messages.message().await.map_err(status_error)? {
        print(&message, format, out)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(payload: &[u8], format: OutputFormat) -> String {
        let mut out = Vec::new();
        print(&InvokeResponse { header: None, payload: payload.to_vec() }, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn payload_from_argument_stdin_or_nothing() {
        assert_eq!(payload(Some("hi"), &b"unused"[..]).unwrap(), b"hi");
        assert_eq!(payload(Some("-"), &b"from stdin"[..]).unwrap(), b"from stdin");
        assert_eq!(payload(None, &b"unused"[..]).unwrap(), b"");
    }

    #[test]
    fn simple_is_the_raw_payload_ending_in_one_newline() {
        assert_eq!(printed(b"42", OutputFormat::Simple), "42\n");
        assert_eq!(printed(b"a\nb\n", OutputFormat::Simple), "a\nb\n");
    }

    #[test]
    fn json_payload_is_text_or_base64() {
        let header = r#"{"header":{"cluster_id":0,"member_id":0,"revision":0,"raft_term":0},"#;
        assert_eq!(printed(b"{\"n\":1}", OutputFormat::Json), format!("{header}\"payload\":\"{{\\\"n\\\":1}}\"}}\n"));
        assert_eq!(printed(&[0xff, 0x00], OutputFormat::Json), format!("{header}\"payload_base64\":\"/wA=\"}}\n"));
    }
}
