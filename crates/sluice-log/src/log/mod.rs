//! [`Log`]: one partition, an ordered list of segments in one directory.
//!
//! Besides append/read/flush/retention, two operations serve replication
//! (both described in the crate docs): [`Log::append_with_epoch`] stamps
//! the partition leader epoch into every stored batch without copying it,
//! and [`Log::truncate_to`] cuts the tail at a batch boundary, zeroing the
//! removed bytes in place (a file that is or was mapped is never shrunk:
//! readers may hold `Bytes` into it, and touching a mapped page past the
//! end of a file is a SIGBUS), guarded by a `truncate-to` marker so that a
//! crash at any step neither resurrects a removed batch nor loses a kept one.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchError, HEADER_LEN};

mod durability;
mod recovery;

use self::durability::{CheckpointState, PendingSync, SyncState};
use self::recovery::{Distrust, RecoveryPlan};
use crate::checkpoint::{self, Checkpoint};
use crate::error::LogError;
use crate::io::{FileIo, OsFileIo};
use crate::policy::{self, SegmentSummary};
use crate::segment::{self, ActiveSegment, Segment, SegmentSettings};

/// With [`FlushPolicy::Interval`], appends ask for writeback (see
/// [`Log::take_writeback_request`]) once this many bytes await it.
pub const WRITEBACK_CHUNK: usize = 8 << 20;

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Group commit: every append is meant to be acknowledged only after an
    /// fdatasync covers it. `append` itself does not block; the caller waits
    /// with [`Log::wait_durable`], and one fdatasync covers every append that
    /// arrived while the previous one ran. [`Log::maybe_flush`] also syncs
    /// whenever anything is not yet durable. Rolls sync the sealed segment
    /// inline. Each append also starts asynchronous writeback of its bytes
    /// (`sync_file_range`), so the next fdatasync has less left to do.
    Always,
    /// fdatasync when [`Log::maybe_flush`] finds this much time has passed.
    Interval(Duration),
    /// Page cache only; data is synced on roll and close.
    Os,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy::Interval(Duration::from_secs(1))
    }
}

/// Settings of one log; may change at runtime with [`Log::set_config`].
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll when the active segment would exceed this many bytes.
    pub segment_bytes: u64,
    /// Roll when the active segment's first append is older than this.
    pub segment_ms: Option<u64>,
    /// Sparse index granularity in bytes.
    pub index_interval_bytes: u32,
    /// `fallocate` step in bytes.
    pub preallocate_bytes: u64,
    /// Larger batches are rejected.
    pub max_batch_bytes: u32,
    /// Durability policy.
    pub flush: FlushPolicy,
    /// Delete sealed segments whose newest data is older than this (None: keep).
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: None,
            index_interval_bytes: 4096,
            preallocate_bytes: 64 << 20,
            max_batch_bytes: 16 << 20,
            flush: FlushPolicy::default(),
            retention_ms: None,
            retention_bytes: None,
        }
    }
}

impl LogConfig {
    /// Segment-level settings, clamped to what the formats allow (positions
    /// in the index are u32, so segments stay below 2 GiB).
    fn settings(&self) -> SegmentSettings {
        let max_batch = self.max_batch_bytes.clamp(HEADER_LEN as u32, 1 << 30);
        SegmentSettings {
            segment_bytes: self.segment_bytes.clamp(4096, 2 << 30),
            index_interval: self.index_interval_bytes.max(1),
            preallocate: self.preallocate_bytes.max(4096),
            max_batch,
        }
    }
}

/// What one append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record of the first batch.
    pub base_offset: u64,
    /// Offset of the last record of the last batch.
    pub last_offset: u64,
    /// Largest max-timestamp among the batches.
    pub max_timestamp: i64,
    /// Bytes appended.
    pub bytes: usize,
    /// Number of batches appended.
    pub batches: usize,
}

#[derive(Debug)]
struct Writer {
    active: ActiveSegment,
}

/// How [`Log::open`] found the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenKind {
    /// A valid clean-shutdown checkpoint: nothing was rescanned.
    Clean,
    /// A valid checkpoint without the clean flag: batches from its recovery
    /// offset on were CRC-checked.
    Unclean {
        /// The recovery offset the scan started from.
        recovery_point: u64,
    },
    /// No usable checkpoint (missing or damaged): every batch was CRC-checked.
    FullScan,
}

/// One partition log. `Send + Sync`; one writer (internal mutex), many readers.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: RwLock<LogConfig>,
    io: Arc<dyn FileIo>,
    /// Oldest first; the last one is the active segment's read view.
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// Serialises retention runs (the writer only ever touches the tail).
    retention: Mutex<()>,
    end_offset: AtomicU64,
    durable_offset: AtomicU64,
    /// Records below this offset were deleted by [`Log::delete_records_before`]
    /// (persisted in the `log-start` marker); 0 when none were.
    log_start: AtomicU64,
    /// Shared with background seal-sync threads, which poison on failure.
    poisoned: Arc<AtomicBool>,
    /// Set for good by [`Log::mark_closed`]: every operation that would
    /// touch the directory refuses with [`LogError::Closed`]. Shared with the
    /// background checkpoint writer, which checks it under the checkpoint lock.
    closed: Arc<AtomicBool>,
    /// Sealed segments whose background fsync has not finished yet; a flush
    /// syncs them too before it advances the durable offset.
    pending_syncs: Arc<Mutex<Vec<PendingSync>>>,
    next_sync_id: AtomicU64,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    last_flush: Mutex<Instant>,
    /// The `recovery-point` file's state; serialises its writers (shared
    /// with the background thread that rewrites it after flushes).
    checkpoint: Arc<Mutex<CheckpointState>>,
    /// The last background checkpoint write (waited for on drop).
    checkpoint_job: Mutex<Option<crate::background::Task>>,
    /// The file on disk carries the clean-shutdown flag (set by `close`,
    /// cleared by the next append).
    clean_marked: AtomicBool,
    /// Interval flushing: appends left at least [`WRITEBACK_CHUNK`] bytes
    /// not yet handed to writeback (see [`Log::take_writeback_request`]).
    writeback_wanted: AtomicBool,
    /// A writeback request was handed out and [`Log::start_writeback`] has
    /// not run for it yet: at most one is outstanding.
    writeback_scheduled: AtomicBool,
    /// How many [`Log::truncate_to`] calls cut something (bumped under the
    /// writer lock): flushes and checkpoint writers that snapshotted an end
    /// before a cut must not claim it afterwards.
    truncations: Arc<AtomicU64>,
    /// How this log was recovered when opened.
    open_kind: OpenKind,
    /// Holds the directory's advisory lock for the life of the log.
    _lock: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes the directory's advisory lock. A `flock` belongs to the open file
/// description, which a child process shares between `fork` and `exec` (the
/// descriptor is close-on-exec, but not yet closed): a log closed while some
/// thread of this process spawns a program may look locked for a moment
/// after it was dropped. So a busy lock is retried for a bounded time
/// (about 2 s) before the open fails.
fn lock_dir(file: &File) -> std::io::Result<()> {
    let mut wait = Duration::from_millis(1);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match crate::sys::try_lock_exclusive(file) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Checks every batch of an append; returns (bytes, offsets they take).
fn validate_all(batches: &[u8], max_batch: usize) -> Result<(usize, u64), LogError> {
    if batches.is_empty() {
        return Err(LogError::InvalidBatch(BatchError::Truncated {
            needed: HEADER_LEN,
            available: 0,
        }));
    }
    let mut pos = 0usize;
    let mut offsets = 0u64;
    while pos < batches.len() {
        let rest = &batches[pos..];
        // Size first so an oversized batch is refused before it is CRC-checked.
        if rest.len() >= batch::LOG_OVERHEAD {
            let mut len = [0u8; 4];
            len.copy_from_slice(&rest[8..12]);
            let total = batch::LOG_OVERHEAD as i64 + i64::from(i32::from_be_bytes(len));
            if total > max_batch as i64 {
                return Err(LogError::BatchTooLarge {
                    size: total as usize,
                    max: max_batch,
                });
            }
        }
        // Storage's half of validation (header, CRC, offsets); the record
        // walk, which needs decompression, is the caller's (the broker's).
        let h = batch::validate_header(rest)?;
        offsets += h.last_offset_delta as u64 + 1;
        pos += h.total_len();
    }
    Ok((pos, offsets))
}

impl Log {
    /// Opens (creating the directory if needed) and recovers the log in `dir`.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log, LogError> {
        Self::open_with_io(dir, config, Arc::new(OsFileIo))
    }

    /// Like [`Log::open`], with the file-system calls that can fail routed
    /// through `io` (the fault-injection seam used by tests).
    pub fn open_with_io(
        dir: impl AsRef<Path>,
        config: LogConfig,
        io: Arc<dyn FileIo>,
    ) -> Result<Log, LogError> {
        let dir = dir.as_ref().to_path_buf();
        // New directories are synced into their parents: a partition (or
        // `__consumer_offsets`) directory lost to a power cut would take
        // every acknowledged append with it.
        crate::io::create_dirs(io.as_ref(), &dir).map_err(|e| LogError::io(&dir, e))?;
        let lock_path = dir.join(".lock");
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| LogError::io(&lock_path, e))?;
        lock_dir(&lock_file).map_err(|e| LogError::io(&lock_path, e))?;
        Self::finish_truncation(io.as_ref(), &dir)?;
        Self::finish_restart(io.as_ref(), &dir, &config)?;
        let log_start =
            marker(&dir, checkpoint::LOG_START_FILE, checkpoint::read_log_start)?.unwrap_or(0);

        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| LogError::io(&dir, e))? {
            let entry = entry.map_err(|e| LogError::io(&dir, e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        let plan = RecoveryPlan::new(names.iter().map(String::as_str), checkpoint::read(&dir));
        for name in &plan.orphans {
            let path = dir.join(name);
            tracing::info!(file = %path.display(), "removing an index without its segment");
            if let Err(e) = io.remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove an orphaned index");
            }
        }
        match &plan.distrust {
            None if plan.kind == OpenKind::Clean && !plan.bases.is_empty() => {
                tracing::debug!(dir = %dir.display(), "clean shutdown; no rescan");
            }
            None => {}
            Some(Distrust::Missing) => {
                tracing::warn!(dir = %dir.display(), "no recovery-point file; CRC-checking the whole log");
            }
            Some(Distrust::Damaged(why)) => {
                tracing::warn!(dir = %dir.display(), reason = %why, "recovery-point file damaged; CRC-checking the whole log");
            }
        }
        let kind = plan.kind;
        let recovery_point = plan.recovery_point();
        let bases = &plan.bases;
        let settings = config.settings();
        let mut segments = Vec::with_capacity(bases.len() + 1);
        let active = match bases.split_last() {
            None => ActiveSegment::create(&dir, 0, &settings, io.as_ref())?,
            Some((&last, sealed)) => {
                let mut active_base = last;
                for (i, &base) in sealed.iter().enumerate() {
                    let seg = segment::open_sealed(&dir, base, &settings, io.as_ref())?;
                    let next_base = sealed.get(i + 1).copied().unwrap_or(last);
                    let damage = match recovery_point {
                        Some(r) if plan.check_sealed(next_base) => segment::verify_sealed(&seg, r)?,
                        _ => None,
                    };
                    if let Some(d) = damage {
                        drop(seg);
                        Self::cut_after(io.as_ref(), &dir, base, &d, &bases[i + 1..])?;
                        active_base = base;
                        break;
                    }
                    if seg.next_offset() != next_base {
                        tracing::warn!(
                            segment = %seg.log_path.display(),
                            next_offset = seg.next_offset(),
                            next_segment = next_base,
                            "offset gap or overlap between segments"
                        );
                    }
                    segments.push(seg);
                }
                ActiveSegment::open_recover(
                    &dir,
                    active_base,
                    &settings,
                    io.as_ref(),
                    recovery_point,
                    false,
                )?
            }
        };
        // What recovery kept is durable from here on: fsync every segment
        // that holds offsets at or above the recovery point (a killed
        // process may have left them in the page cache only).
        for seg in segments
            .iter()
            .filter(|s| plan.sync_sealed(s.next_offset()))
        {
            let f = File::open(&seg.log_path).map_err(|e| LogError::io(&seg.log_path, e))?;
            io.sync_data(&f)
                .map_err(|e| LogError::io(&seg.log_path, e))?;
        }
        io.sync_data(&active.file)
            .map_err(|e| LogError::io(&active.seg.log_path, e))?;
        segments.push(active.seg.clone());
        let end = active.next_offset();
        // Everything below `end` is synced now. Writing the checkpoint
        // without the clean flag also invalidates a clean-shutdown marker,
        // so a crash from here on is seen as unclean.
        let written = checkpoint::write_or_remove(
            io.as_ref(),
            &dir,
            Checkpoint {
                recovery_offset: end,
                clean: false,
            },
        )?;
        Ok(Log {
            dir,
            config: RwLock::new(config),
            io,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer { active }),
            retention: Mutex::new(()),
            end_offset: AtomicU64::new(end),
            durable_offset: AtomicU64::new(end),
            log_start: AtomicU64::new(log_start),
            poisoned: Arc::new(AtomicBool::new(false)),
            closed: Arc::new(AtomicBool::new(false)),
            pending_syncs: Arc::new(Mutex::new(Vec::new())),
            next_sync_id: AtomicU64::new(0),
            sync: Mutex::new(SyncState::default()),
            sync_cv: Condvar::new(),
            last_flush: Mutex::new(Instant::now()),
            checkpoint: Arc::new(Mutex::new(CheckpointState {
                written: if written { end } else { 0 },
                at: Instant::now(),
            })),
            checkpoint_job: Mutex::new(None),
            clean_marked: AtomicBool::new(false),
            writeback_wanted: AtomicBool::new(false),
            writeback_scheduled: AtomicBool::new(false),
            truncations: Arc::new(AtomicU64::new(0)),
            open_kind: kind,
            _lock: lock_file,
        })
    }

    /// Recovery found damage in the sealed segment at `base`: deletes every
    /// later segment (`later` holds their base offsets) so that segment
    /// becomes the active one, whose recovery then cuts it at the damage.
    fn cut_after(
        io: &dyn FileIo,
        dir: &Path,
        base: u64,
        d: &segment::Damage,
        later: &[u64],
    ) -> Result<(), LogError> {
        let mut deleted = Vec::new();
        let mut deleted_bytes = 0u64;
        for &b in later {
            let log = dir.join(segment::file_name(b, "log"));
            deleted_bytes += std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            for p in segment::remove_segment_files(io, dir, b)? {
                deleted.push(p.display().to_string());
            }
        }
        segment::sync_dir(io, dir)?;
        tracing::warn!(
            segment = %dir.join(segment::file_name(base, "log")).display(),
            position = d.position,
            offset = d.offset,
            cut_bytes = d.file_len.saturating_sub(d.position as u64),
            deleted_segments = later.len(),
            deleted_bytes,
            deleted_from_offset = later.first().copied().unwrap_or(d.offset),
            deleted_files = ?deleted,
            reason = %d.reason,
            "recovery found a damaged batch in a sealed segment: cutting the log there"
        );
        Ok(())
    }

    /// Completes a truncation that a crash interrupted: if the directory
    /// holds a `truncate-to` marker for offset T, deletes every segment
    /// whose base is above T, zeroes the last remaining one from its first
    /// batch that does not end at or before T, lowers the checkpoint to at
    /// most T (flag clear) and removes the marker. Runs before recovery
    /// looks at the directory.
    fn finish_truncation(io: &dyn FileIo, dir: &Path) -> Result<(), LogError> {
        let Some(target) = marker(
            dir,
            checkpoint::TRUNCATION_FILE,
            checkpoint::read_truncation,
        )?
        else {
            return Ok(());
        };
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            match segment::parse_file_name(&name) {
                Some((base, "log")) => bases.push(base),
                // A copy of an index that the cut did not get to rename.
                Some((_, "index.tmp" | "timeindex.tmp")) => {
                    let p = dir.join(&name);
                    if let Err(e) = io.remove_file(&p) {
                        tracing::warn!(file = %p.display(), error = %e, "cannot remove a leftover index copy");
                    }
                }
                _ => {}
            }
        }
        bases.sort_unstable();
        let keep = bases.partition_point(|&b| b <= target);
        let deleted = if keep > 0 { bases.len() - keep } else { 0 };
        tracing::warn!(dir = %dir.display(), offset = target, deleted_segments = deleted, "completing an interrupted truncation");
        if keep > 0 {
            // Newest first, so a crash in between never leaves a gap.
            for &b in bases[keep..].iter().rev() {
                segment::remove_segment_files(io, dir, b)?;
            }
            segment::sync_dir(io, dir)?;
            segment::zero_after(io, dir, bases[keep - 1], target)?;
        }
        match checkpoint::read(dir) {
            Ok(Some(cp)) if cp.recovery_offset <= target && !cp.clean => {}
            Ok(Some(cp)) => {
                let lowered = Checkpoint {
                    recovery_offset: cp.recovery_offset.min(target),
                    clean: false,
                };
                checkpoint::write_or_remove(io, dir, lowered)?;
            }
            // Missing or damaged: recovery scans everything anyway.
            Ok(None) | Err(_) => {}
        }
        checkpoint::remove_truncation(io, dir)
    }

    /// Removes every batch at or after `offset`: the log then ends at the
    /// last batch boundary at or below `offset` (a batch that contains
    /// `offset` goes whole). Returns the new end offset, which the next
    /// append continues from. Nothing happens when `offset >= end_offset()`;
    /// below the start offset, the log is emptied down to its start offset.
    /// Durable before it returns, crash-safe at every step, and safe for
    /// readers holding `Bytes` of the removed range (see the crate docs,
    /// "Truncation"). A failure part-way poisons the log: the next open
    /// completes the cut.
    pub fn truncate_to(&self, offset: u64) -> Result<u64, LogError> {
        // Retention changes the head of the list, a cut the tail: one at a
        // time (same order as elsewhere: retention lock, then writer).
        let _one_at_a_time = lock(&self.retention);
        let mut w = lock(&self.writer);
        self.check_open()?;
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        let end = w.active.next_offset();
        if offset >= end {
            return Ok(end);
        }
        let segs: Vec<Arc<Segment>> = self.segments().clone();
        let start = segs.first().map_or(0, |s| s.base);
        let target = offset.max(start);
        let k = segs.partition_point(|s| s.base <= target).saturating_sub(1);
        let Some(cut_seg) = segs.get(k).cloned() else {
            return Ok(end);
        };
        let (cut_pos, new_end) = cut_seg.locate(target)?;
        if new_end >= end {
            return Ok(end);
        }
        let result = self.cut_tail(&mut w, &segs, k, cut_pos, new_end);
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    /// Empties the log and starts it again at `offset`, at or above its end
    /// (a follower whose whole log is below its leader's log start: the
    /// offsets in between are gone on the leader). The log's start and end
    /// offsets become `offset`. Durable before it returns and crash-safe: a
    /// `restart-at` marker is written first and any open completes what it
    /// records (see `protocol.md`). Readers holding `Bytes` of the old
    /// segments keep them (files are unlinked, not shrunk).
    pub fn restart_at(&self, offset: u64) -> Result<(), LogError> {
        let _one_at_a_time = lock(&self.retention);
        let mut w = lock(&self.writer);
        self.check_open()?;
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        let end = w.active.next_offset();
        if offset < end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: end,
                end: u64::MAX,
            });
        }
        let result = self.restart_steps(&mut w, offset);
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    fn restart_steps(&self, w: &mut Writer, offset: u64) -> Result<(), LogError> {
        let io = self.io.as_ref();
        let old: Vec<Arc<Segment>> = self.segments().clone();
        // 1. The marker: from here on, any open completes the restart.
        checkpoint::write_restart(io, &self.dir, offset)?;
        // 2. The new, empty segment (unless the old active one already starts there).
        let settings = self.config().settings();
        let fresh = if old.iter().any(|s| s.base == offset) {
            None
        } else {
            let seg = ActiveSegment::create(&self.dir, offset, &settings, io)?;
            segment::sync_dir(io, &self.dir)?;
            Some(seg)
        };
        // 3. Readers and flushers see the new, empty log.
        self.truncations.fetch_add(1, Ordering::AcqRel);
        if let Some(fresh) = fresh {
            *self.segments.write().unwrap_or_else(|p| p.into_inner()) = vec![fresh.seg.clone()];
            w.active = fresh;
        }
        self.end_offset.store(offset, Ordering::Release);
        {
            let _st = lock(&self.sync);
            self.durable_offset.store(offset, Ordering::Release);
        }
        // 4. The old segments go (mapped files stay readable by their inodes).
        for seg in old.iter().filter(|s| s.base != offset) {
            segment::remove_segment_files(io, &self.dir, seg.base)?;
        }
        segment::sync_dir(io, &self.dir)?;
        {
            let mut ck = lock(&self.checkpoint);
            checkpoint::write(
                io,
                &self.dir,
                Checkpoint {
                    recovery_offset: offset,
                    clean: false,
                },
            )?;
            ck.written = offset;
            ck.at = Instant::now();
            self.clean_marked.store(false, Ordering::Release);
        }
        // 5. Done on disk: the marker goes.
        checkpoint::remove_restart(io, &self.dir)?;
        tracing::info!(dir = %self.dir.display(), offset, deleted_segments = old.len(), "log restarted at a new offset");
        Ok(())
    }

    /// Completes an interrupted [`Log::restart_at`] found at open: every
    /// segment below the marker's offset goes, the segment at it is created
    /// if missing, and the checkpoint is dropped (a full scan of what is left).
    fn finish_restart(io: &dyn FileIo, dir: &Path, config: &LogConfig) -> Result<(), LogError> {
        let Some(target) = marker(dir, checkpoint::RESTART_FILE, checkpoint::read_restart)? else {
            return Ok(());
        };
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            if let Some((base, "log")) = entry
                .file_name()
                .to_str()
                .and_then(segment::parse_file_name)
            {
                bases.push(base);
            }
        }
        tracing::warn!(dir = %dir.display(), offset = target, "completing an interrupted restart");
        for &b in bases.iter().filter(|b| **b < target) {
            segment::remove_segment_files(io, dir, b)?;
        }
        if !bases.contains(&target) {
            drop(ActiveSegment::create(dir, target, &config.settings(), io)?);
        }
        segment::sync_dir(io, dir)?;
        checkpoint::remove(io, dir)?;
        checkpoint::remove_restart(io, dir)
    }

    /// The steps of [`Log::truncate_to`] once the cut is known: the
    /// segment `segs[k]` is cut at byte `cut_pos` (offset `new_end`) and
    /// every later one deleted. Returns the new end offset.
    fn cut_tail(
        &self,
        w: &mut Writer,
        segs: &[Arc<Segment>],
        k: usize,
        cut_pos: usize,
        new_end: u64,
    ) -> Result<u64, LogError> {
        let io = self.io.as_ref();
        let cut_seg = &segs[k];
        // 1. The marker: from here on, any open completes the cut.
        checkpoint::write_truncation(io, &self.dir, new_end)?;
        // 2. Nothing at or after the cut is offered or claimed durable any
        //    more: readers see the new end; flushes and checkpoint writers
        //    that looked at the old end give up (they compare the count).
        self.truncations.fetch_add(1, Ordering::AcqRel);
        self.end_offset.store(new_end, Ordering::Release);
        cut_seg.hide_from(new_end);
        {
            let _st = lock(&self.sync);
            self.durable_offset.fetch_min(new_end, Ordering::AcqRel);
        }
        {
            let mut ck = lock(&self.checkpoint);
            let lowered = ck.written.min(new_end);
            checkpoint::write(
                io,
                &self.dir,
                Checkpoint {
                    recovery_offset: lowered,
                    clean: false,
                },
            )?;
            ck.written = lowered;
            ck.at = Instant::now();
            self.clean_marked.store(false, Ordering::Release);
        }
        // 3. Later segments: out of the list, then unlinked (newest first).
        //    Unlinking a mapped file is safe: readers keep the inode.
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(k + 1);
        for seg in segs[k + 1..].iter().rev() {
            for p in [&seg.log_path, &seg.index_path, &seg.time_path] {
                match io.remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io(p.as_path(), e)),
                }
            }
            tracing::info!(segment = %seg.log_path.display(), base = seg.base, "truncation deleted segment");
        }
        segment::sync_dir(io, &self.dir)?;
        // 4. The cut segment: zero the removed bytes in place (never shrink
        //    a file readers may map: a load past its end is a SIGBUS).
        let path = &cut_seg.log_path;
        let file = io
            .open(path, OpenOptions::new().read(true).write(true))
            .map_err(|e| LogError::io(path, e))?;
        segment::zero_range(io, &file, path, cut_pos as u64, cut_seg.size())?;
        drop(file);
        // 5. Reopen it as the active segment. Its indexes are first
        //    replaced by copies, so the writer's `truncate(true)` resets new
        //    inodes, never one an old reader maps.
        segment::replace_by_copy(io, &cut_seg.index_path)?;
        segment::replace_by_copy(io, &cut_seg.time_path)?;
        segment::sync_dir(io, &self.dir)?;
        let settings = self.config().settings();
        let fresh = ActiveSegment::open_recover(
            &self.dir,
            cut_seg.base,
            &settings,
            io,
            Some(new_end),
            true,
        )?;
        let actual = fresh.next_offset();
        if actual != new_end {
            tracing::warn!(dir = %self.dir.display(), expected = new_end, found = actual, "recovery of the cut segment ended elsewhere");
        }
        {
            let mut list = self.segments.write().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = list.get_mut(k) {
                *slot = fresh.seg.clone();
            }
        }
        w.active = fresh;
        // 6. Done on disk: the marker goes.
        checkpoint::remove_truncation(io, &self.dir)?;
        self.end_offset.store(actual, Ordering::Release);
        {
            let _st = lock(&self.sync);
            self.durable_offset.fetch_min(actual, Ordering::AcqRel);
        }
        tracing::info!(dir = %self.dir.display(), end = actual, "log truncated");
        Ok(actual)
    }

    /// How recovery treated the log when it was opened.
    pub fn open_kind(&self) -> OpenKind {
        self.open_kind
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> LogConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn poison(&self, what: &LogError) {
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(dir = %self.dir.display(), error = %what, "fsync failed; log poisoned, appends refused until reopen");
        }
        let _guard = lock(&self.sync);
        self.sync_cv.notify_all();
    }

    /// Appends one or more whole batches. Every batch is validated before
    /// any byte is written; offsets are assigned consecutively; the append is
    /// all or nothing. It never waits for an fsync (except the inline sync of
    /// a sealed segment on roll with [`FlushPolicy::Always`]): call
    /// [`Log::wait_durable`] with `last_offset + 1` to learn when it is durable.
    pub fn append(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        self.append_with_epoch(batches, None)
    }

    /// [`Log::append`] that, with `epoch = Some(e)`, stores every batch with
    /// its partition leader epoch set to `e` (the caller's bytes are not
    /// copied or changed; see the module docs). `None` keeps the epoch each
    /// batch carries.
    pub fn append_with_epoch(
        &self,
        batches: &[u8],
        epoch: Option<i32>,
    ) -> Result<AppendInfo, LogError> {
        self.check_open()?;
        if self.is_poisoned() {
            return Err(LogError::Poisoned);
        }
        let (settings, segment_ms, flush) = {
            let c = self.config.read().unwrap_or_else(|p| p.into_inner());
            (c.settings(), c.segment_ms, c.flush)
        };
        let (total, offsets) = validate_all(batches, settings.max_batch as usize)?;
        let now = crate::now_ms();
        let info = {
            let mut w = lock(&self.writer);
            // Under the writer lock, which `mark_closed` takes after setting
            // the flag: no roll or checkpoint write can follow a close.
            self.check_open()?;
            if self.is_poisoned() {
                return Err(LogError::Poisoned);
            }
            if self.clean_marked.load(Ordering::Acquire) {
                // Appending after close: the clean-shutdown flag must go
                // before any byte is written.
                let mut ck = lock(&self.checkpoint);
                let cp = Checkpoint {
                    recovery_offset: ck.written,
                    clean: false,
                };
                if !checkpoint::write_or_remove(self.io.as_ref(), &self.dir, cp)? {
                    ck.written = 0;
                }
                self.clean_marked.store(false, Ordering::Release);
            }
            let a = &w.active;
            let roll = policy::should_roll(
                a.size(),
                total as u64,
                a.first_append_ms,
                now,
                settings.segment_bytes,
                segment_ms,
            );
            if roll || !a.fits(total, offsets) {
                self.roll(&mut w, &settings, total as u64)?;
                if !w.active.fits(total, offsets) {
                    // Only possible with absurd offset deltas: relative
                    // offsets in one segment must fit in a u32.
                    return Err(LogError::InvalidBatch(BatchError::InvalidHeader(
                        "append spans more offsets than one segment can index",
                    )));
                }
            }
            w.active
                .reserve(total, settings.preallocate, self.io.as_ref())?;
            let (base, last, max_ts, count) =
                w.active
                    .append_validated(&batches[..total], epoch, now, self.io.as_ref())?;
            // With `Always` the group commit's fdatasync writes the data:
            // starting writeback here, per append and under the writer lock,
            // cost a syscall and a device notification per batch and halved
            // 100 small durable producers (see `durability.rs`).
            if matches!(flush, FlushPolicy::Interval(_))
                && w.active.unstarted_writeback() >= WRITEBACK_CHUNK
            {
                self.writeback_wanted.store(true, Ordering::Release);
            }
            self.end_offset.store(last + 1, Ordering::Release);
            AppendInfo {
                base_offset: base,
                last_offset: last,
                max_timestamp: max_ts,
                bytes: total,
                batches: count,
            }
        };
        Ok(info)
    }

    /// Seals the active segment and starts a new one at the end offset.
    fn roll(
        &self,
        w: &mut Writer,
        settings: &SegmentSettings,
        incoming: u64,
    ) -> Result<(), LogError> {
        let mut s = *settings;
        s.segment_bytes = s.segment_bytes.max(incoming);
        if w.active.size() == 0 {
            // Nothing to seal, but the mapping is too small for this append:
            // map the same (empty) files again with a larger mapping. The
            // files stay in place, so a crash here cannot lose the base offset.
            let base = w.active.next_offset();
            let old_seg = w.active.seg.clone();
            let keep_len = w.active.keeps_len();
            let fresh =
                ActiveSegment::open_recover(&self.dir, base, &s, self.io.as_ref(), None, keep_len)?;
            let new_seg = fresh.seg.clone();
            w.active = fresh;
            let mut list = self.segments.write().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = list.iter_mut().rev().find(|x| Arc::ptr_eq(x, &old_seg)) {
                *slot = new_seg;
            }
            return Ok(());
        }
        // Trim the old segment before the new one exists, so a crash never
        // leaves a newer segment behind an untrimmed one. With
        // `FlushPolicy::Always` the fsync is inline (waiters have normally
        // synced most of the data already). Otherwise it runs on a
        // background thread (as Kafka does on roll) so appends do not stall
        // for a whole segment's writeback; flushes wait for it and a failure
        // poisons the log.
        let sync_now = self.config().flush == FlushPolicy::Always;
        if let Err(e) = w.active.trim(self.io.as_ref(), sync_now) {
            if sync_now {
                self.poison(&e);
            }
            return Err(e);
        }
        let files = w.active.files();
        let base = w.active.next_offset();
        let fresh = ActiveSegment::create(&self.dir, base, &s, self.io.as_ref())?;
        let new_seg = fresh.seg.clone();
        let old = std::mem::replace(&mut w.active, fresh);
        let old_seg = old.seg.clone();
        // If the read-only remap fails, the writable view stays in the list:
        // it is still a correct view of the (now immutable) bytes.
        let sealed = match old.seal() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remap sealed segment read-only");
                old_seg.clone()
            }
        };
        let mut list = self.segments.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = list.iter_mut().rev().find(|x| Arc::ptr_eq(x, &old_seg)) {
            *slot = sealed;
        }
        list.push(new_seg);
        drop(list);
        if !sync_now {
            self.sync_sealed_in_background(files);
        }
        tracing::debug!(dir = %self.dir.display(), base, "rolled to a new segment");
        Ok(())
    }

    /// Whole batches starting at the batch that contains `offset`, up to
    /// `max_bytes` but at least one batch; empty at the end offset. The
    /// returned `Bytes` borrows the mapping (no copy).
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.check_open()?;
        let end = self.end_offset();
        let start = self.start_offset();
        let (start, candidates) = {
            let segs = self.segments();
            // The segment containing `offset` and the ones after it (gaps).
            let i = segs.partition_point(|s| s.base <= offset).saturating_sub(1);
            let picked: [Option<Arc<Segment>>; 2] =
                [segs.get(i).cloned(), segs.get(i + 1).cloned()];
            (start, picked)
        };
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange { offset, start, end });
        }
        if offset == end {
            return Ok(Bytes::new());
        }
        for seg in candidates.iter().flatten() {
            if let Some(b) = seg.read(offset.max(seg.base), max_bytes)? {
                return Ok(b);
            }
        }
        // Only reachable through a gap between segments at the very end.
        Ok(Bytes::new())
    }

    /// The first batch whose max timestamp is `>= timestamp_ms`: its base
    /// offset and max timestamp; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>, LogError> {
        self.check_open()?;
        let segs: Vec<Arc<Segment>> = self.segments().clone();
        let last = segs.len().saturating_sub(1);
        for (i, seg) in segs.iter().enumerate() {
            if i != last && seg.max_timestamp() < timestamp_ms {
                continue;
            }
            if let Some(found) = seg.find_timestamp(timestamp_ms)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// First offset still in the log: the first segment's base, or the
    /// offset records were deleted below if that is higher (never past the end).
    pub fn start_offset(&self) -> u64 {
        let base = self.segments().first().map_or(0, |s| s.base);
        base.max(self.log_start.load(Ordering::Acquire))
            .min(self.end_offset().max(base))
    }

    /// Deletes every record below `offset` (Kafka's DeleteRecords): the log
    /// then starts at `offset` for readers, durably (a `log-start` marker,
    /// written and fsynced before it returns; see `protocol.md`). Segments
    /// wholly below it are left to retention. `offset` must not pass the
    /// end; below the current start nothing changes. Returns the new start.
    pub fn delete_records_before(&self, offset: u64) -> Result<u64, LogError> {
        let _one_at_a_time = lock(&self.retention);
        self.check_open()?;
        let end = self.end_offset();
        if offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.start_offset(),
                end,
            });
        }
        let start = self.start_offset();
        if offset <= start {
            return Ok(start);
        }
        checkpoint::write_log_start(self.io.as_ref(), &self.dir, offset)?;
        self.log_start.store(offset, Ordering::Release);
        Ok(offset)
    }

    /// Offset the next appended record gets.
    pub fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Every offset below this is on disk (fdatasync returned success).
    pub fn durable_offset(&self) -> u64 {
        self.durable_offset.load(Ordering::Acquire)
    }

    /// Bytes of batches in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.size()).sum()
    }

    /// Number of segments (sealed + active).
    pub fn segment_count(&self) -> usize {
        self.segments().len()
    }

    /// Base offsets of all segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<u64> {
        self.segments().iter().map(|s| s.base).collect()
    }

    /// Deletes whole sealed segments that retention (time, size) no longer
    /// keeps; never the active one. Returns how many were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let _one_at_a_time = lock(&self.retention);
        // Under the retention lock, which `mark_closed` takes after setting
        // the flag: no unlink can follow a close.
        self.check_open()?;
        let (retention_ms, retention_bytes) = {
            let c = self.config.read().unwrap_or_else(|p| p.into_inner());
            (c.retention_ms, c.retention_bytes)
        };
        if retention_ms.is_none() && retention_bytes.is_none() {
            return Ok(0);
        }
        let segs: Vec<Arc<Segment>> = self.segments().clone();
        let Some((active, sealed)) = segs.split_last() else {
            return Ok(0);
        };
        let summaries: Vec<SegmentSummary> = sealed
            .iter()
            .map(|s| SegmentSummary {
                base_offset: s.base,
                size_bytes: s.size(),
                max_timestamp: s.max_timestamp().max(-1),
                modified_ms: s.modified_ms(),
            })
            .collect();
        let n = policy::segments_to_delete(
            &summaries,
            active.size(),
            now_ms,
            retention_ms,
            retention_bytes,
        );
        self.remove_leading(n, "retention")
    }

    /// Deletes the sealed segments that hold only offsets below `offset`
    /// (never the active one), e.g. once a snapshot at `offset` supersedes
    /// them. Returns how many were deleted.
    pub fn delete_segments_before(&self, offset: u64) -> Result<usize, LogError> {
        let _one_at_a_time = lock(&self.retention);
        self.check_open()?;
        let segs: Vec<Arc<Segment>> = self.segments().clone();
        let Some((_, sealed)) = segs.split_last() else {
            return Ok(0);
        };
        let n = sealed
            .iter()
            .take_while(|s| s.next_offset() <= offset)
            .count();
        self.remove_leading(n, "prefix deletion")
    }

    /// Removes the first `n` segments (all sealed) from the list and their
    /// files from the disk; the caller holds the retention lock.
    fn remove_leading(&self, n: usize, why: &str) -> Result<usize, LogError> {
        if n == 0 {
            return Ok(0);
        }
        let candidates: Vec<Arc<Segment>> = {
            let list = self.segments();
            // Only the writer changes the list besides us (the caller holds
            // the retention lock), and only at its tail, so the first n stay
            // the ones we decided about.
            list[..n.min(list.len().saturating_sub(1))].to_vec()
        };
        let mut deleted = 0;
        let mut first_err = None;
        for seg in &candidates {
            // Oldest first, the `.log` (which makes the segment) before its
            // indexes, each unlink made durable before the next: if one
            // fails, or a crash comes, no later segment is gone while an
            // earlier one stays, so the log never has a gap.
            match self.io.remove_file(&seg.log_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err = Some(LogError::io(seg.log_path.as_path(), e));
                    break;
                }
            }
            deleted += 1;
            if let Err(e) = segment::sync_dir(self.io.as_ref(), &self.dir) {
                // The unlink may not be durable: stop here, list in step with the disk.
                first_err = Some(e);
                break;
            }
            tracing::info!(segment = %seg.log_path.display(), base = seg.base, next = seg.next_offset(), bytes = seg.size(), "{why} deleted segment");
            for p in [&seg.index_path, &seg.time_path] {
                if let Err(e) = self.io.remove_file(p) {
                    if e.kind() != std::io::ErrorKind::NotFound && first_err.is_none() {
                        first_err = Some(LogError::io(p.as_path(), e));
                    }
                }
            }
        }
        if deleted > 0 {
            // Readers holding bytes of these segments keep their mappings alive.
            let mut list = self.segments.write().unwrap_or_else(|p| p.into_inner());
            list.drain(..deleted);
        }
        segment::sync_dir(self.io.as_ref(), &self.dir)?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// Replaces the configuration; segment settings apply from the next roll,
    /// flush and retention settings at once.
    pub fn set_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Flushes, then trims the preallocated tails of the active segment and
    /// its indexes and fsyncs them, then writes the recovery point (the end
    /// offset) with the clean-shutdown flag, so the next open rescans
    /// nothing. The log stays usable (a later append reserves space again
    /// and clears the flag first).
    pub fn close(&self) -> Result<(), LogError> {
        self.flush_to(self.end_offset())?;
        let mut w = lock(&self.writer);
        self.check_open()?;
        if let Err(e) = w.active.trim(self.io.as_ref(), true) {
            self.poison(&e);
            return Err(e);
        }
        // Under the writer lock nothing is appended meanwhile. The active
        // segment was just synced whole; sealed ones are synced unless a
        // background sync is still pending (then no clean flag).
        if !lock(&self.pending_syncs).is_empty() {
            tracing::debug!(dir = %self.dir.display(), "sealed segment sync pending at close; not marking clean");
            return Ok(());
        }
        // A failure to write the flag (a full disk) is not a failed close:
        // the data is synced, only the next open rescans.
        let end = w.active.next_offset();
        let mut ck = lock(&self.checkpoint);
        let cp = Checkpoint {
            recovery_offset: end,
            clean: true,
        };
        match checkpoint::write(self.io.as_ref(), &self.dir, cp) {
            Ok(()) => {
                ck.written = end;
                ck.at = Instant::now();
                self.clean_marked.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the clean-shutdown recovery point");
            }
        }
        Ok(())
    }

    /// True after a failed fsync: appends are refused until the log is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Closes the log for good, e.g. because its topic is being deleted:
    /// from the moment this returns, nothing done through this handle
    /// (append, roll, flush, retention, prefix deletion, writeback,
    /// checkpoint writes, reads) touches the directory again, so a log later
    /// created at the same path is safe from it. Those operations return
    /// [`LogError::Closed`] (writeback hints do nothing). Waits for any such
    /// operation already under way. It does not flush: call [`Log::close`]
    /// first to keep the data.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Every operation that touches files checks the flag while holding
        // one of these locks: taking each once waits out those that checked
        // before the flag was set; later ones see it.
        drop(lock(&self.writer));
        drop(lock(&self.retention));
        drop(lock(&self.checkpoint));
        let job = lock(&self.checkpoint_job).take();
        if let Some(t) = job {
            t.wait();
        }
        // Group-commit waiters re-check the flag.
        let _guard = lock(&self.sync);
        self.sync_cv.notify_all();
    }

    /// Whether [`Log::mark_closed`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.is_closed() {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }
}

impl Drop for Log {
    /// Waits for a background checkpoint write, so none lands after the
    /// directory lock is released (a later open may write its own).
    fn drop(&mut self) {
        let job = self
            .checkpoint_job
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = job {
            t.wait();
        }
    }
}

/// A marker file of `dir` read with `read`: a damaged one fails the open
/// (what it records cannot be known, and ignoring it could resurrect
/// removed batches).
fn marker(
    dir: &Path,
    name: &str,
    read: fn(&Path) -> Result<Option<u64>, String>,
) -> Result<Option<u64>, LogError> {
    read(dir).map_err(|reason| LogError::Corrupt {
        path: dir.join(name),
        position: 0,
        reason,
    })
}
