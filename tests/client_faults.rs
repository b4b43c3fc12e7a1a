//! The client library when the broker goes away: backpressure, timeouts,
//! reconnects, and no loss of acknowledged records across a broker restart.

mod common;
mod produce_load;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fixed_port::FixedPortBroker;
use common::TestBroker;
use produce_load::BackgroundLoad;
use sluice::{
    Acks, Admin, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    Record,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_applies_backpressure_and_fails_cleanly_when_broker_stops() {
    let mut broker = TestBroker::start();
    let addr = broker.addr.to_string();
    Admin::connect(addr.clone())
        .await
        .expect("admin")
        .create_topic("bp", 1, Vec::new())
        .await
        .expect("create");
    const BUFFER: usize = 64 * 1024;
    let delivery_timeout = Duration::from_millis(1500);
    let producer = Producer::with_config(
        ClientConfig::new(addr),
        ProducerConfig {
            buffer_bytes: BUFFER,
            batch_bytes: 8 * 1024,
            linger: Duration::from_millis(1),
            delivery_timeout,
            retry_backoff: Duration::from_millis(50),
            ..ProducerConfig::default()
        },
    );
    // Warm up: metadata is cached and the connection is up.
    producer
        .send(Record::new("bp", "warm"))
        .await
        .expect("warm-up send");

    broker.kill();
    let value = Bytes::from(vec![7u8; 1000]);
    let mut deliveries = Vec::new();
    let mut blocked = false;
    for _ in 0..1000 {
        let enqueue = producer.enqueue(Record::new("bp", value.clone()));
        match tokio::time::timeout(Duration::from_millis(300), enqueue).await {
            Ok(d) => deliveries.push(d.expect("enqueue")),
            Err(_) => {
                blocked = true;
                break;
            }
        }
        assert!(
            producer.buffered_bytes() <= BUFFER,
            "buffer grew past its bound"
        );
    }
    assert!(blocked, "enqueue never blocked although the broker is down");
    assert!(
        deliveries.len() * 1000 <= BUFFER && deliveries.len() >= 30,
        "{} records buffered for a {BUFFER}-byte buffer",
        deliveries.len()
    );

    // Every buffered record fails after the delivery timeout with a clear error
    // (once one has, the broker counts as unavailable and the rest fail with that).
    let started = Instant::now();
    for d in deliveries {
        let err = tokio::time::timeout(Duration::from_secs(10), d)
            .await
            .expect("delivery resolved")
            .expect_err("broker is down");
        assert!(
            matches!(
                err,
                ClientError::DeliveryTimeout { .. } | ClientError::BrokerUnavailable { .. }
            ),
            "{err:?}"
        );
        assert!(
            matches!(
                err.root(),
                ClientError::Unreachable { .. } | ClientError::Disconnected { .. }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("delivery timed out after 1500 ms")
                || text.starts_with(
                    "broker unavailable: unreachable for more than the delivery timeout of 1500 ms"
                ),
            "{err}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // The memory came back; and since the broker has been unreachable for a
    // whole delivery timeout, a new record is refused at once instead of
    // being buffered for another timeout.
    assert_eq!(producer.buffered_bytes(), 0);
    let e = tokio::time::timeout(
        Duration::from_millis(300),
        producer.enqueue(Record::new("bp", value)),
    )
    .await
    .expect("enqueue does not wait")
    .expect_err("broker is still down");
    assert!(matches!(e, ClientError::BrokerUnavailable { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_reconnects_after_broker_restart_and_nothing_acknowledged_is_lost() {
    let mut broker = FixedPortBroker::start();
    let addr = broker.addr();
    Admin::connect(addr.clone())
        .await
        .expect("admin")
        .create_topic("restart", 1, Vec::new())
        .await
        .expect("create");
    let producer = Producer::with_config(
        ClientConfig::new(addr.clone()),
        ProducerConfig {
            acks: Acks::Durable,
            batch_bytes: 16 * 1024,
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(50),
            ..ProducerConfig::default()
        },
    );
    const N: usize = 20_000;
    let mut load = BackgroundLoad::start(&producer, "restart", N);
    load.wait_acked(3000).await;
    broker.kill();
    let at_kill = load.acked_count();
    assert!(
        at_kill < N,
        "everything was acknowledged before the restart; the test proves nothing"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.spawn();

    let failures = load.finish(&producer).await;
    assert!(
        failures.is_empty(),
        "records failed despite the reconnect: {:?}",
        &failures[..failures.len().min(3)]
    );

    // Read everything back: every acknowledged record is at its acknowledged offset.
    load.assert_all_acked_and_stored(&addr, "restart", N).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_resumes_after_broker_restart() {
    let mut broker = FixedPortBroker::start();
    let addr = broker.addr();
    // One record per batch (each send waits for its ack), and one batch per
    // fetch, so the restart really interrupts the stream of fetches.
    let producer = Producer::with_config(
        ClientConfig::new(addr.clone()),
        ProducerConfig {
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    );
    for i in 0..1000 {
        let r = Record::new("resume", format!("r{i}")).partition(0);
        producer.send(r).await.expect("acked");
    }
    let mut consumer = Consumer::with_config(
        ClientConfig::new(addr.clone()),
        ConsumerConfig {
            partition_max_bytes: 1,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(vec![("resume".to_string(), 0)]);
    let mut next_offset = 0u64;
    let mut errors = 0;
    let mut restarted = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while next_offset < 1000 {
        assert!(Instant::now() < deadline, "stuck at offset {next_offset}");
        if next_offset == 500 && !restarted {
            restarted = true;
            // Restart once, mid-stream: buffered records still come, then the
            // consumer reconnects and goes on from its position.
            broker.kill();
            broker.spawn();
        }
        match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(Ok(r))) => {
                assert_eq!(r.offset, next_offset, "no gap and no repeat");
                assert_eq!(
                    r.value.as_deref(),
                    Some(format!("r{next_offset}").as_bytes())
                );
                next_offset += 1;
            }
            Ok(Some(Err(e))) => {
                assert!(e.is_retriable(), "{e:?}");
                errors += 1;
                assert!(errors < 100, "too many errors: {e}");
            }
            Ok(None) => panic!("assignment vanished"),
            Err(_) => panic!("no record within 10 s at offset {next_offset}"),
        }
    }
    assert!(restarted);
    eprintln!("retriable errors seen across the restart: {errors}");
}
