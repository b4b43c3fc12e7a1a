//! The cluster metadata and the pure function that applies one command to it.
//!
//! Every replicated change is a [`MetadataCommand`] in the controller's Raft log;
//! [`ClusterMetadata::apply`] is the only way state changes, and the same function
//! rebuilds state from the log at start-up. `apply` validates first and changes
//! nothing when it refuses a command, so a refused command is a no-op on every
//! node alike. It never panics: a bad command becomes a [`CommandResult`] error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node (broker or controller voter) id.
pub type NodeId = u64;

/// Largest partition count a topic may have (bounds the vectors a command creates).
pub const MAX_PARTITIONS: u32 = 100_000;

/// Largest producer-id block one command may allocate.
pub const MAX_PRODUCER_ID_BLOCK: u64 = 1 << 20;

/// One registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    /// Broker id.
    pub id: NodeId,
    /// Advertised address of the native listener.
    pub native_addr: String,
    /// Address of the cluster listener.
    pub cluster_addr: String,
    /// Advertised address of the Kafka-protocol listener, if it runs.
    #[serde(default)]
    pub kafka_addr: Option<String>,
    /// Availability zone, if any.
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are not offered to clients.
    pub fenced: bool,
    /// The registering process's incarnation: a restarted broker leads
    /// only once the metadata holds its new registration (so it never acts
    /// on leaderships from before its restart).
    #[serde(default)]
    pub incarnation: u64,
    /// Being decommissioned: no new replica is placed on it and its
    /// replicas are moved to other brokers.
    #[serde(default)]
    pub draining: bool,
}

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Replica broker ids; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// Current leader, if any.
    pub leader: Option<NodeId>,
    /// Bumped each time the leader changes.
    pub leader_epoch: u32,
    /// In-sync replicas: every one holds (fsynced) all committed records;
    /// leaders are elected from it only. Empty in metadata from before
    /// replication, read as all the replicas ([`PartitionMeta::in_sync`]).
    #[serde(default)]
    pub isr: Vec<NodeId>,
    /// Bumped at every leader, ISR or replica change; guards [`MetadataCommand::AlterIsr`].
    #[serde(default)]
    pub partition_epoch: u32,
    /// Replicas a reassignment adds (also in `replicas`): they copy the log
    /// and the move completes once every one of them is in the ISR.
    #[serde(default)]
    pub adding: Vec<NodeId>,
    /// Replicas a reassignment removes when it completes (still in `replicas`
    /// until then, after the target ones).
    #[serde(default)]
    pub removing: Vec<NodeId>,
}

impl PartitionMeta {
    /// The in-sync replicas (all replicas when the list was never set).
    pub fn in_sync(&self) -> &[NodeId] {
        if self.isr.is_empty() {
            &self.replicas
        } else {
            &self.isr
        }
    }

    /// The smallest ISR the partition may have: a majority of its replicas.
    pub fn min_isr(&self) -> usize {
        self.replicas.len() / 2 + 1
    }

    /// Whether a reassignment of this partition is under way.
    pub fn moving(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas once the reassignment under way (if any) completes.
    pub fn target(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }
}

/// One partition's new replica list (a reassignment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The target replicas, preferred leader first; empty cancels the move under way.
    pub replicas: Vec<NodeId>,
}

/// Largest number of partitions one `ReassignPartitions` may move.
pub const MAX_MOVES: usize = 100_000;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// 16-byte topic id chosen by the proposer.
    pub id: [u8; 16],
    /// Partitions by index.
    pub partitions: Vec<PartitionMeta>,
    /// Per-topic config overrides.
    pub config: BTreeMap<String, String>,
}

/// Largest number of offsets one `CommitOffsets` may carry.
pub const MAX_COMMIT_OFFSETS: usize = 100_000;

/// A consumer group's committed offset of one partition, replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: u64,
    /// When it was committed (ms since the Unix epoch, the coordinator's clock).
    pub timestamp_ms: i64,
    /// Free text from the committer.
    pub metadata: String,
}

/// One offset of a `CommitOffsets` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The committed offset.
    pub committed: CommittedOffset,
}

/// The whole replicated cluster metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Registered brokers by id.
    pub brokers: BTreeMap<NodeId, Broker>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// First producer id of the next block to hand out.
    pub next_producer_id: u64,
    /// Consumer groups' committed offsets: group, topic, partition.
    #[serde(default)]
    pub group_offsets: BTreeMap<String, BTreeMap<String, BTreeMap<u32, CommittedOffset>>>,
    /// Index of the last log entry applied to this state (0 before any);
    /// set by the state machine, not by commands.
    #[serde(default)]
    pub applied_index: u64,
    /// Users (salted SCRAM credentials), ACLs and quotas.
    #[serde(default)]
    pub security: sluice_auth::store::SecurityState,
}

/// A replicated metadata change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Register a broker or update its addresses and rack (unfences it).
    RegisterBroker {
        /// Broker id.
        id: NodeId,
        /// Native listener address.
        native_addr: String,
        /// Cluster listener address.
        cluster_addr: String,
        /// Advertised Kafka-protocol listener address, if it runs.
        #[serde(default)]
        kafka_addr: Option<String>,
        /// Availability zone.
        rack: Option<String>,
        /// The registering process's incarnation (random per start).
        #[serde(default)]
        incarnation: u64,
    },
    /// Fence a broker.
    FenceBroker {
        /// Broker id.
        id: NodeId,
    },
    /// Unfence a broker.
    UnfenceBroker {
        /// Broker id.
        id: NodeId,
    },
    /// Create a topic with a replica assignment computed by the proposer.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Topic id.
        id: [u8; 16],
        /// Replicas of each partition; the first replica becomes leader.
        assignment: Vec<Vec<NodeId>>,
        /// Per-topic config.
        config: BTreeMap<String, String>,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Set (Some) or remove (None) per-topic config keys.
    SetTopicConfig {
        /// Topic name.
        name: String,
        /// Key to new value, or None to remove the key.
        changes: BTreeMap<String, Option<String>>,
    },
    /// Append partitions to a topic.
    AddPartitions {
        /// Topic name.
        name: String,
        /// Replicas of each new partition.
        assignment: Vec<Vec<NodeId>>,
    },
    /// Allocate a block of producer ids.
    AllocateProducerIds {
        /// Block size.
        count: u64,
    },
    /// A partition leader changes its in-sync replica set; refused unless
    /// the proposer still leads with these epochs (a deposed leader cannot).
    AlterIsr {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The proposing leader.
        leader: NodeId,
        /// The leader epoch the proposer leads in.
        leader_epoch: u32,
        /// The partition epoch the proposer last saw.
        partition_epoch: u32,
        /// The new ISR: replicas only, with the leader, at least a majority.
        isr: Vec<NodeId>,
    },
    /// Records a consumer group's committed offsets (after the coordinator
    /// fenced and stored them), so the group's next coordinator has them.
    CommitOffsets {
        /// Group id.
        group: String,
        /// The offsets.
        offsets: Vec<GroupOffset>,
    },
    /// Forgets a consumer group's committed offsets (DeleteGroups).
    DeleteGroupOffsets {
        /// Group id.
        group: String,
    },
    /// Gives each partition back to its preferred replica (the first) where
    /// that one is live, in the ISR and not leading (Kafka's preferred
    /// leader election), so leaderships spread again after failovers.
    ElectPreferredLeaders,
    /// Moves every leadership of a broker that is shutting down to another
    /// in-sync replica (controlled shutdown); it stays registered, leading nothing.
    ShutdownBroker {
        /// Broker id.
        id: NodeId,
    },
    /// Starts moving partitions to new replica lists (or cancels moves), all
    /// or none: the new replicas copy the log, and each move completes once
    /// they are all in the ISR.
    ReassignPartitions {
        /// The moves.
        moves: Vec<PartitionMove>,
    },
    /// Spreads the replicas evenly over the live brokers that are not
    /// draining (a broker that joined gets its share), moving as few as it can.
    Rebalance,
    /// Marks a broker as draining (decommission) and moves its replicas to
    /// the least loaded other brokers; `draining: false` takes it back.
    DrainBroker {
        /// Broker id.
        id: NodeId,
        /// Draining or not.
        draining: bool,
    },
    /// Changes the security metadata (users, ACLs, quotas).
    Security(sluice_auth::store::SecurityCommand),
}

/// Outcome of applying one command; the same on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; nothing to return.
    Ok,
    /// A producer-id block was allocated starting here.
    ProducerIdBlock {
        /// First id of the block.
        start: u64,
        /// Block size.
        count: u64,
    },
    /// A membership or blank entry (not a metadata command) was applied.
    NoOp,
    /// The topic exists already.
    TopicAlreadyExists,
    /// The topic does not exist.
    UnknownTopic,
    /// The broker is not registered.
    UnknownBroker,
    /// The command is malformed (the reason says why).
    Invalid(String),
    /// The proposer's leader or partition epoch is not the current one.
    StaleEpoch,
    /// The reassignments started (each partition's target replicas).
    Moves(Vec<PartitionMove>),
    /// What a security command did.
    Security(sluice_auth::store::SecurityOutcome),
}

impl ClusterMetadata {
    /// Applies one command, returning its result; refused commands change nothing.
    pub fn apply(&mut self, cmd: &MetadataCommand) -> CommandResult {
        match cmd {
            MetadataCommand::RegisterBroker {
                id,
                native_addr,
                cluster_addr,
                kafka_addr,
                rack,
                incarnation,
            } => {
                let draining = self.brokers.get(id).is_some_and(|b| b.draining);
                self.brokers.insert(
                    *id,
                    Broker {
                        id: *id,
                        native_addr: native_addr.clone(),
                        cluster_addr: cluster_addr.clone(),
                        kafka_addr: kafka_addr.clone(),
                        rack: rack.clone(),
                        fenced: false,
                        incarnation: *incarnation,
                        draining,
                    },
                );
                self.elect_leaderless(*id);
                CommandResult::Ok
            }
            MetadataCommand::FenceBroker { id } => {
                let r = self.set_fenced(*id, true);
                if r == CommandResult::Ok {
                    self.move_away_from(*id);
                }
                r
            }
            MetadataCommand::UnfenceBroker { id } => {
                let r = self.set_fenced(*id, false);
                if r == CommandResult::Ok {
                    self.elect_leaderless(*id);
                }
                r
            }
            MetadataCommand::ShutdownBroker { id } => {
                if !self.brokers.contains_key(id) {
                    return CommandResult::UnknownBroker;
                }
                self.move_away_from(*id);
                CommandResult::Ok
            }
            MetadataCommand::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let Some(t) = self.topics.get_mut(topic) else {
                    return CommandResult::UnknownTopic;
                };
                let Some(p) = t.partitions.get_mut(*partition as usize) else {
                    return CommandResult::UnknownTopic;
                };
                if p.leader != Some(*leader)
                    || p.leader_epoch != *leader_epoch
                    || p.partition_epoch != *partition_epoch
                {
                    return CommandResult::StaleEpoch;
                }
                let mut sorted = isr.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != isr.len()
                    || !isr.contains(leader)
                    || isr.iter().any(|r| !p.replicas.contains(r))
                    || isr.len() < p.min_isr()
                {
                    return CommandResult::Invalid(format!(
                        "ISR {isr:?} must hold the leader, only replicas of {:?}, each once, and a majority",
                        p.replicas
                    ));
                }
                p.isr = isr.clone();
                p.partition_epoch = p.partition_epoch.wrapping_add(1);
                complete_move(&self.brokers, p);
                CommandResult::Ok
            }
            MetadataCommand::ReassignPartitions { moves } => self.reassign(moves),
            MetadataCommand::Rebalance => {
                let moves = plan_rebalance(self);
                self.reassign(&moves)
            }
            MetadataCommand::DrainBroker { id, draining } => {
                let Some(b) = self.brokers.get_mut(id) else {
                    return CommandResult::UnknownBroker;
                };
                b.draining = *draining;
                if !*draining {
                    return CommandResult::Moves(Vec::new());
                }
                let moves = plan_drain(self, *id);
                self.reassign(&moves)
            }
            MetadataCommand::CreateTopic {
                name,
                id,
                assignment,
                config,
            } => {
                if let Err(e) = check_name(name) {
                    return e;
                }
                if self.topics.contains_key(name) {
                    return CommandResult::TopicAlreadyExists;
                }
                if self.topics.values().any(|t| t.id == *id) {
                    return CommandResult::Invalid("topic id already in use".into());
                }
                if *id == [0u8; 16] {
                    return CommandResult::Invalid("topic id must not be zero".into());
                }
                if assignment.is_empty() {
                    return CommandResult::Invalid("a topic needs at least one partition".into());
                }
                if let Err(e) = check_assignment(assignment, 0) {
                    return e;
                }
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        id: *id,
                        partitions: assignment.iter().map(|r| new_partition(r)).collect(),
                        config: config.clone(),
                    },
                );
                CommandResult::Ok
            }
            MetadataCommand::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => {
                    for g in self.group_offsets.values_mut() {
                        g.remove(name);
                    }
                    self.group_offsets.retain(|_, g| !g.is_empty());
                    CommandResult::Ok
                }
                None => CommandResult::UnknownTopic,
            },
            MetadataCommand::Security(cmd) => CommandResult::Security(self.security.apply(cmd)),
            MetadataCommand::CommitOffsets { group, offsets } => {
                if group.is_empty() || offsets.len() > MAX_COMMIT_OFFSETS {
                    return CommandResult::Invalid(format!(
                        "a commit needs a group id and at most {MAX_COMMIT_OFFSETS} offsets"
                    ));
                }
                let g = self.group_offsets.entry(group.clone()).or_default();
                for o in offsets {
                    g.entry(o.topic.clone())
                        .or_default()
                        .insert(o.partition, o.committed.clone());
                }
                CommandResult::Ok
            }
            MetadataCommand::ElectPreferredLeaders => {
                let mut moved = 0usize;
                for t in self.topics.values_mut() {
                    for p in &mut t.partitions {
                        if let Some(to) = preferred_move(&self.brokers, p) {
                            p.leader = Some(to);
                            p.leader_epoch = p.leader_epoch.wrapping_add(1);
                            p.partition_epoch = p.partition_epoch.wrapping_add(1);
                            moved += 1;
                        }
                    }
                }
                if moved == 0 {
                    CommandResult::NoOp
                } else {
                    CommandResult::Ok
                }
            }
            MetadataCommand::DeleteGroupOffsets { group } => {
                self.group_offsets.remove(group);
                CommandResult::Ok
            }
            MetadataCommand::SetTopicConfig { name, changes } => {
                let Some(topic) = self.topics.get_mut(name) else {
                    return CommandResult::UnknownTopic;
                };
                for (k, v) in changes {
                    match v {
                        Some(v) => {
                            topic.config.insert(k.clone(), v.clone());
                        }
                        None => {
                            topic.config.remove(k);
                        }
                    }
                }
                CommandResult::Ok
            }
            MetadataCommand::AddPartitions { name, assignment } => {
                let Some(topic) = self.topics.get_mut(name) else {
                    return CommandResult::UnknownTopic;
                };
                if assignment.is_empty() {
                    return CommandResult::Invalid("no partitions to add".into());
                }
                if let Err(e) = check_assignment(assignment, topic.partitions.len()) {
                    return e;
                }
                topic
                    .partitions
                    .extend(assignment.iter().map(|r| new_partition(r)));
                CommandResult::Ok
            }
            MetadataCommand::AllocateProducerIds { count } => {
                if *count == 0 || *count > MAX_PRODUCER_ID_BLOCK {
                    return CommandResult::Invalid(format!(
                        "producer id block size must be 1..={MAX_PRODUCER_ID_BLOCK}"
                    ));
                }
                let start = self.next_producer_id;
                // Producer ids are i64 on the Kafka wire: stay below i64::MAX.
                match start.checked_add(*count) {
                    Some(end) if end <= i64::MAX as u64 => {
                        self.next_producer_id = end;
                        CommandResult::ProducerIdBlock {
                            start,
                            count: *count,
                        }
                    }
                    _ => CommandResult::Invalid("producer ids exhausted".into()),
                }
            }
        }
    }

    /// Checks every move, then starts them all (or changes nothing).
    fn reassign(&mut self, moves: &[PartitionMove]) -> CommandResult {
        if moves.len() > MAX_MOVES {
            return CommandResult::Invalid(format!("at most {MAX_MOVES} moves at once"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in moves {
            if !seen.insert((m.topic.as_str(), m.partition)) {
                return CommandResult::Invalid(format!(
                    "\"{}\"/{} is listed twice",
                    m.topic, m.partition
                ));
            }
            let Some(p) = self
                .topics
                .get(&m.topic)
                .and_then(|t| t.partitions.get(m.partition as usize))
            else {
                return CommandResult::UnknownTopic;
            };
            if let Err(why) = check_move(&self.brokers, p, &m.replicas) {
                return CommandResult::Invalid(format!("\"{}\"/{}: {why}", m.topic, m.partition));
            }
        }
        let mut started = Vec::with_capacity(moves.len());
        for m in moves {
            let Some(p) = self
                .topics
                .get_mut(&m.topic)
                .and_then(|t| t.partitions.get_mut(m.partition as usize))
            else {
                continue; // checked above
            };
            if m.replicas.is_empty() {
                cancel_move(&self.brokers, p);
            } else {
                start_move(p, &m.replicas);
                complete_move(&self.brokers, p);
            }
            started.push(PartitionMove {
                topic: m.topic.clone(),
                partition: m.partition,
                replicas: p.target(),
            });
        }
        CommandResult::Moves(started)
    }

    /// Whether a preferred leader election would move any leadership.
    pub fn preferred_leaders_pending(&self) -> bool {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .any(|p| preferred_move(&self.brokers, p).is_some())
    }

    /// Whether broker `id` is registered and not fenced.
    pub fn is_live(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Moves every leadership of broker `id` to the first live ISR member in
    /// replica order (none: the partition is offline until one returns), and
    /// takes `id` out of every ISR that stays a majority without it.
    fn move_away_from(&mut self, id: NodeId) {
        let live: Vec<NodeId> = self
            .brokers
            .values()
            .filter(|b| !b.fenced && b.id != id)
            .map(|b| b.id)
            .collect();
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                let mut isr = p.in_sync().to_vec();
                let changed_isr = isr.contains(&id) && isr.len() > p.min_isr();
                if changed_isr {
                    isr.retain(|r| *r != id);
                }
                if p.leader == Some(id) {
                    p.leader = p
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| isr.contains(r) && live.contains(r));
                    p.leader_epoch = p.leader_epoch.wrapping_add(1);
                } else if !changed_isr {
                    continue;
                }
                p.isr = isr;
                p.partition_epoch = p.partition_epoch.wrapping_add(1);
            }
        }
    }

    /// Gives broker `id` (just back) the leadership of every partition that
    /// has no leader and holds `id` in its ISR.
    fn elect_leaderless(&mut self, id: NodeId) {
        for t in self.topics.values_mut() {
            for p in &mut t.partitions {
                if p.leader.is_none() && p.in_sync().contains(&id) {
                    p.leader = Some(id);
                    p.leader_epoch = p.leader_epoch.wrapping_add(1);
                    p.partition_epoch = p.partition_epoch.wrapping_add(1);
                }
            }
        }
    }

    fn set_fenced(&mut self, id: NodeId, fenced: bool) -> CommandResult {
        match self.brokers.get_mut(&id) {
            Some(b) => {
                b.fenced = fenced;
                CommandResult::Ok
            }
            None => CommandResult::UnknownBroker,
        }
    }
}

/// Why `p` cannot move to `target` (empty: cancel), if it cannot.
fn check_move(
    brokers: &BTreeMap<NodeId, Broker>,
    p: &PartitionMeta,
    target: &[NodeId],
) -> Result<(), String> {
    if target.is_empty() {
        if !p.moving() {
            return Err("no move to cancel".into());
        }
        let original: Vec<NodeId> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| !p.adding.contains(r))
            .collect();
        let kept = p.in_sync().iter().filter(|r| original.contains(r)).count();
        if kept < original.len() / 2 + 1 {
            return Err("too few of the original replicas are in sync to cancel".into());
        }
        return Ok(());
    }
    if p.moving() {
        return Err(format!(
            "already moving to {:?}; cancel that first",
            p.target()
        ));
    }
    let mut sorted = target.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != target.len() {
        return Err(format!("{target:?} lists a broker twice"));
    }
    if let Some(r) = target.iter().find(|r| !brokers.contains_key(r)) {
        return Err(format!("broker {r} is not registered"));
    }
    Ok(())
}

/// Starts moving `p` to `target`: the new replicas join `replicas` (target
/// order first, the leaving ones after) as followers outside the ISR.
fn start_move(p: &mut PartitionMeta, target: &[NodeId]) {
    let adding: Vec<NodeId> = target
        .iter()
        .copied()
        .filter(|r| !p.replicas.contains(r))
        .collect();
    let removing: Vec<NodeId> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(removing.iter().copied());
    p.isr = p.in_sync().to_vec();
    p.replicas = replicas;
    p.adding = adding;
    p.removing = removing;
    p.partition_epoch = p.partition_epoch.wrapping_add(1);
}

/// Completes the move of `p` once every added replica is in the ISR and the
/// ISR holds a majority of the target: the leaving replicas go (a leaving
/// leader hands over to the first live in-sync target replica).
fn complete_move(brokers: &BTreeMap<NodeId, Broker>, p: &mut PartitionMeta) {
    if !p.moving() {
        return;
    }
    let target = p.target();
    let isr: Vec<NodeId> = target
        .iter()
        .copied()
        .filter(|r| p.in_sync().contains(r))
        .collect();
    if p.adding.iter().any(|r| !p.in_sync().contains(r)) || isr.len() < target.len() / 2 + 1 {
        return;
    }
    let leaving_leader = p.leader.is_some_and(|l| !target.contains(&l));
    p.replicas = target;
    p.isr = isr;
    p.adding.clear();
    p.removing.clear();
    if leaving_leader {
        let live = |r: &NodeId| brokers.get(r).is_some_and(|b| !b.fenced);
        p.leader = p.isr.iter().copied().find(live);
        p.leader_epoch = p.leader_epoch.wrapping_add(1);
    }
    p.partition_epoch = p.partition_epoch.wrapping_add(1);
}

/// Cancels the move of `p`: back to the replicas it had (checked by
/// [`check_move`]); a leader among the added ones hands over.
fn cancel_move(brokers: &BTreeMap<NodeId, Broker>, p: &mut PartitionMeta) {
    let adding = std::mem::take(&mut p.adding);
    p.removing.clear();
    let original: Vec<NodeId> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !adding.contains(r))
        .collect();
    p.isr = p
        .in_sync()
        .iter()
        .copied()
        .filter(|r| original.contains(r))
        .collect();
    p.replicas = original;
    if p.leader.is_some_and(|l| adding.contains(&l)) {
        let live = |r: &NodeId| brokers.get(r).is_some_and(|b| !b.fenced);
        p.leader = p
            .replicas
            .iter()
            .copied()
            .find(|r| p.isr.contains(r) && live(r));
        p.leader_epoch = p.leader_epoch.wrapping_add(1);
    }
    p.partition_epoch = p.partition_epoch.wrapping_add(1);
}

/// Brokers that take new replicas: registered, not fenced, not draining.
fn placeable(m: &ClusterMetadata) -> Vec<NodeId> {
    m.brokers
        .values()
        .filter(|b| !b.fenced && !b.draining)
        .map(|b| b.id)
        .collect()
}

/// Replicas per broker, counting moving partitions at their target.
fn replica_counts(m: &ClusterMetadata) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = m.brokers.keys().map(|id| (*id, 0)).collect();
    for p in m.topics.values().flat_map(|t| t.partitions.iter()) {
        for r in p.target() {
            *counts.entry(r).or_default() += 1;
        }
    }
    counts
}

/// Moves taking every replica off broker `id` (partitions not already
/// moving), each to the least loaded placeable broker it does not have.
fn plan_drain(m: &ClusterMetadata, id: NodeId) -> Vec<PartitionMove> {
    let mut counts = replica_counts(m);
    let targets: Vec<NodeId> = placeable(m).into_iter().filter(|b| *b != id).collect();
    let mut moves = Vec::new();
    for t in m.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.moving() || !p.replicas.contains(&id) {
                continue;
            }
            let Some(to) = targets
                .iter()
                .copied()
                .filter(|b| !p.replicas.contains(b))
                .min_by_key(|b| (counts.get(b).copied().unwrap_or(0), *b))
            else {
                continue; // nowhere to go: the broker stays a replica
            };
            *counts.entry(to).or_default() += 1;
            moves.push(PartitionMove {
                topic: t.name.clone(),
                partition: i as u32,
                replicas: p
                    .replicas
                    .iter()
                    .map(|r| if *r == id { to } else { *r })
                    .collect(),
            });
        }
    }
    moves
}

/// Moves that even out the replica counts of the placeable brokers (within
/// one of each other), one replica at a time from the most to the least
/// loaded, partitions not already moving; a replica on a draining or
/// unregistered broker moves first (a fenced broker keeps its replicas: it
/// may be restarting).
fn plan_rebalance(m: &ClusterMetadata) -> Vec<PartitionMove> {
    let placeable = placeable(m);
    if placeable.is_empty() {
        return Vec::new();
    }
    let mut counts = replica_counts(m);
    // topic, partition -> planned replicas
    let mut planned: BTreeMap<(String, u32), Vec<NodeId>> = BTreeMap::new();
    let candidates: Vec<(String, u32, Vec<NodeId>)> = m
        .topics
        .values()
        .flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.moving())
                .map(|(i, p)| (t.name.clone(), i as u32, p.replicas.clone()))
        })
        .collect();
    let current = |planned: &BTreeMap<(String, u32), Vec<NodeId>>,
                   c: &(String, u32, Vec<NodeId>)| {
        planned
            .get(&(c.0.clone(), c.1))
            .cloned()
            .unwrap_or_else(|| c.2.clone())
    };
    // First every replica on a broker that must be left.
    let must_leave = |r: &NodeId| m.brokers.get(r).is_none_or(|b| b.draining);
    for c in &candidates {
        let mut replicas = c.2.clone();
        if !replicas.iter().any(must_leave) {
            continue;
        }
        for i in 0..replicas.len() {
            if !must_leave(&replicas[i]) {
                continue;
            }
            let to = placeable
                .iter()
                .copied()
                .filter(|b| !replicas.contains(b))
                .min_by_key(|b| (counts.get(b).copied().unwrap_or(0), *b));
            if let Some(to) = to {
                *counts.entry(to).or_default() += 1;
                replicas[i] = to;
            }
        }
        if replicas != c.2 {
            planned.insert((c.0.clone(), c.1), replicas);
        }
    }
    // Then one replica at a time from the most to the least loaded.
    let bound = candidates.iter().map(|c| c.2.len()).sum::<usize>();
    for _ in 0..bound {
        let count = |b: &NodeId| counts.get(b).copied().unwrap_or(0);
        let (Some(lo), Some(hi)) = (
            placeable.iter().copied().min_by_key(|b| (count(b), *b)),
            placeable
                .iter()
                .copied()
                .max_by_key(|b| (count(b), std::cmp::Reverse(*b))),
        ) else {
            break;
        };
        if count(&hi) <= count(&lo) + 1 {
            break;
        }
        // Prefer a partition hi follows in: its preferred leader stays.
        let movable = |c: &&(String, u32, Vec<NodeId>)| {
            let r = current(&planned, c);
            r.contains(&hi) && !r.contains(&lo)
        };
        let found = candidates
            .iter()
            .filter(movable)
            .find(|c| current(&planned, c).first() != Some(&hi))
            .or_else(|| candidates.iter().find(movable));
        let Some(c) = found else { break };
        let replicas: Vec<NodeId> = current(&planned, c)
            .into_iter()
            .map(|r| if r == hi { lo } else { r })
            .collect();
        planned.insert((c.0.clone(), c.1), replicas);
        if let Some(n) = counts.get_mut(&hi) {
            *n = n.saturating_sub(1);
        }
        *counts.entry(lo).or_default() += 1;
    }
    // Last, spread the preferred leaders (the first replicas): reordering a
    // partition's replicas moves no data.
    let mut leads: BTreeMap<NodeId, usize> = BTreeMap::new();
    for c in &candidates {
        if let Some(first) = current(&planned, c).first() {
            *leads.entry(*first).or_default() += 1;
        }
    }
    for c in &candidates {
        let mut r = current(&planned, c);
        let Some(&first) = r.first() else { continue };
        let swap = (1..r.len())
            .filter(|i| placeable.contains(&r[*i]))
            .min_by_key(|i| (leads.get(&r[*i]).copied().unwrap_or(0), r[*i]));
        let Some(i) = swap else { continue };
        if leads.get(&r[i]).copied().unwrap_or(0) + 1 >= leads.get(&first).copied().unwrap_or(0) {
            continue;
        }
        r.swap(0, i);
        *leads.entry(r[0]).or_default() += 1;
        if let Some(n) = leads.get_mut(&first) {
            *n = n.saturating_sub(1);
        }
        planned.insert((c.0.clone(), c.1), r);
    }
    planned
        .into_iter()
        .filter(|((topic, partition), replicas)| {
            // A reorder back to the current order is no move.
            candidates
                .iter()
                .find(|c| &c.0 == topic && c.1 == *partition)
                .is_none_or(|c| &c.2 != replicas)
        })
        .map(|((topic, partition), replicas)| PartitionMove {
            topic,
            partition,
            replicas,
        })
        .collect()
}

/// The preferred replica of `p` if it should lead instead: live, in the
/// ISR, and not the leader now.
fn preferred_move(brokers: &BTreeMap<NodeId, Broker>, p: &PartitionMeta) -> Option<NodeId> {
    let first = *p.replicas.first()?;
    let live = brokers.get(&first).is_some_and(|b| !b.fenced);
    (p.leader != Some(first) && live && p.in_sync().contains(&first)).then_some(first)
}

fn new_partition(replicas: &[NodeId]) -> PartitionMeta {
    PartitionMeta {
        replicas: replicas.to_vec(),
        leader: replicas.first().copied(),
        leader_epoch: 0,
        isr: replicas.to_vec(),
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

fn check_name(name: &str) -> Result<(), CommandResult> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CommandResult::Invalid(format!(
            "invalid topic name {name:?}"
        )))
    }
}

fn check_assignment(assignment: &[Vec<NodeId>], existing: usize) -> Result<(), CommandResult> {
    if existing.saturating_add(assignment.len()) > MAX_PARTITIONS as usize {
        return Err(CommandResult::Invalid(format!(
            "a topic may have at most {MAX_PARTITIONS} partitions"
        )));
    }
    for (i, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return Err(CommandResult::Invalid(format!(
                "partition {} has no replicas",
                existing + i
            )));
        }
        let mut seen = replicas.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != replicas.len() {
            return Err(CommandResult::Invalid(format!(
                "partition {} lists a replica twice",
                existing + i
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, id: u8, parts: usize) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            id: [id; 16],
            assignment: (0..parts)
                .map(|p| vec![p as u64 + 1, p as u64 + 2])
                .collect(),
            config: BTreeMap::new(),
        }
    }

    #[test]
    fn create_topic_sets_leaders_to_first_replica() {
        let mut m = ClusterMetadata::default();
        assert_eq!(m.apply(&create("t", 1, 3)), CommandResult::Ok);
        let t = &m.topics["t"];
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[2].replicas, vec![3, 4]);
        assert_eq!(t.partitions[2].leader, Some(3));
        assert_eq!(t.partitions[2].leader_epoch, 0);
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut m = ClusterMetadata::default();
        m.apply(&create("t", 1, 1));
        let before = m.clone();
        let refused = [
            create("t", 2, 1),
            create("u", 1, 1),
            create("bad name", 3, 1),
            create("", 3, 1),
            create("z", 0, 1),
            create("e", 4, 0),
            MetadataCommand::CreateTopic {
                name: "dup".into(),
                id: [5; 16],
                assignment: vec![vec![1, 1]],
                config: BTreeMap::new(),
            },
            MetadataCommand::CreateTopic {
                name: "norep".into(),
                id: [6; 16],
                assignment: vec![vec![]],
                config: BTreeMap::new(),
            },
            MetadataCommand::DeleteTopic { name: "x".into() },
            MetadataCommand::AddPartitions {
                name: "x".into(),
                assignment: vec![vec![1]],
            },
            MetadataCommand::AddPartitions {
                name: "t".into(),
                assignment: vec![],
            },
            MetadataCommand::SetTopicConfig {
                name: "x".into(),
                changes: BTreeMap::new(),
            },
            MetadataCommand::FenceBroker { id: 9 },
            MetadataCommand::UnfenceBroker { id: 9 },
            MetadataCommand::AllocateProducerIds { count: 0 },
            MetadataCommand::AllocateProducerIds {
                count: MAX_PRODUCER_ID_BLOCK + 1,
            },
        ];
        let expected_kinds = [
            CommandResult::TopicAlreadyExists,
            CommandResult::UnknownTopic,
            CommandResult::UnknownBroker,
        ];
        for cmd in &refused {
            let r = m.apply(cmd);
            assert!(
                matches!(r, CommandResult::Invalid(_)) || expected_kinds.contains(&r),
                "{cmd:?} gave {r:?}"
            );
            assert_eq!(m, before, "{cmd:?} changed state");
        }
        assert_eq!(
            m.apply(&create("t", 2, 1)),
            CommandResult::TopicAlreadyExists
        );
        assert_eq!(
            m.apply(&MetadataCommand::DeleteTopic { name: "x".into() }),
            CommandResult::UnknownTopic
        );
        assert_eq!(
            m.apply(&MetadataCommand::FenceBroker { id: 9 }),
            CommandResult::UnknownBroker
        );
    }

    #[test]
    fn brokers_register_fence_unfence() {
        let mut m = ClusterMetadata::default();
        let reg = MetadataCommand::RegisterBroker {
            id: 2,
            native_addr: "h:1".into(),
            cluster_addr: "h:2".into(),
            kafka_addr: None,
            rack: Some("a".into()),
            incarnation: 0,
        };
        assert_eq!(m.apply(&reg), CommandResult::Ok);
        assert_eq!(
            m.apply(&MetadataCommand::FenceBroker { id: 2 }),
            CommandResult::Ok
        );
        assert!(m.brokers[&2].fenced);
        assert_eq!(
            m.apply(&MetadataCommand::UnfenceBroker { id: 2 }),
            CommandResult::Ok
        );
        assert!(!m.brokers[&2].fenced);
        assert_eq!(m.brokers[&2].rack.as_deref(), Some("a"));
    }

    #[test]
    fn config_partitions_delete() {
        let mut m = ClusterMetadata::default();
        m.apply(&create("t", 1, 1));
        let mut changes = BTreeMap::new();
        changes.insert("retention.ms".to_string(), Some("10".to_string()));
        changes.insert("flush".to_string(), Some("always".to_string()));
        m.apply(&MetadataCommand::SetTopicConfig {
            name: "t".into(),
            changes,
        });
        let mut changes = BTreeMap::new();
        changes.insert("flush".to_string(), None);
        m.apply(&MetadataCommand::SetTopicConfig {
            name: "t".into(),
            changes,
        });
        assert_eq!(m.topics["t"].config.len(), 1);
        assert_eq!(m.topics["t"].config["retention.ms"], "10");
        assert_eq!(
            m.apply(&MetadataCommand::AddPartitions {
                name: "t".into(),
                assignment: vec![vec![7], vec![8]],
            }),
            CommandResult::Ok
        );
        assert_eq!(m.topics["t"].partitions.len(), 3);
        assert_eq!(m.topics["t"].partitions[2].leader, Some(8));
        assert_eq!(
            m.apply(&MetadataCommand::DeleteTopic { name: "t".into() }),
            CommandResult::Ok
        );
        assert!(m.topics.is_empty());
        // The id of a deleted topic may not collide with anything now.
        assert_eq!(m.apply(&create("t", 1, 1)), CommandResult::Ok);
    }

    #[test]
    fn producer_id_blocks_are_disjoint() {
        let mut m = ClusterMetadata::default();
        let a = m.apply(&MetadataCommand::AllocateProducerIds { count: 100 });
        let b = m.apply(&MetadataCommand::AllocateProducerIds { count: 5 });
        assert_eq!(
            a,
            CommandResult::ProducerIdBlock {
                start: 0,
                count: 100
            }
        );
        assert_eq!(
            b,
            CommandResult::ProducerIdBlock {
                start: 100,
                count: 5
            }
        );
        m.next_producer_id = i64::MAX as u64 - 1;
        assert!(matches!(
            m.apply(&MetadataCommand::AllocateProducerIds { count: 5 }),
            CommandResult::Invalid(_)
        ));
        assert_eq!(m.next_producer_id, i64::MAX as u64 - 1);
    }

    #[test]
    fn replay_is_deterministic_and_serde_round_trips() {
        let cmds = vec![
            create("a", 1, 2),
            create("b", 2, 1),
            MetadataCommand::AllocateProducerIds { count: 10 },
            MetadataCommand::ReassignPartitions {
                moves: vec![PartitionMove {
                    topic: "a".into(),
                    partition: 0,
                    replicas: vec![2, 3],
                }],
            },
            MetadataCommand::Rebalance,
            MetadataCommand::DrainBroker {
                id: 1,
                draining: true,
            },
            MetadataCommand::DeleteTopic { name: "a".into() },
        ];
        let mut m1 = ClusterMetadata::default();
        let mut m2 = ClusterMetadata::default();
        for c in &cmds {
            let json = serde_json::to_vec(c).expect("encode");
            let back: MetadataCommand = serde_json::from_slice(&json).expect("decode");
            assert_eq!(&back, c);
            assert_eq!(m1.apply(c), m2.apply(&back));
        }
        assert_eq!(m1, m2);
        let json = serde_json::to_vec(&m1).expect("encode");
        let back: ClusterMetadata = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, m1);
    }

    fn three_brokers_rf3() -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        for id in 1..=3 {
            m.apply(&MetadataCommand::RegisterBroker {
                id,
                native_addr: format!("127.0.0.1:{id}"),
                cluster_addr: format!("127.0.0.1:1{id}"),
                kafka_addr: None,
                rack: None,
                incarnation: 0,
            });
        }
        m.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: [7; 16],
            assignment: vec![vec![1, 2, 3], vec![2, 3, 1]],
            config: BTreeMap::new(),
        });
        m
    }

    #[test]
    fn fencing_a_leader_elects_the_next_live_isr_member_and_never_shrinks_below_a_majority() {
        let mut m = three_brokers_rf3();
        assert_eq!(m.topics["t"].partitions[0].isr, vec![1, 2, 3]);
        assert_eq!(
            m.apply(&MetadataCommand::FenceBroker { id: 1 }),
            CommandResult::Ok
        );
        let p0 = m.topics["t"].partitions[0].clone();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.partition_epoch),
            (Some(2), 1, 1)
        );
        assert_eq!(p0.isr, vec![2, 3]);
        // Partition 1 was led by 2: only its ISR lost broker 1.
        let p1 = m.topics["t"].partitions[1].clone();
        assert_eq!(
            (p1.leader, p1.leader_epoch, p1.partition_epoch),
            (Some(2), 0, 1)
        );
        assert_eq!(p1.isr, vec![2, 3]);
        // Fencing 2 as well: 3 leads, and the ISR keeps 2 (a majority of 3).
        m.apply(&MetadataCommand::FenceBroker { id: 2 });
        let p0 = m.topics["t"].partitions[0].clone();
        assert_eq!((p0.leader, p0.leader_epoch), (Some(3), 2));
        assert_eq!(p0.isr, vec![2, 3]);
        // Fencing 3: no live ISR member, so no leader; 1 (outside the ISR) never leads.
        m.apply(&MetadataCommand::UnfenceBroker { id: 1 });
        m.apply(&MetadataCommand::FenceBroker { id: 3 });
        let p0 = m.topics["t"].partitions[0].clone();
        assert_eq!((p0.leader, p0.leader_epoch), (None, 3));
        assert_eq!(p0.isr, vec![2, 3]);
        // 2 comes back and is in the ISR: it leads again.
        m.apply(&MetadataCommand::UnfenceBroker { id: 2 });
        let p0 = m.topics["t"].partitions[0].clone();
        assert_eq!((p0.leader, p0.leader_epoch), (Some(2), 4));
    }

    #[test]
    fn alter_isr_is_guarded_by_both_epochs_and_the_majority_rule() {
        let mut m = three_brokers_rf3();
        let alter = |leader, le, pe, isr: &[u64]| MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader,
            leader_epoch: le,
            partition_epoch: pe,
            isr: isr.to_vec(),
        };
        let before = m.clone();
        assert_eq!(m.apply(&alter(2, 0, 0, &[1, 2])), CommandResult::StaleEpoch);
        assert_eq!(m.apply(&alter(1, 1, 0, &[1, 2])), CommandResult::StaleEpoch);
        assert_eq!(m.apply(&alter(1, 0, 1, &[1, 2])), CommandResult::StaleEpoch);
        for bad in [&[1][..], &[2, 3], &[1, 1, 2], &[1, 4]] {
            assert!(matches!(
                m.apply(&alter(1, 0, 0, bad)),
                CommandResult::Invalid(_)
            ));
        }
        assert_eq!(m, before);
        assert_eq!(m.apply(&alter(1, 0, 0, &[1, 3])), CommandResult::Ok);
        let p0 = &m.topics["t"].partitions[0];
        assert_eq!((p0.isr.clone(), p0.partition_epoch), (vec![1, 3], 1));
        // The same proposal again is stale now.
        assert_eq!(
            m.apply(&alter(1, 0, 0, &[1, 2, 3])),
            CommandResult::StaleEpoch
        );
        assert_eq!(m.apply(&alter(1, 0, 1, &[1, 2, 3])), CommandResult::Ok);
        // Fencing 1 elects 2 (first live ISR member in replica order).
        m.apply(&MetadataCommand::FenceBroker { id: 1 });
        assert_eq!(m.topics["t"].partitions[0].leader, Some(2));
    }

    #[test]
    fn controlled_shutdown_moves_leaderships_and_keeps_the_broker_registered() {
        let mut m = three_brokers_rf3();
        assert_eq!(
            m.apply(&MetadataCommand::ShutdownBroker { id: 2 }),
            CommandResult::Ok
        );
        assert!(m.topics["t"].partitions.iter().all(|p| p.leader != Some(2)));
        assert_eq!(m.topics["t"].partitions[1].leader, Some(3));
        assert!(m.brokers.contains_key(&2));
        assert_eq!(
            m.apply(&MetadataCommand::ShutdownBroker { id: 9 }),
            CommandResult::UnknownBroker
        );
    }

    #[test]
    fn metadata_from_before_replication_reads_all_replicas_as_in_sync() {
        let json = r#"{"replicas":[1,2,3],"leader":1,"leader_epoch":4}"#;
        let p: PartitionMeta = serde_json::from_str(json).expect("decode");
        assert_eq!(p.in_sync(), &[1, 2, 3]);
        assert_eq!((p.partition_epoch, p.min_isr()), (0, 2));
    }

    #[test]
    fn group_offsets_are_replicated_overwritten_and_dropped_with_their_topic_or_group() {
        let mut m = three_brokers_rf3();
        let commit = |p: u32, offset: u64| MetadataCommand::CommitOffsets {
            group: "g".into(),
            offsets: vec![GroupOffset {
                topic: "t".into(),
                partition: p,
                committed: CommittedOffset {
                    offset,
                    timestamp_ms: offset as i64,
                    metadata: String::new(),
                },
            }],
        };
        assert_eq!(m.apply(&commit(0, 5)), CommandResult::Ok);
        assert_eq!(m.apply(&commit(1, 7)), CommandResult::Ok);
        assert_eq!(m.apply(&commit(0, 9)), CommandResult::Ok);
        assert_eq!(m.group_offsets["g"]["t"][&0].offset, 9);
        assert_eq!(m.group_offsets["g"]["t"][&1].offset, 7);
        let json = serde_json::to_vec(&m).expect("encode");
        let back: ClusterMetadata = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, m);
        assert!(matches!(
            m.apply(&MetadataCommand::CommitOffsets {
                group: String::new(),
                offsets: vec![]
            }),
            CommandResult::Invalid(_)
        ));
        m.apply(&MetadataCommand::DeleteTopic { name: "t".into() });
        assert!(m.group_offsets.is_empty());
        m.apply(&commit(0, 1));
        m.apply(&MetadataCommand::DeleteGroupOffsets { group: "g".into() });
        assert!(m.group_offsets.is_empty());
    }

    #[test]
    fn preferred_leaders_return_once_live_and_in_sync() {
        let mut m = three_brokers_rf3();
        m.apply(&MetadataCommand::FenceBroker { id: 1 });
        assert_eq!(m.topics["t"].partitions[0].leader, Some(2));
        assert!(!m.preferred_leaders_pending(), "1 is fenced");
        assert_eq!(
            m.apply(&MetadataCommand::ElectPreferredLeaders),
            CommandResult::NoOp
        );
        m.apply(&MetadataCommand::UnfenceBroker { id: 1 });
        assert!(!m.preferred_leaders_pending(), "1 is not in the ISR yet");
        let p = m.topics["t"].partitions[0].clone();
        m.apply(&MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![1, 2, 3],
        });
        assert!(m.preferred_leaders_pending());
        assert_eq!(
            m.apply(&MetadataCommand::ElectPreferredLeaders),
            CommandResult::Ok
        );
        let p0 = &m.topics["t"].partitions[0];
        assert_eq!((p0.leader, p0.leader_epoch), (Some(1), p.leader_epoch + 1));
        assert_eq!(
            m.topics["t"].partitions[1].leader,
            Some(2),
            "already preferred"
        );
        assert!(!m.preferred_leaders_pending());
    }

    fn register(m: &mut ClusterMetadata, id: NodeId) {
        m.apply(&MetadataCommand::RegisterBroker {
            id,
            native_addr: format!("127.0.0.1:{id}"),
            cluster_addr: format!("127.0.0.1:1{id}"),
            kafka_addr: None,
            rack: None,
            incarnation: 0,
        });
    }

    fn mv(partition: u32, replicas: &[NodeId]) -> MetadataCommand {
        MetadataCommand::ReassignPartitions {
            moves: vec![PartitionMove {
                topic: "t".into(),
                partition,
                replicas: replicas.to_vec(),
            }],
        }
    }

    /// The AlterIsr partition `i`'s leader would propose now.
    fn isr_of(m: &ClusterMetadata, i: usize, isr: &[NodeId]) -> MetadataCommand {
        let p = &m.topics["t"].partitions[i];
        MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: i as u32,
            leader: p.leader.unwrap(),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn a_move_adds_followers_outside_the_isr_and_completes_when_they_are_in_sync() {
        let mut m = three_brokers_rf3();
        register(&mut m, 4);
        let r = m.apply(&mv(0, &[1, 2, 4]));
        assert!(
            matches!(&r, CommandResult::Moves(v) if v[0].replicas == vec![1, 2, 4]),
            "{r:?}"
        );
        let p = &m.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![1, 2, 4, 3]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![4], vec![3]));
        assert_eq!(p.isr, vec![1, 2, 3]);
        assert_eq!(
            p.min_isr(),
            3,
            "a majority of the four replicas while moving"
        );
        let epochs = (p.leader_epoch, p.partition_epoch);
        // Broker 4 caught up: the leader adds it and the move completes.
        assert_eq!(m.apply(&isr_of(&m, 0, &[1, 2, 4, 3])), CommandResult::Ok);
        let p = &m.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![1, 2, 4]);
        assert_eq!(p.isr, vec![1, 2, 4]);
        assert!(!p.moving());
        assert_eq!(p.leader, Some(1));
        assert_eq!(p.leader_epoch, epochs.0, "the leader stays");
        assert!(p.partition_epoch > epochs.1);
    }

    #[test]
    fn a_leaving_leader_hands_over_to_the_first_in_sync_target_replica() {
        let mut m = three_brokers_rf3();
        register(&mut m, 4);
        m.apply(&mv(0, &[4, 2, 3]));
        let epoch = m.topics["t"].partitions[0].leader_epoch;
        // Not complete while 4 is outside the ISR.
        m.apply(&isr_of(&m, 0, &[1, 2, 3]));
        assert!(m.topics["t"].partitions[0].moving());
        m.apply(&isr_of(&m, 0, &[4, 2, 3, 1]));
        let p = &m.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![4, 2, 3]);
        assert_eq!(p.leader, Some(4));
        assert_eq!(p.leader_epoch, epoch + 1);
        // A fenced first choice is skipped.
        let mut m = three_brokers_rf3();
        register(&mut m, 4);
        m.apply(&mv(0, &[4, 2, 3]));
        m.apply(&MetadataCommand::FenceBroker { id: 4 });
        m.apply(&isr_of(&m, 0, &[4, 2, 3, 1]));
        assert_eq!(m.topics["t"].partitions[0].leader, Some(2));
    }

    #[test]
    fn moves_are_checked_all_or_none_and_can_be_cancelled() {
        let mut m = three_brokers_rf3();
        register(&mut m, 4);
        let before = m.clone();
        for bad in [
            mv(0, &[1, 1, 4]),
            mv(0, &[1, 2, 9]),
            mv(0, &[]),
            mv(5, &[1, 2, 4]),
            MetadataCommand::ReassignPartitions {
                moves: vec![
                    PartitionMove {
                        topic: "t".into(),
                        partition: 0,
                        replicas: vec![1, 2, 4],
                    },
                    PartitionMove {
                        topic: "t".into(),
                        partition: 0,
                        replicas: vec![1, 3, 4],
                    },
                ],
            },
            MetadataCommand::ReassignPartitions {
                moves: vec![
                    PartitionMove {
                        topic: "t".into(),
                        partition: 0,
                        replicas: vec![1, 2, 4],
                    },
                    PartitionMove {
                        topic: "nope".into(),
                        partition: 0,
                        replicas: vec![1, 3, 4],
                    },
                ],
            },
        ] {
            let r = m.apply(&bad);
            assert!(
                matches!(r, CommandResult::Invalid(_) | CommandResult::UnknownTopic),
                "{bad:?} gave {r:?}"
            );
            assert_eq!(m, before, "{bad:?} changed state");
        }
        m.apply(&mv(0, &[1, 2, 4]));
        assert!(matches!(
            m.apply(&mv(0, &[1, 3, 4])),
            CommandResult::Invalid(_)
        ));
        // Cancelled: back to the three replicas, 4 out of the ISR too.
        m.apply(&isr_of(&m, 0, &[1, 2, 3]));
        assert!(matches!(m.apply(&mv(0, &[])), CommandResult::Moves(_)));
        let p = &m.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![1, 2, 3]);
        assert_eq!(p.isr, vec![1, 2, 3]);
        assert!(!p.moving());
        // Shrinking the replica set completes at once.
        m.apply(&mv(0, &[1, 2]));
        let p = &m.topics["t"].partitions[0];
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
    }

    fn counts(m: &ClusterMetadata) -> Vec<usize> {
        replica_counts(m).values().copied().collect()
    }

    #[test]
    fn draining_moves_every_replica_to_the_least_loaded_other_brokers() {
        let mut m = three_brokers_rf3();
        register(&mut m, 4);
        register(&mut m, 5);
        let r = m.apply(&MetadataCommand::DrainBroker {
            id: 3,
            draining: true,
        });
        let CommandResult::Moves(moves) = r else {
            panic!("{r:?}")
        };
        assert_eq!(moves.len(), 2);
        assert_eq!(moves[0].replicas, vec![1, 2, 4]);
        assert_eq!(moves[1].replicas, vec![2, 5, 1], "spread, position kept");
        assert!(m.brokers[&3].draining);
        assert_eq!(counts(&m), vec![2, 2, 0, 1, 1]);
        // A restart keeps the flag; new placements are another matter (placeable()).
        register(&mut m, 3);
        assert!(m.brokers[&3].draining);
        assert!(!placeable(&m).contains(&3));
        // Nowhere to go: nothing moves.
        let mut m = three_brokers_rf3();
        let r = m.apply(&MetadataCommand::DrainBroker {
            id: 3,
            draining: true,
        });
        assert_eq!(r, CommandResult::Moves(Vec::new()));
    }

    #[test]
    fn rebalance_gives_a_new_broker_its_share_moving_as_few_as_it_can() {
        let mut m = ClusterMetadata::default();
        for id in 1..=3 {
            register(&mut m, id);
        }
        m.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: [7; 16],
            assignment: (0..6u64)
                .map(|i| (0..3).map(|k| (i + k) % 3 + 1).collect())
                .collect(),
            config: BTreeMap::new(),
        });
        assert_eq!(
            m.apply(&MetadataCommand::Rebalance),
            CommandResult::Moves(Vec::new())
        );
        register(&mut m, 4);
        let r = m.apply(&MetadataCommand::Rebalance);
        let CommandResult::Moves(moves) = r else {
            panic!("{r:?}")
        };
        // 18 replicas over 4 brokers: 4 or 5 each, 4 replicas moved.
        let c = counts(&m);
        assert!(c.iter().all(|n| (4..=5).contains(n)), "{c:?}");
        let moving: Vec<_> = moves
            .iter()
            .filter(|mv| m.topics["t"].partitions[mv.partition as usize].moving())
            .collect();
        assert_eq!(moving.len(), 4, "{moves:?}");
        for mv in &moving {
            let p = &m.topics["t"].partitions[mv.partition as usize];
            assert_eq!(p.adding, vec![4]);
            assert_eq!(p.removing.len(), 1);
        }
        // Preferred leaders spread too: at most 2 of the 6 on any broker.
        let mut leads: BTreeMap<NodeId, usize> = BTreeMap::new();
        for p in &m.topics["t"].partitions {
            *leads.entry(p.target()[0]).or_default() += 1;
        }
        assert!(leads.values().all(|n| *n <= 2), "{leads:?}");
        assert!(leads.contains_key(&4), "{leads:?}");
        // Partitions already moving are left alone; again changes nothing.
        assert_eq!(
            m.apply(&MetadataCommand::Rebalance),
            CommandResult::Moves(Vec::new())
        );
        // A draining broker's replicas leave first.
        let mut m2 = m.clone();
        for i in 0..6 {
            let p = &m2.topics["t"].partitions[i];
            if p.moving() {
                let all = p.replicas.clone();
                let cmd = isr_of(&m2, i, &all);
                assert_eq!(m2.apply(&cmd), CommandResult::Ok);
            }
        }
        m2.brokers.get_mut(&1).unwrap().draining = true;
        m2.apply(&MetadataCommand::Rebalance);
        assert_eq!(replica_counts(&m2)[&1], 0);
    }
}
