//! Where the server's logs go and how they look, from etcd's `--logger`, `--log-outputs` and
//! `--log-level` (`RUST_LOG` overrides the level). Each output gets colour only if it is a
//! terminal, so log files and pipes carry plain text.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;

use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;

/// One of `--log-outputs`.
#[derive(Debug, PartialEq)]
enum Output {
    Stderr,
    Stdout,
    /// Appended to, created if missing.
    File(PathBuf),
}

/// Install the global logger `config` asks for, or say why it cannot be.
pub fn init(config: &Config) -> anyhow::Result<()> {
    let outputs = outputs(&config.logger, &config.log_outputs)?;
    let level = level(&config.log_level)?;
    let layers = outputs.iter().map(layer).collect::<anyhow::Result<Vec<_>>>()?;
    tracing_subscriber::registry().with(filter(level)).with(layers).init();
    if config.logger == "capnslog" {
        tracing::warn!("Deprecated '--logger=capnslog' flag is set; use '--logger=zap' flag instead");
    }
    Ok(())
}

/// `--log-outputs` read as etcd 3.4 reads it for `logger`: `zap` takes any list of `default`
/// (stderr here: there is no journald), `stderr`, `stdout` and file paths; the deprecated
/// `capnslog` takes exactly one of the first three.
fn outputs(logger: &str, names: &[String]) -> anyhow::Result<Vec<Output>> {
    let read = |name: &String| match name.as_str() {
        "default" | "stderr" => Output::Stderr,
        "stdout" => Output::Stdout,
        path => Output::File(PathBuf::from(path)),
    };
    match logger {
        "zap" => Ok(names.iter().map(read).collect()),
        "capnslog" => match names {
            [name] => match read(name) {
                Output::File(_) => anyhow::bail!("unknown log-output {name:?} (only supports \"default\", \"stderr\", \"stdout\")"),
                output => Ok(vec![output]),
            },
            _ => anyhow::bail!("--logger=capnslog supports only 1 value in '--log-outputs', got {names:?}"),
        },
        other => anyhow::bail!("unknown logger option {other:?}"),
    }
}

/// `--log-level` as a `tracing` level: etcd's (zap's) names, whose panic and fatal levels log
/// only what is worse than errors, which here is errors.
fn level(name: &str) -> anyhow::Result<&'static str> {
    Ok(match name {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" | "dpanic" | "panic" | "fatal" => "error",
        other => anyhow::bail!("unknown level {other:?} (--log-level supports debug, info, warn, error, panic, or fatal)"),
    })
}

fn layer<S>(output: &Output) -> anyhow::Result<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let format = tracing_subscriber::fmt::layer();
    Ok(match output {
        Output::Stderr => format.with_ansi(io::stderr().is_terminal()).with_writer(io::stderr).boxed(),
        Output::Stdout => format.with_ansi(io::stdout().is_terminal()).with_writer(io::stdout).boxed(),
        Output::File(path) => {
            let file: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("--log-outputs: opening {}: {e}", path.display()))?;
            format.with_ansi(file.is_terminal()).with_writer(Arc::new(file)).boxed()
        }
    })
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // openraft logs every failed retry to an unreachable peer (several lines each 500 ms);
        // the peer network logs when a peer goes and comes back instead.
        EnvFilter::new(format!(
            "{level},openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn zap_takes_streams_and_files() {
        let read = outputs("zap", &names(&["default", "stdout", "/var/log/conclave.log"])).unwrap();
        assert_eq!(read, [Output::Stderr, Output::Stdout, Output::File("/var/log/conclave.log".into())]);
    }

    #[test]
    fn levels_are_etcds() {
        assert_eq!(level("warn").unwrap(), "warn");
        assert_eq!(level("fatal").unwrap(), "error");
        assert!(level("WARN").unwrap_err().to_string().starts_with("unknown level \"WARN\""));
    }

    #[test]
    fn capnslog_takes_one_stream_as_etcd_does() {
        assert_eq!(outputs("capnslog", &names(&["stdout"])).unwrap(), [Output::Stdout]);
        let file = outputs("capnslog", &names(&["x.log"])).unwrap_err().to_string();
        assert_eq!(file, "unknown log-output \"x.log\" (only supports \"default\", \"stderr\", \"stdout\")");
        assert!(outputs("capnslog", &names(&["stderr", "stdout"])).is_err());
        assert_eq!(outputs("glog", &names(&["stderr"])).unwrap_err().to_string(), "unknown logger option \"glog\"");
    }
}
