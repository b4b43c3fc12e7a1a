//! One client connection: a reader task and a writer task.
//!
//! The reader owns a [`FramedRead`] with the shared [`FrameCodec`] (one
//! growing read buffer per connection, frames handed out with
//! `split_to().freeze()`), decodes each request and runs its handler inline,
//! which keeps produce order per connection. Handlers that must wait (durable
//! produce, parked fetch) return a future that is spawned on the server's
//! `TaskTracker`, so the reader keeps serving; their responses may therefore
//! go out of order and clients match correlation ids.
//!
//! Responses reach the writer as lists of `Bytes` chunks
//! ([`wire::encode_response_chunks`]): fetch payloads are slices of the log's
//! mapping and are handed to `write_vectored` as they are, never copied into
//! an intermediate buffer. The channel is bounded, so a client that does not
//! read its responses eventually stops the reader too (backpressure).
//!
//! A malformed header or an oversized frame closes the connection with one
//! log line; an unknown api or version gets an error response and the
//! connection stays open.
//!
//! At most [`MAX_DEFERRED`] deferred requests run per connection: once that
//! many are in flight the reader waits for one to finish before it reads the
//! next request. Without the cap a client could pipeline millions of tiny
//! parked fetches (a few dozen bytes each, parked up to `max_wait_ms`) and
//! grow the broker's task count and memory without bound (Kafka bounds this
//! with `queued.max.requests` and one in-flight request per connection).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::wire;
use sluice_protocol::{ApiKey, ProtocolError, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::task::TaskTracker;

use crate::error::chain;
use crate::handler::{dispatch, Context, Outcome};

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
/// Deferred requests (parked fetches, durable produces, parked heartbeats,
/// commits waiting for their fsync) in flight per connection; see the module docs.
pub const MAX_DEFERRED: usize = 1024;

/// Serves one connection until the client closes it, it misbehaves, or the
/// broker shuts down (then in-flight deferred responses are still sent).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Context,
    max_frame_bytes: usize,
    tracker: TaskTracker,
) {
    // A per-connection token: cancelled when the broker shuts down or when
    // this connection's reader ends, so parked fetches of a departed client
    // answer (or are dropped) at once instead of lingering until max_wait.
    let ctx = Context {
        shutdown: ctx.shutdown.child_token(),
        ..ctx
    };
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Vec<Bytes>>(RESPONSE_QUEUE);
    let writer = tokio::spawn(write_loop(wr, rx));
    let mut frames = FramedRead::with_capacity(rd, FrameCodec::new(max_frame_bytes), READ_BUFFER);
    let metrics = ctx.broker.metrics().clone();
    let deferred = Arc::new(Semaphore::new(MAX_DEFERRED));

    let close_reason: Option<String> = loop {
        let next = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break None,
            next = frames.next() => next,
        };
        let payload = match next {
            None => break None,
            Some(Ok(p)) => p,
            Some(Err(ProtocolError::Io(e))) => {
                break Some(format!("read failed or client vanished mid-frame: {e}"))
            }
            Some(Err(e)) => break Some(format!("invalid frame: {}", chain(&e))),
        };
        let started = Instant::now();
        // The buffer grows to the largest frame seen; give a big one back once
        // it is drained so an idle connection does not pin megabytes.
        if frames.read_buffer().is_empty() && frames.read_buffer().capacity() > SHRINK_ABOVE {
            *frames.read_buffer_mut() = BytesMut::with_capacity(READ_BUFFER);
        }
        let (header, request) = match wire::decode_request_with_limits(
            payload,
            ctx.broker.request_limits(),
        ) {
            Ok(ok) => ok,
            Err(e) => match e.header {
                Some(h) => {
                    tracing::debug!(%peer, api_key = h.api_key, version = h.api_version, code = %e.code, "rejecting request");
                    metrics
                        .request_timer(ApiKey::from_u16(h.api_key))
                        .observe(started.elapsed().as_secs_f64());
                    if send(&tx, h.correlation_id, &Response::Error(e.code))
                        .await
                        .is_err()
                    {
                        break None;
                    }
                    continue;
                }
                None => break Some(format!("malformed request header: {}", chain(&e.source))),
            },
        };
        let timer = metrics.request_timer(ApiKey::from_u16(header.api_key));
        let correlation_id = header.correlation_id;
        match dispatch(&ctx, &header, request) {
            Outcome::Respond(resp) => {
                timer.observe(started.elapsed().as_secs_f64());
                if send(&tx, correlation_id, &resp).await.is_err() {
                    break None;
                }
            }
            Outcome::NoResponse => timer.observe(started.elapsed().as_secs_f64()),
            Outcome::Deferred(fut) => {
                // Backpressure: wait for a slot before reading further
                // requests. On shutdown the request (a produce may already be
                // appended) still runs and answers; the reader stops after it.
                let permit = tokio::select! {
                    biased;
                    p = Arc::clone(&deferred).acquire_owned() => p.ok(),
                    _ = ctx.shutdown.cancelled() => None,
                };
                let stop_reading = permit.is_none();
                let tx = tx.clone();
                tracker.spawn(async move {
                    let resp = fut.await;
                    timer.observe(started.elapsed().as_secs_f64());
                    if let Some(resp) = resp {
                        let _ = send(&tx, correlation_id, &resp).await;
                    }
                    // Held until the response is queued, so a client that
                    // does not read cannot pile up finished responses either.
                    drop(permit);
                });
                if stop_reading {
                    break None;
                }
            }
        }
    };
    if let Some(reason) = &close_reason {
        tracing::warn!(%peer, reason = %reason, "closing connection");
    }
    ctx.shutdown.cancel();
    // The writer ends once this and every deferred task's sender are gone.
    drop(tx);
    drop(frames);
    match writer.await {
        Ok(Err(e)) if close_reason.is_none() => {
            tracing::warn!(%peer, error = %e, "connection write failed")
        }
        Err(e) => tracing::error!(%peer, error = %e, "connection writer panicked"),
        _ => {}
    }
}

async fn send(
    tx: &mpsc::Sender<Vec<Bytes>>,
    correlation_id: u32,
    resp: &Response,
) -> Result<(), mpsc::error::SendError<Vec<Bytes>>> {
    let mut chunks = Vec::with_capacity(4);
    wire::encode_response_chunks(correlation_id, resp, &mut chunks);
    tx.send(chunks).await
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
) -> std::io::Result<()> {
    let mut pending: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut queued: usize = first.iter().map(Bytes::len).sum();
        pending.extend(first);
        while queued < COALESCE_BYTES {
            match rx.try_recv() {
                Ok(more) => {
                    queued += more.iter().map(Bytes::len).sum::<usize>();
                    pending.extend(more);
                }
                Err(_) => break,
            }
        }
        write_all_chunks(&mut w, &mut pending).await?;
    }
    w.shutdown().await
}

/// Writes every chunk with vectored writes, handling partial writes; empties `chunks`.
pub async fn write_all_chunks<W: AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &mut Vec<Bytes>,
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
            w.write_vectored(&slices).await?
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
    use std::pin::Pin;
    use std::task::{Context as TaskCx, Poll};

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
        use sluice_protocol::{
            Acks, FetchPartition, FetchRequest, FetchTopic, Request, DEFAULT_MAX_FRAME_BYTES,
        };
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
            serve(stream, peer, ctx, DEFAULT_MAX_FRAME_BYTES, tracker).await;
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
            .produce("t", 0, &b.finish(), Acks::Leader, Duration::ZERO)
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
