//! Connection-level settings shared by [`Admin`](crate::Admin), [`Producer`](crate::Producer)
//! and [`Consumer`](crate::Consumer).
//!
//! Security settings are fields of their own ([`ClientConfig::tls`]), each
//! `None` by default, so that a connection is plain TCP unless told otherwise.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::codec::DEFAULT_MAX_FRAME_BYTES;
use sluice_tls::{Connector, TlsError};

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
    /// TLS for every connection (bootstrap and per broker); `None`: plain TCP.
    pub tls: Option<ClientTls>,
    /// SASL credentials every connection authenticates with right after
    /// connecting (and after TLS); `None`: no authentication.
    pub sasl: Option<crate::sasl::ClientSasl>,
}

/// TLS settings of a client: the CA that signed the brokers' certificates,
/// optionally a client certificate (for listeners that require mTLS), and
/// optionally the name to check every broker's certificate against.
///
/// Without a server name override, a broker's certificate must name the
/// host it was dialled at: the bootstrap host, then the hosts brokers
/// advertise in Metadata (an IP address must be an IP SAN).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<sluice_tls::rustls::ClientConfig>,
    /// Check every broker's certificate against this name instead of the
    /// host dialled (a certificate shared by all brokers, a load balancer).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trust the CA certificate(s) in `ca` (PEM); present `cert_and_key`
    /// (PEM certificate chain and private key) when given. Public roots are
    /// not bundled: the CA file is required.
    pub fn from_files(
        ca: &Path,
        cert_and_key: Option<(&Path, &Path)>,
    ) -> Result<ClientTls, TlsError> {
        Ok(ClientTls::from_rustls(sluice_tls::client_config(
            Some(ca),
            cert_and_key,
        )?))
    }

    /// A ready rustls config (custom verification, other roots).
    pub fn from_rustls(config: Arc<sluice_tls::rustls::ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            server_name: None,
        }
    }

    /// Checks certificates against `name` instead of the host dialled.
    pub fn with_server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// A connector with these settings, for connections this crate does
    /// not make itself (a raw Kafka-protocol bench, a health probe).
    pub fn connector(&self) -> Connector {
        Connector::tls(Arc::clone(&self.config)).with_server_name(self.server_name.clone())
    }
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
            tls: None,
            sasl: None,
        }
    }
}
