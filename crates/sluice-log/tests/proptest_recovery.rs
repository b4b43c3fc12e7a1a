//! Property: write random batches, damage random files, reopen; every batch
//! the log still returns is one that was written, at its offset, in order,
//! and nothing panics.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use proptest::prelude::*;
use sluice_log::{Log, LogConfig, LogError};
use sluice_protocol::batch::BatchHeader;

#[derive(Debug, Clone)]
enum Damage {
    Flip { file: usize, at: usize, xor: u8 },
    Truncate { file: usize, keep_permille: u16 },
    Garbage { file: usize, bytes: Vec<u8> },
    Delete { file: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), any::<usize>(), 1u8..=255).prop_map(|(file, at, xor)| Damage::Flip { file, at, xor }),
        2 => (any::<usize>(), 0u16..1000).prop_map(|(file, keep_permille)| Damage::Truncate { file, keep_permille }),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..200))
            .prop_map(|(file, bytes)| Damage::Garbage { file, bytes }),
        1 => any::<usize>().prop_map(|file| Damage::Delete { file }),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        preallocate_bytes: 4096,
        ..small_config()
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex")
        })
        .collect();
    v.sort();
    v
}

fn apply(dir: &Path, d: &Damage) {
    let files = segment_files(dir);
    if files.is_empty() {
        return;
    }
    let pick = |i: usize| &files[i % files.len()];
    match d {
        Damage::Flip { file, at, xor } => {
            let p = pick(*file);
            let mut data = std::fs::read(p).unwrap();
            if !data.is_empty() {
                let i = at % data.len();
                data[i] ^= xor;
                std::fs::write(p, data).unwrap();
            }
        }
        Damage::Truncate {
            file,
            keep_permille,
        } => {
            let p = pick(*file);
            let len = std::fs::metadata(p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len * u64::from(*keep_permille) / 1000).unwrap();
        }
        Damage::Garbage { file, bytes } => {
            let p = pick(*file);
            let mut data = std::fs::read(p).unwrap();
            data.extend_from_slice(bytes);
            std::fs::write(p, data).unwrap();
        }
        Damage::Delete { file } => {
            let p = pick(*file);
            // Deleting a .log drops a whole segment; only indexes here.
            if !p.to_string_lossy().ends_with(".log") {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
}

/// Bytes the log can vouch for: the length field and everything from the
/// magic byte on (the leader epoch, bytes 12..16, sits outside the CRC by
/// the format's design, and the base offset is assigned by the log).
fn vouched(b: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (b[8..12].to_vec(), b[16..].to_vec())
}

/// Reads everything and checks it against `written` (base offset -> batch).
fn check(log: &Log, written: &BTreeMap<u64, Vec<u8>>) -> usize {
    let end = log.end_offset();
    let mut off = log.start_offset();
    let mut last_seen: Option<u64> = None;
    let mut survivors = 0;
    let mut steps = 0;
    while off < end {
        steps += 1;
        assert!(steps < 100_000, "read loop does not make progress");
        match log.read(off, 4096) {
            Ok(b) if b.is_empty() => off += 1,
            Ok(b) => {
                let mut pos = 0;
                while pos < b.len() {
                    let h = BatchHeader::parse(&b[pos..]).expect("read returns whole batches");
                    let got = &b[pos..pos + h.total_len()];
                    sluice_protocol::batch::verify_crc(got)
                        .expect("read returns CRC-valid batches");
                    let base = h.base_offset as u64;
                    let w = written
                        .get(&base)
                        .unwrap_or_else(|| panic!("batch at {base} was never written"));
                    assert_eq!(vouched(got), vouched(w), "batch at {base} differs");
                    assert!(last_seen.is_none_or(|l| base > l), "out of order at {base}");
                    last_seen = Some(base);
                    survivors += 1;
                    pos += h.total_len();
                    off = h.last_offset() as u64 + 1;
                }
            }
            Err(LogError::Corrupt { .. }) => off += 1,
            Err(e) => panic!("unexpected error reading {off}: {e}"),
        }
    }
    // Timestamp lookups must not panic either.
    let _ = log.offset_for_timestamp(0);
    let _ = log.offset_for_timestamp(i64::MAX);
    survivors
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_logs_only_return_written_batches(
        batches in proptest::collection::vec((1usize..5, 0usize..600), 1..40),
        clean_close in any::<bool>(),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut written = BTreeMap::new();
        {
            let log = Log::open(dir.path(), config()).unwrap();
            for (i, (records, len)) in batches.iter().enumerate() {
                let b = make_batch(i as u64, *records, *len, i as i64 * 10);
                let info = log.append(&b).unwrap();
                let mut stored = b.to_vec();
                stored[0..8].copy_from_slice(&(info.base_offset as i64).to_be_bytes());
                written.insert(info.base_offset, stored);
            }
            if clean_close {
                log.close().unwrap();
            }
        }
        for d in &damages {
            apply(dir.path(), d);
        }
        let log = Log::open(dir.path(), config()).unwrap();
        check(&log, &written);
        // Appending after recovery and reopening again keeps the property.
        let end = log.end_offset();
        let extra = make_batch(999, 2, 50, 0);
        let info = log.append(&extra).unwrap();
        prop_assert_eq!(info.base_offset, end);
        let mut stored = extra.to_vec();
        stored[0..8].copy_from_slice(&(end as i64).to_be_bytes());
        // The new batch replaces anything recovery cut at that offset.
        written.retain(|&o, _| o < end);
        written.insert(end, stored);
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        prop_assert_eq!(log.end_offset(), end + 2);
        check(&log, &written);
    }
}
