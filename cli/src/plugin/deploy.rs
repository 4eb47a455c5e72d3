//! `plugin deploy`: the request from the files, and what the cluster answered.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use conclave_proto::conclave::plugin::{DeployRequest, DeployResponse};
use serde::Serialize;

use super::show::{self, PluginJson};
use crate::output::{Header, OutputFormat, write_json};

pub fn request(name: String, wasm: &Path, manifest: Option<&Path>) -> Result<DeployRequest> {
    let wasm = fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let manifest = match manifest {
        Some(path) => fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => String::new(),
    };
    Ok(DeployRequest { name, wasm, manifest })
}

#[derive(Serialize)]
struct DeployJson<'a> {
    header: Header,
    plugin: PluginJson<'a>,
}

pub fn print(response: &DeployResponse, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    let plugin = show::plugin(response.plugin.as_ref())?;
    match format {
        OutputFormat::Simple => writeln!(
            out,
            "Plugin {} deployed: version {}, sha256 {}, {} bytes, methods: {}",
            plugin.name,
            plugin.version,
            plugin.hash,
            plugin.size,
            show::methods(plugin)
        )?,
        OutputFormat::Json => {
            write_json(out, &DeployJson { header: response.header.as_ref().into(), plugin: plugin.into() })?
        }
        OutputFormat::Table => show::table(out, std::slice::from_ref(plugin))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::show::tests::counter;

    #[test]
    fn simple_names_version_hash_size_and_methods() {
        let mut out = Vec::new();
        print(&DeployResponse { header: None, plugin: Some(counter()) }, OutputFormat::Simple, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Plugin counter deployed: version 0.2.0, sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, \
             43210 bytes, methods: incr (unary), watch (streaming)\n"
        );
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let err = request("x".into(), Path::new("/nonexistent/x.wasm"), None).unwrap_err();
        assert_eq!(format!("{err:#}"), "reading /nonexistent/x.wasm: No such file or directory (os error 2)");
    }

    #[test]
    fn no_manifest_sends_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("p.wasm");
        fs::write(&wasm, b"\0asm").unwrap();
        let request = request("p".into(), &wasm, None).unwrap();
        assert_eq!((request.wasm.as_slice(), request.manifest.as_str()), (&b"\0asm"[..], ""));
    }
}
