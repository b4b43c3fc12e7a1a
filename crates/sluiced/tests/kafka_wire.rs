//! The Kafka listener over real TCP, frame by frame: ApiVersions (and its
//! unknown-version fallback), Metadata with auto-creation and topic ids,
//! Produce and Fetch (by name and by topic id) with records byte for byte,
//! ListOffsets, idempotent sequence checks, refused versions, pipelined
//! requests answered in order, native <-> Kafka interop, and hostile
//! frames that close only their own connection.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_protocol::batch::{RecordBatch, RecordBatchBuilder};
use sluiced::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A running in-process broker.
struct Running {
    kafka: SocketAddr,
    native: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), sluice_broker::BrokerError>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config = sluice_broker::ConfigLayer {
        group_initial_rebalance_delay_ms: Some(100),
        ..common::loopback(dir.path())
    }
    .resolve()
    .unwrap();
    let server = Server::bind(config).await.unwrap();
    let kafka = server.kafka_addr().expect("the Kafka listener is on");
    let native = server.native_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Running {
        kafka,
        native,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Writes one request frame.
async fn send<R: Encodable + HeaderVersion>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    cid: i32,
    body: &R,
) {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    let mut header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(cid)
        .with_client_id(Some(StrBytes::from_static_str("wire-test")));
    header.request_api_version = version;
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).await.unwrap();
}

/// Reads one response frame: (correlation id, body after the header).
async fn recv(s: &mut TcpStream, key: ApiKey, version: i16) -> (i32, Bytes) {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut len))
        .await
        .expect("a response in time")
        .expect("the connection stays open");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut b = Bytes::from(body);
    let cid = b.get_i32();
    if key.response_header_version(version) >= 1 {
        assert_eq!(b.get_u8(), 0, "no tagged fields in the response header");
    }
    (cid, b)
}

/// One request, one decoded response.
async fn call<R: Encodable + HeaderVersion, P: Decodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    body: &R,
) -> P {
    send(s, key, version, 42, body).await;
    let (cid, mut b) = recv(s, key, version).await;
    assert_eq!(cid, 42);
    let r = P::decode(&mut b, version).expect("a well-formed response");
    assert_eq!(b.remaining(), 0, "{key:?} v{version}: bytes left over");
    r
}

/// Whether the broker closed the connection (EOF within a few seconds).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

/// One record to build: timestamp, key, value, headers.
type TestRecord<'a> = (i64, &'a [u8], &'a [u8], &'a [(&'a str, &'a [u8])]);

fn batch(records: &[TestRecord<'_>]) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    for (ts, k, v, h) in records {
        b.push(*ts, Some(k), Some(v), h);
    }
    b.into_batch()
}

fn produce(topic: &'static str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            ])])
}

fn fetch_by_name(topic: &'static str, offset: i64, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(wait_ms)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

async fn create(s: &mut TcpStream, topic: &'static str, partitions: i32) {
    let r: CreateTopicsResponse = call(
        s,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(-1)]),
    )
    .await;
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    assert_eq!(r.topics[0].num_partitions, partitions);
    assert!(!r.topics[0].topic_id.is_nil());
}

#[tokio::test]
async fn api_versions_tells_the_truth_and_an_unknown_version_gets_a_v0_answer() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    let r: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    )
    .await;
    assert_eq!(r.error_code, 0);
    let served: Vec<(i16, i16, i16)> = r
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    assert_eq!(served, sluice_kafka::SERVED.to_vec());
    // A version from the future: error 35 in a v0 body listing our ranges.
    let mut raw = BytesMut::new();
    raw.put_i32(12);
    raw.put_i16(18);
    raw.put_i16(99);
    raw.put_i32(7);
    raw.put_i16(-1);
    raw.put_u8(0);
    raw.put_u8(0);
    s.write_all(&raw).await.unwrap();
    let (cid, mut body) = recv(&mut s, ApiKey::ApiVersions, 0).await;
    assert_eq!(cid, 7);
    let r = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(r.error_code, 35);
    assert_eq!(r.api_keys.len(), sluice_kafka::SERVED.len());
    b.stop().await;
}

#[tokio::test]
async fn metadata_auto_creates_and_names_this_broker_with_topic_ids() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    let ask = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(name("fresh")))]));
    let first: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &ask).await;
    assert_eq!(first.brokers.len(), 1);
    assert_eq!(first.brokers[0].port, i32::from(b.kafka.port()));
    assert_eq!(&*first.brokers[0].host, "127.0.0.1");
    assert!(matches!(first.topics[0].error_code, 0 | 5), "{first:?}");
    let again: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &ask).await;
    let t = &again.topics[0];
    assert_eq!(t.error_code, 0);
    assert!(!t.topic_id.is_nil());
    assert_eq!(t.partitions.len(), 1);
    assert_eq!(t.partitions[0].leader_id, BrokerId(0));
    assert_eq!(t.partitions[0].leader_epoch, 0);
    // Without auto-creation, a missing topic stays missing.
    let no = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(name("absent")))]));
    let r: MetadataResponse = call(&mut s, ApiKey::Metadata, 12, &no).await;
    assert_eq!(r.topics[0].error_code, 3);
    // v0 (no auto-creation flag: it auto-creates) and an empty v1 list (brokers only).
    let r: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(Some(vec![])),
    )
    .await;
    assert!(r.topics.is_empty());
    assert_eq!(r.brokers.len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn produced_records_are_fetched_byte_for_byte_by_name_and_by_id() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut s, "orders", 1).await;
    let sent = batch(&[
        (1_000, b"k1", b"v1", &[("h", b"x")]),
        (2_000, b"k2", b"v2", &[]),
    ]);
    let r: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce("orders", 0, -1, sent.clone()),
    )
    .await;
    let p = &r.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let r: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        3,
        &produce("orders", 0, 1, batch(&[(3_000, b"k3", b"v3", &[])])),
    )
    .await;
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 2);

    for version in [4i16, 11, 12] {
        let f: FetchResponse = call(
            &mut s,
            ApiKey::Fetch,
            version,
            &fetch_by_name("orders", 0, 0),
        )
        .await;
        let p = &f.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 3), "v{version}");
        let data = p.records.clone().unwrap();
        let first = RecordBatch::parse(&data).unwrap();
        // Stored verbatim: only the base offset (0 here) and leader epoch are stamped.
        assert_eq!(&data[8..12], &sent[8..12], "batch length");
        assert_eq!(&data[16..sent.len()], &sent[16..], "magic, CRC and records");
        let recs: Vec<_> = first.records().map(|r| r.unwrap()).collect();
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[1].value, Some(&b"v2"[..]));
        assert_eq!(recs[1].timestamp, 2_000);
    }
    // v13+: by topic id.
    let md: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    let id = md
        .topics
        .iter()
        .find(|t| t.name == Some(name("orders")))
        .unwrap()
        .topic_id;
    let mut by_id = fetch_by_name("orders", 2, 0);
    by_id.topics[0].topic = TopicName::default();
    by_id.topics[0].topic_id = id;
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 13, &by_id).await;
    assert_eq!(f.responses[0].topic_id, id);
    assert_eq!(f.responses[0].partitions[0].high_watermark, 3);
    assert!(f.responses[0].partitions[0].records.as_ref().unwrap().len() > 60);
    let mut unknown = by_id.clone();
    unknown.topics[0].topic_id = uuid::Uuid::from_bytes([3; 16]);
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 13, &unknown).await;
    assert_eq!(f.responses[0].partitions[0].error_code, 100);

    // ListOffsets: earliest, latest (= the Fetch high watermark), by time, max time.
    let lo = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts),
                ])])
    };
    for (ts, offset) in [
        (-2, 0),
        (-1, 3),
        (1_000, 0),
        (1_500, 1),
        (2_500, 2),
        (9_999, -1),
        (-3, 2),
    ] {
        let r: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, 7, &lo(ts)).await;
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.offset), (0, offset), "timestamp {ts}");
    }
    // A missing partition and a fetch past the end.
    let r: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce("orders", 5, -1, sent.clone()),
    )
    .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 3);
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch_by_name("orders", 99, 0)).await;
    assert_eq!(f.responses[0].partitions[0].error_code, 1);
    b.stop().await;
}

#[tokio::test]
async fn refused_produces_say_why() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut s, "t", 1).await;
    let one = || batch(&[(1, b"k", b"v", &[])]);
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 2, &produce("t", 0, 1, one())).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 35,
        "v2 is not served"
    );
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce("t", 0, 2, one())).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code, 21,
        "acks=2"
    );
    let mut tx = produce("t", 0, -1, one());
    tx.transactional_id = Some(TransactionalId(StrBytes::from_static_str("tx")));
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &tx).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 53);
    let r: InitProducerIdResponse = call(
        &mut s,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await;
    assert_eq!(r.error_code, 53);
    // A corrupt batch (bad CRC) is refused and nothing is stored.
    let mut bad = BytesMut::from(&one()[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let r: ProduceResponse = call(
        &mut s,
        ApiKey::Produce,
        9,
        &produce("t", 0, -1, bad.freeze()),
    )
    .await;
    assert_ne!(r.responses[0].partition_responses[0].error_code, 0);
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch_by_name("t", 0, 0)).await;
    assert_eq!(f.responses[0].partitions[0].high_watermark, 0);
    b.stop().await;
}

#[tokio::test]
async fn idempotent_retries_get_their_original_offset_and_gaps_are_refused() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut s, "idem", 1).await;
    let id: InitProducerIdResponse = call(
        &mut s,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_timeout_ms(60_000),
    )
    .await;
    assert_eq!(id.error_code, 0);
    let seq = |base: i32| {
        let mut b = RecordBatchBuilder::new();
        b.push(1, Some(b"k"), Some(b"v"), &[]);
        b.push(2, Some(b"k"), Some(b"w"), &[]);
        b.set_producer(id.producer_id.0, id.producer_epoch, base);
        b.into_batch()
    };
    let send_seq = |base| produce("idem", 0, -1, seq(base));
    for (base, code, offset) in [(0, 0, 0), (0, 0, 0), (2, 0, 2), (2, 0, 2)] {
        let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &send_seq(base)).await;
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (code, offset),
            "sequence {base}"
        );
    }
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &send_seq(9)).await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 45);
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch_by_name("idem", 0, 0)).await;
    assert_eq!(
        f.responses[0].partitions[0].high_watermark, 4,
        "no duplicate stored"
    );
    b.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_behind_a_parked_fetch() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut s, "slow", 1).await;
    // A fetch that parks for 400 ms, then two quick requests behind it.
    send(&mut s, ApiKey::Fetch, 12, 1, &fetch_by_name("slow", 0, 400)).await;
    send(
        &mut s,
        ApiKey::ApiVersions,
        3,
        2,
        &ApiVersionsRequest::default(),
    )
    .await;
    send(
        &mut s,
        ApiKey::Metadata,
        9,
        3,
        &MetadataRequest::default().with_topics(None),
    )
    .await;
    let order = [
        (1, ApiKey::Fetch, 12),
        (2, ApiKey::ApiVersions, 3),
        (3, ApiKey::Metadata, 9),
    ];
    for (cid, key, v) in order {
        let (got, _) = recv(&mut s, key, v).await;
        assert_eq!(got, cid);
    }
    // Another connection is not held up by a parked fetch on this one.
    send(
        &mut s,
        ApiKey::Fetch,
        12,
        4,
        &fetch_by_name("slow", 0, 5_000),
    )
    .await;
    let mut other = TcpStream::connect(b.kafka).await.unwrap();
    let started = std::time::Instant::now();
    let _: ApiVersionsResponse = call(
        &mut other,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(4));
    b.stop().await;
}

#[tokio::test]
async fn hostile_frames_close_only_their_own_connection() {
    let b = start().await;
    let mut good = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut good, "safe", 1).await;
    let r: ProduceResponse = call(
        &mut good,
        ApiKey::Produce,
        9,
        &produce("safe", 0, -1, batch(&[(1, b"k", b"v", &[])])),
    )
    .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("shorter than a header", vec![0, 0, 0, 3, 0, 3, 0]),
        (
            "unknown api key",
            vec![0, 0, 0, 10, 0x7f, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff],
        ),
        (
            "unserved version",
            vec![0, 0, 0, 10, 0, 1, 0, 0, 0, 0, 0, 1, 0xff, 0xff],
        ),
        (
            "a Metadata array of 2^31 entries",
            vec![
                0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff,
            ],
        ),
        (
            "a truncated Produce body",
            vec![
                0, 0, 0, 14, 0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0x01, 0xff, 0xff,
            ],
        ),
        (
            "a length prefix above the frame limit",
            vec![0x7f, 0xff, 0xff, 0xff, 0, 0],
        ),
        (
            "a negative client id length",
            vec![0, 0, 0, 12, 0, 3, 0, 1, 0, 0, 0, 1, 0x80, 0, 0, 0],
        ),
    ];
    for (what, frame) in hostile {
        let mut s = TcpStream::connect(b.kafka).await.unwrap();
        s.write_all(&frame).await.unwrap();
        assert!(closed(&mut s).await, "{what}: the connection stays open");
        // The other connection still works, and so does the data.
        let f: FetchResponse =
            call(&mut good, ApiKey::Fetch, 12, &fetch_by_name("safe", 0, 0)).await;
        assert_eq!(f.responses[0].partitions[0].high_watermark, 1, "{what}");
    }
    // A client that vanishes mid-frame loses nothing either.
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    s.write_all(&[0, 0, 1, 0, 0, 0, 0, 9]).await.unwrap();
    drop(s);
    let f: FetchResponse = call(&mut good, ApiKey::Fetch, 12, &fetch_by_name("safe", 0, 0)).await;
    assert_eq!(f.responses[0].partitions[0].high_watermark, 1);
    b.stop().await;
}

#[tokio::test]
async fn native_and_kafka_clients_read_each_others_records() {
    use sluice_protocol::{
        Acks, ProducePartition, ProduceTopic, Request as NReq, Response as NResp,
    };
    let b = start().await;
    let mut k = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut k, "both", 1).await;
    // Kafka -> native.
    let kbatch = batch(&[(5_000, b"from-kafka", b"v1", &[("src", b"kafka")])]);
    let r: ProduceResponse = call(
        &mut k,
        ApiKey::Produce,
        9,
        &produce("both", 0, -1, kbatch.clone()),
    )
    .await;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let stream = TcpStream::connect(b.native).await.unwrap();
    let mut n = tokio_util::codec::Framed::new(
        stream,
        sluice_protocol::codec::FrameCodec::new(sluice_protocol::DEFAULT_MAX_FRAME_BYTES),
    );
    // Native -> Kafka.
    let nbatch = batch(&[(6_000, b"from-native", b"v2", &[("src", b"native")])]);
    let resp = common::call(
        &mut n,
        1,
        &NReq::Produce(sluice_protocol::ProduceRequest {
            acks: Acks::Durable,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: "both".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: nbatch.clone(),
                }],
            }],
        }),
    )
    .await;
    let NResp::Produce(p) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!(p.topics[0].partitions[0].base_offset, 1);
    let resp = common::call(
        &mut n,
        2,
        &NReq::Fetch(sluice_protocol::FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: vec![sluice_protocol::FetchTopic {
                name: "both".into(),
                partitions: vec![sluice_protocol::FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    max_bytes: 1 << 20,
                }],
            }],
        }),
    )
    .await;
    let NResp::Fetch(f) = resp else {
        panic!("{resp:?}")
    };
    let native_view = f.topics[0].partitions[0].records.clone();
    let f: FetchResponse = call(&mut k, ApiKey::Fetch, 12, &fetch_by_name("both", 0, 0)).await;
    let kafka_view = f.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(native_view, kafka_view, "both wires serve the same bytes");
    let first = RecordBatch::parse(&kafka_view).unwrap();
    let r = first.records().next().unwrap().unwrap();
    assert_eq!((r.key, r.timestamp), (Some(&b"from-kafka"[..]), 5_000));
    let h: Vec<_> = r.headers().map(|h| h.unwrap()).collect();
    assert_eq!(h, vec![("src", Some(&b"kafka"[..]))]);
    let second = RecordBatch::parse(&kafka_view.slice(first.header().total_len()..)).unwrap();
    let r = second.records().next().unwrap().unwrap();
    assert_eq!((r.key, r.timestamp), (Some(&b"from-native"[..]), 6_000));
    b.stop().await;
}

fn join(member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("kg")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(5_000)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(Bytes::from_static(b"subscription"))])
}

#[tokio::test]
async fn a_classic_group_of_two_joins_syncs_commits_and_leaves() {
    let b = start().await;
    let mut a = TcpStream::connect(b.kafka).await.unwrap();
    let mut c = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut a, "gt", 2).await;
    // FindCoordinator names this broker.
    let f: FindCoordinatorResponse = call(
        &mut a,
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("kg")),
    )
    .await;
    assert_eq!(
        (f.error_code, f.node_id, f.port),
        (0, BrokerId(0), i32::from(b.kafka.port()))
    );
    // v4+: a new member first gets MEMBER_ID_REQUIRED with its id.
    let r: JoinGroupResponse = call(&mut a, ApiKey::JoinGroup, 9, &join("")).await;
    assert_eq!(r.error_code, 79);
    let id_a = r.member_id.to_string();
    let r: JoinGroupResponse = call(&mut c, ApiKey::JoinGroup, 9, &join("")).await;
    let id_c = r.member_id.to_string();
    // Both join; the barrier answers both with one generation.
    send(&mut a, ApiKey::JoinGroup, 9, 1, &join(&id_a)).await;
    send(&mut c, ApiKey::JoinGroup, 9, 2, &join(&id_c)).await;
    let (_, mut ra) = recv(&mut a, ApiKey::JoinGroup, 9).await;
    let (_, mut rc) = recv(&mut c, ApiKey::JoinGroup, 9).await;
    let ja = JoinGroupResponse::decode(&mut ra, 9).unwrap();
    let jc = JoinGroupResponse::decode(&mut rc, 9).unwrap();
    assert_eq!((ja.error_code, jc.error_code), (0, 0));
    assert_eq!(ja.generation_id, jc.generation_id);
    assert_eq!(ja.leader, jc.leader);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    let (leader, follower, lid, fid) = if ja.leader.to_string() == id_a {
        (&mut a, &mut c, id_a.clone(), id_c.clone())
    } else {
        (&mut c, &mut a, id_c.clone(), id_a.clone())
    };
    let gen = ja.generation_id;
    // The follower's sync waits for the leader's assignments.
    let sync = |me: &str, assignments: Vec<(&str, &'static [u8])>| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("kg")))
            .with_generation_id(gen)
            .with_member_id(StrBytes::from_string(me.to_string()))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str("range")))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(m, a)| {
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(StrBytes::from_string(m.to_string()))
                            .with_assignment(Bytes::from_static(a))
                    })
                    .collect(),
            )
    };
    send(follower, ApiKey::SyncGroup, 5, 3, &sync(&fid, vec![])).await;
    let s: SyncGroupResponse = call(
        leader,
        ApiKey::SyncGroup,
        5,
        &sync(&lid, vec![(lid.as_str(), b"p0"), (fid.as_str(), b"p1")]),
    )
    .await;
    assert_eq!((s.error_code, &s.assignment[..]), (0, &b"p0"[..]));
    let (_, mut rf) = recv(follower, ApiKey::SyncGroup, 5).await;
    let sf = SyncGroupResponse::decode(&mut rf, 5).unwrap();
    assert_eq!((sf.error_code, &sf.assignment[..]), (0, &b"p1"[..]));
    // Heartbeats: fine with the generation, fenced with an old one.
    let hb = |me: &str, g: i32| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("kg")))
            .with_generation_id(g)
            .with_member_id(StrBytes::from_string(me.to_string()))
    };
    let h: HeartbeatResponse = call(leader, ApiKey::Heartbeat, 4, &hb(&lid, gen)).await;
    assert_eq!(h.error_code, 0);
    let h: HeartbeatResponse = call(leader, ApiKey::Heartbeat, 4, &hb(&lid, gen - 1)).await;
    assert_eq!(h.error_code, 22);
    // Commits are fenced by generation; the offsets come back.
    let commit = |me: &str, g: i32, offset: i64| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("kg")))
            .with_generation_id_or_member_epoch(g)
            .with_member_id(StrBytes::from_string(me.to_string()))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name("gt"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(offset),
                    ]),
            ])
    };
    let r: OffsetCommitResponse =
        call(follower, ApiKey::OffsetCommit, 8, &commit(&fid, gen, 7)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let r: OffsetCommitResponse =
        call(follower, ApiKey::OffsetCommit, 8, &commit(&fid, gen + 5, 9)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 22);
    let r: OffsetCommitResponse = call(
        follower,
        ApiKey::OffsetCommit,
        8,
        &commit("stranger", gen, 9),
    )
    .await;
    assert_eq!(r.topics[0].partitions[0].error_code, 25);
    let of: OffsetFetchResponse = call(
        follower,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("kg")))
            .with_topics(None),
    )
    .await;
    let p = &of.topics[0].partitions[0];
    assert_eq!(
        (of.error_code, p.partition_index, p.committed_offset),
        (0, 1, 7)
    );
    // DescribeGroups and ListGroups show it.
    let d: DescribeGroupsResponse = call(
        leader,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str("kg"))]),
    )
    .await;
    let g = &d.groups[0];
    assert_eq!(
        (&*g.group_state, &*g.protocol_type, &*g.protocol_data),
        ("Stable", "consumer", "range")
    );
    assert_eq!(g.members.len(), 2);
    let l: ListGroupsResponse =
        call(leader, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).await;
    assert!(l
        .groups
        .iter()
        .any(|g| &*g.group_id.0 == "kg" && &*g.protocol_type == "consumer"));
    // The leader leaves: the follower's heartbeat says rebalance.
    let lv: LeaveGroupResponse = call(
        leader,
        ApiKey::LeaveGroup,
        5,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("kg")))
            .with_members(vec![leave_group_request::MemberIdentity::default()
                .with_member_id(StrBytes::from_string(lid.clone()))]),
    )
    .await;
    assert_eq!((lv.error_code, lv.members[0].error_code), (0, 0));
    let h: HeartbeatResponse = call(follower, ApiKey::Heartbeat, 4, &hb(&fid, gen)).await;
    assert_eq!(h.error_code, 27);
    b.stop().await;
}

#[tokio::test]
async fn offset_delete_removes_an_idle_groups_offsets() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut s, "od", 2).await;
    let group = || GroupId(StrBytes::from_static_str("odg"));
    // A standalone commit (no members): generation -1, empty member id.
    let r: OffsetCommitResponse = call(
        &mut s,
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(group())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name("od"))
                    .with_partitions(
                        (0..2)
                            .map(|p| {
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(5)
                            })
                            .collect(),
                    ),
            ]),
    )
    .await;
    assert!(
        r.topics[0].partitions.iter().all(|p| p.error_code == 0),
        "{r:?}"
    );
    let d: OffsetDeleteResponse = call(
        &mut s,
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(group())
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name("od"))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ]),
    )
    .await;
    assert_eq!((d.error_code, d.topics[0].partitions[0].error_code), (0, 0));
    let of: OffsetFetchResponse = call(
        &mut s,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(group())
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(name("od"))
                    .with_partition_indexes(vec![0, 1]),
            ])),
    )
    .await;
    let offsets: Vec<(i32, i64)> = of.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(offsets, vec![(0, -1), (1, 5)]);
    // An unknown group.
    let d: OffsetDeleteResponse = call(
        &mut s,
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default().with_group_id(GroupId(StrBytes::from_static_str("nope"))),
    )
    .await;
    assert_eq!(d.error_code, 69);
    b.stop().await;
}

#[tokio::test]
async fn delete_records_moves_the_log_start_for_fetch_and_list_offsets() {
    let b = start().await;
    let mut s = TcpStream::connect(b.kafka).await.unwrap();
    create(&mut s, "dr", 1).await;
    for i in 0..5i64 {
        let r: ProduceResponse = call(
            &mut s,
            ApiKey::Produce,
            9,
            &produce("dr", 0, -1, batch(&[(i, b"k", b"v", &[])])),
        )
        .await;
        assert_eq!(r.responses[0].partition_responses[0].base_offset, i);
    }
    let del = |offset: i64| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(name("dr"))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(offset),
                ])])
    };
    let r: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &del(3)).await;
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 3));
    // Past the high watermark: refused.
    let r: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &del(9)).await;
    assert_eq!(r.topics[0].partitions[0].error_code, 1);
    // Reads below the start are out of range; earliest is the new start.
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch_by_name("dr", 1, 0)).await;
    let p = &f.responses[0].partitions[0];
    assert_eq!((p.error_code, p.log_start_offset), (1, 3));
    let f: FetchResponse = call(&mut s, ApiKey::Fetch, 12, &fetch_by_name("dr", 3, 0)).await;
    assert_eq!(f.responses[0].partitions[0].error_code, 0);
    let lo: ListOffsetsResponse = call(
        &mut s,
        ApiKey::ListOffsets,
        7,
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(name("dr"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-2),
                ])]),
    )
    .await;
    assert_eq!(lo.topics[0].partitions[0].offset, 3);
    // -1: up to the high watermark.
    let r: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, 2, &del(-1)).await;
    assert_eq!(r.topics[0].partitions[0].low_watermark, 5);
    b.stop().await;
}
