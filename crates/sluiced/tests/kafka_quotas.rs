//! Client quotas on the Kafka listener: set with AlterClientQuotas, read
//! back with DescribeClientQuotas, and enforced by muting the connection
//! (KIP-219): a producer over its byte-rate quota runs at the quota while
//! an unthrottled producer beside it runs at full speed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_protocol::batch::RecordBatchBuilder;
use sluiced::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The throttled producer's byte-rate quota.
const QUOTA: f64 = 1_048_576.0;
/// Bytes of record payload per Produce request.
const RECORD: usize = 32 * 1024;
/// How long each producer runs, and when its measured window starts.
const RUN: Duration = Duration::from_secs(8);
const WARMUP: Duration = Duration::from_secs(3);

fn frame<R: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    cid: i32,
    client: &str,
    body: &R,
) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(cid)
        .with_client_id(Some(StrBytes::from_string(client.to_string())))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

async fn read_frame(r: &mut OwnedReadHalf, key: ApiKey, version: i16) -> (i32, Bytes) {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(40), r.read_exact(&mut len))
        .await
        .expect("a response in time")
        .expect("the connection stays open");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    r.read_exact(&mut body).await.unwrap();
    let mut b = Bytes::from(body);
    let cid = b.get_i32();
    if key.response_header_version(version) >= 1 {
        b.get_u8();
    }
    (cid, b)
}

async fn call<R: Encodable + HeaderVersion, P: Decodable>(
    addr: SocketAddr,
    key: ApiKey,
    version: i16,
    body: &R,
) -> P {
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    w.write_all(&frame(key, version, 1, "admin", body))
        .await
        .unwrap();
    let (_, mut b) = read_frame(&mut r, key, version).await;
    P::decode(&mut b, version).expect("a well-formed response")
}

fn produce_request(topic: &str) -> ProduceRequest {
    let mut b = RecordBatchBuilder::new();
    b.push(1, Some(b"k"), Some(&vec![7u8; RECORD]), &[]);
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(b.into_batch())),
            ])])
}

/// Pipelines Produce requests as `client` for [`RUN`]; returns the bytes
/// acknowledged per second after [`WARMUP`] (every answer must be clean).
async fn producer(addr: SocketAddr, client: &'static str, topic: &'static str) -> f64 {
    let (mut r, w) = TcpStream::connect(addr).await.unwrap().into_split();
    let req = frame(ApiKey::Produce, 9, 0, client, &produce_request(topic));
    let per_request = req.len();
    let stop = CancellationToken::new();
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut w: OwnedWriteHalf = w;
            // The kernel's socket buffers bound what is in flight; the
            // broker's mute stops reading, so this blocks when throttled.
            while !stop.is_cancelled() {
                tokio::select! {
                    r = w.write_all(&req) => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    let started = Instant::now();
    let mut window_bytes = 0usize;
    let mut window_start = None;
    while started.elapsed() < RUN {
        let (_, mut b) = read_frame(&mut r, ApiKey::Produce, 9).await;
        let resp = ProduceResponse::decode(&mut b, 9).unwrap();
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        if started.elapsed() >= WARMUP {
            window_start.get_or_insert_with(Instant::now);
            window_bytes += per_request;
        }
    }
    stop.cancel();
    let _ = writer.await;
    let secs = window_start.map_or(1.0, |s| s.elapsed().as_secs_f64());
    window_bytes as f64 / secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_over_its_quota_runs_at_the_quota_and_its_neighbour_at_full_speed() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::loopback(dir.path()).resolve().unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.kafka_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    // Quota for client id "slow"; a bad key is refused without changing anything.
    let entity = |c: &str| {
        alter_client_quotas_request::EntityData::default()
            .with_entity_type(StrBytes::from_static_str("client-id"))
            .with_entity_name(Some(StrBytes::from_string(c.to_string())))
    };
    let op = |k: &'static str, v: f64| {
        alter_client_quotas_request::OpData::default()
            .with_key(StrBytes::from_static_str(k))
            .with_value(v)
    };
    let set: AlterClientQuotasResponse = call(
        addr,
        ApiKey::AlterClientQuotas,
        1,
        &AlterClientQuotasRequest::default().with_entries(vec![
            alter_client_quotas_request::EntryData::default()
                .with_entity(vec![entity("slow")])
                .with_ops(vec![op("producer_byte_rate", QUOTA)]),
            alter_client_quotas_request::EntryData::default()
                .with_entity(vec![entity("other")])
                .with_ops(vec![op("request_percentage", 50.0)]),
        ]),
    )
    .await;
    assert_eq!(set.entries[0].error_code, 0, "{:?}", set.entries[0]);
    assert_eq!(
        set.entries[1].error_code, 42,
        "an unknown quota key is refused"
    );
    let described: DescribeClientQuotasResponse = call(
        addr,
        ApiKey::DescribeClientQuotas,
        1,
        &DescribeClientQuotasRequest::default(),
    )
    .await;
    let entries = described.entries.expect("entries");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].entity[0].entity_name.as_deref(), Some("slow"));
    assert_eq!(entries[0].values[0].key.as_str(), "producer_byte_rate");
    assert_eq!(entries[0].values[0].value, QUOTA);

    // Both topics exist before the clock starts (auto-created by Metadata).
    for t in ["quota-slow", "quota-fast"] {
        let _: MetadataResponse = call(
            addr,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(TopicName(StrBytes::from_static_str(t))))]))
                .with_allow_auto_topic_creation(true),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let slow = tokio::spawn(producer(addr, "slow", "quota-slow"));
    let fast = tokio::spawn(producer(addr, "fast", "quota-fast"));
    let (slow, fast) = (slow.await.unwrap(), fast.await.unwrap());
    eprintln!("throttled producer: {slow:.0} B/s (quota {QUOTA}); unthrottled: {fast:.0} B/s");
    assert!(
        (slow - QUOTA).abs() <= QUOTA * 0.10,
        "the throttled producer runs at its quota within 10 %: {slow:.0} B/s vs {QUOTA}"
    );
    assert!(
        fast > QUOTA * 5.0,
        "the unthrottled producer is not held to the quota: {fast:.0} B/s"
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
