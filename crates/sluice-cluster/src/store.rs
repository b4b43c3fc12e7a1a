//! The controller's files, each made durable with fsync before it is reported so.
//!
//! A controller directory holds three files:
//!
//! | file            | content                                              | written by          |
//! |-----------------|------------------------------------------------------|---------------------|
//! | `raft.log`      | the Raft log: header, then records back to back      | append / truncate / purge |
//! | `vote`          | the last saved vote (an atomic file)                 | temp+fsync+rename+dir fsync |
//! | `snapshot`      | metadata + last applied log id + last membership (an atomic file) | same |
//!
//! ## `raft.log`
//!
//! | bytes | field                                                     |
//! |-------|-----------------------------------------------------------|
//! | 0..8  | magic `SLRAFTL1`                                          |
//! | then, per record:                                                 ||
//! | 4     | `len` u32 big-endian: payload length (≤ [`MAX_RECORD`])   |
//! | 4     | CRC-32C (Castagnoli) of the payload, u32 big-endian       |
//! | len   | payload: serde_json of a [`LogRecord`]                    |
//!
//! A [`LogRecord`] is either an openraft entry or a `Purged` marker holding the
//! last purged log id (written first when the file is rewritten by a purge).
//!
//! - Append writes the records and fsyncs the file before returning, so the
//!   caller may then report them flushed.
//! - Truncating a suffix cuts the file at the first removed record
//!   (`set_len`) and fsyncs it.
//! - Purging a prefix rewrites the file: a `Purged` marker and the kept records
//!   go to `raft.log.tmp`, which is fsynced, renamed over `raft.log`, and the
//!   directory is fsynced.
//! - On open, records are read until the first incomplete record, bad length or
//!   CRC mismatch, or undecodable payload; the file is cut there, fsynced, and
//!   what was cut is logged. A bad magic is an error (never silently emptied).
//!
//! ## Atomic files (`vote`, `snapshot`)
//!
//! | bytes | field                                                 |
//! |-------|-------------------------------------------------------|
//! | 0..8  | magic: `SLVOTE01` (vote) or `SLSNAP01` (snapshot)     |
//! | 4     | `len` u32 big-endian: payload length                  |
//! | 4     | CRC-32C of the payload, u32 big-endian                |
//! | len   | payload: serde_json of the value                      |
//!
//! Written as `<name>.tmp`, fsynced, renamed over `<name>`, directory fsynced,
//! so a reader sees the old or the new file whole. A present but damaged file
//! is an error: the vote and the snapshot must never be silently forgotten.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{ClusterError, Result};

/// Magic at the start of `raft.log`.
pub const LOG_MAGIC: &[u8; 8] = b"SLRAFTL1";
/// Magic of the vote file.
pub const VOTE_MAGIC: &[u8; 8] = b"SLVOTE01";
/// Magic of the snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"SLSNAP01";
/// Magic of the `committed` file (the last committed log id).
pub const COMMITTED_MAGIC: &[u8; 8] = b"SLCOMT01";
/// Largest record or atomic-file payload accepted on read (checked before allocating).
pub const MAX_RECORD: u32 = 64 << 20;

const RECORD_HEADER: usize = 8;

/// One record of `raft.log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogRecord<E, L> {
    /// A Raft log entry.
    Entry(E),
    /// The last purged log id; everything up to it is gone.
    Purged(L),
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ClusterError + 'a {
    move |source| ClusterError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Fsyncs a directory so a rename or a new file in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync dir", dir))
}

fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| ClusterError::Corrupt {
            path: PathBuf::new(),
            reason: format!("record of {} bytes exceeds {MAX_RECORD}", payload.len()),
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes one record at the start of `buf`: `Ok(Some((payload, consumed)))`,
/// `Ok(None)` if incomplete, `Err(reason)` if damaged.
fn decode_record(buf: &[u8]) -> std::result::Result<Option<(&[u8], usize)>, String> {
    if buf.len() < RECORD_HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD {
        return Err(format!("record length {len} exceeds {MAX_RECORD}"));
    }
    let end = RECORD_HEADER + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let payload = &buf[RECORD_HEADER..end];
    if crc32c::crc32c(payload) != crc {
        return Err("CRC mismatch".into());
    }
    Ok(Some((payload, end)))
}

/// Writes `value` to `dir/name` atomically and durably (see module docs).
pub fn write_atomic<T: Serialize>(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    value: &T,
) -> Result<()> {
    let payload = serde_json::to_vec(value)?;
    let mut buf = Vec::with_capacity(8 + RECORD_HEADER + payload.len());
    buf.extend_from_slice(magic);
    encode_record(&payload, &mut buf)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(&buf).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(dir)
}

/// Reads an atomic file; `Ok(None)` if it does not exist, an error if damaged.
pub fn read_atomic<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
) -> Result<Option<T>> {
    let path = dir.join(name);
    let buf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let corrupt = |reason: String| ClusterError::Corrupt {
        path: path.clone(),
        reason,
    };
    if buf.len() < 8 || &buf[..8] != magic {
        return Err(corrupt("bad magic".into()));
    }
    match decode_record(&buf[8..]) {
        Ok(Some((payload, used))) if 8 + used == buf.len() => Ok(Some(
            serde_json::from_slice(payload).map_err(|e| corrupt(e.to_string()))?,
        )),
        Ok(Some(_)) => Err(corrupt("trailing bytes".into())),
        Ok(None) => Err(corrupt("truncated".into())),
        Err(reason) => Err(corrupt(reason)),
    }
}

/// The append-only record file `raft.log` (see module docs).
#[derive(Debug)]
pub struct RecordLog {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// File offset where each record currently in the file starts, in order.
    offsets: Vec<u64>,
    len: u64,
}

impl RecordLog {
    /// File name of the log inside the controller directory.
    pub const FILE: &'static str = "raft.log";

    /// Opens (or creates) `dir/raft.log`, cutting a torn or corrupt tail,
    /// and returns it with the decoded records in file order.
    pub fn open<R: DeserializeOwned>(dir: &Path) -> Result<(Self, Vec<R>)> {
        let path = dir.join(Self::FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io_err("read", &path))?;
        if buf.is_empty() {
            file.write_all(LOG_MAGIC).map_err(io_err("write", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
            sync_dir(dir)?;
            buf.extend_from_slice(LOG_MAGIC);
        } else if buf.len() < 8 || &buf[..8] != LOG_MAGIC {
            return Err(ClusterError::Corrupt {
                path,
                reason: "bad magic".into(),
            });
        }
        let mut pos = 8usize;
        let mut offsets = Vec::new();
        let mut records = Vec::new();
        let mut damage = None;
        while pos < buf.len() {
            match decode_record(&buf[pos..]) {
                Ok(Some((payload, used))) => match serde_json::from_slice::<R>(payload) {
                    Ok(r) => {
                        offsets.push(pos as u64);
                        records.push(r);
                        pos += used;
                    }
                    Err(e) => {
                        damage = Some(format!("undecodable record: {e}"));
                        break;
                    }
                },
                Ok(None) => {
                    damage = Some("incomplete record".into());
                    break;
                }
                Err(reason) => {
                    damage = Some(reason);
                    break;
                }
            }
        }
        if let Some(reason) = damage {
            tracing::warn!(
                path = %path.display(),
                offset = pos,
                cut_bytes = buf.len() - pos,
                kept_records = records.len(),
                "raft log: cutting torn or corrupt tail ({reason})"
            );
            file.set_len(pos as u64)
                .map_err(io_err("truncate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        let log = RecordLog {
            dir: dir.to_path_buf(),
            path,
            file,
            offsets,
            len: pos as u64,
        };
        Ok((log, records))
    }

    /// Number of records in the file.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the file holds no record.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Appends records and fsyncs; returns only once they are durable.
    pub fn append<R: Serialize>(&mut self, records: &[R]) -> Result<()> {
        let mut buf = Vec::new();
        let mut new_offsets = Vec::with_capacity(records.len());
        for r in records {
            new_offsets.push(self.len + buf.len() as u64);
            encode_record(&serde_json::to_vec(r)?, &mut buf)?;
        }
        use std::io::{Seek, SeekFrom};
        self.file
            .seek(SeekFrom::Start(self.len))
            .map_err(io_err("seek", &self.path))?;
        self.file
            .write_all(&buf)
            .map_err(io_err("write", &self.path))?;
        self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        self.len += buf.len() as u64;
        self.offsets.extend(new_offsets);
        Ok(())
    }

    /// Removes record number `keep` and all after it, durably.
    pub fn truncate(&mut self, keep: usize) -> Result<()> {
        let Some(&at) = self.offsets.get(keep) else {
            return Ok(());
        };
        self.file
            .set_len(at)
            .map_err(io_err("truncate", &self.path))?;
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        self.offsets.truncate(keep);
        self.len = at;
        Ok(())
    }

    /// Replaces the whole file by `records`, atomically and durably.
    pub fn rewrite<R: Serialize>(&mut self, records: &[R]) -> Result<()> {
        let tmp = self.dir.join(format!("{}.tmp", Self::FILE));
        let mut buf = Vec::from(&LOG_MAGIC[..]);
        let mut offsets = Vec::with_capacity(records.len());
        for r in records {
            offsets.push(buf.len() as u64);
            encode_record(&serde_json::to_vec(r)?, &mut buf)?;
        }
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&buf).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io_err("rename", &self.path))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io_err("open", &self.path))?;
        self.offsets = offsets;
        self.len = buf.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rec = LogRecord<(u64, String), u64>;

    fn entry(i: u64) -> Rec {
        LogRecord::Entry((i, format!("entry {i}")))
    }

    #[test]
    fn log_round_trip_truncate_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, recs) = RecordLog::open::<Rec>(dir.path()).expect("open");
            assert!(recs.is_empty());
            log.append(&[entry(1), entry(2), entry(3)]).expect("append");
            log.append(&[entry(4)]).expect("append");
            log.truncate(3).expect("truncate");
            log.append(&[entry(5)]).expect("append");
        }
        let (mut log, recs) = RecordLog::open::<Rec>(dir.path()).expect("reopen");
        assert_eq!(recs, vec![entry(1), entry(2), entry(3), entry(5)]);
        log.rewrite(&[LogRecord::Purged(2), entry(3), entry(5)])
            .expect("rewrite");
        log.append(&[entry(6)]).expect("append");
        drop(log);
        let (log, recs) = RecordLog::open::<Rec>(dir.path()).expect("reopen");
        assert_eq!(
            recs,
            vec![LogRecord::Purged(2), entry(3), entry(5), entry(6)]
        );
        assert_eq!(log.len(), 4);
        assert!(!dir.path().join("raft.log.tmp").exists());
    }

    #[test]
    fn torn_and_corrupt_tails_are_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(RecordLog::FILE);
        {
            let (mut log, _) = RecordLog::open::<Rec>(dir.path()).expect("open");
            log.append(&[entry(1), entry(2)]).expect("append");
        }
        let good_len = std::fs::metadata(&path).expect("meta").len();
        // A torn tail: half a record header plus garbage.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0, 0, 0, 50, 1, 2]).expect("write");
        drop(f);
        let (mut log, recs) = RecordLog::open::<Rec>(dir.path()).expect("reopen");
        assert_eq!(recs, vec![entry(1), entry(2)]);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);
        log.append(&[entry(3)]).expect("append after cut");
        drop(log);
        // Flip a byte in the last record's payload: CRC fails, record 3 is cut.
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let (_, recs) = RecordLog::open::<Rec>(dir.path()).expect("reopen");
        assert_eq!(recs, vec![entry(1), entry(2)]);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);
        // A huge length is refused without allocating it.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0xff; 16]).expect("write");
        drop(f);
        let (_, recs) = RecordLog::open::<Rec>(dir.path()).expect("reopen");
        assert_eq!(recs.len(), 2);
    }

    #[test]
    fn bad_log_magic_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(RecordLog::FILE), b"NOTALOG!....").expect("write");
        assert!(matches!(
            RecordLog::open::<Rec>(dir.path()),
            Err(ClusterError::Corrupt { .. })
        ));
    }

    #[test]
    fn atomic_file_round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none: Option<(u64, u64)> = read_atomic(dir.path(), "vote", VOTE_MAGIC).expect("read");
        assert_eq!(none, None);
        write_atomic(dir.path(), "vote", VOTE_MAGIC, &(3u64, 7u64)).expect("write");
        write_atomic(dir.path(), "vote", VOTE_MAGIC, &(4u64, 9u64)).expect("write");
        let v: Option<(u64, u64)> = read_atomic(dir.path(), "vote", VOTE_MAGIC).expect("read");
        assert_eq!(v, Some((4, 9)));
        assert!(!dir.path().join("vote.tmp").exists());
        // Wrong magic (a snapshot file read as a vote) and a flipped byte are errors.
        assert!(read_atomic::<(u64, u64)>(dir.path(), "vote", SNAPSHOT_MAGIC).is_err());
        let path = dir.path().join("vote");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            read_atomic::<(u64, u64)>(dir.path(), "vote", VOTE_MAGIC),
            Err(ClusterError::Corrupt { .. })
        ));
        bytes.truncate(10);
        std::fs::write(&path, &bytes).expect("write");
        assert!(read_atomic::<(u64, u64)>(dir.path(), "vote", VOTE_MAGIC).is_err());
    }
}
