//! Sluice cluster metadata: the controller, run as one openraft group.
//!
//! Layout:
//! - [`metadata`]: the replicated [`ClusterMetadata`] and the pure, deterministic
//!   [`ClusterMetadata::apply`] of one [`MetadataCommand`].
//! - [`store`]: the controller's files (Raft log, vote, state-machine snapshot),
//!   each written with fsync before it is reported durable.
//! - [`raft`]: openraft's v2 storage traits on those files.
//! - [`network`]: the cluster frames over TCP and openraft's network on them.
//! - [`controller`]: [`Controller`], which starts a node, bootstraps the group
//!   and proposes commands through the leader.
//!
//! openraft is pinned to `=0.9.21` with its `serde` and `storage-v2` features.
//! After a restart, [`Controller::metadata`] shows the last snapshot until the
//! leader commits again and the log after it is re-applied.

pub mod controller;
pub mod metadata;
pub mod network;
pub mod raft;
pub mod store;

pub use controller::{Controller, ControllerConfig, ControllerStatus};
pub use metadata::{
    Broker, ClusterMetadata, CommandResult, CommittedOffset, GroupOffset, MetadataCommand, NodeId,
    PartitionMeta, PartitionMove, TopicMeta,
};

/// Errors of the cluster crate.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what we wrote.
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The file concerned.
        path: std::path::PathBuf,
        /// Why it is rejected.
        reason: String,
    },
    /// A cluster connection failed.
    #[error("cluster network: {0}")]
    Net(#[source] std::io::Error),
    /// A cluster frame was malformed.
    #[error("cluster frame: {0}")]
    Frame(String),
    /// A peer did not answer in time.
    #[error("request to {0} timed out")]
    Timeout(String),
    /// No controller leader was known in time.
    #[error("no controller leader")]
    NoLeader,
    /// openraft refused or failed an operation.
    #[error("raft: {0}")]
    Raft(String),
    /// Encoding or decoding a serde value failed.
    #[error("serde: {0}")]
    Serde(#[from] serde_json::Error),
}

/// Result alias of the cluster crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
