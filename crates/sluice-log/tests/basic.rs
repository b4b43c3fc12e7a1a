//! Append, read, reopen, roll, timestamps, retention, concurrency.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use sluice_log::{FlushPolicy, Log, LogConfig, LogError};

#[test]
fn conformance_suite_small_segments() {
    let dir = tempfile::tempdir().unwrap();
    suite(dir.path(), small_config());
}

#[test]
fn conformance_suite_default_config() {
    let dir = tempfile::tempdir().unwrap();
    suite(
        dir.path(),
        LogConfig {
            flush: FlushPolicy::Os,
            preallocate_bytes: 1 << 20,
            ..LogConfig::default()
        },
    );
}

#[test]
fn reopen_after_crash_keeps_everything_and_drops_zero_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..30 {
            let b = make_batch(i, 3, 200, i as i64);
            log.append(&b).unwrap();
            written.push(b);
        }
        // Drop without close: preallocated tails stay on disk.
    }
    let last = *log_files(dir.path()).last().unwrap();
    let len = std::fs::metadata(seg_path(dir.path(), last, "log"))
        .unwrap()
        .len();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 90);
    let all = read_all(&log);
    assert_eq!(all.len(), 30);
    for ((_, got), w) in all.iter().zip(&written) {
        assert_eq!(body(got), body(w));
    }
    let new_len = std::fs::metadata(seg_path(dir.path(), last, "log"))
        .unwrap()
        .len();
    assert!(new_len <= len);
    assert_eq!(log.append(&written[0]).unwrap().base_offset, 90);
}

#[test]
fn roll_by_size_creates_segments_named_by_base_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let b = make_batch(1, 10, 1000, 5); // ~10 KiB
    for _ in 0..20 {
        log.append(&b).unwrap();
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 3, "{bases:?}");
    assert_eq!(bases, log_files(dir.path()));
    // Sealed segments are trimmed and never exceed segment_bytes.
    for &base in &bases[..bases.len() - 1] {
        let len = std::fs::metadata(seg_path(dir.path(), base, "log"))
            .unwrap()
            .len();
        assert!(len <= 64 * 1024 && len > 0, "{len}");
        assert_eq!(len % b.len() as u64, 0);
    }
    assert_eq!(log.size_bytes(), 20 * b.len() as u64);
    assert_eq!(read_all(&log).len(), 20);
}

#[test]
fn roll_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            segment_ms: Some(1),
            ..small_config()
        },
    )
    .unwrap();
    log.append(&make_batch(1, 1, 10, 0)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    log.append(&make_batch(2, 1, 10, 0)).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 1]);
}

#[test]
fn oversized_append_fits_a_fresh_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // Many batches in one append, far beyond segment_bytes: atomic, one segment.
    let mut all = Vec::new();
    for i in 0..40 {
        all.extend_from_slice(&make_batch(i, 10, 1000, 0));
    }
    let info = log.append(&all).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batches),
        (0, 399, 40)
    );
    assert_eq!(read_all(&log).len(), 40);
    let info = log.append(&all).unwrap();
    assert_eq!(info.base_offset, 400);
    assert_eq!(read_all(&log).len(), 80);
}

#[test]
fn invalid_batch_rejected_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let good = make_batch(1, 2, 100, 0);
    log.append(&good).unwrap();
    let size = log.size_bytes();

    let mut bad_crc = good.to_vec();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 0xff;
    let mut two = good.to_vec();
    two.extend_from_slice(&bad_crc);
    let mut bad_magic = good.to_vec();
    bad_magic[16] = 1;
    let mut compressed = good.to_vec();
    compressed[22] |= 1; // gzip bit; CRC left stale on purpose -> still rejected
    let truncated = good[..good.len() - 3].to_vec();
    let mut trailing = good.to_vec();
    trailing.extend_from_slice(&[1, 2, 3]);
    for input in [
        &bad_crc[..],
        &two[..],
        &bad_magic[..],
        &compressed[..],
        &truncated[..],
        &trailing[..],
        &[][..],
    ] {
        let err = log.append(input).unwrap_err();
        assert!(matches!(err, LogError::InvalidBatch(_)), "{err:?}");
        assert_eq!(log.end_offset(), 2);
        assert_eq!(log.size_bytes(), size);
    }
    let big = make_batch(2, 2, 600 * 1024, 0);
    assert!(matches!(
        log.append(&big),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(log.end_offset(), 2);
    assert_eq!(log.append(&good).unwrap().base_offset, 2);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 4);
}

#[test]
fn read_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..10 {
        log.append(&make_batch(i, 2, 100, 0)).unwrap();
    }
    assert!(log.read(20, 10).unwrap().is_empty());
    assert!(matches!(
        log.read(21, 10),
        Err(LogError::OffsetOutOfRange {
            offset: 21,
            start: 0,
            end: 20
        })
    ));
    let b = log.read(3, 1 << 20).unwrap();
    let batches = split(&b);
    assert_eq!(batches[0].0.base_offset, 2);
    assert_eq!(batches.len(), 9);
    let one = batches[0].1.len();
    let b = log.read(0, one * 3 + 1).unwrap();
    assert_eq!(split(&b).len(), 3);
}

#[test]
fn offset_for_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // Timestamps 1000, 1010, ... across several segments; one out of order.
    for i in 0..60i64 {
        let ts = if i == 30 { 5 } else { 1_000 + 10 * i };
        log.append(&make_batch(i as u64, 3, 900, ts)).unwrap();
    }
    assert!(log.segment_count() > 2);
    let check = |log: &Log| {
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1_000)));
        assert_eq!(log.offset_for_timestamp(1_000).unwrap(), Some((0, 1_000)));
        assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some((3, 1_010)));
        assert_eq!(log.offset_for_timestamp(1_300).unwrap(), Some((93, 1_310)));
        assert_eq!(log.offset_for_timestamp(1_590).unwrap(), Some((177, 1_590)));
        assert_eq!(log.offset_for_timestamp(1_591).unwrap(), None);
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    check(&log);
}

#[test]
fn retention_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let b = make_batch(1, 10, 1000, 0);
    for _ in 0..40 {
        log.append(&b).unwrap();
    }
    let before = log.segment_base_offsets();
    assert!(before.len() >= 5);
    assert_eq!(log.enforce_retention(crate::now()).unwrap(), 0);
    log.set_config(LogConfig {
        retention_bytes: Some(150 * 1024),
        ..small_config()
    });
    let held = log.read(0, 100).unwrap();
    let n = log.enforce_retention(crate::now()).unwrap();
    assert!(n > 0);
    // Whole segments only: what is left is above the limit by less than
    // the oldest remaining segment.
    let first = log.read(log.start_offset(), 1).unwrap();
    assert!(!first.is_empty());
    assert!(log.size_bytes() > 150 * 1024);
    assert!(log.size_bytes() < 150 * 1024 + 64 * 1024);
    let after = log.segment_base_offsets();
    assert_eq!(after, before[n..].to_vec());
    assert_eq!(log_files(dir.path()), after);
    assert_eq!(log.start_offset(), after[0]);
    assert!(matches!(
        log.read(0, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Bytes read before the deletion are still valid.
    assert_eq!(split(&held).len(), 1);
    // The active segment is never deleted.
    log.set_config(LogConfig {
        retention_bytes: Some(0),
        ..small_config()
    });
    log.enforce_retention(crate::now()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert!(log.size_bytes() > 0);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 400);
}

#[test]
fn retention_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            retention_ms: Some(1_000),
            ..small_config()
        },
    )
    .unwrap();
    // Old data (timestamp 10_000), then new data (timestamp 100_000).
    for i in 0..20 {
        log.append(&make_batch(i, 10, 1000, 10_000)).unwrap();
    }
    let old_segments = log.segment_count() - 1;
    for i in 0..20 {
        log.append(&make_batch(i, 10, 1000, 100_000)).unwrap();
    }
    assert_eq!(log.enforce_retention(10_500).unwrap(), 0);
    let n = log.enforce_retention(50_000).unwrap();
    assert_eq!(n, old_segments);
    assert_eq!(log.enforce_retention(50_000).unwrap(), 0);
    let n = log.enforce_retention(1_000_000).unwrap();
    assert!(n > 0);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn concurrent_readers_never_see_partial_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_config()).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let log = log.clone();
        let done = done.clone();
        readers.push(std::thread::spawn(move || {
            let mut off = 0u64;
            let mut seen = 0usize;
            loop {
                let finished = done.load(Ordering::Acquire);
                let end = log.end_offset();
                while off < end {
                    let b = log.read(off, 8 * 1024).unwrap();
                    // split() panics on a partial batch or a bad CRC.
                    for (h, _) in split(&b) {
                        assert_eq!(h.base_offset as u64, off);
                        off = h.last_offset() as u64 + 1;
                        seen += 1;
                    }
                }
                if finished {
                    return seen;
                }
                std::thread::yield_now();
            }
        }));
    }
    for i in 0..400 {
        log.append(&make_batch(i, 1 + (i as usize % 7), 300, 0))
            .unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert_eq!(r.join().unwrap(), 400);
    }
}

#[test]
fn group_commit_with_flush_always() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(sluice_log::FaultyFileIo::default());
    let log = Arc::new(
        Log::open_with_io(
            dir.path(),
            LogConfig {
                flush: FlushPolicy::Always,
                ..small_config()
            },
            io.clone(),
        )
        .unwrap(),
    );
    let syncs_before = io.syncs.load(Ordering::SeqCst);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let info = log.append(&make_batch(t * 100 + i, 1, 100, 0)).unwrap();
                    log.wait_durable(info.last_offset + 1).unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.durable_offset(), 200);
    let syncs = io.syncs.load(Ordering::SeqCst) - syncs_before;
    // Roll syncs add a few; without grouping this would be >= 200.
    assert!(
        syncs > 0 && syncs <= 200 + 3 * log.segment_count() as u64,
        "{syncs}"
    );
}

#[test]
fn interval_flush_and_wait_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            flush: FlushPolicy::Interval(std::time::Duration::from_millis(50)),
            ..small_config()
        },
    )
    .unwrap();
    log.append(&make_batch(1, 5, 100, 0)).unwrap();
    assert_eq!(log.durable_offset(), 0);
    let now = std::time::Instant::now();
    assert!(!log.maybe_flush(now).unwrap());
    assert!(log
        .maybe_flush(now + std::time::Duration::from_millis(100))
        .unwrap());
    assert_eq!(log.durable_offset(), 5);
    log.append(&make_batch(1, 5, 100, 0)).unwrap();
    log.wait_durable(7).unwrap();
    assert_eq!(log.durable_offset(), 10);
    // Beyond the end: clamped, returns.
    log.wait_durable(1_000).unwrap();
    // Always: maybe_flush syncs whenever something is not durable; Os never.
    log.set_config(LogConfig {
        flush: FlushPolicy::Always,
        ..small_config()
    });
    log.append(&make_batch(1, 5, 100, 0)).unwrap();
    assert_eq!(log.durable_offset(), 10);
    assert!(log.maybe_flush(now).unwrap());
    assert_eq!(log.durable_offset(), 15);
    assert!(!log.maybe_flush(now).unwrap());
    log.set_config(small_config());
    log.append(&make_batch(1, 5, 100, 0)).unwrap();
    assert!(!log
        .maybe_flush(now + std::time::Duration::from_secs(100))
        .unwrap());
    assert_eq!(log.durable_offset(), 15);
}

#[test]
fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = Log::open(dir.path(), small_config()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small_config()),
        Err(LogError::Io { .. })
    ));
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn append_after_close_reserves_space_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let b = make_batch(1, 2, 500, 0);
    log.append(&b).unwrap();
    log.close().unwrap();
    let path = seg_path(dir.path(), 0, "log");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), b.len() as u64);
    for _ in 0..30 {
        log.append(&b).unwrap();
    }
    assert_eq!(read_all(&log).len(), 31);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 62);
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[test]
fn interval_flush_asks_for_writeback_once_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 256 << 20,
        preallocate_bytes: 16 << 20,
        flush: FlushPolicy::Interval(std::time::Duration::from_secs(3600)),
        ..small_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let batch = make_batch(3, 900, 1000, 0);
    let mut appended = 0usize;
    // Below one chunk: no request.
    while appended + batch.len() < sluice_log::WRITEBACK_CHUNK {
        log.append(&batch).unwrap();
        appended += batch.len();
        assert!(!log.take_writeback_request(), "after {appended} bytes");
    }
    log.append(&batch).unwrap();
    assert!(log.take_writeback_request());
    // One outstanding request at a time, however much more arrives.
    log.append(&batch).unwrap();
    assert!(!log.take_writeback_request());
    log.start_writeback();
    assert!(!log.take_writeback_request());
    // The next chunk asks again.
    for _ in 0..sluice_log::WRITEBACK_CHUNK / batch.len() + 1 {
        log.append(&batch).unwrap();
    }
    assert!(log.take_writeback_request());
    log.start_writeback();
    // Writeback is only a hint: nothing became durable, and all reads back.
    assert_eq!(log.durable_offset(), 0);
    let all = read_all(&log);
    assert_eq!(all.len() as u64, log.end_offset() / 900);
    assert!(all.iter().all(|(_, b)| body(b) == body(&batch)));

    // `os` leaves writeback to the kernel: never asks.
    log.set_config(LogConfig {
        flush: FlushPolicy::Os,
        ..config.clone()
    });
    for _ in 0..sluice_log::WRITEBACK_CHUNK / batch.len() + 1 {
        log.append(&batch).unwrap();
    }
    assert!(!log.take_writeback_request());

    // `always` neither: the group commit's fdatasync writes the data
    // (writeback started per append cost more CPU than it saved).
    log.set_config(LogConfig {
        flush: FlushPolicy::Always,
        ..config
    });
    for _ in 0..sluice_log::WRITEBACK_CHUNK / batch.len() + 1 {
        log.append(&batch).unwrap();
    }
    assert!(!log.take_writeback_request());
}

#[test]
fn delete_segments_before_an_offset_keeps_every_later_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let b = make_batch(2, 10, 1000, 0);
    for _ in 0..40 {
        log.append(&b).unwrap();
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 5, "{bases:?}");
    // Below the first segment's end: nothing to delete.
    assert_eq!(log.delete_segments_before(bases[1] - 1).unwrap(), 0);
    // An offset inside the third segment: the first two go, the third stays.
    let cut = bases[2] + 1;
    assert_eq!(log.delete_segments_before(cut).unwrap(), 2);
    assert_eq!(log.start_offset(), bases[2]);
    assert_eq!(log_files(dir.path()), bases[2..].to_vec());
    assert!(matches!(
        log.read(0, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Past the end: every sealed segment goes, never the active one.
    log.delete_segments_before(u64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    let active = *bases.last().unwrap();
    assert_eq!(log.start_offset(), active);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.start_offset(), active);
    assert_eq!(log.end_offset(), 400);
    let rest = read_all(&log);
    assert_eq!(rest.len() as u64, (400 - active) / 10);
    assert!(rest.iter().all(|(_, bytes)| body(bytes) == body(&b)));
}

#[test]
fn a_segment_that_cannot_be_deleted_stops_the_deletion_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let b = make_batch(4, 10, 1000, 0);
    for _ in 0..40 {
        log.append(&b).unwrap();
    }
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 5, "{bases:?}");
    // The second segment's `.log` cannot be unlinked: a directory stands in
    // its place (the log keeps its mapping of the real file).
    let stuck = seg_path(dir.path(), bases[1], "log");
    let aside = dir.path().join("aside");
    std::fs::rename(&stuck, &aside).unwrap();
    std::fs::create_dir(&stuck).unwrap();
    std::fs::write(stuck.join("keep"), b"x").unwrap();
    let err = log.delete_segments_before(u64::MAX).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err:?}");
    // Only the first went; every later segment is still there.
    assert_eq!(log.start_offset(), bases[1]);
    assert_eq!(log.segment_base_offsets(), bases[1..].to_vec());
    for base in &bases[2..] {
        assert!(seg_path(dir.path(), *base, "log").exists(), "{base}");
    }
    assert!(!split(&log.read(bases[1], 1 << 20).unwrap()).is_empty());
    log.close().unwrap();
    drop(log);
    std::fs::remove_dir_all(&stuck).unwrap();
    std::fs::rename(&aside, &stuck).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.start_offset(), bases[1]);
    assert_eq!(read_all(&log).len() as u64, (400 - bases[1]) / 10);
}

#[test]
fn indexes_without_their_segment_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        log.append(&make_batch(5, 10, 100, 0)).unwrap();
        log.close().unwrap();
    }
    // What a crash between a deletion's unlinks leaves behind.
    for ext in ["index", "timeindex"] {
        std::fs::write(seg_path(dir.path(), 7_000, ext), b"stale").unwrap();
    }
    let log = Log::open(dir.path(), small_config()).unwrap();
    for ext in ["index", "timeindex"] {
        assert!(!seg_path(dir.path(), 7_000, ext).exists(), "{ext} left");
        assert!(seg_path(dir.path(), 0, ext).exists(), "live {ext} removed");
    }
    assert_eq!(log.end_offset(), 10);
    assert_eq!(read_all(&log).len(), 1);
}
