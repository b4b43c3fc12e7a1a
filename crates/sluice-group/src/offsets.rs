//! Durable committed offsets: the `__consumer_offsets` log.
//!
//! Committed offsets live in an internal log on the same storage engine as
//! topics (`sluice-log`), in a directory the caller chooses (the broker uses
//! `<data>/__consumer_offsets/0`). Each commit appends one RecordBatch v2
//! holding one record per partition and returns only once the batch is
//! fsynced ([`sluice_log::Log::wait_durable`]): *a commit acknowledged is a
//! commit kept*. On open the whole log is replayed into memory, latest record
//! per key winning (compaction on load); a record with a null value (a
//! tombstone) deletes its key, which is how a group is deleted.
//!
//! # Record key (version 0)
//!
//! | offset  | size | field                                   |
//! |--------:|-----:|-----------------------------------------|
//! |       0 |    1 | key version (u8) = 0: committed offset  |
//! |       1 |    2 | group length `g` (u16 BE)               |
//! |       3 |  `g` | group id, UTF-8                         |
//! |   3 + g |    2 | topic length `t` (u16 BE)               |
//! |   5 + g |  `t` | topic, UTF-8                            |
//! | 5 + g + t |  4 | partition (u32 BE)                      |
//!
//! # Record value (version 0); a null value is a tombstone
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! |      0 |    1 | value version (u8) = 0                             |
//! |      1 |    8 | committed offset (u64 BE): next offset to consume  |
//! |      9 |    8 | commit timestamp (i64 BE, ms since the Unix epoch) |
//! |     17 |    2 | metadata length `m` (u16 BE)                       |
//! |     19 |  `m` | metadata, UTF-8 (free text from the committer)     |
//!
//! The record timestamp is the commit timestamp too. Records whose key or
//! value version is unknown are skipped on replay (a later version may add
//! other record kinds, e.g. group metadata) and counted in [`ReplayStats`].
//!
//! # Ordering and concurrency
//!
//! Appends are ordered by the log; the in-memory map applies a commit only
//! after its fsync and only if its log offset is newer than the entry it
//! replaces, so concurrent commits to one key end with the same winner in
//! memory as on replay. Fenced commits check the coordinator and append while
//! the caller holds the coordinator lock ([`begin_fenced_commit`]), so the log
//! order of commits agrees with ownership changes; the fsync wait
//! ([`OffsetStore::finish`]) happens after the lock is released.
//!
//! # Compaction on disk
//!
//! Once [`OffsetStore::compaction_due`] (more than [`COMPACT_AFTER_BYTES`],
//! or twice the last snapshot if larger, appended since the last snapshot),
//! the owner calls [`OffsetStore::maybe_compact`] off the commit path. It
//! copies the state a replay of everything appended so far would build (the
//! log end at that moment is the snapshot point `S`), then appends a
//! *snapshot*: one record per live key with its value, each carrying the
//! header `snapshot-of` = `S` (u64 BE), in batches of at most
//! [`SNAPSHOT_BATCH_BYTES`]. Commits keep appending meanwhile, so snapshot
//! records interleave with newer commits; replay therefore applies a
//! snapshot record only if the key's last record so far is older than `S`
//! (a commit or tombstone at or after `S` is newer than the snapshot), and
//! never when `S` is below the log's start: segments go only below a later
//! snapshot's point, and that complete snapshot supersedes this one (a key
//! deleted between the two must not come back through it). Once the
//! snapshot is fsynced, every sealed segment below `S` is deleted; if that
//! fails, the next call retries the deletion alone.
//!
//! Why replay stays right: what remains before `S` is a suffix of the log,
//! so a key's last record there is its last record overall; a key live at
//! `S` whose records were all deleted is in the snapshot; a key deleted by
//! `S` has no snapshot record. A crash at any point leaves either the old
//! log or a longer one with snapshot records that the rule above orders
//! correctly. The log stays within about two segments plus a snapshot (the
//! offsets log uses 16 MiB segments), and so does the replay on start. After
//! a restart the whole log counts as appended since the last snapshot, so a
//! log above the threshold is compacted once soon after.
//!
//! Compaction is off when replay skipped records it could not decode: a
//! snapshot would not carry them, and deleting the segments would lose
//! what a later version wrote.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use sluice_log::{FlushPolicy, Log, LogConfig, LogError};
use sluice_protocol::batch::{batches, RecordBatchBuilder};

use crate::assign::TopicPartition;
use crate::coordinator::{Committer, Coordinator};
use crate::error::{validate_group_id, GroupError};

/// Key version byte of a committed-offset record.
pub const KEY_VERSION_OFFSET: u8 = 0;
/// Value version byte of a committed-offset record.
pub const VALUE_VERSION: u8 = 0;
/// Bytes read per call while replaying.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// Default bytes appended since the last snapshot that trigger the next one.
pub const COMPACT_AFTER_BYTES: u64 = 16 << 20;
/// Largest snapshot batch (record bytes before framing).
pub const SNAPSHOT_BATCH_BYTES: usize = 256 << 10;
/// Record header on snapshot records: the snapshot point (u64 BE).
pub const SNAPSHOT_HEADER: &str = "snapshot-of";

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: u64,
    /// When it was committed, ms since the Unix epoch.
    pub commit_timestamp_ms: i64,
    /// Free text supplied by the committer.
    pub metadata: String,
}

/// One partition's offset in a commit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset to consume.
    pub offset: u64,
    /// Free text (at most 65535 bytes).
    pub metadata: String,
}

impl OffsetCommit {
    /// A commit without metadata.
    pub fn new(partition: TopicPartition, offset: u64) -> Self {
        OffsetCommit {
            partition,
            offset,
            metadata: String::new(),
        }
    }
}

/// What [`OffsetStore::open`] found while replaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayStats {
    /// Records read.
    pub records: u64,
    /// Records skipped (unknown version or undecodable key/value).
    pub skipped: u64,
    /// Live (group, partition) entries after compaction on load.
    pub live_keys: usize,
}

/// A commit appended but not yet durable; hand it to [`OffsetStore::finish`].
#[derive(Debug)]
#[must_use = "a commit is not acknowledged until OffsetStore::finish returns Ok"]
pub struct CommitTicket {
    group: String,
    /// (partition, log offset of its record, new value or tombstone)
    entries: Vec<(TopicPartition, u64, Option<CommittedOffset>)>,
    /// `wait_durable` argument: one past the last appended offset.
    durable_at: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    log_offset: u64,
    /// `None` = deleted (kept so a late-applied older commit cannot resurrect it).
    value: Option<CommittedOffset>,
}

/// The committed-offset store. `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct OffsetStore {
    log: Log,
    entries: Mutex<BTreeMap<String, BTreeMap<TopicPartition, Entry>>>,
    stats: ReplayStats,
    appender: Mutex<Appender>,
    /// Off when replay skipped undecodable records (see the module docs).
    compaction_enabled: bool,
    /// One compaction at a time.
    compacting: std::sync::atomic::AtomicBool,
}

/// What the log says, in log order (appended, durable or not): the state a
/// replay of everything appended so far would build, for snapshots.
#[derive(Debug)]
struct Appender {
    latest: BTreeMap<(String, TopicPartition), CommittedOffset>,
    since_snapshot: u64,
    snapshot_bytes: u64,
    compact_after: u64,
    /// A durable snapshot point whose segment deletion failed: retried
    /// alone (no new snapshot) by the next [`OffsetStore::maybe_compact`].
    pending_delete: Option<u64>,
}

/// Clears [`OffsetStore::compacting`] however a compaction ends.
struct CompactingGuard<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for CompactingGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// What one on-disk compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Offset of the snapshot's first record.
    pub snapshot_offset: u64,
    /// Live keys written to the snapshot.
    pub keys: usize,
    /// Snapshot size in bytes.
    pub bytes: u64,
    /// Segments deleted below the snapshot.
    pub segments_deleted: usize,
}

impl OffsetStore {
    /// The log configuration the broker should use: fsync every commit (group
    /// commit), small segments and preallocation, no retention.
    pub fn default_log_config() -> LogConfig {
        LogConfig {
            segment_bytes: 16 * 1024 * 1024,
            preallocate_bytes: 4 * 1024 * 1024,
            flush: FlushPolicy::Always,
            retention_ms: None,
            retention_bytes: None,
            ..LogConfig::default()
        }
    }

    /// Opens (creating if needed) the log in `dir` and replays it.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<OffsetStore, GroupError> {
        Self::open_with_io(dir, config, std::sync::Arc::new(sluice_log::OsFileIo))
    }

    /// Like [`OffsetStore::open`], with the log's file-system calls routed
    /// through `io` (fault injection and power-cut tests). Creating `dir`
    /// syncs every new directory into its parent, up to the existing one.
    pub fn open_with_io(
        dir: impl AsRef<Path>,
        config: LogConfig,
        io: std::sync::Arc<dyn sluice_log::FileIo>,
    ) -> Result<OffsetStore, GroupError> {
        let log = Log::open_with_io(dir, config, io)?;
        let mut map: BTreeMap<String, BTreeMap<TopicPartition, Entry>> = BTreeMap::new();
        let mut stats = ReplayStats::default();
        let start = log.start_offset();
        let mut pos = start;
        let end = log.end_offset();
        while pos < end {
            let chunk = log.read(pos, REPLAY_READ_BYTES)?;
            if chunk.is_empty() {
                break;
            }
            let mut next = pos;
            for batch in batches(&chunk) {
                let batch = batch.map_err(LogError::from)?;
                for record in batch.records() {
                    let record = record.map_err(LogError::from)?;
                    let Ok(offset) = u64::try_from(record.offset) else {
                        stats.skipped += 1;
                        continue;
                    };
                    if offset < pos {
                        continue;
                    }
                    stats.records += 1;
                    let snapshot_of = snapshot_point(&record);
                    let decoded = record
                        .key
                        .and_then(decode_key)
                        .and_then(|(g, tp)| match record.value {
                            None => Some((g, tp, None)),
                            Some(v) => decode_value(v).map(|v| (g, tp, Some(v))),
                        });
                    match decoded {
                        Some((group, tp, value)) => {
                            let entries = map.entry(group).or_default();
                            // A snapshot record loses to any record of its key
                            // at or after its snapshot point; and once segments
                            // below a later snapshot were deleted (its point is
                            // below the log start), that later, complete snapshot
                            // supersedes it: a key deleted in between must not
                            // come back through it.
                            let stale = snapshot_of.is_some_and(|s| {
                                s < start || entries.get(&tp).is_some_and(|e| e.log_offset >= s)
                            });
                            if !stale {
                                entries.insert(
                                    tp,
                                    Entry {
                                        log_offset: offset,
                                        value,
                                    },
                                );
                            }
                        }
                        None => stats.skipped += 1,
                    }
                }
                let last = u64::try_from(batch.header().last_offset()).unwrap_or(0);
                next = next.max(last.saturating_add(1));
            }
            if next <= pos {
                // No progress: a malformed chunk; stop rather than loop.
                tracing::warn!(
                    offset = pos,
                    "offsets log replay made no progress; stopping"
                );
                break;
            }
            pos = next;
        }
        // Compaction on load: drop tombstones and empty groups.
        for entries in map.values_mut() {
            entries.retain(|_, e| e.value.is_some());
        }
        map.retain(|_, e| !e.is_empty());
        stats.live_keys = map.values().map(BTreeMap::len).sum();
        let latest = map
            .iter()
            .flat_map(|(g, entries)| {
                entries.iter().filter_map(move |(tp, e)| {
                    e.value.clone().map(|v| ((g.clone(), tp.clone()), v))
                })
            })
            .collect();
        // Where the last snapshot is is not recorded: count the whole log.
        let appender = Appender {
            latest,
            since_snapshot: log.size_bytes(),
            snapshot_bytes: 0,
            compact_after: COMPACT_AFTER_BYTES,
            pending_delete: None,
        };
        if stats.skipped > 0 {
            tracing::warn!(
                skipped = stats.skipped,
                "offsets log: skipped undecodable records"
            );
        }
        let compaction_enabled = stats.skipped == 0;
        if !compaction_enabled {
            tracing::warn!("offsets log: on-disk compaction is off because replay skipped records");
        }
        Ok(OffsetStore {
            log,
            entries: Mutex::new(map),
            stats,
            appender: Mutex::new(appender),
            compaction_enabled,
            compacting: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// What replay found when the store was opened.
    pub fn replay_stats(&self) -> ReplayStats {
        self.stats
    }

    /// The underlying log (for metrics: size, end offset).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Appends a commit without any fencing; not durable until [`OffsetStore::finish`].
    pub fn append_commit(
        &self,
        group: &str,
        commits: &[OffsetCommit],
        now_ms: i64,
    ) -> Result<CommitTicket, GroupError> {
        validate_group_id(group)?;
        let rows: Vec<(TopicPartition, Option<CommittedOffset>)> = commits
            .iter()
            .map(|c| {
                (
                    c.partition.clone(),
                    Some(CommittedOffset {
                        offset: c.offset,
                        commit_timestamp_ms: now_ms,
                        metadata: c.metadata.clone(),
                    }),
                )
            })
            .collect();
        self.append_rows(group, rows, now_ms)
    }

    /// Waits until a ticket's batch is fsynced, then makes it visible to fetches.
    pub fn finish(&self, ticket: CommitTicket) -> Result<(), GroupError> {
        if ticket.entries.is_empty() {
            return Ok(());
        }
        self.log.wait_durable(ticket.durable_at)?;
        let mut map = self.lock();
        let group = map.entry(ticket.group).or_default();
        for (tp, log_offset, value) in ticket.entries {
            let older = match group.get(&tp) {
                Some(e) => e.log_offset < log_offset,
                None => true,
            };
            if older {
                group.insert(tp, Entry { log_offset, value });
            }
        }
        Ok(())
    }

    /// Sets how many bytes appended since the last snapshot trigger the
    /// next one (default [`COMPACT_AFTER_BYTES`]).
    pub fn set_compact_after_bytes(&self, bytes: u64) {
        self.lock_appender().compact_after = bytes;
    }

    /// Whether enough was appended since the last snapshot for
    /// [`OffsetStore::maybe_compact`] to compact (and compaction is on).
    pub fn compaction_due(&self) -> bool {
        let a = self.lock_appender();
        self.compaction_enabled && a.since_snapshot >= a.compact_after.max(2 * a.snapshot_bytes)
    }

    /// Compacts the log on disk when [`OffsetStore::compaction_due`] (see
    /// the module docs). Blocking (appends, an fsync, file deletions), but
    /// commits go on meanwhile: call it from a background thread.
    pub fn maybe_compact(&self) -> Result<Option<Compaction>, GroupError> {
        use std::sync::atomic::Ordering;
        let pending_delete = self.lock_appender().pending_delete;
        if (pending_delete.is_none() && !self.compaction_due())
            || self.compacting.swap(true, Ordering::AcqRel)
        {
            return Ok(None);
        }
        let _guard = CompactingGuard(&self.compacting);
        if let Some(point) = pending_delete {
            // The snapshot is durable: only its deletion is left to do.
            let segments_deleted = self.log.delete_segments_before(point)?;
            self.lock_appender().pending_delete = None;
            return Ok(Some(Compaction {
                snapshot_offset: point,
                keys: 0,
                bytes: 0,
                segments_deleted,
            }));
        }
        self.compact().map(Some)
    }

    fn compact(&self) -> Result<Compaction, GroupError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // The state in log order at the snapshot point: appends wait only
        // for this copy.
        let (snapshot_offset, live, since) = {
            let mut a = self.lock_appender();
            let since = std::mem::take(&mut a.since_snapshot);
            (self.log.end_offset(), a.latest.clone(), since)
        };
        // Until the snapshot is durable, a failure leaves compaction due.
        let undo = |e: GroupError| {
            self.lock_appender().since_snapshot += since;
            e
        };
        let header = snapshot_offset.to_be_bytes();
        let headers: [(&str, &[u8]); 1] = [(SNAPSHOT_HEADER, &header)];
        let mut durable_at = snapshot_offset;
        let mut bytes = 0u64;
        let mut builder = RecordBatchBuilder::new();
        let mut pending = 0usize;
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut flush = |builder: &mut RecordBatchBuilder| -> Result<(), GroupError> {
            let batch = std::mem::take(builder).into_batch();
            let info = self
                .log
                .append(&batch)
                .map_err(GroupError::from)
                .map_err(undo)?;
            bytes += batch.len() as u64;
            durable_at = info.last_offset.saturating_add(1);
            Ok(())
        };
        for ((group, tp), v) in &live {
            key.clear();
            encode_key(group, tp, &mut key).map_err(undo)?;
            value.clear();
            encode_value(v, &mut value).map_err(undo)?;
            builder.push(now_ms, Some(&key), Some(&value), &headers);
            pending += key.len() + value.len();
            if pending >= SNAPSHOT_BATCH_BYTES {
                flush(&mut builder)?;
                pending = 0;
            }
        }
        if pending > 0 {
            flush(&mut builder)?;
        }
        self.log
            .wait_durable(durable_at)
            .map_err(GroupError::from)
            .map_err(undo)?;
        self.lock_appender().snapshot_bytes = bytes;
        let segments_deleted = match self.log.delete_segments_before(snapshot_offset) {
            Ok(n) => n,
            Err(e) => {
                self.lock_appender().pending_delete = Some(snapshot_offset);
                return Err(e.into());
            }
        };
        tracing::info!(
            snapshot_offset,
            keys = live.len(),
            bytes,
            segments_deleted,
            "compacted the offsets log"
        );
        Ok(Compaction {
            snapshot_offset,
            keys: live.len(),
            bytes,
            segments_deleted,
        })
    }

    /// Commits without fencing and returns once durable (raw store API).
    pub fn commit(
        &self,
        group: &str,
        commits: &[OffsetCommit],
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let ticket = self.append_commit(group, commits, now_ms)?;
        self.finish(ticket)
    }

    /// The committed offset of one partition.
    pub fn fetch(&self, group: &str, partition: &TopicPartition) -> Option<CommittedOffset> {
        self.lock()
            .get(group)
            .and_then(|g| g.get(partition))
            .and_then(|e| e.value.clone())
    }

    /// Every committed offset of a group.
    pub fn fetch_group(&self, group: &str) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.lock()
            .get(group)
            .map(|g| {
                g.iter()
                    .filter_map(|(tp, e)| e.value.clone().map(|v| (tp.clone(), v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Groups that have at least one committed offset.
    pub fn groups(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, g)| g.values().any(|e| e.value.is_some()))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Deletes every offset of a group with tombstones (no fencing); returns
    /// how many partitions were deleted, once durable.
    pub fn delete_group_offsets(&self, group: &str, now_ms: i64) -> Result<usize, GroupError> {
        let partitions: Vec<TopicPartition> = self
            .lock()
            .get(group)
            .map(|g| {
                g.iter()
                    .filter(|(_, e)| e.value.is_some())
                    .map(|(tp, _)| tp.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.delete_offsets(group, &partitions, now_ms)
    }

    /// Deletes the offsets of some partitions of a group with tombstones (no
    /// fencing; e.g. after a topic is deleted); returns how many existed, once durable.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        now_ms: i64,
    ) -> Result<usize, GroupError> {
        let existing: Vec<TopicPartition> = {
            let map = self.lock();
            partitions
                .iter()
                .filter(|tp| {
                    map.get(group)
                        .and_then(|g| g.get(*tp))
                        .is_some_and(|e| e.value.is_some())
                })
                .cloned()
                .collect()
        };
        let n = existing.len();
        if n == 0 {
            return Ok(0);
        }
        let rows = existing.into_iter().map(|tp| (tp, None)).collect();
        let ticket = self.append_rows(group, rows, now_ms)?;
        self.finish(ticket)?;
        Ok(n)
    }

    /// Flushes and closes the log.
    pub fn close(&self) -> Result<(), GroupError> {
        self.log.close()?;
        Ok(())
    }

    fn append_rows(
        &self,
        group: &str,
        rows: Vec<(TopicPartition, Option<CommittedOffset>)>,
        now_ms: i64,
    ) -> Result<CommitTicket, GroupError> {
        if rows.is_empty() {
            return Ok(CommitTicket {
                group: group.to_string(),
                entries: Vec::new(),
                durable_at: 0,
            });
        }
        let mut appender = self.lock_appender();
        let mut builder = RecordBatchBuilder::new();
        let mut key = Vec::new();
        let mut value = Vec::new();
        for (tp, v) in &rows {
            key.clear();
            encode_key(group, tp, &mut key)?;
            match v {
                Some(v) => {
                    value.clear();
                    encode_value(v, &mut value)?;
                    builder.push(now_ms, Some(&key), Some(&value), &[]);
                }
                None => builder.push(now_ms, Some(&key), None, &[]),
            }
        }
        let batch: Bytes = builder.finish();
        let info = self.log.append(&batch)?;
        appender.since_snapshot += batch.len() as u64;
        for (tp, v) in &rows {
            let k = (group.to_string(), tp.clone());
            match v {
                Some(v) => appender.latest.insert(k, v.clone()),
                None => appender.latest.remove(&k),
            };
        }
        drop(appender);
        let entries = rows
            .into_iter()
            .enumerate()
            .map(|(i, (tp, v))| (tp, info.base_offset + i as u64, v))
            .collect();
        Ok(CommitTicket {
            group: group.to_string(),
            entries,
            durable_at: info.last_offset.saturating_add(1),
        })
    }

    fn lock_appender(&self) -> MutexGuard<'_, Appender> {
        // Updated only after a successful append, one key at a time.
        self.appender.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeMap<TopicPartition, Entry>>> {
        // A panic while holding the lock cannot leave the map half-updated in a
        // way that matters (each insert is atomic), so keep going.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The snapshot point of a snapshot record (its `snapshot-of` header).
fn snapshot_point(record: &sluice_protocol::batch::Record<'_>) -> Option<u64> {
    record.headers().find_map(|h| match h {
        Ok((SNAPSHOT_HEADER, Some(v))) => v.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    })
}

/// Fenced commit, first half: checks `committer` against the coordinator and
/// appends. Call with the coordinator locked, then release the lock and call
/// [`OffsetStore::finish`] on the ticket.
pub fn begin_fenced_commit(
    coordinator: &Coordinator,
    store: &OffsetStore,
    group: &str,
    committer: Committer<'_>,
    commits: &[OffsetCommit],
    now_ms: i64,
) -> Result<CommitTicket, GroupError> {
    // Every protocol carries committed offsets as i64 (OffsetFetch and
    // DescribeGroups report them so): one above i64::MAX could only be read
    // back clamped, so it is refused, never stored.
    if let Some(c) = commits.iter().find(|c| i64::try_from(c.offset).is_err()) {
        return Err(GroupError::InvalidRequest(format!(
            "committed offset {} of {}-{} is above i64::MAX",
            c.offset, c.partition.topic, c.partition.partition
        )));
    }
    let partitions: Vec<TopicPartition> = commits.iter().map(|c| c.partition.clone()).collect();
    coordinator.check_commit(group, committer, &partitions)?;
    store.append_commit(group, commits, now_ms)
}

/// Fenced commit in one call (check, append, wait for the fsync).
pub fn fenced_commit(
    coordinator: &Coordinator,
    store: &OffsetStore,
    group: &str,
    committer: Committer<'_>,
    commits: &[OffsetCommit],
    now_ms: i64,
) -> Result<(), GroupError> {
    let ticket = begin_fenced_commit(coordinator, store, group, committer, commits, now_ms)?;
    store.finish(ticket)
}

/// Validates the group id and refuses a group that has members.
fn require_no_members(coordinator: &Coordinator, group: &str) -> Result<(), GroupError> {
    validate_group_id(group)?;
    match coordinator.member_count(group) {
        0 => Ok(()),
        members => Err(GroupError::NonEmptyGroup {
            group: group.to_string(),
            members,
        }),
    }
}

/// Seek (reset offsets): overwrites committed offsets, only while the group
/// has no members. The caller resolves earliest/latest/timestamp to offsets.
pub fn reset_offsets(
    coordinator: &Coordinator,
    store: &OffsetStore,
    group: &str,
    commits: &[OffsetCommit],
    now_ms: i64,
) -> Result<(), GroupError> {
    require_no_members(coordinator, group)?;
    store.commit(group, commits, now_ms)
}

/// Group delete: tombstones every offset and forgets the coordinator's state,
/// only while the group has no members. `GroupIdNotFound` when neither knows it.
pub fn delete_group(
    coordinator: &mut Coordinator,
    store: &OffsetStore,
    group: &str,
    now_ms: i64,
) -> Result<usize, GroupError> {
    require_no_members(coordinator, group)?;
    let known = coordinator.generation(group).is_some();
    let deleted = store.delete_group_offsets(group, now_ms)?;
    if known {
        coordinator.delete_group(group)?;
    } else if deleted == 0 {
        return Err(GroupError::GroupIdNotFound {
            group: group.to_string(),
        });
    }
    Ok(deleted)
}

fn put_str16(s: &str, what: &str, out: &mut Vec<u8>) -> Result<(), GroupError> {
    let len = u16::try_from(s.len())
        .map_err(|_| GroupError::InvalidRequest(format!("{what} longer than 65535 bytes")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Encodes a record key (layout in the module docs).
pub fn encode_key(group: &str, tp: &TopicPartition, out: &mut Vec<u8>) -> Result<(), GroupError> {
    out.push(KEY_VERSION_OFFSET);
    put_str16(group, "group id", out)?;
    put_str16(&tp.topic, "topic", out)?;
    out.extend_from_slice(&tp.partition.to_be_bytes());
    Ok(())
}

/// Encodes a record value (layout in the module docs).
pub fn encode_value(v: &CommittedOffset, out: &mut Vec<u8>) -> Result<(), GroupError> {
    out.push(VALUE_VERSION);
    out.extend_from_slice(&v.offset.to_be_bytes());
    out.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
    put_str16(&v.metadata, "offset metadata", out)
}

/// Reads `n` bytes off the front of `buf`.
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = buf.split_at_checked(n)?;
    *buf = tail;
    Some(head)
}

/// Reads a fixed-size field off the front of `buf`.
fn take_array<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = buf.split_first_chunk::<N>()?;
    *buf = tail;
    Some(*head)
}

fn take_str16(buf: &mut &[u8]) -> Option<String> {
    let len = u16::from_be_bytes(take_array(buf)?);
    let s = take(buf, usize::from(len))?;
    String::from_utf8(s.to_vec()).ok()
}

/// Decodes a record key; `None` if malformed or of an unknown version.
pub fn decode_key(mut buf: &[u8]) -> Option<(String, TopicPartition)> {
    if take_array(&mut buf)? != [KEY_VERSION_OFFSET] {
        return None;
    }
    let group = take_str16(&mut buf)?;
    let topic = take_str16(&mut buf)?;
    let partition = u32::from_be_bytes(take_array(&mut buf)?);
    if !buf.is_empty() {
        return None;
    }
    Some((group, TopicPartition { topic, partition }))
}

/// Decodes a record value; `None` if malformed or of an unknown version.
pub fn decode_value(mut buf: &[u8]) -> Option<CommittedOffset> {
    if take_array(&mut buf)? != [VALUE_VERSION] {
        return None;
    }
    let offset = u64::from_be_bytes(take_array(&mut buf)?);
    let commit_timestamp_ms = i64::from_be_bytes(take_array(&mut buf)?);
    let metadata = take_str16(&mut buf)?;
    if !buf.is_empty() {
        return None;
    }
    Some(CommittedOffset {
        offset,
        commit_timestamp_ms,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_layout_matches_table() {
        let mut k = Vec::new();
        encode_key("g", &TopicPartition::new("tp", 7), &mut k).unwrap();
        assert_eq!(k, [0, 0, 1, b'g', 0, 2, b't', b'p', 0, 0, 0, 7]);
        let mut v = Vec::new();
        let val = CommittedOffset {
            offset: 258,
            commit_timestamp_ms: 1,
            metadata: "m".into(),
        };
        encode_value(&val, &mut v).unwrap();
        assert_eq!(
            v,
            [0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b'm']
        );
    }

    #[test]
    fn decode_rejects_garbage_and_unknown_versions() {
        assert_eq!(decode_key(&[]), None);
        assert_eq!(decode_key(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_key(&[0, 0, 5, b'a']), None);
        assert_eq!(decode_value(&[0, 1, 2]), None);
        assert_eq!(decode_value(&[9; 19]), None);
    }

    #[test]
    fn too_long_fields_are_rejected() {
        let mut k = Vec::new();
        let tp = TopicPartition::new("x".repeat(70_000), 0);
        assert!(matches!(
            encode_key("g", &tp, &mut k),
            Err(GroupError::InvalidRequest(_))
        ));
    }

    proptest! {
        #[test]
        fn key_value_round_trip(
            group in "[a-z0-9._-]{1,40}",
            topic in "\\PC{0,40}",
            partition in any::<u32>(),
            offset in any::<u64>(),
            ts in any::<i64>(),
            metadata in "\\PC{0,60}",
        ) {
            let tp = TopicPartition::new(topic, partition);
            let mut k = Vec::new();
            encode_key(&group, &tp, &mut k).unwrap();
            prop_assert_eq!(decode_key(&k), Some((group, tp)));
            let v = CommittedOffset { offset, commit_timestamp_ms: ts, metadata };
            let mut b = Vec::new();
            encode_value(&v, &mut b).unwrap();
            prop_assert_eq!(decode_value(&b), Some(v));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_key(&bytes);
            let _ = decode_value(&bytes);
        }
    }
}
