//! `Log::append_with_epoch` (leader epoch stamped without copying) and
//! `Log::truncate_to` (cut the tail: in place, durable, crash-safe, and safe
//! for readers that still hold bytes of the removed range).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use sluice_log::{FaultyFileIo, FlushPolicy, Log, LogConfig, LogError};
use sluice_protocol::batch::{self, BatchHeader, RecordBatch};

/// Batch `i`: two records (so a batch spans two offsets), ~700 bytes.
fn batch(i: u64) -> Bytes {
    make_batch(i, 2, 600 + (i as usize % 3) * 50, 1_000 + i as i64)
}

/// Appends batches `from..to` one per append; returns them.
fn fill(log: &Log, from: u64, to: u64) -> Vec<Bytes> {
    (from..to)
        .map(|i| {
            let b = batch(i);
            log.append(&b).unwrap();
            b
        })
        .collect()
}

/// The log holds exactly `expected` (bodies byte for byte), at offsets
/// starting from its start offset, two per batch.
fn assert_holds(log: &Log, expected: &[Bytes]) {
    let got = read_all(log);
    assert_eq!(got.len(), expected.len(), "batch count");
    let mut off = log.start_offset();
    for (i, ((h, bytes), want)) in got.iter().zip(expected).enumerate() {
        assert_eq!(body(bytes), body(want), "batch {i} differs");
        assert_eq!(h.base_offset as u64, off, "batch {i} offset");
        off += 2;
    }
    assert_eq!(off, log.end_offset());
}

fn rolling_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        preallocate_bytes: 4096,
        ..small_config()
    }
}

#[test]
fn epoch_is_stamped_and_crc_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut two = batch(1).to_vec();
    two.extend_from_slice(&batch(2));
    let info = log.append_with_epoch(&two, Some(7)).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batches),
        (0, 3, 2)
    );
    // The caller's bytes are not changed.
    assert_eq!(BatchHeader::parse(&two).unwrap().partition_leader_epoch, -1);

    // Without an epoch, the batch's own field is kept.
    let mut own = batch(3).to_vec();
    batch::set_partition_leader_epoch(&mut own, 3);
    log.append_with_epoch(&own, None).unwrap();
    log.append(&batch(4)).unwrap();

    let got = read_all(&log);
    let epochs: Vec<i32> = got.iter().map(|(h, _)| h.partition_leader_epoch).collect();
    assert_eq!(epochs, [7, 7, 3, -1]);
    for (i, ((_, bytes), want)) in got
        .iter()
        .zip([batch(1), batch(2), own.into(), batch(4)])
        .enumerate()
    {
        batch::verify_crc(bytes).unwrap();
        RecordBatch::parse(&Bytes::from(bytes.clone()))
            .unwrap()
            .validate()
            .unwrap();
        // Everything but base offset and epoch is as sent.
        assert_eq!(bytes[8..12], want[8..12], "batch {i}");
        assert_eq!(bytes[16..], want[16..], "batch {i}");
    }
    // It survives a reopen (recovery CRC-checks it).
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    let epochs: Vec<i32> = read_all(&log)
        .iter()
        .map(|(h, _)| h.partition_leader_epoch)
        .collect();
    assert_eq!(epochs, [7, 7, 3, -1]);
}

#[test]
fn epoch_with_more_batches_than_one_pwritev_holds() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // 16 batches fit one pwritev with an epoch (4 buffers each): 40 need 3.
    let batches: Vec<Bytes> = (0..40).map(|i| make_batch(i, 1, 50, 5)).collect();
    let all: Vec<u8> = batches.iter().flat_map(|b| b.iter().copied()).collect();
    let info = log.append_with_epoch(&all, Some(i32::MAX)).unwrap();
    assert_eq!((info.batches, info.last_offset), (40, 39));
    let got = read_all(&log);
    assert_eq!(got.len(), 40);
    for (i, ((h, bytes), want)) in got.iter().zip(&batches).enumerate() {
        assert_eq!(h.partition_leader_epoch, i32::MAX, "batch {i}");
        assert_eq!(h.base_offset, i as i64);
        assert_eq!(bytes[16..], want[16..], "batch {i}");
    }
}

#[test]
fn truncate_inside_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut kept = fill(&log, 0, 10);
    assert_eq!(log.end_offset(), 20);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 20);

    // At a batch boundary.
    assert_eq!(log.truncate_to(12).unwrap(), 12);
    kept.truncate(6);
    assert_eq!(log.end_offset(), 12);
    assert!(log.durable_offset() <= 12);
    assert!(log.recovery_point() <= 12);
    assert_holds(&log, &kept);
    assert!(log.read(12, 1 << 20).unwrap().is_empty());
    assert!(matches!(
        log.read(13, 1 << 20),
        Err(LogError::OffsetOutOfRange { end: 12, .. })
    ));

    // Mid-batch: the batch holding offset 9 ([8, 10)) goes whole.
    assert_eq!(log.truncate_to(9).unwrap(), 8);
    kept.truncate(4);
    assert_eq!(log.end_offset(), 8);
    assert_holds(&log, &kept);

    // Appends continue from the new end and read back byte for byte.
    let more = fill(&log, 100, 105);
    assert_eq!(log.end_offset(), 18);
    kept.extend(more);
    assert_holds(&log, &kept);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), 18);

    // A fresh open sees the same log.
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), 18);
    assert_holds(&log, &kept);
}

#[test]
fn truncate_to_end_or_beyond_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let kept = fill(&log, 0, 5);
    log.flush().unwrap();
    let files_before = log_files(dir.path());
    assert_eq!(log.truncate_to(10).unwrap(), 10);
    assert_eq!(log.truncate_to(u64::MAX).unwrap(), 10);
    assert_eq!(log.end_offset(), 10);
    assert_eq!(log.durable_offset(), 10);
    assert_eq!(log_files(dir.path()), files_before);
    assert!(!dir.path().join("truncate-to").exists());
    assert_holds(&log, &kept);
    // On an empty log too.
    let dir2 = tempfile::tempdir().unwrap();
    let empty = Log::open(dir2.path(), small_config()).unwrap();
    assert_eq!(empty.truncate_to(0).unwrap(), 0);
    assert_eq!(empty.append(&batch(1)).unwrap().base_offset, 0);
}

#[test]
fn truncate_across_a_roll_deletes_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    let mut kept = fill(&log, 0, 40);
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4, "{bases:?}");
    // A cut in the middle of the second segment (mid-batch).
    let cut = bases[1] + 3;
    let new_end = log.truncate_to(cut).unwrap();
    assert_eq!(new_end, bases[1] + 2);
    assert_eq!(log.end_offset(), new_end);
    assert_eq!(log.segment_base_offsets(), bases[..2]);
    assert_eq!(log_files(dir.path()), bases[..2]);
    for &b in &bases[2..] {
        assert!(!seg_path(dir.path(), b, "index").exists());
        assert!(!seg_path(dir.path(), b, "timeindex").exists());
    }
    kept.truncate(new_end as usize / 2);
    assert_holds(&log, &kept);

    // Appends continue in the cut segment and roll again later.
    kept.extend(fill(&log, 200, 230));
    assert!(log.segment_count() > 2);
    assert_holds(&log, &kept);

    // Reopen after a clean close, then after a drop without close.
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    assert_holds(&log, &kept);
    let cut2 = log.truncate_to(log.end_offset() - 7).unwrap();
    kept.truncate(cut2 as usize / 2);
    let end = log.end_offset();
    drop(log);
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    assert_eq!(log.end_offset(), end);
    assert_holds(&log, &kept);
    assert!(log.recovery_point() <= end);
}

#[test]
fn drop_without_close_right_after_truncation_keeps_the_cut() {
    for flush in [FlushPolicy::Os, FlushPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            flush,
            ..rolling_config()
        };
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        let mut kept = fill(&log, 0, 30);
        log.flush().unwrap();
        log.write_recovery_point().unwrap();
        assert_eq!(log.recovery_point(), 60);
        let new_end = log.truncate_to(21).unwrap();
        assert_eq!(new_end, 20);
        assert!(log.recovery_point() <= 20);
        kept.truncate(10);
        drop(log);
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        assert_eq!(log.end_offset(), 20);
        assert_holds(&log, &kept);
        // And after one more append and a drop.
        kept.extend(fill(&log, 300, 302));
        log.flush().unwrap();
        drop(log);
        let log = Log::open(dir.path(), cfg).unwrap();
        assert_holds(&log, &kept);
    }
}

#[test]
fn bytes_read_before_a_truncation_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    fill(&log, 0, 40);
    let bases = log.segment_base_offsets();
    // Held: the whole active segment, a sealed segment that will be cut,
    // and a sealed segment that will be deleted.
    let active = log.read(*bases.last().unwrap(), 1 << 20).unwrap();
    let cut_seg = log.read(bases[1], 1 << 20).unwrap();
    let deleted = log.read(bases[2], 1 << 20).unwrap();
    let (a, c, d) = (active.to_vec(), cut_seg.to_vec(), deleted.to_vec());
    let new_end = log.truncate_to(bases[1] + 2).unwrap();
    // A close trims the active files, a small append and a roll do again:
    // none may shrink a file these bytes map.
    log.close().unwrap();
    let sum = |b: &Bytes| b.iter().map(|&x| u64::from(x)).sum::<u64>();
    let _ = sum(&cut_seg);
    fill(&log, 500, 501);
    log.close().unwrap();
    let _ = sum(&cut_seg);
    fill(&log, 501, 540);
    let _ = sum(&active) + sum(&cut_seg) + sum(&deleted);
    // What stayed below the cut is unchanged; deleted files keep their bytes.
    let kept_len = BatchHeader::parse(&c).unwrap().total_len();
    assert_eq!(cut_seg[..kept_len], c[..kept_len]);
    assert_eq!(&deleted[..], &d[..]);
    assert_eq!(active.len(), a.len());
    assert!(new_end == bases[1] + 2);
    // Bytes from the very first batch of the log, held across a cut to 0.
    let first = log.read(0, 1 << 20).unwrap();
    let first_copy = first.to_vec();
    assert_eq!(log.truncate_to(0).unwrap(), 0);
    log.close().unwrap();
    let _ = sum(&first);
    fill(&log, 900, 910);
    log.close().unwrap();
    assert_eq!(first.len(), first_copy.len());
    let _ = sum(&first);
}

#[test]
fn truncation_below_the_start_offset_empties_the_log_and_keeps_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    fill(&log, 0, 40);
    let bases = log.segment_base_offsets();
    assert_eq!(log.delete_segments_before(bases[2]).unwrap(), 2);
    let start = log.start_offset();
    assert_eq!(start, bases[2]);
    assert_eq!(log.truncate_to(3).unwrap(), start);
    assert_eq!((log.start_offset(), log.end_offset()), (start, start));
    assert_eq!(log.segment_count(), 1);
    assert!(log.read(start, 1 << 20).unwrap().is_empty());
    assert!(log.read(start + 1, 1 << 20).is_err());
    assert_eq!(log.append(&batch(7)).unwrap().base_offset, start);
    let kept = [batch(7)];
    assert_holds(&log, &kept);
    drop(log);
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    assert_eq!(log.start_offset(), start);
    assert_holds(&log, &kept);

    // Retention still works on the truncated log: a cut at the start of the
    // active segment, then more segments, then size retention.
    assert_eq!(log.truncate_to(start).unwrap(), start);
    let mut kept = fill(&log, 50, 90);
    assert!(log.segment_count() > 3);
    log.set_config(LogConfig {
        retention_bytes: Some(8 * 1024),
        ..rolling_config()
    });
    let removed = log.enforce_retention(now_ms()).unwrap();
    assert!(removed > 0);
    // What is left is the newest part of what was appended, from the new start.
    let got = read_all(&log);
    assert_eq!(
        got.first().unwrap().0.base_offset as u64,
        log.start_offset()
    );
    let gone = kept.len() - got.len();
    assert!(gone > 0);
    kept.drain(..gone);
    assert_holds(&log, &kept);
    // And a cut below the new start empties it down to that start.
    let start = log.start_offset();
    assert_eq!(log.truncate_to(0).unwrap(), start);
    assert_eq!(log.end_offset(), start);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn closed_or_poisoned_logs_refuse_to_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    fill(&log, 0, 3);
    log.mark_closed();
    assert!(matches!(log.truncate_to(0), Err(LogError::Closed)));

    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyFileIo::default());
    let log = Log::open_with_io(dir.path(), small_config(), io.clone()).unwrap();
    fill(&log, 0, 3);
    io.fail_sync
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(log.flush().is_err());
    assert!(log.is_poisoned());
    io.fail_sync
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(log.truncate_to(0), Err(LogError::Poisoned)));
    assert_eq!(log.end_offset(), 6);
}

/// Runs `truncate_to(cut)` on a prepopulated log through a fault injector
/// with the power cut at step `cut_at`, then checks the reopened log: it is
/// either untouched or cut, never anything else, and cut if the call
/// returned. Returns the number of steps.
fn power_cut_truncation(cut_at: Option<u64>, cut: u64, cfg: &LogConfig) -> u64 {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("data");
    std::fs::create_dir(&root).unwrap();
    let dir: PathBuf = root.join("t-0");
    let all = {
        let log = Log::open(&dir, cfg.clone()).unwrap();
        let all = fill(&log, 0, 30);
        log.flush().unwrap();
        log.write_recovery_point().unwrap();
        // Left unclean: the checkpoint is below the end, as after a crash.
        all
    };
    let io = Arc::new(
        FaultyFileIo::with_power_cut(&root, &base.path().join("graveyard"), cut_at).unwrap(),
    );
    let returned = {
        let log = Log::open_with_io(&dir, cfg.clone(), io.clone());
        match log {
            Ok(log) => log.truncate_to(cut).ok(),
            Err(_) => None,
        }
    };
    let steps = io.steps();
    io.cut_power().unwrap();
    let log = Log::open(&dir, cfg.clone())
        .unwrap_or_else(|e| panic!("cut at {cut_at:?}: reopen failed: {e}"));
    let got = read_all(&log);
    let cut_batches = (cut / 2) as usize;
    assert!(
        got.len() == all.len() || got.len() == cut_batches,
        "cut at {cut_at:?}: {} batches, expected {} or {cut_batches}",
        got.len(),
        all.len()
    );
    if returned.is_some() {
        assert_eq!(got.len(), cut_batches, "cut at {cut_at:?}: truncation lost");
    }
    for (i, ((_, bytes), want)) in got.iter().zip(&all).enumerate() {
        assert_eq!(body(bytes), body(want), "cut at {cut_at:?}: batch {i}");
    }
    assert_eq!(log.end_offset(), got.len() as u64 * 2);
    assert!(!dir.join("truncate-to").exists());
    // Appends continue from the end.
    assert_eq!(
        log.append(&batch(77)).unwrap().base_offset,
        log.end_offset() - 2
    );
    steps
}

fn at_every_step(cut: u64, cfg: LogConfig) {
    let total = power_cut_truncation(None, cut, &cfg);
    assert!(total > 10, "only {total} steps");
    for k in 0..=total {
        power_cut_truncation(Some(k), cut, &cfg);
    }
}

#[test]
fn power_cut_at_every_step_of_a_truncation_in_the_active_segment() {
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..rolling_config()
    };
    at_every_step(20, cfg);
}

#[test]
fn power_cut_at_every_step_of_a_truncation_across_segments() {
    at_every_step(12, rolling_config());
}

/// Sanity check of the helpers above: the path of a segment file.
#[test]
fn segment_files_of_a_cut_log_are_named_by_base() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    fill(&log, 0, 20);
    let p: &Path = dir.path();
    let b = log.segment_base_offsets();
    log.truncate_to(b[1]).unwrap();
    // A cut exactly at a segment's base keeps that segment, empty.
    assert_eq!(log.segment_base_offsets(), b[..2]);
    assert!(seg_path(p, b[1], "log").exists());
    assert_eq!(log.end_offset(), b[1]);
    assert_eq!(log.append(&batch(1)).unwrap().base_offset, b[1]);
}

/// Truncations racing readers (holding and touching their `Bytes`) and a
/// flusher: no fault, reads keep working, and the durable offset and the
/// checkpoint never claim more than the end a truncation just returned.
#[test]
fn truncations_race_readers_and_flushes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush: FlushPolicy::Always,
        ..rolling_config()
    };
    let log = Arc::new(Log::open(dir.path(), cfg.clone()).unwrap());
    fill(&log, 0, 20);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held: Vec<Bytes> = Vec::new();
            let mut ok = 0u64;
            let mut touched = 0u64;
            for i in 0..200_000u64 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let (start, end) = (log.start_offset(), log.end_offset());
                if end <= start {
                    continue;
                }
                let off = start + (i * 7919) % (end - start);
                if let Ok(b) = log.read(off, 8192) {
                    ok += 1;
                    held.push(b);
                    if held.len() > 64 {
                        held.remove(0);
                    }
                }
                for b in &held {
                    touched = touched.wrapping_add(b.iter().map(|&x| u64::from(x)).sum::<u64>());
                }
            }
            (ok, touched)
        })
    };
    let flusher = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                log.flush().unwrap();
            }
        })
    };
    let mut kept: Vec<Bytes> = (0..20).map(batch).collect();
    for round in 0..30u64 {
        kept.extend(fill(&log, 1000 + round * 10, 1000 + round * 10 + 10));
        let end = log.end_offset();
        let to = end - 2 * (1 + round % 7) - round % 2;
        let new_end = log.truncate_to(to).unwrap();
        assert!(new_end <= to && to - new_end < 2);
        kept.truncate(new_end as usize / 2);
        assert_eq!(log.end_offset(), new_end);
        assert!(log.durable_offset() <= new_end, "round {round}");
        assert!(log.recovery_point() <= new_end, "round {round}");
        // A flush that synced the old tail completes after the cut: it
        // must not claim the old end then either.
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(log.durable_offset() <= new_end, "round {round}, later");
        assert!(log.recovery_point() <= new_end, "round {round}, later");
    }
    stop.store(true, Ordering::Release);
    let (ok, _) = reader.join().unwrap();
    flusher.join().unwrap();
    assert!(ok > 0);
    assert_holds(&log, &kept);
    log.flush().unwrap();
    assert_eq!(log.durable_offset(), log.end_offset());
    let end = log.end_offset();
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.end_offset(), end);
    assert_holds(&log, &kept);
}

#[test]
fn restart_at_empties_the_log_and_continues_from_the_new_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    fill(&log, 0, 20);
    assert!(log.segment_count() > 1);
    let held = log.read(0, 1 << 20).unwrap();
    // Below the end: refused, nothing changes.
    assert!(matches!(
        log.restart_at(10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.end_offset(), 40);
    log.restart_at(1000).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1000));
    assert_eq!(log.durable_offset(), 1000);
    assert_eq!(log.segment_count(), 1);
    assert!(log.read(1000, 1 << 20).unwrap().is_empty());
    // Bytes read before are still readable.
    assert!(batch::batches(&held).count() > 0);
    assert_eq!(log.append(&batch(5)).unwrap().base_offset, 1000);
    let kept = vec![batch(5)];
    assert_holds(&log, &kept);
    assert!(!dir.path().join("restart-at").exists());
    drop(log);
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1002));
    assert_holds(&log, &kept);
}

#[test]
fn deleting_records_moves_the_start_durably_and_refuses_reads_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    fill(&log, 0, 20);
    let end = log.end_offset();
    assert_eq!(log.start_offset(), 0);
    // Past the end: refused.
    assert!(matches!(
        log.delete_records_before(end + 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_before(7).unwrap(), 7);
    assert_eq!(log.start_offset(), 7);
    assert!(matches!(
        log.read(6, 1 << 20),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(!log.read(7, 1 << 20).unwrap().is_empty());
    // Lower than the start: nothing changes.
    assert_eq!(log.delete_records_before(3).unwrap(), 7);
    drop(log);
    let log = Log::open(dir.path(), rolling_config()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (7, end));
    assert!(log.read(0, 1 << 20).is_err());
    // Up to the end: an empty log at its end, appends go on.
    assert_eq!(log.delete_records_before(end).unwrap(), end);
    assert!(log.read(end, 1 << 20).unwrap().is_empty());
    assert_eq!(log.append(&batch(2)).unwrap().base_offset, end);
    assert_eq!(log.start_offset(), end);
}

/// Runs `restart_at(at)` on a prepopulated log with the power cut at step
/// `cut_at`: the reopened log holds either everything or nothing from
/// `at` on, and nothing else; the latter if the call returned.
fn power_cut_restart(cut_at: Option<u64>, at: u64) -> u64 {
    let cfg = rolling_config();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("data");
    std::fs::create_dir(&root).unwrap();
    let dir: PathBuf = root.join("t-0");
    let all = {
        let log = Log::open(&dir, cfg.clone()).unwrap();
        let all = fill(&log, 0, 30);
        log.flush().unwrap();
        log.write_recovery_point().unwrap();
        all
    };
    let io = Arc::new(
        FaultyFileIo::with_power_cut(&root, &base.path().join("graveyard"), cut_at).unwrap(),
    );
    let returned = match Log::open_with_io(&dir, cfg.clone(), io.clone()) {
        Ok(log) => log.restart_at(at).ok(),
        Err(_) => None,
    };
    let steps = io.steps();
    io.cut_power().unwrap();
    let log = Log::open(&dir, cfg.clone())
        .unwrap_or_else(|e| panic!("cut at {cut_at:?}: reopen failed: {e}"));
    let got = read_all(&log);
    if got.is_empty() {
        assert_eq!(
            (log.start_offset(), log.end_offset()),
            (at, at),
            "cut at {cut_at:?}"
        );
    } else {
        assert!(returned.is_none(), "cut at {cut_at:?}: restart lost");
        assert_eq!(got.len(), all.len(), "cut at {cut_at:?}");
        assert_holds(&log, &all);
    }
    assert!(!dir.join("restart-at").exists());
    let next = log.end_offset();
    assert_eq!(log.append(&batch(77)).unwrap().base_offset, next);
    steps
}

#[test]
fn power_cut_at_every_step_of_a_restart() {
    let total = power_cut_restart(None, 500);
    assert!(total > 5, "only {total} steps");
    for k in 0..=total {
        power_cut_restart(Some(k), 500);
    }
}
