//! How the log's records are framed on disk, and how a segment's records are read back.
//!
//! A record is `length (u32 LE) | crc32 (u32 LE) | kind (u8) | payload`, where the length counts
//! the kind and payload and the checksum covers them. Segments are preallocated, so the unwritten
//! rest of a file reads as zeros: a zero length ends a segment.

use std::path::Path;

/// A raft entry (postcard-encoded `Entry`).
pub const ENTRY: u8 = 1;
/// The vote (postcard-encoded `Vote`).
pub const VOTE: u8 = 2;
/// The committed log id (postcard-encoded `Option<LogId>`).
pub const COMMITTED: u8 = 3;
/// Entries up to this log id were purged (postcard-encoded `LogId`).
pub const PURGED: u8 = 4;
/// Entries from this index on were removed (u64 LE).
pub const TRUNCATED: u8 = 5;

const HEADER: usize = 8;

/// One record framed for writing.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(HEADER + 1 + payload.len());
    let length = u32::try_from(1 + payload.len()).expect("a raft record fits in 4 GiB");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    framed.extend_from_slice(&length.to_le_bytes());
    framed.extend_from_slice(&crc.finalize().to_le_bytes());
    framed.push(kind);
    framed.extend_from_slice(payload);
    framed
}

/// A record read back: its kind and payload.
pub struct Record<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

/// The records of one segment's bytes, and where the valid ones end.
pub struct Scan<'a> {
    pub records: Vec<Record<'a>>,
    /// The offset just past the last valid record: where the next write goes.
    pub end: usize,
}

/// Reads every record in `bytes` (the contents of `path`, a segment preallocated to
/// `preallocated` bytes). A record that fails its checksum and is followed only by zeros is a
/// write torn by a crash, and the segment ends before it when `last` (the newest segment, the
/// only one written after its last sync); any other bad record is corruption, reported with the
/// file and offset.
///
/// A torn record still fits in its file: its length was written whole or not at all, and the
/// file was preallocated, so only a record that grew the file past its preallocation can be cut
/// by the file's end. One running past the end of a file no longer than its preallocation has a
/// damaged length or is in a file cut short; taken for torn, it would drop every record after it.
pub fn scan<'a>(path: &Path, bytes: &'a [u8], last: bool, preallocated: usize) -> Result<Scan<'a>, String> {
    let mut records = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if length == 0 {
            break;
        }
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        let body = bytes.get(at + HEADER..at + HEADER + length);
        match body.filter(|body| crc32fast::hash(body) == crc) {
            Some(body) => records.push(Record { kind: body[0], payload: &body[1..] }),
            None => return torn_or_corrupt(path, bytes, at, last, preallocated).map(|end| Scan { records, end }),
        }
        at += HEADER + length;
    }
    if at < bytes.len() && bytes[at..].iter().any(|&b| b != 0) {
        return torn_or_corrupt(path, bytes, at, last, preallocated).map(|end| Scan { records, end });
    }
    Ok(Scan { records, end: at })
}

fn torn_or_corrupt(path: &Path, bytes: &[u8], at: usize, last: bool, preallocated: usize) -> Result<usize, String> {
    let claimed = bytes.get(at..at + 4).map_or(0, |l| u32::from_le_bytes(l.try_into().unwrap()) as usize);
    let end = at + HEADER + claimed;
    if end > bytes.len() && bytes.len() <= preallocated {
        return Err(format!(
            "corrupt raft log {}: the record at offset {at} runs past the end of the file (a damaged length, or the file was cut short)",
            path.display()
        ));
    }
    if last && bytes[end.min(bytes.len())..].iter().all(|&b| b == 0) {
        return Ok(at);
    }
    Err(format!("corrupt raft log {}: bad record at offset {at} (checksum or length mismatch)", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[Vec<u8>], zeros: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = records.concat();
        bytes.resize(bytes.len() + zeros, 0);
        bytes
    }

    #[test]
    fn records_read_back_and_zeros_end_the_segment() {
        let bytes = segment(&[frame(ENTRY, b"one"), frame(VOTE, b"")], 100);
        let scan = scan(Path::new("s"), &bytes, false, bytes.len()).unwrap();
        let read: Vec<_> = scan.records.iter().map(|r| (r.kind, r.payload)).collect();
        assert_eq!(read, [(ENTRY, &b"one"[..]), (VOTE, &b""[..])]);
        assert_eq!(scan.end, frame(ENTRY, b"one").len() + frame(VOTE, b"").len());
    }

    #[test]
    fn a_torn_last_record_ends_the_newest_segment_only() {
        let good = frame(ENTRY, b"kept");
        let mut torn = frame(ENTRY, b"half written");
        let written = torn.len() - 4;
        torn[written..].fill(0);
        let bytes = segment(&[good.clone(), torn], 16);
        let scan = scan(Path::new("s"), &bytes, true, bytes.len()).unwrap();
        assert_eq!((scan.records.len(), scan.end), (1, good.len()));
        assert!(super::scan(Path::new("old.wal"), &bytes, false, bytes.len()).err().unwrap().contains("old.wal"));
    }

    #[test]
    fn a_last_record_cut_by_the_end_of_a_file_that_grew_past_its_preallocation_is_torn() {
        let good = frame(ENTRY, b"kept");
        let mut torn = frame(ENTRY, b"growing the file");
        torn.truncate(torn.len() - 4);
        let bytes = segment(&[good.clone(), torn], 0);
        assert_eq!(scan(Path::new("s"), &bytes, true, good.len()).unwrap().end, good.len());
    }

    #[test]
    fn a_record_running_past_the_end_of_its_preallocated_file_is_corruption() {
        // A length with a flipped high bit: taken for torn, every record after it would go.
        let mut bytes = segment(&[frame(ENTRY, b"first"), frame(ENTRY, b"second"), frame(ENTRY, b"third")], 64);
        bytes[frame(ENTRY, b"first").len() + 3] ^= 0x40;
        let error = scan(Path::new("wal/0.wal"), &bytes, true, bytes.len()).err().unwrap();
        assert!(error.contains("wal/0.wal") && error.contains("runs past the end"), "{error}");
        // A file cut short within its last record.
        let cut = &bytes[..bytes.len() - 70];
        let error = scan(Path::new("wal/0.wal"), cut, true, bytes.len()).err().unwrap();
        assert!(error.contains("cut short"), "{error}");
    }

    #[test]
    fn a_flipped_bit_before_more_records_is_corruption_even_in_the_newest_segment() {
        let mut bytes = segment(&[frame(ENTRY, b"first"), frame(ENTRY, b"second")], 16);
        bytes[10] ^= 0x40;
        let error = scan(Path::new("wal/0.wal"), &bytes, true, bytes.len()).err().unwrap();
        assert!(error.contains("wal/0.wal") && error.contains("offset 0"), "{error}");
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_followed_by_zeros_is_a_torn_write() {
        let first = frame(ENTRY, b"first");
        let mut bytes = segment(&[first.clone(), frame(ENTRY, b"second")], 16);
        let last = bytes.len() - 17;
        bytes[last] ^= 1;
        assert_eq!(scan(Path::new("s"), &bytes, true, bytes.len()).unwrap().end, first.len());
    }
}
