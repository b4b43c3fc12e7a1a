//! Power cuts at every step: whatever an fsync acknowledged survives byte
//! for byte, and what was not acknowledged may go but leaves no garbage.
//!
//! Each scenario first runs without a cut to count its file-system calls,
//! then once per call with the power cut there: the fault injector fails
//! that call and every later one, the log is dropped, the tree is rewritten
//! to what the disk would hold (only what file and directory fsyncs made
//! durable), and the log is reopened with the real file system.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use sluice_log::{FaultyFileIo, FlushPolicy, Log, LogConfig};

/// What a scenario did before the power went.
#[derive(Default)]
struct Run {
    /// Batches appended (in order), whether or not acknowledged.
    appended: Vec<Bytes>,
    /// How many of them an fsync acknowledged.
    acked: usize,
}

fn config(segment_bytes: u64, flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes,
        preallocate_bytes: 4096,
        index_interval_bytes: 512,
        flush,
        ..small_config()
    }
}

fn batch(i: u64) -> Bytes {
    make_batch(i, 2, 600 + (i as usize % 3) * 100, 1_000 + i as i64)
}

/// Appends `n` batches starting at seed `from`, each followed by an fsync
/// (`wait_durable`); stops at the first failure.
fn append_acked(log: &Log, run: &mut Run, from: u64, n: u64) -> bool {
    for i in from..from + n {
        let b = batch(i);
        let Ok(info) = log.append(&b) else {
            return false;
        };
        run.appended.push(b);
        if log.wait_durable(info.last_offset + 1).is_err() {
            return false;
        }
        run.acked = run.appended.len();
    }
    true
}

/// A durable log with `n` batches at `dir`, made without fault injection.
fn prepopulate(dir: &Path, config: &LogConfig, n: u64) -> Vec<Bytes> {
    let log = Log::open(dir, config.clone()).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let b = batch(10_000 + i);
        log.append(&b).unwrap();
        out.push(b);
    }
    log.close().unwrap();
    out
}

/// Runs `scenario` with the power cut at `cut_at` (never: `None`), then
/// cuts the power, reopens the log at `root/rel` and checks it: it holds
/// `before` and then a prefix of what was appended, at least everything
/// acknowledged. Returns the number of file-system calls made.
fn cut_and_check(
    name: &str,
    cut_at: Option<u64>,
    rel: &str,
    config: &LogConfig,
    setup: impl Fn(&Path) -> Vec<Bytes>,
    scenario: impl Fn(Arc<FaultyFileIo>, &Path, &mut Run),
) -> u64 {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("data");
    std::fs::create_dir(&root).unwrap();
    let dir: PathBuf = root.join(rel);
    let before = setup(&dir);
    let io = Arc::new(
        FaultyFileIo::with_power_cut(&root, &base.path().join("graveyard"), cut_at).unwrap(),
    );
    let mut run = Run::default();
    scenario(io.clone(), &dir, &mut run);
    let steps = io.steps();
    io.cut_power().unwrap();

    let log = Log::open(&dir, config.clone())
        .unwrap_or_else(|e| panic!("{name}, cut at {cut_at:?}: reopen failed: {e}"));
    let got = read_all(&log);
    let expected: Vec<&Bytes> = before.iter().chain(run.appended.iter()).collect();
    let need = before.len() + run.acked;
    assert!(
        got.len() >= need,
        "{name}, cut at {cut_at:?}: {} batches survived, {need} were acknowledged",
        got.len()
    );
    assert!(
        got.len() <= expected.len(),
        "{name}, cut at {cut_at:?}: {} batches, only {} were written",
        got.len(),
        expected.len()
    );
    for (i, ((h, bytes), w)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            body(bytes),
            body(w),
            "{name}, cut at {cut_at:?}: batch {i} differs"
        );
        assert_eq!(h.record_count, 2);
    }
    // The reopened log takes appends again.
    log.append(&batch(99)).unwrap();
    log.flush().unwrap();
    steps
}

/// Runs a scenario once to count its steps, then with a cut at each one.
fn at_every_step(
    name: &str,
    rel: &str,
    config: LogConfig,
    setup: impl Fn(&Path) -> Vec<Bytes>,
    scenario: impl Fn(Arc<FaultyFileIo>, &Path, &mut Run),
) {
    let total = cut_and_check(name, None, rel, &config, &setup, &scenario);
    assert!(total > 5, "{name}: only {total} steps");
    // Bounded: one run per step counted (plus one past the end).
    for k in 0..=total {
        cut_and_check(name, Some(k), rel, &config, &setup, &scenario);
    }
}

#[test]
fn power_cut_during_appends() {
    let cfg = config(1 << 20, FlushPolicy::Always);
    let setup_cfg = cfg.clone();
    at_every_step(
        "append",
        "t/0",
        cfg.clone(),
        move |dir| prepopulate(dir, &setup_cfg, 3),
        move |io, dir, run| {
            let Ok(log) = Log::open_with_io(dir, cfg.clone(), io) else {
                return;
            };
            append_acked(&log, run, 0, 6);
        },
    );
}

#[test]
fn power_cut_during_rolls() {
    // 4 KiB segments and ~1.5 KiB batches: a roll every two or three appends.
    for flush in [FlushPolicy::Always, FlushPolicy::Os] {
        let cfg = config(4096, flush);
        let setup_cfg = cfg.clone();
        at_every_step(
            "roll",
            "t/0",
            cfg.clone(),
            move |dir| prepopulate(dir, &setup_cfg, 2),
            move |io, dir, run| {
                let Ok(log) = Log::open_with_io(dir, cfg.clone(), io) else {
                    return;
                };
                append_acked(&log, run, 0, 7);
            },
        );
    }
}

#[test]
fn power_cut_during_log_creation() {
    // The partition directory and its parent do not exist yet.
    let cfg = config(4096, FlushPolicy::Always);
    at_every_step(
        "creation",
        "new-topic/0",
        cfg.clone(),
        |_| Vec::new(),
        move |io, dir, run| {
            let Ok(log) = Log::open_with_io(dir, cfg.clone(), io) else {
                return;
            };
            append_acked(&log, run, 0, 3);
        },
    );
}

#[test]
fn power_cut_during_recovery_point_replacement() {
    let cfg = config(
        4096,
        FlushPolicy::Interval(std::time::Duration::from_secs(3600)),
    );
    let setup_cfg = cfg.clone();
    at_every_step(
        "recovery point",
        "t/0",
        cfg.clone(),
        move |dir| prepopulate(dir, &setup_cfg, 4),
        move |io, dir, run| {
            let Ok(log) = Log::open_with_io(dir, cfg.clone(), io) else {
                return;
            };
            for round in 0..3u64 {
                if !append_acked(&log, run, round * 3, 3) {
                    return;
                }
                if log.write_recovery_point().is_err() {
                    return;
                }
            }
            // Close writes the clean-shutdown checkpoint; an append after it
            // must clear it before writing.
            if log.close().is_err() {
                return;
            }
            append_acked(&log, run, 100, 1);
        },
    );
}

#[test]
fn the_model_keeps_only_what_fsyncs_made_durable() {
    use sluice_log::FileIo;
    use std::fs::OpenOptions;
    use std::io::IoSlice;
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("data");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("old"), b"old durable").unwrap();
    std::fs::write(root.join("replaced"), b"first").unwrap();
    let io = FaultyFileIo::with_power_cut(&root, &base.path().join("g"), None).unwrap();
    let create = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .clone();
    // Synced data, synced entry: survives.
    let a = io.open(&root.join("a"), &create).unwrap();
    io.write_vectored_at(&a, 0, &[IoSlice::new(b"aaaa")])
        .unwrap();
    io.sync_data(&a).unwrap();
    // Synced entry, data written after the file sync: the later write is lost.
    io.write_vectored_at(&a, 4, &[IoSlice::new(b"more")])
        .unwrap();
    // A new directory whose entry is durable but whose contents are not.
    io.create_dir(&root.join("d")).unwrap();
    io.sync_dir(&root).unwrap();
    // Synced data, entry never synced: the file is lost.
    let b = io.open(&root.join("b"), &create).unwrap();
    io.write_vectored_at(&b, 0, &[IoSlice::new(b"bbbb")])
        .unwrap();
    io.sync_data(&b).unwrap();
    let c = io.open(&root.join("d").join("c"), &create).unwrap();
    io.sync_data(&c).unwrap();
    // After the directory sync: a removal and a rename over a file, neither synced.
    let r = io.open(&root.join("r.tmp"), &create).unwrap();
    io.write_vectored_at(&r, 0, &[IoSlice::new(b"second")])
        .unwrap();
    io.sync_all(&r).unwrap();
    io.rename(&root.join("r.tmp"), &root.join("replaced"))
        .unwrap();
    io.remove_file(&root.join("old")).unwrap();
    assert_eq!(std::fs::read(root.join("replaced")).unwrap(), b"second");
    drop((a, b, c, r));
    io.cut_power().unwrap();
    assert!(io.is_cut());
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "d", "old", "replaced"]);
    assert_eq!(std::fs::read(root.join("a")).unwrap(), b"aaaa");
    assert_eq!(std::fs::read(root.join("old")).unwrap(), b"old durable");
    assert_eq!(std::fs::read(root.join("replaced")).unwrap(), b"first");
    assert_eq!(std::fs::read_dir(root.join("d")).unwrap().count(), 0);
    // Every call after the cut fails.
    assert!(io.sync_dir(&root).is_err());
}
