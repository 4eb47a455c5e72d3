//! Calling a built-in recipe plugin with JSON: the shared path of `registry` and `config`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use conclave_proto::conclave::plugin::InvokeRequest;
use conclave_proto::conclave::plugin::plugin_client::PluginClient;
use serde_json::Value;
use tonic::codec::Streaming;

use crate::connect::connect;
use crate::global::GlobalArgs;
use crate::output::{OutputFormat, write_json};
use crate::rpc::{status_error, unary};

/// A connection to one recipe plugin.
pub struct Recipe {
    client: PluginClient<tonic::transport::Channel>,
    plugin: &'static str,
    timeout: Duration,
}

/// Each message of a streaming call, parsed.
pub struct Messages(Streaming<conclave_proto::conclave::plugin::InvokeResponse>);

impl Recipe {
    pub async fn connect(global: &GlobalArgs, plugin: &'static str) -> Result<Recipe> {
        let client = PluginClient::new(connect(&global.dial()?).await?);
        Ok(Recipe { client, plugin, timeout: global.command_timeout })
    }

    /// A unary call within `--command-timeout`.
    pub async fn call(&mut self, method: &str, payload: &Value) -> Result<Value> {
        let request = self.request(method, payload);
        let response = unary(self.timeout, self.client.invoke(request)).await?;
        parse(&response.payload)
    }

    /// A streaming call: like etcdctl watch, it has no command timeout.
    pub async fn stream(&mut self, method: &str, payload: &Value) -> Result<Messages> {
        let request = self.request(method, payload);
        Ok(Messages(self.client.invoke_stream(request).await.map_err(status_error)?.into_inner()))
    }

    fn request(&self, method: &str, payload: &Value) -> InvokeRequest {
        InvokeRequest { plugin: self.plugin.to_string(), method: method.to_string(), payload: payload.to_string().into_bytes() }
    }
}

impl Messages {
    pub async fn next(&mut self) -> Result<Option<Value>> {
        match self.0.message().await.map_err(status_error)? {
            Some(message) => Ok(Some(parse(&message.payload)?)),
            None => Ok(None),
        }
    }
}

fn parse(payload: &[u8]) -> Result<Value> {
    serde_json::from_slice(payload).context("the plugin answered with something other than JSON")
}

/// A JSON string as its text, anything else as compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The plugin's answer as JSON, or `simple` as a line for people.
pub fn print(out: &mut impl Write, format: OutputFormat, answer: &Value, simple: impl FnOnce() -> String) -> Result<()> {
    match format {
        OutputFormat::Json => write_json(out, answer)?,
        _ => writeln!(out, "{}", simple())?,
    }
    Ok(())
}
