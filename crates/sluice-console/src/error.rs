//! What an API call can fail with, its HTTP status and its words.

use sluice_client::{ClientError, ErrorCode};

/// A failed console API call.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The request itself is wrong (a field missing or out of range).
    #[error("{0}")]
    BadRequest(String),
    /// No credentials were given where the broker requires a login.
    #[error("login required: the broker requires a user name and password")]
    LoginRequired,
    /// The credentials were refused.
    #[error("login failed for user {user}: wrong user name or password")]
    LoginFailed {
        /// The user name tried.
        user: String,
    },
    /// No such path or method.
    #[error("{0}")]
    NotFound(String),
    /// The broker refused or failed the operation.
    #[error("{message}")]
    Client {
        /// What was being done, in plain words, with the broker's reason.
        message: String,
        /// The HTTP status it maps to.
        status: u16,
    },
}

impl ConsoleError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            ConsoleError::BadRequest(_) => 400,
            ConsoleError::LoginRequired | ConsoleError::LoginFailed { .. } => 401,
            ConsoleError::NotFound(_) => 404,
            ConsoleError::Client { status, .. } => *status,
        }
    }

    /// A client error met while doing `what` (e.g. `create topic "t"`).
    pub fn client(what: &str, e: ClientError) -> ConsoleError {
        if let ClientError::Authentication { user, .. } = &e {
            return ConsoleError::LoginFailed { user: user.clone() };
        }
        let status = match &e {
            ClientError::InvalidArgument(_) => 400,
            ClientError::Unreachable { .. }
            | ClientError::Tls { .. }
            | ClientError::Disconnected { .. } => 502,
            ClientError::Timeout { .. } => 504,
            _ => e.code().map(status_of).unwrap_or(500),
        };
        let reason = match e.code() {
            Some(code) => match words(code) {
                Some(w) => format!("{w} ({})", code.name()),
                None => code.name().to_string(),
            },
            None => e.to_string(),
        };
        ConsoleError::Client {
            message: format!("could not {what}: {reason}"),
            status,
        }
    }
}

/// The HTTP status a broker error code maps to.
fn status_of(code: ErrorCode) -> u16 {
    use ErrorCode::*;
    match code {
        TopicAuthorizationFailed | GroupAuthorizationFailed | ClusterAuthorizationFailed => 403,
        SaslAuthenticationFailed => 401,
        UnknownTopicOrPartition | GroupIdNotFound | ResourceNotFound => 404,
        TopicAlreadyExists | NonEmptyGroup => 409,
        InvalidTopic
        | InvalidPartitions
        | InvalidReplicationFactor
        | InvalidConfig
        | InvalidRequest
        | MessageTooLarge
        | CorruptMessage
        | InvalidRecord
        | InvalidTimestamp => 400,
        NotLeaderForPartition
        | LeaderNotAvailable
        | CoordinatorNotAvailable
        | NotCoordinator
        | RequestTimedOut
        | BrokerShuttingDown
        | RebalanceInProgress
        | DiskFull
        | StorageError => 503,
        _ => 500,
    }
}

/// Plain words for the broker error codes a console user meets.
fn words(code: ErrorCode) -> Option<&'static str> {
    use ErrorCode::*;
    Some(match code {
        TopicAuthorizationFailed => "you are not allowed to do this on this topic",
        GroupAuthorizationFailed => "you are not allowed to do this on this consumer group",
        ClusterAuthorizationFailed => "you are not allowed to do this on the cluster",
        UnknownTopicOrPartition => "no such topic or partition",
        GroupIdNotFound => "no such consumer group",
        TopicAlreadyExists => "a topic with this name exists already",
        NonEmptyGroup => "the group still has active members; stop its consumers first",
        InvalidTopic => {
            "the topic name is not valid (letters, digits, '.', '_' and '-', at most 249)"
        }
        InvalidPartitions => "the partition count is not valid",
        InvalidReplicationFactor => {
            "the replication factor is not valid (at most the number of live brokers)"
        }
        InvalidConfig => "a configuration key or value is not valid",
        NotLeaderForPartition | LeaderNotAvailable => {
            "the partition has no leader right now; try again shortly"
        }
        CoordinatorNotAvailable | NotCoordinator => {
            "the group's coordinator is not available right now; try again shortly"
        }
        RebalanceInProgress => "the group is rebalancing; try again shortly",
        BrokerShuttingDown => "the broker is shutting down; try again shortly",
        DiskFull => "the broker's disk is nearly full; produce is refused",
        StorageError => "the broker cannot write to its disk",
        MessageTooLarge => "the record is larger than the topic allows",
        _ => return Option::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_codes_map_to_statuses_and_words() {
        let e = ConsoleError::client(
            "create topic \"t\"",
            ClientError::Broker {
                code: ErrorCode::TopicAlreadyExists,
                context: "create topic \"t\"".into(),
            },
        );
        assert_eq!(e.status(), 409);
        assert_eq!(
            e.to_string(),
            "could not create topic \"t\": a topic with this name exists already (TOPIC_ALREADY_EXISTS)"
        );
        let e = ConsoleError::client(
            "read",
            ClientError::Broker {
                code: ErrorCode::TopicAuthorizationFailed,
                context: "x".into(),
            },
        );
        assert_eq!(e.status(), 403);
        assert!(e.to_string().contains("not allowed"), "{e}");
        let e = ConsoleError::client("x", ClientError::InvalidArgument("no".into()));
        assert_eq!(e.status(), 400);
    }
}
