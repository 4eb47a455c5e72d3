//! `conclavectl`: Conclave's command-line tool, with etcdctl's global flags: `plugin` to deploy
//! and call plugins, `registry` and `config` for those recipes, and `dump-log` (like etcd's
//! etcd-dump-logs).

mod bench;
mod config;
mod connect;
mod dump_log;
mod elect;
mod global;
mod lock;
mod output;
mod plugin;
mod recipe;
mod registry;
mod rpc;
mod session;
mod table;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use global::GlobalArgs;
use config::ConfigCommand;
use plugin::PluginCommand;
use registry::RegistryCommand;

#[derive(Parser, Debug)]
#[command(name = "conclavectl", version, about = "A command-line tool for Conclave")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Print a stopped member's raft log: snapshot metadata, then every entry with its term,
    /// index, type and decoded requests.
    DumpLog {
        /// The member's data directory (its `--data-dir`).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Deploy, list, inspect, remove, call and scaffold plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Take a named lock (etcd's v3lock), then run a command while holding it and exit with its
    /// status, or print the key and hold it until Ctrl-C.
    Lock(lock::LockArgs),
    /// Campaign in a named election (etcd's v3election) and hold the leadership until Ctrl-C,
    /// printing the leader key and proposal once elected; or, with --listen, print each leader
    /// proposal as it changes.
    Elect(elect::ElectArgs),
    /// Register, discover and watch service instances (etcd's naming layout).
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Publish, read and follow versioned config documents.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Load the cluster with etcd API requests (so it measures etcd too) and report requests/s
    /// and latency percentiles; or, with `compare`, run the same workloads against fresh
    /// Conclave and etcd clusters.
    Bench(bench::compare::BenchCommand),
}

fn main() -> ExitCode {
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(Failure::Usage(e)) => return usage(e),
        Err(Failure::Run(e)) => return fail(&e),
    };
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::DumpLog { data_dir } => dump_log::run(&data_dir, &mut out).map(|()| ExitCode::SUCCESS),
        Command::Plugin(command) => plugin::run(command, &cli.global, &mut out).map(|()| ExitCode::SUCCESS),
        Command::Registry(command) => registry::run(command, &cli.global, &mut out).map(|()| ExitCode::SUCCESS),
        Command::Config(command) => config::run(command, &cli.global, &mut out).map(|()| ExitCode::SUCCESS),
        Command::Bench(command) => bench::compare::run(command, &cli.global, &mut out).map(|()| ExitCode::SUCCESS),
        Command::Lock(args) => lock::run(args, &cli.global, &mut out),
        Command::Elect(args) => elect::run(args, &cli.global, &mut out).map(|()| ExitCode::SUCCESS),
    };
    match result.and_then(|code| Ok(out.flush().map(|()| code)?)) {
        Ok(code) => code,
        // A reader that went away (`| head`) has all it wanted.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

enum Failure {
    Usage(clap::Error),
    Run(anyhow::Error),
}

fn parse(args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>) -> Result<Cli, Failure> {
    let matches = Cli::command().try_get_matches_from(args).map_err(Failure::Usage)?;
    global::refuse_shadowed_env(&matches, |var| std::env::var_os(var).is_some()).map_err(Failure::Run)?;
    Cli::from_arg_matches(&matches).map_err(Failure::Usage)
}

/// Help and version as clap writes them; a usage mistake as one `Error:` line like the rest.
fn usage(e: clap::Error) -> ExitCode {
    let one_line = e.use_stderr() && e.kind() != ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
    if one_line {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        eprintln!("Error: {}", first.strip_prefix("error: ").unwrap_or(first));
    } else {
        let _ = e.print();
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("Error: {e:#}");
    ExitCode::FAILURE
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use output::OutputFormat;

    /// Parsing blind to the ETCDCTL_* variables of whoever runs the tests.
    fn try_cli(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut command = Cli::command();
        for id in ["endpoints", "dial_timeout", "command_timeout", "write_out"] {
            command = command.mut_arg(id, |arg| arg.env(None));
        }
        Cli::from_arg_matches(&command.try_get_matches_from(std::iter::once("conclavectl").chain(args.iter().copied()))?)
    }

    fn cli(args: &[&str]) -> Cli {
        try_cli(args).unwrap()
    }

    #[test]
    fn global_defaults_are_etcdctls() {
        let cli = cli(&["plugin", "list"]);
        assert_eq!(cli.global.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(cli.global.dial_timeout, Duration::from_secs(2));
        assert_eq!(cli.global.command_timeout, Duration::from_secs(5));
        assert_eq!(cli.global.write_out, OutputFormat::Simple);
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let before = cli(&["--endpoints", "a:1,http://b:2", "--dial-timeout", "500ms", "-w", "json", "plugin", "list"]);
        let after = cli(&["plugin", "list", "--endpoints=a:1,http://b:2", "--dial-timeout=500ms", "--write-out=json"]);
        for cli in [before, after] {
            assert_eq!(cli.global.endpoints, ["a:1", "http://b:2"]);
            assert_eq!(cli.global.dial_timeout, Duration::from_millis(500));
            assert_eq!(cli.global.write_out, OutputFormat::Json);
        }
        assert_eq!(cli(&["--command-timeout", "1m30s", "plugin", "list"]).global.command_timeout, Duration::from_secs(90));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [["-w", "yaml"], ["--dial-timeout", "soon"]] {
            assert!(try_cli(&[args[0], args[1], "plugin", "list"]).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn plugin_subcommands_parse() {
        let Command::Plugin(PluginCommand::Invoke { name, method, payload, stream }) =
            cli(&["plugin", "invoke", "counter", "watch", "-", "--stream"]).command
        else {
            panic!("not invoke");
        };
        assert_eq!((name.as_str(), method.as_str(), payload.as_deref(), stream), ("counter", "watch", Some("-"), true));

        let Command::Plugin(PluginCommand::Deploy { name, wasm, manifest }) =
            cli(&["plugin", "deploy", "counter", "c.wasm", "--manifest", "m.json"]).command
        else {
            panic!("not deploy");
        };
        assert_eq!((name.as_str(), wasm, manifest), ("counter", "c.wasm".into(), Some("m.json".into())));
    }

    #[test]
    fn a_flag_and_its_variable_together_are_refused() {
        let matches = Cli::command().try_get_matches_from(["conclavectl", "plugin", "list", "--endpoints", "a:1"]).unwrap();
        let err = global::refuse_shadowed_env(&matches, |var| var == "ETCDCTL_ENDPOINTS").unwrap_err();
        assert!(err.to_string().starts_with("conflicting environment variable \"ETCDCTL_ENDPOINTS\" is shadowed"), "{err}");
        assert!(global::refuse_shadowed_env(&matches, |var| var == "ETCDCTL_WRITE_OUT").is_ok());
    }
}
