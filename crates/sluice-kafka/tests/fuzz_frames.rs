//! Fuzzing the Kafka listener's decode path ([`sluice_kafka::parse_frame`]):
//! random bytes, every truncation of valid frames of every served api and
//! version, random byte flips, and huge counts planted anywhere. Nothing may
//! panic, and no allocation may be larger than the frame could justify: a
//! counting global allocator records the largest single allocation made
//! while parsing, which must stay below a bound proportional to the frame.
//!
//! The time-bounded loop runs for `SLUICE_FUZZ_SECS` seconds (default 3);
//! `SLUICE_FUZZ_SECS=600 cargo test -p sluice-kafka --test fuzz_frames --release`
//! is the long run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_kafka::{parse_frame, Frame, SERVED};

/// Counts the largest allocation made by the current thread while armed.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ARMED.try_with(|a| {
            if a.get() {
                let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
            }
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ARMED.try_with(|a| {
            if a.get() {
                let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
            }
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Parses `frame` and returns the largest allocation it made. The bound:
/// a decoded structure may take a few hundred bytes per wire byte (a
/// one-byte array element becomes a struct with maps), never gigabytes.
fn parse_bounded(frame: &[u8]) -> Result<Frame, sluice_kafka::KafkaError> {
    let payload = Bytes::copy_from_slice(frame);
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let r = parse_frame(payload);
    ARMED.with(|a| a.set(false));
    let largest = LARGEST.with(Cell::get);
    let bound = 4096 + frame.len() * 512;
    assert!(
        largest <= bound,
        "a {}-byte frame made a {largest}-byte allocation",
        frame.len()
    );
    r
}

/// A request of every served api, encoded in `version` with a header.
fn valid_frames() -> Vec<(i16, i16, Vec<u8>)> {
    let mut out = Vec::new();
    for (key, lo, hi) in SERVED {
        let api = ApiKey::try_from(*key).expect("served keys are known");
        for version in *lo..=*hi {
            let body = sample(api, version);
            let mut buf = BytesMut::new();
            buf.put_i16(*key);
            buf.put_i16(version);
            buf.put_i32(7);
            let hv = api.request_header_version(version);
            buf.put_i16(6);
            buf.put_slice(b"fuzzer");
            if hv >= 2 {
                buf.put_u8(0);
            }
            if body.encode(&mut buf, version).is_err() {
                continue;
            }
            out.push((*key, version, buf.to_vec()));
        }
    }
    out
}

/// A request with a few entries in each list, so counts and strings appear.
fn sample(api: ApiKey, version: i16) -> RequestKind {
    let name = || TopicName(StrBytes::from_static_str("orders"));
    let s = StrBytes::from_static_str;
    match api {
        ApiKey::Produce => RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(name())
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(Bytes::from_static(&[1, 2, 3]))),
                    ])]),
        ),
        ApiKey::Fetch => {
            RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(10).with_topics(
                vec![fetch_request::FetchTopic::default()
                    .with_topic(if version < 13 {
                        name()
                    } else {
                        TopicName::default()
                    })
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1024)])],
            ))
        }
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(name())),
            ])))
        }
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(
            vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                    .with_timestamp(-1)])],
        )),
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 1]))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s("m"))
                        .with_assignment(Bytes::from_static(&[0, 1])),
                ]),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(name())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default(),
                        ]),
                ]),
        ),
        ApiKey::CreateTopics => {
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(
                vec![create_topics_request::CreatableTopic::default()
                .with_name(name())
                .with_num_partitions(3)
                .with_replication_factor(-1)],
            ))
        }
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(OffsetFetchRequest::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(FindCoordinatorRequest::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(LeaveGroupRequest::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(DescribeConfigsRequest::default()),
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default())
        }
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(DeleteGroupsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
        }
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_subscribed_topic_names(Some(vec![name()]))
                .with_topic_partitions(Some(vec![
                    consumer_group_heartbeat_request::TopicPartitions::default()
                        .with_partitions(vec![0, 1]),
                ])),
        ),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("g"))]),
        ),
        ApiKey::DeleteRecords => {
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default().with_offset(3),
                    ]),
            ]))
        }
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(name())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default(),
                        ]),
                ]),
        ),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(s("SCRAM-SHA-256")),
        ),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(
            SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from_static(b"n,,n=alice,r=abc")),
        ),
        ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(
            vec![create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"))
                .with_resource_pattern_type(3)
                .with_principal(s("User:alice"))
                .with_host(s("*"))
                .with_operation(3)
                .with_permission_type(3)],
        )),
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_resource_name_filter(Some(s("orders")))
                .with_pattern_type_filter(if version == 0 { 3 } else { 1 })
                .with_principal_filter(Some(s("User:alice")))
                .with_operation(1)
                .with_permission_type(1),
        ),
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(
            vec![delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(s("orders")))
                .with_pattern_type_filter(3)
                .with_operation(1)
                .with_permission_type(1)],
        )),
        ApiKey::DescribeClientQuotas => RequestKind::DescribeClientQuotas(
            DescribeClientQuotasRequest::default().with_components(vec![
                describe_client_quotas_request::ComponentData::default()
                    .with_entity_type(s("user"))
                    .with_match_type(0)
                    .with_match(Some(s("alice"))),
            ]),
        ),
        ApiKey::AlterClientQuotas => {
            RequestKind::AlterClientQuotas(AlterClientQuotasRequest::default().with_entries(vec![
                alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![alter_client_quotas_request::EntityData::default()
                        .with_entity_type(s("user"))
                        .with_entity_name(Some(s("alice")))])
                    .with_ops(vec![alter_client_quotas_request::OpData::default()
                        .with_key(s("producer_byte_rate"))
                        .with_value(1024.0)]),
            ]))
        }
        ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(
            DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                describe_user_scram_credentials_request::UserName::default().with_name(s("alice")),
            ])),
        ),
        ApiKey::AlterUserScramCredentials => RequestKind::AlterUserScramCredentials(
            AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(s("alice"))
                    .with_mechanism(1)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"salt"))
                    .with_salted_password(Bytes::from_static(&[7; 32])),
            ]),
        ),
        other => panic!("no sample for served api {other:?}"),
    }
}

/// A small deterministic generator (xorshift), seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn every_valid_frame_of_every_served_version_parses() {
    let frames = valid_frames();
    let versions: usize = SERVED
        .iter()
        .map(|(_, lo, hi)| (hi - lo + 1) as usize)
        .sum();
    assert_eq!(frames.len(), versions, "a sample for every served version");
    for (key, version, f) in &frames {
        match parse_bounded(f) {
            Ok(Frame::Request { header, .. }) => {
                assert_eq!((header.api_key, header.api_version), (*key, *version));
                assert_eq!(header.client_id, "fuzzer");
            }
            other => panic!("key {key} v{version}: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_of_every_valid_frame_is_an_error_or_a_shorter_request() {
    for (key, version, f) in valid_frames() {
        for n in 0..f.len() {
            // A truncated body may still decode when only trailing optional
            // data was cut; what matters is no panic and a bounded allocation.
            let _ = parse_bounded(&f[..n]);
        }
        let _ = (key, version);
    }
}

#[test]
fn an_eight_byte_metadata_frame_asking_for_gigabytes_is_refused_without_allocating() {
    // Metadata v1 (header v1): key 3, version 1, correlation 1, null client
    // id, then a topics array count of i32::MAX with nothing behind it.
    let mut f = vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff];
    f.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(parse_bounded(&f).is_err());
    // Flexible Metadata v9: a compact array count of 2^32 - 2.
    let mut f = vec![0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0];
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(parse_bounded(&f).is_err());
}

#[test]
fn unknown_apis_and_versions_are_errors_and_api_versions_gets_its_fallback() {
    assert!(parse_bounded(&[0, 99, 0, 0, 0, 0, 0, 1, 0, 0]).is_err());
    assert!(
        parse_bounded(&[0, 1, 0, 0, 0, 0, 0, 1, 0, 0]).is_err(),
        "Fetch v0"
    );
    assert!(parse_bounded(&[0, 3, 0, 99, 0, 0, 0, 1]).is_err());
    assert!(parse_bounded(&[0, 3, 0]).is_err());
    match parse_bounded(&[0, 18, 0, 77, 0, 0, 0, 5, 0xde, 0xad]) {
        Ok(Frame::ApiVersionsUnsupported { correlation_id: 5 }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn random_mutations_of_valid_frames_never_panic_or_over_allocate() {
    let secs: u64 = std::env::var("SLUICE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("fuzz seed {seed}, {secs} s");
    let mut rng = Rng(seed);
    let frames = valid_frames();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs: u64 = 0;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let (_, _, base) = &frames[rng.below(frames.len())];
            let mut f = base.clone();
            match rng.below(5) {
                // Random bytes after a valid 8-byte prefix.
                0 => {
                    let n = rng.below(256);
                    f.truncate(8);
                    f.extend((0..n).map(|_| rng.next() as u8));
                }
                // Flip a few bytes.
                1 => {
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(f.len());
                        f[i] ^= (rng.next() as u8) | 1;
                    }
                }
                // Plant a huge 32-bit count.
                2 => {
                    if f.len() > 12 {
                        let i = 8 + rng.below(f.len() - 12);
                        let v = [i32::MAX, -2, 0x0fff_ffff, 65_536][rng.below(4)];
                        f[i..i + 4].copy_from_slice(&v.to_be_bytes());
                    }
                }
                // Plant a huge varint (compact counts and lengths).
                3 => {
                    let i = 8 + rng.below(f.len().saturating_sub(8).max(1));
                    let at = i.min(f.len());
                    f.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                }
                // Pure noise.
                _ => {
                    let n = rng.below(64);
                    f = (0..n).map(|_| rng.next() as u8).collect();
                }
            }
            let _ = parse_bounded(&f);
            runs += 1;
        }
    }
    println!("{runs} mutated frames parsed without a panic");
    assert!(runs > 0);
}
