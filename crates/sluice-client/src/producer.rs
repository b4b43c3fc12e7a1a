//! The producer: batching, partitioning, backpressure, retries.
//!
//! ```text
//!  enqueue(record) ──> reserve buffer bytes (semaphore; waits when full)
//!                  ──> pick partition (explicit | murmur2(key) | sticky)
//!                  ──> append to that partition's open RecordBatchBuilder
//!                        (sealed when it reaches batch_bytes, or after linger)
//!  sender task     ──> seals due batches, sends each partition's oldest batch to
//!                      the partition leader (several partitions per request),
//!                      up to max_in_flight batches per partition
//!  response        ──> completes every record's Delivery with (partition, offset)
//!                      and returns the batch's bytes to the buffer; a retriable
//!                      error puts the batch back at the head of its queue
//! ```
//!
//! Ordering: batches of one partition are sent in the order they were sealed:
//! the sender task queues each request on its connection (awaiting
//! `Connection::submit` one request after another) before it waits for any
//! answer, so frames reach the socket in seal order and the broker applies
//! them in that order. (Before, each request was a spawned task racing for the
//! connection, so a later batch was often written first, even with no error;
//! `tests/idempotent_produce.rs` has the regression test.) After a
//! retriable failure the partition drops to one batch in flight until every
//! retried batch is done, and the failed batch is re-sent ahead of any later one.
//!
//! Idempotence (`ProducerConfig::idempotent`, default on; needs acks != none):
//! on first use the producer asks the broker for a producer id
//! (InitProducerId) and stamps every batch with it, its epoch and the
//! partition's next sequence number (per partition, advancing by the batch's
//! record count) before the batch's CRC is computed. The broker refuses a
//! batch whose sequence does not follow the last one it appended
//! (`OUT_OF_ORDER_SEQUENCE_NUMBER`, retriable), so when an earlier batch fails,
//! later in-flight ones fail too and are re-sent after it, in order, instead of
//! landing first. A retried batch that the broker already appended (its answer
//! was lost with the connection) is answered with its original offsets, so it
//! is not duplicated: delivery is exactly once per partition while the
//! producer lives (see protocol.md for the broker-restart caveat). When a
//! batch fails for good (a non-retriable error or its delivery timeout), its
//! sequence numbers leave a gap, so the partition's later batches that were
//! already sealed fail with the same cause, and the partition continues with
//! its epoch raised by one and sequences from 0 (the broker fences the old
//! epoch). A broker without InitProducerId (UNKNOWN_API) makes the producer
//! fall back to non-idempotent batches, with at-least-once delivery.
//!
//! Memory: every record reserves its estimated encoded size from a semaphore
//! of `buffer_bytes` before it is buffered; the bytes are released when its
//! batch completes (acknowledged or failed). `enqueue` waits while the buffer
//! is full, so memory stays bounded while the broker is away; buffered batches
//! fail after `delivery_timeout`, which frees the space again.
//!
//! A broker that is gone: when a batch (or the first metadata or producer-id
//! lookup) fails because no connection to the broker could be made for the
//! whole delivery timeout, the producer enters a *broker unavailable* state.
//! In it, `enqueue` fails at once with [`ClientError::BrokerUnavailable`]
//! instead of buffering the record for another full timeout, buffered batches
//! fail with the same error, and a batch in flight that fails is not retried.
//! The sender task tries to connect every `max(reconnect_backoff_max,
//! retry_backoff_max)`; the first connection that succeeds (or any produce
//! answer) ends the state. A broker that is back within the delivery timeout
//! (a restart) never causes the state: its batches are retried and delivered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{compress_batch, Compression, RecordBatchBuilder};
use sluice_protocol::{
    Acks, ErrorCode, ProducePartition, ProduceRequest, ProduceTopic, Request, Response,
};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::admin::unexpected;
use crate::cluster::Cluster;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::partitioner::partition_for_key;
// Looked up per record with keys this process chose: speed over SipHash.
use rustc_hash::FxHashMap as FastMap;

/// The offset reported for records sent with [`Acks::None`]: the broker does not say.
pub const UNKNOWN_OFFSET: u64 = u64::MAX;

/// Bytes a record costs in the buffer beyond its key, value and headers (varint framing).
const RECORD_OVERHEAD: usize = 24;
/// Largest produce request the sender builds from several partitions' batches.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Seal a partition's batch when it reaches this many bytes (default 256 KiB).
    pub batch_bytes: usize,
    /// Seal a partition's batch at the latest this long after its first record (default 5 ms).
    pub linger: Duration,
    /// Total bytes of records buffered or in flight; `enqueue` waits above it (default 64 MiB).
    pub buffer_bytes: usize,
    /// Acknowledgement level (default [`Acks::Leader`]).
    pub acks: Acks,
    /// A record fails if not acknowledged this long after it was enqueued (default 30 s).
    pub delivery_timeout: Duration,
    /// First wait before retrying a failed batch; doubles per attempt (default 100 ms).
    pub retry_backoff: Duration,
    /// Cap of the retry backoff (default 250 ms: a failover is noticed within
    /// a quarter second of the new leader taking over).
    pub retry_backoff_max: Duration,
    /// Retries per batch before it fails, within `delivery_timeout` (default unlimited).
    pub retries: u32,
    /// Batches of one partition in flight at once (default 5).
    pub max_in_flight_per_partition: usize,
    /// Stamp batches with a producer id and sequence numbers so the broker
    /// drops duplicates of retried batches and refuses out-of-order ones
    /// (default true; ignored with [`Acks::None`], which gets no answer to retry on).
    pub idempotent: bool,
    /// Codec for the records of each batch (default none): gzip, snappy, lz4
    /// or zstd in Kafka's framings. A batch is compressed once, by the sender
    /// task outside the producer's lock; one that would not shrink is sent
    /// uncompressed. `batch_bytes` counts uncompressed bytes.
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_bytes: 256 * 1024,
            linger: Duration::from_millis(5),
            buffer_bytes: 64 * 1024 * 1024,
            acks: Acks::Leader,
            delivery_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(250),
            retries: u32::MAX,
            max_in_flight_per_partition: 5,
            idempotent: true,
            compression: Compression::None,
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Destination topic (an `Arc<str>`, so sending many records to one topic does not copy its name).
    pub topic: Arc<str>,
    /// Optional key; decides the partition when `partition` is `None`.
    pub key: Option<Bytes>,
    /// Optional value (`None` is a null value, e.g. a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the epoch; `None` means "now" at enqueue time.
    pub timestamp: Option<i64>,
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
}

impl Record {
    /// A record for `topic` with the given value.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Record {
        Record {
            topic: topic.into(),
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: u32) -> Record {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since epoch).
    pub fn timestamp(mut self, timestamp_ms: i64) -> Record {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// Bytes this record reserves in the producer's buffer.
    fn estimated_size(&self) -> usize {
        RECORD_OVERHEAD
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
    }
}

/// Records without a timestamp that share one clock reading within a batch
/// (see [`OpenBatch::now_ms`]).
const CLOCK_EVERY: u32 = 16;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Completion of one batch, shared by the Delivery of each of its records.

struct CompletionState {
    result: Option<Result<u64>>,
    wakers: Vec<Waker>,
}

/// The outcome of one batch: its base offset or an error.
struct Completion {
    state: Mutex<CompletionState>,
}

impl Completion {
    fn new() -> Arc<Completion> {
        Arc::new(Completion {
            state: Mutex::new(CompletionState {
                result: None,
                wakers: Vec::new(),
            }),
        })
    }

    fn complete(&self, result: Result<u64>) {
        let wakers = {
            let mut s = lock(&self.state);
            if s.result.is_some() {
                return;
            }
            s.result = Some(result);
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves to `(partition, offset)` once a buffered record is acknowledged.
///
/// Holding a `Delivery` costs no allocation: all records of a batch share one
/// completion. Dropping it does not cancel the send.
pub struct Delivery {
    completion: Arc<Completion>,
    partition: u32,
    index: u32,
    waker_slot: Option<usize>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("partition", &self.partition)
            .field("index", &self.index)
            .finish()
    }
}

impl Delivery {
    /// The partition the record was assigned to.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// True when `other` is in the same batch as this record: both resolve
    /// together, with the same outcome (offsets differ by their positions).
    pub fn same_batch(&self, other: &Delivery) -> bool {
        Arc::ptr_eq(&self.completion, &other.completion)
    }
}

impl Future for Delivery {
    type Output = Result<(u32, u64)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut s = lock(&this.completion.state);
        match &s.result {
            Some(Ok(base)) => {
                let offset = if *base == UNKNOWN_OFFSET {
                    UNKNOWN_OFFSET
                } else {
                    base + u64::from(this.index)
                };
                Poll::Ready(Ok((this.partition, offset)))
            }
            Some(Err(e)) => Poll::Ready(Err(e.clone())),
            None => {
                match this.waker_slot {
                    Some(i) if i < s.wakers.len() => {
                        if !s.wakers[i].will_wake(cx.waker()) {
                            s.wakers[i] = cx.waker().clone();
                        }
                    }
                    _ => {
                        this.waker_slot = Some(s.wakers.len());
                        s.wakers.push(cx.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Accumulator state.

struct OpenBatch {
    seq: u64,
    builder: RecordBatchBuilder,
    completion: Arc<Completion>,
    created: Instant,
    reserved: usize,
    /// The last wall-clock reading (ms) handed to records without a timestamp.
    clock_ms: i64,
    /// Records that may still use `clock_ms` before the clock is read again.
    clock_uses: u32,
}

impl OpenBatch {
    /// CreateTime for a record without a timestamp. Reading the clock costs
    /// more than appending a small record, so it is read for the batch's first
    /// such record and then every [`CLOCK_EVERY`] records. A timestamp is thus
    /// never later than the record's enqueue, and earlier by at most the time
    /// the previous `CLOCK_EVERY - 1` records of its batch took to arrive,
    /// bounded by the linger (a batch is sealed at most `linger` after its first
    /// record): microseconds when records stream in, when they are sparse
    /// the linger at worst.
    fn now_ms(&mut self) -> i64 {
        if self.clock_uses == 0 {
            self.clock_ms = now_ms();
            self.clock_uses = CLOCK_EVERY;
        }
        self.clock_uses -= 1;
        self.clock_ms
    }
}

struct SealedBatch {
    seq: u64,
    /// Sealed with a producer id: the partition epoch bump it was stamped with.
    idempotent_epoch: Option<i16>,
    topic: Arc<str>,
    partition: u32,
    data: Bytes,
    records: usize,
    completion: Arc<Completion>,
    created: Instant,
    reserved: usize,
    attempts: u32,
    last_error: Option<ClientError>,
    /// `data` went through the configured compression (done once, before the first send).
    compressed: bool,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<SealedBatch>,
    in_flight: usize,
    /// Batches of this partition that failed retriably and are not done yet:
    /// while any exists, only one batch is in flight (keeps order on retry).
    retrying: usize,
    backoff_until: Option<Instant>,
    /// The last batch was sealed because it was full: start the next one at full size.
    hot: bool,
    /// The partition's latest send error: the cause reported for batches that
    /// expire while queued behind a failing one.
    last_error: Option<ClientError>,
    /// Sequence number of the next record sealed into an idempotent batch.
    next_sequence: i32,
    /// Added to the producer epoch for this partition: raised when an idempotent
    /// batch failed for good, fencing the batches sealed before.
    epoch_bump: i16,
}

struct TopicQueue {
    name: Arc<str>,
    /// Partitions in the topic as last seen in metadata (1 when the topic is not known yet).
    partitions: u32,
    sticky: u32,
    queues: FastMap<u32, PartitionQueue>,
}

#[derive(Default)]
struct State {
    topics: FastMap<String, TopicQueue>,
    next_seq: u64,
    /// Open batches with a seq below this are sealed without waiting for linger.
    flush_below: u64,
    /// Every batch not yet completed, by seq (for flush).
    outstanding: BTreeMap<u64, Arc<Completion>>,
    /// Set by close: seal everything, then stop once nothing is outstanding.
    closing: bool,
    /// Set while the broker is unavailable (see the module docs).
    unavailable: Option<Unavailable>,
    /// Allocations of completed batches, reclaimed for the next builders so a
    /// busy producer does not allocate (and page-fault in) a buffer per batch.
    /// At most [`POOL_BUFFERS`], each at most [`Shared::max_pooled_capacity`].
    pool: Vec<BytesMut>,
}

/// The broker stayed unreachable past the delivery timeout (see the module docs).
struct Unavailable {
    /// The connection failure that outlasted the delivery timeout.
    cause: ClientError,
    /// When the sender task next tries to connect.
    next_probe: Instant,
    /// A connection attempt is under way.
    probing: bool,
}

/// Most batch buffers a producer keeps for reuse.
const POOL_BUFFERS: usize = 4;

/// A produce request unanswered this long makes the producer ask the
/// metadata whether its partitions' leaders moved meanwhile.
const STALL_AFTER: Duration = Duration::from_millis(1000);

/// How often the metadata is asked while requests stall, and how long
/// each broker may take to answer it.
const STALL_CHECK: Duration = Duration::from_millis(500);

/// The batches of one produce request waiting for its answer; whoever takes
/// them (the answer, or the stall check) completes them.
type RequestSlot = Arc<Mutex<Option<Vec<SealedBatch>>>>;

/// A produce request waiting for its answer.
struct InFlightRequest {
    /// The broker it went to (`None`: the bootstrap broker).
    node: Option<u32>,
    sent: Instant,
    slot: RequestSlot,
}

/// The produce requests waiting for answers, by id.
#[derive(Default)]
struct Requests {
    next_id: u64,
    waiting: HashMap<u64, InFlightRequest>,
    /// When the metadata was last asked because of a stall.
    last_check: Option<Instant>,
    checking: bool,
}

struct Shared {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    memory: Arc<Semaphore>,
    state: Mutex<State>,
    wake: Notify,
    /// Start of the current run of failed metadata lookups (see `partition_count`).
    metadata_failing_since: Mutex<Option<Instant>>,
    /// `(producer id, epoch)` once InitProducerId answered; `None` inside means
    /// not idempotent (disabled, acks = none, or the broker lacks the api).
    producer_id: tokio::sync::OnceCell<Option<(i64, i16)>>,
    /// Mirrors `State::unavailable.is_some()`, so `enqueue` can fail fast
    /// before it waits for buffer memory without taking the state lock.
    unavailable_flag: AtomicBool,
    /// Produce requests waiting for their answers (see [`stall_check`]).
    requests: Mutex<Requests>,
}

/// Stops the sender task once every handle of the producer is gone.
struct Handle {
    shared: Arc<Shared>,
    closed: AtomicBool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.wake.notify_one();
    }
}

/// An asynchronous, batching producer. Cheap to clone; clones share buffers and connections.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl Producer {
    /// A producer for the broker at `bootstrap` with default settings.
    ///
    /// Must be called inside a tokio runtime. Does not connect yet: a broker
    /// that is down shows up as failed sends after the delivery timeout.
    pub fn new(bootstrap: impl Into<String>) -> Producer {
        Producer::with_config(ClientConfig::new(bootstrap), ProducerConfig::default())
    }

    /// A producer with full settings.
    pub fn with_config(client: ClientConfig, config: ProducerConfig) -> Producer {
        let shared = Arc::new(Shared::new(client, config));
        tokio::spawn(sender_loop(shared.clone()));
        Producer {
            handle: Arc::new(Handle {
                shared,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The producer's settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.handle.shared.config
    }

    /// Bytes currently reserved by buffered or in-flight records.
    pub fn buffered_bytes(&self) -> usize {
        let s = &self.handle.shared;
        s.config.buffer_bytes - s.memory.available_permits()
    }

    /// One line per partition with queued or in-flight batches (ready, in
    /// flight, retrying, backoff, last error) and the requests waiting for
    /// answers, for diagnostics.
    pub fn describe_state(&self) -> String {
        let s = &self.handle.shared;
        let mut out = String::new();
        {
            let state = lock(&s.state);
            for t in state.topics.values() {
                for (p, q) in &t.queues {
                    if q.ready.is_empty() && q.in_flight == 0 && q.open.is_none() {
                        continue;
                    }
                    out.push_str(&format!(
                        "{}/{p}: open {} ready {} in flight {} retrying {} backoff {:?} epoch bump {} next seq {} last error {:?}\n",
                        t.name,
                        q.open.is_some(),
                        q.ready.len(),
                        q.in_flight,
                        q.retrying,
                        q.backoff_until.map(|u| u.saturating_duration_since(Instant::now())),
                        q.epoch_bump,
                        q.next_sequence,
                        q.last_error.as_ref().map(|e| e.to_string()),
                    ));
                }
            }
            out.push_str(&format!(
                "outstanding {} unavailable {} buffered {}\n",
                state.outstanding.len(),
                state.unavailable.is_some(),
                self.buffered_bytes()
            ));
        }
        let r = lock(&s.requests);
        for w in r.waiting.values() {
            let batches = lock(&w.slot)
                .as_ref()
                .map(|b| {
                    b.iter()
                        .map(|b| format!("{}/{}", b.topic, b.partition))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "request to {:?} waiting {:?}: {batches}\n",
                w.node,
                w.sent.elapsed()
            ));
        }
        out.push_str(&format!("stall check running {}\n", r.checking));
        out
    }

    /// Sends a record and waits for its acknowledgement: `(partition, offset)`.
    ///
    /// The record is buffered when the returned future is first polled. To
    /// have many records in flight from one task, use [`enqueue`](Self::enqueue)
    /// and await the [`Delivery`] handles later.
    pub fn send(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<(u32, u64)>> + Send + 'static {
        let this = self.clone();
        async move { this.enqueue(record).await?.await }
    }

    /// Buffers a record, waiting while the buffer is full, and returns a handle
    /// that resolves when the record is acknowledged.
    ///
    /// Records enqueued one after another by one task keep their order within a partition.
    pub async fn enqueue(&self, record: Record) -> Result<Delivery> {
        let shared = &self.handle.shared;
        if self.handle.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if shared.unavailable_flag.load(Ordering::Acquire) {
            if let Some(e) = shared.unavailable_error(&lock(&shared.state)) {
                return Err(e);
            }
        }
        let size = record.estimated_size();
        let limit = shared.config.buffer_bytes.min(u32::MAX as usize);
        if size > limit {
            return Err(ClientError::RecordTooLarge { size, max: limit });
        }
        // Reserve buffer memory first: this is where backpressure happens. The
        // permit is only forgotten (handed to the batch) once the record is
        // appended, so dropping this future midway gives the memory back.
        let permits = size as u32;
        // A task enqueuing in a tight loop rarely waits, so take part in tokio's
        // cooperative budget: it yields now and then instead of starving the
        // sender and connection tasks that share its worker thread.
        tokio::task::consume_budget().await;
        let permit = match shared.memory.try_acquire_many(permits) {
            Ok(p) => p,
            Err(_) => match shared.memory.acquire_many(permits).await {
                Ok(p) => p,
                Err(_) => return Err(ClientError::Closed),
            },
        };
        self.init_producer_id().await?;
        let partitions = self.partition_count(&record).await?;
        let delivery = shared.append(record, size, partitions)?;
        // The batch now owns these bytes; `complete` returns them.
        permit.forget();
        Ok(delivery)
    }

    /// The producer id of an idempotent producer, asked for once (retrying
    /// retriable errors until the delivery timeout).
    async fn init_producer_id(&self) -> Result<Option<(i64, i16)>> {
        let shared = &self.handle.shared;
        if !shared.config.idempotent || shared.config.acks == Acks::None {
            return Ok(None);
        }
        let id = shared
            .producer_id
            .get_or_try_init(|| async {
                let deadline = Instant::now() + shared.config.delivery_timeout;
                let mut attempt = 0u32;
                loop {
                    let r = shared
                        .cluster
                        .bootstrap()
                        .request(&Request::InitProducerId)
                        .await;
                    match r {
                        Ok(Response::InitProducerId(r)) if r.error == ErrorCode::None => {
                            tracing::debug!(producer_id = r.producer_id, "idempotent producer");
                            return Ok(Some((r.producer_id, r.producer_epoch)));
                        }
                        Ok(Response::InitProducerId(r)) => {
                            return Err(ClientError::broker(r.error, "InitProducerId"))
                        }
                        Ok(other) => return Err(unexpected("InitProducerId", other)),
                        Err(ClientError::Broker {
                            code: ErrorCode::UnknownApi | ErrorCode::UnsupportedVersion,
                            ..
                        }) => {
                            tracing::warn!(
                                "broker has no InitProducerId: producing without idempotence"
                            );
                            return Ok(None);
                        }
                        Err(e) => {
                            attempt += 1;
                            shared.retry_pause(e, attempt, deadline).await?;
                        }
                    }
                }
            })
            .await?;
        Ok(*id)
    }

    /// Partition count of the record's topic, asking the broker when it is not cached.
    ///
    /// A cached count older than `metadata_max_age` is refreshed in the
    /// background (this record still uses it); an explicit partition beyond
    /// it asks the broker at once, as the topic may have grown since.
    async fn partition_count(&self, record: &Record) -> Result<Option<u32>> {
        let shared = &self.handle.shared;
        if let Some((n, refresh)) = shared.cluster.cached_partition_count(&record.topic) {
            if record.partition.is_some_and(|p| p >= n) {
                if let Ok(Some(route)) = shared.cluster.refresh_route(&record.topic).await {
                    return Ok(Some(route.leaders.len() as u32));
                }
            } else if refresh {
                let cluster = Arc::clone(&shared.cluster);
                let topic = record.topic.to_string();
                tokio::spawn(async move {
                    if let Err(e) = cluster.fetch_metadata(vec![topic.clone()]).await {
                        tracing::debug!(topic, error = %e, "periodic metadata refresh failed");
                    }
                });
            }
            return Ok(Some(n));
        }
        {
            let state = lock(&shared.state);
            if let Some(t) = state.topics.get(&*record.topic) {
                if t.partitions > 0 {
                    return Ok(Some(t.partitions));
                }
            }
        }
        if record.partition.is_some() {
            return Ok(None);
        }
        // First record for this topic: learn its partition count, retrying until
        // the delivery timeout while the broker is unreachable. The timeout counts
        // from the start of the current run of failures, so once the broker has
        // been away that long, each further record fails after one attempt.
        let since = *lock(&shared.metadata_failing_since);
        let deadline = since.unwrap_or_else(Instant::now) + shared.config.delivery_timeout;
        let mut attempt = 0u32;
        loop {
            let result = shared.cluster.route(&record.topic).await;
            {
                let mut since = lock(&shared.metadata_failing_since);
                match &result {
                    Err(_) => {
                        since.get_or_insert_with(Instant::now);
                    }
                    Ok(_) => *since = None,
                }
            }
            match result {
                Ok(Some(route)) => return Ok(Some(route.leaders.len() as u32)),
                // Unknown topic: the first produce auto-creates it (if the broker allows).
                Ok(None) => return Ok(None),
                Err(e) => {
                    attempt += 1;
                    shared.retry_pause(e, attempt, deadline).await?;
                }
            }
        }
    }

    /// Seals every buffered batch and waits until all records enqueued so far
    /// are acknowledged or have failed.
    pub async fn flush(&self) {
        let shared = &self.handle.shared;
        let waiting: Vec<Arc<Completion>> = {
            let mut state = lock(&shared.state);
            state.flush_below = state.next_seq;
            state.outstanding.values().cloned().collect()
        };
        shared.wake.notify_one();
        for completion in waiting {
            let _ = (Delivery {
                completion,
                partition: 0,
                index: 0,
                waker_slot: None,
            })
            .await;
        }
    }

    /// Stops accepting records and delivers everything buffered (like [`flush`](Self::flush)).
    pub async fn close(&self) {
        self.handle.closed.store(true, Ordering::Release);
        self.flush().await;
    }
}

/// After an idempotent batch of `queue` failed for good: raise the partition's
/// epoch and restart its sequences (the next sealed batch starts a new epoch at
/// sequence 0, which the broker accepts and which fences the older epoch), and
/// fail the queued batches sealed under the old epoch with the same cause
/// (their sequences follow the gap). Old-epoch batches still in flight fail
/// for good when they come back with an error.
fn fence(
    queue: &mut PartitionQueue,
    failed: &mut Vec<(SealedBatch, ClientError)>,
    cause: &ClientError,
) {
    queue.epoch_bump = queue.epoch_bump.saturating_add(1);
    queue.next_sequence = 0;
    let bump = queue.epoch_bump;
    let mut kept = VecDeque::with_capacity(queue.ready.len());
    for b in queue.ready.drain(..) {
        if b.idempotent_epoch.is_some_and(|e| e < bump) {
            if b.attempts > 0 {
                queue.retrying = queue.retrying.saturating_sub(1);
            }
            failed.push((b, cause.clone()));
        } else {
            kept.push_back(b);
        }
    }
    queue.ready = kept;
}

impl Shared {
    /// The accumulator for `config`, with its limits raised to at least 1
    /// (and the buffer to what a semaphore can count).
    fn new(client: ClientConfig, mut config: ProducerConfig) -> Shared {
        config.max_in_flight_per_partition = config.max_in_flight_per_partition.max(1);
        config.batch_bytes = config.batch_bytes.max(1);
        config.buffer_bytes = config.buffer_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Shared {
            cluster: Cluster::new(client),
            memory: Arc::new(Semaphore::new(config.buffer_bytes)),
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            metadata_failing_since: Mutex::new(None),
            producer_id: tokio::sync::OnceCell::new(),
            unavailable_flag: AtomicBool::new(false),
            requests: Mutex::new(Requests::default()),
        }
    }

    /// The error for a send refused while the broker is unavailable.
    fn unavailable_error(&self, state: &State) -> Option<ClientError> {
        state
            .unavailable
            .as_ref()
            .map(|u| ClientError::BrokerUnavailable {
                after: self.config.delivery_timeout,
                source: Box::new(u.cause.clone()),
            })
    }

    /// Enters the broker-unavailable state if `e` says the broker stayed
    /// unreachable past the delivery timeout (no-op otherwise or when already in it).
    fn note_failure(&self, state: &mut State, e: &ClientError) {
        if state.unavailable.is_some() || !e.is_broker_unavailable() {
            return;
        }
        let cause = e.root().clone();
        tracing::warn!(error = %cause, "broker unreachable past the delivery timeout: failing sends until it is back");
        state.unavailable = Some(Unavailable {
            cause,
            next_probe: Instant::now() + self.probe_interval(),
            probing: false,
        });
        self.unavailable_flag.store(true, Ordering::Release);
    }

    /// Leaves the broker-unavailable state (a connection succeeded).
    fn note_reachable(&self, state: &mut State) {
        if state.unavailable.take().is_some() {
            tracing::info!("broker reachable again");
            self.unavailable_flag.store(false, Ordering::Release);
        }
    }

    /// Pause between connection attempts while the broker is unavailable: long
    /// enough that the connection's own reconnect backoff has passed, so each
    /// attempt really dials.
    fn probe_interval(&self) -> Duration {
        self.cluster
            .config()
            .reconnect_backoff_max
            .max(self.config.retry_backoff_max)
    }

    /// Records the outcome of a connection attempt made while unavailable.
    fn probe_done(&self, connected: bool) {
        {
            let mut state = lock(&self.state);
            if connected {
                self.note_reachable(&mut state);
            } else if let Some(u) = state.unavailable.as_mut() {
                u.probing = false;
                u.next_probe = Instant::now() + self.probe_interval();
            }
        }
        self.wake.notify_one();
    }

    /// `(producer id, epoch)` when batches are to be stamped.
    fn producer(&self) -> Option<(i64, i16)> {
        self.producer_id.get().copied().flatten()
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        self.config
            .retry_backoff
            .saturating_mul(1u32 << exp)
            .min(self.config.retry_backoff_max)
    }

    /// After a failed metadata-style request: sleeps the backoff of `attempt`
    /// (at most until `deadline`) when `e` is retriable and time is left,
    /// otherwise fails with [`ClientError::DeliveryTimeout`] caused by `e`.
    async fn retry_pause(&self, e: ClientError, attempt: u32, deadline: Instant) -> Result<()> {
        let now = Instant::now();
        if !e.is_retriable() || now >= deadline {
            let e = ClientError::DeliveryTimeout {
                after: self.config.delivery_timeout,
                source: Box::new(e),
            };
            self.note_failure(&mut lock(&self.state), &e);
            return Err(e);
        }
        tokio::time::sleep(self.backoff(attempt).min(deadline - now)).await;
        Ok(())
    }

    /// Appends a record to its partition's open batch (the hot path: one lock, no allocation
    /// beyond what the builder grows by).
    fn append(&self, record: Record, size: usize, partitions: Option<u32>) -> Result<Delivery> {
        let producer = self.producer();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(e) = self.unavailable_error(state) {
            return Err(e);
        }
        let topic = match state.topics.get_mut(&*record.topic) {
            Some(t) => t,
            None => state
                .topics
                .entry(record.topic.to_string())
                .or_insert_with(|| TopicQueue {
                    name: record.topic.clone(),
                    partitions: 0,
                    sticky: 0,
                    queues: FastMap::default(),
                }),
        };
        if let Some(n) = partitions {
            if n != topic.partitions {
                topic.partitions = n;
                if n > 0 {
                    topic.sticky = (now_ms() as u32) % n;
                }
            }
        }
        let n = topic.partitions.max(1);
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => {
                if partitions.is_some() && topic.partitions > 0 && p >= topic.partitions {
                    return Err(ClientError::InvalidArgument(format!(
                        "partition {p} does not exist: topic \"{}\" has {} partitions",
                        record.topic, topic.partitions
                    )));
                }
                p
            }
            (None, Some(key)) => partition_for_key(key, n),
            (None, None) => topic.sticky % n,
        };
        let batch_bytes = self.config.batch_bytes;
        let queue = topic.queues.entry(partition).or_default();
        let mut sealed = false;
        // Seal the open batch first if this record would push it past batch_bytes.
        if let Some(open) = &queue.open {
            if !open.builder.is_empty() && open.builder.encoded_len() + size > batch_bytes {
                seal(queue, &topic.name, partition, producer);
                queue.hot = true;
                sealed = true;
            }
        }
        let new_batch = queue.open.is_none();
        if new_batch {
            // A busy partition gets a full-size buffer at once (no regrowth
            // copies); a quiet one starts small so idle partitions cost little.
            let capacity = if queue.hot {
                batch_bytes + 1024
            } else {
                batch_bytes.min(64 * 1024).max(size + 128)
            };
            let builder = match state.pool.pop() {
                Some(buf) if buf.capacity() >= capacity => RecordBatchBuilder::from_buffer(buf),
                other => {
                    // Too small for this batch: keep it for a quieter partition.
                    if let Some(buf) = other {
                        state.pool.push(buf);
                    }
                    RecordBatchBuilder::with_capacity(capacity)
                }
            };
            let seq = state.next_seq;
            state.next_seq += 1;
            let completion = Completion::new();
            state.outstanding.insert(seq, completion.clone());
            queue.open = Some(OpenBatch {
                seq,
                builder,
                completion,
                created: Instant::now(),
                reserved: 0,
                clock_ms: 0,
                clock_uses: 0,
            });
        }
        let Some(open) = queue.open.as_mut() else {
            return Err(ClientError::Closed);
        };
        let index = open.builder.record_count() as u32;
        let timestamp = match record.timestamp {
            Some(t) => t,
            None => open.now_ms(),
        };
        push_record(&mut open.builder, timestamp, &record);
        open.reserved += size;
        let delivery = Delivery {
            completion: open.completion.clone(),
            partition,
            index,
            waker_slot: None,
        };
        if open.builder.encoded_len() >= batch_bytes {
            seal(queue, &topic.name, partition, producer);
            queue.hot = true;
            sealed = true;
        }
        if sealed
            && record.key.is_none()
            && record.partition.is_none()
            && partition == topic.sticky % n
        {
            topic.sticky = (topic.sticky + 1) % n;
        }
        drop(guard);
        if sealed || new_batch {
            self.wake.notify_one();
        }
        Ok(delivery)
    }
}

fn push_record(builder: &mut RecordBatchBuilder, timestamp: i64, record: &Record) {
    let key = record.key.as_deref();
    let value = record.value.as_deref();
    const INLINE: usize = 8;
    if record.headers.is_empty() {
        builder.push(timestamp, key, value, &[]);
    } else if record.headers.len() <= INLINE {
        let mut headers: [(&str, &[u8]); INLINE] = [("", &[]); INLINE];
        for (slot, (k, v)) in headers.iter_mut().zip(&record.headers) {
            *slot = (k.as_str(), v.as_ref());
        }
        builder.push(timestamp, key, value, &headers[..record.headers.len()]);
    } else {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
            .collect();
        builder.push(timestamp, key, value, &headers);
    }
}

/// `seq + n`, wrapping from `i32::MAX` to 0 as the broker's sequence numbers do.
fn add_seq(seq: i32, n: usize) -> i32 {
    let sum = i64::from(seq.max(0)) + n as i64;
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// Moves a partition's open batch to its ready queue, stamping it with the
/// producer id, epoch and the partition's next sequence when idempotent.
fn seal(
    queue: &mut PartitionQueue,
    topic: &Arc<str>,
    partition: u32,
    producer: Option<(i64, i16)>,
) {
    if let Some(mut open) = queue.open.take() {
        let records = open.builder.record_count();
        let idempotent_epoch = producer.map(|(id, epoch)| {
            open.builder.set_producer(
                id,
                epoch.saturating_add(queue.epoch_bump),
                queue.next_sequence,
            );
            queue.next_sequence = add_seq(queue.next_sequence, records);
            queue.epoch_bump
        });
        let data = open.builder.into_batch();
        queue.ready.push_back(SealedBatch {
            seq: open.seq,
            idempotent_epoch,
            topic: topic.clone(),
            partition,
            data,
            records,
            completion: open.completion,
            created: open.created,
            reserved: open.reserved,
            attempts: 0,
            last_error: None,
            compressed: false,
        });
    }
}

// ---------------------------------------------------------------------------
// The sender task.

/// What one pass of the sender decided.
struct Plan {
    dispatch: Vec<SealedBatch>,
    failed: Vec<(SealedBatch, ClientError)>,
    next_wakeup: Option<Instant>,
    /// The broker is unavailable and it is time to try a connection.
    probe: bool,
}

impl Shared {
    fn plan(&self, now: Instant) -> Plan {
        let producer = self.producer();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let linger = self.config.linger;
        let max_in_flight = self.config.max_in_flight_per_partition;
        let delivery_timeout = self.config.delivery_timeout;
        let mut plan = Plan {
            dispatch: Vec::new(),
            failed: Vec::new(),
            next_wakeup: None,
            probe: false,
        };
        let wake_at = |t: Instant, plan: &mut Plan| {
            plan.next_wakeup = Some(plan.next_wakeup.map_or(t, |w| w.min(t)));
        };
        let mut unavailable = self.unavailable_error(state);
        for topic in state.topics.values_mut() {
            let n = topic.partitions.max(1);
            for (&partition, queue) in topic.queues.iter_mut() {
                if let Some(open) = &queue.open {
                    let due = open.created + linger;
                    if due <= now || open.seq < state.flush_below || state.closing {
                        seal(queue, &topic.name, partition, producer);
                        queue.hot = false;
                        if partition == topic.sticky % n {
                            topic.sticky = (topic.sticky + 1) % n;
                        }
                    } else {
                        wake_at(due, &mut plan);
                    }
                }
                // Expire batches that waited past the delivery timeout (all
                // of them while the broker is unavailable).
                while let Some(front) = queue.ready.front() {
                    if front.created + delivery_timeout > now && unavailable.is_none() {
                        break;
                    }
                    if let Some(b) = queue.ready.pop_front() {
                        if b.attempts > 0 {
                            queue.retrying = queue.retrying.saturating_sub(1);
                        }
                        let err =
                            unavailable
                                .clone()
                                .unwrap_or_else(|| ClientError::DeliveryTimeout {
                                    after: delivery_timeout,
                                    source: Box::new(
                                        b.last_error
                                            .clone()
                                            .or_else(|| queue.last_error.clone())
                                            .unwrap_or(ClientError::Timeout {
                                                what: format!(
                                                    "produce to \"{}\"/{}",
                                                    b.topic, b.partition
                                                ),
                                                after: delivery_timeout,
                                            }),
                                    ),
                                });
                        if unavailable.is_none() && err.is_broker_unavailable() {
                            // Seen through the queue's error: the broker has
                            // been unreachable for a whole delivery timeout.
                            unavailable = Some(ClientError::BrokerUnavailable {
                                after: delivery_timeout,
                                source: Box::new(err.root().clone()),
                            });
                        }
                        let idempotent = b.idempotent_epoch.is_some();
                        plan.failed.push((b, err.clone()));
                        if idempotent {
                            fence(queue, &mut plan.failed, &err);
                        }
                    }
                }
                if let Some(until) = queue.backoff_until {
                    if until > now {
                        wake_at(until, &mut plan);
                        if let Some(front) = queue.ready.front() {
                            wake_at(front.created + delivery_timeout, &mut plan);
                        }
                        continue;
                    }
                    queue.backoff_until = None;
                }
                let limit = if queue.retrying > 0 { 1 } else { max_in_flight };
                while queue.in_flight < limit {
                    let Some(b) = queue.ready.pop_front() else {
                        break;
                    };
                    queue.in_flight += 1;
                    plan.dispatch.push(b);
                }
                if let Some(front) = queue.ready.front() {
                    wake_at(front.created + delivery_timeout, &mut plan);
                }
            }
        }
        if let Some(ClientError::BrokerUnavailable { source, .. }) = &unavailable {
            if state.unavailable.is_none() {
                self.note_failure(
                    state,
                    &ClientError::DeliveryTimeout {
                        after: delivery_timeout,
                        source: source.clone(),
                    },
                );
                // Batches of the partitions visited before it was noticed.
                plan.next_wakeup = Some(now);
            }
        }
        if let Some(u) = state.unavailable.as_mut() {
            if !u.probing {
                if u.next_probe <= now {
                    u.probing = true;
                    plan.probe = true;
                } else {
                    wake_at(u.next_probe, &mut plan);
                }
            }
        }
        plan
    }

    /// Records the outcome of a batch that was sent (or failed before sending).
    fn finish_batch(&self, mut batch: SealedBatch, result: Result<u64>, was_in_flight: bool) {
        let now = Instant::now();
        let mut requeued = false;
        let mut fenced = Vec::new();
        let outcome = {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            if result.is_ok() {
                self.note_reachable(state);
            }
            let unavailable = self.unavailable_error(state);
            let queue = state
                .topics
                .get_mut(&*batch.topic)
                .and_then(|t| t.queues.get_mut(&batch.partition));
            let mut gone = None;
            let outcome = match (result, queue) {
                (Ok(base), Some(queue)) => {
                    if was_in_flight {
                        queue.in_flight = queue.in_flight.saturating_sub(1);
                    }
                    // Back to full pipelining only once every retried batch is done;
                    // a later batch succeeding while an earlier one waits proves nothing.
                    if batch.attempts > 0 {
                        queue.retrying = queue.retrying.saturating_sub(1);
                        if queue.retrying == 0 {
                            queue.last_error = None;
                        }
                    }
                    Some((batch, Ok(base)))
                }
                (Err(e), Some(queue)) => {
                    if was_in_flight {
                        queue.in_flight = queue.in_flight.saturating_sub(1);
                    }
                    let deadline = batch.created + self.config.delivery_timeout;
                    // Sealed before the partition's epoch was raised: its sequence follows a
                    // batch that failed for good, so retrying cannot succeed.
                    let stale = batch
                        .idempotent_epoch
                        .is_some_and(|bump| bump < queue.epoch_bump);
                    if e.is_retriable()
                        && !stale
                        && unavailable.is_none()
                        && now < deadline
                        && batch.attempts < self.config.retries
                    {
                        if batch.attempts == 0 {
                            queue.retrying += 1;
                        }
                        batch.attempts += 1;
                        let wait = self.backoff(batch.attempts);
                        tracing::debug!(topic = %batch.topic, partition = batch.partition, attempt = batch.attempts, error = %e, "retrying batch");
                        queue.last_error = Some(e.clone());
                        batch.last_error = Some(e);
                        let until = (now + wait).min(deadline);
                        queue.backoff_until =
                            Some(queue.backoff_until.map_or(until, |u| u.max(until)));
                        // Keep sealed order: the retried batch goes before every later one.
                        let pos = queue
                            .ready
                            .iter()
                            .position(|b| b.seq > batch.seq)
                            .unwrap_or(queue.ready.len());
                        queue.ready.insert(pos, batch);
                        requeued = true;
                        None
                    } else {
                        // The batch fails for good.
                        if batch.attempts > 0 {
                            queue.retrying = queue.retrying.saturating_sub(1);
                        }
                        let err = match unavailable {
                            Some(u) if e.is_retriable() => u,
                            _ if e.is_retriable() && now >= deadline => {
                                ClientError::DeliveryTimeout {
                                    after: self.config.delivery_timeout,
                                    source: Box::new(e),
                                }
                            }
                            _ => e,
                        };
                        gone = Some(err.clone());
                        if batch.idempotent_epoch.is_some() && !stale {
                            fence(queue, &mut fenced, &err);
                        }
                        Some((batch, Err(err)))
                    }
                }
                (result, None) => Some((batch, result)),
            };
            if let Some(e) = gone {
                self.note_failure(state, &e);
            }
            outcome
        };
        if let Some((batch, result)) = outcome {
            self.complete(batch, result);
        }
        for (batch, err) in fenced {
            self.complete(batch, Err(err));
        }
        if requeued {
            self.wake.notify_one();
        }
    }

    /// Largest buffer worth pooling: a full-size batch buffer with slack; a
    /// bigger one (a single oversized record) is freed instead.
    fn max_pooled_capacity(&self) -> usize {
        self.config
            .batch_bytes
            .saturating_mul(2)
            .saturating_add(2048)
    }

    /// Resolves a batch's deliveries and returns its bytes to the buffer.
    ///
    /// The request is done with the batch by now, so its allocation is usually
    /// unreferenced: it goes back to the pool for the next builder.
    fn complete(&self, mut batch: SealedBatch, result: Result<u64>) {
        if let Err(e) = &result {
            tracing::debug!(topic = %batch.topic, partition = batch.partition, records = batch.records, error = %e, "batch failed");
        }
        // Still shared (e.g. a write in flight): just drop our reference.
        let reclaimed = std::mem::take(&mut batch.data)
            .try_into_mut()
            .ok()
            .filter(|buf| buf.capacity() <= self.max_pooled_capacity());
        let unpooled = {
            let mut state = lock(&self.state);
            state.outstanding.remove(&batch.seq);
            match reclaimed {
                Some(buf) if state.pool.len() < POOL_BUFFERS => {
                    state.pool.push(buf);
                    None
                }
                other => other,
            }
        };
        drop(unpooled);
        // Free the memory first: whoever sees the delivery resolve also sees the room.
        self.memory.add_permits(batch.reserved);
        batch.completion.complete(result);
        self.wake.notify_one();
    }
}

async fn sender_loop(shared: Arc<Shared>) {
    loop {
        let plan = shared.plan(Instant::now());
        if plan.probe {
            // Bounded by the connect timeout; holds the producer only that long.
            let shared = shared.clone();
            tokio::spawn(async move {
                let connected = shared.cluster.bootstrap().connect().await.is_ok();
                shared.probe_done(connected);
            });
        }
        for (batch, err) in plan.failed {
            shared.complete(batch, Err(err));
        }
        {
            let state = lock(&shared.state);
            if state.closing && state.outstanding.is_empty() {
                break;
            }
        }
        if !plan.dispatch.is_empty() {
            dispatch(&shared, plan.dispatch).await;
        }
        let next_wakeup = match (plan.next_wakeup, stall_check(&shared)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next_wakeup {
            Some(at) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
    tracing::debug!("producer sender stopped");
}

/// Groups batches by partition leader into produce requests and sends them.
async fn dispatch(shared: &Arc<Shared>, batches: Vec<SealedBatch>) {
    // Learn routes for topics not in the metadata cache (first send, or after an error).
    let mut by_node: HashMap<Option<u32>, Vec<SealedBatch>> = HashMap::new();
    let codec = shared.config.compression;
    for mut batch in batches {
        if !batch.compressed {
            batch.compressed = true;
            if let Some(data) = compress_batch(&batch.data, codec) {
                batch.data = data;
            }
        }
        let route = match shared.cluster.cached_route(&batch.topic) {
            Some(r) => Some(r),
            None => shared.cluster.route(&batch.topic).await.ok().flatten(),
        };
        let node = route.and_then(|r| r.leaders.get(batch.partition as usize).copied());
        by_node.entry(node).or_default().push(batch);
    }
    for (node, batches) in by_node {
        let conn = match node {
            Some(n) => shared.cluster.node(n),
            None => shared.cluster.bootstrap().clone(),
        };
        let mut request_batches = Vec::new();
        let mut request_bytes = 0;
        for batch in batches {
            // One batch per partition per request keeps the response mapping simple.
            let dup = request_batches
                .iter()
                .any(|b: &SealedBatch| b.partition == batch.partition && b.topic == batch.topic);
            // The broker refuses a request listing more partitions than its
            // `max_request_partitions` (default below): split before that.
            let full = request_batches.len() >= sluice_protocol::DEFAULT_MAX_REQUEST_PARTITIONS;
            if !request_batches.is_empty()
                && (dup || full || request_bytes + batch.data.len() > MAX_REQUEST_BYTES)
            {
                let full = std::mem::take(&mut request_batches);
                request_bytes = 0;
                send_request(shared, &conn, node, full).await;
            }
            request_bytes += batch.data.len();
            request_batches.push(batch);
        }
        if !request_batches.is_empty() {
            send_request(shared, &conn, node, request_batches).await;
        }
    }
}

/// Queues one produce request on `conn` (in the caller's order: this returns
/// once the frame is in the connection's write queue) and spawns the wait for
/// its answer. With acks = none it returns once the frame is written.
async fn send_request(
    shared: &Arc<Shared>,
    conn: &crate::connection::Connection,
    node: Option<u32>,
    batches: Vec<SealedBatch>,
) {
    let config = &shared.config;
    let mut topics: Vec<ProduceTopic> = Vec::new();
    for b in &batches {
        let part = ProducePartition {
            partition: b.partition,
            records: b.data.clone(),
        };
        match topics.iter_mut().find(|t| *t.name == *b.topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(ProduceTopic {
                name: b.topic.to_string(),
                partitions: vec![part],
            }),
        }
    }
    let timeout = shared.cluster.config().request_timeout;
    let request = Request::Produce(ProduceRequest {
        acks: config.acks,
        timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
        topics,
    });
    if config.acks == Acks::None {
        let result = conn.send_only(&request).await;
        for b in batches {
            let r = result.clone().map(|()| UNKNOWN_OFFSET);
            if let Err(e) = &r {
                if e.needs_metadata_refresh() {
                    shared.cluster.invalidate(&b.topic);
                }
            }
            shared.finish_batch(b, r, true);
        }
        return;
    }
    match conn.submit(&request, timeout).await {
        Ok(pending) => {
            let slot: RequestSlot = Arc::new(Mutex::new(Some(batches)));
            let id = {
                let mut r = lock(&shared.requests);
                let id = r.next_id;
                r.next_id += 1;
                r.waiting.insert(
                    id,
                    InFlightRequest {
                        node,
                        sent: Instant::now(),
                        slot: Arc::clone(&slot),
                    },
                );
                id
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let response = pending.wait().await;
                lock(&shared.requests).waiting.remove(&id);
                // None: the stall check gave the batches up (resent elsewhere).
                let taken = lock(&slot).take();
                if let Some(batches) = taken {
                    finish_request(&shared, batches, response);
                }
            });
        }
        Err(e) => finish_request(shared, batches, Err(e)),
    }
}

/// When produce requests have waited past [`STALL_AFTER`] (their broker
/// may be paused or cut off, and answers nothing until the request
/// timeout), asks the metadata of any broker, at most every
/// [`STALL_CHECK`], whether their partitions' leaders moved. A request
/// whose partition now has another leader is given up: its batches are
/// retried on the new leader (an idempotent producer's retry is
/// deduplicated there if the old leader had replicated the batch; a deposed
/// leader cannot acknowledge it). Returns when to check next, if anything waits.
fn stall_check(shared: &Arc<Shared>) -> Option<Instant> {
    let now = Instant::now();
    let mut r = lock(&shared.requests);
    let oldest = r.waiting.values().map(|w| w.sent).min()?;
    let stalled_at = oldest + STALL_AFTER;
    if now < stalled_at {
        return Some(stalled_at);
    }
    let due = r.last_check.map_or(now, |t| t + STALL_CHECK);
    if r.checking || now < due {
        return Some(due.max(now + Duration::from_millis(50)));
    }
    r.checking = true;
    r.last_check = Some(now);
    let mut topics: Vec<String> = Vec::new();
    for w in r.waiting.values().filter(|w| w.sent + STALL_AFTER <= now) {
        if let Some(batches) = lock(&w.slot).as_ref() {
            for b in batches {
                if !topics.iter().any(|t| **t == *b.topic) {
                    topics.push(b.topic.to_string());
                }
            }
        }
    }
    drop(r);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let asked = shared
            .cluster
            .fetch_metadata_within(topics, STALL_CHECK)
            .await;
        let mut moved: Vec<(SealedBatch, ClientError)> = Vec::new();
        if asked.is_ok() {
            let mut r = lock(&shared.requests);
            let now = Instant::now();
            r.waiting.retain(|_, w| {
                if w.sent + STALL_AFTER > now {
                    return true;
                }
                let moved_away = |b: &SealedBatch| {
                    let leader = shared
                        .cluster
                        .cached_route(&b.topic)
                        .and_then(|t| t.leaders.get(b.partition as usize).copied());
                    leader.is_some() && leader != w.node
                };
                let mut slot = lock(&w.slot);
                let Some(batches) = slot.take() else {
                    return false;
                };
                // Only the batches whose partition moved are given up: the
                // others still wait for this request's answer.
                let (gone, staying): (Vec<SealedBatch>, Vec<SealedBatch>) =
                    batches.into_iter().partition(|b| moved_away(b));
                for b in gone {
                    let e = ClientError::broker(
                        ErrorCode::NotLeaderForPartition,
                        format!(
                            "produce to \"{}\"/{}: the leader moved while the request waited",
                            b.topic, b.partition
                        ),
                    );
                    moved.push((b, e));
                }
                if staying.is_empty() {
                    return false;
                }
                *slot = Some(staying);
                true
            });
        }
        lock(&shared.requests).checking = false;
        if !moved.is_empty() {
            tracing::debug!(
                batches = moved.len(),
                "resending batches stalled on a deposed leader"
            );
        }
        // The route is fresh: retry without forgetting it.
        for (b, e) in moved {
            shared.finish_batch(b, Err(e), true);
        }
        shared.wake.notify_one();
    });
    Some(now + STALL_CHECK)
}

/// Completes (or requeues) the batches of one produce request from its answer.
fn finish_request(shared: &Shared, batches: Vec<SealedBatch>, response: Result<Response>) {
    let response = match response {
        Ok(Response::Produce(r)) => Ok(r),
        Ok(other) => Err(unexpected("Produce", other)),
        Err(e) => Err(e),
    };
    match response {
        Err(e) => {
            for b in batches {
                if e.needs_metadata_refresh() {
                    shared.cluster.invalidate(&b.topic);
                }
                shared.finish_batch(b, Err(e.clone()), true);
            }
        }
        Ok(response) => {
            for b in batches {
                let found = response
                    .topics
                    .iter()
                    .filter(|t| *t.name == *b.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition == b.partition);
                let result = match found {
                    Some(p) if p.error == ErrorCode::None => Ok(p.base_offset),
                    Some(p) => {
                        let e = ClientError::broker(
                            p.error,
                            format!("produce to \"{}\"/{}", b.topic, b.partition),
                        );
                        if e.needs_metadata_refresh() {
                            shared.cluster.invalidate(&b.topic);
                        }
                        Err(e)
                    }
                    None => Err(ClientError::UnexpectedResponse {
                        request: "Produce",
                        got: format!("no result for \"{}\"/{}", b.topic, b.partition),
                    }),
                };
                shared.finish_batch(b, result, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(config: ProducerConfig) -> Shared {
        Shared::new(ClientConfig::new("127.0.0.1:1"), config)
    }

    fn header(b: &SealedBatch) -> sluice_protocol::batch::BatchHeader {
        sluice_protocol::batch::validate(&b.data).expect("valid batch")
    }

    #[test]
    fn idempotent_batches_carry_the_producer_id_and_per_partition_sequences() {
        let s = shared(ProducerConfig {
            batch_bytes: 100,
            ..ProducerConfig::default()
        });
        s.producer_id.set(Some((77, 2))).unwrap();
        for i in 0..9 {
            append(&s, keyless(&format!("{i:040}")).partition(i % 2), 2);
        }
        let plan = s.plan(Instant::now() + Duration::from_secs(1));
        let mut seqs: HashMap<u32, Vec<(i32, i32)>> = HashMap::new();
        for b in &plan.dispatch {
            let h = header(b);
            assert_eq!((h.producer_id, h.producer_epoch), (77, 2));
            seqs.entry(b.partition)
                .or_default()
                .push((h.base_sequence, h.record_count));
        }
        for (p, v) in &seqs {
            let mut next = 0;
            for (base, count) in v {
                assert_eq!(*base, next, "partition {p}: {v:?}");
                next += count;
            }
        }
        assert_eq!(seqs.values().flatten().map(|(_, c)| c).sum::<i32>(), 9);
    }

    #[test]
    fn a_batch_failing_for_good_fails_the_later_sealed_ones_and_raises_the_epoch() {
        let s = shared(ProducerConfig {
            batch_bytes: 100,
            max_in_flight_per_partition: 1,
            ..ProducerConfig::default()
        });
        s.producer_id.set(Some((5, 0))).unwrap();
        let d: Vec<Delivery> = (0..3)
            .map(|i| append(&s, keyless(&format!("{i:060}")).partition(0), 1))
            .collect();
        let mut plan = s.plan(Instant::now() + Duration::from_secs(1));
        assert_eq!(plan.dispatch.len(), 1);
        let first = plan.dispatch.remove(0);
        assert_eq!(header(&first).base_sequence, 0);
        s.finish_batch(
            first,
            Err(ClientError::broker(ErrorCode::MessageTooLarge, "test")),
            true,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for d in d {
            let e = rt.block_on(d).unwrap_err();
            assert!(
                matches!(
                    e,
                    ClientError::Broker {
                        code: ErrorCode::MessageTooLarge,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
        // The next batch starts the partition over: epoch + 1, sequence 0.
        append(&s, keyless("again").partition(0), 1);
        let plan = s.plan(Instant::now() + Duration::from_secs(2));
        assert_eq!(plan.dispatch.len(), 1);
        let h = header(&plan.dispatch[0]);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (5, 1, 0)
        );
    }

    #[test]
    fn same_batch_tells_records_acknowledged_together() {
        let s = shared(ProducerConfig {
            batch_bytes: 300,
            ..ProducerConfig::default()
        });
        let d: Vec<Delivery> = (0..6)
            .map(|i| append(&s, keyless(&format!("{i:060}")).partition(0), 1))
            .collect();
        assert!(d[0].same_batch(&d[1]), "two small records share a batch");
        assert!(!d[0].same_batch(&d[5]), "the batch was sealed at 300 bytes");
        let other = append(&s, keyless("x").partition(0), 1);
        assert!(d[5].same_batch(&other));
    }

    #[test]
    fn records_without_a_timestamp_get_the_wall_clock_of_their_batch() {
        let s = shared(ProducerConfig::default());
        let before = now_ms();
        for i in 0..(3 * CLOCK_EVERY) {
            append(&s, keyless(&format!("{i}")).partition(0), 1);
        }
        append(&s, keyless("explicit").partition(0).timestamp(42), 1);
        let after = now_ms();
        let plan = s.plan(Instant::now() + Duration::from_secs(1));
        assert_eq!(plan.dispatch.len(), 1);
        let batch = sluice_protocol::batch::batches(&plan.dispatch[0].data)
            .next()
            .expect("one batch")
            .expect("valid batch");
        let stamps: Vec<i64> = batch
            .records()
            .map(|r| r.expect("valid record").timestamp)
            .collect();
        assert_eq!(stamps.len(), 3 * CLOCK_EVERY as usize + 1);
        assert_eq!(stamps.last(), Some(&42));
        for t in &stamps[..stamps.len() - 1] {
            assert!(
                (before..=after).contains(t),
                "{t} not in {before}..={after}"
            );
        }
        assert!(stamps
            .windows(2)
            .take(stamps.len() - 2)
            .all(|w| w[0] <= w[1]));
    }

    #[test]
    fn without_a_producer_id_batches_are_not_idempotent() {
        let s = shared(ProducerConfig::default());
        append(&s, keyless("a").partition(0), 1);
        let plan = s.plan(Instant::now() + Duration::from_secs(1));
        let h = header(&plan.dispatch[0]);
        assert_eq!((h.producer_id, h.base_sequence), (-1, -1));
        assert!(plan.dispatch[0].idempotent_epoch.is_none());
    }

    fn keyless(value: &str) -> Record {
        Record::new("t", value.to_string())
    }

    fn append(s: &Shared, r: Record, partitions: u32) -> Delivery {
        let size = r.estimated_size();
        s.append(r, size, Some(partitions)).expect("append")
    }

    #[test]
    fn keyless_records_stick_to_one_partition_until_its_batch_is_sealed() {
        let s = shared(ProducerConfig {
            batch_bytes: 600,
            ..ProducerConfig::default()
        });
        let first = append(&s, keyless("x"), 4).partition();
        let mut partitions = vec![first];
        for _ in 0..40 {
            partitions.push(append(&s, keyless(&"y".repeat(60)), 4).partition());
        }
        // Runs of the same partition, moving round-robin when a batch fills.
        let changes: Vec<(u32, u32)> = partitions
            .windows(2)
            .filter(|w| w[0] != w[1])
            .map(|w| (w[0], w[1]))
            .collect();
        assert!(!changes.is_empty(), "never moved: {partitions:?}");
        for (a, b) in &changes {
            assert_eq!(*b, (a + 1) % 4, "{partitions:?}");
        }
        let run = partitions.iter().take_while(|p| **p == first).count();
        assert!(run >= 5, "sticky run too short: {partitions:?}");
    }

    #[test]
    fn keyed_records_follow_murmur2_and_explicit_partitions_are_checked() {
        let s = shared(ProducerConfig::default());
        for i in 0..50 {
            let key = format!("key-{i}");
            let d = append(&s, keyless("v").key(key.clone()), 7);
            assert_eq!(d.partition(), partition_for_key(key.as_bytes(), 7));
        }
        assert_eq!(append(&s, keyless("v").partition(6), 7).partition(), 6);
        let r = keyless("v").partition(7);
        let size = r.estimated_size();
        assert!(matches!(
            s.append(r, size, Some(7)),
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn linger_seals_batches_and_in_flight_is_bounded_per_partition() {
        let s = shared(ProducerConfig {
            batch_bytes: 100,
            linger: Duration::from_millis(5),
            max_in_flight_per_partition: 2,
            ..ProducerConfig::default()
        });
        // Five full batches on partition 0, plus one open batch.
        for i in 0..11 {
            append(&s, keyless(&format!("{i:040}")).partition(0), 1);
        }
        let now = Instant::now();
        let plan = s.plan(now);
        assert_eq!(plan.dispatch.len(), 2, "max in flight");
        assert!(plan.next_wakeup.is_some());
        // After the linger the open batch is sealed too, but the partition is full.
        let plan2 = s.plan(now + Duration::from_millis(10));
        assert!(plan2.dispatch.is_empty());
        // A retriable failure of the first batch puts it back ahead of the others
        // and limits the partition to one batch in flight.
        let mut sent = plan.dispatch.into_iter();
        let first = sent.next().unwrap();
        let first_seq = first.seq;
        s.finish_batch(
            first,
            Err(ClientError::broker(
                ErrorCode::NotLeaderForPartition,
                "test",
            )),
            true,
        );
        let second = sent.next().unwrap();
        s.finish_batch(second, Ok(10), true);
        let later = Instant::now() + Duration::from_secs(5); // past the retry backoff
        let plan3 = s.plan(later);
        assert_eq!(plan3.dispatch.len(), 1, "one in flight while retrying");
        assert_eq!(plan3.dispatch[0].seq, first_seq, "retried batch goes first");
    }

    #[test]
    fn deliveries_resolve_to_base_offset_plus_index_and_free_memory() {
        let s = shared(ProducerConfig {
            buffer_bytes: 10_000,
            ..ProducerConfig::default()
        });
        let deliveries: Vec<Delivery> = (0..3)
            .map(|i| {
                let r = keyless(&format!("v{i}")).partition(0);
                let size = r.estimated_size();
                s.memory.try_acquire_many(size as u32).unwrap().forget();
                s.append(r, size, Some(1)).unwrap()
            })
            .collect();
        assert!(s.memory.available_permits() < 10_000);
        let plan = s.plan(Instant::now() + Duration::from_secs(1));
        assert_eq!(plan.dispatch.len(), 1);
        for b in plan.dispatch {
            s.finish_batch(b, Ok(100), true);
        }
        assert_eq!(s.memory.available_permits(), 10_000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let results: Vec<_> = rt.block_on(futures::future::join_all(deliveries));
        let offsets: Vec<(u32, u64)> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(offsets, vec![(0, 100), (0, 101), (0, 102)]);
    }

    #[test]
    fn completed_batch_buffers_are_reused_and_the_pool_is_bounded() {
        let s = shared(ProducerConfig::default());
        for p in 0..6 {
            append(&s, keyless("v").partition(p), 6);
        }
        let plan = s.plan(Instant::now() + Duration::from_secs(1));
        assert_eq!(plan.dispatch.len(), 6);
        // A batch whose bytes are still referenced (a write in flight) is not reclaimed.
        let held = plan.dispatch[0].data.clone();
        let ptrs: Vec<usize> = plan.dispatch[1..]
            .iter()
            .map(|b| b.data.as_ptr() as usize)
            .collect();
        for b in plan.dispatch {
            s.finish_batch(b, Ok(0), true);
        }
        assert_eq!(lock(&s.state).pool.len(), POOL_BUFFERS);
        assert!(lock(&s.state)
            .pool
            .iter()
            .all(|buf| buf.as_ptr() != held.as_ptr()));
        // The next batch is written into a reclaimed allocation, correctly.
        append(&s, keyless("again").partition(0), 6);
        let plan = s.plan(Instant::now() + Duration::from_secs(2));
        assert_eq!(plan.dispatch.len(), 1);
        let b = &plan.dispatch[0];
        assert!(ptrs.contains(&(b.data.as_ptr() as usize)));
        assert_eq!(header(b).record_count, 1);
        let bytes = b.data.clone();
        let batch = sluice_protocol::batch::RecordBatch::parse(&bytes).unwrap();
        let values: Vec<_> = batch.records().map(|r| r.unwrap().value).collect();
        assert_eq!(values, vec![Some(&b"again"[..])]);
        assert_eq!(lock(&s.state).pool.len(), POOL_BUFFERS - 1);
    }

    #[test]
    fn expired_batches_fail_with_the_partitions_last_error() {
        let s = shared(ProducerConfig {
            delivery_timeout: Duration::from_millis(50),
            max_in_flight_per_partition: 1,
            ..ProducerConfig::default()
        });
        let d1 = append(&s, keyless("a").partition(0), 1);
        let plan = s.plan(Instant::now() + Duration::from_millis(10));
        let d2 = append(&s, keyless("b").partition(0), 1);
        let unreachable = ClientError::Unreachable {
            addr: "x:1".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        for b in plan.dispatch {
            s.finish_batch(b, Err(unreachable.clone()), true);
        }
        let plan = s.plan(Instant::now() + Duration::from_secs(1));
        assert!(plan.dispatch.is_empty());
        assert_eq!(plan.failed.len(), 2);
        for (b, e) in plan.failed {
            s.complete(b, Err(e));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt.block_on(d1).unwrap_err();
        assert!(matches!(e, ClientError::DeliveryTimeout { .. }), "{e:?}");
        assert!(matches!(e.root(), ClientError::Unreachable { .. }), "{e:?}");
        // The broker has now been unreachable for a whole delivery timeout:
        // the batch behind fails with that, without waiting for its own.
        let e = rt.block_on(d2).unwrap_err();
        assert!(matches!(e, ClientError::BrokerUnavailable { .. }), "{e:?}");
        assert!(matches!(e.root(), ClientError::Unreachable { .. }), "{e:?}");
    }

    #[test]
    fn a_broker_unreachable_past_the_delivery_timeout_fails_sends_at_once_until_it_is_back() {
        let s = shared(ProducerConfig {
            delivery_timeout: Duration::from_millis(50),
            max_in_flight_per_partition: 1,
            ..ProducerConfig::default()
        });
        let unreachable = ClientError::Unreachable {
            addr: "x:1".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        let d1 = append(&s, keyless("a").partition(0), 1);
        let plan = s.plan(Instant::now() + Duration::from_millis(10));
        assert_eq!(plan.dispatch.len(), 1);
        let d2 = append(&s, keyless("b").partition(0), 1);
        let d3 = append(&s, keyless("c").partition(1), 2);
        for b in plan.dispatch {
            s.finish_batch(b, Err(unreachable.clone()), true);
        }
        // Within the delivery timeout a failed connect is retried, as before.
        assert!(lock(&s.state).unavailable.is_none());
        let plan = s.plan(Instant::now() + Duration::from_secs(1));
        assert!(plan.dispatch.is_empty());
        assert!(lock(&s.state).unavailable.is_some());
        let failed: Vec<_> = plan.failed;
        let mut plan = s.plan(Instant::now() + Duration::from_secs(1));
        let mut all = failed;
        all.append(&mut plan.failed);
        assert_eq!(all.len(), 3, "every buffered batch fails");
        for (b, e) in all {
            s.complete(b, Err(e));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e1 = rt.block_on(d1).unwrap_err();
        assert!(matches!(e1, ClientError::DeliveryTimeout { .. }), "{e1:?}");
        assert!(e1.is_broker_unavailable());
        for d in [d2, d3] {
            let e = rt.block_on(d).unwrap_err();
            assert!(e.is_broker_unavailable(), "{e:?}");
            assert!(matches!(e.root(), ClientError::Unreachable { .. }), "{e:?}");
        }
        // A new record is refused at once instead of waiting another timeout.
        let r = keyless("d").partition(0);
        let size = r.estimated_size();
        let e = s.append(r, size, Some(1)).unwrap_err();
        assert!(matches!(e, ClientError::BrokerUnavailable { .. }), "{e:?}");
        assert!(s.unavailable_flag.load(Ordering::Acquire));
        // The sender tries a connection once the probe interval has passed; a
        // failed try keeps the state, a successful one ends it.
        s.probe_done(false);
        assert!(!s.plan(Instant::now()).probe, "not before the interval");
        let plan = s.plan(Instant::now() + Duration::from_secs(5));
        assert!(plan.probe);
        assert!(
            !s.plan(Instant::now() + Duration::from_secs(5)).probe,
            "one try at a time"
        );
        s.probe_done(false);
        assert!(s.unavailable_flag.load(Ordering::Acquire));
        assert!(s.plan(Instant::now() + Duration::from_secs(5)).probe);
        s.probe_done(true);
        assert!(!s.unavailable_flag.load(Ordering::Acquire));
        let d = append(&s, keyless("e").partition(0), 1);
        assert_eq!(d.partition(), 0);
    }

    #[tokio::test]
    async fn batches_stalled_on_a_paused_leader_go_to_the_new_one() {
        use crate::cluster::tests::serve_fake_maybe;
        use sluice_protocol::{
            BrokerInfo, InitProducerIdResponse, MetadataResponse, PartitionMetadata,
            ProducePartitionResponse, ProduceResponse, ProduceTopicResponse, TopicMetadata,
            SUPPORTED_APIS,
        };
        use std::sync::atomic::AtomicU32;
        use tokio::net::TcpListener;

        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Broker 1 leads, then pauses (answers no Produce); the metadata
        // names broker 2 once `leader` is flipped.
        let leader = Arc::new(AtomicU32::new(1));
        let produced_on_2 = Arc::new(AtomicU32::new(0));
        let handler = |me: u32| {
            let leader = Arc::clone(&leader);
            let produced_on_2 = Arc::clone(&produced_on_2);
            Arc::new(move |request: Request, _| match request {
                Request::ApiVersions => Some(Response::ApiVersions(
                    sluice_protocol::ApiVersionsResponse {
                        apis: SUPPORTED_APIS.to_vec(),
                    },
                )),
                Request::Metadata(_) => Some(Response::Metadata(MetadataResponse {
                    brokers: [(1, a_addr), (2, b_addr)]
                        .iter()
                        .map(|(id, addr)| BrokerInfo {
                            node_id: *id,
                            host: addr.ip().to_string(),
                            port: addr.port(),
                            rack: None,
                        })
                        .collect(),
                    topics: vec![TopicMetadata {
                        error: ErrorCode::None,
                        name: "t".into(),
                        partitions: vec![PartitionMetadata {
                            partition: 0,
                            error: ErrorCode::None,
                            leader: leader.load(Ordering::SeqCst),
                            start_offset: 0,
                            end_offset: 0,
                            size_bytes: 0,
                            leader_epoch: 0,
                            replicas: vec![1, 2],
                            isr: vec![1, 2],
                        }],
                        configs: Vec::new(),
                    }],
                    controller_id: 1,
                    cluster_id: "c".into(),
                })),
                Request::InitProducerId => Some(Response::InitProducerId(InitProducerIdResponse {
                    error: ErrorCode::None,
                    producer_id: 7,
                    producer_epoch: 0,
                })),
                Request::Produce(_) if me == 1 => None,
                Request::Produce(_) => {
                    produced_on_2.fetch_add(1, Ordering::SeqCst);
                    Some(Response::Produce(ProduceResponse {
                        topics: vec![ProduceTopicResponse {
                            name: "t".into(),
                            partitions: vec![ProducePartitionResponse {
                                partition: 0,
                                error: ErrorCode::None,
                                base_offset: 40,
                                last_offset: 40,
                            }],
                        }],
                    }))
                }
                other => panic!("unexpected {other:?}"),
            })
        };
        serve_fake_maybe(a, handler(1)).await;
        serve_fake_maybe(b, handler(2)).await;
        let mut client = ClientConfig::new(a_addr.to_string());
        client.request_timeout = Duration::from_secs(30);
        let producer = Producer::with_config(
            client,
            ProducerConfig {
                acks: Acks::Durable,
                ..ProducerConfig::default()
            },
        );
        let started = Instant::now();
        let delivery = producer
            .enqueue(Record::new("t", "v").partition(0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        leader.store(2, Ordering::SeqCst);
        let r = tokio::time::timeout(Duration::from_secs(10), delivery)
            .await
            .expect("delivered well before the 30 s request timeout");
        assert_eq!(r.unwrap(), (0, 40));
        assert_eq!(produced_on_2.load(Ordering::SeqCst), 1);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
