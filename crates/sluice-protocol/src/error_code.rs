//! Stable numeric error codes carried in responses. A retired code is never reused.

/// A wire error code (u16 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// An unexpected server error.
    Unknown = 1,
    /// A batch failed its CRC or layout check; nothing was appended.
    CorruptMessage = 2,
    /// The topic or partition does not exist.
    UnknownTopicOrPartition = 3,
    /// The requested offset is outside the log's range.
    OffsetOutOfRange = 4,
    /// A batch or request exceeds the configured size limit.
    MessageTooLarge = 5,
    /// This broker does not lead the partition; refresh metadata.
    NotLeaderForPartition = 6,
    /// The request did not complete within its timeout.
    RequestTimedOut = 7,
    /// The api key is known but the version is not supported.
    UnsupportedVersion = 8,
    /// The api key is not known to this broker.
    UnknownApi = 9,
    /// The request body could not be decoded.
    InvalidRequest = 10,
    /// The topic already exists.
    TopicAlreadyExists = 11,
    /// The topic name is empty, too long or has characters outside `[a-zA-Z0-9._-]`.
    InvalidTopic = 12,
    /// The partition count is zero or too large.
    InvalidPartitions = 13,
    /// A topic config key or value is not valid.
    InvalidConfig = 14,
    /// The disk is full, or its available space is below the broker's
    /// `disk_min_free_bytes`: produce is refused until space is freed (reads
    /// keep working).
    DiskFull = 15,
    /// A storage error (I/O failure, failed fsync); the partition is read-only until restart.
    StorageError = 16,
    /// The batch names a compression codec that does not exist (attribute bits 0-2 = 5 to 7).
    UnsupportedCompression = 17,
    /// The broker is shutting down.
    BrokerShuttingDown = 18,
    /// The acks value is not 0, 1 or 2.
    InvalidRequiredAcks = 19,
    /// The group is rebalancing; rejoin.
    RebalanceInProgress = 20,
    /// The generation is stale (fenced).
    IllegalGeneration = 21,
    /// The member id is not known to the group.
    UnknownMemberId = 22,
    /// The group does not exist.
    GroupIdNotFound = 23,
    /// The group still has members.
    NonEmptyGroup = 24,
    /// The member does not own the partition it tried to commit.
    NotPartitionOwner = 25,
    /// The group id is empty or invalid.
    InvalidGroupId = 26,
    /// Session timeout is outside the allowed range.
    InvalidSessionTimeout = 27,
    /// An idempotent batch's base sequence is not the next one expected for its
    /// producer on this partition (an earlier batch is missing); nothing was
    /// appended. Retriable: the producer re-sends its batches in order.
    OutOfOrderSequenceNumber = 28,
    /// The batch carries an older producer epoch than the broker knows for its producer id (fenced).
    InvalidProducerEpoch = 29,
    /// The batch is well-formed but breaks a batch rule (no records, offset deltas
    /// not 0..n-1, a wrong max_timestamp, control/transactional/unused attribute bits);
    /// nothing was appended.
    InvalidRecord = 30,
    /// A record timestamp is too far in the past or future of the broker clock
    /// (topic configs `message.timestamp.before.max.ms` / `after.max.ms`); nothing was appended.
    InvalidTimestamp = 31,
    /// The replication factor is not -1 (the default) or 1..=the number of
    /// available brokers (Kafka's INVALID_REPLICATION_FACTOR, 38); nothing was created.
    InvalidReplicationFactor = 32,
    /// The partition has no live leader right now (its leader's broker is
    /// fenced or the topic is still being created); refresh metadata and retry.
    LeaderNotAvailable = 33,
    /// This broker does not coordinate the group; find the coordinator and retry.
    NotCoordinator = 34,
    /// The group's coordinator is not available right now; retry later.
    CoordinatorNotAvailable = 35,
    /// A replica fetch named an older leader epoch than the leader's: the
    /// follower must learn the new leadership from the metadata first.
    FencedLeaderEpoch = 36,
    /// A replica fetch named a newer leader epoch than this broker knows:
    /// this broker's metadata is behind; retry.
    UnknownLeaderEpoch = 37,
    /// The principal may not do this to a topic it names (ACLs); nothing was applied.
    TopicAuthorizationFailed = 38,
    /// The principal may not do this to the group it names (ACLs); nothing was applied.
    GroupAuthorizationFailed = 39,
    /// The principal may not do this cluster-wide operation (ACLs); nothing was applied.
    ClusterAuthorizationFailed = 40,
    /// SASL authentication failed (wrong password, unknown user, bad proof).
    SaslAuthenticationFailed = 41,
    /// The SASL mechanism is not offered (or is PLAIN without TLS while that is not allowed).
    UnsupportedSaslMechanism = 42,
    /// A SASL request out of sequence, SASL on a listener without it, or
    /// another request before authentication.
    IllegalSaslState = 43,
    /// The user, credential or quota entity named does not exist.
    ResourceNotFound = 44,
}

impl ErrorCode {
    /// Every defined code, in numeric order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::None,
        ErrorCode::Unknown,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::MessageTooLarge,
        ErrorCode::NotLeaderForPartition,
        ErrorCode::RequestTimedOut,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownApi,
        ErrorCode::InvalidRequest,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidTopic,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidConfig,
        ErrorCode::DiskFull,
        ErrorCode::StorageError,
        ErrorCode::UnsupportedCompression,
        ErrorCode::BrokerShuttingDown,
        ErrorCode::InvalidRequiredAcks,
        ErrorCode::RebalanceInProgress,
        ErrorCode::IllegalGeneration,
        ErrorCode::UnknownMemberId,
        ErrorCode::GroupIdNotFound,
        ErrorCode::NonEmptyGroup,
        ErrorCode::NotPartitionOwner,
        ErrorCode::InvalidGroupId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::InvalidRecord,
        ErrorCode::InvalidTimestamp,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::TopicAuthorizationFailed,
        ErrorCode::GroupAuthorizationFailed,
        ErrorCode::ClusterAuthorizationFailed,
        ErrorCode::SaslAuthenticationFailed,
        ErrorCode::UnsupportedSaslMechanism,
        ErrorCode::IllegalSaslState,
        ErrorCode::ResourceNotFound,
    ];

    /// The numeric value sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Maps a wire value back to a code; unknown values become [`ErrorCode::Unknown`].
    pub fn from_code(code: u16) -> ErrorCode {
        ErrorCode::ALL
            .get(code as usize)
            .copied()
            .unwrap_or(ErrorCode::Unknown)
    }

    /// The SCREAMING_SNAKE name used in logs, the CLI and `protocol.md`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::Unknown => "UNKNOWN_SERVER_ERROR",
            ErrorCode::CorruptMessage => "CORRUPT_MESSAGE",
            ErrorCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::NotLeaderForPartition => "NOT_LEADER_FOR_PARTITION",
            ErrorCode::RequestTimedOut => "REQUEST_TIMED_OUT",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::UnknownApi => "UNKNOWN_API",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidTopic => "INVALID_TOPIC",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::DiskFull => "DISK_FULL",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::UnsupportedCompression => "UNSUPPORTED_COMPRESSION",
            ErrorCode::BrokerShuttingDown => "BROKER_SHUTTING_DOWN",
            ErrorCode::InvalidRequiredAcks => "INVALID_REQUIRED_ACKS",
            ErrorCode::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            ErrorCode::IllegalGeneration => "ILLEGAL_GENERATION",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::GroupIdNotFound => "GROUP_ID_NOT_FOUND",
            ErrorCode::NonEmptyGroup => "NON_EMPTY_GROUP",
            ErrorCode::NotPartitionOwner => "NOT_PARTITION_OWNER",
            ErrorCode::InvalidGroupId => "INVALID_GROUP_ID",
            ErrorCode::InvalidSessionTimeout => "INVALID_SESSION_TIMEOUT",
            ErrorCode::OutOfOrderSequenceNumber => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            ErrorCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            ErrorCode::InvalidRecord => "INVALID_RECORD",
            ErrorCode::InvalidTimestamp => "INVALID_TIMESTAMP",
            ErrorCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorCode::LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            ErrorCode::NotCoordinator => "NOT_COORDINATOR",
            ErrorCode::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            ErrorCode::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            ErrorCode::UnknownLeaderEpoch => "UNKNOWN_LEADER_EPOCH",
            ErrorCode::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
            ErrorCode::GroupAuthorizationFailed => "GROUP_AUTHORIZATION_FAILED",
            ErrorCode::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
            ErrorCode::SaslAuthenticationFailed => "SASL_AUTHENTICATION_FAILED",
            ErrorCode::UnsupportedSaslMechanism => "UNSUPPORTED_SASL_MECHANISM",
            ErrorCode::IllegalSaslState => "ILLEGAL_SASL_STATE",
            ErrorCode::ResourceNotFound => "RESOURCE_NOT_FOUND",
        }
    }

    /// Whether a client may retry the same request and expect it to succeed later.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::UnknownTopicOrPartition
                | ErrorCode::NotLeaderForPartition
                | ErrorCode::RequestTimedOut
                | ErrorCode::BrokerShuttingDown
                | ErrorCode::RebalanceInProgress
                | ErrorCode::OutOfOrderSequenceNumber
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_round_trip() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.code() as usize, i, "{c:?} out of place in ALL");
            assert_eq!(ErrorCode::from_code(c.code()), *c);
        }
        assert_eq!(ErrorCode::from_code(60000), ErrorCode::Unknown);
    }
}
