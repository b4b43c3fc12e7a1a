//! Produce, ListOffsets, InitProducerId and DeleteRecords.
//!
//! - Produce maps `acks` onto the core: `0` -> none (no response at all),
//!   `1` -> leader (answered after the leader's append), `-1` (all) ->
//!   durable (answered once a majority of the replicas has the batch
//!   fsynced, as Redpanda does); anything else is `INVALID_REQUIRED_ACKS`.
//!   Batches are stored verbatim (base offset and leader epoch stamped), so
//!   compressed batches stay compressed. Idempotent batches are
//!   sequence-checked by the core: a retried duplicate gets its original
//!   base offset, a gap `OUT_OF_ORDER_SEQUENCE_NUMBER`. Versions 0 to 2
//!   (message formats before RecordBatch v2) get `UNSUPPORTED_VERSION`, and
//!   a transactional produce `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`.
//! - ListOffsets: `-2` earliest (log start), `-1` latest (the high
//!   watermark, the same as Fetch reports), `-3` max timestamp (the record
//!   holding the largest timestamp, as KIP-734: its batch is found by a
//!   binary search over the time index, then read), `-4` earliest local (= earliest: no
//!   tiered storage), `-5` latest tiered (-1: nothing is tiered); a
//!   timestamp: the core finds the first batch whose max timestamp reaches
//!   it, then the batch is read (decompressed if need be) for the first
//!   record at or after it, whose offset and timestamp are the answer, as
//!   Kafka gives; past every record, offset and timestamp -1.
//! - InitProducerId hands out a fresh producer id at epoch 0 (ids come
//!   from the controller in a cluster); a transactional id is refused with
//!   `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`: Sluice serves no transactions.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use sluice_broker::broker::OffsetSpec;
use sluice_broker::codes::WireCode;
use sluice_protocol as native;

use crate::api::Req;
use crate::codes::{kafka, to_kafka};
use crate::meta::{finish, native_call, tn};
use crate::{KafkaError, Reply};

/// A produce answered with `code` for every partition, without touching the log.
pub(crate) fn produce_refused(
    req: &Req<'_>,
    r: &ProduceRequest,
    code: i16,
) -> Result<Reply, KafkaError> {
    if r.acks == 0 {
        return Ok(Reply::Nothing);
    }
    let responses = r
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(
                    t.partition_data
                        .iter()
                        .map(|p| {
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(code)
                                .with_base_offset(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    req.respond(
        "Produce",
        &ProduceResponse::default().with_responses(responses),
    )
}

pub(crate) fn produce(req: &Req<'_>, r: ProduceRequest) -> Result<Reply, KafkaError> {
    if req.version() < 3 {
        return produce_refused(req, &r, kafka::UNSUPPORTED_VERSION);
    }
    if r.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        return produce_refused(req, &r, kafka::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    let acks = match r.acks {
        0 => native::Acks::None,
        1 => native::Acks::Leader,
        -1 => native::Acks::Durable,
        _ => return produce_refused(req, &r, kafka::INVALID_REQUIRED_ACKS),
    };
    let topics = r
        .topic_data
        .into_iter()
        .map(|t| native::ProduceTopic {
            name: t.name.0.to_string(),
            partitions: t
                .partition_data
                .into_iter()
                .map(|p| native::ProducePartition {
                    partition: u32::try_from(p.index).unwrap_or(u32::MAX),
                    records: p.records.unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    let out = native_call(
        req,
        native::ApiKey::Produce,
        native::Request::Produce(native::ProduceRequest {
            acks,
            timeout_ms: u32::try_from(r.timeout_ms).unwrap_or(0),
            topics,
        }),
    );
    finish(req, "Produce", out, |resp| {
        let native::Response::Produce(p) = resp else {
            let code = match resp {
                native::Response::Error(e) => e,
                _ => native::ErrorCode::Unknown,
            };
            tracing::debug!(?code, "produce refused as a whole");
            return ProduceResponse::default();
        };
        let responses = p
            .topics
            .into_iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(tn(&t.name))
                    .with_partition_responses(
                        t.partitions
                            .into_iter()
                            .map(|p| {
                                let ok = p.error == native::ErrorCode::None;
                                PartitionProduceResponse::default()
                                    .with_index(i32::try_from(p.partition).unwrap_or(-1))
                                    .with_error_code(to_kafka(p.error))
                                    .with_base_offset(if ok {
                                        i64::try_from(p.base_offset).unwrap_or(-1)
                                    } else {
                                        -1
                                    })
                            })
                            .collect(),
                    )
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    })
}

/// ListOffsets timestamp values with a special meaning.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// Existence and leadership of partitions, checked as the native api
/// checks them: the native ListOffsets (earliest) of each, whose per
/// partition error code is the verdict, in request order.
fn probe(
    req: &Req<'_>,
    topics: impl Iterator<Item = (String, Vec<i32>)>,
) -> native::ListOffsetsResponse {
    let request = native::ListOffsetsRequest {
        topics: topics
            .map(|(name, parts)| native::ListOffsetsTopic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|p| native::ListOffsetsPartition {
                        partition: u32::try_from(p).unwrap_or(u32::MAX),
                        spec: native::OffsetSpec::Earliest,
                    })
                    .collect(),
            })
            .collect(),
    };
    match native_call(
        req,
        native::ApiKey::ListOffsets,
        native::Request::ListOffsets(request),
    ) {
        sluice_broker::handler::Outcome::Respond(native::Response::ListOffsets(l)) => l,
        _ => native::ListOffsetsResponse { topics: Vec::new() },
    }
}

pub(crate) fn list_offsets(req: &Req<'_>, r: ListOffsetsRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let broker = &req.ctx.core.broker;
    let checked = probe(
        req,
        r.topics.iter().map(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.to_string(), parts)
        }),
    );
    let mut topics = Vec::with_capacity(r.topics.len());
    for (ti, t) in r.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let mut parts = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let check = checked
                .topics
                .get(ti)
                .and_then(|ct| ct.partitions.get(pi))
                .map_or(native::ErrorCode::UnknownTopicOrPartition, |cp| cp.error);
            let mut out =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            if check != native::ErrorCode::None {
                out.error_code = to_kafka(check);
                out.offset = -1;
                out.timestamp = -1;
                parts.push(out);
                continue;
            }
            let index = u32::try_from(p.partition_index).unwrap_or(u32::MAX);
            let found: Result<(i64, i64), native::ErrorCode> = match p.timestamp {
                LATEST => lookup(broker, &name, index, OffsetSpec::Latest),
                EARLIEST | EARLIEST_LOCAL => lookup(broker, &name, index, OffsetSpec::Earliest),
                LATEST_TIERED => Ok((-1, -1)),
                MAX_TIMESTAMP => max_timestamp(broker, &name, index),
                ts if ts >= 0 => lookup(broker, &name, index, OffsetSpec::Timestamp(ts)).map(
                    |(offset, found_ts)| {
                        if found_ts < 0 {
                            (-1, -1)
                        } else {
                            let batch_start = u64::try_from(offset).unwrap_or(0);
                            first_record_at(broker, &name, index, batch_start, ts)
                                .unwrap_or((offset, found_ts))
                        }
                    },
                ),
                _ => Err(native::ErrorCode::InvalidRequest),
            };
            match found {
                Ok((offset, ts)) => {
                    out.offset = offset;
                    out.timestamp = ts;
                    if v >= 4 {
                        out.leader_epoch = broker
                            .partition(&name, index)
                            .ok()
                            .and_then(|p| p.leader_epoch())
                            .map_or(-1, |e| i32::try_from(e).unwrap_or(-1));
                    }
                }
                Err(e) => {
                    out.error_code = to_kafka(e);
                    out.offset = -1;
                    out.timestamp = -1;
                }
            }
            parts.push(out);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    req.respond(
        "ListOffsets",
        &ListOffsetsResponse::default().with_topics(topics),
    )
}

fn lookup(
    broker: &sluice_broker::Broker,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
) -> Result<(i64, i64), native::ErrorCode> {
    broker
        .list_offset(topic, partition, spec)
        .map(|(o, ts)| (i64::try_from(o).unwrap_or(i64::MAX), ts))
        .map_err(|e| e.code())
}

/// Most bytes a timestamp lookup decompresses to find its record.
const MAX_LOOKUP_DECOMPRESSED: usize = 64 << 20;

/// The first record at or after `ts` in the batch at `offset` (which the
/// core found by batch max timestamps, as Kafka's time index does): its
/// offset and timestamp, as Kafka answers. `None` when the batch cannot be
/// read; the caller then answers with the batch.
fn first_record_at(
    broker: &sluice_broker::Broker,
    topic: &str,
    partition: u32,
    offset: u64,
    ts: i64,
) -> Option<(i64, i64)> {
    let p = broker.partition(topic, partition).ok()?;
    let data = p.read(offset, 1).ok()?;
    let batch = sluice_protocol::batch::RecordBatch::parse(&data).ok()?;
    let batch = batch.decompress(MAX_LOOKUP_DECOMPRESSED).ok()?;
    let from = i64::try_from(offset.max(p.start_offset())).unwrap_or(i64::MAX);
    let hit = batch
        .records()
        .filter_map(Result::ok)
        .find(|r| r.timestamp >= ts && r.offset >= from)?;
    Some((hit.offset, hit.timestamp))
}

/// The batch holding the largest timestamp below the high watermark: its
/// base offset and that timestamp, or (-1, -1) for an empty partition.
fn max_timestamp(
    broker: &sluice_broker::Broker,
    topic: &str,
    partition: u32,
) -> Result<(i64, i64), native::ErrorCode> {
    let p = broker.partition(topic, partition).map_err(|e| e.code())?;
    let hw = p.high_watermark();
    let at = |ts: i64| -> Result<Option<(u64, i64)>, native::ErrorCode> {
        Ok(p.offset_for_timestamp(ts)
            .map_err(|e| e.code())?
            .filter(|(o, _)| *o < hw))
    };
    let Some(mut best) = at(i64::MIN)? else {
        return Ok((-1, -1));
    };
    // Largest ts with a batch at or after it: batches' max timestamps are
    // what the index holds, so the answer is one of them.
    let (mut lo, mut hi) = (best.1, i64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo) / 2 + 1;
        match at(mid)? {
            Some(found) => {
                best = found;
                lo = found.1.max(mid);
            }
            None => hi = mid - 1,
        }
    }
    // The batch holds the largest timestamp; Kafka (KIP-734) answers the
    // offset of the record carrying it (the first such, if several do).
    let record = (|| {
        let data = p.read(best.0, 1).ok()?;
        let batch = sluice_protocol::batch::RecordBatch::parse(&data).ok()?;
        let batch = batch.decompress(MAX_LOOKUP_DECOMPRESSED).ok()?;
        let from = i64::try_from(best.0).unwrap_or(i64::MAX);
        batch
            .records()
            .filter_map(Result::ok)
            .filter(|r| r.offset >= from)
            .fold(None, |top: Option<(i64, i64)>, r| match top {
                Some((_, ts)) if ts >= r.timestamp => top,
                _ => Some((r.offset, r.timestamp)),
            })
    })();
    Ok(record.unwrap_or((i64::try_from(best.0).unwrap_or(i64::MAX), best.1)))
}

pub(crate) fn init_producer_id(
    req: &Req<'_>,
    r: InitProducerIdRequest,
) -> Result<Reply, KafkaError> {
    if r.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        return req.respond(
            "InitProducerId",
            &InitProducerIdResponse::default()
                .with_error_code(kafka::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        );
    }
    let out = native_call(
        req,
        native::ApiKey::InitProducerId,
        native::Request::InitProducerId,
    );
    finish(req, "InitProducerId", out, |resp| match resp {
        native::Response::InitProducerId(i) => InitProducerIdResponse::default()
            .with_error_code(to_kafka(i.error))
            .with_producer_id(ProducerId(i.producer_id))
            .with_producer_epoch(i.producer_epoch),
        _ => InitProducerIdResponse::default()
            .with_error_code(kafka::UNKNOWN_SERVER_ERROR)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    })
}

/// DeleteRecords: moves each partition's log start up to the given offset
/// (-1: the high watermark) on its leader, durably; reads below it then
/// answer `OFFSET_OUT_OF_RANGE` and ListOffsets(earliest) returns it. An
/// offset past the high watermark is `OFFSET_OUT_OF_RANGE`. The answer
/// carries each partition's new low watermark.
pub(crate) fn delete_records(req: &Req<'_>, r: DeleteRecordsRequest) -> Result<Reply, KafkaError> {
    use kafka_protocol::messages::delete_records_response::{
        DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
    };
    let checked = probe(
        req,
        r.topics.iter().map(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.0.to_string(), parts)
        }),
    );
    // (topic, partition, offset or the refusal) in request order.
    let mut work: Vec<(TopicName, i32, Result<i64, i16>)> = Vec::new();
    for (ti, t) in r.topics.iter().enumerate() {
        for (pi, p) in t.partitions.iter().enumerate() {
            let check = checked
                .topics
                .get(ti)
                .and_then(|ct| ct.partitions.get(pi))
                .map_or(native::ErrorCode::UnknownTopicOrPartition, |cp| cp.error);
            let item = if check != native::ErrorCode::None {
                Err(to_kafka(check))
            } else if p.offset < -1 {
                Err(kafka::OFFSET_OUT_OF_RANGE)
            } else {
                Ok(p.offset)
            };
            work.push((t.name.clone(), p.partition_index, item));
        }
    }
    let broker = std::sync::Arc::clone(&req.ctx.core.broker);
    let enc = req.later::<DeleteRecordsResponse>("DeleteRecords");
    Ok(Reply::Later(Box::pin(async move {
        let done = tokio::task::spawn_blocking(move || {
            work.into_iter()
                .map(|(topic, index, item)| {
                    let result = item.and_then(|offset| {
                        let p = broker
                            .partition(&topic.0, u32::try_from(index).unwrap_or(u32::MAX))
                            .map_err(|e| to_kafka(e.code()))?;
                        let target = if offset == -1 {
                            p.high_watermark()
                        } else {
                            u64::try_from(offset).unwrap_or(u64::MAX)
                        };
                        p.delete_records_before(target)
                            .map(|start| i64::try_from(start).unwrap_or(i64::MAX))
                            .map_err(|e| to_kafka(e.code()))
                    });
                    (topic, index, result)
                })
                .collect::<Vec<_>>()
        })
        .await
        .ok()?;
        let mut topics: Vec<DeleteRecordsTopicResult> = Vec::new();
        for (topic, index, result) in done {
            let part = match result {
                Ok(low) => DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_low_watermark(low),
                Err(code) => DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_low_watermark(-1)
                    .with_error_code(code),
            };
            match topics.last_mut() {
                Some(t) if t.name == topic => t.partitions.push(part),
                _ => topics.push(
                    DeleteRecordsTopicResult::default()
                        .with_name(topic)
                        .with_partitions(vec![part]),
                ),
            }
        }
        enc(&DeleteRecordsResponse::default().with_topics(topics))
    })))
}
