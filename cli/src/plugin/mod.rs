//! `conclavectl plugin …`: deploy, list, get, remove and invoke plugins over the Plugin
//! service, and scaffold new ones.

mod deploy;
mod invoke;
mod new;
mod show;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use conclave_proto::conclave::plugin::plugin_client::PluginClient;
use conclave_proto::conclave::plugin::{GetRequest, InvokeRequest, ListRequest, RemoveRequest};
use tonic::transport::Channel;

use crate::connect::connect;
use crate::global::GlobalArgs;
use crate::output::refuse_table;
use crate::rpc::{block_on, status_error, unary};

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Install or replace a plugin on the cluster.
    Deploy {
        name: String,
        /// The plugin's WebAssembly component.
        wasm: PathBuf,
        /// The plugin's manifest (JSON); without it the defaults apply (no keys granted).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// List the plugins the cluster serves.
    List,
    /// Show one plugin: version, hash, size, methods and manifest.
    Get { name: String },
    /// Remove a deployed plugin.
    Remove { name: String },
    /// Call a plugin method.
    Invoke {
        name: String,
        method: String,
        /// The request payload; `-` reads it from stdin, none sends an empty one.
        payload: Option<String>,
        /// Call a streaming method and print each message as it arrives.
        #[arg(long)]
        stream: bool,
    },
    /// Create a plugin crate from the guest SDK's template.
    New(new::NewArgs),
}

/// Local work (files, payload, format checks) comes before dialing, so a mistake fails fast.
pub fn run(command: PluginCommand, global: &GlobalArgs, out: &mut impl Write) -> Result<()> {
    let format = global.write_out;
    let timeout = global.command_timeout;
    match command {
        PluginCommand::Deploy { name, wasm, manifest } => {
            let request = deploy::request(name, &wasm, manifest.as_deref())?;
            let response = block_on(async { unary(timeout, client(global).await?.deploy(request)).await })?;
            deploy::print(&response, format, out)
        }
        PluginCommand::List => {
            let response = block_on(async { unary(timeout, client(global).await?.list(ListRequest {})).await })?;
            show::list(&response, format, out)
        }
        PluginCommand::Get { name } => {
            let response = block_on(async { unary(timeout, client(global).await?.get(GetRequest { name })).await })?;
            show::get(&response, format, out)
        }
        PluginCommand::Remove { name } => {
            refuse_table(format)?;
            let request = RemoveRequest { name: name.clone() };
            let response = block_on(async { unary(timeout, client(global).await?.remove(request)).await })?;
            show::removed(&name, &response, format, out)
        }
        PluginCommand::Invoke { name, method, payload, stream } => {
            refuse_table(format)?;
            let payload = invoke::payload(payload.as_deref(), std::io::stdin().lock())?;
            let request = InvokeRequest { plugin: name, method, payload };
            if stream {
                // Like etcdctl watch, a stream has no command timeout: it lasts as long as the plugin sends.
                block_on(async {
                    let messages = client(global).await?.invoke_stream(request).await.map_err(status_error)?;
                    invoke::print_stream(messages.into_inner(), format, out).await
                })
            } else {
                let response = block_on(async { unary(timeout, client(global).await?.invoke(request)).await })?;
                invoke::print(&response, format, out)
            }
        }
        PluginCommand::New(args) => new::run(&args, out),
    }
}

async fn client(global: &GlobalArgs) -> Result<PluginClient<Channel>> {
    Ok(PluginClient::new(connect(&global.dial()?).await?))
}
