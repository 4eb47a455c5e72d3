//! `conclavectl config …`: the config plugin's versioned documents.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::global::GlobalArgs;
use crate::output::{OutputFormat, refuse_table, write_json};
use crate::recipe::{Recipe, print, text};
use crate::rpc::block_on;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Publish a document: VALUE is JSON, or text when it does not parse as JSON.
    Publish {
        name: String,
        value: String,
        /// Only if the document is still at this version (0: only if it does not exist).
        #[arg(long)]
        version: Option<i64>,
    },
    /// The current document, or the one at a version.
    Get {
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// The document's versions, newest first.
    History {
        name: String,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print every version from one on (default: the current one, then each change).
    Watch {
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
}

pub fn run(command: ConfigCommand, global: &GlobalArgs, out: &mut impl Write) -> Result<()> {
    let format = global.write_out;
    refuse_table(format)?;
    block_on(async {
        let mut config = Recipe::connect(global, "config").await?;
        match command {
            ConfigCommand::Publish { name, value, version } => {
                let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
                let published = match version {
                    Some(version) => config.call("compare-and-publish", &json!({"name": name, "value": value, "version": version})).await?,
                    None => config.call("publish", &json!({"name": name, "value": value})).await?,
                };
                print(out, format, &published, || format!("Published {name} version {}", published["version"]))
            }
            ConfigCommand::Get { name, version } => {
                let got = config.call("get", &json!({"name": name, "version": version})).await?;
                print(out, format, &got, || format!("{name} version {}\n{}", got["version"], text(&got["value"])))
            }
            ConfigCommand::History { name, limit } => {
                let history = config.call("history", &json!({"name": name, "limit": limit})).await?;
                if format == OutputFormat::Json {
                    return Ok(write_json(out, &history)?);
                }
                for version in history["versions"].as_array().into_iter().flatten() {
                    writeln!(out, "{}", line(version))?;
                }
                if history["compacted"] == Value::Bool(true) {
                    writeln!(out, "(older versions are compacted)")?;
                }
                Ok(())
            }
            ConfigCommand::Watch { name, version } => {
                let mut versions = config.stream("subscribe", &json!({"name": name, "from_version": version})).await?;
                while let Some(version) = versions.next().await? {
                    print(out, format, &version, || line(&version))?;
                    out.flush()?;
                }
                Ok(())
            }
        }
    })
}

/// `VERSION VALUE`, or `VERSION (deleted)`.
fn line(version: &Value) -> String {
    match &version["value"] {
        Value::Null => format!("{} (deleted)", version["version"]),
        value => format!("{} {}", version["version"], text(value)),
    }
}
