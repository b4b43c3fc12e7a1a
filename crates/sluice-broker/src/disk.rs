//! Free space on the data directory's file system, and the produce guard
//! built on it (`disk_min_free_bytes`).
//!
//! While the space available on the file system that holds the data
//! directory is below `disk_min_free_bytes`, produce is refused with
//! [`BrokerError::DiskSpaceLow`] (native `DISK_FULL`, Kafka
//! `KAFKA_STORAGE_ERROR`) before the log is touched, so the disk never fills
//! under a producer and everything acknowledged stays readable. "Available"
//! is `df`'s Avail (`f_bavail`): blocks reserved for root do not count.
//!
//! What is refused and what is not:
//! - Refused: every leader-side append through
//!   [`Broker::append`](crate::Broker::append), which is both the native and
//!   the Kafka Produce, and the auto-creation of a topic by a produce (a new
//!   partition preallocates its first segment): checked before the topic is
//!   created, and in a cluster before the handler proposes it.
//! - Not refused: Fetch, ListOffsets, Metadata, the group APIs and consumer
//!   offset commits (small records in `__consumer_offsets`; refusing them
//!   would only make consumers re-read after a restart), admin requests
//!   (DeleteTopics and DeleteRecords are how space is freed), and followers'
//!   replication appends: the leader already acknowledged what they copy, so
//!   a follower writes while it has any room at all and stops only at a real
//!   `ENOSPC` (it then leaves the ISR; see `replica`).
//!
//! The check on the produce path is one atomic load. The space is measured
//! (`fstatvfs` on the open data directory) at start, by the broker's
//! housekeeping every second ([`DISK_SPACE_TICK`], driven by `sluiced`), and
//! on the append path whenever [`refresh_step`] bytes have been appended
//! since the last measurement, so a burst faster than the tick still meets
//! the floor within that many bytes. The floor is a margin, not a
//! reservation: what is written between two measurements, and the
//! preallocation of segments (up to 64 MiB a partition at each roll), comes
//! out of it; a disk that fills anyway fails appends with `DISK_FULL` from
//! the log itself, losing nothing acknowledged.
//!
//! Each change between refusing and accepting is logged once, with the
//! available bytes and the floor. There is no hysteresis: produce resumes as
//! soon as a measurement is back at or above the floor. `0` turns the guard
//! off (the gauges are still exported).
//!
//! The same housekeeping tick ([`DiskSpace::tick`]) also measures what the
//! files under the data directory take on disk (`sluice_data_dir_bytes`,
//! [`dir_usage`]), at most every [`DATA_DIR_USAGE_TICK`]: unlike
//! `fstatvfs`, that is one `stat` per file, so it is neither on the append
//! path nor every second.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use crate::error::BrokerError;
use crate::metrics::Metrics;

/// Default `disk_min_free_bytes`: 1 GiB (Redpanda's `storage_min_free_bytes`
/// default too). Small enough for a laptop, large enough to absorb a second
/// of writes and a few segment preallocations.
pub const DEFAULT_DISK_MIN_FREE_BYTES: u64 = 1 << 30;

/// How often the broker's housekeeping measures the free space.
pub const DISK_SPACE_TICK: Duration = Duration::from_secs(1);

/// How often [`DiskSpace::tick`] walks the data directory for its size.
pub const DATA_DIR_USAGE_TICK: Duration = Duration::from_secs(15);

/// Whether produce is refused with `available` bytes left and a floor of `min_free`.
pub fn refuses(available: u64, min_free: u64) -> bool {
    available < min_free
}

/// Bytes appended between two measurements on the append path: a quarter of
/// the floor, between 64 KiB and 64 MiB (a log's largest preallocation
/// step); never with the guard off.
pub fn refresh_step(min_free: u64) -> u64 {
    if min_free == 0 {
        u64::MAX
    } else {
        (min_free / 4).clamp(64 << 10, 64 << 20)
    }
}

/// The free-space guard of one data directory; see the module docs.
#[derive(Debug)]
pub struct DiskSpace {
    /// The data directory, kept open for `fstatvfs`.
    dir: File,
    min_free: u64,
    step: u64,
    available: AtomicU64,
    total: AtomicU64,
    /// Whether produce is refused (the last measurement was below the floor).
    low: AtomicBool,
    /// Bytes appended since the last measurement.
    since_refresh: AtomicU64,
    /// A failed measurement has been logged (logged once, not every tick).
    failing: AtomicBool,
    available_gauge: IntGauge,
    total_gauge: IntGauge,
    low_gauge: IntGauge,
    /// The data directory's path, walked by [`DiskSpace::measure_usage`].
    path: PathBuf,
    /// When the data directory was last walked (`None`: never).
    usage_walked: Mutex<Option<Instant>>,
    usage_gauge: IntGauge,
}

/// Bytes the files under `dir` take on disk, as `du` counts them: the
/// allocated blocks (`st_blocks`, in 512-byte units) of `dir` and of every
/// file and directory below it, symbolic links not followed. Sparse and
/// preallocated files count what is allocated, not their length. Entries
/// that vanish during the walk (a segment deleted by retention) are skipped.
pub fn dir_usage(dir: &Path) -> u64 {
    let mut total = std::fs::symlink_metadata(dir).map_or(0, |m| m.blocks() * 512);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            // DirEntry::metadata does not follow symbolic links.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

impl DiskSpace {
    /// Opens `data_dir` and measures it once.
    pub fn open(
        data_dir: &Path,
        min_free: u64,
        metrics: &Metrics,
    ) -> Result<DiskSpace, BrokerError> {
        let dir = File::open(data_dir).map_err(|source| BrokerError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let space = DiskSpace {
            dir,
            min_free,
            step: refresh_step(min_free),
            available: AtomicU64::new(u64::MAX),
            total: AtomicU64::new(0),
            low: AtomicBool::new(false),
            since_refresh: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            available_gauge: metrics.disk_free_bytes.clone(),
            total_gauge: metrics.disk_total_bytes.clone(),
            low_gauge: metrics.disk_space_low.clone(),
            path: data_dir.to_path_buf(),
            usage_walked: Mutex::new(None),
            usage_gauge: metrics.data_dir_bytes.clone(),
        };
        space.refresh();
        Ok(space)
    }

    /// The configured floor (`disk_min_free_bytes`; 0: off).
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Bytes available at the last measurement.
    pub fn available(&self) -> u64 {
        self.available.load(Ordering::Relaxed)
    }

    /// Whether produce is refused right now.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// `Ok` unless produce is refused; the produce path's only cost.
    pub fn check(&self) -> Result<(), BrokerError> {
        if self.is_low() {
            return Err(BrokerError::DiskSpaceLow {
                available: self.available(),
                min_free: self.min_free,
            });
        }
        Ok(())
    }

    /// Counts `bytes` just appended; measures again once [`refresh_step`] bytes add up.
    pub fn note_appended(&self, bytes: u64) {
        let before = self.since_refresh.fetch_add(bytes, Ordering::Relaxed);
        if before < self.step && before.saturating_add(bytes) >= self.step {
            self.refresh();
        }
    }

    /// The housekeeping's measurement ([`DISK_SPACE_TICK`]): the free space
    /// ([`DiskSpace::refresh`]), and the data directory's size when it was
    /// last walked [`DATA_DIR_USAGE_TICK`] ago or never.
    pub fn tick(&self) {
        self.refresh();
        let due = {
            let mut walked = self.usage_walked.lock().unwrap_or_else(|p| p.into_inner());
            let due = walked.is_none_or(|t| t.elapsed() >= DATA_DIR_USAGE_TICK);
            if due {
                *walked = Some(Instant::now());
            }
            due
        };
        if due {
            self.measure_usage();
        }
    }

    /// Walks the data directory now and sets `sluice_data_dir_bytes`; returns the bytes.
    pub fn measure_usage(&self) -> u64 {
        let bytes = dir_usage(&self.path);
        self.usage_gauge
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        bytes
    }

    /// Measures the file system now, updates the gauges and the verdict,
    /// and logs a change of verdict. A failed measurement keeps the last
    /// verdict (logged once until a measurement succeeds again).
    pub fn refresh(&self) {
        self.since_refresh.store(0, Ordering::Relaxed);
        let space = match sluice_log::fs_space(&self.dir) {
            Ok(s) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("measuring the data directory's free space works again");
                }
                s
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot measure the data directory's free space; keeping the last verdict");
                }
                return;
            }
        };
        self.available.store(space.available, Ordering::Relaxed);
        self.total.store(space.total, Ordering::Relaxed);
        self.available_gauge
            .set(i64::try_from(space.available).unwrap_or(i64::MAX));
        self.total_gauge
            .set(i64::try_from(space.total).unwrap_or(i64::MAX));
        let low = refuses(space.available, self.min_free);
        self.low_gauge.set(i64::from(low));
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    available_bytes = space.available,
                    disk_min_free_bytes = self.min_free,
                    "free disk space below disk_min_free_bytes: refusing produce (reads keep working) until space is freed"
                );
            } else {
                tracing::info!(
                    available_bytes = space.available,
                    disk_min_free_bytes = self.min_free,
                    "free disk space back above disk_min_free_bytes: accepting produce again"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_strictly_below_the_floor_and_never_when_off() {
        assert!(refuses(99, 100));
        assert!(!refuses(100, 100));
        assert!(!refuses(101, 100));
        assert!(!refuses(0, 0), "0 turns the guard off");
        assert!(refuses(0, 1));
    }

    #[test]
    fn the_append_path_measures_every_quarter_of_the_floor_within_bounds() {
        assert_eq!(refresh_step(0), u64::MAX);
        assert_eq!(refresh_step(1 << 30), 64 << 20);
        assert_eq!(refresh_step(16 << 20), 4 << 20);
        assert_eq!(refresh_step(1000), 64 << 10);
    }

    #[test]
    fn a_floor_above_the_disk_refuses_and_zero_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new();
        let off = DiskSpace::open(dir.path(), 0, &m).unwrap();
        assert!(off.check().is_ok());
        assert!(off.available() > 0);
        let text = m.render();
        assert!(text.contains("sluice_disk_free_bytes "), "{text}");
        assert!(text.contains("sluice_disk_space_low 0"), "{text}");
        let full = DiskSpace::open(dir.path(), u64::MAX, &m).unwrap();
        let e = full.check().unwrap_err();
        assert!(
            matches!(e, BrokerError::DiskSpaceLow { min_free: u64::MAX, available } if available > 0),
            "{e:?}"
        );
        assert_eq!(
            crate::codes::WireCode::code(&e),
            sluice_protocol::ErrorCode::DiskFull
        );
        assert!(m.render().contains("sluice_disk_space_low 1"));
        // Appends are counted; a step's worth measures again (still low).
        full.note_appended(refresh_step(u64::MAX));
        assert!(full.is_low());
    }

    #[test]
    fn the_data_dir_size_counts_allocated_blocks_of_every_file_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new();
        let space = DiskSpace::open(dir.path(), 0, &m).unwrap();
        let empty = dir_usage(dir.path());
        std::fs::create_dir_all(dir.path().join("orders/0")).unwrap();
        std::fs::write(dir.path().join("orders/0/a.log"), vec![7u8; 256 << 10]).unwrap();
        std::fs::write(dir.path().join("top.meta"), vec![1u8; 64 << 10]).unwrap();
        // A sparse file: its length is not what it takes.
        let sparse = File::create(dir.path().join("orders/0/b.index")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let used = dir_usage(dir.path());
        assert!(used >= empty + (320 << 10), "{empty} -> {used}");
        assert!(
            used < empty + (8 << 20),
            "the sparse file counted its length: {used}"
        );
        // The first tick walks; the next ones within the interval do not.
        space.tick();
        assert_eq!(m.data_dir_bytes.get(), used as i64);
        std::fs::write(dir.path().join("more"), vec![1u8; 128 << 10]).unwrap();
        space.tick();
        assert_eq!(m.data_dir_bytes.get(), used as i64);
        assert!(space.measure_usage() >= used + (128 << 10));
        assert!(m.data_dir_bytes.get() >= (used + (128 << 10)) as i64);
        assert_eq!(dir_usage(&dir.path().join("missing")), 0);
    }
}
