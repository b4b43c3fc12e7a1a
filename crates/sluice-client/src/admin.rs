//! Topic administration: create, list, describe, delete, list offsets.

use std::sync::Arc;

use sluice_protocol::{
    CreateTopic, CreateTopicsRequest, DeleteTopicsRequest, ErrorCode, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsTopic, OffsetSpec, Request, Response, TopicMetadata,
};

use crate::cluster::Cluster;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

/// One partition as described by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: u32,
    /// Node id of the leader.
    pub leader: u32,
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
                .map(|p| PartitionInfo {
                    partition: p.partition,
                    leader: p.leader,
                    start_offset: p.start_offset,
                    end_offset: p.end_offset,
                    size_bytes: p.size_bytes,
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

/// An offset found by [`Admin::list_offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset.
    pub offset: u64,
    /// Timestamp of the batch found when looking up by timestamp, else `None`.
    pub timestamp: Option<i64>,
}

/// Administrative client for topics.
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
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: name.to_string(),
                partitions,
                configs,
            }],
        });
        let response = match self.cluster.bootstrap().request(&request).await? {
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
        let response = self.cluster.fetch_metadata(Vec::new()).await?;
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
        let response = self.cluster.fetch_metadata(vec![name.to_string()]).await?;
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
            ErrorCode::NotLeaderForPartition | ErrorCode::UnknownTopicOrPartition
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
