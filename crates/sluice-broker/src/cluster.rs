//! The broker's seam to the cluster metadata (issue 11).
//!
//! The broker core does not run the controller: the binary does (with the
//! `sluice-cluster` crate) and attaches a [`ClusterLink`] with
//! [`crate::Broker::attach_cluster`]. Without one the broker is a single
//! node, its own controller, and leads every partition it stores.
//!
//! With a link:
//! - [`ClusterView`] is the applied metadata as the handlers need it (built
//!   by the binary each time the metadata log applies an entry): brokers with
//!   their advertised addresses, racks and liveness, every topic's
//!   partitions with leader, epoch and replicas;
//! - Produce, Fetch and ListOffsets for a partition this broker does not
//!   lead answer `NOT_LEADER_FOR_PARTITION`; a partition whose leader is not
//!   alive (or that this broker leads but has not opened yet) answers
//!   `LEADER_NOT_AVAILABLE` (see [`crate::Broker::leadership`]);
//! - topic create, delete and auto-creation are proposed through the link
//!   (the controller) and answered once applied on this broker;
//! - each consumer group has one coordinator among the controller voters
//!   ([`ClusterView::group_coordinator`]): rendezvous hashing of the group
//!   name over the voter ids, so every broker computes the same answer from
//!   the metadata, and a broker-only node joining moves no group. Group
//!   offsets live on the coordinator's broker until they are replicated
//!   (issue 12); while that broker is fenced its groups answer
//!   `COORDINATOR_NOT_AVAILABLE` rather than move to a broker without them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use sluice_protocol::ErrorCode;

use crate::error::BrokerError;
use crate::GroupCoordinator;

/// Leader id reported for a partition without a live leader (-1 as an i32).
pub const NO_LEADER: u32 = u32::MAX;

/// One broker of the cluster as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewBroker {
    /// Node id.
    pub id: u32,
    /// Advertised host of the native listener.
    pub host: String,
    /// Advertised port of the native listener.
    pub port: u16,
    /// Advertised host and port of the Kafka-protocol listener, if it runs.
    pub kafka: Option<(String, u16)>,
    /// Availability zone.
    pub rack: Option<String>,
    /// Registered and not fenced.
    pub alive: bool,
    /// Being decommissioned: no new replicas are placed on it.
    pub draining: bool,
}

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPartition {
    /// Current leader, if any (alive or not).
    pub leader: Option<u32>,
    /// Bumped each time the leader changes.
    pub leader_epoch: u32,
    /// Replica ids, preferred leader first.
    pub replicas: Vec<u32>,
    /// In-sync replica ids.
    pub isr: Vec<u32>,
}

/// One topic of the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewTopic {
    /// 16-byte topic id.
    pub id: [u8; 16],
    /// Partitions by index.
    pub partitions: Vec<ViewPartition>,
    /// Per-topic config overrides as created.
    pub config: BTreeMap<String, String>,
}

/// The applied cluster metadata, as the request handlers read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// This broker's node id.
    pub node_id: u32,
    /// The cluster id reported to clients.
    pub cluster_id: String,
    /// Registered brokers by id.
    pub brokers: BTreeMap<u32, ViewBroker>,
    /// Topics by name.
    pub topics: HashMap<String, ViewTopic>,
    /// Brokers that coordinate consumer groups (the controller voters).
    pub coordinators: Vec<u32>,
}

/// Rendezvous weight of `group` on broker `id` (FNV-1a: stable everywhere).
fn rendezvous(group: &str, id: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.as_bytes().iter().chain(id.to_be_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's last bytes mix weakly: finish with a murmur3-style avalanche.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl ClusterView {
    /// Whether broker `id` is registered and not fenced.
    pub fn is_alive(&self, id: u32) -> bool {
        self.brokers.get(&id).is_some_and(|b| b.alive)
    }

    /// Registered, unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &ViewBroker> {
        self.brokers.values().filter(|b| b.alive)
    }

    /// The partition's leader if it is alive.
    pub fn live_leader(&self, p: &ViewPartition) -> Option<u32> {
        p.leader.filter(|l| self.is_alive(*l))
    }

    /// The broker coordinating `group`: the live coordinator with the
    /// highest rendezvous weight (so a group moves when its coordinator's
    /// broker is fenced, and only then); `Unavailable` when none is alive.
    pub fn group_coordinator(&self, group: &str) -> GroupCoordinator {
        let Some(id) = self
            .coordinators
            .iter()
            .copied()
            .filter(|id| self.is_alive(*id))
            .max_by_key(|id| (rendezvous(group, *id), *id))
        else {
            return GroupCoordinator::Unavailable;
        };
        if id == self.node_id {
            return GroupCoordinator::Local;
        }
        match self.brokers.get(&id) {
            Some(b) => GroupCoordinator::Remote {
                node_id: id,
                host: b.host.clone(),
                port: b.port,
            },
            None => GroupCoordinator::Unavailable,
        }
    }

    /// Whether this broker may serve `topic`/`partition` as its leader:
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `NOT_LEADER_FOR_PARTITION` or
    /// `LEADER_NOT_AVAILABLE` otherwise.
    pub fn leadership(&self, topic: &str, partition: u32) -> Result<(), ErrorCode> {
        let Some(t) = self.topics.get(topic) else {
            return Err(ErrorCode::UnknownTopicOrPartition);
        };
        let Some(p) = t.partitions.get(partition as usize) else {
            return Err(ErrorCode::UnknownTopicOrPartition);
        };
        match self.live_leader(p) {
            Some(l) if l == self.node_id => Ok(()),
            Some(_) => Err(ErrorCode::NotLeaderForPartition),
            None => Err(ErrorCode::LeaderNotAvailable),
        }
    }
}

/// The controller's leader as this broker knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerInfo {
    /// The controller (Raft) leader, if known.
    pub leader: Option<u32>,
    /// The Raft term.
    pub epoch: u64,
}

/// A topic to create through the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name (already validated).
    pub name: String,
    /// Partition count (already validated).
    pub partitions: u32,
    /// Replicas per partition; `None` = the default, `min(3, live brokers)`.
    pub replication_factor: Option<u16>,
    /// Config overrides (already validated).
    pub config: Vec<(String, String)>,
}

/// A consumer group's committed offset as the cluster replicates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The next offset the group will consume.
    pub offset: u64,
    /// When it was committed (ms since the Unix epoch).
    pub timestamp_ms: i64,
    /// Free text from the committer.
    pub metadata: String,
}

/// What the broker asks of the cluster; implemented by the binary on the controller.
pub trait ClusterLink: Send + Sync {
    /// The applied metadata now.
    fn view(&self) -> Arc<ClusterView>;
    /// The controller leader and epoch now.
    fn controller(&self) -> ControllerInfo;
    /// Places and creates a topic through the controller; resolves once this
    /// broker has applied it (and opened its partitions).
    fn create_topic(&self, topic: NewTopic) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Deletes a topic through the controller; resolves once this broker has
    /// applied it (and removed its partitions).
    fn delete_topic(&self, name: String) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Grows a topic to `total` partitions through the controller; resolves
    /// once this broker has applied it.
    fn add_partitions(
        &self,
        name: String,
        total: u32,
    ) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Sets (`Some`) or removes (`None`) per-topic config keys through the
    /// controller (already validated); resolves once this broker has applied it.
    fn alter_topic_config(
        &self,
        name: String,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Allocates `count` producer ids unique in the cluster; returns the first.
    fn allocate_producer_ids(&self, count: u64) -> BoxFuture<'static, Result<i64, BrokerError>>;
    /// Replicates a group's committed offsets through the controller (so the
    /// group's next coordinator has them); resolves once committed there.
    fn commit_offsets(
        &self,
        group: String,
        offsets: Vec<ReplicatedOffset>,
    ) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// Forgets a group's replicated offsets (DeleteGroups).
    fn delete_group_offsets(&self, group: String) -> BoxFuture<'static, Result<(), BrokerError>>;
    /// A group's replicated committed offsets as this broker has applied them.
    fn group_offsets(&self, group: &str) -> Vec<ReplicatedOffset>;
    /// Applies a change to the security metadata (users, ACLs, quotas)
    /// through the controller; resolves once this broker has applied it.
    fn security_command(
        &self,
        cmd: sluice_auth::store::SecurityCommand,
    ) -> BoxFuture<'static, Result<sluice_auth::store::SecurityOutcome, BrokerError>>;
    /// Starts partition moves (a ReassignPartitions request) through the
    /// controller; resolves, once applied here, to the moves started.
    fn reassign(
        &self,
        request: sluice_protocol::ReassignPartitionsRequest,
    ) -> BoxFuture<'static, Result<Vec<sluice_protocol::PartitionReplicas>, BrokerError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        let b = |id, alive| ViewBroker {
            id,
            host: "127.0.0.1".into(),
            port: 7000 + id as u16,
            kafka: None,
            rack: None,
            alive,
            draining: false,
        };
        let p = |leader| ViewPartition {
            leader: Some(leader),
            leader_epoch: 0,
            replicas: vec![leader],
            isr: vec![leader],
        };
        ClusterView {
            node_id: 1,
            cluster_id: "c".into(),
            brokers: [(1, b(1, true)), (2, b(2, true)), (3, b(3, false))].into(),
            topics: [(
                "t".to_string(),
                ViewTopic {
                    id: [1; 16],
                    partitions: vec![p(1), p(2), p(3)],
                    config: BTreeMap::new(),
                },
            )]
            .into(),
            coordinators: vec![1, 2, 3],
        }
    }

    #[test]
    fn groups_spread_over_the_coordinators_and_follow_liveness() {
        let mut v = view();
        v.brokers.get_mut(&3).expect("3").alive = true;
        let mut counts = BTreeMap::new();
        for i in 0..300 {
            let g = format!("group-{i}");
            let c = v.group_coordinator(&g);
            let id = match &c {
                GroupCoordinator::Local => 1,
                GroupCoordinator::Remote {
                    node_id,
                    host,
                    port,
                } => {
                    assert_eq!(
                        (host.as_str(), *port),
                        ("127.0.0.1", 7000 + *node_id as u16)
                    );
                    *node_id
                }
                GroupCoordinator::Unavailable => panic!("{g} unavailable"),
            };
            *counts.entry(id).or_insert(0) += 1;
            // Every broker computes the same coordinator.
            let mut other = v.clone();
            other.node_id = 2;
            let seen_from_2 = match other.group_coordinator(&g) {
                GroupCoordinator::Local => 2,
                GroupCoordinator::Remote { node_id, .. } => node_id,
                GroupCoordinator::Unavailable => 0,
            };
            assert_eq!(seen_from_2, id, "{g}");
        }
        for id in [1, 2, 3] {
            assert!(counts[&id] > 60, "uneven: {counts:?}");
        }
        // A fenced coordinator's groups move to a live one; others stay.
        v.brokers.get_mut(&3).expect("3").alive = false;
        for i in 0..300 {
            let g = format!("group-{i}");
            let before = {
                let mut up = v.clone();
                up.brokers.get_mut(&3).expect("3").alive = true;
                up.group_coordinator(&g)
            };
            let now = v.group_coordinator(&g);
            match before {
                GroupCoordinator::Remote { node_id: 3, .. } => {
                    assert!(
                        matches!(
                            now,
                            GroupCoordinator::Local | GroupCoordinator::Remote { node_id: 2, .. }
                        ),
                        "{g}: {now:?}"
                    )
                }
                other => assert_eq!(now, other),
            }
        }
        // None alive, or none known (a node that has not joined yet): unavailable.
        let mut none = v.clone();
        for b in none.brokers.values_mut() {
            b.alive = false;
        }
        assert_eq!(none.group_coordinator("g"), GroupCoordinator::Unavailable);
        v.coordinators.clear();
        assert_eq!(v.group_coordinator("g"), GroupCoordinator::Unavailable);
    }

    #[test]
    fn leadership_names_the_reason_a_partition_is_not_served_here() {
        let v = view();
        assert_eq!(v.leadership("t", 0), Ok(()));
        assert_eq!(v.leadership("t", 1), Err(ErrorCode::NotLeaderForPartition));
        // Broker 3 is fenced: nobody leads partition 2.
        assert_eq!(v.leadership("t", 2), Err(ErrorCode::LeaderNotAvailable));
        assert_eq!(
            v.leadership("t", 3),
            Err(ErrorCode::UnknownTopicOrPartition)
        );
        assert_eq!(
            v.leadership("u", 0),
            Err(ErrorCode::UnknownTopicOrPartition)
        );
        assert_eq!(v.live_brokers().count(), 2);
    }
}
