//! etcd 3.4's TLS flags and their `ETCD_*` variables. Conclave has no TLS yet, so asking for any
//! of it refuses to start: serving in the clear what was asked to be secure would be worse than
//! not serving at all. Each flag is known to clap so that its variable is read too (an unknown
//! flag is refused by clap, but an unknown variable would be silently ignored).

use clap::{ArgAction, Args};

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Security (refused until TLS is supported)")]
pub struct TlsFlags {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<String>,

    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<String>,

    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub client_cert_auth: bool,

    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<String>,

    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,

    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<String>,

    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub auto_tls: bool,

    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<String>,

    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<String>,

    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub peer_client_cert_auth: bool,

    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<String>,

    /// Required CN for client certs connecting to the peer endpoint.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,

    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,

    /// Peer TLS using self-generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub peer_auto_tls: bool,

    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<String>,

    /// Comma-separated list of supported TLS cipher suites between client/server and peers.
    #[arg(long, env = "ETCD_CIPHER_SUITES")]
    pub cipher_suites: Option<String>,

    /// Skip verification of SAN field in client certificate for peer connections.
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", default_value_t = false,
          action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = go_bool)]
    pub experimental_peer_skip_client_san_verification: bool,
}

impl TlsFlags {
    /// Refuse to start if any TLS setting is asked for, naming each flag and variable. An empty
    /// path or a false switch asks for nothing (etcd's defaults), so it is accepted.
    pub fn refuse_if_asked(&self) -> anyhow::Result<()> {
        let asked: Vec<String> = self
            .settings()
            .into_iter()
            .filter_map(|(flag, value)| {
                let value = value.filter(|v| !v.is_empty())?;
                let var = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
                Some(format!("--{flag} / {var} is {value:?}"))
            })
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "TLS is not supported yet: refusing to serve in the clear what was asked to be secure ({})",
            asked.join("; ")
        )
    }

    /// Every flag (etcd's name; its variable is `ETCD_` + the name in capitals) with what it asks
    /// for, if anything.
    fn settings(&self) -> [(&'static str, Option<String>); 17] {
        let path = |value: &Option<String>| value.clone();
        let switch = |on: bool| on.then(|| "true".to_string());
        [
            ("cert-file", path(&self.cert_file)),
            ("key-file", path(&self.key_file)),
            ("client-cert-auth", switch(self.client_cert_auth)),
            ("client-crl-file", path(&self.client_crl_file)),
            ("client-cert-allowed-hostname", path(&self.client_cert_allowed_hostname)),
            ("trusted-ca-file", path(&self.trusted_ca_file)),
            ("auto-tls", switch(self.auto_tls)),
            ("peer-cert-file", path(&self.peer_cert_file)),
            ("peer-key-file", path(&self.peer_key_file)),
            ("peer-client-cert-auth", switch(self.peer_client_cert_auth)),
            ("peer-trusted-ca-file", path(&self.peer_trusted_ca_file)),
            ("peer-cert-allowed-cn", path(&self.peer_cert_allowed_cn)),
            ("peer-cert-allowed-hostname", path(&self.peer_cert_allowed_hostname)),
            ("peer-auto-tls", switch(self.peer_auto_tls)),
            ("peer-crl-file", path(&self.peer_crl_file)),
            ("cipher-suites", path(&self.cipher_suites)),
            ("experimental-peer-skip-client-san-verification", switch(self.experimental_peer_skip_client_san_verification)),
        ]
    }
}

/// A boolean as etcd (Go's `strconv.ParseBool`) reads it, so `ETCD_AUTO_TLS=0` or `=F` means
/// what it means to etcd.
fn go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid value {other:?}: parse error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        tls: TlsFlags,
    }

    #[test]
    fn every_flag_is_checked_under_its_etcd_variable() {
        let command = Flags::command();
        let args: Vec<_> = command.get_arguments().filter(|arg| arg.get_long().is_some()).collect();
        let flags = Flags::parse_from(["conclave"]).tls;
        assert_eq!(args.len(), flags.settings().len());
        for ((flag, _), arg) in flags.settings().iter().zip(&args) {
            assert_eq!(arg.get_long(), Some(*flag));
            let var = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
            assert_eq!(arg.get_env().and_then(|v| v.to_str()), Some(var.as_str()));
        }
    }

    #[test]
    fn asking_for_nothing_secure_is_accepted() {
        let flags = |args: &[&str]| Flags::parse_from(std::iter::once("conclave").chain(args.iter().copied())).tls;
        assert!(flags(&[]).refuse_if_asked().is_ok());
        assert!(flags(&["--cert-file", "", "--auto-tls=false", "--client-cert-auth=0"]).refuse_if_asked().is_ok());
        let refused = flags(&["--peer-auto-tls", "--key-file", "k.pem"]).refuse_if_asked().unwrap_err().to_string();
        assert!(refused.starts_with("TLS is not supported yet: refusing to serve in the clear"), "{refused}");
        assert!(refused.contains("--key-file / ETCD_KEY_FILE is \"k.pem\""), "{refused}");
        assert!(refused.contains("--peer-auto-tls / ETCD_PEER_AUTO_TLS is \"true\""), "{refused}");
        assert!(flags(&["--auto-tls=T"]).refuse_if_asked().is_err());
        assert!(Flags::try_parse_from(["conclave", "--auto-tls=yes"]).is_err());
    }
}
