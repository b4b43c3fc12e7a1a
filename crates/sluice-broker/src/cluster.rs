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
//!   (the controller) and answered once applied on this broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use sluice_protocol::ErrorCode;

use crate::error::BrokerError;

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
    /// Availability zone.
    pub rack: Option<String>,
    /// Registered and not fenced.
    pub alive: bool,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        let b = |id, alive| ViewBroker {
            id,
            host: "127.0.0.1".into(),
            port: 7000 + id as u16,
            rack: None,
            alive,
        };
        let p = |leader| ViewPartition {
            leader: Some(leader),
            leader_epoch: 0,
            replicas: vec![leader],
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
        }
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
