//! Sluice's native error codes mapped onto Apache Kafka's numbering.
//!
//! The broker core answers with [`ErrorCode`] (the native protocol's codes);
//! Kafka clients act on Kafka's codes (retriable or not, refresh metadata or
//! not). The mapping keeps the retry semantics: a native code Kafka has no
//! twin for maps onto the Kafka code a client handles the same way.

use sluice_protocol::ErrorCode;

/// Kafka error codes this front end sends (Apache Kafka's `Errors` enum).
pub mod kafka {
    /// No error.
    pub const NONE: i16 = 0;
    /// An unexpected server error.
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// The requested offset is outside the log.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// A record failed its CRC or is otherwise corrupt.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// The topic or partition does not exist.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// There is no leader for the partition right now.
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    /// This broker does not lead the partition.
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// The request timed out.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// A batch is larger than the topic accepts.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// The group coordinator is not available.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// This broker does not coordinate the group.
    pub const NOT_COORDINATOR: i16 = 16;
    /// The topic name is invalid.
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    /// acks is not -1, 0 or 1.
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    /// The generation is not the group's current one.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// The member's protocol does not match the group's.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// The group id is invalid.
    pub const INVALID_GROUP_ID: i16 = 24;
    /// The member id is not in the group.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// The session timeout is outside the allowed range.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// The group is rebalancing; rejoin.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// The commit's metadata is too large.
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    /// A timestamp is outside the accepted range.
    pub const INVALID_TIMESTAMP: i16 = 32;
    /// The api version is not supported.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// The topic already exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// The partition count is invalid.
    pub const INVALID_PARTITIONS: i16 = 37;
    /// The replication factor is invalid.
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// The replica assignment is invalid.
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    /// A config key or value is invalid.
    pub const INVALID_CONFIG: i16 = 40;
    /// The request is malformed or asks for something not served.
    pub const INVALID_REQUEST: i16 = 42;
    /// A produced batch's sequence is not the next expected one.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// The producer epoch is stale.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// The partition's storage failed.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// The group still has members.
    pub const NON_EMPTY_GROUP: i16 = 68;
    /// The group does not exist.
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    /// The fetch session id is unknown.
    pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    /// The leader epoch in the request is older than the broker's.
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    /// The leader epoch in the request is newer than the broker's.
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    /// The compression codec is not supported.
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    /// A record is invalid (timestamp, size, key on a compacted topic, ...).
    pub const INVALID_RECORD: i16 = 87;
    /// The partition is still subscribed by an active group member.
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    /// The topic id is unknown.
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    /// The transactional id is not authorized (Sluice serves no transactions).
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    /// The broker does not handle this consumer-group protocol.
    pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
}

/// The Kafka code for a native error code.
pub fn to_kafka(code: ErrorCode) -> i16 {
    use kafka::*;
    match code {
        ErrorCode::None => NONE,
        ErrorCode::Unknown => UNKNOWN_SERVER_ERROR,
        ErrorCode::CorruptMessage => CORRUPT_MESSAGE,
        ErrorCode::UnknownTopicOrPartition => UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        ErrorCode::MessageTooLarge => MESSAGE_TOO_LARGE,
        ErrorCode::NotLeaderForPartition => NOT_LEADER_OR_FOLLOWER,
        ErrorCode::RequestTimedOut => REQUEST_TIMED_OUT,
        ErrorCode::UnsupportedVersion | ErrorCode::UnknownApi => UNSUPPORTED_VERSION,
        ErrorCode::InvalidRequest => INVALID_REQUEST,
        ErrorCode::TopicAlreadyExists => TOPIC_ALREADY_EXISTS,
        ErrorCode::InvalidTopic => INVALID_TOPIC_EXCEPTION,
        ErrorCode::InvalidPartitions => INVALID_PARTITIONS,
        ErrorCode::InvalidConfig => INVALID_CONFIG,
        ErrorCode::DiskFull | ErrorCode::StorageError => KAFKA_STORAGE_ERROR,
        ErrorCode::UnsupportedCompression => UNSUPPORTED_COMPRESSION_TYPE,
        // Clients retry NOT_LEADER after a metadata refresh: by then the
        // leaderships of a broker shutting down have moved.
        ErrorCode::BrokerShuttingDown => NOT_LEADER_OR_FOLLOWER,
        ErrorCode::InvalidRequiredAcks => INVALID_REQUIRED_ACKS,
        ErrorCode::RebalanceInProgress => REBALANCE_IN_PROGRESS,
        ErrorCode::IllegalGeneration | ErrorCode::NotPartitionOwner => ILLEGAL_GENERATION,
        ErrorCode::UnknownMemberId => UNKNOWN_MEMBER_ID,
        ErrorCode::GroupIdNotFound => GROUP_ID_NOT_FOUND,
        ErrorCode::NonEmptyGroup => NON_EMPTY_GROUP,
        ErrorCode::InvalidGroupId => INVALID_GROUP_ID,
        ErrorCode::InvalidSessionTimeout => INVALID_SESSION_TIMEOUT,
        ErrorCode::OutOfOrderSequenceNumber => OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorCode::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
        ErrorCode::InvalidRecord => INVALID_RECORD,
        ErrorCode::InvalidTimestamp => INVALID_TIMESTAMP,
        ErrorCode::InvalidReplicationFactor => INVALID_REPLICATION_FACTOR,
        ErrorCode::LeaderNotAvailable => LEADER_NOT_AVAILABLE,
        ErrorCode::NotCoordinator => NOT_COORDINATOR,
        ErrorCode::CoordinatorNotAvailable => COORDINATOR_NOT_AVAILABLE,
        ErrorCode::FencedLeaderEpoch => FENCED_LEADER_EPOCH,
        ErrorCode::UnknownLeaderEpoch => UNKNOWN_LEADER_EPOCH,
        ErrorCode::TopicAuthorizationFailed => crate::auth::TOPIC_AUTHORIZATION_FAILED,
        ErrorCode::GroupAuthorizationFailed => crate::auth::GROUP_AUTHORIZATION_FAILED,
        ErrorCode::ClusterAuthorizationFailed => crate::auth::CLUSTER_AUTHORIZATION_FAILED,
        ErrorCode::SaslAuthenticationFailed => crate::auth::SASL_AUTHENTICATION_FAILED,
        ErrorCode::UnsupportedSaslMechanism => crate::auth::UNSUPPORTED_SASL_MECHANISM,
        ErrorCode::IllegalSaslState => crate::auth::ILLEGAL_SASL_STATE,
        // Kafka's RESOURCE_NOT_FOUND.
        ErrorCode::ResourceNotFound => 91,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_native_code_maps_and_only_none_maps_to_none() {
        for code in ErrorCode::ALL {
            let k = to_kafka(*code);
            assert_eq!(k == kafka::NONE, *code == ErrorCode::None, "{code:?}");
        }
        assert_eq!(
            to_kafka(ErrorCode::NotLeaderForPartition),
            kafka::NOT_LEADER_OR_FOLLOWER
        );
        assert_eq!(to_kafka(ErrorCode::OffsetOutOfRange), 1);
    }
}
