//! One connection driver for any length-prefixed protocol.
//!
//! Both the native protocol and (later) the Kafka wire protocol frame every
//! request as a `u32` big-endian length and a payload. The driver owns
//! everything about a connection that does not depend on what is inside a
//! frame; a [`FrontEnd`] turns each payload into an [`Action`].
//!
//! - **Framing and limits.** A length above `max_frame_bytes` closes the
//!   connection before anything is reserved for it.
//! - **Broker-wide request memory** ([`RequestMemory`], Kafka's
//!   `queued.max.request.bytes`): once a frame's length is known, its bytes
//!   are reserved from one budget shared by every connection, and held until
//!   the front end has handled it. When the budget is used up, readers stop
//!   reading (the kernel's socket buffers then push back on the clients)
//!   until memory frees, instead of each of 10,000 connections reserving up
//!   to `max_frame_bytes`. A frame larger than the whole budget reserves the
//!   whole budget.
//! - **Timeouts.** A connection with no complete request for `idle_timeout`
//!   (Kafka's `connections.max.idle.ms`), nothing in flight and no response
//!   written meanwhile is closed; so is one whose partial frame makes no
//!   progress for `read_timeout`, or whose frame body arrives slower than
//!   `read_timeout` plus one second per MiB in all (a trickling client must
//!   not hold its share of the memory budget for long). A write that makes
//!   no progress for `idle_timeout` (the client stopped reading) closes the
//!   connection too.
//! - **Deferred requests.** At most `max_deferred` deferred actions (a parked
//!   fetch, a produce waiting for its fsync) run per connection; at the cap
//!   the reader waits for one to finish before it reads further.
//! - **Response order.** With `ordered`, responses go out in request order
//!   (Kafka requires it per connection): a deferred action takes its place
//!   in the queue when it is read. Without it (the native protocol, whose
//!   clients match correlation ids), a deferred response is queued when it
//!   is ready, so a parked fetch never holds up later answers.
//! - **Backpressure and shutdown.** The response queue is bounded, so a
//!   client that does not read stops its own reader. On shutdown the reader
//!   stops, in-flight deferred actions still answer, and the writer drains.
//!
//! Responses travel as lists of `Bytes` chunks written with vectored writes:
//! fetch payloads are slices of the log's mapping, never copied.
//!
//! The stream is any `AsyncRead + AsyncWrite` (plain TCP, TLS). A plain
//! `TcpStream` is split into its owned halves, which need no lock; any
//! other stream is split with `tokio::io::split` (a mutex between reader
//! and writer, uncontended in practice, and cheap beside TLS's own cost:
//! rustls copies every byte into its records anyway). Vectored writes reach
//! the stream either way.

use std::any::Any;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::future::BoxFuture;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Responses queued per connection before the reader waits for the writer.
const RESPONSE_QUEUE: usize = 256;
/// The writer gathers queued responses into one `writev` up to this size.
const COALESCE_BYTES: usize = 1 << 20;
/// Most iovecs passed to one `write_vectored` call.
const MAX_IOVECS: usize = 64;
/// Initial read buffer; it grows to the largest frame seen.
const READ_BUFFER: usize = 16 * 1024;
/// A drained read buffer larger than this is replaced by a fresh small one.
const SHRINK_ABOVE: usize = 8 << 20;
/// Bytes of the length prefix.
const PREFIX: usize = 4;
/// A frame's body must arrive at least this fast on average (on top of one
/// `read_timeout`), so a client trickling bytes cannot hold its reservation
/// of the request-memory budget for long.
const MIN_FRAME_BYTES_PER_SEC: usize = 1 << 20;

/// What a front end wants done with one request frame.
pub enum Action {
    /// Send these encoded response chunks (a whole frame, length included).
    Respond(Vec<Bytes>),
    /// Send nothing (a produce with acks = none).
    Nothing,
    /// Run this off the read path; send its chunks, if any, when it resolves.
    Deferred(BoxFuture<'static, Option<Vec<Bytes>>>),
    /// Close the connection; the reason is logged once.
    Close(String),
}

/// A wire protocol served by [`drive`].
pub trait FrontEnd: Send + 'static {
    /// Handles one frame payload (without its length prefix), in request order.
    fn on_frame(&mut self, payload: Bytes) -> Action;

    /// No further request is read before this instant (quota throttling, as
    /// Kafka mutes a throttled channel); `None` reads on at once.
    fn muted_until(&self) -> Option<std::time::Instant> {
        None
    }

    /// Set when the front end wants the connection closed once the responses
    /// already queued are written (an answer saying why, then the close: a
    /// request before authentication, a failed login); checked before each
    /// read. The reason is logged once.
    fn close_requested(&self) -> Option<String> {
        None
    }
}

/// Per-connection limits of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Largest accepted frame payload.
    pub max_frame_bytes: usize,
    /// Close a connection with no complete request and nothing in flight for this long.
    pub idle_timeout: Duration,
    /// Close a connection whose partial frame makes no progress for this long.
    pub read_timeout: Duration,
    /// Deferred actions in flight per connection.
    pub max_deferred: usize,
    /// Responses in request order (Kafka) or as they complete (native).
    pub ordered: bool,
}

/// Broker-wide budget for request bytes held in memory (shared by every connection).
#[derive(Debug, Clone)]
pub struct RequestMemory {
    sem: Arc<Semaphore>,
    total: usize,
    gauge: Option<IntGauge>,
}

/// Bytes reserved from a [`RequestMemory`]; given back on drop.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    gauge: Option<IntGauge>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.sub(self.bytes);
        }
    }
}

impl RequestMemory {
    /// A budget of `bytes` (at least 1).
    pub fn new(bytes: usize) -> RequestMemory {
        let total = bytes.clamp(1, Semaphore::MAX_PERMITS);
        RequestMemory {
            sem: Arc::new(Semaphore::new(total)),
            total,
            gauge: None,
        }
    }

    /// Reports the bytes in use in `gauge` as they change.
    pub fn with_gauge(mut self, gauge: IntGauge) -> RequestMemory {
        self.gauge = Some(gauge);
        self
    }

    /// Bytes currently reserved by frames being read or handled.
    pub fn in_use(&self) -> usize {
        self.total - self.sem.available_permits()
    }

    /// The whole budget.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Waits until `bytes` (capped at the whole budget) are free and reserves them.
    async fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let n = bytes.clamp(1, self.total);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.sem).acquire_many_owned(n).await.ok()?;
        if let Some(g) = &self.gauge {
            g.add(i64::from(n));
        }
        Some(Reservation {
            _permit: permit,
            bytes: i64::from(n),
            gauge: self.gauge.clone(),
        })
    }
}

/// A queued response: ready bytes, or (ordered mode) a deferred one not finished yet.
enum Slot {
    Ready(Vec<Bytes>),
    Pending(oneshot::Receiver<Option<Vec<Bytes>>>),
}

/// Why reading the next frame stopped.
enum ReadEnd {
    /// The client closed cleanly between frames, or shutdown began.
    Done,
    /// Close with this reason (logged).
    Close(String),
}

/// Serves one connection until the client closes it, it misbehaves or times
/// out, or `shutdown` fires (then in-flight deferred responses are still
/// sent). Deferred requests run in the span `drive` is called in (the
/// listener's per-connection span, with the peer), so their lines carry it too. `shutdown` should be this connection's own token: it is cancelled
/// when the reader ends, so the front end's parked requests answer at once.
/// The caller sets socket options (TCP_NODELAY) before the stream gets here.
pub async fn drive<S, F>(
    stream: S,
    peer: SocketAddr,
    front_end: F,
    config: DriverConfig,
    memory: RequestMemory,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FrontEnd,
{
    // Plain TCP splits without a lock (see the module docs).
    let mut slot = Some(stream);
    if let Some(tcp) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<TcpStream>>()
        .and_then(Option::take)
    {
        let (rd, wr) = tcp.into_split();
        return drive_halves(rd, wr, peer, front_end, config, memory, shutdown, tracker).await;
    }
    let Some(stream) = slot else { return };
    let (rd, wr) = tokio::io::split(stream);
    drive_halves(rd, wr, peer, front_end, config, memory, shutdown, tracker).await
}

/// [`drive`] on the two halves of a stream.
#[allow(clippy::too_many_arguments)]
async fn drive_halves<R, W, F>(
    mut rd: R,
    wr: W,
    peer: SocketAddr,
    mut front_end: F,
    config: DriverConfig,
    memory: RequestMemory,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
    F: FrontEnd,
{
    let (tx, rx) = mpsc::channel::<Slot>(RESPONSE_QUEUE);
    let written = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_loop(
        wr,
        rx,
        config.idle_timeout,
        Arc::clone(&written),
    ));
    let deferred = Arc::new(Semaphore::new(config.max_deferred.max(1)));
    let mut buf = BytesMut::with_capacity(READ_BUFFER);

    let close_reason: Option<String> = loop {
        if let Some(reason) = front_end.close_requested() {
            break Some(reason);
        }
        if let Some(until) = front_end.muted_until() {
            let until = Instant::from_std(until);
            if until > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = shutdown.cancelled() => break None,
                }
            }
        }
        let (payload, permit) = match read_frame(
            &mut rd, &mut buf, &config, &memory, &deferred, &written, &shutdown,
        )
        .await
        {
            Ok(f) => f,
            Err(ReadEnd::Done) => break None,
            Err(ReadEnd::Close(reason)) => break Some(reason),
        };
        // The buffer grows to the largest frame seen; give a big one back once
        // it is drained so an idle connection does not pin megabytes.
        if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
            buf = BytesMut::with_capacity(READ_BUFFER);
        }
        let action = front_end.on_frame(payload);
        drop(permit);
        match action {
            Action::Respond(chunks) => {
                if tx.send(Slot::Ready(chunks)).await.is_err() {
                    break None;
                }
            }
            Action::Nothing => {}
            Action::Close(reason) => break Some(reason),
            Action::Deferred(fut) => {
                // Backpressure: wait for a slot before reading further
                // requests. On shutdown the action (a produce may already be
                // appended) still runs and answers; the reader stops after it.
                let permit = tokio::select! {
                    biased;
                    p = Arc::clone(&deferred).acquire_owned() => p.ok(),
                    _ = shutdown.cancelled() => None,
                };
                let stop_reading = permit.is_none();
                if config.ordered {
                    let (done_tx, done_rx) = oneshot::channel();
                    if tx.send(Slot::Pending(done_rx)).await.is_err() {
                        break None;
                    }
                    // In the connection's span (see `drive`), like its reader.
                    tracker.spawn(
                        async move {
                            let _ = done_tx.send(fut.await);
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                } else {
                    let tx = tx.clone();
                    tracker.spawn(
                        async move {
                            if let Some(chunks) = fut.await {
                                let _ = tx.send(Slot::Ready(chunks)).await;
                            }
                            // Held until the response is queued, so a client that
                            // does not read cannot pile up finished responses either.
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                }
                if stop_reading {
                    break None;
                }
            }
        }
    };
    if let Some(reason) = &close_reason {
        tracing::warn!(%peer, reason = %reason, "closing connection");
    }
    shutdown.cancel();
    // The writer ends once this and every deferred task's sender are gone.
    drop(tx);
    drop(rd);
    match writer.await {
        Ok(Err(e)) if close_reason.is_none() => {
            tracing::warn!(%peer, error = %e, "connection write failed")
        }
        Err(e) => tracing::error!(%peer, error = %e, "connection writer panicked"),
        _ => {}
    }
}

/// Reads one whole frame into `buf` and splits it off, with its reservation
/// from the request-memory budget. See the module docs for the timeouts.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    config: &DriverConfig,
    memory: &RequestMemory,
    deferred: &Semaphore,
    written: &AtomicU64,
    shutdown: &CancellationToken,
) -> Result<(Bytes, Option<Reservation>), ReadEnd> {
    let mut idle_since = Instant::now();
    let mut writes_seen = written.load(Ordering::Relaxed);
    let mut progress = Instant::now();
    // The length prefix.
    while buf.len() < PREFIX {
        let deadline = if buf.is_empty() {
            idle_since + config.idle_timeout
        } else {
            progress + config.read_timeout
        };
        match read_some(rd, buf, deadline, shutdown).await? {
            true => progress = Instant::now(),
            false if !buf.is_empty() => return Err(stalled(buf.len(), config)),
            false
                if deferred.available_permits() < config.max_deferred.max(1)
                    || written.load(Ordering::Relaxed) != writes_seen =>
            {
                // Something is in flight for this client (a parked fetch),
                // or a response went out meanwhile: not idle; keep waiting.
                idle_since = Instant::now();
                writes_seen = written.load(Ordering::Relaxed);
            }
            false => {
                return Err(ReadEnd::Close(format!(
                    "idle for {} ms with no request",
                    config.idle_timeout.as_millis()
                )))
            }
        }
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > config.max_frame_bytes {
        return Err(ReadEnd::Close(format!(
            "invalid frame: frame of {len} bytes exceeds the maximum of {}",
            config.max_frame_bytes
        )));
    }
    let total = PREFIX + len;
    // Even a frame already read with an earlier one waits here: at the cap
    // the reader must stop, not go on serving what it has buffered.
    let permit = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Err(ReadEnd::Done),
        p = memory.reserve(total) => p,
    };
    if buf.len() < total {
        // Bounded: `len` was checked against the maximum above.
        buf.reserve(total - buf.len());
        progress = Instant::now();
    }
    let frame_started = Instant::now();
    let frame_deadline = frame_started
        + config.read_timeout
        + Duration::from_secs((total / MIN_FRAME_BYTES_PER_SEC) as u64);
    while buf.len() < total {
        let deadline = (progress + config.read_timeout).min(frame_deadline);
        match read_some(rd, buf, deadline, shutdown).await? {
            true => progress = Instant::now(),
            false if Instant::now() >= frame_deadline => {
                return Err(ReadEnd::Close(format!(
                    "client too slow: a frame of {total} bytes not complete after {} ms ({} bytes read)",
                    frame_started.elapsed().as_millis(),
                    buf.len()
                )))
            }
            false => return Err(stalled(buf.len(), config)),
        }
    }
    buf.advance(PREFIX);
    Ok((buf.split_to(len).freeze(), permit))
}

fn stalled(buffered: usize, config: &DriverConfig) -> ReadEnd {
    ReadEnd::Close(format!(
        "client stalled mid-frame: no bytes for {} ms with {buffered} bytes of a frame read",
        config.read_timeout.as_millis()
    ))
}

/// One read into `buf`: `Ok(true)` when bytes arrived, `Ok(false)` when
/// `deadline` passed first.
async fn read_some<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> Result<bool, ReadEnd> {
    if buf.capacity() == buf.len() {
        buf.reserve(READ_BUFFER);
    }
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(ReadEnd::Done),
        r = rd.read_buf(buf) => match r {
            Ok(0) if buf.is_empty() => Err(ReadEnd::Done),
            Ok(0) => Err(ReadEnd::Close(format!(
                "client vanished mid-frame with {} bytes of a frame read",
                buf.len()
            ))),
            Ok(_) => Ok(true),
            // A TLS client that hangs up between requests without sending
            // close_notify (most do): as clean as a TCP close there.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && buf.is_empty() => {
                Err(ReadEnd::Done)
            }
            Err(e) => Err(ReadEnd::Close(format!("read failed: {e}"))),
        },
        _ = tokio::time::sleep_until(deadline) => Ok(false),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Slot>,
    stall_timeout: Duration,
    written: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut pending: Vec<Bytes> = Vec::new();
    let mut carry: Option<Slot> = None;
    loop {
        let first = match carry.take() {
            Some(s) => s,
            None => match rx.recv().await {
                Some(s) => s,
                None => break,
            },
        };
        let mut queued = 0usize;
        if let Some(chunks) = resolve(first).await? {
            queued += chunks.iter().map(Bytes::len).sum::<usize>();
            pending.extend(chunks);
        }
        while queued < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(Slot::Ready(more)) => {
                    queued += more.iter().map(Bytes::len).sum::<usize>();
                    pending.extend(more);
                }
                // A deferred answer that is not done: write what we have first.
                Ok(pending_slot) => {
                    carry = Some(pending_slot);
                    break;
                }
                Err(_) => break,
            }
        }
        write_chunks(&mut w, &mut pending, Some(stall_timeout)).await?;
        written.fetch_add(1, Ordering::Relaxed);
    }
    w.shutdown().await
}

/// The chunks of a queued response, `None` when a deferred action answers
/// nothing. A deferred action that died without answering (a panic) is an
/// error: in request order a later response must not take its place.
async fn resolve(slot: Slot) -> std::io::Result<Option<Vec<Bytes>>> {
    match slot {
        Slot::Ready(c) => Ok(Some(c)),
        Slot::Pending(rx) => rx
            .await
            .map_err(|_| std::io::Error::other("a deferred request ended without an answer")),
    }
}

/// Writes every chunk with vectored writes, handling partial writes; empties `chunks`.
pub async fn write_all_chunks<W: AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    write_chunks(w, chunks, None).await
}

/// [`write_all_chunks`], failing with `TimedOut` when one write makes no
/// progress for `stall` (a client that stopped reading; a slow reader is fine).
async fn write_chunks<W: AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &mut Vec<Bytes>,
    stall: Option<Duration>,
) -> std::io::Result<()> {
    let mut start = 0;
    while start < chunks.len() {
        if chunks[start].is_empty() {
            start += 1;
            continue;
        }
        let n = {
            let slices: Vec<IoSlice<'_>> = chunks[start..]
                .iter()
                .filter(|c| !c.is_empty())
                .take(MAX_IOVECS)
                .map(|c| IoSlice::new(c))
                .collect();
            match stall {
                None => w.write_vectored(&slices).await?,
                Some(stall) => match tokio::time::timeout(stall, w.write_vectored(&slices)).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("client read nothing for {} ms", stall.as_millis()),
                        ))
                    }
                },
            }
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 && start < chunks.len() {
            let len = chunks[start].len();
            if left >= len {
                left -= len;
                start += 1;
            } else {
                chunks[start].advance(left);
                left = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Echoes each one-byte payload back; payload `b'd'` is deferred by 300 ms.
    struct Echo;

    impl FrontEnd for Echo {
        fn on_frame(&mut self, payload: Bytes) -> Action {
            let mut out = BytesMut::new();
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&payload);
            let chunks = vec![out.freeze()];
            match payload.first() {
                Some(b'd') => Action::Deferred(Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some(chunks)
                })),
                Some(b'x') => Action::Close("asked to".into()),
                Some(b'p') => Action::Deferred(Box::pin(async move {
                    panic!("a deferred action that dies");
                })),
                _ => Action::Respond(chunks),
            }
        }
    }

    /// A config for the tests: 1 KiB frames, 60 s timeouts, 8 deferred.
    fn config(ordered: bool) -> DriverConfig {
        DriverConfig {
            max_frame_bytes: 1024,
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            max_deferred: 8,
            ordered,
        }
    }

    /// Serves one connection with `Echo` and returns the client side.
    async fn echo_server(config: DriverConfig, memory: RequestMemory) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            drive(
                stream,
                peer,
                Echo,
                config,
                memory,
                CancellationToken::new(),
                TaskTracker::new(),
            )
            .await;
        });
        TcpStream::connect(addr).await.unwrap()
    }

    async fn answers(ordered: bool) -> Vec<u8> {
        let mut s = echo_server(config(ordered), RequestMemory::new(1 << 20)).await;
        for p in [b'd', b'a', b'b', b'x'] {
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            s.write_all(&[p]).await.unwrap();
        }
        let mut got = Vec::new();
        let read = async {
            while let Ok(len) = s.read_u32().await {
                let mut b = vec![0u8; len as usize];
                s.read_exact(&mut b).await.unwrap();
                got.extend(b);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the connection closes after its answers");
        got
    }

    /// Ordered mode (Kafka) keeps request order across a deferred response;
    /// unordered (native) lets later answers overtake it. Both still send the
    /// deferred answer after the front end asked to close.
    #[tokio::test]
    async fn responses_keep_request_order_only_when_ordered() {
        assert_eq!(answers(true).await, b"dab");
        assert_eq!(answers(false).await, b"abd");
    }

    #[tokio::test]
    async fn oversized_frame_closes_before_reserving() {
        let memory = RequestMemory::new(1 << 20);
        let mut s = echo_server(config(true), memory.clone()).await;
        s.write_all(&1025u32.to_be_bytes()).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(memory.in_use(), 0);
    }

    /// A client that trickles a frame's body, one byte within every read
    /// timeout, is still closed once the frame's whole deadline passes, and
    /// its reservation is given back.
    #[tokio::test]
    async fn a_trickled_frame_is_closed_at_its_deadline() {
        let memory = RequestMemory::new(1 << 20);
        let config = DriverConfig {
            read_timeout: Duration::from_millis(300),
            ..config(false)
        };
        let mut s = echo_server(config, memory.clone()).await;
        s.write_all(&100u32.to_be_bytes()).await.unwrap();
        let mut closed = false;
        for _ in 0..50 {
            if s.write_all(b"z").await.is_err() {
                closed = true;
                break;
            }
            let mut b = [0u8; 8];
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await {
                assert!(matches!(r, Ok(0) | Err(_)), "no answer expected");
                closed = true;
                break;
            }
        }
        assert!(closed, "a trickling client kept its frame open for 5 s");
        assert_eq!(memory.in_use(), 0);
    }

    /// In request order, a deferred action that dies without answering closes
    /// the connection: no later response may take its place.
    #[tokio::test]
    async fn ordered_mode_closes_when_a_deferred_answer_is_lost() {
        let mut s = echo_server(config(true), RequestMemory::new(1 << 20)).await;
        for p in [b'p', b'a'] {
            s.write_all(&1u32.to_be_bytes()).await.unwrap();
            s.write_all(&[p]).await.unwrap();
        }
        let mut got = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(r.is_ok(), "the connection was closed");
        assert!(
            got.is_empty(),
            "a later answer took the lost one's place: {got:?}"
        );
    }

    /// The stall timeout is per write: a slow but steady reader gets a large
    /// response; one that reads nothing times out.
    #[tokio::test]
    async fn writes_time_out_only_without_progress() {
        let (mut w, mut r) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut total = 0usize;
            let mut b = [0u8; 16];
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                match r.read(&mut b).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let mut chunks = vec![Bytes::from(vec![7u8; 4096])];
        // 4096 bytes at 16 bytes per 5 ms take about 1.3 s, far over the stall limit.
        write_chunks(&mut w, &mut chunks, Some(Duration::from_millis(200)))
            .await
            .expect("a reader that keeps reading is served");
        drop(w);
        assert_eq!(reader.await.unwrap(), 4096);

        let (mut w, _r) = tokio::io::duplex(64);
        let mut chunks = vec![Bytes::from(vec![7u8; 4096])];
        let e = write_chunks(&mut w, &mut chunks, Some(Duration::from_millis(200)))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
