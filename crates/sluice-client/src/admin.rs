//! Administration: topics (create, list, describe, delete, list offsets),
//! consumer groups (list, describe with lag, delete, seek), the cluster
//! (describe), and (module `security`) SCRAM users, ACLs and quotas.
//!
//! Metadata and CreateTopics go as the highest version the broker lists in
//! ApiVersions (v1 carries replicas, isr, leader epochs, racks, the
//! controller and the replication factor); a broker that speaks only v0 is
//! a single node, so its partitions are shown with `replicas = isr = [leader]`.

use std::collections::HashMap;
use std::sync::Arc;

/// One consumer group as listed by [`Admin::list_groups`] (the ListGroups entry as is).
pub use sluice_protocol::ListedGroup as GroupListing;
/// Committed offset, log end and lag of one partition of a group (the DescribeGroups entry as is).
pub use sluice_protocol::PartitionLag as GroupPartitionLag;
use sluice_protocol::{
    AlterConfigsRequest, AlterConfigsTopic, ApiKey, ConfigChange, CreatePartitionsRequest,
    CreatePartitionsTopic, CreateTopic, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeGroupsRequest, DescribedGroup, ErrorCode, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsTopic, OffsetCommitPartition, OffsetCommitRequest,
    OffsetCommitTopic, OffsetFetchRequest, OffsetSpec, PartitionReplicas, ReassignAction,
    ReassignPartitionsRequest, Request, Response, TopicMetadata, TopicPartitions,
};

use crate::consumer::SeekTo;

mod security;
pub use security::DEFAULT_SCRAM_ITERATIONS;

use crate::cluster::Cluster;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

/// One partition as described by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: u32,
    /// Node id of the leader; `u32::MAX` when it has no live leader (a cluster).
    pub leader: u32,
    /// Leader epoch (bumped each time leadership moves; 0 from a v0 broker).
    pub leader_epoch: u32,
    /// Node ids holding a replica, preferred leader first.
    pub replicas: Vec<u32>,
    /// Replicas in sync with the leader.
    pub isr: Vec<u32>,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record will get.
    pub end_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// A topic as described by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Partitions in index order.
    pub partitions: Vec<PartitionInfo>,
    /// Effective configuration.
    pub configs: Vec<(String, String)>,
}

impl TopicInfo {
    fn from_metadata(t: TopicMetadata) -> TopicInfo {
        TopicInfo {
            name: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| {
                    // A v0 answer lists no replicas: such a broker is a single
                    // node. A v1 answer with replicas but no isr is a
                    // partition without a live leader.
                    let v0 = p.replicas.is_empty();
                    PartitionInfo {
                        partition: p.partition,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        replicas: if v0 { vec![p.leader] } else { p.replicas },
                        isr: if v0 { vec![p.leader] } else { p.isr },
                        start_offset: p.start_offset,
                        end_offset: p.end_offset,
                        size_bytes: p.size_bytes,
                    }
                })
                .collect(),
            configs: t.configs,
        }
    }

    /// Total bytes over all partitions.
    pub fn size_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.size_bytes).sum()
    }
}

/// One broker as described by [`Admin::describe_cluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub node_id: u32,
    /// Host of its native listener.
    pub host: String,
    /// Port of its native listener.
    pub port: u16,
    /// Availability zone, `None` when not configured.
    pub rack: Option<String>,
    /// False when the controller fenced it (missed heartbeats).
    pub alive: bool,
}

impl BrokerInfo {
    /// `host:port` (IPv6 hosts in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The cluster as described by [`Admin::describe_cluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Cluster id.
    pub cluster_id: String,
    /// Node id of the active controller, `None` when none is known.
    pub controller_id: Option<u32>,
    /// Term (epoch) of the active controller; 0 for a single node.
    pub controller_epoch: u64,
    /// Every registered broker, by node id.
    pub brokers: Vec<BrokerInfo>,
}

impl ClusterInfo {
    /// True when `node` is a registered broker that is alive.
    pub fn is_alive(&self, node: u32) -> bool {
        self.brokers.iter().any(|b| b.node_id == node && b.alive)
    }
}

/// An offset found by [`Admin::list_offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset.
    pub offset: u64,
    /// Timestamp of the batch found when looking up by timestamp, else `None`.
    pub timestamp: Option<i64>,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// Client id the member joined with.
    pub client_id: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// `(topic, partition)` pairs the member owns and keeps.
    pub assignment: Vec<(String, u32)>,
    /// `(topic, partition)` pairs the member still owns but is giving up.
    pub revoking: Vec<(String, u32)>,
}

/// A consumer group as described by [`Admin::describe_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State name, as in [`GroupListing::state`].
    pub state: String,
    /// Current generation.
    pub generation: u32,
    /// Members in id order.
    pub members: Vec<GroupMember>,
    /// Every partition with a committed offset or an owner, by topic then partition.
    pub offsets: Vec<GroupPartitionLag>,
}

impl GroupDescription {
    fn from_wire(g: DescribedGroup) -> GroupDescription {
        let pairs = |l: &[TopicPartitions]| -> Vec<(String, u32)> {
            TopicPartitions::pairs(l)
                .map(|(t, p)| (t.to_string(), p))
                .collect()
        };
        GroupDescription {
            group_id: g.group_id,
            state: g.state,
            generation: g.generation,
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    assignment: pairs(&m.assignment),
                    revoking: pairs(&m.revoking),
                    member_id: m.member_id,
                    client_id: m.client_id,
                    topics: m.topics,
                })
                .collect(),
            offsets: g.offsets,
        }
    }

    /// Total lag in records over all partitions.
    pub fn total_lag(&self) -> u64 {
        self.offsets.iter().map(|o| o.lag).sum()
    }
}

/// Administrative client for topics and consumer groups.
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    /// An admin client for the broker at `bootstrap`; connects and checks the broker answers.
    pub async fn connect(bootstrap: impl Into<String>) -> Result<Admin> {
        Admin::with_config(ClientConfig::new(bootstrap)).await
    }

    /// An admin client with full connection settings; connects before returning.
    pub async fn with_config(config: ClientConfig) -> Result<Admin> {
        let cluster = Cluster::new(config);
        cluster.bootstrap().connect().await?;
        Ok(Admin { cluster })
    }

    /// Creates `name` with `partitions` partitions and config overrides
    /// (`retention.ms`, `retention.bytes`, `segment.bytes`, `flush`, ...).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: Vec<(String, String)>,
    ) -> Result<()> {
        self.create_topic_with(name, partitions, None, configs)
            .await
    }

    /// [`Admin::create_topic`] with `replication_factor` replicas per
    /// partition (`None` = the broker's default). The broker refuses a factor
    /// above its live brokers with `INVALID_REPLICATION_FACTOR`; a broker that
    /// speaks only CreateTopics v0 (a single node) takes `None` or 1, and any
    /// other factor is refused here with `UNSUPPORTED_VERSION` before sending.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: Vec<(String, String)>,
    ) -> Result<()> {
        let wire_factor = match replication_factor {
            None => sluice_protocol::DEFAULT_REPLICATION_FACTOR,
            Some(n) => i16::try_from(n).map_err(|_| {
                ClientError::broker(
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "create topic \"{name}\" (replication factor {n} above {})",
                        i16::MAX
                    ),
                )
            })?,
        };
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: name.to_string(),
                partitions,
                replication_factor: wire_factor,
                configs,
            }],
        });
        let conn = self.cluster.bootstrap();
        let version = conn.api_version(ApiKey::CreateTopics).await?;
        if version == 0 && !matches!(replication_factor, None | Some(1)) {
            return Err(ClientError::broker(
                ErrorCode::UnsupportedVersion,
                format!(
                    "create topic \"{name}\" with replication factor {}: the broker does not support replication factors (CreateTopics v1)",
                    wire_factor
                ),
            ));
        }
        let response = match conn.request_version(&request, version).await? {
            Response::CreateTopics(r) => r,
            other => return Err(unexpected("CreateTopics", other)),
        };
        let result = response
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ClientError::UnexpectedResponse {
                request: "CreateTopics",
                got: format!("no result for topic \"{name}\""),
            })?;
        self.cluster.invalidate(name);
        check(result.error, &result.message, || {
            format!("create topic \"{name}\"")
        })
    }

    /// The cluster: its id, the controller and its term, and every broker
    /// with its address, rack and liveness (DescribeCluster).
    pub async fn describe_cluster(&self) -> Result<ClusterInfo> {
        let response = match self
            .cluster
            .bootstrap()
            .request(&Request::DescribeCluster)
            .await?
        {
            Response::DescribeCluster(r) => r,
            other => return Err(unexpected("DescribeCluster", other)),
        };
        check(response.error, "", || "describe cluster".to_string())?;
        let mut brokers: Vec<BrokerInfo> = response
            .brokers
            .into_iter()
            .map(|b| BrokerInfo {
                node_id: b.node_id,
                host: b.host,
                port: b.port,
                rack: b.rack,
                alive: b.alive,
            })
            .collect();
        brokers.sort_by_key(|b| b.node_id);
        Ok(ClusterInfo {
            cluster_id: response.cluster_id,
            controller_id: u32::try_from(response.controller_id).ok(),
            controller_epoch: response.controller_epoch,
            brokers,
        })
    }

    /// Grows `topic` to `total` partitions (CreatePartitions). `total` is
    /// the new count, larger than the current one: a topic never shrinks
    /// (`INVALID_PARTITIONS`, with the current count in the message). The new
    /// partitions start empty; keyed records may map to other partitions
    /// from now on. Producers of this process learn the new count at once,
    /// others within their `metadata_max_age`.
    pub async fn create_partitions(&self, topic: &str, total: u32) -> Result<()> {
        let request = Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: topic.to_string(),
                count: total,
            }],
        });
        let response = match self.cluster.bootstrap().request(&request).await? {
            Response::CreatePartitions(r) => r.topics,
            other => return Err(unexpected("CreatePartitions", other)),
        };
        self.cluster.invalidate(topic);
        topic_outcome("CreatePartitions", response, topic, || {
            format!("add partitions to topic \"{topic}\" (to {total})")
        })
    }

    /// Starts moving partitions to new replica lists, preferred leader first
    /// (an empty list cancels that partition's move); all start or none.
    /// Returns the moves started; they complete in the background once the
    /// new replicas have caught up (see [`Admin::wait_for_moves`]).
    pub async fn reassign_partitions(
        &self,
        moves: Vec<PartitionReplicas>,
    ) -> Result<Vec<PartitionReplicas>> {
        self.reassign(ReassignAction::Move, 0, moves, "reassign partitions".into())
            .await
    }

    /// Spreads every topic's replicas evenly over the live brokers (a new
    /// broker gets its share); returns the moves the controller started.
    pub async fn rebalance(&self) -> Result<Vec<PartitionReplicas>> {
        self.reassign(ReassignAction::Rebalance, 0, Vec::new(), "rebalance".into())
            .await
    }

    /// Marks broker `node` as draining (no new replicas go to it) and starts
    /// moving its replicas away; returns the moves started. Partitions that
    /// were moving already are left for a later call.
    pub async fn drain_broker(&self, node: u32) -> Result<Vec<PartitionReplicas>> {
        self.reassign(
            ReassignAction::Drain,
            node,
            Vec::new(),
            format!("drain broker {node}"),
        )
        .await
    }

    /// Takes a drained broker back: new replicas may be placed on it again.
    pub async fn undrain_broker(&self, node: u32) -> Result<()> {
        self.reassign(
            ReassignAction::Undrain,
            node,
            Vec::new(),
            format!("undrain broker {node}"),
        )
        .await
        .map(|_| ())
    }

    async fn reassign(
        &self,
        action: ReassignAction,
        node_id: u32,
        moves: Vec<PartitionReplicas>,
        what: String,
    ) -> Result<Vec<PartitionReplicas>> {
        let request = Request::ReassignPartitions(ReassignPartitionsRequest {
            action,
            node_id,
            moves,
        });
        let r = match self.cluster.bootstrap().request(&request).await? {
            Response::ReassignPartitions(r) => r,
            other => return Err(unexpected("ReassignPartitions", other)),
        };
        check(r.error, &r.message, || what)?;
        Ok(r.moves)
    }

    /// Waits until each partition of `moves` has exactly its target replicas
    /// (its move completed), asking Metadata every 200 ms, at most `timeout`.
    pub async fn wait_for_moves(
        &self,
        moves: &[PartitionReplicas],
        timeout: std::time::Duration,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let pending = self.pending_moves(moves).await?;
            if pending == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    what: format!("{pending} of {} partition moves to complete", moves.len()),
                    after: timeout,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// How many of `moves` have not completed yet.
    pub async fn pending_moves(&self, moves: &[PartitionReplicas]) -> Result<usize> {
        let mut topics: Vec<String> = moves.iter().map(|m| m.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Ok(0);
        }
        let response = self.cluster.fetch_metadata(topics).await?;
        Ok(moves
            .iter()
            .filter(|m| {
                let replicas = response
                    .topics
                    .iter()
                    .find(|t| t.name == m.topic)
                    .and_then(|t| t.partitions.iter().find(|p| p.partition == m.partition))
                    .map(|p| &p.replicas);
                replicas != Some(&m.replicas)
            })
            .count())
    }

    /// Sets or deletes config keys of `topic` (AlterConfigs):
    /// [`ConfigChange::set`] gives a key a value, [`ConfigChange::delete`]
    /// removes the topic's value so the broker default applies. Keys and
    /// values are checked as [`Admin::create_topic`] checks them; one bad
    /// change refuses them all (`INVALID_CONFIG`, naming the key). The
    /// changes are stored before the answer; see protocol.md for when each
    /// key takes effect.
    pub async fn alter_topic_config(&self, topic: &str, changes: Vec<ConfigChange>) -> Result<()> {
        let request = Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: topic.to_string(),
                changes,
            }],
        });
        let response = match self.cluster.bootstrap().request(&request).await? {
            Response::AlterConfigs(r) => r.topics,
            other => return Err(unexpected("AlterConfigs", other)),
        };
        topic_outcome("AlterConfigs", response, topic, || {
            format!("alter config of topic \"{topic}\"")
        })
    }

    /// Deletes topic `name` and all its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = Request::DeleteTopics(DeleteTopicsRequest {
            topics: vec![name.to_string()],
        });
        let response = match self.cluster.bootstrap().request(&request).await? {
            Response::DeleteTopics(r) => r,
            other => return Err(unexpected("DeleteTopics", other)),
        };
        let result = response
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ClientError::UnexpectedResponse {
                request: "DeleteTopics",
                got: format!("no result for topic \"{name}\""),
            })?;
        self.cluster.invalidate(name);
        check(result.error, &result.message, || {
            format!("delete topic \"{name}\"")
        })
    }

    /// Every topic with its partitions, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let response = self.cluster.fetch_metadata_with_offsets(Vec::new()).await?;
        let mut topics: Vec<TopicInfo> = response
            .topics
            .into_iter()
            .filter(|t| t.error == ErrorCode::None)
            .map(TopicInfo::from_metadata)
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic's partitions (start/end offsets, size) and configuration.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let response = self
            .cluster
            .fetch_metadata_with_offsets(vec![name.to_string()])
            .await?;
        let topic = response
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                ClientError::broker(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("describe topic \"{name}\""),
                )
            })?;
        check(topic.error, "", || format!("describe topic \"{name}\""))?;
        Ok(TopicInfo::from_metadata(topic))
    }

    /// Looks up the earliest, latest or first-at-timestamp offset of one partition.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset> {
        list_offsets(&self.cluster, topic, partition, spec).await
    }
}

impl Admin {
    /// Every consumer group with members or committed offsets, sorted by id.
    ///
    /// Each broker lists only the groups it coordinates, so in a cluster
    /// (DescribeCluster names more than one broker) every live broker is
    /// asked and the answers merged; a broker that does not answer fails
    /// the listing (its groups would be missing).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let bootstrap = self.cluster.bootstrap().clone();
        let mut conns = vec![bootstrap.clone()];
        if bootstrap.advertises(ApiKey::DescribeCluster).await? {
            if let Response::DescribeCluster(c) =
                bootstrap.request(&Request::DescribeCluster).await?
            {
                if c.error == ErrorCode::None && c.brokers.len() > 1 {
                    conns = c
                        .brokers
                        .iter()
                        .filter(|b| b.alive)
                        .map(|b| self.cluster.broker_at(b.node_id, &b.host, b.port))
                        .collect();
                }
            }
        }
        let mut groups: Vec<GroupListing> = Vec::new();
        for conn in conns {
            let response = match conn.request(&Request::ListGroups).await? {
                Response::ListGroups(r) => r,
                other => return Err(unexpected("ListGroups", other)),
            };
            for g in response.groups {
                if !groups.iter().any(|x| x.group_id == g.group_id) {
                    groups.push(g);
                }
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// Sends a request naming `group_id` to the group's coordinator (see
    /// [`Cluster::group_request`]).
    async fn group_request(&self, group_id: &str, request: &Request) -> Result<Response> {
        let timeout = self.cluster.config().request_timeout;
        self.cluster.group_request(group_id, request, timeout).await
    }

    /// Members, assignments, committed offsets and lag of one group
    /// (`GROUP_ID_NOT_FOUND` when it has neither members nor offsets).
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        let request = Request::DescribeGroups(DescribeGroupsRequest {
            group_ids: vec![group_id.to_string()],
        });
        let response = match self.group_request(group_id, &request).await? {
            Response::DescribeGroups(r) => r,
            other => return Err(unexpected("DescribeGroups", other)),
        };
        let group = response
            .groups
            .into_iter()
            .find(|g| g.group_id == group_id)
            .ok_or_else(|| ClientError::UnexpectedResponse {
                request: "DescribeGroups",
                got: format!("no result for group \"{group_id}\""),
            })?;
        check(group.error, "", || format!("describe group \"{group_id}\""))?;
        let mut description = GroupDescription::from_wire(group);
        self.lag_from_leaders(&mut description).await;
        Ok(description)
    }

    /// In a cluster the coordinator has no records of partitions led by
    /// other brokers, so end offsets and lag in records are taken from each
    /// partition's leader (lag in time is then unknown, -1, unless caught
    /// up). A single broker's answer is kept as it is; a partition whose
    /// leader cannot be asked keeps the coordinator's figures.
    async fn lag_from_leaders(&self, d: &mut GroupDescription) {
        if d.offsets.is_empty() {
            return;
        }
        let mut topics: Vec<String> = d.offsets.iter().map(|o| o.topic.clone()).collect();
        topics.dedup();
        match self.cluster.fetch_metadata(topics).await {
            Ok(m) if m.brokers.len() > 1 => {}
            _ => return,
        }
        for o in &mut d.offsets {
            let latest =
                list_offsets(&self.cluster, &o.topic, o.partition, OffsetSpec::Latest).await;
            let Ok(latest) = latest else { continue };
            let from = if o.committed_offset >= 0 {
                o.committed_offset as u64
            } else {
                match list_offsets(&self.cluster, &o.topic, o.partition, OffsetSpec::Earliest).await
                {
                    Ok(earliest) => earliest.offset,
                    Err(_) => continue,
                }
            };
            let lag = latest.offset.saturating_sub(from);
            if (latest.offset, lag) != (o.end_offset, o.lag) {
                o.end_offset = latest.offset;
                o.lag = lag;
                o.lag_ms = if lag == 0 { 0 } else { -1 };
            }
        }
    }

    /// Deletes a group without members: its committed offsets and state
    /// (`NON_EMPTY_GROUP` while it has members, `GROUP_ID_NOT_FOUND` if unknown).
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let request = Request::DeleteGroups(DeleteGroupsRequest {
            group_ids: vec![group_id.to_string()],
        });
        let response = match self.group_request(group_id, &request).await? {
            Response::DeleteGroups(r) => r,
            other => return Err(unexpected("DeleteGroups", other)),
        };
        let result = response
            .groups
            .into_iter()
            .find(|g| g.group_id == group_id)
            .ok_or_else(|| ClientError::UnexpectedResponse {
                request: "DeleteGroups",
                got: format!("no result for group \"{group_id}\""),
            })?;
        check(result.error, "", || format!("delete group \"{group_id}\""))
    }

    /// A group's committed offsets as `(topic, partition, offset)`, by topic then partition.
    pub async fn group_offsets(&self, group_id: &str) -> Result<Vec<(String, u32, u64)>> {
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group_id: group_id.to_string(),
            topics: Vec::new(),
        });
        let response = match self.group_request(group_id, &request).await? {
            Response::OffsetFetch(r) => r,
            other => return Err(unexpected("OffsetFetch", other)),
        };
        check(response.error, "", || {
            format!("fetch offsets of group \"{group_id}\"")
        })?;
        let mut out: Vec<(String, u32, u64)> = response
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .filter(|p| p.error == ErrorCode::None && p.offset >= 0)
                    .map(move |p| (name.clone(), p.partition, p.offset as u64))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Moves a group's committed offsets (only while it has no members):
    /// every partition of `topics` (empty = the topics the group has offsets
    /// for) to `to`. Returns the new offsets. Earliest/latest/timestamp are
    /// resolved with ListOffsets; then one standalone OffsetCommit (`member_id`
    /// empty) stores them all, so either every partition moves or none.
    pub async fn seek_group(
        &self,
        group_id: &str,
        topics: &[String],
        to: SeekTo,
    ) -> Result<Vec<(String, u32, u64)>> {
        let context = || format!("seek group \"{group_id}\"");
        match self.describe_group(group_id).await {
            Ok(d) if !d.members.is_empty() => {
                return Err(ClientError::broker(
                    ErrorCode::NonEmptyGroup,
                    format!(
                        "{} ({} active member{}; stop its consumers first)",
                        context(),
                        d.members.len(),
                        if d.members.len() == 1 { "" } else { "s" }
                    ),
                ))
            }
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::GroupIdNotFound) => {}
            Err(e) => return Err(e),
        }
        let mut topics: Vec<String> = topics.to_vec();
        if topics.is_empty() {
            topics = self
                .group_offsets(group_id)
                .await?
                .into_iter()
                .map(|(t, _, _)| t)
                .collect();
            topics.dedup();
            if topics.is_empty() {
                return Err(ClientError::InvalidArgument(format!(
                    "{}: the group has no committed offsets; name the topic(s) to seek",
                    context()
                )));
            }
        }
        let mut targets: Vec<(String, u32, u64)> = Vec::new();
        for topic in &topics {
            let info = self.describe_topic(topic).await?;
            for p in &info.partitions {
                let offset = match to {
                    SeekTo::Offset(o) => o,
                    SeekTo::Earliest => {
                        self.list_offsets(topic, p.partition, OffsetSpec::Earliest)
                            .await?
                            .offset
                    }
                    SeekTo::Latest => {
                        self.list_offsets(topic, p.partition, OffsetSpec::Latest)
                            .await?
                            .offset
                    }
                    SeekTo::Timestamp(t) => {
                        self.list_offsets(topic, p.partition, OffsetSpec::Timestamp(t))
                            .await?
                            .offset
                    }
                };
                targets.push((topic.clone(), p.partition, offset));
            }
        }
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group_id: group_id.to_string(),
            member_id: String::new(),
            generation: 0,
            topics: topics
                .iter()
                .map(|t| {
                    Ok(OffsetCommitTopic {
                        name: t.clone(),
                        partitions: targets
                            .iter()
                            .filter(|(x, _, _)| x == t)
                            .map(|(_, p, o)| {
                                Ok(OffsetCommitPartition {
                                    partition: *p,
                                    offset: commit_offset(*o)?,
                                    metadata: String::new(),
                                })
                            })
                            .collect::<Result<_, ClientError>>()?,
                    })
                })
                .collect::<Result<_, ClientError>>()?,
        });
        let response = match self.group_request(group_id, &request).await? {
            Response::OffsetCommit(r) => r,
            other => return Err(unexpected("OffsetCommit", other)),
        };
        for t in &response.topics {
            for p in &t.partitions {
                match p.error {
                    ErrorCode::None => {}
                    // A member joined between the check and the commit.
                    ErrorCode::UnknownMemberId => {
                        return Err(ClientError::broker(
                            ErrorCode::NonEmptyGroup,
                            format!("{} (a member joined; stop its consumers first)", context()),
                        ))
                    }
                    code => {
                        return Err(ClientError::broker(
                            code,
                            format!("{} (\"{}\"/{})", context(), t.name, p.partition),
                        ))
                    }
                }
            }
        }
        Ok(targets)
    }
}

/// Committed offsets of `partitions` in `group_id` (partitions without one are left out).
pub(crate) async fn committed_offsets(
    cluster: &Cluster,
    group_id: &str,
    partitions: &[(String, u32)],
) -> Result<HashMap<(String, u32), u64>> {
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group_id: group_id.to_string(),
        topics: TopicPartitions::from_pairs(partitions.iter().map(|(t, p)| (t.as_str(), *p))),
    });
    let timeout = cluster.config().request_timeout;
    let response = match cluster.group_request(group_id, &request, timeout).await? {
        Response::OffsetFetch(r) => r,
        other => return Err(unexpected("OffsetFetch", other)),
    };
    check(response.error, "", || {
        format!("fetch offsets of group \"{group_id}\"")
    })?;
    let mut out = HashMap::new();
    for t in response.topics {
        for p in t.partitions {
            if p.error != ErrorCode::None {
                return Err(ClientError::broker(
                    p.error,
                    format!(
                        "fetch offset of group \"{group_id}\" for \"{}\"/{}",
                        t.name, p.partition
                    ),
                ));
            }
            if p.offset >= 0 {
                out.insert((t.name.clone(), p.partition), p.offset as u64);
            }
        }
    }
    Ok(out)
}

/// ListOffsets for one partition, sent to its leader.
pub(crate) async fn list_offsets(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
) -> Result<ListedOffset> {
    let (_, conn) = cluster.leader(topic, partition).await?;
    let request = Request::ListOffsets(ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: topic.to_string(),
            partitions: vec![ListOffsetsPartition { partition, spec }],
        }],
    });
    let response = match conn.request(&request).await {
        Ok(Response::ListOffsets(r)) => r,
        Ok(other) => return Err(unexpected("ListOffsets", other)),
        Err(e) => {
            if e.needs_metadata_refresh() {
                cluster.invalidate(topic);
            }
            return Err(e);
        }
    };
    let found = response
        .topics
        .into_iter()
        .filter(|t| t.name == topic)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition == partition)
        .ok_or_else(|| ClientError::UnexpectedResponse {
            request: "ListOffsets",
            got: format!("no result for {topic}/{partition}"),
        })?;
    if found.error != ErrorCode::None {
        if matches!(
            found.error,
            ErrorCode::NotLeaderForPartition
                | ErrorCode::LeaderNotAvailable
                | ErrorCode::UnknownTopicOrPartition
        ) {
            cluster.invalidate(topic);
        }
        return Err(ClientError::broker(
            found.error,
            format!("list offsets of \"{topic}\"/{partition}"),
        ));
    }
    Ok(ListedOffset {
        offset: found.offset,
        timestamp: (found.timestamp >= 0).then_some(found.timestamp),
    })
}

/// The result for `topic` in a per-topic answer, as a `Result`.
fn topic_outcome(
    request: &'static str,
    results: Vec<sluice_protocol::TopicResult>,
    topic: &str,
    context: impl FnOnce() -> String,
) -> Result<()> {
    let result = results
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| ClientError::UnexpectedResponse {
            request,
            got: format!("no result for topic \"{topic}\""),
        })?;
    check(result.error, &result.message, context)
}

fn check(code: ErrorCode, message: &str, context: impl FnOnce() -> String) -> Result<()> {
    if code == ErrorCode::None {
        return Ok(());
    }
    let mut context = context();
    if !message.is_empty() {
        context.push_str(" (");
        context.push_str(message);
        context.push(')');
    }
    Err(ClientError::broker(code, context))
}

pub(crate) fn unexpected(request: &'static str, got: Response) -> ClientError {
    let got = match got {
        Response::Error(code) => return ClientError::broker(code, request),
        other => format!("{other:?}").chars().take(120).collect(),
    };
    ClientError::UnexpectedResponse { request, got }
}

/// An offset as OffsetCommit carries it (an i64): one above `i64::MAX` is
/// refused here, as the broker would refuse it, never clamped.
pub(crate) fn commit_offset(offset: u64) -> Result<i64, ClientError> {
    i64::try_from(offset).map_err(|_| {
        ClientError::broker(
            ErrorCode::InvalidRequest,
            format!("commit offset {offset} (above i64::MAX)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::serve_fake;
    use sluice_protocol::{
        ApiVersionsResponse, ClusterBroker, DescribeClusterResponse, ListGroupsResponse,
        SUPPORTED_APIS,
    };

    fn listing(ids: &[&str]) -> Response {
        Response::ListGroups(ListGroupsResponse {
            groups: ids
                .iter()
                .map(|g| GroupListing {
                    group_id: g.to_string(),
                    state: "Empty".into(),
                    members: 0,
                    generation: 0,
                })
                .collect(),
        })
    }

    fn broker(node_id: u32, addr: std::net::SocketAddr, alive: bool) -> ClusterBroker {
        ClusterBroker {
            node_id,
            host: addr.ip().to_string(),
            port: addr.port(),
            rack: None,
            alive,
        }
    }

    #[tokio::test]
    async fn list_groups_merges_every_live_broker() {
        let (b, b_seen) = serve_fake(Arc::new(|request, _| match request {
            Request::ListGroups => listing(&["b1", "shared"]),
            other => panic!("unexpected {other:?}"),
        }))
        .await;
        // A fenced broker is not asked (nothing listens at its address).
        let fenced: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (a, a_seen) = serve_fake(Arc::new(move |request, a| match request {
            Request::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
                apis: SUPPORTED_APIS.to_vec(),
            }),
            Request::DescribeCluster => Response::DescribeCluster(DescribeClusterResponse {
                error: ErrorCode::None,
                cluster_id: "c".into(),
                controller_id: 0,
                controller_epoch: 1,
                brokers: vec![
                    broker(0, a, true),
                    broker(1, b, true),
                    broker(2, fenced, false),
                ],
            }),
            Request::ListGroups => listing(&["shared", "a1"]),
            other => panic!("unexpected {other:?}"),
        }))
        .await;
        let admin = Admin::connect(a.to_string()).await.unwrap();
        let groups = admin.list_groups().await.unwrap();
        let ids: Vec<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
        assert_eq!(ids, ["a1", "b1", "shared"]);
        // A was asked once, on the bootstrap connection (not a second one).
        let a_seen = a_seen.lock().unwrap().clone();
        assert_eq!(
            a_seen,
            [
                ApiKey::ApiVersions,
                ApiKey::DescribeCluster,
                ApiKey::ListGroups
            ]
        );
        assert_eq!(*b_seen.lock().unwrap(), [ApiKey::ListGroups]);
    }

    #[tokio::test]
    async fn list_groups_of_a_single_broker_asks_only_it() {
        let (a, a_seen) = serve_fake(Arc::new(move |request, a| match request {
            Request::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
                apis: SUPPORTED_APIS.to_vec(),
            }),
            Request::DescribeCluster => Response::DescribeCluster(DescribeClusterResponse {
                error: ErrorCode::None,
                cluster_id: "c".into(),
                controller_id: 0,
                controller_epoch: 0,
                brokers: vec![broker(0, a, true)],
            }),
            Request::ListGroups => listing(&["z", "a"]),
            other => panic!("unexpected {other:?}"),
        }))
        .await;
        let admin = Admin::connect(a.to_string()).await.unwrap();
        let ids: Vec<String> = admin
            .list_groups()
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.group_id)
            .collect();
        assert_eq!(ids, ["a", "z"]);
        assert_eq!(a_seen.lock().unwrap().len(), 3);
    }
}
