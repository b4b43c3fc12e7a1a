//! Storage engine benchmarks (`sluice-log`).
//!
//! Run: `cargo bench --bench storage` (about 2-3 minutes; data goes to a
//! temporary directory on the same file system as `$TMPDIR`).
//!
//! - `append/os_*`: 100 and 1,000 records x 1,000 bytes per batch (~100 KB
//!   and ~1 MB, the end-to-end workload), `FlushPolicy::Os`. Every append
//!   writes cold pages: fresh, just-`fallocate`d space of a new file, never
//!   a rewrite of pages already in the page cache. The log is recreated
//!   (outside the timing) every 768 MiB so the page cache's dirty limit
//!   never throttles it; this is the engine's speed, not the disk's. It is
//!   an upper bound for the broker: no socket copies, no competing client,
//!   no writeback, and (on a VM with free page reporting) page frames freed
//!   by the previous log are reused while still backed by the host.
//! - `read/*`: sequential reads through `Log::read` of a 512 MiB log:
//!   zero-copy (what the broker hands to the socket), with a copy of every
//!   byte into a reused buffer (an upper bound for a copying consumer), and
//!   after a reopen (sealed data is CRC-checked on first read).
//! - `recovery/*`: opening a log whose 1 GiB active segment was left by a
//!   crash (preallocated zero tail), and the worst case with its index files
//!   deleted (full CRC rescan).
//! - `durable/*`: `FlushPolicy::Always` appends from 4 threads, each
//!   waiting with `wait_durable` before its next append (group commit), beside dd-style baselines measured in the same run: 64 x 1 MiB
//!   writes then one fdatasync (`dd bs=1M count=64 conv=fdatasync`), and
//!   1 MiB write + fdatasync each (`oflag=dsync`).

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_log::{FaultyFileIo, FlushPolicy, Log, LogConfig};
use sluice_protocol::batch::RecordBatchBuilder;

const RECORD: usize = 1_000;
const RECORDS_PER_BATCH: usize = 100;

fn batch(records: usize) -> Bytes {
    let mut b = RecordBatchBuilder::with_capacity(records * (RECORD + 32));
    let value: Vec<u8> = (0..RECORD).map(|i| (i * 31 % 251) as u8).collect();
    for i in 0..records {
        b.push(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.finish()
}

fn os_config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

struct Fresh {
    _tmp: tempfile::TempDir,
    log: Log,
}

fn fresh(config: LogConfig) -> Fresh {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = Log::open(tmp.path().join("p0"), config).expect("open");
    Fresh { _tmp: tmp, log }
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, records) in [
        ("os_100x1000B", RECORDS_PER_BATCH),
        ("os_1000x1000B", 1_000),
    ] {
        let b = batch(records);
        g.throughput(Throughput::Bytes(b.len() as u64));
        let mut state = Some(fresh(os_config()));
        g.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if state
                        .as_ref()
                        .is_none_or(|s| s.log.size_bytes() > 768 << 20)
                    {
                        // Drop (and delete) outside the timing: deleting dirty
                        // pages discards them instead of writing them back.
                        state = None;
                        state = Some(fresh(os_config()));
                    }
                    let Some(s) = state.as_ref() else { break };
                    let chunk = left.min(100);
                    let t = Instant::now();
                    for _ in 0..chunk {
                        black_box(s.log.append(&b).expect("append"));
                    }
                    total += t.elapsed();
                    left -= chunk;
                }
                total
            })
        });
        drop(state);
    }
    g.finish();
}

fn fill(log: &Log, bytes: u64, b: &Bytes) {
    while log.size_bytes() < bytes {
        log.append(b).expect("append");
    }
}

fn read_through(log: &Log, mut sink: impl FnMut(&Bytes)) -> u64 {
    let mut off = log.start_offset();
    let end = log.end_offset();
    let mut n = 0u64;
    while off < end {
        let chunk = log.read(off, 1 << 20).expect("read");
        // The last batch header says where the next read starts.
        let mut pos = 0usize;
        let mut last = off;
        while pos < chunk.len() {
            let h = sluice_protocol::batch::BatchHeader::parse(&chunk[pos..]).expect("batch");
            pos += h.total_len();
            last = h.last_offset() as u64;
        }
        n += chunk.len() as u64;
        sink(&chunk);
        off = last + 1;
    }
    n
}

fn bench_read(c: &mut Criterion) {
    let b = batch(RECORDS_PER_BATCH);
    let size = 512u64 << 20;
    let config = LogConfig {
        segment_bytes: 128 << 20,
        ..os_config()
    };
    let f = fresh(config.clone());
    fill(&f.log, size, &b);
    let total = f.log.size_bytes();
    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes(total));
    g.bench_function("zero_copy_1MiB_reads", |bench| {
        bench.iter(|| {
            let n = read_through(&f.log, |c| {
                black_box(c);
            });
            assert_eq!(n, total);
        })
    });
    let mut buf = vec![0u8; 2 << 20];
    g.bench_function("read_and_copy_every_byte", |bench| {
        bench.iter(|| {
            read_through(&f.log, |c| {
                buf[..c.len()].copy_from_slice(c);
                black_box(&buf);
            })
        })
    });
    let dir = f.log.dir().to_path_buf();
    f.log.close().expect("close");
    let mut reopened: Option<Log> = None;
    drop(f.log);
    g.bench_function("first_read_after_reopen_crc_checked", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                reopened = None;
                let log = Log::open(&dir, config.clone()).expect("reopen");
                let t = Instant::now();
                black_box(read_through(&log, |c| {
                    black_box(c);
                }));
                total += t.elapsed();
                reopened = Some(log);
            }
            total
        })
    });
    drop(reopened);
    g.finish();
    drop(f._tmp);
}

/// Builds a crashed log with a ~1 GiB active segment; returns (tempdir, log dir, .log path).
fn crashed_gib_log() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let b = batch(RECORDS_PER_BATCH);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("p0");
    {
        let log = Log::open(&dir, os_config()).expect("open");
        // Stay below segment_bytes (1 GiB) so it all lands in one segment.
        while log.size_bytes() + (b.len() as u64) <= (1 << 30) - (1 << 20) {
            log.append(&b).expect("append");
        }
        log.flush().expect("flush");
        // Dropped without close: the preallocated tail stays.
    }
    let path = dir.join(sluice_log::file_name(0, "log"));
    (tmp, dir, path)
}

fn extend_with_zero_tail(path: &Path, data_len: u64) {
    let f = OpenOptions::new().write(true).open(path).expect("open log");
    f.set_len(data_len + (64 << 20)).expect("extend");
}

fn bench_recovery(c: &mut Criterion) {
    let (_tmp, dir, path) = crashed_gib_log();
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let data_len = {
        let log = Log::open(&dir, os_config()).expect("open");
        let n = log.size_bytes();
        eprintln!("recovery: active segment holds {} MiB", n >> 20);
        n
    };
    g.bench_function("open_1GiB_active_segment_after_crash", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                extend_with_zero_tail(&path, data_len);
                let t = Instant::now();
                let log = Log::open(&dir, os_config()).expect("open");
                total += t.elapsed();
                assert_eq!(log.size_bytes(), data_len);
            }
            total
        })
    });
    g.bench_function(
        "open_1GiB_active_segment_indexes_deleted_full_rescan",
        |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    extend_with_zero_tail(&path, data_len);
                    for ext in ["index", "timeindex"] {
                        let _ = std::fs::remove_file(dir.join(sluice_log::file_name(0, ext)));
                    }
                    let t = Instant::now();
                    let log = Log::open(&dir, os_config()).expect("open");
                    total += t.elapsed();
                    assert_eq!(log.size_bytes(), data_len);
                }
                total
            })
        },
    );
    g.finish();
}

fn bench_durable(c: &mut Criterion) {
    let b = batch(RECORDS_PER_BATCH);
    let mut g = c.benchmark_group("durable");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Bytes(b.len() as u64));
    let io = Arc::new(FaultyFileIo::default());
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with_io(
        tmp.path().join("p0"),
        LogConfig {
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        },
        io.clone(),
    )
    .expect("open");
    let mut appends = 0u64;
    let syncs_before = io.syncs.load(Ordering::Relaxed);
    g.bench_function("always_4_writers_group_commit", |bench| {
        bench.iter_custom(|iters| {
            let per_thread = iters.div_ceil(4);
            appends += per_thread * 4;
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            // Acknowledge only once durable, as a producer
                            // with acks=durable is.
                            let info = log.append(&b).expect("append");
                            log.wait_durable(info.last_offset + 1).expect("durable");
                        }
                    });
                }
            });
            // Time per append as criterion counts it (iters appends).
            t.elapsed().mul_f64(iters as f64 / (per_thread * 4) as f64)
        })
    });
    let syncs = io.syncs.load(Ordering::Relaxed) - syncs_before;
    eprintln!(
        "durable: {appends} appends covered by {syncs} fdatasyncs ({:.1} appends per sync)",
        appends as f64 / syncs.max(1) as f64
    );
    drop(log);

    let block = vec![0xa5u8; 1 << 20];
    let path = tmp.path().join("dd.bin");
    g.throughput(Throughput::Bytes(64 << 20));
    g.bench_function("dd_64x1MiB_then_fdatasync", |bench| {
        bench.iter(|| {
            let mut f = File::create(&path).expect("open");
            for _ in 0..64 {
                f.write_all(&block).expect("write");
            }
            f.sync_data().expect("fdatasync");
        })
    });
    g.throughput(Throughput::Bytes(1 << 20));
    let mut f = File::create(&path).expect("open");
    let mut written = 0u64;
    g.bench_function("dd_1MiB_write_plus_fdatasync_each", |bench| {
        bench.iter(|| {
            if written >= 1 << 30 {
                f.set_len(0).expect("truncate");
                f.seek(SeekFrom::Start(0)).expect("seek");
                written = 0;
            }
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            written += 1 << 20;
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_append,
    bench_read,
    bench_recovery,
    bench_durable
);
criterion_main!(benches);
