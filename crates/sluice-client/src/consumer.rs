//! The consumer: assigned partitions, seeks, pipelined long-poll fetches.
//!
//! A [`Consumer`] reads the partitions it is assigned, each from its own
//! position. Positions start at [`ConsumerConfig::start`] and move with
//! [`Consumer::seek`] (by offset, timestamp, earliest or latest; positions
//! other than an offset are resolved with ListOffsets before the next fetch).
//!
//! Fetching: one long-poll Fetch per partition leader is in flight at a time.
//! As soon as a response arrives, positions advance past its last whole
//! batch (read from the batch headers only) and the next fetch is sent
//! *before* the response's CRCs are checked and its records decoded, so the
//! broker reads and sends the next response while this one is decoded and
//! handed out (at most two responses are held in memory). A batch that
//! fails its CRC or decode is an error item; the fetch already sent past it
//! is dropped (its partition's epoch moves on) and the batch is fetched
//! again after [`ConsumerConfig::retry_backoff`], so nothing after a bad
//! batch is handed out before it.
//!
//! Records are yielded without copying: `key`, `value` and header values are
//! `Bytes` slices of the fetched frame.
//!
//! Where assignments come from is an [`AssignmentSource`]:
//! [`AssignmentSource::Manual`] (`assign`) or [`AssignmentSource::Group`]
//! (`subscribe`): group membership, whose assignment changes as the group
//! rebalances (see the `group` module for the heartbeat side).
//!
//! # Group consumers: what is committed
//!
//! A subscribed consumer remembers, per partition, the position after the
//! last record `next()` returned ("handed out"). Calling `next()` again (or
//! `commit()`, or `close()`) means the application is done with the records
//! it was handed, so that is when group work happens: revoked partitions are
//! dropped (with their buffered records), their handed positions committed,
//! and only then released to the heartbeat task, whose next heartbeat
//! confirms the revocation. Newly granted partitions start at their
//! committed offset (OffsetFetch) or at [`ConsumerConfig::auto_offset_reset`].
//! Auto-commit (every [`ConsumerConfig::auto_commit_interval`]) also runs
//! inside `next()`, so it never commits a record the application has not
//! finished with. Every async method is cancel-safe: state changes only
//! after the awaited request succeeded, so a dropped `next()` is redone.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use sluice_protocol::batch::{batches, verify_crc, BatchError};
use sluice_protocol::compression::MAX_DECOMPRESSED_BYTES;
use sluice_protocol::{
    ErrorCode, FetchPartition, FetchRequest, FetchResponse, FetchTopic, OffsetCommitPartition,
    OffsetCommitRequest, OffsetCommitTopic, OffsetSpec, Request, Response,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::{committed_offsets, list_offsets, unexpected};
use crate::cluster::Cluster;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::group::{GroupSettings, Membership, OffsetReset, Tp};

/// Where to (re)start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// This offset (clamped to the log's range when out of range, see [`ConsumerConfig::clamp_out_of_range`]).
    Offset(u64),
    /// The first record whose timestamp is at or after this many ms since the epoch
    /// (the log end when there is none).
    Timestamp(i64),
    /// The oldest record still stored.
    Earliest,
    /// The next record to be written (only new records are read).
    Latest,
}

/// Where a consumer's partition assignment comes from.
///
/// The consumer consults its source before every record it hands out.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentSource {
    /// Partitions chosen by the application with [`Consumer::assign`].
    Manual,
    /// Partitions given by the broker to this member of a consumer group ([`Consumer::subscribe`]).
    Group {
        /// The group id.
        group_id: String,
        /// The subscribed topics.
        topics: Vec<String>,
    },
}

/// One consumed record. Key, value and header values share the fetched buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// Timestamp (ms since the epoch).
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value, if any.
    pub value: Option<Bytes>,
    /// Headers in order (a null header value becomes empty bytes).
    pub headers: Vec<(String, Bytes)>,
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Where newly assigned partitions start (default [`SeekTo::Earliest`]).
    pub start: SeekTo,
    /// How long the broker may park a fetch waiting for data (default 500 ms).
    pub fetch_max_wait: Duration,
    /// The broker answers as soon as this many bytes are available (default 1).
    pub fetch_min_bytes: u32,
    /// Upper bound of one fetch response (default 32 MiB).
    pub fetch_max_bytes: u32,
    /// Upper bound per partition in one fetch (default 1 MiB, Kafka's
    /// `max.partition.fetch.bytes`; at least one batch is always returned).
    /// Larger is not faster: the next fetch is sent before a response is
    /// decoded, and a response that fits the CPU cache is checked and
    /// decoded while still in it (catch-up reads on the 2-core test VM:
    /// 1-4 MiB ~2.0-2.3 GB/s, 8 MiB ~1.5-1.9 GB/s).
    pub partition_max_bytes: u32,
    /// Verify each fetched batch's CRC-32C (default true).
    pub check_crcs: bool,
    /// On OFFSET_OUT_OF_RANGE move to the nearest valid offset (log start or end)
    /// instead of yielding an error (default true).
    pub clamp_out_of_range: bool,
    /// Wait before retrying a partition after an error (default 100 ms).
    pub retry_backoff: Duration,
    /// Group consumers: where a partition without a committed offset starts (default earliest).
    pub auto_offset_reset: OffsetReset,
    /// Group consumers: commit handed-out positions every `auto_commit_interval`
    /// and on [`Consumer::close`] (default true).
    pub enable_auto_commit: bool,
    /// Group consumers: how often auto-commit runs (default 5 s).
    pub auto_commit_interval: Duration,
    /// Group consumers: the broker removes the member when no heartbeat arrives
    /// for this long (default 10 s; the broker accepts 500 ms to 300 s).
    pub session_timeout: Duration,
    /// With [`Consumer::assign`]: a group whose committed offsets newly
    /// assigned partitions start from ([`ConsumerConfig::start`] where there
    /// are none) and that [`Consumer::commit`], auto-commit and `close`
    /// write to, as a standalone committer, like a Kafka consumer with a
    /// `group.id` that calls `assign()`. The broker refuses such commits
    /// while the group has members. [`Consumer::subscribe`] names its own
    /// group and ignores this (default none).
    pub group_id: Option<String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            start: SeekTo::Earliest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 32 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            check_crcs: true,
            clamp_out_of_range: true,
            retry_backoff: Duration::from_millis(100),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            group_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    At(u64),
    Pending(SeekTo),
    /// The committed offset of [`ConsumerConfig::group_id`], else this.
    Committed(SeekTo),
}

struct PartitionState {
    topic: Arc<str>,
    partition: u32,
    position: Position,
    /// Bumped by every seek; fetch results for an older epoch are dropped.
    epoch: u64,
    fetching: bool,
    backoff_until: Option<Instant>,
    /// After a seek by timestamp: skip records older than this until the first
    /// one at or after it. The broker's lookup may land on the start of the
    /// batch holding that record (batch granularity), not on the record itself.
    skip_before: Option<i64>,
    /// Position after the last record handed to the application (group commits).
    handed: Option<u64>,
    /// Last offset this consumer committed or found committed (avoids empty commits).
    committed: Option<u64>,
}

impl PartitionState {
    fn new(topic: Arc<str>, partition: u32, position: Position, epoch: u64) -> PartitionState {
        PartitionState {
            topic,
            partition,
            position,
            epoch,
            fetching: false,
            backoff_until: None,
            skip_before: None,
            handed: None,
            committed: None,
        }
    }

    fn tp(&self) -> Tp {
        (self.topic.to_string(), self.partition)
    }

    /// The handed-out position if it is not committed yet.
    fn uncommitted(&self) -> Option<u64> {
        self.handed.filter(|h| Some(*h) != self.committed)
    }
}

/// The partitions a fetch asked for: index into `partitions`, epoch, fetch offset.
type FetchOutcome = (Vec<(usize, u64, u64)>, Result<FetchResponse>);

/// Reads records from assigned partitions.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    source: AssignmentSource,
    partitions: Vec<PartitionState>,
    buffer: VecDeque<Result<ConsumerRecord>>,
    in_flight: FuturesUnordered<JoinHandle<FetchOutcome>>,
    next_epoch: u64,
    /// Group membership after [`Consumer::subscribe`].
    group: Option<Membership>,
    /// The group view changed and has not been fully applied yet.
    group_dirty: bool,
    /// Revoked partitions dropped from fetching, with the handed position still
    /// to commit, waiting to be released (kept across a cancelled `next()`).
    to_release: Vec<(Tp, Option<u64>)>,
    /// The membership epoch the current partitions belong to (see `group::View::epoch`).
    group_epoch: u64,
    next_auto_commit: Option<Instant>,
    /// Standalone committer with auto-commit: handed-out positions of
    /// partitions that `assign()` removed, committed with the next commit.
    unassigned: Vec<(String, u32, u64)>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for handle in self.in_flight.iter() {
            handle.abort();
        }
    }
}

impl Consumer {
    /// A consumer for the broker at `bootstrap` with default settings (no partitions yet).
    pub fn new(bootstrap: impl Into<String>) -> Consumer {
        Consumer::with_config(ClientConfig::new(bootstrap), ConsumerConfig::default())
    }

    /// A consumer with full settings. Does not connect until the first fetch.
    pub fn with_config(client: ClientConfig, config: ConsumerConfig) -> Consumer {
        Consumer {
            cluster: Cluster::new(client),
            config,
            source: AssignmentSource::Manual,
            partitions: Vec::new(),
            buffer: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            next_epoch: 1,
            group: None,
            group_dirty: false,
            to_release: Vec::new(),
            group_epoch: 0,
            next_auto_commit: None,
            unassigned: Vec::new(),
        }
    }

    /// Where this consumer's assignment comes from.
    pub fn assignment_source(&self) -> &AssignmentSource {
        &self.source
    }

    /// Replaces the assignment with these `(topic, partition)` pairs; each starts at
    /// [`ConsumerConfig::start`] (a partition already assigned keeps its position).
    ///
    /// Ignored (with a warning) on a subscribed consumer: the group decides its partitions.
    pub fn assign(&mut self, partitions: Vec<(String, u32)>) {
        if self.group.is_some() {
            tracing::warn!("assign() on a subscribed consumer is ignored");
            return;
        }
        let mut next = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            if next
                .iter()
                .any(|p: &PartitionState| *p.topic == *topic && p.partition == partition)
            {
                continue;
            }
            let existing = self
                .partitions
                .iter()
                .position(|p| *p.topic == *topic && p.partition == partition);
            match existing {
                Some(i) => {
                    let mut p = self.partitions.swap_remove(i);
                    // Results of fetches in flight refer to old indexes: discard them.
                    p.epoch = self.bump_epoch();
                    p.fetching = false;
                    next.push(p);
                }
                None => {
                    let epoch = self.bump_epoch();
                    // Dropped earlier with a position not committed yet: carry
                    // on from it (and commit it with this partition).
                    let pending = self
                        .unassigned
                        .iter()
                        .position(|(t, q, _)| *t == topic && *q == partition)
                        .map(|i| self.unassigned.swap_remove(i).2);
                    let position = match (pending, &self.config.group_id) {
                        (Some(o), _) => Position::At(o),
                        (None, Some(_)) => Position::Committed(self.config.start),
                        (None, None) => Position::Pending(self.config.start),
                    };
                    let mut p =
                        PartitionState::new(Arc::from(topic.as_str()), partition, position, epoch);
                    p.handed = pending;
                    next.push(p)
                }
            }
        }
        // Positions were kept, buffered records of kept partitions are re-fetched from them.
        for p in &mut next {
            if let Some(first) = self.buffer.iter().find_map(|r| match r {
                Ok(r) if *r.topic == *p.topic && r.partition == p.partition => Some(r.offset),
                _ => None,
            }) {
                p.position = Position::At(first);
            }
        }
        self.buffer.clear();
        if self.config.group_id.is_some() && self.config.enable_auto_commit {
            // As Kafka's assign() with auto-commit: what was handed out of the
            // partitions going away is committed, with the next commit.
            for p in &self.partitions {
                if let Some(o) = p.uncommitted() {
                    self.unassigned
                        .retain(|(t, q, _)| !(*t == *p.topic && *q == p.partition));
                    self.unassigned.push((p.topic.to_string(), p.partition, o));
                }
            }
        }
        self.partitions = next;
        if self.config.group_id.is_some() && self.next_auto_commit.is_none() {
            self.next_auto_commit = Some(Instant::now() + self.config.auto_commit_interval);
        }
    }

    /// The current assignment.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.partitions
            .iter()
            .map(|p| (p.topic.to_string(), p.partition))
            .collect()
    }

    /// Moves an assigned partition's position; takes effect on the next record read.
    pub fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<()> {
        let epoch = self.bump_epoch();
        let Some(p) = self
            .partitions
            .iter_mut()
            .find(|p| *p.topic == *topic && p.partition == partition)
        else {
            return Err(ClientError::InvalidArgument(format!(
                "cannot seek \"{topic}\"/{partition}: partition is not assigned"
            )));
        };
        p.position = match to {
            SeekTo::Offset(o) => Position::At(o),
            other => Position::Pending(other),
        };
        p.skip_before = match to {
            SeekTo::Timestamp(t) => Some(t),
            _ => None,
        };
        p.epoch = epoch;
        p.fetching = false;
        p.backoff_until = None;
        self.buffer.retain(|r| match r {
            Ok(r) => !(*r.topic == *topic && r.partition == partition),
            Err(_) => true,
        });
        Ok(())
    }

    /// The offset of the next record this consumer will return for a partition,
    /// if it is known (not waiting on a timestamp/earliest/latest lookup).
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        let buffered = self.buffer.iter().find_map(|r| match r {
            Ok(r) if *r.topic == *topic && r.partition == partition => Some(r.offset),
            _ => None,
        });
        buffered.or_else(|| {
            self.partitions
                .iter()
                .find(|p| *p.topic == *topic && p.partition == partition)
                .and_then(|p| match p.position {
                    Position::At(o) => Some(o),
                    Position::Pending(_) | Position::Committed(_) => None,
                })
        })
    }

    fn bump_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// The next record, waiting for one if needed.
    ///
    /// Returns `None` when nothing is assigned (a subscribed consumer instead
    /// waits for the group to give it partitions). Errors (broker unreachable,
    /// unknown topic, corrupt batch, a lost group session) are yielded as
    /// items; the consumer keeps going after them, retrying the affected
    /// partitions after a backoff.
    ///
    /// For a subscribed consumer, calling `next()` means the records returned
    /// so far are processed: pending revocations and auto-commits happen here.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord>> {
        // A buffered record with no group work due is handed out without
        // the waiting machinery below, whose future is large: boxing it
        // keeps this future small, and the box is paid once per fetch, not
        // once per record.
        if !self.group_work_due() {
            if let Some(r) = self.buffer.pop_front() {
                if let Ok(record) = &r {
                    self.mark_handed(record);
                }
                return Some(r);
            }
        }
        Box::pin(self.next_waiting()).await
    }

    /// Whether [`Consumer::group_work`] has something to do before the next
    /// record is handed out.
    fn group_work_due(&self) -> bool {
        if !self.commits() {
            return false;
        }
        if self.group_dirty || !self.to_release.is_empty() {
            return true;
        }
        if let Some(g) = &self.group {
            if g.has_changed() || g.has_error() {
                return true;
            }
        }
        self.config.enable_auto_commit && self.next_auto_commit.is_some_and(|t| Instant::now() >= t)
    }

    /// [`Consumer::next`] when it may have to wait or do group work.
    async fn next_waiting(&mut self) -> Option<Result<ConsumerRecord>> {
        loop {
            if self.commits() {
                if let Err(e) = self.group_work().await {
                    return Some(Err(e));
                }
            }
            if let Some(r) = self.buffer.pop_front() {
                if let Ok(record) = &r {
                    self.mark_handed(record);
                }
                return Some(r);
            }
            self.poll_assignment();
            if self.partitions.is_empty() {
                // A manual consumer with nothing assigned ends here.
                self.group.as_ref()?;
                // Nothing owned yet (or any more): wait for the group to change.
                self.wait_group_or_commit_time(None).await;
                continue;
            }
            if let Err(e) = self.resolve_positions().await {
                return Some(Err(e));
            }
            self.launch_fetches();
            if self.in_flight.is_empty() {
                // Every partition is backing off after an error (or waiting on a lookup).
                let now = Instant::now();
                let wake = self
                    .partitions
                    .iter()
                    .filter_map(|p| p.backoff_until)
                    .min()
                    .unwrap_or(now + self.config.retry_backoff);
                self.wait_group_or_commit_time(Some(wake.max(now + Duration::from_millis(1))))
                    .await;
                continue;
            }
            let outcome = {
                let auto_commit = self
                    .next_auto_commit
                    .filter(|_| self.config.enable_auto_commit);
                let group = self.group.as_mut();
                let in_flight = &mut self.in_flight;
                tokio::select! {
                    o = in_flight.next() => Some(o),
                    _ = group_changed(group) => None,
                    _ = sleep_until_opt(auto_commit) => None,
                }
            };
            match outcome {
                // `process` sends the next fetches itself, before decoding.
                Some(Some(Ok((asked, result)))) => self.process(asked, result),
                Some(Some(Err(join))) => {
                    // The fetch task was aborted or panicked: retry everything it covered.
                    for p in &mut self.partitions {
                        p.fetching = false;
                    }
                    tracing::warn!(error = %join, "fetch task failed");
                }
                Some(None) | None => {}
            }
            // Pipelining: the next fetch leaves before the application sees these records.
            self.launch_fetches();
        }
    }

    /// Remembers the position after a record handed to the application.
    fn mark_handed(&mut self, record: &ConsumerRecord) {
        if !self.commits() {
            return;
        }
        if let Some(p) = self.partitions.iter_mut().find(|p| {
            p.partition == record.partition
                && (Arc::ptr_eq(&p.topic, &record.topic) || *p.topic == *record.topic)
        }) {
            p.handed = Some(record.offset + 1);
        }
    }

    /// Sleeps until the group view changes, the auto-commit time, or `until`.
    async fn wait_group_or_commit_time(&mut self, until: Option<Instant>) {
        let auto_commit = self
            .next_auto_commit
            .filter(|_| self.config.enable_auto_commit && self.commits());
        let group = self.group.as_mut();
        tokio::select! {
            _ = group_changed(group) => {}
            _ = sleep_until_opt(auto_commit) => {}
            _ = sleep_until_opt(until) => {}
        }
    }

    /// Joins consumer group `group_id` for `topics` and consumes what the
    /// broker assigns to this member, from the group's committed offsets (or
    /// [`ConsumerConfig::auto_offset_reset`] where there are none).
    ///
    /// Returns once the first JoinGroup was answered; heartbeats then run in
    /// a background task. Replaces any manual assignment. Leave with
    /// [`Consumer::close`] (dropping the consumer leaves only by session timeout).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sluice_client::ClientError> {
    /// use sluice_client::{ClientConfig, Consumer, ConsumerConfig};
    /// let config = ConsumerConfig { enable_auto_commit: false, ..ConsumerConfig::default() };
    /// let mut consumer = Consumer::with_config(ClientConfig::new("127.0.0.1:7171"), config);
    /// consumer.subscribe("billing", vec!["orders".into()]).await?;
    /// for _ in 0..100 {
    ///     let Some(record) = consumer.next().await else { break };
    ///     let record = record?;
    ///     println!("{}/{}@{}", record.topic, record.partition, record.offset);
    /// }
    /// consumer.commit().await?; // the positions after the records handed out
    /// consumer.close().await?; // leave: the partitions move to the others at once
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&mut self, group_id: &str, topics: Vec<String>) -> Result<()> {
        if self.group.is_some() {
            return Err(ClientError::InvalidArgument(format!(
                "already subscribed; cannot subscribe again to group \"{group_id}\""
            )));
        }
        if topics.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "subscribe to group \"{group_id}\" needs at least one topic"
            )));
        }
        let settings = GroupSettings {
            group_id: group_id.to_string(),
            topics: topics.clone(),
            session_timeout: self.config.session_timeout,
            retry_backoff: self.config.retry_backoff,
        };
        let membership = Membership::join(self.cluster.clone(), settings).await?;
        for handle in self.in_flight.iter() {
            handle.abort();
        }
        self.in_flight = FuturesUnordered::new();
        self.partitions.clear();
        self.buffer.clear();
        self.group = Some(membership);
        self.group_dirty = true;
        self.source = AssignmentSource::Group {
            group_id: group_id.to_string(),
            topics,
        };
        self.next_auto_commit = Some(Instant::now() + self.config.auto_commit_interval);
        Ok(())
    }

    /// This member's id in its group (`None` when not subscribed or not a member right now).
    pub fn member_id(&self) -> Option<String> {
        self.group
            .as_ref()
            .and_then(|g| g.committer())
            .map(|(m, _)| m)
    }

    /// The group generation this member last heard of (`None` when not a member).
    pub fn generation(&self) -> Option<u32> {
        self.group
            .as_ref()
            .and_then(|g| g.committer())
            .map(|(_, g)| g)
    }

    /// Whether the group changed this member's partitions and the change has
    /// not been applied yet (the next `next()` or `commit()` applies it,
    /// committing revoked partitions). Lets an application flush its output first.
    pub fn rebalance_pending(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.has_changed() || self.group_dirty || !self.to_release.is_empty())
    }

    /// Commits, for every partition this member owns, the position after the
    /// last record `next()` returned. Also applies pending group changes.
    ///
    /// Errors for a consumer that is not subscribed. Fencing errors
    /// (`UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION`, `NOT_PARTITION_OWNER`) mean
    /// the partitions moved on: the consumer stops them and rejoins.
    pub async fn commit(&mut self) -> Result<()> {
        if !self.commits() {
            return Err(ClientError::InvalidArgument(
                "commit() needs a consumer group: call subscribe(), or set ConsumerConfig::group_id and assign()".into(),
            ));
        }
        self.sync_group().await?;
        self.commit_handed().await
    }

    /// Commits (when auto-commit is on) and leaves the group, so its
    /// partitions move to the other members at once. A consumer that is not
    /// subscribed just stops.
    pub async fn close(mut self) -> Result<()> {
        for handle in self.in_flight.iter() {
            handle.abort();
        }
        if self.group.is_none() {
            // A standalone committer commits what it handed out; otherwise nothing to do.
            if self.commits() && self.config.enable_auto_commit {
                return self.commit_handed().await;
            }
            return Ok(());
        }
        let committed = if self.config.enable_auto_commit {
            self.commit_owned().await
        } else {
            Ok(())
        };
        let left = match self.group.as_mut() {
            Some(g) => g.leave().await,
            None => Ok(()),
        };
        committed.and(left)
    }

    /// Group work done when the application is between records.
    async fn group_work(&mut self) -> Result<()> {
        if let Some(e) = self.group.as_ref().and_then(|g| g.take_error()) {
            // Whatever the task stopped is applied on the next call.
            self.group_dirty = true;
            return Err(e);
        }
        self.sync_group().await?;
        if self.config.enable_auto_commit
            && self.next_auto_commit.is_some_and(|t| Instant::now() >= t)
        {
            self.next_auto_commit = Some(Instant::now() + self.config.auto_commit_interval);
            if let Err(e) = self.commit_handed().await {
                tracing::warn!(error = %e, "auto-commit failed");
            }
        }
        Ok(())
    }

    /// Applies the group view: revocations (stop, commit, release), losses
    /// (stop), grants (start from the committed offset). Cancel-safe.
    async fn sync_group(&mut self) -> Result<()> {
        let view = {
            let Some(g) = self.group.as_mut() else {
                return Ok(());
            };
            if g.has_changed() {
                g.mark_seen();
                self.group_dirty = true;
            }
            if !self.group_dirty && self.to_release.is_empty() {
                return Ok(());
            }
            g.view()
        };
        tracing::trace!(assigned = ?view.assigned, revoking = ?view.revoking, epoch = view.epoch, "applying group view");
        if view.epoch != self.group_epoch {
            // The member lost everything since these partitions were started
            // (even if it got them back): drop them, commit nothing, restart
            // every partition from the group's committed offsets.
            for handle in self.in_flight.iter() {
                handle.abort();
            }
            self.in_flight = FuturesUnordered::new();
            self.partitions.clear();
            self.buffer.clear();
            self.to_release.clear();
            self.group_epoch = view.epoch;
        }
        // 1. Stop fetching what is no longer assigned.
        let before = self.partitions.len();
        let mut kept = Vec::with_capacity(before);
        for p in std::mem::take(&mut self.partitions) {
            let tp = p.tp();
            if view.assigned.contains(&tp) {
                kept.push(p);
            } else if view.revoking.contains(&tp) {
                let handed = p.uncommitted();
                self.to_release.push((tp, handed));
            }
        }
        if kept.len() != before {
            // Fetches in flight refer to old indexes: discard their results.
            for p in &mut kept {
                self.next_epoch += 1;
                p.epoch = self.next_epoch;
                p.fetching = false;
            }
            self.buffer.retain(|r| match r {
                Ok(r) => kept
                    .iter()
                    .any(|p| p.partition == r.partition && *p.topic == *r.topic),
                Err(_) => true,
            });
        }
        self.partitions = kept;
        // Revoked partitions this consumer never started: nothing to commit.
        for tp in &view.revoking {
            if !self.to_release.iter().any(|(t, _)| t == tp) {
                self.to_release.push((tp.clone(), None));
            }
        }
        // 2. Commit what was handed out of revoked partitions, then release them.
        self.to_release.retain(|(tp, _)| view.revoking.contains(tp));
        if !self.to_release.is_empty() {
            let offsets: Vec<(String, u32, u64)> = self
                .to_release
                .iter()
                .filter_map(|((t, p), o)| o.map(|o| (t.clone(), *p, o)))
                .collect();
            if !offsets.is_empty() {
                match self.commit_offsets(offsets).await {
                    Ok(()) => {}
                    Err(e) if e.is_retriable() => return Err(e),
                    // Fenced: the partitions moved on anyway; what was not committed is re-read.
                    Err(e) => tracing::warn!(error = %e, "commit of revoked partitions failed"),
                }
            }
            let released: Vec<Tp> = self.to_release.drain(..).map(|(tp, _)| tp).collect();
            tracing::debug!(?released, "released revoked partitions");
            if let Some(g) = &self.group {
                g.release(released);
            }
        }
        // 3. Start newly granted partitions from their committed offsets.
        let current: BTreeSet<Tp> = self.partitions.iter().map(|p| p.tp()).collect();
        let added: Vec<Tp> = view
            .assigned
            .iter()
            .filter(|tp| !current.contains(*tp))
            .cloned()
            .collect();
        if !added.is_empty() {
            let group_id = match &self.group {
                Some(g) => g.settings.group_id.clone(),
                None => return Ok(()),
            };
            let committed = committed_offsets(&self.cluster, &group_id, &added).await?;
            let reset = match self.config.auto_offset_reset {
                OffsetReset::Earliest => SeekTo::Earliest,
                OffsetReset::Latest => SeekTo::Latest,
            };
            for (topic, partition) in added {
                let found = committed.get(&(topic.clone(), partition)).copied();
                let epoch = self.bump_epoch();
                let position = match found {
                    Some(o) => Position::At(o),
                    None => Position::Pending(reset),
                };
                let mut p =
                    PartitionState::new(Arc::from(topic.as_str()), partition, position, epoch);
                p.committed = found;
                tracing::debug!(topic = %topic, partition, committed = ?found, "partition granted");
                self.partitions.push(p);
            }
        }
        self.group_dirty = false;
        Ok(())
    }

    /// Commits the handed-out positions of the partitions being fetched.
    async fn commit_handed(&mut self) -> Result<()> {
        let mut offsets = self.unassigned.clone();
        for p in &self.partitions {
            if let Some(o) = p.uncommitted() {
                offsets.retain(|(t, q, _)| !(*t == *p.topic && *q == p.partition));
                offsets.push((p.topic.to_string(), p.partition, o));
            }
        }
        // Positions of dropped partitions get one attempt, as Kafka's commit
        // on assign(): one that keeps failing (its topic deleted, say) must
        // not block every later commit.
        self.unassigned.clear();
        self.commit_offsets(offsets).await
    }

    /// Commits handed-out positions of everything still owned (for `close`).
    async fn commit_owned(&mut self) -> Result<()> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let mut offsets: Vec<(String, u32, u64)> = Vec::new();
        for p in &self.partitions {
            if let Some(o) = p.uncommitted() {
                if g.owns(&p.tp()) {
                    offsets.push((p.topic.to_string(), p.partition, o));
                }
            }
        }
        for ((t, p), o) in &self.to_release {
            if let Some(o) = o {
                if g.owns(&(t.clone(), *p)) {
                    offsets.push((t.clone(), *p, *o));
                }
            }
        }
        self.commit_offsets(offsets).await
    }

    /// One OffsetCommit as this member; on success remembers the offsets.
    async fn commit_offsets(&mut self, offsets: Vec<(String, u32, u64)>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (group_id, member_id, generation) = match (&self.group, &self.config.group_id) {
            (Some(g), _) => {
                let group_id = g.settings.group_id.clone();
                let Some((member_id, generation)) = g.committer() else {
                    return Err(ClientError::broker(
                        ErrorCode::UnknownMemberId,
                        format!("commit to group \"{group_id}\" (not a member right now)"),
                    ));
                };
                (group_id, member_id, generation)
            }
            // Standalone: no member id; the broker ignores the generation.
            (None, Some(group_id)) => (group_id.clone(), String::new(), 0),
            (None, None) => return Ok(()),
        };
        let mut topics: Vec<OffsetCommitTopic> = Vec::new();
        for (topic, partition, offset) in &offsets {
            let part = OffsetCommitPartition {
                partition: *partition,
                offset: crate::admin::commit_offset(*offset)?,
                metadata: String::new(),
            };
            match topics.iter_mut().find(|t| t.name == *topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(OffsetCommitTopic {
                    name: topic.clone(),
                    partitions: vec![part],
                }),
            }
        }
        tracing::trace!(group = %group_id, ?offsets, generation, "commit");
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group_id: group_id.clone(),
            member_id,
            generation,
            topics,
        });
        let timeout = self.cluster.config().request_timeout;
        let response = match self
            .cluster
            .group_request(&group_id, &request, timeout)
            .await?
        {
            Response::OffsetCommit(r) => r,
            other => return Err(unexpected("OffsetCommit", other)),
        };
        let failed = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p)))
            .find(|(_, p)| p.error != ErrorCode::None);
        if let Some((topic, p)) = failed {
            let code = p.error;
            if matches!(
                code,
                ErrorCode::UnknownMemberId
                    | ErrorCode::IllegalGeneration
                    | ErrorCode::NotPartitionOwner
            ) {
                if let Some(g) = &self.group {
                    g.fenced();
                }
                self.group_dirty = true;
            }
            return Err(ClientError::broker(
                code,
                format!(
                    "commit to group \"{group_id}\" (\"{topic}\"/{})",
                    p.partition
                ),
            ));
        }
        let done: HashMap<(&str, u32), u64> = offsets
            .iter()
            .map(|(t, p, o)| ((t.as_str(), *p), *o))
            .collect();
        for p in &mut self.partitions {
            if let Some(o) = done.get(&(&*p.topic, p.partition)) {
                p.committed = Some(*o);
            }
        }
        Ok(())
    }

    /// Records as a `Stream` borrowing the consumer (boxed, so it is `Unpin`).
    pub fn stream(&mut self) -> BoxStream<'_, Result<ConsumerRecord>> {
        futures::stream::unfold(self, |c| async move { c.next().await.map(|r| (r, c)) }).boxed()
    }

    /// Records as a `Stream` owning the consumer (boxed, so it is `Unpin`).
    pub fn into_stream(self) -> BoxStream<'static, Result<ConsumerRecord>> {
        futures::stream::unfold(self, |mut c| async move { c.next().await.map(|r| (r, c)) }).boxed()
    }

    /// Applies assignment changes from the assignment source.
    fn poll_assignment(&mut self) {
        match self.source {
            // The application owns the assignment; nothing changes behind its back.
            AssignmentSource::Manual => {}
            // Applied (with commits and OffsetFetch, which need awaiting) by `sync_group`.
            AssignmentSource::Group { .. } => {}
        }
    }

    /// Whether this consumer commits offsets: subscribed, or assigned with a
    /// [`ConsumerConfig::group_id`].
    fn commits(&self) -> bool {
        self.group.is_some() || self.config.group_id.is_some()
    }

    /// Turns Committed positions into offsets with one OffsetFetch (standalone
    /// committers), then Earliest/Latest/Timestamp ones with ListOffsets.
    async fn resolve_positions(&mut self) -> Result<()> {
        let now = Instant::now();
        if let Some(group_id) = self.config.group_id.clone() {
            let waiting = |p: &PartitionState| {
                matches!(p.position, Position::Committed(_))
                    && p.backoff_until.is_none_or(|b| b <= now)
            };
            let wanted: Vec<Tp> = self
                .partitions
                .iter()
                .filter(|p| waiting(p))
                .map(|p| p.tp())
                .collect();
            if !wanted.is_empty() {
                match committed_offsets(&self.cluster, &group_id, &wanted).await {
                    Ok(found) => {
                        for p in self.partitions.iter_mut().filter(|p| waiting(p)) {
                            let Position::Committed(fallback) = p.position else {
                                continue;
                            };
                            match found.get(&(p.topic.to_string(), p.partition)) {
                                Some(&o) => {
                                    p.position = Position::At(o);
                                    p.committed = Some(o);
                                }
                                None => p.position = Position::Pending(fallback),
                            }
                        }
                    }
                    Err(e) => {
                        for p in self.partitions.iter_mut().filter(|p| waiting(p)) {
                            p.backoff_until = Some(now + self.config.retry_backoff);
                        }
                        return Err(e);
                    }
                }
            }
        }
        for i in 0..self.partitions.len() {
            let (topic, partition, spec, epoch) = {
                let p = &self.partitions[i];
                let spec = match p.position {
                    Position::At(_) | Position::Committed(_) => continue,
                    Position::Pending(SeekTo::Earliest) => OffsetSpec::Earliest,
                    Position::Pending(SeekTo::Latest) => OffsetSpec::Latest,
                    Position::Pending(SeekTo::Timestamp(t)) => OffsetSpec::Timestamp(t),
                    Position::Pending(SeekTo::Offset(o)) => {
                        self.partitions[i].position = Position::At(o);
                        continue;
                    }
                };
                if p.backoff_until.is_some_and(|b| b > now) {
                    continue;
                }
                (p.topic.clone(), p.partition, spec, p.epoch)
            };
            match list_offsets(&self.cluster, &topic, partition, spec).await {
                Ok(found) => {
                    let p = &mut self.partitions[i];
                    if p.epoch == epoch {
                        p.position = Position::At(found.offset);
                        p.backoff_until = None;
                    }
                }
                Err(e) => {
                    self.partitions[i].backoff_until =
                        Some(Instant::now() + self.config.retry_backoff);
                    // A leader moving (failover, a broker still catching
                    // up after a restart) is waited out, like in fetches.
                    if matches!(
                        e.code(),
                        Some(ErrorCode::NotLeaderForPartition | ErrorCode::LeaderNotAvailable)
                    ) {
                        tracing::debug!(topic = %topic, partition, error = %e, "start offset lookup retried");
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Sends one fetch per leader (more than one when a leader has over
    /// [`MAX_FETCH_PARTITIONS`]) for the partitions that have none in flight.
    fn launch_fetches(&mut self) {
        let now = Instant::now();
        // (node, partitions) groups; one broker today, but routing is per leader.
        let mut groups: Vec<(Option<u32>, Vec<usize>)> = Vec::new();
        for (i, p) in self.partitions.iter().enumerate() {
            if p.fetching || !matches!(p.position, Position::At(_)) {
                continue;
            }
            if p.backoff_until.is_some_and(|b| b > now) {
                continue;
            }
            let node = self
                .cluster
                .cached_route(&p.topic)
                .and_then(|r| r.leaders.get(p.partition as usize).copied());
            add_to_fetch_group(&mut groups, node, i, MAX_FETCH_PARTITIONS);
        }
        for (node, indexes) in groups {
            let mut topics: Vec<FetchTopic> = Vec::new();
            let mut asked = Vec::with_capacity(indexes.len());
            for i in indexes {
                let p = &mut self.partitions[i];
                let Position::At(offset) = p.position else {
                    continue;
                };
                p.fetching = true;
                asked.push((i, p.epoch, offset));
                let fp = FetchPartition {
                    partition: p.partition,
                    fetch_offset: offset,
                    max_bytes: self.config.partition_max_bytes,
                };
                match topics.iter_mut().find(|t| *t.name == *p.topic) {
                    Some(t) => t.partitions.push(fp),
                    None => topics.push(FetchTopic {
                        name: p.topic.to_string(),
                        partitions: vec![fp],
                    }),
                }
            }
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: self.config.fetch_max_wait.as_millis().min(u32::MAX as u128) as u32,
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                topics,
            });
            let cluster = self.cluster.clone();
            let timeout = cluster.config().request_timeout + self.config.fetch_max_wait;
            let handle = tokio::spawn(async move {
                let conn = match node {
                    Some(n) => cluster.node(n),
                    None => {
                        // Learn the leader first (also warms the cache for the next round).
                        let topic = match &request {
                            Request::Fetch(f) => f.topics.first().map(|t| t.name.clone()),
                            _ => None,
                        };
                        if let Some(t) = topic {
                            // Best effort: on failure the fetch below goes to the
                            // bootstrap broker and reports its own error.
                            match cluster.route(&t).await {
                                // Leaders known now: answer "nothing yet" so the
                                // next round sends each partition to its leader.
                                // (Sending this fetch to the bootstrap broker would
                                // get NOT_LEADER where it does not lead, which
                                // forgets the route again: a consumer that started
                                // at an explicit offset, needing no ListOffsets to
                                // learn the leaders, fetched from the wrong broker
                                // for ever.)
                                Ok(Some(_)) => {
                                    return (asked, Ok(FetchResponse { topics: Vec::new() }));
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    tracing::debug!(topic = %t, error = %e, "leader lookup failed");
                                }
                            }
                        }
                        cluster.bootstrap().clone()
                    }
                };
                let result = match conn.request_with_timeout(&request, timeout).await {
                    Ok(Response::Fetch(f)) => Ok(f),
                    Ok(other) => Err(unexpected("Fetch", other)),
                    Err(e) => Err(e),
                };
                (asked, result)
            });
            self.in_flight.push(handle);
        }
    }

    /// Turns a fetch response into buffered records and new positions.
    fn process(&mut self, asked: Vec<(usize, u64, u64)>, result: Result<FetchResponse>) {
        let now = Instant::now();
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let mut any = false;
                for (i, epoch, _) in asked {
                    if let Some(p) = self.partitions.get_mut(i) {
                        if p.epoch == epoch {
                            p.fetching = false;
                            p.backoff_until = Some(now + self.config.retry_backoff);
                            any = true;
                            if e.needs_metadata_refresh() {
                                self.cluster.invalidate(&p.topic);
                            }
                        }
                    }
                }
                if any {
                    self.buffer.push_back(Err(e));
                }
                return;
            }
        };
        let mut decode = Vec::with_capacity(asked.len());
        for (i, epoch, fetch_offset) in asked {
            let Some(p) = self.partitions.get_mut(i) else {
                continue;
            };
            if p.epoch != epoch {
                continue; // seeked or reassigned while the fetch was in flight
            }
            p.fetching = false;
            let data = response
                .topics
                .iter()
                .filter(|t| *t.name == *p.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|d| d.partition == p.partition);
            let Some(data) = data else {
                p.backoff_until = Some(now + self.config.retry_backoff);
                continue;
            };
            match data.error {
                ErrorCode::None => {}
                ErrorCode::OffsetOutOfRange if self.config.clamp_out_of_range => {
                    let to = if fetch_offset < data.log_start_offset {
                        data.log_start_offset
                    } else {
                        data.high_watermark
                    };
                    tracing::debug!(topic = %p.topic, partition = p.partition, from = fetch_offset, to, "offset out of range, moving");
                    if to == fetch_offset {
                        // The broker's range does not explain the error; ask again after a pause.
                        p.position = Position::Pending(SeekTo::Earliest);
                        p.backoff_until = Some(now + self.config.retry_backoff);
                    } else {
                        p.position = Position::At(to);
                    }
                    continue;
                }
                ErrorCode::NotLeaderForPartition | ErrorCode::LeaderNotAvailable => {
                    self.cluster.invalidate(&p.topic);
                    p.backoff_until = Some(now + self.config.retry_backoff);
                    continue;
                }
                code => {
                    if code == ErrorCode::UnknownTopicOrPartition {
                        self.cluster.invalidate(&p.topic);
                    }
                    p.backoff_until = Some(now + self.config.retry_backoff);
                    self.buffer.push_back(Err(ClientError::broker(
                        code,
                        format!("fetch from \"{}\"/{}", p.topic, p.partition),
                    )));
                    continue;
                }
            }
            // Where the next fetch starts: after the last whole batch. Only
            // headers are read here; records are decoded below, after the
            // next fetch has left, so the network and the broker work while
            // this response is checked and decoded.
            let mut end = fetch_offset;
            for batch in batches(&data.records) {
                match batch {
                    Ok(b) => {
                        let last = b.header().last_offset();
                        if last >= 0 && last as u64 >= end {
                            end = last as u64 + 1;
                        }
                    }
                    Err(BatchError::Truncated { .. }) => break,
                    Err(_) => {
                        // Reported by the decode below; retried after a pause.
                        p.backoff_until = Some(now + self.config.retry_backoff);
                        break;
                    }
                }
            }
            p.position = Position::At(end);
            decode.push((i, fetch_offset, data.records.clone()));
        }
        self.launch_fetches();
        for (i, fetch_offset, records) in decode {
            self.decode(i, fetch_offset, &records, now);
        }
    }

    /// Buffers the records of `records` (a fetch answer for partition `i`
    /// from `fetch_offset`). On a bad batch, buffers an error, moves the
    /// partition back to that batch and drops the fetch already sent past it.
    fn decode(&mut self, i: usize, fetch_offset: u64, records: &Bytes, now: Instant) {
        let next_epoch = self.next_epoch + 1;
        let Some(p) = self.partitions.get_mut(i) else {
            return;
        };
        let mut position = fetch_offset;
        let check = self.config.check_crcs;
        let mut failed_at = None;
        for batch in batches(records) {
            let batch = match batch {
                Ok(b) => b,
                // A partial batch at the end of a response is not an error (Kafka sends them).
                Err(BatchError::Truncated { .. }) => break,
                Err(source) => {
                    failed_at = Some(source);
                    break;
                }
            };
            let header = *batch.header();
            let last = header.last_offset();
            if last < 0 || (last as u64) < position {
                continue;
            }
            // The CRC covers the bytes as stored; compressed records are
            // then read from a decompressed copy (bounded).
            let crc = if check {
                verify_crc(batch.as_bytes())
            } else {
                Ok(())
            };
            let batch = match crc.and_then(|()| batch.decompress(MAX_DECOMPRESSED_BYTES)) {
                Ok(b) => b,
                Err(source) => {
                    failed_at = Some(source);
                    break;
                }
            };
            let buf = batch.as_bytes();
            let mut failed = None;
            // Records of this batch go to the buffer only once all of them decoded.
            let before = self.buffer.len();
            for record in batch.records() {
                let record = match record {
                    Ok(r) => r,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                if record.offset < 0 || (record.offset as u64) < position {
                    continue;
                }
                if let Some(ts) = p.skip_before {
                    if record.timestamp < ts {
                        continue;
                    }
                    p.skip_before = None;
                }
                let mut headers = Vec::new();
                for h in record.headers() {
                    match h {
                        Ok((k, v)) => headers.push((
                            k.to_string(),
                            v.map(|v| sub_bytes(buf, v)).unwrap_or_default(),
                        )),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if failed.is_some() {
                    break;
                }
                self.buffer.push_back(Ok(ConsumerRecord {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset: record.offset as u64,
                    timestamp: record.timestamp,
                    key: record.key.map(|k| sub_bytes(buf, k)),
                    value: record.value.map(|v| sub_bytes(buf, v)),
                    headers,
                }));
            }
            if let Some(source) = failed {
                self.buffer.truncate(before);
                failed_at = Some(source);
                break;
            }
            position = last as u64 + 1;
        }
        if let Some(source) = failed_at {
            self.buffer.push_back(Err(ClientError::InvalidBatch {
                topic: p.topic.to_string(),
                partition: p.partition,
                source,
            }));
            if p.position != Position::At(position) {
                // The next fetch already left from past the bad batch: drop
                // its answer and fetch this batch again after a pause.
                self.next_epoch = next_epoch;
                p.epoch = next_epoch;
                p.fetching = false;
                p.position = Position::At(position);
            }
            p.backoff_until = Some(now + self.config.retry_backoff);
        }
    }
}

/// Waits for a group view change; forever when there is no group.
async fn group_changed(group: Option<&mut Membership>) {
    match group {
        Some(g) => g.changed().await,
        None => futures::future::pending().await,
    }
}

/// Sleeps until `at`; forever when `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}

/// `slice` as a `Bytes` sharing `parent`'s buffer (no copy); copies only if
/// `slice` does not lie inside `parent`, which the batch parser never does.
fn sub_bytes(parent: &Bytes, slice: &[u8]) -> Bytes {
    let start = parent.as_ptr() as usize;
    let s = slice.as_ptr() as usize;
    if slice.is_empty() {
        return Bytes::new();
    }
    if s >= start && s + slice.len() <= start + parent.len() {
        parent.slice_ref(slice)
    } else {
        Bytes::copy_from_slice(slice)
    }
}

#[cfg(test)]
mod group_tests {
    //! A subscribed consumer against a scripted fake broker: start positions
    //! from OffsetFetch / auto_offset_reset, and a revocation that is
    //! committed before it is confirmed.

    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use bytes::BytesMut;
    use sluice_protocol::batch::RecordBatchBuilder;
    use sluice_protocol::codec::FrameCodec;
    use sluice_protocol::wire::{decode_request, encode_response};
    use sluice_protocol::{
        BrokerInfo, FetchPartitionResponse, FetchTopicResponse, HeartbeatResponse,
        JoinGroupResponse, LeaveGroupResponse, ListOffsetsPartitionResponse, ListOffsetsResponse,
        ListOffsetsTopicResponse, MetadataResponse, OffsetCommitPartitionResponse,
        OffsetCommitResponse, OffsetCommitTopicResponse, OffsetFetchPartitionResponse,
        OffsetFetchResponse, OffsetFetchTopicResponse, PartitionMetadata, TopicMetadata,
        TopicPartitions,
    };
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::FramedRead;

    struct Fake {
        events: Mutex<Vec<String>>,
        revoke: AtomicBool,
        /// Heartbeats get no answer (a broker that stopped responding).
        hang: AtomicBool,
        /// The next heartbeat gets UNKNOWN_MEMBER_ID (the member was removed).
        evict: AtomicBool,
        /// Fetches answer offsets 0-3 with a good batch and 4-7 with one
        /// whose CRC does not match.
        corrupt: AtomicBool,
        /// Every fetch offset asked for, in order.
        fetches: Mutex<Vec<u64>>,
    }

    fn fake() -> Arc<Fake> {
        Arc::new(Fake {
            events: Mutex::new(Vec::new()),
            revoke: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            evict: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
            fetches: Mutex::new(Vec::new()),
        })
    }

    /// Offsets 0-3 in a good batch, then 4-7 in a batch with a bad CRC.
    fn good_then_corrupt(from: u64) -> Bytes {
        let mut b = RecordBatchBuilder::new();
        for i in 0..4 {
            b.push(1_000 + i, None, Some(format!("v{i}").as_bytes()), &[]);
        }
        let good = b.finish();
        let mut b = RecordBatchBuilder::new();
        for i in 4..8 {
            b.push(1_000 + i, None, Some(format!("v{i}").as_bytes()), &[]);
        }
        let mut bad = b.finish().to_vec();
        sluice_protocol::batch::set_base_offset(&mut bad, 4);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut out = Vec::new();
        if from < 4 {
            out.extend_from_slice(&good);
        }
        if from < 8 {
            out.extend_from_slice(&bad);
        }
        Bytes::from(out)
    }

    fn batch(n: i64) -> Bytes {
        let mut b = RecordBatchBuilder::new();
        for i in 0..n {
            b.push(1_000 + i, None, Some(format!("v{i}").as_bytes()), &[]);
        }
        b.finish()
    }

    fn answer(fake: &Fake, request: Request) -> Response {
        let log = |e: String| fake.events.lock().unwrap().push(e);
        match request {
            // An older broker: version 0 of everything (so Metadata goes as
            // v0), without FindCoordinator (so it coordinates every group).
            Request::ApiVersions => Response::ApiVersions(sluice_protocol::ApiVersionsResponse {
                apis: sluice_protocol::ApiKey::ALL
                    .iter()
                    .filter(|k| **k != sluice_protocol::ApiKey::FindCoordinator)
                    .map(|k| sluice_protocol::ApiVersionRange {
                        api_key: *k as u16,
                        min_version: 0,
                        max_version: 0,
                    })
                    .collect(),
            }),
            Request::Metadata(_) => Response::Metadata(MetadataResponse {
                brokers: vec![BrokerInfo {
                    node_id: 0,
                    host: String::new(),
                    port: 0,
                    rack: None,
                }],
                controller_id: sluice_protocol::NO_CONTROLLER,
                cluster_id: String::new(),
                topics: vec![TopicMetadata {
                    error: ErrorCode::None,
                    name: "t".into(),
                    partitions: (0..2)
                        .map(|p| PartitionMetadata {
                            partition: p,
                            error: ErrorCode::None,
                            leader: 0,
                            start_offset: 0,
                            end_offset: 8,
                            size_bytes: 100,
                            leader_epoch: 0,
                            replicas: Vec::new(),
                            isr: Vec::new(),
                        })
                        .collect(),
                    configs: Vec::new(),
                }],
            }),
            Request::JoinGroup(j) => {
                log(format!("join {}", j.topics.join(",")));
                Response::JoinGroup(JoinGroupResponse {
                    error: ErrorCode::None,
                    member_id: "m-1".into(),
                    generation: 1,
                    heartbeat_interval_ms: 50,
                    assignment: TopicPartitions::from_pairs([("t", 0), ("t", 1)]),
                    revoke: Vec::new(),
                })
            }
            Request::Heartbeat(h) => {
                let owned: Vec<u32> = TopicPartitions::pairs(&h.owned).map(|(_, p)| p).collect();
                log(format!("hb owned={owned:?}"));
                if fake.evict.swap(false, Ordering::SeqCst) {
                    return Response::Heartbeat(HeartbeatResponse {
                        error: ErrorCode::UnknownMemberId,
                        generation: 0,
                        heartbeat_interval_ms: 0,
                        assignment: Vec::new(),
                        revoke: Vec::new(),
                    });
                }
                let revoking = fake.revoke.load(Ordering::SeqCst);
                Response::Heartbeat(HeartbeatResponse {
                    error: ErrorCode::None,
                    generation: if revoking { 2 } else { 1 },
                    heartbeat_interval_ms: 50,
                    assignment: if revoking {
                        TopicPartitions::from_pairs([("t", 0)])
                    } else {
                        TopicPartitions::from_pairs([("t", 0), ("t", 1)])
                    },
                    revoke: if revoking && owned.contains(&1) {
                        TopicPartitions::from_pairs([("t", 1)])
                    } else {
                        Vec::new()
                    },
                })
            }
            Request::OffsetFetch(f) => Response::OffsetFetch(OffsetFetchResponse {
                error: ErrorCode::None,
                topics: f
                    .topics
                    .iter()
                    .map(|t| OffsetFetchTopicResponse {
                        name: t.topic.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| OffsetFetchPartitionResponse {
                                partition: *p,
                                error: ErrorCode::None,
                                offset: if *p == 0 { 5 } else { -1 },
                                metadata: String::new(),
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            Request::ListOffsets(l) => Response::ListOffsets(ListOffsetsResponse {
                topics: l
                    .topics
                    .iter()
                    .map(|t| ListOffsetsTopicResponse {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| ListOffsetsPartitionResponse {
                                partition: p.partition,
                                error: ErrorCode::None,
                                offset: 0,
                                timestamp: -1,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            Request::Fetch(f) => Response::Fetch(FetchResponse {
                topics: f
                    .topics
                    .iter()
                    .map(|t| FetchTopicResponse {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| FetchPartitionResponse {
                                partition: p.partition,
                                error: ErrorCode::None,
                                high_watermark: 8,
                                log_start_offset: 0,
                                records: if fake.corrupt.load(Ordering::SeqCst) {
                                    fake.fetches.lock().unwrap().push(p.fetch_offset);
                                    good_then_corrupt(p.fetch_offset)
                                } else if p.fetch_offset < 8 {
                                    batch(8)
                                } else {
                                    Bytes::new()
                                },
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            Request::OffsetCommit(c) => {
                for t in &c.topics {
                    for p in &t.partitions {
                        log(format!(
                            "commit {}/{}@{} gen {}",
                            t.name, p.partition, p.offset, c.generation
                        ));
                    }
                }
                Response::OffsetCommit(OffsetCommitResponse {
                    topics: c
                        .topics
                        .iter()
                        .map(|t| OffsetCommitTopicResponse {
                            name: t.name.clone(),
                            partitions: t
                                .partitions
                                .iter()
                                .map(|p| OffsetCommitPartitionResponse {
                                    partition: p.partition,
                                    error: ErrorCode::None,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }
            Request::LeaveGroup(l) => {
                log(format!("leave {}", l.member_id));
                Response::LeaveGroup(LeaveGroupResponse {
                    error: ErrorCode::None,
                })
            }
            other => panic!("fake broker got {other:?}"),
        }
    }

    /// Serves one connection; fetches and heartbeats with nothing new are parked briefly.
    async fn serve(listener: TcpListener, fake: Arc<Fake>) {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, Response)>();
        tokio::spawn(async move {
            while let Some((id, r)) = rx.recv().await {
                let mut buf = BytesMut::new();
                encode_response(id, &r, &mut buf);
                if write.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
        while let Some(Ok(payload)) = frames.next().await {
            let Ok((header, request)) = decode_request(payload) else {
                return;
            };
            let fake = fake.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let park = match &request {
                    Request::Fetch(f) => f
                        .topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .all(|p| p.fetch_offset >= 8),
                    Request::Heartbeat(h) => {
                        h.max_wait_ms > 0 && !fake.revoke.load(Ordering::SeqCst)
                    }
                    _ => false,
                };
                if park {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if matches!(request, Request::Heartbeat(_)) && fake.hang.load(Ordering::SeqCst) {
                    return; // never answered
                }
                let _ = tx.send((header.correlation_id, answer(&fake, request)));
            });
        }
    }

    #[tokio::test]
    async fn a_corrupt_batch_is_an_error_and_is_fetched_again_even_with_the_next_fetch_already_sent(
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fake = fake();
        fake.corrupt.store(true, Ordering::SeqCst);
        tokio::spawn(serve(listener, fake.clone()));
        let mut c = Consumer::with_config(
            ClientConfig::new(addr),
            ConsumerConfig {
                fetch_max_wait: Duration::from_millis(50),
                retry_backoff: Duration::from_millis(20),
                ..ConsumerConfig::default()
            },
        );
        c.assign(vec![("t".into(), 0)]);
        for want in 0..4 {
            let r = c.next().await.expect("item").expect("good record");
            assert_eq!(r.offset, want);
        }
        // The bad batch: an error, then (after the backoff) the same batch
        // is fetched again and fails again; nothing past it is ever handed out.
        for _ in 0..2 {
            match c.next().await.expect("item") {
                Err(ClientError::InvalidBatch { partition: 0, .. }) => {}
                other => panic!("expected InvalidBatch, got {other:?}"),
            }
        }
        assert_eq!(c.position("t", 0), Some(4));
        let fetches = fake.fetches.lock().unwrap().clone();
        // The first answer's headers end at 8, so the next fetch left from 8
        // before the CRC check; its answer was dropped and 4 fetched again.
        assert_eq!(fetches[..2], [0, 8], "{fetches:?}");
        assert!(fetches[2..].contains(&4), "{fetches:?}");
    }

    #[tokio::test]
    async fn subscribed_consumer_starts_at_committed_offsets_and_commits_a_revocation_before_confirming_it(
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fake = fake();
        tokio::spawn(serve(listener, fake.clone()));
        let mut c = Consumer::with_config(
            ClientConfig::new(addr),
            ConsumerConfig {
                enable_auto_commit: false,
                session_timeout: Duration::from_secs(3),
                fetch_max_wait: Duration::from_millis(50),
                ..ConsumerConfig::default()
            },
        );
        c.subscribe("g", vec!["t".into()]).await.expect("subscribe");
        assert_eq!(c.member_id().as_deref(), Some("m-1"));
        assert!(
            matches!(c.assignment_source(), AssignmentSource::Group { group_id, .. } if group_id == "g")
        );

        // Both partitions, from the committed offset (t/0: 5) and from earliest (t/1: none).
        let mut first: HashMap<u32, u64> = HashMap::new();
        let mut last_t1 = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while first.len() < 2 || last_t1.is_none_or(|o| o < 3) {
            assert!(Instant::now() < deadline, "records from both partitions");
            let r = c.next().await.expect("record").expect("ok");
            first.entry(r.partition).or_insert(r.offset);
            if r.partition == 1 {
                last_t1 = Some(r.offset);
            }
        }
        assert_eq!(first.get(&0), Some(&5));
        assert_eq!(first.get(&1), Some(&0));

        // The broker moves t/1 away: the consumer stops it, commits what it
        // handed out of it, and only then confirms.
        fake.revoke.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(
                Instant::now() < deadline,
                "revocation never confirmed: {:?}",
                fake.events.lock().unwrap()
            );
            if fake
                .events
                .lock()
                .unwrap()
                .iter()
                .any(|e| e == "hb owned=[0]")
            {
                break;
            }
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(20), c.next()).await {
                let r = r.expect("ok");
                if r.partition == 1 {
                    last_t1 = Some(r.offset);
                }
            }
        }
        let events = fake.events.lock().unwrap().clone();
        let commit = events
            .iter()
            .position(|e| e.starts_with("commit t/1@"))
            .expect("revoked partition committed");
        let confirm = events
            .iter()
            .position(|e| e == "hb owned=[0]")
            .expect("confirmed");
        assert!(commit < confirm, "{events:?}");
        let expected = format!("commit t/1@{} gen 2", last_t1.expect("t/1 read") + 1);
        assert_eq!(events[commit], expected, "{events:?}");
        assert_eq!(c.assignment(), vec![("t".to_string(), 0)]);
        // No record of t/1 is handed out any more.
        for _ in 0..5 {
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(20), c.next()).await {
                assert_eq!(r.expect("ok").partition, 0);
            }
        }

        // Manual commit mode: close leaves without committing.
        let before = fake.events.lock().unwrap().len();
        c.close().await.expect("close");
        let events = fake.events.lock().unwrap().clone();
        let after: Vec<&String> = events[before..]
            .iter()
            .filter(|e| !e.starts_with("hb"))
            .collect();
        assert_eq!(after, vec!["leave m-1"], "{events:?}");
    }

    async fn subscribed(fake: &Arc<Fake>, session: Duration) -> Consumer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, fake.clone()));
        let mut client = ClientConfig::new(addr);
        client.request_timeout = Duration::from_secs(2);
        let mut c = Consumer::with_config(
            client,
            ConsumerConfig {
                enable_auto_commit: false,
                session_timeout: session,
                fetch_max_wait: Duration::from_millis(50),
                ..ConsumerConfig::default()
            },
        );
        c.subscribe("g", vec!["t".into()]).await.expect("subscribe");
        c
    }

    #[tokio::test]
    async fn without_a_successful_heartbeat_for_a_session_the_consumer_stops_on_its_own() {
        let fake = fake();
        let session = Duration::from_millis(900);
        let mut c = subscribed(&fake, session).await;
        let r = c.next().await.expect("record").expect("ok");
        assert!(r.partition < 2);
        fake.hang.store(true, Ordering::SeqCst);
        let hung_at = Instant::now();
        let deadline = hung_at + Duration::from_secs(5);
        let err = loop {
            assert!(
                Instant::now() < deadline,
                "consumer never noticed the lost session"
            );
            match tokio::time::timeout(Duration::from_millis(50), c.next()).await {
                Ok(Some(Err(e))) => break e,
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(None) => panic!("group consumer ended"),
            }
        };
        assert!(
            matches!(err, ClientError::Timeout { .. }) && err.is_retriable(),
            "{err:?}"
        );
        // It stopped itself within about one session of the last good heartbeat.
        assert!(
            hung_at.elapsed() < session + Duration::from_millis(500),
            "{:?}",
            hung_at.elapsed()
        );
        // Nothing is consumed any more (the broker may have given the partitions away).
        assert!(tokio::time::timeout(Duration::from_millis(200), c.next())
            .await
            .is_err());
        assert!(c.assignment().is_empty());
    }

    #[tokio::test]
    async fn an_evicted_member_rejoins_and_resumes_from_the_committed_offsets() {
        let fake = fake();
        let mut c = subscribed(&fake, Duration::from_secs(3)).await;
        // Read past the start of both partitions (t/0 from its commit at 5, t/1 from 0).
        let mut last: HashMap<u32, u64> = HashMap::new();
        while last.get(&0).is_none_or(|o| *o < 6) || last.get(&1).is_none_or(|o| *o < 1) {
            let r = c.next().await.expect("record").expect("ok");
            last.insert(r.partition, r.offset);
        }
        fake.evict.store(true, Ordering::SeqCst);
        // After the rejoin each partition starts again from the committed
        // offset (nothing was committed since): t/0@5 and t/1@0 come again.
        let mut again: BTreeSet<(u32, u64)> = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(again.contains(&(0, 5)) && again.contains(&(1, 0))) {
            assert!(
                Instant::now() < deadline,
                "no restart: {:?}",
                fake.events.lock().unwrap()
            );
            if let Ok(Some(Ok(r))) = tokio::time::timeout(Duration::from_millis(50), c.next()).await
            {
                again.insert((r.partition, r.offset));
            }
        }
        let joins = fake
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("join"))
            .count();
        assert_eq!(joins, 2);
        assert_eq!(c.member_id().as_deref(), Some("m-1"));
    }

    #[tokio::test]
    async fn auto_commit_commits_only_handed_out_positions_and_close_commits_and_leaves() {
        let fake = fake();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, fake.clone()));
        let mut c = Consumer::with_config(
            ClientConfig::new(addr),
            ConsumerConfig {
                enable_auto_commit: true,
                auto_commit_interval: Duration::from_millis(100),
                session_timeout: Duration::from_secs(3),
                fetch_max_wait: Duration::from_millis(50),
                ..ConsumerConfig::default()
            },
        );
        c.subscribe("g", vec!["t".into()]).await.expect("subscribe");
        // Hand out exactly t/0@5 and t/0@6 (from the committed offset 5), then stop asking.
        let mut handed: HashMap<u32, u64> = HashMap::new();
        while handed.get(&0).is_none_or(|o| *o < 6) {
            let r = c.next().await.expect("record").expect("ok");
            handed.insert(r.partition, r.offset);
        }
        let commits = |f: &Fake| -> Vec<String> {
            f.events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.starts_with("commit"))
                .cloned()
                .collect()
        };
        // Not asking for more records means the last ones may still be in
        // processing: no auto-commit happens behind the application's back.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(commits(&fake).is_empty(), "{:?}", commits(&fake));
        // The next call to next() after the interval commits what was handed out before it.
        let _ = tokio::time::timeout(Duration::from_millis(50), c.next()).await;
        let first = commits(&fake);
        assert!(
            first.contains(&"commit t/0@7 gen 1".to_string()),
            "{first:?}"
        );
        if let Some(o) = handed.get(&1) {
            assert!(
                first.contains(&format!("commit t/1@{} gen 1", o + 1)),
                "{first:?}"
            );
        }
        c.close().await.expect("close");
        let events = fake.events.lock().unwrap().clone();
        assert_eq!(
            events.last().map(String::as_str),
            Some("leave m-1"),
            "{events:?}"
        );
    }
}

/// Most partitions one fetch request lists: the broker's default per-request
/// entry cap (`max_request_partitions`); more go in further requests.
pub const MAX_FETCH_PARTITIONS: usize = sluice_protocol::DEFAULT_MAX_REQUEST_PARTITIONS;

/// Adds partition index `i` to a fetch group of `node` that has room below
/// `cap`, or starts a new group for it.
fn add_to_fetch_group(
    groups: &mut Vec<(Option<u32>, Vec<usize>)>,
    node: Option<u32>,
    i: usize,
    cap: usize,
) {
    match groups
        .iter_mut()
        .find(|(n, list)| *n == node && list.len() < cap.max(1))
    {
        Some((_, list)) => list.push(i),
        None => groups.push((node, vec![i])),
    }
}

#[cfg(test)]
mod fetch_group_tests {
    use super::*;

    #[test]
    fn fetch_groups_split_at_the_request_cap() {
        let mut groups = Vec::new();
        for i in 0..25 {
            add_to_fetch_group(&mut groups, Some(i as u32 % 2), i, 5);
        }
        add_to_fetch_group(&mut groups, None, 99, 5);
        // 13 partitions on node 0 and 12 on node 1, in groups of at most 5.
        let sizes: Vec<(Option<u32>, usize)> = groups.iter().map(|(n, l)| (*n, l.len())).collect();
        assert_eq!(
            sizes,
            vec![
                (Some(0), 5),
                (Some(1), 5),
                (Some(0), 5),
                (Some(1), 5),
                (Some(0), 3),
                (Some(1), 2),
                (None, 1)
            ]
        );
        let all: std::collections::BTreeSet<usize> =
            groups.iter().flat_map(|(_, l)| l.iter().copied()).collect();
        assert_eq!(all.len(), 26);
    }
}
