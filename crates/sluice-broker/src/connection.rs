//! The native-protocol front end: decodes each frame, runs its handler, and
//! encodes the answer; the connection itself (framing, limits, timeouts,
//! backpressure, shutdown) is the generic [`crate::driver`].
//!
//! Handlers run inline on the read path, which keeps produce order per
//! connection. Handlers that must wait (durable produce, parked fetch)
//! return a future the driver spawns, so the reader keeps serving; native
//! responses may therefore go out of order and clients match correlation ids.
//!
//! A malformed header closes the connection with one log line; an unknown
//! api or version, or a malformed body, gets an error response and the
//! connection stays open. A produce whose `acks` byte is 0 never gets a
//! response, not even an error for a malformed body (the spec promises
//! none; the client would not expect its correlation id).
//!
//! Security (`native_security`): on a SASL listener only ApiVersions,
//! SaslHandshake and SaslAuthenticate are served before authentication;
//! anything else is answered `ILLEGAL_SASL_STATE` and the connection then
//! closes. A failed login is answered after the failed-login delay, then
//! the connection closes. With authorization on, each request is checked
//! against the ACLs before its handler runs (refused: a header-level
//! `*_AUTHORIZATION_FAILED`, nothing applied), and Metadata, ListGroups and
//! OffsetFetch answers are trimmed to what the principal may describe.
//! With quotas configured, each request, the bytes of each Produce frame and
//! of each Fetch answer are charged to the principal and client id, and the
//! connection is muted (no request read) for the throttle time.
//!
//! At most [`MAX_DEFERRED`] deferred requests run per connection. Without the
//! cap a client could pipeline millions of tiny parked fetches (a few dozen
//! bytes each, parked up to `max_wait_ms`) and grow the broker's task count
//! and memory without bound (Kafka bounds this with `queued.max.requests`
//! and one in-flight request per connection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::Histogram;
use sluice_auth::quota::QuotaKind;
use sluice_protocol::wire;
use sluice_protocol::{ApiKey, ErrorCode, Request, RequestHeader, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use crate::driver::{drive, Action, DriverConfig, FrontEnd, RequestMemory};
use crate::error::chain;
use crate::handler::{dispatch, Context, Outcome};
use crate::metrics::Metrics;
use crate::native_security::{self as ns, Authenticated, ConnAuth, ResponseFilter};
use crate::slow_log::{SlowLog, SlowRequest};

pub use crate::driver::write_all_chunks;

/// Deferred requests (parked fetches, durable produces, parked heartbeats,
/// commits waiting for their fsync) in flight per connection; see the module docs.
pub const MAX_DEFERRED: usize = 1024;

/// The native protocol as a [`FrontEnd`].
struct Native {
    ctx: Context,
    metrics: Metrics,
    peer: SocketAddr,
    auth: ConnAuth,
    slow: SlowLog,
    /// The connection span's `client_id` is recorded (from the first request that has one).
    named: bool,
}

/// Records a finished request: its latency in `timer` (time `parked` by
/// design included, as clients see it) and, if it was slow, a `slow
/// request` line (see [`crate::slow_log`]).
fn finished(
    timer: &Histogram,
    slow: SlowLog,
    started: Instant,
    parked: Duration,
    peer: SocketAddr,
    header: &RequestHeader,
) {
    let elapsed = started.elapsed();
    timer.observe(elapsed.as_secs_f64());
    slow.check(elapsed, parked, || SlowRequest {
        protocol: "native",
        api: ApiKey::from_u16(header.api_key).map_or("unknown", ApiKey::name),
        api_key: i32::from(header.api_key),
        api_version: i32::from(header.api_version),
        correlation_id: i64::from(header.correlation_id),
        client_id: &header.client_id,
        peer,
    });
}

/// The response frame in the body layout of the request's `version`.
fn encode(correlation_id: u32, version: u16, resp: &Response) -> Vec<Bytes> {
    let mut chunks = Vec::with_capacity(4);
    wire::encode_response_chunks_version(correlation_id, version, resp, &mut chunks);
    chunks
}

impl Native {
    /// Before authentication on a SASL listener: ApiVersions and the SASL
    /// requests; `Some` is the action for this request when it is one of
    /// those handled here, or one that is refused.
    fn unauthenticated(&mut self, correlation_id: u32, request: &Request) -> Option<Action> {
        let sec = Arc::clone(self.ctx.broker.security());
        match request {
            Request::ApiVersions => None,
            Request::SaslHandshake(r) => {
                let resp = ns::sasl_handshake(&sec, &mut self.auth, &r.mechanism);
                Some(Action::Respond(encode(correlation_id, 0, &resp)))
            }
            Request::SaslAuthenticate(r) => {
                match ns::sasl_authenticate(&sec, self.peer.ip(), &mut self.auth, &r.auth_bytes) {
                    Authenticated::Now(resp) => {
                        Some(Action::Respond(encode(correlation_id, 0, &resp)))
                    }
                    Authenticated::Delayed(delay, resp) => {
                        Some(Action::Deferred(Box::pin(async move {
                            crate::slow_log::parked(tokio::time::sleep(delay)).await;
                            Some(encode(correlation_id, 0, &resp))
                        })))
                    }
                }
            }
            other => {
                self.auth.close = Some(format!(
                    "{} before SASL authentication",
                    other.api_key().name()
                ));
                Some(Action::Respond(encode(
                    correlation_id,
                    0,
                    &Response::Error(ErrorCode::IllegalSaslState),
                )))
            }
        }
    }
}

impl FrontEnd for Native {
    fn on_frame(&mut self, payload: Bytes) -> Action {
        let started = Instant::now();
        if let Some(reason) = &self.auth.close {
            return Action::Close(reason.clone());
        }
        if matches!(self.auth.state, ns::SaslState::Failed) {
            return Action::Close("request after a failed authentication".into());
        }
        let acks_none = wire::produce_acks_byte(&payload) == Some(0);
        let frame_bytes = payload.len();
        let (header, request) = match wire::decode_request_with_limits(
            payload,
            self.ctx.broker.request_limits(),
        ) {
            Ok(ok) => ok,
            Err(e) => {
                return match e.header {
                    Some(h) => {
                        tracing::debug!(peer = %self.peer, client_id = %h.client_id, api_key = h.api_key, version = h.api_version, code = %e.code, error = %chain(&e.source), "rejecting request");
                        finished(
                            &self.metrics.request_timer(ApiKey::from_u16(h.api_key)),
                            self.slow,
                            started,
                            Duration::ZERO,
                            self.peer,
                            &h,
                        );
                        if !self.auth.authenticated() {
                            // Before authentication nothing but the SASL
                            // requests is served: answer, then close.
                            self.auth.close = Some(format!(
                                "malformed request before SASL authentication: {}",
                                chain(&e.source)
                            ));
                        }
                        if acks_none {
                            Action::Nothing
                        } else {
                            Action::Respond(encode(h.correlation_id, 0, &Response::Error(e.code)))
                        }
                    }
                    None => {
                        Action::Close(format!("malformed request header: {}", chain(&e.source)))
                    }
                };
            }
        };
        if !self.named && !header.client_id.is_empty() {
            // Once per connection: every later line in its span names the client.
            tracing::Span::current().record("client_id", header.client_id.as_str());
            self.named = true;
        }
        let timer = self.metrics.request_timer(ApiKey::from_u16(header.api_key));
        let (slow, peer) = (self.slow, self.peer);
        let correlation_id = header.correlation_id;
        let version = header.api_version;
        if self.auth.sasl {
            let early = if self.auth.authenticated() {
                // A second exchange on an authenticated connection.
                matches!(
                    request,
                    Request::SaslHandshake(_) | Request::SaslAuthenticate(_)
                )
                .then(|| {
                    self.auth.close = Some("SASL request after authentication".into());
                    Action::Respond(encode(
                        correlation_id,
                        0,
                        &Response::Error(ErrorCode::IllegalSaslState),
                    ))
                })
            } else {
                self.unauthenticated(correlation_id, &request)
            };
            if let Some(action) = early {
                // A failed login's deliberate delay (a deferred answer) is not timed.
                if !matches!(action, Action::Deferred(_)) {
                    finished(&timer, slow, started, Duration::ZERO, peer, &header);
                }
                return action;
            }
        }
        let sec = Arc::clone(self.ctx.broker.security());
        let principal = Arc::clone(&self.auth.principal);
        let host = self.peer.ip();
        if let Some(code) = ns::check(&self.ctx, &principal, host, &request) {
            finished(&timer, slow, started, Duration::ZERO, peer, &header);
            return if acks_none {
                Action::Nothing
            } else {
                Action::Respond(encode(correlation_id, 0, &Response::Error(code)))
            };
        }
        let filter = ResponseFilter::for_request(&sec, &principal, host, &request);
        // Quotas: the request and a produce's bytes now, a fetch's answer
        // bytes once encoded; over quota, the connection reads nothing more
        // for the throttle time.
        let quotas = sec.quotas_active();
        let is_fetch = matches!(request, Request::Fetch(_));
        if quotas {
            let client = &header.client_id;
            let mut t = sec.record_quota(&principal, client, QuotaKind::Request, 1);
            if matches!(request, Request::Produce(_)) {
                let bytes = u64::try_from(frame_bytes).unwrap_or(u64::MAX);
                t = t.max(sec.record_quota(&principal, client, QuotaKind::Produce, bytes));
            }
            ns::mute(&self.auth.muted_until, t);
        }
        let charge = (quotas && is_fetch).then(|| {
            let (sec, principal, client, muted) = (
                Arc::clone(&sec),
                Arc::clone(&principal),
                header.client_id.clone(),
                Arc::clone(&self.auth.muted_until),
            );
            move |chunks: &Vec<Bytes>| {
                let bytes: usize = chunks.iter().map(Bytes::len).sum();
                let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
                ns::mute(
                    &muted,
                    sec.record_quota(&principal, &client, QuotaKind::Fetch, bytes),
                );
            }
        });
        let finish = move |resp: Response| {
            let resp = match &filter {
                Some(f) => f.apply(&sec, &principal, host, resp),
                None => resp,
            };
            let chunks = encode(correlation_id, version, &resp);
            if let Some(charge) = &charge {
                charge(&chunks);
            }
            chunks
        };
        match dispatch(&self.ctx, &header, request) {
            Outcome::Respond(resp) => {
                let chunks = finish(resp);
                finished(&timer, slow, started, Duration::ZERO, peer, &header);
                Action::Respond(chunks)
            }
            Outcome::NoResponse => {
                finished(&timer, slow, started, Duration::ZERO, peer, &header);
                Action::Nothing
            }
            Outcome::Deferred(fut) => Action::Deferred(Box::pin(async move {
                let (resp, parked) = crate::slow_log::measure(fut).await;
                let chunks = resp.map(finish);
                finished(&timer, slow, started, parked, peer, &header);
                chunks
            })),
        }
    }

    fn muted_until(&self) -> Option<std::time::Instant> {
        self.auth.muted_until()
    }

    fn close_requested(&self) -> Option<String> {
        self.auth.close.clone()
    }
}

/// Serves one native-protocol connection until the client closes it, it
/// misbehaves or times out, or the broker shuts down (then in-flight
/// deferred responses are still sent). `stream` is plain TCP or TLS (after
/// its handshake; `ctx.conn` says what it established).
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Context,
    config: DriverConfig,
    memory: RequestMemory,
    tracker: TaskTracker,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A per-connection token: cancelled when the broker shuts down or when
    // this connection's reader ends, so parked fetches of a departed client
    // answer (or are dropped) at once instead of lingering until max_wait.
    let ctx = Context {
        shutdown: ctx.shutdown.child_token(),
        ..ctx
    };
    let shutdown = ctx.shutdown.clone();
    let front_end = Native {
        metrics: ctx.broker.metrics().clone(),
        slow: ctx.broker.slow_log(),
        named: false,
        auth: ConnAuth::new(&ctx),
        ctx,
        peer,
    };
    drive(stream, peer, front_end, config, memory, shutdown, tracker).await
}

/// The native listener's driver settings for a broker config.
pub fn driver_config(config: &crate::config::BrokerConfig) -> DriverConfig {
    DriverConfig {
        max_frame_bytes: config.max_frame_bytes,
        idle_timeout: config.connections_max_idle,
        read_timeout: config.request_read_timeout,
        max_deferred: MAX_DEFERRED,
        ordered: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use std::io::IoSlice;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context as TaskCx, Poll};
    use tokio::io::{AsyncWrite, AsyncWriteExt};

    fn test_driver() -> DriverConfig {
        DriverConfig {
            max_frame_bytes: sluice_protocol::DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: std::time::Duration::from_secs(600),
            read_timeout: std::time::Duration::from_secs(30),
            max_deferred: MAX_DEFERRED,
            ordered: false,
        }
    }

    /// A writer that accepts at most 3 bytes per call, to exercise partial writes.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut TaskCx<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(3);
            self.get_mut().0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut TaskCx<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let me = self.get_mut();
            let mut n = 0;
            for b in bufs {
                for &byte in b.iter() {
                    if n == 3 {
                        return Poll::Ready(Ok(n));
                    }
                    me.0.push(byte);
                    n += 1;
                }
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A client that pipelines more parked fetches than [`MAX_DEFERRED`]
    /// never has more than that many parked; the rest are read only as slots
    /// free up, and every request is still answered.
    #[tokio::test]
    async fn deferred_requests_per_connection_are_capped() {
        use sluice_protocol::batch::RecordBatchBuilder;
        use sluice_protocol::{FetchPartition, FetchRequest, FetchTopic, Request};
        use std::time::Duration;
        use tokio::io::AsyncReadExt;

        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctx = crate::handler::tests::test_context(dir.path(), addr);
        let broker = Arc::clone(&ctx.broker);
        let shutdown = ctx.shutdown.clone();
        broker.create_topic("t", 1, &[]).unwrap();
        let tracker = TaskTracker::new();
        let server = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            serve(
                stream,
                peer,
                ctx,
                test_driver(),
                RequestMemory::new(1 << 30),
                tracker,
            )
            .await;
        });

        let total = MAX_DEFERRED + 50;
        let fetch = Request::Fetch(FetchRequest {
            max_wait_ms: 60_000,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: "t".into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    max_bytes: 1 << 20,
                }],
            }],
        });
        let mut out = BytesMut::new();
        for i in 0..total {
            wire::encode_request(i as u32, "c", &fetch, &mut out);
        }
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = client.into_split();
        wr.write_all(&out).await.unwrap();

        let parked = &broker.metrics().parked_fetches;
        let mut rounds = 0;
        while parked.get() < MAX_DEFERRED as i64 && rounds < 500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rounds += 1;
        }
        assert_eq!(parked.get(), MAX_DEFERRED as i64);
        // Give the reader time to (wrongly) park more.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(parked.get(), MAX_DEFERRED as i64, "cap exceeded");

        // Data arrives: parked fetches answer, the rest are read and answered.
        let mut b = RecordBatchBuilder::new();
        b.push(1, None, Some(b"v"), &[]);
        broker
            .produce("t", 0, &b.finish(), crate::Acks::Leader, Duration::ZERO)
            .await
            .unwrap();
        let read_all = async {
            for _ in 0..total {
                let len = rd.read_u32().await.unwrap() as usize;
                let mut payload = vec![0u8; len];
                rd.read_exact(&mut payload).await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read_all)
            .await
            .expect("every pipelined fetch is answered");
        drop(wr);
        shutdown.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn vectored_writes_survive_partial_writes() {
        let mut chunks = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cdefg"),
            Bytes::from_static(b"h"),
            Bytes::from((0..200u8).collect::<Vec<_>>()),
        ];
        let mut expected = b"abcdefgh".to_vec();
        expected.extend(0..200u8);
        let mut w = Trickle(Vec::new());
        write_all_chunks(&mut w, &mut chunks).await.unwrap();
        assert_eq!(w.0, expected);
        assert!(chunks.is_empty());
    }
}

/// The connection limits of issue 9: idle and stalled connections, the
/// broker-wide request-memory cap, silent acks = 0, deleted topics.
#[cfg(test)]
mod limit_tests {
    use super::*;
    use bytes::BytesMut;
    use sluice_protocol::{
        Acks, ErrorCode, FetchPartition, FetchRequest, FetchTopic, ProduceRequest, Request,
    };
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    struct TestServer {
        addr: SocketAddr,
        ctx: Context,
        memory: RequestMemory,
        _dir: tempfile::TempDir,
    }

    /// Serves every accepted connection with `config` and `memory`.
    async fn start(config: DriverConfig, memory: RequestMemory) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctx = crate::handler::tests::test_context(dir.path(), addr);
        let (c, m) = (ctx.clone(), memory.clone());
        tokio::spawn(async move {
            let tracker = TaskTracker::new();
            while let Ok((stream, peer)) = listener.accept().await {
                let (c, m, t) = (c.clone(), m.clone(), tracker.clone());
                tokio::spawn(serve(stream, peer, c, config, m, t));
            }
        });
        TestServer {
            addr,
            ctx,
            memory,
            _dir: dir,
        }
    }

    fn config(idle_ms: u64, read_ms: u64) -> DriverConfig {
        DriverConfig {
            max_frame_bytes: sluice_protocol::DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: Duration::from_millis(idle_ms),
            read_timeout: Duration::from_millis(read_ms),
            max_deferred: MAX_DEFERRED,
            ordered: false,
        }
    }

    fn frame(correlation_id: u32, req: &Request) -> BytesMut {
        let mut out = BytesMut::new();
        wire::encode_request(correlation_id, "t", req, &mut out);
        out
    }

    /// Reads one response frame: its correlation id and decoded body.
    async fn response(s: &mut TcpStream, key: ApiKey) -> (u32, Response) {
        let len = s.read_u32().await.unwrap() as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        wire::decode_response(key, Bytes::from(payload)).unwrap()
    }

    /// Waits (bounded) for the server to close `s`; true when it did.
    async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(limit, s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    fn fetch(topic: &str, max_wait_ms: u32) -> Request {
        Request::Fetch(FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: topic.into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    max_bytes: 1 << 20,
                }],
            }],
        })
    }

    #[tokio::test]
    async fn idle_connections_are_closed_but_not_while_a_request_is_parked() {
        let srv = start(config(300, 30_000), RequestMemory::new(1 << 30)).await;
        srv.ctx.broker.create_topic("t", 1, &[]).unwrap();
        // Never sends anything: closed after the idle timeout.
        let mut idle = TcpStream::connect(srv.addr).await.unwrap();
        assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
        // Served once, then idle: closed too.
        let mut once = TcpStream::connect(srv.addr).await.unwrap();
        once.write_all(&frame(1, &Request::ApiVersions))
            .await
            .unwrap();
        assert_eq!(response(&mut once, ApiKey::ApiVersions).await.0, 1);
        assert!(closed_within(&mut once, Duration::from_secs(10)).await);
        // A fetch parked for 1.5 s (five idle timeouts) is answered, not cut off.
        let mut parked = TcpStream::connect(srv.addr).await.unwrap();
        parked
            .write_all(&frame(7, &fetch("t", 1500)))
            .await
            .unwrap();
        let (cid, resp) = tokio::time::timeout(
            Duration::from_secs(10),
            response(&mut parked, ApiKey::Fetch),
        )
        .await
        .expect("the parked fetch was answered");
        assert_eq!(cid, 7);
        let Response::Fetch(f) = resp else {
            panic!("not a fetch response: {resp:?}")
        };
        assert_eq!(f.topics[0].partitions[0].error, ErrorCode::None);
        assert!(closed_within(&mut parked, Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn a_stalled_partial_frame_closes_the_connection() {
        let srv = start(config(600_000, 300), RequestMemory::new(1 << 30)).await;
        // Half a length prefix.
        let mut a = TcpStream::connect(srv.addr).await.unwrap();
        a.write_all(&[0, 0]).await.unwrap();
        assert!(closed_within(&mut a, Duration::from_secs(10)).await);
        // A prefix promising 1000 bytes, and 10 of them.
        let mut b = TcpStream::connect(srv.addr).await.unwrap();
        b.write_all(&1000u32.to_be_bytes()).await.unwrap();
        b.write_all(&[0u8; 10]).await.unwrap();
        assert!(closed_within(&mut b, Duration::from_secs(10)).await);
        // Its reservation was given back.
        assert_eq!(srv.memory.in_use(), 0);
        // A healthy connection is untouched meanwhile.
        let mut c = TcpStream::connect(srv.addr).await.unwrap();
        c.write_all(&frame(3, &Request::ApiVersions)).await.unwrap();
        assert_eq!(response(&mut c, ApiKey::ApiVersions).await.0, 3);
    }

    #[tokio::test]
    async fn request_memory_cap_pauses_readers_until_memory_frees() {
        let budget = 1 << 20;
        let srv = start(config(600_000, 60_000), RequestMemory::new(budget)).await;
        // A frame as large as the whole budget, sent only in part: it holds the budget.
        let mut hog = TcpStream::connect(srv.addr).await.unwrap();
        hog.write_all(&((budget - 4) as u32).to_be_bytes())
            .await
            .unwrap();
        hog.write_all(&[0u8; 100]).await.unwrap();
        let mut rounds = 0;
        while srv.memory.in_use() < budget && rounds < 500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rounds += 1;
        }
        assert_eq!(srv.memory.in_use(), budget);
        // Another client's small request is not served while the budget is used up.
        let mut other = TcpStream::connect(srv.addr).await.unwrap();
        other
            .write_all(&frame(5, &Request::ApiVersions))
            .await
            .unwrap();
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            response(&mut other, ApiKey::ApiVersions),
        )
        .await;
        assert!(early.is_err(), "served past the memory cap");
        // The hog goes away: its reservation frees and the other is served.
        drop(hog);
        let (cid, _) = tokio::time::timeout(
            Duration::from_secs(10),
            response(&mut other, ApiKey::ApiVersions),
        )
        .await
        .expect("served once memory freed");
        assert_eq!(cid, 5);
        assert_eq!(srv.memory.in_use(), 0);
    }

    #[tokio::test]
    async fn malformed_acks_none_produce_gets_no_response() {
        let srv = start(config(600_000, 30_000), RequestMemory::new(1 << 30)).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        for (cid, acks) in [(1u32, Acks::None), (2, Acks::Leader)] {
            let req = Request::Produce(ProduceRequest {
                acks,
                timeout_ms: 0,
                topics: Vec::new(),
            });
            // Break the body: the topic count promises one topic that is not there.
            let mut f = frame(cid, &req);
            let n = f.len();
            f[n - 1] = 1;
            s.write_all(&f).await.unwrap();
        }
        s.write_all(&frame(3, &Request::ApiVersions)).await.unwrap();
        // The acks = 1 error comes back; the acks = 0 one never does.
        let (cid, resp) = response(&mut s, ApiKey::Produce).await;
        assert_eq!(cid, 2);
        assert_eq!(resp, Response::Error(ErrorCode::InvalidRequest));
        assert_eq!(response(&mut s, ApiKey::ApiVersions).await.0, 3);
    }

    #[tokio::test]
    async fn a_parked_fetch_on_a_deleted_topic_answers_at_once() {
        let srv = start(config(600_000, 30_000), RequestMemory::new(1 << 30)).await;
        srv.ctx.broker.create_topic("gone", 1, &[]).unwrap();
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(&frame(9, &fetch("gone", 600_000)))
            .await
            .unwrap();
        let parked = &srv.ctx.broker.metrics().parked_fetches;
        let mut rounds = 0;
        while parked.get() < 1 && rounds < 500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rounds += 1;
        }
        assert_eq!(parked.get(), 1);
        let b = Arc::clone(&srv.ctx.broker);
        tokio::task::spawn_blocking(move || b.delete_topic("gone"))
            .await
            .unwrap()
            .unwrap();
        let (cid, resp) =
            tokio::time::timeout(Duration::from_secs(10), response(&mut s, ApiKey::Fetch))
                .await
                .expect("answered when the topic was deleted, not at max_wait");
        assert_eq!(cid, 9);
        let Response::Fetch(f) = resp else {
            panic!("not a fetch response: {resp:?}")
        };
        assert_eq!(
            f.topics[0].partitions[0].error,
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(parked.get(), 0);
    }
}
