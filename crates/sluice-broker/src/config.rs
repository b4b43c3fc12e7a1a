//! Broker configuration: a TOML file, overridden by `SLUICE_*` environment
//! variables, overridden by command-line flags.
//!
//! Every setting lives once in [`ConfigLayer`], a struct of `Option`s that is
//! both the clap argument group (flags and their `SLUICE_*` env variables —
//! clap already ranks a flag above its env variable) and the serde shape of
//! the TOML file. [`ConfigLayer::or`] stacks layers and [`ConfigLayer::resolve`]
//! fills what is still unset with the defaults below.
//!
//! | key (TOML / flag)        | env                          | default          |
//! |--------------------------|------------------------------|------------------|
//! | `data_dir`               | `SLUICE_DATA_DIR`            | `./sluice-data`  |
//! | `listen`                 | `SLUICE_LISTEN`              | `127.0.0.1:7171` |
//! | `http_listen`            | `SLUICE_HTTP_LISTEN`         | `127.0.0.1:7180` |
//! | `metrics_listen`         | `SLUICE_METRICS_LISTEN`      | none (when set, `/metrics` and `/health` are served there and `/metrics` no longer on `http_listen`) |
//! | `metrics_token`          | `SLUICE_METRICS_TOKEN`       | none (when set, `/metrics` requires `Authorization: Bearer <token>`; `/health` stays open) |
//! | `metrics_token_file`     | `SLUICE_METRICS_TOKEN_FILE`  | none (a file holding the token, read at start; surrounding whitespace is ignored) |
//! | `kafka_listen`           | `SLUICE_KAFKA_LISTEN`        | `127.0.0.1:9092` (the Kafka-protocol listener; `off` disables it) |
//! | `kafka_advertise`        | `SLUICE_KAFKA_ADVERTISE`     | the bound `kafka_listen` address (`host:port` Kafka clients are told in Metadata) |
//! | `auto_create_topics`     | `SLUICE_AUTO_CREATE_TOPICS`  | `true`           |
//! | `default_partitions`     | `SLUICE_DEFAULT_PARTITIONS`  | `1`              |
//! | `flush`                  | `SLUICE_FLUSH`               | `interval`       |
//! | `flush_interval_ms`      | `SLUICE_FLUSH_INTERVAL_MS`   | `1000`           |
//! | `segment_bytes`          | `SLUICE_SEGMENT_BYTES`       | 1 GiB            |
//! | `segment_ms`             | `SLUICE_SEGMENT_MS`          | none             |
//! | `retention_ms`           | `SLUICE_RETENTION_MS`        | none (forever)   |
//! | `retention_bytes`        | `SLUICE_RETENTION_BYTES`     | none (unbounded) |
//! | `max_batch_bytes`        | `SLUICE_MAX_BATCH_BYTES`     | 16 MiB           |
//! | `message_timestamp_before_max_ms` | `SLUICE_MESSAGE_TIMESTAMP_BEFORE_MAX_MS` | unlimited (Kafka's `log.message.timestamp.before.max.ms`) |
//! | `message_timestamp_after_max_ms`  | `SLUICE_MESSAGE_TIMESTAMP_AFTER_MAX_MS`  | `3600000` (Kafka's `log.message.timestamp.after.max.ms`) |
//! | `max_frame_bytes`        | `SLUICE_MAX_FRAME_BYTES`     | 64 MiB           |
//! | `max_connections`        | `SLUICE_MAX_CONNECTIONS`     | `10000` (per listener: native and Kafka each) |
//! | `max_partitions`         | `SLUICE_MAX_PARTITIONS`      | `100000` (all topics together) |
//! | `connections_max_idle_ms` | `SLUICE_CONNECTIONS_MAX_IDLE_MS` | `600000` (10 min, as Kafka) |
//! | `request_read_timeout_ms` | `SLUICE_REQUEST_READ_TIMEOUT_MS` | `30000` (a stalled partial frame) |
//! | `queued_max_request_bytes` | `SLUICE_QUEUED_MAX_REQUEST_BYTES` | 512 MiB (request bytes in memory, broker-wide) |
//! | `max_request_partitions` | `SLUICE_MAX_REQUEST_PARTITIONS` | `10000` (entries per request, see protocol.md) |
//! | `housekeeping_interval_ms` | `SLUICE_HOUSEKEEPING_INTERVAL_MS` | `5000` (retention checks) |
//! | `disk_min_free_bytes`    | `SLUICE_DISK_MIN_FREE_BYTES` | 1 GiB (produce is refused while the data directory's file system has less available; `0` turns it off; see [`crate::disk`]) |
//! | `offsets_retention_minutes` | `SLUICE_OFFSETS_RETENTION_MINUTES` | `10080` (7 days, as Kafka: committed offsets of an empty group) |
//! | `group_initial_rebalance_delay_ms` | `SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS` | `3000` (Kafka's `group.initial.rebalance.delay.ms`: how long an empty Kafka-protocol group waits for more members before its first rebalance ends) |
//! | `shutdown_timeout_ms`    | `SLUICE_SHUTDOWN_TIMEOUT_MS` | `10000`          |
//! | `log_level`              | `SLUICE_LOG` (then `RUST_LOG`) | `info,openraft=warn` (openraft's own info lines are state dumps) |
//! | `log_format`             | `SLUICE_LOG_FORMAT`          | `text` (`json`: one JSON object per line on stderr) |
//! | `slow_request_ms`        | `SLUICE_SLOW_REQUEST_MS`     | `1000` (a request busier than this is logged at WARN; `0` logs every request; see [`crate::slow_log`]) |
//! | `[cluster] rack` (`--rack`) | `SLUICE_RACK`             | none (the broker's availability zone, reported in Metadata v1 and DescribeCluster) |
//! | `[cluster] node_id` (`--node-id`) | `SLUICE_NODE_ID`    | none; required with `peers` or `join` |
//! | `[cluster] peers` (`--peers`) | `SLUICE_PEERS`          | none (a single node); `id@host:port,...` of the controller voters' cluster listeners |
//! | `[cluster] cluster_listen` (`--cluster-listen`) | `SLUICE_CLUSTER_LISTEN` | none; required with `peers` or `join` |
//! | `[cluster] join` (`--join`) | `SLUICE_JOIN`             | none; a broker-only node (id not in `peers`) joins through these voters' cluster addresses |
//! | `[cluster] advertised_listen` (`--advertised-listen`) | `SLUICE_ADVERTISED_LISTEN` | the bound `listen` address |
//! | `[cluster] broker_session_timeout_ms` (`--broker-session-timeout-ms`) | `SLUICE_BROKER_SESSION_TIMEOUT_MS` | `2000` (Kafka's `broker.session.timeout.ms`, 9 s there; short so that partition leadership fails over within about 2.5 s) |
//! | `[cluster] replica_lag_time_max_ms` (`--replica-lag-time-max-ms`) | `SLUICE_REPLICA_LAG_TIME_MAX_MS` | `5000` (Kafka's `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR, never below a majority) |
//!
//! Cluster settings live in the TOML table `[cluster]` ([`ClusterLayer`]);
//! their flags and variables are flat like the others.
//!
//! TLS and the security protocol of each listener ([`ListenerSecurity`]):
//!
//! | key (TOML / flag)        | env                          | default          |
//! |--------------------------|------------------------------|------------------|
//! | `tls_cert_file`          | `SLUICE_TLS_CERT_FILE`       | none; PEM certificate chain (leaf first) of every TLS listener |
//! | `tls_key_file`           | `SLUICE_TLS_KEY_FILE`        | none; its PEM private key (PKCS#8, PKCS#1 or SEC1) |
//! | `tls_ca_file`            | `SLUICE_TLS_CA_FILE`         | none; PEM CA: client certificates are verified against it, and brokers trust each other through it |
//! | `tls_client_auth`        | `SLUICE_TLS_CLIENT_AUTH`     | `none` (`requested`: verified if sent; `required`: mTLS) |
//! | `native_security`        | `SLUICE_NATIVE_SECURITY`     | `plaintext` (`ssl`, `sasl_plaintext`, `sasl_ssl`, as Kafka names them) |
//! | `kafka_security`         | `SLUICE_KAFKA_SECURITY`      | `plaintext` (likewise) |
//! | `http_tls`               | `SLUICE_HTTP_TLS`            | `false` (`/metrics` and `/health` over HTTPS) |
//! | `cluster_tls`            | `SLUICE_CLUSTER_TLS`         | `false` (the cluster listener and the controller's connections to it use TLS) |
//!
//! The files are read once at start and again on SIGHUP. A listener that
//! speaks TLS without `tls_cert_file` and `tls_key_file` is a config error;
//! so is `tls_client_auth` other than `none` without `tls_ca_file`, and a
//! cluster whose brokers would talk TLS to each other (`cluster_tls`, or a
//! TLS native listener, which replication fetches from) without
//! `tls_ca_file`: a broker verifies its peers against that CA and presents
//! its own certificate to them, so broker certificates need both the
//! serverAuth and the clientAuth extended key usage under mTLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

/// Default native protocol address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7171";
/// Default Kafka-protocol address (Kafka's own default port).
pub const DEFAULT_KAFKA_LISTEN: &str = "127.0.0.1:9092";
/// Default HTTP (metrics/health) address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7180";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./sluice-data";
/// Largest partition count a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Default broker-wide cap on partitions (all topics together). Each
/// partition holds open files and mappings; Redpanda and Kafka guides put a
/// broker's practical ceiling in the tens of thousands.
pub const DEFAULT_MAX_TOTAL_PARTITIONS: u32 = 100_000;
/// Default `offsets_retention_minutes`: 7 days, as Kafka.
pub const DEFAULT_OFFSETS_RETENTION_MINUTES: u64 = 7 * 24 * 60;
/// Default `group_initial_rebalance_delay_ms`, as Kafka.
pub const DEFAULT_GROUP_INITIAL_REBALANCE_DELAY_MS: u64 =
    sluice_group::classic::DEFAULT_INITIAL_REBALANCE_DELAY_MS;

/// Durability policy of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// fsync before acknowledging each append (group commit).
    Always,
    /// fsync every `flush_interval_ms`.
    Interval,
    /// Leave flushing to the OS page cache.
    Os,
}

impl FlushMode {
    /// The config-string form (`always`, `interval`, `os`).
    pub fn as_str(self) -> &'static str {
        match self {
            FlushMode::Always => "always",
            FlushMode::Interval => "interval",
            FlushMode::Os => "os",
        }
    }

    /// Parses the config-string form.
    pub fn parse(s: &str) -> Option<FlushMode> {
        match s {
            "always" => Some(FlushMode::Always),
            "interval" => Some(FlushMode::Interval),
            "os" => Some(FlushMode::Os),
            _ => None,
        }
    }
}

/// How `sluiced` writes its log lines to stderr (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (tracing-subscriber's default format).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (with `message`), and the enclosing spans' fields under `span` and `spans`.
    Json,
}

/// What a listener speaks below its protocol, with Kafka's names
/// (`security.protocol`): TLS or not, SASL authentication or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// Plain TCP, no authentication.
    #[default]
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    /// TLS, no SASL (a client certificate may still identify the client).
    #[serde(alias = "SSL")]
    Ssl,
    /// Plain TCP with SASL authentication.
    #[value(name = "sasl_plaintext")]
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// TLS with SASL authentication.
    #[value(name = "sasl_ssl")]
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether the listener runs TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the listener requires SASL authentication.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// The config-string form (`plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`).
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether TLS listeners ask clients for a certificate (`tls_client_auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// Asked for and verified against `tls_ca_file` if sent; clients without one are admitted.
    Requested,
    /// Clients without a certificate signed by `tls_ca_file` fail the handshake (mTLS).
    Required,
}

/// The TLS identity files of the broker (resolved `tls_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificate(s), if set.
    pub ca: Option<PathBuf>,
    /// Client certificates on TLS listeners.
    pub client_auth: TlsClientAuth,
}

/// TLS files and the security protocol of each listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// The broker's certificate and key (and CA); set whenever a listener uses TLS.
    pub tls: Option<TlsFiles>,
    /// The native listener's protocol (replication fetches go through it too).
    pub native: SecurityProtocol,
    /// The Kafka listener's protocol.
    pub kafka: SecurityProtocol,
    /// `/metrics` and `/health` over HTTPS.
    pub http_tls: bool,
    /// The cluster listener and broker-to-broker controller traffic over TLS.
    pub cluster_tls: bool,
}

impl ListenerSecurity {
    /// Whether any listener or broker-to-broker connection uses TLS.
    pub fn any_tls(&self) -> bool {
        self.native.tls() || self.kafka.tls() || self.http_tls || self.cluster_tls
    }
}

/// One layer of settings; `None` means "not set at this layer".
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Directory holding one sub-directory per topic.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Native protocol listen address.
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address for /metrics and /health.
    #[arg(long, env = "SLUICE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// A separate address for /metrics and /health only (then http_listen no longer serves /metrics).
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token /metrics requires (prefer metrics_token_file: flags show in the process list).
    #[arg(long, env = "SLUICE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// File holding the bearer token /metrics requires.
    #[arg(long, env = "SLUICE_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Kafka-protocol listen address, or `off`.
    #[arg(long, env = "SLUICE_KAFKA_LISTEN")]
    pub kafka_listen: Option<String>,
    /// `host:port` Kafka clients are told to connect to (default: the bound Kafka address).
    #[arg(long, env = "SLUICE_KAFKA_ADVERTISE")]
    pub kafka_advertise: Option<String>,
    /// Create unknown topics on first produce.
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub auto_create_topics: Option<bool>,
    /// Partition count of auto-created topics.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Default flush policy for topics that do not override it.
    #[arg(long, env = "SLUICE_FLUSH", value_enum)]
    pub flush: Option<FlushMode>,
    /// Flush period for the `interval` policy.
    #[arg(long, env = "SLUICE_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Default segment size before rolling.
    #[arg(long, env = "SLUICE_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Default segment age before rolling.
    #[arg(long, env = "SLUICE_SEGMENT_MS")]
    pub segment_ms: Option<u64>,
    /// Default retention by age.
    #[arg(long, env = "SLUICE_RETENTION_MS")]
    pub retention_ms: Option<u64>,
    /// Default retention by size per partition.
    #[arg(long, env = "SLUICE_RETENTION_BYTES")]
    pub retention_bytes: Option<u64>,
    /// Largest append (one produce partition) accepted by a log.
    #[arg(long, env = "SLUICE_MAX_BATCH_BYTES")]
    pub max_batch_bytes: Option<u32>,
    /// Default for topics: how far before the broker clock a record timestamp may lie.
    #[arg(long, env = "SLUICE_MESSAGE_TIMESTAMP_BEFORE_MAX_MS")]
    pub message_timestamp_before_max_ms: Option<i64>,
    /// Default for topics: how far after the broker clock a record timestamp may lie.
    #[arg(long, env = "SLUICE_MESSAGE_TIMESTAMP_AFTER_MAX_MS")]
    pub message_timestamp_after_max_ms: Option<i64>,
    /// Largest request frame accepted; larger ones close the connection.
    #[arg(long, env = "SLUICE_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Most simultaneous client connections; further ones wait in the backlog.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most partitions of all topics together; creating more is refused.
    #[arg(long, env = "SLUICE_MAX_PARTITIONS")]
    pub max_partitions: Option<u32>,
    /// Close a connection with no request and nothing in flight for this long.
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX_IDLE_MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// Close a connection whose partial request frame makes no progress for this long.
    #[arg(long, env = "SLUICE_REQUEST_READ_TIMEOUT_MS")]
    pub request_read_timeout_ms: Option<u64>,
    /// Request bytes held in memory across all connections; readers pause at the cap.
    #[arg(long, env = "SLUICE_QUEUED_MAX_REQUEST_BYTES")]
    pub queued_max_request_bytes: Option<usize>,
    /// Most topic-partitions (entries) one request may list; more get INVALID_REQUEST.
    #[arg(long, env = "SLUICE_MAX_REQUEST_PARTITIONS")]
    pub max_request_partitions: Option<usize>,
    /// How often retention is enforced.
    #[arg(long, env = "SLUICE_HOUSEKEEPING_INTERVAL_MS")]
    pub housekeeping_interval_ms: Option<u64>,
    /// Refuse produce while the data directory's file system has fewer bytes available (0: never).
    #[arg(long, env = "SLUICE_DISK_MIN_FREE_BYTES")]
    pub disk_min_free_bytes: Option<u64>,
    /// Committed offsets are deleted this long after the later of their
    /// commit and their group becoming empty.
    #[arg(long, env = "SLUICE_OFFSETS_RETENTION_MINUTES")]
    pub offsets_retention_minutes: Option<u64>,
    /// How long an empty Kafka-protocol (classic) group waits for more
    /// members before its first rebalance completes.
    #[arg(long, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// tracing filter (e.g. `info`, `sluice_broker=debug`).
    #[arg(long, env = "SLUICE_LOG")]
    pub log_level: Option<String>,
    /// Log line format on stderr: text or json.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, ignore_case = true)]
    pub log_format: Option<LogFormat>,
    /// Log requests busier than this (frame read to response ready) at WARN; 0 logs every request.
    #[arg(long, env = "SLUICE_SLOW_REQUEST_MS")]
    pub slow_request_ms: Option<u64>,

    // TLS and the listeners' security protocols (see the module docs).
    /// PEM certificate chain of this broker (leaf first), for every TLS listener.
    #[arg(long, env = "SLUICE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[arg(long, env = "SLUICE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s) client certificates and peer brokers are verified against.
    #[arg(long, env = "SLUICE_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificates on TLS listeners: none, requested or required (mTLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_AUTH", value_enum, ignore_case = true)]
    pub tls_client_auth: Option<TlsClientAuth>,
    /// Native listener: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, env = "SLUICE_NATIVE_SECURITY", value_enum, ignore_case = true)]
    pub native_security: Option<SecurityProtocol>,
    /// Kafka listener: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, env = "SLUICE_KAFKA_SECURITY", value_enum, ignore_case = true)]
    pub kafka_security: Option<SecurityProtocol>,
    /// Serve /metrics and /health over HTTPS.
    #[arg(long, env = "SLUICE_HTTP_TLS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub http_tls: Option<bool>,
    /// TLS on the cluster listener and on every broker-to-broker controller connection.
    #[arg(long, env = "SLUICE_CLUSTER_TLS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub cluster_tls: Option<bool>,
    /// Cluster settings (TOML table `[cluster]`).
    #[command(flatten)]
    #[serde(default)]
    pub cluster: ClusterLayer,
    /// Security settings (TOML table `[security]`, see [`crate::security`]).
    #[command(flatten)]
    #[serde(default)]
    pub security: crate::security::SecurityLayer,
}

/// The `[cluster]` settings of one layer; `None` means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLayer {
    /// The broker's availability zone (Kafka's `broker.rack`).
    #[arg(long, env = "SLUICE_RACK")]
    pub rack: Option<String>,
    /// This node's id in the cluster (0 to 4294967294).
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<u32>,
    /// Controller voters: `id@host:port` of their cluster listeners, comma-separated.
    #[arg(long, env = "SLUICE_PEERS")]
    pub peers: Option<String>,
    /// Address of this node's cluster (controller) listener.
    #[arg(long, env = "SLUICE_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// Cluster address(es) of voters a broker-only node joins through, comma-separated.
    #[arg(long, env = "SLUICE_JOIN")]
    pub join: Option<String>,
    /// Native address other nodes and clients reach this broker at (default: the bound `listen`).
    #[arg(long, env = "SLUICE_ADVERTISED_LISTEN")]
    pub advertised_listen: Option<String>,
    /// A broker silent for this long is fenced (Kafka's `broker.session.timeout.ms`).
    #[arg(long, env = "SLUICE_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// A follower not caught up for this long leaves the ISR (Kafka's `replica.lag.time.max.ms`).
    #[arg(long, env = "SLUICE_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
}

impl ClusterLayer {
    /// This layer over `lower`: each field from here if set, else from `lower`.
    pub fn or(self, lower: ClusterLayer) -> ClusterLayer {
        ClusterLayer {
            rack: self.rack.or(lower.rack),
            node_id: self.node_id.or(lower.node_id),
            peers: self.peers.or(lower.peers),
            cluster_listen: self.cluster_listen.or(lower.cluster_listen),
            join: self.join.or(lower.join),
            advertised_listen: self.advertised_listen.or(lower.advertised_listen),
            broker_session_timeout_ms: self
                .broker_session_timeout_ms
                .or(lower.broker_session_timeout_ms),
            replica_lag_time_max_ms: self
                .replica_lag_time_max_ms
                .or(lower.replica_lag_time_max_ms),
        }
    }

    /// The resolved cluster settings: `None` without `peers` or `join` (a single node).
    fn resolve(&self) -> Result<Option<ClusterConfig>, BrokerError> {
        let nonempty = |v: &Option<String>| v.as_ref().filter(|s| !s.trim().is_empty()).cloned();
        let peers = nonempty(&self.peers);
        let join = nonempty(&self.join);
        if peers.is_none() && join.is_none() {
            return Ok(None);
        }
        let bad = |m: String| BrokerError::Config(m);
        let node_id = self.node_id.ok_or_else(|| {
            bad("cluster.node_id (--node-id) is required with peers or join".into())
        })?;
        if node_id == u32::MAX {
            return Err(bad("cluster.node_id must be below 4294967295".into()));
        }
        let cluster_listen = self.cluster_listen.ok_or_else(|| {
            bad("cluster.cluster_listen (--cluster-listen) is required with peers or join".into())
        })?;
        let mut voters = std::collections::BTreeMap::new();
        for entry in peers.as_deref().unwrap_or("").split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let (id, addr) = entry
                .split_once('@')
                .ok_or_else(|| bad(format!("cluster.peers entry {entry:?} is not id@host:port")))?;
            let id: u32 = id
                .parse()
                .map_err(|_| bad(format!("cluster.peers entry {entry:?}: bad node id")))?;
            if !addr.contains(':') {
                return Err(bad(format!("cluster.peers entry {entry:?}: no port")));
            }
            if voters.insert(id, addr.to_string()).is_some() {
                return Err(bad(format!("cluster.peers lists node {id} twice")));
            }
        }
        let join: Vec<String> = join
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !voters.contains_key(&node_id) && join.is_empty() {
            return Err(bad(format!(
                "node {node_id} is not in cluster.peers: it needs cluster.join (--join host:port of a voter)"
            )));
        }
        let timeout = self.broker_session_timeout_ms.unwrap_or(2000);
        let lag = self.replica_lag_time_max_ms.unwrap_or(5000);
        if lag < 100 {
            return Err(bad(
                "cluster.replica_lag_time_max_ms must be at least 100".into()
            ));
        }
        if timeout < 100 {
            return Err(bad(
                "cluster.broker_session_timeout_ms must be at least 100".into(),
            ));
        }
        Ok(Some(ClusterConfig {
            node_id,
            voters,
            cluster_listen,
            join,
            advertised_listen: nonempty(&self.advertised_listen),
            broker_session_timeout: Duration::from_millis(timeout),
            replica_lag_max: Duration::from_millis(lag),
        }))
    }
}

/// Resolved cluster settings of a node that is part of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u32,
    /// Controller voters: id to cluster address.
    pub voters: std::collections::BTreeMap<u32, String>,
    /// The cluster listener's bind address.
    pub cluster_listen: SocketAddr,
    /// Voters' cluster addresses a broker-only node joins through.
    pub join: Vec<String>,
    /// Native address advertised to clients and peers, if not the bound one.
    pub advertised_listen: Option<String>,
    /// A broker silent for this long is fenced.
    pub broker_session_timeout: Duration,
    /// A follower not caught up for this long leaves the ISR.
    pub replica_lag_max: Duration,
}

/// The bearer token `/metrics` requires (`metrics_token` or
/// `metrics_token_file`). Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsToken(String);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

impl MetricsToken {
    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The token from the setting or the file (not both); it must be
    /// printable ASCII without spaces, as an HTTP header carries it.
    fn resolve(
        token: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<MetricsToken>, BrokerError> {
        let token = match (token, file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(BrokerError::Config(
                    "set metrics_token or metrics_token_file, not both".into(),
                ))
            }
            (Some(t), None) => t.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| BrokerError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .trim()
                .to_string(),
        };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BrokerError::Config(
                "metrics_token (or the content of metrics_token_file) must be non-empty printable ASCII without spaces".into(),
            ));
        }
        Ok(Some(MetricsToken(token)))
    }
}

/// `sluiced` command line.
#[derive(Debug, Clone, Parser)]
#[command(name = "sluiced", version, about = "The Sluice message broker")]
pub struct Cli {
    /// Optional TOML config file (lowest precedence).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Settings from flags and `SLUICE_*` variables.
    #[command(flatten)]
    pub layer: ConfigLayer,
}

/// Fully resolved broker settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Native listener.
    pub listen: SocketAddr,
    /// HTTP listener.
    pub http_listen: SocketAddr,
    /// Separate listener for /metrics and /health, if set.
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token /metrics requires, if set.
    pub metrics_token: Option<MetricsToken>,
    /// Kafka-protocol listener, if enabled.
    pub kafka_listen: Option<SocketAddr>,
    /// Kafka address advertised in Metadata, if not the bound one.
    pub kafka_advertise: Option<String>,
    /// Auto-create topics on produce.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics.
    pub default_partitions: u32,
    /// Topic defaults (overridable per topic).
    pub topic_defaults: TopicDefaults,
    /// Largest request frame.
    pub max_frame_bytes: usize,
    /// Connection cap.
    pub max_connections: usize,
    /// Broker-wide partition cap.
    pub max_partitions: u32,
    /// Idle connections are closed after this.
    pub connections_max_idle: Duration,
    /// A partial frame with no progress for this long closes its connection.
    pub request_read_timeout: Duration,
    /// Broker-wide budget of request bytes in memory.
    pub queued_max_request_bytes: usize,
    /// Most entries (topic-partitions, names, group ids) one request may list.
    pub max_request_partitions: usize,
    /// Retention check period.
    pub housekeeping_interval: Duration,
    /// Produce is refused below this many available bytes on the data directory's file system (0: off).
    pub disk_min_free_bytes: u64,
    /// Offsets retention (`offsets_retention_minutes`).
    pub offsets_retention: Duration,
    /// Initial rebalance delay of Kafka-protocol groups (`group_initial_rebalance_delay_ms`).
    pub group_initial_rebalance_delay: Duration,
    /// Shutdown deadline for in-flight requests.
    pub shutdown_timeout: Duration,
    /// tracing filter.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Requests busier than this are logged (`slow_request_ms`; zero: every request).
    pub slow_request: Duration,
    /// The broker's availability zone, if configured.
    pub rack: Option<String>,
    /// Cluster settings; `None` for a single node (its own controller).
    pub cluster: Option<ClusterConfig>,
    /// TLS files and each listener's security protocol.
    pub listener_security: ListenerSecurity,
    /// Authentication, authorization and quota settings (`[security]`).
    pub security: crate::security::SecurityConfig,
}

/// Broker-wide defaults for the per-topic settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    /// Flush policy.
    pub flush: FlushMode,
    /// Flush period for `interval`.
    pub flush_interval_ms: u64,
    /// Segment roll size.
    pub segment_bytes: u64,
    /// Segment roll age.
    pub segment_ms: Option<u64>,
    /// Retention by age.
    pub retention_ms: Option<u64>,
    /// Retention by size.
    pub retention_bytes: Option<u64>,
    /// Largest single append.
    pub max_batch_bytes: u32,
    /// `message.timestamp.before.max.ms` of topics that do not set it.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms` of topics that do not set it.
    pub timestamp_after_max_ms: i64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            flush: FlushMode::Interval,
            flush_interval_ms: 1000,
            segment_bytes: 1 << 30,
            segment_ms: None,
            retention_ms: None,
            retention_bytes: None,
            max_batch_bytes: 16 << 20,
            timestamp_before_max_ms: crate::topic_meta::DEFAULT_TIMESTAMP_BEFORE_MAX_MS,
            timestamp_after_max_ms: crate::topic_meta::DEFAULT_TIMESTAMP_AFTER_MAX_MS,
        }
    }
}

impl ConfigLayer {
    /// Field by field: `self` where set, else `lower`.
    pub fn or(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            http_listen: self.http_listen.or(lower.http_listen),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            metrics_token: self.metrics_token.or(lower.metrics_token),
            metrics_token_file: self.metrics_token_file.or(lower.metrics_token_file),
            kafka_listen: self.kafka_listen.or(lower.kafka_listen),
            kafka_advertise: self.kafka_advertise.or(lower.kafka_advertise),
            auto_create_topics: self.auto_create_topics.or(lower.auto_create_topics),
            default_partitions: self.default_partitions.or(lower.default_partitions),
            flush: self.flush.or(lower.flush),
            flush_interval_ms: self.flush_interval_ms.or(lower.flush_interval_ms),
            segment_bytes: self.segment_bytes.or(lower.segment_bytes),
            segment_ms: self.segment_ms.or(lower.segment_ms),
            retention_ms: self.retention_ms.or(lower.retention_ms),
            retention_bytes: self.retention_bytes.or(lower.retention_bytes),
            max_batch_bytes: self.max_batch_bytes.or(lower.max_batch_bytes),
            message_timestamp_before_max_ms: self
                .message_timestamp_before_max_ms
                .or(lower.message_timestamp_before_max_ms),
            message_timestamp_after_max_ms: self
                .message_timestamp_after_max_ms
                .or(lower.message_timestamp_after_max_ms),
            max_frame_bytes: self.max_frame_bytes.or(lower.max_frame_bytes),
            max_connections: self.max_connections.or(lower.max_connections),
            max_partitions: self.max_partitions.or(lower.max_partitions),
            connections_max_idle_ms: self
                .connections_max_idle_ms
                .or(lower.connections_max_idle_ms),
            request_read_timeout_ms: self
                .request_read_timeout_ms
                .or(lower.request_read_timeout_ms),
            queued_max_request_bytes: self
                .queued_max_request_bytes
                .or(lower.queued_max_request_bytes),
            max_request_partitions: self.max_request_partitions.or(lower.max_request_partitions),
            housekeeping_interval_ms: self
                .housekeeping_interval_ms
                .or(lower.housekeeping_interval_ms),
            disk_min_free_bytes: self.disk_min_free_bytes.or(lower.disk_min_free_bytes),
            offsets_retention_minutes: self
                .offsets_retention_minutes
                .or(lower.offsets_retention_minutes),
            group_initial_rebalance_delay_ms: self
                .group_initial_rebalance_delay_ms
                .or(lower.group_initial_rebalance_delay_ms),
            shutdown_timeout_ms: self.shutdown_timeout_ms.or(lower.shutdown_timeout_ms),
            log_level: self.log_level.or(lower.log_level),
            log_format: self.log_format.or(lower.log_format),
            slow_request_ms: self.slow_request_ms.or(lower.slow_request_ms),
            tls_cert_file: self.tls_cert_file.or(lower.tls_cert_file),
            tls_key_file: self.tls_key_file.or(lower.tls_key_file),
            tls_ca_file: self.tls_ca_file.or(lower.tls_ca_file),
            tls_client_auth: self.tls_client_auth.or(lower.tls_client_auth),
            native_security: self.native_security.or(lower.native_security),
            kafka_security: self.kafka_security.or(lower.kafka_security),
            http_tls: self.http_tls.or(lower.http_tls),
            cluster_tls: self.cluster_tls.or(lower.cluster_tls),
            cluster: self.cluster.or(lower.cluster),
            security: self.security.or(lower.security),
        }
    }

    /// Parses a TOML file into a layer.
    pub fn from_toml_file(path: &Path) -> Result<ConfigLayer, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|source| BrokerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| BrokerError::ConfigFile {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The TLS files and listener protocols, checked: every TLS listener
    /// has a certificate and key, client certificates have a CA.
    fn listener_security(&self) -> Result<ListenerSecurity, BrokerError> {
        let mut sec = ListenerSecurity {
            tls: None,
            native: self.native_security.unwrap_or_default(),
            kafka: self.kafka_security.unwrap_or_default(),
            http_tls: self.http_tls.unwrap_or(false),
            cluster_tls: self.cluster_tls.unwrap_or(false),
        };
        let client_auth = self.tls_client_auth.unwrap_or_default();
        let nonempty = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        let ca = nonempty(&self.tls_ca_file);
        if client_auth != TlsClientAuth::None && ca.is_none() {
            return Err(BrokerError::Config(
                "tls_client_auth = requested or required needs tls_ca_file (--tls-ca-file): \
                 client certificates are verified against that CA"
                    .into(),
            ));
        }
        // The first listener that asks for TLS names itself in the error.
        let wants = [
            (
                sec.native.tls(),
                format!("native_security = {}", sec.native),
            ),
            (sec.kafka.tls(), format!("kafka_security = {}", sec.kafka)),
            (sec.http_tls, "http_tls = true".to_string()),
            (sec.cluster_tls, "cluster_tls = true".to_string()),
        ];
        let Some((_, why)) = wants.into_iter().find(|(on, _)| *on) else {
            return Ok(sec);
        };
        let missing =
            |what: &str, flag: &str| BrokerError::Config(format!("{why} needs {what} ({flag})"));
        let cert = nonempty(&self.tls_cert_file)
            .ok_or_else(|| missing("tls_cert_file", "--tls-cert-file"))?;
        let key = nonempty(&self.tls_key_file)
            .ok_or_else(|| missing("tls_key_file", "--tls-key-file"))?;
        sec.tls = Some(TlsFiles {
            cert,
            key,
            ca,
            client_auth,
        });
        Ok(sec)
    }

    /// Fills unset fields with defaults and checks ranges.
    pub fn resolve(self) -> Result<BrokerConfig, BrokerError> {
        let d = TopicDefaults::default();
        let listener_security = self.listener_security()?;
        let parse_addr = |s: &str| -> SocketAddr {
            // The constants are valid literals; fall back to loopback if that ever changes.
            s.parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let cfg = BrokerConfig {
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: self.listen.unwrap_or_else(|| parse_addr(DEFAULT_LISTEN)),
            http_listen: self
                .http_listen
                .unwrap_or_else(|| parse_addr(DEFAULT_HTTP_LISTEN)),
            metrics_listen: self.metrics_listen,
            metrics_token: MetricsToken::resolve(
                self.metrics_token.as_deref(),
                self.metrics_token_file.as_deref(),
            )?,
            kafka_listen: match self.kafka_listen.as_deref().map(str::trim) {
                None => Some(parse_addr(DEFAULT_KAFKA_LISTEN)),
                Some("off" | "none" | "") => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    BrokerError::Config(format!("kafka_listen must be host:port or off, got {a:?}"))
                })?),
            },
            kafka_advertise: self
                .kafka_advertise
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            auto_create_topics: self.auto_create_topics.unwrap_or(true),
            default_partitions: self.default_partitions.unwrap_or(1),
            topic_defaults: TopicDefaults {
                flush: self.flush.unwrap_or(d.flush),
                flush_interval_ms: self.flush_interval_ms.unwrap_or(d.flush_interval_ms),
                segment_bytes: self.segment_bytes.unwrap_or(d.segment_bytes),
                segment_ms: self.segment_ms.or(d.segment_ms),
                retention_ms: self.retention_ms.or(d.retention_ms),
                retention_bytes: self.retention_bytes.or(d.retention_bytes),
                max_batch_bytes: self.max_batch_bytes.unwrap_or(d.max_batch_bytes),
                timestamp_before_max_ms: self
                    .message_timestamp_before_max_ms
                    .unwrap_or(d.timestamp_before_max_ms),
                timestamp_after_max_ms: self
                    .message_timestamp_after_max_ms
                    .unwrap_or(d.timestamp_after_max_ms),
            },
            max_frame_bytes: self
                .max_frame_bytes
                .unwrap_or(sluice_protocol::codec::DEFAULT_MAX_FRAME_BYTES),
            max_connections: self.max_connections.unwrap_or(10_000),
            max_partitions: self.max_partitions.unwrap_or(DEFAULT_MAX_TOTAL_PARTITIONS),
            connections_max_idle: Duration::from_millis(
                self.connections_max_idle_ms.unwrap_or(600_000),
            ),
            request_read_timeout: Duration::from_millis(
                self.request_read_timeout_ms.unwrap_or(30_000),
            ),
            queued_max_request_bytes: self.queued_max_request_bytes.unwrap_or(512 << 20),
            max_request_partitions: self
                .max_request_partitions
                .unwrap_or(sluice_protocol::DEFAULT_MAX_REQUEST_PARTITIONS),
            housekeeping_interval: Duration::from_millis(
                self.housekeeping_interval_ms.unwrap_or(5000),
            ),
            disk_min_free_bytes: self
                .disk_min_free_bytes
                .unwrap_or(crate::disk::DEFAULT_DISK_MIN_FREE_BYTES),
            offsets_retention: Duration::from_secs(
                self.offsets_retention_minutes
                    .unwrap_or(DEFAULT_OFFSETS_RETENTION_MINUTES)
                    .saturating_mul(60),
            ),
            group_initial_rebalance_delay: Duration::from_millis(
                self.group_initial_rebalance_delay_ms
                    .unwrap_or(DEFAULT_GROUP_INITIAL_REBALANCE_DELAY_MS),
            ),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms.unwrap_or(10_000)),
            log_level: self
                .log_level
                .unwrap_or_else(|| "info,openraft=warn".to_string()),
            log_format: self.log_format.unwrap_or_default(),
            slow_request: Duration::from_millis(
                self.slow_request_ms
                    .unwrap_or(crate::slow_log::DEFAULT_SLOW_REQUEST_MS),
            ),
            rack: self.cluster.rack.clone().filter(|r| !r.is_empty()),
            cluster: self.cluster.resolve()?,
            listener_security,
            security: self.security.resolve()?,
        };
        let sec = &cfg.listener_security;
        let brokers_talk_tls = sec.cluster_tls || sec.native.tls();
        if cfg.cluster.is_some()
            && brokers_talk_tls
            && sec.tls.as_ref().is_some_and(|t| t.ca.is_none())
        {
            let why = if sec.cluster_tls {
                "cluster_tls = true".to_string()
            } else {
                format!(
                    "native_security = {} in a cluster (replication fetches from the leader's native listener)",
                    sec.native
                )
            };
            return Err(BrokerError::Config(format!(
                "{why} needs tls_ca_file (--tls-ca-file): brokers verify each other's certificates against it"
            )));
        }
        if cfg.cluster.is_some() && sec.native.sasl() && cfg.security.admin.is_none() {
            // Replication fetches authenticate to the leader's native
            // listener as the bootstrap admin (docs/security.md).
            return Err(BrokerError::Config(format!(
                "native_security = {} in a cluster needs security.admin_user and security.admin_password (SLUICE_ADMIN_USER, SLUICE_ADMIN_PASSWORD): brokers authenticate their replication fetches to each other as that user",
                sec.native
            )));
        }
        if cfg.default_partitions == 0 || cfg.default_partitions > MAX_PARTITIONS {
            return Err(BrokerError::Config(format!(
                "default_partitions must be 1..={MAX_PARTITIONS}, got {}",
                cfg.default_partitions
            )));
        }
        if cfg.max_connections == 0 {
            return Err(BrokerError::Config("max_connections must be > 0".into()));
        }
        if cfg.rack.as_ref().is_some_and(|r| r.len() > 255) {
            return Err(BrokerError::Config(
                "cluster.rack must be at most 255 bytes".into(),
            ));
        }
        if cfg.topic_defaults.timestamp_before_max_ms < 0
            || cfg.topic_defaults.timestamp_after_max_ms < 0
        {
            return Err(BrokerError::Config(
                "message_timestamp_before_max_ms and message_timestamp_after_max_ms must be >= 0"
                    .into(),
            ));
        }
        if cfg.max_partitions == 0 {
            return Err(BrokerError::Config("max_partitions must be > 0".into()));
        }
        if cfg.connections_max_idle.is_zero() || cfg.request_read_timeout.is_zero() {
            return Err(BrokerError::Config(
                "connections_max_idle_ms and request_read_timeout_ms must be > 0".into(),
            ));
        }
        if cfg.queued_max_request_bytes < cfg.max_frame_bytes.min(1 << 20) {
            return Err(BrokerError::Config(format!(
                "queued_max_request_bytes must be at least {} (one frame of max_frame_bytes, or 1 MiB), got {}",
                cfg.max_frame_bytes.min(1 << 20),
                cfg.queued_max_request_bytes
            )));
        }
        if cfg.max_request_partitions == 0 {
            return Err(BrokerError::Config(
                "max_request_partitions must be > 0".into(),
            ));
        }
        if cfg.max_frame_bytes < 64 {
            return Err(BrokerError::Config(format!(
                "max_frame_bytes must be at least 64, got {}",
                cfg.max_frame_bytes
            )));
        }
        if cfg.topic_defaults.flush_interval_ms == 0 {
            return Err(BrokerError::Config("flush_interval_ms must be > 0".into()));
        }
        if cfg.housekeeping_interval.is_zero() {
            return Err(BrokerError::Config(
                "housekeeping_interval_ms must be > 0".into(),
            ));
        }
        if cfg.offsets_retention.is_zero() {
            return Err(BrokerError::Config(
                "offsets_retention_minutes must be > 0".into(),
            ));
        }
        use crate::topic_meta::{MIN_SEGMENT_BYTES, MIN_SEGMENT_MS};
        if cfg.topic_defaults.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(BrokerError::Config(format!(
                "segment_bytes must be at least {MIN_SEGMENT_BYTES}, got {}",
                cfg.topic_defaults.segment_bytes
            )));
        }
        if let Some(ms) = cfg
            .topic_defaults
            .segment_ms
            .filter(|&ms| ms < MIN_SEGMENT_MS)
        {
            return Err(BrokerError::Config(format!(
                "segment_ms must be at least {MIN_SEGMENT_MS}, got {ms}"
            )));
        }
        Ok(cfg)
    }
}

impl Cli {
    /// Applies the layers: config file < env < flags, then defaults.
    pub fn into_config(self) -> Result<BrokerConfig, BrokerError> {
        let file = match &self.config {
            Some(path) => ConfigLayer::from_toml_file(path)?,
            None => ConfigLayer::default(),
        };
        self.layer.or(file).resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let cfg = ConfigLayer::default().resolve().unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("./sluice-data"));
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:7171");
        assert_eq!(cfg.http_listen.to_string(), "127.0.0.1:7180");
        assert!(cfg.auto_create_topics);
        assert_eq!(cfg.default_partitions, 1);
        assert_eq!(cfg.topic_defaults.flush, FlushMode::Interval);
        assert_eq!(cfg.topic_defaults.flush_interval_ms, 1000);
        assert_eq!(cfg.max_frame_bytes, 64 << 20);
        assert_eq!(cfg.max_connections, 10_000);
        assert_eq!(cfg.max_request_partitions, 10_000);
        assert_eq!(cfg.offsets_retention, Duration::from_secs(10_080 * 60));
    }

    #[test]
    fn max_request_partitions_is_configurable_and_positive() {
        let layer: ConfigLayer = toml::from_str("max_request_partitions = 5\n").unwrap();
        assert_eq!(layer.resolve().unwrap().max_request_partitions, 5);
        let zero = ConfigLayer {
            max_request_partitions: Some(0),
            ..ConfigLayer::default()
        };
        assert!(zero.resolve().is_err());
    }

    /// The broker-wide timestamp bounds are the defaults of topics that do
    /// not set their own (Kafka's `log.message.timestamp.*.max.ms`).
    #[test]
    fn timestamp_bounds_are_broker_wide_topic_defaults() {
        let cli = Cli::try_parse_from([
            "sluiced",
            "--message-timestamp-after-max-ms",
            "5000",
            "--message-timestamp-before-max-ms",
            "86400000",
        ])
        .unwrap();
        let cfg = cli.into_config().unwrap();
        let meta = crate::topic_meta::TopicMeta {
            partitions: 1,
            overrides: Default::default(),
            id: None,
        };
        let effective = meta.effective(&cfg.topic_defaults);
        assert_eq!(effective.timestamp_after_max_ms, 5000);
        assert_eq!(effective.timestamp_before_max_ms, 86_400_000);
        let negative = ConfigLayer {
            message_timestamp_after_max_ms: Some(-1),
            ..ConfigLayer::default()
        };
        assert!(negative.resolve().is_err());
    }

    #[test]
    fn group_initial_rebalance_delay_is_settable() {
        let cfg = ConfigLayer::default().resolve().unwrap();
        assert_eq!(
            cfg.group_initial_rebalance_delay,
            Duration::from_millis(3_000)
        );
        let layer: ConfigLayer = toml::from_str("group_initial_rebalance_delay_ms = 0\n").unwrap();
        assert_eq!(
            layer.resolve().unwrap().group_initial_rebalance_delay,
            Duration::ZERO
        );
        let cli =
            Cli::try_parse_from(["sluiced", "--group-initial-rebalance-delay-ms", "250"]).unwrap();
        assert_eq!(
            cli.into_config().unwrap().group_initial_rebalance_delay,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn disk_min_free_bytes_defaults_to_one_gib_and_zero_turns_it_off() {
        let cfg = ConfigLayer::default().resolve().unwrap();
        assert_eq!(cfg.disk_min_free_bytes, 1 << 30);
        let layer: ConfigLayer = toml::from_str("disk_min_free_bytes = 0\n").unwrap();
        assert_eq!(layer.resolve().unwrap().disk_min_free_bytes, 0);
        let cli = Cli::try_parse_from(["sluiced", "--disk-min-free-bytes", "5000000"]).unwrap();
        assert_eq!(cli.into_config().unwrap().disk_min_free_bytes, 5_000_000);
    }

    #[test]
    fn log_format_and_slow_request_ms_come_from_every_layer() {
        let cfg = ConfigLayer::default().resolve().unwrap();
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.slow_request, Duration::from_millis(1000));
        let layer: ConfigLayer =
            toml::from_str("log_format = \"json\"\nslow_request_ms = 0\n").unwrap();
        let cfg = layer.resolve().unwrap();
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.slow_request, Duration::ZERO);
        let cli = Cli::try_parse_from([
            "sluiced",
            "--log-format",
            "JSON",
            "--slow-request-ms",
            "250",
        ])
        .unwrap();
        let cfg = cli.into_config().unwrap();
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.slow_request, Duration::from_millis(250));
        // An unknown format is refused, naming the ones there are.
        let e = Cli::try_parse_from(["sluiced", "--log-format", "xml"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("xml") && e.contains("text") && e.contains("json"),
            "{e}"
        );
        let e = toml::from_str::<ConfigLayer>("log_format = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("xml") && e.contains("json"), "{e}");
    }

    #[test]
    fn the_metrics_token_comes_from_the_setting_or_a_file_and_is_not_printed() {
        let cfg = ConfigLayer::default().resolve().unwrap();
        assert_eq!((cfg.metrics_listen, cfg.metrics_token), (None, None));
        let cli = Cli::try_parse_from([
            "sluiced",
            "--metrics-token",
            "t0k3n",
            "--metrics-listen",
            "127.0.0.1:9100",
        ])
        .unwrap();
        let cfg = cli.into_config().unwrap();
        assert_eq!(
            cfg.metrics_token.as_ref().map(|t| t.expose()),
            Some("t0k3n")
        );
        assert_eq!(cfg.metrics_listen.unwrap().port(), 9100);
        assert!(
            !format!("{cfg:?}").contains("t0k3n"),
            "the token is redacted"
        );
        // A file: surrounding whitespace (the trailing newline) is not part of it.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let layer: ConfigLayer = toml::from_str(&format!(
            "metrics_token_file = {:?}\n",
            file.to_str().unwrap()
        ))
        .unwrap();
        let cfg = layer.clone().resolve().unwrap();
        assert_eq!(cfg.metrics_token.unwrap().expose(), "from-file");
        // Refused: both at once, a missing file, an empty or spaced token.
        let both = ConfigLayer {
            metrics_token: Some("x".into()),
            ..layer
        };
        assert!(both.resolve().is_err());
        let missing = ConfigLayer {
            metrics_token_file: Some(dir.path().join("nope")),
            ..ConfigLayer::default()
        };
        assert!(missing.resolve().is_err());
        for bad in ["", "  ", "a b", "caf\u{e9}"] {
            let layer = ConfigLayer {
                metrics_token: Some(bad.into()),
                ..ConfigLayer::default()
            };
            assert!(layer.resolve().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn offsets_retention_is_set_in_minutes() {
        let cli = Cli::try_parse_from(["sluiced", "--offsets-retention-minutes", "90"]).unwrap();
        let cfg = cli.into_config().unwrap();
        assert_eq!(cfg.offsets_retention, Duration::from_secs(90 * 60));
        let layer: ConfigLayer = toml::from_str("offsets_retention_minutes = 5\n").unwrap();
        assert_eq!(
            layer.resolve().unwrap().offsets_retention,
            Duration::from_secs(300)
        );
        let zero = ConfigLayer {
            offsets_retention_minutes: Some(0),
            ..ConfigLayer::default()
        };
        assert!(zero.resolve().is_err());
    }

    #[test]
    fn cluster_settings_come_from_flags_or_the_cluster_table_and_are_checked() {
        // No peers and no join: a single node, whatever else is set.
        let single = Cli::try_parse_from(["sluiced", "--node-id", "3"]).unwrap();
        assert_eq!(single.layer.resolve().unwrap().cluster, None);
        let cli = Cli::try_parse_from([
            "sluiced",
            "--node-id",
            "2",
            "--cluster-listen",
            "127.0.0.1:7272",
            "--peers",
            "1@127.0.0.1:7271, 2@127.0.0.1:7272,3@127.0.0.1:7273",
            "--broker-session-timeout-ms",
            "2000",
        ])
        .unwrap();
        let c = cli.layer.resolve().unwrap().cluster.expect("clustered");
        assert_eq!(c.node_id, 2);
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.voters[&3], "127.0.0.1:7273");
        assert_eq!(c.broker_session_timeout, Duration::from_millis(2000));
        // The same from TOML.
        let layer: ConfigLayer = toml::from_str(
            "[cluster]\nnode_id = 4\ncluster_listen = \"127.0.0.1:7274\"\njoin = \"127.0.0.1:7271\"\nrack = \"b\"\n",
        )
        .unwrap();
        let cfg = layer.resolve().unwrap();
        let c = cfg.cluster.expect("clustered");
        assert_eq!(
            (c.node_id, c.join.clone()),
            (4, vec!["127.0.0.1:7271".to_string()])
        );
        assert!(c.voters.is_empty());
        assert_eq!(cfg.rack.as_deref(), Some("b"));
        // Refused: a missing node id, a node outside peers without join, a
        // malformed or repeated peer, a missing cluster listener.
        for args in [
            vec!["--peers", "1@h:1", "--cluster-listen", "127.0.0.1:1"],
            vec![
                "--node-id",
                "9",
                "--peers",
                "1@h:1",
                "--cluster-listen",
                "127.0.0.1:1",
            ],
            vec![
                "--node-id",
                "1",
                "--peers",
                "1h:1",
                "--cluster-listen",
                "127.0.0.1:1",
            ],
            vec![
                "--node-id",
                "1",
                "--peers",
                "1@h:1,1@h:2",
                "--cluster-listen",
                "127.0.0.1:1",
            ],
            vec![
                "--node-id",
                "1",
                "--peers",
                "x@h:1",
                "--cluster-listen",
                "127.0.0.1:1",
            ],
            vec!["--node-id", "1", "--peers", "1@h:1"],
        ] {
            let cli = Cli::try_parse_from(std::iter::once("sluiced").chain(args.clone())).unwrap();
            assert!(cli.layer.resolve().is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn the_rack_comes_from_the_cluster_table_the_env_or_the_flag() {
        let layer: ConfigLayer = toml::from_str("[cluster]\nrack = \"eu-1a\"\n").unwrap();
        assert_eq!(
            layer.clone().resolve().unwrap().rack.as_deref(),
            Some("eu-1a")
        );
        // A flag wins over the file; an empty rack is no rack.
        let cli = Cli::try_parse_from(["sluiced", "--rack", "eu-1b"]).unwrap();
        let cfg = cli.layer.clone().or(layer.clone()).resolve().unwrap();
        assert_eq!(cfg.rack.as_deref(), Some("eu-1b"));
        let empty = Cli::try_parse_from(["sluiced", "--rack", ""]).unwrap();
        assert_eq!(empty.layer.resolve().unwrap().rack, None);
        assert!(ConfigLayer::default().resolve().unwrap().rack.is_none());
        // Unknown keys in the table are refused, and a rack too long for the wire.
        assert!(toml::from_str::<ConfigLayer>("[cluster]\nno_such_key = 1\n").is_err());
        let long = ConfigLayer {
            cluster: ClusterLayer {
                rack: Some("r".repeat(256)),
                ..ClusterLayer::default()
            },
            ..ConfigLayer::default()
        };
        assert!(long.resolve().is_err());
    }

    #[test]
    fn toml_file_parses_and_rejects_unknown_keys() {
        let layer: ConfigLayer = toml::from_str(
            "data_dir = \"/d\"\nflush = \"always\"\nretention_ms = 5\nauto_create_topics = false\n",
        )
        .unwrap();
        assert_eq!(layer.flush, Some(FlushMode::Always));
        assert_eq!(layer.auto_create_topics, Some(false));
        assert!(toml::from_str::<ConfigLayer>("no_such_key = 1\n").is_err());
    }

    #[test]
    fn bad_values_are_rejected() {
        let layer = ConfigLayer {
            default_partitions: Some(0),
            ..ConfigLayer::default()
        };
        assert!(layer.resolve().is_err());
        assert!(Cli::try_parse_from(["sluiced", "--flush", "sometimes"]).is_err());
        assert!(Cli::try_parse_from(["sluiced", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn listeners_are_plaintext_unless_told_and_tls_needs_its_files() {
        let cfg = ConfigLayer::default().resolve().unwrap();
        assert_eq!(cfg.listener_security, ListenerSecurity::default());
        assert!(!cfg.listener_security.any_tls());
        let sp = SecurityProtocol::SaslSsl;
        assert!(sp.tls() && sp.sasl());
        assert!(!SecurityProtocol::Plaintext.tls() && !SecurityProtocol::Plaintext.sasl());
        assert!(SecurityProtocol::Ssl.tls() && !SecurityProtocol::Ssl.sasl());
        assert!(!SecurityProtocol::SaslPlaintext.tls() && SecurityProtocol::SaslPlaintext.sasl());

        let tls_args = [
            "--tls-cert-file",
            "/c.pem",
            "--tls-key-file",
            "/c.key",
            "--tls-ca-file",
            "/ca.pem",
        ];
        let cli = Cli::try_parse_from(
            [
                "sluiced",
                "--native-security",
                "SASL_SSL",
                "--kafka-security",
                "ssl",
            ]
            .into_iter()
            .chain(tls_args)
            .chain(["--tls-client-auth", "required", "--http-tls"]),
        )
        .unwrap();
        let sec = cli.into_config().unwrap().listener_security;
        assert_eq!(sec.native, SecurityProtocol::SaslSsl);
        assert_eq!(sec.kafka, SecurityProtocol::Ssl);
        assert!(sec.http_tls && !sec.cluster_tls);
        let files = sec.tls.expect("tls files");
        assert_eq!(files.cert, PathBuf::from("/c.pem"));
        assert_eq!(files.ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(files.client_auth, TlsClientAuth::Required);
        assert!(Cli::try_parse_from(["sluiced", "--native-security", "tls"]).is_err());

        // TOML, with Kafka's upper-case spelling too.
        let layer: ConfigLayer = toml::from_str(
            "kafka_security = \"SASL_PLAINTEXT\"\nnative_security = \"ssl\"\n\
             tls_cert_file = \"/c.pem\"\ntls_key_file = \"/c.key\"\ncluster_tls = true\n",
        )
        .unwrap();
        let sec = layer.resolve().unwrap().listener_security;
        assert_eq!(sec.kafka, SecurityProtocol::SaslPlaintext);
        assert!(sec.native.tls() && sec.cluster_tls);
        assert!(toml::from_str::<ConfigLayer>("native_security = \"tls\"\n").is_err());

        // Each missing file is named, with the listener that needs it.
        let err = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("sluiced").chain(args.iter().copied()))
                .unwrap();
            cli.into_config().unwrap_err().to_string()
        };
        let e = err(&["--kafka-security", "sasl_ssl", "--tls-key-file", "/k"]);
        assert!(
            e.contains("kafka_security = sasl_ssl needs tls_cert_file"),
            "{e}"
        );
        let e = err(&["--http-tls", "--tls-cert-file", "/c"]);
        assert!(e.contains("http_tls = true needs tls_key_file"), "{e}");
        let e = err(&["--tls-client-auth", "requested"]);
        assert!(e.contains("needs tls_ca_file"), "{e}");
        // Plaintext SASL needs no files.
        assert!(
            Cli::try_parse_from(["sluiced", "--native-security", "sasl_plaintext"])
                .unwrap()
                .into_config()
                .is_ok()
        );

        // Brokers of a cluster that talk TLS to each other need the CA.
        let cluster = [
            "--node-id",
            "1",
            "--peers",
            "1@127.0.0.1:7271",
            "--cluster-listen",
            "127.0.0.1:7271",
            "--tls-cert-file",
            "/c",
            "--tls-key-file",
            "/k",
        ];
        let with = |extra: &[&'static str]| -> Vec<&'static str> { [&cluster[..], extra].concat() };
        let e = err(&with(&["--cluster-tls"]));
        assert!(e.contains("cluster_tls = true needs tls_ca_file"), "{e}");
        let e = err(&with(&["--native-security", "ssl"]));
        assert!(e.contains("replication"), "{e}");
        let ok = Cli::try_parse_from(
            std::iter::once("sluiced")
                .chain(with(&["--cluster-tls", "--tls-ca-file", "/ca"]))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(ok.into_config().unwrap().listener_security.cluster_tls);
        // The Kafka listener alone on TLS: brokers do not talk through it.
        assert!(Cli::try_parse_from(
            std::iter::once("sluiced").chain(with(&["--kafka-security", "ssl"]))
        )
        .unwrap()
        .into_config()
        .is_ok());
    }

    /// Replication fetches authenticate as the bootstrap admin: a clustered
    /// broker whose native listener requires SASL needs one.
    #[test]
    fn a_clustered_sasl_native_listener_needs_the_bootstrap_admin() {
        let args = |extra: &[&str]| -> Result<BrokerConfig, BrokerError> {
            let base = [
                "sluiced",
                "--node-id",
                "1",
                "--peers",
                "1@127.0.0.1:7271",
                "--cluster-listen",
                "127.0.0.1:7271",
                "--native-security",
                "sasl_plaintext",
            ];
            Cli::try_parse_from(base.iter().chain(extra.iter()).copied())
                .unwrap()
                .into_config()
        };
        let e = args(&[]).unwrap_err().to_string();
        assert!(e.contains("admin_user") && e.contains("replication"), "{e}");
        assert!(args(&["--admin-user", "root", "--admin-password", "pw"]).is_ok());
        // A single broker needs none.
        assert!(
            Cli::try_parse_from(["sluiced", "--native-security", "sasl_plaintext"])
                .unwrap()
                .into_config()
                .is_ok()
        );
    }

    /// The only test in this crate that touches `SLUICE_*` variables, so
    /// parallel tests cannot observe them.
    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from-file\"\nlisten = \"127.0.0.1:1001\"\ndefault_partitions = 3\n\
             flush_interval_ms = 11\nmax_connections = 7\n",
        )
        .unwrap();
        std::env::set_var("SLUICE_LISTEN", "127.0.0.1:2002");
        std::env::set_var("SLUICE_DEFAULT_PARTITIONS", "4");
        std::env::set_var("SLUICE_AUTO_CREATE_TOPICS", "false");
        let cli = Cli::try_parse_from([
            "sluiced",
            "--config",
            file.to_str().unwrap(),
            "--default-partitions",
            "5",
            "--flush",
            "os",
        ]);
        std::env::remove_var("SLUICE_LISTEN");
        std::env::remove_var("SLUICE_DEFAULT_PARTITIONS");
        std::env::remove_var("SLUICE_AUTO_CREATE_TOPICS");
        let cfg = cli.unwrap().into_config().unwrap();
        // Only in the file.
        assert_eq!(cfg.data_dir, PathBuf::from("/from-file"));
        assert_eq!(cfg.topic_defaults.flush_interval_ms, 11);
        assert_eq!(cfg.max_connections, 7);
        // File and env: env wins.
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:2002");
        assert!(!cfg.auto_create_topics);
        // File, env and flag: flag wins.
        assert_eq!(cfg.default_partitions, 5);
        // Only a flag.
        assert_eq!(cfg.topic_defaults.flush, FlushMode::Os);
        // Nowhere: default.
        assert_eq!(cfg.http_listen.to_string(), "127.0.0.1:7180");

        // A bare boolean flag means true and beats the file.
        let layer = Cli::try_parse_from(["sluiced", "--auto-create-topics"])
            .unwrap()
            .layer;
        assert_eq!(layer.auto_create_topics, Some(true));
        let layer = Cli::try_parse_from(["sluiced", "--auto-create-topics=no"])
            .unwrap()
            .layer;
        assert_eq!(layer.auto_create_topics, Some(false));
    }
}
