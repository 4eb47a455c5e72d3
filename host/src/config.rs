//! Server flags: etcd's names, defaults and `ETCD_*` environment variables, so an etcd command
//! line or environment starts Conclave unchanged.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

mod plugin;
mod tls;
pub use plugin::PluginFlags;
pub use tls::TlsFlags;

#[derive(Parser, Debug, Clone)]
#[command(name = "conclave", version, about = "An etcd-compatible coordination service")]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: "<name>.conclave").
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic, comma-separated.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379", value_delimiter = ',')]
    pub listen_client_urls: Vec<String>,

    /// Client URLs of this member advertised to the cluster, comma-separated.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,

    /// URLs to listen on for peer traffic, comma-separated.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380", value_delimiter = ',')]
    pub listen_peer_urls: Vec<String>,

    /// URLs to listen on for the metrics and health endpoints, comma-separated (besides the
    /// client URLs, which serve them too).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,

    /// Peer URLs of this member advertised to the cluster, comma-separated.
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,

    /// Initial cluster configuration, `name=peer-url,…` (default: "<name>=<initial-advertise-peer-urls>").
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state: `new` or `existing`.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,

    /// Initial cluster token, which makes cluster and member ids unique per cluster.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,

    /// Number of committed entries that triggers a snapshot (and a log purge).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Time in milliseconds of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time in milliseconds for an election to time out.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,

    /// Raise an alarm and refuse writes when the database exceeds this size (0: the 2 GiB default).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,

    /// Auto compaction: `periodic` (keep a time window of history) or `revision` (keep a number
    /// of revisions).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,

    /// Auto compaction retention: for `periodic` a duration ("1h", "30m"; a bare number is
    /// hours), for `revision` a number of revisions; 0 disables auto compaction.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// Interval of progress notifications to watchers that asked for them (e.g. "10m", "500ms").
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub experimental_watch_progress_notify_interval: std::time::Duration,

    /// Conclave only: seed a new data directory from a file written by `etcdctl snapshot save`
    /// against Conclave (the store is restored; membership starts afresh from these flags).
    #[arg(long, env = "CONCLAVE_RESTORE_SNAPSHOT")]
    pub restore_snapshot: Option<PathBuf>,

    /// Log level: debug, info, warn, error (`RUST_LOG` overrides it).
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// `zap`, or the deprecated `capnslog` (one output only, as with etcd); both write the
    /// same plain-text lines.
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap")]
    pub logger: String,

    /// Where logs go, comma-separated: `default` (stderr), `stderr`, `stdout` or file paths.
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default", value_delimiter = ',')]
    pub log_outputs: Vec<String>,

    /// Refuse membership changes that could leave the cluster without a working quorum.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub strict_reconfig_check: bool,

    /// Accepted for etcd compatibility: elections never disrupt a live leader anyway (a follower
    /// that hears from its leader refuses to vote, as with etcd's pre-vote).
    #[arg(long, env = "ETCD_PRE_VOTE", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub pre_vote: bool,

    /// Accepted for etcd compatibility: Conclave keeps one snapshot file and no WAL files.
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS", default_value_t = 5)]
    pub max_snapshots: u32,

    /// Accepted for etcd compatibility: Conclave keeps one snapshot file and no WAL files.
    #[arg(long, env = "ETCD_MAX_WALS", default_value_t = 5)]
    pub max_wals: u32,

    /// etcd's v2 API, which Conclave does not serve: only `false` is accepted.
    #[arg(long, env = "ETCD_ENABLE_V2", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub enable_v2: bool,

    #[command(flatten)]
    pub tls: TlsFlags,

    #[command(flatten)]
    pub plugin: PluginFlags,
}

/// How history is compacted automatically.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AutoCompaction {
    Off,
    /// Keep this much time of history.
    Periodic(std::time::Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// etcd's ceiling on `--election-timeout`, in milliseconds.
const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// etcd's default quota when `--quota-backend-bytes` is 0.
const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl Config {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.conclave", self.name)))
    }

    /// Where the member keeps its compiled plugins (see `plugin::compiled_cache`).
    pub fn compiled_plugins_dir(&self) -> PathBuf {
        self.data_dir().join("compiled-plugins")
    }

    /// Refuse flag combinations etcd refuses, with etcd's words.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.tls.refuse_unsupported()?;
        // An https:// listener never falls back to the clear: each needs its side's certificate
        // (a metrics URL uses the client port's, as in etcd).
        let https = |urls: &[String]| urls.iter().find(|url| url.starts_with("https://")).cloned();
        let client_tls = self.tls.client().enabled();
        for (urls, kind, has_tls) in [(&self.listen_client_urls, "client", client_tls), (&self.listen_metrics_urls, "metrics", client_tls)] {
            if let Some(url) = https(urls).filter(|_| !has_tls) {
                anyhow::bail!("TLS key/cert (--cert-file, --key-file) or --auto-tls must be provided for {kind} url {url} with HTTPS scheme");
            }
        }
        if let Some(url) = https(&self.listen_peer_urls).filter(|_| !self.tls.peer().enabled()) {
            anyhow::bail!("TLS key/cert (--peer-cert-file, --peer-key-file) or --peer-auto-tls must be provided for peer url {url} with HTTPS scheme");
        }
        self.auto_compaction()?;
        if self.enable_v2 {
            anyhow::bail!("--enable-v2: Conclave serves only etcd's v3 API");
        }
        if 5 * self.heartbeat_interval > self.election_timeout {
            anyhow::bail!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        if self.election_timeout > MAX_ELECTION_TIMEOUT_MS {
            anyhow::bail!(
                "--election-timeout[{}ms] is too long, and should be set less than {MAX_ELECTION_TIMEOUT_MS}ms",
                self.election_timeout
            );
        }
        Ok(())
    }

    /// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
    pub fn auto_compaction(&self) -> anyhow::Result<AutoCompaction> {
        let retention = self.auto_compaction_retention.trim();
        let invalid = || anyhow::anyhow!("invalid --auto-compaction-retention {retention:?} for mode {:?}", self.auto_compaction_mode);
        let compaction = match self.auto_compaction_mode.as_str() {
            "periodic" => match retention.parse::<u64>() {
                Ok(hours) => AutoCompaction::Periodic(std::time::Duration::from_secs(hours * 3600)),
                Err(_) => AutoCompaction::Periodic(humantime::parse_duration(retention).map_err(|_| invalid())?),
            },
            "revision" => AutoCompaction::Revision(retention.parse().map_err(|_| invalid())?),
            other => anyhow::bail!("unknown auto-compaction-mode {other:?}"),
        };
        Ok(match compaction {
            AutoCompaction::Periodic(d) if d.is_zero() => AutoCompaction::Off,
            AutoCompaction::Revision(0) => AutoCompaction::Off,
            on => on,
        })
    }

    pub fn quota_bytes(&self) -> u64 {
        if self.quota_backend_bytes == 0 { DEFAULT_QUOTA_BYTES } else { self.quota_backend_bytes }
    }

    /// The initial cluster as (name, peer URL) pairs, in the order given.
    pub fn initial_members(&self) -> anyhow::Result<Vec<(String, String)>> {
        let spec = match &self.initial_cluster {
            Some(spec) => spec.clone(),
            None => self
                .initial_advertise_peer_urls
                .iter()
                .map(|url| format!("{}={}", self.name, url))
                .collect::<Vec<_>>()
                .join(","),
        };
        spec.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| match part.split_once('=') {
                Some((name, url)) => Ok((name.trim().to_string(), url.trim().to_string())),
                None => anyhow::bail!("--initial-cluster: expected name=url, got {part:?}"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_etcd() {
        let config = Config::parse_from(["conclave"]);
        assert_eq!(config.data_dir(), PathBuf::from("default.conclave"));
        assert_eq!(config.listen_client_urls, vec!["http://localhost:2379"]);
        assert_eq!(config.max_txn_ops, 128);
        assert_eq!(config.max_request_bytes, 1_572_864);
        assert_eq!(
            config.initial_members().unwrap(),
            vec![("default".to_string(), "http://localhost:2380".to_string())]
        );
    }

    #[test]
    fn election_timeout_is_checked_as_etcd_does() {
        let config = |hb: &str, et: &str| Config::parse_from(["conclave", "--heartbeat-interval", hb, "--election-timeout", et]);
        assert!(config("100", "1000").validate().is_ok());
        assert!(config("100", "500").validate().is_ok());
        let short = config("100", "400").validate().unwrap_err().to_string();
        assert_eq!(short, "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]");
        assert!(config("100", "60000").validate().unwrap_err().to_string().contains("too long"));
    }

    #[test]
    fn auto_compaction_flags_read_as_etcd_reads_them() {
        let config = |mode: &str, retention: &str| {
            Config::parse_from(["conclave", "--auto-compaction-mode", mode, "--auto-compaction-retention", retention])
                .auto_compaction()
        };
        let hours = |h: u64| AutoCompaction::Periodic(std::time::Duration::from_secs(h * 3600));
        assert_eq!(Config::parse_from(["conclave"]).auto_compaction().unwrap(), AutoCompaction::Off);
        assert_eq!(config("periodic", "1").unwrap(), hours(1));
        assert_eq!(config("periodic", "72h").unwrap(), hours(72));
        assert_eq!(config("periodic", "30m").unwrap(), AutoCompaction::Periodic(std::time::Duration::from_secs(1800)));
        assert_eq!(config("revision", "1000").unwrap(), AutoCompaction::Revision(1000));
        assert_eq!(config("revision", "0").unwrap(), AutoCompaction::Off);
        assert!(config("revision", "1h").is_err());
        assert_eq!(config("weekly", "1").unwrap_err().to_string(), "unknown auto-compaction-mode \"weekly\"");
    }

    #[test]
    fn boolean_flags_take_etcds_forms() {
        assert!(Config::parse_from(["conclave"]).strict_reconfig_check);
        assert!(!Config::parse_from(["conclave", "--strict-reconfig-check=false"]).strict_reconfig_check);
        assert!(Config::parse_from(["conclave", "--pre-vote"]).pre_vote);
        assert!(Config::parse_from(["conclave", "--enable-v2=false", "--max-wals", "3"]).validate().is_ok());
        assert!(Config::parse_from(["conclave", "--enable-v2"]).validate().is_err());
    }

    #[test]
    fn lists_split_on_commas() {
        let config = Config::parse_from([
            "conclave",
            "--listen-client-urls",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--initial-cluster",
            "a=http://x:1,b=http://y:2",
        ]);
        assert_eq!(config.listen_client_urls.len(), 2);
        assert_eq!(config.initial_members().unwrap().len(), 2);
    }
}
