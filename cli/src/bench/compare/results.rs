//! The figures of a comparison: every run as measured, and per matrix row each system's means
//! over its rounds, which the table and the charts show.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::cluster::System;

/// Latency percentiles the charts draw, as the bench's report names them.
pub const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// "1 member", "3 members".
pub fn members_label(members: usize) -> String {
    format!("{members} member{}", if members == 1 { "" } else { "s" })
}

/// Where, when and how the comparison ran.
#[derive(Serialize)]
pub struct Header {
    pub date: String,
    pub command: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub conclave_version: String,
    pub etcd_version: String,
    /// 4 KiB appends, each followed by fdatasync, per second, in the data directories' file system.
    pub fdatasync_per_second: f64,
    pub seconds_per_run: f64,
    pub rounds: usize,
}

/// One bench run against one system.
#[derive(Serialize)]
pub struct Run {
    pub members: usize,
    pub workload: String,
    pub clients: usize,
    pub conns: usize,
    pub round: usize,
    pub system: System,
    /// The bench's `-w json` report, unless it failed.
    pub report: Option<Value>,
    pub error: Option<String>,
    /// Of all members together, during the run.
    pub cpu_seconds: f64,
    /// Each member's, after the run.
    pub rss_kib: Vec<u64>,
}

/// The memory a system holds after `keys` puts of distinct keys (as many as the bench's
/// clients reached: `keys_stored`).
#[derive(Serialize)]
pub struct Memory {
    pub members: usize,
    pub system: System,
    pub keys: u64,
    pub keys_stored: u64,
    pub value_bytes: usize,
    pub rss_kib_before: Vec<u64>,
    pub rss_kib_after: Vec<u64>,
    pub error: Option<String>,
}

impl Memory {
    /// The largest member's resident MiB after the puts.
    pub fn rss_mib_after(&self) -> f64 {
        largest_mib(&self.rss_kib_after)
    }

    /// The largest member's growth in MiB per million keys stored.
    pub fn mib_per_million_keys(&self) -> Option<f64> {
        let grown = self.rss_mib_after() - largest_mib(&self.rss_kib_before);
        (self.keys_stored > 0).then(|| grown * 1e6 / self.keys_stored as f64)
    }
}

fn largest_mib(kib: &[u64]) -> f64 {
    kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0
}

/// One system's figures for a matrix row: means over the rounds that ran.
#[derive(Serialize, Default)]
pub struct Figures {
    pub rounds: usize,
    /// For a watch workload, puts counted until every watcher had their events.
    pub requests_per_second: Option<f64>,
    pub latency_ms: BTreeMap<String, f64>,
    /// CPU seconds of all members per 10,000 successful requests.
    pub cpu_seconds_per_10k: Option<f64>,
    /// The largest member's resident memory after a run.
    pub rss_mib: Option<f64>,
    pub failed: u64,
    pub errors: Vec<String>,
}

impl Figures {
    fn of<'a>(runs: impl Iterator<Item = &'a Run>) -> Figures {
        let mut figures = Figures::default();
        let (mut rps, mut requests, mut cpu, mut rss) = (0.0, 0.0, 0.0, 0.0);
        let mut latency: BTreeMap<String, f64> = BTreeMap::new();
        for run in runs {
            if let Some(error) = &run.error
                && !figures.errors.contains(error)
            {
                figures.errors.push(error.clone());
            }
            let Some(report) = &run.report else { continue };
            figures.rounds += 1;
            // A watch run's puts count once their events reached every watcher.
            let delivered = report.get("delivered_requests_per_second").unwrap_or(&report["requests_per_second"]);
            rps += delivered.as_f64().unwrap_or(0.0);
            requests += report["requests"].as_f64().unwrap_or(0.0);
            figures.failed += report["failed"].as_u64().unwrap_or(0);
            cpu += run.cpu_seconds;
            rss += largest_mib(&run.rss_kib);
            // `watch` puts as fast as the server takes them, so its events' latency is the
            // backlog of whichever server took more puts than it could deliver: its row times
            // the puts. `watch-latency` puts at a fixed rate, and times the events.
            let latencies = match run.workload.as_str() {
                "watch-latency" => &report["event_latency_ms"],
                _ => &report["latency_ms"],
            };
            for (name, ms) in latencies.as_object().into_iter().flatten() {
                *latency.entry(name.clone()).or_default() += ms.as_f64().unwrap_or(0.0);
            }
        }
        if figures.rounds > 0 {
            let n = figures.rounds as f64;
            figures.requests_per_second = Some(rps / n);
            figures.rss_mib = Some(rss / n);
            figures.latency_ms = latency.into_iter().map(|(name, sum)| (name, sum / n)).collect();
            figures.cpu_seconds_per_10k = (requests > 0.0).then(|| cpu / requests * 1e4);
        }
        figures
    }

    pub fn latency(&self, percentile: &str) -> Option<f64> {
        self.latency_ms.get(percentile).copied()
    }
}

/// A matrix row: both systems' figures.
#[derive(Serialize)]
pub struct Row {
    pub members: usize,
    pub workload: String,
    pub clients: usize,
    pub conclave: Figures,
    pub etcd: Figures,
}

impl Row {
    pub fn label(&self) -> String {
        format!("{} ×{}", self.workload, self.clients)
    }
}

/// The rows of `runs`, in the order they first ran.
pub fn summarize(runs: &[Run]) -> Vec<Row> {
    let mut keys: Vec<(usize, &str, usize)> = Vec::new();
    for run in runs {
        let key = (run.members, run.workload.as_str(), run.clients);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(members, workload, clients)| {
            let of = |system| {
                Figures::of(runs.iter().filter(|r| {
                    (r.members, r.workload.as_str(), r.clients, r.system) == (members, workload, clients, system)
                }))
            };
            Row { members, workload: workload.to_string(), clients, conclave: of(System::Conclave), etcd: of(System::Etcd) }
        })
        .collect()
}

/// The most 1-client durable puts per second any server could answer on this machine: each
/// waits for its round trip over loopback and then for one fdatasync, and the client sends the
/// next only once it has the answer. The round trip is the faster system's 1-client
/// serializable range on one member (a round trip with next to no work in it); the fdatasync
/// the probe's, one at a time.
#[derive(Serialize, Debug, PartialEq)]
pub struct Ceiling {
    pub round_trip_ms: f64,
    pub fdatasync_ms: f64,
    pub puts_per_second: f64,
    /// `puts_per_second` over the fdatasync rate.
    pub per_fdatasync: f64,
}

impl Ceiling {
    /// From the `range-s` ×1 row on one member, if the matrix has it.
    fn of(summary: &[Row], fdatasync_per_second: f64) -> Option<Ceiling> {
        let row = summary.iter().find(|r| (r.members, r.workload.as_str(), r.clients) == (1, "range-s", 1))?;
        let fastest = row.conclave.requests_per_second.into_iter().chain(row.etcd.requests_per_second).fold(0.0, f64::max);
        if fastest <= 0.0 || fdatasync_per_second <= 0.0 {
            return None;
        }
        let (round_trip, fdatasync) = (1.0 / fastest, 1.0 / fdatasync_per_second);
        let puts_per_second = 1.0 / (round_trip + fdatasync);
        Some(Ceiling { round_trip_ms: round_trip * 1e3, fdatasync_ms: fdatasync * 1e3, puts_per_second, per_fdatasync: puts_per_second / fdatasync_per_second })
    }
}

/// Everything `results.json` holds.
#[derive(Serialize)]
pub struct Results {
    #[serde(flatten)]
    pub header: Header,
    pub summary: Vec<Row>,
    /// One-client put on one member, per second, over the fdatasync rate.
    pub put_1_client_per_fdatasync: Option<BTreeMap<&'static str, f64>>,
    pub put_1_client_ceiling: Option<Ceiling>,
    pub memory: Vec<Memory>,
    pub runs: Vec<Run>,
}

impl Results {
    pub fn new(header: Header, runs: Vec<Run>, memory: Vec<Memory>) -> Results {
        let summary = summarize(&runs);
        let put_1_client_per_fdatasync = summary.iter().find(|r| (r.members, r.workload.as_str(), r.clients) == (1, "put", 1)).and_then(|row| {
            let per_sync = |f: &Figures| f.requests_per_second.map(|rps| rps / header.fdatasync_per_second);
            Some(BTreeMap::from([("conclave", per_sync(&row.conclave)?), ("etcd", per_sync(&row.etcd)?)]))
        });
        let put_1_client_ceiling = Ceiling::of(&summary, header.fdatasync_per_second);
        Results { header, summary, put_1_client_per_fdatasync, put_1_client_ceiling, memory, runs }
    }

    /// The summary's rows of each members setting, in the order they ran.
    pub fn by_members(&self) -> Vec<(usize, Vec<&Row>)> {
        let mut groups: Vec<(usize, Vec<&Row>)> = Vec::new();
        for row in &self.summary {
            match groups.last_mut() {
                Some((members, rows)) if *members == row.members => rows.push(row),
                _ => groups.push((row.members, vec![row])),
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(system: System, round: usize, rps: f64, requests: u64, cpu: f64) -> Run {
        Run {
            members: 1,
            workload: "put".into(),
            clients: 1,
            conns: 1,
            round,
            system,
            report: Some(json!({"requests": requests, "failed": 1, "requests_per_second": rps, "latency_ms": {"p99": rps / 100.0}})),
            error: None,
            cpu_seconds: cpu,
            rss_kib: vec![1024, 2048],
        }
    }

    #[test]
    fn rounds_are_averaged_per_system_and_cpu_is_per_10k_requests() {
        let mut failed = run(System::Etcd, 1, 0.0, 0, 0.0);
        (failed.report, failed.error) = (None, Some("refused".into()));
        let runs = vec![
            run(System::Conclave, 0, 100.0, 1000, 0.5),
            run(System::Etcd, 0, 200.0, 2000, 1.0),
            run(System::Conclave, 1, 300.0, 3000, 1.5),
            failed,
        ];
        let header = Header {
            date: String::new(),
            command: String::new(),
            cpus: 2,
            cpu_model: String::new(),
            conclave_version: String::new(),
            etcd_version: String::new(),
            fdatasync_per_second: 400.0,
            seconds_per_run: 1.0,
            rounds: 2,
        };
        let results = Results::new(header, runs, Vec::new());
        let [row] = &results.summary[..] else { panic!("one row") };
        assert_eq!((row.conclave.rounds, row.conclave.requests_per_second, row.conclave.failed), (2, Some(200.0), 2));
        assert_eq!(row.conclave.latency("p99"), Some(2.0));
        assert_eq!(row.conclave.cpu_seconds_per_10k, Some(5.0));
        assert_eq!(row.conclave.rss_mib, Some(2.0));
        assert_eq!((row.etcd.rounds, row.etcd.errors.as_slice()), (1, &["refused".to_string()][..]));
        let ratios = results.put_1_client_per_fdatasync.unwrap();
        assert_eq!((ratios["conclave"], ratios["etcd"]), (0.5, 0.5));
        assert_eq!(results.put_1_client_ceiling, None, "no range-s ×1 row to take a round trip from");
    }

    #[test]
    fn the_1_client_put_ceiling_adds_the_fastest_round_trip_to_an_fdatasync() {
        let range = |system, rps| {
            let mut run = run(system, 0, rps, 1000, 0.5);
            run.workload = "range-s".into();
            run
        };
        // Round trips of 1 ms (Conclave) and 2 ms (etcd); fdatasync 4 ms: at most 200 puts/s.
        let summary = summarize(&[range(System::Conclave, 1000.0), range(System::Etcd, 500.0)]);
        let ceiling = Ceiling::of(&summary, 250.0).unwrap();
        assert_eq!(ceiling, Ceiling { round_trip_ms: 1.0, fdatasync_ms: 4.0, puts_per_second: 200.0, per_fdatasync: 0.8 });
        let mut three = summarize(&[range(System::Conclave, 1000.0)]);
        three[0].members = 3;
        assert_eq!(Ceiling::of(&three, 250.0), None, "only one member's round trip counts");
    }

    #[test]
    fn a_watch_run_counts_puts_until_their_events_were_delivered_and_times_the_puts() {
        let mut watch = run(System::Conclave, 0, 100.0, 1000, 0.5);
        watch.workload = "watch".into();
        watch.report.as_mut().unwrap()["delivered_requests_per_second"] = json!(40.0);
        watch.report.as_mut().unwrap()["event_latency_ms"] = json!({"p99": 700.0});
        let mut at_a_rate = run(System::Conclave, 0, 100.0, 1000, 0.5);
        at_a_rate.workload = "watch-latency".into();
        at_a_rate.report.as_mut().unwrap()["event_latency_ms"] = json!({"p99": 30.0});
        let [watch, at_a_rate] = &summarize(&[watch, at_a_rate])[..] else { panic!("two rows") };
        assert_eq!(watch.conclave.requests_per_second, Some(40.0));
        assert_eq!(watch.conclave.latency("p99"), Some(1.0), "the puts'");
        assert_eq!(at_a_rate.conclave.latency("p99"), Some(30.0), "put to event");
    }
}
