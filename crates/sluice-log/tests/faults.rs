//! Damaged files, failing syscalls, a full disk.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use sluice_log::{FaultyFileIo, FlushPolicy, Log, LogConfig, LogError};

fn modify(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut data = std::fs::read(path).unwrap();
    f(&mut data);
    std::fs::write(path, data).unwrap();
}

/// Writes `n` batches (3 records each) and closes; returns the batches.
fn populate(dir: &Path, config: &LogConfig, n: u64) -> Vec<bytes::Bytes> {
    let log = Log::open(dir, config.clone()).unwrap();
    let mut written = Vec::new();
    for i in 0..n {
        let b = make_batch(i, 3, 300 + (i as usize % 4) * 50, 1_000 + i as i64);
        log.append(&b).unwrap();
        written.push(b);
    }
    log.close().unwrap();
    written
}

fn assert_prefix(log: &Log, written: &[bytes::Bytes], n: usize) {
    let all = read_all(log);
    assert_eq!(all.len(), n);
    for ((_, got), w) in all.iter().zip(written) {
        assert_eq!(body(got), body(w));
    }
}

fn active_log(dir: &Path) -> std::path::PathBuf {
    seg_path(dir, *log_files(dir).last().unwrap(), "log")
}

#[test]
fn truncated_tail_mid_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 10);
    let path = active_log(dir.path());
    let (last_pos, last) = *batch_positions(&path).last().unwrap();
    modify(&path, |d| d.truncate(last_pos + last.total_len() / 2));
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), last.base_offset as u64);
    assert_prefix(&log, &written, 9);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last_pos as u64);
    // New appends continue from the cut.
    assert_eq!(
        log.append(&written[9]).unwrap().base_offset,
        last.base_offset as u64
    );
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_prefix(&log, &written, 10);
}

#[test]
fn flipped_byte_in_last_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 10);
    let path = active_log(dir.path());
    let (last_pos, last) = *batch_positions(&path).last().unwrap();
    modify(&path, |d| d[last_pos + 70] ^= 0x01);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), last.base_offset as u64);
    assert_prefix(&log, &written, 9);
}

#[test]
fn flipped_byte_before_last_index_entry_of_active_segment_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let written = populate(dir.path(), &config, 20);
    let path = active_log(dir.path());
    let positions = batch_positions(&path);
    let (pos, h) = positions[1];
    modify(&path, |d| d[pos + 80] ^= 0x40);
    let log = Log::open(dir.path(), config).unwrap();
    // Recovery trusts what lies before the last index entry ...
    assert_eq!(log.end_offset(), 60);
    // ... but a read of the damaged batch verifies it.
    match log.read(h.base_offset as u64, 1 << 20) {
        Err(LogError::Corrupt {
            path: p, position, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(position, pos as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Neighbours are fine; a read that runs into the damage stops before it.
    assert_eq!(split(&log.read(0, 1 << 20).unwrap()).len(), 1);
    let after = log.read(h.base_offset as u64 + 3, 1 << 20).unwrap();
    assert_eq!(body(&split(&after)[0].1), body(&written[2]));
}

#[test]
fn flipped_byte_in_sealed_segment_gives_typed_error_and_rest_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 300);
    let bases = log_files(dir.path());
    assert!(bases.len() >= 3);
    let sealed = seg_path(dir.path(), bases[0], "log");
    let positions = batch_positions(&sealed);
    let k = positions.len() / 2;
    let (pos, h) = positions[k];
    modify(&sealed, |d| d[pos + 100] ^= 0xff);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 900);
    match log.read(h.base_offset as u64, 1) {
        Err(LogError::Corrupt {
            path,
            position,
            reason,
        }) => {
            assert_eq!(path, sealed);
            assert_eq!(position, pos as u64);
            assert!(reason.contains("crc"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Batches before it: a big read stops right before the damaged batch.
    let before = log.read(0, 1 << 20).unwrap();
    assert_eq!(split(&before).len(), k);
    // The batch after it, and every other segment, still read.
    let next = log.read(h.last_offset() as u64 + 1, 1).unwrap();
    assert_eq!(body(&split(&next)[0].1), body(&written[k + 1]));
    let mut off = bases[1];
    let mut count = 0;
    while off < log.end_offset() {
        let b = log.read(off, 1 << 20).unwrap();
        for (h, _) in split(&b) {
            off = h.last_offset() as u64 + 1;
            count += 1;
        }
    }
    assert_eq!(count, 300 - positions.len());
}

#[test]
fn missing_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 100);
    let bases = log_files(dir.path());
    let expected_ts = {
        let log = Log::open(dir.path(), small_config()).unwrap();
        (
            log.offset_for_timestamp(1_050).unwrap(),
            log.offset_for_timestamp(1_099).unwrap(),
        )
    };
    let sizes: Vec<u64> = bases
        .iter()
        .map(|&b| {
            std::fs::metadata(seg_path(dir.path(), b, "index"))
                .unwrap()
                .len()
        })
        .collect();
    for &b in &bases {
        std::fs::remove_file(seg_path(dir.path(), b, "index")).unwrap();
        std::fs::remove_file(seg_path(dir.path(), b, "timeindex")).unwrap();
    }
    let log = Log::open(dir.path(), small_config()).unwrap();
    for &b in &bases {
        assert!(seg_path(dir.path(), b, "index").exists());
        assert!(seg_path(dir.path(), b, "timeindex").exists());
    }
    // Sealed indexes are rebuilt to the same size (same entries).
    for (i, &b) in bases[..bases.len() - 1].iter().enumerate() {
        assert_eq!(
            std::fs::metadata(seg_path(dir.path(), b, "index"))
                .unwrap()
                .len(),
            sizes[i]
        );
    }
    assert_prefix(&log, &written, 100);
    assert_eq!(
        (
            log.offset_for_timestamp(1_050).unwrap(),
            log.offset_for_timestamp(1_099).unwrap()
        ),
        expected_ts
    );
    assert_eq!(expected_ts.0, Some((150, 1_050)));
}

#[test]
fn damaged_index_header_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 100);
    let bases = log_files(dir.path());
    let sealed_index = seg_path(dir.path(), bases[0], "index");
    let good = std::fs::read(&sealed_index).unwrap();
    modify(&sealed_index, |d| d[5] ^= 0x7);
    modify(&seg_path(dir.path(), bases[1], "timeindex"), |d| {
        d[0] = b'X'
    });
    // Entries that point beyond the log are damage too.
    modify(
        &seg_path(dir.path(), *bases.last().unwrap(), "index"),
        |d| {
            d.truncate(24);
            d.extend_from_slice(&[0, 0, 0, 5, 0x7f, 0, 0, 0]);
        },
    );
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(std::fs::read(&sealed_index).unwrap(), good);
    assert_prefix(&log, &written, 100);
    assert_eq!(log.offset_for_timestamp(1_099).unwrap(), Some((297, 1_099)));
}

#[test]
fn zero_filled_tail_is_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 10);
    let path = active_log(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    modify(&path, |d| d.extend(std::iter::repeat_n(0u8, 10_000)));
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 30);
    assert_prefix(&log, &written, 10);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
}

#[test]
fn declared_length_exceeding_file_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 10);
    let path = active_log(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    modify(&path, |d| {
        // A plausible header claiming 1 MiB, followed by a few bytes.
        let mut fake = written[0][..61].to_vec();
        fake[0..8].copy_from_slice(&30i64.to_be_bytes());
        fake[8..12].copy_from_slice(&(1i32 << 20).to_be_bytes());
        d.extend_from_slice(&fake);
        d.extend_from_slice(&[7u8; 500]);
    });
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 30);
    assert_prefix(&log, &written, 10);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
}

#[test]
fn garbage_length_fields_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 10);
    let path = active_log(dir.path());
    for garbage in [
        [0xffu8; 12],
        [0x00, 0, 0, 0, 0, 0, 0, 30, 0x80, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 30, 0, 0, 0, 1],
    ] {
        modify(&path, |d| d.extend_from_slice(&garbage));
        let log = Log::open(dir.path(), small_config()).unwrap();
        assert_eq!(log.end_offset(), 30);
        assert_prefix(&log, &written, 10);
    }
}

#[test]
fn fsync_failure_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyFileIo::default());
    let config = LogConfig {
        flush: FlushPolicy::Always,
        ..small_config()
    };
    let log = Log::open_with_io(dir.path(), config.clone(), io.clone()).unwrap();
    let b = make_batch(1, 2, 100, 0);
    log.append(&b).unwrap();
    log.wait_durable(2).unwrap();
    assert_eq!(log.durable_offset(), 2);
    io.fail_sync.store(true, Ordering::SeqCst);
    let info = log.append(&b).unwrap();
    let err = log.wait_durable(info.last_offset + 1).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err:?}");
    assert!(log.is_poisoned());
    assert_eq!(log.durable_offset(), 2);
    // Even with the disk healthy again, nothing is accepted until reopen.
    io.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(log.append(&b), Err(LogError::Poisoned)));
    assert!(matches!(log.wait_durable(4), Err(LogError::Poisoned)));
    assert!(matches!(log.flush(), Err(LogError::Poisoned)));
    // Reads still work.
    assert_eq!(split(&log.read(0, 1 << 20).unwrap()).len(), 2);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert!(!log.is_poisoned());
    assert_eq!(log.append(&b).unwrap().base_offset, 4);
}

#[test]
fn fsync_failure_of_a_sealed_segment_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyFileIo::default());
    let log = Log::open_with_io(dir.path(), small_config(), io.clone()).unwrap();
    let b = make_batch(1, 10, 1000, 0);
    log.append(&b).unwrap();
    io.fail_sync.store(true, Ordering::SeqCst);
    // Append until a roll happened (the sealed segment is synced in the
    // background with FlushPolicy::Os).
    for _ in 0..20 {
        if log.segment_count() > 1 {
            break;
        }
        let _ = log.append(&b);
    }
    assert!(log.segment_count() > 1);
    // Bounded wait for the background sync to fail.
    for _ in 0..200 {
        if log.is_poisoned() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(log.is_poisoned());
    assert!(matches!(log.append(&b), Err(LogError::Poisoned)));
    assert!(log.wait_durable(log.end_offset()).is_err());
    assert!(log.flush().is_err());
}

#[test]
fn fsync_failure_on_roll_with_flush_always_fails_the_rolling_append() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyFileIo::default());
    let config = LogConfig {
        flush: FlushPolicy::Always,
        ..small_config()
    };
    let log = Log::open_with_io(dir.path(), config, io.clone()).unwrap();
    let b = make_batch(1, 10, 1000, 0);
    log.append(&b).unwrap();
    io.fail_sync.store(true, Ordering::SeqCst);
    // Appends do not sync by themselves; the one that rolls does, inline.
    let mut result = Ok(());
    for _ in 0..20 {
        if let Err(e) = log.append(&b) {
            result = Err(e);
            break;
        }
    }
    assert!(matches!(result, Err(LogError::Io { .. })), "{result:?}");
    assert!(log.is_poisoned());
    assert!(matches!(log.append(&b), Err(LogError::Poisoned)));
}

#[test]
fn allocation_failure_is_disk_full_and_leaves_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyFileIo::default());
    let config = LogConfig {
        preallocate_bytes: 4096,
        ..small_config()
    };
    let log = Log::open_with_io(dir.path(), config.clone(), io.clone()).unwrap();
    let b = make_batch(1, 3, 1000, 0);
    log.append(&b).unwrap();
    let size = log.size_bytes();
    io.fail_allocate.store(true, Ordering::SeqCst);
    let mut err = None;
    for _ in 0..30 {
        match log.append(&b) {
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("allocation must fail eventually");
    assert!(matches!(err, LogError::DiskFull { .. }), "{err:?}");
    assert!(!log.is_poisoned());
    let end = log.end_offset();
    assert!(log.size_bytes() >= size);
    io.fail_allocate.store(false, Ordering::SeqCst);
    assert_eq!(log.append(&b).unwrap().base_offset, end);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.end_offset(), end + 3);
    assert_eq!(read_all(&log).len() as u64, (end + 3) / 3);
}

/// Mounts a 4 MiB tmpfs, fills it, and checks ENOSPC surfaces as DiskFull
/// with every acknowledged batch intact after reopen.
#[test]
fn disk_full_on_small_tmpfs() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .output();
    match status {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let euid = effective_uid();
            if euid != Some(0) {
                eprintln!(
                    "SKIP disk_full_on_small_tmpfs: mount needs root: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return;
            }
            panic!(
                "mount failed as root: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => {
            eprintln!("SKIP disk_full_on_small_tmpfs: cannot run mount: {e}");
            return;
        }
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let data = mnt.join("topic-0");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        preallocate_bytes: 256 << 10,
        ..small_config()
    };
    let mut acked = Vec::new();
    let err;
    {
        let log = Log::open(&data, config.clone()).unwrap();
        let mut i = 0u64;
        loop {
            assert!(i < 10_000, "tmpfs never filled up");
            let b = make_batch(i, 10, 1000, i as i64);
            match log.append(&b) {
                Ok(info) => acked.push((info.base_offset, b)),
                Err(e) => {
                    err = e;
                    break;
                }
            }
            i += 1;
        }
        assert!(matches!(err, LogError::DiskFull { .. }), "{err:?}");
        assert!(!log.is_poisoned());
        // The failed append changed nothing.
        let end = acked.last().map(|(o, _)| o + 10).unwrap();
        assert_eq!(log.end_offset(), end);
        assert_eq!(read_all(&log).len(), acked.len());
        // A small append may still fit; a big one fails again, cleanly.
        let _ = log
            .append(&make_batch(0, 1, 10, 0))
            .map(|info| acked.push((info.base_offset, make_batch(0, 1, 10, 0))));
        log.close().unwrap();
    }
    assert!(acked.len() > 100, "{}", acked.len());
    let log = Log::open(&data, config).unwrap();
    let all = read_all(&log);
    assert_eq!(all.len(), acked.len());
    for ((h, got), (off, w)) in all.iter().zip(&acked) {
        assert_eq!(h.base_offset as u64, *off);
        assert_eq!(body(got), body(w));
    }
    drop(log);
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn plausible_but_wrong_index_entry_does_not_hide_data() {
    let dir = tempfile::tempdir().unwrap();
    let written = populate(dir.path(), &small_config(), 100);
    let bases = log_files(dir.path());
    let index = seg_path(dir.path(), bases[0], "index");
    let entries = (std::fs::metadata(&index).unwrap().len() as usize - 24) / 8;
    assert!(entries >= 3);
    // Shift a middle entry's position by one byte: still increasing, but
    // no longer at a batch boundary.
    modify(&index, |d| {
        let at = 24 + (entries / 2) * 8 + 7;
        d[at] = d[at].wrapping_add(1);
    });
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_prefix(&log, &written, 100);
    for i in 0..100u64 {
        let b = log.read(i * 3 + 1, 1).unwrap();
        assert_eq!(body(&split(&b)[0].1), body(&written[i as usize]));
    }
}

#[test]
fn failed_write_publishes_nothing_and_the_next_append_rewrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyFileIo::default());
    let log = Log::open_with_io(dir.path(), small_config(), io.clone()).unwrap();
    let b = make_batch(1, 3, 500, 0);
    log.append(&b).unwrap();
    log.append(&b).unwrap();
    let before = log.read(0, 1 << 20).unwrap();
    io.fail_write.store(true, Ordering::SeqCst);
    let other = make_batch(2, 3, 500, 0);
    let err = log.append(&other).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err:?}");
    // Half of the batch reached the file, none of it is visible.
    assert!(!log.is_poisoned());
    assert_eq!(log.end_offset(), 6);
    assert_eq!(log.read(0, 1 << 20).unwrap(), before);
    assert!(log.read(6, 1 << 20).unwrap().is_empty());
    // A crash now: recovery cuts the half-written batch.
    drop(log);
    let log = Log::open_with_io(dir.path(), small_config(), io.clone()).unwrap();
    assert_eq!(log.end_offset(), 6);
    assert_eq!(read_all(&log).len(), 2);
    // The next append after a failure overwrites the partial bytes.
    let err = log.append(&other).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err:?}");
    io.fail_write.store(false, Ordering::SeqCst);
    assert_eq!(log.append(&other).unwrap().base_offset, 6);
    let all = read_all(&log);
    assert_eq!(all.len(), 3);
    assert_eq!(body(&all[2].1), body(&other));
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    let all = read_all(&log);
    assert_eq!(
        all.iter().map(|(h, _)| h.base_offset).collect::<Vec<_>>(),
        vec![0, 3, 6]
    );
    assert_eq!(body(&all[2].1), body(&other));
}

#[test]
fn short_writes_are_completed_and_many_batches_go_in_one_append() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyFileIo::default());
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open_with_io(dir.path(), config.clone(), io.clone()).unwrap();
    // 100 batches in one append: more than one pwritev's worth of buffers.
    let batches: Vec<bytes::Bytes> = (0..100).map(|i| make_batch(i, 2, 40, i as i64)).collect();
    let joined: Vec<u8> = batches.iter().flat_map(|b| b.iter().copied()).collect();
    let info = log.append(&joined).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batches),
        (0, 199, 100)
    );
    // Every write call now stores at most 7 bytes.
    io.short_writes.store(7, Ordering::SeqCst);
    let info = log.append(&joined).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (200, 399));
    let big = make_batch(7, 5, 3000, 9);
    assert_eq!(log.append(&big).unwrap().base_offset, 400);
    let check = |log: &Log| {
        let all = read_all(log);
        assert_eq!(all.len(), 201);
        for (i, (h, bytes)) in all.iter().enumerate() {
            let want = if i == 200 { &big } else { &batches[i % 100] };
            assert_eq!(h.base_offset, 2 * i as i64);
            assert_eq!(body(bytes), body(want), "batch {i}");
        }
    };
    check(&log);
    drop(log);
    check(&Log::open(dir.path(), config).unwrap());
}
