//! Durable committed offsets: the `__consumer_offsets` log.
//!
//! Committed offsets live in an internal log on the same storage engine as
//! topics (`sluice-log`), in a directory the caller chooses (the broker uses
//! `<data>/__consumer_offsets/0`). Each commit appends one RecordBatch v2
//! holding one record per partition and returns only once the batch is
//! fsynced ([`sluice_log::Log::wait_durable`]): *a commit acknowledged is a
//! commit kept*. On open the whole log is replayed into memory, latest record
//! per key winning (compaction on load); a record with a null value (a
//! tombstone) deletes its key, which is how a group is deleted and how
//! offsets expire.
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
//! Every change (commit, delete, expiry) is first *queued*: a fenced commit
//! checks the coordinator and takes its place in the queue while the caller
//! holds the coordinator lock ([`begin_fenced_commit`]), which costs no I/O,
//! so the order of the queue agrees with ownership changes. The append to
//! the log (which may roll a segment and fsync) and the fsync wait happen in
//! [`OffsetStore::finish`], after the coordinator lock is released and off
//! the async runtime (the broker runs it on the blocking pool): a slow or
//! failing disk never holds the coordinator lock, so heartbeats of other
//! groups go on. `finish` appends every change queued before its own, in
//! queue order, under the store's append lock, so the log order is the
//! queue order whichever caller gets there first; a change whose ticket was
//! dropped is still appended by the next `finish` (or
//! [`OffsetStore::settle`]), never skipped.
//!
//! The in-memory map is updated only after the fsync, in log order, by
//! whoever sees the log durable far enough ([`OffsetStore::finish`],
//! [`OffsetStore::settle`]), so it holds exactly what a replay would build
//! of the durable log. Deletions and expiries are resolved when they are
//! appended, against what the log says at that moment: a tombstone is
//! written only for an offset still committed then (and for an expiry, still
//! the same commit), so it never deletes a commit queued before it that it
//! did not see.
//!
//! # Retention (Kafka's `offsets.retention.minutes`)
//!
//! [`begin_expire_offsets`] (under the coordinator lock, then
//! [`finish_expiry`]) tombstones every committed offset for which the
//! retention ([`crate::CoordinatorConfig::offsets_retention_ms`], default 7 days)
//! has passed since the **latest** of:
//!
//! - its commit (the commit timestamp, wall clock);
//! - the moment its group became empty, if the coordinator knows the group
//!   (coordinator clock); the offsets of a group **with members never
//!   expire**;
//! - the moment the store was opened ([`OffsetRetention::opened_wall_ms`]):
//!   group membership is not stored, so after a restart a group is given a
//!   full retention period to come back before its offsets go.
//!
//! For a group that emptied after its last commit this is Kafka's rule
//! (retention counts from the group becoming empty); for standalone commits
//! (no member ever) it is Kafka's per-offset rule (from the commit). A
//! commit made after the group emptied (a `group seek`) restarts the count
//! for that offset, where Kafka would not. Tombstones are ordinary records,
//! so the expiry is durable and survives a restart, and the group leaves
//! ListGroups and DescribeGroups once its last offset is gone. The
//! coordinator forgets an empty group once the retention has passed since it
//! emptied, or once it has no committed offsets and has been empty for
//! [`EMPTY_GROUP_GRACE_MS`] (Kafka drops such a group at its next check).
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

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use sluice_log::{FlushPolicy, Log, LogConfig, LogError};
use sluice_protocol::batch::{batches, RecordBatchBuilder};

use crate::assign::TopicPartition;
use crate::classic::ClassicCoordinator;
use crate::coordinator::{Committer, Coordinator, Occupancy};
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
/// An empty group without committed offsets is forgotten by the coordinator
/// after this long (10 min, Kafka's `offsets.retention.check.interval.ms`),
/// or after the retention if that is shorter.
pub const EMPTY_GROUP_GRACE_MS: u64 = 10 * 60 * 1000;

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

/// A change queued but not yet appended or durable; hand it to
/// [`OffsetStore::finish`]. Dropping it does not cancel the change: the
/// next `finish` appends it (it is just never acknowledged).
#[derive(Debug)]
#[must_use = "a commit is not acknowledged until OffsetStore::finish returns Ok"]
pub struct CommitTicket {
    /// Queue position; `None` when there was nothing to queue.
    seq: Option<u64>,
    /// Filled by whoever appends the change.
    slot: Slot,
}

/// Where the appender leaves the outcome of a queued change.
type Slot = Arc<Mutex<Option<Result<Appended, GroupError>>>>;

/// A queued change once appended.
#[derive(Debug, Clone, Copy)]
struct Appended {
    /// `wait_durable` argument: one past the last appended offset.
    durable_at: u64,
    /// Records appended (0: nothing left to change, nothing appended).
    rows: usize,
}

/// A change waiting in the queue, resolved into records when appended.
#[derive(Debug)]
enum Change {
    /// New committed offsets.
    Commit(Vec<(TopicPartition, CommittedOffset)>),
    /// Tombstones for those of these partitions that are committed.
    Delete(Vec<TopicPartition>),
    /// Tombstones for every committed partition of the group.
    DeleteGroup,
    /// Tombstones for those offsets that are still exactly these commits.
    Expire(Vec<(TopicPartition, CommittedOffset)>),
}

#[derive(Debug)]
struct Queued {
    seq: u64,
    group: String,
    change: Change,
    now_ms: i64,
    slot: Slot,
}

#[derive(Debug, Default)]
struct Queue {
    next_seq: u64,
    items: VecDeque<Queued>,
}

/// Appended records waiting for their fsync before they reach the map.
#[derive(Debug)]
struct Unapplied {
    durable_at: u64,
    group: String,
    rows: Vec<(TopicPartition, Option<CommittedOffset>)>,
}

/// A replayed record: its offset decides against snapshot records.
#[derive(Debug, Clone)]
struct Entry {
    log_offset: u64,
    /// `None` = deleted.
    value: Option<CommittedOffset>,
}

/// Durable committed offsets by group, then partition.
type OffsetMap = BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>>;

/// The committed-offset store. `Send + Sync`; every method takes `&self`.
///
/// Lock order: `appender`, then `unapplied`, then `entries`; `queue` is
/// taken alone or inside `appender`. The coordinator lock (the caller's)
/// comes before `queue` and never before `appender`.
#[derive(Debug)]
pub struct OffsetStore {
    log: Log,
    /// What the durable log says (what a replay would build).
    entries: Mutex<OffsetMap>,
    stats: ReplayStats,
    appender: Mutex<Appender>,
    /// Changes in the order they must reach the log.
    queue: Mutex<Queue>,
    /// Appended changes in log order, applied to `entries` once durable.
    unapplied: Mutex<VecDeque<Unapplied>>,
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
        let map: OffsetMap = map
            .into_iter()
            .map(|(g, entries)| {
                let live: BTreeMap<TopicPartition, CommittedOffset> = entries
                    .into_iter()
                    .filter_map(|(tp, e)| e.value.map(|v| (tp, v)))
                    .collect();
                (g, live)
            })
            .filter(|(_, live)| !live.is_empty())
            .collect();
        stats.live_keys = map.values().map(BTreeMap::len).sum();
        let latest = map
            .iter()
            .flat_map(|(g, entries)| {
                entries
                    .iter()
                    .map(move |(tp, v)| ((g.clone(), tp.clone()), v.clone()))
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
            queue: Mutex::new(Queue::default()),
            unapplied: Mutex::new(VecDeque::new()),
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

    /// Queues a commit without any fencing (memory only, no I/O); it is
    /// appended and made durable by [`OffsetStore::finish`]. Fields too long
    /// for the record layout are refused here.
    pub fn append_commit(
        &self,
        group: &str,
        commits: &[OffsetCommit],
        now_ms: i64,
    ) -> Result<CommitTicket, GroupError> {
        validate_group_id(group)?;
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut rows = Vec::with_capacity(commits.len());
        for c in commits {
            let v = CommittedOffset {
                offset: c.offset,
                commit_timestamp_ms: now_ms,
                metadata: c.metadata.clone(),
            };
            key.clear();
            encode_key(group, &c.partition, &mut key)?;
            value.clear();
            encode_value(&v, &mut value)?;
            rows.push((c.partition.clone(), v));
        }
        if rows.is_empty() {
            return Ok(CommitTicket::empty());
        }
        Ok(self.enqueue(group, Change::Commit(rows), now_ms))
    }

    /// Queues tombstones for those of `partitions` that are committed when
    /// the change is appended (no fencing); finish it with
    /// [`OffsetStore::finish_counted`].
    pub fn begin_delete_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        now_ms: i64,
    ) -> Result<CommitTicket, GroupError> {
        validate_group_id(group)?;
        if partitions.is_empty() {
            return Ok(CommitTicket::empty());
        }
        Ok(self.enqueue(group, Change::Delete(partitions.to_vec()), now_ms))
    }

    fn enqueue(&self, group: &str, change: Change, now_ms: i64) -> CommitTicket {
        let slot: Slot = Arc::new(Mutex::new(None));
        let mut q = self.lock_queue();
        let seq = q.next_seq;
        q.next_seq += 1;
        q.items.push_back(Queued {
            seq,
            group: group.to_string(),
            change,
            now_ms,
            slot: Arc::clone(&slot),
        });
        CommitTicket {
            seq: Some(seq),
            slot,
        }
    }

    /// Appends the ticket's change (and every change queued before it),
    /// waits until it is fsynced, and makes it visible to fetches. Blocking:
    /// call it without the coordinator lock, off the async runtime.
    pub fn finish(&self, ticket: CommitTicket) -> Result<(), GroupError> {
        self.finish_counted(ticket).map(|_| ())
    }

    /// [`OffsetStore::finish`], returning how many records the change wrote
    /// (for a delete or an expiry: how many offsets it deleted).
    pub fn finish_counted(&self, ticket: CommitTicket) -> Result<usize, GroupError> {
        let Some(seq) = ticket.seq else {
            return Ok(0);
        };
        self.append_queued(seq);
        let outcome = lock_slot(&ticket.slot).take().unwrap_or_else(|| {
            Err(GroupError::InvalidRequest(
                "offset store: queued change was not appended".into(),
            ))
        });
        let appended = outcome?;
        if appended.rows > 0 {
            self.log.wait_durable(appended.durable_at)?;
        }
        self.apply_durable();
        Ok(appended.rows)
    }

    /// Appends everything queued, waits for the fsync and applies it (the
    /// changes of tickets that were dropped). Blocking, like `finish`.
    pub fn settle(&self) -> Result<(), GroupError> {
        self.append_queued(u64::MAX);
        let last = self.lock_unapplied().back().map(|u| u.durable_at);
        if let Some(at) = last {
            self.log.wait_durable(at)?;
        }
        self.apply_durable();
        Ok(())
    }

    /// Appends the queued changes up to `seq`, in queue order, under the
    /// append lock; each outcome goes to its ticket's slot.
    fn append_queued(&self, seq: u64) {
        let mut appender = self.lock_appender();
        loop {
            let item = {
                let mut q = self.lock_queue();
                if q.items.front().is_some_and(|i| i.seq <= seq) {
                    q.items.pop_front()
                } else {
                    None
                }
            };
            let Some(item) = item else {
                break;
            };
            let rows = resolve(&appender, &item.group, item.change);
            let outcome = self.append_rows(&mut appender, item.group, rows, item.now_ms);
            *lock_slot(&item.slot) = Some(outcome);
        }
    }

    /// Moves every appended change that is durable now into the map, in log order.
    fn apply_durable(&self) {
        let durable = self.log.durable_offset();
        let mut pending = self.lock_unapplied();
        if pending.front().is_none_or(|u| u.durable_at > durable) {
            return;
        }
        let mut map = self.lock();
        while let Some(u) = pending.pop_front() {
            if u.durable_at > durable {
                pending.push_front(u);
                break;
            }
            let group = map.entry(u.group.clone()).or_default();
            for (tp, v) in u.rows {
                match v {
                    Some(v) => group.insert(tp, v),
                    None => group.remove(&tp),
                };
            }
            if group.is_empty() {
                map.remove(&u.group);
            }
        }
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
            .cloned()
    }

    /// Every committed offset of a group.
    pub fn fetch_group(&self, group: &str) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.lock().get(group).cloned().unwrap_or_default()
    }

    /// Groups that have at least one committed offset.
    pub fn groups(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether the group has at least one committed offset.
    pub fn has_group(&self, group: &str) -> bool {
        self.lock().contains_key(group)
    }

    /// Deletes every offset of a group with tombstones (no fencing); returns
    /// how many partitions were deleted, once durable.
    pub fn delete_group_offsets(&self, group: &str, now_ms: i64) -> Result<usize, GroupError> {
        validate_group_id(group)?;
        let ticket = self.enqueue(group, Change::DeleteGroup, now_ms);
        self.finish_counted(ticket)
    }

    /// Deletes the offsets of some partitions of a group with tombstones (no
    /// fencing; e.g. after a topic is deleted); returns how many existed, once durable.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        now_ms: i64,
    ) -> Result<usize, GroupError> {
        let ticket = self.begin_delete_offsets(group, partitions, now_ms)?;
        self.finish_counted(ticket)
    }

    /// Flushes and closes the log.
    pub fn close(&self) -> Result<(), GroupError> {
        self.log.close()?;
        Ok(())
    }

    /// Appends one resolved change (the caller holds the append lock) and
    /// queues it for the map once durable.
    fn append_rows(
        &self,
        appender: &mut Appender,
        group: String,
        rows: Vec<(TopicPartition, Option<CommittedOffset>)>,
        now_ms: i64,
    ) -> Result<Appended, GroupError> {
        if rows.is_empty() {
            return Ok(Appended {
                durable_at: 0,
                rows: 0,
            });
        }
        let mut builder = RecordBatchBuilder::new();
        let mut key = Vec::new();
        let mut value = Vec::new();
        for (tp, v) in &rows {
            key.clear();
            encode_key(&group, tp, &mut key)?;
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
            let k = (group.clone(), tp.clone());
            match v {
                Some(v) => appender.latest.insert(k, v.clone()),
                None => appender.latest.remove(&k),
            };
        }
        let appended = Appended {
            durable_at: info.last_offset.saturating_add(1),
            rows: rows.len(),
        };
        self.lock_unapplied().push_back(Unapplied {
            durable_at: appended.durable_at,
            group,
            rows,
        });
        Ok(appended)
    }

    fn lock_appender(&self) -> MutexGuard<'_, Appender> {
        // Updated only after a successful append, one key at a time.
        self.appender.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        // Each push and pop is complete on its own.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_unapplied(&self) -> MutexGuard<'_, VecDeque<Unapplied>> {
        // Each push and pop is complete on its own.
        self.unapplied.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, OffsetMap> {
        // A panic while holding the lock cannot leave the map half-updated in a
        // way that matters (each insert is atomic), so keep going.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CommitTicket {
    /// A ticket for a change with nothing to write.
    fn empty() -> CommitTicket {
        CommitTicket {
            seq: None,
            slot: Arc::new(Mutex::new(None)),
        }
    }
}

fn lock_slot(slot: &Slot) -> MutexGuard<'_, Option<Result<Appended, GroupError>>> {
    // Written once, read once.
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The records a queued change writes, decided against the log's state at
/// append time (`appender.latest`).
fn resolve(
    appender: &Appender,
    group: &str,
    change: Change,
) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
    let latest = &appender.latest;
    let committed = |tp: &TopicPartition| latest.get(&(group.to_string(), tp.clone()));
    match change {
        Change::Commit(rows) => rows.into_iter().map(|(tp, v)| (tp, Some(v))).collect(),
        Change::Delete(parts) => {
            let mut parts: Vec<TopicPartition> = parts
                .into_iter()
                .filter(|tp| committed(tp).is_some())
                .collect();
            parts.sort();
            parts.dedup();
            parts.into_iter().map(|tp| (tp, None)).collect()
        }
        Change::DeleteGroup => latest
            .range((group.to_string(), TopicPartition::new("", 0))..)
            .take_while(|((g, _), _)| g == group)
            .map(|((_, tp), _)| (tp.clone(), None))
            .collect(),
        Change::Expire(rows) => rows
            .into_iter()
            .filter(|(tp, v)| committed(tp) == Some(v))
            .map(|(tp, _)| (tp, None))
            .collect(),
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
/// queues the commit (no I/O). Call with the coordinator locked, then
/// release the lock and call [`OffsetStore::finish`] on the ticket (which
/// appends, in queue order, and waits for the fsync).
pub fn begin_fenced_commit(
    coordinator: &Coordinator,
    store: &OffsetStore,
    group: &str,
    committer: Committer<'_>,
    commits: &[OffsetCommit],
    now_ms: i64,
) -> Result<CommitTicket, GroupError> {
    check_commit_offsets(commits)?;
    let partitions: Vec<TopicPartition> = commits.iter().map(|c| c.partition.clone()).collect();
    coordinator.check_commit(group, committer, &partitions)?;
    store.append_commit(group, commits, now_ms)
}

/// Refuses a commit with an offset above `i64::MAX`: every protocol
/// carries committed offsets as i64 (OffsetFetch and DescribeGroups report
/// them so), so such an offset could only be read back clamped.
pub fn check_commit_offsets(commits: &[OffsetCommit]) -> Result<(), GroupError> {
    if let Some(c) = commits.iter().find(|c| i64::try_from(c.offset).is_err()) {
        return Err(GroupError::InvalidRequest(format!(
            "committed offset {} of {}-{} is above i64::MAX",
            c.offset, c.partition.topic, c.partition.partition
        )));
    }
    Ok(())
}

/// Fenced commit in one call (check, queue, append, wait for the fsync).
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
    let ticket = begin_delete_group(coordinator, store, group, now_ms)?;
    store.finish_counted(ticket)
}

/// Group delete, first half (call with the coordinator locked, no I/O):
/// checks that the group has no members, forgets its coordinator state and
/// queues tombstones for every offset it has when they are appended. Then
/// release the lock and call [`OffsetStore::finish_counted`] (the number of
/// offsets deleted). `GroupIdNotFound` when neither the coordinator nor the
/// store knows the group.
pub fn begin_delete_group(
    coordinator: &mut Coordinator,
    store: &OffsetStore,
    group: &str,
    now_ms: i64,
) -> Result<CommitTicket, GroupError> {
    require_no_members(coordinator, group)?;
    let known = coordinator.generation(group).is_some();
    if !known && !store.has_group(group) {
        return Err(GroupError::GroupIdNotFound {
            group: group.to_string(),
        });
    }
    let ticket = store.enqueue(group, Change::DeleteGroup, now_ms);
    if known {
        coordinator.delete_group(group)?;
    }
    Ok(ticket)
}

/// Offsets retention settings (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRetention {
    /// How long an offset outlives the later of its commit and its group
    /// becoming empty.
    pub retention_ms: u64,
    /// Wall-clock ms when the store was opened: no age counts from earlier.
    pub opened_wall_ms: i64,
}

/// The present on the two clocks an expiry pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryNow {
    /// The coordinator's clock (the scale of its `now_ms` arguments).
    pub coordinator_ms: u64,
    /// Wall clock, ms since the Unix epoch (the scale of commit timestamps).
    pub wall_ms: i64,
}

/// What [`begin_expire_offsets`] decided; finish it with [`finish_expiry`].
#[derive(Debug)]
#[must_use = "expired offsets are deleted only by finish_expiry"]
pub struct ExpiryPass {
    /// One queued expiry per group with expired offsets.
    tickets: Vec<CommitTicket>,
    /// Offsets found expired (each is deleted unless re-committed meanwhile).
    pub offsets: usize,
    /// Empty groups the coordinator forgot.
    pub forgotten_groups: Vec<String>,
}

/// Whether an offset committed at `commit_ms` (wall clock) of a group with
/// `occupancy` has outlived the retention at `now`.
pub fn offset_expired(
    retention: &OffsetRetention,
    occupancy: Occupancy,
    commit_ms: i64,
    now: ExpiryNow,
) -> bool {
    let since = commit_ms.max(retention.opened_wall_ms);
    let commit_age = u64::try_from(now.wall_ms.saturating_sub(since)).unwrap_or(0);
    let age = match occupancy {
        Occupancy::Members => return false,
        Occupancy::Unknown => commit_age,
        Occupancy::EmptySince(at) => commit_age.min(now.coordinator_ms.saturating_sub(at)),
    };
    age >= retention.retention_ms
}

/// Offsets retention, first half (call with the coordinator locked; no
/// I/O): finds every expired offset (see the module docs), queues its
/// tombstone, and forgets empty groups that are past the retention (or
/// have no offsets and are past [`EMPTY_GROUP_GRACE_MS`]). Then release the
/// lock and call [`finish_expiry`]. The same as
/// [`OffsetStore::expiry_candidates`] then [`begin_expire_candidates`].
pub fn begin_expire_offsets(
    coordinator: &mut Coordinator,
    store: &OffsetStore,
    retention: &OffsetRetention,
    now: ExpiryNow,
) -> ExpiryPass {
    let candidates = store.expiry_candidates(retention, now.wall_ms);
    begin_expire_candidates(coordinator, store, retention, now, candidates)
}

/// Offsets old enough to expire if their group has no members, found by
/// [`OffsetStore::expiry_candidates`] without the coordinator lock.
#[derive(Debug, Default)]
pub struct ExpiryCandidates(Vec<(String, Vec<(TopicPartition, CommittedOffset)>)>);

impl ExpiryCandidates {
    /// Number of candidate offsets.
    pub fn len(&self) -> usize {
        self.0.iter().map(|(_, rows)| rows.len()).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl OffsetStore {
    /// The scan of an expiry pass, without the coordinator lock: every
    /// offset whose commit (or the store's opening, if later) is at least
    /// the retention old. Only these can expire, whatever their group's
    /// occupancy; [`begin_expire_candidates`] then decides per group.
    pub fn expiry_candidates(&self, retention: &OffsetRetention, wall_ms: i64) -> ExpiryCandidates {
        let now = ExpiryNow {
            coordinator_ms: 0,
            wall_ms,
        };
        let map = self.lock();
        ExpiryCandidates(
            map.iter()
                .filter_map(|(group, offsets)| {
                    let rows: Vec<(TopicPartition, CommittedOffset)> = offsets
                        .iter()
                        .filter(|(_, v)| {
                            offset_expired(
                                retention,
                                Occupancy::Unknown,
                                v.commit_timestamp_ms,
                                now,
                            )
                        })
                        .map(|(tp, v)| (tp.clone(), v.clone()))
                        .collect();
                    (!rows.is_empty()).then(|| (group.clone(), rows))
                })
                .collect(),
        )
    }
}

/// Offsets retention, first half from a scan made without the lock (call
/// with the coordinator locked; no I/O, one group lookup per candidate
/// group): see [`begin_expire_offsets`]. A candidate committed again since
/// the scan is kept (tombstones are resolved when appended).
pub fn begin_expire_candidates(
    coordinator: &mut Coordinator,
    store: &OffsetStore,
    retention: &OffsetRetention,
    now: ExpiryNow,
    candidates: ExpiryCandidates,
) -> ExpiryPass {
    expire_candidates(coordinator, None, store, retention, now, candidates)
}

/// [`begin_expire_candidates`] for a broker that also runs Kafka classic
/// groups in `classic` (same lock, same group namespace): a group's offsets
/// are kept while either coordinator has members for it, retention counts
/// from the later time it became empty, and empty classic groups are
/// forgotten by the same rule as native ones.
pub fn begin_expire_candidates_with_classic(
    coordinator: &mut Coordinator,
    classic: &mut ClassicCoordinator,
    store: &OffsetStore,
    retention: &OffsetRetention,
    now: ExpiryNow,
    candidates: ExpiryCandidates,
) -> ExpiryPass {
    expire_candidates(
        coordinator,
        Some(classic),
        store,
        retention,
        now,
        candidates,
    )
}

/// The occupancy of a group known to either coordinator.
fn combined_occupancy(a: Occupancy, b: Occupancy) -> Occupancy {
    match (a, b) {
        (Occupancy::Members, _) | (_, Occupancy::Members) => Occupancy::Members,
        (Occupancy::EmptySince(x), Occupancy::EmptySince(y)) => Occupancy::EmptySince(x.max(y)),
        (Occupancy::EmptySince(x), Occupancy::Unknown)
        | (Occupancy::Unknown, Occupancy::EmptySince(x)) => Occupancy::EmptySince(x),
        (Occupancy::Unknown, Occupancy::Unknown) => Occupancy::Unknown,
    }
}

fn expire_candidates(
    coordinator: &mut Coordinator,
    classic: Option<&mut ClassicCoordinator>,
    store: &OffsetStore,
    retention: &OffsetRetention,
    now: ExpiryNow,
    candidates: ExpiryCandidates,
) -> ExpiryPass {
    let mut offsets = 0;
    let mut tickets = Vec::new();
    for (group, rows) in candidates.0 {
        let occupancy = match classic.as_deref() {
            Some(c) => combined_occupancy(coordinator.occupancy(&group), c.occupancy(&group)),
            None => coordinator.occupancy(&group),
        };
        let rows: Vec<(TopicPartition, CommittedOffset)> = rows
            .into_iter()
            .filter(|(_, v)| offset_expired(retention, occupancy, v.commit_timestamp_ms, now))
            .collect();
        if !rows.is_empty() {
            offsets += rows.len();
            tickets.push(store.enqueue(&group, Change::Expire(rows), now.wall_ms));
        }
    }
    let grace = EMPTY_GROUP_GRACE_MS.min(retention.retention_ms);
    let mut forgotten_groups = Vec::new();
    for (group, since) in coordinator.empty_groups() {
        let empty_for = now.coordinator_ms.saturating_sub(since);
        let due =
            empty_for >= retention.retention_ms || (empty_for >= grace && !store.has_group(&group));
        if due && coordinator.delete_group(&group).is_ok() {
            forgotten_groups.push(group);
        }
    }
    if let Some(classic) = classic {
        for (group, since) in classic.empty_groups() {
            let empty_for = now.coordinator_ms.saturating_sub(since);
            let due = empty_for >= retention.retention_ms
                || (empty_for >= grace && !store.has_group(&group));
            if due && classic.delete_group(&group).is_ok() && !forgotten_groups.contains(&group) {
                forgotten_groups.push(group);
            }
        }
    }
    ExpiryPass {
        tickets,
        offsets,
        forgotten_groups,
    }
}

/// Offsets retention, second half (without the coordinator lock; blocking):
/// appends the tombstones and waits for their fsync. Returns how many
/// offsets were deleted (an offset committed again since the pass decided
/// is kept).
pub fn finish_expiry(store: &OffsetStore, pass: ExpiryPass) -> Result<usize, GroupError> {
    let mut deleted = 0;
    let mut first_error = None;
    for ticket in pass.tickets {
        match store.finish_counted(ticket) {
            Ok(n) => deleted += n,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(deleted),
    }
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
