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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::network::{self, ClientWriteReply, Network, PeerClient, KIND_CLIENT_WRITE};
use crate::raft::{LogStore, StateMachine, TypeConfig};
use crate::{ClusterError, ClusterMetadata, CommandResult, MetadataCommand, NodeId, Result};

/// Settings of one controller node.
#[derive(Debug)]
pub struct ControllerConfig {
    /// This node's id; must be one of `voters`.
    pub node_id: NodeId,
    /// Directory of the controller's files (created if missing).
    pub dir: PathBuf,
    /// The bound cluster listener.
    pub listener: TcpListener,
    /// Voter ids and their cluster addresses.
    pub voters: BTreeMap<NodeId, String>,
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
            heartbeat: Duration::from_millis(120),
            election_min: Duration::from_millis(600),
            election_max: Duration::from_millis(1200),
            rpc_timeout: Duration::from_millis(1000),
            leader_wait: Duration::from_secs(10),
            snapshot_every: 1000,
            keep_logs_after_snapshot: 1000,
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
}

/// A running controller node.
pub struct Controller {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    sm: StateMachine,
    voters: BTreeMap<NodeId, String>,
    server: JoinHandle<()>,
    rpc_timeout: Duration,
    leader_wait: Duration,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Controller {
    /// Opens the files in `config.dir`, starts Raft and the listener, bootstraps if due.
    pub async fn start(config: ControllerConfig) -> Result<Controller> {
        if !config.voters.contains_key(&config.node_id) {
            return Err(ClusterError::Raft(format!(
                "node {} is not among the voters",
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
        };
        let raft = Raft::new(config.node_id, Arc::new(raft_config), net, log, sm.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let server = tokio::spawn(network::serve(config.listener, raft.clone()));
        let lowest = config.voters.keys().next().copied();
        if pristine && lowest == Some(config.node_id) {
            tracing::info!(node = config.node_id, voters = ?config.voters, "initializing controller group");
            raft.initialize(network::nodes(&config.voters))
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        Ok(Controller {
            node_id: config.node_id,
            raft,
            sm,
            voters: config.voters,
            server,
            rpc_timeout: config.rpc_timeout,
            leader_wait: config.leader_wait,
        })
    }

    /// The applied metadata now.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.sm.metadata()
    }

    /// A receiver of each newly applied metadata.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.sm.subscribe()
    }

    /// Leader, term and voters as this node sees them.
    pub fn status(&self) -> ControllerStatus {
        let m = self.raft.metrics().borrow().clone();
        ControllerStatus {
            node_id: self.node_id,
            leader: m.current_leader,
            term: m.current_term,
            voters: self.voters.clone(),
        }
    }

    async fn wait_leader(&self, not: Option<NodeId>) -> Result<NodeId> {
        let mut rx = self.raft.metrics();
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
            let reply = if leader == self.node_id {
                network::local_client_write(&self.raft, cmd.clone()).await
            } else {
                let Some(addr) = self.voters.get(&leader) else {
                    return Err(ClusterError::Raft(format!(
                        "leader {leader} is not a voter"
                    )));
                };
                let mut c = PeerClient::new(addr.clone(), self.rpc_timeout);
                // The leader waits for a commit: allow it a few round trips.
                match c
                    .call(KIND_CLIENT_WRITE, &cmd, Some(self.rpc_timeout * 5))
                    .await
                {
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

    /// Stops Raft and the listener.
    pub async fn shutdown(self) -> Result<()> {
        self.server.abort();
        let _ = self.server.await;
        self.raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }
}
