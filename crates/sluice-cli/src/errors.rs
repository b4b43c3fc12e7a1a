//! Turning any failure into the one line the user sees.

use sluice_client::{ClientError, ErrorCode};

/// A CLI failure: a client error (optionally about a topic) or a ready-made message.
#[derive(Debug)]
pub enum CliError {
    /// A client error; `topic` names the topic the command was about.
    Client {
        /// The topic, when the command concerns one.
        topic: Option<String>,
        /// The error.
        error: ClientError,
    },
    /// A complete message.
    Message(String),
}

impl CliError {
    /// A ready-made message.
    pub fn msg(m: impl Into<String>) -> CliError {
        CliError::Message(m.into())
    }

    /// A closure wrapping client errors about `topic`.
    pub fn topic(topic: &str) -> impl Fn(ClientError) -> CliError + '_ {
        move |error| CliError::Client {
            topic: Some(topic.to_string()),
            error,
        }
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        CliError::Client { topic: None, error }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Message(format!("i/o error: {e}"))
    }
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        TimedOut => "timed out".into(),
        ConnectionReset => "connection reset".into(),
        AddrNotAvailable => "address not available".into(),
        _ => {
            let s = e.to_string();
            // Drop the "(os error N)" suffix: it helps no one reading a CLI error.
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

/// One line (without the `error: ` prefix) describing `e`.
pub fn render(e: &CliError, broker: &str) -> String {
    match e {
        CliError::Message(m) => m.clone(),
        CliError::Client { topic, error } => render_client(error, topic.as_deref(), broker),
    }
}

/// One line describing a client error.
pub fn render_client(error: &ClientError, topic: Option<&str>, broker: &str) -> String {
    let root = error.root();
    let timed_out = matches!(
        error,
        ClientError::DeliveryTimeout { .. } | ClientError::BrokerUnavailable { .. }
    );
    let prefix = match error {
        ClientError::DeliveryTimeout { after, .. } => {
            format!("not delivered within {} ms: ", after.as_millis())
        }
        ClientError::BrokerUnavailable { after, .. } => {
            format!("not sent, broker gone for over {} ms: ", after.as_millis())
        }
        _ => String::new(),
    };
    let body = match root {
        ClientError::Unreachable { addr, source } => format!(
            "broker unreachable at {addr} ({}); is sluiced running?",
            io_reason(source)
        ),
        ClientError::Disconnected { addr, reason } => {
            format!("connection to broker {addr} lost ({reason})")
        }
        ClientError::Tls { addr, source } => {
            let hint = match source.kind() {
                std::io::ErrorKind::InvalidData => {
                    "check --ca-file, --cert/--key and the broker's certificate"
                }
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                    "is that port serving TLS?"
                }
                _ => "is sluiced running?",
            };
            format!(
                "TLS handshake with {addr} failed ({}); {hint}",
                io_reason(source)
            )
        }
        ClientError::Broker { code, context } => match (code, topic) {
            (ErrorCode::UnknownTopicOrPartition, Some(t)) => {
                format!("topic \"{t}\" does not exist (or has no such partition); see `sluice topic list`")
            }
            (ErrorCode::TopicAlreadyExists, Some(t)) => format!("topic \"{t}\" already exists"),
            (ErrorCode::InvalidTopic, Some(t)) => {
                format!("invalid topic name \"{t}\": use 1-249 of a-z A-Z 0-9 . _ -")
            }
            (ErrorCode::InvalidPartitions, _) => format!("{context}: invalid partition count"),
            (ErrorCode::InvalidConfig, _) => format!("{context}: invalid topic config"),
            (ErrorCode::InvalidReplicationFactor, _) => {
                format!("{context}: invalid replication factor; see `sluice cluster status` for the brokers")
            }
            (
                ErrorCode::TopicAuthorizationFailed
                | ErrorCode::GroupAuthorizationFailed
                | ErrorCode::ClusterAuthorizationFailed,
                _,
            ) => format!(
                "{context}: not authorized ({}); an admin can grant it with `sluice acl add`",
                code.name()
            ),
            (ErrorCode::IllegalSaslState, _) => format!(
                "{context}: the broker requires authentication; give --username and --password-file (or SLUICE_USERNAME, SLUICE_PASSWORD)"
            ),
            _ => format!("{context}: {}", code.name()),
        },
        ClientError::Authentication { .. } => {
            format!("{root}; check --username, --password/--password-file and --sasl-mechanism")
        }
        ClientError::Timeout { what, after } => format!(
            "{what} timed out after {} ms; is the broker at {broker} overloaded?",
            after.as_millis()
        ),
        other => other.to_string(),
    };
    if timed_out && !matches!(root, ClientError::Timeout { .. }) {
        format!("{prefix}{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn refused() -> ClientError {
        ClientError::Unreachable {
            addr: "127.0.0.1:7171".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        }
    }

    #[test]
    fn unreachable_broker_is_one_helpful_line() {
        let line = render(&CliError::from(refused()), "127.0.0.1:7171");
        assert_eq!(
            line,
            "broker unreachable at 127.0.0.1:7171 (connection refused); is sluiced running?"
        );
        let timed_out = ClientError::DeliveryTimeout {
            after: Duration::from_millis(1000),
            source: Box::new(refused()),
        };
        assert_eq!(
            render_client(&timed_out, Some("t"), "127.0.0.1:7171"),
            "not delivered within 1000 ms: broker unreachable at 127.0.0.1:7171 (connection refused); is sluiced running?"
        );
        let gone = ClientError::BrokerUnavailable {
            after: Duration::from_millis(1000),
            source: Box::new(refused()),
        };
        assert_eq!(
            render_client(&gone, Some("t"), "127.0.0.1:7171"),
            "not sent, broker gone for over 1000 ms: broker unreachable at 127.0.0.1:7171 (connection refused); is sluiced running?"
        );
    }

    #[test]
    fn broker_codes_name_the_topic() {
        let unknown = ClientError::Broker {
            code: ErrorCode::UnknownTopicOrPartition,
            context: "describe topic \"x\"".into(),
        };
        assert!(render_client(&unknown, Some("x"), "b").starts_with("topic \"x\" does not exist"));
        let exists = ClientError::Broker {
            code: ErrorCode::TopicAlreadyExists,
            context: "create".into(),
        };
        assert_eq!(
            render_client(&exists, Some("x"), "b"),
            "topic \"x\" already exists"
        );
        let other = ClientError::Broker {
            code: ErrorCode::DiskFull,
            context: "produce to \"x\"/0".into(),
        };
        assert_eq!(
            render_client(&other, Some("x"), "b"),
            "produce to \"x\"/0: DISK_FULL"
        );
        for line in [
            render_client(&unknown, None, "b"),
            render_client(&other, None, "b"),
        ] {
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn tls_failures_say_what_to_check() {
        let tls = |kind, msg: &str| ClientError::Tls {
            addr: "127.0.0.1:7171".into(),
            source: Arc::new(std::io::Error::new(kind, msg.to_string())),
        };
        let cert = tls(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: Expired",
        );
        assert_eq!(
            render(&CliError::from(cert), "127.0.0.1:7171"),
            "TLS handshake with 127.0.0.1:7171 failed (invalid peer certificate: Expired); \
             check --ca-file, --cert/--key and the broker's certificate"
        );
        let plain = tls(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert!(render(&CliError::from(plain), "b").ends_with("is that port serving TLS?"));
    }
}
