//! The plugin runtime's flags: whether this member takes deploys, the ceilings a manifest may ask
//! for, and the size of the pool instances come from. (Conclave's own; etcd has no plugins.)

use std::time::Duration;

use clap::{ArgAction, Args};

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Plugins")]
pub struct PluginFlags {
    /// Take plugin deploys and removals on this member (built-in plugins load either way).
    #[arg(long, env = "CONCLAVE_PLUGIN_DEPLOY", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub plugin_deploy: bool,

    /// Largest plugin (wasm bytes) a deploy may carry.
    #[arg(long, env = "CONCLAVE_PLUGIN_MAX_WASM_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub plugin_max_wasm_bytes: usize,

    /// Most fuel (roughly, WebAssembly instructions) a manifest may allow one call.
    #[arg(long, env = "CONCLAVE_PLUGIN_MAX_FUEL", default_value_t = 100_000_000_000)]
    pub plugin_max_fuel: u64,

    /// Most linear memory a manifest may allow one instance, in bytes.
    #[arg(long, env = "CONCLAVE_PLUGIN_MAX_MEMORY_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub plugin_max_memory_bytes: u64,

    /// Longest wall-clock time a manifest may allow one call (waits included).
    #[arg(long, env = "CONCLAVE_PLUGIN_MAX_CALL_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub plugin_max_call_timeout: Duration,

    /// Longest wall-clock time a manifest may allow one streaming call (a watch that follows
    /// changes lives as long as its caller).
    #[arg(long, env = "CONCLAVE_PLUGIN_MAX_STREAM_TIMEOUT", default_value = "365days", value_parser = humantime::parse_duration)]
    pub plugin_max_stream_timeout: Duration,

    /// Most concurrent calls a manifest may allow one plugin.
    #[arg(long, env = "CONCLAVE_PLUGIN_MAX_CONCURRENT_CALLS", default_value_t = 20_000)]
    pub plugin_max_concurrent_calls: u32,

    /// Largest payload a manifest may allow into or out of one call, in bytes.
    #[arg(long, env = "CONCLAVE_PLUGIN_MAX_PAYLOAD_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub plugin_max_payload_bytes: u64,

    /// Instances the runtime keeps room for at once, over all plugins: each running (or
    /// waiting) call holds one. Reserves address space, not memory.
    #[arg(long, env = "CONCLAVE_PLUGIN_INSTANCES", default_value_t = 12_000)]
    pub plugin_instances: u32,
}
