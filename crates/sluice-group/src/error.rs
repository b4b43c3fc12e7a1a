//! The crate's one error type, [`GroupError`], and its wire code mapping.

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
    fn group_ids() {
        assert!(validate_group_id("orders-app").is_ok());
        assert!(validate_group_id("").is_err());
        assert!(validate_group_id("a\nb").is_err());
        assert!(validate_group_id(&"x".repeat(256)).is_err());
    }
}
