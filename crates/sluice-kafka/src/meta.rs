//! Cluster and topic apis: ApiVersions, Metadata, DescribeCluster,
//! FindCoordinator, CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, IncrementalAlterConfigs.
//!
//! - Brokers are listed with their Kafka listener addresses (each broker
//!   registers its advertised Kafka address with the controller); a broker
//!   that runs alone is node 0 at `--kafka-advertise`, or at the address the
//!   client connected to.
//! - Metadata reports each partition's leader, leader epoch, replicas, isr
//!   and offline replicas from the cluster metadata, the topic id (a UUID
//!   made at creation), and auto-creates a missing topic when the broker
//!   auto-creates topics and the request allows it (v4+; always before v4),
//!   answering `LEADER_NOT_AVAILABLE` for it until it exists, as Kafka does.
//!   While produce is refused for disk space (`disk_min_free_bytes`) the
//!   topic is not created and gets `KAFKA_STORAGE_ERROR`.
//! - DescribeConfigs lists a topic's effective config (overridden keys as
//!   `DYNAMIC_TOPIC_CONFIG`, the rest as `DEFAULT_CONFIG`) plus Kafka's
//!   `cleanup.policy=delete` (Sluice has no compaction) and
//!   `max.message.bytes`; IncrementalAlterConfigs SET and DELETE map onto the
//!   native AlterConfigs (APPEND/SUBTRACT, for list-valued keys, are
//!   `INVALID_CONFIG`: Sluice has none).

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::handler::{handler_for, Outcome};
use sluice_broker::GroupCoordinator;
use sluice_protocol as native;
use uuid::Uuid;

use crate::api::{Req, SERVED};
use crate::codes::{kafka, to_kafka};
use crate::{frame, KafkaContext, KafkaError, Reply};

/// A `StrBytes` holding a copy of `s`.
pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A topic name for a response.
pub(crate) fn tn(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// Node id for the Kafka wire (`NO_LEADER` and other out-of-range ids are -1).
pub(crate) fn node(id: u32) -> BrokerId {
    BrokerId(i32::try_from(id).unwrap_or(-1))
}

/// Where Kafka clients reach node `id`: its registered Kafka address, or
/// for this broker alone, the advertised or connected address.
pub(crate) fn kafka_addr(ctx: &KafkaContext, id: u32) -> Option<(String, u16)> {
    if let Some(view) = ctx.core.broker.cluster_view() {
        return view.brokers.get(&id).and_then(|b| b.kafka.clone());
    }
    (id == ctx.core.broker.node_id()).then(|| self_addr(ctx))
}

/// This broker's own Kafka address for a client.
pub(crate) fn self_addr(ctx: &KafkaContext) -> (String, u16) {
    ctx.advertised.clone().unwrap_or_else(|| {
        (
            ctx.core.local_addr.ip().to_string(),
            ctx.core.local_addr.port(),
        )
    })
}

/// A topic's id, or the nil UUID when it has none here.
pub(crate) fn topic_id(ctx: &KafkaContext, name: &str) -> Uuid {
    if let Some(view) = ctx.core.broker.cluster_view() {
        if let Some(t) = view.topics.get(name) {
            return Uuid::from_bytes(t.id);
        }
    }
    ctx.core
        .broker
        .topics()
        .get(name)
        .and_then(|t| {
            t.meta()
                .id
                .as_deref()
                .and_then(sluice_broker::topic_meta::parse_topic_id)
        })
        .map_or(Uuid::nil(), Uuid::from_bytes)
}

/// The name of the topic with id `id`, if one is known here.
pub(crate) fn topic_name_of(ctx: &KafkaContext, id: Uuid) -> Option<String> {
    if id.is_nil() {
        return None;
    }
    if let Some(view) = ctx.core.broker.cluster_view() {
        if let Some((name, _)) = view.topics.iter().find(|(_, t)| t.id == *id.as_bytes()) {
            return Some(name.clone());
        }
    }
    ctx.core
        .broker
        .topics()
        .list()
        .into_iter()
        .find(|t| {
            t.meta()
                .id
                .as_deref()
                .and_then(sluice_broker::topic_meta::parse_topic_id)
                == Some(*id.as_bytes())
        })
        .map(|t| t.name().to_string())
}

/// Runs the native handler of `key` on `request`.
pub(crate) fn native_call(req: &Req<'_>, key: native::ApiKey, request: native::Request) -> Outcome {
    match handler_for(key) {
        Some(h) => h(&req.ctx.core, &req.header.client_id, request),
        None => Outcome::Respond(native::Response::Error(native::ErrorCode::UnknownApi)),
    }
}

/// Turns a native outcome into a reply, mapping the native response with `map`.
pub(crate) fn finish<R, F>(
    req: &Req<'_>,
    api: &'static str,
    out: Outcome,
    map: F,
) -> Result<Reply, KafkaError>
where
    R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
    F: FnOnce(native::Response) -> R + Send + 'static,
{
    match out {
        Outcome::Respond(r) => req.respond(api, &map(r)),
        Outcome::NoResponse => Ok(Reply::Nothing),
        Outcome::Deferred(fut) => {
            let enc = req.later::<R>(api);
            Ok(Reply::Later(Box::pin(async move {
                let r = fut.await?;
                enc(&map(r))
            })))
        }
    }
}

/// The advertised api ranges.
fn api_keys() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect()
}

/// ApiVersions of a version we do not serve: error 35 in a v0 body.
pub(crate) fn api_versions_unsupported(correlation_id: i32) -> Result<Vec<Bytes>, KafkaError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(kafka::UNSUPPORTED_VERSION)
        .with_api_keys(api_keys());
    frame("ApiVersions", correlation_id, 0, &body)
}

pub(crate) fn api_versions(req: &Req<'_>, _r: ApiVersionsRequest) -> Result<Reply, KafkaError> {
    let body = ApiVersionsResponse::default().with_api_keys(api_keys());
    req.respond("ApiVersions", &body)
}

pub(crate) fn metadata(req: &Req<'_>, r: MetadataRequest) -> Result<Reply, KafkaError> {
    let ctx = req.ctx;
    let v = req.version();
    // Requested names; `None` = every topic. Ids (v10+) resolve to names.
    let mut unknown_ids = Vec::new();
    // Topics asked for by id: a refusal must not tell their names.
    let mut by_id: Vec<(String, Uuid)> = Vec::new();
    let wanted: Option<Vec<String>> = match r.topics {
        None => None,
        Some(ts) if v == 0 && ts.is_empty() => None,
        Some(ts) => Some(
            ts.into_iter()
                .filter_map(|t| match t.name {
                    Some(n) => Some(n.0.to_string()),
                    None => match topic_name_of(ctx, t.topic_id) {
                        Some(n) => {
                            by_id.push((n.clone(), t.topic_id));
                            Some(n)
                        }
                        None => {
                            unknown_ids.push(t.topic_id);
                            None
                        }
                    },
                })
                .collect(),
        ),
    };
    let auto_create =
        (v < 4 || r.allow_auto_topic_creation) && ctx.core.broker.auto_creates_topics();
    // An empty list (v1+) asks for brokers only: name one topic that cannot
    // exist, then drop it from the answer.
    let ask = match &wanted {
        None => Vec::new(),
        Some(w) if w.is_empty() => vec![String::from("\0")],
        Some(w) => w.clone(),
    };
    let out = native_call(
        req,
        native::ApiKey::Metadata,
        native::Request::Metadata(native::MetadataRequest { topics: ask }),
    );
    let Outcome::Respond(native::Response::Metadata(m)) = out else {
        return Err(KafkaError::Encode {
            api: "Metadata",
            version: v,
            reason: "the core answered Metadata with something else".into(),
        });
    };
    let view = ctx.core.broker.cluster_view();
    let alive = |id: u32| view.as_ref().is_none_or(|vw| vw.is_alive(id));
    let brokers: Vec<MetadataResponseBroker> = m
        .brokers
        .iter()
        .filter_map(|b| {
            let (host, port) = kafka_addr(ctx, b.node_id)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(node(b.node_id))
                    .with_host(sb(&host))
                    .with_port(i32::from(port))
                    .with_rack(b.rack.as_deref().map(sb)),
            )
        })
        .collect();
    let mut topics = Vec::with_capacity(m.topics.len());
    for t in m.topics {
        if wanted.as_ref().is_some_and(|w| w.is_empty()) {
            break;
        }
        // Topics the principal may not describe: left out of an all-topics
        // answer, refused when named (and never auto-created).
        if !crate::auth::may_describe_topic(req, &t.name) {
            if wanted.is_some() {
                let refused = MetadataResponseTopic::default()
                    .with_error_code(crate::auth::TOPIC_AUTHORIZATION_FAILED);
                // Asked by id: answered by id, the name untold (as Kafka).
                topics.push(match by_id.iter().find(|(n, _)| *n == t.name) {
                    Some((_, id)) => refused.with_name(None).with_topic_id(*id),
                    None => refused.with_name(Some(tn(&t.name))),
                });
            }
            continue;
        }
        let mut error = to_kafka(t.error);
        if error == kafka::UNKNOWN_TOPIC_OR_PARTITION
            && auto_create
            && crate::auth::may_create_topic(req, &t.name)
        {
            error = match auto_create_topic(req, &t.name) {
                Ok(()) => kafka::LEADER_NOT_AVAILABLE,
                Err(code) => code,
            };
        }
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let mut mp = MetadataResponsePartition::default()
                    .with_error_code(to_kafka(p.error))
                    .with_partition_index(i32::try_from(p.partition).unwrap_or(i32::MAX))
                    .with_leader_id(node(p.leader))
                    .with_replica_nodes(p.replicas.iter().map(|r| node(*r)).collect())
                    .with_isr_nodes(p.isr.iter().map(|r| node(*r)).collect());
                if v >= 7 {
                    mp.leader_epoch = i32::try_from(p.leader_epoch).unwrap_or(i32::MAX);
                }
                if v >= 5 {
                    mp.offline_replicas = p
                        .replicas
                        .iter()
                        .filter(|r| !alive(**r))
                        .map(|r| node(*r))
                        .collect();
                }
                mp
            })
            .collect();
        let mut mt = MetadataResponseTopic::default()
            .with_error_code(error)
            .with_name(Some(tn(&t.name)))
            .with_partitions(partitions);
        if v >= 10 {
            mt.topic_id = topic_id(ctx, &t.name);
        }
        topics.push(mt);
    }
    for id in unknown_ids {
        topics.push(
            MetadataResponseTopic::default()
                .with_error_code(kafka::UNKNOWN_TOPIC_ID)
                .with_topic_id(id),
        );
    }
    let mut body = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if v >= 1 {
        body.controller_id = BrokerId(m.controller_id);
    }
    if v >= 2 {
        body.cluster_id = Some(sb(&m.cluster_id));
    }
    req.respond("Metadata", &body)
}

/// Starts creating `name` with the broker defaults (answered later by a
/// Metadata refresh); the Kafka code to report meanwhile on failure.
fn auto_create_topic(req: &Req<'_>, name: &str) -> Result<(), i16> {
    if sluice_broker::topic_meta::validate_topic_name(name).is_err() || name.starts_with("__") {
        return Err(kafka::INVALID_TOPIC_EXCEPTION);
    }
    // Produce is refused for disk space: so is the topic it would create.
    if req.ctx.core.broker.disk_space().is_low() {
        return Err(kafka::KAFKA_STORAGE_ERROR);
    }
    let out = native_call(
        req,
        native::ApiKey::CreateTopics,
        native::Request::CreateTopics(native::CreateTopicsRequest {
            topics: vec![native::CreateTopic {
                name: name.to_string(),
                partitions: req.ctx.core.broker.default_partitions(),
                replication_factor: -1,
                configs: Vec::new(),
            }],
        }),
    );
    let first_error = |r: native::Response| match r {
        native::Response::CreateTopics(c) => c
            .topics
            .first()
            .map_or(native::ErrorCode::None, |t| t.error),
        _ => native::ErrorCode::Unknown,
    };
    match out {
        Outcome::Respond(r) => match first_error(r) {
            native::ErrorCode::None | native::ErrorCode::TopicAlreadyExists => Ok(()),
            e => Err(to_kafka(e)),
        },
        Outcome::Deferred(fut) => {
            let topic = name.to_string();
            tokio::spawn(async move {
                if let Some(r) = fut.await {
                    let e = first_error(r);
                    if e != native::ErrorCode::None && e != native::ErrorCode::TopicAlreadyExists {
                        tracing::info!(topic, error = ?e, "auto-creating a topic for a Kafka client failed");
                    }
                }
            });
            Ok(())
        }
        Outcome::NoResponse => Ok(()),
    }
}

pub(crate) fn describe_cluster(
    req: &Req<'_>,
    _r: DescribeClusterRequest,
) -> Result<Reply, KafkaError> {
    let ctx = req.ctx.clone();
    let out = native_call(
        req,
        native::ApiKey::DescribeCluster,
        native::Request::DescribeCluster,
    );
    finish(req, "DescribeCluster", out, move |r| {
        let native::Response::DescribeCluster(d) = r else {
            return DescribeClusterResponse::default().with_error_code(kafka::UNKNOWN_SERVER_ERROR);
        };
        let brokers = d
            .brokers
            .iter()
            .filter(|b| b.alive)
            .filter_map(|b| {
                let (host, port) = kafka_addr(&ctx, b.node_id)?;
                Some(
                    DescribeClusterBroker::default()
                        .with_broker_id(node(b.node_id))
                        .with_host(sb(&host))
                        .with_port(i32::from(port))
                        .with_rack(b.rack.as_deref().map(sb)),
                )
            })
            .collect();
        DescribeClusterResponse::default()
            .with_error_code(to_kafka(d.error))
            .with_cluster_id(sb(&d.cluster_id))
            .with_controller_id(BrokerId(d.controller_id))
            .with_brokers(brokers)
    })
}

/// Key type of a transactional coordinator lookup.
const KEY_TYPE_TRANSACTION: i8 = 1;

pub(crate) fn find_coordinator(
    req: &Req<'_>,
    r: FindCoordinatorRequest,
) -> Result<Reply, KafkaError> {
    let v = req.version();
    let keys: Vec<StrBytes> = if v >= 4 {
        r.coordinator_keys.clone()
    } else {
        vec![r.key.clone()]
    };
    let ctx = req.ctx;
    let lookup = |key: &StrBytes| -> Coordinator {
        let mut c = Coordinator::default().with_key(key.clone());
        if r.key_type == KEY_TYPE_TRANSACTION {
            return c
                .with_error_code(kafka::INVALID_REQUEST)
                .with_error_message(Some(StrBytes::from_static_str(
                    "Sluice does not serve transactions",
                )))
                .with_node_id(BrokerId(-1));
        }
        if sluice_group::error::validate_group_id(key).is_err() {
            return c
                .with_error_code(kafka::INVALID_GROUP_ID)
                .with_node_id(BrokerId(-1));
        }
        let target = match ctx.core.broker.group_coordinator(key) {
            GroupCoordinator::Local => Some(ctx.core.broker.node_id()),
            GroupCoordinator::Remote { node_id, .. } => Some(node_id),
            GroupCoordinator::Unavailable => None,
        };
        match target.and_then(|id| Some((id, kafka_addr(ctx, id)?))) {
            Some((id, (host, port))) => {
                c.node_id = node(id);
                c.host = sb(&host);
                c.port = i32::from(port);
                c
            }
            None => {
                c.error_code = kafka::COORDINATOR_NOT_AVAILABLE;
                c.node_id = BrokerId(-1);
                c
            }
        }
    };
    let found: Vec<Coordinator> = keys.iter().map(lookup).collect();
    let mut body = FindCoordinatorResponse::default();
    if v >= 4 {
        body.coordinators = found;
    } else if let Some(c) = found.into_iter().next() {
        body.error_code = c.error_code;
        body.node_id = c.node_id;
        body.host = c.host;
        body.port = c.port;
        if v >= 1 {
            body.error_message = c.error_message;
        }
    }
    req.respond("FindCoordinator", &body)
}

pub(crate) fn create_topics(req: &Req<'_>, r: CreateTopicsRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    // Refused before the core sees them: explicit replica assignments.
    let mut early: Vec<CreatableTopicResult> = Vec::new();
    let mut topics = Vec::new();
    for t in r.topics {
        let name = t.name.0.to_string();
        if !t.assignments.is_empty() {
            early.push(
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(kafka::INVALID_REPLICA_ASSIGNMENT)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Sluice places replicas itself; use sluice topic reassign after creating",
                    ))),
            );
            continue;
        }
        let partitions = if t.num_partitions == -1 {
            req.ctx.core.broker.default_partitions()
        } else {
            u32::try_from(t.num_partitions).unwrap_or(0)
        };
        topics.push(native::CreateTopic {
            name,
            partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .into_iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.map(|v| v.to_string()).unwrap_or_default(),
                    )
                })
                .collect(),
        });
    }
    if r.validate_only {
        // Nothing is created; every topic that passed the early checks is reported fine.
        let mut results = early;
        results.extend(topics.iter().map(|t| {
            CreatableTopicResult::default()
                .with_name(tn(&t.name))
                .with_num_partitions(i32::try_from(t.partitions).unwrap_or(-1))
                .with_replication_factor(t.replication_factor)
        }));
        return req.respond(
            "CreateTopics",
            &CreateTopicsResponse::default().with_topics(results),
        );
    }
    let counts: Vec<(String, u32, i16)> = topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions, t.replication_factor))
        .collect();
    let ctx = req.ctx.clone();
    let out = native_call(
        req,
        native::ApiKey::CreateTopics,
        native::Request::CreateTopics(native::CreateTopicsRequest { topics }),
    );
    finish(req, "CreateTopics", out, move |resp| {
        let mut results = early;
        if let native::Response::CreateTopics(c) = resp {
            for t in c.topics {
                let mut res = CreatableTopicResult::default()
                    .with_name(tn(&t.name))
                    .with_error_code(to_kafka(t.error));
                if v >= 1 && !t.message.is_empty() {
                    res.error_message = Some(sb(&t.message));
                }
                if v >= 5 {
                    let (n, rf) = counts
                        .iter()
                        .find(|(name, _, _)| *name == t.name)
                        .map_or((-1, -1), |(_, n, rf)| {
                            (i32::try_from(*n).unwrap_or(-1), *rf)
                        });
                    res.num_partitions = if t.error == native::ErrorCode::None {
                        n
                    } else {
                        -1
                    };
                    res.replication_factor = if t.error == native::ErrorCode::None {
                        if rf == -1 {
                            replication_factor_of(&ctx, &t.name)
                        } else {
                            rf
                        }
                    } else {
                        -1
                    };
                }
                if v >= 7 && t.error == native::ErrorCode::None {
                    res.topic_id = topic_id(&ctx, &t.name);
                }
                results.push(res);
            }
        }
        CreateTopicsResponse::default().with_topics(results)
    })
}

/// A topic's replica count from the cluster metadata (1 when alone).
fn replication_factor_of(ctx: &KafkaContext, name: &str) -> i16 {
    ctx.core
        .broker
        .cluster_view()
        .and_then(|v| {
            v.topics
                .get(name)
                .and_then(|t| t.partitions.first())
                .map(|p| i16::try_from(p.replicas.len()).unwrap_or(-1))
        })
        .unwrap_or(1)
}

pub(crate) fn delete_topics(req: &Req<'_>, r: DeleteTopicsRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let mut unknown_ids = Vec::new();
    let names: Vec<String> = if v >= 6 {
        r.topics
            .into_iter()
            .filter_map(|t| match t.name {
                Some(n) => Some(n.0.to_string()),
                None => match topic_name_of(req.ctx, t.topic_id) {
                    Some(n) => Some(n),
                    None => {
                        unknown_ids.push(t.topic_id);
                        None
                    }
                },
            })
            .collect()
    } else {
        r.topic_names.into_iter().map(|n| n.0.to_string()).collect()
    };
    let ids: Vec<(String, Uuid)> = names
        .iter()
        .map(|n| (n.clone(), topic_id(req.ctx, n)))
        .collect();
    let out = native_call(
        req,
        native::ApiKey::DeleteTopics,
        native::Request::DeleteTopics(native::DeleteTopicsRequest { topics: names }),
    );
    finish(req, "DeleteTopics", out, move |resp| {
        let mut results = Vec::new();
        if let native::Response::DeleteTopics(d) = resp {
            for t in d.topics {
                let mut res = DeletableTopicResult::default()
                    .with_name(Some(tn(&t.name)))
                    .with_error_code(to_kafka(t.error));
                if v >= 5 && !t.message.is_empty() {
                    res.error_message = Some(sb(&t.message));
                }
                if v >= 6 {
                    res.topic_id = ids
                        .iter()
                        .find(|(n, _)| *n == t.name)
                        .map_or(Uuid::nil(), |(_, id)| *id);
                }
                results.push(res);
            }
        }
        for id in unknown_ids {
            results.push(
                DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_error_code(kafka::UNKNOWN_TOPIC_ID),
            );
        }
        DeleteTopicsResponse::default().with_responses(results)
    })
}

pub(crate) fn create_partitions(
    req: &Req<'_>,
    r: CreatePartitionsRequest,
) -> Result<Reply, KafkaError> {
    let mut early = Vec::new();
    let mut topics = Vec::new();
    for t in r.topics {
        if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            early.push(
                CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(kafka::INVALID_REPLICA_ASSIGNMENT)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Sluice places replicas itself",
                    ))),
            );
            continue;
        }
        topics.push(native::CreatePartitionsTopic {
            name: t.name.0.to_string(),
            count: u32::try_from(t.count).unwrap_or(0),
        });
    }
    if r.validate_only {
        let mut results = early;
        results.extend(
            topics
                .iter()
                .map(|t| CreatePartitionsTopicResult::default().with_name(tn(&t.name))),
        );
        return req.respond(
            "CreatePartitions",
            &CreatePartitionsResponse::default().with_results(results),
        );
    }
    let out = native_call(
        req,
        native::ApiKey::CreatePartitions,
        native::Request::CreatePartitions(native::CreatePartitionsRequest { topics }),
    );
    finish(req, "CreatePartitions", out, move |resp| {
        let mut results = early;
        if let native::Response::CreatePartitions(c) = resp {
            results.extend(c.topics.into_iter().map(|t| {
                CreatePartitionsTopicResult::default()
                    .with_name(tn(&t.name))
                    .with_error_code(to_kafka(t.error))
                    .with_error_message((!t.message.is_empty()).then(|| sb(&t.message)))
            }));
        }
        CreatePartitionsResponse::default().with_results(results)
    })
}

/// Resource type of a topic in the config apis.
const RESOURCE_TOPIC: i8 = 2;
/// Resource type of a broker in the config apis.
const RESOURCE_BROKER: i8 = 4;
/// `config_source` of a topic override.
const SOURCE_TOPIC: i8 = 1;
/// `config_source` of a default.
const SOURCE_DEFAULT: i8 = 5;

pub(crate) fn describe_configs(
    req: &Req<'_>,
    r: DescribeConfigsRequest,
) -> Result<Reply, KafkaError> {
    let v = req.version();
    let broker = &req.ctx.core.broker;
    let mut results = Vec::with_capacity(r.resources.len());
    for res in r.resources {
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let wanted = |k: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|w| &**w == k))
        };
        match res.resource_type {
            RESOURCE_TOPIC => {
                let name = res.resource_name.to_string();
                let (pairs, overridden): (Vec<(String, String)>, Vec<String>) =
                    match broker.topics().get(&name) {
                        Some(t) => (
                            t.config().to_pairs(),
                            t.meta()
                                .overrides
                                .keys()
                                .into_iter()
                                .map(str::to_string)
                                .collect(),
                        ),
                        None => match broker
                            .cluster_view()
                            .and_then(|vw| vw.topics.get(&name).cloned())
                        {
                            Some(t) => (
                                t.config.clone().into_iter().collect(),
                                t.config.keys().cloned().collect(),
                            ),
                            None => {
                                out.error_code = kafka::UNKNOWN_TOPIC_OR_PARTITION;
                                results.push(out);
                                continue;
                            }
                        },
                    };
                let mut all = pairs;
                all.push(("cleanup.policy".into(), "delete".into()));
                if !all.iter().any(|(k, _)| k == "max.message.bytes") {
                    let max = broker
                        .topics()
                        .get(&name)
                        .map_or(broker.topics().defaults().max_batch_bytes, |t| {
                            t.config().max_batch_bytes
                        });
                    all.push(("max.message.bytes".into(), max.to_string()));
                }
                for (k, val) in all {
                    if !wanted(&k) {
                        continue;
                    }
                    let is_override = overridden.contains(&k);
                    let mut c = DescribeConfigsResourceResult::default()
                        .with_name(sb(&k))
                        .with_value(Some(sb(&val)));
                    if v == 0 {
                        c.is_default = !is_override;
                    } else {
                        c.config_source = if is_override {
                            SOURCE_TOPIC
                        } else {
                            SOURCE_DEFAULT
                        };
                    }
                    out.configs.push(c);
                }
            }
            RESOURCE_BROKER => {
                let d = broker.topics().defaults();
                let pairs = [
                    ("num.partitions", broker.default_partitions().to_string()),
                    (
                        "auto.create.topics.enable",
                        broker.auto_creates_topics().to_string(),
                    ),
                    ("message.max.bytes", d.max_batch_bytes.to_string()),
                    ("log.segment.bytes", d.segment_bytes.to_string()),
                    (
                        "log.retention.ms",
                        d.retention_ms.map_or("-1".to_string(), |ms| ms.to_string()),
                    ),
                ];
                for (k, val) in pairs {
                    if wanted(k) {
                        let mut c = DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(k))
                            .with_value(Some(sb(&val)))
                            .with_read_only(true);
                        if v == 0 {
                            c.is_default = true;
                        } else {
                            c.config_source = SOURCE_DEFAULT;
                        }
                        out.configs.push(c);
                    }
                }
            }
            _ => {
                out.error_code = kafka::INVALID_REQUEST;
                out.error_message = Some(StrBytes::from_static_str(
                    "only topic and broker configs are described",
                ));
            }
        }
        results.push(out);
    }
    req.respond(
        "DescribeConfigs",
        &DescribeConfigsResponse::default().with_results(results),
    )
}

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub(crate) fn incremental_alter_configs(
    req: &Req<'_>,
    r: IncrementalAlterConfigsRequest,
) -> Result<Reply, KafkaError> {
    let mut early = Vec::new();
    let mut topics = Vec::new();
    for res in r.resources {
        let fail = |msg: &'static str, code| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone())
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_static_str(msg)))
        };
        if res.resource_type != RESOURCE_TOPIC {
            early.push(fail(
                "only topic configs can be altered",
                kafka::INVALID_REQUEST,
            ));
            continue;
        }
        let mut changes = Vec::new();
        let mut bad = false;
        for c in &res.configs {
            match c.config_operation {
                OP_SET => changes.push(native::ConfigChange {
                    key: c.name.to_string(),
                    value: Some(c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()),
                }),
                OP_DELETE => changes.push(native::ConfigChange {
                    key: c.name.to_string(),
                    value: None,
                }),
                _ => bad = true,
            }
        }
        if bad {
            early.push(fail(
                "APPEND and SUBTRACT need list-valued keys; Sluice has none",
                kafka::INVALID_CONFIG,
            ));
            continue;
        }
        if r.validate_only {
            early.push(
                AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone()),
            );
            continue;
        }
        topics.push(native::AlterConfigsTopic {
            name: res.resource_name.to_string(),
            changes,
        });
    }
    if topics.is_empty() {
        return req.respond(
            "IncrementalAlterConfigs",
            &IncrementalAlterConfigsResponse::default().with_responses(early),
        );
    }
    let out = native_call(
        req,
        native::ApiKey::AlterConfigs,
        native::Request::AlterConfigs(native::AlterConfigsRequest { topics }),
    );
    finish(req, "IncrementalAlterConfigs", out, move |resp| {
        let mut results = early;
        if let native::Response::AlterConfigs(a) = resp {
            results.extend(a.topics.into_iter().map(|t| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(sb(&t.name))
                    .with_error_code(to_kafka(t.error))
                    .with_error_message((!t.message.is_empty()).then(|| sb(&t.message)))
            }));
        }
        IncrementalAlterConfigsResponse::default().with_responses(results)
    })
}
