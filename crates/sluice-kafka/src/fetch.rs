//! Fetch: translated onto the core's fetch (parking, high watermark,
//! leadership), answered with a response encoded here so that record data
//! leaves as slices of the log's mapping, never copied.
//!
//! Served from v4 (RecordBatch v2 clients). Topics are named (v4 to v12) or
//! identified by topic id (v13+; an unknown id answers `UNKNOWN_TOPIC_ID`).
//! Incremental fetch sessions (KIP-227) are not kept: every response has
//! session id 0, which tells the client to keep sending full requests; a
//! request naming a session id answers `FETCH_SESSION_ID_NOT_FOUND`, after
//! which clients start over with a full request. The last stable offset is
//! the high watermark (no transactions), aborted transactions are always
//! an empty list and the preferred read replica is -1 (read from the leader).
//!
//! Response layout (Kafka's FetchResponse; flexible from v12: compact
//! lengths, tagged fields written as an empty set):
//!
//! | field | type | versions |
//! |---|---|---|
//! | throttle_time_ms | int32 | 1+ |
//! | error_code | int16 | 7+ |
//! | session_id | int32 | 7+ |
//! | responses | array of topic | all |
//! | . topic | string | 0-12 |
//! | . topic_id | uuid | 13+ |
//! | . partitions | array of partition | all |
//! | . . partition_index | int32 | all |
//! | . . error_code | int16 | all |
//! | . . high_watermark | int64 | all |
//! | . . last_stable_offset | int64 | 4+ |
//! | . . log_start_offset | int64 | 5+ |
//! | . . aborted_transactions | nullable array (always empty here) | 4+ |
//! | . . preferred_read_replica | int32 | 11+ |
//! | . . records | nullable bytes | all |

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchRequest;
use sluice_broker::handler::Outcome;
use sluice_protocol as native;
use uuid::Uuid;

use crate::api::Req;
use crate::codes::{kafka, to_kafka};
use crate::meta::{native_call, topic_name_of};
use crate::{KafkaError, Reply};

/// One partition of the answer.
struct PartOut {
    index: i32,
    error: i16,
    high_watermark: i64,
    log_start: i64,
    records: Bytes,
}

/// One topic of the answer, by name and id.
struct TopicOut {
    name: String,
    id: Uuid,
    partitions: Vec<PartOut>,
}

/// Writes the response into chunks; record data goes in as its own chunk.
struct Writer {
    flexible: bool,
    buf: BytesMut,
    chunks: Vec<Bytes>,
}

impl Writer {
    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    fn len(&mut self, n: usize) {
        if self.flexible {
            self.uvarint(u32::try_from(n + 1).unwrap_or(u32::MAX));
        } else {
            self.buf.put_i32(i32::try_from(n).unwrap_or(i32::MAX));
        }
    }

    fn string(&mut self, s: &str) {
        if self.flexible {
            self.uvarint(u32::try_from(s.len() + 1).unwrap_or(u32::MAX));
        } else {
            self.buf.put_i16(i16::try_from(s.len()).unwrap_or(i16::MAX));
        }
        self.buf.put_slice(s.as_bytes());
    }

    fn tags(&mut self) {
        if self.flexible {
            self.buf.put_u8(0);
        }
    }

    fn records(&mut self, data: Bytes) {
        self.len(data.len());
        if data.len() < 512 {
            self.buf.put_slice(&data);
        } else {
            let head = self.buf.split().freeze();
            self.chunks.push(head);
            self.chunks.push(data);
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        let tail = self.buf.split().freeze();
        if !tail.is_empty() {
            self.chunks.push(tail);
        }
        self.chunks
    }
}

/// Encodes a whole Fetch response frame of `version`.
fn encode(correlation_id: i32, version: i16, top_error: i16, topics: Vec<TopicOut>) -> Vec<Bytes> {
    let flexible = version >= 12;
    let mut w = Writer {
        flexible,
        buf: BytesMut::with_capacity(256),
        chunks: Vec::with_capacity(2 + 2 * topics.len()),
    };
    w.buf.put_i32(0); // length, patched below
    w.buf.put_i32(correlation_id);
    w.tags(); // response header v1 from v12
    w.buf.put_i32(0); // throttle_time_ms (v1+; served from v4)
    if version >= 7 {
        w.buf.put_i16(top_error);
        w.buf.put_i32(0); // session_id: no sessions
    }
    w.len(topics.len());
    for t in topics {
        if version >= 13 {
            w.buf.put_slice(t.id.as_bytes());
        } else {
            w.string(&t.name);
        }
        w.len(t.partitions.len());
        for p in t.partitions {
            w.buf.put_i32(p.index);
            w.buf.put_i16(p.error);
            w.buf.put_i64(p.high_watermark);
            w.buf.put_i64(p.high_watermark); // last_stable_offset
            if version >= 5 {
                w.buf.put_i64(p.log_start);
            }
            w.len(0); // aborted_transactions
            if version >= 11 {
                w.buf.put_i32(-1); // preferred_read_replica
            }
            w.records(p.records);
            w.tags();
        }
        w.tags();
    }
    w.tags();
    let mut chunks = w.finish();
    let total: usize = chunks.iter().map(Bytes::len).sum::<usize>() - 4;
    if let Some(first) = chunks.first_mut() {
        let mut head = BytesMut::from(&first[..]);
        head[..4].copy_from_slice(&i32::try_from(total).unwrap_or(i32::MAX).to_be_bytes());
        *first = head.freeze();
    }
    chunks
}

/// A fetch answered with `code` for every partition it names, without touching the log.
pub(crate) fn fetch_refused(
    req: &Req<'_>,
    r: &FetchRequest,
    code: i16,
) -> Result<Reply, KafkaError> {
    let topics = r
        .topics
        .iter()
        .map(|t| TopicOut {
            name: t.topic.0.to_string(),
            id: t.topic_id,
            partitions: t
                .partitions
                .iter()
                .map(|p| PartOut {
                    index: p.partition,
                    error: code,
                    high_watermark: -1,
                    log_start: -1,
                    records: Bytes::new(),
                })
                .collect(),
        })
        .collect();
    Ok(Reply::Now(encode(
        req.header.correlation_id,
        req.version(),
        kafka::NONE,
        topics,
    )))
}

pub(crate) fn fetch(req: &Req<'_>, r: FetchRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let cid = req.header.correlation_id;
    if v >= 7 && r.session_id != 0 {
        return Ok(Reply::Now(encode(
            cid,
            v,
            kafka::FETCH_SESSION_ID_NOT_FOUND,
            Vec::new(),
        )));
    }
    // Resolve names (v13+: ids); unknown ids are answered without the core.
    let mut unknown: Vec<TopicOut> = Vec::new();
    let mut order: Vec<(String, Uuid)> = Vec::with_capacity(r.topics.len());
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let (name, id) = if v >= 13 {
            match topic_name_of(req.ctx, t.topic_id) {
                Some(n) => (n, t.topic_id),
                None => {
                    unknown.push(TopicOut {
                        name: String::new(),
                        id: t.topic_id,
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| PartOut {
                                index: p.partition,
                                error: kafka::UNKNOWN_TOPIC_ID,
                                high_watermark: -1,
                                log_start: -1,
                                records: Bytes::new(),
                            })
                            .collect(),
                    });
                    continue;
                }
            }
        } else {
            (t.topic.0.to_string(), Uuid::nil())
        };
        order.push((name.clone(), id));
        topics.push(native::FetchTopic {
            name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| native::FetchPartition {
                    partition: u32::try_from(p.partition).unwrap_or(u32::MAX),
                    fetch_offset: u64::try_from(p.fetch_offset).unwrap_or(u64::MAX),
                    max_bytes: u32::try_from(p.partition_max_bytes).unwrap_or(0),
                })
                .collect(),
        });
    }
    let request = native::FetchRequest {
        max_wait_ms: u32::try_from(r.max_wait_ms).unwrap_or(0),
        min_bytes: u32::try_from(r.min_bytes).unwrap_or(0),
        max_bytes: if v >= 3 {
            u32::try_from(r.max_bytes).unwrap_or(0)
        } else {
            u32::MAX
        },
        topics,
    };
    let map = move |resp: native::Response| -> Vec<Bytes> {
        let mut out: Vec<TopicOut> = Vec::new();
        if let native::Response::Fetch(f) = resp {
            for (i, t) in f.topics.into_iter().enumerate() {
                let id = order.get(i).map_or(Uuid::nil(), |(_, id)| *id);
                out.push(TopicOut {
                    id,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let err = p.error != native::ErrorCode::None
                                && p.error != native::ErrorCode::OffsetOutOfRange;
                            PartOut {
                                index: i32::try_from(p.partition).unwrap_or(-1),
                                error: to_kafka(p.error),
                                high_watermark: if err {
                                    -1
                                } else {
                                    i64::try_from(p.high_watermark).unwrap_or(i64::MAX)
                                },
                                log_start: if err {
                                    -1
                                } else {
                                    i64::try_from(p.log_start_offset).unwrap_or(i64::MAX)
                                },
                                records: p.records,
                            }
                        })
                        .collect(),
                    name: t.name,
                });
            }
        }
        out.extend(unknown);
        encode(cid, v, kafka::NONE, out)
    };
    match native_call(req, native::ApiKey::Fetch, native::Request::Fetch(request)) {
        Outcome::Respond(resp) => Ok(Reply::Now(map(resp))),
        Outcome::NoResponse => Ok(Reply::Nothing),
        Outcome::Deferred(fut) => Ok(Reply::Later(Box::pin(async move {
            let resp = fut.await?;
            Some(map(resp))
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn sample() -> Vec<TopicOut> {
        vec![TopicOut {
            name: "orders".into(),
            id: Uuid::from_bytes([9; 16]),
            partitions: vec![
                PartOut {
                    index: 0,
                    error: 0,
                    high_watermark: 42,
                    log_start: 3,
                    records: Bytes::from(vec![0xab; 2000]),
                },
                PartOut {
                    index: 1,
                    error: kafka::NOT_LEADER_OR_FOLLOWER,
                    high_watermark: -1,
                    log_start: -1,
                    records: Bytes::new(),
                },
            ],
        }]
    }

    /// The hand-written encoding decodes with the codec crate, in every served version.
    #[test]
    fn every_served_version_decodes_with_the_reference_codec() {
        for version in 4..=17i16 {
            let chunks = encode(7, version, 0, sample());
            let mut all = BytesMut::new();
            for c in &chunks {
                all.put_slice(c);
            }
            let mut b = all.freeze();
            let len = b.get_i32() as usize;
            assert_eq!(len, b.len(), "v{version} length prefix");
            assert_eq!(b.get_i32(), 7);
            if version >= 12 {
                assert_eq!(b.get_u8(), 0, "v{version} header tags");
            }
            let r = FetchResponse::decode(&mut b, version).expect("decodes");
            assert_eq!(b.len(), 0, "v{version}: nothing left over");
            let t = &r.responses[0];
            if version >= 13 {
                assert_eq!(t.topic_id, Uuid::from_bytes([9; 16]));
            } else {
                assert_eq!(&*t.topic.0, "orders");
            }
            let p0 = &t.partitions[0];
            assert_eq!(
                (p0.partition_index, p0.error_code, p0.high_watermark),
                (0, 0, 42)
            );
            assert_eq!(p0.last_stable_offset, 42);
            if version >= 5 {
                assert_eq!(p0.log_start_offset, 3);
            }
            assert_eq!(p0.records.as_ref().map(|r| r.len()), Some(2000));
            assert_eq!(t.partitions[1].error_code, kafka::NOT_LEADER_OR_FOLLOWER);
            assert_eq!(r.session_id, 0);
        }
    }

    #[test]
    fn large_record_data_is_its_own_chunk_not_a_copy() {
        let data = Bytes::from(vec![1u8; 4096]);
        let ptr = data.as_ptr();
        let mut topics = sample();
        topics[0].partitions[0].records = data;
        let chunks = encode(1, 11, 0, topics);
        assert!(chunks.iter().any(|c| c.as_ptr() == ptr && c.len() == 4096));
    }
}
