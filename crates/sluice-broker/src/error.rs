//! The broker's error type. Front ends map it to their wire codes (the
//! native protocol's in [`crate::codes`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sluice_log::LogError;

use crate::producer_state::Rejection;

/// Everything that can go wrong inside the broker.
///
/// Request-level variants are mapped to wire codes by each front end (the
/// native one: [`crate::codes::WireCode`]); startup variants (config, bind,
/// topic metadata) end the process.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The topic does not exist (and was not auto-created).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// The topic exists but has no such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Requested partition.
        partition: u32,
    },
    /// The topic name is not `[a-zA-Z0-9._-]{1,249}` (or is `.`/`..`).
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A topic with that name already exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The partition count is zero or above the limit.
    #[error("invalid partition count {count} (must be 1..={max})")]
    InvalidPartitions {
        /// Requested count.
        count: u32,
        /// Largest allowed.
        max: u32,
    },
    /// CreatePartitions asked for a count that is not larger than the topic's.
    #[error("topic {topic:?} has {current} partitions; the new count {requested} must be larger (partitions cannot be removed)")]
    PartitionsNotIncreased {
        /// Topic name.
        topic: String,
        /// Its partition count now.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
    /// The replication factor is not the default or 1..=the live brokers.
    #[error("{}", replication_factor_problem(*factor, *brokers))]
    InvalidReplicationFactor {
        /// Requested factor (-1 is the default and never refused).
        factor: i32,
        /// Brokers available to hold replicas.
        brokers: u32,
    },
    /// Creating the partitions would exceed the broker-wide partition cap.
    #[error("broker-wide partition limit reached: {existing} partitions exist, {requested} more requested, at most {max} allowed (max_partitions)")]
    PartitionLimit {
        /// Partitions asked for.
        requested: u32,
        /// Partitions that exist now (all topics).
        existing: u64,
        /// The cap.
        max: u32,
    },
    /// The partition's files could not be opened at start; it is not served.
    #[error("{topic}/{partition} is offline: {reason}")]
    PartitionOffline {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// Why it could not be opened.
        reason: String,
    },
    /// A topic config key or value is not valid.
    #[error("invalid topic config {key}={value:?}: {reason}")]
    InvalidConfig {
        /// Config key.
        key: String,
        /// Rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A produce request carried no record batch.
    #[error("produce request for {topic}/{partition} carries no record batch")]
    EmptyProduce {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// An idempotent batch was refused: a sequence gap (OUT_OF_ORDER_SEQUENCE_NUMBER)
    /// or a fenced producer epoch (INVALID_PRODUCER_EPOCH).
    #[error("{topic}/{partition}: producer {producer_id} epoch {epoch} batch at sequence {first_seq} refused ({reason})")]
    Sequence {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The batch's producer id.
        producer_id: i64,
        /// The batch's producer epoch.
        epoch: i16,
        /// The batch's base sequence.
        first_seq: i32,
        /// Why it was refused.
        reason: Rejection,
    },
    /// Produce refused before touching the log: the data directory's file
    /// system has less space available than `disk_min_free_bytes` (see
    /// [`crate::disk`]).
    #[error("produce refused: {available} bytes available on the data directory's file system, below disk_min_free_bytes = {min_free}; free space (delete topics, lower retention) or lower the limit")]
    DiskSpaceLow {
        /// Bytes available at the last measurement.
        available: u64,
        /// The configured floor.
        min_free: u64,
    },
    /// The storage engine refused or failed an operation on one partition.
    #[error("log {topic}/{partition}")]
    Log {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The storage error.
        #[source]
        source: LogError,
    },
    /// Waiting for an fsync failed; shared by every request of one group commit.
    #[error("durability wait on {topic}/{partition} failed")]
    Durability {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// The storage error, shared between the waiters of one flush.
        #[source]
        source: Arc<LogError>,
    },
    /// Durability was not reached within the request's timeout.
    #[error("timed out after {timeout_ms} ms waiting for durability")]
    Timeout {
        /// The request's timeout.
        timeout_ms: u64,
    },
    /// This broker does not lead the partition (any more); the request's
    /// writes were not acknowledged here.
    #[error("{topic}/{partition}: not the leader here")]
    NotLeader {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// A follower could not apply what its leader sent (a gap or a broken
    /// batch); it fetches again.
    #[error("{topic}/{partition}: replication: {reason}")]
    Replication {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// What was wrong.
        reason: String,
    },
    /// The broker is shutting down and refuses new work.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// The cluster controller could not carry out a metadata change (no leader, unreachable, timed out).
    #[error("cluster controller: {0}")]
    Controller(String),
    /// A partition move the controller refused.
    #[error("reassignment refused: {0}")]
    InvalidReassignment(String),
    /// A `topic.meta` file is missing, damaged or has an unknown version.
    #[error("topic metadata {path}: {reason}")]
    TopicMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A filesystem operation on broker-owned files failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data directory's lock file.
    #[error("data directory is in use by another broker (lock {path} is held)")]
    DataDirLocked {
        /// The lock file.
        path: PathBuf,
    },
    /// A listener could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML config file could not be parsed.
    #[error("config file {path}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: toml::de::Error,
    },
    /// A config value is out of its domain.
    #[error("invalid config: {0}")]
    Config(String),
}

impl BrokerError {
    /// For an out-of-range offset: the log's `(start, end)` offsets, so a
    /// front end can tell the client where to reposition.
    pub fn offset_range(&self) -> Option<(u64, u64)> {
        match self {
            BrokerError::Log {
                source: LogError::OffsetOutOfRange { start, end, .. },
                ..
            } => Some((*start, *end)),
            _ => None,
        }
    }
}

/// Formats an error with its whole `source()` chain on one line (for log lines).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// The message of [`BrokerError::InvalidReplicationFactor`].
fn replication_factor_problem(factor: i32, brokers: u32) -> String {
    if factor < 1 {
        format!(
            "invalid replication factor {factor}: must be -1 (the broker default) or at least 1"
        )
    } else {
        let s = if brokers == 1 { "" } else { "s" };
        format!(
            "replication factor {factor} is larger than the number of available brokers: {brokers} broker{s} available"
        )
    }
}
