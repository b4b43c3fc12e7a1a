//! The Sluice broker: partitions on top of `sluice-log`, the native protocol
//! front end, metrics, and the `sluiced` binary.
//!
//! Layout:
//! - [`broker`]: the protocol-neutral API ([`Broker`]): append/produce,
//!   long-poll fetch, list offsets, describe, create and delete topics. Every
//!   front end (native today, Kafka wire later) calls only this.
//! - [`topics`]: the topic registry (its own lock) and on-disk layout;
//!   [`topic_meta`]: per-topic config and the `topic.meta` file format.
//! - [`partition`]: one log, its end-offset watch (wakes parked fetches) and
//!   its group-commit flusher (durable acks); [`producer_state`]: the
//!   idempotent-producer sequence checks applied under its append lock.
//! - [`group`]: consumer groups ([`Groups`]): the coordinator behind its own
//!   lock, the `__consumer_offsets` store, parked heartbeats, the expiry timer.
//! - [`handler`]: the api-key -> handler table for the native protocol;
//!   [`connection`]: per-connection reader/writer tasks; [`server`]: listeners,
//!   connection cap, housekeeping, graceful shutdown; [`http`]: `/metrics` and
//!   `/health`.
//! - [`config`]: TOML file < `SLUICE_*` env < flags; [`metrics`]: Prometheus.
//! - [`error`]: [`BrokerError`] and its mapping to wire error codes.

#![warn(missing_docs)]

pub mod broker;
pub mod config;
pub mod connection;
pub mod driver;
pub mod error;
pub mod group;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod partition;
pub mod producer_state;
pub mod server;
pub mod topic_meta;
pub mod topics;

pub use broker::{
    Appended, Broker, FetchParams, FetchResult, FetchTarget, FetchedData, PartitionDescription,
    PreparedFetch, TopicDescription,
};
pub use config::{BrokerConfig, Cli, ConfigLayer, FlushMode, TopicDefaults};
pub use error::BrokerError;
pub use group::Groups;
pub use metrics::Metrics;
pub use server::{shutdown_signal, Server};
