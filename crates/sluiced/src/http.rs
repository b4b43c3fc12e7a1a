//! The HTTP side listeners: `GET /metrics` (Prometheus text), `GET /health`
//! and, on `http_listen`, the web console (`/`, `/assets/*` and the JSON API
//! under `/api/v1/`, see `docs/console.md` and [`sluice_console`]).
//!
//! With `http_tls` the listeners serve HTTPS with the broker's certificate
//! (client certificates as `tls_client_auth` says); the TLS handshake runs
//! in the connection's task within the request-head timeout.
//!
//! Access (see [`Endpoints`]):
//! - `http_listen` serves both paths. With `metrics_listen` set, a second
//!   listener serves both paths there and `http_listen` answers `/metrics`
//!   with 404, so the metrics can live on an internal-only address while
//!   `/health` stays where load balancers look.
//! - With `metrics_token` (or `metrics_token_file`) set, `/metrics` answers
//!   401 with `WWW-Authenticate: Bearer realm="sluice"` unless the request
//!   carries `Authorization: Bearer <token>` (Prometheus:
//!   `authorization: { credentials_file: ... }`). The token is compared in
//!   time that does not depend on where it differs. `/health` stays open: it
//!   reveals nothing but liveness, and many load balancers and probes cannot
//!   send a header.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::tls::ListenerTls;
use http_body_util::{BodyExt, Limited};
use sluice_broker::{BrokerConfig, Metrics};
use sluice_client::{ClientTls, SaslMechanism};
use sluice_console::{Console, ConsoleConfig};
use sluice_tls::{MaybeTlsStream, ServerTls};

/// The console of a broker with `config`, its native listener bound at
/// `native` (an unspecified address is reached on loopback), TLS identity
/// `tls` and node id `node_id`.
pub fn console(
    config: &BrokerConfig,
    native: std::net::SocketAddr,
    tls: Option<&Arc<ServerTls>>,
    node_id: u32,
) -> Arc<Console> {
    let mut addr = native;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let security = &config.listener_security;
    let tls = if security.native.tls() {
        tls.and_then(|id| id.peer_client_config())
            .map(ClientTls::from_rustls)
    } else {
        None
    };
    let mut sasl_mechanisms = Vec::new();
    if security.native.sasl() {
        // SCRAM-SHA-256 first (what `sluice user create` makes by default),
        // then -512 for users made with it only; PLAIN only where the
        // listener takes it.
        let offered = |name: &str| config.security.mechanisms.iter().any(|m| m.name() == name);
        for m in [
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
            SaslMechanism::Plain,
        ] {
            let plain_ok = security.native.tls() || config.security.plain_without_tls;
            if offered(m.name()) && (m != SaslMechanism::Plain || plain_ok) {
                sasl_mechanisms.push(m);
            }
        }
    }
    // Without SASL the console's connection carries the broker's own
    // principal (ANONYMOUS, or its certificate's), which authorization
    // setups make a super user for replication: the console would hand that
    // to anyone reaching the HTTP port. It needs a login to act as the user.
    let refuse = (config.security.authorization && !security.native.sasl()).then(|| {
        "the console is off: authorization is on but the native listener has no SASL, \
         so the console cannot tell who you are (set native_security to sasl_plaintext \
         or sasl_ssl)"
            .to_string()
    });
    Console::new(ConsoleConfig {
        bootstrap: addr.to_string(),
        tls,
        sasl_mechanisms,
        service_login: config.security.admin.clone(),
        node_id,
        refuse,
    })
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// What one HTTP listener serves, and to whom.
#[derive(Clone)]
pub struct Endpoints {
    metrics: Metrics,
    /// Whether `/metrics` is served here (not on `http_listen` once
    /// `metrics_listen` is set).
    serve_metrics: bool,
    /// The bearer token `/metrics` requires, if any.
    token: Option<Arc<str>>,
    /// The web console, where served.
    console: Option<Arc<Console>>,
}

impl Endpoints {
    /// `/metrics` and `/health`, both open.
    pub fn new(metrics: Metrics) -> Endpoints {
        Endpoints {
            metrics,
            serve_metrics: true,
            token: None,
            console: None,
        }
    }

    /// The same with the web console at `/`, `/assets/*` and `/api/v1/*`.
    pub fn with_console(self, console: Arc<Console>) -> Endpoints {
        Endpoints {
            console: Some(console),
            ..self
        }
    }

    /// Answers one request: the console's paths go to the console, the rest to [`Endpoints::route`].
    pub async fn serve(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let console = match &self.console {
            Some(c) if Console::serves(req.uri().path()) => Arc::clone(c),
            _ => {
                return self.route(
                    req.method(),
                    req.uri().path(),
                    req.headers().get(AUTHORIZATION),
                )
            }
        };
        let method = req.method().clone();
        let path_and_query = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let authorization = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let json_body = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        let api_error = |status: StatusCode, message: &str| {
            let body = format!("{{\"error\":{:?}}}", message);
            respond(status, "application/json", body)
        };
        // A body-carrying call must be JSON: a cross-site form or a
        // text/plain POST (which a browser sends without asking) is refused,
        // and a JSON one from another origin needs a CORS preflight, which
        // is never granted.
        if method == Method::POST && !json_body {
            return api_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST bodies must be JSON (Content-Type: application/json)",
            );
        }
        let body = match Limited::new(req.into_body(), sluice_console::MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than 1 MiB or was cut off",
                )
            }
        };
        let reply = console
            .handle(
                method.as_str(),
                &path_and_query,
                authorization.as_deref(),
                &body,
            )
            .await;
        let status =
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = respond(status, reply.content_type, reply.body);
        let h = r.headers_mut();
        h.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        h.insert(
            hyper::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            hyper::header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        );
        h.insert(
            hyper::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        r
    }

    /// The same without `/metrics` (404).
    pub fn without_metrics(self) -> Endpoints {
        Endpoints {
            serve_metrics: false,
            ..self
        }
    }

    /// The same with `/metrics` behind `Authorization: Bearer <token>` (`None`: open).
    pub fn with_token(self, token: Option<&str>) -> Endpoints {
        Endpoints {
            token: token.map(Arc::from),
            ..self
        }
    }

    /// Routes one HTTP request; `authorization` is its `Authorization` header.
    pub fn route(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Response<Full<Bytes>> {
        match (method, path) {
            (_, "/metrics") if !self.serve_metrics => {
                respond(StatusCode::NOT_FOUND, "text/plain", "not found\n")
            }
            (&Method::GET, "/metrics") => match self.authorized(authorization) {
                Ok(()) => respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                ),
                Err(challenge) => {
                    let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized\n");
                    r.headers_mut()
                        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                    r
                }
            },
            (&Method::GET, "/health") => respond(StatusCode::OK, "text/plain", "ok\n"),
            (_, "/metrics" | "/health") => respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }

    /// `Ok` when no token is required or `authorization` carries it; else
    /// the `WWW-Authenticate` challenge to answer with (RFC 6750).
    fn authorized(&self, authorization: Option<&HeaderValue>) -> Result<(), &'static str> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let given = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match given {
            None => Err(r#"Bearer realm="sluice""#),
            Some(t) if same_token(t.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(r#"Bearer realm="sluice", error="invalid_token""#),
        }
    }
}

/// Whether `given` equals `expected`, in time that depends on their
/// lengths only (not on the first differing byte), so the response time
/// does not leak the token a byte at a time.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        diff |= usize::from(g ^ e);
    }
    std::hint::black_box(diff) == 0
}

/// Open HTTP connections at most. Without a cap, connections to the metrics
/// port could use up the process's file descriptors, which the native
/// listener and the segment files need too.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// A connection must send a whole request head within this, or it is closed.
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves HTTP until `shutdown` fires. HTTP connections are not waited for on shutdown.
///
/// Each connection serves one request and closes (no keep-alive), and one
/// that sends no complete request head within [`HTTP_HEADER_TIMEOUT`] is
/// closed: clients that hold idle or half-sent connections cannot keep the
/// [`MAX_HTTP_CONNECTIONS`] slots from a Prometheus scrape or a health check.
/// HTTPS when `tls` runs TLS.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    tls: ListenerTls,
    shutdown: CancellationToken,
) {
    serve_limited(
        listener,
        endpoints,
        Some(tls),
        shutdown,
        MAX_HTTP_CONNECTIONS,
        HTTP_HEADER_TIMEOUT,
    )
    .await
}

/// [`serve`] with at most `max_connections` open connections (once that many
/// are open, the next one is accepted only after one of them closes) and
/// the given request-head timeout (which bounds a TLS handshake too).
pub async fn serve_limited(
    listener: TcpListener,
    endpoints: Endpoints,
    tls: Option<ListenerTls>,
    shutdown: CancellationToken,
    max_connections: usize,
    header_timeout: Duration,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    let tls = tls.filter(ListenerTls::is_tls);
    while let Some((permit, stream, peer)) =
        crate::server::accept_limited(&listener, &limit, &shutdown).await
    {
        let endpoints = endpoints.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream = match &tls {
                None => MaybeTlsStream::Plain(stream),
                Some(tls) => {
                    let handshake = tls.accept_within(stream, peer, header_timeout);
                    let done = tokio::select! {
                        done = handshake => done,
                        _ = shutdown.cancelled() => None,
                    };
                    match done {
                        Some((s, _)) => MaybeTlsStream::from(s),
                        None => return drop(permit),
                    }
                }
            };
            let svc = service_fn(move |req: Request<Incoming>| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, Infallible>(endpoints.serve(req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            // Belt and braces: hyper's head timeout covers a silent client;
            // this also bounds one that trickles a body or never reads.
            let bounded = tokio::time::timeout(header_timeout * 4, conn);
            tokio::select! {
                r = bounded => match r {
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http connection error"),
                    Err(_) => tracing::debug!(%peer, "http connection timed out"),
                    Ok(Ok(())) => {}
                },
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn health(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Serves HTTP on a loopback port with `max` connections and `header_timeout`.
    async fn start(
        max: usize,
        header_timeout: Duration,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_limited(
            listener,
            Endpoints::new(Metrics::new()),
            None,
            shutdown.clone(),
            max,
            header_timeout,
        ));
        (addr, shutdown, server)
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        use tokio::net::TcpStream;

        let (addr, shutdown, server) = start(2, Duration::from_secs(60)).await;
        // Two connections that send nothing hold both slots.
        let a = TcpStream::connect(addr).await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        // A third connects (kernel backlog) but is not served while both stay open.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), health(&mut c)).await;
        assert!(waiting.is_err(), "served beyond the connection limit");
        drop(a);
        drop(b);
        shutdown.cancel();
        server.await.unwrap();
    }

    /// Clients holding idle connections (silent, or after a keep-alive
    /// request) do not keep `/health` from being answered: each connection
    /// closes after one response, and a silent one after the head timeout.
    #[tokio::test]
    async fn idle_connections_do_not_starve_the_endpoint() {
        use tokio::io::AsyncReadExt;
        use tokio::net::TcpStream;

        let (addr, shutdown, server) = start(2, Duration::from_millis(300)).await;
        // One asks for keep-alive and then idles; one never says anything.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        assert!(health(&mut kept).await.starts_with("HTTP/1.1 200"));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Both are closed by the server.
        let mut buf = [0u8; 64];
        for s in [&mut kept, &mut silent] {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("the server closed the idle connection");
            assert!(matches!(n, Ok(0) | Err(_)));
        }
        // Two more clients are answered while the idle ones are still open on our side.
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(10), health(&mut c))
                .await
                .expect("answered despite idle clients");
            assert!(r.starts_with("HTTP/1.1 200"));
        }
        drop((kept, silent));
        shutdown.cancel();
        server.await.unwrap();
    }

    #[test]
    fn routes() {
        let e = Endpoints::new(Metrics::new());
        let route = |m: &Method, path: &str| e.route(m, path, None).status();
        assert_eq!(route(&Method::GET, "/health"), StatusCode::OK);
        assert_eq!(route(&Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(route(&Method::GET, "/nope"), StatusCode::NOT_FOUND);
        assert_eq!(
            route(&Method::POST, "/health"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Without /metrics (it is on metrics_listen): 404 whatever the method.
        let e = Endpoints::new(Metrics::new()).without_metrics();
        assert_eq!(
            e.route(&Method::GET, "/metrics", None).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            e.route(&Method::POST, "/metrics", None).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            e.route(&Method::GET, "/health", None).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn a_token_guards_metrics_but_not_health() {
        let e = Endpoints::new(Metrics::new()).with_token(Some("s3cret-token"));
        let get = |path: &str, auth: Option<&str>| {
            let h = auth.map(|a| HeaderValue::from_str(a).unwrap());
            e.route(&Method::GET, path, h.as_ref())
        };
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token2"),
            Some("Basic s3cret-token"),
            Some("s3cret-token"),
            Some("Bearer"),
        ] {
            let r = get("/metrics", auth);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            let challenge = r.headers().get(WWW_AUTHENTICATE).unwrap().to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"sluice\""),
                "{challenge}"
            );
        }
        let wrong = get("/metrics", Some("Bearer wrong"));
        assert!(wrong.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        for auth in ["Bearer s3cret-token", "bearer  s3cret-token "] {
            assert_eq!(
                get("/metrics", Some(auth)).status(),
                StatusCode::OK,
                "{auth}"
            );
        }
        assert_eq!(get("/health", None).status(), StatusCode::OK);
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
        assert!(!same_token(b"abc\0", b"abc"));
        assert!(!same_token(b"", b"abc"));
    }
}
