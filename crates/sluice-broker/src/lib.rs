//! The Sluice broker core: partitions on top of `sluice-log`, consumer
//! groups, metrics, the generic connection driver and the native protocol
//! front end. The `sluiced` binary (listeners, HTTP, shutdown) is its own
//! crate, so that every front end depends on this core and the binary on
//! all of them.
//!
//! Layout:
//! - [`broker`]: the protocol-neutral API ([`Broker`]): append/produce,
//!   long-poll fetch, list offsets, describe, create and delete topics. Every
//!   front end (native today, Kafka wire later) calls only this.
//! - [`topics`]: the topic registry (its own lock) and on-disk layout;
//!   [`topic_meta`]: per-topic config and the `topic.meta` file format.
//! - [`partition`]: one log, its high-watermark watch (wakes parked fetches) and
//!   its group-commit flusher (durable acks); [`producer_state`]: the
//!   idempotent-producer sequence checks applied under its append lock.
//! - [`group`]: consumer groups ([`Groups`]): the coordinator behind its own
//!   lock, the `__consumer_offsets` store, parked heartbeats, the expiry timer;
//!   [`classic`]: the Kafka classic group protocol (JoinGroup/SyncGroup
//!   barriers answered through futures) on the same lock, store and timer.
//! - [`driver`]: one connection driver for any length-prefixed protocol
//!   (framing, request-memory budget, timeouts, deferred-request cap,
//!   ordered or unordered responses, shutdown).
//! - [`handler`]: the api-key -> handler table for the native protocol;
//!   [`connection`]: the native front end on the driver; `native_security`:
//!   SASL, ACL checks, filtered answers and the security admin apis of the
//!   native protocol (the policy is [`security`]'s).
//! - [`config`]: TOML file < `SLUICE_*` env < flags; [`metrics`]: Prometheus.
//! - [`disk`]: free space on the data directory and the produce guard
//!   (`disk_min_free_bytes`).
//! - [`error`]: [`BrokerError`] and its mapping to wire error codes.
//! - [`slow_log`]: the `slow request` log of both wires (waits by design left out).

#![warn(missing_docs)]

pub mod broker;
pub mod classic;
pub mod cluster;
pub mod codes;
pub mod config;
pub mod connection;
pub mod disk;
pub mod driver;
pub mod error;
pub mod group;
pub mod handler;
pub mod metrics;
mod native_security;
pub mod partition;
pub mod placement;
pub mod producer_state;
pub mod replica;
pub mod security;
pub mod slow_log;
pub mod topic_meta;
pub mod topics;

pub use broker::{
    Acks, Appended, Broker, FetchParams, FetchResult, FetchTarget, FetchedData, GroupCoordinator,
    GroupCoordinatorRule, OffsetSpec, PartitionDescription, PreparedFetch, TopicDescription,
    SINGLE_NODE_CLUSTER_ID, SINGLE_NODE_ID,
};
pub use classic::{
    ClassicJoinMember, ClassicJoinRequest, ClassicJoinResponse, ClassicSyncRequest,
    ClassicSyncResponse,
};
pub use cluster::{ClusterLink, ClusterView};
pub use config::{BrokerConfig, Cli, ClusterConfig, ConfigLayer, FlushMode, TopicDefaults};
pub use error::BrokerError;
pub use group::Groups;
pub use metrics::Metrics;
