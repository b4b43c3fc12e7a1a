//! The client's error type.
//!
//! `ClientError` is `Clone` so that one failure can be handed to every record
//! of a failed batch; causes that are not `Clone` themselves (I/O and protocol
//! errors) are kept behind an `Arc`, still reachable through `source()`.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::batch::BatchError;
use sluice_protocol::ErrorCode;

/// Everything the Sluice client can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection could be made to the broker.
    #[error("broker unreachable at {addr} ({source})")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why the connection failed.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The TCP connection was made but the TLS handshake failed: the
    /// broker's certificate was not trusted (unknown CA, expired, another
    /// name), it refused the client's certificate, or the port does not
    /// speak TLS. Retriable only when the connection was merely cut.
    #[error("TLS handshake with {addr} failed ({source})")]
    Tls {
        /// The address dialled.
        addr: String,
        /// rustls' reason (kind `InvalidData`) or the I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The broker refused the SASL login (wrong password, unknown user, a
    /// mechanism it does not offer here). Not retriable.
    #[error("authentication failed for user {user} at {addr} with {mechanism}: {reason}")]
    Authentication {
        /// The broker address.
        addr: String,
        /// The user name tried.
        user: String,
        /// The SASL mechanism.
        mechanism: &'static str,
        /// What the broker (or the SCRAM check of its answer) said.
        reason: String,
    },
    /// The broker answered with an error code.
    #[error("{context}: {code}")]
    Broker {
        /// The code the broker returned.
        code: ErrorCode,
        /// What the client was doing (e.g. `produce to "t"/0`).
        context: String,
    },
    /// A request got no answer in time.
    #[error("{what} timed out after {} ms", after.as_millis())]
    Timeout {
        /// What timed out.
        what: String,
        /// How long the client waited.
        after: Duration,
    },
    /// The connection was lost while the request was in flight; its outcome is unknown.
    #[error("connection to {addr} lost ({reason})")]
    Disconnected {
        /// The broker address.
        addr: String,
        /// Why the connection ended.
        reason: String,
    },
    /// A record could not be delivered within the producer's delivery timeout.
    #[error("delivery timed out after {} ms: {source}", after.as_millis())]
    DeliveryTimeout {
        /// The delivery timeout that expired.
        after: Duration,
        /// The last error seen while trying.
        #[source]
        source: Box<ClientError>,
    },
    /// The producer refused a record at once: the broker stayed unreachable
    /// for longer than the delivery timeout, and no connection has succeeded since.
    #[error("broker unavailable: unreachable for more than the delivery timeout of {} ms ({source})", after.as_millis())]
    BrokerUnavailable {
        /// The delivery timeout that the outage outlasted.
        after: Duration,
        /// The connection failure that outlasted it.
        #[source]
        source: Box<ClientError>,
    },
    /// A frame could not be encoded or decoded.
    #[error("protocol error: {0}")]
    Protocol(#[source] Arc<sluice_protocol::ProtocolError>),
    /// A fetched record batch is malformed.
    #[error("malformed record batch from {topic}/{partition}: {source}")]
    InvalidBatch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// What is wrong with it.
        #[source]
        source: BatchError,
    },
    /// The broker answered with a response of the wrong kind.
    #[error("unexpected response to {request}: {got}")]
    UnexpectedResponse {
        /// The request that was sent.
        request: &'static str,
        /// What came back.
        got: String,
    },
    /// A record is larger than the producer's buffer or the batch limit allows.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Estimated encoded size of the record.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The caller passed something unusable (partition out of range, partition not assigned, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The producer or consumer was closed.
    #[error("client is closed")]
    Closed,
}

impl ClientError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Timeout { .. }
            | ClientError::Disconnected { .. }
            | ClientError::BrokerUnavailable { .. } => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            // A certificate problem stays until someone fixes the files.
            ClientError::Tls { source, .. } => source.kind() != std::io::ErrorKind::InvalidData,
            _ => false,
        }
    }

    /// The broker error code, if this error came from the broker (looking through delivery timeouts).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::DeliveryTimeout { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The innermost client error: the cause behind a [`ClientError::DeliveryTimeout`]
    /// or [`ClientError::BrokerUnavailable`], else `self`.
    pub fn root(&self) -> &ClientError {
        match self {
            ClientError::DeliveryTimeout { source, .. }
            | ClientError::BrokerUnavailable { source, .. } => source.root(),
            other => other,
        }
    }

    /// Whether the error means the broker stayed unreachable past the delivery
    /// timeout: a [`ClientError::BrokerUnavailable`], or a
    /// [`ClientError::DeliveryTimeout`] whose last cause was a failed connect.
    /// Sends fail at once in that state until a connection succeeds again.
    pub fn is_broker_unavailable(&self) -> bool {
        match self {
            ClientError::BrokerUnavailable { .. } => true,
            ClientError::DeliveryTimeout { .. } => {
                matches!(self.root(), ClientError::Unreachable { .. })
            }
            _ => false,
        }
    }

    /// Whether the error means the metadata cache is stale (refresh and retry).
    pub(crate) fn needs_metadata_refresh(&self) -> bool {
        matches!(
            self.code(),
            Some(
                ErrorCode::NotLeaderForPartition
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::UnknownTopicOrPartition
            )
        ) || matches!(
            self,
            // A timeout too: a leader cut off the network answers nothing,
            // and the partition may have a new leader by now.
            ClientError::Unreachable { .. }
                | ClientError::Disconnected { .. }
                | ClientError::Timeout { .. }
        )
    }

    pub(crate) fn broker(code: ErrorCode, context: impl Into<String>) -> ClientError {
        ClientError::Broker {
            code,
            context: context.into(),
        }
    }
}

impl From<sluice_protocol::ProtocolError> for ClientError {
    fn from(e: sluice_protocol::ProtocolError) -> Self {
        ClientError::Protocol(Arc::new(e))
    }
}

/// Result alias for the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_errors_refresh_metadata_and_are_retried() {
        for code in [
            ErrorCode::NotLeaderForPartition,
            ErrorCode::LeaderNotAvailable,
            ErrorCode::UnknownTopicOrPartition,
        ] {
            let e = ClientError::broker(code, "produce");
            assert!(e.needs_metadata_refresh(), "{code:?}");
        }
        for code in [
            ErrorCode::LeaderNotAvailable,
            ErrorCode::NotLeaderForPartition,
        ] {
            assert!(
                ClientError::broker(code, "produce").is_retriable(),
                "{code:?}"
            );
        }
        let e = ClientError::broker(ErrorCode::InvalidRecord, "produce");
        assert!(!e.needs_metadata_refresh() && !e.is_retriable());
    }
}
