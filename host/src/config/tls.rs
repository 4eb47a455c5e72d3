//! etcd 3.4's TLS flags and their `ETCD_*` variables, as the settings of each side (client port,
//! peer port). The few Conclave does not implement yet refuse to start rather than be ignored.
//! Each flag is known to clap so that its variable is read too (an unknown flag is refused by
//! clap, but an unknown variable would be silently ignored).

use std::path::PathBuf;

use clap::{ArgAction, Args};

use crate::transport::tls::TlsFiles;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Security")]
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
    /// The client port's certificate and client checks.
    pub fn client(&self) -> TlsFiles {
        files(&self.cert_file, &self.key_file, &self.trusted_ca_file, self.client_cert_auth, self.auto_tls)
    }

    /// The peer port's certificate and member checks (a member presents the same certificate
    /// when it dials the others).
    pub fn peer(&self) -> TlsFiles {
        let (cert, key, ca) = (&self.peer_cert_file, &self.peer_key_file, &self.peer_trusted_ca_file);
        files(cert, key, ca, self.peer_client_cert_auth, self.peer_auto_tls)
    }

    /// Refuse to start if a TLS setting Conclave does not implement yet is asked for, naming
    /// each flag and variable: ignoring a security setting would be worse than not starting.
    /// An empty path or a false switch asks for nothing (etcd's defaults), so it is accepted.
    pub fn refuse_unsupported(&self) -> anyhow::Result<()> {
        let asked: Vec<String> = self
            .unsupported()
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
        anyhow::bail!("not supported yet, refusing to start without it: {}", asked.join("; "))
    }

    /// The flags Conclave does not implement yet (etcd's name; its variable is `ETCD_` + the
    /// name in capitals) with what each asks for, if anything.
    fn unsupported(&self) -> [(&'static str, Option<String>); 7] {
        let path = |value: &Option<String>| value.clone();
        let switch = |on: bool| on.then(|| "true".to_string());
        [
            ("client-crl-file", path(&self.client_crl_file)),
            ("client-cert-allowed-hostname", path(&self.client_cert_allowed_hostname)),
            ("peer-cert-allowed-cn", path(&self.peer_cert_allowed_cn)),
            ("peer-cert-allowed-hostname", path(&self.peer_cert_allowed_hostname)),
            ("peer-crl-file", path(&self.peer_crl_file)),
            ("cipher-suites", path(&self.cipher_suites)),
            ("experimental-peer-skip-client-san-verification", switch(self.experimental_peer_skip_client_san_verification)),
        ]
    }
}

/// One side's settings; a given certificate wins over auto TLS, as in etcd.
fn files(cert: &Option<String>, key: &Option<String>, ca: &Option<String>, client_cert_auth: bool, auto_tls: bool) -> TlsFiles {
    TlsFiles {
        cert_file: path(cert),
        key_file: path(key),
        trusted_ca_file: path(ca),
        client_cert_auth,
        auto_tls: auto_tls && path(cert).is_none(),
    }
}

/// A path flag; empty means unset, as etcd reads it.
fn path(value: &Option<String>) -> Option<PathBuf> {
    value.as_deref().filter(|v| !v.is_empty()).map(PathBuf::from)
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
    fn every_flag_is_read_from_its_etcd_variable() {
        let command = Flags::command();
        for arg in command.get_arguments().filter(|arg| arg.get_long().is_some()) {
            let flag = arg.get_long().unwrap();
            let var = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
            assert_eq!(arg.get_env().and_then(|v| v.to_str()), Some(var.as_str()), "--{flag}");
        }
    }

    #[test]
    fn files_for_each_side_and_refusals_of_what_is_not_implemented() {
        let flags = |args: &[&str]| Flags::parse_from(std::iter::once("conclave").chain(args.iter().copied())).tls;
        assert!(!flags(&[]).client().enabled() && !flags(&[]).peer().enabled());
        assert!(!flags(&["--cert-file", "", "--auto-tls=false", "--client-cert-auth=0"]).client().enabled());
        let tls = flags(&["--cert-file", "c.pem", "--key-file", "k.pem", "--auto-tls", "--peer-auto-tls"]);
        let client = tls.client();
        assert_eq!(client.cert_file.as_deref(), Some(std::path::Path::new("c.pem")));
        assert!(!client.auto_tls, "a given certificate wins over --auto-tls, as in etcd");
        assert!(tls.peer().auto_tls && tls.peer().enabled());
        assert!(flags(&["--auto-tls=T"]).client().auto_tls);
        assert!(Flags::try_parse_from(["conclave", "--auto-tls=yes"]).is_err());
        let refused = flags(&["--cipher-suites", "x", "--peer-crl-file", "r.pem"]).refuse_unsupported().unwrap_err().to_string();
        assert!(refused.contains("--cipher-suites / ETCD_CIPHER_SUITES is \"x\""), "{refused}");
        assert!(refused.contains("--peer-crl-file / ETCD_PEER_CRL_FILE is \"r.pem\""), "{refused}");
        assert!(flags(&["--client-crl-file", ""]).refuse_unsupported().is_ok());
    }
}
