//! A `sluiced` in a cluster: its controller node, its registration, and the
//! broker's local state kept in line with the applied metadata.
//!
//! - Every node runs one controller node of the metadata group
//!   ([`sluice_cluster::Controller`]); its files are in
//!   `<data_dir>/__cluster` (the topic registry skips `__` directories).
//! - At start and until it succeeds, the node proposes `RegisterBroker` with
//!   its advertised native address, cluster address and rack.
//! - A reconcile task follows every applied metadata: it creates the local
//!   topics the metadata has (every broker opens every partition of every
//!   topic; it serves the ones it leads), grows the local topics the
//!   metadata gave more partitions (AddPartitions), gives them the
//!   metadata's config (SetTopicConfig: stored in `topic.meta` and applied
//!   to the open logs), deletes the local topics the metadata no longer has,
//!   and only then publishes the new
//!   [`ClusterView`], so a broker that the view says leads a partition has
//!   it open. A topic directory created from the metadata holds a
//!   `cluster.topic_id` file (32 hex digits); a local topic with a different
//!   id is an older topic of the same name and is replaced, a local topic
//!   without the file (from a single-node data dir) is adopted, and only
//!   topics with the file are deleted when the metadata drops them.
//! - [`Link`] is the broker's [`ClusterLink`]: CreateTopics computes the
//!   placement ([`sluice_broker::placement`]) from the live brokers and
//!   proposes it; create and delete resolve once reconciled here.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_auth::store::{SecurityCommand, SecurityOutcome, SecurityState};
use sluice_broker::cluster::{
    ClusterLink, ClusterView, ControllerInfo, NewTopic, ReplicatedOffset, ViewBroker,
    ViewPartition, ViewTopic,
};
use sluice_broker::error::chain;
use sluice_broker::placement::{assign_replicas, PlacementBroker, PlacementLoad};
use sluice_broker::topic_meta::TopicOverrides;
use sluice_broker::{Broker, BrokerError, ClusterConfig};
use sluice_cluster::{
    ClusterMetadata, CommandResult, CommittedOffset, Controller, ControllerConfig, GroupOffset,
    MetadataCommand, PartitionMove,
};
use sluice_protocol::{PartitionReplicas, ReassignAction, ReassignPartitionsRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Directory of the controller's files inside the data dir.
pub const CLUSTER_DIR: &str = "__cluster";

/// File in a topic directory naming the cluster topic it belongs to.
pub const TOPIC_ID_FILE: &str = "cluster.topic_id";

/// How long a create waits for this broker's own registration.
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// How long one registration attempt may take before it is retried.
const REGISTER_ATTEMPT: Duration = Duration::from_millis(1500);

/// How long create/delete wait for the change to be applied on this broker.
const APPLY_WAIT: Duration = Duration::from_secs(15);

/// The cluster side of a running `sluiced`.
pub struct ClusterNode {
    controller: Arc<Controller>,
    link: Arc<Link>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode").finish_non_exhaustive()
    }
}

/// The broker's [`ClusterLink`] on the controller.
pub struct Link {
    controller: Arc<Controller>,
    node_id: u32,
    /// The view published after each reconcile.
    view: watch::Receiver<Arc<ClusterView>>,
    /// The metadata the published view was built from.
    reconciled: watch::Receiver<Arc<ClusterMetadata>>,
    ids: AtomicU64,
}

fn io_err(path: &Path, source: std::io::Error) -> BrokerError {
    BrokerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn node_u32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX)
}

/// Splits `host:port` (the port last, IPv6 hosts in brackets or not).
fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(0),
        ),
        None => (addr.to_string(), 0),
    }
}

/// The handlers' view of `meta` for node `node_id`; the cluster id and the
/// group coordinators come from the controller `voters` (id to address).
pub fn build_view(
    meta: &ClusterMetadata,
    node_id: u32,
    voters: &BTreeMap<u32, String>,
) -> ClusterView {
    let brokers = meta
        .brokers
        .values()
        .map(|b| {
            let (host, port) = split_addr(&b.native_addr);
            (
                node_u32(b.id),
                ViewBroker {
                    id: node_u32(b.id),
                    host,
                    port,
                    kafka: b.kafka_addr.as_deref().map(split_addr),
                    rack: b.rack.clone(),
                    alive: !b.fenced,
                    draining: b.draining,
                },
            )
        })
        .collect();
    let topics = meta
        .topics
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                ViewTopic {
                    id: t.id,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| ViewPartition {
                            leader: p.leader.map(node_u32),
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas.iter().copied().map(node_u32).collect(),
                            isr: p.in_sync().iter().copied().map(node_u32).collect(),
                        })
                        .collect(),
                    config: t.config.clone(),
                },
            )
        })
        .collect::<HashMap<_, _>>();
    ClusterView {
        node_id,
        cluster_id: cluster_id(voters),
        brokers,
        topics,
        coordinators: voters.keys().copied().collect(),
    }
}

/// A cluster id derived from the voters (the same on every node).
fn cluster_id(voters: &BTreeMap<u32, String>) -> String {
    // FNV-1a: stable across builds and processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, addr) in voters {
        for b in id.to_be_bytes().iter().chain(addr.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("sluice-{h:016x}")
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A local topic's mark: the cluster topic id (hex) and the applied index of
/// the metadata it was opened from. An unreadable mark reads as index
/// `u64::MAX` (never deleted on its account; logged).
fn read_topic_id(dir: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(dir.join(TOPIC_ID_FILE)).ok()?;
    let mut parts = text.split_whitespace();
    let id = parts.next().unwrap_or("").to_string();
    let index = parts
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), "unreadable {TOPIC_ID_FILE}; the topic is kept");
            u64::MAX
        });
    Some((id, index))
}

fn write_topic_id(dir: &Path, id: &[u8; 16], index: u64) -> Result<(), BrokerError> {
    use std::io::Write;
    let path = dir.join(TOPIC_ID_FILE);
    let tmp = dir.join(format!("{TOPIC_ID_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(format!("{} {index}\n", hex(id)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Brings the broker's local topics in line with `meta` (blocking file work).
///
/// Creating is always safe. Deleting or replacing a marked local topic needs
/// `meta` to be at least as new as the metadata the topic was opened from
/// (its mark's index): an older state (a snapshot read at start, before the
/// log is re-applied) must never delete what a newer one created.
fn reconcile(broker: &Broker, meta: &ClusterMetadata) {
    let index = meta.applied_index;
    for (name, t) in &meta.topics {
        let want = hex(&t.id);
        if let Some(local) = broker.topics().get(name) {
            match read_topic_id(local.dir()) {
                Some((have, _)) if have == want => {
                    follow_changes(broker, name, t);
                    continue;
                }
                Some((_, opened_at)) if opened_at > index => continue,
                Some(_) => {
                    tracing::info!(topic = %name, "replacing a local topic deleted and re-created in the cluster");
                    if let Err(e) = broker.delete_topic(name) {
                        tracing::error!(topic = %name, error = %chain(&e), "cannot delete the old local topic");
                        continue;
                    }
                }
                None => {
                    tracing::warn!(topic = %name, "adopting a local topic from before the cluster");
                    if let Err(e) = write_topic_id(local.dir(), &t.id, index) {
                        tracing::error!(topic = %name, error = %chain(&e), "cannot mark the local topic");
                    }
                    follow_changes(broker, name, t);
                    continue;
                }
            }
        }
        let pairs: Vec<(String, String)> = t
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let overrides = TopicOverrides::from_pairs(&pairs).unwrap_or_else(|e| {
            tracing::error!(topic = %name, error = %chain(&e), "topic config from the cluster is not valid here; using the defaults");
            TopicOverrides::default()
        });
        let count = u32::try_from(t.partitions.len()).unwrap_or(u32::MAX);
        match broker.topics().create(name, count, overrides) {
            Ok(local) => {
                if let Err(e) = write_topic_id(local.dir(), &t.id, index) {
                    tracing::error!(topic = %name, error = %chain(&e), "cannot mark the local topic");
                }
            }
            Err(BrokerError::TopicExists(_)) => {}
            Err(e) => {
                tracing::error!(topic = %name, error = %chain(&e), "cannot open a cluster topic here")
            }
        }
    }
    for local in broker.topics().list() {
        if meta.topics.contains_key(local.name()) {
            continue;
        }
        match read_topic_id(local.dir()) {
            Some((_, opened_at)) if opened_at <= index => {}
            // Not from the cluster, or newer than this state.
            _ => continue,
        }
        let name = local.name().to_string();
        drop(local);
        tracing::info!(topic = %name, "deleting a topic the cluster deleted");
        if let Err(e) = broker.delete_topic(&name) {
            tracing::error!(topic = %name, error = %chain(&e), "cannot delete the local topic");
        }
    }
}

/// Brings an existing local topic in line with its metadata: more
/// partitions (never fewer: a local topic with more keeps them, logged) and
/// the metadata's config overrides (a config this broker cannot parse is
/// logged and the local one kept).
fn follow_changes(broker: &Broker, name: &str, t: &sluice_cluster::TopicMeta) {
    let Some(local) = broker.topics().get(name) else {
        return;
    };
    let want = u32::try_from(t.partitions.len()).unwrap_or(u32::MAX);
    let have = local.partition_count();
    if want > have {
        match broker.topics().add_partitions(name, want) {
            Ok(_) => {
                tracing::info!(topic = %name, from = have, to = want, "added partitions from the metadata")
            }
            Err(e) => {
                tracing::error!(topic = %name, error = %chain(&e), "cannot add the metadata's partitions here")
            }
        }
    } else if want < have {
        tracing::warn!(topic = %name, local = have, metadata = want, "the local topic has more partitions than the metadata; keeping them");
    }
    let pairs: Vec<(String, String)> = t
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match TopicOverrides::from_pairs(&pairs) {
        Ok(o) if o == local.meta().overrides => {}
        Ok(o) => match broker.topics().set_overrides(name, o) {
            Ok(_) => tracing::info!(topic = %name, "applied the metadata's topic config"),
            Err(e) => {
                tracing::error!(topic = %name, error = %chain(&e), "cannot apply the metadata's topic config")
            }
        },
        Err(e) => {
            tracing::error!(topic = %name, error = %chain(&e), "topic config from the cluster is not valid here; keeping the local one")
        }
    }
}

impl ClusterNode {
    /// Starts the controller node on `listener`, registers the broker and
    /// keeps its topics in line with the metadata; attaches the link to `broker`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        config: &ClusterConfig,
        data_dir: &Path,
        listener: TcpListener,
        broker: Arc<Broker>,
        native_addr: String,
        kafka_addr: Option<String>,
        rack: Option<String>,
        tls: crate::tls::PeerTls,
    ) -> Result<ClusterNode, BrokerError> {
        let voters: BTreeMap<u64, String> = config
            .voters
            .iter()
            .map(|(id, a)| (u64::from(*id), a.clone()))
            .collect();
        let node_id = u64::from(config.node_id);
        let cluster_addr = match config.voters.get(&config.node_id) {
            Some(a) => a.clone(),
            None => config.cluster_listen.to_string(),
        };
        let mut cc = ControllerConfig::new(node_id, data_dir.join(CLUSTER_DIR), listener, voters);
        cc.join = config.join.clone();
        cc.advertised = Some(cluster_addr.clone());
        cc.broker_session_timeout = config.broker_session_timeout;
        cc.tls = tls.cluster;
        let controller = Controller::start(cc)
            .await
            .map_err(|e| BrokerError::Controller(format!("cannot start: {e}")))?;
        let controller = Arc::new(controller);
        // A broker-only node may know no voters until it has joined: they
        // come from the group's membership, asked again at every view.
        let voters_of = |c: &Controller| -> BTreeMap<u32, String> {
            c.status()
                .voters
                .into_iter()
                .map(|(id, a)| (node_u32(id), a))
                .collect()
        };

        let first = controller.metadata();
        let me = config.node_id;
        // Random per start: this process leads only once the metadata
        // holds this registration (see `replication::apply_roles`).
        let incarnation = {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            h.finish().max(1)
        };
        {
            let (b, m) = (Arc::clone(&broker), Arc::clone(&first));
            tokio::task::spawn_blocking(move || {
                reconcile(&b, &m);
                crate::replication::apply_roles(&b, &m, me, incarnation);
            })
            .await
            .map_err(|e| BrokerError::Controller(e.to_string()))?;
        }
        let (view_tx, view_rx) = watch::channel(Arc::new(build_view(
            &first,
            config.node_id,
            &voters_of(&controller),
        )));
        // The security metadata now comes from the cluster, not the local file.
        broker.security().detach_local_store();
        broker.security().install(first.security.clone());
        let (rec_tx, rec_rx) = watch::channel(first);
        let link = Arc::new(Link {
            controller: Arc::clone(&controller),
            node_id: config.node_id,
            view: view_rx,
            reconciled: rec_rx,
            ids: AtomicU64::new(0),
        });
        broker.attach_cluster(Arc::clone(&link) as Arc<dyn ClusterLink>);
        // The bootstrap admin goes into the cluster metadata if it is missing
        // there (retried while the controller elects a leader).
        {
            let b = Arc::clone(&broker);
            tokio::spawn(async move {
                for _ in 0..120 {
                    let cmds = match b.security().admin_commands() {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(error = %chain(&e), "bootstrap admin");
                            return;
                        }
                    };
                    if cmds.is_empty() {
                        return;
                    }
                    let mut done = true;
                    for cmd in cmds {
                        if let Err(e) = sluice_broker::security::apply(&b, cmd).await {
                            tracing::debug!(error = %chain(&e), "bootstrap admin not stored yet; retrying");
                            done = false;
                            break;
                        }
                    }
                    if done {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tracing::error!("the bootstrap admin could not be stored in the cluster metadata");
            });
        }

        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        // Reconcile each applied metadata, then publish it.
        let mut applied = controller.watch();
        let (b, s, node) = (Arc::clone(&broker), stop.clone(), config.node_id);
        let c = Arc::clone(&controller);
        tasks.push(tokio::spawn(async move {
            let mut installed: Option<Arc<ClusterMetadata>> = None;
            loop {
                let meta = applied.borrow_and_update().clone();
                if installed
                    .as_ref()
                    .is_none_or(|i| i.security != meta.security)
                {
                    b.security().install(meta.security.clone());
                    installed = Some(Arc::clone(&meta));
                }
                let (b2, m2) = (Arc::clone(&b), Arc::clone(&meta));
                let work = move || {
                    reconcile(&b2, &m2);
                    crate::replication::apply_roles(&b2, &m2, node, incarnation);
                };
                if let Err(e) = tokio::task::spawn_blocking(work).await {
                    tracing::error!(error = %e, "reconcile task failed");
                }
                let _ = view_tx.send(Arc::new(build_view(&meta, node, &voters_of(&c))));
                let _ = rec_tx.send(meta);
                tokio::select! {
                    _ = s.cancelled() => return,
                    r = applied.changed() => if r.is_err() { return },
                }
            }
        }));
        // Replication: fetchers per leader broker, ISR changes of led partitions.
        let fetchers = crate::replication::Fetchers::new(
            Arc::clone(&broker),
            me,
            link.reconciled.clone(),
            stop.clone(),
            tls.replication,
        );
        tasks.push(tokio::spawn(fetchers.run()));
        tasks.push(tokio::spawn(crate::replication::isr_loop(
            Arc::clone(&broker),
            me,
            Arc::clone(&controller),
            link.reconciled.clone(),
            config.replica_lag_max,
            stop.clone(),
        )));
        // Register (again at every start: the native address may have changed).
        let (c, s) = (Arc::clone(&controller), stop.clone());
        tasks.push(tokio::spawn(async move {
            let cmd = MetadataCommand::RegisterBroker {
                id: node_id,
                native_addr,
                cluster_addr,
                kafka_addr,
                rack,
                incarnation,
            };
            // Short attempts: this broker leads nothing until registered
            // (see `replication::apply_roles`), so a proposal stuck on a
            // leader that died with the rest of the cluster must not hold it.
            let mut backoff = Duration::from_millis(100);
            loop {
                match tokio::time::timeout(REGISTER_ATTEMPT, c.propose(cmd.clone())).await {
                    Ok(Ok(_)) => {
                        tracing::info!(node = node_id, "registered with the cluster controller");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, "registering with the controller; retrying")
                    }
                    Err(_) => tracing::info!("registering with the controller timed out; retrying"),
                }
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }));
        Ok(ClusterNode {
            controller,
            link,
            tasks,
            stop,
        })
    }

    /// The broker's link (for tests and embedding).
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// Stops the tasks and the controller node.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        drop(self.link);
        match Arc::try_unwrap(self.controller) {
            Ok(c) => {
                if let Err(e) = c.shutdown().await {
                    tracing::warn!(error = %e, "controller shutdown");
                }
            }
            Err(_) => tracing::debug!("controller still referenced at shutdown; dropped later"),
        }
    }
}

impl Link {
    /// Controlled shutdown: asks the controller to move every partition
    /// this broker leads to another in-sync replica (`ShutdownBroker`) and
    /// waits (at most `timeout`) until the applied metadata shows none led
    /// here. Clients meanwhile get NOT_LEADER and follow the new leaders.
    pub async fn move_leaderships_away(&self, timeout: Duration) {
        let me = u64::from(self.node_id);
        let leads = |m: &ClusterMetadata| {
            m.topics
                .values()
                .flat_map(|t| t.partitions.iter())
                .any(|p| p.leader == Some(me))
        };
        if !leads(&self.reconciled.borrow()) {
            return;
        }
        tracing::info!("controlled shutdown: moving partition leaderships to other replicas");
        let mut rx = self.reconciled.clone();
        let work = async {
            let cmd = MetadataCommand::ShutdownBroker { id: me };
            if let Err(e) = self.controller.propose(cmd).await {
                tracing::warn!(error = %e, "controlled shutdown not accepted by the controller");
                return false;
            }
            rx.wait_for(|m| !leads(m)).await.is_ok()
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(true) => tracing::info!("controlled shutdown: this broker leads no partition"),
            Ok(false) => {}
            Err(_) => tracing::warn!(
                ?timeout,
                "controlled shutdown: leaderships still here at the deadline"
            ),
        }
    }

    /// A fresh 16-byte topic id (never all zeros).
    fn topic_id(&self) -> [u8; 16] {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut id = [0u8; 16];
        for (i, chunk) in id.chunks_mut(8).enumerate() {
            // RandomState is seeded from the OS per instance.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(self.node_id);
            h.write_u64(n);
            h.write_u128(now);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_be_bytes());
        }
        if id == [0u8; 16] {
            id[15] = 1;
        }
        id
    }

    /// Waits until the reconciled metadata satisfies `done`.
    async fn wait_applied(
        &self,
        what: &str,
        done: impl Fn(&ClusterMetadata) -> bool,
    ) -> Result<(), BrokerError> {
        let mut rx = self.reconciled.clone();
        let wait = async {
            loop {
                if done(&rx.borrow_and_update()) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(BrokerError::ShuttingDown);
                }
            }
        };
        match tokio::time::timeout(APPLY_WAIT, wait).await {
            Ok(r) => r,
            Err(_) => Err(BrokerError::Controller(format!(
                "{what} was committed but not applied on this broker within {} s",
                APPLY_WAIT.as_secs()
            ))),
        }
    }

    async fn propose(&self, cmd: MetadataCommand) -> Result<CommandResult, BrokerError> {
        self.controller
            .propose(cmd)
            .await
            .map_err(|e| BrokerError::Controller(e.to_string()))
    }

    /// The view once this broker is registered and alive in it (bounded by
    /// [`REGISTER_WAIT`]: a node that has just started is still registering,
    /// and placing replicas on a cluster with no live broker would fail).
    async fn registered_view(&self) -> Arc<ClusterView> {
        let mut rx = self.view.clone();
        let node = self.node_id;
        let wait = async move { rx.wait_for(|v| v.is_alive(node)).await.map(|v| v.clone()) };
        match tokio::time::timeout(REGISTER_WAIT, wait).await {
            Ok(Ok(v)) => v,
            _ => self.view.borrow().clone(),
        }
    }

    async fn create(&self, t: NewTopic) -> Result<(), BrokerError> {
        let view = self.registered_view().await;
        let (brokers, load) = placement_input(&view);
        let live = u16::try_from(brokers.len()).unwrap_or(u16::MAX);
        let factor = t.replication_factor.unwrap_or(live.min(3));
        if factor == 0 {
            return Err(BrokerError::InvalidReplicationFactor {
                factor: 0,
                brokers: u32::from(live),
            });
        }
        let assignment = assign_replicas(&brokers, t.partitions, factor, &load)?;
        let id = self.topic_id();
        let cmd = MetadataCommand::CreateTopic {
            name: t.name.clone(),
            id,
            assignment,
            config: t.config.into_iter().collect(),
        };
        match self.propose(cmd).await? {
            CommandResult::Ok => {}
            CommandResult::TopicAlreadyExists => return Err(BrokerError::TopicExists(t.name)),
            other => {
                return Err(BrokerError::Controller(format!(
                    "create refused: {other:?}"
                )))
            }
        }
        let name = t.name.clone();
        self.wait_applied("the topic", |m| {
            m.topics.get(&name).is_some_and(|x| x.id == id)
        })
        .await
    }

    async fn grow(&self, name: String, total: u32) -> Result<(), BrokerError> {
        let view = self.view.borrow().clone();
        let Some(topic) = view.topics.get(&name) else {
            return Err(BrokerError::UnknownTopic(name));
        };
        let have = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        if total <= have {
            return Err(BrokerError::PartitionsNotIncreased {
                topic: name,
                current: have,
                requested: total,
            });
        }
        if total > sluice_broker::config::MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions {
                count: total,
                max: sluice_broker::config::MAX_PARTITIONS,
            });
        }
        let factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
        let (brokers, load) = placement_input(&view);
        let factor = u16::try_from(factor).unwrap_or(u16::MAX);
        let assignment = assign_replicas(&brokers, total - have, factor, &load)?;
        let cmd = MetadataCommand::AddPartitions {
            name: name.clone(),
            assignment,
        };
        match self.propose(cmd).await? {
            CommandResult::Ok => {}
            CommandResult::UnknownTopic => return Err(BrokerError::UnknownTopic(name)),
            other => return Err(BrokerError::Controller(format!("refused: {other:?}"))),
        }
        let want = total as usize;
        self.wait_applied("the new partitions", |m| {
            m.topics
                .get(&name)
                .is_some_and(|t| t.partitions.len() >= want)
        })
        .await
    }

    async fn reassign(
        &self,
        r: ReassignPartitionsRequest,
    ) -> Result<Vec<PartitionReplicas>, BrokerError> {
        let cmd = match r.action {
            ReassignAction::Move if r.moves.is_empty() => {
                return Err(BrokerError::InvalidReassignment(
                    "no partition listed".into(),
                ))
            }
            ReassignAction::Move => MetadataCommand::ReassignPartitions {
                moves: r
                    .moves
                    .iter()
                    .map(|m| PartitionMove {
                        topic: m.topic.clone(),
                        partition: m.partition,
                        replicas: m.replicas.iter().copied().map(u64::from).collect(),
                    })
                    .collect(),
            },
            ReassignAction::Rebalance => MetadataCommand::Rebalance,
            ReassignAction::Drain | ReassignAction::Undrain => MetadataCommand::DrainBroker {
                id: u64::from(r.node_id),
                draining: r.action == ReassignAction::Drain,
            },
        };
        let moves = match self.propose(cmd).await? {
            CommandResult::Moves(moves) => moves,
            CommandResult::UnknownTopic => {
                let view = self.view.borrow().clone();
                let missing = r
                    .moves
                    .iter()
                    .find(|m| {
                        view.topics
                            .get(&m.topic)
                            .is_none_or(|t| m.partition as usize >= t.partitions.len())
                    })
                    .map(|m| (m.topic.clone(), m.partition));
                return Err(match missing {
                    Some((topic, partition)) if view.topics.contains_key(&topic) => {
                        BrokerError::UnknownPartition { topic, partition }
                    }
                    Some((topic, _)) => BrokerError::UnknownTopic(topic),
                    None => BrokerError::InvalidReassignment("unknown topic".into()),
                });
            }
            CommandResult::UnknownBroker => {
                return Err(BrokerError::InvalidReassignment(format!(
                    "broker {} is not registered",
                    r.node_id
                )))
            }
            CommandResult::Invalid(why) => return Err(BrokerError::InvalidReassignment(why)),
            other => return Err(BrokerError::Controller(format!("refused: {other:?}"))),
        };
        let drain = matches!(r.action, ReassignAction::Drain | ReassignAction::Undrain)
            .then_some((u64::from(r.node_id), r.action == ReassignAction::Drain));
        let started = moves.clone();
        self.wait_applied("the reassignment", move |m| {
            let flag =
                drain.is_none_or(|(id, d)| m.brokers.get(&id).is_some_and(|b| b.draining == d));
            flag && started.iter().all(|mv| {
                m.topics
                    .get(&mv.topic)
                    .and_then(|t| t.partitions.get(mv.partition as usize))
                    .is_some_and(|p| p.target() == mv.replicas)
            })
        })
        .await?;
        Ok(moves
            .into_iter()
            .map(|m| PartitionReplicas {
                topic: m.topic,
                partition: m.partition,
                replicas: m.replicas.into_iter().map(node_u32).collect(),
            })
            .collect())
    }

    async fn alter(
        &self,
        name: String,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<(), BrokerError> {
        let cmd = MetadataCommand::SetTopicConfig {
            name: name.clone(),
            changes: changes.iter().cloned().collect(),
        };
        match self.propose(cmd).await? {
            CommandResult::Ok => {}
            CommandResult::UnknownTopic => return Err(BrokerError::UnknownTopic(name)),
            other => return Err(BrokerError::Controller(format!("refused: {other:?}"))),
        }
        self.wait_applied("the config change", |m| {
            m.topics.get(&name).is_some_and(|t| {
                changes
                    .iter()
                    .all(|(k, v)| t.config.get(k).map(String::as_str) == v.as_deref())
            })
        })
        .await
    }

    async fn delete(&self, name: String) -> Result<(), BrokerError> {
        match self
            .propose(MetadataCommand::DeleteTopic { name: name.clone() })
            .await?
        {
            CommandResult::Ok => {}
            CommandResult::UnknownTopic => return Err(BrokerError::UnknownTopic(name)),
            other => {
                return Err(BrokerError::Controller(format!(
                    "delete refused: {other:?}"
                )))
            }
        }
        self.wait_applied("the deletion", |m| !m.topics.contains_key(&name))
            .await
    }
}

/// The live brokers and the current leader/replica counts, for placement.
fn placement_input(view: &ClusterView) -> (Vec<PlacementBroker>, PlacementLoad) {
    let brokers = view
        .live_brokers()
        .filter(|b| !b.draining)
        .map(|b| PlacementBroker {
            id: u64::from(b.id),
            rack: b.rack.clone(),
        })
        .collect();
    let mut load = PlacementLoad::default();
    for topic in view.topics.values() {
        for p in &topic.partitions {
            if let Some(l) = p.leader {
                *load.leaders.entry(u64::from(l)).or_default() += 1;
            }
            for r in &p.replicas {
                *load.replicas.entry(u64::from(*r)).or_default() += 1;
            }
        }
    }
    (brokers, load)
}

/// Whether the applied security metadata shows `cmd`'s effect (so this
/// broker authenticates and authorizes with it).
fn security_effect_visible(state: &SecurityState, cmd: &SecurityCommand) -> bool {
    match cmd {
        SecurityCommand::UpsertCredential { user, credential } => {
            state.credential(user, credential.mechanism).as_ref() == Some(credential)
        }
        SecurityCommand::DeleteCredential { user, mechanism } => {
            state.credential(user, *mechanism).is_none()
        }
        SecurityCommand::DeleteUser { user } => !state.users.contains_key(user),
        SecurityCommand::CreateAcls { bindings } => bindings.iter().all(|b| state.acls.contains(b)),
        SecurityCommand::DeleteAcls { filters } => !state
            .acls
            .iter()
            .any(|b| filters.iter().any(|f| f.matches(b))),
        SecurityCommand::SetQuota { entity, values } => {
            let empty = values.producer_byte_rate.is_none()
                && values.consumer_byte_rate.is_none()
                && values.request_rate.is_none();
            match state.quotas.get(entity) {
                Some(v) => v == values,
                None => empty,
            }
        }
    }
}

impl ClusterLink for Link {
    fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    fn security_command(
        &self,
        cmd: SecurityCommand,
    ) -> BoxFuture<'static, Result<SecurityOutcome, BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move {
            let effect = cmd.clone();
            match this.propose(MetadataCommand::Security(cmd)).await? {
                CommandResult::Security(out) => {
                    this.wait_applied("the security change", |m| {
                        security_effect_visible(&m.security, &effect)
                    })
                    .await?;
                    Ok(out)
                }
                other => Err(BrokerError::Controller(format!(
                    "security change refused: {other:?}"
                ))),
            }
        })
    }

    fn commit_offsets(
        &self,
        group: String,
        offsets: Vec<ReplicatedOffset>,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move {
            let offsets = offsets
                .into_iter()
                .map(|o| GroupOffset {
                    topic: o.topic,
                    partition: o.partition,
                    committed: CommittedOffset {
                        offset: o.offset,
                        timestamp_ms: o.timestamp_ms,
                        metadata: o.metadata,
                    },
                })
                .collect();
            match this
                .propose(MetadataCommand::CommitOffsets { group, offsets })
                .await?
            {
                CommandResult::Ok => Ok(()),
                other => Err(BrokerError::Controller(format!(
                    "offset commit refused: {other:?}"
                ))),
            }
        })
    }

    fn delete_group_offsets(&self, group: String) -> BoxFuture<'static, Result<(), BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move {
            match this
                .propose(MetadataCommand::DeleteGroupOffsets { group })
                .await?
            {
                CommandResult::Ok => Ok(()),
                other => Err(BrokerError::Controller(format!(
                    "group offsets delete refused: {other:?}"
                ))),
            }
        })
    }

    fn group_offsets(&self, group: &str) -> Vec<ReplicatedOffset> {
        let meta = self.controller.metadata();
        let Some(g) = meta.group_offsets.get(group) else {
            return Vec::new();
        };
        g.iter()
            .flat_map(|(topic, parts)| {
                parts.iter().map(move |(p, c)| ReplicatedOffset {
                    topic: topic.clone(),
                    partition: *p,
                    offset: c.offset,
                    timestamp_ms: c.timestamp_ms,
                    metadata: c.metadata.clone(),
                })
            })
            .collect()
    }

    fn controller(&self) -> ControllerInfo {
        let s = self.controller.status();
        ControllerInfo {
            leader: s.leader.map(node_u32),
            epoch: s.term,
        }
    }

    fn create_topic(&self, topic: NewTopic) -> BoxFuture<'static, Result<(), BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.create(topic).await })
    }

    fn delete_topic(&self, name: String) -> BoxFuture<'static, Result<(), BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.delete(name).await })
    }

    fn reassign(
        &self,
        request: ReassignPartitionsRequest,
    ) -> BoxFuture<'static, Result<Vec<PartitionReplicas>, BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.reassign(request).await })
    }

    fn add_partitions(
        &self,
        name: String,
        total: u32,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.grow(name, total).await })
    }

    fn alter_topic_config(
        &self,
        name: String,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move { this.alter(name, changes).await })
    }

    fn allocate_producer_ids(&self, count: u64) -> BoxFuture<'static, Result<i64, BrokerError>> {
        let this = self.clone_handle();
        Box::pin(async move {
            match this
                .propose(MetadataCommand::AllocateProducerIds { count })
                .await?
            {
                CommandResult::ProducerIdBlock { start, .. } => i64::try_from(start)
                    .map_err(|_| BrokerError::Controller("producer ids exhausted".into())),
                other => Err(BrokerError::Controller(format!(
                    "producer id allocation refused: {other:?}"
                ))),
            }
        })
    }
}

impl Link {
    /// A copy sharing the controller and the watches (for 'static futures).
    fn clone_handle(&self) -> Link {
        Link {
            controller: Arc::clone(&self.controller),
            node_id: self.node_id,
            view: self.view.clone(),
            reconciled: self.reconciled.clone(),
            ids: AtomicU64::new(self.ids.fetch_add(1 << 32, Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_id_depends_on_the_voters_only_and_addresses_split() {
        let a: BTreeMap<u32, String> = [(1, "h:1".to_string()), (2, "h:2".to_string())].into();
        let b: BTreeMap<u32, String> = [(1, "h:1".to_string()), (3, "h:3".to_string())].into();
        assert_eq!(cluster_id(&a), cluster_id(&a.clone()));
        assert_ne!(cluster_id(&a), cluster_id(&b));
        assert_eq!(
            split_addr("127.0.0.1:7171"),
            ("127.0.0.1".to_string(), 7171)
        );
        assert_eq!(split_addr("[::1]:7171"), ("::1".to_string(), 7171));
    }

    fn meta_with(index: u64, topics: &[(&str, u8, usize)]) -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        for (name, id, parts) in topics {
            let r = m.apply(&MetadataCommand::CreateTopic {
                name: name.to_string(),
                id: [*id; 16],
                assignment: vec![vec![1]; *parts],
                config: [("retention.ms".to_string(), "60000".to_string())].into(),
            });
            assert_eq!(r, CommandResult::Ok);
        }
        m.applied_index = index;
        m
    }

    /// A broker with default settings on `dir`.
    fn open_broker(dir: &Path) -> Broker {
        let config = sluice_broker::ConfigLayer {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        Broker::open(&config, sluice_broker::Metrics::new()).unwrap()
    }

    #[test]
    fn topic_id_file_round_trips_and_a_damaged_index_keeps_the_topic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = [0xab; 16];
        write_topic_id(dir.path(), &id, 42).expect("write");
        let text = std::fs::read_to_string(dir.path().join(TOPIC_ID_FILE)).expect("read");
        assert_eq!(text, format!("{} 42\n", "ab".repeat(16)));
        assert_eq!(read_topic_id(dir.path()), Some(("ab".repeat(16), 42)));
        assert!(!dir.path().join(format!("{TOPIC_ID_FILE}.tmp")).exists());
        std::fs::write(dir.path().join(TOPIC_ID_FILE), "abab\n").expect("damage");
        assert_eq!(read_topic_id(dir.path()), Some(("abab".into(), u64::MAX)));
        std::fs::remove_file(dir.path().join(TOPIC_ID_FILE)).expect("remove");
        assert_eq!(read_topic_id(dir.path()), None);
    }

    #[test]
    fn reconcile_creates_replaces_and_deletes_only_from_newer_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path());
        // A topic from before the cluster: adopted when the cluster has it, else left alone.
        broker.create_topic("old", 1, &[]).unwrap();
        broker.create_topic("mine", 1, &[]).unwrap();

        reconcile(&broker, &meta_with(5, &[("a", 1, 2), ("old", 2, 1)]));
        let a = broker.topics().get("a").expect("created from the metadata");
        assert_eq!(a.partition_count(), 2);
        assert_eq!(a.config().retention_ms, Some(60000));
        assert_eq!(read_topic_id(a.dir()), Some((hex(&[1; 16]), 5)));
        let old = broker.topics().get("old").expect("adopted");
        assert_eq!(read_topic_id(old.dir()), Some((hex(&[2; 16]), 5)));

        // An older state (a snapshot read at start) deletes and replaces nothing.
        reconcile(&broker, &meta_with(3, &[("a", 9, 1)]));
        assert_eq!(
            read_topic_id(broker.topics().get("a").unwrap().dir()),
            Some((hex(&[1; 16]), 5))
        );
        assert!(broker.topics().get("old").is_some());

        // A newer one: "a" was deleted and re-created (new id), "old" deleted.
        reconcile(&broker, &meta_with(8, &[("a", 9, 3)]));
        let a = broker.topics().get("a").expect("re-created");
        assert_eq!(a.partition_count(), 3);
        assert_eq!(read_topic_id(a.dir()), Some((hex(&[9; 16]), 8)));
        assert!(broker.topics().get("old").is_none());
        // Never part of the cluster: kept.
        assert!(broker.topics().get("mine").is_some());
        assert!(broker.close().is_ok());
    }

    #[test]
    fn reconcile_grows_topics_and_follows_config_changes() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_broker(dir.path());
        let mut m = meta_with(5, &[("a", 1, 2)]);
        reconcile(&broker, &m);
        let mut b = sluice_protocol::batch::RecordBatchBuilder::new();
        b.push(1_700_000_000_000, None, Some(b"kept"), &[]);
        broker
            .append("a", 1, &b.finish(), sluice_broker::Acks::Leader)
            .unwrap();

        // AddPartitions and SetTopicConfig applied to the metadata.
        let r = m.apply(&MetadataCommand::AddPartitions {
            name: "a".into(),
            assignment: vec![vec![1]; 2],
        });
        assert_eq!(r, CommandResult::Ok);
        let r = m.apply(&MetadataCommand::SetTopicConfig {
            name: "a".into(),
            changes: [
                ("retention.ms".to_string(), None),
                ("retention.bytes".to_string(), Some("8192".to_string())),
                ("flush".to_string(), Some("os".to_string())),
            ]
            .into(),
        });
        assert_eq!(r, CommandResult::Ok);
        m.applied_index = 6;
        reconcile(&broker, &m);
        let a = broker.topics().get("a").unwrap();
        assert_eq!(a.partition_count(), 4);
        assert_eq!(a.partitions().len(), 4);
        assert_eq!(a.partitions()[1].end_offset(), 1, "old data kept");
        assert_eq!(a.config().retention_ms, None);
        assert_eq!(a.config().retention_bytes, Some(8192));
        assert_eq!(a.config().flush, sluice_broker::config::FlushMode::Os);
        for p in a.partitions() {
            assert_eq!(p.log().config().retention_bytes, Some(8192));
        }
        // Same id, same mark: the topic was changed in place, not re-created.
        assert_eq!(read_topic_id(a.dir()), Some((hex(&[1; 16]), 5)));
        // Applying the same metadata again changes nothing.
        reconcile(&broker, &m);
        assert!(Arc::ptr_eq(&a, &broker.topics().get("a").unwrap()));
        // A config this broker cannot parse keeps the local one.
        m.apply(&MetadataCommand::SetTopicConfig {
            name: "a".into(),
            changes: [("segment.bytes".to_string(), Some("12".to_string()))].into(),
        });
        m.applied_index = 7;
        reconcile(&broker, &m);
        assert_eq!(
            broker.topics().get("a").unwrap().config().retention_bytes,
            Some(8192)
        );
        assert!(broker.close().is_ok());
        drop(a);
        drop(broker);

        // Persisted: a restart opens four partitions with the new config.
        let broker = open_broker(dir.path());
        let a = broker.topics().get("a").unwrap();
        assert_eq!(a.partitions().len(), 4);
        assert_eq!(a.config().retention_bytes, Some(8192));
        assert_eq!(a.partitions()[1].end_offset(), 1);
        assert!(broker.close().is_ok());
    }

    #[test]
    fn the_view_reports_fenced_brokers_as_not_alive() {
        let mut m = ClusterMetadata::default();
        for id in [1u64, 2] {
            m.apply(&MetadataCommand::RegisterBroker {
                id,
                native_addr: format!("127.0.0.1:{}", 7170 + id),
                cluster_addr: String::new(),
                kafka_addr: None,
                rack: Some("r".into()),
                incarnation: 0,
            });
        }
        m.apply(&MetadataCommand::FenceBroker { id: 2 });
        m.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: [7; 16],
            assignment: vec![vec![1], vec![2]],
            config: BTreeMap::new(),
        });
        let v = build_view(&m, 1, &[(1, "127.0.0.1:7271".to_string())].into());
        assert!(v.is_alive(1) && !v.is_alive(2));
        assert_eq!(v.brokers[&1].port, 7171);
        assert_eq!(v.leadership("t", 0), Ok(()));
        assert_eq!(
            v.leadership("t", 1),
            Err(sluice_protocol::ErrorCode::LeaderNotAvailable)
        );
    }
}
