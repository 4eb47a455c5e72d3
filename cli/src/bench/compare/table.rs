//! `results.md`: how the comparison ran, then a table per members setting (throughput, p99
//! latency, CPU per 10,000 requests and memory, Conclave beside etcd) and the memory fill.

use std::fmt::Write;

use super::results::{Figures, Results, members_label};

pub fn markdown(results: &Results) -> String {
    let header = &results.header;
    let mut md = String::from("# Conclave vs etcd\n\n");
    let _ = writeln!(md, "- Machine: {} CPUs, {}", header.cpus, header.cpu_model);
    let _ = writeln!(md, "- Date: {}", header.date);
    let _ = writeln!(md, "- Versions: {}; {}", header.conclave_version, header.etcd_version);
    let _ = writeln!(md, "- Command: `{}`", header.command);
    let _ = writeln!(
        md,
        "- Runs: {}s each, {} round(s) per system and row, alternating which system goes first; figures are the rounds' means",
        header.seconds_per_run, header.rounds
    );
    let _ = write!(md, "- Disk: {:.0} fdatasync/s (4 KiB overwritten in place, then fdatasync, as a log of preallocated segments syncs)", header.fdatasync_per_second);
    if let Some(ratios) = &results.put_1_client_per_fdatasync {
        let _ = write!(md, "; 1-client put on one member per fdatasync: Conclave {:.2}, etcd {:.2}", ratios["conclave"], ratios["etcd"]);
    }
    md.push('\n');
    if let Some(ceiling) = &results.put_1_client_ceiling {
        let _ = writeln!(
            md,
            "- 1-client put ceiling on one member, for any server: a loopback round trip ({:.3} ms, the faster 1-client serializable range) plus one fdatasync ({:.3} ms) each, {:.0} puts/s: {:.2} of the fdatasync rate",
            ceiling.round_trip_ms, ceiling.fdatasync_ms, ceiling.puts_per_second, ceiling.per_fdatasync
        );
    }

    for (m, rows) in results.by_members() {
        let _ = writeln!(md, "\n## {}\n", members_label(m));
        md.push_str(
            "| workload | clients | Conclave req/s | etcd req/s | Conclave/etcd | Conclave p99 ms | etcd p99 ms \
             | Conclave CPU-s/10k | etcd CPU-s/10k | CPU Conclave/etcd | Conclave RSS MiB | etcd RSS MiB |\n",
        );
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &rows {
            let (c, e) = (&row.conclave, &row.etcd);
            let cells = [
                row.workload.clone(),
                row.clients.to_string(),
                throughput(c),
                throughput(e),
                ratio(c.requests_per_second, e.requests_per_second),
                number(c.latency("p99"), 2),
                number(e.latency("p99"), 2),
                number(c.cpu_seconds_per_10k, 3),
                number(e.cpu_seconds_per_10k, 3),
                ratio(c.cpu_seconds_per_10k, e.cpu_seconds_per_10k),
                number(c.rss_mib, 0),
                number(e.rss_mib, 0),
            ];
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        if rows.iter().any(|row| row.workload.starts_with("watch")) {
            md.push_str("\nwatch: puts per second counted until every watcher had their events (to the last event, not only the last put); p99 is a put's. watch-latency: puts at a fixed rate; p99 is an event's, from its put to its delivery.\n");
        }
        let errors: Vec<String> = rows
            .iter()
            .flat_map(|row| {
                [("Conclave", &row.conclave), ("etcd", &row.etcd)]
                    .into_iter()
                    .flat_map(move |(system, f)| f.errors.iter().map(move |e| format!("- {} ×{} {system}: {e}", row.workload, row.clients)))
            })
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(md, "\nRuns that failed:\n\n{}", errors.join("\n"));
        }
    }

    if !results.memory.is_empty() {
        md.push_str("\n## Memory after putting distinct keys\n\n");
        md.push_str("| members | system | puts | keys stored | value bytes | RSS after MiB (largest member) | growth MiB per 1M keys |\n");
        md.push_str("|---:|---|---:|---:|---:|---:|---:|\n");
        for memory in &results.memory {
            let (after, per_million) = match &memory.error {
                Some(error) => (format!("error: {error}"), "–".to_string()),
                None => (number(Some(memory.rss_mib_after()), 0), number(memory.mib_per_million_keys(), 1)),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {after} | {per_million} |",
                memory.members, memory.system, memory.keys, memory.keys_stored, memory.value_bytes
            );
        }
    }
    md
}

/// Requests per second, with the failed requests if any; `error` if no round ran.
fn throughput(figures: &Figures) -> String {
    match figures.requests_per_second {
        None => "error".into(),
        Some(rps) if figures.failed > 0 => format!("{rps:.0} ({} failed)", figures.failed),
        Some(rps) => format!("{rps:.0}"),
    }
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}
