//! The Kafka wire protocol on the Sluice broker core.
//!
//! A [`FrontEnd`] for the shared connection driver
//! ([`sluice_broker::driver`]): the driver owns framing, limits, timeouts,
//! backpressure and shutdown exactly as for the native protocol, with
//! `ordered = true` so responses leave in request order (Kafka clients
//! match them by position). A parked fetch or a durable produce is a
//! deferred action: it holds up later responses on its own connection
//! only, never other connections.
//!
//! Each frame: the request header is parsed here (with length checks: the
//! codec crate is never handed a header), the body is decoded by the
//! `kafka-protocol` crate (a patched copy whose array counts are bounded by
//! the bytes left, see `vendor/kafka-protocol/README.sluice.md`), the
//! request is translated onto the broker core (mostly the native handlers
//! in [`sluice_broker::handler`], so leadership checks, auto-creation,
//! idempotence and cluster forwarding behave the same on both wires), and
//! the answer is encoded in the request's version. Fetch responses are
//! encoded here by hand so that record data goes out as slices of the log
//! (no copy), as on the native wire.
//!
//! Bad input: a frame too short for a header, an api key or version that is
//! not served (other than ApiVersions), or a body that does not decode
//! closes that connection, with one log line, as Kafka does; nothing else
//! is affected. An ApiVersions request of a version we do not know gets
//! `UNSUPPORTED_VERSION` in a v0 body that lists our ranges (KIP-511), so
//! the client can retry with one we do.

pub mod api;
pub mod auth;
pub mod codes;
mod data;
mod fetch;
mod groups;
mod header;
mod meta;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use sluice_broker::driver::{drive, Action, DriverConfig, FrontEnd, RequestMemory};
use sluice_broker::handler::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

pub use api::{parse_frame, served_range, Frame, SERVED};
pub use header::{parse_header, RequestHeader};

/// Errors of the Kafka front end.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The frame is too short or its header is malformed.
    #[error("malformed request header: {0}")]
    Header(String),
    /// The api key is not one this broker serves.
    #[error("api key {0} is not served")]
    UnknownApi(i16),
    /// The api version is outside the served range.
    #[error("api key {key} version {version} is not served")]
    UnsupportedVersion {
        /// The api key.
        key: i16,
        /// The version asked for.
        version: i16,
    },
    /// The request body does not decode.
    #[error("malformed {api} v{version} body: {reason}")]
    Body {
        /// The api's name.
        api: &'static str,
        /// The version.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
    /// A request a connection may not send in its authentication state.
    #[error("{0}")]
    Auth(String),
    /// A response could not be encoded in the request's version.
    #[error("cannot encode the {api} v{version} response: {reason}")]
    Encode {
        /// The api's name.
        api: &'static str,
        /// The version.
        version: i16,
        /// What the encoder said.
        reason: String,
    },
}

/// What the Kafka listener serves connections with.
#[derive(Clone)]
pub struct KafkaContext {
    /// The broker core, groups and shutdown token (shared with the native listener).
    pub core: Context,
    /// `host:port` advertised to Kafka clients when the broker runs alone
    /// (`None`: the address each client connected to).
    pub advertised: Option<(String, u16)>,
}

/// A handler's answer: encoded now, encoded later, or nothing (acks = 0).
pub(crate) enum Reply {
    /// The encoded response frame.
    Now(Vec<Bytes>),
    /// A response that needs waiting for (fsync, parked fetch, join barrier).
    Later(BoxFuture<'static, Option<Vec<Bytes>>>),
    /// No response at all.
    Nothing,
}

/// Encodes `body` as the response frame of a request (length, header, body).
pub(crate) fn frame<R: Encodable + HeaderVersion>(
    api: &'static str,
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Vec<Bytes>, KafkaError> {
    let flexible_header = R::header_version(version) >= 1;
    let size = body.compute_size(version).map_err(|e| KafkaError::Encode {
        api,
        version,
        reason: e.to_string(),
    })?;
    let header_len = 4 + usize::from(flexible_header);
    let mut buf = BytesMut::with_capacity(4 + header_len + size);
    let total = i32::try_from(header_len + size).map_err(|_| KafkaError::Encode {
        api,
        version,
        reason: format!("{size} bytes do not fit a frame"),
    })?;
    buf.put_i32(total);
    buf.put_i32(correlation_id);
    if flexible_header {
        buf.put_u8(0);
    }
    body.encode(&mut buf, version)
        .map_err(|e| KafkaError::Encode {
            api,
            version,
            reason: e.to_string(),
        })?;
    Ok(vec![buf.freeze()])
}

/// The Kafka protocol as a driver [`FrontEnd`].
struct Kafka {
    ctx: Arc<KafkaContext>,
    peer: SocketAddr,
    auth: auth::ConnAuth,
    /// The connection span's `client_id` is recorded (from the first request).
    named: bool,
}

impl FrontEnd for Kafka {
    fn on_frame(&mut self, payload: Bytes) -> Action {
        let started = Instant::now();
        if !self.named {
            // Once per connection: every later line in its span names the client.
            self.named = true;
            if let Some(id) = header::peek_client_id(&payload).filter(|id| !id.is_empty()) {
                tracing::Span::current().record("client_id", id);
            }
        }
        match api::handle(&self.ctx, self.peer, &mut self.auth, payload, started) {
            Ok(Reply::Now(chunks)) => {
                tracing::trace!(elapsed = ?started.elapsed(), "kafka request answered");
                Action::Respond(chunks)
            }
            Ok(Reply::Later(fut)) => Action::Deferred(fut),
            Ok(Reply::Nothing) => Action::Nothing,
            Err(e) => Action::Close(format!("kafka: {e}")),
        }
    }

    fn muted_until(&self) -> Option<std::time::Instant> {
        self.auth.muted_until.lock().ok().and_then(|g| *g)
    }
}

/// The driver settings of the Kafka listener: the native limits, in order.
pub fn driver_config(native: DriverConfig) -> DriverConfig {
    DriverConfig {
        ordered: true,
        ..native
    }
}

/// Serves one Kafka-protocol connection until the client closes it, it
/// misbehaves or times out, or the broker shuts down. `stream` is plain TCP
/// or TLS (after its handshake); `ctx.core.local_addr` must be the address
/// this connection reached (clients of a listener bound to an unspecified
/// address are told it).
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: KafkaContext,
    config: DriverConfig,
    memory: RequestMemory,
    tracker: TaskTracker,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ctx = ctx;
    // Per connection: parked fetches answer as soon as this client goes.
    ctx.core.shutdown = ctx.core.shutdown.child_token();
    let shutdown = ctx.core.shutdown.clone();
    let auth = auth::ConnAuth::new(&ctx);
    let front_end = Kafka {
        ctx: Arc::new(ctx),
        peer,
        auth,
        named: false,
    };
    drive(stream, peer, front_end, config, memory, shutdown, tracker).await
}
