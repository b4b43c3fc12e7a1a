//! One multiplexed TCP connection to one broker.
//!
//! A [`Connection`] owns at most one live *session* (a TCP stream) at a time.
//! Each session has a writer task, fed encoded frames through a bounded
//! channel, and a reader task that decodes response frames with
//! [`FrameCodec`] and completes the waiting request by correlation id, so many
//! requests can be in flight at once and their answers may arrive in any
//! order (a parked long-poll fetch does not hold up a produce).
//!
//! Failure rules:
//! - when a session ends (EOF, I/O error, undecodable frame), every request
//!   still waiting on it completes with [`ClientError::Disconnected`]; none is
//!   left hanging;
//! - the next request reconnects; after a failed connect, requests within an
//!   exponentially growing backoff (`reconnect_backoff` doubling up to
//!   `reconnect_backoff_max`) fail at once with the same error instead of
//!   dialling again, so a dead broker is not hammered and callers (which
//!   retry on their own schedule) are not stalled;
//! - every request has a timeout; a late answer to a timed-out request is
//!   dropped by the reader;
//! - more generally, a response whose correlation id matches no request
//!   waiting on this session (a late answer, an answer to a produce sent with
//!   `acks = none`, which the spec says gets none, or a broker bug) is
//!   dropped with a debug log line, its body not even decoded; the session
//!   stays open. Ids come from one counter per connection, and `acks = none`
//!   frames take theirs from it too, so such a frame can never be taken for
//!   the answer to a later request.
//!
//! Versions: [`Connection::request`] sends version 0 of every api.
//! [`Connection::request_negotiated`] (and [`Connection::api_version`]) use,
//! for an api with several versions, the highest one both this client and
//! the broker speak: the first such request on a session sends ApiVersions
//! and the answer is kept for the session (a reconnect may reach another
//! broker, so it asks again). An api the broker does not list goes as
//! version 0 (the broker answers UNKNOWN_API).
//!
//! TLS ([`ClientConfig::tls`]): the handshake follows the TCP connect, both
//! within `connect_timeout`. A failed handshake is [`ClientError::Tls`]
//! (not retried when the certificate was refused). A plain session splits
//! the socket into owned halves; a TLS session shares its stream between
//! the reader and writer tasks through `tokio::io::split`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::wire::{decode_response_version, encode_request_chunks_version};
use sluice_protocol::{ApiKey, ApiVersionRange, Request, Response};
use sluice_tls::MaybeTlsStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

/// How many encoded frames may wait for the writer task before senders wait.
const WRITE_QUEUE: usize = 256;

type Reply = oneshot::Sender<Result<Response>>;

/// Requests waiting for an answer on one session.
struct Pending {
    /// Set once the session has ended; no new request may register after that.
    closed: Option<ClientError>,
    /// Api key and version of each waiting request (to decode its answer).
    waiting: HashMap<u32, (ApiKey, u16, Reply)>,
}

/// One live TCP stream with its writer and reader tasks.
struct Session {
    writes: mpsc::Sender<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    /// The broker's ApiVersions list, asked once per session when needed.
    versions: tokio::sync::OnceCell<Arc<[ApiVersionRange]>>,
}

/// Which version of an api a request is sent as.
#[derive(Debug, Clone, Copy)]
enum Version {
    /// This one.
    Fixed(u16),
    /// The highest both sides speak (see the module docs).
    Negotiated,
}

/// A frame for the writer task, with an optional "it reached the socket" signal.
///
/// The frame is a list of chunks: produce payloads are their own chunks so
/// that a record batch is never copied into a request buffer.
struct Outgoing {
    frame: Vec<Bytes>,
    written: Option<oneshot::Sender<Result<()>>>,
}

impl Session {
    fn is_closed(&self) -> bool {
        self.writes.is_closed() || lock(&self.pending).closed.is_some()
    }
}

struct Backoff {
    failures: u32,
    last_failure: Option<Instant>,
    last_error: Option<ClientError>,
}

struct Inner {
    addr: String,
    config: ClientConfig,
    next_correlation_id: AtomicU32,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    backoff: Mutex<Backoff>,
    /// With several comma-separated addresses: the one to try first (the
    /// last that answered, or the one after the last that failed).
    preferred: AtomicU32,
    /// The address of the current (or last) session.
    connected: Mutex<Option<String>>,
}

/// A multiplexed, reconnecting connection to one broker. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps half-updated in a
    // way that matters (every update is a single insert/remove), so recover.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connection {
    /// A connection to `addr` (`host:port`, or several separated by commas,
    /// tried in turn from the last one that answered); nothing is dialled
    /// until the first request.
    pub fn new(addr: impl Into<String>, config: ClientConfig) -> Connection {
        Connection {
            inner: Arc::new(Inner {
                addr: addr.into(),
                config,
                next_correlation_id: AtomicU32::new(1),
                session: tokio::sync::Mutex::new(None),
                backoff: Mutex::new(Backoff {
                    failures: 0,
                    last_failure: None,
                    last_error: None,
                }),
                preferred: AtomicU32::new(0),
                connected: Mutex::new(None),
            }),
        }
    }

    /// The broker address this connection dials (as given: one, or a list).
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The address the current (or last) session connected to, if any.
    pub fn connected_addr(&self) -> Option<String> {
        lock(&self.inner.connected).clone()
    }

    /// Connects now if not connected (honouring the reconnect backoff).
    pub async fn connect(&self) -> Result<()> {
        self.session().await.map(|_| ())
    }

    /// Sends `request` and waits for its response, up to the configured request timeout.
    pub async fn request(&self, request: &Request) -> Result<Response> {
        self.request_with_timeout(request, self.inner.config.request_timeout)
            .await
    }

    /// Sends `request` and waits for its response, up to `timeout`.
    ///
    /// A `Response::Error(code)` from the broker is returned as `ClientError::Broker`.
    pub async fn request_with_timeout(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        self.submit(request, timeout).await?.wait().await
    }

    /// Sends `request` as `version` of its api and waits for its response
    /// (decoded in that version's layout), up to the configured request timeout.
    pub async fn request_version(&self, request: &Request, version: u16) -> Result<Response> {
        let timeout = self.inner.config.request_timeout;
        self.submit_with(request, Version::Fixed(version), timeout)
            .await?
            .wait()
            .await
    }

    /// Sends `request` as the highest version of its api that both sides
    /// speak (see the module docs) and waits for its response.
    pub async fn request_negotiated(&self, request: &Request) -> Result<Response> {
        let timeout = self.inner.config.request_timeout;
        self.submit_with(request, Version::Negotiated, timeout)
            .await?
            .wait()
            .await
    }

    /// [`Connection::request_negotiated`] waiting at most `timeout`.
    pub async fn request_negotiated_within(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        self.submit_with(request, Version::Negotiated, timeout)
            .await?
            .wait()
            .await
    }

    /// The version of `key` that [`Connection::request_negotiated`] would
    /// send on the current session (asking ApiVersions first if needed).
    pub async fn api_version(&self, key: ApiKey) -> Result<u16> {
        let timeout = self.inner.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let session = self.session_by(deadline, timeout).await?;
        self.negotiate_on(&session, key, deadline, timeout).await
    }

    /// Whether the broker of the current session lists `key` in ApiVersions
    /// (asked once per session, dialling first if needed).
    pub async fn advertises(&self, key: ApiKey) -> Result<bool> {
        let timeout = self.inner.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let session = self.session_by(deadline, timeout).await?;
        let apis = self.versions_on(&session, deadline, timeout).await?;
        Ok(apis.iter().any(|r| r.api_key == key as u16))
    }

    /// The live session, dialled if needed, within `deadline`.
    async fn session_by(
        &self,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Arc<Session>> {
        match tokio::time::timeout_at(deadline, self.session()).await {
            Ok(s) => s,
            Err(_) => Err(ClientError::Timeout {
                what: format!("connecting to {}", self.inner.addr),
                after: timeout,
            }),
        }
    }

    /// The version of `key` to use on `session`: 0 for an api with one
    /// version, else the highest common one (ApiVersions asked once per session).
    async fn negotiate_on(
        &self,
        session: &Arc<Session>,
        key: ApiKey,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<u16> {
        if key.wire_versions().is_none_or(|r| r.max_version == 0) {
            return Ok(0);
        }
        let apis = self.versions_on(session, deadline, timeout).await?;
        Ok(key.negotiate(&apis).unwrap_or(0))
    }

    /// The broker's ApiVersions list for `session` (asked once per session).
    async fn versions_on(
        &self,
        session: &Arc<Session>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Arc<[ApiVersionRange]>> {
        let apis = session
            .versions
            .get_or_try_init(|| async {
                let asked = self
                    .submit_on(session, &Request::ApiVersions, 0, deadline, timeout)
                    .await?;
                match asked.wait().await? {
                    Response::ApiVersions(v) => Ok::<_, ClientError>(Arc::from(v.apis)),
                    other => Err(ClientError::UnexpectedResponse {
                        request: "ApiVersions",
                        got: format!("{other:?}"),
                    }),
                }
            })
            .await?;
        Ok(Arc::clone(apis))
    }

    /// Queues `request` for the writer and returns a handle for its answer.
    ///
    /// Frames reach the socket in the order their `submit` calls completed, so
    /// a caller that awaits `submit` for several requests one after another
    /// (and only then awaits their answers, possibly concurrently) gets them
    /// written, and applied by the broker, in that order. Spawning one task per
    /// [`request`](Self::request) gives no such guarantee.
    pub(crate) async fn submit(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<PendingResponse> {
        self.submit_with(request, Version::Fixed(0), timeout).await
    }

    /// [`Connection::submit`] as `version`.
    async fn submit_with(
        &self,
        request: &Request,
        version: Version,
        timeout: Duration,
    ) -> Result<PendingResponse> {
        let deadline = tokio::time::Instant::now() + timeout;
        let session = self.session_by(deadline, timeout).await?;
        let version = match version {
            Version::Fixed(v) => v,
            Version::Negotiated => {
                self.negotiate_on(&session, request.api_key(), deadline, timeout)
                    .await?
            }
        };
        self.submit_on(&session, request, version, deadline, timeout)
            .await
    }

    /// Queues `request` as `version` on `session`.
    async fn submit_on(
        &self,
        session: &Arc<Session>,
        request: &Request,
        version: u16,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<PendingResponse> {
        let api_key = request.api_key();
        let session = session.clone();
        let (correlation_id, frame) = self.encode(request, version);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&session.pending);
            if let Some(e) = &pending.closed {
                return Err(e.clone());
            }
            pending
                .waiting
                .insert(correlation_id, (api_key, version, tx));
        }
        let outgoing = Outgoing {
            frame,
            written: None,
        };
        let sent = tokio::time::timeout_at(deadline, session.writes.send(outgoing)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let removed = lock(&session.pending).waiting.remove(&correlation_id);
                drop(removed);
                return Err(self.disconnected("writer stopped"));
            }
            Err(_) => {
                lock(&session.pending).waiting.remove(&correlation_id);
                return Err(ClientError::Timeout {
                    what: format!("{} request to {}", api_key.name(), self.inner.addr),
                    after: timeout,
                });
            }
        }
        Ok(PendingResponse {
            connection: self.clone(),
            session,
            correlation_id,
            api_key,
            rx,
            deadline,
            timeout,
        })
    }

    /// Sends a request that gets no response (produce with `acks = none`).
    ///
    /// Returns once the frame has been written to the socket.
    pub async fn send_only(&self, request: &Request) -> Result<()> {
        let timeout = self.inner.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let what = || ClientError::Timeout {
            what: format!(
                "{} request to {}",
                request.api_key().name(),
                self.inner.addr
            ),
            after: timeout,
        };
        let session = tokio::time::timeout_at(deadline, self.session())
            .await
            .map_err(|_| what())??;
        let (_, frame) = self.encode(request, 0);
        let (tx, rx) = oneshot::channel();
        let outgoing = Outgoing {
            frame,
            written: Some(tx),
        };
        tokio::time::timeout_at(deadline, session.writes.send(outgoing))
            .await
            .map_err(|_| what())?
            .map_err(|_| self.disconnected("writer stopped"))?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.disconnected("writer stopped")),
            Err(_) => Err(what()),
        }
    }

    /// `request` as frame chunks under a fresh correlation id (record
    /// payloads stay their own `Bytes` chunks, not copied).
    fn encode(&self, request: &Request, version: u16) -> (u32, Vec<Bytes>) {
        let correlation_id = self
            .inner
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::with_capacity(4);
        encode_request_chunks_version(
            correlation_id,
            version,
            &self.inner.config.client_id,
            request,
            &mut frame,
        );
        (correlation_id, frame)
    }

    fn disconnected(&self, reason: &str) -> ClientError {
        ClientError::Disconnected {
            addr: self.inner.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// The live session, dialling a new one if there is none (after the backoff).
    async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.inner.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
            *slot = None;
        }
        // Within the backoff window after a failed connect, fail fast with that
        // error instead of dialling again: callers retry on their own schedule.
        {
            let b = lock(&self.inner.backoff);
            if let (Some(at), Some(err)) = (b.last_failure, &b.last_error) {
                let cfg = &self.inner.config;
                let exp = b.failures.saturating_sub(1).min(16);
                let backoff = cfg
                    .reconnect_backoff
                    .saturating_mul(1u32 << exp)
                    .min(cfg.reconnect_backoff_max);
                if at.elapsed() < backoff {
                    return Err(err.clone());
                }
            }
        }
        match self.dial().await {
            Ok(session) => {
                let session = Arc::new(session);
                *slot = Some(session.clone());
                let mut b = lock(&self.inner.backoff);
                b.failures = 0;
                b.last_failure = None;
                b.last_error = None;
                Ok(session)
            }
            Err(e) => {
                let mut b = lock(&self.inner.backoff);
                b.failures = b.failures.saturating_add(1);
                b.last_failure = Some(Instant::now());
                b.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Connects to the first address that answers, starting from the
    /// preferred one, and runs the TLS handshake if configured.
    async fn connect_any(&self) -> Result<(MaybeTlsStream, String)> {
        let started = tokio::time::Instant::now();
        let (tcp, addr) = self.connect_tcp().await?;
        let Some(tls) = &self.inner.config.tls else {
            return Ok((MaybeTlsStream::Plain(tcp), addr));
        };
        let deadline = started + self.inner.config.connect_timeout;
        let connector = tls.connector();
        let handshake = connector.wrap(tcp, &addr);
        let result = tokio::time::timeout_at(deadline, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            });
        match result {
            Ok(stream) => Ok((stream, addr)),
            Err(e) => {
                tracing::debug!(addr = %addr, error = %e, "TLS handshake failed");
                Err(ClientError::Tls {
                    addr,
                    source: Arc::new(e),
                })
            }
        }
    }

    /// Connects TCP to the first address that answers, starting from the
    /// preferred one.
    async fn connect_tcp(&self) -> Result<(TcpStream, String)> {
        let addrs: Vec<&str> = split_addrs(&self.inner.addr);
        let first = self.inner.preferred.load(Ordering::Relaxed) as usize;
        let mut last_error = None;
        for i in 0..addrs.len() {
            let n = (first + i) % addrs.len();
            let addr = addrs[n];
            let result =
                tokio::time::timeout(self.inner.config.connect_timeout, TcpStream::connect(addr))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        ))
                    })
                    .and_then(|s| s.set_nodelay(true).map(|()| s));
            match result {
                Ok(stream) => {
                    self.inner.preferred.store(n as u32, Ordering::Relaxed);
                    return Ok((stream, addr.to_string()));
                }
                Err(e) => {
                    tracing::debug!(addr, error = %e, "connect failed");
                    // A request timeout may cut this loop short: the next
                    // attempt starts with the address not tried yet.
                    self.inner
                        .preferred
                        .store(((n + 1) % addrs.len()) as u32, Ordering::Relaxed);
                    last_error = Some(e);
                }
            }
        }
        Err(ClientError::Unreachable {
            addr: self.inner.addr.clone(),
            source: Arc::new(last_error.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no broker address given")
            })),
        })
    }

    async fn dial(&self) -> Result<Session> {
        let (mut stream, addr) = self.connect_any().await?;
        crate::sasl::authenticate(&mut stream, &addr, &self.inner.config).await?;
        tracing::debug!(addr = %addr, "connected");
        *lock(&self.inner.connected) = Some(addr.clone());
        let pending = Arc::new(Mutex::new(Pending {
            closed: None,
            waiting: HashMap::new(),
        }));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let max_frame = self.inner.config.max_frame_bytes;
        let (p, a, sd) = (pending.clone(), addr, shutdown);
        match stream {
            // Plain TCP: owned halves, no lock between reader and writer.
            MaybeTlsStream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                start_session(read, write, rx, p, a, max_frame, sd);
            }
            tls => {
                let (read, write) = tokio::io::split(tls);
                start_session(read, write, rx, p, a, max_frame, sd);
            }
        }
        Ok(Session {
            writes: tx,
            pending,
            versions: tokio::sync::OnceCell::new(),
        })
    }
}

/// A request already queued for the writer (see [`Connection::submit`]).
pub(crate) struct PendingResponse {
    connection: Connection,
    session: Arc<Session>,
    correlation_id: u32,
    api_key: ApiKey,
    rx: oneshot::Receiver<Result<Response>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl PendingResponse {
    /// Waits for the answer, up to the deadline set when the request was submitted.
    pub(crate) async fn wait(self) -> Result<Response> {
        let addr = &self.connection.inner.addr;
        match tokio::time::timeout_at(self.deadline, self.rx).await {
            Ok(Ok(Ok(Response::Error(code)))) => Err(ClientError::broker(
                code,
                format!("{} request to {}", self.api_key.name(), addr),
            )),
            Ok(Ok(result)) => result,
            // The reader dropped our sender without answering: the session ended.
            Ok(Err(_)) => Err(self.connection.disconnected("connection closed")),
            Err(_) => {
                lock(&self.session.pending)
                    .waiting
                    .remove(&self.correlation_id);
                Err(ClientError::Timeout {
                    what: format!("{} request to {}", self.api_key.name(), addr),
                    after: self.timeout,
                })
            }
        }
    }
}

/// The addresses of a comma-separated list, trimmed, without empty entries.
pub(crate) fn split_addrs(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// Marks the session closed and fails every waiting request with `Disconnected`.
fn close_session(pending: &Mutex<Pending>, addr: &str, reason: String) {
    let waiting = {
        let mut p = lock(pending);
        if p.closed.is_some() {
            return;
        }
        let err = ClientError::Disconnected {
            addr: addr.to_string(),
            reason,
        };
        p.closed = Some(err);
        std::mem::take(&mut p.waiting)
    };
    let err = lock(pending).closed.clone();
    if let Some(err) = err {
        for (_, (_, _, reply)) in waiting {
            let _ = reply.send(Err(err.clone()));
        }
    }
}

/// Spawns a session's writer and reader tasks on its two halves.
fn start_session<R, W>(
    read: R,
    write: W,
    rx: mpsc::Receiver<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    addr: String,
    max_frame_bytes: usize,
    shutdown: Arc<tokio::sync::Notify>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(write_loop(
        write,
        rx,
        Arc::clone(&pending),
        addr.clone(),
        Arc::clone(&shutdown),
    ));
    tokio::spawn(read_loop(read, pending, addr, max_frame_bytes, shutdown));
}

async fn write_loop<W: AsyncWrite + Unpin>(
    write: W,
    mut rx: mpsc::Receiver<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    addr: String,
    shutdown: Arc<tokio::sync::Notify>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, write);
    let mut written = Vec::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.notified() => None,
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        let mut result = Ok(());
        // Write everything queued, then flush once: small requests share a syscall.
        while let Some(msg) = next.take() {
            // Small chunks gather in the buffer; large ones (record batches) go
            // straight to the socket (BufWriter bypasses its buffer for them).
            for chunk in &msg.frame {
                if let Err(e) = out.write_all(chunk).await {
                    result = Err(e);
                    break;
                }
            }
            if result.is_err() {
                if let Some(w) = msg.written {
                    written.push(w);
                }
                break;
            }
            if let Some(w) = msg.written {
                written.push(w);
            }
            next = rx.try_recv().ok();
        }
        if result.is_ok() {
            result = out.flush().await;
        }
        match result {
            Ok(()) => {
                for w in written.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                let reason = format!("write failed: {e}");
                let err = ClientError::Disconnected {
                    addr: addr.clone(),
                    reason: reason.clone(),
                };
                for w in written.drain(..) {
                    let _ = w.send(Err(err.clone()));
                }
                close_session(&pending, &addr, reason);
                break;
            }
        }
    }
    // Fail frames that never reached the socket.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Some(w) = msg.written {
            let _ = w.send(Err(ClientError::Disconnected {
                addr: addr.clone(),
                reason: "connection closed".into(),
            }));
        }
    }
    close_session(&pending, &addr, "connection closed".into());
    let _ = out.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    read: R,
    pending: Arc<Mutex<Pending>>,
    addr: String,
    max_frame_bytes: usize,
    shutdown: Arc<tokio::sync::Notify>,
) {
    let mut frames = FramedRead::with_capacity(read, FrameCodec::new(max_frame_bytes), 256 * 1024);
    let reason = loop {
        let frame = match frames.next().await {
            None => break "closed by broker".to_string(),
            Some(Err(e)) => break format!("read failed: {e}"),
            Some(Ok(frame)) => frame,
        };
        let Some(id) = frame.get(..4) else {
            break "response frame shorter than a correlation id".to_string();
        };
        let correlation_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        let waiter = lock(&pending).waiting.remove(&correlation_id);
        let Some((api_key, version, reply)) = waiter else {
            // Not waited for (timed out, acks = none, or a broker bug): not
            // decoded, not routed, and no reason to end the session.
            tracing::debug!(addr = %addr, correlation_id, "dropping a response no request is waiting for");
            continue;
        };
        match decode_response_version(api_key, version, frame) {
            Ok((_, response)) => {
                let _ = reply.send(Ok(response));
            }
            Err(e) => {
                let reason = format!("undecodable {} response: {e}", api_key.name());
                let _ = reply.send(Err(ClientError::from(e)));
                break reason;
            }
        }
    };
    tracing::debug!(addr = %addr, reason = %reason, "connection ended");
    close_session(&pending, &addr, reason);
    shutdown.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use futures::SinkExt;
    use sluice_protocol::wire::{decode_request, encode_response};
    use sluice_protocol::{MetadataRequest, MetadataResponse};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn config() -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            reconnect_backoff: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(50),
            ..ClientConfig::default()
        }
    }

    /// A metadata request whose single topic name tags it.
    fn tagged(tag: &str) -> Request {
        Request::Metadata(MetadataRequest {
            topics: vec![tag.to_string()],
        })
    }

    /// The metadata response echoing the tag (as a broker host name).
    fn echo(request: &Request) -> Response {
        let tag = match request {
            Request::Metadata(m) => m.topics.first().cloned().unwrap_or_default(),
            _ => String::new(),
        };
        Response::Metadata(MetadataResponse {
            brokers: vec![sluice_protocol::BrokerInfo {
                node_id: 0,
                host: tag,
                port: 1,
                rack: None,
            }],
            topics: Vec::new(),
            controller_id: sluice_protocol::NO_CONTROLLER,
            cluster_id: String::new(),
        })
    }

    fn tag_of(response: &Response) -> String {
        match response {
            Response::Metadata(m) => m.brokers[0].host.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    type Frames = FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>;

    /// Accepts one connection: its incoming frames and its write half.
    async fn accept(listener: &TcpListener) -> (Frames, tokio::net::tcp::OwnedWriteHalf) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, write) = stream.into_split();
        (FramedRead::new(read, FrameCodec::new(1 << 20)), write)
    }

    async fn read_request(frames: &mut Frames) -> (u32, Request) {
        let payload = frames.next().await.expect("frame").expect("valid frame");
        let (header, request) = decode_request(payload).expect("decodes");
        (header.correlation_id, request)
    }

    async fn respond(write: &mut tokio::net::tcp::OwnedWriteHalf, id: u32, response: &Response) {
        let mut buf = BytesMut::new();
        encode_response(id, response, &mut buf);
        write.write_all(&buf).await.expect("write response");
    }

    #[tokio::test]
    async fn pipelined_responses_may_arrive_out_of_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut frames, mut write) = accept(&listener).await;
            let a = read_request(&mut frames).await;
            let b = read_request(&mut frames).await;
            let c = read_request(&mut frames).await;
            // Answer in reverse order.
            for (id, req) in [c, b, a] {
                respond(&mut write, id, &echo(&req)).await;
            }
            // Keep the connection open until the client is done.
            let _ = frames.next().await;
        });
        let conn = Connection::new(addr, config());
        let (a, b, c) = (tagged("a"), tagged("b"), tagged("c"));
        let (ra, rb, rc) = tokio::join!(conn.request(&a), conn.request(&b), conn.request(&c));
        assert_eq!(tag_of(&ra.unwrap()), "a");
        assert_eq!(tag_of(&rb.unwrap()), "b");
        assert_eq!(tag_of(&rc.unwrap()), "c");
    }

    #[tokio::test]
    async fn in_flight_requests_fail_on_connection_loss_and_the_next_one_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            // First connection: read two requests, then drop the connection unanswered.
            let (mut frames, write) = accept(&listener).await;
            let _ = read_request(&mut frames).await;
            let _ = read_request(&mut frames).await;
            drop(frames);
            drop(write);
            // Second connection: answer normally.
            let (mut frames, mut write) = accept(&listener).await;
            while let Some(Ok(payload)) = frames.next().await {
                let (h, req) = decode_request(payload).unwrap();
                respond(&mut write, h.correlation_id, &echo(&req)).await;
            }
        });
        let conn = Connection::new(addr, config());
        let (x, y) = (tagged("x"), tagged("y"));
        let (r1, r2) = tokio::join!(conn.request(&x), conn.request(&y));
        for r in [r1, r2] {
            let e = r.expect_err("connection was dropped");
            assert!(matches!(e, ClientError::Disconnected { .. }), "{e:?}");
            assert!(e.is_retriable());
        }
        let r = conn.request(&tagged("z")).await.expect("reconnected");
        assert_eq!(tag_of(&r), "z");
    }

    #[tokio::test]
    async fn a_request_times_out_and_a_late_answer_is_ignored() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut frames, mut write) = accept(&listener).await;
            let (slow_id, slow) = read_request(&mut frames).await;
            let (fast_id, fast) = read_request(&mut frames).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            respond(&mut write, slow_id, &echo(&slow)).await;
            respond(&mut write, fast_id, &echo(&fast)).await;
            let _ = frames.next().await;
        });
        let conn = Connection::new(addr, config());
        let (slow_req, fast_req) = (tagged("slow"), tagged("fast"));
        let slow = conn.request_with_timeout(&slow_req, Duration::from_millis(100));
        let fast = conn.request(&fast_req);
        let (slow, fast) = tokio::join!(slow, fast);
        assert!(matches!(slow, Err(ClientError::Timeout { .. })), "{slow:?}");
        assert_eq!(tag_of(&fast.unwrap()), "fast");
    }

    #[tokio::test]
    async fn unreachable_broker_fails_fast_within_the_backoff() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let conn = Connection::new(addr.clone(), config());
        let e = conn.request(&tagged("a")).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Unreachable { addr: a, .. } if *a == addr),
            "{e:?}"
        );
        // Within the backoff: the same error, no new dial.
        let started = std::time::Instant::now();
        let e2 = conn.request(&tagged("b")).await.unwrap_err();
        assert!(matches!(e2, ClientError::Unreachable { .. }));
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_list_is_tried_in_turn_and_the_next_try_skips_what_failed() {
        let dead = |_: ()| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let (d1, d2) = (dead(()), dead(()));
        // All dead: each failure moves the starting point on, wrapping around.
        let conn = Connection::new(format!("{d1},{d2}"), config());
        assert!(conn.connect().await.is_err());
        assert_eq!(conn.inner.preferred.load(Ordering::Relaxed), 0);
        assert_eq!(conn.connected_addr(), None);
        // A live one after a dead one: reached, and remembered.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
                    while let Some(Ok(payload)) = frames.next().await {
                        let (header, request) = decode_request(payload).expect("decodes");
                        respond(&mut write, header.correlation_id, &echo(&request)).await;
                    }
                });
            }
        });
        let conn = Connection::new(format!("{d1}, {live} ,{d2}"), config());
        assert_eq!(tag_of(&conn.request(&tagged("x")).await.unwrap()), "x");
        assert_eq!(conn.connected_addr().as_deref(), Some(live.as_str()));
        assert_eq!(conn.inner.preferred.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_garbage_response_fails_the_request_and_closes_the_session() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut frames, write) = accept(&listener).await;
            let (id, _) = read_request(&mut frames).await;
            let mut sink = tokio_util::codec::FramedWrite::new(write, FrameCodec::new(1 << 20));
            // Right correlation id, then a body that is not a metadata response.
            let mut payload = BytesMut::new();
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&[0, 0, 0xff, 0xff, 0xff, 0xff, 1]);
            let _ = sink.send(payload.freeze()).await;
            let _ = frames.next().await;
        });
        let conn = Connection::new(addr, config());
        let e = conn.request(&tagged("a")).await.unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_response_with_an_unknown_correlation_id_is_dropped_and_the_session_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            // Only one connection is accepted: a reconnect would leave the
            // second request unanswered.
            let (mut frames, mut write) = accept(&listener).await;
            let (id, req) = read_request(&mut frames).await;
            let mut junk = BytesMut::new();
            // An id nobody asked for, with a body that decodes as nothing...
            junk.extend_from_slice(&9u32.to_be_bytes());
            junk.extend_from_slice(&(id + 1000).to_be_bytes());
            junk.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0xff]);
            // ... and one with a well-formed answer for another request.
            encode_response(id + 1, &echo(&tagged("stray")), &mut junk);
            write.write_all(&junk).await.unwrap();
            respond(&mut write, id, &echo(&req)).await;
            let (id, req) = read_request(&mut frames).await;
            respond(&mut write, id, &echo(&req)).await;
            let _ = frames.next().await;
        });
        let conn = Connection::new(addr, config());
        let first = conn.request(&tagged("first")).await.expect("answered");
        assert_eq!(tag_of(&first), "first");
        // The stray answer (id + 1) was not kept for this request, which gets that id.
        let second = conn.request(&tagged("second")).await.expect("same session");
        assert_eq!(tag_of(&second), "second");
        drop(conn);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn an_answer_to_an_acks_none_produce_is_dropped() {
        use sluice_protocol::{
            Acks, ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse,
            ProduceTopic, ProduceTopicResponse,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut frames, mut write) = accept(&listener).await;
            // A broker that (against the spec) answers an acks = none produce.
            let (id, req) = read_request(&mut frames).await;
            assert!(matches!(req, Request::Produce(_)), "{req:?}");
            let answer = Response::Produce(ProduceResponse {
                topics: vec![ProduceTopicResponse {
                    name: "t".into(),
                    partitions: vec![ProducePartitionResponse {
                        partition: 0,
                        error: sluice_protocol::ErrorCode::CorruptMessage,
                        base_offset: 0,
                        last_offset: 0,
                    }],
                }],
            });
            respond(&mut write, id, &answer).await;
            let (id, req) = read_request(&mut frames).await;
            respond(&mut write, id, &echo(&req)).await;
            let _ = frames.next().await;
        });
        let conn = Connection::new(addr, config());
        let mut batch = sluice_protocol::batch::RecordBatchBuilder::new();
        batch.push(0, None, Some(b"v"), &[]);
        let produce = Request::Produce(ProduceRequest {
            acks: Acks::None,
            timeout_ms: 0,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: batch.finish(),
                }],
            }],
        });
        conn.send_only(&produce).await.expect("written");
        let r = conn.request(&tagged("after")).await.expect("answered");
        assert_eq!(tag_of(&r), "after");
        drop(conn);
        server.await.expect("server");
    }

    /// A fake broker listing Metadata `0..=max`: answers each request in the
    /// version it came with and logs `(api name, version)` of every request.
    async fn versioned_broker(
        listener: TcpListener,
        max: u16,
        log: Arc<Mutex<Vec<(&'static str, u16)>>>,
    ) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
                while let Some(Ok(payload)) = frames.next().await {
                    let (h, req) = decode_request(payload).expect("decodes");
                    lock(&log).push((req.api_key().name(), h.api_version));
                    let resp = match &req {
                        Request::ApiVersions => {
                            Response::ApiVersions(sluice_protocol::ApiVersionsResponse {
                                apis: vec![sluice_protocol::ApiVersionRange {
                                    api_key: ApiKey::Metadata as u16,
                                    min_version: 0,
                                    max_version: max,
                                }],
                            })
                        }
                        other => {
                            let mut r = echo(other);
                            if let Response::Metadata(m) = &mut r {
                                m.controller_id = 5;
                                m.cluster_id = "c".into();
                                m.brokers[0].rack = Some("r".into());
                            }
                            r
                        }
                    };
                    let mut buf = BytesMut::new();
                    sluice_protocol::wire::encode_response_version(
                        h.correlation_id,
                        h.api_version,
                        &resp,
                        &mut buf,
                    );
                    if write.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn negotiated_requests_use_the_highest_common_version_once_asked() {
        for (max, expect) in [(1u16, 1u16), (0, 0), (7, 1)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let log = Arc::new(Mutex::new(Vec::new()));
            let server = tokio::spawn(versioned_broker(listener, max, log.clone()));
            let conn = Connection::new(addr, config());
            assert_eq!(conn.api_version(ApiKey::Metadata).await.unwrap(), expect);
            for tag in ["a", "b"] {
                let Response::Metadata(m) = conn.request_negotiated(&tagged(tag)).await.unwrap()
                else {
                    panic!("not metadata")
                };
                assert_eq!(m.brokers[0].host, tag);
                // v1 carries the cluster fields; v0 their "unknown" values.
                if expect == 1 {
                    assert_eq!((m.controller_id, m.cluster_id.as_str()), (5, "c"));
                    assert_eq!(m.brokers[0].rack.as_deref(), Some("r"));
                } else {
                    assert_eq!(m.controller_id, sluice_protocol::NO_CONTROLLER);
                    assert_eq!(m.brokers[0].rack, None);
                }
            }
            // Plain `request` stays version 0; single-version apis are never negotiated.
            conn.request(&tagged("c")).await.unwrap();
            assert_eq!(conn.api_version(ApiKey::Fetch).await.unwrap(), 0);
            let got = lock(&log).clone();
            assert_eq!(
                got,
                vec![
                    ("ApiVersions", 0),
                    ("Metadata", expect),
                    ("Metadata", expect),
                    ("Metadata", 0),
                ],
                "broker max {max}: ApiVersions asked once per session"
            );
            server.abort();
        }
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use crate::config::ClientTls;
    use bytes::BytesMut;
    use futures::StreamExt;
    use sluice_protocol::wire::{decode_request, encode_response};
    use sluice_protocol::{MetadataRequest, MetadataResponse};
    use sluice_tls::testing::Pki;
    use sluice_tls::{ClientAuth, ServerTls, TlsServerFiles};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A TLS fake broker: answers each Metadata request with its topic name
    /// as the host of the one broker it lists.
    async fn tls_broker(tls: ServerTls) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = tls.acceptor();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (read, mut write) = tokio::io::split(stream);
                    let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
                    while let Some(Ok(payload)) = frames.next().await {
                        let (h, req) = decode_request(payload).unwrap();
                        let tag = match req {
                            Request::Metadata(m) => m.topics.concat(),
                            _ => String::new(),
                        };
                        let resp = Response::Metadata(MetadataResponse {
                            brokers: vec![sluice_protocol::BrokerInfo {
                                node_id: 0,
                                host: tag,
                                port: 1,
                                rack: None,
                            }],
                            topics: Vec::new(),
                            controller_id: sluice_protocol::NO_CONTROLLER,
                            cluster_id: String::new(),
                        });
                        let mut buf = BytesMut::new();
                        encode_response(h.correlation_id, &resp, &mut buf);
                        if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn tagged(tag: &str) -> Request {
        Request::Metadata(MetadataRequest {
            topics: vec![tag.to_string()],
        })
    }

    fn host_of(r: &Response) -> &str {
        match r {
            Response::Metadata(m) => &m.brokers[0].host,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn config(tls: ClientTls) -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            reconnect_backoff: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(50),
            tls: Some(tls),
            ..ClientConfig::default()
        }
    }

    #[tokio::test]
    async fn requests_pipeline_over_tls_and_certificate_errors_are_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let leaf = pki.server("broker", "broker");
        let tls = ServerTls::load(TlsServerFiles {
            cert: leaf.cert,
            key: leaf.key,
            ca: Some(pki.ca_file.clone()),
            client_auth: ClientAuth::None,
        })
        .unwrap();
        let addr = tls_broker(tls).await;

        let trusted = ClientTls::from_files(&pki.ca_file, None).unwrap();
        let conn = Connection::new(addr.clone(), config(trusted));
        let requests: Vec<Request> = (0..50).map(|i| tagged(&format!("t{i}"))).collect();
        let answers = futures::future::join_all(requests.iter().map(|r| conn.request(r))).await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(host_of(&a.unwrap()), format!("t{i}"));
        }

        // A CA that did not sign the broker's certificate.
        let other = Pki::new(dir.path(), "other");
        let untrusted = ClientTls::from_files(&other.ca_file, None).unwrap();
        let e = Connection::new(addr.clone(), config(untrusted))
            .request(&tagged("x"))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
        assert!(!e.is_retriable(), "{e}");
        assert!(e.to_string().contains("TLS handshake with"), "{e}");

        // The right CA, but a name the certificate does not hold.
        let misnamed = ClientTls::from_files(&pki.ca_file, None)
            .unwrap()
            .with_server_name("elsewhere.example");
        let e = Connection::new(addr, config(misnamed))
            .request(&tagged("x"))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
    }

    /// TLS to a port that does not speak it: the handshake fails (the peer
    /// closes or answers garbage) and the error says TLS.
    #[tokio::test]
    async fn tls_to_a_plaintext_port_fails_as_a_tls_error() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "main");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                // What a plaintext broker does with a ClientHello: reads a
                // frame length far over the limit and closes.
                let mut b = [0u8; 5];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut b).await;
                drop(s);
            }
        });
        let tls = ClientTls::from_files(&pki.ca_file, None).unwrap();
        let e = Connection::new(addr, config(tls))
            .request(&tagged("x"))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
    }
}
