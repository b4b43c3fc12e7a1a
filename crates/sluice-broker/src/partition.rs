//! One partition: its log, the high-watermark watch that wakes parked
//! fetches, and the group-commit flusher that durable produces wait on.
//!
//! The high watermark is the end of what consumers may read. On a topic with
//! `flush = always` it is the log's durable offset (everything below it was
//! fsynced): a consumer never reads, commits past, and then loses a record
//! that a power cut takes back. With the other policies it is the log end
//! offset, as documented in `protocol.md`. It only moves forward, at batch
//! boundaries; replication will later move it by a quorum instead. A topic
//! config change switches the rule at once ([`Partition::set_flush`]):
//! leaving `always` moves the high watermark up to the log end; entering it
//! keeps what is visible visible, and later records show once fsynced.
//!
//! Why a watch and not a `Notify`: a fetch subscribes *before* it reads, so
//! an append that lands between its read and its wait still wakes it (the
//! receiver sees a value it has not marked seen). There is no polling.
//!
//! Why a flush loop: many produce requests waiting for the same fsync must
//! not each hold a blocking thread, and the next fsync must start the moment
//! the previous one ends while anyone waits. A waiter raises the partition's
//! requested offset, starts the loop if it is not running, and waits on a
//! watch of the durable offset. The loop runs on one blocking-pool thread:
//! it fdatasyncs everything appended when each fsync starts (one
//! `Log::wait_durable`), publishes the durable offset (waking every waiter
//! it covers), and starts the next fsync at once while any waiter needs
//! more; it exits when none does. So every fsync is shared by all waiters
//! whose data was written before it started, and no waiter waits for more
//! than one fsync after the one in flight when its data was written. No
//! channel message, reply channel or task is created per waiter.
//!
//! Idempotent produce: batches with a producer id are checked against the
//! partition's [`ProducerStates`] (see [`crate::producer_state`]) and appended
//! while holding the `producers` mutex, so the sequence check, the append and
//! the state update are one step and concurrent connections cannot interleave
//! between them. Batches without a producer id take the plain path (the log's
//! own writer lock orders them). On open, the state is rebuilt from the batch
//! headers of the log's tail (the last [`REBUILD_RECORDS`] offsets, at most
//! [`REBUILD_BYTES`]; small so that opening many partitions stays fast, and
//! `Log::read` checks the CRCs of what it reads from sealed segments), so a
//! restart forgets only producers idle for longer than that tail.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::Histogram;
use sluice_log::{AppendInfo, FlushPolicy, Log, LogError};
use sluice_protocol::batch::{self, BatchError, BatchHeader};
use sluice_protocol::compression::MAX_DECOMPRESSED_BYTES;
use tokio::sync::watch;

use crate::error::BrokerError;
use crate::metrics::{PartitionMetrics, TopicMetrics};
use crate::producer_state::{BatchSeq, ProducerStates, Verdict};
use crate::replica::{self, EpochHistory, FetchCheck, FollowerProgress, LeaderState, Role};
use crate::topic_meta::TopicConfig;

/// How many offsets back from the end the producer state is rebuilt from on open.
pub const REBUILD_RECORDS: u64 = 10_000;
/// At most this many bytes of the log's tail are read to rebuild the producer state.
pub const REBUILD_BYTES: usize = 4 * 1024 * 1024;

/// What a partition's flush loop publishes after every fsync.
#[derive(Debug, Clone, Default)]
struct DurableState {
    /// Everything below this offset is fsynced.
    durable: u64,
    /// The fsync that failed (the log is poisoned until reopened).
    failed: Option<Arc<LogError>>,
}

/// Group commit: shared by a partition's durable waiters and its flush loop.
struct GroupCommit {
    /// The highest offset a waiter needs durable.
    requested: AtomicU64,
    /// A flush loop is running on the blocking pool.
    running: AtomicBool,
    /// Published after every fsync; waiters wait on it.
    state: watch::Sender<DurableState>,
}

/// Replication state shared with the flush loop (see [`crate::replica`]).
struct Repl {
    /// Reads stop at the durable offset (`flush = always`), not the log end.
    durable_reads: AtomicBool,
    /// The role is not [`Role::Solo`].
    replicated: AtomicBool,
    /// Held for reading across a client or replica append, so a role
    /// change waits for the appends in flight and none follows it.
    role: RwLock<Role>,
    /// Bumped at every role or epoch change.
    generation: AtomicU64,
    /// `(durable high watermark, generation)`: durable produces on a
    /// leader wait for it to pass their records within their generation.
    durable_hw: watch::Sender<(u64, u64)>,
}

fn read_role(r: &RwLock<Role>) -> RwLockReadGuard<'_, Role> {
    r.read().unwrap_or_else(|p| p.into_inner())
}

impl Repl {
    /// Moves the high watermarks of a leader (`role`) to what its ISR holds.
    fn recompute(&self, role: &Role, hw: &watch::Sender<u64>, log: &Log) {
        let Role::Leader(l) = role else {
            return;
        };
        let durable_reads = self.durable_reads.load(Ordering::SeqCst);
        let (visible, durable) =
            replica::high_watermarks(l, log.end_offset(), log.durable_offset(), durable_reads);
        advance(hw, visible);
        let g = self.generation.load(Ordering::SeqCst);
        self.durable_hw.send_if_modified(|(o, gen)| {
            if *gen == g && durable > *o {
                *o = durable;
                true
            } else {
                false
            }
        });
    }

    /// After an fsync or a flush-policy change: the high watermark as the role says.
    fn publish(&self, hw: &watch::Sender<u64>, log: &Log) {
        if self.replicated.load(Ordering::SeqCst) {
            let role = read_role(&self.role);
            self.recompute(&role, hw, log);
        } else {
            advance(hw, log.durable_offset().min(log.end_offset()));
        }
    }
}

/// A leader's answer to one partition of a follower's ReplicaFetch.
#[derive(Debug, Clone)]
pub struct ReplicaAnswer {
    /// Outcome.
    pub error: sluice_protocol::ErrorCode,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log start.
    pub log_start_offset: u64,
    /// `(epoch, end offset)` when the follower must truncate first.
    pub diverging: Option<(u32, u64)>,
    /// Batches from the fetch offset.
    pub records: Bytes,
}

impl ReplicaAnswer {
    fn error(error: sluice_protocol::ErrorCode) -> ReplicaAnswer {
        ReplicaAnswer {
            error,
            high_watermark: 0,
            log_start_offset: 0,
            diverging: None,
            records: Bytes::new(),
        }
    }
}

/// A partition of a topic: shared by handlers, fetch waiters and housekeeping.
pub struct Partition {
    topic: Arc<str>,
    index: u32,
    log: Arc<Log>,
    /// Role, read rule and the durable high watermark.
    repl: Arc<Repl>,
    /// Leader-epoch history (`leader-epoch-checkpoint`); locked after `repl.role`.
    epochs: Mutex<EpochHistory>,
    /// The log end offset; parked replica fetches wait on it.
    end_tx: watch::Sender<u64>,
    /// The high watermark; parked fetches wait on it.
    hw_tx: Arc<watch::Sender<u64>>,
    group_commit: Arc<GroupCommit>,
    topic_metrics: TopicMetrics,
    metrics: PartitionMetrics,
    fsync_duration: Histogram,
    /// Idempotent-producer state; held across check + append + update.
    producers: Mutex<ProducerStates>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}/{})", self.topic, self.index)
    }
}

impl Partition {
    /// A partition over its opened (and recovered) log.
    pub fn from_log(
        log: Log,
        topic: Arc<str>,
        index: u32,
        topic_metrics: TopicMetrics,
        metrics: PartitionMetrics,
        fsync_duration: Histogram,
    ) -> Partition {
        let end = log.end_offset();
        metrics.end_offset.set(end as i64);
        metrics.start_offset.set(log.start_offset() as i64);
        let durable_reads = log.config().flush == FlushPolicy::Always;
        let hw = if durable_reads {
            log.durable_offset().min(end)
        } else {
            end
        };
        let (hw_tx, _) = watch::channel(hw);
        let producers = rebuild_producer_states(&log);
        if !producers.is_empty() {
            tracing::debug!(topic = %topic, partition = index, producers = producers.len(), "rebuilt idempotent producer state");
        }
        let epochs = EpochHistory::load(log.dir());
        Partition {
            topic,
            index,
            repl: Arc::new(Repl {
                durable_reads: AtomicBool::new(durable_reads),
                replicated: AtomicBool::new(false),
                role: RwLock::new(Role::Solo),
                generation: AtomicU64::new(0),
                durable_hw: watch::channel((0, 0)).0,
            }),
            epochs: Mutex::new(epochs),
            end_tx: watch::channel(end).0,
            log: Arc::new(log),
            hw_tx: Arc::new(hw_tx),
            group_commit: Arc::new(GroupCommit {
                requested: AtomicU64::new(0),
                running: AtomicBool::new(false),
                state: watch::channel(DurableState::default()).0,
            }),
            topic_metrics,
            metrics,
            fsync_duration,
            producers: Mutex::new(producers),
        }
    }

    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The underlying log (for front ends that need more than this API).
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    fn log_err(&self, source: LogError) -> BrokerError {
        BrokerError::Log {
            topic: self.topic.to_string(),
            partition: self.index,
            source,
        }
    }

    /// Appends whole batches and wakes fetch waiters. The log checks headers,
    /// CRCs and offsets; the record-level check (`check_records`) is the
    /// caller's, before this (as [`crate::broker::Broker::append`] does).
    ///
    /// Idempotent batches (producer id >= 0) are checked first: a duplicate of
    /// a recent batch is answered with its original offsets and not appended;
    /// a sequence gap or a fenced epoch is an error and nothing more of
    /// `batches` is appended (earlier batches of the same call stay appended).
    ///
    /// A replicated partition appends only while it leads (else
    /// [`BrokerError::NotLeader`]) and stamps its leader epoch in every batch.
    pub fn append(&self, batches: &[u8]) -> Result<AppendInfo, BrokerError> {
        if !self.repl.replicated.load(Ordering::SeqCst) {
            return self.append_as(batches, None);
        }
        let role = read_role(&self.repl.role);
        match &*role {
            Role::Leader(_) => self.append_as(batches, Some(&role)),
            _ => Err(self.not_leader()),
        }
    }

    fn not_leader(&self) -> BrokerError {
        BrokerError::NotLeader {
            topic: self.topic.to_string(),
            partition: self.index,
        }
    }

    /// [`Partition::append`] in a role (`None`: not replicated).
    fn append_as(&self, batches: &[u8], role: Option<&Role>) -> Result<AppendInfo, BrokerError> {
        if !batch_headers(batches).any(|h| h.producer_id >= 0) {
            return self.append_unchecked(batches, role);
        }
        let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
        let mut total: Option<AppendInfo> = None;
        let mut pos = 0usize;
        while let Some(rest) = batches.get(pos..).filter(|r| !r.is_empty()) {
            // A header that does not parse: let the log reject it with the exact reason.
            let (len, seq) = match BatchHeader::parse(rest) {
                Ok(h) => (h.total_len(), BatchSeq::of(&h)),
                Err(_) => (rest.len(), None),
            };
            let one = rest.get(..len).unwrap_or(rest);
            pos += len;
            let info = match seq.map(|s| (s, producers.check(&s))) {
                None => self.append_unchecked(one, role)?,
                Some((s, Verdict::Append)) => {
                    let info = self.append_unchecked(one, role)?;
                    producers.record(&s, info.base_offset, info.last_offset);
                    info
                }
                Some((_, Verdict::Duplicate(base_offset, last_offset))) => {
                    // Only a well-formed batch may be answered as a retry.
                    batch::validate(one).map_err(|e| self.log_err(LogError::InvalidBatch(e)))?;
                    tracing::debug!(topic = %self.topic, partition = self.index, base_offset, "duplicate idempotent batch answered with its original offsets");
                    AppendInfo {
                        base_offset,
                        last_offset,
                        max_timestamp: -1,
                        bytes: 0,
                        batches: 0,
                    }
                }
                Some((s, Verdict::Reject(reason))) => {
                    return Err(BrokerError::Sequence {
                        topic: self.topic.to_string(),
                        partition: self.index,
                        producer_id: s.producer_id,
                        epoch: s.epoch,
                        first_seq: s.first_seq,
                        reason,
                    });
                }
            };
            total = Some(match total {
                None => info,
                Some(t) => AppendInfo {
                    base_offset: t.base_offset,
                    last_offset: info.last_offset.max(t.last_offset),
                    max_timestamp: t.max_timestamp.max(info.max_timestamp),
                    bytes: t.bytes + info.bytes,
                    batches: t.batches + info.batches,
                },
            });
        }
        drop(producers);
        match total {
            Some(t) => Ok(t),
            // Unreachable for a non-empty input; the log reports an empty one.
            None => self.log.append(batches).map_err(|e| self.log_err(e)),
        }
    }

    /// Appends to the log without a sequence check (stamping a leader's
    /// epoch), then publishes the new end.
    fn append_unchecked(
        &self,
        batches: &[u8],
        role: Option<&Role>,
    ) -> Result<AppendInfo, BrokerError> {
        let epoch = match role {
            Some(Role::Leader(l)) => Some(l.epoch as i32),
            _ => None,
        };
        let info = self
            .log
            .append_with_epoch(batches, epoch)
            .map_err(|e| self.log_err(e))?;
        self.appended(&info, role);
        Ok(info)
    }

    /// Publishes a new end offset (and the high watermark: the end unless
    /// reads are durable-only; a leader's as its ISR holds) and counts what
    /// was appended.
    fn appended(&self, info: &AppendInfo, role: Option<&Role>) {
        let end = info.last_offset + 1;
        advance(&self.end_tx, end);
        match role {
            Some(r) => self.repl.recompute(r, &self.hw_tx, &self.log),
            // SeqCst: pairs with `set_flush`, which stores the flag, then reads the end.
            None => {
                if !self.repl.durable_reads.load(Ordering::SeqCst) {
                    advance(&self.hw_tx, end);
                }
            }
        }
        self.metrics.end_offset.set(self.log.end_offset() as i64);
        self.topic_metrics
            .messages_in
            .inc_by(info.last_offset + 1 - info.base_offset);
        self.topic_metrics.bytes_in.inc_by(info.bytes as u64);
        if self.log.take_writeback_request() {
            // Start the writeback of the last chunk off the append path.
            let log = Arc::clone(&self.log);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || log.start_writeback())),
                Err(_) => log.start_writeback(),
            }
        }
    }

    /// Whole batches from the one containing `offset`, at most about `max_bytes`
    /// (at least one batch). Empty at the end of the log. Reads past the
    /// high watermark too; consumers use [`Partition::read_committed`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, BrokerError> {
        self.log
            .read(offset, max_bytes)
            .map_err(|e| self.log_err(e))
    }

    /// Deletes the records below `offset` (at most the high watermark:
    /// Kafka's DeleteRecords); durable before it returns (an fsync: call it
    /// off the async runtime). Returns the new log start.
    pub fn delete_records_before(&self, offset: u64) -> Result<u64, BrokerError> {
        let hw = self.high_watermark();
        if offset > hw {
            return Err(self.log_err(sluice_log::LogError::OffsetOutOfRange {
                offset,
                start: self.start_offset(),
                end: hw,
            }));
        }
        self.log
            .delete_records_before(offset)
            .map_err(|e| self.log_err(e))
    }

    /// Like [`Partition::read`], but only whole batches below `high_watermark`
    /// (a value taken from [`Partition::high_watermark`] before the read),
    /// with the number of records in them.
    /// An offset between the high watermark and the log end reads nothing.
    pub fn read_committed(
        &self,
        offset: u64,
        max_bytes: usize,
        high_watermark: u64,
    ) -> Result<(Bytes, u64), BrokerError> {
        let mut records = self.read(offset, max_bytes)?;
        if offset >= high_watermark {
            records.clear();
            return Ok((records, 0));
        }
        // Always walk: a concurrent append makes its bytes readable before
        // the log's end offset moves, so a read may hold batches past both.
        // The same walk counts the records kept (for the fetch metrics).
        let mut keep = 0usize;
        let mut count = 0u64;
        for h in batch_headers(&records) {
            let last = h.base_offset.max(0) as u64 + h.last_offset_delta.max(0) as u64;
            if last >= high_watermark {
                break;
            }
            keep += h.total_len();
            count += h.record_count.max(0) as u64;
        }
        records.truncate(keep);
        Ok((records, count))
    }

    /// The end of what consumers may read: the durable offset on a
    /// `flush = always` topic, the log end offset otherwise.
    pub fn high_watermark(&self) -> u64 {
        *self.hw_tx.borrow()
    }

    /// Marks the partition's topic deleted: its log is closed for good (no
    /// file of a re-created namesake is touched through this handle), and
    /// every parked fetch on it wakes and answers UNKNOWN_TOPIC.
    pub fn mark_deleted(&self) {
        self.log.mark_closed();
        self.hw_tx.send_modify(|_| {});
    }

    /// Whether the partition's topic was deleted (its handle is stale).
    pub fn is_deleted(&self) -> bool {
        self.log.is_closed()
    }

    /// Whether reads stop at the durable offset (`flush = always`).
    pub fn durable_reads(&self) -> bool {
        self.repl.durable_reads.load(Ordering::SeqCst)
    }

    /// Applies a new flush policy: the log's settings (`config`, from the
    /// topic's new config) and the read rule. Leaving `always` makes
    /// everything appended readable at once; entering it keeps what is
    /// readable, and later records become readable once fsynced.
    pub fn set_flush(&self, config: sluice_log::LogConfig) {
        let durable = config.flush == FlushPolicy::Always;
        self.log.set_config(config);
        let was = self.repl.durable_reads.swap(durable, Ordering::SeqCst);
        if self.repl.replicated.load(Ordering::SeqCst) {
            self.repl.publish(&self.hw_tx, &self.log);
        } else if was && !durable {
            // Appends from here on advance it themselves (they see the flag).
            advance(&self.hw_tx, self.log.end_offset());
        }
    }

    /// Moves the high watermark up to the log's durable offset (after any
    /// fsync). Only a durable-only partition's can move: the others' is at
    /// the log end already, past the durable offset.
    fn publish_durable(&self) {
        self.repl.publish(&self.hw_tx, &self.log);
    }

    /// Counts what a fetch served (`bytes` in `records` records) in the per-topic metrics.
    pub fn record_fetch(&self, bytes: usize, records: u64) {
        self.topic_metrics.bytes_out.inc_by(bytes as u64);
        self.topic_metrics.messages_out.inc_by(records);
    }

    /// Offset the next record will get.
    pub fn end_offset(&self) -> u64 {
        self.log.end_offset()
    }

    /// First offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.log.start_offset()
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// A receiver that changes whenever the high watermark grows; it starts "seen".
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.hw_tx.subscribe()
    }

    /// First offset whose batch has `max_timestamp >= ts`, with that timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>, BrokerError> {
        self.log
            .offset_for_timestamp(ts)
            .map_err(|e| self.log_err(e))
    }

    /// The role generation: pass it to [`Partition::wait_durable_in`] to
    /// learn whether the role changed since (taken before an append).
    pub fn generation(&self) -> u64 {
        self.repl.generation.load(Ordering::SeqCst)
    }

    /// Resolves once every offset below `offset` is fsynced here and, on a
    /// replicated leader, on every in-sync replica (see the module docs).
    pub async fn wait_durable(&self, offset: u64) -> Result<(), BrokerError> {
        self.wait_durable_in(offset, self.generation()).await
    }

    /// [`Partition::wait_durable`] for records appended in role generation
    /// `generation`: [`BrokerError::NotLeader`] once the role changed.
    pub async fn wait_durable_in(&self, offset: u64, generation: u64) -> Result<(), BrokerError> {
        let replicated = self.repl.replicated.load(Ordering::SeqCst);
        self.wait_local_durable(offset).await?;
        if !replicated {
            return Ok(());
        }
        let mut rx = self.repl.durable_hw.subscribe();
        loop {
            {
                let (o, g) = *rx.borrow_and_update();
                if g != generation {
                    return Err(self.not_leader());
                }
                if o >= offset {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Err(BrokerError::ShuttingDown);
            }
        }
    }

    /// Resolves once every offset below `offset` is fsynced here (group
    /// commit; see the module docs).
    pub async fn wait_local_durable(&self, offset: u64) -> Result<(), BrokerError> {
        if self.log.durable_offset() >= offset {
            // Synced by someone else (a roll, the periodic flush): make sure
            // readers see it too.
            self.publish_durable();
            return Ok(());
        }
        let gc = &self.group_commit;
        // Subscribed before asking: no publish after this point is missed.
        let mut rx = gc.state.subscribe();
        // SeqCst here and in `flush_loop`'s exit: each side writes one flag
        // and then reads the other's (Dekker), which weaker orderings allow
        // to both read stale values (a waiter left with no loop running).
        gc.requested.fetch_max(offset, Ordering::SeqCst);
        if !gc.running.swap(true, Ordering::SeqCst) {
            self.start_flush_loop();
        }
        loop {
            {
                let s = rx.borrow_and_update();
                if s.durable >= offset {
                    return Ok(());
                }
                if let Some(e) = &s.failed {
                    return Err(BrokerError::Durability {
                        topic: self.topic.to_string(),
                        partition: self.index,
                        source: Arc::clone(e),
                    });
                }
            }
            if rx.changed().await.is_err() {
                return Err(BrokerError::ShuttingDown);
            }
        }
    }

    /// A span naming this partition, for rare calls into its log that may
    /// log (truncation, restart): `sluice-log`'s lines carry only the
    /// directory. ERROR level, so it is on whenever the lines in it are.
    fn span(&self) -> tracing::Span {
        tracing::error_span!("partition", topic = %self.topic, partition = self.index)
    }

    /// Runs [`flush_loop`] on the blocking pool (the caller set `running`).
    fn start_flush_loop(&self) {
        let log = Arc::clone(&self.log);
        let gc = Arc::clone(&self.group_commit);
        // Published after every fsync, whatever the read rule (see `publish_durable`).
        let hw = Arc::clone(&self.hw_tx);
        let repl = Arc::clone(&self.repl);
        let hist = self.fsync_duration.clone();
        let (topic, index) = (Arc::clone(&self.topic), self.index);
        let work = move || flush_loop(&log, &gc, &hw, &repl, &hist, &topic, index);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(work)),
            Err(_) => work(),
        }
    }

    /// For the `interval` policy: flushes if due, recording the fsync time.
    pub fn maybe_flush(&self, now: Instant) -> Result<bool, BrokerError> {
        let started = Instant::now();
        let flushed = self.log.maybe_flush(now).map_err(|e| self.log_err(e))?;
        if flushed {
            self.fsync_duration.observe(started.elapsed().as_secs_f64());
        }
        self.publish_durable();
        Ok(flushed)
    }

    /// Deletes expired sealed segments; returns how many.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, BrokerError> {
        let n = self
            .log
            .enforce_retention(now_ms)
            .map_err(|e| self.log_err(e))?;
        self.metrics
            .start_offset
            .set(self.log.start_offset() as i64);
        Ok(n)
    }

    /// Subscribes to the log end offset (parked replica fetches wait on it).
    pub fn subscribe_end(&self) -> watch::Receiver<u64> {
        self.end_tx.subscribe()
    }

    fn write_role(&self) -> std::sync::RwLockWriteGuard<'_, Role> {
        self.repl.role.write().unwrap_or_else(|p| p.into_inner())
    }

    fn new_generation(&self) {
        let g = self.repl.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // Wakes the durable waiters of the old role: they answer NOT_LEADER.
        self.repl.durable_hw.send_replace((0, g));
    }

    /// Leads in `epoch` with these replicas and ISR (from the cluster
    /// metadata). A new epoch is recorded in the leader-epoch history at the
    /// log end before anything is appended in it; the same epoch only
    /// updates the replica sets.
    pub fn become_leader(
        &self,
        me: u32,
        epoch: u32,
        partition_epoch: u32,
        replicas: Vec<u32>,
        isr: Vec<u32>,
    ) {
        let mut role = self.write_role();
        match &mut *role {
            Role::Leader(l) if l.epoch == epoch => {
                if l.partition_epoch != partition_epoch {
                    // A replica that left the ISR must fetch again before
                    // it may rejoin (its progress is from before it left).
                    l.followers.retain(|r, _| isr.contains(r));
                }
                l.partition_epoch = partition_epoch;
                l.replicas = replicas;
                l.isr = isr;
            }
            _ => {
                let end = self.log.end_offset();
                {
                    let mut h = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
                    if h.assign(epoch, end) {
                        if let Err(e) = h.store(self.log.dir()) {
                            tracing::error!(topic = %self.topic, partition = self.index, error = %crate::error::chain(&e), "cannot store the leader-epoch history");
                        }
                    }
                }
                tracing::info!(topic = %self.topic, partition = self.index, epoch, end, "leading");
                self.metrics.leader_changes.inc();
                *role = Role::Leader(LeaderState {
                    me,
                    epoch,
                    partition_epoch,
                    replicas,
                    isr,
                    followers: std::collections::HashMap::new(),
                    since: Instant::now(),
                });
                self.new_generation();
            }
        }
        self.repl.replicated.store(true, Ordering::SeqCst);
        self.repl.recompute(&role, &self.hw_tx, &self.log);
    }

    /// Follows `leader` in `epoch` (`None`: no leader now, or this broker
    /// holds no replica). Appends are refused from here on, and durable
    /// produces still waiting answer NOT_LEADER.
    pub fn become_follower(&self, epoch: u32, leader: Option<u32>) {
        let mut role = self.write_role();
        let same =
            matches!(&*role, Role::Follower { epoch: e, leader: l } if *e == epoch && *l == leader);
        if !same {
            if matches!(&*role, Role::Leader(_)) {
                tracing::info!(topic = %self.topic, partition = self.index, epoch, ?leader, "no longer leading");
            }
            *role = Role::Follower { epoch, leader };
            self.new_generation();
        }
        self.repl.replicated.store(true, Ordering::SeqCst);
    }

    /// Whether clients are served here: not replicated, or leading.
    pub fn serves_clients(&self) -> bool {
        !self.repl.replicated.load(Ordering::SeqCst)
            || matches!(&*read_role(&self.repl.role), Role::Leader(_))
    }

    /// Whether this partition leads now, and in which epoch.
    pub fn leader_epoch(&self) -> Option<u32> {
        match &*read_role(&self.repl.role) {
            Role::Leader(l) => Some(l.epoch),
            _ => None,
        }
    }

    /// A leader answers one partition of a follower's ReplicaFetch (see
    /// `protocol.md`): checks the epochs and the follower's position,
    /// records its progress and moves the high watermark, then reads up to
    /// `max_bytes` from its position (past the high watermark: followers
    /// copy everything).
    pub fn serve_replica(
        &self,
        replica_id: u32,
        leader_epoch: u32,
        fetch_offset: u64,
        last_fetched_epoch: i32,
        durable_offset: u64,
        max_bytes: usize,
    ) -> ReplicaAnswer {
        use sluice_protocol::ErrorCode;
        let mut role = self.write_role();
        let Role::Leader(l) = &mut *role else {
            return ReplicaAnswer::error(ErrorCode::NotLeaderForPartition);
        };
        if leader_epoch < l.epoch {
            return ReplicaAnswer::error(ErrorCode::FencedLeaderEpoch);
        }
        if leader_epoch > l.epoch {
            return ReplicaAnswer::error(ErrorCode::UnknownLeaderEpoch);
        }
        if replica_id == l.me || !l.replicas.contains(&replica_id) {
            return ReplicaAnswer::error(ErrorCode::NotLeaderForPartition);
        }
        let start = self.log.start_offset();
        let end = self.log.end_offset();
        let check = {
            let h = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
            replica::check_fetch(&h, start, end, fetch_offset, last_fetched_epoch)
        };
        let mut answer = ReplicaAnswer {
            error: ErrorCode::None,
            high_watermark: self.high_watermark(),
            log_start_offset: start,
            diverging: None,
            records: Bytes::new(),
        };
        match check {
            FetchCheck::Diverging { epoch, end_offset } => {
                answer.diverging = Some((epoch, end_offset));
                return answer;
            }
            FetchCheck::OutOfRange => {
                answer.error = ErrorCode::OffsetOutOfRange;
                return answer;
            }
            FetchCheck::Serve => {}
        }
        let now = Instant::now();
        let prev = l.followers.get(&replica_id).copied();
        let caught = fetch_offset >= end || prev.is_some_and(|p| fetch_offset >= p.end_at_answer);
        let since = l.since;
        l.followers.insert(
            replica_id,
            FollowerProgress {
                end: fetch_offset,
                durable: durable_offset.min(fetch_offset),
                last_fetch: now,
                caught_up: if caught {
                    now
                } else {
                    prev.map_or(since, |p| p.caught_up)
                },
                end_at_answer: end,
            },
        );
        self.repl.recompute(&role, &self.hw_tx, &self.log);
        answer.high_watermark = self.high_watermark();
        if fetch_offset < end {
            match self.log.read(fetch_offset, max_bytes) {
                Ok(r) => answer.records = r,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "replica read failed");
                    answer.error = ErrorCode::StorageError;
                }
            }
        }
        answer
    }

    /// A follower's position for its next fetch: (log end, epoch of its last
    /// batch or -1, fsynced offset).
    pub fn follower_position(&self) -> (u64, i32, u64) {
        let end = self.log.end_offset();
        let last = self
            .epochs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_epoch_before(end);
        (end, last, self.log.durable_offset().min(end))
    }

    /// Checks that this partition follows `leader` in `epoch`.
    fn check_following(&self, role: &Role, leader: u32, epoch: u32) -> Result<(), BrokerError> {
        match role {
            Role::Follower {
                epoch: e,
                leader: Some(l),
            } if *e == epoch && *l == leader => Ok(()),
            _ => Err(self.not_leader()),
        }
    }

    fn replication_err(&self, reason: String) -> BrokerError {
        BrokerError::Replication {
            topic: self.topic.to_string(),
            partition: self.index,
            reason,
        }
    }

    /// A follower appends what its leader (`leader`, `epoch`) sent, verbatim:
    /// offsets and leader epochs as stamped by the leader. The first batch
    /// must start at this log's end (one that starts below it means this
    /// log diverged there: it is cut at that batch first). Records the
    /// producers' sequences and any new leader epoch.
    pub fn append_replica(
        &self,
        leader: u32,
        epoch: u32,
        batches: &[u8],
    ) -> Result<AppendInfo, BrokerError> {
        let role = read_role(&self.repl.role);
        self.check_following(&role, leader, epoch)?;
        let first = BatchHeader::parse(batches)
            .map_err(|e| self.replication_err(format!("bad batch from the leader: {e}")))?;
        let base = u64::try_from(first.base_offset)
            .map_err(|_| self.replication_err("negative base offset".into()))?;
        let end = self.log.end_offset();
        if base > end {
            return Err(self.replication_err(format!(
                "the leader sent offset {base}, this log ends at {end}"
            )));
        }
        if base < end {
            tracing::warn!(topic = %self.topic, partition = self.index, base, end, "the leader's batch starts inside this log's last batch; truncating to it");
            self.truncate_locked(base)?;
        }
        let info = self
            .log
            .append_with_epoch(batches, None)
            .map_err(|e| self.log_err(e))?;
        {
            let mut producers = self.producers.lock().unwrap_or_else(|e| e.into_inner());
            let mut h = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
            let mut changed = false;
            for b in batch_headers(batches) {
                let b_base = b.base_offset.max(0) as u64;
                if let Some(s) = BatchSeq::of(&b) {
                    producers.record(&s, b_base, b_base + b.last_offset_delta.max(0) as u64);
                }
                if b.partition_leader_epoch >= 0 {
                    changed |= h.assign(b.partition_leader_epoch as u32, b_base);
                }
            }
            if changed {
                h.store(self.log.dir())?;
            }
        }
        self.appended(&info, Some(&role));
        Ok(info)
    }

    /// A follower told that its log diverges at `(epoch, leader_end)`
    /// truncates to where its own history and the leader's agree.
    pub fn truncate_diverging(
        &self,
        leader: u32,
        follow_epoch: u32,
        epoch: u32,
        leader_end: u64,
    ) -> Result<u64, BrokerError> {
        let role = read_role(&self.repl.role);
        self.check_following(&role, leader, follow_epoch)?;
        let end = self.log.end_offset();
        let to = {
            let h = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
            replica::truncation_point(&h, end, epoch, leader_end)
        };
        tracing::info!(topic = %self.topic, partition = self.index, from = end, to, epoch, leader_end, "truncating a diverging log tail");
        self.truncate_locked(to)
    }

    /// A follower whose whole log is below its leader's log start `offset`
    /// (the leader deleted those segments): empties its log to start at
    /// `offset`, with no epoch history and no producer state. Nothing
    /// happens when its log reaches `offset`.
    pub fn restart_replica_at(
        &self,
        leader: u32,
        follow_epoch: u32,
        offset: u64,
    ) -> Result<(), BrokerError> {
        let role = read_role(&self.repl.role);
        self.check_following(&role, leader, follow_epoch)?;
        let end = self.log.end_offset();
        if offset <= end {
            return Ok(());
        }
        tracing::warn!(topic = %self.topic, partition = self.index, end, leader_start = offset, "the leader's log starts past this replica's end: restarting the log there");
        {
            // The history goes first: a crash before the log restarts leaves
            // a log without epochs, which the leader answers the same way.
            let mut h = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
            if h.truncate_from(0) {
                h.store(self.log.dir())?;
            }
        }
        {
            // The log's own lines name only its directory.
            let _span = self.span().entered();
            self.log.restart_at(offset).map_err(|e| self.log_err(e))?;
        }
        *self.producers.lock().unwrap_or_else(|e| e.into_inner()) =
            rebuild_producer_states(&self.log);
        self.end_tx.send_replace(offset);
        self.metrics.end_offset.set(offset as i64);
        Ok(())
    }

    /// Truncates the log (role lock held by the caller) and brings the
    /// epoch history, the producer state and the end watch in line.
    fn truncate_locked(&self, offset: u64) -> Result<u64, BrokerError> {
        let new_end = {
            // The log's own lines name only its directory.
            let _span = self.span().entered();
            self.log.truncate_to(offset).map_err(|e| self.log_err(e))?
        };
        {
            let mut h = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
            if h.truncate_from(new_end) {
                h.store(self.log.dir())?;
            }
        }
        *self.producers.lock().unwrap_or_else(|e| e.into_inner()) =
            rebuild_producer_states(&self.log);
        self.end_tx.send_replace(new_end);
        self.metrics.end_offset.set(new_end as i64);
        Ok(new_end)
    }

    /// A follower learns its leader's high watermark: its own moves up to
    /// it, within what it holds (durably, when reads are durable-only).
    pub fn set_follower_high_watermark(&self, leader_hw: u64) {
        let held = if self.durable_reads() {
            self.log.durable_offset().min(self.log.end_offset())
        } else {
            self.log.end_offset()
        };
        advance(&self.hw_tx, leader_hw.min(held));
    }

    /// On a leader: the ISR change to propose now, as `(leader epoch,
    /// partition epoch, new ISR)` (see [`replica::isr_change`]).
    pub fn isr_proposal(&self, lag: Duration) -> Option<(u32, u32, Vec<u32>)> {
        let role = read_role(&self.repl.role);
        let Role::Leader(l) = &*role else {
            return None;
        };
        let durable_hw = self.repl.durable_hw.borrow().0;
        replica::isr_change(l, durable_hw, Instant::now(), lag)
            .map(|isr| (l.epoch, l.partition_epoch, isr))
    }

    /// Flushes and closes the log.
    pub fn close(&self) -> Result<(), BrokerError> {
        self.log.close().map_err(|e| self.log_err(e))
    }
}

/// Moves a watch forward to `to`; appends and fsyncs from several threads
/// may finish out of order, so it never moves back.
fn advance(tx: &watch::Sender<u64>, to: u64) {
    tx.send_if_modified(|v| {
        if to > *v {
            *v = to;
            true
        } else {
            false
        }
    });
}

/// Moves a durable-only partition's high watermark to the log's durable offset.
/// A partition's group-commit loop (see the module docs): fsyncs while any
/// waiter needs an offset that is not durable, publishing after each fsync.
fn flush_loop(
    log: &Log,
    gc: &GroupCommit,
    hw: &watch::Sender<u64>,
    repl: &Repl,
    hist: &Histogram,
    topic: &str,
    partition: u32,
) {
    loop {
        let target = gc.requested.load(Ordering::SeqCst);
        if log.durable_offset() >= target {
            let durable = log.durable_offset();
            gc.state.send_modify(|s| s.durable = s.durable.max(durable));
            gc.running.store(false, Ordering::SeqCst);
            // A waiter that raised `requested` after the load above may
            // have seen `running` still set: look again before leaving.
            if gc.requested.load(Ordering::SeqCst) > log.durable_offset()
                && !gc.running.swap(true, Ordering::SeqCst)
            {
                continue;
            }
            return;
        }
        let started = Instant::now();
        let result = log.wait_durable(target);
        hist.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                // Readers see the records before their producers are answered.
                repl.publish(hw, log);
                let durable = log.durable_offset();
                gc.state.send_modify(|s| s.durable = s.durable.max(durable));
            }
            Err(e) => {
                tracing::error!(topic, partition, error = %crate::error::chain(&e), "fsync failed");
                gc.state.send_modify(|s| s.failed = Some(Arc::new(e)));
                gc.running.store(false, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// The record-level half of batch validation, run on produced batches before
/// the log runs its half (header, CRC, offsets; see `batch::validate_header`).
///
/// For each batch: the record walk of [`batch::validate_records`] (compressed
/// records are decompressed, at most [`MAX_DECOMPRESSED_BYTES`], and dropped;
/// the batch is stored as sent), then for CreateTime batches the topic's
/// `message.timestamp.before/after.max.ms` against `now`. LogAppendTime
/// batches get `now` as their `max_timestamp` (CRC recomputed, as Kafka
/// stamps them): only then are the bytes copied. A batch whose header does not
/// parse or that exceeds the topic's batch limit ends the walk: the log
/// refuses it with the exact reason. No allocation for uncompressed CreateTime
/// batches.
pub(crate) fn check_records<'a>(
    records: &'a [u8],
    config: &TopicConfig,
    now: i64,
) -> Result<Cow<'a, [u8]>, BatchError> {
    let mut pos = 0usize;
    let mut stamp = false;
    while let Some(rest) = records.get(pos..).filter(|r| !r.is_empty()) {
        let Ok(h) = BatchHeader::parse(rest) else {
            break;
        };
        if h.total_len() > config.max_batch_bytes as usize {
            break;
        }
        let (h, summary) = batch::validate_records(rest, MAX_DECOMPRESSED_BYTES)?;
        if h.is_log_append_time() {
            stamp = true;
        } else {
            if let Err(e) = batch::check_timestamps(
                &summary,
                now,
                config.timestamp_before_max_ms,
                config.timestamp_after_max_ms,
            ) {
                // A corrupt batch is CORRUPT_MESSAGE whatever else is wrong.
                batch::verify_crc(rest.get(..h.total_len()).unwrap_or(rest))?;
                return Err(e);
            }
        }
        pos += h.total_len();
    }
    if !stamp {
        return Ok(Cow::Borrowed(records));
    }
    let mut owned = records.to_vec();
    let mut pos = 0usize;
    while let Some(rest) = owned.get_mut(pos..).filter(|r| !r.is_empty()) {
        let Ok(h) = BatchHeader::parse(rest) else {
            break;
        };
        if h.is_log_append_time() {
            batch::stamp_log_append_time(rest, now)?;
        }
        pos += h.total_len();
    }
    Ok(Cow::Owned(owned))
}

/// The headers of concatenated whole batches, up to the first that does not parse.
fn batch_headers(batches: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut rest = batches;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let h = BatchHeader::parse(rest).ok()?;
        rest = rest.get(h.total_len()..).unwrap_or_default();
        Some(h)
    })
}

/// Counts the records in concatenated whole batches (stops at the first bad header).
pub fn count_records(batches: &[u8]) -> u64 {
    batch_headers(batches)
        .map(|h| h.record_count.max(0) as u64)
        .sum()
}

/// Rebuilds the idempotent-producer state from the batch headers of the log's
/// tail (see the module docs). A read error only leaves the state partial.
fn rebuild_producer_states(log: &Log) -> ProducerStates {
    let mut states = ProducerStates::default();
    let end = log.end_offset();
    let mut offset = log.start_offset().max(end.saturating_sub(REBUILD_RECORDS));
    let mut read = 0usize;
    while offset < end && read < REBUILD_BYTES {
        let chunk = match log.read(offset, 1024 * 1024) {
            Ok(c) if !c.is_empty() => c,
            _ => break,
        };
        read += chunk.len();
        let mut next = offset;
        for b in batch::batches(&chunk) {
            let Ok(b) = b else { break };
            let h = b.header();
            let base = h.base_offset.max(0) as u64;
            let last = base + h.last_offset_delta.max(0) as u64;
            if let Some(s) = BatchSeq::of(h) {
                states.record(&s, base, last);
            }
            next = last + 1;
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    states
}

/// How long a durable produce may wait when its request says 0.
pub const DEFAULT_DURABLE_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::RecordBatchBuilder;

    #[test]
    fn counts_records_across_batches_and_stops_at_garbage() {
        let mut b = RecordBatchBuilder::new();
        let mut all = Vec::new();
        for n in [1usize, 5, 3] {
            for i in 0..n {
                b.push(1, None, Some(format!("{i}").as_bytes()), &[]);
            }
            all.extend_from_slice(&b.finish());
        }
        assert_eq!(count_records(&all), 9);
        let good = all.len();
        all.extend_from_slice(&[0xff; 20]);
        assert_eq!(count_records(&all), 9);
        assert_eq!(count_records(&all[..good - 1]), 6);
        assert_eq!(count_records(&[]), 0);
    }

    fn topic_config() -> TopicConfig {
        crate::topic_meta::TopicMeta {
            partitions: 1,
            overrides: Default::default(),
            id: None,
        }
        .effective(&crate::config::TopicDefaults::default())
    }

    /// A batch with a wrong CRC is CORRUPT_MESSAGE even when its timestamp
    /// is also out of range (the spec: the CRC is checked first).
    #[test]
    fn a_bad_crc_wins_over_an_out_of_range_timestamp() {
        let cfg = topic_config();
        let now = 1_700_000_000_000;
        let mut b = RecordBatchBuilder::new();
        b.push(now + 10 * 3_600_000, None, Some(b"future"), &[]);
        let mut bytes = b.finish().to_vec();
        let good = check_records(&bytes, &cfg, now).unwrap_err();
        assert!(
            matches!(good, BatchError::TimestampOutOfRange { .. }),
            "{good:?}"
        );
        // A byte of the value: the records still parse, only the CRC is off.
        let in_value = bytes.len() - 2;
        bytes[in_value] ^= 0x01;
        let e = check_records(&bytes, &cfg, now).unwrap_err();
        assert!(matches!(e, BatchError::CrcMismatch { .. }), "{e:?}");
    }

    #[test]
    fn record_check_borrows_plain_batches_and_stamps_log_append_time_in_a_copy() {
        use sluice_protocol::batch::{compute_crc, validate, Compression, ATTR_LOG_APPEND_TIME};
        let cfg = topic_config();
        let now = 1_700_000_000_000;
        let mut b = RecordBatchBuilder::new();
        let mut all = Vec::new();
        b.push(now, None, Some(b"a"), &[]);
        all.extend_from_slice(&b.finish());
        b.set_compression(Compression::Gzip);
        b.push(now, None, Some(&[b'z'; 300]), &[]);
        all.extend_from_slice(&b.finish());
        // Plain and compressed CreateTime batches: checked in place, no copy.
        let checked = check_records(&all, &cfg, now).unwrap();
        assert!(matches!(checked, Cow::Borrowed(_)));
        // A LogAppendTime batch among them: only it is re-stamped, in a copy.
        let mut lat = Vec::new();
        b.set_compression(Compression::None);
        b.push(5, None, Some(b"lat"), &[]);
        lat.extend_from_slice(&b.finish());
        lat[22] |= ATTR_LOG_APPEND_TIME as u8;
        let crc = compute_crc(&lat);
        lat[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut mixed = all.clone();
        mixed.extend_from_slice(&lat);
        let checked = check_records(&mixed, &cfg, now).unwrap();
        let Cow::Owned(stamped) = checked else {
            panic!("LogAppendTime needs a copy");
        };
        assert_eq!(&stamped[..all.len()], &all[..], "other batches untouched");
        let h = validate(&stamped[all.len()..]).unwrap();
        assert_eq!(h.max_timestamp, now);
        // The timestamp limits apply to CreateTime batches only.
        let e = check_records(&all, &cfg, now - 3_600_001).unwrap_err();
        assert!(
            matches!(
                e,
                BatchError::TimestampOutOfRange {
                    direction: "after",
                    ..
                }
            ),
            "{e:?}"
        );
        check_records(&lat, &cfg, now - 3_600_001).unwrap();
        // A header that does not parse is left to the log.
        assert!(matches!(
            check_records(&[0xff; 10], &cfg, now),
            Ok(Cow::Borrowed(_))
        ));
    }
}

#[cfg(test)]
mod high_watermark_tests {
    use super::*;
    use crate::metrics::Metrics;
    use sluice_log::FaultyFileIo;
    use sluice_protocol::batch::RecordBatchBuilder;
    use std::sync::atomic::Ordering;

    fn batch(value: &[u8]) -> Bytes {
        let mut b = RecordBatchBuilder::new();
        b.push(1, None, Some(value), &[]);
        b.finish()
    }

    fn open(dir: &std::path::Path, flush: FlushPolicy, io: Arc<FaultyFileIo>) -> Partition {
        let config = sluice_log::LogConfig {
            flush,
            ..sluice_log::LogConfig::default()
        };
        let log = Log::open_with_io(dir, config, io).unwrap();
        let m = Metrics::new();
        Partition::from_log(
            log,
            Arc::from("t"),
            0,
            m.topic("t"),
            m.partition("t", 0),
            m.fsync_duration.clone(),
        )
    }

    /// `sluice_leader_changes_total` counts leaderships taken in a new
    /// epoch: not a repeated metadata apply of the same epoch, not a
    /// follower's role change.
    #[test]
    fn a_leadership_in_a_new_epoch_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(
            dir.path(),
            FlushPolicy::Always,
            Arc::new(FaultyFileIo::default()),
        );
        let changes = || p.metrics.leader_changes.get();
        assert_eq!(changes(), 0);
        p.become_leader(1, 1, 0, vec![1, 2], vec![1, 2]);
        assert_eq!(changes(), 1);
        // The same epoch again (an ISR change): still one leadership.
        p.become_leader(1, 1, 1, vec![1, 2], vec![1]);
        assert_eq!(changes(), 1);
        p.become_follower(2, Some(2));
        assert_eq!(changes(), 1);
        p.become_leader(1, 3, 2, vec![1, 2], vec![1, 2]);
        assert_eq!(changes(), 2);
    }

    /// The group commit's promises, on a disk whose fsync takes 20 ms while
    /// a producer appends every 2 ms and waits: fsyncs are shared (a few
    /// dozen waiters per fsync, not one each), the next fsync starts as soon
    /// as the previous one ends while anyone waits, and no waiter waits past
    /// the end of the first fsync that started after its append returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_shares_fsyncs_runs_them_back_to_back_and_waits_for_at_most_one_more() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FaultyFileIo::default());
        let p = Arc::new(open(dir.path(), FlushPolicy::Always, Arc::clone(&io)));
        io.slow_sync_us.store(20_000, Ordering::SeqCst);
        let waiters = 100;
        let mut tasks = Vec::new();
        let t0 = Instant::now();
        for i in 0..waiters {
            let p = Arc::clone(&p);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until((t0 + Duration::from_millis(2 * i)).into()).await;
                let info = p.append(&batch(format!("r{i}").as_bytes())).unwrap();
                let written = Instant::now();
                p.wait_durable(info.last_offset + 1).await.unwrap();
                (written, Instant::now())
            }));
        }
        let mut acks = Vec::new();
        for t in tasks {
            acks.push(t.await.unwrap());
        }
        let syncs = io.sync_times.lock().unwrap().clone();
        // ~200 ms of appends at 20 ms per fsync: about 11 fsyncs, never 100.
        assert!(
            syncs.len() <= 20,
            "{} fsyncs for {waiters} waiters: not shared",
            syncs.len()
        );
        // Back to back: with waiters arriving every 2 ms there is always
        // someone waiting when an fsync ends.
        for pair in syncs.windows(2) {
            let gap = pair[1].0.saturating_duration_since(pair[0].1);
            assert!(gap < Duration::from_millis(15), "{gap:?} between fsyncs");
        }
        // At most one more fsync: acknowledged by the end of the first fsync
        // that started after the append (plus scheduling slack).
        for (i, (written, acked)) in acks.iter().enumerate() {
            let next = syncs
                .iter()
                .find(|(start, _)| start > written)
                .map(|(_, end)| *end);
            if let Some(end) = next {
                assert!(
                    *acked <= end + Duration::from_millis(15),
                    "waiter {i} acknowledged {:?} after the end of the first fsync that started after its append",
                    acked.saturating_duration_since(end)
                );
            }
        }
    }

    /// Waiters racing the flush loop's exit are never left without a loop:
    /// 8 producers x 150 durable appends each, all answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_durable_waiter_is_answered_while_the_flush_loop_starts_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FaultyFileIo::default());
        let p = Arc::new(open(dir.path(), FlushPolicy::Always, Arc::clone(&io)));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let p = Arc::clone(&p);
            tasks.push(tokio::spawn(async move {
                for i in 0..150u32 {
                    let info = p.append(&batch(format!("{t}-{i}").as_bytes())).unwrap();
                    if i % 7 == 0 {
                        // Now and then leave the loop time to exit.
                        tokio::task::yield_now().await;
                    }
                    p.wait_durable(info.last_offset + 1).await.unwrap();
                    assert!(p.log.durable_offset() > info.last_offset);
                }
            }));
        }
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("a durable waiter was never answered");
        assert_eq!(p.high_watermark(), 8 * 150);
    }

    /// On a `flush = always` partition an append whose fsync fails is never
    /// readable, and the high watermark never passes the durable offset.
    #[tokio::test]
    async fn failed_fsync_is_never_visible_on_always_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FaultyFileIo::default());
        let p = open(dir.path(), FlushPolicy::Always, Arc::clone(&io));
        assert!(p.durable_reads());
        let a = batch(b"acknowledged");
        let info = p.append(&a).unwrap();
        // Appended but not yet synced: invisible.
        assert_eq!(p.high_watermark(), 0);
        assert!(p
            .read_committed(0, 1 << 20, p.high_watermark())
            .unwrap()
            .0
            .is_empty());
        p.wait_durable(info.last_offset + 1).await.unwrap();
        assert_eq!(p.high_watermark(), 1);
        assert_eq!(p.read_committed(0, 1 << 20, 1).unwrap().0.len(), a.len());

        io.fail_sync.store(true, Ordering::SeqCst);
        let info = p.append(&batch(b"lost")).unwrap();
        assert_eq!(p.end_offset(), 2);
        assert!(p.wait_durable(info.last_offset + 1).await.is_err());
        assert_eq!(
            p.high_watermark(),
            1,
            "a failed fsync moved the high watermark"
        );
        let hw = p.high_watermark();
        // From the start only the durable batch; at the failed one nothing.
        let r = p.read_committed(0, 1 << 20, hw).unwrap().0;
        assert_eq!(r.len(), a.len());
        assert!(p.read_committed(1, 1 << 20, hw).unwrap().0.is_empty());
        // The periodic flush fails too and moves nothing.
        assert!(p.maybe_flush(Instant::now()).is_err());
        assert_eq!(p.high_watermark(), 1);
    }

    /// A flush change moves the read rule at once: leaving `always` shows
    /// everything appended; entering it hides only what comes after until
    /// it is fsynced; with `os` the periodic flush never syncs, so readers
    /// are not left waiting on a durable offset that never moves.
    #[tokio::test]
    async fn a_flush_change_moves_the_read_rule_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(
            dir.path(),
            FlushPolicy::Always,
            Arc::new(FaultyFileIo::default()),
        );
        p.append(&batch(b"hidden")).unwrap();
        assert_eq!(p.high_watermark(), 0);
        let config = |flush| sluice_log::LogConfig {
            flush,
            ..p.log().config()
        };
        p.set_flush(config(FlushPolicy::Os));
        assert!(!p.durable_reads());
        assert_eq!(p.high_watermark(), 1, "shown when leaving always");
        p.append(&batch(b"os")).unwrap();
        assert_eq!(p.high_watermark(), 2);
        assert!(
            !p.maybe_flush(Instant::now()).unwrap(),
            "os never syncs on the timer"
        );
        p.set_flush(config(FlushPolicy::Always));
        assert!(p.durable_reads());
        assert_eq!(p.high_watermark(), 2, "what was visible stays visible");
        let info = p.append(&batch(b"always")).unwrap();
        assert_eq!(p.high_watermark(), 2, "hidden until fsynced");
        p.wait_durable(info.last_offset + 1).await.unwrap();
        assert_eq!(p.high_watermark(), 3);
    }

    /// A parked reader (a watch subscriber) wakes when the fsync lands, and
    /// other policies serve up to the log end at once.
    #[tokio::test]
    async fn high_watermark_moves_with_fsync_or_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(
            &dir.path().join("a"),
            FlushPolicy::Always,
            Arc::new(FaultyFileIo::default()),
        );
        let mut rx = p.subscribe();
        let info = p.append(&batch(b"x")).unwrap();
        assert!(!rx.has_changed().unwrap(), "woken before the fsync");
        p.wait_durable(info.last_offset + 1).await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);

        let q = open(
            &dir.path().join("b"),
            FlushPolicy::Os,
            Arc::new(FaultyFileIo::default()),
        );
        assert!(!q.durable_reads());
        q.append(&batch(b"y")).unwrap();
        assert_eq!(q.high_watermark(), 1);
        assert_eq!(
            q.read_committed(0, 1 << 20, 1).unwrap().0.len(),
            batch(b"y").len()
        );
    }
}
