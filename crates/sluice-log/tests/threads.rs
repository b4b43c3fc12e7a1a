//! Rolls and flushes do their background work on a bounded pool: no thread
//! per roll, however many rolls there are.

mod common;

use std::time::Duration;

use common::*;
use sluice_log::{FlushPolicy, Log, LogConfig};

#[test]
fn many_rolls_start_a_bounded_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 4096,
        preallocate_bytes: 4096,
        flush: FlushPolicy::Interval(Duration::from_millis(1)),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    let mut written = Vec::new();
    for i in 0..400u64 {
        let b = make_batch(i, 1, 3_000, 1_000 + i as i64);
        log.append(&b).unwrap();
        written.push(b);
        if i % 50 == 0 {
            log.flush().unwrap();
        }
    }
    assert!(
        log.segment_count() >= 300,
        "{} segments",
        log.segment_count()
    );
    // Each roll queued a background fsync; a flush covers any still pending.
    log.flush().unwrap();
    assert!(
        sluice_log::background_threads_started() <= 2,
        "{} background threads for {} rolls",
        sluice_log::background_threads_started(),
        log.segment_count()
    );
    assert_eq!(read_all(&log).len(), written.len());
}
