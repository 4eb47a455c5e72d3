//! What the machine and the members cost: a process's CPU time and resident memory from /proc,
//! and the disk's fdatasync rate (the bound on a one-client put for a server that syncs each
//! commit), measured as a log of preallocated segments syncs: overwrite 4 KiB, then fdatasync.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// User plus system CPU seconds `pid` has used.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("no ')' in /proc/PID/stat")?;
    let mut fields = after_name.split_whitespace().skip(11);
    let mut next = || -> Result<u64> { Ok(fields.next().context("/proc/PID/stat too short")?.parse()?) };
    let (user, system) = (next()?, next()?);
    Ok((user + system) as f64 / clock_tick())
}

/// Ticks per second of the CPU times in /proc.
fn clock_tick() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:")).context("no VmRSS in /proc/PID/status")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// fdatasyncs per second of 4 KiB writes into a file in `dir` whose blocks are already written
/// and synced, over about `time`: the disk's best case, which a log of preallocated segments
/// (etcd's, Conclave's) approaches.
pub fn fdatasync_rate(dir: &Path, time: Duration) -> Result<f64> {
    const BLOCK: usize = 4096;
    const FILE_BYTES: usize = 16 << 20;
    let file = tempfile::tempfile_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    file.write_all_at(&vec![0u8; FILE_BYTES], 0)?;
    file.sync_all()?;
    let block = [1u8; BLOCK];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < time {
        file.write_all_at(&block, (syncs as usize * BLOCK % FILE_BYTES) as u64)?;
        file.sync_data().context("fdatasync")?;
        syncs += 1;
    }
    if syncs == 0 {
        bail!("no fdatasync finished");
    }
    Ok(syncs as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let spent = cpu_seconds(pid).unwrap();
        // Burn a little CPU so the second reading cannot be smaller.
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(pid).unwrap() >= spent);
        assert!(rss_kib(pid).unwrap() > 0);
    }

    #[test]
    fn the_probe_counts_syncs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(fdatasync_rate(dir.path(), Duration::from_millis(100)).unwrap() > 0.0);
    }
}
