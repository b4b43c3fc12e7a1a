//! The `recovery-point` file: the offset below which every batch was
//! fsynced, and whether the log was closed cleanly.
//!
//! | offset | size | field           | value                                         |
//! |-------:|-----:|-----------------|-----------------------------------------------|
//! |      0 |    4 | magic           | `SLRP`                                        |
//! |      4 |    2 | version         | 1 (u16)                                       |
//! |      6 |    2 | flags           | bit 0: clean shutdown; other bits 0 (u16)     |
//! |      8 |    8 | recovery_offset | every offset below it was fsynced (u64)       |
//! |     16 |    4 | crc             | `crc32fast` (IEEE CRC-32) of bytes 0..16 (u32)|
//!
//! All integers big-endian; the file is exactly 20 bytes. It is replaced
//! atomically: written to `recovery-point.tmp`, fsynced, renamed over
//! `recovery-point`, and the directory is fsynced.

use std::fs::OpenOptions;
use std::path::Path;

use crate::error::LogError;
use crate::io::FileIo;

/// File name of the checkpoint inside a partition directory.
pub(crate) const FILE_NAME: &str = "recovery-point";
/// Temporary name it is written to before the rename.
const TMP_NAME: &str = "recovery-point.tmp";
const MAGIC: &[u8; 4] = b"SLRP";
const VERSION: u16 = 1;
const FLAG_CLEAN: u16 = 1;
/// Encoded length in bytes.
pub(crate) const LEN: usize = 20;

/// A decoded checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Every offset below this was fsynced.
    pub recovery_offset: u64,
    /// Written by a successful `close` (everything synced, nothing appended after).
    pub clean: bool,
}

/// The 20 bytes of `cp`.
pub(crate) fn encode(cp: Checkpoint) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[0..4].copy_from_slice(MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_be_bytes());
    let flags = if cp.clean { FLAG_CLEAN } else { 0 };
    out[6..8].copy_from_slice(&flags.to_be_bytes());
    out[8..16].copy_from_slice(&cp.recovery_offset.to_be_bytes());
    let crc = crc32fast::hash(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes a checkpoint, or says why it is not one.
pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() != LEN {
        return Err(format!("{} bytes where {LEN} were expected", bytes.len()));
    }
    let be16 = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[16..20]);
    if crc32fast::hash(&bytes[0..16]) != u32::from_be_bytes(crc) {
        return Err("CRC mismatch".into());
    }
    if &bytes[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    if be16(4) != VERSION {
        return Err(format!("unsupported version {}", be16(4)));
    }
    let flags = be16(6);
    if flags & !FLAG_CLEAN != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&bytes[8..16]);
    Ok(Checkpoint {
        recovery_offset: u64::from_be_bytes(off),
        clean: flags & FLAG_CLEAN != 0,
    })
}

/// Reads the checkpoint of `dir`: `Ok(None)` when there is none, `Err(why)`
/// when it is unreadable or damaged.
pub(crate) fn read(dir: &Path) -> Result<Option<Checkpoint>, String> {
    read_with(dir, FILE_NAME, decode)
}

/// Atomically replaces the checkpoint of `dir` (temp file, fsync, rename,
/// directory fsync).
pub(crate) fn write(io: &dyn FileIo, dir: &Path, cp: Checkpoint) -> Result<(), LogError> {
    replace(io, dir, TMP_NAME, FILE_NAME, &encode(cp))
}

/// Removes the checkpoint (and a leftover temp file) and fsyncs the
/// directory: the fallback when a new one cannot be written (a full disk),
/// so that no stale clean-shutdown flag survives. Needs no free space.
pub(crate) fn remove(io: &dyn FileIo, dir: &Path) -> Result<(), LogError> {
    remove_files(io, dir, [FILE_NAME, TMP_NAME])
}

/// Writes `cp`, or, if that fails, removes the checkpoint instead (the next
/// open after a crash then CRC-checks the whole log). Returns whether `cp`
/// was written; an error only when neither worked.
pub(crate) fn write_or_remove(
    io: &dyn FileIo,
    dir: &Path,
    cp: Checkpoint,
) -> Result<bool, LogError> {
    match write(io, dir, cp) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the recovery point; removing it");
            remove(io, dir)?;
            Ok(false)
        }
    }
}

/// File name of the pending-truncation marker (see [`write_truncation`]).
pub(crate) const TRUNCATION_FILE: &str = "truncate-to";
const TRUNCATION_TMP: &str = "truncate-to.tmp";
const TRUNCATION_MAGIC: &[u8; 4] = b"SLTR";

/// The 20 bytes of a truncation marker for `offset`: the checkpoint layout
/// with magic `SLTR`, version 1, flags 0.
pub(crate) fn encode_truncation(offset: u64) -> [u8; LEN] {
    encode_marker(TRUNCATION_MAGIC, offset)
}

/// Decodes a truncation marker into its offset, or says why it is not one.
pub(crate) fn decode_truncation(bytes: &[u8]) -> Result<u64, String> {
    decode_marker(TRUNCATION_MAGIC, bytes)
}

/// The 20 bytes of an offset marker: the checkpoint layout with `magic`,
/// version 1, flags 0.
fn encode_marker(magic: &[u8; 4], offset: u64) -> [u8; LEN] {
    let mut out = encode(Checkpoint {
        recovery_offset: offset,
        clean: false,
    });
    out[0..4].copy_from_slice(magic);
    let crc = crc32fast::hash(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes an offset marker with `magic`, or says why it is not one.
fn decode_marker(magic: &[u8; 4], bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() != LEN {
        return Err(format!("{} bytes where {LEN} were expected", bytes.len()));
    }
    if &bytes[0..4] != magic {
        return Err("bad magic".into());
    }
    let mut as_cp = [0u8; LEN];
    as_cp.copy_from_slice(bytes);
    as_cp[0..4].copy_from_slice(MAGIC);
    let crc = crc32fast::hash(&as_cp[0..16]);
    as_cp[16..20].copy_from_slice(&crc.to_be_bytes());
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[16..20]);
    if crc32fast::hash(&bytes[0..16]) != u32::from_be_bytes(stored) {
        return Err("CRC mismatch".into());
    }
    let cp = decode(&as_cp)?;
    if cp.clean {
        return Err("unknown flags 0x1".into());
    }
    Ok(cp.recovery_offset)
}

/// Reads the pending-truncation marker of `dir`: `Ok(None)` when there is none.
pub(crate) fn read_truncation(dir: &Path) -> Result<Option<u64>, String> {
    read_with(dir, TRUNCATION_FILE, decode_truncation)
}

/// Durably records that the log in `dir` is being cut at `offset` (temp
/// file, fsync, rename, directory fsync): from here on, an open completes
/// the cut before anything else.
pub(crate) fn write_truncation(io: &dyn FileIo, dir: &Path, offset: u64) -> Result<(), LogError> {
    replace(
        io,
        dir,
        TRUNCATION_TMP,
        TRUNCATION_FILE,
        &encode_truncation(offset),
    )
}

/// Removes the truncation marker (and a leftover temp file) durably, once
/// the cut it records is complete on disk.
pub(crate) fn remove_truncation(io: &dyn FileIo, dir: &Path) -> Result<(), LogError> {
    remove_files(io, dir, [TRUNCATION_FILE, TRUNCATION_TMP])
}

/// File name of the pending-restart marker (see [`write_restart`]).
pub(crate) const RESTART_FILE: &str = "restart-at";
const RESTART_TMP: &str = "restart-at.tmp";
const RESTART_MAGIC: &[u8; 4] = b"SLRS";

/// The 20 bytes of a restart marker for `offset` (magic `SLRS`).
pub(crate) fn encode_restart(offset: u64) -> [u8; LEN] {
    encode_marker(RESTART_MAGIC, offset)
}

/// Decodes a restart marker into its offset, or says why it is not one.
pub(crate) fn decode_restart(bytes: &[u8]) -> Result<u64, String> {
    decode_marker(RESTART_MAGIC, bytes)
}

/// Reads the pending-restart marker of `dir`: `Ok(None)` when there is none.
pub(crate) fn read_restart(dir: &Path) -> Result<Option<u64>, String> {
    read_with(dir, RESTART_FILE, decode_restart)
}

/// Durably records that the log in `dir` is being emptied to start again
/// at `offset`: from here on, an open completes it before anything else.
pub(crate) fn write_restart(io: &dyn FileIo, dir: &Path, offset: u64) -> Result<(), LogError> {
    replace(io, dir, RESTART_TMP, RESTART_FILE, &encode_restart(offset))
}

/// Removes the restart marker (and a leftover temp file) durably.
pub(crate) fn remove_restart(io: &dyn FileIo, dir: &Path) -> Result<(), LogError> {
    remove_files(io, dir, [RESTART_FILE, RESTART_TMP])
}

/// File name of the log-start marker (see [`write_log_start`]).
pub(crate) const LOG_START_FILE: &str = "log-start";
const LOG_START_TMP: &str = "log-start.tmp";
const LOG_START_MAGIC: &[u8; 4] = b"SLLS";

/// The 20 bytes of a log-start marker for `offset` (magic `SLLS`).
pub(crate) fn encode_log_start(offset: u64) -> [u8; LEN] {
    encode_marker(LOG_START_MAGIC, offset)
}

/// Decodes a log-start marker into its offset, or says why it is not one.
pub(crate) fn decode_log_start(bytes: &[u8]) -> Result<u64, String> {
    decode_marker(LOG_START_MAGIC, bytes)
}

/// Reads the log-start marker of `dir`: `Ok(None)` when there is none.
pub(crate) fn read_log_start(dir: &Path) -> Result<Option<u64>, String> {
    read_with(dir, LOG_START_FILE, decode_log_start)
}

/// Durably records that the log in `dir` starts at `offset` (records below
/// it were deleted by request, whatever segments still hold them).
pub(crate) fn write_log_start(io: &dyn FileIo, dir: &Path, offset: u64) -> Result<(), LogError> {
    replace(
        io,
        dir,
        LOG_START_TMP,
        LOG_START_FILE,
        &encode_log_start(offset),
    )
}

/// Reads and decodes `dir/name`: `Ok(None)` when it does not exist.
fn read_with<T>(
    dir: &Path,
    name: &str,
    decode: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

/// Atomically replaces `dir/name` with `bytes` (write `dir/tmp_name`,
/// fsync, rename, directory fsync).
fn replace(
    io: &dyn FileIo,
    dir: &Path,
    tmp_name: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), LogError> {
    let tmp = dir.join(tmp_name);
    let path = dir.join(name);
    let f = io
        .open(
            &tmp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
        .map_err(|e| LogError::io(&tmp, e))?;
    crate::io::write_all_at(io, &f, 0, bytes).map_err(|e| LogError::io(&tmp, e))?;
    io.sync_all(&f).map_err(|e| LogError::io(&tmp, e))?;
    drop(f);
    io.rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    crate::segment::sync_dir(io, dir)
}

/// Removes the named files of `dir` (a missing one is fine) and fsyncs the
/// directory; needs no free space.
fn remove_files(io: &dyn FileIo, dir: &Path, names: [&str; 2]) -> Result<(), LogError> {
    for name in names {
        let p = dir.join(name);
        match io.remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(&p, e)),
        }
    }
    crate::segment::sync_dir(io, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for cp in [
            Checkpoint {
                recovery_offset: 0,
                clean: false,
            },
            Checkpoint {
                recovery_offset: 12_345,
                clean: true,
            },
            Checkpoint {
                recovery_offset: u64::MAX,
                clean: false,
            },
        ] {
            assert_eq!(decode(&encode(cp)), Ok(cp));
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let good = encode(Checkpoint {
            recovery_offset: 0x0102_0304_0506_0708,
            clean: true,
        });
        for i in 0..LEN {
            for bit in 0..8 {
                let mut bad = good;
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "byte {i} bit {bit} not detected");
            }
        }
        assert!(decode(&good[..LEN - 1]).is_err());
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[0u8; LEN]).is_err());
    }

    #[test]
    fn log_start_marker_round_trips_and_is_no_other_marker() {
        for off in [0u64, 7, u64::MAX] {
            let b = encode_log_start(off);
            assert_eq!(decode_log_start(&b), Ok(off));
            assert!(decode(&b).is_err());
            assert!(decode_restart(&b).is_err());
            assert!(decode_truncation(&b).is_err());
            assert!(decode_log_start(&encode_restart(off)).is_err());
        }
        let mut bad = encode_log_start(9);
        bad[10] ^= 4;
        assert!(decode_log_start(&bad).is_err());
    }

    #[test]
    fn truncation_marker_round_trip_and_damage() {
        for off in [0u64, 42, u64::MAX] {
            let b = encode_truncation(off);
            assert_eq!(decode_truncation(&b), Ok(off));
            // A marker is never taken for a checkpoint, nor the reverse.
            assert!(decode(&b).is_err());
        }
        let cp = encode(Checkpoint {
            recovery_offset: 5,
            clean: false,
        });
        assert!(decode_truncation(&cp).is_err());
        let good = encode_truncation(0x0102_0304);
        for i in 0..LEN {
            let mut bad = good;
            bad[i] ^= 0x10;
            assert!(decode_truncation(&bad).is_err(), "byte {i} not detected");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_truncation(dir.path()), Ok(None));
        write_truncation(&crate::OsFileIo, dir.path(), 99).unwrap();
        assert_eq!(read_truncation(dir.path()), Ok(Some(99)));
        remove_truncation(&crate::OsFileIo, dir.path()).unwrap();
        assert_eq!(read_truncation(dir.path()), Ok(None));
    }

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        let cp = Checkpoint {
            recovery_offset: 77,
            clean: false,
        };
        write(&crate::OsFileIo, dir.path(), cp).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(cp)));
        let cp2 = Checkpoint {
            recovery_offset: 99,
            clean: true,
        };
        write(&crate::OsFileIo, dir.path(), cp2).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(cp2)));
        assert!(!dir.path().join(TMP_NAME).exists());
        std::fs::write(dir.path().join(FILE_NAME), b"garbage").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
