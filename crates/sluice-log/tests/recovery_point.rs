//! The `recovery-point` checkpoint: unclean shutdown rescans from it
//! (sealed segments included), clean shutdown rescans nothing, a missing
//! or damaged checkpoint means a full scan.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sluice_log::{FaultyFileIo, FlushPolicy, Log, LogConfig, LogError, OpenKind};

const RECORDS: u64 = 3;

fn batch_i(i: u64) -> bytes::Bytes {
    make_batch(
        i,
        RECORDS as usize,
        400 + (i as usize % 5) * 30,
        1_000 + i as i64,
    )
}

/// Flips one byte of the record data (inside the CRC, not the header) of
/// the middle batch of segment `base`; returns that batch's base offset.
fn flip_middle_batch_body(dir: &Path, base: u64) -> u64 {
    let path = seg_path(dir, base, "log");
    let batches = batch_positions(&path);
    assert!(batches.len() >= 3, "{} batches", batches.len());
    let (pos, h) = batches[batches.len() / 2];
    let mut data = std::fs::read(&path).unwrap();
    let at = pos + h.total_len() - 10;
    data[at] ^= 0x40;
    std::fs::write(&path, data).unwrap();
    h.base_offset as u64
}

/// Appends batches `range` and returns them.
fn append_range(log: &Log, range: std::ops::Range<u64>) -> Vec<bytes::Bytes> {
    range
        .map(|i| {
            let b = batch_i(i);
            log.append(&b).unwrap();
            b
        })
        .collect()
}

fn assert_reads_back(log: &Log, written: &[bytes::Bytes]) {
    let all = read_all(log);
    assert_eq!(all.len(), written.len());
    for ((h, got), w) in all.iter().zip(written) {
        assert_eq!(body(got), body(w), "batch at {}", h.base_offset);
    }
}

/// A `tracing` writer that keeps what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with log output captured; returns its result and the text.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = Captured::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("recovery-point")
}

/// Crash scenario: `synced` batches synced and checkpointed, then 200 more
/// (several segments) never synced, then the process "dies" (drop without
/// close). Returns (written batches, recovery point).
fn crashed_log(dir: &Path, synced: u64) -> (Vec<bytes::Bytes>, u64) {
    let log = Log::open(dir, small_segments_config()).unwrap();
    let mut written = append_range(&log, 0..synced);
    log.flush().unwrap();
    let r = log.write_recovery_point().unwrap();
    assert_eq!(r, synced * RECORDS);
    written.extend(append_range(&log, synced..synced + 200));
    assert!(log.segment_count() >= 5, "{}", log.segment_count());
    drop(log);
    (written, r)
}

#[test]
fn unclean_shutdown_cuts_at_a_damaged_batch_in_a_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (written, r) = crashed_log(dir.path(), 20);
    let bases = log_files(dir.path());
    // A sealed segment in the middle of the unsynced region, with later ones.
    let first_above = bases.iter().position(|&b| b > r).unwrap();
    let victim_i = (first_above + bases.len() - 1) / 2;
    assert!(
        bases[victim_i] > r && victim_i + 2 < bases.len(),
        "{bases:?}"
    );
    let victim = bases[victim_i];
    let bad = flip_middle_batch_body(dir.path(), victim);

    let (log, logs) = capture_logs(|| Log::open(dir.path(), small_segments_config()).unwrap());
    assert_eq!(log.open_kind(), OpenKind::Unclean { recovery_point: r });
    assert_eq!(log.end_offset(), bad);
    assert_eq!(log.segment_base_offsets(), bases[..=victim_i].to_vec());
    assert_eq!(log_files(dir.path()), bases[..=victim_i].to_vec());
    for &b in &bases[victim_i + 1..] {
        for ext in ["log", "index", "timeindex"] {
            assert!(!seg_path(dir.path(), b, ext).exists(), "{b}.{ext}");
        }
    }
    assert!(logs.contains("cutting the log there"), "{logs}");
    assert!(logs.contains(&format!("offset={bad}")), "{logs}");
    assert!(
        logs.contains(&sluice_log::file_name(bases[victim_i + 1], "log")),
        "{logs}"
    );
    // Everything before the damaged batch reads back, and is durable.
    let kept = (bad / RECORDS) as usize;
    assert_reads_back(&log, &written[..kept]);
    assert_eq!(log.durable_offset(), bad);
    assert_eq!(log.recovery_point(), bad);
    // The log goes on from the cut.
    let info = log.append(&batch_i(999)).unwrap();
    assert_eq!(info.base_offset, bad);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(log.open_kind(), OpenKind::Clean);
    assert_eq!(log.end_offset(), bad + RECORDS);
}

#[test]
fn unclean_shutdown_trusts_batches_below_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let (written, r) = crashed_log(dir.path(), 100);
    let bases = log_files(dir.path());
    // A segment wholly below the recovery point.
    let below: Vec<u64> = bases
        .windows(2)
        .filter(|w| w[1] <= r)
        .map(|w| w[0])
        .collect();
    let victim = *below.first().expect("a segment below the recovery point");
    let bad = flip_middle_batch_body(dir.path(), victim);
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(log.open_kind(), OpenKind::Unclean { recovery_point: r });
    // Not rescanned: nothing cut.
    assert_eq!(log.end_offset(), written.len() as u64 * RECORDS);
    assert_eq!(log_files(dir.path()), bases);
    // Found lazily on read, as before.
    assert!(matches!(log.read(bad, 1), Err(LogError::Corrupt { .. })));
}

fn small_segments_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        ..small_config()
    }
}

#[test]
fn clean_close_rescans_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    let written = append_range(&log, 0..100);
    log.close().unwrap();
    drop(log);
    let bases = log_files(dir.path());
    assert!(bases.len() >= 3);
    let bad = flip_middle_batch_body(dir.path(), bases[1]);
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(log.open_kind(), OpenKind::Clean);
    // The damage was not looked for on open ...
    assert_eq!(log.end_offset(), written.len() as u64 * RECORDS);
    assert_eq!(log_files(dir.path()), bases);
    // ... but is found lazily on read, as before.
    assert!(matches!(log.read(bad, 1), Err(LogError::Corrupt { .. })));
    assert!(log.read(bad + RECORDS, 1).is_ok());
}

#[test]
fn open_invalidates_the_clean_flag() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    append_range(&log, 0..100);
    log.close().unwrap();
    drop(log);
    // Opened after a clean close, then "crashed" without appending.
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(log.open_kind(), OpenKind::Clean);
    drop(log);
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(
        log.open_kind(),
        OpenKind::Unclean {
            recovery_point: 100 * RECORDS
        }
    );
}

#[test]
fn append_after_close_clears_the_clean_flag() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    append_range(&log, 0..50);
    log.close().unwrap();
    append_range(&log, 50..100);
    drop(log);
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(
        log.open_kind(),
        OpenKind::Unclean {
            recovery_point: 50 * RECORDS
        }
    );
    assert_eq!(log.end_offset(), 100 * RECORDS);
}

/// A clean close, then damage in the first sealed segment, then the
/// checkpoint removed or damaged: open CRC-checks everything and cuts.
fn full_scan_after(damage_checkpoint: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    let written = append_range(&log, 0..100);
    log.close().unwrap();
    drop(log);
    let bases = log_files(dir.path());
    assert!(bases.len() >= 3);
    let bad = flip_middle_batch_body(dir.path(), bases[0]);
    damage_checkpoint(dir.path());
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(log.open_kind(), OpenKind::FullScan);
    assert_eq!(log.end_offset(), bad);
    assert_eq!(log_files(dir.path()), vec![bases[0]]);
    assert_reads_back(&log, &written[..(bad / RECORDS) as usize]);
    drop(log);
    // A new, valid checkpoint was written on open.
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(
        log.open_kind(),
        OpenKind::Unclean {
            recovery_point: bad
        }
    );
}

#[test]
fn missing_checkpoint_means_a_full_scan() {
    full_scan_after(|dir| std::fs::remove_file(checkpoint_path(dir)).unwrap());
}

#[test]
fn damaged_checkpoint_means_a_full_scan() {
    full_scan_after(|dir| {
        let p = checkpoint_path(dir);
        let mut d = std::fs::read(&p).unwrap();
        assert_eq!(d.len(), 20);
        d[12] ^= 1; // the recovery offset
        std::fs::write(&p, d).unwrap();
    });
}

#[test]
fn truncated_checkpoint_means_a_full_scan() {
    full_scan_after(|dir| {
        let p = checkpoint_path(dir);
        let d = std::fs::read(&p).unwrap();
        std::fs::write(&p, &d[..7]).unwrap();
    });
}

#[test]
fn open_syncs_every_segment_from_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let (written, r) = crashed_log(dir.path(), 20);
    let above = log_files(dir.path())
        .windows(2)
        .filter(|w| w[1] > r)
        .count() as u64
        + 1;
    let io = Arc::new(FaultyFileIo::default());
    let log = Log::open_with_io(dir.path(), small_segments_config(), io.clone()).unwrap();
    assert!(io.syncs.load(Ordering::Relaxed) >= above);
    assert_eq!(log.durable_offset(), written.len() as u64 * RECORDS);
    drop(log);
    // A failing fsync fails the open: nothing unsynced is reported durable.
    let io = Arc::new(FaultyFileIo::default());
    io.fail_sync.store(true, Ordering::SeqCst);
    assert!(Log::open_with_io(dir.path(), small_segments_config(), io).is_err());
}

#[test]
fn recovery_point_follows_flushes_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Interval(Duration::from_secs(3600)),
        ..small_segments_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.recovery_point(), 0);
    append_range(&log, 0..10);
    // Nothing synced yet, nothing rolled: the recovery point stays.
    assert_eq!(log.write_recovery_point().unwrap(), 0);
    log.flush().unwrap();
    assert_eq!(log.write_recovery_point().unwrap(), 10 * RECORDS);
    // Rolls without a flush: once the background syncs of the sealed
    // segments are done, the recovery point reaches the active segment.
    append_range(&log, 10..100);
    let active_base = *log.segment_base_offsets().last().unwrap();
    assert!(active_base > 10 * RECORDS);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.write_recovery_point().unwrap() < active_base {
        assert!(Instant::now() < deadline, "background syncs never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.write_recovery_point().unwrap(), active_base);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(
        log.open_kind(),
        OpenKind::Unclean {
            recovery_point: active_base
        }
    );
    assert_eq!(log.end_offset(), 100 * RECORDS);
}

#[test]
fn zero_tail_of_a_sealed_segment_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (written, r) = crashed_log(dir.path(), 20);
    let bases = log_files(dir.path());
    let victim = *bases.iter().find(|&&b| b > r).unwrap();
    assert_ne!(Some(&victim), bases.last());
    // An untrimmed preallocated tail (the trim did not reach the disk).
    let path = seg_path(dir.path(), victim, "log");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len + 8192).unwrap();
    drop(f);
    let log = Log::open(dir.path(), small_segments_config()).unwrap();
    assert_eq!(log.open_kind(), OpenKind::Unclean { recovery_point: r });
    assert_eq!(log_files(dir.path()), bases);
    assert_reads_back(&log, &written);
}

#[test]
fn flush_rewrites_the_recovery_point_at_most_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Always,
        ..small_segments_config()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    append_range(&log, 0..10);
    log.flush().unwrap();
    // Within a second of the open's checkpoint: not rewritten.
    assert_eq!(log.recovery_point(), 0);
    std::thread::sleep(Duration::from_millis(1100));
    let info = log.append(&batch_i(10)).unwrap();
    log.wait_durable(info.last_offset + 1).unwrap();
    // Written in the background; dropping the log waits for it.
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(
        log.open_kind(),
        OpenKind::Unclean {
            recovery_point: 11 * RECORDS
        }
    );
}
