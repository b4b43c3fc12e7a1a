//! The protocol-neutral broker API.
//!
//! [`Broker`] is what every front end calls: the native protocol handler in
//! [`crate::handler`] today, a Kafka-wire listener later. It speaks in topics,
//! partitions, offsets and record-batch bytes, never in frames. It holds a
//! few separate handles (the [`TopicRegistry`] with its own lock, the
//! [`Metrics`]) rather than owning everything.
//!
//! Produce is split in two so a front end can keep per-connection order
//! without blocking on fsync: [`Broker::append`] runs inline (a memcpy into
//! the mapped segment) and returns an [`Appended`]; [`Appended::durable`] is
//! the (possibly long) wait for the fsync, to be awaited off the read path.
//! [`Broker::produce`] does both for callers that do not care.
//!
//! Fetch likewise: [`Broker::prepare_fetch`] resolves the partitions,
//! [`PreparedFetch::try_complete`] answers at once when it can, and
//! [`PreparedFetch::wait`] parks on the partitions' high-watermark watches
//! until `min_bytes` are there, `max_wait` passes, or shutdown begins.
//! Fetches and ListOffsets(latest) serve only below the high watermark: the
//! durable offset on `flush = always` topics, the log end otherwise.
//!
//! Producer ids for idempotent producers ([`Broker::init_producer_id`]) come
//! from a counter seeded with `broker start time in ms << 16`: the n-th id of
//! a run is `(start_ms << 16) + n`. Nothing is persisted; ids cannot repeat
//! across restarts unless a run hands out more than 65,536 ids per
//! millisecond of its uptime (a later start time begins above every id the
//! earlier run could have reached). The result stays below 2^58 for
//! millennia, so it is always a positive `i64`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::select_all;
use sluice_log::AppendInfo;
use sluice_protocol::RequestLimits;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterLink, ClusterView};
use crate::config::{BrokerConfig, FlushMode};
use crate::driver::RequestMemory;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::partition::{Partition, DEFAULT_DURABLE_TIMEOUT};
use crate::topic_meta::{validate_topic_name, TopicConfig, TopicOverrides};
use crate::topics::{Topic, TopicRegistry};

/// How far an append must get before it is acknowledged (the core's own
/// acks levels; each front end maps its wire values onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// Nothing is sent back.
    None,
    /// Once appended to the log (after its fsync too on a `flush = always` topic).
    Leader,
    /// Once fsynced, whatever the topic's flush policy.
    Durable,
}

/// Which offset [`Broker::list_offset`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the end of what consumers may read).
    Latest,
    /// The first readable batch whose max timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

/// Node id of a broker that runs alone (no cluster configured): it is also its own controller.
pub const SINGLE_NODE_ID: u32 = 0;

/// Cluster id a broker that runs alone reports in Metadata v1 and DescribeCluster.
pub const SINGLE_NODE_CLUSTER_ID: &str = "sluice-single-node";

/// The broker: topic admin, produce, fetch, offsets, metadata.
pub struct Broker {
    topics: TopicRegistry,
    metrics: Metrics,
    auto_create_topics: bool,
    default_partitions: u32,
    /// The next producer id to hand out (see the module docs).
    next_producer_id: AtomicI64,
    /// Broker-wide budget of request bytes in memory, shared by every listener.
    request_memory: RequestMemory,
    /// Run after a topic is deleted (the groups' offsets cascade).
    topic_deleted: Mutex<Vec<TopicDeletedHook>>,
    /// Bounds every front end applies while decoding a request.
    request_limits: RequestLimits,
    /// The broker's availability zone (`[cluster] rack`).
    rack: Option<String>,
    /// This broker's node id ([`SINGLE_NODE_ID`] without a cluster).
    node_id: u32,
    /// The cluster metadata, once the binary attached it (see [`crate::cluster`]).
    cluster: OnceLock<Arc<dyn ClusterLink>>,
    /// Whether this broker runs in a cluster (set at open; the link comes later).
    clustered: bool,
    /// Producer ids still free in the block the controller gave this broker: `[next, end)`.
    producer_ids: Mutex<(i64, i64)>,
    /// Topics whose auto-creation is being proposed to the controller.
    auto_creating: Mutex<std::collections::HashSet<String>>,
    /// Which broker coordinates each group; `None`: this one coordinates every group.
    coordinator_rule: RwLock<Option<GroupCoordinatorRule>>,
    /// Users, ACLs, quotas and login failures (see [`crate::security`]).
    security: Arc<crate::security::Security>,
    /// Free space of the data directory; refuses produce below `disk_min_free_bytes`.
    disk: crate::disk::DiskSpace,
    /// Which requests the front ends log as slow (`slow_request_ms`).
    slow_log: crate::slow_log::SlowLog,
}

/// Decides which broker coordinates a group (see [`Broker::set_group_coordinator`]).
pub type GroupCoordinatorRule = Box<dyn Fn(&str) -> GroupCoordinator + Send + Sync>;

/// Where a consumer group's coordinator runs (see [`Broker::group_coordinator`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCoordinator {
    /// This broker coordinates the group.
    Local,
    /// Another broker does; the client should send group requests there.
    Remote {
        /// Its node id.
        node_id: u32,
        /// Its advertised native-listener host.
        host: String,
        /// Its advertised native-listener port.
        port: u16,
    },
    /// The coordinator's broker is not available right now (fenced or unknown).
    Unavailable,
}

/// Called with a topic's name after the topic is deleted.
pub type TopicDeletedHook = Box<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// The first producer id of a broker run started at `start_ms` (ms since the epoch).
pub fn producer_id_seed(start_ms: i64) -> i64 {
    start_ms.max(0) << 16
}

/// Result of an inline append; await [`Appended::durable`] before acknowledging.
#[derive(Debug)]
pub struct Appended {
    partition: Arc<Partition>,
    /// Offsets and sizes assigned by the log.
    pub info: AppendInfo,
    needs_fsync: bool,
    /// The partition's role generation before the append.
    generation: u64,
}

impl Appended {
    /// Whether acknowledging requires waiting for an fsync
    /// (acks = durable, or the topic's flush policy is `always`).
    pub fn needs_fsync(&self) -> bool {
        self.needs_fsync
    }

    /// Waits (at most `timeout`; zero means the 30 s default) until the
    /// appended records are durable if that is required, then returns the
    /// append's offsets.
    pub async fn durable(self, timeout: Duration) -> Result<AppendInfo, BrokerError> {
        if !self.needs_fsync {
            return Ok(self.info);
        }
        let timeout = if timeout.is_zero() {
            DEFAULT_DURABLE_TIMEOUT
        } else {
            timeout
        };
        match tokio::time::timeout(
            timeout,
            self.partition
                .wait_durable_in(self.info.last_offset + 1, self.generation),
        )
        .await
        {
            Ok(Ok(())) => Ok(self.info),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BrokerError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

/// One partition to read in a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTarget {
    /// Topic name, shared by the targets of one topic (not copied per partition).
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Upper bound for this partition (one whole batch is always allowed).
    pub max_bytes: usize,
}

/// A fetch request, independent of any wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchParams {
    /// Partitions, answered in this order.
    pub targets: Vec<FetchTarget>,
    /// Answer as soon as this many bytes are available in total.
    pub min_bytes: usize,
    /// Upper bound on the whole answer (the first batch found is always allowed).
    pub max_bytes: usize,
    /// Longest time to park waiting for `min_bytes`.
    pub max_wait: Duration,
}

/// Data read from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedData {
    /// Whole record batches (possibly empty), borrowed from the log's mapping.
    pub records: Bytes,
    /// The partition's high watermark when read (see [`Partition::high_watermark`]).
    pub high_watermark: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Records in `records`.
    pub record_count: u64,
}

enum Lookup {
    Found(Arc<Partition>),
    NoTopic,
    /// The topic exists but does not serve the partition (unknown or offline).
    Missing(Arc<Topic>),
}

/// A fetch whose partitions are resolved; see the module docs.
pub struct PreparedFetch {
    params: FetchParams,
    lookups: Vec<Lookup>,
    deadline: Instant,
    metrics: Metrics,
}

/// One partition's entry in a fetch answer (same order as the targets).
pub type FetchResult = Result<FetchedData, BrokerError>;

/// Description of one topic for metadata answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Effective config.
    pub config: TopicConfig,
    /// Partitions in index order.
    pub partitions: Vec<PartitionDescription>,
}

/// Description of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Index.
    pub index: u32,
    /// Why the partition is offline (its files could not be opened at start); `None` when served.
    pub offline: Option<String>,
    /// First stored offset.
    pub start_offset: u64,
    /// Next offset to be written.
    pub end_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// Runs file work that blocks for milliseconds (creating or deleting a
/// topic's directories and files, with their fsyncs) on the calling thread,
/// so requests stay in order. On a multi-threaded runtime's worker it first
/// hands the worker's other tasks to another thread (`block_in_place`), so
/// other connections are not stalled behind it.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The error for a partition index a topic does not serve: offline or unknown.
fn missing_partition(t: &Topic, partition: u32) -> BrokerError {
    match t.offline_reason(partition) {
        Some(reason) => BrokerError::PartitionOffline {
            topic: t.name().to_string(),
            partition,
            reason: reason.to_string(),
        },
        None => BrokerError::UnknownPartition {
            topic: t.name().to_string(),
            partition,
        },
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Broker {
    /// Opens the data directory and recovers every topic in it.
    pub fn open(config: &BrokerConfig, metrics: Metrics) -> Result<Broker, BrokerError> {
        Self::open_with_io(config, metrics, Arc::new(sluice_log::OsFileIo))
    }

    /// Like [`Broker::open`], with the partition logs' file-system calls
    /// routed through `io` (fault injection in tests).
    pub fn open_with_io(
        config: &BrokerConfig,
        metrics: Metrics,
        io: Arc<dyn sluice_log::FileIo>,
    ) -> Result<Broker, BrokerError> {
        let topics = TopicRegistry::open_with_io(
            &config.data_dir,
            config.topic_defaults.clone(),
            metrics.clone(),
            config.max_partitions,
            io,
        )?;
        let request_memory = RequestMemory::new(config.queued_max_request_bytes)
            .with_gauge(metrics.request_memory_bytes.clone());
        let security = Arc::new(crate::security::Security::open(
            config.security.clone(),
            &config.data_dir,
            &metrics,
        )?);
        let disk =
            crate::disk::DiskSpace::open(&config.data_dir, config.disk_min_free_bytes, &metrics)?;
        Ok(Broker {
            security,
            topics,
            metrics,
            auto_create_topics: config.auto_create_topics,
            default_partitions: config.default_partitions,
            next_producer_id: AtomicI64::new(producer_id_seed(now_ms())),
            request_memory,
            topic_deleted: Mutex::new(Vec::new()),
            request_limits: RequestLimits {
                max_partitions: config.max_request_partitions,
            },
            rack: config.rack.clone(),
            node_id: config
                .cluster
                .as_ref()
                .map_or(SINGLE_NODE_ID, |c| c.node_id),
            cluster: OnceLock::new(),
            clustered: config.cluster.is_some(),
            producer_ids: Mutex::new((0, 0)),
            auto_creating: Mutex::new(std::collections::HashSet::new()),
            coordinator_rule: RwLock::new(None),
            disk,
            slow_log: crate::slow_log::SlowLog::new(config.slow_request),
        })
    }

    /// The broker's availability zone (`[cluster] rack`), if configured.
    pub fn rack(&self) -> Option<&str> {
        self.rack.as_deref()
    }

    /// Bounds a front end applies while decoding a request (`max_request_partitions`).
    pub fn request_limits(&self) -> &RequestLimits {
        &self.request_limits
    }

    /// Which requests the front ends log as slow (`slow_request_ms`).
    pub fn slow_log(&self) -> crate::slow_log::SlowLog {
        self.slow_log
    }

    /// Allocates a producer id for an idempotent producer: `(id, epoch 0)`.
    pub fn init_producer_id(&self) -> (i64, i16) {
        (self.next_producer_id.fetch_add(1, Ordering::Relaxed), 0)
    }

    /// Which broker coordinates `group`: the rule set with
    /// [`Broker::set_group_coordinator`] if any, else the cluster's
    /// ([`ClusterView::group_coordinator`]), else this one (a single node
    /// coordinates every group).
    pub fn group_coordinator(&self, group: &str) -> GroupCoordinator {
        {
            let rule = self
                .coordinator_rule
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(rule) = rule.as_ref() {
                return rule(group);
            }
        }
        match self.cluster_view() {
            Some(view) => view.group_coordinator(group),
            None => GroupCoordinator::Local,
        }
    }

    /// Sets the rule that decides which broker coordinates each group (the
    /// binary wires the cluster's rule at start-up; a later call replaces
    /// it). The rule runs on every group request and FindCoordinator, so it
    /// must be quick and must not call back into this method.
    pub fn set_group_coordinator(&self, rule: GroupCoordinatorRule) {
        *self
            .coordinator_rule
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(rule);
    }

    /// This broker's node id ([`SINGLE_NODE_ID`] when it runs alone).
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// Whether this broker was configured as part of a cluster.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// Attaches the cluster metadata (once, at start-up, by the binary).
    pub fn attach_cluster(&self, link: Arc<dyn ClusterLink>) {
        if self.cluster.set(link).is_err() {
            tracing::warn!("a cluster link was attached twice; the first one stays");
        }
    }

    /// Users, ACLs and quotas of this broker.
    pub fn security(&self) -> &Arc<crate::security::Security> {
        &self.security
    }

    /// The cluster metadata link, once attached.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster.get()
    }

    /// The applied cluster metadata, if this broker is in a cluster.
    pub fn cluster_view(&self) -> Option<Arc<ClusterView>> {
        self.cluster.get().map(|c| c.view())
    }

    /// Takes one producer id from the block the controller gave this broker, if any is left.
    pub fn take_block_producer_id(&self) -> Option<i64> {
        let mut b = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        (b.0 < b.1).then(|| {
            b.0 += 1;
            b.0 - 1
        })
    }

    /// Marks `topic` as being auto-created; false if it already is.
    pub fn start_auto_create(&self, topic: &str) -> bool {
        let mut set = self.auto_creating.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(topic.to_string())
    }

    /// Clears the mark of [`Broker::start_auto_create`].
    pub fn end_auto_create(&self, topic: &str) {
        let mut set = self.auto_creating.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(topic);
    }

    /// Installs a new block of producer ids `[start, start + count)` from the controller.
    pub fn install_producer_id_block(&self, start: i64, count: i64) {
        let mut b = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if b.0 >= b.1 {
            *b = (start, start.saturating_add(count));
        }
    }

    /// The topic registry.
    pub fn topics(&self) -> &TopicRegistry {
        &self.topics
    }

    /// The metrics handle.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The data directory's free-space guard (see [`crate::disk`]).
    pub fn disk_space(&self) -> &crate::disk::DiskSpace {
        &self.disk
    }

    /// The broker-wide request-memory budget every front end reads under.
    pub fn request_memory(&self) -> &RequestMemory {
        &self.request_memory
    }

    fn topic(&self, name: &str, create: bool) -> Result<Arc<Topic>, BrokerError> {
        match self.topics.get(name) {
            Some(t) => Ok(t),
            // In a cluster, creation goes through the controller (the handlers do it).
            None if create && self.auto_create_topics && !self.clustered => {
                blocking(|| self.topics.get_or_create(name, self.default_partitions))
            }
            None => Err(BrokerError::UnknownTopic(name.to_string())),
        }
    }

    fn topic_partition(
        &self,
        topic: &str,
        partition: u32,
        create: bool,
    ) -> Result<(Arc<Topic>, Arc<Partition>), BrokerError> {
        let t = self.topic(topic, create)?;
        let p = match t.partition(partition) {
            Some(p) => Arc::clone(p),
            None => return Err(missing_partition(&t, partition)),
        };
        Ok((t, p))
    }

    /// The partition, if topic and partition exist (no auto-creation).
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, BrokerError> {
        self.topic_partition(topic, partition, false)
            .map(|(_, p)| p)
    }

    /// Appends whole record batches to a partition, auto-creating the topic if
    /// allowed. Fast (a copy into the mapped segment); call it in request order
    /// to keep per-connection order, then await [`Appended::durable`].
    /// Refused with [`BrokerError::DiskSpaceLow`] while the data directory's
    /// free space is below `disk_min_free_bytes` ([`crate::disk`]).
    pub fn append(
        &self,
        topic: &str,
        partition: u32,
        records: &[u8],
        acks: Acks,
    ) -> Result<Appended, BrokerError> {
        if records.is_empty() {
            return Err(BrokerError::EmptyProduce {
                topic: topic.to_string(),
                partition,
            });
        }
        // Before the topic lookup: an auto-created partition takes space too.
        self.disk.check()?;
        let (t, p) = self.topic_partition(topic, partition, true)?;
        let records =
            crate::partition::check_records(records, t.config(), now_ms()).map_err(|e| {
                BrokerError::Log {
                    topic: topic.to_string(),
                    partition,
                    source: sluice_log::LogError::InvalidBatch(e),
                }
            })?;
        let generation = p.generation();
        let info = p.append(&records)?;
        self.disk.note_appended(info.bytes as u64);
        Ok(Appended {
            partition: p,
            info,
            needs_fsync: acks == Acks::Durable || t.config().flush == FlushMode::Always,
            generation,
        })
    }

    /// Append then wait for durability as `acks` requires.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: &[u8],
        acks: Acks,
        timeout: Duration,
    ) -> Result<AppendInfo, BrokerError> {
        self.append(topic, partition, records, acks)?
            .durable(timeout)
            .await
    }

    /// Resolves a fetch's partitions; see [`PreparedFetch`].
    pub fn prepare_fetch(&self, params: FetchParams) -> PreparedFetch {
        let lookups = params
            .targets
            .iter()
            .map(|t| match self.topics.get(&t.topic) {
                None => Lookup::NoTopic,
                Some(topic) => match topic.partition(t.partition) {
                    Some(p) => Lookup::Found(Arc::clone(p)),
                    None => Lookup::Missing(Arc::clone(&topic)),
                },
            })
            .collect();
        PreparedFetch {
            deadline: Instant::now() + params.max_wait,
            params,
            lookups,
            metrics: self.metrics.clone(),
        }
    }

    /// Long-poll fetch: answers when `min_bytes` are available, `max_wait`
    /// passes, an error occurs, or `cancel` fires.
    pub async fn fetch(&self, params: FetchParams, cancel: &CancellationToken) -> Vec<FetchResult> {
        let mut f = self.prepare_fetch(params);
        match f.try_complete() {
            Some(r) => r,
            None => f.wait(cancel).await,
        }
    }

    /// Offset lookup: earliest, latest (the high watermark), or the first
    /// batch at/after a timestamp (the high watermark and -1 when no readable
    /// batch is that recent).
    pub fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<(u64, i64), BrokerError> {
        let p = self.partition(topic, partition)?;
        Ok(match spec {
            OffsetSpec::Earliest => (p.start_offset(), -1),
            OffsetSpec::Latest => (p.high_watermark(), -1),
            OffsetSpec::Timestamp(ts) => {
                let hw = p.high_watermark();
                match p.offset_for_timestamp(ts)? {
                    Some((offset, ts)) if offset < hw => (offset, ts),
                    _ => (hw, -1),
                }
            }
        })
    }

    fn describe(t: &Topic) -> TopicDescription {
        let mut partitions: Vec<_> = t
            .partitions()
            .iter()
            .map(|p| PartitionDescription {
                index: p.index(),
                offline: None,
                start_offset: p.start_offset(),
                end_offset: p.end_offset(),
                size_bytes: p.size_bytes(),
            })
            .collect();
        if !t.offline_partitions().is_empty() {
            partitions.extend(t.offline_partitions().iter().map(|(i, reason)| {
                PartitionDescription {
                    index: *i,
                    offline: Some(reason.to_string()),
                    start_offset: 0,
                    end_offset: 0,
                    size_bytes: 0,
                }
            }));
            partitions.sort_by_key(|p| p.index);
        }
        TopicDescription {
            name: t.name().to_string(),
            config: t.config().clone(),
            partitions,
        }
    }

    /// Describes every topic, sorted by name.
    pub fn describe_all(&self) -> Vec<TopicDescription> {
        self.topics
            .list()
            .iter()
            .map(|t| Self::describe(t))
            .collect()
    }

    /// Describes one topic (never auto-creates); `InvalidTopic` for a bad name.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        validate_topic_name(name)?;
        let t = self.topic(name, false)?;
        Ok(Self::describe(&t))
    }

    /// Creates a topic with `partitions` (1..=10000) and config overrides.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(String, String)],
    ) -> Result<(), BrokerError> {
        self.create_topic_replicated(name, partitions, None, configs)
    }

    /// Brokers that can hold a replica: this one (a single node, its own
    /// controller, until the cluster metadata lands).
    pub fn live_brokers(&self) -> u32 {
        match self.cluster_view() {
            Some(v) => u32::try_from(v.live_brokers().count()).unwrap_or(u32::MAX),
            None => 1,
        }
    }

    /// [`Broker::create_topic`] with `replication_factor` replicas per
    /// partition (`None` = the default, `min(3, live brokers)`). A factor of
    /// 0 or above [`Broker::live_brokers`] is refused
    /// ([`BrokerError::InvalidReplicationFactor`]) and nothing is created.
    pub fn create_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: &[(String, String)],
    ) -> Result<(), BrokerError> {
        validate_topic_name(name)?;
        if let Some(factor) = replication_factor {
            let brokers = self.live_brokers();
            if factor == 0 || u32::from(factor) > brokers {
                return Err(BrokerError::InvalidReplicationFactor {
                    factor: i32::from(factor),
                    brokers,
                });
            }
        }
        let overrides = TopicOverrides::from_pairs(configs)?;
        blocking(|| self.topics.create(name, partitions, overrides)).map(|_| ())
    }

    /// Grows topic `name` to `total` partitions, durably (see
    /// [`TopicRegistry::add_partitions`]); a single node's CreatePartitions.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        validate_topic_name(name)?;
        blocking(|| self.topics.add_partitions(name, total)).map(|_| ())
    }

    /// Sets (`Some`) or removes (`None`) topic `name`'s config keys, durably,
    /// and applies them to its open partitions (see
    /// [`TopicRegistry::alter_config`]); a single node's AlterConfigs.
    pub fn alter_topic_config(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<(), BrokerError> {
        validate_topic_name(name)?;
        blocking(|| self.topics.alter_config(name, changes)).map(|_| ())
    }

    /// Whether produce may create a missing topic.
    pub fn auto_creates_topics(&self) -> bool {
        self.auto_create_topics
    }

    /// Partition count given to auto-created topics.
    pub fn default_partitions(&self) -> u32 {
        self.default_partitions
    }

    /// Deletes a topic and its data, then runs the [`Broker::on_topic_deleted`]
    /// hooks (every group's committed offsets on it go too), in request order.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        blocking(|| {
            self.topics.delete(name)?;
            let hooks = self.topic_deleted.lock().unwrap_or_else(|p| p.into_inner());
            for hook in hooks.iter() {
                hook(name);
            }
            Ok(())
        })
    }

    /// Registers a hook run after every topic deletion (by [`crate::Groups`]).
    pub fn on_topic_deleted(&self, hook: TopicDeletedHook) {
        self.topic_deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// Runs every partition's periodic flush and recovery-point update (blocking; run off the runtime).
    pub fn flush_due(&self) {
        let now = std::time::Instant::now();
        // Every policy: `interval` fsyncs when due, `always` catches anything
        // no waiter synced, and all of them advance the recovery point (so an
        // `os` partition does not rescan since start after a crash).
        for t in self.topics.list() {
            for p in t.partitions() {
                if p.is_deleted() {
                    // Deleted meanwhile: its log is closed for good.
                    continue;
                }
                if let Err(e) = p.maybe_flush(now) {
                    tracing::error!(topic = t.name(), partition = p.index(), error = %crate::error::chain(&e), "periodic flush failed");
                }
            }
        }
    }

    /// Deletes expired segments everywhere (blocking; run off the runtime).
    pub fn enforce_retention(&self) -> usize {
        let now = now_ms();
        let mut deleted = 0;
        for t in self.topics.list() {
            for p in t.partitions() {
                if p.is_deleted() {
                    continue;
                }
                match p.enforce_retention(now) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(
                            topic = t.name(),
                            partition = p.index(),
                            segments = n,
                            "retention deleted segments"
                        );
                        deleted += n;
                    }
                    Err(e) => {
                        tracing::error!(topic = t.name(), partition = p.index(), error = %crate::error::chain(&e), "retention failed")
                    }
                }
            }
        }
        deleted
    }

    /// Flushes and closes every log (shutdown); logs and returns the first error.
    pub fn close(&self) -> Result<(), BrokerError> {
        let mut errors = self.topics.close_all();
        for e in &errors {
            tracing::error!(error = %crate::error::chain(e), "closing a log failed");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.swap_remove(0))
        }
    }
}

impl PreparedFetch {
    /// The request this fetch answers.
    pub fn params(&self) -> &FetchParams {
        &self.params
    }

    /// One read pass over every target. Returns the results, the bytes found,
    /// and whether any partition failed.
    fn read_pass(&self) -> (Vec<FetchResult>, usize, bool) {
        let mut total = 0usize;
        let mut failed = false;
        let mut out = Vec::with_capacity(self.lookups.len());
        for (t, l) in self.params.targets.iter().zip(&self.lookups) {
            let r = match l {
                Lookup::NoTopic => Err(BrokerError::UnknownTopic(t.topic.to_string())),
                Lookup::Missing(topic) => Err(missing_partition(topic, t.partition)),
                Lookup::Found(p) if p.is_deleted() => {
                    Err(BrokerError::UnknownTopic(t.topic.to_string()))
                }
                Lookup::Found(p) => {
                    let budget = self.params.max_bytes.saturating_sub(total);
                    let high_watermark = p.high_watermark();
                    let log_start_offset = p.start_offset();
                    if budget == 0 && total > 0 {
                        Ok(FetchedData {
                            records: Bytes::new(),
                            high_watermark,
                            log_start_offset,
                            record_count: 0,
                        })
                    } else {
                        p.read_committed(t.offset, t.max_bytes.min(budget.max(1)), high_watermark)
                            .map(|(mut records, mut record_count)| {
                                // Past the first data found, the total budget is strict.
                                if total > 0 && records.len() > budget {
                                    records = Bytes::new();
                                    record_count = 0;
                                }
                                total += records.len();
                                FetchedData {
                                    records,
                                    high_watermark,
                                    log_start_offset,
                                    record_count,
                                }
                            })
                    }
                }
            };
            failed |= r.is_err();
            out.push(r);
        }
        (out, total, failed)
    }

    fn finish(&self, results: Vec<FetchResult>) -> Vec<FetchResult> {
        for (r, l) in results.iter().zip(&self.lookups) {
            if let (Ok(d), Lookup::Found(p)) = (r, l) {
                if !d.records.is_empty() {
                    p.record_fetch(d.records.len(), d.record_count);
                }
            }
        }
        results
    }

    /// Reads once; `Some` when the fetch is complete (enough bytes, an error,
    /// or no waiting allowed), `None` when it should [`wait`](Self::wait).
    pub fn try_complete(&mut self) -> Option<Vec<FetchResult>> {
        let (results, total, failed) = self.read_pass();
        if failed
            || total >= self.params.min_bytes.max(1)
            || self.params.max_wait.is_zero()
            || self.params.min_bytes == 0
            || Instant::now() >= self.deadline
        {
            Some(self.finish(results))
        } else {
            None
        }
    }

    /// Parks until enough data arrives, the deadline passes, or `cancel` fires;
    /// then answers with whatever is there.
    pub async fn wait(self, cancel: &CancellationToken) -> Vec<FetchResult> {
        self.metrics.parked_fetches.inc();
        let out = self.wait_inner(cancel).await;
        self.metrics.parked_fetches.dec();
        self.finish(out)
    }

    async fn wait_inner(&self, cancel: &CancellationToken) -> Vec<FetchResult> {
        loop {
            // Subscribe before reading: an append after the read still wakes us.
            let mut receivers: Vec<_> = self
                .lookups
                .iter()
                .filter_map(|l| match l {
                    Lookup::Found(p) => Some(p.subscribe()),
                    _ => None,
                })
                .collect();
            let (results, total, failed) = self.read_pass();
            if failed
                || receivers.is_empty()
                || total >= self.params.min_bytes.max(1)
                || Instant::now() >= self.deadline
            {
                return results;
            }
            let changed = select_all(receivers.iter_mut().map(|r| Box::pin(r.changed())));
            // Parked by design: not counted by the slow-request log.
            let parked_at = std::time::Instant::now();
            let woken = tokio::select! {
                // An error: the partition was dropped (topic deleted): answer now.
                (res, _, _) = changed => res.is_ok(),
                _ = tokio::time::sleep_until(self.deadline) => false,
                _ = cancel.cancelled() => false,
            };
            crate::slow_log::add_parked(parked_at.elapsed());
            if !woken {
                return self.read_pass().0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::WireCode;
    use crate::config::ConfigLayer;

    #[test]
    fn blocking_work_runs_inline_on_every_runtime_flavor() {
        // Inline (same thread, so request order holds) from a multi-threaded
        // worker, a current-thread runtime, a blocking-pool thread and no runtime.
        let here = || std::thread::current().id();
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        multi.block_on(async {
            let worker = tokio::spawn(async move { (here(), blocking(here)) });
            let (outer, inner) = worker.await.unwrap();
            assert_eq!(outer, inner);
            let pooled = tokio::task::spawn_blocking(move || (here(), blocking(here)));
            let (outer, inner) = pooled.await.unwrap();
            assert_eq!(outer, inner);
        });
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(single.block_on(async { blocking(here) }), here());
        assert_eq!(blocking(|| 7), 7);
    }

    #[test]
    fn topics_are_created_and_deleted_from_a_runtime_worker() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(test_broker(dir.path(), ConfigLayer::default()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let b2 = Arc::clone(&b);
        rt.block_on(async move {
            tokio::spawn(async move {
                b2.create_topic("made", 3, &[]).unwrap();
                let mut batch = sluice_protocol::batch::RecordBatchBuilder::new();
                batch.push(1, None, Some(b"v"), &[]);
                b2.append("auto", 0, &batch.finish(), Acks::Leader).unwrap();
                b2.delete_topic("made").unwrap();
            })
            .await
        })
        .unwrap();
        assert!(b.describe_topic("made").is_err());
        assert_eq!(b.describe_topic("auto").unwrap().partitions.len(), 1);
    }

    pub(crate) fn test_broker(dir: &std::path::Path, extra: ConfigLayer) -> Broker {
        let layer = ConfigLayer {
            data_dir: Some(dir.to_path_buf()),
            segment_bytes: Some(1 << 20),
            ..ConfigLayer::default()
        };
        let cfg = extra.or(layer).resolve().unwrap();
        Broker::open(&cfg, Metrics::new()).unwrap()
    }

    #[test]
    fn unknown_topics_and_auto_create_switch() {
        let dir = tempfile::tempdir().unwrap();
        let b = test_broker(
            dir.path(),
            ConfigLayer {
                auto_create_topics: Some(false),
                ..ConfigLayer::default()
            },
        );
        let e = b.append("nope", 0, b"x", Acks::Leader).unwrap_err();
        assert_eq!(
            e.code(),
            sluice_protocol::ErrorCode::UnknownTopicOrPartition
        );
        assert!(b.topics().get("nope").is_none());
        let e = b.list_offset("nope", 0, OffsetSpec::Latest).unwrap_err();
        assert_eq!(
            e.code(),
            sluice_protocol::ErrorCode::UnknownTopicOrPartition
        );
        let e = b.create_topic("t", 0, &[]).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::InvalidPartitions);
        let e = b.describe_topic("a/b").unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::InvalidTopic);
        b.create_topic("t", 1, &[]).unwrap();
        assert_eq!(b.describe_topic("t").unwrap().partitions.len(), 1);
        let e = b.create_topic("t", 1, &[]).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::TopicAlreadyExists);
        let e = b
            .create_topic("u", 1, &[("flush".into(), "never".into())])
            .unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::InvalidConfig);
        let e = b.append("t", 7, b"x", Acks::Leader).unwrap_err();
        assert_eq!(
            e.code(),
            sluice_protocol::ErrorCode::UnknownTopicOrPartition
        );
        let e = b.append("t", 0, b"", Acks::Leader).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::InvalidRequest);
        b.delete_topic("t").unwrap();
        assert!(b.describe_all().is_empty());
    }

    #[tokio::test]
    async fn fetch_of_missing_partition_answers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = test_broker(dir.path(), ConfigLayer::default());
        let params = FetchParams {
            targets: vec![FetchTarget {
                topic: "missing".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1024,
            }],
            min_bytes: 1,
            max_bytes: 1024,
            max_wait: Duration::from_secs(60),
        };
        let r = b.fetch(params, &CancellationToken::new()).await;
        assert_eq!(r.len(), 1);
        assert!(matches!(r[0], Err(BrokerError::UnknownTopic(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn parked_fetch_times_out_with_empty_records() {
        let dir = tempfile::tempdir().unwrap();
        let b = test_broker(dir.path(), ConfigLayer::default());
        b.create_topic("t", 1, &[]).unwrap();
        let params = FetchParams {
            targets: vec![FetchTarget {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1024,
            }],
            min_bytes: 1,
            max_bytes: 1024,
            max_wait: Duration::from_millis(500),
        };
        let started = Instant::now();
        let r = b.fetch(params, &CancellationToken::new()).await;
        assert!(started.elapsed() >= Duration::from_millis(500));
        let d = r[0].as_ref().unwrap();
        assert!(d.records.is_empty());
        assert_eq!(d.high_watermark, 0);
        assert_eq!(b.metrics().parked_fetches.get(), 0);
    }

    /// On a `flush = always` topic a parked fetch wakes when the fsync moves
    /// the high watermark, and ListOffsets(latest) equals the fetch's high
    /// watermark; an append not yet synced is not served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_only_reads_on_flush_always_topics() {
        let dir = tempfile::tempdir().unwrap();
        let b = Arc::new(test_broker(dir.path(), ConfigLayer::default()));
        b.create_topic("t", 1, &[("flush".into(), "always".into())])
            .unwrap();
        let params = FetchParams {
            targets: vec![FetchTarget {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
            }],
            min_bytes: 1,
            max_bytes: 1 << 20,
            max_wait: Duration::from_secs(60),
        };
        let mut batch = sluice_protocol::batch::RecordBatchBuilder::new();
        batch.push(1, None, Some(b"v"), &[]);
        let batch = batch.finish();
        // Appended, not synced: a fetch sees nothing, ListOffsets says 0.
        let appended = b.append("t", 0, &batch, Acks::Leader).unwrap();
        assert!(appended.needs_fsync());
        let mut f = b.prepare_fetch(params.clone());
        let early = f.try_complete();
        assert!(early.is_none(), "served before the fsync: {early:?}");
        assert_eq!(b.list_offset("t", 0, OffsetSpec::Latest).unwrap().0, 0);
        let waiter = tokio::spawn(async move { f.wait(&CancellationToken::new()).await });
        appended.durable(Duration::from_secs(10)).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the parked fetch woke when the fsync landed")
            .unwrap();
        let d = r[0].as_ref().unwrap();
        assert_eq!(d.records, batch);
        assert_eq!(d.high_watermark, 1);
        assert_eq!(b.list_offset("t", 0, OffsetSpec::Latest).unwrap().0, 1);
        assert_eq!(
            b.list_offset("t", 0, OffsetSpec::Timestamp(0)).unwrap().0,
            0
        );
    }

    fn one_record() -> Bytes {
        let mut b = sluice_protocol::batch::RecordBatchBuilder::new();
        b.push(1, None, Some(b"v"), &[]);
        b.finish()
    }

    /// A partition whose files cannot be opened at start goes offline; the
    /// broker starts and serves every other partition.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unopenable_partition_goes_offline_and_the_rest_serve() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = test_broker(dir.path(), ConfigLayer::default());
            b.create_topic("t", 2, &[]).unwrap();
            b.create_topic("u", 1, &[]).unwrap();
            for (topic, p) in [("t", 0), ("t", 1), ("u", 0)] {
                b.append(topic, p, &one_record(), Acks::Leader).unwrap();
            }
            b.close().unwrap();
        }
        // Partition t/1's directory is now a file: its log cannot be opened.
        let p1 = dir.path().join("t").join("1");
        std::fs::remove_dir_all(&p1).unwrap();
        std::fs::write(&p1, b"not a directory").unwrap();

        let b = test_broker(dir.path(), ConfigLayer::default());
        assert_eq!(b.metrics().offline_partitions.get(), 1);
        let e = b.append("t", 1, &one_record(), Acks::Leader).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::StorageError);
        assert!(e.to_string().contains("offline"), "{e}");
        let e = b.list_offset("t", 1, OffsetSpec::Latest).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::StorageError);
        let fetch = |partition| FetchParams {
            targets: vec![FetchTarget {
                topic: "t".into(),
                partition,
                offset: 0,
                max_bytes: 1 << 20,
            }],
            min_bytes: 1,
            max_bytes: 1 << 20,
            max_wait: Duration::from_secs(30),
        };
        let r = b.fetch(fetch(1), &CancellationToken::new()).await;
        assert_eq!(
            r[0].as_ref().unwrap_err().code(),
            sluice_protocol::ErrorCode::StorageError
        );
        // The others serve what they had and take new data.
        let r = b.fetch(fetch(0), &CancellationToken::new()).await;
        assert_eq!(r[0].as_ref().unwrap().records, one_record());
        b.append("t", 0, &one_record(), Acks::Leader).unwrap();
        assert_eq!(b.list_offset("u", 0, OffsetSpec::Latest).unwrap().0, 1);
        let d = b.describe_topic("t").unwrap();
        assert_eq!(d.partitions.len(), 2);
        assert!(d.partitions[0].offline.is_none());
        assert!(d.partitions[1].offline.is_some());
        // The offline partition's file was left alone.
        assert_eq!(std::fs::read(&p1).unwrap(), b"not a directory");
    }

    #[test]
    fn broker_wide_partition_cap_refuses_creation_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = test_broker(
            dir.path(),
            ConfigLayer {
                max_partitions: Some(5),
                default_partitions: Some(2),
                ..ConfigLayer::default()
            },
        );
        b.create_topic("a", 3, &[]).unwrap();
        let e = b.create_topic("b", 3, &[]).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::InvalidPartitions);
        assert!(e.to_string().contains("max_partitions"), "{e}");
        assert!(b.topics().get("b").is_none());
        assert!(!dir.path().join("b").exists());
        // Auto-creation counts too.
        b.append("auto", 0, &one_record(), Acks::Leader).unwrap();
        let e = b
            .append("auto2", 0, &one_record(), Acks::Leader)
            .unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::InvalidPartitions);
        // Deleting frees room.
        b.delete_topic("a").unwrap();
        b.create_topic("b", 3, &[]).unwrap();
    }

    fn idem_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Vec<u8> {
        let mut b = sluice_protocol::batch::RecordBatchBuilder::new();
        b.set_producer(pid, epoch, seq);
        for v in values {
            b.push(1, None, Some(v.as_bytes()), &[]);
        }
        b.finish().to_vec()
    }

    fn batch_at(ts: i64, value: &[u8]) -> Vec<u8> {
        let mut b = sluice_protocol::batch::RecordBatchBuilder::new();
        b.push(ts, None, Some(value), &[]);
        b.finish().to_vec()
    }

    #[test]
    fn record_timestamps_cannot_steer_retention() {
        use sluice_protocol::ErrorCode;
        let dir = tempfile::tempdir().unwrap();
        let b = test_broker(dir.path(), ConfigLayer::default());
        // Larger than a segment (the 64 KiB floor): every append rolls.
        let big = vec![b'x'; 70_000];
        let cfg = |extra: &[(&str, &str)]| {
            let mut v: Vec<(String, String)> = vec![
                ("retention.ms".into(), "3600000".into()),
                ("segment.bytes".into(), "65536".into()),
            ];
            v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            v
        };
        b.create_topic(
            "guarded",
            1,
            &cfg(&[("message.timestamp.before.max.ms", "600000")]),
        )
        .unwrap();
        b.create_topic("open", 1, &cfg(&[])).unwrap();
        let now = now_ms();
        let day = 86_400_000;
        // A record a day old would make its segment deletable at once: refused.
        let e = b
            .append("guarded", 0, &batch_at(now - day, &big), Acks::Leader)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTimestamp, "{e:?}");
        // One ten years ahead would keep its segment forever: refused by the
        // default after.max.ms (1 h) on every topic.
        for t in ["guarded", "open"] {
            let e = b
                .append(t, 0, &batch_at(now + 3650 * day, &big), Acks::Leader)
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidTimestamp, "{t}: {e:?}");
        }
        assert_eq!(b.partition("guarded", 0).unwrap().log().end_offset(), 0);
        // Records at the broker's time are kept through retention, twice the
        // segment size so the first segment is sealed and eligible.
        for _ in 0..2 {
            b.append("guarded", 0, &batch_at(now, &big), Acks::Leader)
                .unwrap();
        }
        // Without a before limit (Kafka's default) the day-old record is
        // accepted and retention deletes its segment at once: the limit is
        // what prevents it.
        b.append("open", 0, &batch_at(now - day, &big), Acks::Leader)
            .unwrap();
        b.append("open", 0, &batch_at(now, &big), Acks::Leader)
            .unwrap();
        b.enforce_retention();
        assert_eq!(b.partition("guarded", 0).unwrap().log().start_offset(), 0);
        assert_eq!(b.partition("open", 0).unwrap().log().start_offset(), 1);
    }

    #[test]
    fn log_append_time_batches_get_the_broker_time() {
        use sluice_protocol::batch::{compute_crc, validate, ATTR_LOG_APPEND_TIME};
        let dir = tempfile::tempdir().unwrap();
        let b = test_broker(dir.path(), ConfigLayer::default());
        // The client's timestamps (and max_timestamp) are ten years off: they
        // do not matter under LogAppendTime.
        let mut v = batch_at(now_ms() + 3650 * 86_400_000, b"lat");
        v[22] |= ATTR_LOG_APPEND_TIME as u8;
        let crc = compute_crc(&v);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        let before = now_ms();
        b.append("t", 0, &v, Acks::Leader).unwrap();
        let after = now_ms();
        let stored = b.partition("t", 0).unwrap().read(0, 1 << 20).unwrap();
        let h = validate(&stored).expect("stamped batch keeps a valid CRC");
        assert!(h.is_log_append_time());
        assert!(
            (before..=after).contains(&h.max_timestamp),
            "{} not in {before}..={after}",
            h.max_timestamp
        );
        let batch = sluice_protocol::batch::RecordBatch::parse(&stored).unwrap();
        let ts: Vec<i64> = batch.records().map(|r| r.unwrap().timestamp).collect();
        assert_eq!(ts, vec![h.max_timestamp]);
        // A corrupt LogAppendTime batch is refused, not re-signed.
        let last = v.len() - 1;
        v[last] ^= 1;
        let e = b.append("t", 0, &v, Acks::Leader).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::CorruptMessage);
    }

    fn values_in(b: &Broker, topic: &str) -> Vec<String> {
        let data = b.partition(topic, 0).unwrap().read(0, 1 << 20).unwrap();
        let mut out = Vec::new();
        for batch in sluice_protocol::batch::batches(&data) {
            for r in batch.unwrap().records() {
                out.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn idempotent_appends_reject_gaps_and_answer_duplicates_with_original_offsets() {
        use sluice_protocol::ErrorCode;
        let dir = tempfile::tempdir().unwrap();
        let b = test_broker(dir.path(), ConfigLayer::default());
        let (pid, epoch) = b.init_producer_id();
        assert!(pid > 0);
        assert_eq!(b.init_producer_id().0, pid + 1, "ids are unique");
        let first = idem_batch(pid, epoch, 0, &["a", "b"]);
        let second = idem_batch(pid, epoch, 2, &["c"]);
        let third = idem_batch(pid, epoch, 3, &["d", "e"]);
        let info = b.append("t", 0, &first, Acks::Leader).unwrap().info;
        assert_eq!((info.base_offset, info.last_offset), (0, 1));
        // The third batch overtakes the second: refused, nothing appended.
        let e = b.append("t", 0, &third, Acks::Leader).unwrap_err();
        assert_eq!(e.code(), ErrorCode::OutOfOrderSequenceNumber);
        assert_eq!(b.partition("t", 0).unwrap().end_offset(), 2);
        // A non-idempotent batch in between is not checked and does not disturb the sequence.
        let mut plain = sluice_protocol::batch::RecordBatchBuilder::new();
        plain.push(1, None, Some(b"x"), &[]);
        let info = b
            .append("t", 0, &plain.finish(), Acks::Leader)
            .unwrap()
            .info;
        assert_eq!(info.base_offset, 2);
        let info = b.append("t", 0, &second, Acks::Leader).unwrap().info;
        assert_eq!((info.base_offset, info.last_offset), (3, 3));
        let info = b.append("t", 0, &third, Acks::Leader).unwrap().info;
        assert_eq!((info.base_offset, info.last_offset), (4, 5));
        // Retries of batches already appended get their original offsets, no new records.
        let info = b.append("t", 0, &first, Acks::Leader).unwrap().info;
        assert_eq!((info.base_offset, info.last_offset), (0, 1));
        let info = b.append("t", 0, &second, Acks::Leader).unwrap().info;
        assert_eq!((info.base_offset, info.last_offset), (3, 3));
        assert_eq!(b.partition("t", 0).unwrap().end_offset(), 6);
        assert_eq!(values_in(&b, "t"), ["a", "b", "x", "c", "d", "e"]);
        // A corrupted copy of a recent batch is not answered as a retry.
        let mut bad = first.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let e = b.append("t", 0, &bad, Acks::Leader).unwrap_err();
        assert_eq!(e.code(), ErrorCode::CorruptMessage);
        // A lower epoch is fenced.
        let e = b
            .append("t", 0, &idem_batch(pid, epoch - 1, 5, &["z"]), Acks::Leader)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidProducerEpoch);
    }

    #[test]
    fn producer_state_is_rebuilt_from_the_log_on_reopen() {
        use sluice_protocol::ErrorCode;
        let dir = tempfile::tempdir().unwrap();
        let pid = 99;
        {
            let b = test_broker(dir.path(), ConfigLayer::default());
            b.append("t", 0, &idem_batch(pid, 0, 0, &["a"]), Acks::Leader)
                .unwrap();
            b.append("t", 0, &idem_batch(pid, 0, 1, &["b", "c"]), Acks::Leader)
                .unwrap();
            b.partition("t", 0).unwrap().close().unwrap();
        }
        let b = test_broker(dir.path(), ConfigLayer::default());
        // The retry of the last batch is still recognised after the restart.
        let info = b
            .append("t", 0, &idem_batch(pid, 0, 1, &["b", "c"]), Acks::Leader)
            .unwrap()
            .info;
        assert_eq!((info.base_offset, info.last_offset), (1, 2));
        let e = b
            .append("t", 0, &idem_batch(pid, 0, 9, &["x"]), Acks::Leader)
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::OutOfOrderSequenceNumber);
        b.append("t", 0, &idem_batch(pid, 0, 3, &["d"]), Acks::Leader)
            .unwrap();
        assert_eq!(values_in(&b, "t"), ["a", "b", "c", "d"]);
    }
}
