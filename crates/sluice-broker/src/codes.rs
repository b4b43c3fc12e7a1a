//! The native protocol's wire codes for the broker core's errors.
//!
//! The core ([`crate::broker`], [`crate::partition`], ...) speaks in its own
//! types: [`BrokerError`], [`sluice_log::LogError`], [`crate::broker::Acks`],
//! [`crate::broker::OffsetSpec`]. Each front end maps them to its wire; this
//! is the native protocol's table (a Kafka front end has its own). Bring
//! [`WireCode`] into scope to call `.code()` on an error.

use sluice_log::LogError;
use sluice_protocol::batch::BatchError;
use sluice_protocol::ErrorCode;

use crate::error::BrokerError;
use crate::producer_state::Rejection;
use crate::topics::PartitionMissing;

/// An error with a native-protocol error code.
pub trait WireCode {
    /// The native error code a client receives for this error.
    fn code(&self) -> ErrorCode;
}

impl WireCode for BrokerError {
    fn code(&self) -> ErrorCode {
        match self {
            BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            BrokerError::InvalidTopic { .. } => ErrorCode::InvalidTopic,
            BrokerError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            BrokerError::InvalidPartitions { .. }
            | BrokerError::PartitionLimit { .. }
            | BrokerError::PartitionsNotIncreased { .. } => ErrorCode::InvalidPartitions,
            BrokerError::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            BrokerError::PartitionOffline { .. } => ErrorCode::StorageError,
            BrokerError::NotLeader { .. } => ErrorCode::NotLeaderForPartition,
            BrokerError::Replication { .. } => ErrorCode::StorageError,
            BrokerError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            BrokerError::EmptyProduce { .. } => ErrorCode::InvalidRequest,
            BrokerError::Sequence { reason, .. } => match reason {
                Rejection::OutOfOrderSequence => ErrorCode::OutOfOrderSequenceNumber,
                Rejection::FencedEpoch => ErrorCode::InvalidProducerEpoch,
            },
            // The same code as a real ENOSPC: to a client both mean "no room
            // to write, reads still work, retry once space is freed".
            BrokerError::DiskSpaceLow { .. } => ErrorCode::DiskFull,
            BrokerError::Log { source, .. } => log_error_code(source),
            BrokerError::Durability { source, .. } => log_error_code(source),
            BrokerError::Timeout { .. } => ErrorCode::RequestTimedOut,
            BrokerError::ShuttingDown => ErrorCode::BrokerShuttingDown,
            BrokerError::Controller(_) => ErrorCode::RequestTimedOut,
            BrokerError::InvalidReassignment(_) => ErrorCode::InvalidRequest,
            BrokerError::TopicMeta { .. }
            | BrokerError::Io { .. }
            | BrokerError::DataDirLocked { .. } => ErrorCode::StorageError,
            BrokerError::Bind { .. } | BrokerError::ConfigFile { .. } | BrokerError::Config(_) => {
                ErrorCode::Unknown
            }
        }
    }
}

/// Maps a storage error to the code a client sees.
pub fn log_error_code(err: &LogError) -> ErrorCode {
    match err {
        LogError::InvalidBatch(BatchError::UnsupportedCompression(_)) => {
            ErrorCode::UnsupportedCompression
        }
        LogError::InvalidBatch(BatchError::InvalidRecord(_)) => ErrorCode::InvalidRecord,
        LogError::InvalidBatch(BatchError::TimestampOutOfRange { .. }) => {
            ErrorCode::InvalidTimestamp
        }
        LogError::InvalidBatch(BatchError::DecompressedTooLarge { .. }) => {
            ErrorCode::MessageTooLarge
        }
        LogError::InvalidBatch(_) => ErrorCode::CorruptMessage,
        LogError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        LogError::DiskFull { .. } => ErrorCode::DiskFull,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        // A handle of a deleted partition.
        LogError::Closed => ErrorCode::UnknownTopicOrPartition,
        LogError::Io { .. } | LogError::Poisoned | LogError::Corrupt { .. } => {
            ErrorCode::StorageError
        }
        #[allow(unreachable_patterns)]
        _ => ErrorCode::StorageError,
    }
}

impl WireCode for PartitionMissing {
    fn code(&self) -> ErrorCode {
        match self {
            PartitionMissing::Unknown => ErrorCode::UnknownTopicOrPartition,
            PartitionMissing::Offline => ErrorCode::StorageError,
        }
    }
}

/// The core's acks level for a native wire value.
pub fn acks(wire: sluice_protocol::Acks) -> crate::broker::Acks {
    match wire {
        sluice_protocol::Acks::None => crate::broker::Acks::None,
        sluice_protocol::Acks::Leader => crate::broker::Acks::Leader,
        sluice_protocol::Acks::Durable => crate::broker::Acks::Durable,
    }
}

/// The core's offset spec for a native wire value.
pub fn offset_spec(wire: sluice_protocol::OffsetSpec) -> crate::broker::OffsetSpec {
    match wire {
        sluice_protocol::OffsetSpec::Earliest => crate::broker::OffsetSpec::Earliest,
        sluice_protocol::OffsetSpec::Latest => crate::broker::OffsetSpec::Latest,
        sluice_protocol::OffsetSpec::Timestamp(ts) => crate::broker::OffsetSpec::Timestamp(ts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn log_errors_map_to_documented_codes() {
        let cases = [
            (
                LogError::InvalidBatch(BatchError::CrcMismatch {
                    stored: 1,
                    computed: 2,
                }),
                ErrorCode::CorruptMessage,
            ),
            (
                LogError::InvalidBatch(BatchError::UnsupportedCompression(4)),
                ErrorCode::UnsupportedCompression,
            ),
            (
                LogError::DiskFull {
                    path: PathBuf::from("x"),
                },
                ErrorCode::DiskFull,
            ),
            (LogError::Poisoned, ErrorCode::StorageError),
            (LogError::Closed, ErrorCode::UnknownTopicOrPartition),
            (
                LogError::OffsetOutOfRange {
                    offset: 9,
                    start: 0,
                    end: 3,
                },
                ErrorCode::OffsetOutOfRange,
            ),
            (
                LogError::BatchTooLarge { size: 10, max: 1 },
                ErrorCode::MessageTooLarge,
            ),
            (
                LogError::InvalidBatch(BatchError::InvalidRecord("batch has no records")),
                ErrorCode::InvalidRecord,
            ),
            (
                LogError::InvalidBatch(BatchError::TimestampOutOfRange {
                    timestamp: 0,
                    now: 1,
                    limit_ms: 0,
                    direction: "before",
                }),
                ErrorCode::InvalidTimestamp,
            ),
            (
                LogError::InvalidBatch(BatchError::DecompressedTooLarge { limit: 1 }),
                ErrorCode::MessageTooLarge,
            ),
            (
                LogError::InvalidBatch(BatchError::Decompress {
                    codec: sluice_protocol::batch::Compression::Lz4,
                    reason: "bad frame".into(),
                }),
                ErrorCode::CorruptMessage,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(log_error_code(&err), code, "{err:?}");
        }
    }
}
