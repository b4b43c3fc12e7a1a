//! The sparse `.index` and `.timeindex` files: header, entries, lookups.
//!
//! Both files start with a 24-byte header, then fixed-size big-endian
//! entries. See the crate docs for the byte layouts. The functions here are
//! pure (they work on byte slices); the segment module maps the files.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::io::FileIo;
use crate::sys::{Region, RegionWriter};

/// Index files grow in steps of this many bytes.
const INDEX_ALLOC_STEP: usize = 4096;

/// Length of the header at the start of both index files.
pub const INDEX_HEADER_LEN: usize = 24;
/// Format version written in index headers.
pub const INDEX_VERSION: u16 = 1;
/// Magic of `.index` files.
pub const OFFSET_INDEX_MAGIC: [u8; 4] = *b"SLIX";
/// Magic of `.timeindex` files.
pub const TIME_INDEX_MAGIC: [u8; 4] = *b"SLTX";
/// Bytes per `.index` entry (relative offset u32, position u32).
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Bytes per `.timeindex` entry (timestamp i64, relative offset u32).
pub const TIME_ENTRY_LEN: usize = 12;

/// Which of the two index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexKind {
    /// `.index`: relative offset -> file position.
    Offset,
    /// `.timeindex`: largest timestamp so far -> relative offset.
    Time,
}

impl IndexKind {
    pub(crate) fn magic(self) -> [u8; 4] {
        match self {
            IndexKind::Offset => OFFSET_INDEX_MAGIC,
            IndexKind::Time => TIME_INDEX_MAGIC,
        }
    }
    pub(crate) fn entry_len(self) -> usize {
        match self {
            IndexKind::Offset => OFFSET_ENTRY_LEN,
            IndexKind::Time => TIME_ENTRY_LEN,
        }
    }
}

/// Encodes the header of an index file for a segment with `base_offset`.
pub(crate) fn encode_header(kind: IndexKind, base_offset: u64) -> [u8; INDEX_HEADER_LEN] {
    let mut h = [0u8; INDEX_HEADER_LEN];
    h[0..4].copy_from_slice(&kind.magic());
    h[4..6].copy_from_slice(&INDEX_VERSION.to_be_bytes());
    h[6..8].copy_from_slice(&(kind.entry_len() as u16).to_be_bytes());
    h[8..16].copy_from_slice(&base_offset.to_be_bytes());
    // 16..20 reserved, zero.
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Checks an index header; `Err` says what is wrong.
pub(crate) fn check_header(kind: IndexKind, base_offset: u64, bytes: &[u8]) -> Result<(), String> {
    let h = bytes
        .get(..INDEX_HEADER_LEN)
        .ok_or_else(|| format!("file too short for header ({} bytes)", bytes.len()))?;
    let crc = u32::from_be_bytes([h[20], h[21], h[22], h[23]]);
    if crc32fast::hash(&h[0..20]) != crc {
        return Err("header checksum mismatch".into());
    }
    let expected = encode_header(kind, base_offset);
    if h[0..4] != expected[0..4] {
        return Err("bad magic".into());
    }
    if h[4..6] != expected[4..6] {
        return Err(format!(
            "unsupported version {}",
            u16::from_be_bytes([h[4], h[5]])
        ));
    }
    if h != expected {
        return Err("header does not match this segment (entry size or base offset)".into());
    }
    Ok(())
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}
fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// One `.index` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel: u32,
    pub pos: u32,
}

/// One `.timeindex` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel: u32,
}

/// Decodes offset entry `i` of `entries` (bytes after the header).
pub(crate) fn offset_entry(entries: &[u8], i: usize) -> Option<OffsetEntry> {
    let e = entries.get(i * OFFSET_ENTRY_LEN..(i + 1) * OFFSET_ENTRY_LEN)?;
    Some(OffsetEntry {
        rel: be_u32(&e[0..4]),
        pos: be_u32(&e[4..8]),
    })
}

/// Decodes time entry `i` of `entries` (bytes after the header).
pub(crate) fn time_entry(entries: &[u8], i: usize) -> Option<TimeEntry> {
    let e = entries.get(i * TIME_ENTRY_LEN..(i + 1) * TIME_ENTRY_LEN)?;
    Some(TimeEntry {
        timestamp: be_i64(&e[0..8]),
        rel: be_u32(&e[8..12]),
    })
}

/// Decodes the last whole time entry of `entries`, `None` when there is none.
pub(crate) fn last_time_entry(entries: &[u8]) -> Option<TimeEntry> {
    time_entry(entries, (entries.len() / TIME_ENTRY_LEN).checked_sub(1)?)
}

pub(crate) fn encode_offset_entry(e: OffsetEntry) -> [u8; OFFSET_ENTRY_LEN] {
    let mut b = [0u8; OFFSET_ENTRY_LEN];
    b[0..4].copy_from_slice(&e.rel.to_be_bytes());
    b[4..8].copy_from_slice(&e.pos.to_be_bytes());
    b
}

pub(crate) fn encode_time_entry(e: TimeEntry) -> [u8; TIME_ENTRY_LEN] {
    let mut b = [0u8; TIME_ENTRY_LEN];
    b[0..8].copy_from_slice(&e.timestamp.to_be_bytes());
    b[8..12].copy_from_slice(&e.rel.to_be_bytes());
    b
}

/// Number of leading valid `.index` entries: positions strictly increase,
/// relative offsets strictly increase, position is non-zero (an all-zero
/// entry ends the list: preallocated space) and below `log_len`.
pub(crate) fn count_offset_entries(entries: &[u8], log_len: u64) -> usize {
    let mut n = 0;
    let mut prev: Option<OffsetEntry> = None;
    while let Some(e) = offset_entry(entries, n) {
        if e.pos == 0 || u64::from(e.pos) >= log_len {
            break;
        }
        if let Some(p) = prev {
            if e.pos <= p.pos || e.rel <= p.rel {
                break;
            }
        }
        prev = Some(e);
        n += 1;
    }
    n
}

/// Number of leading valid `.timeindex` entries: relative offsets strictly
/// increase and are non-zero... except that an all-zero entry ends the list;
/// timestamps never decrease.
pub(crate) fn count_time_entries(entries: &[u8]) -> usize {
    let mut n = 0;
    let mut prev: Option<TimeEntry> = None;
    while let Some(e) = time_entry(entries, n) {
        if e.rel == 0 && e.timestamp == 0 {
            break;
        }
        if let Some(p) = prev {
            if e.rel <= p.rel || e.timestamp < p.timestamp {
                break;
            }
        }
        prev = Some(e);
        n += 1;
    }
    n
}

/// The last `.index` entry with `rel <= target` among the first `count`.
pub(crate) fn lookup_offset(entries: &[u8], count: usize, target_rel: u64) -> Option<OffsetEntry> {
    // Binary search for the number of entries with rel <= target.
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match offset_entry(entries, mid) {
            Some(e) if u64::from(e.rel) <= target_rel => lo = mid + 1,
            _ => hi = mid,
        }
    }
    if lo == 0 {
        None
    } else {
        offset_entry(entries, lo - 1)
    }
}

/// The last `.timeindex` entry with `timestamp < ts` among the first `count`:
/// every batch up to and including its relative offset has a max timestamp
/// below `ts`, so a search may start there.
pub(crate) fn lookup_time(entries: &[u8], count: usize, ts: i64) -> Option<TimeEntry> {
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match time_entry(entries, mid) {
            Some(e) if e.timestamp < ts => lo = mid + 1,
            _ => hi = mid,
        }
    }
    if lo == 0 {
        None
    } else {
        time_entry(entries, lo - 1)
    }
}

/// The writable, preallocated index file of the active segment.
#[derive(Debug)]
pub(crate) struct IndexWriter {
    pub kind: IndexKind,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub w: RegionWriter,
    pub count: usize,
    pub capacity: usize,
    /// Bytes of the file reserved with fallocate.
    reserved: u64,
}

impl IndexWriter {
    /// Creates (or resets) an index file whose mapping has room for
    /// `capacity` entries and writes `header + initial entries`. Only the
    /// used part is reserved; [`IndexWriter::push`] reserves more in small
    /// steps. The caller fsyncs.
    pub(crate) fn create(
        kind: IndexKind,
        path: &Path,
        base_offset: u64,
        capacity: usize,
        initial: &[u8],
        io: &dyn FileIo,
    ) -> io::Result<IndexWriter> {
        let file = io.open(
            path,
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )?;
        let initial_count = initial.len() / kind.entry_len();
        let capacity = capacity.max(initial_count);
        let map_len = INDEX_HEADER_LEN + capacity * kind.entry_len();
        let used = INDEX_HEADER_LEN + initial_count * kind.entry_len();
        let reserve = used.next_multiple_of(INDEX_ALLOC_STEP).min(map_len);
        io.allocate(&file, 0, reserve as u64)?;
        let (_region, mut w) = Region::map_writable(&file, map_len)?;
        w.set_writable(reserve);
        let header = encode_header(kind, base_offset);
        let mut ok = w.write(0, &header);
        ok &= w.write(
            INDEX_HEADER_LEN,
            &initial[..initial_count * kind.entry_len()],
        );
        if !ok {
            return Err(io::Error::other("index region too small"));
        }
        w.publish(used);
        Ok(IndexWriter {
            kind,
            path: path.to_path_buf(),
            file: Arc::new(file),
            w,
            count: initial_count,
            capacity,
            reserved: reserve as u64,
        })
    }

    /// The region readers use.
    pub(crate) fn region(&self) -> Arc<Region> {
        self.w.region().clone()
    }

    /// Appends one encoded entry. Returns false (and the entry is skipped:
    /// the index is sparse, lookups just scan further) when the index is full
    /// or no space can be reserved for it.
    pub(crate) fn push(&mut self, entry: &[u8], io: &dyn FileIo) -> bool {
        if self.count >= self.capacity || entry.len() != self.kind.entry_len() {
            return false;
        }
        let at = INDEX_HEADER_LEN + self.count * self.kind.entry_len();
        let end = (at + entry.len()) as u64;
        if end > self.reserved {
            let map_len = (INDEX_HEADER_LEN + self.capacity * self.kind.entry_len()) as u64;
            let target = end.next_multiple_of(INDEX_ALLOC_STEP as u64).min(map_len);
            if io
                .allocate(&self.file, self.reserved, target - self.reserved)
                .is_err()
            {
                return false;
            }
            self.reserved = target;
            self.w.set_writable(target as usize);
        }
        if !self.w.write(at, entry) {
            return false;
        }
        self.count += 1;
        self.w.publish(at + entry.len());
        true
    }

    /// Trims the file to the used bytes (close, seal).
    pub(crate) fn trim(&mut self, io: &dyn FileIo) -> io::Result<()> {
        let used = self.used_len();
        io.set_len(&self.file, used)?;
        self.reserved = used;
        self.w.set_writable(used as usize);
        Ok(())
    }

    /// Bytes in use (header + entries).
    pub(crate) fn used_len(&self) -> u64 {
        (INDEX_HEADER_LEN + self.count * self.kind.entry_len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        for kind in [IndexKind::Offset, IndexKind::Time] {
            let h = encode_header(kind, 42);
            assert_eq!(check_header(kind, 42, &h), Ok(()));
            assert!(check_header(kind, 43, &h).is_err());
            let other = if kind == IndexKind::Offset {
                IndexKind::Time
            } else {
                IndexKind::Offset
            };
            assert!(check_header(other, 42, &h).is_err());
            assert!(check_header(kind, 42, &h[..10]).is_err());
            for i in 0..INDEX_HEADER_LEN {
                let mut d = h;
                d[i] ^= 0x10;
                assert!(check_header(kind, 42, &d).is_err(), "byte {i}");
            }
        }
        let h = encode_header(IndexKind::Offset, 7);
        assert_eq!(&h[0..4], b"SLIX");
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 1);
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), 8);
        assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), 7);
    }

    fn offsets(entries: &[(u32, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|&(rel, pos)| encode_offset_entry(OffsetEntry { rel, pos }))
            .collect()
    }

    #[test]
    fn offset_entries_count_and_lookup() {
        let e = offsets(&[(3, 100), (9, 300), (20, 900)]);
        assert_eq!(offset_entry(&e, 1), Some(OffsetEntry { rel: 9, pos: 300 }));
        assert_eq!(count_offset_entries(&e, 1_000), 3);
        assert_eq!(count_offset_entries(&e, 900), 2); // position must be inside the log
        let mut z = e.clone();
        z.extend_from_slice(&[0u8; 16]);
        assert_eq!(count_offset_entries(&z, 1_000), 3); // zero entry ends the list
        let bad = offsets(&[(3, 100), (2, 300)]);
        assert_eq!(count_offset_entries(&bad, 1_000), 1);
        assert_eq!(lookup_offset(&e, 3, 0), None);
        assert_eq!(lookup_offset(&e, 3, 3).map(|x| x.pos), Some(100));
        assert_eq!(lookup_offset(&e, 3, 19).map(|x| x.pos), Some(300));
        assert_eq!(lookup_offset(&e, 3, 1 << 40).map(|x| x.pos), Some(900));
    }

    #[test]
    fn time_entries_count_and_lookup() {
        let e: Vec<u8> = [(100i64, 3u32), (100, 5), (250, 9)]
            .iter()
            .flat_map(|&(timestamp, rel)| encode_time_entry(TimeEntry { timestamp, rel }))
            .collect();
        assert_eq!(
            time_entry(&e, 2),
            Some(TimeEntry {
                timestamp: 250,
                rel: 9
            })
        );
        assert_eq!(count_time_entries(&e), 3);
        let mut dec = e.clone();
        dec.extend_from_slice(&encode_time_entry(TimeEntry {
            timestamp: 10,
            rel: 20,
        }));
        assert_eq!(count_time_entries(&dec), 3);
        assert_eq!(lookup_time(&e, 3, 100), None);
        assert_eq!(lookup_time(&e, 3, 101).map(|t| t.rel), Some(5));
        assert_eq!(lookup_time(&e, 3, 1_000).map(|t| t.rel), Some(9));
    }
}
