//! Writing a snapshot out of the request path's way. A snapshot is the whole store, tens of
//! megabytes, built by every member at about the same applied index. Written at once and synced
//! at the end, its dirty pages reached the disk in one burst, and the raft log's syncs meanwhile
//! waited behind it (100–300 ms on this project's disk, stalling writes on every member); its
//! encoding also took the CPU the request path needed.
//!
//! So the export runs on a thread of its own at a lower CPU priority, and the file is handed to
//! the disk as it grows, a chunk at a time, each one written out before the next is started: the
//! log's syncs wait for one chunk at most, and the final sync finds little left.

use std::fs::File;
use std::io::{self, Write};

/// Bytes handed to the disk at a time.
const CHUNK: u64 = 1 << 20;

/// The nice value of the thread that exports a snapshot (0 is the member's own).
const NICE: libc::c_int = 10;

/// Runs `export` on a thread of its own at a lower CPU priority, and returns what it returns.
/// A thread per snapshot (one per `--snapshot-count` requests): lowering a pooled thread's
/// priority could not be undone without privileges.
pub async fn at_low_priority<T: Send + 'static>(export: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("snapshot".into()).spawn(move || {
        lower_priority();
        let _ = done.send(export());
    })?;
    result.await.map_err(|_| io::Error::other("the snapshot thread stopped"))?
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux the nice value is a thread's own: this thread's id as the "process".
    let tid = unsafe { libc::gettid() } as libc::id_t;
    // Never raised: a member run at a lower priority still is.
    let nice = NICE.max(unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) });
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        tracing::debug!("lowering the snapshot thread's priority: {}", io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// A file written front to back, handed to the disk a [`CHUNK`] at a time.
pub struct Trickle {
    file: File,
    written: u64,
    /// Where the chunk being written out begins, and where it ends (the next one begins).
    started: u64,
    handed: u64,
}

impl Trickle {
    pub fn new(file: File) -> Self {
        Trickle { file, written: 0, started: 0, handed: 0 }
    }

    /// The file, all of it written (not yet synced).
    pub fn into_file(self) -> File {
        self.file
    }

    /// Waits for the chunk being written out, then starts the next.
    fn hand_over(&mut self) -> io::Result<()> {
        write_out(&self.file, self.started, self.handed - self.started, true)?;
        write_out(&self.file, self.handed, self.written - self.handed, false)?;
        (self.started, self.handed) = (self.handed, self.written);
        Ok(())
    }
}

impl Write for Trickle {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.written += n as u64;
        if self.written - self.handed >= CHUNK {
            self.hand_over()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Starts writing `len` bytes of `file` from `offset` to the disk; with `wait`, waits until they
/// are written instead. Not durable (no metadata, no disk cache flush): the final sync is.
#[cfg(target_os = "linux")]
fn write_out(file: &File, offset: u64, len: u64, wait: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset as libc::off64_t, len as libc::off64_t, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn write_out(_file: &File, _offset: u64, _len: u64, _wait: bool) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek};

    use super::*;

    #[test]
    fn a_trickled_file_holds_everything_written_in_order() {
        let mut trickle = Trickle::new(tempfile::tempfile().unwrap());
        let block: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        for _ in 0..25 {
            trickle.write_all(&block).unwrap();
        }
        assert!(trickle.handed >= 2 * CHUNK, "chunks were handed over as the file grew");
        let mut file = trickle.into_file();
        file.rewind().unwrap();
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read.len(), 2_500_000);
        assert!(read.chunks(block.len()).all(|chunk| chunk == block));
    }

    #[tokio::test]
    async fn the_export_runs_on_its_own_thread_at_a_lower_priority() {
        let (name, nice) = at_low_priority(|| {
            let name = std::thread::current().name().map(str::to_string);
            Ok((name, unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }))
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("snapshot"));
        assert!(nice >= NICE, "nice {nice}");
        let failed = at_low_priority(|| -> io::Result<()> { Err(io::Error::other("disk gone")) }).await;
        assert_eq!(failed.unwrap_err().to_string(), "disk gone");
    }
}
