//! Property tests: decoders fed arbitrary or mutated bytes never panic, and
//! encode/decode round-trips random messages.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sluice_protocol::batch::{batches, validate, RecordBatch, RecordBatchBuilder};
use sluice_protocol::*;
use tokio_util::codec::Decoder;

fn exercise_batches(bytes: &Bytes) {
    let _ = validate(bytes);
    for b in batches(bytes).take(64) {
        let Ok(b) = b else { break };
        let _ = b.validate();
        for r in b.records().take(10_000) {
            let Ok(r) = r else { break };
            for h in r.headers().take(10_000) {
                if h.is_err() {
                    break;
                }
            }
        }
    }
}

fn exercise_all(input: &[u8]) {
    let payload = Bytes::copy_from_slice(input);
    let _ = decode_request(payload.clone());
    for key in ApiKey::ALL {
        let _ = decode_response(*key, payload.clone());
    }
    let mut src = BytesMut::from(input);
    let mut codec = FrameCodec::new(4096);
    while let Ok(Some(frame)) = codec.decode(&mut src) {
        let _ = decode_request(frame);
    }
    exercise_batches(&payload);
}

fn sample_batch(n: usize) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    for i in 0..n {
        b.push(
            1_700_000_000_000 + i as i64,
            Some(b"key"),
            Some(b"some value"),
            &[("h", b"x")],
        );
    }
    b.finish()
}

fn valid_frames() -> Vec<(Option<ApiKey>, Vec<u8>)> {
    let reqs = vec![
        Request::ApiVersions,
        Request::Metadata(MetadataRequest {
            topics: vec!["t".into()],
        }),
        Request::Produce(ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 1000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: sample_batch(3),
                }],
            }],
        }),
        Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: "t".into(),
                partitions: vec![ListOffsetsPartition {
                    partition: 0,
                    spec: OffsetSpec::Latest,
                }],
            }],
        }),
    ];
    let mut out = Vec::new();
    for r in &reqs {
        let mut b = BytesMut::new();
        encode_request(1, "fuzz", r, &mut b);
        out.push((None, b[4..].to_vec()));
    }
    let resp = Response::Fetch(FetchResponse {
        topics: vec![FetchTopicResponse {
            name: "t".into(),
            partitions: vec![FetchPartitionResponse {
                partition: 0,
                error: ErrorCode::None,
                high_watermark: 3,
                log_start_offset: 0,
                records: sample_batch(3),
            }],
        }],
    });
    let mut b = BytesMut::new();
    encode_response(2, &resp, &mut b);
    out.push((Some(ApiKey::Fetch), b[4..].to_vec()));
    out
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._é-]{0,12}"
}

fn produce_request() -> impl Strategy<Value = Request> {
    (
        prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::Durable)],
        any::<u32>(),
        proptest::collection::vec(
            (
                name(),
                proptest::collection::vec((any::<u32>(), 0usize..4), 0..3),
            ),
            0..3,
        ),
    )
        .prop_map(|(acks, timeout_ms, topics)| {
            Request::Produce(ProduceRequest {
                acks,
                timeout_ms,
                topics: topics
                    .into_iter()
                    .map(|(name, parts)| ProduceTopic {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|(partition, n)| ProducePartition {
                                partition,
                                records: sample_batch(n),
                            })
                            .collect(),
                    })
                    .collect(),
            })
        })
}

fn other_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::ApiVersions),
        proptest::collection::vec(name(), 0..4)
            .prop_map(|topics| Request::Metadata(MetadataRequest { topics })),
        proptest::collection::vec(name(), 0..4)
            .prop_map(|topics| Request::DeleteTopics(DeleteTopicsRequest { topics })),
        proptest::collection::vec(
            (
                name(),
                any::<u32>(),
                proptest::collection::vec((name(), name()), 0..3)
            ),
            0..3
        )
        .prop_map(|t| Request::CreateTopics(CreateTopicsRequest {
            topics: t
                .into_iter()
                .map(|(name, partitions, configs)| CreateTopic {
                    name,
                    partitions,
                    configs
                })
                .collect(),
        })),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(
                (
                    name(),
                    proptest::collection::vec((any::<u32>(), any::<u64>(), any::<u32>()), 0..3)
                ),
                0..3
            )
        )
            .prop_map(|(max_wait_ms, min_bytes, max_bytes, t)| Request::Fetch(
                FetchRequest {
                    max_wait_ms,
                    min_bytes,
                    max_bytes,
                    topics: t
                        .into_iter()
                        .map(|(name, ps)| FetchTopic {
                            name,
                            partitions: ps
                                .into_iter()
                                .map(|(partition, fetch_offset, max_bytes)| FetchPartition {
                                    partition,
                                    fetch_offset,
                                    max_bytes
                                })
                                .collect(),
                        })
                        .collect(),
                }
            )),
        proptest::collection::vec(
            (
                name(),
                proptest::collection::vec((any::<u32>(), -2i64..i64::MAX), 0..3)
            ),
            0..3
        )
        .prop_map(|t| Request::ListOffsets(ListOffsetsRequest {
            topics: t
                .into_iter()
                .map(|(name, ps)| ListOffsetsTopic {
                    name,
                    partitions: ps
                        .into_iter()
                        .map(|(partition, s)| ListOffsetsPartition {
                            partition,
                            spec: OffsetSpec::from_wire(s).unwrap(),
                        })
                        .collect(),
                })
                .collect(),
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise_all(&input);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..5,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let frames = valid_frames();
        let (key, mut bytes) = frames[which % frames.len()].clone();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        exercise_all(&bytes);
        if let Some(k) = key {
            let _ = decode_response(k, Bytes::from(bytes));
        }
    }

    #[test]
    fn mutated_batches_never_panic_and_crc_catches_flips(
        n in 1usize..6,
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let good = sample_batch(n);
        let mut v = good.to_vec();
        let i = at.index(v.len());
        v[i] ^= xor;
        let bad = Bytes::from(v);
        exercise_batches(&bad);
        // Bytes 0..12 (base offset, length) and 12..16 (leader epoch) are outside the CRC,
        // and byte 16 is the magic; a flip anywhere from 17 on must fail validation.
        if i >= 17 {
            prop_assert!(validate(&bad).is_err());
        }
    }

    #[test]
    fn random_requests_round_trip(
        req in prop_oneof![produce_request(), other_request()],
        cid in any::<u32>(),
        client in name(),
    ) {
        let mut b = BytesMut::new();
        encode_request(cid, &client, &req, &mut b);
        let mut codec = FrameCodec::default();
        let frame = codec.decode(&mut b).unwrap().unwrap();
        prop_assert!(b.is_empty());
        let (h, got) = decode_request(frame).unwrap();
        prop_assert_eq!(h.correlation_id, cid);
        prop_assert_eq!(h.client_id, client);
        prop_assert_eq!(got, req);
    }
}

#[test]
fn records_iterate_from_random_batch_views() {
    // A batch parsed from the middle of a larger buffer still iterates correctly.
    let a = sample_batch(2);
    let b = sample_batch(5);
    let mut all = BytesMut::new();
    all.extend_from_slice(&a);
    all.extend_from_slice(&b);
    let all = all.freeze();
    let second = RecordBatch::parse(&all.slice(a.len()..)).unwrap();
    assert_eq!(second.records().count(), 5);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// However the byte stream is split into reads, the codec yields exactly the frames sent.
    #[test]
    fn codec_reassembles_frames_across_any_split(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        use tokio_util::codec::Encoder;
        let mut codec = FrameCodec::new(300);
        let mut stream = BytesMut::new();
        for p in &payloads {
            codec.encode(Bytes::copy_from_slice(p), &mut stream).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort_unstable();
        let mut src = BytesMut::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for p in points {
            src.extend_from_slice(&stream[prev..p]);
            prev = p;
            while let Some(frame) = codec.decode(&mut src).unwrap() {
                got.push(frame.to_vec());
            }
        }
        prop_assert!(src.is_empty());
        prop_assert_eq!(got, payloads);
    }
}
