//! The produce guard (`disk_min_free_bytes`) over real connections, on any
//! machine: a floor above any disk (`u64::MAX`) stands in for a nearly full
//! one. A broker started that way refuses produce on both protocols (native
//! DISK_FULL, Kafka KAFKA_STORAGE_ERROR 56) and auto-creates no topic,
//! while Fetch, ListOffsets, Metadata and offset commits keep serving what
//! was written before. (A real file system filling up, then freed, is
//! `tests/disk_space.rs` at the workspace root; it mounts a tmpfs as root.)

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    self as km, fetch_request, produce_request, ApiKey as KafkaApi, BrokerId, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_broker::{Broker, ConfigLayer};
use sluice_protocol::batch::{batches, RecordBatchBuilder};
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::*;
use sluiced::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use common::{call, Conn};

struct Running {
    native: SocketAddr,
    kafka: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), sluice_broker::BrokerError>>,
}

async fn start(dir: &std::path::Path, min_free: u64) -> Running {
    let config = ConfigLayer {
        disk_min_free_bytes: Some(min_free),
        ..common::loopback(dir)
    }
    .resolve()
    .unwrap();
    let server = Server::bind(config).await.unwrap();
    let (native, kafka) = (server.native_addr(), server.kafka_addr().unwrap());
    let broker = Arc::clone(server.broker());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Running {
        native,
        kafka,
        broker,
        shutdown,
        task,
    }
}

impl Running {
    async fn conn(&self) -> Conn {
        let stream = TcpStream::connect(self.native).await.unwrap();
        Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn batch(values: &[&[u8]]) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    for v in values {
        b.push(1_700_000_000_000, None, Some(v), &[]);
    }
    b.finish()
}

async fn produce(conn: &mut Conn, id: u32, topic: &str, records: Bytes) -> ErrorCode {
    let req = Request::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 10_000,
        topics: vec![ProduceTopic {
            name: topic.into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records,
            }],
        }],
    });
    match call(conn, id, &req).await {
        Response::Produce(r) => r.topics[0].partitions[0].error,
        other => panic!("{other:?}"),
    }
}

/// Every record value of `topic`/0 (one fetch is enough for a few records).
async fn values(conn: &mut Conn, id: u32, topic: &str) -> Vec<Vec<u8>> {
    let req = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: 0,
                max_bytes: 1 << 20,
            }],
        }],
    });
    let p = match call(conn, id, &req).await {
        Response::Fetch(mut r) => r.topics.remove(0).partitions.remove(0),
        other => panic!("{other:?}"),
    };
    assert_eq!(p.error, ErrorCode::None);
    let mut out = Vec::new();
    for b in batches(&p.records) {
        for r in b.unwrap().records() {
            out.push(r.unwrap().value.unwrap_or_default().to_vec());
        }
    }
    out
}

/// One Kafka request, one decoded response (request header v1/v2 as the api needs).
async fn kafka_call<R: Encodable + HeaderVersion, P: Decodable>(
    s: &mut TcpStream,
    key: KafkaApi,
    version: i16,
    body: &R,
) -> P {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("disk-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).await.unwrap();
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut len))
        .await
        .expect("a response in time")
        .unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut b = Bytes::from(body);
    assert_eq!(b.get_i32(), 7);
    if key.response_header_version(version) >= 1 {
        b.get_u8();
    }
    P::decode(&mut b, version).unwrap()
}

fn topic_name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

#[tokio::test]
async fn a_broker_low_on_disk_refuses_produce_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    let written: Vec<&[u8]> = vec![b"one", b"two", b"three"];

    // Records written while there is room (the guard off).
    let b = start(dir.path(), 0).await;
    b.broker.create_topic("t", 1, &[]).unwrap();
    let mut conn = b.conn().await;
    assert_eq!(
        produce(&mut conn, 1, "t", batch(&written)).await,
        ErrorCode::None
    );
    drop(conn);
    b.stop().await;

    // The same data directory "nearly full".
    let b = start(dir.path(), u64::MAX).await;
    assert!(b.broker.disk_space().is_low());
    assert!(b
        .broker
        .metrics()
        .render()
        .contains("sluice_disk_space_low 1"));
    let mut conn = b.conn().await;
    // Native produce: DISK_FULL, to an existing topic and to a new one,
    // which is not auto-created.
    assert_eq!(
        produce(&mut conn, 2, "t", batch(&[b"four"])).await,
        ErrorCode::DiskFull
    );
    assert_eq!(
        produce(&mut conn, 3, "new", batch(&[b"x"])).await,
        ErrorCode::DiskFull
    );
    assert!(
        b.broker.topics().get("new").is_none(),
        "auto-created on a full disk"
    );
    // Reads: everything written before, nothing more.
    assert_eq!(values(&mut conn, 4, "t").await, written);
    let latest = Request::ListOffsets(ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: "t".into(),
            partitions: vec![ListOffsetsPartition {
                partition: 0,
                spec: OffsetSpec::Latest,
            }],
        }],
    });
    match call(&mut conn, 5, &latest).await {
        Response::ListOffsets(r) => assert_eq!(r.topics[0].partitions[0].offset, 3),
        other => panic!("{other:?}"),
    }
    match call(
        &mut conn,
        6,
        &Request::Metadata(MetadataRequest {
            topics: vec!["t".into()],
        }),
    )
    .await
    {
        Response::Metadata(m) => assert_eq!(m.topics[0].error, ErrorCode::None),
        other => panic!("{other:?}"),
    }
    // Consumer offset commits are not produce: they still work.
    let commit = Request::OffsetCommit(OffsetCommitRequest {
        group_id: "g".into(),
        member_id: String::new(),
        generation: 0,
        topics: vec![OffsetCommitTopic {
            name: "t".into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset: 3,
                metadata: String::new(),
            }],
        }],
    });
    match call(&mut conn, 7, &commit).await {
        Response::OffsetCommit(r) => {
            assert_eq!(r.topics[0].partitions[0].error, ErrorCode::None)
        }
        other => panic!("{other:?}"),
    }
    let fetch_offsets = Request::OffsetFetch(OffsetFetchRequest {
        group_id: "g".into(),
        topics: vec![TopicPartitions::new("t", vec![0])],
    });
    match call(&mut conn, 8, &fetch_offsets).await {
        Response::OffsetFetch(r) => assert_eq!(r.topics[0].partitions[0].offset, 3),
        other => panic!("{other:?}"),
    }

    // Kafka: Produce answers KAFKA_STORAGE_ERROR (56); Fetch still serves.
    let mut k = TcpStream::connect(b.kafka).await.unwrap();
    let mut records = BytesMut::new();
    records.extend_from_slice(&batch(&[b"kafka"]));
    let req = km::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic_name("t"))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records.freeze())),
            ])]);
    let r: km::ProduceResponse = kafka_call(&mut k, KafkaApi::Produce, 9, &req).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 56);
    let fetch = km::FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic_name("t"))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let f: km::FetchResponse = kafka_call(&mut k, KafkaApi::Fetch, 12, &fetch).await;
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 3));
    assert!(!p.records.as_ref().is_none_or(|r| r.is_empty()));
    // Metadata does not auto-create a topic for a Kafka producer either.
    let meta = km::MetadataRequest::default()
        .with_topics(Some(vec![
            km::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(topic_name("kafka-new"))),
        ]))
        .with_allow_auto_topic_creation(true);
    let m: km::MetadataResponse = kafka_call(&mut k, KafkaApi::Metadata, 9, &meta).await;
    assert_eq!(m.topics[0].error_code, 56);
    assert!(b.broker.topics().get("kafka-new").is_none());

    drop((conn, k));
    b.stop().await;
}
