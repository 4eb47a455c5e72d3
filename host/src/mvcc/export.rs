//! The file format of an exported store (a raft snapshot, `etcdctl snapshot save`): a magic,
//! length-prefixed key/value parts, an end marker, then a CRC-32 of every byte before it, so a
//! damaged file is refused before any of it is used.

use std::io::{self, Read, Write};

/// First bytes of an export, so a wrong file is told apart from a corrupt one.
pub(super) const MAGIC: &[u8; 16] = b"conclave-store-2";
/// Exports written by earlier builds, the same but with no checksum: still read.
const MAGIC_UNCHECKED: &[u8; 16] = b"conclave-store-1";
/// Length value that ends the entries.
const END: u64 = u64::MAX;

/// Writes an export entry by entry.
pub struct Exporter<W> {
    out: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Exporter<W> {
    pub fn start(out: W) -> io::Result<Self> {
        let mut exporter = Exporter { out, crc: crc32fast::Hasher::new() };
        exporter.write(MAGIC)?;
        Ok(exporter)
    }

    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        for part in [key, value] {
            self.write(&(part.len() as u64).to_be_bytes())?;
            self.write(part)?;
        }
        Ok(())
    }

    /// The end marker and the checksum.
    pub fn finish(mut self) -> io::Result<()> {
        self.write(&END.to_be_bytes())?;
        let crc = self.crc.finalize();
        self.out.write_all(&crc.to_be_bytes())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }
}

/// Read an export, handing each entry to `each`; fails (saying what is wrong) on a file that is
/// no export, is cut short, or whose checksum does not match. The checksum is checked last, so
/// `each` must only stage what it is given until this returns Ok.
pub fn read(input: &mut impl Read, mut each: impl FnMut(Vec<u8>, Vec<u8>)) -> Result<(), String> {
    let mut summed = Summed { input, crc: crc32fast::Hasher::new() };
    let mut magic = [0u8; MAGIC.len()];
    summed.read_exact(&mut magic).map_err(|_| "snapshot is too short".to_string())?;
    let checked = match &magic {
        MAGIC => true,
        MAGIC_UNCHECKED => false,
        _ => return Err("not a Conclave store snapshot".into()),
    };
    while let Some(key) = read_part(&mut summed)? {
        let value = read_part(&mut summed)?.ok_or("snapshot ends inside an entry")?;
        each(key, value);
    }
    if checked {
        let computed = summed.crc.finalize();
        let mut stored = [0u8; 4];
        summed.input.read_exact(&mut stored).map_err(|_| "snapshot is truncated before its checksum".to_string())?;
        if u32::from_be_bytes(stored) != computed {
            return Err("checksum mismatch: the snapshot is damaged".into());
        }
    }
    Ok(())
}

/// A reader that keeps a CRC-32 of what it has read.
struct Summed<'a, R> {
    input: &'a mut R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for Summed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// The next length-prefixed part, `None` at the end marker. The part grows as its bytes arrive,
/// so a damaged or hostile length meets the end of the input before it can make the allocation
/// it claims.
fn read_part(input: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 8];
    input.read_exact(&mut len).map_err(|_| "snapshot is truncated".to_string())?;
    let len = u64::from_be_bytes(len);
    if len == END {
        return Ok(None);
    }
    let mut part = Vec::new();
    input.by_ref().take(len).read_to_end(&mut part).map_err(|e| format!("reading a snapshot entry: {e}"))?;
    if part.len() as u64 != len {
        return Err(format!("a snapshot entry claims {len} bytes but the snapshot ends {} bytes later", part.len()));
    }
    Ok(Some(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut exporter = Exporter::start(&mut bytes).unwrap();
        for (key, value) in entries {
            exporter.entry(key, value).unwrap();
        }
        exporter.finish().unwrap();
        bytes
    }

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn entries(bytes: &[u8]) -> Result<Entries, String> {
        let mut read_back = Vec::new();
        read(&mut &bytes[..], |k, v| read_back.push((k, v)))?;
        Ok(read_back)
    }

    #[test]
    fn an_export_reads_back_and_any_flipped_bit_or_cut_is_refused() {
        let bytes = export(&[(b"a", b"1"), (b"b", b"22")]);
        assert_eq!(entries(&bytes).unwrap(), [(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"22".to_vec())]);
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(entries(&flipped).is_err(), "a flip at byte {at} went unnoticed");
        }
        for len in 0..bytes.len() {
            assert!(entries(&bytes[..len]).is_err(), "an export cut to {len} bytes was read");
        }
    }

    #[test]
    fn an_export_of_an_earlier_build_without_checksum_is_read() {
        let mut bytes = MAGIC_UNCHECKED.to_vec();
        for part in [b"k".as_slice(), b"v"] {
            bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        bytes.extend_from_slice(&END.to_be_bytes());
        assert_eq!(entries(&bytes).unwrap(), [(b"k".to_vec(), b"v".to_vec())]);
    }

    #[test]
    fn a_part_longer_than_the_input_is_refused_without_allocating_it() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(1u64 << 40).to_be_bytes());
        bytes.extend_from_slice(b"short");
        assert_eq!(entries(&bytes).unwrap_err(), "a snapshot entry claims 1099511627776 bytes but the snapshot ends 5 bytes later");
    }
}
