//! Listeners, the accept loop, housekeeping, and phased graceful shutdown.
//!
//! Shutdown (when the token passed to [`Server::run`] fires):
//! 0. in a cluster, controlled shutdown: the partitions this broker leads
//!    move to other in-sync replicas (bounded by `shutdown_timeout`) while
//!    it keeps serving, so clients see NOT_LEADER and retry elsewhere;
//! 1. stop accepting native and HTTP connections;
//! 2. every connection stops reading; parked fetches answer with what they
//!    have; durable produces finish their fsync; all tracked tasks are waited
//!    for, up to `shutdown_timeout`;
//! 3. housekeeping and the group timers stop, every log is flushed and
//!    closed, then the offset store (`__consumer_offsets`) is closed.
//!
//! Consumer groups ([`Groups`]) are opened after the topics (the offset store
//! is replayed then) and run two tasks: the expiry timer
//! ([`Groups::run_timer`], driven by the coordinator's next deadline) and a
//! group-metrics refresh (with offsets retention, and offsets-log compaction when due) every
//! [`GROUP_METRICS_TICK`].
//!
//! A semaphore caps simultaneous connections at `max_connections`: at the cap
//! the accept loop waits, leaving new clients in the kernel backlog.
//!
//! TLS ([`crate::tls`]): a listener whose protocol says TLS runs the
//! handshake in each connection's task (bounded, so the accept loop never
//! waits on a client), then fills the connection's `Context.conn` (TLS, the
//! client certificate's principal, whether SASL is required) before its
//! first request. SIGHUP reloads the certificate files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cluster::ClusterNode;
use crate::tls::{Listener, ListenerTls, PeerTls};
use sluice_broker::error::chain;
use sluice_broker::handler::{ConnSecurity, Context};
use sluice_broker::{Broker, BrokerConfig, BrokerError, Groups, Metrics};
use sluice_tls::ServerTls;

/// How often partitions with the `interval` policy are checked for a due flush.
const FLUSH_TICK: Duration = Duration::from_millis(100);

/// How often the group metrics (members, rebalances, lag) are recomputed.
pub const GROUP_METRICS_TICK: Duration = Duration::from_secs(1);

/// Pending-connection queue of the native listener. tokio's default (128,
/// like std) overflows when hundreds of clients connect at once on a busy
/// machine, and each overflow costs the client a 1 s SYN retransmit.
const LISTEN_BACKLOG: u32 = 1024;

fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, BrokerError> {
    let err = |source| BrokerError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(backlog).map_err(err)
}

/// A broker with its listeners bound, ready to [`run`](Server::run).
pub struct Server {
    config: BrokerConfig,
    broker: Arc<Broker>,
    groups: Arc<Groups>,
    native: TcpListener,
    http: TcpListener,
    native_addr: SocketAddr,
    http_addr: SocketAddr,
    /// The `metrics_listen` listener (only /metrics and /health) and its address, if set.
    metrics_http: Option<(TcpListener, SocketAddr)>,
    /// The Kafka listener and the address its clients are told, if enabled.
    kafka: Option<(TcpListener, Option<(String, u16)>)>,
    kafka_addr: Option<SocketAddr>,
    cluster: Option<ClusterNode>,
    /// The TLS identity, when any listener runs TLS (reloaded on SIGHUP).
    tls: Option<Arc<ServerTls>>,
}

/// `host:port` split for advertising (a bracketed IPv6 host loses its brackets).
fn split_host_port(addr: &str) -> Result<(String, u16), BrokerError> {
    let bad = || BrokerError::Config(format!("kafka_advertise must be host:port, got {addr:?}"));
    let (h, p) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = p.parse().map_err(|_| bad())?;
    let host = h.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

impl Server {
    /// Recovers the data directory and binds both listeners.
    pub async fn bind(config: BrokerConfig) -> Result<Server, BrokerError> {
        // Unreadable certificate files fail the start before any recovery work.
        let tls = crate::tls::load(&config.listener_security)?;
        let cfg = config.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::open(&cfg, Metrics::new()))
            .await
            .map_err(|e| BrokerError::Io {
                path: config.data_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let broker = Arc::new(broker);
        let instance_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let (b, dir) = (Arc::clone(&broker), config.data_dir.clone());
        let retention = config.offsets_retention;
        let options = sluice_broker::group::GroupsOptions::from_config(&config);
        let groups = tokio::task::spawn_blocking(move || {
            Groups::open_with(
                &dir,
                b,
                sluice_group::CoordinatorConfig {
                    offsets_retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
                    ..sluice_group::CoordinatorConfig::default()
                },
                instance_id,
                options,
            )
        })
        .await
        .map_err(|e| BrokerError::Io {
            path: config.data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        let native = bind(config.listen, LISTEN_BACKLOG)?;
        let http = bind(config.http_listen, 128)?;
        let local = |l: &TcpListener, addr: SocketAddr| {
            l.local_addr()
                .map_err(|source| BrokerError::Bind { addr, source })
        };
        let native_addr = local(&native, config.listen)?;
        let http_addr = local(&http, config.http_listen)?;
        let metrics_http = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let l = bind(addr, 128)?;
                let bound = local(&l, addr)?;
                Some((l, bound))
            }
        };
        let kafka = match config.kafka_listen {
            None => None,
            Some(addr) => {
                let l = bind(addr, LISTEN_BACKLOG)?;
                let bound = local(&l, addr)?;
                Some((l, bound))
            }
        };
        let kafka_addr = kafka.as_ref().map(|(_, a)| *a);
        // What Kafka clients are told: --kafka-advertise, else the bound address.
        let kafka_advertised = match (&config.kafka_advertise, kafka_addr) {
            (Some(a), _) => Some(split_host_port(a)?),
            // An unspecified bind address is no address to give out: each
            // client is then told the address it connected to.
            (None, Some(bound)) if !bound.ip().is_unspecified() => {
                Some((bound.ip().to_string(), bound.port()))
            }
            (None, _) => None,
        };
        let cluster = match &config.cluster {
            None => None,
            Some(cc) => {
                let listener = bind(cc.cluster_listen, 128)?;
                let advertised = cc
                    .advertised_listen
                    .clone()
                    .unwrap_or_else(|| native_addr.to_string());
                Some(
                    ClusterNode::start(
                        cc,
                        &config.data_dir,
                        listener,
                        Arc::clone(&broker),
                        advertised,
                        kafka_advertised.as_ref().map(|(h, p)| format!("{h}:{p}")),
                        config.rack.clone(),
                        PeerTls::new(&config.listener_security, tls.as_ref(), broker.metrics()),
                    )
                    .await?,
                )
            }
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            native = %native_addr,
            http = %http_addr,
            metrics = ?metrics_http.as_ref().map(|(_, a)| *a),
            kafka = ?kafka_addr,
            data_dir = %config.data_dir.display(),
            topics_recovered = broker.topics().len(),
            "sluiced started"
        );
        Ok(Server {
            config,
            broker,
            groups,
            native,
            http,
            native_addr,
            http_addr,
            metrics_http,
            kafka: kafka.map(|(l, _)| (l, kafka_advertised)),
            kafka_addr,
            cluster,
            tls,
        })
    }

    /// The bound native protocol address.
    pub fn native_addr(&self) -> SocketAddr {
        self.native_addr
    }

    /// The bound Kafka-protocol address, if that listener is enabled.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound `metrics_listen` address, if set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_http.as_ref().map(|(_, a)| *a)
    }

    /// The broker API (for embedding and tests).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The consumer groups (for embedding and tests).
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// Serves until `shutdown` fires, then shuts down in phases.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BrokerError> {
        let Server {
            config,
            broker,
            groups,
            native,
            http,
            metrics_http,
            kafka,
            cluster,
            tls,
            native_addr,
            ..
        } = self;
        let tracker = TaskTracker::new();
        let security = &config.listener_security;
        let metrics = broker.metrics().clone();
        let listener_tls = |listener, protocol: sluice_broker::config::SecurityProtocol| {
            ListenerTls::new(
                listener,
                tls.as_ref(),
                protocol.tls(),
                protocol.sasl(),
                &metrics,
            )
        };
        let native_tls = listener_tls(Listener::Native, security.native);
        let kafka_tls = listener_tls(Listener::Kafka, security.kafka);
        let http_tls = ListenerTls::new(
            Listener::Http,
            tls.as_ref(),
            security.http_tls,
            false,
            &metrics,
        );
        // Fires after the controlled shutdown (phase 0).
        let stop = CancellationToken::new();
        let phase0 = {
            let (stop, shutdown) = (stop.clone(), shutdown.clone());
            let cluster = cluster.as_ref().map(|c| Arc::clone(c.link()));
            let timeout = config.shutdown_timeout;
            tokio::spawn(async move {
                shutdown.cancelled().await;
                if let Some(c) = cluster {
                    c.move_leaderships_away(timeout).await;
                }
                stop.cancel();
            })
        };
        let endpoints = crate::http::Endpoints::new(broker.metrics().clone())
            .with_token(config.metrics_token.as_ref().map(|t| t.expose()));
        let console = crate::http::console(&config, native_addr, tls.as_ref(), broker.node_id());
        let http_task = tokio::spawn(crate::http::serve(
            http,
            match metrics_http {
                Some(_) => endpoints.clone().without_metrics().with_console(console),
                None => endpoints.clone().with_console(console),
            },
            http_tls.clone(),
            stop.clone(),
        ));
        // The metrics listener speaks what the HTTP listener speaks (`http_tls`).
        let metrics_task = metrics_http
            .map(|(l, _)| tokio::spawn(crate::http::serve(l, endpoints, http_tls, stop.clone())));
        let reload =
            tls.map(|identity| tokio::spawn(crate::tls::reload_on_sighup(identity, stop.clone())));
        let housekeeping_stop = CancellationToken::new();
        let housekeeping = tokio::spawn(housekeeping(
            Arc::clone(&broker),
            config.housekeeping_interval,
            housekeeping_stop.clone(),
        ));
        let group_timer = tokio::spawn(Arc::clone(&groups).run_timer(housekeeping_stop.clone()));
        let group_metrics = tokio::spawn(group_metrics(
            Arc::clone(&groups),
            housekeeping_stop.clone(),
        ));

        // On a worker thread, not on the thread that called `run` (often `block_on`).
        // Each listener has its own `max_connections` cap: a permit is taken
        // before each accept, so a shared one would be held by the idle
        // listener and starve the other.
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let kafka_limit = Arc::new(Semaphore::new(config.max_connections));
        let acceptor = tokio::spawn(accept_loop(
            native,
            Proto::Native,
            native_tls,
            Arc::clone(&limit),
            Arc::clone(&broker),
            Arc::clone(&groups),
            config.clone(),
            stop.clone(),
            tracker.clone(),
        ));
        let kafka_acceptor = kafka.map(|(listener, advertised)| {
            tokio::spawn(accept_loop(
                listener,
                Proto::Kafka(advertised),
                kafka_tls,
                Arc::clone(&kafka_limit),
                Arc::clone(&broker),
                Arc::clone(&groups),
                config.clone(),
                stop.clone(),
                tracker.clone(),
            ))
        });
        if let Err(e) = acceptor.await {
            tracing::error!(error = %e, "accept loop failed");
        }
        if let Some(k) = kafka_acceptor {
            if let Err(e) = k.await {
                tracing::error!(error = %e, "Kafka accept loop failed");
            }
        }
        let _ = phase0.await;

        // Phase 2: in-flight requests. Kafka joins and syncs parked at a
        // group barrier answer now (they would otherwise wait out the deadline).
        groups.shutdown_classic();
        tracker.close();
        if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = tracker.len(),
                "shutdown deadline passed with requests still in flight"
            );
        }
        let _ = http_task.await;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        if let Some(r) = reload {
            let _ = r.await;
        }
        if let Some(c) = cluster {
            c.shutdown().await;
        }
        // Phase 3: flush and close every log.
        housekeeping_stop.cancel();
        let _ = housekeeping.await;
        let _ = group_timer.await;
        let _ = group_metrics.await;
        let b = Arc::clone(&broker);
        let closed = tokio::task::spawn_blocking(move || {
            let topics = b.close();
            let offsets = groups.close();
            if let Err(e) = &offsets {
                tracing::error!(error = %chain(e), "closing the offset store failed");
            }
            topics.and(offsets)
        })
        .await
        .map_err(|e| BrokerError::Io {
            path: config.data_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        tracing::info!("sluiced stopped");
        closed
    }
}

/// Which protocol a listener speaks.
enum Proto {
    /// The native protocol.
    Native,
    /// The Kafka protocol, with the address advertised to its clients (if set).
    Kafka(Option<(String, u16)>),
}

impl Proto {
    /// The listener's name in log lines (the `listener` field).
    fn name(&self) -> &'static str {
        match self {
            Proto::Native => "native",
            Proto::Kafka(_) => "kafka",
        }
    }
}

/// An accepted connection after its TLS handshake (if its listener runs TLS).
enum Established {
    Plain(TcpStream, ConnSecurity),
    Tls(Box<sluice_tls::server::TlsStream<TcpStream>>, ConnSecurity),
}

/// Runs the TLS handshake when `tls` says so (bounded; `None` when it
/// failed, which is logged and counted, or shutdown began meanwhile).
async fn establish(
    tls: &ListenerTls,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<Established> {
    if !tls.is_tls() {
        return Some(Established::Plain(stream, tls.plain_conn()));
    }
    tokio::select! {
        _ = shutdown.cancelled() => None,
        done = tls.accept(stream, peer) => done.map(|(s, conn)| Established::Tls(Box::new(s), conn)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    proto: Proto,
    tls: ListenerTls,
    limit: Arc<Semaphore>,
    broker: Arc<Broker>,
    groups: Arc<Groups>,
    config: BrokerConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let driver = sluice_broker::connection::driver_config(&config);
    let memory = broker.request_memory().clone();
    while let Some((permit, stream, peer)) = accept_limited(&listener, &limit, &shutdown).await {
        // Responses are written whole; Nagle would only delay their last segment.
        let _ = stream.set_nodelay(true);
        let local_addr = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "connection lost before it was served");
                continue;
            }
        };
        let ctx = Context {
            broker: Arc::clone(&broker),
            groups: Arc::clone(&groups),
            local_addr,
            shutdown: shutdown.clone(),
            conn: Default::default(),
        };
        let gauge = broker.metrics().active_connections.clone();
        let t = tracker.clone();
        let memory = memory.clone();
        let tls = tls.clone();
        // Every line logged while serving this connection (its TLS handshake,
        // its requests, deferred ones included) carries the peer, the
        // listener and, once its first request names it, the client id.
        // ERROR level so that the span is on whenever any line in it is.
        let span = tracing::error_span!(
            "conn",
            peer = %peer,
            listener = proto.name(),
            client_id = tracing::field::Empty
        );
        match &proto {
            Proto::Native => tracker.spawn(
                async move {
                    gauge.inc();
                    use sluice_broker::connection::serve;
                    match establish(&tls, stream, peer, &ctx.shutdown).await {
                        Some(Established::Plain(s, conn)) => {
                            serve(s, peer, Context { conn, ..ctx }, driver, memory, t).await
                        }
                        Some(Established::Tls(s, conn)) => {
                            serve(s, peer, Context { conn, ..ctx }, driver, memory, t).await
                        }
                        None => {}
                    }
                    gauge.dec();
                    drop(permit);
                }
                .instrument(span),
            ),
            Proto::Kafka(advertised) => {
                let advertised = advertised.clone();
                let driver = sluice_kafka::driver_config(driver);
                tracker.spawn(
                    async move {
                        gauge.inc();
                        let kafka_ctx = |conn| sluice_kafka::KafkaContext {
                            core: Context {
                                conn,
                                ..ctx.clone()
                            },
                            advertised,
                        };
                        match establish(&tls, stream, peer, &ctx.shutdown).await {
                            Some(Established::Plain(s, conn)) => {
                                sluice_kafka::serve(s, peer, kafka_ctx(conn), driver, memory, t)
                                    .await
                            }
                            Some(Established::Tls(s, conn)) => {
                                sluice_kafka::serve(s, peer, kafka_ctx(conn), driver, memory, t)
                                    .await
                            }
                            None => {}
                        }
                        gauge.dec();
                        drop(permit);
                    }
                    .instrument(span),
                )
            }
        };
    }
}

async fn housekeeping(broker: Arc<Broker>, retention_every: Duration, stop: CancellationToken) {
    let mut flush = tokio::time::interval(FLUSH_TICK);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut disk = tokio::time::interval(sluice_broker::disk::DISK_SPACE_TICK);
    disk.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(retention_every);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let b = Arc::clone(&broker);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = flush.tick() => {
                // flush_due logs (and the log poisons on) each failed fsync;
                // a panic in it must not go unnoticed either.
                if let Err(e) = tokio::task::spawn_blocking(move || b.flush_due()).await {
                    tracing::error!(error = %e, "interval flush task failed");
                }
            }
            _ = retention.tick() => {
                if let Err(e) = tokio::task::spawn_blocking(move || b.enforce_retention()).await {
                    tracing::error!(error = %e, "retention task failed");
                }
            }
            _ = disk.tick() => {
                // fstatvfs (and the data dir walk) can block on a remote or failing file system.
                let _ = tokio::task::spawn_blocking(move || b.disk_space().tick()).await;
            }
        }
    }
}

async fn group_metrics(groups: Arc<Groups>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(GROUP_METRICS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let g = Arc::clone(&groups);
                // Reads one record batch per committed partition (page faults),
                // and may compact the offsets log: off the runtime.
                let _ = tokio::task::spawn_blocking(move || {
                    g.expire_offsets();
                    g.refresh_metrics();
                    g.compact_offsets();
                })
                .await;
            }
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives (or a handler cannot be installed).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; waiting for Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits for a free slot in `limit`, then accepts one connection; `None`
/// once `shutdown` fires. Accept errors (EMFILE and friends) are logged and
/// retried after a short pause instead of spinning.
pub(crate) async fn accept_limited(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = Arc::clone(limit).acquire_owned() => p.ok()?,
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => return Some((permit, stream, peer)),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
