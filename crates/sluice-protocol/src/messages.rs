//! Request and response bodies for every API. Encoding/decoding lives in `codec` / `wire`.
//!
//! Types only; see `protocol.md` for byte layouts. Record payloads (`records`)
//! are `Bytes` holding zero or more whole record batches back to back, so they
//! pass through the broker without re-encoding.

use bytes::Bytes;

use crate::ErrorCode;

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
    /// Join a consumer group (reserved for the consumer-group work).
    JoinGroup = 7,
    /// Group heartbeat carrying assignments (reserved).
    Heartbeat = 8,
    /// Leave a group (reserved).
    LeaveGroup = 9,
    /// Commit offsets (reserved).
    OffsetCommit = 10,
    /// Fetch committed offsets (reserved).
    OffsetFetch = 11,
    /// List groups (reserved).
    ListGroups = 12,
    /// Describe groups (reserved).
    DescribeGroups = 13,
}

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
}

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
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

impl ApiKey {
    /// Every assigned api key, in numeric order (keys 7..=13 are reserved, not yet served).
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
    ];

    /// Maps a wire value to a key; `None` for unassigned values.
    pub fn from_u16(v: u16) -> Option<ApiKey> {
        ApiKey::ALL.get(v as usize).copied()
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
        }
    }

    /// The supported version range, `None` when the key is reserved but not served.
    pub fn versions(self) -> Option<ApiVersionRange> {
        SUPPORTED_APIS
            .iter()
            .find(|r| r.api_key == self as u16)
            .copied()
    }

    /// True when this broker version decodes and serves the key.
    pub fn is_served(self) -> bool {
        self.versions().is_some()
    }

    /// True when `version` is within the supported range of a served key.
    pub fn supports_version(self, version: u16) -> bool {
        self.versions()
            .is_some_and(|r| (r.min_version..=r.max_version).contains(&version))
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What ApiVersions returns: version 0 of keys 0..=6.
pub const SUPPORTED_APIS: &[ApiVersionRange] = &[
    ApiVersionRange {
        api_key: ApiKey::ApiVersions as u16,
        min_version: 0,
        max_version: 0,
    },
    ApiVersionRange {
        api_key: ApiKey::Metadata as u16,
        min_version: 0,
        max_version: 0,
    },
    ApiVersionRange {
        api_key: ApiKey::CreateTopics as u16,
        min_version: 0,
        max_version: 0,
    },
    ApiVersionRange {
        api_key: ApiKey::DeleteTopics as u16,
        min_version: 0,
        max_version: 0,
    },
    ApiVersionRange {
        api_key: ApiKey::Produce as u16,
        min_version: 0,
        max_version: 0,
    },
    ApiVersionRange {
        api_key: ApiKey::Fetch as u16,
        min_version: 0,
        max_version: 0,
    },
    ApiVersionRange {
        api_key: ApiKey::ListOffsets as u16,
        min_version: 0,
        max_version: 0,
    },
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
