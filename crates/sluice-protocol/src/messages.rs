//! Request and response bodies for every API. Encoding/decoding lives in `codec` / `wire`.
//!
//! Types only; see `protocol.md` for byte layouts. Record payloads (`records`)
//! are `Bytes` holding zero or more whole record batches back to back, so they
//! pass through the broker without re-encoding.

use bytes::Bytes;

use crate::ErrorCode;

/// Longest topic name, in bytes (Kafka's limit).
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// Default cap on the entries of one request (see [`RequestLimits`]); Kafka's
/// practical limit on partitions per request is of this order.
pub const DEFAULT_MAX_REQUEST_PARTITIONS: usize = 10_000;

/// Why a topic name is invalid, `None` when it is valid: 1 to 249 bytes of
/// `[a-zA-Z0-9._-]`, not `.` or `..`. The decoder applies it to every topic
/// name in a request; the broker applies it to names it creates.
pub fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Some("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Some("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Some("characters outside [a-zA-Z0-9._-]");
    }
    None
}

/// Bounds applied while decoding a request, before anything is allocated for it.
///
/// Every topic-partition listed counts one entry; so does a topic listed
/// without partitions (Metadata, CreateTopics, DeleteTopics, CreatePartitions,
/// AlterConfigs, JoinGroup subscriptions, an OffsetFetch or Heartbeat topic
/// with an empty partition list, a Produce or Fetch topic with no
/// partitions), a CreateTopics config pair, an AlterConfigs config change,
/// and a group id (DescribeGroups, DeleteGroups). A request with more
/// entries than `max_partitions` is refused with INVALID_REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most entries (topic-partitions, see above) one request may list.
    pub max_partitions: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_partitions: DEFAULT_MAX_REQUEST_PARTITIONS,
        }
    }
}

/// Numeric api keys. Stable; a retired key is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    /// Which APIs and versions the broker supports.
    ApiVersions = 0,
    /// Brokers, topics, partitions and their leaders.
    Metadata = 1,
    /// Create topics.
    CreateTopics = 2,
    /// Delete topics.
    DeleteTopics = 3,
    /// Append record batches.
    Produce = 4,
    /// Read record batches (long-poll).
    Fetch = 5,
    /// Earliest / latest / by-timestamp offsets.
    ListOffsets = 6,
    /// Join (or rejoin) a consumer group; answers with member id, generation and assignment.
    JoinGroup = 7,
    /// Group heartbeat: reports owned partitions, answers with assignment and revocations (long-poll).
    Heartbeat = 8,
    /// Leave a consumer group; the member's partitions are freed at once.
    LeaveGroup = 9,
    /// Commit consumed offsets, fenced by member and generation.
    OffsetCommit = 10,
    /// Read a group's committed offsets.
    OffsetFetch = 11,
    /// List every known group with its state.
    ListGroups = 12,
    /// Members, assignments, committed offsets and lag of groups.
    DescribeGroups = 13,
    /// Delete groups that have no members: their committed offsets and coordinator state.
    DeleteGroups = 14,
    /// Allocate a producer id and epoch for an idempotent producer.
    InitProducerId = 15,
    /// The cluster: its id, the controller and every broker with its liveness.
    DescribeCluster = 16,
    /// Which broker coordinates a consumer group (where to send its group requests).
    FindCoordinator = 17,
    /// Grow topics to a new, larger partition count.
    CreatePartitions = 18,
    /// Set or delete per-topic config keys.
    AlterConfigs = 19,
    /// A follower broker's fetch from partition leaders (replication).
    ReplicaFetch = 20,
    /// Move partitions to other brokers: listed moves, a rebalance, or draining a broker.
    ReassignPartitions = 21,
    /// Pick a SASL mechanism (first step of authentication).
    SaslHandshake = 22,
    /// One SASL message of the exchange chosen by SaslHandshake.
    SaslAuthenticate = 23,
    /// Create, replace or delete users' SCRAM credentials (salted client side).
    AlterUserScramCredentials = 24,
    /// Users and their SCRAM mechanisms and iteration counts (never keys).
    DescribeUsers = 25,
    /// Add ACL bindings.
    CreateAcls = 26,
    /// ACL bindings matching a filter.
    DescribeAcls = 27,
    /// Remove the ACL bindings matching filters.
    DeleteAcls = 28,
    /// Set or remove quotas of users and client ids.
    AlterQuotas = 29,
    /// Every configured quota.
    DescribeQuotas = 30,
}

/// `controller_id` when no controller is known.
pub const NO_CONTROLLER: i32 = -1;

/// CreateTopics `replication_factor` that asks for the broker's default.
pub const DEFAULT_REPLICATION_FACTOR: i16 = -1;

/// Acknowledgement level of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Acks {
    /// No response is sent.
    None = 0,
    /// Acknowledged once appended to the leader's log (page cache).
    Leader = 1,
    /// Acknowledged once fsynced on the leader.
    Durable = 2,
}

/// Request header fields common to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Raw api key (may be unknown to this broker).
    pub api_key: u16,
    /// Api version.
    pub api_version: u16,
    /// Echoed in the response.
    pub correlation_id: u32,
    /// Free-form client name for logs.
    pub client_id: String,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// ApiVersions (empty body).
    ApiVersions,
    /// Metadata.
    Metadata(MetadataRequest),
    /// CreateTopics.
    CreateTopics(CreateTopicsRequest),
    /// DeleteTopics.
    DeleteTopics(DeleteTopicsRequest),
    /// Produce.
    Produce(ProduceRequest),
    /// Fetch.
    Fetch(FetchRequest),
    /// ListOffsets.
    ListOffsets(ListOffsetsRequest),
    /// JoinGroup.
    JoinGroup(JoinGroupRequest),
    /// Heartbeat.
    Heartbeat(HeartbeatRequest),
    /// LeaveGroup.
    LeaveGroup(LeaveGroupRequest),
    /// OffsetCommit.
    OffsetCommit(OffsetCommitRequest),
    /// OffsetFetch.
    OffsetFetch(OffsetFetchRequest),
    /// ListGroups (empty body).
    ListGroups,
    /// DescribeGroups.
    DescribeGroups(DescribeGroupsRequest),
    /// DeleteGroups.
    DeleteGroups(DeleteGroupsRequest),
    /// InitProducerId (empty body).
    InitProducerId,
    /// DescribeCluster (empty body).
    DescribeCluster,
    /// FindCoordinator.
    FindCoordinator(FindCoordinatorRequest),
    /// CreatePartitions.
    CreatePartitions(CreatePartitionsRequest),
    /// AlterConfigs.
    AlterConfigs(AlterConfigsRequest),
    /// ReplicaFetch.
    ReplicaFetch(ReplicaFetchRequest),
    /// ReassignPartitions.
    ReassignPartitions(ReassignPartitionsRequest),
    /// SaslHandshake.
    SaslHandshake(SaslHandshakeRequest),
    /// SaslAuthenticate.
    SaslAuthenticate(SaslAuthenticateRequest),
    /// AlterUserScramCredentials.
    AlterUserScramCredentials(AlterUserScramCredentialsRequest),
    /// DescribeUsers.
    DescribeUsers(DescribeUsersRequest),
    /// CreateAcls.
    CreateAcls(CreateAclsRequest),
    /// DescribeAcls.
    DescribeAcls(DescribeAclsRequest),
    /// DeleteAcls.
    DeleteAcls(DeleteAclsRequest),
    /// AlterQuotas.
    AlterQuotas(AlterQuotasRequest),
    /// DescribeQuotas (empty body).
    DescribeQuotas,
}

/// One response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A header-level error (unknown api, unsupported version, undecodable body): no body follows.
    Error(ErrorCode),
    /// ApiVersions.
    ApiVersions(ApiVersionsResponse),
    /// Metadata.
    Metadata(MetadataResponse),
    /// CreateTopics.
    CreateTopics(CreateTopicsResponse),
    /// DeleteTopics.
    DeleteTopics(DeleteTopicsResponse),
    /// Produce.
    Produce(ProduceResponse),
    /// Fetch.
    Fetch(FetchResponse),
    /// ListOffsets.
    ListOffsets(ListOffsetsResponse),
    /// JoinGroup.
    JoinGroup(JoinGroupResponse),
    /// Heartbeat.
    Heartbeat(HeartbeatResponse),
    /// LeaveGroup.
    LeaveGroup(LeaveGroupResponse),
    /// OffsetCommit.
    OffsetCommit(OffsetCommitResponse),
    /// OffsetFetch.
    OffsetFetch(OffsetFetchResponse),
    /// ListGroups.
    ListGroups(ListGroupsResponse),
    /// DescribeGroups.
    DescribeGroups(DescribeGroupsResponse),
    /// DeleteGroups.
    DeleteGroups(DeleteGroupsResponse),
    /// InitProducerId.
    InitProducerId(InitProducerIdResponse),
    /// DescribeCluster.
    DescribeCluster(DescribeClusterResponse),
    /// FindCoordinator.
    FindCoordinator(FindCoordinatorResponse),
    /// CreatePartitions.
    CreatePartitions(CreatePartitionsResponse),
    /// AlterConfigs.
    AlterConfigs(AlterConfigsResponse),
    /// ReplicaFetch.
    ReplicaFetch(ReplicaFetchResponse),
    /// ReassignPartitions.
    ReassignPartitions(ReassignPartitionsResponse),
    /// SaslHandshake.
    SaslHandshake(SaslHandshakeResponse),
    /// SaslAuthenticate.
    SaslAuthenticate(SaslAuthenticateResponse),
    /// AlterUserScramCredentials.
    AlterUserScramCredentials(AlterUserScramCredentialsResponse),
    /// DescribeUsers.
    DescribeUsers(DescribeUsersResponse),
    /// CreateAcls.
    CreateAcls(CreateAclsResponse),
    /// DescribeAcls.
    DescribeAcls(DescribeAclsResponse),
    /// DeleteAcls.
    DeleteAcls(DeleteAclsResponse),
    /// AlterQuotas.
    AlterQuotas(AlterQuotasResponse),
    /// DescribeQuotas.
    DescribeQuotas(DescribeQuotasResponse),
}

/// Supported version range of one api.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    /// Api key.
    pub api_key: u16,
    /// Lowest supported version.
    pub min_version: u16,
    /// Highest supported version.
    pub max_version: u16,
}

/// ApiVersions response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    /// Supported apis.
    pub apis: Vec<ApiVersionRange>,
}

/// Metadata request: an empty list means all topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataRequest {
    /// Topics to describe.
    pub topics: Vec<String>,
}

/// A broker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub node_id: u32,
    /// Host name or IP.
    pub host: String,
    /// Native protocol port.
    pub port: u16,
    /// Availability zone (`--rack`), `None` when not configured. Metadata v1 and later.
    pub rack: Option<String>,
}

/// Metadata for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: u32,
    /// Error for this partition.
    pub error: ErrorCode,
    /// Node id of the leader.
    pub leader: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// Offset the next record will get.
    pub end_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Leader epoch: bumped each time leadership of the partition moves. Metadata v1 and later (0 from v0).
    pub leader_epoch: u32,
    /// Node ids holding a replica, preferred leader first. Metadata v1 and later (empty from v0).
    pub replicas: Vec<u32>,
    /// Replicas in sync with the leader. Metadata v1 and later (empty from v0).
    pub isr: Vec<u32>,
}

/// Metadata for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Error for this topic (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    pub error: ErrorCode,
    /// Topic name.
    pub name: String,
    /// Partitions in index order.
    pub partitions: Vec<PartitionMetadata>,
    /// Effective topic configuration as key/value strings.
    pub configs: Vec<(String, String)>,
}

/// Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    /// Known brokers.
    pub brokers: Vec<BrokerInfo>,
    /// Requested (or all) topics.
    pub topics: Vec<TopicMetadata>,
    /// Node id of the active controller, [`NO_CONTROLLER`] when unknown. Metadata v1 and later (-1 from v0).
    pub controller_id: i32,
    /// Cluster id. Metadata v1 and later (empty from v0).
    pub cluster_id: String,
}

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition, [`DEFAULT_REPLICATION_FACTOR`] (-1) for the
    /// broker's default. CreateTopics v1 and later (v0 sends none: the default).
    pub replication_factor: i16,
    /// Config overrides (`retention.ms`, `retention.bytes`, `segment.bytes`, `segment.ms`, `flush`, `flush.interval.ms`).
    pub configs: Vec<(String, String)>,
}

/// CreateTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    /// Topics to create.
    pub topics: Vec<CreateTopic>,
}

/// Result of one topic creation or deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    /// Topic name.
    pub name: String,
    /// Outcome.
    pub error: ErrorCode,
    /// Human-readable detail, empty on success.
    pub message: String,
}

/// CreateTopics response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsResponse {
    /// One result per requested topic.
    pub topics: Vec<TopicResult>,
}

/// DeleteTopics request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    /// Topic names.
    pub topics: Vec<String>,
}

/// DeleteTopics response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsResponse {
    /// One result per requested topic.
    pub topics: Vec<TopicResult>,
}

/// Batches for one partition in a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    /// Partition index.
    pub partition: u32,
    /// One or more whole record batches, back to back.
    pub records: Bytes,
}

/// Partitions of one topic in a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopic {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<ProducePartition>,
}

/// Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// Acknowledgement level.
    pub acks: Acks,
    /// How long the broker may wait for durability before answering REQUEST_TIMED_OUT.
    pub timeout_ms: u32,
    /// Topics.
    pub topics: Vec<ProduceTopic>,
}

/// Result for one partition of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// Partition index.
    pub partition: u32,
    /// Outcome.
    pub error: ErrorCode,
    /// Offset assigned to the first record of the first batch.
    pub base_offset: u64,
    /// Offset assigned to the last record of the last batch.
    pub last_offset: u64,
}

/// Results for one topic of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceTopicResponse {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<ProducePartitionResponse>,
}

/// Produce response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Topics.
    pub topics: Vec<ProduceTopicResponse>,
}

/// One partition to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// Partition index.
    pub partition: u32,
    /// First offset wanted.
    pub fetch_offset: u64,
    /// Upper bound on bytes returned for this partition (at least one batch is always returned).
    pub max_bytes: u32,
}

/// Partitions of one topic to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopic {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<FetchPartition>,
}

/// Fetch request (long-poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest time to park waiting for `min_bytes`.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes are available.
    pub min_bytes: u32,
    /// Upper bound on bytes in the whole response.
    pub max_bytes: u32,
    /// Topics.
    pub topics: Vec<FetchTopic>,
}

/// Data for one partition of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// Partition index.
    pub partition: u32,
    /// Outcome.
    pub error: ErrorCode,
    /// Log end offset (offset of the next record to be written).
    pub high_watermark: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Whole record batches starting with the one containing `fetch_offset`.
    pub records: Bytes,
}

/// Data for one topic of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicResponse {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<FetchPartitionResponse>,
}

/// Fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// Topics.
    pub topics: Vec<FetchTopicResponse>,
}

/// One partition a follower fetches from its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The leader epoch the follower follows in.
    pub leader_epoch: u32,
    /// The follower's log end offset: the next offset it wants.
    pub fetch_offset: u64,
    /// Leader epoch of the follower's last batch (-1: its log is empty).
    pub last_fetched_epoch: i32,
    /// Everything below this offset is fsynced on the follower.
    pub durable_offset: u64,
}

/// ReplicaFetch request: a follower broker's long-poll fetch of every
/// partition it follows on one leader broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    /// The follower's broker id.
    pub replica_id: u32,
    /// Longest time to park when there is nothing new.
    pub max_wait_ms: u32,
    /// Upper bound on record bytes in the whole response.
    pub max_bytes: u32,
    /// Partitions (topic, partition unique).
    pub partitions: Vec<ReplicaFetchPartition>,
}

/// The leader's answer for one partition of a ReplicaFetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchPartitionResponse {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Outcome.
    pub error: ErrorCode,
    /// The leader's high watermark (committed offset).
    pub high_watermark: u64,
    /// The leader's log start offset.
    pub log_start_offset: u64,
    /// When >= 0 the follower's log diverges from the leader's: it must
    /// truncate to at most `diverging_end_offset` (the end of this epoch in
    /// the leader's log) and fetch again; `records` is empty.
    pub diverging_epoch: i32,
    /// End offset of `diverging_epoch` in the leader's log (0 when none).
    pub diverging_end_offset: u64,
    /// Whole record batches from `fetch_offset`, verbatim.
    pub records: Bytes,
}

/// What a ReassignPartitions request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReassignAction {
    /// Move the listed partitions to their listed replicas (empty: cancel).
    Move = 0,
    /// Spread every topic's replicas evenly over the live brokers.
    Rebalance = 1,
    /// Drain broker `node_id` (decommission): no new replicas, its replicas move away.
    Drain = 2,
    /// Take broker `node_id` back after a drain (new replicas may go to it again).
    Undrain = 3,
}

impl ReassignAction {
    /// Maps a wire value to an action; `None` for unassigned values.
    pub fn from_u8(v: u8) -> Option<ReassignAction> {
        match v {
            0 => Some(ReassignAction::Move),
            1 => Some(ReassignAction::Rebalance),
            2 => Some(ReassignAction::Drain),
            3 => Some(ReassignAction::Undrain),
            _ => None,
        }
    }
}

/// One partition and its (target) replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Broker ids, preferred leader first.
    pub replicas: Vec<u32>,
}

/// ReassignPartitions request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignPartitionsRequest {
    /// What to do.
    pub action: ReassignAction,
    /// The broker to drain or take back (Drain, Undrain; 0 otherwise).
    pub node_id: u32,
    /// The moves (Move only; empty otherwise).
    pub moves: Vec<PartitionReplicas>,
}

/// ReassignPartitions response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignPartitionsResponse {
    /// NONE, or why nothing was started.
    pub error: ErrorCode,
    /// Human-readable detail of `error` (empty on success).
    pub message: String,
    /// The moves started (or cancelled), with each partition's target replicas.
    pub moves: Vec<PartitionReplicas>,
}

/// ReplicaFetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    /// Partitions, in request order.
    pub partitions: Vec<ReplicaFetchPartitionResponse>,
}

/// Which offset ListOffsets should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset (wire value -2).
    Earliest,
    /// The log end offset (wire value -1).
    Latest,
    /// The first offset whose timestamp is >= this many ms since epoch (wire value >= 0).
    Timestamp(i64),
}

/// One partition to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    /// Partition index.
    pub partition: u32,
    /// What to find.
    pub spec: OffsetSpec,
}

/// Partitions of one topic to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopic {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<ListOffsetsPartition>,
}

/// ListOffsets request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// Topics.
    pub topics: Vec<ListOffsetsTopic>,
}

/// Result for one partition of ListOffsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    /// Partition index.
    pub partition: u32,
    /// Outcome.
    pub error: ErrorCode,
    /// The offset found; for a timestamp past the last record, the log end offset.
    pub offset: u64,
    /// Timestamp of the batch found, -1 when not by timestamp or not found.
    pub timestamp: i64,
}

/// Results for one topic of ListOffsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsTopicResponse {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

/// ListOffsets response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// Topics.
    pub topics: Vec<ListOffsetsTopicResponse>,
}

// ----------------------------------------------------------------------------
// Consumer groups (keys 7..=13). Each type maps 1:1 onto a concept of the
// protocol-neutral coordinator in `sluice-group` (noted per type); this crate
// does not depend on it.
// ----------------------------------------------------------------------------

/// A topic and some of its partitions: how assignments, revocations and owned
/// sets travel (the coordinator's `Vec<TopicPartition>`, grouped by topic).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPartitions {
    /// Topic name.
    pub topic: String,
    /// Partition indexes.
    pub partitions: Vec<u32>,
}

impl TopicPartitions {
    /// A topic with the given partitions.
    pub fn new(topic: impl Into<String>, partitions: Vec<u32>) -> Self {
        TopicPartitions {
            topic: topic.into(),
            partitions,
        }
    }

    /// Groups `(topic, partition)` pairs by topic: topics in name order,
    /// partitions ascending, duplicates dropped (a canonical form, so equal
    /// sets encode to equal bytes).
    pub fn from_pairs<S: AsRef<str>>(pairs: impl IntoIterator<Item = (S, u32)>) -> Vec<Self> {
        let mut map: std::collections::BTreeMap<String, std::collections::BTreeSet<u32>> =
            std::collections::BTreeMap::new();
        for (topic, partition) in pairs {
            let topic = topic.as_ref();
            match map.get_mut(topic) {
                Some(set) => {
                    set.insert(partition);
                }
                None => {
                    map.insert(topic.to_owned(), std::iter::once(partition).collect());
                }
            }
        }
        map.into_iter()
            .map(|(topic, set)| TopicPartitions {
                topic,
                partitions: set.into_iter().collect(),
            })
            .collect()
    }

    /// Flattens a list back into `(topic, partition)` pairs, in list order.
    pub fn pairs(list: &[TopicPartitions]) -> impl Iterator<Item = (&str, u32)> + '_ {
        list.iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.as_str(), *p)))
    }
}

/// JoinGroup request (the coordinator's `JoinRequest`; `client_id` comes from the request header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// Group id (1 to 255 bytes, no control characters).
    pub group_id: String,
    /// Empty on a first join; the id from a previous response to update a member still in the group.
    pub member_id: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Session timeout; 0 = the broker default (10 s).
    pub session_timeout_ms: u32,
    /// How long the member may take to confirm a revocation; 0 = the session timeout.
    pub rebalance_timeout_ms: u32,
    /// Opaque bytes stored with the member (shown to nobody in v0; room for client-side protocols).
    pub metadata: Bytes,
}

/// JoinGroup response (the coordinator's `MemberView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// Outcome; on error the other fields are empty/zero.
    pub error: ErrorCode,
    /// The member's id; send it in every later group request.
    pub member_id: String,
    /// The group's generation now.
    pub generation: u32,
    /// When to send the next heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Partitions the member may consume now.
    pub assignment: Vec<TopicPartitions>,
    /// Partitions the member still owns but must give up (empty on a first join).
    pub revoke: Vec<TopicPartitions>,
}

/// Heartbeat request (the coordinator's `heartbeat` arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// Group id.
    pub group_id: String,
    /// Member id from JoinGroup.
    pub member_id: String,
    /// Generation from the member's last JoinGroup or Heartbeat response.
    pub generation: u32,
    /// Partitions the member consumes now; leaving out a revoked partition confirms its revocation.
    pub owned: Vec<TopicPartitions>,
    /// 0 = answer at once; > 0 = the broker may park the heartbeat up to this long until the member's view changes.
    pub max_wait_ms: u32,
}

/// Heartbeat response (the coordinator's `MemberView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// Outcome; on error the other fields are empty/zero.
    pub error: ErrorCode,
    /// The group's generation now.
    pub generation: u32,
    /// When to send the next heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Partitions the member may consume now (newly granted ones included).
    pub assignment: Vec<TopicPartitions>,
    /// Partitions to give up: stop fetching, commit, then leave them out of `owned`.
    pub revoke: Vec<TopicPartitions>,
}

/// LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest {
    /// Group id.
    pub group_id: String,
    /// Member id from JoinGroup.
    pub member_id: String,
}

/// LeaveGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupResponse {
    /// Outcome.
    pub error: ErrorCode,
}

/// One partition's offset in an OffsetCommit request (the coordinator's `OffsetCommit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartition {
    /// Partition index.
    pub partition: u32,
    /// The next offset the group will consume (last processed + 1); 0 to
    /// `i64::MAX` (a negative value is refused while decoding), the same type
    /// as the offsets OffsetFetch and DescribeGroups report.
    pub offset: i64,
    /// Free text stored with the offset.
    pub metadata: String,
}

/// Partitions of one topic in an OffsetCommit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitTopic {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<OffsetCommitPartition>,
}

/// OffsetCommit request (the coordinator's `Committer` plus the offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// Group id.
    pub group_id: String,
    /// Committing member; empty for a standalone or admin commit (`Committer::Standalone`).
    pub member_id: String,
    /// Generation from the member's last response; ignored when `member_id` is empty.
    pub generation: u32,
    /// Topics.
    pub topics: Vec<OffsetCommitTopic>,
}

/// Result for one partition of an OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitPartitionResponse {
    /// Partition index.
    pub partition: u32,
    /// Outcome (NONE once durable).
    pub error: ErrorCode,
}

/// Results for one topic of an OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitTopicResponse {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<OffsetCommitPartitionResponse>,
}

/// OffsetCommit response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    /// Topics, in request order.
    pub topics: Vec<OffsetCommitTopicResponse>,
}

/// OffsetFetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    /// Group id.
    pub group_id: String,
    /// Partitions to look up; empty = every committed partition of the group,
    /// a topic with no partitions = every committed partition of that topic.
    pub topics: Vec<TopicPartitions>,
}

/// One partition's committed offset (the coordinator's `CommittedOffset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchPartitionResponse {
    /// Partition index.
    pub partition: u32,
    /// Outcome for this partition.
    pub error: ErrorCode,
    /// The committed offset, -1 when none.
    pub offset: i64,
    /// Metadata stored with the commit, empty when none.
    pub metadata: String,
}

/// Committed offsets of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchTopicResponse {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<OffsetFetchPartitionResponse>,
}

/// OffsetFetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    /// Group-level outcome (e.g. INVALID_GROUP_ID); when not NONE, `topics` is empty.
    pub error: ErrorCode,
    /// Topics.
    pub topics: Vec<OffsetFetchTopicResponse>,
}

/// One group in a ListGroups response (the coordinator's `GroupListing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// Group id.
    pub group_id: String,
    /// `Empty`, `Stable`, `Reconciling` or `AwaitingAssignment` (the coordinator's `GroupState::name`).
    pub state: String,
    /// Number of members.
    pub members: u32,
    /// Current generation.
    pub generation: u32,
}

/// ListGroups response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// Every group with members or committed offsets.
    pub groups: Vec<ListedGroup>,
}

/// DescribeGroups request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsRequest {
    /// Groups to describe.
    pub group_ids: Vec<String>,
}

/// One member in a DescribeGroups response (the coordinator's `MemberDescription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    /// Member id.
    pub member_id: String,
    /// Client id from the member's JoinGroup header.
    pub client_id: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Owned partitions the member keeps.
    pub assignment: Vec<TopicPartitions>,
    /// Owned partitions being revoked (still owned until confirmed).
    pub revoking: Vec<TopicPartitions>,
}

/// Committed offset, log end and lag of one partition of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The committed offset, -1 when none.
    pub committed_offset: i64,
    /// The partition's log end offset.
    pub end_offset: u64,
    /// Records behind: `end_offset - committed_offset` (0 when caught up).
    pub lag: u64,
    /// Age of the oldest unconsumed record in ms (now minus its timestamp), 0 when caught up, -1 unknown.
    pub lag_ms: i64,
}

/// One group in a DescribeGroups response (the coordinator's `GroupDescription` plus offsets and lag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// Outcome for this group (e.g. GROUP_ID_NOT_FOUND, INVALID_GROUP_ID).
    pub error: ErrorCode,
    /// Group id.
    pub group_id: String,
    /// Same names as [`ListedGroup::state`].
    pub state: String,
    /// Current generation.
    pub generation: u32,
    /// Members in id order.
    pub members: Vec<DescribedMember>,
    /// Every partition with a committed offset or an owner, by topic then partition.
    pub offsets: Vec<PartitionLag>,
}

/// DescribeGroups response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsResponse {
    /// One entry per requested group, in request order.
    pub groups: Vec<DescribedGroup>,
}

/// DeleteGroups request: groups to delete (each must have no members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsRequest {
    /// Groups to delete.
    pub group_ids: Vec<String>,
}

/// Outcome of deleting one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedGroup {
    /// Group id.
    pub group_id: String,
    /// NONE, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, INVALID_GROUP_ID or a storage error.
    pub error: ErrorCode,
}

/// DeleteGroups response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsResponse {
    /// One entry per requested group, in request order.
    pub groups: Vec<DeletedGroup>,
}

/// One broker in a DescribeCluster response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    /// Node id.
    pub node_id: u32,
    /// Host name or IP of its native listener.
    pub host: String,
    /// Native protocol port.
    pub port: u16,
    /// Availability zone, `None` when not configured.
    pub rack: Option<String>,
    /// False when the controller has fenced it (missed heartbeats).
    pub alive: bool,
}

/// DescribeCluster response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClusterResponse {
    /// NONE, or why the cluster could not be described.
    pub error: ErrorCode,
    /// Cluster id.
    pub cluster_id: String,
    /// Node id of the active controller, [`NO_CONTROLLER`] when unknown.
    pub controller_id: i32,
    /// Term (epoch) of the active controller; 0 for a single node.
    pub controller_epoch: u64,
    /// Every registered broker, by node id.
    pub brokers: Vec<ClusterBroker>,
}

/// `node_id` of a FindCoordinator answer that names no broker (an error).
pub const NO_COORDINATOR: u32 = u32::MAX;

/// FindCoordinator request: which broker coordinates this group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// Group id.
    pub group_id: String,
}

/// FindCoordinator response: the coordinator's node id and native address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// NONE, COORDINATOR_NOT_AVAILABLE or INVALID_GROUP_ID.
    pub error: ErrorCode,
    /// Node id of the coordinator, [`NO_COORDINATOR`] on error.
    pub node_id: u32,
    /// Advertised host of its native listener, empty on error.
    pub host: String,
    /// Native protocol port, 0 on error.
    pub port: u16,
}

/// One topic to grow in a CreatePartitions request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsTopic {
    /// Topic name.
    pub name: String,
    /// The new total partition count (larger than the current one).
    pub count: u32,
}

/// CreatePartitions request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsRequest {
    /// Topics to grow.
    pub topics: Vec<CreatePartitionsTopic>,
}

/// CreatePartitions response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsResponse {
    /// One result per requested topic.
    pub topics: Vec<TopicResult>,
}

/// One change of a per-topic config key: set it, or delete it (back to the broker default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// Config key (e.g. `retention.ms`).
    pub key: String,
    /// The new value; `None` deletes the topic's override.
    pub value: Option<String>,
}

impl ConfigChange {
    /// Sets `key` to `value`.
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> ConfigChange {
        ConfigChange {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// Deletes the topic's override of `key`.
    pub fn delete(key: impl Into<String>) -> ConfigChange {
        ConfigChange {
            key: key.into(),
            value: None,
        }
    }
}

/// The config changes of one topic in an AlterConfigs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigsTopic {
    /// Topic name.
    pub name: String,
    /// Changes, each key at most once.
    pub changes: Vec<ConfigChange>,
}

/// AlterConfigs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigsRequest {
    /// Topics to change.
    pub topics: Vec<AlterConfigsTopic>,
}

/// AlterConfigs response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigsResponse {
    /// One result per requested topic.
    pub topics: Vec<TopicResult>,
}

/// InitProducerId response: a fresh producer id for an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    /// NONE, or why no id was allocated.
    pub error: ErrorCode,
    /// The producer id to stamp into every batch (-1 on error).
    pub producer_id: i64,
    /// The producer epoch to stamp into every batch (-1 on error).
    pub producer_epoch: i16,
}

// ----------------------------------------------------------------------------
// Security (keys 22..=30): SASL authentication, users, ACLs, quotas. The
// enums of the ACL model travel as Kafka's int8 codes (as `u8`, all
// positive); the broker maps and checks them. See protocol.md,
// "Authentication" and the api sections.
// ----------------------------------------------------------------------------

/// SaslHandshake request: the mechanism the client wants to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeRequest {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
}

/// SaslHandshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeResponse {
    /// NONE, UNSUPPORTED_SASL_MECHANISM or ILLEGAL_SASL_STATE.
    pub error: ErrorCode,
    /// The mechanisms this listener offers, preferred first.
    pub mechanisms: Vec<String>,
}

/// SaslAuthenticate request: one client message of the SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateRequest {
    /// The mechanism's message (PLAIN's `authzid NUL user NUL password`,
    /// SCRAM's client-first or client-final).
    pub auth_bytes: Bytes,
}

/// SaslAuthenticate response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslAuthenticateResponse {
    /// NONE, SASL_AUTHENTICATION_FAILED or ILLEGAL_SASL_STATE.
    pub error: ErrorCode,
    /// Why it failed; empty on success.
    pub error_message: String,
    /// The server's message (SCRAM's server-first or server-final; empty for PLAIN).
    pub auth_bytes: Bytes,
}

/// A SCRAM mechanism as its wire code (Kafka's ScramMechanism type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ScramMechanismType {
    /// SCRAM-SHA-256.
    Sha256 = 1,
    /// SCRAM-SHA-512.
    Sha512 = 2,
}

impl ScramMechanismType {
    /// Both mechanisms.
    pub const ALL: [ScramMechanismType; 2] =
        [ScramMechanismType::Sha256, ScramMechanismType::Sha512];

    /// Maps a wire value; `None` for anything but 1 and 2.
    pub fn from_u8(v: u8) -> Option<ScramMechanismType> {
        match v {
            1 => Some(ScramMechanismType::Sha256),
            2 => Some(ScramMechanismType::Sha512),
            _ => None,
        }
    }

    /// The SASL name (`SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanismType::Sha256 => "SCRAM-SHA-256",
            ScramMechanismType::Sha512 => "SCRAM-SHA-512",
        }
    }
}

/// A credential to create or replace: the password never crosses the wire,
/// only what the client derived from it (as Kafka's AlterUserScramCredentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramUpsertion {
    /// The user.
    pub user: String,
    /// Which mechanism.
    pub mechanism: ScramMechanismType,
    /// PBKDF2 iteration count (the broker accepts 4096..=16384).
    pub iterations: u32,
    /// The salt (random, chosen by the client).
    pub salt: Bytes,
    /// `PBKDF2(password, salt, iterations)` with the mechanism's hash.
    pub salted_password: Bytes,
}

/// A credential to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramDeletion {
    /// The user.
    pub user: String,
    /// The mechanism whose credential goes; `None` (wire 0) removes the user
    /// with every credential.
    pub mechanism: Option<ScramMechanismType>,
}

/// AlterUserScramCredentials request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterUserScramCredentialsRequest {
    /// Credentials to create or replace.
    pub upsertions: Vec<ScramUpsertion>,
    /// Credentials (or users) to remove.
    pub deletions: Vec<ScramDeletion>,
}

/// The outcome of one entry of an admin request (a user, ACL, quota change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResult {
    /// NONE, or why this entry was not applied.
    pub error: ErrorCode,
    /// Detail of `error`; empty on success.
    pub message: String,
}

impl AdminResult {
    /// A success.
    pub fn ok() -> AdminResult {
        AdminResult {
            error: ErrorCode::None,
            message: String::new(),
        }
    }

    /// A failure with its detail.
    pub fn err(error: ErrorCode, message: impl Into<String>) -> AdminResult {
        AdminResult {
            error,
            message: message.into(),
        }
    }
}

/// AlterUserScramCredentials response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterUserScramCredentialsResponse {
    /// One result per upsertion, then one per deletion, in request order.
    pub results: Vec<AdminResult>,
}

/// DescribeUsers request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeUsersRequest {
    /// Users to describe; empty = every user.
    pub users: Vec<String>,
}

/// One credential of a described user (no salt, no keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The mechanism.
    pub mechanism: ScramMechanismType,
    /// Its PBKDF2 iteration count.
    pub iterations: u32,
}

/// One user in a DescribeUsers response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedUser {
    /// The user.
    pub user: String,
    /// NONE, or RESOURCE_NOT_FOUND for a named user that does not exist.
    pub error: ErrorCode,
    /// Its credentials, by mechanism.
    pub credentials: Vec<CredentialInfo>,
}

/// DescribeUsers response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeUsersResponse {
    /// The users asked for (in request order) or every user (by name).
    pub users: Vec<DescribedUser>,
}

/// One ACL binding (Kafka's model; enums as Kafka's codes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclEntry {
    /// 2 topic, 3 group, 4 cluster, 5 transactional id.
    pub resource_type: u8,
    /// The resource name, a prefix when `pattern_type` is prefixed, `*` for all
    /// (the cluster is `kafka-cluster`).
    pub resource_name: String,
    /// 3 literal, 4 prefixed.
    pub pattern_type: u8,
    /// `Type:name`, e.g. `User:alice`; `User:*` is every user.
    pub principal: String,
    /// `*` or a client IP address.
    pub host: String,
    /// 2 all, 3 read, 4 write, 5 create, 6 delete, 7 alter, 8 describe,
    /// 9 cluster-action, 10 describe-configs, 11 alter-configs, 12 idempotent-write.
    pub operation: u8,
    /// 2 deny, 3 allow.
    pub permission: u8,
}

/// An ACL filter: matches bindings field by field (`None` and the code 1,
/// "any", match everything; pattern type 2, "match", matches every binding
/// that applies to the named resource).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclFilterEntry {
    /// Resource type code, 1 = any.
    pub resource_type: u8,
    /// Resource name, `None` = any.
    pub resource_name: Option<String>,
    /// Pattern type code: 1 any, 2 match, 3 literal, 4 prefixed.
    pub pattern_type: u8,
    /// Principal, `None` = any.
    pub principal: Option<String>,
    /// Host, `None` = any.
    pub host: Option<String>,
    /// Operation code, 1 = any.
    pub operation: u8,
    /// Permission code, 1 = any.
    pub permission: u8,
}

impl AclFilterEntry {
    /// The filter matching every binding.
    pub fn any() -> AclFilterEntry {
        AclFilterEntry {
            resource_type: 1,
            resource_name: None,
            pattern_type: 1,
            principal: None,
            host: None,
            operation: 1,
            permission: 1,
        }
    }
}

/// CreateAcls request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateAclsRequest {
    /// Bindings to add (already present ones are no-ops).
    pub creations: Vec<AclEntry>,
}

/// CreateAcls response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateAclsResponse {
    /// One result per binding, in request order.
    pub results: Vec<AdminResult>,
}

/// DescribeAcls request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeAclsRequest {
    /// Which bindings.
    pub filter: AclFilterEntry,
}

/// DescribeAcls response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeAclsResponse {
    /// NONE, or INVALID_REQUEST for a filter with an unknown code.
    pub error: ErrorCode,
    /// Detail of `error`.
    pub message: String,
    /// The matching bindings, sorted.
    pub acls: Vec<AclEntry>,
}

/// DeleteAcls request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteAclsRequest {
    /// Filters, applied in order.
    pub filters: Vec<AclFilterEntry>,
}

/// The outcome of one DeleteAcls filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteAclsResult {
    /// NONE, or why nothing was deleted.
    pub error: ErrorCode,
    /// Detail of `error`.
    pub message: String,
    /// The bindings this filter removed.
    pub deleted: Vec<AclEntry>,
}

/// DeleteAcls response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteAclsResponse {
    /// One result per filter, in request order.
    pub results: Vec<DeleteAclsResult>,
}

/// One part of a quota entity: the default, or a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaEntityName {
    /// `<default>`: every user (client id) without an entry of its own.
    Default,
    /// This user (client id).
    Named(String),
}

/// Who a quota applies to: a user, a client id, or both; `None` = not part of the entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct QuotaEntityKey {
    /// The user part.
    pub user: Option<QuotaEntityName>,
    /// The client-id part.
    pub client_id: Option<QuotaEntityName>,
}

/// Quota rates; `None` = not set for this entity.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QuotaRates {
    /// Produce bytes per second.
    pub producer_byte_rate: Option<f64>,
    /// Fetch bytes per second.
    pub consumer_byte_rate: Option<f64>,
    /// Requests per second.
    pub request_rate: Option<f64>,
}

/// One entity's quotas.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaEntry {
    /// Who.
    pub entity: QuotaEntityKey,
    /// The rates; all `None` (in AlterQuotas) removes the entity's quotas.
    pub rates: QuotaRates,
}

// `f64` rates are never NaN on the wire the broker accepts (it refuses them),
// and equality of decoded values is bitwise-exact: Eq is sound for tests.
impl Eq for QuotaEntry {}

/// AlterQuotas request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterQuotasRequest {
    /// Entities to set (each replaces the entity's rates as a whole) or remove.
    pub entries: Vec<QuotaEntry>,
}

/// AlterQuotas response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterQuotasResponse {
    /// One result per entry, in request order.
    pub results: Vec<AdminResult>,
}

/// DescribeQuotas response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeQuotasResponse {
    /// Every entity with quotas, sorted.
    pub entries: Vec<QuotaEntry>,
}

impl ApiKey {
    /// Every assigned api key, in numeric order (keys 7..=13 are the group apis,
    /// see [`GROUP_APIS`]; key 14 is the group admin api DeleteGroups).
    pub const ALL: &'static [ApiKey] = &[
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::JoinGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
        ApiKey::DeleteGroups,
        ApiKey::InitProducerId,
        ApiKey::DescribeCluster,
        ApiKey::FindCoordinator,
        ApiKey::CreatePartitions,
        ApiKey::AlterConfigs,
        ApiKey::ReplicaFetch,
        ApiKey::ReassignPartitions,
        ApiKey::SaslHandshake,
        ApiKey::SaslAuthenticate,
        ApiKey::AlterUserScramCredentials,
        ApiKey::DescribeUsers,
        ApiKey::CreateAcls,
        ApiKey::DescribeAcls,
        ApiKey::DeleteAcls,
        ApiKey::AlterQuotas,
        ApiKey::DescribeQuotas,
    ];

    /// Maps a wire value to a key; `None` for unassigned values.
    pub fn from_u16(v: u16) -> Option<ApiKey> {
        ApiKey::ALL.iter().copied().find(|k| *k as u16 == v)
    }

    /// The CamelCase name used in logs, metrics labels and `protocol.md`.
    pub fn name(self) -> &'static str {
        match self {
            ApiKey::ApiVersions => "ApiVersions",
            ApiKey::Metadata => "Metadata",
            ApiKey::CreateTopics => "CreateTopics",
            ApiKey::DeleteTopics => "DeleteTopics",
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::JoinGroup => "JoinGroup",
            ApiKey::Heartbeat => "Heartbeat",
            ApiKey::LeaveGroup => "LeaveGroup",
            ApiKey::OffsetCommit => "OffsetCommit",
            ApiKey::OffsetFetch => "OffsetFetch",
            ApiKey::ListGroups => "ListGroups",
            ApiKey::DescribeGroups => "DescribeGroups",
            ApiKey::DeleteGroups => "DeleteGroups",
            ApiKey::InitProducerId => "InitProducerId",
            ApiKey::DescribeCluster => "DescribeCluster",
            ApiKey::FindCoordinator => "FindCoordinator",
            ApiKey::CreatePartitions => "CreatePartitions",
            ApiKey::AlterConfigs => "AlterConfigs",
            ApiKey::ReplicaFetch => "ReplicaFetch",
            ApiKey::ReassignPartitions => "ReassignPartitions",
            ApiKey::SaslHandshake => "SaslHandshake",
            ApiKey::SaslAuthenticate => "SaslAuthenticate",
            ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
            ApiKey::DescribeUsers => "DescribeUsers",
            ApiKey::CreateAcls => "CreateAcls",
            ApiKey::DescribeAcls => "DescribeAcls",
            ApiKey::DeleteAcls => "DeleteAcls",
            ApiKey::AlterQuotas => "AlterQuotas",
            ApiKey::DescribeQuotas => "DescribeQuotas",
        }
    }

    /// The version range this broker version serves (listed in ApiVersions,
    /// i.e. in [`SUPPORTED_APIS`]); `None` when the key is not served yet.
    pub fn versions(self) -> Option<ApiVersionRange> {
        SUPPORTED_APIS
            .iter()
            .find(|r| r.api_key == self as u16)
            .copied()
    }

    /// True when the key is in [`SUPPORTED_APIS`] (advertised by ApiVersions).
    /// Every key is served today.
    pub fn is_served(self) -> bool {
        self.versions().is_some()
    }

    /// True when `version` is within the supported range of a served key.
    pub fn supports_version(self, version: u16) -> bool {
        self.versions()
            .is_some_and(|r| (r.min_version..=r.max_version).contains(&version))
    }

    /// The version range this crate can encode and decode: [`SUPPORTED_APIS`]
    /// and [`GROUP_APIS`]. Every key has one today.
    pub fn wire_versions(self) -> Option<ApiVersionRange> {
        SUPPORTED_APIS
            .iter()
            .chain(GROUP_APIS)
            .find(|r| r.api_key == self as u16)
            .copied()
    }

    /// True when [`crate::decode_request`] decodes `version` of this key
    /// (served or not: the broker decides what it answers).
    pub fn decodes_version(self, version: u16) -> bool {
        self.wire_versions()
            .is_some_and(|r| (r.min_version..=r.max_version).contains(&version))
    }

    /// The highest version of this key that both this crate and a broker
    /// advertising `broker` (its ApiVersions list) speak; `None` when the
    /// broker does not list the key or the ranges do not overlap.
    pub fn negotiate(self, broker: &[ApiVersionRange]) -> Option<u16> {
        let ours = self.wire_versions()?;
        let theirs = broker.iter().find(|r| r.api_key == self as u16)?;
        let high = ours.max_version.min(theirs.max_version);
        let low = ours.min_version.max(theirs.min_version);
        (low <= high).then_some(high)
    }

    /// True for the consumer-group member and offset apis (keys 7..=13, [`GROUP_APIS`]).
    /// DeleteGroups (14) is an admin api, like DeleteTopics, and is not counted here.
    pub fn is_group_api(self) -> bool {
        matches!(
            self,
            ApiKey::JoinGroup
                | ApiKey::Heartbeat
                | ApiKey::LeaveGroup
                | ApiKey::OffsetCommit
                | ApiKey::OffsetFetch
                | ApiKey::ListGroups
                | ApiKey::DescribeGroups
        )
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Version 0 (and only 0) of `key`.
const fn v0(key: ApiKey) -> ApiVersionRange {
    ApiVersionRange {
        api_key: key as u16,
        min_version: 0,
        max_version: 0,
    }
}

/// Versions 0 to `max` of `key`.
const fn up_to(key: ApiKey, max: u16) -> ApiVersionRange {
    ApiVersionRange {
        api_key: key as u16,
        min_version: 0,
        max_version: max,
    }
}

/// What ApiVersions returns, i.e. what the broker serves: every key of
/// [`ApiKey::ALL`] (the group apis of [`GROUP_APIS`] included, then
/// DeleteGroups, InitProducerId, DescribeCluster, CreatePartitions and
/// AlterConfigs), version 0, and Metadata and CreateTopics also version 1
/// (the cluster fields).
pub const SUPPORTED_APIS: &[ApiVersionRange] = &[
    v0(ApiKey::ApiVersions),
    up_to(ApiKey::Metadata, 1),
    up_to(ApiKey::CreateTopics, 1),
    v0(ApiKey::DeleteTopics),
    v0(ApiKey::Produce),
    v0(ApiKey::Fetch),
    v0(ApiKey::ListOffsets),
    v0(ApiKey::JoinGroup),
    v0(ApiKey::Heartbeat),
    v0(ApiKey::LeaveGroup),
    v0(ApiKey::OffsetCommit),
    v0(ApiKey::OffsetFetch),
    v0(ApiKey::ListGroups),
    v0(ApiKey::DescribeGroups),
    v0(ApiKey::DeleteGroups),
    v0(ApiKey::InitProducerId),
    v0(ApiKey::DescribeCluster),
    v0(ApiKey::FindCoordinator),
    v0(ApiKey::CreatePartitions),
    v0(ApiKey::AlterConfigs),
    v0(ApiKey::ReplicaFetch),
    v0(ApiKey::ReassignPartitions),
    v0(ApiKey::SaslHandshake),
    v0(ApiKey::SaslAuthenticate),
    v0(ApiKey::AlterUserScramCredentials),
    v0(ApiKey::DescribeUsers),
    v0(ApiKey::CreateAcls),
    v0(ApiKey::DescribeAcls),
    v0(ApiKey::DeleteAcls),
    v0(ApiKey::AlterQuotas),
    v0(ApiKey::DescribeQuotas),
];

/// The consumer-group apis, version 0 of keys 7..=13. The broker serves them:
/// the same ranges are in [`SUPPORTED_APIS`]. This list stays so code can ask
/// which keys form the group protocol.
pub const GROUP_APIS: &[ApiVersionRange] = &[
    v0(ApiKey::JoinGroup),
    v0(ApiKey::Heartbeat),
    v0(ApiKey::LeaveGroup),
    v0(ApiKey::OffsetCommit),
    v0(ApiKey::OffsetFetch),
    v0(ApiKey::ListGroups),
    v0(ApiKey::DescribeGroups),
];

impl Request {
    /// The api key this request is sent with.
    pub fn api_key(&self) -> ApiKey {
        match self {
            Request::ApiVersions => ApiKey::ApiVersions,
            Request::Metadata(_) => ApiKey::Metadata,
            Request::CreateTopics(_) => ApiKey::CreateTopics,
            Request::DeleteTopics(_) => ApiKey::DeleteTopics,
            Request::Produce(_) => ApiKey::Produce,
            Request::Fetch(_) => ApiKey::Fetch,
            Request::ListOffsets(_) => ApiKey::ListOffsets,
            Request::JoinGroup(_) => ApiKey::JoinGroup,
            Request::Heartbeat(_) => ApiKey::Heartbeat,
            Request::LeaveGroup(_) => ApiKey::LeaveGroup,
            Request::OffsetCommit(_) => ApiKey::OffsetCommit,
            Request::OffsetFetch(_) => ApiKey::OffsetFetch,
            Request::ListGroups => ApiKey::ListGroups,
            Request::DescribeGroups(_) => ApiKey::DescribeGroups,
            Request::DeleteGroups(_) => ApiKey::DeleteGroups,
            Request::InitProducerId => ApiKey::InitProducerId,
            Request::DescribeCluster => ApiKey::DescribeCluster,
            Request::FindCoordinator(_) => ApiKey::FindCoordinator,
            Request::CreatePartitions(_) => ApiKey::CreatePartitions,
            Request::AlterConfigs(_) => ApiKey::AlterConfigs,
            Request::ReplicaFetch(_) => ApiKey::ReplicaFetch,
            Request::ReassignPartitions(_) => ApiKey::ReassignPartitions,
            Request::SaslHandshake(_) => ApiKey::SaslHandshake,
            Request::SaslAuthenticate(_) => ApiKey::SaslAuthenticate,
            Request::AlterUserScramCredentials(_) => ApiKey::AlterUserScramCredentials,
            Request::DescribeUsers(_) => ApiKey::DescribeUsers,
            Request::CreateAcls(_) => ApiKey::CreateAcls,
            Request::DescribeAcls(_) => ApiKey::DescribeAcls,
            Request::DeleteAcls(_) => ApiKey::DeleteAcls,
            Request::AlterQuotas(_) => ApiKey::AlterQuotas,
            Request::DescribeQuotas => ApiKey::DescribeQuotas,
        }
    }
}

impl Response {
    /// The api key of the body, `None` for a header-level [`Response::Error`].
    pub fn api_key(&self) -> Option<ApiKey> {
        Some(match self {
            Response::Error(_) => return None,
            Response::ApiVersions(_) => ApiKey::ApiVersions,
            Response::Metadata(_) => ApiKey::Metadata,
            Response::CreateTopics(_) => ApiKey::CreateTopics,
            Response::DeleteTopics(_) => ApiKey::DeleteTopics,
            Response::Produce(_) => ApiKey::Produce,
            Response::Fetch(_) => ApiKey::Fetch,
            Response::ListOffsets(_) => ApiKey::ListOffsets,
            Response::JoinGroup(_) => ApiKey::JoinGroup,
            Response::Heartbeat(_) => ApiKey::Heartbeat,
            Response::LeaveGroup(_) => ApiKey::LeaveGroup,
            Response::OffsetCommit(_) => ApiKey::OffsetCommit,
            Response::OffsetFetch(_) => ApiKey::OffsetFetch,
            Response::ListGroups(_) => ApiKey::ListGroups,
            Response::DescribeGroups(_) => ApiKey::DescribeGroups,
            Response::DeleteGroups(_) => ApiKey::DeleteGroups,
            Response::InitProducerId(_) => ApiKey::InitProducerId,
            Response::DescribeCluster(_) => ApiKey::DescribeCluster,
            Response::FindCoordinator(_) => ApiKey::FindCoordinator,
            Response::CreatePartitions(_) => ApiKey::CreatePartitions,
            Response::AlterConfigs(_) => ApiKey::AlterConfigs,
            Response::ReplicaFetch(_) => ApiKey::ReplicaFetch,
            Response::ReassignPartitions(_) => ApiKey::ReassignPartitions,
            Response::SaslHandshake(_) => ApiKey::SaslHandshake,
            Response::SaslAuthenticate(_) => ApiKey::SaslAuthenticate,
            Response::AlterUserScramCredentials(_) => ApiKey::AlterUserScramCredentials,
            Response::DescribeUsers(_) => ApiKey::DescribeUsers,
            Response::CreateAcls(_) => ApiKey::CreateAcls,
            Response::DescribeAcls(_) => ApiKey::DescribeAcls,
            Response::DeleteAcls(_) => ApiKey::DeleteAcls,
            Response::AlterQuotas(_) => ApiKey::AlterQuotas,
            Response::DescribeQuotas(_) => ApiKey::DescribeQuotas,
        })
    }
}

impl OffsetSpec {
    /// The i64 sent on the wire: -2 earliest, -1 latest, >= 0 a timestamp.
    pub fn to_wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }

    /// Parses the wire value; anything below -2 is invalid.
    pub fn from_wire(v: i64) -> Result<OffsetSpec, crate::ProtocolError> {
        match v {
            -2 => Ok(OffsetSpec::Earliest),
            -1 => Ok(OffsetSpec::Latest),
            t if t >= 0 => Ok(OffsetSpec::Timestamp(t)),
            other => Err(crate::ProtocolError::InvalidValue {
                what: "offset spec",
                value: other,
            }),
        }
    }
}
