//! The crate's error types and their wire code mappings: [`GroupError`]
//! (the native coordinator and the offset store, native codes) and
//! [`ClassicError`] (the Kafka classic protocol of [`crate::classic`],
//! Apache Kafka's numeric codes, see [`kafka`]).

use sluice_log::LogError;
use sluice_protocol::ErrorCode;
use thiserror::Error;

/// Everything that can go wrong in the group coordinator and the offset store.
///
/// Each variant but [`GroupError::Storage`] and [`GroupError::InvalidRequest`]
/// maps 1:1 to a group error code of `sluice_protocol::ErrorCode`.
#[derive(Debug, Error)]
pub enum GroupError {
    /// The group waits for a leader-supplied assignment (Kafka-classic mode); rejoin.
    #[error("group {group} is rebalancing")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },
    /// The generation presented is stale or from the future (fenced).
    #[error("illegal generation {generation} for group {group} (current {current})")]
    IllegalGeneration {
        /// The group.
        group: String,
        /// Generation the caller presented.
        generation: u32,
        /// The group's current generation.
        current: u32,
    },
    /// The member id is not (or no longer) in the group.
    #[error("unknown member {member} in group {group}")]
    UnknownMemberId {
        /// The group.
        group: String,
        /// The member id presented.
        member: String,
    },
    /// The group does not exist.
    #[error("group {group} not found")]
    GroupIdNotFound {
        /// The group.
        group: String,
    },
    /// The operation needs a group without members (delete, seek).
    #[error("group {group} still has {members} member(s)")]
    NonEmptyGroup {
        /// The group.
        group: String,
        /// Number of members right now.
        members: usize,
    },
    /// The member does not own a partition it tried to commit.
    #[error("member {member} of group {group} does not own {topic}-{partition}")]
    NotPartitionOwner {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// Topic of the partition.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The group id is empty, too long or contains control characters.
    #[error("invalid group id {0:?}")]
    InvalidGroupId(String),
    /// The session timeout is outside the configured range.
    #[error("session timeout {timeout_ms} ms outside [{min_ms}, {max_ms}]")]
    InvalidSessionTimeout {
        /// Requested timeout.
        timeout_ms: u64,
        /// Smallest allowed.
        min_ms: u64,
        /// Largest allowed.
        max_ms: u64,
    },
    /// A request field is malformed (a leader assignment naming unknown members
    /// or one partition twice, a field too long for the offset record layout).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The offsets log failed (I/O, disk full, failed fsync); the commit was not acknowledged.
    #[error("offset store: {0}")]
    Storage(#[source] LogError),
}

impl From<LogError> for GroupError {
    fn from(e: LogError) -> Self {
        GroupError::Storage(e)
    }
}

impl GroupError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupError::RebalanceInProgress { .. } => ErrorCode::RebalanceInProgress,
            GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
            GroupError::UnknownMemberId { .. } => ErrorCode::UnknownMemberId,
            GroupError::GroupIdNotFound { .. } => ErrorCode::GroupIdNotFound,
            GroupError::NonEmptyGroup { .. } => ErrorCode::NonEmptyGroup,
            GroupError::NotPartitionOwner { .. } => ErrorCode::NotPartitionOwner,
            GroupError::InvalidGroupId(_) => ErrorCode::InvalidGroupId,
            GroupError::InvalidSessionTimeout { .. } => ErrorCode::InvalidSessionTimeout,
            GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            GroupError::Storage(LogError::DiskFull { .. }) => ErrorCode::DiskFull,
            // A commit too large for one batch of the offsets log: the client's doing.
            GroupError::Storage(LogError::BatchTooLarge { .. }) => ErrorCode::MessageTooLarge,
            GroupError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl GroupError {
    /// Apache Kafka's error code for this error, for a Kafka-wire front end
    /// (OffsetCommit, OffsetFetch, DeleteGroups). Storage failures map as
    /// Kafka's own offset-commit path maps them: a batch too large is
    /// `INVALID_COMMIT_OFFSET_SIZE`, any other storage failure
    /// `NOT_COORDINATOR` (Kafka's mapping of `KAFKA_STORAGE_ERROR`).
    pub fn kafka_code(&self) -> i16 {
        match self {
            GroupError::RebalanceInProgress { .. } => kafka::REBALANCE_IN_PROGRESS,
            // Kafka has no "not the owner" error: the closest is a stale generation.
            GroupError::IllegalGeneration { .. } | GroupError::NotPartitionOwner { .. } => {
                kafka::ILLEGAL_GENERATION
            }
            GroupError::UnknownMemberId { .. } => kafka::UNKNOWN_MEMBER_ID,
            GroupError::GroupIdNotFound { .. } => kafka::GROUP_ID_NOT_FOUND,
            GroupError::NonEmptyGroup { .. } => kafka::NON_EMPTY_GROUP,
            GroupError::InvalidGroupId(_) => kafka::INVALID_GROUP_ID,
            GroupError::InvalidSessionTimeout { .. } => kafka::INVALID_SESSION_TIMEOUT,
            GroupError::InvalidRequest(_) => kafka::INVALID_REQUEST,
            GroupError::Storage(LogError::BatchTooLarge { .. }) => {
                kafka::INVALID_COMMIT_OFFSET_SIZE
            }
            GroupError::Storage(_) => kafka::NOT_COORDINATOR,
        }
    }
}

/// Apache Kafka's numeric error codes used by the classic group protocol
/// (`org.apache.kafka.common.protocol.Errors`).
pub mod kafka {
    /// UNKNOWN_SERVER_ERROR.
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// NONE.
    pub const NONE: i16 = 0;
    /// COORDINATOR_NOT_AVAILABLE.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// NOT_COORDINATOR.
    pub const NOT_COORDINATOR: i16 = 16;
    /// ILLEGAL_GENERATION.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// INCONSISTENT_GROUP_PROTOCOL.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// INVALID_GROUP_ID.
    pub const INVALID_GROUP_ID: i16 = 24;
    /// UNKNOWN_MEMBER_ID.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// INVALID_SESSION_TIMEOUT.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// REBALANCE_IN_PROGRESS.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// INVALID_COMMIT_OFFSET_SIZE.
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    /// INVALID_REQUEST.
    pub const INVALID_REQUEST: i16 = 42;
    /// NON_EMPTY_GROUP.
    pub const NON_EMPTY_GROUP: i16 = 68;
    /// GROUP_ID_NOT_FOUND.
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    /// MEMBER_ID_REQUIRED.
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    /// GROUP_MAX_SIZE_REACHED.
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    /// FENCED_INSTANCE_ID.
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// Everything the Kafka classic group protocol ([`crate::classic`]) can
/// answer besides success; [`ClassicError::kafka_code`] is the wire code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClassicError {
    /// The member id (or, for a new member, the group) is not known.
    #[error("unknown member {member:?} in group {group}")]
    UnknownMemberId {
        /// The group.
        group: String,
        /// The member id presented.
        member: String,
    },
    /// The generation presented is not the group's.
    #[error("illegal generation {generation} for group {group} (current {current})")]
    IllegalGeneration {
        /// The group.
        group: String,
        /// Generation the caller presented.
        generation: i32,
        /// The group's current generation.
        current: i32,
    },
    /// Protocol type or protocols do not match the group's.
    #[error("inconsistent group protocol for group {group}: {reason}")]
    InconsistentGroupProtocol {
        /// The group.
        group: String,
        /// What did not match.
        reason: String,
    },
    /// The group id is empty, too long or contains control characters.
    #[error("invalid group id {0:?}")]
    InvalidGroupId(String),
    /// The group is rebalancing: rejoin.
    #[error("group {group} is rebalancing")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },
    /// The session timeout is outside the configured range.
    #[error("session timeout {timeout_ms} ms outside [{min_ms}, {max_ms}]")]
    InvalidSessionTimeout {
        /// Requested timeout.
        timeout_ms: i64,
        /// Smallest allowed.
        min_ms: u64,
        /// Largest allowed.
        max_ms: u64,
    },
    /// The coordinator is shutting down or not ready.
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    /// This broker stopped coordinating the group (shutdown with requests parked).
    #[error("this broker no longer coordinates the group")]
    NotCoordinator,
    /// The group does not exist.
    #[error("group {group} not found")]
    GroupIdNotFound {
        /// The group.
        group: String,
    },
    /// The group is not empty (delete).
    #[error("group {group} is not empty ({members} member(s))")]
    NonEmptyGroup {
        /// The group.
        group: String,
        /// Members right now.
        members: usize,
    },
    /// A new dynamic member must rejoin with the member id it is given (KIP-394).
    #[error("group {group}: rejoin with member id {member_id}")]
    MemberIdRequired {
        /// The group.
        group: String,
        /// The id to rejoin with.
        member_id: String,
    },
    /// The group has as many members as it may.
    #[error("group {group} has reached its maximum size {max}")]
    GroupMaxSizeReached {
        /// The group.
        group: String,
        /// The configured maximum.
        max: usize,
    },
    /// Another member now holds this static instance id (KIP-345).
    #[error("group {group}: instance {instance_id} is now held by another member than {member}")]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The group instance id.
        instance_id: String,
        /// The fenced member id.
        member: String,
    },
    /// A request the state machine cannot serve for an internal reason.
    #[error("unexpected server error: {0}")]
    UnknownServerError(String),
}

impl ClassicError {
    /// Apache Kafka's numeric error code.
    pub fn kafka_code(&self) -> i16 {
        match self {
            ClassicError::UnknownMemberId { .. } => kafka::UNKNOWN_MEMBER_ID,
            ClassicError::IllegalGeneration { .. } => kafka::ILLEGAL_GENERATION,
            ClassicError::InconsistentGroupProtocol { .. } => kafka::INCONSISTENT_GROUP_PROTOCOL,
            ClassicError::InvalidGroupId(_) => kafka::INVALID_GROUP_ID,
            ClassicError::RebalanceInProgress { .. } => kafka::REBALANCE_IN_PROGRESS,
            ClassicError::InvalidSessionTimeout { .. } => kafka::INVALID_SESSION_TIMEOUT,
            ClassicError::CoordinatorNotAvailable => kafka::COORDINATOR_NOT_AVAILABLE,
            ClassicError::NotCoordinator => kafka::NOT_COORDINATOR,
            ClassicError::GroupIdNotFound { .. } => kafka::GROUP_ID_NOT_FOUND,
            ClassicError::NonEmptyGroup { .. } => kafka::NON_EMPTY_GROUP,
            ClassicError::MemberIdRequired { .. } => kafka::MEMBER_ID_REQUIRED,
            ClassicError::GroupMaxSizeReached { .. } => kafka::GROUP_MAX_SIZE_REACHED,
            ClassicError::FencedInstanceId { .. } => kafka::FENCED_INSTANCE_ID,
            ClassicError::UnknownServerError(_) => kafka::UNKNOWN_SERVER_ERROR,
        }
    }
}

/// Longest accepted group id, in bytes.
pub const MAX_GROUP_ID_LEN: usize = 255;

/// Checks a group id: 1..=255 bytes, no control characters.
pub fn validate_group_id(group: &str) -> Result<(), GroupError> {
    if group.is_empty() || group.len() > MAX_GROUP_ID_LEN || group.chars().any(char::is_control) {
        return Err(GroupError::InvalidGroupId(group.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_one_to_one() {
        let g = || "g".to_string();
        let cases = [
            (
                GroupError::Storage(LogError::BatchTooLarge { size: 2, max: 1 }),
                ErrorCode::MessageTooLarge,
            ),
            (
                GroupError::RebalanceInProgress { group: g() },
                ErrorCode::RebalanceInProgress,
            ),
            (
                GroupError::IllegalGeneration {
                    group: g(),
                    generation: 1,
                    current: 2,
                },
                ErrorCode::IllegalGeneration,
            ),
            (
                GroupError::UnknownMemberId {
                    group: g(),
                    member: g(),
                },
                ErrorCode::UnknownMemberId,
            ),
            (
                GroupError::GroupIdNotFound { group: g() },
                ErrorCode::GroupIdNotFound,
            ),
            (
                GroupError::NonEmptyGroup {
                    group: g(),
                    members: 1,
                },
                ErrorCode::NonEmptyGroup,
            ),
            (
                GroupError::NotPartitionOwner {
                    group: g(),
                    member: g(),
                    topic: g(),
                    partition: 0,
                },
                ErrorCode::NotPartitionOwner,
            ),
            (GroupError::InvalidGroupId(g()), ErrorCode::InvalidGroupId),
            (
                GroupError::InvalidSessionTimeout {
                    timeout_ms: 1,
                    min_ms: 2,
                    max_ms: 3,
                },
                ErrorCode::InvalidSessionTimeout,
            ),
            (GroupError::InvalidRequest(g()), ErrorCode::InvalidRequest),
            (
                GroupError::Storage(LogError::Poisoned),
                ErrorCode::StorageError,
            ),
        ];
        for (e, c) in cases {
            assert_eq!(e.code(), c, "{e}");
        }
    }

    #[test]
    fn classic_errors_carry_kafka_codes() {
        let g = || "g".to_string();
        let cases = [
            (
                ClassicError::UnknownMemberId {
                    group: g(),
                    member: g(),
                },
                25,
            ),
            (
                ClassicError::IllegalGeneration {
                    group: g(),
                    generation: 1,
                    current: 2,
                },
                22,
            ),
            (
                ClassicError::InconsistentGroupProtocol {
                    group: g(),
                    reason: g(),
                },
                23,
            ),
            (ClassicError::InvalidGroupId(g()), 24),
            (ClassicError::RebalanceInProgress { group: g() }, 27),
            (
                ClassicError::InvalidSessionTimeout {
                    timeout_ms: 1,
                    min_ms: 2,
                    max_ms: 3,
                },
                26,
            ),
            (ClassicError::CoordinatorNotAvailable, 15),
            (ClassicError::NotCoordinator, 16),
            (ClassicError::GroupIdNotFound { group: g() }, 69),
            (
                ClassicError::NonEmptyGroup {
                    group: g(),
                    members: 1,
                },
                68,
            ),
            (
                ClassicError::MemberIdRequired {
                    group: g(),
                    member_id: g(),
                },
                79,
            ),
            (ClassicError::GroupMaxSizeReached { group: g(), max: 1 }, 81),
            (
                ClassicError::FencedInstanceId {
                    group: g(),
                    instance_id: g(),
                    member: g(),
                },
                82,
            ),
            (ClassicError::UnknownServerError(g()), -1),
        ];
        for (e, code) in cases {
            assert_eq!(e.kafka_code(), code, "{e}");
        }
        assert_eq!(
            GroupError::Storage(LogError::Poisoned).kafka_code(),
            kafka::NOT_COORDINATOR
        );
        assert_eq!(
            GroupError::Storage(LogError::BatchTooLarge { size: 2, max: 1 }).kafka_code(),
            kafka::INVALID_COMMIT_OFFSET_SIZE
        );
    }

    #[test]
    fn group_ids() {
        assert!(validate_group_id("orders-app").is_ok());
        assert!(validate_group_id("").is_err());
        assert!(validate_group_id("a\nb").is_err());
        assert!(validate_group_id(&"x".repeat(256)).is_err());
    }
}
