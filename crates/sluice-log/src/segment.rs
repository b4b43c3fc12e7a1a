//! One segment: a `.log` file of batches plus its `.index` and `.timeindex`.
//!
//! [`Segment`] is the shared, read-side view (any thread); [`ActiveSegment`]
//! is the writer's handle on the last segment. Sealing an active segment
//! trims its files and produces a new read-only [`Segment`]; readers that
//! still hold the old one keep working because every `Bytes` they got owns
//! an `Arc` of its mapping.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchHeader, LOG_OVERHEAD};

use crate::error::LogError;
use crate::index::{
    self, IndexKind, IndexWriter, OffsetEntry, TimeEntry, INDEX_HEADER_LEN, OFFSET_ENTRY_LEN,
    TIME_ENTRY_LEN,
};
use crate::io::FileIo;
use crate::sys::{region_bytes, AppendWriter, Region, MAX_WRITE_BUFS};

/// Early writeback hands the kernel whole pages of this size only.
const WRITEBACK_PAGE: usize = 4096;

/// Removes the three files of the segment at `base` in `dir` (a missing
/// one is fine); returns the paths removed.
pub(crate) fn remove_segment_files(
    io: &dyn FileIo,
    dir: &Path,
    base: u64,
) -> Result<Vec<PathBuf>, LogError> {
    let mut removed = Vec::new();
    for ext in ["log", "index", "timeindex"] {
        let p = dir.join(file_name(base, ext));
        match io.remove_file(&p) {
            Ok(()) => removed.push(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(&p, e)),
        }
    }
    Ok(removed)
}

/// File name of a segment file: 20-digit zero-padded base offset + extension.
pub fn file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses a segment file name, `NNNNNNNNNNNNNNNNNNNN.<ext>` as
/// [`file_name`] makes it, into its base offset and extension.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// Per-segment settings derived from the log config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSettings {
    pub segment_bytes: u64,
    pub index_interval: u32,
    pub preallocate: u64,
    pub max_batch: u32,
}

impl SegmentSettings {
    /// Entries the preallocated index files of a new segment can hold.
    fn index_capacity(&self) -> usize {
        (self.segment_bytes / u64::from(self.index_interval.max(1)) + 4).min(1 << 24) as usize
    }
    /// Length of the mapping of a new active segment: room for a full
    /// segment plus one maximal batch, so a roll is only ever needed for size.
    fn map_len(&self, at_least: u64) -> usize {
        let len = self.segment_bytes.max(at_least) + u64::from(self.max_batch) + 4096;
        let len = len.min(u64::from(u32::MAX));
        ((len + 4095) & !4095) as usize
    }
}

/// Where scanning stopped and why.
#[derive(Debug, Clone)]
pub(crate) struct ScanOutcome {
    /// Position after the last good batch.
    pub end: usize,
    /// Offset after the last good batch.
    pub next_offset: u64,
    /// Largest max-timestamp among the scanned good batches (or `i64::MIN`).
    pub max_timestamp: i64,
    /// Why the scan stopped before the end of the data, if it did.
    pub stop: Option<String>,
}

/// Checks the batch at `pos` of `data`: whole, sane header, expected base
/// offset, and (if `verify`) its CRC. Returns the header and the offset after it.
pub(crate) fn check_batch_at(
    data: &[u8],
    pos: usize,
    expected_base: u64,
    verify: bool,
) -> Result<(BatchHeader, u64), String> {
    let rest = data.get(pos..).unwrap_or(&[]);
    if rest.len() < LOG_OVERHEAD {
        if rest.iter().all(|b| *b == 0) {
            return Err(format!("zero-filled tail of {} bytes", rest.len()));
        }
        return Err(format!("short batch: {} bytes left", rest.len()));
    }
    if rest[..LOG_OVERHEAD].iter().all(|b| *b == 0) {
        return Err("zero-filled data (preallocated space)".into());
    }
    let h = BatchHeader::parse(rest).map_err(|e| match e {
        batch::BatchError::Truncated { needed, available } => {
            format!("declared batch size {needed} exceeds the {available} bytes left in the file")
        }
        other => other.to_string(),
    })?;
    if h.base_offset < 0 || h.base_offset as u64 != expected_base {
        return Err(format!(
            "base offset {} where {} was expected",
            h.base_offset, expected_base
        ));
    }
    let next = expected_base
        .checked_add(h.last_offset_delta as u64 + 1)
        .ok_or_else(|| "offset overflow".to_string())?;
    if verify {
        let whole = rest.get(..h.total_len()).unwrap_or(&[]);
        batch::verify_crc(whole).map_err(|e| e.to_string())?;
    }
    Ok((h, next))
}

/// Walks batches from `pos` (whose base offset must be `expected`) to the end
/// of `data`, stopping at the first bad one; `on_batch(pos, header)` is called
/// for each good batch.
pub(crate) fn scan(
    data: &[u8],
    mut pos: usize,
    mut expected: u64,
    verify: bool,
    mut on_batch: impl FnMut(usize, &BatchHeader),
) -> ScanOutcome {
    let mut max_timestamp = i64::MIN;
    let mut stop = None;
    while pos < data.len() {
        match check_batch_at(data, pos, expected, verify) {
            Ok((h, next)) => {
                on_batch(pos, &h);
                max_timestamp = max_timestamp.max(h.max_timestamp);
                pos += h.total_len();
                expected = next;
            }
            Err(reason) => {
                stop = Some(reason);
                break;
            }
        }
    }
    ScanOutcome {
        end: pos,
        next_offset: expected,
        max_timestamp,
        stop,
    }
}

/// Builds sparse index entries while batches go by (append, recovery, rebuild).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexBuilder {
    pub interval: u32,
    pub last_indexed_pos: usize,
    pub running_max_ts: i64,
    pub last_time: Option<TimeEntry>,
}

/// What to write for one batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IndexUpdate {
    pub offset: Option<OffsetEntry>,
    pub time: Option<TimeEntry>,
}

impl IndexBuilder {
    /// Decides the entries for the batch at `pos` with relative base `rel`.
    /// An offset entry is written every `interval` bytes (never at position
    /// 0); a time entry goes with it when the running max timestamp grew.
    pub(crate) fn on_batch(&mut self, pos: usize, rel: u32, max_ts: i64) -> IndexUpdate {
        self.running_max_ts = self.running_max_ts.max(max_ts);
        let mut up = IndexUpdate::default();
        if pos > 0
            && pos - self.last_indexed_pos >= self.interval.max(1) as usize
            && pos <= u32::MAX as usize
        {
            self.last_indexed_pos = pos;
            up.offset = Some(OffsetEntry {
                rel,
                pos: pos as u32,
            });
            let grew = self
                .last_time
                .is_none_or(|t| self.running_max_ts > t.timestamp && rel > t.rel);
            if grew {
                let t = TimeEntry {
                    timestamp: self.running_max_ts,
                    rel,
                };
                self.last_time = Some(t);
                up.time = Some(t);
            }
        }
        up
    }

    /// [`IndexBuilder::on_batch`] for a scanned batch of the segment based at
    /// `base`, appending the encoded entries to `off` and `time`.
    fn collect(
        &mut self,
        base: u64,
        pos: usize,
        h: &BatchHeader,
        off: &mut Vec<u8>,
        time: &mut Vec<u8>,
    ) {
        let rel = (h.base_offset as u64 - base) as u32;
        let up = self.on_batch(pos, rel, h.max_timestamp);
        if let Some(e) = up.offset {
            off.extend_from_slice(&index::encode_offset_entry(e));
        }
        if let Some(t) = up.time {
            time.extend_from_slice(&index::encode_time_entry(t));
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |e| LogError::io(path, e)
}

/// fsyncs a directory so a created, renamed or deleted entry is durable.
pub(crate) fn sync_dir(io: &dyn FileIo, dir: &Path) -> Result<(), LogError> {
    io.sync_dir(dir).map_err(io_err(dir))
}

fn mtime_ms(file: &File) -> i64 {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The read side of a segment, shared by readers and the writer.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub time_path: PathBuf,
    log: Arc<Region>,
    index: Arc<Region>,
    time: Arc<Region>,
    /// Offset after the last published batch (Release after the log region
    /// is published, so a reader that sees it sees the bytes).
    next_offset: AtomicU64,
    max_timestamp: AtomicI64,
    /// Batches at or after this position were CRC-checked when appended or
    /// recovered in this process.
    trusted_from: usize,
    /// Batches below this position were CRC-checked by a read.
    verified: AtomicUsize,
    /// Modification time at open (retention fallback when no timestamps).
    modified_ms: AtomicI64,
}

impl Segment {
    /// Offset after the last published batch.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }
    /// Published bytes of the `.log`.
    pub fn size(&self) -> u64 {
        self.log.published() as u64
    }
    /// Largest batch max-timestamp known (or `i64::MIN` when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }
    /// Modification time of the `.log` (ms since the epoch).
    pub fn modified_ms(&self) -> i64 {
        self.modified_ms.load(Ordering::Relaxed)
    }

    /// Where a cut that removes `target` and everything after it lands in
    /// this segment: the position and base offset of the batch containing
    /// `target`, or the end of the segment and its next offset when
    /// `target` is at or beyond it.
    pub(crate) fn locate(&self, target: u64) -> Result<(usize, u64), LogError> {
        let next = self.next_offset();
        if target >= next {
            return Ok((self.size() as usize, next));
        }
        let data = self.log.bytes();
        let (mut pos, mut expected) = self.seek_checked(data, target.max(self.base));
        loop {
            let (h, after) =
                check_batch_at(data, pos, expected, false).map_err(|r| self.corrupt(pos, r))?;
            if after > target {
                return Ok((pos, expected));
            }
            pos += h.total_len();
            expected = after;
        }
    }

    /// Hides offsets at and after `next` from readers of this view (the
    /// bytes stay mapped; a truncation zeroes them next).
    pub(crate) fn hide_from(&self, next: u64) {
        self.next_offset.fetch_min(next, Ordering::AcqRel);
    }

    fn offset_entries(&self) -> &[u8] {
        self.index.bytes().get(INDEX_HEADER_LEN..).unwrap_or(&[])
    }
    fn time_entries(&self) -> &[u8] {
        self.time.bytes().get(INDEX_HEADER_LEN..).unwrap_or(&[])
    }

    fn corrupt(&self, position: usize, reason: String) -> LogError {
        LogError::Corrupt {
            path: self.log_path.clone(),
            position: position as u64,
            reason,
        }
    }

    /// Position and base offset of the batch to start a search for `target` at.
    fn seek(&self, target: u64) -> (usize, u64) {
        let entries = self.offset_entries();
        let count = entries.len() / OFFSET_ENTRY_LEN;
        match index::lookup_offset(entries, count, target.saturating_sub(self.base)) {
            Some(e) => (e.pos as usize, self.base + u64::from(e.rel)),
            None => (0, self.base),
        }
    }

    /// Like [`Segment::seek`], but if the index entry does not point at a
    /// batch with the expected offset (a damaged entry that still looked
    /// plausible), falls back to walking headers from the segment start, so
    /// damage in the index never makes good data unreadable.
    fn seek_checked(&self, data: &[u8], target: u64) -> (usize, u64) {
        let (pos, expected) = self.seek(target);
        if pos != 0 && check_batch_at(data, pos, expected, false).is_err() {
            tracing::warn!(
                index = %self.index_path.display(),
                position = pos,
                offset = expected,
                "index entry does not point at its batch; scanning from the segment start"
            );
            return (0, self.base);
        }
        (pos, expected)
    }

    /// CRC-checks the batch at `pos` unless it is known good.
    fn verify_at(&self, data: &[u8], pos: usize, len: usize) -> Result<(), LogError> {
        if pos >= self.trusted_from || pos + len <= self.verified.load(Ordering::Acquire) {
            return Ok(());
        }
        let whole = data.get(pos..pos + len).unwrap_or(&[]);
        batch::verify_crc(whole).map_err(|e| self.corrupt(pos, e.to_string()))?;
        // Extend the verified prefix when this batch continues it.
        let _ = self
            .verified
            .compare_exchange(pos, pos + len, Ordering::AcqRel, Ordering::Relaxed);
        Ok(())
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes`
    /// (at least one). `None` when `offset` is not in this segment.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<Bytes>, LogError> {
        let next = self.next_offset();
        if offset < self.base || offset >= next {
            return Ok(None);
        }
        let data = self.log.bytes();
        let (mut pos, mut expected) = self.seek_checked(data, offset);
        loop {
            let (h, after) =
                check_batch_at(data, pos, expected, false).map_err(|r| self.corrupt(pos, r))?;
            if after > offset {
                break;
            }
            pos += h.total_len();
            expected = after;
        }
        let start = pos;
        let mut end = pos;
        while end < data.len() {
            let (h, after) = match check_batch_at(data, end, expected, false) {
                Ok(v) => v,
                Err(r) if end == start => return Err(self.corrupt(end, r)),
                Err(_) => break,
            };
            let total = h.total_len();
            if end > start && end - start + total > max_bytes {
                break;
            }
            match self.verify_at(data, end, total) {
                Ok(()) => {}
                Err(e) if end == start => return Err(e),
                Err(_) => break,
            }
            end += total;
            expected = after;
            if end - start >= max_bytes {
                break;
            }
        }
        Ok(region_bytes(&self.log, start, end - start))
    }

    /// The first batch with `max_timestamp >= ts`: `(base offset, max timestamp)`.
    pub fn find_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>, LogError> {
        let data = self.log.bytes();
        let entries = self.time_entries();
        let start_offset = match index::lookup_time(entries, entries.len() / TIME_ENTRY_LEN, ts) {
            Some(t) => self.base + u64::from(t.rel),
            None => self.base,
        };
        let (mut pos, mut expected) = self.seek_checked(data, start_offset);
        while pos < data.len() {
            let (h, after) =
                check_batch_at(data, pos, expected, false).map_err(|r| self.corrupt(pos, r))?;
            if h.max_timestamp >= ts {
                return Ok(Some((expected, h.max_timestamp)));
            }
            pos += h.total_len();
            expected = after;
        }
        Ok(None)
    }
}

/// Overwrites `[from, to)` of `file` with zeros (positioned writes, 1 MiB at
/// a time) and fdatasyncs it. The file keeps its length: this is how a
/// truncation removes bytes that readers may still have mapped.
pub(crate) fn zero_range(
    io: &dyn FileIo,
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
) -> Result<(), LogError> {
    const CHUNK: u64 = 1 << 20;
    if to > from {
        let zeros = vec![0u8; CHUNK.min(to - from) as usize];
        let mut at = from;
        while at < to {
            let n = CHUNK.min(to - at) as usize;
            crate::io::write_all_at(io, file, at, &zeros[..n]).map_err(io_err(path))?;
            at += n as u64;
        }
    }
    io.sync_data(file).map_err(io_err(path))
}

/// Replaces the file at `path` by a copy of itself (written to
/// `path.tmp`, fsynced, renamed over `path`). Whoever maps the old inode
/// keeps it untouched, so the copy may then be reset with
/// `truncate(true)`. The caller fsyncs the directory. A missing file is
/// left missing (recovery rebuilds it).
pub(crate) fn replace_by_copy(io: &dyn FileIo, path: &Path) -> Result<(), LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::io(path, e)),
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let f = io
        .open(
            &tmp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
        .map_err(io_err(&tmp))?;
    crate::io::write_all_at(io, &f, 0, &bytes).map_err(io_err(&tmp))?;
    io.sync_all(&f).map_err(io_err(&tmp))?;
    drop(f);
    io.rename(&tmp, path).map_err(io_err(path))
}

/// Completes a recorded truncation at `target` in the segment at `base`
/// on open: zeroes everything from the first batch that does not end at or
/// before `target` (or from the first bytes that are not a batch) to the
/// last non-zero byte of the file, and fdatasyncs it. The file keeps its
/// length; recovery then stops at the zeros.
pub(crate) fn zero_after(
    io: &dyn FileIo,
    dir: &Path,
    base: u64,
    target: u64,
) -> Result<(), LogError> {
    let path = dir.join(file_name(base, "log"));
    let file = io
        .open(&path, OpenOptions::new().read(true).write(true))
        .map_err(io_err(&path))?;
    let len = file.metadata().map_err(io_err(&path))?.len();
    let map = Region::map_read_only(&file, len as usize).map_err(io_err(&path))?;
    let data = map.bytes();
    let mut pos = 0usize;
    let mut expected = base;
    while let Ok((h, next)) = check_batch_at(data, pos, expected, false) {
        if next > target {
            break;
        }
        pos += h.total_len();
        expected = next;
    }
    let last = data[pos..].iter().rposition(|b| *b != 0);
    let to = last.map_or(pos, |l| pos + l + 1);
    drop(map);
    if to > pos {
        tracing::warn!(segment = %path.display(), position = pos, offset = expected, bytes = to - pos, "completing an interrupted truncation");
    }
    zero_range(io, &file, &path, pos as u64, to as u64)
}

/// Reads and checks an index file; the valid entry bytes, or why not.
fn load_index(path: &Path, kind: IndexKind, base: u64, log_len: u64) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    index::check_header(kind, base, &bytes)?;
    let entries = bytes.get(INDEX_HEADER_LEN..).unwrap_or(&[]);
    let count = match kind {
        IndexKind::Offset => index::count_offset_entries(entries, log_len),
        IndexKind::Time => index::count_time_entries(entries),
    };
    Ok(entries[..count * kind.entry_len()].to_vec())
}

/// Writes a complete, exact-size index file and fsyncs it.
fn write_index_file(
    io: &dyn FileIo,
    path: &Path,
    kind: IndexKind,
    base: u64,
    entries: &[u8],
) -> Result<File, LogError> {
    let f = io
        .open(
            path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
        .map_err(io_err(path))?;
    let header = index::encode_header(kind, base);
    crate::io::write_all_at(io, &f, 0, &header).map_err(io_err(path))?;
    crate::io::write_all_at(io, &f, header.len() as u64, entries).map_err(io_err(path))?;
    io.sync_all(&f).map_err(io_err(path))?;
    Ok(f)
}

/// Entries of both indexes for `data`, built by a header-only scan from 0.
fn rebuild_entries(
    data: &[u8],
    base: u64,
    interval: u32,
    verify: bool,
) -> (Vec<u8>, Vec<u8>, ScanOutcome) {
    let mut off = Vec::new();
    let mut time = Vec::new();
    let mut b = IndexBuilder {
        interval,
        last_indexed_pos: 0,
        running_max_ts: i64::MIN,
        last_time: None,
    };
    let outcome = scan(data, 0, base, verify, |pos, h| {
        b.collect(base, pos, h, &mut off, &mut time)
    });
    (off, time, outcome)
}

/// Opens a sealed segment: trusted by size and index (capped at the file
/// length), indexes rebuilt if missing or damaged.
pub(crate) fn open_sealed(
    dir: &Path,
    base: u64,
    settings: &SegmentSettings,
    io: &dyn FileIo,
) -> Result<Arc<Segment>, LogError> {
    let log_path = dir.join(file_name(base, "log"));
    let index_path = dir.join(file_name(base, "index"));
    let time_path = dir.join(file_name(base, "timeindex"));
    let file = File::open(&log_path).map_err(io_err(&log_path))?;
    let file_len = file.metadata().map_err(io_err(&log_path))?.len();
    let full = Region::map_read_only(&file, file_len as usize).map_err(io_err(&log_path))?;
    let data = full.bytes();

    let loaded = (
        load_index(&index_path, IndexKind::Offset, base, file_len),
        load_index(&time_path, IndexKind::Time, base, file_len),
    );
    let (off_entries, time_entries, outcome) = match loaded {
        (Ok(off), Ok(time)) => {
            let count = off.len() / OFFSET_ENTRY_LEN;
            let last = if count > 0 {
                index::offset_entry(&off, count - 1)
            } else {
                None
            };
            let (pos, expected) = match last {
                Some(e) => (e.pos as usize, base + u64::from(e.rel)),
                None => (0, base),
            };
            // The last entry must point at a batch with the right offset;
            // otherwise the index is damaged.
            if pos > 0 && check_batch_at(data, pos, expected, false).is_err() {
                tracing::warn!(path = %index_path.display(), "last index entry does not point at a batch; rebuilding indexes");
                let (o, t, out) = rebuild_entries(data, base, settings.index_interval, false);
                write_index_file(io, &index_path, IndexKind::Offset, base, &o)?;
                write_index_file(io, &time_path, IndexKind::Time, base, &t)?;
                (o, t, out)
            } else {
                let mut out = scan(data, pos, expected, false, |_, _| {});
                if let Some(t) = index::last_time_entry(&time) {
                    out.max_timestamp = out.max_timestamp.max(t.timestamp);
                }
                (off, time, out)
            }
        }
        (a, b) => {
            let why = a.err().or(b.err()).unwrap_or_default();
            tracing::warn!(segment = %log_path.display(), reason = %why, "index damaged or missing; rebuilding from the log");
            let (o, t, out) = rebuild_entries(data, base, settings.index_interval, false);
            write_index_file(io, &index_path, IndexKind::Offset, base, &o)?;
            write_index_file(io, &time_path, IndexKind::Time, base, &t)?;
            sync_dir(io, dir)?;
            (o, t, out)
        }
    };
    if (outcome.end as u64) < file_len {
        tracing::warn!(
            segment = %log_path.display(),
            valid_bytes = outcome.end,
            ignored_bytes = file_len - outcome.end as u64,
            next_offset = outcome.next_offset,
            reason = outcome.stop.as_deref().unwrap_or(""),
            "sealed segment has trailing bytes that are not batches; ignoring them"
        );
    }
    drop(full);
    let log = Region::map_read_only(&file, outcome.end).map_err(io_err(&log_path))?;
    let index = map_index_ro(&index_path, off_entries.len())?;
    let time = map_index_ro(&time_path, time_entries.len())?;
    Ok(Arc::new(Segment {
        base,
        log_path,
        index_path,
        time_path,
        log,
        index,
        time,
        next_offset: AtomicU64::new(outcome.next_offset),
        max_timestamp: AtomicI64::new(outcome.max_timestamp),
        trusted_from: usize::MAX,
        verified: AtomicUsize::new(0),
        modified_ms: AtomicI64::new(mtime_ms(&file)),
    }))
}

/// Where the CRC check of a sealed segment found damage.
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    /// Position of the first bad batch (or of the trailing bytes).
    pub position: usize,
    /// Offset the first bad batch should have had.
    pub offset: u64,
    /// Length of the `.log` file.
    pub file_len: u64,
    /// What is wrong there.
    pub reason: String,
}

/// CRC-checks every batch of a sealed segment from the one containing
/// `from` (found through the index) to the end of its file. Trailing bytes
/// after the last batch count as damage unless they are all zero (an
/// untrimmed preallocated tail). `None` when all of it checks out.
pub(crate) fn verify_sealed(seg: &Segment, from: u64) -> Result<Option<Damage>, LogError> {
    let data = seg.log.bytes();
    let (pos, expected) = seg.seek_checked(data, from.max(seg.base));
    let outcome = scan(data, pos, expected, true, |_, _| {});
    let file_len = std::fs::metadata(&seg.log_path)
        .map_err(io_err(&seg.log_path))?
        .len();
    if outcome.end < data.len() {
        return Ok(Some(Damage {
            position: outcome.end,
            offset: outcome.next_offset,
            file_len,
            reason: outcome.stop.unwrap_or_default(),
        }));
    }
    if file_len > data.len() as u64 {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = File::open(&seg.log_path).map_err(io_err(&seg.log_path))?;
        f.seek(SeekFrom::Start(data.len() as u64))
            .map_err(io_err(&seg.log_path))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io_err(&seg.log_path))?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Ok(Some(Damage {
                    position: data.len(),
                    offset: outcome.next_offset,
                    file_len,
                    reason: "trailing bytes after the last batch".into(),
                }));
            }
        }
    }
    Ok(None)
}

fn map_index_ro(path: &Path, entry_bytes: usize) -> Result<Arc<Region>, LogError> {
    let f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len() as usize;
    Region::map_read_only(&f, (INDEX_HEADER_LEN + entry_bytes).min(len)).map_err(io_err(path))
}

/// The writer's handle on the last segment.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub seg: Arc<Segment>,
    /// The `.log` file; shared with the flusher so it can fdatasync without
    /// holding the writer lock.
    pub file: Arc<File>,
    log_w: AppendWriter,
    index: IndexWriter,
    time: IndexWriter,
    /// Published end of the `.log`.
    end: usize,
    next_offset: u64,
    /// Bytes of the file reserved with fallocate.
    allocated: u64,
    builder: IndexBuilder,
    /// Wall time of the first append (roll by `segment_ms`).
    pub first_append_ms: Option<i64>,
    /// End of the range already handed to asynchronous writeback by
    /// [`ActiveSegment::take_writeback_range`] (interval flushing).
    writeback_mark: usize,
    /// [`ActiveSegment::trim`] never shrinks the `.log` below this length:
    /// after [`crate::Log::truncate_to`] readers may still map bytes of the
    /// file beyond the new end, and a load from a mapped page past the end
    /// of the file is a SIGBUS. 0 when no truncation reopened this segment.
    trim_floor: u64,
}

impl ActiveSegment {
    /// Creates a new, empty segment at `base` and fsyncs the directory.
    /// Fails (touching nothing) if a `.log` for `base` already exists.
    pub(crate) fn create(
        dir: &Path,
        base: u64,
        settings: &SegmentSettings,
        io: &dyn FileIo,
    ) -> Result<ActiveSegment, LogError> {
        let log_path = dir.join(file_name(base, "log"));
        let file = io
            .open(
                &log_path,
                OpenOptions::new().read(true).write(true).create_new(true),
            )
            .map_err(io_err(&log_path))?;
        let result = Self::assemble(
            dir,
            base,
            settings,
            file,
            0,
            0,
            base,
            i64::MIN,
            &[],
            &[],
            None,
            io,
        )
        .and_then(|seg| sync_dir(io, dir).map(|()| seg));
        if result.is_err() {
            // We created these files: leave no half-made segment behind
            // (best effort; the error that matters is the one returned).
            for ext in ["log", "index", "timeindex"] {
                let _ = io.remove_file(&dir.join(file_name(base, ext)));
            }
            tracing::warn!(segment = %log_path.display(), "segment creation failed; removed partial files");
        }
        result
    }

    /// Builds the writer state around an open `.log` whose first `end` bytes
    /// are good, and (re)writes both index files from the given entries.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        dir: &Path,
        base: u64,
        settings: &SegmentSettings,
        file: File,
        end: usize,
        trusted_from: usize,
        next_offset: u64,
        max_ts: i64,
        off_entries: &[u8],
        time_entries: &[u8],
        last_indexed_pos: Option<usize>,
        io: &dyn FileIo,
    ) -> Result<ActiveSegment, LogError> {
        let log_path = dir.join(file_name(base, "log"));
        let index_path = dir.join(file_name(base, "index"));
        let time_path = dir.join(file_name(base, "timeindex"));
        let map_len = settings.map_len(end as u64);
        let file = Arc::new(file);
        let (region, mut log_w) =
            Region::map_appendable(file.clone(), map_len).map_err(io_err(&log_path))?;
        log_w.set_writable(end);
        log_w.publish(end);
        let capacity = settings.index_capacity();
        let index = IndexWriter::create(
            IndexKind::Offset,
            &index_path,
            base,
            capacity,
            off_entries,
            io,
        )
        .map_err(|e| LogError::io(&index_path, e))?;
        let time = IndexWriter::create(
            IndexKind::Time,
            &time_path,
            base,
            capacity,
            time_entries,
            io,
        )
        .map_err(|e| LogError::io(&time_path, e))?;
        let last_time = index::last_time_entry(time_entries);
        let modified = mtime_ms(&file);
        let seg = Arc::new(Segment {
            base,
            log_path,
            index_path,
            time_path,
            log: region,
            index: index.region(),
            time: time.region(),
            next_offset: AtomicU64::new(next_offset),
            max_timestamp: AtomicI64::new(max_ts),
            trusted_from,
            verified: AtomicUsize::new(0),
            modified_ms: AtomicI64::new(modified),
        });
        Ok(ActiveSegment {
            seg,
            file,
            log_w,
            index,
            time,
            end,
            next_offset,
            allocated: end as u64,
            builder: IndexBuilder {
                interval: settings.index_interval,
                last_indexed_pos: last_indexed_pos.unwrap_or(0),
                running_max_ts: max_ts,
                last_time,
            },
            first_append_ms: None,
            writeback_mark: end,
            trim_floor: 0,
        })
    }

    /// Opens the last segment of a log and recovers its tail: CRC-check
    /// every batch from a start point, cut at the first bad one, and rewrite
    /// the indexes. The start point is the last index entry that points at a
    /// batch: with `recovery_point = Some(r)`, the last whose offset is
    /// `<= r` (batches below `r` were fsynced; header-checked only), with
    /// `None` (clean shutdown) the last that points at a CRC-valid batch.
    /// With `keep_len` the `.log` keeps its length (the cut tail must already
    /// be zeros: see [`crate::Log::truncate_to`]) and later trims never go
    /// below it, because readers may still map that file.
    pub(crate) fn open_recover(
        dir: &Path,
        base: u64,
        settings: &SegmentSettings,
        io: &dyn FileIo,
        recovery_point: Option<u64>,
        keep_len: bool,
    ) -> Result<ActiveSegment, LogError> {
        let log_path = dir.join(file_name(base, "log"));
        let index_path = dir.join(file_name(base, "index"));
        let time_path = dir.join(file_name(base, "timeindex"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let file_len = file.metadata().map_err(io_err(&log_path))?.len();
        let scan_map =
            Region::map_read_only(&file, file_len as usize).map_err(io_err(&log_path))?;
        let data = scan_map.bytes();

        let loaded = (
            load_index(&index_path, IndexKind::Offset, base, file_len),
            load_index(&time_path, IndexKind::Time, base, file_len),
        );
        let mut off_entries;
        let mut time_entries;
        let start: (usize, u64);
        match loaded {
            (Ok(off), Ok(time)) => {
                // Walk back to the last entry that points at a good batch.
                let mut count = off.len() / OFFSET_ENTRY_LEN;
                let mut found = (0usize, base);
                while count > 0 {
                    let Some(e) = index::offset_entry(&off, count - 1) else {
                        break;
                    };
                    let expected = base + u64::from(e.rel);
                    let usable = match recovery_point {
                        Some(r) => {
                            expected <= r
                                && check_batch_at(data, e.pos as usize, expected, false).is_ok()
                        }
                        None => check_batch_at(data, e.pos as usize, expected, true).is_ok(),
                    };
                    if usable {
                        found = (e.pos as usize, expected);
                        break;
                    }
                    count -= 1;
                }
                off_entries = off[..count * OFFSET_ENTRY_LEN].to_vec();
                let start_rel = found.1 - base;
                let keep_time = (0..time.len() / TIME_ENTRY_LEN)
                    .take_while(|&i| {
                        index::time_entry(&time, i).is_some_and(|t| u64::from(t.rel) <= start_rel)
                    })
                    .count();
                time_entries = time[..keep_time * TIME_ENTRY_LEN].to_vec();
                start = found;
            }
            (a, b) => {
                let why = a.err().or(b.err()).unwrap_or_default();
                tracing::warn!(segment = %log_path.display(), reason = %why, "index damaged or missing; rebuilding from the log");
                off_entries = Vec::new();
                time_entries = Vec::new();
                start = (0, base);
            }
        }
        let last_time = index::last_time_entry(&time_entries);
        let mut builder = IndexBuilder {
            interval: settings.index_interval,
            last_indexed_pos: start.0,
            running_max_ts: last_time.map_or(i64::MIN, |t| t.timestamp),
            last_time,
        };
        let outcome = scan(data, start.0, start.1, true, |pos, h| {
            builder.collect(base, pos, h, &mut off_entries, &mut time_entries)
        });
        let end = outcome.end;
        if (end as u64) < file_len {
            let cut = &data[end..];
            let nonzero = cut.iter().any(|b| *b != 0);
            if nonzero {
                tracing::warn!(
                    segment = %log_path.display(),
                    position = end,
                    next_offset = outcome.next_offset,
                    cut_bytes = file_len - end as u64,
                    reason = outcome.stop.as_deref().unwrap_or(""),
                    "recovery cut the tail of the active segment"
                );
            } else {
                tracing::debug!(segment = %log_path.display(), zero_bytes = file_len - end as u64, "dropping preallocated zero tail");
            }
        }
        let max_ts = builder.running_max_ts.max(outcome.max_timestamp);
        drop(scan_map);
        if (end as u64) != file_len && !keep_len {
            io.set_len(&file, end as u64).map_err(io_err(&log_path))?;
            io.sync_all(&file).map_err(io_err(&log_path))?;
        }
        let last_pos = builder.last_indexed_pos;
        let mut seg = Self::assemble(
            dir,
            base,
            settings,
            file,
            end,
            start.0,
            outcome.next_offset,
            max_ts,
            &off_entries,
            &time_entries,
            Some(last_pos),
            io,
        )?;
        // Index contents were rewritten: make them durable before appending.
        io.sync_all(&seg.index.file).map_err(io_err(&index_path))?;
        io.sync_all(&seg.time.file).map_err(io_err(&time_path))?;
        sync_dir(io, dir)?;
        seg.builder.running_max_ts = max_ts;
        if keep_len {
            seg.trim_floor = file_len;
            // The whole file is allocated (written or fallocated before).
            seg.allocated = file_len.max(end as u64);
            seg.log_w.set_writable(seg.allocated as usize);
        }
        Ok(seg)
    }

    /// Published end of the `.log`.
    pub(crate) fn size(&self) -> u64 {
        self.end as u64
    }

    /// Offset the next batch gets.
    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Whether a truncation reopened this segment (its `.log` must keep its
    /// length: see [`ActiveSegment::open_recover`]).
    pub(crate) fn keeps_len(&self) -> bool {
        self.trim_floor > 0
    }

    /// Whether `incoming` more bytes fit in the mapping and keep relative
    /// offsets within u32.
    pub(crate) fn fits(&self, incoming: usize, offsets: u64) -> bool {
        let rel_ok = self.next_offset - self.seg.base + offsets <= u64::from(u32::MAX);
        self.end + incoming <= self.log_w.region().map_len() && rel_ok
    }

    /// Reserves file space so `incoming` more bytes can be stored.
    pub(crate) fn reserve(
        &mut self,
        incoming: usize,
        step: u64,
        io: &dyn FileIo,
    ) -> Result<(), LogError> {
        let needed = (self.end + incoming) as u64;
        if needed <= self.allocated {
            return Ok(());
        }
        let map_len = self.log_w.region().map_len() as u64;
        let step = step.max(4096);
        let target = needed
            .div_ceil(step)
            .saturating_mul(step)
            .min(map_len)
            .max(needed);
        let path = &self.seg.log_path;
        match io.allocate(&self.file, self.allocated, target - self.allocated) {
            Ok(()) => self.allocated = target,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // Not room for a whole step: try exactly what this append needs.
                let exact = needed.div_ceil(4096) * 4096;
                let exact = exact.min(map_len).max(needed);
                io.allocate(&self.file, self.allocated, exact - self.allocated)
                    .map_err(|e| LogError::io(path, e))?;
                self.allocated = exact;
            }
            Err(e) => return Err(LogError::io(path, e)),
        }
        self.log_w.set_writable(self.allocated as usize);
        Ok(())
    }

    /// Writes pre-validated `batches` (total `total` bytes) at the end of the
    /// `.log` with `pwritev`, assigns offsets, updates indexes and publishes.
    /// Space must be reserved. Each batch goes out as two buffers, its new
    /// base offset (8 bytes) and the rest of the batch as received, so the
    /// payload is not copied in user space. With `epoch = Some(e)` each batch
    /// goes out as four buffers instead, `[base offset][bytes 8..12][e as
    /// big-endian i32][bytes 16..]`, which stamps the partition leader epoch
    /// (outside the CRC) without copying either. On a write error nothing is
    /// published or indexed and the next append rewrites the same bytes.
    /// Returns (base offset, last offset, max timestamp, batch count).
    pub(crate) fn append_validated(
        &mut self,
        batches: &[u8],
        epoch: Option<i32>,
        now_ms: i64,
        io: &dyn FileIo,
    ) -> Result<(u64, u64, i64, usize), LogError> {
        const MAX_PER_WRITE: usize = MAX_WRITE_BUFS / 2;
        let bufs_per_batch = if epoch.is_some() { 4 } else { 2 };
        let per_write = MAX_WRITE_BUFS / bufs_per_batch;
        let epoch_bytes = epoch.unwrap_or(0).to_be_bytes();
        let start = self.end;
        // Pass 1: write, up to `per_write` batches per pwritev.
        let mut next = self.next_offset;
        let mut pos = 0usize;
        while pos < batches.len() {
            let chunk_pos = pos;
            let mut heads = [[0u8; 8]; MAX_PER_WRITE];
            let mut bodies: [&[u8]; MAX_PER_WRITE] = [&[]; MAX_PER_WRITE];
            let mut n = 0;
            while n < per_write && pos < batches.len() {
                let Ok(h) = BatchHeader::parse(&batches[pos..]) else {
                    break;
                };
                let total = h.total_len();
                // A parsed header is at least `HEADER_LEN` bytes, so an
                // epoch split at 12..16 always lies inside the batch.
                let Some(body) = batches.get(pos + 8..pos + total) else {
                    break;
                };
                heads[n] = (next as i64).to_be_bytes();
                bodies[n] = body;
                next += h.last_offset_delta as u64 + 1;
                pos += total;
                n += 1;
            }
            if n == 0 {
                break;
            }
            let mut bufs: [&[u8]; MAX_WRITE_BUFS] = [&[]; MAX_WRITE_BUFS];
            let mut used = 0;
            for i in 0..n {
                bufs[used] = &heads[i];
                used += 1;
                match epoch {
                    None => {
                        bufs[used] = bodies[i];
                        used += 1;
                    }
                    Some(_) => {
                        // body = batch bytes 8..: length (4), epoch (4), rest.
                        bufs[used] = &bodies[i][..4];
                        bufs[used + 1] = &epoch_bytes;
                        bufs[used + 2] = &bodies[i][8..];
                        used += 3;
                    }
                }
            }
            self.log_w
                .write_at(start + chunk_pos, &bufs[..used], io)
                .map_err(|e| LogError::io(&self.seg.log_path, e))?;
        }
        let written = pos;
        // Pass 2: indexes (headers only), then publish.
        let first_offset = self.next_offset;
        let mut next = self.next_offset;
        let mut pos = 0usize;
        let mut max_ts = i64::MIN;
        let mut count = 0usize;
        while pos < written {
            let Ok(h) = BatchHeader::parse(&batches[pos..]) else {
                break;
            };
            let rel = (next - self.seg.base) as u32;
            let up = self.builder.on_batch(start + pos, rel, h.max_timestamp);
            if let Some(e) = up.offset {
                self.index.push(&index::encode_offset_entry(e), io);
            }
            if let Some(t) = up.time {
                self.time.push(&index::encode_time_entry(t), io);
            }
            max_ts = max_ts.max(h.max_timestamp);
            next += h.last_offset_delta as u64 + 1;
            pos += h.total_len();
            count += 1;
        }
        self.end = start + pos;
        self.next_offset = next;
        if self.first_append_ms.is_none() {
            self.first_append_ms = Some(now_ms);
        }
        self.log_w.publish(self.end);
        self.seg.max_timestamp.fetch_max(max_ts, Ordering::AcqRel);
        self.seg.next_offset.store(next, Ordering::Release);
        Ok((first_offset, next - 1, max_ts, count))
    }

    /// The whole pages appended since the previous call, `[from, to)`, for
    /// asynchronous writeback outside the writer lock. The partial last
    /// page is left for later: the next append writes into it, and a write
    /// into a page under writeback waits for that I/O to finish (seen as
    /// `pwritev` blocked in `__filemap_get_folio` under interval flushing).
    pub(crate) fn take_writeback_range(&mut self) -> (usize, usize) {
        let from = self.writeback_mark.min(self.end);
        let to = (self.end / WRITEBACK_PAGE * WRITEBACK_PAGE).max(from);
        self.writeback_mark = to;
        (from, to)
    }

    /// Bytes appended but not yet handed to writeback by
    /// [`ActiveSegment::take_writeback_range`].
    pub(crate) fn unstarted_writeback(&self) -> usize {
        self.end - self.writeback_mark.min(self.end)
    }

    /// Trims the preallocated tails of all three files (close, and before
    /// sealing); with `sync`, also fsyncs them. Appends may continue
    /// afterwards (space is reserved again on demand).
    pub(crate) fn trim(&mut self, io: &dyn FileIo, sync: bool) -> Result<(), LogError> {
        let path = self.seg.log_path.clone();
        let len = (self.end as u64).max(self.trim_floor);
        io.set_len(&self.file, len).map_err(io_err(&path))?;
        self.allocated = len;
        self.log_w.set_writable(len as usize);
        for ix in [&mut self.index, &mut self.time] {
            ix.trim(io).map_err(io_err(&ix.path))?;
        }
        if sync {
            for (file, path) in self.files() {
                io.sync_data(&file).map_err(|e| LogError::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// The three files with their paths, `.log` first (for syncing).
    pub(crate) fn files(&self) -> [(Arc<File>, PathBuf); 3] {
        [
            (self.file.clone(), self.seg.log_path.clone()),
            (self.index.file.clone(), self.index.path.clone()),
            (self.time.file.clone(), self.time.path.clone()),
        ]
    }

    /// Seals the segment: a read-only
    /// view that replaces this one in the segment list.
    /// Call [`ActiveSegment::trim`] first: sealing itself only remaps.
    pub(crate) fn seal(self) -> Result<Arc<Segment>, LogError> {
        let log =
            Region::map_read_only(&self.file, self.end).map_err(io_err(&self.seg.log_path))?;
        let index = map_index_ro(&self.seg.index_path, self.index.count * OFFSET_ENTRY_LEN)?;
        let time = map_index_ro(&self.seg.time_path, self.time.count * TIME_ENTRY_LEN)?;
        let old = &self.seg;
        Ok(Arc::new(Segment {
            base: old.base,
            log_path: old.log_path.clone(),
            index_path: old.index_path.clone(),
            time_path: old.time_path.clone(),
            log,
            index,
            time,
            next_offset: AtomicU64::new(self.next_offset),
            max_timestamp: AtomicI64::new(old.max_timestamp()),
            trusted_from: old.trusted_from,
            verified: AtomicUsize::new(old.verified.load(Ordering::Acquire)),
            modified_ms: AtomicI64::new(crate::now_ms()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::OsFileIo;
    use sluice_protocol::batch::RecordBatchBuilder;

    /// Early writeback never hands the kernel the partial last page: the
    /// next append writes into it, and would wait for its I/O.
    #[test]
    fn writeback_ranges_are_whole_pages_and_the_partial_tail_waits() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SegmentSettings {
            segment_bytes: 1 << 20,
            index_interval: 4096,
            preallocate: 1 << 20,
            max_batch: 1 << 20,
        };
        let io = OsFileIo;
        let mut seg = ActiveSegment::create(dir.path(), 0, &settings, &io).unwrap();
        let mut b = RecordBatchBuilder::new();
        b.push(1, None, Some(&[7u8; 2_900]), &[]);
        let batch = b.finish();
        let append = |seg: &mut ActiveSegment| {
            seg.reserve(batch.len(), settings.preallocate, &io).unwrap();
            seg.append_validated(&batch, None, 1, &io).unwrap();
        };
        append(&mut seg);
        // Under one page: nothing to hand over yet.
        assert!(seg.end < WRITEBACK_PAGE);
        assert_eq!(seg.take_writeback_range(), (0, 0));
        append(&mut seg);
        append(&mut seg);
        assert!(seg.end > 2 * WRITEBACK_PAGE && seg.end < 3 * WRITEBACK_PAGE);
        assert_eq!(seg.take_writeback_range(), (0, 2 * WRITEBACK_PAGE));
        assert_eq!(seg.unstarted_writeback(), seg.end - 2 * WRITEBACK_PAGE);
        // Nothing new on a whole page: an empty range, the mark stays.
        assert_eq!(
            seg.take_writeback_range(),
            (2 * WRITEBACK_PAGE, 2 * WRITEBACK_PAGE)
        );
        append(&mut seg);
        let to = seg.end / WRITEBACK_PAGE * WRITEBACK_PAGE;
        assert_eq!(seg.take_writeback_range(), (2 * WRITEBACK_PAGE, to));
    }
}
