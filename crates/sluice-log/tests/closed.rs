//! A closed log (its topic was deleted) never touches its directory again,
//! even when a new log now lives at the same path.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use sluice_log::{FlushPolicy, Log, LogConfig, LogError};

/// Every file in `dir` with its length and contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn is_closed<T: std::fmt::Debug>(r: Result<T, LogError>) -> bool {
    matches!(r, Err(LogError::Closed))
}

#[test]
fn a_closed_log_leaves_a_new_log_at_its_path_alone() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("t-0");
    let config = LogConfig {
        flush: FlushPolicy::Interval(std::time::Duration::from_millis(1)),
        ..small_config()
    };
    let old = Log::open(&dir, config.clone()).unwrap();
    for i in 0..200u64 {
        old.append(&make_batch(i, 2, 500, 1_000 + i as i64))
            .unwrap();
    }
    assert!(old.segment_count() > 2, "the old log has sealed segments");
    old.close().unwrap();
    old.mark_closed();
    assert!(old.is_closed());
    // The topic's directory goes away and a new one is made at the same path.
    std::fs::rename(&dir, parent.path().join("trash")).unwrap();
    std::fs::remove_dir_all(parent.path().join("trash")).unwrap();
    let new = Log::open(&dir, config.clone()).unwrap();
    let mut written = Vec::new();
    for i in 0..150u64 {
        let b = make_batch(1_000 + i, 2, 500, 5_000 + i as i64);
        new.append(&b).unwrap();
        written.push(b);
    }
    new.flush().unwrap();
    let before = snapshot(&dir);

    // Everything through the old handle refuses, and touches nothing.
    assert!(is_closed(old.append(&make_batch(9, 1, 10, 1))));
    // A roll (a batch bigger than what is left of the segment) is refused too.
    assert!(is_closed(old.append(&make_batch(9, 60, 1_000, 1))));
    old.set_config(LogConfig {
        retention_ms: Some(1),
        retention_bytes: Some(0),
        segment_ms: Some(1),
        ..config.clone()
    });
    assert!(is_closed(old.enforce_retention(i64::MAX / 2)));
    assert!(is_closed(old.delete_segments_before(u64::MAX)));
    assert!(is_closed(old.flush()));
    assert!(is_closed(old.wait_durable(u64::MAX)));
    assert!(is_closed(old.maybe_flush(Instant::now())));
    assert!(is_closed(old.write_recovery_point()));
    assert!(is_closed(old.read(0, 1024)));
    assert!(is_closed(old.offset_for_timestamp(0)));
    assert!(is_closed(old.close()));
    assert!(!old.take_writeback_request());
    old.start_writeback();
    drop(old);
    assert_eq!(
        snapshot(&dir),
        before,
        "the closed log changed the new one's files"
    );

    // The new log's data survives a reopen byte for byte.
    drop(new);
    let new = Log::open(&dir, config).unwrap();
    let all = read_all(&new);
    assert_eq!(all.len(), written.len());
    for ((_, got), w) in all.iter().zip(&written) {
        assert_eq!(body(got), body(w));
    }
}

#[test]
fn mark_closed_waits_for_appends_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 8 * 1024,
        ..small_config()
    };
    let log = Arc::new(Log::open(dir.path(), config).unwrap());
    let appender = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut ok = 0u32;
            // Bounded: at most 20,000 appends, stops at the first refusal.
            for i in 0..20_000u64 {
                match log.append(&make_batch(i, 1, 700, 1)) {
                    Ok(_) => ok += 1,
                    Err(LogError::Closed) => return (ok, true),
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            (ok, false)
        })
    };
    // Let some appends (and rolls) happen first.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while log.end_offset() < 50 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    log.mark_closed();
    let after_close = snapshot(dir.path());
    let (ok, refused) = appender.join().unwrap();
    assert!(ok > 0);
    // Whether or not the appender got to see the refusal, nothing changed
    // on disk after `mark_closed` returned.
    let _ = refused;
    assert_eq!(snapshot(dir.path()), after_close);
    assert!(is_closed(log.append(&make_batch(0, 1, 10, 1))));
}
