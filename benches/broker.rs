//! Broker-core benchmarks (`sluice-broker`), below the sockets.
//!
//! Run: `cargo bench --bench broker` (about a minute; data goes to a
//! temporary directory on the same file system as `$TMPDIR`).
//!
//! - `flusher/*`: the group commit a durable produce waits on. N tasks on a
//!   2-worker runtime each append one 16 KiB batch (`acks = durable`, topic
//!   `flush = always`) and wait for its fsync; one iteration is all N
//!   acknowledged. Compare `flusher/100_producers_16KiB` with
//!   `flusher/1_producer_16KiB`: with a working group commit, 100 waiters
//!   cost a few fsyncs, not 100 (the `fsyncs/iter` line printed before the
//!   run says how many). A regression that serialises waiters shows as a
//!   ~100x drop in bytes/s.
//! - `fetch/*`: a Fetch request through the real handler (decode, dispatch,
//!   the read from the log, response assembly, encode into chunks), on a
//!   partition holding 64 MiB already: one partition x 1 MiB per request
//!   (what a catching-up consumer asks for), and 100 partitions x 10 KiB
//!   (a consumer of many quiet partitions: per-partition cost).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_broker::group::Groups;
use sluice_broker::handler::{dispatch, Context, Outcome};
use sluice_broker::{Acks, Broker, ConfigLayer, Metrics};
use sluice_group::CoordinatorConfig;
use sluice_protocol::batch::RecordBatchBuilder;
use sluice_protocol::wire::{decode_request_with_limits, encode_request, encode_response_chunks};
use sluice_protocol::{FetchPartition, FetchRequest, FetchTopic, Request};
use tokio_util::sync::CancellationToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One batch of `records` records of `size` bytes.
fn batch(records: usize, size: usize) -> Bytes {
    let mut b = RecordBatchBuilder::with_capacity(records * (size + 32));
    let value: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for i in 0..records {
        b.push(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.finish()
}

fn open_broker(dir: &std::path::Path) -> Arc<Broker> {
    let cfg = ConfigLayer {
        data_dir: Some(dir.to_path_buf()),
        ..ConfigLayer::default()
    }
    .resolve()
    .expect("config");
    Arc::new(Broker::open(&cfg, Metrics::new()).expect("broker"))
}

/// `n` producers each append one 16 KiB batch and wait until it is durable.
async fn durable_round(broker: &Arc<Broker>, n: usize, payload: &Bytes) {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let broker = Arc::clone(broker);
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let appended = broker
                .append("durable", 0, &payload, Acks::Durable)
                .expect("append");
            appended
                .durable(Duration::from_secs(30))
                .await
                .expect("durable");
        }));
    }
    for t in tasks {
        t.await.expect("producer task");
    }
}

fn bench_flusher(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open_broker(dir.path());
    broker
        .create_topic("durable", 1, &[("flush".into(), "always".into())])
        .expect("topic");
    let payload = batch(16, 1_000);
    let mut g = c.benchmark_group("flusher");
    for n in [1usize, 100] {
        // How many fsyncs one round costs (printed, not asserted).
        let before = fsyncs(&broker);
        let started = Instant::now();
        rt.block_on(durable_round(&broker, n, &payload));
        eprintln!(
            "flusher: {n} producers x 16 KiB: {} fsyncs/iter, {:?} for one round",
            fsyncs(&broker) - before,
            started.elapsed()
        );
        g.throughput(Throughput::Bytes((n * payload.len()) as u64));
        g.bench_function(
            format!("{n}_producer{}_16KiB", if n == 1 { "" } else { "s" }),
            |b| b.iter(|| rt.block_on(durable_round(&broker, n, &payload))),
        );
    }
    g.finish();
    drop(broker);
}

/// fsyncs so far, from the broker's fsync histogram.
fn fsyncs(broker: &Broker) -> u64 {
    broker
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("sluice_fsync_duration_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

struct FetchFixture {
    ctx: Context,
}

impl FetchFixture {
    /// Runs one Fetch frame as a connection would; returns the encoded size.
    async fn run(&self, payload: Bytes, out: &mut Vec<Bytes>) -> usize {
        let (header, request) =
            decode_request_with_limits(payload, self.ctx.broker.request_limits()).expect("decodes");
        let response = match dispatch(&self.ctx, &header, request) {
            Outcome::Respond(r) => Some(r),
            Outcome::NoResponse => None,
            Outcome::Deferred(f) => f.await,
        }
        .expect("a fetch is answered");
        out.clear();
        encode_response_chunks(header.correlation_id, &response, out);
        out.iter().map(Bytes::len).sum()
    }
}

fn fetch_frame(topic: &str, parts: &[(u32, u64)], per_partition: u32) -> Bytes {
    let request = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 64 << 20,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: parts
                .iter()
                .map(|&(partition, fetch_offset)| FetchPartition {
                    partition,
                    fetch_offset,
                    max_bytes: per_partition,
                })
                .collect(),
        }],
    });
    let mut buf = BytesMut::new();
    encode_request(7, "bench", &request, &mut buf);
    // Drop the u32 length prefix: the driver hands handlers the payload.
    buf.freeze().slice(4..)
}

fn bench_fetch(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open_broker(dir.path());
    let groups = Groups::open(
        dir.path(),
        Arc::clone(&broker),
        CoordinatorConfig::default(),
        1,
    )
    .expect("groups");
    broker.create_topic("one", 1, &[]).expect("topic");
    broker.create_topic("many", 100, &[]).expect("topic");
    // 64 MiB in ~256 KiB batches on "one"; 10 KiB on each of "many".
    let big = batch(256, 1_000);
    let mut offsets = Vec::new();
    for _ in 0..(64 << 20) / big.len() {
        let a = broker.append("one", 0, &big, Acks::Leader).expect("append");
        offsets.push(a.info.base_offset);
    }
    let small = batch(10, 1_000);
    for p in 0..100 {
        broker
            .append("many", p, &small, Acks::Leader)
            .expect("append");
    }
    let fixture = FetchFixture {
        ctx: Context {
            broker: Arc::clone(&broker),
            groups,
            local_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            shutdown: CancellationToken::new(),
            conn: Default::default(),
        },
    };
    let mut out = Vec::new();
    // Successive 1 MiB fetches walk the log like a catching-up consumer.
    let frames: Vec<Bytes> = offsets
        .iter()
        .step_by(4)
        .map(|&o| fetch_frame("one", &[(0, o)], 1 << 20))
        .collect();
    let one = rt.block_on(fixture.run(frames[0].clone(), &mut out));
    let many_frame = fetch_frame(
        "many",
        &(0..100).map(|p| (p, 0)).collect::<Vec<_>>(),
        10 * 1024,
    );
    let many = rt.block_on(fixture.run(many_frame.clone(), &mut out));
    eprintln!("fetch: one answer is {one} bytes (1 partition), {many} bytes (100 partitions)");
    assert!(
        one >= 1 << 20 && many >= 100 * 10_000,
        "fetches return data"
    );
    let mut g = c.benchmark_group("fetch");
    g.throughput(Throughput::Bytes(one as u64));
    let mut i = 0;
    g.bench_function("1_partition_1MiB", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(rt.block_on(fixture.run(frames[i].clone(), &mut out)))
        })
    });
    g.throughput(Throughput::Bytes(many as u64));
    g.bench_function("100_partitions_10KiB", |b| {
        b.iter(|| black_box(rt.block_on(fixture.run(many_frame.clone(), &mut out))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench_flusher, bench_fetch
}
criterion_main!(benches);
