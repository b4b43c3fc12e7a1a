//! The Sluice web console: the page (compiled in) and its JSON API under
//! `/api/v1/` (reference: `docs/console.md`).
//!
//! The console is a client of the cluster like any other. Each API call is
//! answered through the Sluice client library, connected to the broker's own
//! native listener: it sees every broker and partition of a cluster, and,
//! when that listener requires SASL, it logs in with the credentials of the
//! HTTP request (`Authorization: Basic`), so every ACL applies to the user
//! at the browser. One client per user is kept for [`SESSION_IDLE`].
//!
//! The crate knows no HTTP library: [`Console::handle`] takes a method, a
//! path with its query, the `Authorization` header and the body, and answers
//! a [`Reply`]; `sluiced` serves it on its HTTP listener.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use sluice_client::{
    Admin, ClientConfig, ClientError, ClientSasl, ClientTls, Producer, ProducerConfig,
    SaslMechanism,
};

mod api;
mod assets;
mod error;
mod sampler;

pub use error::ConsoleError;
use sampler::Sampler;

/// A client unused for this long is closed.
pub const SESSION_IDLE: Duration = Duration::from_secs(300);

/// Most clients (users) kept at once; the least recently used goes first.
const MAX_SESSIONS: usize = 32;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How the console reaches its broker.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// `host:port` of the broker's native listener.
    pub bootstrap: String,
    /// TLS to that listener, when it runs TLS.
    pub tls: Option<ClientTls>,
    /// SASL mechanisms to log in with, in order of preference; empty when
    /// the listener needs no login.
    pub sasl_mechanisms: Vec<SaslMechanism>,
    /// Credentials of the background sampler (throughput and lag history)
    /// when the listener needs a login: the bootstrap admin.
    pub service_login: Option<(String, String)>,
    /// This broker's node id.
    pub node_id: u32,
    /// Why the API must refuse every call, if it must (e.g. authorization
    /// on without a login to tell who the user is).
    pub refuse: Option<String>,
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Bytes::from(v.to_string()),
        }
    }

    fn error(e: &ConsoleError) -> Reply {
        Reply::json(e.status(), &json!({ "error": e.to_string() }))
    }
}

/// The clients of one user.
struct Session {
    admin: Admin,
    config: ClientConfig,
    producer: tokio::sync::OnceCell<Producer>,
    user: Option<String>,
    last_used: Mutex<Instant>,
}

impl Session {
    fn producer(&self) -> impl std::future::Future<Output = &Producer> {
        self.producer.get_or_init(|| async {
            let config = ProducerConfig {
                linger: Duration::ZERO,
                ..ProducerConfig::default()
            };
            Producer::with_config(self.config.clone(), config)
        })
    }
}

/// The web console of one broker.
pub struct Console {
    config: ConsoleConfig,
    sessions: Mutex<HashMap<(String, String), Arc<Session>>>,
    sampler: Arc<Sampler>,
}

impl Console {
    /// A console for the broker `config` names. Nothing connects until the first request.
    pub fn new(config: ConsoleConfig) -> Arc<Console> {
        Arc::new(Console {
            config,
            sessions: Mutex::new(HashMap::new()),
            sampler: Arc::new(Sampler::default()),
        })
    }

    /// Whether the broker requires a login.
    pub fn auth_required(&self) -> bool {
        !self.config.sasl_mechanisms.is_empty()
    }

    /// Whether `path` is the console's (the page, its assets or the API).
    pub fn serves(path: &str) -> bool {
        path == "/"
            || path == "/index.html"
            || path.starts_with("/assets/")
            || path == "/api/v1"
            || path.starts_with("/api/v1/")
    }

    /// Answers one request: `path_and_query` as in the request line,
    /// `authorization` the `Authorization` header, if any.
    pub async fn handle(
        self: &Arc<Self>,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        if let Some(asset) = assets::get(path) {
            return if method == "GET" || method == "HEAD" {
                Reply {
                    status: 200,
                    content_type: asset.content_type,
                    body: Bytes::from_static(asset.body.as_bytes()),
                }
            } else {
                Reply::error(&ConsoleError::Client {
                    message: format!("method {method} is not allowed on {path}"),
                    status: 405,
                })
            };
        }
        let Some(rest) = path
            .strip_prefix("/api/v1/")
            .or_else(|| path.strip_prefix("/api/v1"))
        else {
            return Reply::error(&ConsoleError::NotFound(format!("no page at {path}")));
        };
        self.sampler.start(self);
        let started = Instant::now();
        let reply = match self.api(method, rest, query, authorization, body).await {
            Ok((status, v)) => Reply::json(status, &v),
            Err(e) => {
                if e.status() >= 500 {
                    tracing::warn!(method, path, error = %e, "console api call failed");
                }
                Reply::error(&e)
            }
        };
        tracing::debug!(
            method,
            path,
            status = reply.status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "console api"
        );
        reply
    }

    async fn api(
        self: &Arc<Self>,
        method: &str,
        rest: &str,
        query: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Value), ConsoleError> {
        if let Some(why) = &self.config.refuse {
            return Err(ConsoleError::Client {
                message: why.clone(),
                status: 403,
            });
        }
        let segments: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect::<Result<_, _>>()?;
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let credentials = basic_credentials(authorization)?;
        if segs == ["session"] && method == "GET" && credentials.is_none() {
            return Ok((
                200,
                json!({
                    "auth_required": self.auth_required(),
                    "user": Value::Null,
                    "node_id": self.config.node_id,
                    "version": env!("CARGO_PKG_VERSION"),
                }),
            ));
        }
        let session = self.session(credentials).await?;
        let q = parse_query(query)?;
        api::route(self, &session, method, &segs, &q, body).await
    }

    /// The client of `credentials` (made, and logged in, on first use).
    async fn session(
        &self,
        credentials: Option<(String, String)>,
    ) -> Result<Arc<Session>, ConsoleError> {
        if self.auth_required() && credentials.is_none() {
            return Err(ConsoleError::LoginRequired);
        }
        // Without a login on the listener, every user shares one client.
        let key = match (&credentials, self.auth_required()) {
            (Some(c), true) => c.clone(),
            _ => (String::new(), String::new()),
        };
        {
            let mut sessions = lock(&self.sessions);
            sessions.retain(|_, s| lock(&s.last_used).elapsed() < SESSION_IDLE);
            if let Some(s) = sessions.get(&key) {
                *lock(&s.last_used) = Instant::now();
                return Ok(Arc::clone(s));
            }
        }
        let creds = if self.auth_required() {
            credentials
        } else {
            None
        };
        let session = Arc::new(self.connect(creds).await?);
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| *lock(&s.last_used))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(key, Arc::clone(&session));
        Ok(session)
    }

    /// The client config for `credentials` (`None`: no login).
    fn client_config(
        &self,
        credentials: Option<(&str, &str)>,
        mechanism: Option<SaslMechanism>,
    ) -> ClientConfig {
        let mut config = ClientConfig::new(self.config.bootstrap.clone());
        config.client_id = "sluice-console".into();
        config.tls = self.config.tls.clone();
        config.request_timeout = Duration::from_secs(10);
        config.connect_timeout = Duration::from_secs(5);
        if let (Some((user, password)), Some(m)) = (credentials, mechanism) {
            config.sasl = Some(ClientSasl::new(m, user, password));
        }
        config
    }

    /// Connects (and logs in with the first mechanism that takes the credentials).
    async fn connect(
        &self,
        credentials: Option<(String, String)>,
    ) -> Result<Session, ConsoleError> {
        let Some((user, password)) = credentials else {
            let config = self.client_config(None, None);
            let admin = Admin::with_config(config.clone())
                .await
                .map_err(|e| ConsoleError::client("connect to the broker", e))?;
            return Ok(Session {
                admin,
                config,
                producer: tokio::sync::OnceCell::new(),
                user: None,
                last_used: Mutex::new(Instant::now()),
            });
        };
        let mut last = ConsoleError::LoginFailed { user: user.clone() };
        for m in &self.config.sasl_mechanisms {
            let config = self.client_config(Some((&user, &password)), Some(*m));
            match Admin::with_config(config.clone()).await {
                Ok(admin) => {
                    return Ok(Session {
                        admin,
                        config,
                        producer: tokio::sync::OnceCell::new(),
                        user: Some(user),
                        last_used: Mutex::new(Instant::now()),
                    })
                }
                // A user may hold credentials for one SCRAM mechanism only: try the next.
                Err(ClientError::Authentication { .. }) => {
                    tracing::info!(user, mechanism = m.name(), "console login refused");
                }
                Err(e) => {
                    last = ConsoleError::client("connect to the broker", e);
                    break;
                }
            }
        }
        Err(last)
    }

    /// The client the background sampler uses, if it can log in.
    async fn service_admin(&self) -> Option<Admin> {
        let creds = if self.auth_required() {
            Some(self.config.service_login.clone()?)
        } else {
            None
        };
        self.connect(creds).await.ok().map(|s| s.admin)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `(user, password)` of an `Authorization: Basic` header; `None` without one.
fn basic_credentials(h: Option<&str>) -> Result<Option<(String, String)>, ConsoleError> {
    use base64::Engine;
    let Some(h) = h else { return Ok(None) };
    let bad =
        || ConsoleError::BadRequest("the Authorization header is not Basic user:password".into());
    let (scheme, value) = h.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    if user.is_empty() {
        return Err(bad());
    }
    Ok(Some((user.to_string(), password.to_string())))
}

/// Decodes `%XX` escapes (and `+` as a space in queries, see [`parse_query`]).
fn percent_decode(s: &str) -> Result<String, ConsoleError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConsoleError::BadRequest(format!("bad %-escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConsoleError::BadRequest(format!("{s:?} is not UTF-8")))
}

/// `a=1&b=2` as pairs, decoded.
fn parse_query(q: &str) -> Result<HashMap<String, String>, ConsoleError> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        assert_eq!(basic_credentials(None).unwrap(), None);
        // "alice:s3:cr=t"
        let h = "Basic YWxpY2U6czM6Y3I9dA==";
        assert_eq!(
            basic_credentials(Some(h)).unwrap(),
            Some(("alice".into(), "s3:cr=t".into()))
        );
        assert!(basic_credentials(Some("Bearer x")).is_err());
        assert!(basic_credentials(Some("Basic !!!")).is_err());
        // ":pw": no user
        assert!(basic_credentials(Some("Basic OnB3")).is_err());
    }

    #[test]
    fn queries_and_paths_decode() {
        let q = parse_query("offset=5&topic=a%2Fb&x=hello+world&flag").unwrap();
        assert_eq!(q["offset"], "5");
        assert_eq!(q["topic"], "a/b");
        assert_eq!(q["x"], "hello world");
        assert_eq!(q["flag"], "");
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%f").is_err());
        assert_eq!(percent_decode("g%20id").unwrap(), "g id");
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn console_paths() {
        for p in [
            "/",
            "/index.html",
            "/assets/app.js",
            "/api/v1/topics",
            "/api/v1",
        ] {
            assert!(Console::serves(p), "{p}");
        }
        for p in ["/metrics", "/health", "/api/v2/x", "/api/v1x"] {
            assert!(!Console::serves(p), "{p}");
        }
    }

    #[tokio::test]
    async fn assets_and_unknown_paths_without_a_broker() {
        let c = Console::new(ConsoleConfig {
            bootstrap: "127.0.0.1:1".into(),
            tls: None,
            sasl_mechanisms: vec![SaslMechanism::ScramSha256],
            service_login: None,
            node_id: 1,
            refuse: None,
        });
        let r = c.handle("GET", "/", None, b"").await;
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/html"));
        let r = c.handle("POST", "/assets/app.js", None, b"").await;
        assert_eq!(r.status, 405);
        let r = c.handle("GET", "/nope", None, b"").await;
        assert_eq!(r.status, 404);
        let r = c.handle("GET", "/api/v1/session", None, b"").await;
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["auth_required"], true);
        // Login required before anything else, in JSON.
        let r = c.handle("GET", "/api/v1/topics", None, b"").await;
        assert_eq!(r.status, 401);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("login required"));
        let r = c
            .handle("GET", "/api/v1/topics", Some("Basic ???"), b"")
            .await;
        assert_eq!(r.status, 400);
        // A broker that is not there: 502 with the reason.
        let r = c
            .handle("GET", "/api/v1/topics", Some("Basic YTpi"), b"")
            .await;
        assert_eq!(r.status, 502, "{:?}", r.body);
    }

    #[tokio::test]
    async fn a_refusing_console_serves_the_page_and_refuses_the_api() {
        let c = Console::new(ConsoleConfig {
            bootstrap: "127.0.0.1:1".into(),
            tls: None,
            sasl_mechanisms: Vec::new(),
            service_login: None,
            node_id: 1,
            refuse: Some("no login".into()),
        });
        assert_eq!(c.handle("GET", "/", None, b"").await.status, 200);
        for path in ["/api/v1/session", "/api/v1/topics"] {
            let r = c.handle("GET", path, None, b"").await;
            assert_eq!(r.status, 403);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"], "no login");
        }
    }
}
