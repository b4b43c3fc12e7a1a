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
        let _ = decode_response_version(*key, 1, payload.clone());
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
    let reqs = [
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
        Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![
                CreatePartitionsTopic {
                    name: "t".into(),
                    count: 4,
                },
                CreatePartitionsTopic {
                    name: "u".into(),
                    count: 2,
                },
            ],
        }),
        Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: "t".into(),
                changes: vec![
                    ConfigChange::set("retention.ms", "1000"),
                    ConfigChange::delete("flush"),
                ],
            }],
        }),
    ];
    let mut out = Vec::new();
    for r in reqs.iter().chain(&sample_group_requests()) {
        let mut b = BytesMut::new();
        encode_request(1, "fuzz", r, &mut b);
        out.push((None, b[4..].to_vec()));
    }
    for r in sample_group_responses() {
        let mut b = BytesMut::new();
        encode_response(3, &r, &mut b);
        out.push((r.api_key(), b[4..].to_vec()));
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

/// Makes a generated request follow the decoder's rules: valid topic names
/// (an invalid one is replaced), each topic and group id once, each partition
/// once per topic (later repeats dropped).
fn make_valid(mut req: Request) -> Request {
    use std::collections::HashSet;
    fn fix(name: &mut String, i: usize) {
        if topic_name_problem(name).is_some() {
            *name = format!("topic-{i}");
        }
    }
    fn topics<T>(v: &mut Vec<T>, name: impl Fn(&mut T) -> &mut String) {
        let mut seen = HashSet::new();
        for (i, t) in v.iter_mut().enumerate() {
            fix(name(t), i);
        }
        v.retain_mut(|t| seen.insert(name(t).clone()));
    }
    fn parts<T>(v: &mut Vec<T>, p: impl Fn(&T) -> u32) {
        let mut seen = HashSet::new();
        v.retain(|t| seen.insert(p(t)));
    }
    fn names(v: &mut Vec<String>) {
        topics(v, |s| s);
    }
    fn tps(v: &mut Vec<TopicPartitions>) {
        topics(v, |t| &mut t.topic);
        for t in v {
            parts(&mut t.partitions, |p| *p);
        }
    }
    match &mut req {
        Request::Metadata(r) => names(&mut r.topics),
        Request::DeleteTopics(r) => names(&mut r.topics),
        Request::CreateTopics(r) => topics(&mut r.topics, |t| &mut t.name),
        Request::Produce(r) => {
            topics(&mut r.topics, |t| &mut t.name);
            for t in &mut r.topics {
                parts(&mut t.partitions, |p| p.partition);
            }
        }
        Request::Fetch(r) => {
            topics(&mut r.topics, |t| &mut t.name);
            for t in &mut r.topics {
                parts(&mut t.partitions, |p| p.partition);
            }
        }
        Request::ListOffsets(r) => {
            topics(&mut r.topics, |t| &mut t.name);
            for t in &mut r.topics {
                parts(&mut t.partitions, |p| p.partition);
            }
        }
        Request::OffsetCommit(r) => {
            topics(&mut r.topics, |t| &mut t.name);
            for t in &mut r.topics {
                parts(&mut t.partitions, |p| p.partition);
            }
        }
        Request::JoinGroup(r) => names(&mut r.topics),
        Request::Heartbeat(r) => tps(&mut r.owned),
        Request::OffsetFetch(r) => tps(&mut r.topics),
        Request::DescribeGroups(r) => {
            let mut seen = HashSet::new();
            r.group_ids.retain(|g| seen.insert(g.clone()));
        }
        Request::DeleteGroups(r) => {
            let mut seen = HashSet::new();
            r.group_ids.retain(|g| seen.insert(g.clone()));
        }
        Request::CreatePartitions(r) => topics(&mut r.topics, |t| &mut t.name),
        Request::AlterConfigs(r) => {
            topics(&mut r.topics, |t| &mut t.name);
            for t in &mut r.topics {
                let mut seen = HashSet::new();
                t.changes.retain(|c| seen.insert(c.key.clone()));
            }
        }
        _ => {}
    }
    req
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

fn admin_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        proptest::collection::vec((name(), any::<u32>()), 0..4).prop_map(|t| {
            Request::CreatePartitions(CreatePartitionsRequest {
                topics: t
                    .into_iter()
                    .map(|(name, count)| CreatePartitionsTopic { name, count })
                    .collect(),
            })
        }),
        proptest::collection::vec(
            (
                name(),
                proptest::collection::vec((name(), proptest::option::of(name())), 0..4)
            ),
            0..3
        )
        .prop_map(|t| Request::AlterConfigs(AlterConfigsRequest {
            topics: t
                .into_iter()
                .map(|(name, changes)| AlterConfigsTopic {
                    name,
                    changes: changes
                        .into_iter()
                        .map(|(key, value)| ConfigChange { key, value })
                        .collect(),
                })
                .collect(),
        })),
    ]
}

fn admin_response() -> impl Strategy<Value = Response> {
    let results = proptest::collection::vec((name(), error_code(), name()), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(name, error, message)| TopicResult {
                name,
                error,
                message,
            })
            .collect::<Vec<_>>()
    });
    (any::<bool>(), results).prop_map(|(grow, topics)| {
        if grow {
            Response::CreatePartitions(CreatePartitionsResponse { topics })
        } else {
            Response::AlterConfigs(AlterConfigsResponse { topics })
        }
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
                    replication_factor: DEFAULT_REPLICATION_FACTOR,
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

/// One valid, non-trivial sample of every group request.
fn sample_group_requests() -> Vec<Request> {
    let tp = || {
        vec![
            TopicPartitions::new("t", vec![0, 3]),
            TopicPartitions::new("u", vec![]),
        ]
    };
    vec![
        Request::JoinGroup(JoinGroupRequest {
            group_id: "g".into(),
            member_id: String::new(),
            topics: vec!["t".into(), "u".into()],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 0,
            metadata: Bytes::from_static(b"meta"),
        }),
        Request::Heartbeat(HeartbeatRequest {
            group_id: "g".into(),
            member_id: "m-1".into(),
            generation: 3,
            owned: tp(),
            max_wait_ms: 1_000,
        }),
        Request::LeaveGroup(LeaveGroupRequest {
            group_id: "g".into(),
            member_id: "m-1".into(),
        }),
        Request::OffsetCommit(OffsetCommitRequest {
            group_id: "g".into(),
            member_id: "m-1".into(),
            generation: 3,
            topics: vec![OffsetCommitTopic {
                name: "t".into(),
                partitions: vec![OffsetCommitPartition {
                    partition: 0,
                    offset: 42,
                    metadata: "x".into(),
                }],
            }],
        }),
        Request::OffsetFetch(OffsetFetchRequest {
            group_id: "g".into(),
            topics: tp(),
        }),
        Request::ListGroups,
        Request::DescribeGroups(DescribeGroupsRequest {
            group_ids: vec!["g".into(), "h".into()],
        }),
        Request::FindCoordinator(FindCoordinatorRequest {
            group_id: "g".into(),
        }),
    ]
}

/// One valid, non-trivial sample of every group response.
fn sample_group_responses() -> Vec<Response> {
    let tp = || vec![TopicPartitions::new("t", vec![0, 3])];
    vec![
        Response::JoinGroup(JoinGroupResponse {
            error: ErrorCode::None,
            member_id: "m-1".into(),
            generation: 3,
            heartbeat_interval_ms: 3_000,
            assignment: tp(),
            revoke: vec![],
        }),
        Response::Heartbeat(HeartbeatResponse {
            error: ErrorCode::None,
            generation: 4,
            heartbeat_interval_ms: 50,
            assignment: tp(),
            revoke: tp(),
        }),
        Response::LeaveGroup(LeaveGroupResponse {
            error: ErrorCode::None,
        }),
        Response::OffsetCommit(OffsetCommitResponse {
            topics: vec![OffsetCommitTopicResponse {
                name: "t".into(),
                partitions: vec![OffsetCommitPartitionResponse {
                    partition: 0,
                    error: ErrorCode::NotPartitionOwner,
                }],
            }],
        }),
        Response::OffsetFetch(OffsetFetchResponse {
            error: ErrorCode::None,
            topics: vec![OffsetFetchTopicResponse {
                name: "t".into(),
                partitions: vec![OffsetFetchPartitionResponse {
                    partition: 0,
                    error: ErrorCode::None,
                    offset: -1,
                    metadata: String::new(),
                }],
            }],
        }),
        Response::ListGroups(ListGroupsResponse {
            groups: vec![ListedGroup {
                group_id: "g".into(),
                state: "Stable".into(),
                members: 2,
                generation: 4,
            }],
        }),
        Response::DescribeGroups(DescribeGroupsResponse {
            groups: vec![DescribedGroup {
                error: ErrorCode::None,
                group_id: "g".into(),
                state: "Stable".into(),
                generation: 4,
                members: vec![DescribedMember {
                    member_id: "m-1".into(),
                    client_id: "c".into(),
                    topics: vec!["t".into()],
                    assignment: tp(),
                    revoking: vec![],
                }],
                offsets: vec![PartitionLag {
                    topic: "t".into(),
                    partition: 0,
                    committed_offset: 5,
                    end_offset: 9,
                    lag: 4,
                    lag_ms: 120,
                }],
            }],
        }),
        Response::FindCoordinator(FindCoordinatorResponse {
            error: ErrorCode::None,
            node_id: 2,
            host: "broker-2".into(),
            port: 7171,
        }),
    ]
}

fn topic_partitions() -> impl Strategy<Value = Vec<TopicPartitions>> {
    proptest::collection::vec(
        (name(), proptest::collection::vec(any::<u32>(), 0..4))
            .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
        0..3,
    )
}

/// -1 ("none") or a non-negative value, as the i64 offset fields allow.
fn offset_or_none() -> impl Strategy<Value = i64> {
    prop_oneof![Just(-1i64), 0i64..=i64::MAX]
}

fn group_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            name(),
            name(),
            proptest::collection::vec(name(), 0..4),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(group_id, member_id, topics, s, r, m)| {
                Request::JoinGroup(JoinGroupRequest {
                    group_id,
                    member_id,
                    topics,
                    session_timeout_ms: s,
                    rebalance_timeout_ms: r,
                    metadata: Bytes::from(m),
                })
            }),
        (
            name(),
            name(),
            any::<u32>(),
            topic_partitions(),
            any::<u32>()
        )
            .prop_map(|(group_id, member_id, generation, owned, max_wait_ms)| {
                Request::Heartbeat(HeartbeatRequest {
                    group_id,
                    member_id,
                    generation,
                    owned,
                    max_wait_ms,
                })
            }),
        (name(), name()).prop_map(|(group_id, member_id)| {
            Request::LeaveGroup(LeaveGroupRequest {
                group_id,
                member_id,
            })
        }),
        (
            name(),
            name(),
            any::<u32>(),
            proptest::collection::vec(
                (
                    name(),
                    proptest::collection::vec((any::<u32>(), any::<u64>(), name()), 0..3)
                ),
                0..3
            ),
        )
            .prop_map(|(group_id, member_id, generation, t)| {
                Request::OffsetCommit(OffsetCommitRequest {
                    group_id,
                    member_id,
                    generation,
                    topics: t
                        .into_iter()
                        .map(|(name, ps)| OffsetCommitTopic {
                            name,
                            partitions: ps
                                .into_iter()
                                .map(|(partition, offset, metadata)| OffsetCommitPartition {
                                    partition,
                                    offset: (offset >> 1) as i64,
                                    metadata,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }),
        (name(), topic_partitions()).prop_map(|(group_id, topics)| {
            Request::OffsetFetch(OffsetFetchRequest { group_id, topics })
        }),
        Just(Request::ListGroups),
        proptest::collection::vec(name(), 0..4)
            .prop_map(|group_ids| Request::DescribeGroups(DescribeGroupsRequest { group_ids })),
        name().prop_map(|group_id| Request::FindCoordinator(FindCoordinatorRequest { group_id })),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL)
}

fn group_response() -> impl Strategy<Value = Response> {
    let member = (
        name(),
        name(),
        proptest::collection::vec(name(), 0..3),
        topic_partitions(),
        topic_partitions(),
    )
        .prop_map(
            |(member_id, client_id, topics, assignment, revoking)| DescribedMember {
                member_id,
                client_id,
                topics,
                assignment,
                revoking,
            },
        );
    let lag = (
        name(),
        any::<u32>(),
        offset_or_none(),
        any::<u64>(),
        any::<u64>(),
        offset_or_none(),
    )
        .prop_map(
            |(topic, partition, committed_offset, end_offset, lag, lag_ms)| PartitionLag {
                topic,
                partition,
                committed_offset,
                end_offset,
                lag,
                lag_ms,
            },
        );
    let group = (
        error_code(),
        name(),
        name(),
        any::<u32>(),
        proptest::collection::vec(member, 0..3),
        proptest::collection::vec(lag, 0..3),
    )
        .prop_map(
            |(error, group_id, state, generation, members, offsets)| DescribedGroup {
                error,
                group_id,
                state,
                generation,
                members,
                offsets,
            },
        );
    prop_oneof![
        (
            error_code(),
            name(),
            any::<u32>(),
            any::<u32>(),
            topic_partitions(),
            topic_partitions()
        )
            .prop_map(|(error, member_id, generation, hb, assignment, revoke)| {
                Response::JoinGroup(JoinGroupResponse {
                    error,
                    member_id,
                    generation,
                    heartbeat_interval_ms: hb,
                    assignment,
                    revoke,
                })
            }),
        (
            error_code(),
            any::<u32>(),
            any::<u32>(),
            topic_partitions(),
            topic_partitions()
        )
            .prop_map(|(error, generation, hb, assignment, revoke)| {
                Response::Heartbeat(HeartbeatResponse {
                    error,
                    generation,
                    heartbeat_interval_ms: hb,
                    assignment,
                    revoke,
                })
            }),
        error_code().prop_map(|error| Response::LeaveGroup(LeaveGroupResponse { error })),
        proptest::collection::vec(
            (
                name(),
                proptest::collection::vec((any::<u32>(), error_code()), 0..3)
            ),
            0..3
        )
        .prop_map(|t| Response::OffsetCommit(OffsetCommitResponse {
            topics: t
                .into_iter()
                .map(|(name, ps)| OffsetCommitTopicResponse {
                    name,
                    partitions: ps
                        .into_iter()
                        .map(|(partition, error)| OffsetCommitPartitionResponse {
                            partition,
                            error
                        })
                        .collect(),
                })
                .collect(),
        })),
        (
            error_code(),
            proptest::collection::vec(
                (
                    name(),
                    proptest::collection::vec(
                        (any::<u32>(), error_code(), offset_or_none(), name()),
                        0..3
                    )
                ),
                0..3
            )
        )
            .prop_map(|(error, t)| Response::OffsetFetch(OffsetFetchResponse {
                error,
                topics: t
                    .into_iter()
                    .map(|(name, ps)| OffsetFetchTopicResponse {
                        name,
                        partitions: ps
                            .into_iter()
                            .map(|(partition, error, offset, metadata)| {
                                OffsetFetchPartitionResponse {
                                    partition,
                                    error,
                                    offset,
                                    metadata,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })),
        proptest::collection::vec((name(), name(), any::<u32>(), any::<u32>()), 0..4).prop_map(
            |g| Response::ListGroups(ListGroupsResponse {
                groups: g
                    .into_iter()
                    .map(|(group_id, state, members, generation)| ListedGroup {
                        group_id,
                        state,
                        members,
                        generation,
                    })
                    .collect(),
            })
        ),
        proptest::collection::vec(group, 0..3)
            .prop_map(|groups| Response::DescribeGroups(DescribeGroupsResponse { groups })),
        (error_code(), any::<u32>(), name(), any::<u16>()).prop_map(
            |(error, node_id, host, port)| Response::FindCoordinator(FindCoordinatorResponse {
                error,
                node_id,
                host,
                port,
            })
        ),
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
        which in 0usize..64,
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
        req in prop_oneof![produce_request(), other_request(), group_request(), admin_request()].prop_map(make_valid),
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

    #[test]
    fn random_admin_responses_round_trip(resp in admin_response(), cid in any::<u32>()) {
        let key = resp.api_key().expect("a body");
        let mut b = BytesMut::new();
        encode_response(cid, &resp, &mut b);
        let mut codec = FrameCodec::default();
        let frame = codec.decode(&mut b).unwrap().unwrap();
        let (got_cid, got) = decode_response(key, frame).unwrap();
        prop_assert_eq!(got_cid, cid);
        prop_assert_eq!(got, resp);
    }

    #[test]
    fn random_group_responses_round_trip(resp in group_response(), cid in any::<u32>()) {
        let key = resp.api_key().expect("a body");
        let mut b = BytesMut::new();
        encode_response(cid, &resp, &mut b);
        let mut chunks = Vec::new();
        encode_response_chunks(cid, &resp, &mut chunks);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        prop_assert_eq!(&joined[..], &b[..]);
        let mut codec = FrameCodec::default();
        let frame = codec.decode(&mut b).unwrap().unwrap();
        prop_assert!(b.is_empty());
        let (got_cid, got) = decode_response(key, frame).unwrap();
        prop_assert_eq!(got_cid, cid);
        prop_assert_eq!(got, resp);
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
