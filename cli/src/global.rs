//! etcdctl's global flags, each also read from its `ETCDCTL_*` environment variable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use conclave_host::transport::tls::{TlsFiles, client_config};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

use crate::connect::{Dial, any_https};
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
    /// Verify the servers' certificates with this CA bundle (turns TLS on).
    #[arg(long, global = true, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Identify to the servers with this TLS client certificate (turns TLS on).
    #[arg(long, global = true, env = "ETCDCTL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The key of --cert.
    #[arg(long, global = true, env = "ETCDCTL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Accept any server certificate (encrypted, not authenticated).
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY", default_value_t = false)]
    pub insecure_skip_tls_verify: bool,
    /// Dial in the clear unless an endpoint is https:// or a certificate is given.
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub insecure_transport: bool,
    /// Output format: simple, json or table.
    #[arg(short = 'w', long, global = true, env = "ETCDCTL_WRITE_OUT", default_value = "simple", value_name = "FORMAT")]
    pub write_out: OutputFormat,
}

/// Each flag's argument id and its variable.
const ENV: [(&str, &str); 9] = [
    ("endpoints", "ETCDCTL_ENDPOINTS"),
    ("dial_timeout", "ETCDCTL_DIAL_TIMEOUT"),
    ("command_timeout", "ETCDCTL_COMMAND_TIMEOUT"),
    ("write_out", "ETCDCTL_WRITE_OUT"),
    ("cacert", "ETCDCTL_CACERT"),
    ("cert", "ETCDCTL_CERT"),
    ("key", "ETCDCTL_KEY"),
    ("insecure_skip_tls_verify", "ETCDCTL_INSECURE_SKIP_TLS_VERIFY"),
    ("insecure_transport", "ETCDCTL_INSECURE_TRANSPORT"),
];

impl GlobalArgs {
    pub fn dial(&self) -> Result<Dial> {
        Ok(Dial { endpoints: self.endpoints.clone(), timeout: self.dial_timeout, tls: self.tls()? })
    }

    /// The TLS settings if this command dials TLS, as etcdctl decides: an https:// endpoint, a
    /// certificate, or `--insecure-transport=false`.
    fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        let wanted = any_https(&self.endpoints) || self.cacert.is_some() || self.cert.is_some() || !self.insecure_transport;
        if !wanted {
            return Ok(None);
        }
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                Some(TlsFiles { cert_file: Some(cert.clone()), key_file: Some(key.clone()), ..TlsFiles::default() })
            }
            (None, None) => None,
            _ => bail!("--cert and --key must be given together"),
        };
        let verify = !self.insecure_skip_tls_verify;
        let config = client_config(self.cacert.as_deref(), identity.as_ref(), verify).context("TLS settings")?;
        Ok(Some(config))
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
