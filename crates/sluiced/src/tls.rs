//! TLS on the broker's listeners and on its connections to other brokers.
//!
//! One identity ([`ServerTls`]: `tls_cert_file`, `tls_key_file`,
//! `tls_ca_file`, `tls_client_auth`) serves every listener whose protocol
//! says TLS (`native_security`, `kafka_security` = `ssl` | `sasl_ssl`,
//! `http_tls`, `cluster_tls`). SIGHUP re-reads the files ([`reload_on_sighup`]):
//! handshakes that start afterwards get the new certificate, connections
//! already open keep their session, and a reload that fails (a half-written
//! file, a key that does not match) keeps serving the old certificate and
//! logs why.
//!
//! The handshake of an accepted connection ([`accept`]) runs in that
//! connection's own task, never in the accept loop, and is bounded by
//! [`HANDSHAKE_TIMEOUT`]: a client speaking plaintext to a TLS port, one with
//! an unknown or expired certificate, or one that stalls is closed with one
//! log line naming its address and counted in
//! `sluice_tls_handshake_failures_total{listener}`.
//!
//! Broker-to-broker connections ([`peer_connector`]) trust `tls_ca_file` and
//! present the broker's own certificate, so they pass listeners that require
//! client certificates. The controller's connections follow `cluster_tls`;
//! replication fetches follow `native_security`, since they go to the
//! leader's native listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use sluice_broker::config::{ListenerSecurity, TlsClientAuth, TlsFiles};
use sluice_broker::handler::ConnSecurity;
use sluice_broker::{BrokerError, Metrics};
use sluice_tls::{ClientAuth, Connector, ServerTls, TlsServerFiles};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How long an accepted connection may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener names used in logs and in the failure metric's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The native protocol.
    Native,
    /// The Kafka protocol.
    Kafka,
    /// `/metrics` and `/health`.
    Http,
    /// The controller's cluster listener.
    Cluster,
}

impl Listener {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Native => "native",
            Listener::Kafka => "kafka",
            Listener::Http => "http",
            Listener::Cluster => "cluster",
        }
    }
}

/// The rustls files of a broker config.
pub fn server_files(files: &TlsFiles) -> TlsServerFiles {
    TlsServerFiles {
        cert: files.cert.clone(),
        key: files.key.clone(),
        ca: files.ca.clone(),
        client_auth: match files.client_auth {
            TlsClientAuth::None => ClientAuth::None,
            TlsClientAuth::Requested => ClientAuth::Requested,
            TlsClientAuth::Required => ClientAuth::Required,
        },
    }
}

/// Loads the broker's TLS identity if any listener uses TLS.
pub fn load(security: &ListenerSecurity) -> Result<Option<Arc<ServerTls>>, BrokerError> {
    let Some(files) = &security.tls else {
        return Ok(None);
    };
    let tls = ServerTls::load(server_files(files))
        .map_err(|e| BrokerError::Config(format!("TLS: {e}")))?;
    tracing::info!(
        cert = %files.cert.display(),
        client_auth = ?files.client_auth,
        native = %security.native,
        kafka = %security.kafka,
        http_tls = security.http_tls,
        cluster_tls = security.cluster_tls,
        "TLS identity loaded"
    );
    Ok(Some(Arc::new(tls)))
}

/// A connector for this broker's connections to its peers: TLS with its
/// own identity when `tls` is on and an identity is loaded, plain otherwise.
pub fn peer_connector(identity: Option<&Arc<ServerTls>>, tls: bool) -> Connector {
    match identity {
        Some(id) if tls => Connector::peer(Arc::clone(id)),
        _ => Connector::plain(),
    }
}

/// The TLS side of one listener: the identity (if the listener runs TLS),
/// whether it requires SASL, and the failure counter.
#[derive(Clone)]
pub struct ListenerTls {
    /// The identity, when this listener runs TLS.
    pub identity: Option<Arc<ServerTls>>,
    /// The listener requires SASL (`sasl_plaintext`, `sasl_ssl`).
    pub sasl: bool,
    listener: Listener,
    failures: IntCounter,
}

impl ListenerTls {
    /// The TLS side of `listener`: TLS when `tls` (then `identity` must be set).
    pub fn new(
        listener: Listener,
        identity: Option<&Arc<ServerTls>>,
        tls: bool,
        sasl: bool,
        metrics: &Metrics,
    ) -> ListenerTls {
        ListenerTls {
            identity: identity.filter(|_| tls).cloned(),
            sasl,
            listener,
            failures: metrics
                .tls_handshake_failures
                .with_label_values(&[listener.as_str()]),
        }
    }

    /// Whether this listener runs TLS.
    pub fn is_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// Counts and logs one failed handshake. A connection closed before
    /// the handshake completed (a TCP health check, a port scan) is logged
    /// at debug level only, so probes do not flood the log.
    fn failed(&self, peer: SocketAddr, reason: &dyn std::fmt::Display, probe: bool) {
        self.failures.inc();
        let listener = self.listener.as_str();
        if probe {
            tracing::debug!(%peer, listener, reason = %reason, "connection closed before its TLS handshake");
        } else {
            tracing::warn!(%peer, listener, reason = %reason, "TLS handshake failed; connection closed");
        }
    }

    /// Runs the server side of the handshake on an accepted stream, bounded
    /// by [`HANDSHAKE_TIMEOUT`] (call it from the connection's task). `None`
    /// when it failed (logged and counted) or this listener has no TLS.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(sluice_tls::server::TlsStream<TcpStream>, ConnSecurity)> {
        self.accept_within(tcp, peer, HANDSHAKE_TIMEOUT).await
    }

    /// [`ListenerTls::accept`] with another timeout.
    pub async fn accept_within(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<(sluice_tls::server::TlsStream<TcpStream>, ConnSecurity)> {
        // The config current now: a reload applies from the next handshake.
        let acceptor = self.identity.as_ref()?.acceptor();
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let principal = sluice_tls::peer_principal(stream.get_ref().1);
                tracing::debug!(%peer, listener = self.listener.as_str(), principal = ?principal, "TLS handshake done");
                let conn = ConnSecurity {
                    tls: true,
                    tls_principal: principal,
                    sasl: self.sasl,
                };
                Some((stream, conn))
            }
            Ok(Err(e)) => {
                let probe = e.kind() == std::io::ErrorKind::UnexpectedEof;
                self.failed(peer, &e, probe);
                None
            }
            Err(_) => {
                self.failed(
                    peer,
                    &format!("no handshake within {} s", timeout.as_secs_f32()),
                    false,
                );
                None
            }
        }
    }

    /// What a plaintext connection on this listener established.
    pub fn plain_conn(&self) -> ConnSecurity {
        ConnSecurity {
            tls: false,
            tls_principal: None,
            sasl: self.sasl,
        }
    }
}

/// Re-reads the certificate files on every SIGHUP until `stop`. A failed
/// reload is logged and the previous certificate stays in use.
pub async fn reload_on_sighup(identity: Arc<ServerTls>, stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGHUP handler: TLS certificates will not reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            reload(&identity);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = identity;
        stop.cancelled().await;
    }
}

/// One reload of the TLS files, logged either way.
pub fn reload(identity: &ServerTls) {
    let files = identity.files();
    match identity.reload() {
        Ok(()) => tracing::info!(
            cert = %files.cert.display(),
            key = %files.key.display(),
            "SIGHUP: TLS certificate reloaded; new connections use it"
        ),
        Err(e) => tracing::error!(
            error = %e,
            "SIGHUP: TLS certificate reload failed; still serving the previous certificate"
        ),
    }
}

/// TLS of a clustered broker's connections to its peers.
#[derive(Clone, Default)]
pub struct PeerTls {
    /// The cluster listener and the controller's connections (`cluster_tls`).
    pub cluster: sluice_cluster::network::ClusterTls,
    /// Replication fetches to leaders' native listeners (`native_security`).
    pub replication: Connector,
}

impl PeerTls {
    /// From the listener settings and the loaded identity.
    pub fn new(
        security: &ListenerSecurity,
        identity: Option<&Arc<ServerTls>>,
        metrics: &Metrics,
    ) -> PeerTls {
        let failures = metrics
            .tls_handshake_failures
            .with_label_values(&[Listener::Cluster.as_str()]);
        let cluster_identity = identity.filter(|_| security.cluster_tls).cloned();
        PeerTls {
            cluster: sluice_cluster::network::ClusterTls {
                on_handshake_failure: cluster_identity
                    .is_some()
                    .then(|| Arc::new(move || failures.inc()) as Arc<dyn Fn() + Send + Sync>),
                identity: cluster_identity,
                connector: peer_connector(identity, security.cluster_tls),
            },
            replication: peer_connector(identity, security.native.tls()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_tls::testing::Pki;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn listener_tls(dir: &std::path::Path, metrics: &Metrics) -> ListenerTls {
        let pki = Pki::new(dir, "t");
        let leaf = pki.server("broker", "broker");
        let files = TlsFiles {
            cert: leaf.cert,
            key: leaf.key,
            ca: None,
            client_auth: TlsClientAuth::None,
        };
        let identity = Arc::new(ServerTls::load(server_files(&files)).unwrap());
        ListenerTls::new(Listener::Native, Some(&identity), true, true, metrics)
    }

    /// A client that says nothing, and one that speaks plaintext, are each
    /// closed within the handshake timeout and counted; neither blocks.
    #[tokio::test]
    async fn stalled_and_plaintext_handshakes_fail_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let tls = listener_tls(dir.path(), &metrics);
        assert!(tls.is_tls());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let started = std::time::Instant::now();
        let r = tls
            .accept_within(tcp, peer, Duration::from_millis(200))
            .await;
        assert!(r.is_none());
        assert!(started.elapsed() < Duration::from_secs(5));

        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(&[0, 0, 0, 8, 0, 18, 0, 0, 0, 0, 0, 1])
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        assert!(tls
            .accept_within(tcp, peer, Duration::from_secs(5))
            .await
            .is_none());

        let text = metrics.render();
        assert!(
            text.contains("sluice_tls_handshake_failures_total{listener=\"native\"} 2"),
            "{text}"
        );
        assert_eq!(
            tls.plain_conn(),
            ConnSecurity {
                tls: false,
                tls_principal: None,
                sasl: true
            }
        );
    }

    /// A listener without TLS, or without an identity, never handshakes.
    #[test]
    fn plain_listeners_have_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let tls = listener_tls(dir.path(), &metrics);
        let off = ListenerTls::new(
            Listener::Kafka,
            tls.identity.as_ref(),
            false,
            false,
            &metrics,
        );
        assert!(!off.is_tls());
        assert!(!ListenerTls::new(Listener::Http, None, true, false, &metrics).is_tls());
        assert!(!peer_connector(tls.identity.as_ref(), false).is_tls());
        assert!(peer_connector(tls.identity.as_ref(), true).is_tls());
        assert!(!peer_connector(None, true).is_tls());
    }
}
