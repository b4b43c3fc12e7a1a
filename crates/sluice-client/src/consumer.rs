//! The consumer: assigned partitions, seeks, pipelined long-poll fetches.
//!
//! A [`Consumer`] reads the partitions it is assigned, each from its own
//! position. Positions start at [`ConsumerConfig::start`] and move with
//! [`Consumer::seek`] (by offset, timestamp, earliest or latest; positions
//! other than an offset are resolved with ListOffsets before the next fetch).
//!
//! Fetching: one long-poll Fetch per partition leader is in flight at a time.
//! As soon as a response arrives, positions advance past the returned batches
//! and the next fetch is sent *before* the application sees the records, so
//! the broker is already gathering the next batch while the application
//! handles the current one (at most two responses are held in memory).
//!
//! Records are yielded without copying: `key`, `value` and header values are
//! `Bytes` slices of the fetched frame.
//!
//! Where assignments come from is an [`AssignmentSource`]: today only
//! [`AssignmentSource::Manual`] (`assign`); consumer-group membership
//! (`subscribe`) will be a second source that changes the assignment as the
//! group rebalances.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use sluice_protocol::batch::{batches, verify_crc, BatchError};
use sluice_protocol::{
    ErrorCode, FetchPartition, FetchRequest, FetchResponse, FetchTopic, OffsetSpec, Request,
    Response,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::{list_offsets, unexpected};
use crate::cluster::Cluster;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

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
/// This is the seam for consumer groups: group membership (`subscribe`) will
/// add a variant whose assignment changes on rebalance, and the consumer
/// consults its source before every fetch round.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentSource {
    /// Partitions chosen by the application with [`Consumer::assign`].
    Manual,
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
    /// Upper bound per partition in one fetch (default 8 MiB; at least one batch is always returned).
    pub partition_max_bytes: u32,
    /// Verify each fetched batch's CRC-32C (default true).
    pub check_crcs: bool,
    /// On OFFSET_OUT_OF_RANGE move to the nearest valid offset (log start or end)
    /// instead of yielding an error (default true).
    pub clamp_out_of_range: bool,
    /// Wait before retrying a partition after an error (default 100 ms).
    pub retry_backoff: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            start: SeekTo::Earliest,
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 32 * 1024 * 1024,
            partition_max_bytes: 8 * 1024 * 1024,
            check_crcs: true,
            clamp_out_of_range: true,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    At(u64),
    Pending(SeekTo),
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
        }
    }

    /// Where this consumer's assignment comes from.
    pub fn assignment_source(&self) -> &AssignmentSource {
        &self.source
    }

    /// Replaces the assignment with these `(topic, partition)` pairs; each starts at
    /// [`ConsumerConfig::start`] (a partition already assigned keeps its position).
    pub fn assign(&mut self, partitions: Vec<(String, u32)>) {
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
                    next.push(PartitionState {
                        topic: Arc::from(topic.as_str()),
                        partition,
                        position: Position::Pending(self.config.start),
                        epoch,
                        fetching: false,
                        backoff_until: None,
                        skip_before: None,
                    })
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
        self.partitions = next;
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
                    Position::Pending(_) => None,
                })
        })
    }

    fn bump_epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// The next record, waiting for one if needed.
    ///
    /// Returns `None` when nothing is assigned. Errors (broker unreachable,
    /// unknown topic, corrupt batch) are yielded as items; the consumer keeps
    /// going after them, retrying the affected partitions after a backoff.
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord>> {
        loop {
            if let Some(r) = self.buffer.pop_front() {
                return Some(r);
            }
            self.poll_assignment();
            if self.partitions.is_empty() {
                return None;
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
                tokio::time::sleep_until(wake.max(now + Duration::from_millis(1))).await;
                continue;
            }
            let outcome = self.in_flight.next().await;
            match outcome {
                Some(Ok((asked, result))) => self.process(asked, result),
                Some(Err(join)) => {
                    // The fetch task was aborted or panicked: retry everything it covered.
                    for p in &mut self.partitions {
                        p.fetching = false;
                    }
                    tracing::warn!(error = %join, "fetch task failed");
                }
                None => {}
            }
            // Pipelining: the next fetch leaves before the application sees these records.
            self.launch_fetches();
        }
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
        }
    }

    /// Turns Earliest/Latest/Timestamp positions into offsets with ListOffsets.
    async fn resolve_positions(&mut self) -> Result<()> {
        let now = Instant::now();
        for i in 0..self.partitions.len() {
            let (topic, partition, spec, epoch) = {
                let p = &self.partitions[i];
                let spec = match p.position {
                    Position::At(_) => continue,
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
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Sends one fetch per leader for the partitions that have none in flight.
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
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, list)) => list.push(i),
                None => groups.push((node, vec![i])),
            }
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
                            let _ = cluster.route(&t).await;
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
                ErrorCode::NotLeaderForPartition => {
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
            let mut position = fetch_offset;
            let check = self.config.check_crcs;
            for batch in batches(&data.records) {
                let batch = match batch {
                    Ok(b) => b,
                    // A partial batch at the end of a response is not an error (Kafka sends them).
                    Err(BatchError::Truncated { .. }) => break,
                    Err(source) => {
                        self.buffer.push_back(Err(ClientError::InvalidBatch {
                            topic: p.topic.to_string(),
                            partition: p.partition,
                            source,
                        }));
                        p.backoff_until = Some(now + self.config.retry_backoff);
                        break;
                    }
                };
                let header = *batch.header();
                let last = header.last_offset();
                if last < 0 || (last as u64) < position {
                    continue;
                }
                if check {
                    if let Err(source) = verify_crc(batch.as_bytes()) {
                        self.buffer.push_back(Err(ClientError::InvalidBatch {
                            topic: p.topic.to_string(),
                            partition: p.partition,
                            source,
                        }));
                        p.backoff_until = Some(now + self.config.retry_backoff);
                        break;
                    }
                }
                let buf = batch.as_bytes();
                let mut failed = None;
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
                    self.buffer.push_back(Err(ClientError::InvalidBatch {
                        topic: p.topic.to_string(),
                        partition: p.partition,
                        source,
                    }));
                    p.backoff_until = Some(now + self.config.retry_backoff);
                    break;
                }
                position = last as u64 + 1;
            }
            p.position = Position::At(position);
        }
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
