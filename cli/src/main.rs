//! `conclavectl`: Conclave's command-line tool. For now, `dump-log` (like etcd's etcd-dump-logs).

mod dump_log;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "conclavectl", version, about = "A command-line tool for Conclave")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a stopped member's raft log: snapshot metadata, then every entry with its term,
    /// index, type and decoded requests.
    DumpLog {
        /// The member's data directory (its `--data-dir`).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DumpLog { data_dir } => dump_log::run(&data_dir, &mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
