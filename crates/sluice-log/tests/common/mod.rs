//! Shared helpers for the sluice-log integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_log::{FlushPolicy, Log, LogConfig};
use sluice_protocol::batch::{self, BatchHeader, RecordBatchBuilder};

/// A batch of `records` records whose values are `value_len` bytes derived
/// from `seed`, all with timestamp `ts`.
pub fn make_batch(seed: u64, records: usize, value_len: usize, ts: i64) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    let mut value = vec![0u8; value_len];
    for r in 0..records {
        for (i, v) in value.iter_mut().enumerate() {
            *v = (seed as usize).wrapping_mul(31).wrapping_add(r * 7 + i) as u8;
        }
        let key = format!("k{seed}-{r}");
        b.push(ts, Some(key.as_bytes()), Some(&value), &[]);
    }
    b.finish()
}

/// A small config that rolls often and indexes densely.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        segment_ms: None,
        index_interval_bytes: 1024,
        preallocate_bytes: 16 * 1024,
        max_batch_bytes: 1 << 20,
        flush: FlushPolicy::Os,
        retention_ms: None,
        retention_bytes: None,
    }
}

/// Splits concatenated batches into (header, bytes) pairs; panics on damage.
pub fn split(buf: &[u8]) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let h = BatchHeader::parse(&buf[pos..]).expect("whole batch");
        batch::verify_crc(&buf[pos..pos + h.total_len()]).expect("crc");
        out.push((h, buf[pos..pos + h.total_len()].to_vec()));
        pos += h.total_len();
    }
    out
}

/// Reads every batch from start to end.
pub fn read_all(log: &Log) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = log.start_offset();
    while off < log.end_offset() {
        let b = log.read(off, 256 * 1024).expect("read");
        assert!(!b.is_empty(), "empty read at {off}");
        let batches = split(&b);
        off = batches
            .last()
            .map(|(h, _)| h.last_offset() as u64 + 1)
            .unwrap_or(off);
        out.extend(batches);
    }
    out
}

/// The payload of a batch without the base offset (which the log assigns).
pub fn body(bytes: &[u8]) -> &[u8] {
    &bytes[8..]
}

/// Path of a segment file.
pub fn seg_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(sluice_log::file_name(base, ext))
}

/// Positions and headers of the batches in a `.log` file.
pub fn batch_positions(path: &Path) -> Vec<(usize, BatchHeader)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(h) = BatchHeader::parse(&data[pos..]) {
        out.push((pos, h));
        pos += h.total_len();
    }
    out
}

/// Base offsets of the `.log` files in `dir`, sorted.
pub fn log_files(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    v.sort();
    v
}

/// Conformance suite every log implementation must pass: append, read,
/// offsets, ranges, and reopen.
pub fn suite(dir: &Path, config: LogConfig) {
    let log = Log::open(dir, config.clone()).unwrap();
    assert_eq!(log.start_offset(), 0);
    assert_eq!(log.end_offset(), 0);
    assert!(log.read(0, 1000).unwrap().is_empty());
    assert!(matches!(
        log.read(1, 1000),
        Err(sluice_log::LogError::OffsetOutOfRange { .. })
    ));

    let mut written = Vec::new();
    let mut expected_base = 0;
    for i in 0..50u64 {
        let b = make_batch(
            i,
            1 + (i as usize % 5),
            100 + (i as usize * 37) % 900,
            1_000 + i as i64,
        );
        let info = log.append(&b).unwrap();
        assert_eq!(info.base_offset, expected_base);
        assert_eq!(info.batches, 1);
        assert_eq!(info.bytes, b.len());
        assert_eq!(info.last_offset, expected_base + (1 + i % 5) - 1);
        expected_base = info.last_offset + 1;
        written.push(b);
    }
    assert_eq!(log.end_offset(), expected_base);
    let check = |log: &Log| {
        let all = read_all(log);
        assert_eq!(all.len(), written.len());
        let mut next = 0u64;
        for ((h, bytes), w) in all.iter().zip(&written) {
            assert_eq!(h.base_offset as u64, next);
            assert_eq!(body(bytes), body(w));
            next = h.last_offset() as u64 + 1;
        }
        // Reading from the middle of a batch returns that batch.
        let (h, _) = &all[10];
        if h.last_offset_delta > 0 {
            let b = log.read(h.base_offset as u64 + 1, 1).unwrap();
            assert_eq!(split(&b)[0].0.base_offset, h.base_offset);
        }
        // max_bytes smaller than a batch still returns one batch.
        let b = log.read(0, 1).unwrap();
        assert_eq!(split(&b).len(), 1);
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir, config).unwrap();
    assert_eq!(log.end_offset(), expected_base);
    check(&log);
    let info = log.append(&written[0]).unwrap();
    assert_eq!(info.base_offset, expected_base);
}
