//! The log's segment files: `<seq>-<first index>.wal` in hex, like etcd's WAL, each preallocated
//! so that an fdatasync after an append need not also write the file's new size.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Bytes preallocated per segment (etcd's size). A larger batch still fits: the file grows.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A segment on disk.
#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    /// The highest entry index written to it, if any: it may go once that is purged.
    pub last_index: Option<u64>,
}

/// The segments in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".wal")) else { continue };
        let seq = name
            .split('-')
            .next()
            .and_then(|seq| u64::from_str_radix(seq, 16).ok())
            .ok_or_else(|| io::Error::other(format!("unexpected file {} in the raft log", path.display())))?;
        segments.push(Segment { seq, path, last_index: None });
    }
    segments.sort_by_key(|s| s.seq);
    Ok(segments)
}

/// Creates segment `seq` whose first entry will be `first_index`, preallocated, and makes its
/// name durable in `dir`.
pub fn create(dir: &Path, seq: u64, first_index: u64, bytes: u64) -> io::Result<(Segment, File)> {
    let path = dir.join(format!("{seq:016x}-{first_index:016x}.wal"));
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    preallocate(&file, 0, bytes)?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok((Segment { seq, path, last_index: None }, file))
}

/// Cuts `file` at `end` (dropping a torn tail) and preallocates it to `bytes` again.
pub fn cut(file: &File, end: u64, bytes: u64) -> io::Result<()> {
    file.set_len(end)?;
    preallocate(file, end, bytes.saturating_sub(end))?;
    file.sync_all()
}

#[cfg(target_os = "linux")]
fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    // Keep-size off: the file's length covers the preallocated space, so appends never grow it.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as libc::off_t, len as libc::off_t) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        // File systems without fallocate get a plain length (zeros on read all the same).
        Some(libc::EOPNOTSUPP) => file.set_len(offset + len),
        _ => Err(error),
    }
}

#[cfg(not(target_os = "linux"))]
fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    file.set_len(offset + len)
}
