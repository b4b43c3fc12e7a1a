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
//! Behaviour choices (also what a Kafka user would expect):
//! - Metadata never creates topics; only Produce auto-creates (when
//!   `auto_create_topics` is on) with `default_partitions`. A requested topic
//!   with an invalid name gets `INVALID_TOPIC`, a missing one
//!   `UNKNOWN_TOPIC_OR_PARTITION`. The broker advertises the address the
//!   client connected to as its host/port.
//! - CreateTopics needs 1..=10000 partitions; names starting with `__` are
//!   reserved for internal topics (`INVALID_TOPIC`).
//! - Produce waits for an fsync before answering when `acks = durable` or when
//!   the topic's `flush` is `always` (then `acks = leader` waits too). With
//!   `acks = none` nothing is sent back, errors included (they are logged at
//!   debug level). `timeout_ms = 0` means the 30 s default.
//! - A Fetch answers at once when a partition errs; `OFFSET_OUT_OF_RANGE`
//!   carries the log's start and end offsets so the client can reposition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_protocol::{
    Acks, ApiKey, ApiVersionsResponse, BrokerInfo, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, ErrorCode, FetchPartitionResponse, FetchRequest,
    FetchResponse, FetchTopicResponse, ListOffsetsPartitionResponse, ListOffsetsRequest,
    ListOffsetsResponse, ListOffsetsTopicResponse, MetadataRequest, MetadataResponse,
    PartitionMetadata, ProducePartitionResponse, ProduceRequest, ProduceResponse,
    ProduceTopicResponse, Request, Response, TopicMetadata, TopicResult,
};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, FetchParams, FetchResult, FetchTarget, TopicDescription};
use crate::error::{chain, BrokerError};

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
    /// The address the client connected to (advertised in Metadata).
    pub local_addr: SocketAddr,
    /// Cancelled when the broker shuts down or the connection's reader ends
    /// (parked fetches then answer early).
    pub shutdown: CancellationToken,
}

/// A request handler.
pub type Handler = fn(&Context, Request) -> Outcome;

/// Every api the broker serves, with its handler.
pub const HANDLERS: &[(ApiKey, Handler)] = &[
    (ApiKey::ApiVersions, api_versions),
    (ApiKey::Metadata, metadata),
    (ApiKey::CreateTopics, create_topics),
    (ApiKey::DeleteTopics, delete_topics),
    (ApiKey::Produce, produce),
    (ApiKey::Fetch, fetch),
    (ApiKey::ListOffsets, list_offsets),
];

/// The handler of an api key, if the broker serves it.
pub fn handler_for(key: ApiKey) -> Option<Handler> {
    HANDLERS.iter().find(|(k, _)| *k == key).map(|(_, h)| *h)
}

/// Dispatches a decoded request.
pub fn dispatch(ctx: &Context, api_key: u16, request: Request) -> Outcome {
    match ApiKey::from_u16(api_key).and_then(handler_for) {
        Some(h) => h(ctx, request),
        None => Outcome::Respond(Response::Error(ErrorCode::UnknownApi)),
    }
}

/// The decoder produced a body that does not belong to the api key.
fn mismatched() -> Outcome {
    Outcome::Respond(Response::Error(ErrorCode::InvalidRequest))
}

fn api_versions(_ctx: &Context, req: Request) -> Outcome {
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
                error: ErrorCode::None,
                leader: 0,
                start_offset: p.start_offset,
                end_offset: p.end_offset,
                size_bytes: p.size_bytes,
            })
            .collect(),
        name: d.name,
    }
}

fn metadata(ctx: &Context, req: Request) -> Outcome {
    let Request::Metadata(MetadataRequest { topics }) = req else {
        return mismatched();
    };
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
            node_id: 0,
            host: ctx.local_addr.ip().to_string(),
            port: ctx.local_addr.port(),
        }],
        topics: described,
    }))
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

fn create_topics(ctx: &Context, req: Request) -> Outcome {
    let Request::CreateTopics(CreateTopicsRequest { topics }) = req else {
        return mismatched();
    };
    let topics = topics
        .into_iter()
        .map(|t| {
            let r = ctx.broker.create_topic(&t.name, t.partitions, &t.configs);
            topic_result(t.name, r)
        })
        .collect();
    Outcome::Respond(Response::CreateTopics(CreateTopicsResponse { topics }))
}

fn delete_topics(ctx: &Context, req: Request) -> Outcome {
    let Request::DeleteTopics(DeleteTopicsRequest { topics }) = req else {
        return mismatched();
    };
    let topics = topics
        .into_iter()
        .map(|name| {
            let r = ctx.broker.delete_topic(&name);
            topic_result(name, r)
        })
        .collect();
    Outcome::Respond(Response::DeleteTopics(DeleteTopicsResponse { topics }))
}

fn partition_response(
    partition: u32,
    r: Result<sluice_log::AppendInfo, BrokerError>,
) -> ProducePartitionResponse {
    match r {
        Ok(info) => ProducePartitionResponse {
            partition,
            error: ErrorCode::None,
            base_offset: info.base_offset,
            last_offset: info.last_offset,
        },
        Err(e) => {
            tracing::debug!(partition, error = %chain(&e), "produce failed");
            ProducePartitionResponse {
                partition,
                error: e.code(),
                base_offset: 0,
                last_offset: 0,
            }
        }
    }
}

fn produce(ctx: &Context, req: Request) -> Outcome {
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
    for t in topics {
        let parts: Vec<_> = t
            .partitions
            .into_iter()
            .map(|p| {
                let r = ctx.broker.append(&t.name, p.partition, &p.records, acks);
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
    Outcome::Deferred(Box::pin(async move {
        let mut topics = Vec::with_capacity(appended.len());
        for (name, parts) in appended {
            let mut partitions = Vec::with_capacity(parts.len());
            for (p, r) in parts {
                let r = match r {
                    Ok(a) => a.durable(timeout).await,
                    Err(e) => Err(e),
                };
                partitions.push(partition_response(p, r));
            }
            topics.push(ProduceTopicResponse { name, partitions });
        }
        (acks != Acks::None).then_some(Response::Produce(ProduceResponse { topics }))
    }))
}

/// Regroups flat fetch results into the request's topic structure.
fn fetch_response(shape: Vec<(String, Vec<u32>)>, results: Vec<FetchResult>) -> Response {
    let mut results = results.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| FetchTopicResponse {
            name,
            partitions: parts
                .into_iter()
                .map(|partition| match results.next() {
                    Some(Ok(d)) => FetchPartitionResponse {
                        partition,
                        error: ErrorCode::None,
                        high_watermark: d.high_watermark,
                        log_start_offset: d.log_start_offset,
                        records: d.records,
                    },
                    Some(Err(e)) => {
                        let (log_start_offset, high_watermark) = e.offset_range().unwrap_or((0, 0));
                        FetchPartitionResponse {
                            partition,
                            error: e.code(),
                            high_watermark,
                            log_start_offset,
                            records: bytes::Bytes::new(),
                        }
                    }
                    None => FetchPartitionResponse {
                        partition,
                        error: ErrorCode::Unknown,
                        high_watermark: 0,
                        log_start_offset: 0,
                        records: bytes::Bytes::new(),
                    },
                })
                .collect(),
        })
        .collect();
    Response::Fetch(FetchResponse { topics })
}

fn fetch(ctx: &Context, req: Request) -> Outcome {
    let Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes,
        topics,
    }) = req
    else {
        return mismatched();
    };
    let mut shape = Vec::with_capacity(topics.len());
    let mut targets = Vec::new();
    for t in topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            parts.push(p.partition);
            targets.push(FetchTarget {
                topic: t.name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.max_bytes as usize,
            });
        }
        shape.push((t.name, parts));
    }
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

fn list_offsets(ctx: &Context, req: Request) -> Outcome {
    let Request::ListOffsets(ListOffsetsRequest { topics }) = req else {
        return mismatched();
    };
    let topics = topics
        .into_iter()
        .map(|t| ListOffsetsTopicResponse {
            partitions: t
                .partitions
                .into_iter()
                .map(
                    |p| match ctx.broker.list_offset(&t.name, p.partition, p.spec) {
                        Ok((offset, timestamp)) => ListOffsetsPartitionResponse {
                            partition: p.partition,
                            error: ErrorCode::None,
                            offset,
                            timestamp,
                        },
                        Err(e) => ListOffsetsPartitionResponse {
                            partition: p.partition,
                            error: e.code(),
                            offset: 0,
                            timestamp: -1,
                        },
                    },
                )
                .collect(),
            name: t.name,
        })
        .collect();
    Outcome::Respond(Response::ListOffsets(ListOffsetsResponse { topics }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
        let cfg = crate::config::ConfigLayer {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let ctx = Context {
            broker: Arc::new(Broker::open(&cfg, crate::metrics::Metrics::new()).unwrap()),
            local_addr: "127.0.0.1:1".parse().unwrap(),
            shutdown: CancellationToken::new(),
        };
        for (k, h) in HANDLERS {
            if *k == ApiKey::ApiVersions {
                continue;
            }
            match h(&ctx, Request::ApiVersions) {
                Outcome::Respond(Response::Error(ErrorCode::InvalidRequest)) => {}
                _ => panic!("{k:?} accepted an ApiVersions body"),
            }
        }
        match dispatch(&ctx, 999, Request::ApiVersions) {
            Outcome::Respond(Response::Error(ErrorCode::UnknownApi)) => {}
            _ => panic!("unknown api key not rejected"),
        }
        match dispatch(&ctx, ApiKey::ApiVersions as u16, Request::ApiVersions) {
            Outcome::Respond(Response::ApiVersions(v)) => assert!(!v.apis.is_empty()),
            _ => panic!("ApiVersions not answered"),
        }
    }
}
