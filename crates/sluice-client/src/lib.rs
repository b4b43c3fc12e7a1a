//! Async Producer, Consumer and Admin for the Sluice native protocol.
//!
//! Layout:
//! - [`connection`]: one multiplexed TCP connection per broker (pipelined
//!   requests matched by correlation id, timeouts, reconnect with backoff).
//! - `cluster` (internal): the metadata cache that routes each partition's
//!   requests to its leader and refreshes on `NOT_LEADER_FOR_PARTITION` /
//!   `UNKNOWN_TOPIC_OR_PARTITION`.
//! - [`Admin`]: create, list, describe, delete topics; list offsets; list,
//!   describe (with lag), delete and seek consumer groups; describe the cluster.
//! - [`Producer`]: per-partition batching, key-hash and sticky partitioning
//!   ([`partitioner`]), bounded buffer with backpressure, retries.
//! - [`Consumer`]: assigned partitions, seeks, pipelined long-poll fetches,
//!   records as a `futures::Stream`; or group membership with
//!   [`Consumer::subscribe`] (`group`, internal: join, long-poll heartbeats,
//!   revoke/commit/confirm, rejoin), committed offsets, auto or manual commit.
//! - SASL ([`ClientConfig::sasl`], [`ClientSasl`]): every connection
//!   authenticates right after connecting (and after TLS); the security
//!   admin methods of [`Admin`] manage users, ACLs ([`acl`]) and quotas.
//! - [`ClientError`]: the one error type.
//! - [`ClientConfig`]: addresses and timeouts shared by all of the above;
//!   [`ClientTls`] (`ClientConfig::tls`) puts every connection on TLS.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_client::ClientError> {
//! use sluice_client::{Consumer, Producer, Record, SeekTo};
//! let producer = Producer::new("127.0.0.1:7171");
//! let (partition, offset) = producer.send(Record::new("events", "hello").key("k")).await?;
//! let mut consumer = Consumer::new("127.0.0.1:7171");
//! consumer.assign(vec![("events".to_string(), partition)]);
//! consumer.seek("events", partition, SeekTo::Offset(offset))?;
//! let record = consumer.next().await.expect("assigned")?;
//! assert_eq!(record.value.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod admin;
mod cluster;
mod config;
pub mod connection;
mod consumer;
mod error;
mod group;
pub mod partitioner;
mod producer;
mod sasl;

pub use admin::{
    Admin, BrokerInfo, ClusterInfo, GroupDescription, GroupListing, GroupMember, GroupPartitionLag,
    ListedOffset, PartitionInfo, TopicInfo, DEFAULT_SCRAM_ITERATIONS,
};
pub use config::{ClientConfig, ClientTls, DEFAULT_BROKER};
pub use connection::Connection;
pub use consumer::{AssignmentSource, Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
pub use error::{ClientError, Result};
pub use group::OffsetReset;
pub use producer::{Delivery, Producer, ProducerConfig, Record, UNKNOWN_OFFSET};
pub use sasl::{ClientSasl, SaslMechanism};
/// The ACL model (bindings, filters, resource types, operations) the
/// security admin methods of [`Admin`] take and return.
pub use sluice_auth::acl;
/// Quota entities and rates ([`Admin::alter_quota`], [`Admin::describe_quotas`]).
pub use sluice_auth::quota::{EntityName, QuotaEntity, QuotaValues};
pub use sluice_protocol::batch::Compression;
pub use sluice_protocol::{Acks, ConfigChange, ErrorCode, OffsetSpec, PartitionReplicas};
pub use sluice_protocol::{DescribedUser, ScramMechanismType};
