//! TLS for Sluice: every listener (native, Kafka, cluster, HTTP), the
//! client library, and broker-to-broker connections.
//!
//! - [`ServerTls`]: a broker's certificate, key and optional CA loaded from
//!   PEM files into a rustls [`ServerConfig`], with client-certificate
//!   verification (mTLS, [`ClientAuth`]) against the CA. [`ServerTls::reload`]
//!   re-reads the files and swaps the config atomically: handshakes that
//!   start afterwards use the new certificate; established connections keep
//!   their session. A failed reload keeps the old config.
//! - [`client_config`] and [`Connector`]: the client side. Trust comes from
//!   a CA file only; no public (webpki) roots are bundled.
//! - [`peer_principal`]: `User:<CN>` of a verified client certificate, read
//!   with a small bounds-checked DER walker ([`principal`] module docs).
//! - [`MaybeTlsStream`]: plain TCP or either side of TLS behind one
//!   `AsyncRead + AsyncWrite` (vectored writes forwarded).
//!
//! The crypto is rustls' `ring` provider, passed explicitly to every
//! builder, so no process-wide default provider has to be installed. ALPN
//! is not used: each port speaks one protocol. TLS 1.2 and 1.3 are enabled
//! (librdkafka and the JVM clients negotiate 1.3 when they can).
//!
//! Certificates for tests come from the `testing` module (feature `testing`),
//! generated with rcgen at run time; no key is checked in.

mod error;
pub mod principal;
mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
pub use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

pub use error::TlsError;
pub use principal::peer_principal;
pub use stream::MaybeTlsStream;
// The versions this crate builds against, for callers that touch their types.
pub use rustls;
pub use rustls_pki_types as pki_types;
pub use tokio_rustls;

/// Whether a TLS listener asks connecting clients for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for and verified if sent; clients without
    /// one are admitted (they authenticate with SASL, or not at all).
    Requested,
    /// A client without a certificate the CA signed is refused in the handshake.
    Required,
}

impl ClientAuth {
    /// The config-string form.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Requested => "requested",
            ClientAuth::Required => "required",
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientAuth {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            _ => Err(TlsError::ClientAuthValue(s.to_string())),
        }
    }
}

/// The PEM files of a TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificate(s): client certificates are verified against them,
    /// and the broker's own outgoing connections trust them.
    pub ca: Option<PathBuf>,
    /// Whether clients are asked for certificates.
    pub client_auth: ClientAuth,
}

/// The configs built from one reading of the files.
struct Loaded {
    server: Arc<ServerConfig>,
    /// The broker as a client of its peers (trusting the CA, presenting its
    /// own certificate); `None` without a CA.
    peer_client: Option<Arc<ClientConfig>>,
}

/// A TLS server identity that can be reloaded from its files.
pub struct ServerTls {
    files: TlsServerFiles,
    current: RwLock<Arc<Loaded>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files and builds the configs.
    pub fn load(files: TlsServerFiles) -> Result<ServerTls, TlsError> {
        let loaded = load(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// The files this identity is read from.
    pub fn files(&self) -> &TlsServerFiles {
        &self.files
    }

    fn loaded(&self) -> Arc<Loaded> {
        // A writer that panicked left a whole `Arc` behind: still valid.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The current server config.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.loaded().server)
    }

    /// An acceptor for the current config (take a new one per connection
    /// so that a reload applies to the next handshake).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// The config for this broker's own connections to its peers: trusts
    /// the CA and presents this certificate (for peers that require client
    /// certificates). `None` without a CA file.
    pub fn peer_client_config(&self) -> Option<Arc<ClientConfig>> {
        self.loaded().peer_client.clone()
    }

    /// Re-reads the files and, if they make a valid config, swaps it in.
    /// On error the previous config stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(load(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// rustls' `ring` provider. Deprecated upstream since 0.23.48 only because
/// ring has no post-quantum key exchange; aws-lc-rs would need a C and
/// cmake toolchain in every build, and clients that offer X25519MLKEM768
/// fall back to X25519 with this provider.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsServerFiles) -> Result<Loaded, TlsError> {
    let provider = provider();
    let certs = load_certs(&files.cert, "certificate")?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = match (files.client_auth, &files.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (auth, None) => return Err(TlsError::ClientAuthWithoutCa(auth)),
        (auth, Some(ca)) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                path: ca.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let identity_error = |source| TlsError::Identity {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let server = builder
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(identity_error)?;
    let peer_client = match &files.ca {
        None => None,
        Some(ca) => Some(Arc::new(
            client_builder(ca)?
                .with_client_auth_cert(certs, key)
                .map_err(identity_error)?,
        )),
    };
    Ok(Loaded {
        server: Arc::new(server),
        peer_client,
    })
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "private key";
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Missing {
            what: WHAT,
            path: path.to_path_buf(),
        },
        source => TlsError::Read {
            what: WHAT,
            path: path.to_path_buf(),
            source,
        },
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

fn client_builder(
    ca: &Path,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_root_certificates(load_roots(ca)?))
}

/// A client config trusting the CA certificate(s) in `ca`, presenting the
/// certificate and key in `cert_and_key` when given (for mTLS). Without a
/// CA file there is nothing to trust: public roots are not bundled.
pub fn client_config(
    ca: Option<&Path>,
    cert_and_key: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = ca.ok_or(TlsError::NoTrustRoots)?;
    let builder = client_builder(ca)?;
    let config = match cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert, "certificate")?, load_key(key)?)
            .map_err(|source| TlsError::Identity {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
            })?,
    };
    Ok(Arc::new(config))
}

/// The host part of `host:port` (brackets of an IPv6 literal removed); the
/// whole string when it has no port.
pub fn host_of(addr: &str) -> &str {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host;
        }
    }
    match addr.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => addr,
    }
}

/// The TLS server name for a host: an IP address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// The client side of a TLS handshake on `stream`, checking the broker's
/// certificate against `server_name` (a DNS name or an IP address).
pub async fn connect(
    stream: TcpStream,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> io::Result<client::TlsStream<TcpStream>> {
    let name = self::server_name(server_name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config).connect(name, stream).await
}

/// Where a [`Connector`] gets its client config.
#[derive(Clone)]
enum Source {
    /// A fixed config (the client library).
    Fixed(Arc<ClientConfig>),
    /// The broker's own identity, current after each reload.
    Peer(Arc<ServerTls>),
}

/// Opens connections: plain TCP, or TLS with a client config. The TLS
/// server name is the host of the address dialled unless overridden.
#[derive(Clone, Default)]
pub struct Connector {
    tls: Option<Source>,
    server_name: Option<String>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.is_tls())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Connector {
    /// Plain TCP.
    pub fn plain() -> Connector {
        Connector::default()
    }

    /// TLS with `config`.
    pub fn tls(config: Arc<ClientConfig>) -> Connector {
        Connector {
            tls: Some(Source::Fixed(config)),
            server_name: None,
        }
    }

    /// TLS as the broker `identity` (its CA, its own certificate as client
    /// certificate), picking up reloads. Without a CA file every connect
    /// fails with [`TlsError::NoTrustRoots`]: such a broker cannot verify
    /// its peers (the broker's configuration checks refuse that setup).
    pub fn peer(identity: Arc<ServerTls>) -> Connector {
        Connector {
            tls: Some(Source::Peer(identity)),
            server_name: None,
        }
    }

    /// Checks every server's certificate against `name` instead of the
    /// host of the address dialled (a load balancer, an address with no
    /// name in the certificate).
    pub fn with_server_name(mut self, name: Option<String>) -> Connector {
        self.server_name = name.filter(|n| !n.trim().is_empty());
        self
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `addr` (`host:port`) with TCP_NODELAY, then runs the TLS
    /// handshake if configured. Callers bound it with their connect timeout.
    pub async fn connect(&self, addr: &str) -> io::Result<MaybeTlsStream> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        self.wrap(tcp, addr).await
    }

    /// Runs the TLS handshake (if configured) on a connected stream to `addr`.
    pub async fn wrap(&self, tcp: TcpStream, addr: &str) -> io::Result<MaybeTlsStream> {
        let config = match &self.tls {
            None => return Ok(MaybeTlsStream::Plain(tcp)),
            Some(Source::Fixed(c)) => Arc::clone(c),
            Some(Source::Peer(identity)) => identity.peer_client_config().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, TlsError::NoTrustRoots)
            })?,
        };
        let name = self.server_name.as_deref().unwrap_or_else(|| host_of(addr));
        Ok(connect(tcp, name, config).await?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_parses() {
        assert_eq!("none".parse::<ClientAuth>().unwrap(), ClientAuth::None);
        assert_eq!(
            " Requested".parse::<ClientAuth>().unwrap(),
            ClientAuth::Requested
        );
        assert_eq!(
            "required".parse::<ClientAuth>().unwrap(),
            ClientAuth::Required
        );
        let e = "sometimes".parse::<ClientAuth>().unwrap_err();
        assert!(e.to_string().contains("none, requested or required"), "{e}");
        for a in [
            ClientAuth::None,
            ClientAuth::Requested,
            ClientAuth::Required,
        ] {
            assert_eq!(a.as_str().parse::<ClientAuth>().unwrap(), a);
        }
    }

    #[test]
    fn hosts_and_server_names() {
        assert_eq!(host_of("127.0.0.1:7171"), "127.0.0.1");
        assert_eq!(host_of("broker-1.example:9093"), "broker-1.example");
        assert_eq!(host_of("[::1]:7171"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("localhost").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn a_client_needs_a_ca() {
        let e = client_config(None, None).unwrap_err();
        assert!(matches!(e, TlsError::NoTrustRoots));
        assert!(e.to_string().contains("does not bundle"), "{e}");
    }

    use crate::testing::{Pki, Usage};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn files(pki: &Pki, leaf: &testing::CertFiles, auth: ClientAuth) -> TlsServerFiles {
        TlsServerFiles {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            ca: Some(pki.ca_file.clone()),
            client_auth: auth,
        }
    }

    /// Serves TLS echo connections with `tls`; each reports the client's
    /// principal and the server certificate's CN it was served with.
    async fn echo_server(tls: Arc<ServerTls>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    let Ok(s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut s = MaybeTlsStream::from(s);
                    let who = s.peer_principal().unwrap_or_else(|| "-".into());
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let reply = format!("{who} {}", String::from_utf8_lossy(&buf[..n]));
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Connects with `config` and does one round trip; the server's answer.
    async fn ask(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> io::Result<String> {
        let mut s = Connector::tls(config).connect(&addr.to_string()).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The CN of the certificate a fresh handshake with `addr` is served.
    async fn served_cn(addr: std::net::SocketAddr, ca: &Path) -> String {
        let config = client_config(Some(ca), None).unwrap();
        let s = Connector::tls(config)
            .connect(&addr.to_string())
            .await
            .unwrap();
        let MaybeTlsStream::ClientTls(s) = s else {
            panic!("not TLS")
        };
        let cert = s.get_ref().1.peer_certificates().unwrap()[0].clone();
        principal::common_name(cert.as_ref()).unwrap()
    }

    #[tokio::test]
    async fn mtls_admits_only_certificates_of_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let other = Pki::new(dir.path(), "other");
        let server = pki.server("server", "broker-1");
        let tls = Arc::new(ServerTls::load(files(&pki, &server, ClientAuth::Required)).unwrap());
        let addr = echo_server(tls).await;
        let ca = pki.ca_file.as_path();

        let alice = pki.client("alice", "alice");
        let with_cert = client_config(Some(ca), Some((&alice.cert, &alice.key))).unwrap();
        assert_eq!(ask(addr, with_cert).await.unwrap(), "User:alice ping");

        // TLS 1.3: the refusal of a client certificate arrives after the
        // client's handshake finished, so it shows on the first read.
        let without = client_config(Some(ca), None).unwrap();
        assert!(ask(addr, without).await.is_err());
        let mallory = other.client("mallory", "mallory");
        let foreign = client_config(Some(ca), Some((&mallory.cert, &mallory.key))).unwrap();
        assert!(ask(addr, foreign).await.is_err());
        let stale = pki.expired("stale", "stale", Usage::Client);
        let expired = client_config(Some(ca), Some((&stale.cert, &stale.key))).unwrap();
        assert!(ask(addr, expired).await.is_err());
    }

    #[tokio::test]
    async fn requested_client_auth_admits_clients_without_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let server = pki.server("server", "broker-1");
        let tls = Arc::new(ServerTls::load(files(&pki, &server, ClientAuth::Requested)).unwrap());
        let addr = echo_server(tls).await;
        let ca = pki.ca_file.as_path();
        let anonymous = client_config(Some(ca), None).unwrap();
        assert_eq!(ask(addr, anonymous).await.unwrap(), "- ping");
        let bob = pki.client("bob", "bob");
        let with_cert = client_config(Some(ca), Some((&bob.cert, &bob.key))).unwrap();
        assert_eq!(ask(addr, with_cert).await.unwrap(), "User:bob ping");
        // A certificate that is sent is verified even when not required.
        let other = Pki::new(dir.path(), "other");
        let eve = other.client("eve", "eve");
        let foreign = client_config(Some(ca), Some((&eve.cert, &eve.key))).unwrap();
        assert!(ask(addr, foreign).await.is_err());
    }

    #[tokio::test]
    async fn clients_refuse_unknown_expired_and_misnamed_servers() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let other = Pki::new(dir.path(), "other");
        let ca = pki.ca_file.clone();
        for (name, leaf) in [
            ("foreign", other.server("foreign", "foreign")),
            ("expired", pki.expired("expired", "expired", Usage::Server)),
        ] {
            let tls = ServerTls::load(files(&pki, &leaf, ClientAuth::None)).unwrap();
            let addr = echo_server(Arc::new(tls)).await;
            let e = ask(addr, client_config(Some(&ca), None).unwrap())
                .await
                .expect_err(name);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{name}: {e}");
        }
        // The right server under a name its certificate does not hold.
        let good = pki.server("good", "good");
        let tls = ServerTls::load(files(&pki, &good, ClientAuth::None)).unwrap();
        let addr = echo_server(Arc::new(tls)).await;
        let config = client_config(Some(&ca), None).unwrap();
        let named = Connector::tls(Arc::clone(&config)).with_server_name(Some("elsewhere".into()));
        assert!(named.connect(&addr.to_string()).await.is_err());
        let named = Connector::tls(config).with_server_name(Some("localhost".into()));
        assert!(named.connect(&addr.to_string()).await.is_ok());
    }

    #[tokio::test]
    async fn reload_serves_new_handshakes_keeps_old_sessions_and_survives_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let first = pki.server("server", "first");
        let tls = Arc::new(ServerTls::load(files(&pki, &first, ClientAuth::None)).unwrap());
        let addr = echo_server(Arc::clone(&tls)).await;
        let ca = pki.ca_file.clone();
        assert_eq!(served_cn(addr, &ca).await, "first");
        let config = client_config(Some(&ca), None).unwrap();
        let mut old = Connector::tls(config)
            .connect(&addr.to_string())
            .await
            .unwrap();

        // The same file names, new contents.
        let second = pki.server("server", "second");
        assert_eq!(second, first);
        tls.reload().unwrap();
        assert_eq!(served_cn(addr, &ca).await, "second");
        old.write_all(b"still").await.unwrap();
        let mut buf = [0u8; 32];
        let n = old.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"- still");

        // A broken key file: the reload fails, the last good config stays.
        std::fs::write(&first.key, "not a key").unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.to_string().contains("no private key in"), "{e}");
        assert_eq!(served_cn(addr, &ca).await, "second");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let good = pki.server("good", "good");
        let other = pki.server("other", "other");
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let load = |cert: &Path, key: &Path, ca: Option<&Path>, auth| {
            ServerTls::load(TlsServerFiles {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                ca: ca.map(Path::to_path_buf),
                client_auth: auth,
            })
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        let e = load(&missing, &good.key, None, ClientAuth::None);
        assert!(
            e.starts_with(&format!(
                "cannot read certificate file {}: ",
                missing.display()
            )),
            "{e}"
        );
        let e = load(&empty, &good.key, None, ClientAuth::None);
        assert_eq!(e, format!("no certificate in {}", empty.display()));
        let e = load(&good.cert, &empty, None, ClientAuth::None);
        assert_eq!(e, format!("no private key in {}", empty.display()));
        let e = load(&good.cert, &missing, None, ClientAuth::None);
        assert!(e.starts_with("cannot read private key file"), "{e}");
        // A key that belongs to another certificate.
        let e = load(&good.cert, &other.key, None, ClientAuth::None);
        assert!(e.contains(&good.cert.display().to_string()), "{e}");
        let e = load(&good.cert, &good.key, None, ClientAuth::Required);
        assert!(e.contains("tls_ca_file"), "{e}");
        let e = load(&good.cert, &good.key, Some(&empty), ClientAuth::Required);
        assert_eq!(e, format!("no CA certificate in {}", empty.display()));
        // A PEM certificate that is not DER inside.
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load(&good.cert, &good.key, Some(&junk), ClientAuth::Required);
        assert!(e.starts_with("invalid CA certificate in"), "{e}");
        let e = client_config(Some(&missing), None).unwrap_err().to_string();
        assert!(e.starts_with("cannot read CA certificate file"), "{e}");
        let e = client_config(Some(&pki.ca_file), Some((&good.cert, &empty)))
            .unwrap_err()
            .to_string();
        assert_eq!(e, format!("no private key in {}", empty.display()));
    }

    /// `MaybeTlsStream` passes vectored writes through on both sides.
    #[tokio::test]
    async fn vectored_writes_go_through() {
        use std::io::IoSlice;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let leaf = pki.server("server", "s");
        let tls = ServerTls::load(files(&pki, &leaf, ClientAuth::None)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = MaybeTlsStream::from(acceptor.accept(tcp).await.unwrap());
            assert!(s.is_tls());
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let config = client_config(Some(&pki.ca_file), None).unwrap();
        let mut c = Connector::tls(config)
            .connect(&addr.to_string())
            .await
            .unwrap();
        assert!(tokio::io::AsyncWrite::is_write_vectored(&c));
        let parts: [&[u8]; 3] = [b"zero", b"-copy", b"-ish"];
        let mut sent = 0;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        while sent < total {
            let mut skip = sent;
            let slices: Vec<IoSlice<'_>> = parts
                .iter()
                .filter_map(|p| {
                    if skip >= p.len() {
                        skip -= p.len();
                        None
                    } else {
                        let s = IoSlice::new(&p[skip..]);
                        skip = 0;
                        Some(s)
                    }
                })
                .collect();
            sent += c.write_vectored(&slices).await.unwrap();
        }
        c.shutdown().await.unwrap();
        assert_eq!(server.await.unwrap(), b"zero-copy-ish");
    }
}
