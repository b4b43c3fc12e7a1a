//! The client library against the real `sluiced`: round trip, replay, admin.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TestBroker;
use sluice::partitioner::partition_for_key;
use sluice::{
    Admin, ClientConfig, ClientError, Consumer, ConsumerRecord, ErrorCode, OffsetSpec, Producer,
    ProducerConfig, Record, SeekTo,
};

/// Reads exactly `n` records (bounded by a generous timeout per record).
async fn read_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("no record after {} of {n}", out.len()))
            .expect("partitions are assigned")
            .expect("consume");
        out.push(r);
    }
    out
}

fn value_for(i: u32) -> Bytes {
    // Varying sizes (0..=300 bytes) and every byte value.
    Bytes::from(
        (0..(i % 301))
            .map(|j| (i.wrapping_mul(31).wrapping_add(j)) as u8)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_100k_records_with_keys_and_headers() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("rt", 3, Vec::new())
        .await
        .expect("create");

    const N: u32 = 100_000;
    let producer = Producer::with_config(
        ClientConfig::new(addr.clone()),
        ProducerConfig {
            batch_bytes: 256 * 1024,
            ..ProducerConfig::default()
        },
    );
    let topic: Arc<str> = Arc::from("rt");
    let mut deliveries = Vec::with_capacity(N as usize);
    for i in 0..N {
        let record = Record {
            topic: topic.clone(),
            key: Some(Bytes::from(format!("key-{}", i % 1000))),
            value: Some(value_for(i)),
            headers: vec![
                ("seq".to_string(), Bytes::from(i.to_be_bytes().to_vec())),
                ("empty".to_string(), Bytes::new()),
            ],
            timestamp: Some(1_700_000_000_000 + i64::from(i)),
            partition: None,
        };
        deliveries.push(producer.enqueue(record).await.expect("enqueue"));
    }
    producer.flush().await;
    let mut acked: HashMap<(u32, u64), u32> = HashMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let (p, o) = d.await.expect("delivered");
        let key = format!("key-{}", i as u32 % 1000);
        assert_eq!(
            p,
            partition_for_key(key.as_bytes(), 3),
            "key {key} on the wrong partition"
        );
        assert!(
            acked.insert((p, o), i as u32).is_none(),
            "offset {p}/{o} acknowledged twice"
        );
    }
    producer.close().await;

    let info = admin.describe_topic("rt").await.expect("describe");
    let total: u64 = info
        .partitions
        .iter()
        .map(|p| p.end_offset - p.start_offset)
        .sum();
    assert_eq!(total, u64::from(N));

    let mut consumer = Consumer::new(addr);
    consumer.assign((0..3).map(|p| ("rt".to_string(), p)).collect());
    let records = read_n(&mut consumer, N as usize).await;
    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    for r in &records {
        if let Some(prev) = last_offset.insert(r.partition, r.offset) {
            assert!(
                r.offset > prev,
                "offsets go backwards on partition {}",
                r.partition
            );
        }
        let i = *acked
            .get(&(r.partition, r.offset))
            .unwrap_or_else(|| panic!("unexpected record at {}/{}", r.partition, r.offset));
        assert_eq!(&*r.topic, "rt");
        assert_eq!(
            r.key.as_deref(),
            Some(format!("key-{}", i % 1000).as_bytes())
        );
        assert_eq!(
            r.value.as_deref(),
            Some(&value_for(i)[..]),
            "value of record {i}"
        );
        assert_eq!(r.timestamp, 1_700_000_000_000 + i64::from(i));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[0].0, "seq");
        assert_eq!(&r.headers[0].1[..], &i.to_be_bytes()[..]);
        assert_eq!(r.headers[1], ("empty".to_string(), Bytes::new()));
    }
    // Nothing more arrives.
    let extra = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(extra.is_err(), "unexpected extra record: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_offset_and_from_timestamp() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("replay", 1, Vec::new())
        .await
        .expect("create");
    let producer = Producer::new(addr.clone());
    let base = 1_700_000_000_000i64;
    let mut deliveries = Vec::new();
    for i in 0..300i64 {
        let r = Record::new("replay", format!("v{i}")).timestamp(base + i * 10);
        deliveries.push(producer.enqueue(r).await.expect("enqueue"));
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.expect("ack"), (0, i as u64));
    }

    let mut consumer = Consumer::new(addr.clone());
    consumer.assign(vec![("replay".to_string(), 0)]);
    // From an offset.
    consumer
        .seek("replay", 0, SeekTo::Offset(123))
        .expect("seek");
    let got = read_n(&mut consumer, 5).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![123, 124, 125, 126, 127]
    );
    assert_eq!(got[0].value.as_deref(), Some(&b"v123"[..]));
    // From a timestamp: the first record at or after it (t = base + 2000 is record 200).
    consumer
        .seek("replay", 0, SeekTo::Timestamp(base + 1995))
        .expect("seek");
    let got = read_n(&mut consumer, 100).await;
    assert_eq!(got[0].offset, 200);
    assert_eq!(got[0].timestamp, base + 2000);
    assert_eq!(got[99].value.as_deref(), Some(&b"v299"[..]));
    // Earliest again.
    consumer.seek("replay", 0, SeekTo::Earliest).expect("seek");
    assert_eq!(read_n(&mut consumer, 1).await[0].offset, 0);
    // Latest: only new records.
    consumer.seek("replay", 0, SeekTo::Latest).expect("seek");
    // Resolve "latest" before producing (a bounded poll, not a sleep), so the
    // new record is the first one after it however slow the machine is.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while consumer.position("replay", 0).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "latest never resolved"
        );
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
            panic!("a record before any was produced: {r:?}");
        }
    }
    assert_eq!(consumer.position("replay", 0), Some(300));
    let next = tokio::spawn(async move { read_n(&mut consumer, 1).await });
    producer
        .send(Record::new("replay", "fresh"))
        .await
        .expect("send");
    let got = tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .expect("long poll woke")
        .expect("task");
    assert_eq!(got[0].offset, 300);
    assert_eq!(got[0].value.as_deref(), Some(&b"fresh"[..]));

    // The admin view of the same lookups.
    // The broker's timestamp lookup may answer with the start of the batch that
    // holds record 200 (the consumer then skips the older records of that batch).
    let by_ts = admin
        .list_offsets("replay", 0, OffsetSpec::Timestamp(base + 1995))
        .await
        .expect("list");
    assert!(by_ts.offset <= 200, "{by_ts:?}");
    let past_end = admin
        .list_offsets(
            "replay",
            0,
            OffsetSpec::Timestamp(common::now_ms() + 86_400_000),
        )
        .await
        .expect("list");
    assert_eq!(past_end.offset, 301);
    assert_eq!(
        admin
            .list_offsets("replay", 0, OffsetSpec::Earliest)
            .await
            .expect("list")
            .offset,
        0
    );
    assert_eq!(
        admin
            .list_offsets("replay", 0, OffsetSpec::Latest)
            .await
            .expect("list")
            .offset,
        301
    );
    // Seeking a partition that is not assigned is refused.
    let mut other = Consumer::new(addr);
    assert!(matches!(
        other.seek("replay", 0, SeekTo::Earliest),
        Err(ClientError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_topic_lifecycle_and_errors() {
    let broker = TestBroker::start();
    let admin = Admin::connect(broker.addr.to_string())
        .await
        .expect("admin");
    admin
        .create_topic("life", 2, vec![("retention.ms".into(), "60000".into())])
        .await
        .expect("create");
    let err = admin.create_topic("life", 2, Vec::new()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists));
    let topics = admin.list_topics().await.expect("list");
    assert!(topics
        .iter()
        .any(|t| t.name == "life" && t.partitions.len() == 2));
    let info = admin.describe_topic("life").await.expect("describe");
    assert_eq!(info.partitions.len(), 2);
    assert!(
        info.configs
            .iter()
            .any(|(k, v)| k == "retention.ms" && v == "60000"),
        "{:?}",
        info.configs
    );
    admin.delete_topic("life").await.expect("delete");
    let err = admin.describe_topic("life").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopicOrPartition));
    let err = admin.delete_topic("life").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopicOrPartition));
    // Unreachable broker: a clear error, not a hang.
    let port = broker.addr.port();
    drop(admin);
    drop(broker);
    let err = Admin::connect(format!("127.0.0.1:{port}"))
        .await
        .err()
        .expect("broker is gone");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("broker unreachable at 127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_keys_and_values_share_the_fetched_buffer() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let producer = Producer::new(addr.clone());
    for i in 0..10 {
        producer
            .send(
                Record::new("zc", format!("value-{i}"))
                    .key(format!("k{i}"))
                    .partition(0),
            )
            .await
            .expect("send (auto-created topic)");
    }
    let mut consumer = Consumer::new(addr);
    consumer.assign(vec![("zc".to_string(), 0)]);
    let records = read_n(&mut consumer, 10).await;
    // Slices of one fetched buffer lie inside one allocation, back to back with
    // the record framing: the value of record i starts right after its key.
    let k = records[0].key.as_ref().expect("key");
    let v = records[0].value.as_ref().expect("value");
    let k_end = k.as_ptr() as usize + k.len();
    let v_start = v.as_ptr() as usize;
    assert!(
        v_start > k_end && v_start - k_end <= 5,
        "value is not a slice of the fetched batch"
    );
    let last = records[9].value.as_ref().expect("value");
    assert!(
        last.as_ptr() as usize > v_start,
        "records are not slices of one buffer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_none_and_durable_both_deliver() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    for (topic, acks) in [
        ("fire", sluice::Acks::None),
        ("safe", sluice::Acks::Durable),
    ] {
        // Created up front: with acks = none nothing says when an auto-create happened.
        admin
            .create_topic(topic, 1, Vec::new())
            .await
            .expect("create");
        let producer = Producer::with_config(
            ClientConfig::new(addr.clone()),
            ProducerConfig {
                acks,
                ..ProducerConfig::default()
            },
        );
        let mut deliveries = Vec::new();
        for i in 0..100 {
            let r = Record::new(topic, format!("{i}")).partition(0);
            deliveries.push(producer.enqueue(r).await.expect("enqueue"));
        }
        producer.close().await;
        for (i, d) in deliveries.into_iter().enumerate() {
            let (p, o) = d.await.expect("delivered");
            assert_eq!(p, 0);
            if acks == sluice::Acks::None {
                assert_eq!(o, sluice::UNKNOWN_OFFSET);
            } else {
                assert_eq!(o, i as u64);
            }
        }
        let mut consumer = Consumer::new(addr.clone());
        consumer.assign(vec![(topic.to_string(), 0)]);
        let got = read_n(&mut consumer, 100).await;
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.value.as_deref(), Some(format!("{i}").as_bytes()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_list_skips_addresses_that_do_not_answer() {
    let broker = TestBroker::start();
    // A port nobody listens on: connects are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let list = format!("{dead}, {}", broker.addr);
    let admin = Admin::connect(list.clone())
        .await
        .expect("second address answers");
    admin
        .create_topic("listed", 1, Vec::new())
        .await
        .expect("create");
    let producer = Producer::new(list.clone());
    let (partition, offset) = producer
        .send(Record::new("listed", "v"))
        .await
        .expect("produce through the list");
    assert_eq!((partition, offset), (0, 0));
    producer.close().await;
    let err = Admin::connect(format!("{dead},{dead}"))
        .await
        .err()
        .expect("nothing answers");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("{dead},{dead}")), "{err}");
}
