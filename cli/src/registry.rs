//! `conclavectl registry …`: the service registry plugin (etcd's naming layout).

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::global::GlobalArgs;
use crate::output::{OutputFormat, refuse_table, write_json};
use crate::recipe::{Recipe, print, text};
use crate::rpc::block_on;

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Register an instance on a lease and keep it alive until Ctrl-C (which deregisters it).
    Register {
        service: String,
        instance: String,
        addr: String,
        /// JSON metadata stored with the address.
        #[arg(long)]
        metadata: Option<String>,
        /// The lease's TTL in seconds.
        #[arg(long, default_value_t = 10)]
        ttl: i64,
        /// Register and exit: the entry lives until its lease expires.
        #[arg(long)]
        once: bool,
    },
    /// Delete an instance's entry.
    Deregister { service: String, instance: String },
    /// The live instances of a service.
    List { service: String },
    /// Print every join and leave of a service from a revision (default: from now).
    Watch {
        service: String,
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

pub fn run(command: RegistryCommand, global: &GlobalArgs, out: &mut impl Write) -> Result<()> {
    let format = global.write_out;
    refuse_table(format)?;
    block_on(async {
        let mut registry = Recipe::connect(global, "registry").await?;
        match command {
            RegistryCommand::Register { service, instance, addr, metadata, ttl, once } => {
                let metadata: Value = match metadata {
                    Some(m) => serde_json::from_str(&m).map_err(|e| anyhow::anyhow!("--metadata is not JSON: {e}"))?,
                    None => Value::Null,
                };
                let payload = json!({"service": service, "instance": instance, "addr": addr, "metadata": metadata, "ttl": ttl});
                let registered = registry.call("register", &payload).await?;
                let Some(lease) = registered["lease"].as_i64() else { bail!("register answered without a lease: {registered}") };
                print(out, format, &registered, || format!("Registered {service}/{instance} at {addr} with lease {lease:x}"))?;
                if once {
                    return Ok(());
                }
                keep_alive(&mut registry, lease, ttl, format, out).await?;
                let left = registry.call("deregister", &json!({"service": service, "instance": instance})).await?;
                print(out, format, &left, || format!("Deregistered {service}/{instance}"))
            }
            RegistryCommand::Deregister { service, instance } => {
                let left = registry.call("deregister", &json!({"service": service, "instance": instance})).await?;
                if left["deleted"] != Value::Bool(true) {
                    bail!("{service}/{instance} is not registered");
                }
                print(out, format, &left, || format!("Deregistered {service}/{instance}"))
            }
            RegistryCommand::List { service } => {
                let listed = registry.call("list", &json!({"service": service})).await?;
                if format == OutputFormat::Json {
                    return Ok(write_json(out, &listed)?);
                }
                for entry in listed["instances"].as_array().into_iter().flatten() {
                    let mut line = format!("{} {}", text(&entry["instance"]), text(&entry["addr"]));
                    if !entry["metadata"].is_null() {
                        line = format!("{line} {}", entry["metadata"]);
                    }
                    writeln!(out, "{line}")?;
                }
                Ok(())
            }
            RegistryCommand::Watch { service, rev } => {
                let mut changes = registry.stream("watch", &json!({"service": service, "from_revision": rev})).await?;
                while let Some(change) = changes.next().await? {
                    print(out, format, &change, || {
                        let addr = change.get("addr").map(|a| format!(" {}", text(a))).unwrap_or_default();
                        format!("{} {}{addr} (revision {})", text(&change["type"]), text(&change["instance"]), change["revision"])
                    })?;
                    out.flush()?;
                }
                Ok(())
            }
        }
    })
}

/// Like `etcdctl lease keep-alive`: one line per renewal, a third of the TTL apart, until Ctrl-C.
async fn keep_alive(registry: &mut Recipe, lease: i64, ttl: i64, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    let every = Duration::from_millis((ttl.max(1) as u64 * 1000 / 3).max(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        let alive = registry.call("heartbeat", &json!({"lease": lease})).await?;
        print(out, format, &alive, || format!("lease {lease:x} keepalived with TTL({})", alive["ttl"]))?;
        out.flush()?;
    }
}
