//! etcdctl's global flags, each also read from its `ETCDCTL_*` environment variable.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use crate::connect::Dial;
use crate::output::OutputFormat;

#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// gRPC endpoints, comma-separated (host:port, with or without http://).
    #[arg(long, global = true, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379", value_name = "ENDPOINTS")]
    pub endpoints: Vec<String>,
    /// How long to wait for an endpoint to answer, e.g. 2s or 500ms.
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub dial_timeout: Duration,
    /// How long a command may run (streams excepted), e.g. 5s.
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,
    /// Output format: simple, json or table.
    #[arg(short = 'w', long, global = true, env = "ETCDCTL_WRITE_OUT", default_value = "simple", value_name = "FORMAT")]
    pub write_out: OutputFormat,
}

/// Each flag's argument id and its variable.
const ENV: [(&str, &str); 4] = [
    ("endpoints", "ETCDCTL_ENDPOINTS"),
    ("dial_timeout", "ETCDCTL_DIAL_TIMEOUT"),
    ("command_timeout", "ETCDCTL_COMMAND_TIMEOUT"),
    ("write_out", "ETCDCTL_WRITE_OUT"),
];

impl GlobalArgs {
    pub fn dial(&self) -> Dial {
        Dial { endpoints: self.endpoints.clone(), timeout: self.dial_timeout }
    }
}

/// etcdctl refuses a flag given both ways rather than silently picking one; so do we.
pub fn refuse_shadowed_env(matches: &ArgMatches, is_set: impl Fn(&str) -> bool) -> Result<()> {
    for (id, var) in ENV {
        if matches.value_source(id) == Some(ValueSource::CommandLine) && is_set(var) {
            bail!(
                "conflicting environment variable \"{var}\" is shadowed by corresponding command-line flag \
                 (either unset environment variable or disable flag)"
            );
        }
    }
    Ok(())
}
