//! Codec benchmarks: request decode of a ~1 MB Produce frame, chunked encode of
//! a Fetch response with a 1 MB payload, building and iterating batches.
//!
//! Run: `cargo bench --bench codec`. Before each benchmark, the allocations of
//! one iteration are counted with a counting global allocator and printed to
//! stderr (the hard zero-allocation assertions live in
//! `crates/sluice-protocol/tests/alloc.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_protocol::batch::{RecordBatch, RecordBatchBuilder};
use sluice_protocol::*;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only adds an atomic counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn report_allocs(name: &str, records: usize, mut f: impl FnMut()) {
    f(); // warm up buffers
    let before = ALLOCS.load(Ordering::Relaxed);
    f();
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!("allocations: {name}: {n} per iteration ({records} records)");
}

const VALUE: [u8; 1000] = [0x5a; 1000];

fn batch_of(records: usize) -> Bytes {
    let mut b = RecordBatchBuilder::with_capacity(records * 1024 + 64);
    for i in 0..records {
        b.push(1_700_000_000_000 + i as i64, None, Some(&VALUE), &[]);
    }
    b.finish()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

fn bench_decode_produce(c: &mut Criterion) {
    let records = batch_of(1000);
    let req = Request::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 30_000,
        topics: vec![ProduceTopic {
            name: "bench".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records,
            }],
        }],
    });
    let mut frame = BytesMut::new();
    encode_request(1, "bench", &req, &mut frame);
    let payload = frame.freeze().slice(4..);
    report_allocs("decode_request 1 MB produce", 1000, || {
        black_box(decode_request(payload.clone()).ok());
    });
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("decode_request_produce_1mb", |b| {
        b.iter(|| black_box(decode_request(black_box(payload.clone())).ok()))
    });
    g.finish();
}

/// The Kafka front end's decode of a 1 MB Produce v9 (header parse, body
/// decode with the patched kafka-protocol): per request, not per record.
fn bench_kafka_parse_produce(c: &mut Criterion) {
    use kafka_protocol::messages::{produce_request, ProduceRequest as KProduce, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let body = KProduce::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch_of(1000))),
            ])]);
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1, 0, 5]);
    frame.extend_from_slice(b"bench");
    frame.extend_from_slice(&[0]);
    body.encode(&mut frame, 9).expect("encodes");
    let payload = frame.freeze();
    report_allocs("sluice_kafka::parse_frame 1 MB produce v9", 1000, || {
        black_box(sluice_kafka::parse_frame(payload.clone()).ok());
    });
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("kafka_parse_frame_produce_1mb", |b| {
        b.iter(|| black_box(sluice_kafka::parse_frame(black_box(payload.clone())).ok()))
    });
    g.finish();
}

fn bench_encode_fetch(c: &mut Criterion) {
    let resp = Response::Fetch(FetchResponse {
        topics: vec![FetchTopicResponse {
            name: "bench".into(),
            partitions: vec![FetchPartitionResponse {
                partition: 0,
                error: ErrorCode::None,
                high_watermark: 1000,
                log_start_offset: 0,
                records: batch_of(1000),
            }],
        }],
    });
    let mut out = Vec::with_capacity(8);
    report_allocs("encode_response_chunks 1 MB fetch", 1000, || {
        out.clear();
        encode_response_chunks(1, &resp, &mut out);
    });
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(1_000_000));
    g.bench_function("encode_response_chunks_fetch_1mb", |b| {
        b.iter(|| {
            out.clear();
            encode_response_chunks(1, black_box(&resp), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

fn bench_builder(c: &mut Criterion) {
    let mut builder = RecordBatchBuilder::with_capacity(128 * 1024);
    report_allocs("RecordBatchBuilder 100 x 1000 B", 100, || {
        for i in 0..100 {
            builder.push(i, None, Some(&VALUE), &[]);
        }
        black_box(builder.finish());
    });
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(100 * 1000));
    g.bench_function("builder_100x1000", |b| {
        b.iter(|| {
            for i in 0..100 {
                builder.push(i, None, Some(black_box(&VALUE)), &[]);
            }
            black_box(builder.finish())
        })
    });
    g.finish();
}

fn bench_iterate(c: &mut Criterion) {
    let bytes = batch_of(100);
    let batch = RecordBatch::parse(&bytes).expect("valid batch");
    let sum = |batch: &RecordBatch| {
        let mut n = 0usize;
        for r in batch.records() {
            n += r.map(|r| r.value.map_or(0, <[u8]>::len)).unwrap_or(0);
        }
        n
    };
    report_allocs("iterate 100 records", 100, || {
        black_box(sum(&batch));
    });
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(100));
    g.bench_function("iterate_100_records", |b| {
        b.iter(|| black_box(sum(black_box(&batch))))
    });
    g.bench_function("validate_100_records", |b| {
        b.iter(|| black_box(batch::validate(black_box(&bytes)).is_ok()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode_produce, bench_kafka_parse_produce, bench_encode_fetch, bench_builder, bench_iterate
}
criterion_main!(benches);
