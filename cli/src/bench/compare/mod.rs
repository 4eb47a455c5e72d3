//! `conclavectl bench compare`: Conclave against etcd on this machine, in one run. For each
//! `--members` setting it starts a fresh cluster of each system with the same flags, then runs
//! every matrix row (workload × clients) against both, interleaved — each round alternates which
//! goes first — so the machine's noise falls on both. Each run is `conclavectl bench … -w json`
//! in a subprocess (any workload, extra flags passed through), with the members' CPU time
//! before and after and their memory after. Writes `results.md`, `results.json` and PNG charts.

mod chart;
mod cluster;
mod probe;
mod process;
mod results;
mod table;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use conclave_proto::etcdserverpb::RangeRequest;
use conclave_proto::etcdserverpb::kv_client::KvClient;
use serde_json::Value;

use super::BenchArgs;
use crate::connect::{Dial, connect};
use crate::global::GlobalArgs;
use cluster::{Cluster, System};
use results::{Header, Memory, Results, Run};

/// How long the fdatasync probe runs.
const PROBE_TIME: Duration = Duration::from_secs(3);
/// Connections per run: one per client, up to this many.
const MAX_CONNS: usize = 100;
/// The `--memory-keys` fill: value size, clients and connections.
const MEMORY_VALUE_BYTES: usize = 256;
const MEMORY_CLIENTS: usize = 1000;

/// `bench WORKLOAD …` runs a workload; `bench compare …` compares the two servers.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    compare: Option<Compare>,
    #[command(flatten)]
    run: Option<BenchArgs>,
}

#[derive(Subcommand, Debug)]
enum Compare {
    /// Start fresh Conclave and etcd clusters and run the same workloads against both,
    /// interleaved; write a markdown table, JSON and charts.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Cluster sizes, each with fresh clusters.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    members: Vec<usize>,
    /// Concurrent clients per run (connections: as many, up to 100).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,1000")]
    clients: Vec<usize>,
    /// Bench workloads; `range-s` is a serializable range.
    #[arg(long, value_delimiter = ',', default_value = "put,range,range-s,txn-put,lease-keepalive,lock,election")]
    workloads: Vec<String>,
    /// How long each run lasts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Runs per system and matrix row; which system goes first alternates.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The member every run loads: the leader, or a follower (which forwards writes, read indexes
    /// and lease renewals to the leader, as for most requests of clients spread over a cluster).
    #[arg(long, value_enum, default_value_t = Target::Leader)]
    target: Target,
    /// Also put this many keys of 256-byte values into each system and report its memory.
    #[arg(long, value_name = "N")]
    memory_keys: Option<u64>,
    /// The conclave server binary (default: the one next to this conclavectl).
    #[arg(long, value_name = "PATH")]
    conclave: Option<PathBuf>,
    /// The etcd server binary.
    #[arg(long, value_name = "PATH", default_value = "etcd")]
    etcd: PathBuf,
    /// Where the results go.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    out: PathBuf,
    /// Where the members' temporary data directories go, and the fdatasync probe writes
    /// (default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Flags for every bench run, after `--` (e.g. `-- --val-size 256`).
    #[arg(last = true, value_name = "BENCH_FLAGS")]
    bench_flags: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Leader,
    Follower,
}

impl Target {
    /// The bench flag that sends a run there.
    fn flag(self) -> &'static str {
        match self {
            Target::Leader => "--target-leader",
            Target::Follower => "--target-follower",
        }
    }
}

/// Run `bench WORKLOAD` or `bench compare`.
pub fn run(command: BenchCommand, global: &GlobalArgs, out: &mut impl std::io::Write) -> Result<()> {
    match (command.compare, command.run) {
        (Some(Compare::Compare(args)), _) => compare(args, out),
        (None, Some(args)) => super::run(args, global, out),
        (None, None) => bail!("a workload or `compare` is needed"),
    }
}

fn compare(args: CompareArgs, out: &mut impl std::io::Write) -> Result<()> {
    if args.members.contains(&0) || args.clients.contains(&0) || args.rounds == 0 {
        bail!("--members, --clients and --rounds must be at least 1");
    }
    if args.target == Target::Follower && args.members.contains(&1) {
        bail!("--target follower needs --members of at least 2");
    }
    if args.workloads.iter().any(|w| w == "plugin") {
        bail!("etcd has no plugins to compare with: run the plugin workload alone (conclavectl bench plugin)");
    }
    process::clean_up_on_signal();
    let conclavectl = std::env::current_exe().context("locating conclavectl")?;
    let conclave = match &args.conclave {
        Some(path) => path.clone(),
        None => conclavectl.with_file_name("conclave"),
    };
    let binaries = [(System::Conclave, conclave), (System::Etcd, args.etcd.clone())];
    let root = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let header = header(&args, &binaries, &root)?;
    eprintln!("fdatasync: {:.0}/s", header.fdatasync_per_second);

    let (mut runs, mut memory) = (Vec::new(), Vec::new());
    for &members in &args.members {
        let clusters = binaries
            .iter()
            .map(|(system, binary)| {
                Cluster::start(*system, binary, members, &root)
                    .with_context(|| format!("starting {members} {system} member(s) ({})", binary.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = args.workloads.iter().flat_map(|w| args.clients.iter().map(move |&c| (w.as_str(), c)));
        for (index, (workload, clients)) in rows.enumerate() {
            for round in 0..args.rounds {
                // Who goes first alternates by round, and by row so one round alternates too.
                let first = (index + round) % 2;
                for cluster in [&clusters[first], &clusters[1 - first]] {
                    let run = measure(&conclavectl, cluster, workload, clients, round, &args);
                    eprintln!("{}", progress(&run));
                    runs.push(run);
                }
            }
        }
        if let Some(keys) = args.memory_keys {
            for cluster in &clusters {
                let filled = fill(&conclavectl, cluster, keys);
                eprintln!("{members} member(s) {}: {} keys, {:.0} MiB", filled.system, filled.keys_stored, filled.rss_mib_after());
                memory.push(filled);
            }
        }
    }
    let results = Results::new(header, runs, memory);
    write(&results, &args.out)?;
    writeln!(out, "{}", args.out.join("results.md").display())?;
    Ok(())
}

/// The machine, the versions and the disk, before any cluster runs.
fn header(args: &CompareArgs, binaries: &[(System, PathBuf)], root: &Path) -> Result<Header> {
    let [conclave_version, etcd_version] = [&binaries[0].1, &binaries[1].1]
        .map(|binary| cluster::version(binary).with_context(|| format!("running {} --version", binary.display())));
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim());
    Ok(Header {
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        command: std::env::args().map(|arg| shell_quote(&arg)).collect::<Vec<_>>().join(" "),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model.unwrap_or("unknown").to_string(),
        conclave_version: conclave_version?,
        etcd_version: etcd_version?,
        fdatasync_per_second: probe::fdatasync_rate(root, PROBE_TIME)?,
        seconds_per_run: args.duration.as_secs_f64(),
        rounds: args.rounds,
    })
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain { arg.to_string() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

/// The bench arguments of a matrix workload.
fn workload_args(workload: &str) -> Vec<&str> {
    match workload {
        "range-s" => vec!["range", "--consistency", "s"],
        other => vec![other],
    }
}

/// One row's run against one cluster, with the members' CPU time and memory.
fn measure(conclavectl: &Path, cluster: &Cluster, workload: &str, clients: usize, round: usize, args: &CompareArgs) -> Run {
    let conns = clients.min(MAX_CONNS);
    let mut bench_args: Vec<String> = workload_args(workload).into_iter().map(String::from).collect();
    bench_args.extend(["--clients".into(), clients.to_string(), "--conns".into(), conns.to_string()]);
    bench_args.extend(["--duration".into(), humantime::format_duration(args.duration).to_string()]);
    bench_args.extend(args.bench_flags.iter().cloned());
    let pids = cluster.pids();
    let cpu = || pids.iter().map(|&pid| probe::cpu_seconds(pid)).sum::<Result<f64>>();
    let outcome = cpu().and_then(|before| {
        let report = bench(conclavectl, cluster, &bench_args, args.target)?;
        Ok((report, cpu()? - before, rss(cluster)?))
    });
    let mut run = Run {
        members: cluster.pids().len(),
        workload: workload.to_string(),
        clients,
        conns,
        round,
        system: cluster.system,
        report: None,
        error: None,
        cpu_seconds: 0.0,
        rss_kib: Vec::new(),
    };
    match outcome {
        Ok((report, cpu_seconds, rss_kib)) => (run.report, run.cpu_seconds, run.rss_kib) = (Some(report), cpu_seconds, rss_kib),
        Err(e) => run.error = Some(format!("{e:#}")),
    }
    run
}

fn rss(cluster: &Cluster) -> Result<Vec<u64>> {
    cluster.pids().into_iter().map(probe::rss_kib).collect()
}

/// `conclavectl -w json bench ARGS` against the cluster's `target` member: its report.
fn bench(conclavectl: &Path, cluster: &Cluster, bench_args: &[String], target: Target) -> Result<Value> {
    let mut command = Command::new(conclavectl);
    command.args(["-w", "json", "--endpoints", &cluster.endpoints().join(","), "bench"]).args(bench_args).arg(target.flag());
    // The flags above would clash with ETCDCTL_* variables of the caller's.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("ETCDCTL_") {
            command.env_remove(var);
        }
    }
    let out = process::output(&mut command)?;
    if !out.status.success() {
        bail!("bench {}: {}", bench_args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("bench printed {}", String::from_utf8_lossy(&out.stdout)))
}

fn progress(run: &Run) -> String {
    let outcome = match (&run.report, &run.error) {
        (Some(report), _) => format!("{:.0} req/s, {} failed", report["requests_per_second"].as_f64().unwrap_or(0.0), report["failed"]),
        (None, error) => format!("error: {}", error.as_deref().unwrap_or_default()),
    };
    format!("{} member(s) {} ×{} round {} {}: {outcome}", run.members, run.workload, run.clients, run.round + 1, run.system)
}

/// Puts `keys` distinct keys with 256-byte values and measures the memory before and after.
fn fill(conclavectl: &Path, cluster: &Cluster, keys: u64) -> Memory {
    let mut memory = Memory {
        members: cluster.pids().len(),
        system: cluster.system,
        keys,
        keys_stored: 0,
        value_bytes: MEMORY_VALUE_BYTES,
        rss_kib_before: Vec::new(),
        rss_kib_after: Vec::new(),
        error: None,
    };
    // Keys long enough to tell `keys` apart.
    let key_size = (keys.saturating_sub(1).to_string().len()).max(8);
    let bench_args: Vec<String> = [
        "put",
        "--sequential-keys",
        "--key-space-size",
        &keys.to_string(),
        "--total",
        &keys.to_string(),
        "--key-size",
        &key_size.to_string(),
        "--val-size",
        &MEMORY_VALUE_BYTES.to_string(),
        "--clients",
        &MEMORY_CLIENTS.to_string(),
        "--conns",
        &MAX_CONNS.to_string(),
    ]
    .map(String::from)
    .into();
    let outcome = (|| -> Result<()> {
        memory.rss_kib_before = rss(cluster)?;
        bench(conclavectl, cluster, &bench_args, Target::Leader)?;
        memory.rss_kib_after = rss(cluster)?;
        // Clients writing in sequence from different starts overlap: count what is there.
        memory.keys_stored = crate::rpc::block_on(count_keys(&cluster.endpoints()))?;
        Ok(())
    })();
    memory.error = outcome.err().map(|e| format!("{e:#}"));
    memory
}

/// How many keys the cluster holds.
async fn count_keys(endpoints: &[String]) -> Result<u64> {
    let dial = Dial { endpoints: endpoints.to_vec(), timeout: Duration::from_secs(2), tls: None };
    let mut kv = KvClient::new(connect(&dial).await?);
    // From the smallest key to the end of the key space.
    let all = RangeRequest { key: vec![0], range_end: vec![0], count_only: true, ..Default::default() };
    let count = kv.range(all).await.map_err(crate::rpc::status_error)?.into_inner().count;
    Ok(count.try_into()?)
}

/// results.md, results.json and the charts into `dir`.
fn write(results: &Results, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("results.md"), table::markdown(results))?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(results)? + "\n")?;
    for (m, rows) in results.by_members() {
        chart::throughput(&dir.join(format!("throughput-{m}.png")), m, &rows)?;
        chart::latency(&dir.join(format!("latency-{m}.png")), m, &rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;

    fn parse(args: &[&str]) -> BenchCommand {
        let command = BenchCommand::augment_args(clap::Command::new("bench"));
        BenchCommand::from_arg_matches(&command.try_get_matches_from(std::iter::once("bench").chain(args.iter().copied())).unwrap()).unwrap()
    }

    #[test]
    fn a_workload_or_compare_with_flags_passed_through() {
        let command = parse(&["put", "--clients", "3"]);
        assert!(command.compare.is_none());
        assert_eq!(command.run.map(|run| run.clients), Some(3));

        let Some(Compare::Compare(args)) = parse(&["compare", "--members", "3", "--clients", "1,2", "--", "--val-size", "9"]).compare else {
            panic!("not compare");
        };
        assert_eq!((args.members, args.clients, args.rounds), (vec![3], vec![1, 2], 2));
        assert_eq!(args.workloads, ["put", "range", "range-s", "txn-put", "lease-keepalive", "lock", "election"]);
        assert_eq!(args.bench_flags, ["--val-size", "9"]);
    }

    #[test]
    fn range_s_is_a_serializable_range_and_other_workloads_pass_through() {
        assert_eq!(workload_args("range-s"), ["range", "--consistency", "s"]);
        assert_eq!(workload_args("watch-latency"), ["watch-latency"]);
    }
}
