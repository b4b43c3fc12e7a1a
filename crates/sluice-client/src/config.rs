//! Connection-level settings shared by [`Admin`](crate::Admin), [`Producer`](crate::Producer)
//! and [`Consumer`](crate::Consumer).

use std::time::Duration;

use sluice_protocol::codec::DEFAULT_MAX_FRAME_BYTES;

/// The broker address used when none is given: `127.0.0.1:7171`.
pub const DEFAULT_BROKER: &str = "127.0.0.1:7171";

/// How to reach the cluster and how patient to be with it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Address (`host:port`) of any broker, or several separated by commas
    /// (tried in turn); the others are learned from Metadata.
    pub bootstrap: String,
    /// Sent in every request header; shows up in broker logs.
    pub client_id: String,
    /// Longest wait for one response (fetches add their `max_wait` on top).
    pub request_timeout: Duration,
    /// Longest wait for a TCP connect.
    pub connect_timeout: Duration,
    /// Wait after the first failed connect; doubles per failure.
    pub reconnect_backoff: Duration,
    /// Cap of the reconnect backoff.
    pub reconnect_backoff_max: Duration,
    /// Largest response frame accepted.
    pub max_frame_bytes: usize,
    /// How long a topic's cached metadata (partition count, leaders) is
    /// used before it is asked for again (Kafka's `metadata.max.age.ms`,
    /// shorter): how soon a producer sends to partitions added to a topic.
    pub metadata_max_age: Duration,
}

impl ClientConfig {
    /// Defaults with the given bootstrap address.
    pub fn new(bootstrap: impl Into<String>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into(),
            ..ClientConfig::default()
        }
    }

    /// Defaults with the address from `SLUICE_BROKER`, or [`DEFAULT_BROKER`].
    pub fn from_env() -> ClientConfig {
        ClientConfig::new(std::env::var("SLUICE_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.into()))
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: DEFAULT_BROKER.to_string(),
            client_id: "sluice-client".to_string(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            metadata_max_age: Duration::from_secs(30),
        }
    }
}
