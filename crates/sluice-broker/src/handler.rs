//! Native-protocol request handlers: decode -> [`Broker`] call -> response.
//!
//! The table [`HANDLERS`] maps every api key the broker serves to one
//! function; a unit test checks it against `sluice_protocol::SUPPORTED_APIS`
//! (every advertised api has exactly one handler, and no handler is for an
//! api that is not advertised).
//!
//! A handler runs on the connection's read path, so it must be quick. It
//! returns an [`Outcome`]: a response now, nothing (acks = none), or a future
//! the connection spawns (a durable produce waiting for its fsync, a parked
//! fetch) so later requests on the connection are not held up.
//!
//! Cost per request: names are validated, entries capped and repeats
//! refused while decoding (see `sluice_protocol::RequestLimits`); handlers
//! then never copy a topic name per partition (Fetch shares one `Arc<str>`
//! per topic, missing topics and partitions are answered with a code, not
//! an error value holding the name) and expand Heartbeat `owned` only after
//! the member check (see [`Groups::heartbeat`]).
//!
//! Behaviour choices (also what a Kafka user would expect):
//! - Metadata never creates topics; only Produce auto-creates (when
//!   `auto_create_topics` is on) with `default_partitions`. A requested topic
//!   that is missing gets `UNKNOWN_TOPIC_OR_PARTITION` (an invalid name never
//!   gets here: the decoder refuses the request with `INVALID_TOPIC`). The broker advertises the address the
//!   client connected to as its host/port.
//! - Until the cluster metadata lands the broker is a single node: node
//!   [`SINGLE_NODE_ID`], its own controller (epoch 0), with its `[cluster] rack`. Metadata v1
//!   says so (every partition: leader 0, epoch 0, replicas and isr `[0]`),
//!   and so does DescribeCluster. Responses are encoded in the request's
//!   version by the connection, so handlers build the newest shape.
//! - CreateTopics takes a replication factor of -1 (the default) or 1; 0,
//!   below -1, or more than the live brokers is `INVALID_REPLICATION_FACTOR`
//!   for that topic (the message says how many brokers are available).
//! - CreatePartitions takes the new total count, larger than the current
//!   one (`INVALID_PARTITIONS` otherwise: a topic never shrinks);
//!   AlterConfigs sets or deletes config keys, checked as CreateTopics checks
//!   them (`INVALID_CONFIG`, and none of that topic's changes is applied).
//!   A single node applies both at once ([`Broker::add_partitions`],
//!   [`Broker::alter_topic_config`]); in a cluster the checked change is
//!   proposed to the controller and answered once applied here.
//! - CreateTopics needs 1..=10000 partitions; names starting with `__` are
//!   reserved for internal topics (`INVALID_TOPIC`). DeleteTopics also
//!   deletes every group's committed offsets on the topic (a rule of
//!   [`Broker::delete_topic`], registered by [`Groups::open`]).
//! - Produce waits for an fsync before answering when `acks = durable` or when
//!   the topic's `flush` is `always` (then `acks = leader` waits too). With
//!   `acks = none` nothing is sent back, errors included (they are logged at
//!   debug level). `timeout_ms = 0` means the 30 s default.
//! - Idempotent batches (producer id >= 0) are sequence-checked per
//!   partition (see [`crate::producer_state`]): a retried duplicate gets
//!   `NONE` with its original offsets, a gap `OUT_OF_ORDER_SEQUENCE_NUMBER`.
//!   InitProducerId hands out ids (see [`crate::broker`]).
//! - A Fetch answers at once when a partition errs; `OFFSET_OUT_OF_RANGE`
//!   carries the log's start and end offsets so the client can reposition.
//! - Group apis (keys 7..=14) go to [`Groups`] (see [`crate::group`] for
//!   parking, fencing and the standalone-commit rule). A parked heartbeat, a
//!   commit waiting for its fsync and a group delete are deferred.
//!   OffsetCommit: which partitions may be committed is a rule of
//!   [`Groups::commit_target`] (missing ones get `UNKNOWN_TOPIC_OR_PARTITION`,
//!   offline ones `STORAGE_ERROR`; both are skipped); the others are fenced together (one error for all of them)
//!   and acknowledged once fsynced.
//!   OffsetFetch answers -1 for partitions without a committed offset (no
//!   error, as Kafka does). DescribeGroups reports, for a partition without a
//!   committed offset, `lag = end - log start` and `lag_ms = -1`.
//! - Each group has one coordinator ([`Broker::group_coordinator`]).
//!   FindCoordinator names it: this broker (its node id and advertised
//!   address, or the address the client connected to when it runs alone),
//!   another broker, or `COORDINATOR_NOT_AVAILABLE`. JoinGroup, Heartbeat,
//!   LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups and DeleteGroups
//!   for a group coordinated elsewhere answer `NOT_COORDINATOR` (or
//!   `COORDINATOR_NOT_AVAILABLE`) before touching any group state.
//!   ListGroups lists only the groups this broker coordinates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_group::{GroupError, JoinRequest, MemberView, OffsetCommit, TopicPartition};
use sluice_protocol::{
    Acks, AlterConfigsRequest, AlterConfigsResponse, ApiKey, ApiVersionsResponse, BrokerInfo,
    ClusterBroker, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteGroupsRequest, DeleteGroupsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DeletedGroup, DescribeClusterResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, DescribedGroup, DescribedMember, ErrorCode, FetchPartitionResponse,
    FetchRequest, FetchResponse, FetchTopicResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse, InitProducerIdResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsResponse,
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResponse, ListedGroup, MetadataRequest, MetadataResponse,
    OffsetCommitPartitionResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetCommitTopicResponse, OffsetFetchPartitionResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetFetchTopicResponse, PartitionLag, PartitionMetadata,
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
    ReassignPartitionsResponse, ReplicaFetchPartitionResponse, ReplicaFetchRequest,
    ReplicaFetchResponse, Request, RequestHeader, Response, TopicMetadata, TopicPartitions,
    TopicResult,
};
use tokio_util::sync::CancellationToken;

use crate::broker::{
    Broker, FetchParams, FetchResult, FetchTarget, GroupCoordinator, TopicDescription,
    SINGLE_NODE_CLUSTER_ID, SINGLE_NODE_ID,
};
use crate::cluster::{ClusterView, ControllerInfo, NewTopic, NO_LEADER};
use crate::codes::WireCode;
use crate::error::{chain, BrokerError};
use crate::group::{Groups, HeartbeatReply};
use crate::native_security as ns;
use crate::topics::serving;

/// What the connection should do after a handler ran.
pub enum Outcome {
    /// Send this response now.
    Respond(Response),
    /// Send nothing (produce with acks = none).
    NoResponse,
    /// Spawn this; send its response (if any) when it resolves.
    Deferred(BoxFuture<'static, Option<Response>>),
}

/// Per-connection context handed to handlers.
#[derive(Clone)]
pub struct Context {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Consumer groups (coordinator and offset store), a separate handle.
    pub groups: Arc<Groups>,
    /// The address the client connected to (advertised in Metadata).
    pub local_addr: SocketAddr,
    /// Cancelled when the broker shuts down or the connection's reader ends
    /// (parked fetches then answer early).
    pub shutdown: CancellationToken,
    /// What the listener and the transport established about this connection.
    pub conn: ConnSecurity,
}

/// What the listener and the transport established about a connection before its first request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnSecurity {
    /// The connection runs over TLS.
    pub tls: bool,
    /// The principal of a verified client certificate (mTLS), as `User:<CN>`.
    pub tls_principal: Option<String>,
    /// The listener requires SASL authentication before other requests.
    pub sasl: bool,
}

/// A request handler; the `&str` is the request header's `client_id`.
pub type Handler = fn(&Context, &str, Request) -> Outcome;

/// Every api the broker serves, with its handler.
pub const HANDLERS: &[(ApiKey, Handler)] = &[
    (ApiKey::ApiVersions, api_versions),
    (ApiKey::Metadata, metadata),
    (ApiKey::CreateTopics, create_topics),
    (ApiKey::DeleteTopics, delete_topics),
    (ApiKey::Produce, produce),
    (ApiKey::Fetch, fetch),
    (ApiKey::ListOffsets, list_offsets),
    (ApiKey::JoinGroup, join_group),
    (ApiKey::Heartbeat, heartbeat),
    (ApiKey::LeaveGroup, leave_group),
    (ApiKey::OffsetCommit, offset_commit),
    (ApiKey::OffsetFetch, offset_fetch),
    (ApiKey::ListGroups, list_groups),
    (ApiKey::DescribeGroups, describe_groups),
    (ApiKey::DeleteGroups, delete_groups),
    (ApiKey::InitProducerId, init_producer_id),
    (ApiKey::DescribeCluster, describe_cluster),
    (ApiKey::FindCoordinator, find_coordinator),
    (ApiKey::CreatePartitions, create_partitions),
    (ApiKey::AlterConfigs, alter_configs),
    (ApiKey::ReassignPartitions, reassign_partitions),
    (ApiKey::ReplicaFetch, replica_fetch),
    (ApiKey::SaslHandshake, ns::sasl_handshake_without_sasl),
    (ApiKey::SaslAuthenticate, ns::sasl_authenticate_without_sasl),
    (
        ApiKey::AlterUserScramCredentials,
        ns::alter_user_scram_credentials,
    ),
    (ApiKey::DescribeUsers, ns::describe_users),
    (ApiKey::CreateAcls, ns::create_acls),
    (ApiKey::DescribeAcls, ns::describe_acls),
    (ApiKey::DeleteAcls, ns::delete_acls),
    (ApiKey::AlterQuotas, ns::alter_quotas),
    (ApiKey::DescribeQuotas, ns::describe_quotas),
];

/// The handler of an api key, if the broker serves it.
pub fn handler_for(key: ApiKey) -> Option<Handler> {
    HANDLERS.iter().find(|(k, _)| *k == key).map(|(_, h)| *h)
}

/// Dispatches a decoded request to its handler; JoinGroup records the header's client id.
pub fn dispatch(ctx: &Context, header: &RequestHeader, request: Request) -> Outcome {
    match ApiKey::from_u16(header.api_key).and_then(handler_for) {
        Some(h) => h(ctx, &header.client_id, request),
        None => Outcome::Respond(Response::Error(ErrorCode::UnknownApi)),
    }
}

/// The decoder produced a body that does not belong to the api key.
fn mismatched() -> Outcome {
    Outcome::Respond(Response::Error(ErrorCode::InvalidRequest))
}

fn api_versions(_ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::ApiVersions = req else {
        return mismatched();
    };
    Outcome::Respond(Response::ApiVersions(ApiVersionsResponse {
        apis: sluice_protocol::SUPPORTED_APIS.to_vec(),
    }))
}

fn topic_metadata(d: TopicDescription) -> TopicMetadata {
    TopicMetadata {
        error: ErrorCode::None,
        configs: d.config.to_pairs(),
        partitions: d
            .partitions
            .into_iter()
            .map(|p| PartitionMetadata {
                partition: p.index,
                error: if p.offline.is_some() {
                    ErrorCode::StorageError
                } else {
                    ErrorCode::None
                },
                leader: SINGLE_NODE_ID,
                start_offset: p.start_offset,
                end_offset: p.end_offset,
                size_bytes: p.size_bytes,
                leader_epoch: 0,
                replicas: vec![SINGLE_NODE_ID],
                isr: vec![SINGLE_NODE_ID],
            })
            .collect(),
        name: d.name,
    }
}

fn metadata(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::Metadata(MetadataRequest { topics }) = req else {
        return mismatched();
    };
    if let Some(link) = ctx.broker.cluster() {
        return Outcome::Respond(Response::Metadata(cluster_metadata(
            &ctx.broker,
            &link.view(),
            link.controller(),
            topics,
        )));
    }
    let described = if topics.is_empty() {
        ctx.broker
            .describe_all()
            .into_iter()
            .map(topic_metadata)
            .collect()
    } else {
        topics
            .into_iter()
            .map(|name| match ctx.broker.describe_topic(&name) {
                Ok(d) => topic_metadata(d),
                Err(e) => TopicMetadata {
                    error: e.code(),
                    name,
                    partitions: Vec::new(),
                    configs: Vec::new(),
                },
            })
            .collect()
    };
    Outcome::Respond(Response::Metadata(MetadataResponse {
        brokers: vec![BrokerInfo {
            node_id: SINGLE_NODE_ID,
            host: ctx.local_addr.ip().to_string(),
            port: ctx.local_addr.port(),
            rack: ctx.broker.rack().map(str::to_string),
        }],
        topics: described,
        controller_id: SINGLE_NODE_ID as i32,
        cluster_id: SINGLE_NODE_CLUSTER_ID.to_string(),
    }))
}

/// One topic of the cluster metadata as Metadata reports it: leaders that
/// are not alive are `NO_LEADER` with `LEADER_NOT_AVAILABLE`; the isr is the
/// metadata's in-sync replicas; offsets come from this broker's log where it
/// leads the partition (the end offset is its high watermark), else 0.
fn cluster_topic_metadata(broker: &Broker, view: &ClusterView, name: String) -> TopicMetadata {
    let Some(t) = view.topics.get(&name) else {
        return TopicMetadata {
            error: ErrorCode::UnknownTopicOrPartition,
            name,
            partitions: Vec::new(),
            configs: Vec::new(),
        };
    };
    let local = broker.topics().get(&name);
    let configs = match &local {
        Some(l) => l.config().to_pairs(),
        None => t
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let live = view.live_leader(p);
            let here = live
                .filter(|l| *l == view.node_id)
                .and_then(|_| local.as_ref()?.partition(index).cloned());
            PartitionMetadata {
                partition: index,
                error: if live.is_some() {
                    ErrorCode::None
                } else {
                    ErrorCode::LeaderNotAvailable
                },
                leader: live.unwrap_or(NO_LEADER),
                start_offset: here.as_ref().map_or(0, |p| p.start_offset()),
                end_offset: here.as_ref().map_or(0, |p| p.high_watermark()),
                size_bytes: here.as_ref().map_or(0, |p| p.size_bytes()),
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
            }
        })
        .collect();
    TopicMetadata {
        error: ErrorCode::None,
        name,
        partitions,
        configs,
    }
}

/// Metadata from the cluster metadata: live brokers, the controller, topics.
fn cluster_metadata(
    broker: &Broker,
    view: &ClusterView,
    controller: ControllerInfo,
    topics: Vec<String>,
) -> MetadataResponse {
    let names = if topics.is_empty() {
        let mut all: Vec<String> = view.topics.keys().cloned().collect();
        all.sort();
        all
    } else {
        topics
    };
    MetadataResponse {
        brokers: view
            .live_brokers()
            .map(|b| BrokerInfo {
                node_id: b.id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
            })
            .collect(),
        topics: names
            .into_iter()
            .map(|n| cluster_topic_metadata(broker, view, n))
            .collect(),
        controller_id: controller.leader.map_or(-1, |l| l as i32),
        cluster_id: view.cluster_id.clone(),
    }
}

fn describe_cluster(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::DescribeCluster = req else {
        return mismatched();
    };
    if let Some(link) = ctx.broker.cluster() {
        let view = link.view();
        let controller = link.controller();
        return Outcome::Respond(Response::DescribeCluster(DescribeClusterResponse {
            error: ErrorCode::None,
            cluster_id: view.cluster_id.clone(),
            controller_id: controller.leader.map_or(-1, |l| l as i32),
            controller_epoch: controller.epoch,
            brokers: view
                .brokers
                .values()
                .map(|b| ClusterBroker {
                    node_id: b.id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    alive: b.alive,
                })
                .collect(),
        }));
    }
    Outcome::Respond(Response::DescribeCluster(DescribeClusterResponse {
        error: ErrorCode::None,
        cluster_id: SINGLE_NODE_CLUSTER_ID.to_string(),
        controller_id: SINGLE_NODE_ID as i32,
        controller_epoch: 0,
        brokers: vec![ClusterBroker {
            node_id: SINGLE_NODE_ID,
            host: ctx.local_addr.ip().to_string(),
            port: ctx.local_addr.port(),
            rack: ctx.broker.rack().map(str::to_string),
            alive: true,
        }],
    }))
}

/// A wire replication factor as the core's: -1 is the default (`None`);
/// 0 and up are checked by the core; below -1 is refused here.
fn replication_factor(broker: &Broker, factor: i16) -> Result<Option<u16>, BrokerError> {
    match factor {
        sluice_protocol::DEFAULT_REPLICATION_FACTOR => Ok(None),
        f if f >= 0 => Ok(Some(f as u16)),
        f => Err(BrokerError::InvalidReplicationFactor {
            factor: i32::from(f),
            brokers: broker.live_brokers(),
        }),
    }
}

fn topic_result(name: String, r: Result<(), BrokerError>) -> TopicResult {
    match r {
        Ok(()) => TopicResult {
            name,
            error: ErrorCode::None,
            message: String::new(),
        },
        Err(e) => TopicResult {
            name,
            error: e.code(),
            message: chain(&e),
        },
    }
}

fn create_topics(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::CreateTopics(CreateTopicsRequest { topics }) = req else {
        return mismatched();
    };
    if let Some(link) = ctx.broker.cluster() {
        // Through the controller: answered once applied here, in request order.
        let (link, broker) = (Arc::clone(link), Arc::clone(&ctx.broker));
        return Outcome::Deferred(Box::pin(async move {
            let mut results = Vec::with_capacity(topics.len());
            for t in topics {
                let checked = replication_factor(&broker, t.replication_factor).and_then(|f| {
                    if t.partitions == 0 || t.partitions > crate::config::MAX_PARTITIONS {
                        return Err(BrokerError::InvalidPartitions {
                            count: t.partitions,
                            max: crate::config::MAX_PARTITIONS,
                        });
                    }
                    crate::topic_meta::TopicOverrides::from_pairs(&t.configs)?;
                    Ok(f)
                });
                let r = match checked {
                    Ok(factor) => {
                        link.create_topic(NewTopic {
                            name: t.name.clone(),
                            partitions: t.partitions,
                            replication_factor: factor,
                            config: t.configs,
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                results.push(topic_result(t.name, r));
            }
            Some(Response::CreateTopics(CreateTopicsResponse {
                topics: results,
            }))
        }));
    }
    let topics = topics
        .into_iter()
        .map(|t| {
            let r = replication_factor(&ctx.broker, t.replication_factor).and_then(|factor| {
                ctx.broker
                    .create_topic_replicated(&t.name, t.partitions, factor, &t.configs)
            });
            topic_result(t.name, r)
        })
        .collect();
    Outcome::Respond(Response::CreateTopics(CreateTopicsResponse { topics }))
}

fn delete_topics(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::DeleteTopics(DeleteTopicsRequest { topics }) = req else {
        return mismatched();
    };
    if let Some(link) = ctx.broker.cluster() {
        let link = Arc::clone(link);
        return Outcome::Deferred(Box::pin(async move {
            let mut results = Vec::with_capacity(topics.len());
            for name in topics {
                let r = link.delete_topic(name.clone()).await;
                results.push(topic_result(name, r));
            }
            Some(Response::DeleteTopics(DeleteTopicsResponse {
                topics: results,
            }))
        }));
    }
    let topics = topics
        .into_iter()
        .map(|name| {
            // The broker deletes the groups' committed offsets on it too.
            let r = ctx.broker.delete_topic(&name);
            topic_result(name, r)
        })
        .collect();
    Outcome::Respond(Response::DeleteTopics(DeleteTopicsResponse { topics }))
}

fn create_partitions(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::CreatePartitions(CreatePartitionsRequest { topics }) = req else {
        return mismatched();
    };
    if let Some(link) = ctx.broker.cluster() {
        // Through the controller (it checks the count against the metadata).
        let link = Arc::clone(link);
        return Outcome::Deferred(Box::pin(async move {
            let mut results = Vec::with_capacity(topics.len());
            for t in topics {
                let r = link.add_partitions(t.name.clone(), t.count).await;
                results.push(topic_result(t.name, r));
            }
            Some(Response::CreatePartitions(CreatePartitionsResponse {
                topics: results,
            }))
        }));
    }
    let topics = topics
        .into_iter()
        .map(|t| {
            let r = ctx.broker.add_partitions(&t.name, t.count);
            topic_result(t.name, r)
        })
        .collect();
    Outcome::Respond(Response::CreatePartitions(CreatePartitionsResponse {
        topics,
    }))
}

fn reassign_partitions(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::ReassignPartitions(r) = req else {
        return mismatched();
    };
    let answer = |error, message: String, moves| {
        Response::ReassignPartitions(ReassignPartitionsResponse {
            error,
            message,
            moves,
        })
    };
    let Some(link) = ctx.broker.cluster() else {
        return Outcome::Respond(answer(
            ErrorCode::InvalidRequest,
            "not a cluster: a single broker has no replicas to move".into(),
            Vec::new(),
        ));
    };
    let link = Arc::clone(link);
    Outcome::Deferred(Box::pin(async move {
        Some(match link.reassign(r).await {
            Ok(moves) => answer(ErrorCode::None, String::new(), moves),
            Err(e) => answer(e.code(), crate::error::chain(&e), Vec::new()),
        })
    }))
}

fn alter_configs(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::AlterConfigs(AlterConfigsRequest { topics }) = req else {
        return mismatched();
    };
    let changes_of = |t: sluice_protocol::AlterConfigsTopic| {
        let changes: Vec<(String, Option<String>)> =
            t.changes.into_iter().map(|c| (c.key, c.value)).collect();
        (t.name, changes)
    };
    if let Some(link) = ctx.broker.cluster() {
        let (link, broker) = (Arc::clone(link), Arc::clone(&ctx.broker));
        return Outcome::Deferred(Box::pin(async move {
            let mut results = Vec::with_capacity(topics.len());
            for t in topics {
                let (name, changes) = changes_of(t);
                // Checked here, so the metadata only ever holds valid configs.
                let checked = crate::topic_meta::TopicOverrides::default()
                    .with_changes(&changes)
                    .and_then(|_| {
                        if broker
                            .cluster_view()
                            .is_some_and(|v| v.topics.contains_key(&name))
                        {
                            Ok(())
                        } else {
                            Err(BrokerError::UnknownTopic(name.clone()))
                        }
                    });
                let r = match checked {
                    Ok(()) => link.alter_topic_config(name.clone(), changes).await,
                    Err(e) => Err(e),
                };
                results.push(topic_result(name, r));
            }
            Some(Response::AlterConfigs(AlterConfigsResponse {
                topics: results,
            }))
        }));
    }
    let topics = topics
        .into_iter()
        .map(|t| {
            let (name, changes) = changes_of(t);
            let r = ctx.broker.alter_topic_config(&name, &changes);
            topic_result(name, r)
        })
        .collect();
    Outcome::Respond(Response::AlterConfigs(AlterConfigsResponse { topics }))
}

fn partition_response(
    partition: u32,
    r: Result<sluice_log::AppendInfo, ErrorCode>,
) -> ProducePartitionResponse {
    match r {
        Ok(info) => ProducePartitionResponse {
            partition,
            error: ErrorCode::None,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
        },
        Err(error) => ProducePartitionResponse {
            partition,
            error,
            base_offset: 0,
            last_offset: 0,
        },
    }
}

/// A produce error as its wire code, logged (the error, which may hold a
/// copy of the topic name, is dropped here, not kept per partition).
fn produce_error(topic: &str, partition: u32, e: BrokerError) -> ErrorCode {
    tracing::debug!(topic, partition, error = %chain(&e), "produce failed");
    e.code()
}

fn produce(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::Produce(ProduceRequest {
        acks,
        timeout_ms,
        topics,
    }) = req
    else {
        return mismatched();
    };
    // Appends run here, in request order; only the fsync wait is deferred.
    let mut appended = Vec::with_capacity(topics.len());
    let mut any_wait = false;
    let view = ctx.broker.cluster_view();
    for t in topics {
        let parts: Vec<_> = t
            .partitions
            .into_iter()
            .map(|p| {
                let led = view.as_ref().map_or(Ok(()), |v| {
                    let r = v.leadership(&t.name, p.partition);
                    if r == Err(ErrorCode::UnknownTopicOrPartition)
                        && !v.topics.contains_key(&t.name)
                        && ctx.broker.auto_creates_topics()
                    {
                        // No new partitions while produce is refused for disk space.
                        ctx.broker.disk_space().check().map_err(|e| e.code())?;
                        auto_create(ctx, &t.name);
                        return Err(ErrorCode::LeaderNotAvailable);
                    }
                    r
                });
                // Checked here so an empty partition costs no error value
                // (the broker's EmptyProduce carries the topic name).
                let r = if let Err(code) = led {
                    Err(code)
                } else if p.records.is_empty() {
                    tracing::debug!(topic = %t.name, partition = p.partition, "produce partition without records");
                    Err(ErrorCode::InvalidRequest)
                } else {
                    ctx.broker
                        .append(&t.name, p.partition, &p.records, crate::codes::acks(acks))
                        .map_err(|e| produce_error(&t.name, p.partition, e))
                };
                let r = r.map_err(|code| ctx.broker.metrics().produce_failed(code));
                if let Ok(a) = &r {
                    any_wait |= a.needs_fsync();
                }
                (p.partition, r)
            })
            .collect();
        appended.push((t.name, parts));
    }
    if !any_wait {
        if acks == Acks::None {
            return Outcome::NoResponse;
        }
        let topics = appended
            .into_iter()
            .map(|(name, parts)| ProduceTopicResponse {
                name,
                partitions: parts
                    .into_iter()
                    .map(|(p, r)| partition_response(p, r.map(|a| a.info)))
                    .collect(),
            })
            .collect();
        return Outcome::Respond(Response::Produce(ProduceResponse { topics }));
    }
    let timeout = Duration::from_millis(u64::from(timeout_ms));
    let metrics = ctx.broker.metrics().clone();
    Outcome::Deferred(Box::pin(async move {
        let mut topics = Vec::with_capacity(appended.len());
        for (name, parts) in appended {
            let mut partitions = Vec::with_capacity(parts.len());
            for (p, r) in parts {
                let r = match r {
                    Ok(a) => a
                        .durable(timeout)
                        .await
                        .map_err(|e| metrics.produce_failed(produce_error(&name, p, e))),
                    Err(e) => Err(e),
                };
                partitions.push(partition_response(p, r));
            }
            topics.push(ProduceTopicResponse { name, partitions });
        }
        (acks != Acks::None).then_some(Response::Produce(ProduceResponse { topics }))
    }))
}

/// Proposes a topic that a produce named and the cluster does not know, with
/// the broker's default partitions (once at a time per name; the producer
/// meanwhile gets `LEADER_NOT_AVAILABLE` and retries).
fn auto_create(ctx: &Context, name: &str) {
    let Some(link) = ctx.broker.cluster() else {
        return;
    };
    if !ctx.broker.start_auto_create(name) {
        return;
    }
    let (link, broker, name) = (Arc::clone(link), Arc::clone(&ctx.broker), name.to_string());
    tokio::spawn(async move {
        let r = link
            .create_topic(NewTopic {
                name: name.clone(),
                partitions: broker.default_partitions(),
                replication_factor: None,
                config: Vec::new(),
            })
            .await;
        match r {
            Ok(()) | Err(BrokerError::TopicExists(_)) => {
                tracing::info!(topic = %name, "auto-created topic through the controller")
            }
            Err(e) => {
                tracing::warn!(topic = %name, error = %chain(&e), "auto-creating a topic failed")
            }
        }
        broker.end_auto_create(&name);
    });
}

/// InitProducerId: a fresh producer id (see [`Broker::init_producer_id`]).
fn init_producer_id(ctx: &Context, client_id: &str, req: Request) -> Outcome {
    let Request::InitProducerId = req else {
        return mismatched();
    };
    if let Some(link) = ctx.broker.cluster() {
        // Ids unique in the cluster: blocks from the controller.
        let reply = |producer_id| {
            Response::InitProducerId(InitProducerIdResponse {
                error: ErrorCode::None,
                producer_id,
                producer_epoch: 0,
            })
        };
        if let Some(id) = ctx.broker.take_block_producer_id() {
            return Outcome::Respond(reply(id));
        }
        let (link, broker) = (Arc::clone(link), Arc::clone(&ctx.broker));
        return Outcome::Deferred(Box::pin(async move {
            match link.allocate_producer_ids(PRODUCER_ID_BLOCK).await {
                Ok(start) => {
                    broker.install_producer_id_block(start, PRODUCER_ID_BLOCK as i64);
                    match broker.take_block_producer_id() {
                        Some(id) => Some(reply(id)),
                        None => Some(producer_id_error(ErrorCode::RequestTimedOut)),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "allocating producer ids failed");
                    Some(producer_id_error(e.code()))
                }
            }
        }));
    }
    let (producer_id, producer_epoch) = ctx.broker.init_producer_id();
    tracing::debug!(client_id, producer_id, "allocated producer id");
    Outcome::Respond(Response::InitProducerId(InitProducerIdResponse {
        error: ErrorCode::None,
        producer_id,
        producer_epoch,
    }))
}

/// Producer ids a broker in a cluster takes from the controller at a time.
const PRODUCER_ID_BLOCK: u64 = 1000;

fn producer_id_error(error: ErrorCode) -> Response {
    Response::InitProducerId(InitProducerIdResponse {
        error,
        producer_id: -1,
        producer_epoch: -1,
    })
}

/// Per topic, its partitions in request order: `true` when the partition
/// was handed to the broker (its result comes next), `false` when it does not
/// exist (UNKNOWN_TOPIC_OR_PARTITION, decided by the handler).
type FetchShape = Vec<(String, Vec<(u32, Option<ErrorCode>)>)>;

/// Regroups flat fetch results into the request's topic structure.
fn fetch_response(shape: FetchShape, results: Vec<FetchResult>) -> Response {
    let mut results = results.into_iter();
    let empty = |partition, error| FetchPartitionResponse {
        partition,
        error,
        high_watermark: 0,
        log_start_offset: 0,
        records: bytes::Bytes::new(),
    };
    let topics = shape
        .into_iter()
        .map(|(name, parts)| FetchTopicResponse {
            name,
            partitions: parts
                .into_iter()
                .map(|(partition, missing)| {
                    if let Some(code) = missing {
                        return empty(partition, code);
                    }
                    match results.next() {
                        Some(Ok(d)) => FetchPartitionResponse {
                            partition,
                            error: ErrorCode::None,
                            high_watermark: d.high_watermark,
                            log_start_offset: d.log_start_offset,
                            records: d.records,
                        },
                        Some(Err(e)) => {
                            let (log_start_offset, high_watermark) =
                                e.offset_range().unwrap_or((0, 0));
                            FetchPartitionResponse {
                                partition,
                                error: e.code(),
                                high_watermark,
                                log_start_offset,
                                records: bytes::Bytes::new(),
                            }
                        }
                        None => empty(partition, ErrorCode::Unknown),
                    }
                })
                .collect(),
        })
        .collect();
    Response::Fetch(FetchResponse { topics })
}

/// A partition serves clients here: not replicated, or its leader (a
/// broker whose metadata names it leader before it took the role, e.g. just
/// restarted, answers NOT_LEADER).
fn leads(
    p: &Arc<crate::partition::Partition>,
) -> Result<&Arc<crate::partition::Partition>, ErrorCode> {
    if p.serves_clients() {
        Ok(p)
    } else {
        Err(ErrorCode::NotLeaderForPartition)
    }
}

fn fetch(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes,
        topics,
    }) = req
    else {
        return mismatched();
    };
    // Missing topics and partitions are answered here, without an error value
    // (and a copy of the name) per partition; the broker gets only partitions
    // that exist, each topic's name shared by its targets.
    let mut shape: FetchShape = Vec::with_capacity(topics.len());
    let mut targets = Vec::new();
    let mut missing = false;
    let view = ctx.broker.cluster_view();
    for t in topics {
        let found = ctx.broker.topics().get(&t.name);
        // One shared name for the targets of this topic, made on first use.
        let mut topic: Option<Arc<str>> = None;
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            if let Some(Err(code)) = view.as_ref().map(|v| v.leadership(&t.name, p.partition)) {
                missing = true;
                parts.push((p.partition, Some(code)));
                continue;
            }
            match serving(found.as_deref(), p.partition)
                .map_err(|why| why.code())
                .and_then(leads)
            {
                Ok(_) => {
                    let topic = topic.get_or_insert_with(|| Arc::from(t.name.as_str()));
                    targets.push(FetchTarget {
                        topic: Arc::clone(topic),
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.max_bytes as usize,
                    });
                    parts.push((p.partition, None));
                }
                Err(code) => {
                    missing = true;
                    parts.push((p.partition, Some(code)));
                }
            }
        }
        shape.push((t.name, parts));
    }
    // A partition in error answers the fetch at once (as the broker does for its own errors).
    let max_wait_ms = if missing { 0 } else { max_wait_ms };
    let mut prepared = ctx.broker.prepare_fetch(FetchParams {
        targets,
        min_bytes: min_bytes as usize,
        max_bytes: max_bytes as usize,
        max_wait: Duration::from_millis(u64::from(max_wait_ms)),
    });
    if let Some(results) = prepared.try_complete() {
        return Outcome::Respond(fetch_response(shape, results));
    }
    let cancel = ctx.shutdown.clone();
    Outcome::Deferred(Box::pin(async move {
        let results = prepared.wait(&cancel).await;
        Some(fetch_response(shape, results))
    }))
}

/// Longest time a ReplicaFetch parks (whatever it asks).
const REPLICA_FETCH_MAX_WAIT: Duration = Duration::from_millis(1000);

/// Answers every partition of a ReplicaFetch once (see `protocol.md`).
/// `None` for a partition that is not here.
fn answer_replica_fetch(
    req: &ReplicaFetchRequest,
    parts: &[Option<Arc<crate::partition::Partition>>],
) -> (Vec<ReplicaFetchPartitionResponse>, bool) {
    let mut budget = req.max_bytes as usize;
    let mut any = false;
    let answers = req
        .partitions
        .iter()
        .zip(parts)
        .map(|(p, part)| {
            let a = match part {
                None => crate::partition::ReplicaAnswer {
                    error: ErrorCode::UnknownTopicOrPartition,
                    high_watermark: 0,
                    log_start_offset: 0,
                    diverging: None,
                    records: bytes::Bytes::new(),
                },
                Some(part) => part.serve_replica(
                    req.replica_id,
                    p.leader_epoch,
                    p.fetch_offset,
                    p.last_fetched_epoch,
                    p.durable_offset,
                    budget.max(1),
                ),
            };
            budget = budget.saturating_sub(a.records.len());
            any |= a.error != ErrorCode::None || a.diverging.is_some() || !a.records.is_empty();
            ReplicaFetchPartitionResponse {
                topic: p.topic.clone(),
                partition: p.partition,
                error: a.error,
                high_watermark: a.high_watermark,
                log_start_offset: a.log_start_offset,
                diverging_epoch: a.diverging.map_or(-1, |(e, _)| e as i32),
                diverging_end_offset: a.diverging.map_or(0, |(_, o)| o),
                records: a.records,
            }
        })
        .collect();
    (answers, any)
}

fn replica_fetch(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::ReplicaFetch(req) = req else {
        return mismatched();
    };
    let parts: Vec<Option<Arc<crate::partition::Partition>>> = req
        .partitions
        .iter()
        .map(|p| {
            let t = ctx.broker.topics().get(&p.topic);
            serving(t.as_deref(), p.partition).ok().cloned()
        })
        .collect();
    // Subscribed before the first answer: an append after it wakes the wait.
    let mut ends: Vec<tokio::sync::watch::Receiver<u64>> =
        parts.iter().flatten().map(|p| p.subscribe_end()).collect();
    let (answers, any) = answer_replica_fetch(&req, &parts);
    let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(REPLICA_FETCH_MAX_WAIT);
    if any || wait.is_zero() || ends.is_empty() {
        return Outcome::Respond(Response::ReplicaFetch(ReplicaFetchResponse {
            partitions: answers,
        }));
    }
    let cancel = ctx.shutdown.clone();
    Outcome::Deferred(Box::pin(async move {
        for rx in &mut ends {
            rx.borrow_and_update();
        }
        let changed = futures::future::select_all(ends.iter_mut().map(|rx| Box::pin(rx.changed())));
        // Parked by design (a long poll): not a slow request.
        crate::slow_log::parked(async {
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {}
            }
        })
        .await;
        let (answers, _) = answer_replica_fetch(&req, &parts);
        Some(Response::ReplicaFetch(ReplicaFetchResponse {
            partitions: answers,
        }))
    }))
}

fn list_offsets(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::ListOffsets(ListOffsetsRequest { topics }) = req else {
        return mismatched();
    };
    let view = ctx.broker.cluster_view();
    let topics = topics
        .into_iter()
        .map(|t| {
            // Resolved once per topic: a missing topic or partition is
            // answered without an error value (and a name copy) per partition.
            let found = ctx.broker.topics().get(&t.name);
            ListOffsetsTopicResponse {
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let led = view
                            .as_ref()
                            .map_or(Ok(()), |v| v.leadership(&t.name, p.partition));
                        let r = match led.and_then(|()| {
                            serving(found.as_deref(), p.partition)
                                .map_err(|why| why.code())
                                .and_then(leads)
                        }) {
                            Ok(_) => ctx
                                .broker
                                .list_offset(
                                    &t.name,
                                    p.partition,
                                    crate::codes::offset_spec(p.spec),
                                )
                                .map_err(|e| e.code()),
                            Err(code) => Err(code),
                        };
                        match r {
                            Ok((offset, timestamp)) => ListOffsetsPartitionResponse {
                                partition: p.partition,
                                error: ErrorCode::None,
                                offset,
                                timestamp,
                            },
                            Err(error) => ListOffsetsPartitionResponse {
                                partition: p.partition,
                                error,
                                offset: 0,
                                timestamp: -1,
                            },
                        }
                    })
                    .collect(),
                name: t.name,
            }
        })
        .collect();
    Outcome::Respond(Response::ListOffsets(ListOffsetsResponse { topics }))
}

// ----------------------------------------------------------------------------
// Consumer groups (keys 7..=14): decode -> Groups -> encode.
// ----------------------------------------------------------------------------

fn to_wire(list: &[TopicPartition]) -> Vec<TopicPartitions> {
    TopicPartitions::from_pairs(list.iter().map(|tp| (tp.topic.as_str(), tp.partition)))
}

/// Zero means "the default" on the wire.
fn nonzero_ms(v: u32) -> Option<u64> {
    (v != 0).then_some(u64::from(v))
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn group_error(what: &str, group: &str, e: &GroupError) -> ErrorCode {
    if matches!(e, GroupError::Storage(s) if !matches!(s, sluice_log::LogError::BatchTooLarge { .. }))
    {
        tracing::error!(group, error = %chain(e), "{what} failed");
    } else {
        tracing::debug!(group, error = %e, "{what} refused");
    }
    e.code()
}

/// `NOT_COORDINATOR` (another broker coordinates `group`) or
/// `COORDINATOR_NOT_AVAILABLE` (its coordinator is down); `None` when this
/// broker coordinates it.
fn not_coordinator(ctx: &Context, group: &str) -> Option<ErrorCode> {
    match ctx.broker.group_coordinator(group) {
        GroupCoordinator::Local => None,
        GroupCoordinator::Remote { .. } => Some(ErrorCode::NotCoordinator),
        GroupCoordinator::Unavailable => Some(ErrorCode::CoordinatorNotAvailable),
    }
}

fn find_coordinator(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::FindCoordinator(FindCoordinatorRequest { group_id }) = req else {
        return mismatched();
    };
    let failed = |error| {
        Outcome::Respond(Response::FindCoordinator(FindCoordinatorResponse {
            error,
            node_id: sluice_protocol::NO_COORDINATOR,
            host: String::new(),
            port: 0,
        }))
    };
    if let Err(e) = sluice_group::error::validate_group_id(&group_id) {
        return failed(e.code());
    }
    let (node_id, host, port) = match ctx.broker.group_coordinator(&group_id) {
        GroupCoordinator::Local => {
            let node_id = ctx.broker.node_id();
            // The advertised address when the cluster metadata has one, else
            // the address this client reached.
            let advertised = ctx.broker.cluster_view().and_then(|v| {
                v.brokers
                    .get(&node_id)
                    .filter(|b| b.port != 0 && !is_unspecified(&b.host))
                    .map(|b| (b.host.clone(), b.port))
            });
            let (host, port) = advertised
                .unwrap_or_else(|| (ctx.local_addr.ip().to_string(), ctx.local_addr.port()));
            (node_id, host, port)
        }
        GroupCoordinator::Remote {
            node_id,
            host,
            port,
        } => (node_id, host, port),
        GroupCoordinator::Unavailable => return failed(ErrorCode::CoordinatorNotAvailable),
    };
    Outcome::Respond(Response::FindCoordinator(FindCoordinatorResponse {
        error: ErrorCode::None,
        node_id,
        host,
        port,
    }))
}

/// True for an empty host or an unspecified IP (0.0.0.0, ::).
fn is_unspecified(host: &str) -> bool {
    host.is_empty()
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
}

fn join_group(ctx: &Context, client_id: &str, req: Request) -> Outcome {
    let Request::JoinGroup(JoinGroupRequest {
        group_id,
        member_id,
        topics,
        session_timeout_ms,
        rebalance_timeout_ms,
        metadata,
    }) = req
    else {
        return mismatched();
    };
    if let Some(error) = not_coordinator(ctx, &group_id) {
        return Outcome::Respond(Response::JoinGroup(JoinGroupResponse {
            error,
            member_id: String::new(),
            generation: 0,
            heartbeat_interval_ms: 0,
            assignment: Vec::new(),
            revoke: Vec::new(),
        }));
    }
    let r = ctx.groups.join(
        &group_id,
        JoinRequest {
            member_id: (!member_id.is_empty()).then_some(member_id),
            client_id: client_id.to_string(),
            topics,
            session_timeout_ms: nonzero_ms(session_timeout_ms),
            rebalance_timeout_ms: nonzero_ms(rebalance_timeout_ms),
            metadata: metadata.to_vec(),
        },
    );
    Outcome::Respond(Response::JoinGroup(match r {
        Ok(v) => {
            tracing::info!(group = %group_id, member = %v.member_id, client_id, generation = v.generation, "member joined group");
            JoinGroupResponse {
                error: ErrorCode::None,
                member_id: v.member_id,
                generation: v.generation,
                heartbeat_interval_ms: clamp_u32(v.heartbeat_interval_ms),
                assignment: to_wire(&v.assignment),
                revoke: to_wire(&v.revoke),
            }
        }
        Err(e) => JoinGroupResponse {
            error: group_error("join", &group_id, &e),
            member_id: String::new(),
            generation: 0,
            heartbeat_interval_ms: 0,
            assignment: Vec::new(),
            revoke: Vec::new(),
        },
    }))
}

fn heartbeat_response(group: &str, r: Result<MemberView, GroupError>) -> Response {
    Response::Heartbeat(match r {
        Ok(v) => HeartbeatResponse {
            error: ErrorCode::None,
            generation: v.generation,
            heartbeat_interval_ms: clamp_u32(v.heartbeat_interval_ms),
            assignment: to_wire(&v.assignment),
            revoke: to_wire(&v.revoke),
        },
        Err(e) => HeartbeatResponse {
            error: group_error("heartbeat", group, &e),
            generation: 0,
            heartbeat_interval_ms: 0,
            assignment: Vec::new(),
            revoke: Vec::new(),
        },
    })
}

fn heartbeat(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::Heartbeat(HeartbeatRequest {
        group_id,
        member_id,
        generation,
        owned,
        max_wait_ms,
    }) = req
    else {
        return mismatched();
    };
    if let Some(error) = not_coordinator(ctx, &group_id) {
        return Outcome::Respond(Response::Heartbeat(HeartbeatResponse {
            error,
            generation: 0,
            heartbeat_interval_ms: 0,
            assignment: Vec::new(),
            revoke: Vec::new(),
        }));
    }
    // The pairs are expanded by `Groups::heartbeat`, after the member check.
    let max_wait = Duration::from_millis(u64::from(max_wait_ms));
    match ctx
        .groups
        .heartbeat(&group_id, &member_id, generation, &owned, max_wait)
    {
        HeartbeatReply::Ready(r) => Outcome::Respond(heartbeat_response(&group_id, r)),
        HeartbeatReply::Parked(parked) => {
            let cancel = ctx.shutdown.clone();
            Outcome::Deferred(Box::pin(async move {
                // Parked by design until the group changes: not a slow request.
                Some(match crate::slow_log::parked(parked.wait(&cancel)).await {
                    Some(r) => heartbeat_response(&group_id, r),
                    // Shutdown (or the client is gone): retriable, not a heartbeat.
                    None => Response::Heartbeat(HeartbeatResponse {
                        error: ErrorCode::BrokerShuttingDown,
                        generation: 0,
                        heartbeat_interval_ms: 0,
                        assignment: Vec::new(),
                        revoke: Vec::new(),
                    }),
                })
            }))
        }
    }
}

fn leave_group(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::LeaveGroup(LeaveGroupRequest {
        group_id,
        member_id,
    }) = req
    else {
        return mismatched();
    };
    if let Some(error) = not_coordinator(ctx, &group_id) {
        return Outcome::Respond(Response::LeaveGroup(LeaveGroupResponse { error }));
    }
    let error = match ctx.groups.leave(&group_id, &member_id) {
        Ok(()) => ErrorCode::None,
        Err(e) => group_error("leave", &group_id, &e),
    };
    Outcome::Respond(Response::LeaveGroup(LeaveGroupResponse { error }))
}

/// An OffsetCommit answer being built: per topic, per partition, an error
/// known already (`Some`) or the outcome of the fenced commit (`None`).
type CommitShape = Vec<(String, Vec<(u32, Option<ErrorCode>)>)>;

fn commit_response(shape: CommitShape, code: ErrorCode) -> Response {
    Response::OffsetCommit(OffsetCommitResponse {
        topics: shape
            .into_iter()
            .map(|(name, parts)| OffsetCommitTopicResponse {
                name,
                partitions: parts
                    .into_iter()
                    .map(|(partition, e)| OffsetCommitPartitionResponse {
                        partition,
                        error: e.unwrap_or(code),
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn offset_commit(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::OffsetCommit(OffsetCommitRequest {
        group_id,
        member_id,
        generation,
        topics,
    }) = req
    else {
        return mismatched();
    };
    if let Some(error) = not_coordinator(ctx, &group_id) {
        let shape = topics
            .into_iter()
            .map(|t| {
                let parts = t.partitions.iter().map(|p| (p.partition, None)).collect();
                (t.name, parts)
            })
            .collect();
        return Outcome::Respond(commit_response(shape, error));
    }
    // Shape of the answer, with UNKNOWN_TOPIC_OR_PARTITION filled in now and
    // `None` for the partitions that go through the fenced commit.
    let mut shape: CommitShape = Vec::with_capacity(topics.len());
    let mut commits = Vec::new();
    for t in topics {
        // Resolved once per topic: missing partitions cost no error value each.
        let target = ctx.groups.commit_target(&t.name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            // The decoder refuses negative offsets; a request built in code
            // with one gets INVALID_REQUEST for that partition, never a clamp.
            let Ok(offset) = u64::try_from(p.offset) else {
                parts.push((p.partition, Some(ErrorCode::InvalidRequest)));
                continue;
            };
            match target.check(p.partition) {
                Ok(()) => {
                    let mut c = OffsetCommit::new(
                        TopicPartition::new(t.name.as_str(), p.partition),
                        offset,
                    );
                    c.metadata = p.metadata;
                    commits.push(c);
                    parts.push((p.partition, None));
                }
                Err(refusal) => parts.push((p.partition, Some(refusal.code()))),
            }
        }
        shape.push((t.name, parts));
    }
    if commits.is_empty() {
        return Outcome::Respond(commit_response(shape, ErrorCode::None));
    }
    let ticket = match ctx
        .groups
        .begin_commit(&group_id, &member_id, generation, &commits)
    {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Respond(commit_response(
                shape,
                group_error("offset commit", &group_id, &e),
            ))
        }
    };
    let done = finish_commit_replicated(ctx, group_id, ticket, commits);
    Outcome::Deferred(Box::pin(async move {
        let code = done.await;
        Some(commit_response(shape, code))
    }))
}

/// Waits for a fenced commit's fsync (off the runtime) and, in a cluster,
/// for its replication to the group's next coordinators; the code to answer.
pub fn finish_commit_replicated(
    ctx: &Context,
    group_id: String,
    ticket: sluice_group::CommitTicket,
    commits: Vec<OffsetCommit>,
) -> impl std::future::Future<Output = ErrorCode> + Send + 'static {
    let groups = Arc::clone(&ctx.groups);
    let link = ctx.broker.cluster().cloned();
    async move {
        let r = tokio::task::spawn_blocking(move || groups.finish_commit(ticket)).await;
        let mut code = match r {
            Ok(Ok(())) => ErrorCode::None,
            Ok(Err(e)) => group_error("offset commit", &group_id, &e),
            Err(e) => {
                tracing::error!(group = %group_id, error = %e, "offset commit task failed");
                ErrorCode::StorageError
            }
        };
        if let (ErrorCode::None, Some(link)) = (code, link) {
            // Acknowledged only once replicated: the group's next
            // coordinator (this broker may die) answers with it.
            let now = crate::broker::now_ms();
            let offsets = commits
                .into_iter()
                .map(|c| crate::cluster::ReplicatedOffset {
                    topic: c.partition.topic,
                    partition: c.partition.partition,
                    offset: c.offset,
                    timestamp_ms: now,
                    metadata: c.metadata,
                })
                .collect();
            if let Err(e) = link.commit_offsets(group_id.clone(), offsets).await {
                tracing::warn!(group = %group_id, error = %chain(&e), "offset commit not replicated");
                code = ErrorCode::CoordinatorNotAvailable;
            }
        }
        code
    }
}

fn offset_fetch(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::OffsetFetch(OffsetFetchRequest { group_id, topics }) = req else {
        return mismatched();
    };
    if let Some(error) = not_coordinator(ctx, &group_id) {
        return Outcome::Respond(Response::OffsetFetch(OffsetFetchResponse {
            error,
            topics: Vec::new(),
        }));
    }
    if let Err(e) = sluice_group::error::validate_group_id(&group_id) {
        return Outcome::Respond(Response::OffsetFetch(OffsetFetchResponse {
            error: e.code(),
            topics: Vec::new(),
        }));
    }
    let mut committed = ctx.groups.committed(&group_id);
    if let Some(link) = ctx.broker.cluster() {
        // The replicated commits: this coordinator may be new to the group
        // (its previous coordinator died), or have missed later commits.
        for r in link.group_offsets(&group_id) {
            let tp = TopicPartition::new(r.topic.as_str(), r.partition);
            if committed
                .get(&tp)
                .is_some_and(|c| c.commit_timestamp_ms >= r.timestamp_ms)
            {
                continue;
            }
            committed.insert(
                tp,
                sluice_group::CommittedOffset {
                    offset: r.offset,
                    commit_timestamp_ms: r.timestamp_ms,
                    metadata: r.metadata,
                },
            );
        }
    }
    let entry =
        |partition: u32, c: Option<&sluice_group::CommittedOffset>| OffsetFetchPartitionResponse {
            partition,
            error: ErrorCode::None,
            offset: c.map_or(-1, |c| i64::try_from(c.offset).unwrap_or(i64::MAX)),
            metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
        };
    // Every committed partition of one topic (or of all topics when `None`):
    // a range of the sorted map, so listing many topics costs no scan each.
    let all_of = |topic: Option<&str>| -> Vec<OffsetFetchTopicResponse> {
        let mut out: Vec<OffsetFetchTopicResponse> = Vec::new();
        let entries: Box<dyn Iterator<Item = (&TopicPartition, &sluice_group::CommittedOffset)>> =
            match topic {
                None => Box::new(committed.iter()),
                Some(t) => Box::new(
                    committed.range(TopicPartition::new(t, 0)..=TopicPartition::new(t, u32::MAX)),
                ),
            };
        for (tp, c) in entries {
            match out.last_mut() {
                Some(t) if t.name == tp.topic => t.partitions.push(entry(tp.partition, Some(c))),
                _ => out.push(OffsetFetchTopicResponse {
                    name: tp.topic.clone(),
                    partitions: vec![entry(tp.partition, Some(c))],
                }),
            }
        }
        out
    };
    let topics = if topics.is_empty() {
        all_of(None)
    } else {
        topics
            .into_iter()
            .map(|t| {
                if t.partitions.is_empty() {
                    let partitions = all_of(Some(&t.topic))
                        .into_iter()
                        .flat_map(|r| r.partitions)
                        .collect();
                    OffsetFetchTopicResponse {
                        name: t.topic,
                        partitions,
                    }
                } else {
                    // The topic's committed partitions, found once (sorted by
                    // partition); each requested one is a binary search, with
                    // no key (and name copy) built per partition.
                    let of_topic: Vec<(u32, &sluice_group::CommittedOffset)> = committed
                        .range(
                            TopicPartition::new(t.topic.as_str(), 0)
                                ..=TopicPartition::new(t.topic.as_str(), u32::MAX),
                        )
                        .map(|(tp, c)| (tp.partition, c))
                        .collect();
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let c = of_topic
                                .binary_search_by_key(p, |(q, _)| *q)
                                .ok()
                                .map(|i| of_topic[i].1);
                            entry(*p, c)
                        })
                        .collect();
                    OffsetFetchTopicResponse {
                        name: t.topic,
                        partitions,
                    }
                }
            })
            .collect()
    };
    Outcome::Respond(Response::OffsetFetch(OffsetFetchResponse {
        error: ErrorCode::None,
        topics,
    }))
}

fn list_groups(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::ListGroups = req else {
        return mismatched();
    };
    // Only the groups this broker coordinates (state may linger for a group
    // whose coordinator moved; its new coordinator lists it).
    let groups = ctx
        .groups
        .list_groups()
        .into_iter()
        .filter(|g| not_coordinator(ctx, &g.group).is_none())
        .map(|g| ListedGroup {
            group_id: g.group,
            state: g.state.name().to_string(),
            members: clamp_u32(g.members as u64),
            generation: g.generation,
        })
        .collect();
    Outcome::Respond(Response::ListGroups(ListGroupsResponse { groups }))
}

/// A DescribeGroups entry carrying only an error.
fn undescribed(group_id: String, error: ErrorCode) -> DescribedGroup {
    DescribedGroup {
        error,
        group_id,
        state: String::new(),
        generation: 0,
        members: Vec::new(),
        offsets: Vec::new(),
    }
}

fn describe_groups(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::DescribeGroups(DescribeGroupsRequest { group_ids }) = req else {
        return mismatched();
    };
    let groups = group_ids
        .into_iter()
        .map(|group_id| {
            if let Some(error) = not_coordinator(ctx, &group_id) {
                return undescribed(group_id, error);
            }
            let info = match ctx.groups.describe(&group_id) {
                Ok(info) => info,
                Err(e) => {
                    let code = group_error("describe group", &group_id, &e);
                    return undescribed(group_id, code);
                }
            };
            let d = info.description;
            DescribedGroup {
                error: ErrorCode::None,
                group_id,
                state: d.state.name().to_string(),
                generation: d.generation,
                members: d
                    .members
                    .into_iter()
                    .map(|m| DescribedMember {
                        member_id: m.member_id,
                        client_id: m.client_id,
                        topics: m.topics,
                        assignment: to_wire(&m.assignment),
                        revoking: to_wire(&m.revoking),
                    })
                    .collect(),
                offsets: info
                    .partitions
                    .into_iter()
                    .map(|p| PartitionLag {
                        topic: p.partition.topic,
                        partition: p.partition.partition,
                        committed_offset: p
                            .committed
                            .map_or(-1, |c| i64::try_from(c).unwrap_or(i64::MAX)),
                        end_offset: p.end_offset,
                        lag: p.lag,
                        lag_ms: p
                            .lag_ms
                            .map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
                    })
                    .collect(),
            }
        })
        .collect();
    Outcome::Respond(Response::DescribeGroups(DescribeGroupsResponse { groups }))
}

fn delete_groups(ctx: &Context, _client_id: &str, req: Request) -> Outcome {
    let Request::DeleteGroups(DeleteGroupsRequest { group_ids }) = req else {
        return mismatched();
    };
    // Decided now, on the request path: groups coordinated elsewhere are
    // answered without being touched.
    let group_ids: Vec<(String, Option<ErrorCode>)> = group_ids
        .into_iter()
        .map(|g| {
            let refused = not_coordinator(ctx, &g);
            (g, refused)
        })
        .collect();
    let groups = Arc::clone(&ctx.groups);
    let link = ctx.broker.cluster().cloned();
    // Each delete fsyncs its tombstones: off the runtime.
    Outcome::Deferred(Box::pin(async move {
        let r = tokio::task::spawn_blocking(move || {
            group_ids
                .into_iter()
                .map(|(group_id, refused)| {
                    if let Some(error) = refused {
                        return DeletedGroup { group_id, error };
                    }
                    let error = match groups.delete_group(&group_id) {
                        Ok(n) => {
                            tracing::info!(group = %group_id, offsets = n, "deleted group");
                            ErrorCode::None
                        }
                        Err(e) => group_error("delete group", &group_id, &e),
                    };
                    DeletedGroup { group_id, error }
                })
                .collect::<Vec<_>>()
        })
        .await;
        let mut groups = match r {
            Ok(groups) => groups,
            Err(e) => {
                tracing::error!(error = %e, "delete groups task failed");
                return Some(Response::Error(ErrorCode::Unknown));
            }
        };
        if let Some(link) = link {
            // The replicated offsets go too, or the next coordinator would bring them back.
            for g in groups.iter_mut().filter(|g| g.error == ErrorCode::None) {
                if let Err(e) = link.delete_group_offsets(g.group_id.clone()).await {
                    tracing::warn!(group = %g.group_id, error = %chain(&e), "group offsets not deleted in the cluster");
                    g.error = ErrorCode::CoordinatorNotAvailable;
                }
            }
        }
        Some(Response::DeleteGroups(DeleteGroupsResponse { groups }))
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A context over a fresh broker and its groups in `dir` (also used by the connection tests).
    pub(crate) fn test_context(dir: &std::path::Path, local_addr: SocketAddr) -> Context {
        let (broker, groups) = crate::group::tests::open(dir);
        Context {
            broker,
            groups,
            local_addr,
            shutdown: CancellationToken::new(),
            conn: ConnSecurity::default(),
        }
    }

    #[test]
    fn every_supported_api_has_exactly_one_handler() {
        let mut seen = HashSet::new();
        for (k, _) in HANDLERS {
            assert!(seen.insert(*k as u16), "{k:?} has two handlers");
        }
        for range in sluice_protocol::SUPPORTED_APIS {
            let key = ApiKey::from_u16(range.api_key)
                .unwrap_or_else(|| panic!("SUPPORTED_APIS names unknown key {}", range.api_key));
            assert!(handler_for(key).is_some(), "no handler for {key:?}");
        }
        for (k, _) in HANDLERS {
            assert!(
                sluice_protocol::SUPPORTED_APIS
                    .iter()
                    .any(|r| r.api_key == *k as u16),
                "{k:?} has a handler but is not advertised"
            );
        }
    }

    #[test]
    fn handlers_reject_mismatched_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_context(dir.path(), "127.0.0.1:1".parse().unwrap());
        for (k, h) in HANDLERS {
            if *k == ApiKey::ApiVersions {
                continue;
            }
            match h(&ctx, "c", Request::ApiVersions) {
                Outcome::Respond(Response::Error(ErrorCode::InvalidRequest)) => {}
                _ => panic!("{k:?} accepted an ApiVersions body"),
            }
        }
        match dispatch(&ctx, &test_header(999), Request::ApiVersions) {
            Outcome::Respond(Response::Error(ErrorCode::UnknownApi)) => {}
            _ => panic!("unknown api key not rejected"),
        }
        match dispatch(
            &ctx,
            &test_header(ApiKey::ApiVersions as u16),
            Request::ApiVersions,
        ) {
            Outcome::Respond(Response::ApiVersions(v)) => assert!(!v.apis.is_empty()),
            _ => panic!("ApiVersions not answered"),
        }
    }

    #[test]
    fn fetch_answers_missing_partitions_in_place_and_at_once() {
        use sluice_protocol::{FetchPartition, FetchTopic};
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_context(dir.path(), "127.0.0.1:1".parse().unwrap());
        ctx.broker.create_topic("t", 2, &[]).unwrap();
        let part = |partition| FetchPartition {
            partition,
            fetch_offset: 0,
            max_bytes: 1 << 20,
        };
        let req = Request::Fetch(FetchRequest {
            max_wait_ms: 60_000,
            min_bytes: 1 << 30,
            max_bytes: 1 << 20,
            topics: vec![
                FetchTopic {
                    name: "t".into(),
                    partitions: vec![part(1), part(9), part(0)],
                },
                FetchTopic {
                    name: "missing".into(),
                    partitions: vec![part(0)],
                },
            ],
        });
        // A missing partition is an error: the fetch is answered now, not parked.
        let Outcome::Respond(Response::Fetch(r)) = dispatch(&ctx, &test_header(5), req) else {
            panic!("not answered at once");
        };
        let got: Vec<(String, u32, ErrorCode)> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.clone(), p.partition, p.error))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("t".into(), 1, ErrorCode::None),
                ("t".into(), 9, ErrorCode::UnknownTopicOrPartition),
                ("t".into(), 0, ErrorCode::None),
                ("missing".into(), 0, ErrorCode::UnknownTopicOrPartition),
            ]
        );
    }

    /// Each produce partition answered with an error counts once in
    /// `sluice_produce_errors_total`, under its error name.
    #[test]
    fn produce_errors_are_counted_per_partition_by_name() {
        use sluice_protocol::{Acks as WireAcks, ProducePartition, ProduceTopic};
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_context(dir.path(), "127.0.0.1:1".parse().unwrap());
        ctx.broker.create_topic("t", 1, &[]).unwrap();
        let part = |partition, records: &[u8]| ProducePartition {
            partition,
            records: bytes::Bytes::copy_from_slice(records),
        };
        let req = Request::Produce(ProduceRequest {
            acks: WireAcks::Leader,
            timeout_ms: 1000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![part(9, b"x"), part(0, b""), part(7, b"y")],
            }],
        });
        let Outcome::Respond(Response::Produce(r)) =
            dispatch(&ctx, &test_header(ApiKey::Produce as u16), req)
        else {
            panic!("not answered at once");
        };
        let codes: Vec<ErrorCode> = r.topics[0].partitions.iter().map(|p| p.error).collect();
        assert_eq!(
            codes,
            vec![
                ErrorCode::UnknownTopicOrPartition,
                ErrorCode::InvalidRequest,
                ErrorCode::UnknownTopicOrPartition
            ]
        );
        let text = ctx.broker.metrics().render();
        assert!(
            text.contains("sluice_produce_errors_total{error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 2"),
            "{text}"
        );
        assert!(text.contains("sluice_produce_errors_total{error=\"INVALID_REQUEST\"} 1"));
    }

    /// A cluster link with a fixed view that proposes nothing.
    struct FixedView(Arc<ClusterView>);

    impl crate::cluster::ClusterLink for FixedView {
        fn view(&self) -> Arc<ClusterView> {
            Arc::clone(&self.0)
        }
        fn controller(&self) -> ControllerInfo {
            ControllerInfo {
                leader: Some(0),
                epoch: 1,
            }
        }
        fn create_topic(&self, _: NewTopic) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("fixed view".into())) })
        }
        fn delete_topic(&self, _: String) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("fixed view".into())) })
        }
        fn add_partitions(&self, _: String, _: u32) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("fixed view".into())) })
        }
        fn alter_topic_config(
            &self,
            _: String,
            _: Vec<(String, Option<String>)>,
        ) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("fixed view".into())) })
        }
        fn allocate_producer_ids(&self, _: u64) -> BoxFuture<'static, Result<i64, BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("fixed view".into())) })
        }
        fn commit_offsets(
            &self,
            _: String,
            _: Vec<crate::cluster::ReplicatedOffset>,
        ) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("not in these tests".into())) })
        }
        fn delete_group_offsets(&self, _: String) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("not in these tests".into())) })
        }
        fn security_command(
            &self,
            _: sluice_auth::store::SecurityCommand,
        ) -> BoxFuture<'static, Result<sluice_auth::store::SecurityOutcome, BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("not in these tests".into())) })
        }
        fn group_offsets(&self, _: &str) -> Vec<crate::cluster::ReplicatedOffset> {
            Vec::new()
        }
        fn reassign(
            &self,
            _: sluice_protocol::ReassignPartitionsRequest,
        ) -> BoxFuture<'static, Result<Vec<sluice_protocol::PartitionReplicas>, BrokerError>>
        {
            Box::pin(async { Err(BrokerError::Controller("not in these tests".into())) })
        }
    }

    fn coordinator_of(ctx: &Context, group: &str) -> FindCoordinatorResponse {
        let req = Request::FindCoordinator(FindCoordinatorRequest {
            group_id: group.into(),
        });
        match dispatch(ctx, &test_header(ApiKey::FindCoordinator as u16), req) {
            Outcome::Respond(Response::FindCoordinator(r)) => r,
            _ => panic!("FindCoordinator not answered"),
        }
    }

    #[test]
    fn find_coordinator_names_the_advertised_address_in_a_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_context(dir.path(), "127.0.0.1:7171".parse().unwrap());
        // Alone: the address the client connected to.
        let r = coordinator_of(&ctx, "g");
        assert_eq!(
            (r.error, r.node_id, r.host.as_str(), r.port),
            (ErrorCode::None, SINGLE_NODE_ID, "127.0.0.1", 7171)
        );
        // In a cluster: this node's advertised address from the metadata.
        let advertised = |host: &str, port| crate::cluster::ViewBroker {
            id: SINGLE_NODE_ID,
            host: host.into(),
            port,
            kafka: None,
            rack: None,
            alive: true,
            draining: false,
        };
        let mut view = ClusterView {
            node_id: SINGLE_NODE_ID,
            cluster_id: "c".into(),
            coordinators: vec![SINGLE_NODE_ID],
            ..ClusterView::default()
        };
        view.brokers
            .insert(SINGLE_NODE_ID, advertised("broker-0.example", 9000));
        ctx.broker
            .attach_cluster(Arc::new(FixedView(Arc::new(view))));
        let r = coordinator_of(&ctx, "g");
        assert_eq!(
            (r.error, r.node_id, r.host.as_str(), r.port),
            (ErrorCode::None, SINGLE_NODE_ID, "broker-0.example", 9000)
        );
        // The rule decides; a remote coordinator is named as the rule says.
        ctx.broker.set_group_coordinator(Box::new(|g| match g {
            "g" => GroupCoordinator::Remote {
                node_id: 4,
                host: "broker-4.example".into(),
                port: 9004,
            },
            _ => GroupCoordinator::Unavailable,
        }));
        let r = coordinator_of(&ctx, "g");
        assert_eq!(
            (r.error, r.node_id, r.host.as_str(), r.port),
            (ErrorCode::None, 4, "broker-4.example", 9004)
        );
        let r = coordinator_of(&ctx, "h");
        assert_eq!(
            (r.error, r.node_id, r.host.as_str(), r.port),
            (
                ErrorCode::CoordinatorNotAvailable,
                sluice_protocol::NO_COORDINATOR,
                "",
                0
            )
        );
        // An invalid group id is refused before the rule is asked.
        let r = coordinator_of(&ctx, "");
        assert_eq!(r.error, ErrorCode::InvalidGroupId);
    }

    fn results(o: Outcome) -> Vec<(String, ErrorCode)> {
        let topics = match o {
            Outcome::Respond(Response::CreatePartitions(r)) => r.topics,
            Outcome::Respond(Response::AlterConfigs(r)) => r.topics,
            _ => panic!("not answered at once"),
        };
        topics.into_iter().map(|t| (t.name, t.error)).collect()
    }

    fn config_of(ctx: &Context, topic: &str, key: &str) -> String {
        let d = ctx.broker.describe_topic(topic).unwrap();
        let pairs = d.config.to_pairs();
        let (_, v) = pairs.iter().find(|(k, _)| k == key).expect("key reported");
        v.clone()
    }

    #[test]
    fn single_node_grows_topics_and_alters_configs_per_topic() {
        use sluice_protocol::{AlterConfigsTopic, ConfigChange, CreatePartitionsTopic};
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_context(dir.path(), "127.0.0.1:1".parse().unwrap());
        ctx.broker.create_topic("t", 2, &[]).unwrap();
        ctx.broker.create_topic("u", 3, &[]).unwrap();
        let grow = |topics: &[(&str, u32)]| {
            Request::CreatePartitions(CreatePartitionsRequest {
                topics: topics
                    .iter()
                    .map(|(n, c)| CreatePartitionsTopic {
                        name: n.to_string(),
                        count: *c,
                    })
                    .collect(),
            })
        };
        let got = results(dispatch(
            &ctx,
            &test_header(ApiKey::CreatePartitions as u16),
            grow(&[
                ("t", 5),
                ("u", 2),
                ("missing", 4),
                ("__consumer_offsets", 9),
            ]),
        ));
        assert_eq!(
            got,
            vec![
                ("t".into(), ErrorCode::None),
                ("u".into(), ErrorCode::InvalidPartitions),
                ("missing".into(), ErrorCode::UnknownTopicOrPartition),
                (
                    "__consumer_offsets".into(),
                    ErrorCode::UnknownTopicOrPartition
                ),
            ]
        );
        assert_eq!(ctx.broker.describe_topic("t").unwrap().partitions.len(), 5);
        assert_eq!(ctx.broker.describe_topic("u").unwrap().partitions.len(), 3);
        assert_eq!(config_of(&ctx, "t", "partitions"), "5");

        let alter = |name: &str, changes: Vec<ConfigChange>| {
            Request::AlterConfigs(AlterConfigsRequest {
                topics: vec![AlterConfigsTopic {
                    name: name.to_string(),
                    changes,
                }],
            })
        };
        let h = test_header(ApiKey::AlterConfigs as u16);
        let ok = results(dispatch(
            &ctx,
            &h,
            alter("t", vec![ConfigChange::set("retention.ms", "60000")]),
        ));
        assert_eq!(ok, vec![("t".into(), ErrorCode::None)]);
        assert_eq!(config_of(&ctx, "t", "retention.ms"), "60000");
        for bad in [
            vec![
                ConfigChange::set("retention.ms", "1"),
                ConfigChange::set("bogus", "1"),
            ],
            vec![
                ConfigChange::delete("retention.ms"),
                ConfigChange::set("flush", "never"),
            ],
        ] {
            let got = results(dispatch(&ctx, &h, alter("t", bad)));
            assert_eq!(got, vec![("t".into(), ErrorCode::InvalidConfig)]);
            assert_eq!(config_of(&ctx, "t", "retention.ms"), "60000", "unchanged");
        }
        let got = results(dispatch(
            &ctx,
            &h,
            alter("t", vec![ConfigChange::delete("retention.ms")]),
        ));
        assert_eq!(got, vec![("t".into(), ErrorCode::None)]);
        assert_eq!(config_of(&ctx, "t", "retention.ms"), "-1");
        let got = results(dispatch(&ctx, &h, alter("missing", vec![])));
        assert_eq!(
            got,
            vec![("missing".into(), ErrorCode::UnknownTopicOrPartition)]
        );
    }

    /// Config changes of one topic, as forwarded.
    type Changes = (String, Vec<(String, Option<String>)>);

    /// A link that records what the handlers forward.
    #[derive(Default)]
    struct RecordingLink {
        grown: std::sync::Mutex<Vec<(String, u32)>>,
        altered: std::sync::Mutex<Vec<Changes>>,
    }

    impl crate::cluster::ClusterLink for RecordingLink {
        fn view(&self) -> Arc<ClusterView> {
            let topic = crate::cluster::ViewTopic {
                id: [1; 16],
                partitions: Vec::new(),
                config: Default::default(),
            };
            Arc::new(ClusterView {
                topics: [("t".to_string(), topic)].into(),
                ..ClusterView::default()
            })
        }
        fn controller(&self) -> ControllerInfo {
            ControllerInfo {
                leader: Some(0),
                epoch: 1,
            }
        }
        fn create_topic(&self, _: NewTopic) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("not in this test".into())) })
        }
        fn delete_topic(&self, _: String) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("not in this test".into())) })
        }
        fn add_partitions(
            &self,
            name: String,
            total: u32,
        ) -> BoxFuture<'static, Result<(), BrokerError>> {
            self.grown.lock().unwrap().push((name, total));
            Box::pin(async { Ok(()) })
        }
        fn alter_topic_config(
            &self,
            name: String,
            changes: Vec<(String, Option<String>)>,
        ) -> BoxFuture<'static, Result<(), BrokerError>> {
            self.altered.lock().unwrap().push((name, changes));
            Box::pin(async { Ok(()) })
        }
        fn allocate_producer_ids(&self, _: u64) -> BoxFuture<'static, Result<i64, BrokerError>> {
            Box::pin(async { Ok(0) })
        }
        fn commit_offsets(
            &self,
            _: String,
            _: Vec<crate::cluster::ReplicatedOffset>,
        ) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Ok(()) })
        }
        fn delete_group_offsets(&self, _: String) -> BoxFuture<'static, Result<(), BrokerError>> {
            Box::pin(async { Ok(()) })
        }
        fn security_command(
            &self,
            _: sluice_auth::store::SecurityCommand,
        ) -> BoxFuture<'static, Result<sluice_auth::store::SecurityOutcome, BrokerError>> {
            Box::pin(async { Err(BrokerError::Controller("not in these tests".into())) })
        }
        fn group_offsets(&self, _: &str) -> Vec<crate::cluster::ReplicatedOffset> {
            Vec::new()
        }
        fn reassign(
            &self,
            _: sluice_protocol::ReassignPartitionsRequest,
        ) -> BoxFuture<'static, Result<Vec<sluice_protocol::PartitionReplicas>, BrokerError>>
        {
            Box::pin(async { Err(BrokerError::Controller("not in these tests".into())) })
        }
    }

    #[tokio::test]
    async fn clustered_changes_go_through_the_link_after_the_checks() {
        use sluice_protocol::{AlterConfigsTopic, ConfigChange, CreatePartitionsTopic};
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_context(dir.path(), "127.0.0.1:1".parse().unwrap());
        let link = Arc::new(RecordingLink::default());
        ctx.broker.attach_cluster(link.clone());
        let deferred = |o: Outcome| match o {
            Outcome::Deferred(f) => f,
            _ => panic!("not deferred"),
        };
        let grow = Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: "t".into(),
                count: 7,
            }],
        });
        let h = test_header(ApiKey::CreatePartitions as u16);
        let Some(Response::CreatePartitions(r)) = deferred(dispatch(&ctx, &h, grow)).await else {
            panic!("no CreatePartitions answer");
        };
        assert_eq!(r.topics[0].error, ErrorCode::None);
        assert_eq!(*link.grown.lock().unwrap(), vec![("t".to_string(), 7)]);

        let alter = Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![
                AlterConfigsTopic {
                    name: "t".into(),
                    changes: vec![
                        ConfigChange::set("retention.ms", "1000"),
                        ConfigChange::delete("flush"),
                    ],
                },
                AlterConfigsTopic {
                    name: "t2".into(),
                    changes: vec![ConfigChange::set("retention.ms", "1000")],
                },
            ],
        });
        let h = test_header(ApiKey::AlterConfigs as u16);
        let Some(Response::AlterConfigs(r)) = deferred(dispatch(&ctx, &h, alter)).await else {
            panic!("no AlterConfigs answer");
        };
        let codes: Vec<ErrorCode> = r.topics.iter().map(|t| t.error).collect();
        assert_eq!(
            codes,
            vec![ErrorCode::None, ErrorCode::UnknownTopicOrPartition]
        );
        // An invalid change never reaches the controller.
        let bad = Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: "t".into(),
                changes: vec![ConfigChange::set("segment.bytes", "12")],
            }],
        });
        let Some(Response::AlterConfigs(r)) = deferred(dispatch(&ctx, &h, bad)).await else {
            panic!("no AlterConfigs answer");
        };
        assert_eq!(r.topics[0].error, ErrorCode::InvalidConfig);
        assert_eq!(
            *link.altered.lock().unwrap(),
            vec![(
                "t".to_string(),
                vec![
                    ("retention.ms".to_string(), Some("1000".to_string())),
                    ("flush".to_string(), None)
                ]
            )]
        );
    }

    fn test_header(api_key: u16) -> RequestHeader {
        RequestHeader {
            api_key,
            api_version: 0,
            correlation_id: 1,
            client_id: "c".into(),
        }
    }
}
