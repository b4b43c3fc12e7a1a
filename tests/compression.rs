//! Compressed batches against the real `sluiced`: every codec is accepted,
//! stored verbatim and served as sent; the native client and the CLI write
//! them and the consumer reads the records back; broken payloads and
//! decompression bombs are refused at produce with nothing appended.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use sluice::{Consumer, ConsumerRecord, Producer, ProducerConfig, Record};
use sluice_protocol::batch::{
    batches, compute_crc, validate, BatchHeader, Compression, RecordBatch, RecordBatchBuilder,
    HEADER_LEN, LOG_OVERHEAD,
};
use sluice_protocol::*;

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// A compressible batch of `n` records with keys, headers and values.
fn compressed_batch(codec: Compression, n: usize) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    b.set_compression(codec);
    let ts = now_ms();
    for i in 0..n {
        let key = format!("key-{i}");
        let value = format!("value {i} of a fairly repetitive payload, {codec} {codec} {codec}");
        b.push(
            ts + i as i64,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[("n", &i.to_be_bytes())],
        );
    }
    let bytes = b.finish();
    assert_eq!(
        BatchHeader::parse(&bytes).unwrap().compression().unwrap(),
        codec,
        "test batch must compress"
    );
    bytes
}

/// Re-signs a hand-modified batch so only the targeted check can fail.
fn resign(v: &mut [u8]) {
    let crc = compute_crc(v);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn every_codec_is_stored_verbatim_and_served_as_sent() {
    let b = TestBroker::start();
    let mut c = b.client();
    for codec in CODECS {
        let topic = format!("raw-{codec}");
        assert_eq!(c.create_topic(&topic, 1, &[]), ErrorCode::None);
        let first = batch_of(&[b"plain first"]);
        assert_eq!(
            c.produce(&topic, 0, first.clone(), Acks::Durable).error,
            ErrorCode::None
        );
        let sent = compressed_batch(codec, 200);
        let p = c.produce(&topic, 0, sent.clone(), Acks::Durable);
        assert_eq!(p.error, ErrorCode::None, "{codec}");
        assert_eq!(p.base_offset, 1);
        let f = c.fetch(&topic, 0, 1);
        assert_eq!(f.error, ErrorCode::None);
        let stored = RecordBatch::parse(&f.records).unwrap();
        // Byte for byte what was sent, but for the base offset the broker
        // assigns (outside the CRC).
        assert_eq!(stored.as_bytes().len(), sent.len(), "{codec}");
        assert_eq!(stored.header().base_offset, 1);
        assert_eq!(&stored.as_bytes()[8..], &sent[8..], "{codec}");
        validate(stored.as_bytes()).unwrap();
        let open = stored.decompress(1 << 24).unwrap();
        let records: Vec<_> = open.records().map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 200);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, 1 + i as i64);
            assert_eq!(r.key, Some(format!("key-{i}").as_bytes()));
        }
        assert_eq!(
            c.list_offset(&topic, 0, OffsetSpec::Latest),
            (ErrorCode::None, 201, -1)
        );
        // The uncompressed batch before it is untouched.
        let f = c.fetch(&topic, 0, 0);
        assert_eq!(&f.records[8..first.len()], &first[8..]);
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_client_round_trips_every_codec() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    const N: usize = 3_000;
    let value = |i: usize| -> Bytes {
        Bytes::from(
            (0..(i % 500))
                .map(|j| if j % 7 == 0 { (i + j) as u8 } else { b'a' })
                .collect::<Vec<u8>>(),
        )
    };
    for codec in CODECS {
        let name = format!("client-{codec}");
        let topic: Arc<str> = Arc::from(name.as_str());
        let producer = Producer::with_config(
            sluice::ClientConfig::new(addr.clone()),
            ProducerConfig {
                compression: codec,
                batch_bytes: 64 * 1024,
                ..ProducerConfig::default()
            },
        );
        let mut deliveries = Vec::with_capacity(N);
        for i in 0..N {
            let record = Record {
                topic: topic.clone(),
                key: (i % 3 != 0).then(|| Bytes::from(format!("k{i}"))),
                value: (i % 11 != 0).then(|| value(i)),
                headers: vec![("i".to_string(), Bytes::from(i.to_be_bytes().to_vec()))],
                timestamp: None,
                partition: Some(0),
            };
            deliveries.push(producer.enqueue(record).await.expect("enqueue"));
        }
        producer.flush().await;
        for (i, d) in deliveries.into_iter().enumerate() {
            let (p, o) = d.await.expect("delivered");
            assert_eq!((p, o), (0, i as u64), "{codec}");
        }
        producer.close().await;

        // The broker holds compressed batches with this codec.
        let mut c = broker.client();
        let f = c.fetch(&name, 0, 0);
        let mut seen = 0;
        for b in batches(&f.records) {
            let b = b.unwrap();
            assert_eq!(b.header().compression().unwrap(), codec);
            seen += 1;
        }
        assert!(seen > 0);

        let mut consumer = Consumer::new(addr.clone());
        consumer.assign(vec![(name.clone(), 0)]);
        let records = read_n(&mut consumer, N).await;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "{codec}");
            assert_eq!(
                r.key.as_deref(),
                (i % 3 != 0)
                    .then(|| format!("k{i}"))
                    .as_deref()
                    .map(str::as_bytes),
                "{codec} key {i}"
            );
            assert_eq!(
                r.value,
                (i % 11 != 0).then(|| value(i)),
                "{codec} value {i}"
            );
            assert_eq!(
                r.headers,
                vec![("i".to_string(), Bytes::from(i.to_be_bytes().to_vec()))]
            );
        }
    }
}

#[test]
fn cli_produce_with_compression_writes_compressed_batches() {
    let b = TestBroker::start();
    let addr = b.addr.to_string();
    let mut input = Vec::new();
    for i in 0..500 {
        writeln!(input, "line {i} with some repeated text text text text").unwrap();
    }
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("cli-{codec}");
        let mut cmd = sluice_cli(&addr);
        cmd.args(["topic", "produce", &topic, "--compression", codec]);
        let out = process::output_within(cmd, Some(&input), Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{codec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = b.client();
        let f = c.fetch(&topic, 0, 0);
        assert_eq!(f.error, ErrorCode::None);
        let mut lines = Vec::new();
        for batch in batches(&f.records) {
            let batch = batch.unwrap();
            assert_eq!(batch.header().compression().unwrap().name(), codec);
            let open = batch.decompress(1 << 24).unwrap();
            for r in open.records() {
                lines.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
            }
        }
        let expected: Vec<String> = String::from_utf8(input.clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines, expected, "{codec}");
    }
}

#[test]
fn corrupt_compressed_payloads_and_bombs_are_refused() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("bad", 1, &[]), ErrorCode::None);
    assert_eq!(
        c.produce("bad", 0, batch_of(&[b"good"]), Acks::Leader)
            .error,
        ErrorCode::None
    );
    for codec in CODECS {
        let good = compressed_batch(codec, 100);
        // Cut the compressed stream in half, under a valid CRC.
        let mut cut = good[..HEADER_LEN + (good.len() - HEADER_LEN) / 2].to_vec();
        let len = (cut.len() - LOG_OVERHEAD) as i32;
        cut[8..12].copy_from_slice(&len.to_be_bytes());
        resign(&mut cut);
        let p = c.produce("bad", 0, cut.into(), Acks::Leader);
        assert_eq!(p.error, ErrorCode::CorruptMessage, "{codec} truncated");
        // Overwrite the middle of the stream with garbage, under a valid CRC.
        let mut garbled = good.to_vec();
        let mid = HEADER_LEN + (garbled.len() - HEADER_LEN) / 3;
        for (i, byte) in garbled[mid..mid + 24].iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(151) ^ 0x5a;
        }
        resign(&mut garbled);
        let p = c.produce("bad", 0, garbled.into(), Acks::Leader);
        // Undecodable (CORRUPT_MESSAGE), or decoded into records that break
        // the batch rules (INVALID_RECORD): zstd frames carry no checksum.
        assert!(
            matches!(
                p.error,
                ErrorCode::CorruptMessage | ErrorCode::InvalidRecord
            ),
            "{codec} garbled: {:?}",
            p.error
        );
        // The CRC still guards compressed bytes.
        let mut flipped = good.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let p = c.produce("bad", 0, flipped.into(), Acks::Leader);
        assert_eq!(p.error, ErrorCode::CorruptMessage, "{codec} crc");
        // Valid compression of records that break the rules: refused too.
        let mut wrong_count = good.to_vec();
        wrong_count[57..61].copy_from_slice(&99i32.to_be_bytes());
        wrong_count[23..27].copy_from_slice(&98i32.to_be_bytes());
        resign(&mut wrong_count);
        let p = c.produce("bad", 0, wrong_count.into(), Acks::Leader);
        assert_eq!(p.error, ErrorCode::CorruptMessage, "{codec} wrong count");
    }
    // A snappy block that declares 4 GiB: refused before any allocation.
    let mut bomb = batch_of(&[b"x"]).to_vec();
    bomb.truncate(HEADER_LEN);
    bomb.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    let len = (bomb.len() - LOG_OVERHEAD) as i32;
    bomb[8..12].copy_from_slice(&len.to_be_bytes());
    bomb[21..23].copy_from_slice(&Compression::Snappy.attribute_bits().to_be_bytes());
    resign(&mut bomb);
    let p = c.produce("bad", 0, bomb.into(), Acks::Leader);
    assert_eq!(p.error, ErrorCode::MessageTooLarge);
    // A real stream bomb: 80 MiB of zeros in a few KiB of lz4.
    let zeros = vec![0u8; 80 << 20];
    let mut stream = BytesMut::new();
    sluice_protocol::compression::compress(Compression::Lz4, &zeros, &mut stream).unwrap();
    drop(zeros);
    let mut bomb = batch_of(&[b"x"]).to_vec();
    bomb.truncate(HEADER_LEN);
    bomb.extend_from_slice(&stream);
    let len = (bomb.len() - LOG_OVERHEAD) as i32;
    bomb[8..12].copy_from_slice(&len.to_be_bytes());
    bomb[21..23].copy_from_slice(&Compression::Lz4.attribute_bits().to_be_bytes());
    resign(&mut bomb);
    assert!(bomb.len() < 1 << 20);
    let p = c.produce("bad", 0, bomb.into(), Acks::Leader);
    assert_eq!(p.error, ErrorCode::MessageTooLarge);

    assert_eq!(
        c.list_offset("bad", 0, OffsetSpec::Latest),
        (ErrorCode::None, 1, -1)
    );
    assert_eq!(c.fetch_all("bad", 0, 0), vec![(0, b"good".to_vec())]);
}
