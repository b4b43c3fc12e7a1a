//! The broker's side of partition replication (design: `docs/replication.md`).
//!
//! - [`apply_roles`] runs after every reconcile: each local partition leads,
//!   follows or idles as the metadata says.
//! - One fetcher task per leader broker ([`Fetchers`]) sends ReplicaFetch
//!   for every partition this broker follows there, appends what comes back
//!   verbatim, fsyncs it (unless the topic's flush policy is `os`) before the
//!   next fetch reports it durable, truncates where the leader says the log
//!   diverges, and takes the leader's high watermark. An idle fetch parks on
//!   the leader, so an idle broker pair costs one request per
//!   [`FETCH_MAX_WAIT`].
//! - [`isr_loop`] proposes ISR changes for the partitions this broker leads
//!   (AlterIsr through the controller, guarded by the epochs).
//! - [`apply_roles`] also sets the replication gauges from the same
//!   metadata ([`PartitionHealth`]): `sluice_under_replicated_partitions`
//!   and `sluice_leaderless_partitions`.
//!
//! Fetchers connect to the leader's native listener, so they speak TLS when
//! `native_security` does (the [`Connector`] carries the broker's own
//! certificate and the cluster CA); [`authenticate`] is where the
//! connection proves who it is before the first ReplicaFetch: with a
//! bootstrap admin configured (`[security] admin_user`), a fetcher logs in
//! as that user with SCRAM-SHA-512 (SCRAM-SHA-256 if the leader does not
//! offer it). A leader whose native listener has no SASL answers the
//! handshake `ILLEGAL_SASL_STATE` and the connection is used as it is. A
//! clustered broker with a SASL native listener and no admin does not start
//! (config check), so a follower never lacks the credentials it needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use sluice_broker::partition::Partition;
use sluice_broker::Broker;
use sluice_cluster::{ClusterMetadata, Controller, MetadataCommand};
use sluice_log::FlushPolicy;
use sluice_protocol::{
    ApiKey, ErrorCode, FrameCodec, ReplicaFetchPartition, ReplicaFetchRequest, Request, Response,
};
use sluice_tls::{Connector, MaybeTlsStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// How long an idle ReplicaFetch parks on the leader.
pub const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);

/// Record bytes asked for per ReplicaFetch.
const FETCH_MAX_BYTES: u32 = 8 << 20;

/// How long a connect or an answer may take beyond the park time.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the ISR of led partitions is checked.
const ISR_TICK: Duration = Duration::from_millis(250);

/// A follower outside the ISR for this long, or not caught up for this long, changes the ISR.
pub const REPLICA_LAG_MAX: Duration = Duration::from_secs(5);

fn u32_of(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}

/// Gives every local partition its role from `meta` (this broker is `me`,
/// started as `incarnation`). Until `meta` holds this start's registration
/// (unfenced), the broker leads nothing: metadata read at start may be
/// older than leadership changes made while it was down.
pub fn apply_roles(broker: &Broker, meta: &ClusterMetadata, me: u32, incarnation: u64) {
    let current = meta
        .brokers
        .get(&u64::from(me))
        .is_some_and(|b| b.incarnation == incarnation && !b.fenced);
    let health = PartitionHealth::of(meta, me, current);
    let m = broker.metrics();
    m.under_replicated_partitions
        .set(i64::try_from(health.under_replicated).unwrap_or(i64::MAX));
    m.leaderless_partitions
        .set(i64::try_from(health.leaderless).unwrap_or(i64::MAX));
    for (name, t) in &meta.topics {
        let Some(local) = broker.topics().get(name) else {
            continue;
        };
        for (i, pm) in t.partitions.iter().enumerate() {
            let Some(p) = u32::try_from(i).ok().and_then(|i| local.partition(i)) else {
                continue;
            };
            let replicas: Vec<u32> = pm.replicas.iter().copied().map(u32_of).collect();
            match pm.leader.map(u32_of) {
                Some(l) if l == me && current => p.become_leader(
                    me,
                    pm.leader_epoch,
                    pm.partition_epoch,
                    replicas,
                    pm.in_sync().iter().copied().map(u32_of).collect(),
                ),
                Some(l) if l == me => p.become_follower(pm.leader_epoch, None),
                leader => {
                    let follows = replicas.contains(&me);
                    p.become_follower(pm.leader_epoch, leader.filter(|_| follows));
                }
            }
        }
    }
}

/// The replication gauges' figures in one applied metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionHealth {
    /// Partitions `me` leads (while `current`) with fewer in-sync replicas
    /// than their replication factor. As in Kafka, the replicas a
    /// reassignment is adding do not count in the factor until the move
    /// completes.
    pub under_replicated: usize,
    /// Partitions of the whole cluster whose leader is none, or a broker
    /// that is fenced or not registered.
    pub leaderless: usize,
}

impl PartitionHealth {
    /// Counts both in `meta` for broker `me` (`current`: its registration
    /// of this start is in `meta`, unfenced, so it leads what it is named for).
    pub fn of(meta: &ClusterMetadata, me: u32, current: bool) -> PartitionHealth {
        let mut h = PartitionHealth::default();
        for pm in meta.topics.values().flat_map(|t| t.partitions.iter()) {
            let live = pm
                .leader
                .and_then(|l| meta.brokers.get(&l))
                .is_some_and(|b| !b.fenced);
            if !live {
                h.leaderless += 1;
            } else if current && pm.leader.map(u32_of) == Some(me) {
                let factor = pm.replicas.len().saturating_sub(pm.adding.len());
                if pm.in_sync().len() < factor {
                    h.under_replicated += 1;
                }
            }
        }
        h
    }
}

/// One partition a fetcher follows.
struct Followed {
    topic: String,
    partition: u32,
    epoch: u32,
    local: Arc<Partition>,
}

/// The partitions `me` follows on `leader` in `meta`.
fn followed_on(broker: &Broker, meta: &ClusterMetadata, me: u32, leader: u32) -> Vec<Followed> {
    let mut out = Vec::new();
    for (name, t) in &meta.topics {
        let Some(local) = broker.topics().get(name) else {
            continue;
        };
        for (i, pm) in t.partitions.iter().enumerate() {
            if pm.leader.map(u32_of) != Some(leader)
                || !pm.replicas.iter().any(|r| u32_of(*r) == me)
            {
                continue;
            }
            let Some(p) = u32::try_from(i).ok().and_then(|i| local.partition(i)) else {
                continue;
            };
            out.push(Followed {
                topic: name.clone(),
                partition: i as u32,
                epoch: pm.leader_epoch,
                local: Arc::clone(p),
            });
        }
    }
    out
}

/// The leaders `me` follows some partition on.
fn leaders_of(meta: &ClusterMetadata, me: u32) -> Vec<u32> {
    let mut v: Vec<u32> = meta
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.replicas.iter().any(|r| u32_of(*r) == me))
        .filter_map(|p| p.leader.map(u32_of))
        .filter(|l| *l != me)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The fetcher tasks of one broker, one per leader broker.
pub struct Fetchers {
    broker: Arc<Broker>,
    me: u32,
    meta: watch::Receiver<Arc<ClusterMetadata>>,
    stop: CancellationToken,
    tasks: HashMap<u32, JoinHandle<()>>,
    connector: Connector,
}

impl Fetchers {
    /// Fetchers following the reconciled metadata `meta`, connecting to
    /// leaders with `connector` (TLS when the native listeners run it).
    pub fn new(
        broker: Arc<Broker>,
        me: u32,
        meta: watch::Receiver<Arc<ClusterMetadata>>,
        stop: CancellationToken,
        connector: Connector,
    ) -> Fetchers {
        Fetchers {
            broker,
            me,
            meta,
            stop,
            tasks: HashMap::new(),
            connector,
        }
    }

    /// Starts a fetcher for every leader that has none running.
    fn ensure(&mut self) {
        let meta = self.meta.borrow().clone();
        self.tasks.retain(|_, t| !t.is_finished());
        for leader in leaders_of(&meta, self.me) {
            if self.tasks.contains_key(&leader) {
                continue;
            }
            // Every line of this fetcher names the leader it follows.
            let span = tracing::error_span!("replica_fetcher", node = leader);
            let task = tokio::spawn(tracing::Instrument::instrument(
                follow(
                    Arc::clone(&self.broker),
                    self.me,
                    leader,
                    self.meta.clone(),
                    self.stop.clone(),
                    self.connector.clone(),
                ),
                span,
            ));
            self.tasks.insert(leader, task);
        }
    }

    /// Runs until `stop`: (re)starts fetchers as the metadata changes.
    pub async fn run(mut self) {
        loop {
            self.ensure();
            tokio::select! {
                _ = self.stop.cancelled() => break,
                r = self.meta.changed() => if r.is_err() { break },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}

type Conn = Framed<MaybeTlsStream, FrameCodec>;

async fn connect(addr: &str, connector: &Connector, broker: &Broker) -> Option<Conn> {
    // The TLS handshake, if any, is inside the connect timeout.
    match tokio::time::timeout(IO_TIMEOUT, connector.connect(addr)).await {
        Ok(Ok(s)) => authenticate(Framed::new(s, FrameCodec::default()), addr, broker).await,
        Ok(Err(e)) => {
            tracing::debug!(peer = addr, error = %e, "cannot reach the leader");
            None
        }
        Err(_) => None,
    }
}

/// Authenticates a new connection to a leader's native listener before the
/// first ReplicaFetch (after TLS, if any). `None` when the leader refused.
///
/// With a bootstrap admin configured, the SASL exchange (SCRAM) runs on
/// `conn` as that user (see the module docs); without one there is nothing
/// to do (the config check guarantees the leader's listener needs none).
async fn authenticate(mut conn: Conn, leader_addr: &str, broker: &Broker) -> Option<Conn> {
    let Some((user, password)) = broker.security().config().admin.clone() else {
        return Some(conn);
    };
    match tokio::time::timeout(IO_TIMEOUT, scram_login(&mut conn, &user, &password)).await {
        Ok(Ok(())) => Some(conn),
        Ok(Err(why)) => {
            tracing::warn!(peer = leader_addr, user, reason = %why, "replication login to the leader refused");
            None
        }
        Err(_) => {
            tracing::warn!(
                peer = leader_addr,
                "replication login to the leader timed out"
            );
            None
        }
    }
}

/// Sends one SASL request and reads its answer (decoded as `key`).
async fn sasl_round_trip(
    conn: &mut Conn,
    correlation: u32,
    req: &Request,
    key: ApiKey,
) -> Result<Response, String> {
    let mut buf = BytesMut::new();
    sluice_protocol::wire::encode_request(correlation, "sluiced-replica", req, &mut buf);
    let frame = buf
        .split_off(sluice_protocol::codec::LENGTH_PREFIX)
        .freeze();
    conn.send(frame).await.map_err(|e| e.to_string())?;
    let payload = match conn.next().await {
        Some(Ok(p)) => p,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("the leader closed the connection".into()),
    };
    match sluice_protocol::wire::decode_response(key, payload) {
        Ok((c, r)) if c == correlation => Ok(r),
        Ok(_) => Err("answer out of order".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Logs in as `user` with SCRAM-SHA-512, else SCRAM-SHA-256; `Ok` also when
/// the leader's listener has no SASL.
async fn scram_login(conn: &mut Conn, user: &str, password: &str) -> Result<(), String> {
    use sluice_auth::scram::{ScramClient, ScramMechanism};
    use sluice_protocol::{SaslAuthenticateRequest, SaslHandshakeRequest};
    let mut chosen = None;
    for (i, m) in [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .enumerate()
    {
        let hs = Request::SaslHandshake(SaslHandshakeRequest {
            mechanism: m.name().to_string(),
        });
        match sasl_round_trip(conn, i as u32, &hs, ApiKey::SaslHandshake).await? {
            Response::SaslHandshake(r) => match r.error {
                ErrorCode::None => {
                    chosen = Some(m);
                    break;
                }
                // No SASL on that listener: nothing to prove.
                ErrorCode::IllegalSaslState => return Ok(()),
                ErrorCode::UnsupportedSaslMechanism => continue,
                other => return Err(format!("SaslHandshake answered {other}")),
            },
            other => return Err(format!("unexpected answer to SaslHandshake: {other:?}")),
        }
    }
    let m = chosen.ok_or("the leader offers neither SCRAM-SHA-512 nor SCRAM-SHA-256")?;
    let mut client = ScramClient::new(m, user, password);
    let auth = |message: Vec<u8>| {
        Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: message.into(),
        })
    };
    let server_first = authenticate_step(conn, 10, &auth(client.first())).await?;
    let client_final = client.finish(&server_first).map_err(|e| e.to_string())?;
    let server_final = authenticate_step(conn, 11, &auth(client_final)).await?;
    client.verify(&server_final).map_err(|e| e.to_string())
}

/// One SaslAuthenticate: the server's bytes, or why it refused.
async fn authenticate_step(
    conn: &mut Conn,
    correlation: u32,
    req: &Request,
) -> Result<Vec<u8>, String> {
    match sasl_round_trip(conn, correlation, req, ApiKey::SaslAuthenticate).await? {
        Response::SaslAuthenticate(r) if r.error == ErrorCode::None => Ok(r.auth_bytes.to_vec()),
        Response::SaslAuthenticate(r) => Err(format!("{} ({})", r.error, r.error_message)),
        other => Err(format!("unexpected answer to SaslAuthenticate: {other:?}")),
    }
}

/// Sends one request and reads its answer.
async fn round_trip(conn: &mut Conn, correlation: u32, req: &Request) -> Option<Response> {
    let mut buf = BytesMut::new();
    sluice_protocol::wire::encode_request(correlation, "sluiced-replica", req, &mut buf);
    let frame = buf
        .split_off(sluice_protocol::codec::LENGTH_PREFIX)
        .freeze();
    let send = conn.send(frame);
    if !matches!(tokio::time::timeout(IO_TIMEOUT, send).await, Ok(Ok(()))) {
        return None;
    }
    let payload = match tokio::time::timeout(FETCH_MAX_WAIT + IO_TIMEOUT, conn.next()).await {
        Ok(Some(Ok(p))) => p,
        _ => return None,
    };
    match sluice_protocol::wire::decode_response(ApiKey::ReplicaFetch, payload) {
        Ok((c, r)) if c == correlation => Some(r),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable ReplicaFetch answer");
            None
        }
    }
}

/// Follows every partition `me` follows on `leader` until there is none.
async fn follow(
    broker: Arc<Broker>,
    me: u32,
    leader: u32,
    meta_rx: watch::Receiver<Arc<ClusterMetadata>>,
    stop: CancellationToken,
    connector: Connector,
) {
    let mut conn: Option<Conn> = None;
    let mut correlation = 0u32;
    let mut backoff = Duration::from_millis(50);
    tracing::debug!(node = leader, "replica fetcher started");
    loop {
        if stop.is_cancelled() {
            return;
        }
        let meta = meta_rx.borrow().clone();
        let followed = followed_on(&broker, &meta, me, leader);
        if followed.is_empty() {
            tracing::debug!(node = leader, "replica fetcher has nothing to follow");
            return;
        }
        let Some(addr) = meta
            .brokers
            .get(&u64::from(leader))
            .map(|b| b.native_addr.clone())
        else {
            return;
        };
        if conn.is_none() {
            conn = connect(&addr, &connector, &broker).await;
            if conn.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        }
        let partitions = followed
            .iter()
            .map(|f| {
                let (end, last, durable) = f.local.follower_position();
                ReplicaFetchPartition {
                    topic: f.topic.clone(),
                    partition: f.partition,
                    leader_epoch: f.epoch,
                    fetch_offset: end,
                    last_fetched_epoch: last,
                    durable_offset: durable,
                }
            })
            .collect();
        correlation = correlation.wrapping_add(1);
        let req = Request::ReplicaFetch(ReplicaFetchRequest {
            replica_id: me,
            max_wait_ms: FETCH_MAX_WAIT.as_millis() as u32,
            max_bytes: FETCH_MAX_BYTES,
            partitions,
        });
        let answer = tokio::select! {
            a = round_trip(conn.as_mut().expect("connected above"), correlation, &req) => a,
            _ = stop.cancelled() => return,
        };
        let Some(Response::ReplicaFetch(resp)) = answer else {
            conn = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = Duration::from_millis(50);
        let mut stale = false;
        let mut to_sync: Vec<(Arc<Partition>, u64)> = Vec::new();
        for (f, a) in followed.iter().zip(resp.partitions) {
            if a.topic != f.topic || a.partition != f.partition {
                tracing::warn!(
                    node = leader,
                    "ReplicaFetch answer out of order; reconnecting"
                );
                conn = None;
                break;
            }
            match a.error {
                ErrorCode::None => {}
                ErrorCode::OffsetOutOfRange if a.log_start_offset > f.local.log().end_offset() => {
                    // A new (or long gone) replica: what it lacks was deleted on the leader.
                    if let Err(e) = f
                        .local
                        .restart_replica_at(leader, f.epoch, a.log_start_offset)
                    {
                        tracing::warn!(topic = %f.topic, partition = f.partition, error = %sluice_broker::error::chain(&e), "cannot restart the log at the leader's start");
                        stale = true;
                    }
                    continue;
                }
                ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::NotLeaderForPartition
                | ErrorCode::UnknownTopicOrPartition => {
                    stale = true;
                    continue;
                }
                other => {
                    tracing::warn!(topic = %f.topic, partition = f.partition, node = leader, error = %other, "replica fetch refused");
                    stale = true;
                    continue;
                }
            }
            if a.diverging_epoch >= 0 {
                if let Err(e) = f.local.truncate_diverging(
                    leader,
                    f.epoch,
                    a.diverging_epoch as u32,
                    a.diverging_end_offset,
                ) {
                    tracing::warn!(topic = %f.topic, partition = f.partition, error = %sluice_broker::error::chain(&e), "cannot truncate to the leader's log");
                    stale = true;
                }
                continue;
            }
            if !a.records.is_empty() {
                match f.local.append_replica(leader, f.epoch, &a.records) {
                    Ok(info) => {
                        if f.local.log().config().flush != FlushPolicy::Os {
                            to_sync.push((Arc::clone(&f.local), info.last_offset + 1));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %f.topic, partition = f.partition, error = %sluice_broker::error::chain(&e), "cannot append what the leader sent");
                        stale = true;
                        continue;
                    }
                }
            }
            f.local.set_follower_high_watermark(a.high_watermark);
            // Records deleted on the leader (DeleteRecords, retention) go here
            // too, up to what this replica has committed: a follower that
            // becomes leader serves from the same start.
            let start = a.log_start_offset.min(f.local.high_watermark());
            if start > f.local.start_offset() {
                if let Err(e) = f.local.delete_records_before(start) {
                    tracing::warn!(topic = %f.topic, partition = f.partition, error = %sluice_broker::error::chain(&e), "cannot move the log start to the leader's");
                }
            }
        }
        // Durable before the next fetch reports it (one group commit each).
        let syncs = to_sync
            .iter()
            .map(|(p, end)| async move { (p, p.wait_local_durable(*end).await) });
        for (p, r) in futures::future::join_all(syncs).await {
            if let Err(e) = r {
                tracing::error!(topic = %p.topic(), partition = p.index(), error = %sluice_broker::error::chain(&e), "follower fsync failed");
            }
        }
        if stale {
            // The metadata is catching up on one side: give it a moment.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Proposes the ISR changes of the partitions this broker leads, every [`ISR_TICK`].
pub async fn isr_loop(
    broker: Arc<Broker>,
    me: u32,
    controller: Arc<Controller>,
    meta_rx: watch::Receiver<Arc<ClusterMetadata>>,
    lag: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ISR_TICK) => {}
            _ = stop.cancelled() => return,
        }
        let meta = meta_rx.borrow().clone();
        for (name, t) in &meta.topics {
            let Some(local) = broker.topics().get(name) else {
                continue;
            };
            for i in 0..t.partitions.len() {
                let Some(p) = u32::try_from(i).ok().and_then(|i| local.partition(i)) else {
                    continue;
                };
                let Some((leader_epoch, partition_epoch, isr)) = p.isr_proposal(lag) else {
                    continue;
                };
                tracing::info!(topic = %name, partition = i, ?isr, "proposing an ISR change");
                let cmd = MetadataCommand::AlterIsr {
                    topic: name.clone(),
                    partition: i as u32,
                    leader: u64::from(me),
                    leader_epoch,
                    partition_epoch,
                    isr: isr.into_iter().map(u64::from).collect(),
                };
                match tokio::time::timeout(IO_TIMEOUT, controller.propose(cmd)).await {
                    Ok(Ok(r)) => {
                        tracing::debug!(topic = %name, partition = i, result = ?r, "AlterIsr")
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(topic = %name, partition = i, error = %e, "AlterIsr not committed")
                    }
                    Err(_) => tracing::debug!(topic = %name, partition = i, "AlterIsr timed out"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_cluster::metadata::{Broker as BrokerMeta, PartitionMeta, TopicMeta};

    use super::*;

    fn partition(replicas: &[u64], leader: Option<u64>, isr: &[u64]) -> PartitionMeta {
        PartitionMeta {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 1,
            isr: isr.to_vec(),
            partition_epoch: 1,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    fn broker(id: u64, fenced: bool) -> BrokerMeta {
        BrokerMeta {
            id,
            native_addr: format!("127.0.0.1:{}", 7000 + id),
            cluster_addr: format!("127.0.0.1:{}", 8000 + id),
            kafka_addr: None,
            rack: None,
            fenced,
            incarnation: 1,
            draining: false,
        }
    }

    #[test]
    fn health_counts_led_partitions_short_of_replicas_and_partitions_without_a_live_leader() {
        let mut moving = partition(&[1, 2, 3, 4], Some(1), &[1, 2, 3]);
        moving.adding = vec![4];
        let mut meta = ClusterMetadata {
            brokers: [
                (1, broker(1, false)),
                (2, broker(2, false)),
                (3, broker(3, true)),
            ]
            .into(),
            ..ClusterMetadata::default()
        };
        meta.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: [1; 16],
                partitions: vec![
                    // Led by 1, fully in sync.
                    partition(&[1, 2, 3], Some(1), &[1, 2, 3]),
                    // Led by 1, one replica out: under-replicated.
                    partition(&[1, 2, 3], Some(1), &[1, 2]),
                    // Led by 2, short: 2's figure, not 1's.
                    partition(&[2, 1, 3], Some(2), &[2, 1]),
                    // Led by fenced 3, by an unregistered 9, by nobody.
                    partition(&[3, 1, 2], Some(3), &[3, 1, 2]),
                    partition(&[9], Some(9), &[9]),
                    partition(&[1, 2], None, &[1]),
                    // A move adding 4: not under-replicated for that.
                    moving,
                    // Metadata from before replication: an empty ISR is every replica.
                    partition(&[1, 2], Some(1), &[]),
                ],
                config: BTreeMap::new(),
            },
        );
        assert_eq!(
            PartitionHealth::of(&meta, 1, true),
            PartitionHealth {
                under_replicated: 1,
                leaderless: 3
            }
        );
        assert_eq!(PartitionHealth::of(&meta, 2, true).under_replicated, 1);
        // Not yet current (registration not applied): leads nothing.
        assert_eq!(
            PartitionHealth::of(&meta, 1, false),
            PartitionHealth {
                under_replicated: 0,
                leaderless: 3
            }
        );
        assert_eq!(
            PartitionHealth::of(&ClusterMetadata::default(), 1, true),
            PartitionHealth::default()
        );
    }
}
