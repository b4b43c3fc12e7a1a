//! The controller: one openraft node of the metadata group, its listener and API.
//!
//! Bootstrap: when this node's log and vote are empty and its id is the lowest
//! of the voters, it calls openraft's `initialize` with all voters; the others
//! wait to be contacted. A node with any persisted state never initializes.
//!
//! Proposals go to the leader: locally if this node leads, otherwise as a
//! client-write frame to the leader's cluster address. After a failure the
//! proposal is retried once, against whatever leader is then known. A retried
//! command whose first attempt did commit is applied twice; commands are
//! designed so that a second apply is refused harmlessly (e.g. CreateTopic
//! answers TopicAlreadyExists) or is benign (AllocateProducerIds skips a block).
//!
//! Broker-only nodes: a node whose id is not among the voters starts Raft
//! without initializing and sends a join frame to the configured voters
//! (following redirects to the leader) until it is a learner of the group;
//! the leader adds it with openraft's `add_learner` (or updates its address).
//! A learner receives and applies the whole metadata log but never votes.
//! A node that finds itself in the group's membership at start-up (its own
//! log says so) does not join again.
//!
//! Liveness: every node sends a heartbeat frame to every voter every
//! `broker_heartbeat_interval`; each voter keeps the time of the last one per
//! node in memory. While it leads, the leader fences (`FenceBroker`) each
//! registered broker silent for `broker_session_timeout` (by its own
//! records, which it kept as a follower too; a broker it never heard from
//! counts from the start of its term), but not in the first
//! `min(session / 4, 1 s)` of its term, so that brokers that heartbeat the
//! old leader alone reach it. Fencing a broker moves its partition
//! leaderships (see `metadata.rs`): when the controller leader dies with a
//! partition leader, failover takes an election plus that grace, not a
//! whole session. It unfences (`UnfenceBroker`) a fenced broker whose
//! heartbeat is recent.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::network::{
    self, ClientWriteReply, ClusterTls, HeartbeatReply, HeartbeatRequest, JoinReply, JoinRequest,
    Membership, Network, PeerClient, KIND_CLIENT_WRITE, KIND_HEARTBEAT, KIND_JOIN,
};
use crate::raft::{LogStore, StateMachine, TypeConfig};
use crate::{ClusterError, ClusterMetadata, CommandResult, MetadataCommand, NodeId, Result};

/// Settings of one controller node.
#[derive(Debug)]
pub struct ControllerConfig {
    /// This node's id: a voter, or a broker-only node when not in `voters`.
    pub node_id: NodeId,
    /// Directory of the controller's files (created if missing).
    pub dir: PathBuf,
    /// The bound cluster listener.
    pub listener: TcpListener,
    /// Voter ids and their cluster addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Cluster addresses a broker-only node sends its join request to.
    pub join: Vec<String>,
    /// This node's cluster address as peers reach it (required off `voters`).
    pub advertised: Option<String>,
    /// A broker silent for this long is fenced by the leader.
    pub broker_session_timeout: Duration,
    /// How often this node sends its heartbeat (at most a quarter of the session).
    pub broker_heartbeat_interval: Duration,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the election timeout.
    pub election_min: Duration,
    /// Upper bound of the election timeout.
    pub election_max: Duration,
    /// Timeout of each request to a peer.
    pub rpc_timeout: Duration,
    /// How long `propose` waits for a leader to be known.
    pub leader_wait: Duration,
    /// A snapshot is taken after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind the snapshot (lagging followers catch up from
    /// them instead of receiving the whole snapshot).
    pub keep_logs_after_snapshot: u64,
    /// TLS of the cluster listener and of connections to peers (plain by default).
    pub tls: ClusterTls,
}

impl ControllerConfig {
    /// Settings with the defaults for timeouts (suited to a LAN or loopback).
    pub fn new(
        node_id: NodeId,
        dir: PathBuf,
        listener: TcpListener,
        voters: BTreeMap<NodeId, String>,
    ) -> Self {
        ControllerConfig {
            node_id,
            dir,
            listener,
            voters,
            join: Vec::new(),
            advertised: None,
            broker_session_timeout: Duration::from_millis(9000),
            broker_heartbeat_interval: Duration::from_millis(2000),
            heartbeat: Duration::from_millis(60),
            election_min: Duration::from_millis(300),
            election_max: Duration::from_millis(600),
            rpc_timeout: Duration::from_millis(1000),
            leader_wait: Duration::from_secs(10),
            snapshot_every: 1000,
            keep_logs_after_snapshot: 1000,
            tls: ClusterTls::default(),
        }
    }
}

/// What a controller knows of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// Current leader, if known.
    pub leader: Option<NodeId>,
    /// Current Raft term.
    pub term: u64,
    /// Voter ids and cluster addresses.
    pub voters: BTreeMap<NodeId, String>,
    /// Learner (broker-only) ids and cluster addresses.
    pub learners: BTreeMap<NodeId, String>,
}

/// State shared by the controller, its listener and its background tasks.
struct Shared {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    voters: BTreeMap<NodeId, String>,
    /// Last heartbeat received per node (meaningful on the leader only).
    seen: Mutex<HashMap<NodeId, Instant>>,
    rpc_timeout: Duration,
    /// How peers are connected to (plain or TLS).
    connector: sluice_tls::Connector,
}

impl Shared {
    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// A client for the cluster listener at `addr`.
    fn client(&self, addr: String) -> PeerClient {
        PeerClient::with_connector(addr, self.rpc_timeout, self.connector.clone())
    }

    /// The cluster address of `id`: from the membership, else the configured voters.
    fn addr_of(&self, id: NodeId) -> Option<String> {
        let m = self.metrics();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.voters.get(&id).cloned())
    }

    fn redirect(&self, leader: Option<NodeId>) -> (Option<NodeId>, Option<String>) {
        (leader, leader.and_then(|l| self.addr_of(l)))
    }

    fn record(&self, id: NodeId) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(id, Instant::now());
        }
    }

    fn last_seen(&self, id: NodeId) -> Option<Instant> {
        self.seen.lock().ok().and_then(|s| s.get(&id).copied())
    }
}

fn forward_or_failed(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> JoinReply {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            JoinReply::ForwardToLeader(f.leader_id, f.leader_node.map(|n| n.addr))
        }
        other => JoinReply::Failed(other.to_string()),
    }
}

impl Membership for Shared {
    async fn join(&self, req: JoinRequest) -> JoinReply {
        let m = self.metrics();
        if m.current_leader != Some(self.node_id) {
            let (l, a) = self.redirect(m.current_leader);
            return JoinReply::ForwardToLeader(l, a);
        }
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|v| v == req.id) {
            return JoinReply::Refused(format!(
                "node {} is a controller voter; a broker-only node needs an id not in peers",
                req.id
            ));
        }
        if req.addr.is_empty() {
            return JoinReply::Refused("a joining node must give its cluster address".into());
        }
        let node = BasicNode::new(req.addr.clone());
        let result = match membership.get_node(&req.id) {
            Some(n) if n.addr == req.addr => return JoinReply::Joined,
            // A learner that moved: learners do not vote, so replacing the
            // address cannot split the group.
            Some(_) => {
                let mut set = BTreeMap::new();
                set.insert(req.id, node);
                self.raft
                    .change_membership(ChangeMembers::SetNodes(set), true)
                    .await
            }
            None => self.raft.add_learner(req.id, node, false).await,
        };
        match result {
            Ok(_) => {
                tracing::info!(node = req.id, addr = %req.addr, "broker-only node joined as a learner");
                JoinReply::Joined
            }
            Err(e) => forward_or_failed(e),
        }
    }

    fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatReply {
        // Every voter keeps the times: a new leader then knows who went
        // silent before its term and fences them without a full session.
        self.record(req.id);
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.node_id) {
            let (l, a) = self.redirect(leader);
            return HeartbeatReply::ForwardToLeader(l, a);
        }
        HeartbeatReply::Accepted
    }
}

/// A running controller node.
pub struct Controller {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    leader_wait: Duration,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.shared.node_id)
            .finish()
    }
}

impl Controller {
    /// Opens the files in `config.dir`, starts Raft and the listener,
    /// bootstraps (lowest voter) or joins (broker-only node) if due.
    pub async fn start(config: ControllerConfig) -> Result<Controller> {
        let voter = config.voters.contains_key(&config.node_id);
        let advertised = match (voter, &config.advertised) {
            (true, _) => config.voters.get(&config.node_id).cloned(),
            (false, Some(a)) => Some(a.clone()),
            (false, None) => None,
        };
        let Some(advertised) = advertised else {
            return Err(ClusterError::Raft(format!(
                "node {} is not a voter and has no advertised cluster address",
                config.node_id
            )));
        };
        if !voter && config.join.is_empty() {
            return Err(ClusterError::Raft(format!(
                "node {} is not among the voters and has no join address",
                config.node_id
            )));
        }
        std::fs::create_dir_all(&config.dir).map_err(|source| ClusterError::Io {
            op: "create dir",
            path: config.dir.clone(),
            source,
        })?;
        let log = LogStore::open(&config.dir)?;
        let sm = StateMachine::open(&config.dir)?;
        let pristine = log.is_pristine();
        let raft_config = openraft::Config {
            cluster_name: "sluice-controller".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_min.as_millis() as u64,
            election_timeout_max: config.election_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_logs_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let net = Network {
            timeout: config.rpc_timeout,
            connector: config.tls.connector.clone(),
        };
        let raft = Raft::new(config.node_id, Arc::new(raft_config), net, log, sm.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let shared = Arc::new(Shared {
            node_id: config.node_id,
            raft: raft.clone(),
            sm,
            voters: config.voters.clone(),
            seen: Mutex::new(HashMap::new()),
            rpc_timeout: config.rpc_timeout,
            connector: config.tls.connector.clone(),
        });
        let mut tasks = vec![tokio::spawn(network::serve(
            config.listener,
            config.tls.clone(),
            raft.clone(),
            Arc::clone(&shared),
        ))];
        let lowest = config.voters.keys().next().copied();
        if voter && pristine && lowest == Some(config.node_id) {
            tracing::info!(node = config.node_id, voters = ?config.voters, "initializing controller group");
            raft.initialize(network::nodes(&config.voters))
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        if !voter {
            tasks.push(tokio::spawn(join_loop(
                Arc::clone(&shared),
                config.join.clone(),
                advertised,
            )));
        }
        let session = config.broker_session_timeout;
        let interval = config.broker_heartbeat_interval.min(session / 4);
        tasks.push(tokio::spawn(heartbeat_loop(Arc::clone(&shared), interval)));
        tasks.push(tokio::spawn(fence_loop(
            Arc::clone(&shared),
            session,
            (session / 8).clamp(Duration::from_millis(20), Duration::from_millis(250)),
        )));
        Ok(Controller {
            shared,
            tasks,
            leader_wait: config.leader_wait,
        })
    }

    /// The applied metadata now.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.shared.sm.metadata()
    }

    /// A receiver of each newly applied metadata.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.shared.sm.subscribe()
    }

    /// Leader, term, voters and learners as this node sees them.
    pub fn status(&self) -> ControllerStatus {
        let m = self.shared.metrics();
        let membership = m.membership_config.membership();
        let addr = |id: NodeId| {
            membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        let mut voters: BTreeMap<NodeId, String> =
            membership.voter_ids().map(|id| (id, addr(id))).collect();
        if voters.is_empty() {
            voters = self.shared.voters.clone();
        }
        ControllerStatus {
            node_id: self.shared.node_id,
            leader: m.current_leader,
            term: m.current_term,
            voters,
            learners: membership.learner_ids().map(|id| (id, addr(id))).collect(),
        }
    }

    async fn wait_leader(&self, not: Option<NodeId>) -> Result<NodeId> {
        let mut rx = self.shared.raft.metrics();
        let wait = async {
            loop {
                let leader = rx.borrow().current_leader;
                match leader {
                    Some(l) if Some(l) != not => return Ok(l),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(ClusterError::Raft("raft stopped".into()));
                }
            }
        };
        match tokio::time::timeout(self.leader_wait, wait).await {
            Ok(r) => r,
            // The old leader may still be the leader after all.
            Err(_) => self
                .shared
                .raft
                .metrics()
                .borrow()
                .current_leader
                .ok_or(ClusterError::NoLeader),
        }
    }

    /// Commits a command through the leader and returns its result.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<CommandResult> {
        let mut failed_leader = None;
        let mut last_err = ClusterError::NoLeader;
        for _attempt in 0..2 {
            let leader = self.wait_leader(failed_leader).await?;
            let reply = if leader == self.shared.node_id {
                // A leader cut off from the others cannot commit: bounded.
                let write = network::local_client_write(&self.shared.raft, cmd.clone());
                match tokio::time::timeout(self.shared.rpc_timeout * 5, write).await {
                    Ok(r) => r,
                    Err(_) => ClientWriteReply::Failed("commit timed out".into()),
                }
            } else {
                let Some(addr) = self.shared.addr_of(leader) else {
                    return Err(ClusterError::Raft(format!(
                        "no cluster address known for leader {leader}"
                    )));
                };
                let timeout = self.shared.rpc_timeout;
                let mut c = self.shared.client(addr);
                // The leader waits for a commit: allow it a few round trips.
                match c.call(KIND_CLIENT_WRITE, &cmd, Some(timeout * 5)).await {
                    Ok(r) => r,
                    Err(e) => ClientWriteReply::Failed(e.to_string()),
                }
            };
            match reply {
                ClientWriteReply::Applied(r) => return Ok(r),
                ClientWriteReply::ForwardToLeader(_) => {
                    last_err = ClusterError::Raft(format!("node {leader} is no longer leader"));
                }
                ClientWriteReply::Failed(e) => last_err = ClusterError::Raft(e),
            }
            failed_leader = Some(leader);
        }
        Err(last_err)
    }

    /// Stops the background tasks, Raft and the listener.
    pub async fn shutdown(mut self) -> Result<()> {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        self.shared
            .raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Sends join requests until this node is in the group's membership.
async fn join_loop(shared: Arc<Shared>, targets: Vec<String>, addr: String) {
    let id = shared.node_id;
    let is_member = |s: &Shared| {
        s.metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some_and(|n| n.addr == addr)
    };
    let mut next = 0usize;
    let mut redirect: Option<String> = None;
    let mut redirects = 0u32;
    loop {
        if is_member(&shared) {
            tracing::info!(node = id, "this node is a learner of the controller group");
            return;
        }
        let target = match redirect.take() {
            Some(a) => a,
            None => {
                let Some(t) = targets.get(next % targets.len().max(1)) else {
                    return;
                };
                next += 1;
                t.clone()
            }
        };
        let mut c = shared.client(target.clone());
        let req = JoinRequest {
            id,
            addr: addr.clone(),
        };
        let pause = match c
            .call::<_, JoinReply>(KIND_JOIN, &req, Some(shared.rpc_timeout * 5))
            .await
        {
            Ok(JoinReply::Joined) => {
                tracing::info!(node = id, via = %target, "joined the controller group");
                return;
            }
            Ok(JoinReply::ForwardToLeader(_, Some(leader))) if redirects < 3 => {
                redirects += 1;
                redirect = Some(leader);
                Duration::from_millis(20)
            }
            Ok(JoinReply::Refused(why)) => {
                tracing::error!(node = id, via = %target, %why, "join refused");
                return;
            }
            Ok(other) => {
                tracing::info!(node = id, via = %target, reply = ?other, "join not done yet; retrying");
                redirects = 0;
                Duration::from_millis(500)
            }
            Err(e) => {
                tracing::info!(node = id, via = %target, error = %e, "join request failed; retrying");
                redirects = 0;
                Duration::from_millis(500)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Sends this node's heartbeat to every voter every `interval` (the leader
/// fences on it; the others keep it for when they lead).
async fn heartbeat_loop(shared: Arc<Shared>, interval: Duration) {
    let mut clients: BTreeMap<NodeId, (String, PeerClient)> = BTreeMap::new();
    loop {
        tokio::time::sleep(interval).await;
        shared.record(shared.node_id);
        let voters: Vec<NodeId> = {
            let m = shared.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().voter_ids().collect()
        };
        clients.retain(|id, _| voters.contains(id));
        let mut calls = Vec::new();
        for id in voters {
            if id == shared.node_id {
                continue;
            }
            let Some(addr) = shared.addr_of(id) else {
                continue;
            };
            let entry = clients
                .entry(id)
                .or_insert_with(|| (addr.clone(), shared.client(addr.clone())));
            if entry.0 != addr {
                *entry = (addr.clone(), shared.client(addr));
            }
        }
        for (id, (_, c)) in clients.iter_mut() {
            let req = HeartbeatRequest { id: shared.node_id };
            let id = *id;
            calls.push(async move {
                if let Err(e) = c
                    .call::<_, HeartbeatReply>(KIND_HEARTBEAT, &req, None)
                    .await
                {
                    tracing::debug!(error = %e, node = id, "heartbeat failed");
                }
            });
        }
        futures::future::join_all(calls).await;
    }
}

/// How often the controller leader looks for partitions to give back to
/// their preferred replica (Kafka's `leader.imbalance.check.interval.seconds`,
/// 300 s there; leaderships are cheap to move here).
pub const PREFERRED_LEADER_CHECK: Duration = Duration::from_secs(10);

/// How long a new controller leader waits before fencing anyone: brokers
/// that were sending their heartbeats to the old leader alone reach it.
fn leader_grace(session: Duration) -> Duration {
    (session / 4).min(Duration::from_secs(1))
}

/// On the leader: fences silent brokers and unfences those heard from again.
async fn fence_loop(shared: Arc<Shared>, session: Duration, tick: Duration) {
    // (term, when this node's leadership in that term was first seen)
    let mut lead: Option<(u64, Instant)> = None;
    let mut last_rebalance = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let (leader, term) = {
            let m = shared.raft.metrics();
            let m = m.borrow();
            (m.current_leader, m.current_term)
        };
        if leader != Some(shared.node_id) {
            lead = None;
            continue;
        }
        let since = match lead {
            Some((t, since)) if t == term => since,
            _ => {
                let now = Instant::now();
                lead = Some((term, now));
                tracing::info!(term, "controller leader: watching broker heartbeats");
                now
            }
        };
        shared.record(shared.node_id);
        let meta = shared.sm.metadata();
        let now = Instant::now();
        if now.duration_since(last_rebalance) >= PREFERRED_LEADER_CHECK {
            last_rebalance = now;
            if meta.preferred_leaders_pending() {
                tracing::info!("moving partition leaderships back to their preferred replicas");
                let write = network::local_client_write(
                    &shared.raft,
                    MetadataCommand::ElectPreferredLeaders,
                );
                let _ = tokio::time::timeout(session, write).await;
            }
        }
        for b in meta.brokers.values() {
            let last = shared.last_seen(b.id);
            let cmd = if !b.fenced {
                // Times kept before this term count (every voter records
                // heartbeats), after a short grace for this term's own.
                let from = last.unwrap_or(since);
                if now.duration_since(from) <= session
                    || now.duration_since(since) <= leader_grace(session)
                {
                    continue;
                }
                tracing::warn!(
                    node = b.id,
                    ?session,
                    silent = ?last.map(|l| now.duration_since(l)),
                    "no heartbeat within the session timeout: fencing the broker"
                );
                MetadataCommand::FenceBroker { id: b.id }
            } else {
                match last {
                    Some(l) if now.duration_since(l) < session => {}
                    _ => continue,
                }
                tracing::info!(node = b.id, "heartbeat from a fenced broker: unfencing it");
                MetadataCommand::UnfenceBroker { id: b.id }
            };
            let write = network::local_client_write(&shared.raft, cmd);
            match tokio::time::timeout(session, write).await {
                Ok(ClientWriteReply::Failed(e)) => {
                    tracing::debug!(error = %e, "fence/unfence not committed")
                }
                Ok(_) => {}
                Err(_) => tracing::debug!("fence/unfence not committed in time"),
            }
        }
    }
}
