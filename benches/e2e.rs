//! End-to-end produce -> fetch over loopback with an in-process broker.
//!
//! The broker (`sluiced::Server`) runs in this process on
//! `127.0.0.1:0` with a temp data dir; the client talks to it over real TCP.
//! Benchmarks:
//! - `e2e/produce_then_fetch/1000x1KiB`: enqueue 1000 records of 1 KiB,
//!   wait for all acknowledgements (acks = leader), then consume the same
//!   1000 records (throughput in bytes).
//! - `e2e/send_round_trip/1KiB`: one record sent and acknowledged (linger 0),
//!   i.e. produce latency at low load.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::{ClientConfig, Consumer, Producer, ProducerConfig, Record, SeekTo};
use sluice_broker::ConfigLayer;
use sluiced::Server;
use tokio_util::sync::CancellationToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

struct InProcessBroker {
    addr: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start_broker() -> InProcessBroker {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ConfigLayer {
        data_dir: Some(dir.path().join("data")),
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        http_listen: Some("127.0.0.1:0".parse().expect("addr")),
        kafka_listen: Some("127.0.0.1:0".into()),
        ..ConfigLayer::default()
    }
    .resolve()
    .expect("broker config");
    let server = Server::bind(config).await.expect("bind broker");
    let addr = server.native_addr().to_string();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(shutdown.clone()));
    InProcessBroker {
        addr,
        shutdown,
        _dir: dir,
    }
}

fn bench_e2e(c: &mut Criterion) {
    let rt = runtime();
    let broker = rt.block_on(start_broker());
    let topic: Arc<str> = Arc::from("e2e");
    let value = Bytes::from(vec![42u8; 1024]);

    let producer = rt.block_on(async {
        Producer::with_config(
            ClientConfig::new(broker.addr.clone()),
            ProducerConfig {
                linger: Duration::ZERO,
                ..ProducerConfig::default()
            },
        )
    });
    // Create the topic (auto-created on first produce) and position a consumer at its end.
    rt.block_on(producer.send(Record::new(topic.clone(), value.clone()).partition(0)))
        .expect("first send");
    let mut consumer = rt.block_on(async {
        let mut c = Consumer::new(broker.addr.clone());
        c.assign(vec![("e2e".to_string(), 0)]);
        c.seek("e2e", 0, SeekTo::Offset(1)).expect("seek");
        c
    });

    let mut group = c.benchmark_group("e2e");
    const N: usize = 1000;
    group.throughput(Throughput::Bytes((N * value.len()) as u64));
    group.bench_function("produce_then_fetch/1000x1KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut deliveries = Vec::with_capacity(N);
                for _ in 0..N {
                    let r = Record {
                        topic: topic.clone(),
                        value: Some(value.clone()),
                        partition: Some(0),
                        ..Record::default()
                    };
                    deliveries.push(producer.enqueue(r).await.expect("enqueue"));
                }
                for d in deliveries {
                    d.await.expect("ack");
                }
                for _ in 0..N {
                    let r = consumer.next().await.expect("assigned").expect("record");
                    assert_eq!(r.value.as_ref().map(|v| v.len()), Some(value.len()));
                }
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_round_trip/1KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                producer
                    .send(Record::new(topic.clone(), value.clone()).partition(0))
                    .await
                    .expect("send")
            })
        })
    });
    group.finish();
    broker.shutdown.cancel();
}

criterion_group!(benches, bench_e2e);
criterion_main!(benches);
