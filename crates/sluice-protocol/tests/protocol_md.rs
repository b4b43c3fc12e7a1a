//! Keeps `protocol.md` (the normative spec) and the code from drifting apart:
//! every error code and api key is listed with the right number, and the
//! worked hex examples are exactly what our encoder produces.

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{set_base_offset, validate, RecordBatch, RecordBatchBuilder};
use sluice_protocol::*;

const SPEC: &str = include_str!("../../../protocol.md");

#[test]
fn every_error_code_is_documented_with_number_name_and_retriability() {
    for code in ErrorCode::ALL {
        let retriable = if code.is_retriable() { "yes" } else { "no" };
        let row = format!("| {} | `{}` | {} |", code.code(), code.name(), retriable);
        assert!(
            SPEC.contains(&row),
            "protocol.md lacks the error row starting `{row}`"
        );
    }
}

#[test]
fn every_api_key_is_documented() {
    for key in ApiKey::ALL {
        let row = match (key.versions(), key.wire_versions()) {
            (Some(r), _) => format!(
                "| {} | {} | {}..={} |",
                *key as u16,
                key.name(),
                r.min_version,
                r.max_version
            ),
            (None, Some(r)) => format!(
                "| {} | {} | {}..={}, served once advertised in ApiVersions |",
                *key as u16,
                key.name(),
                r.min_version,
                r.max_version
            ),
            (None, None) => format!(
                "| {} | {} | reserved, not yet served |",
                *key as u16,
                key.name()
            ),
        };
        assert!(
            SPEC.contains(&row),
            "protocol.md lacks the api row starting `{row}`"
        );
        let heading = format!("\n### {} (key {})\n", key.name(), *key as u16);
        assert!(
            SPEC.contains(&heading),
            "protocol.md lacks a section `{}`",
            heading.trim()
        );
    }
    assert!(SPEC.contains(&format!("{} bytes", DEFAULT_MAX_FRAME_BYTES)));
    assert!(SPEC.contains("## On-disk storage format"));
}

/// The text of the `### NAME (key K)` section, up to the next heading.
fn api_section(key: ApiKey) -> &'static str {
    let heading = format!("\n### {} (key {})\n", key.name(), key as u16);
    let start = SPEC
        .find(&heading)
        .unwrap_or_else(|| panic!("protocol.md lacks `{}`", heading.trim()))
        + heading.len();
    let rest = &SPEC[start..];
    let end = [rest.find("\n### "), rest.find("\n## ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Every field of every group message (as encoded, in order) is a row of its
/// api's section, and every nested structure has a min-size table.
#[test]
fn group_apis_are_fully_documented() {
    let fields: &[(ApiKey, &[&str])] = &[
        (
            ApiKey::JoinGroup,
            &[
                "group_id",
                "member_id",
                "topics",
                "session_timeout_ms",
                "rebalance_timeout_ms",
                "metadata",
                "error",
                "generation",
                "heartbeat_interval_ms",
                "assignment",
                "revoke",
            ],
        ),
        (
            ApiKey::Heartbeat,
            &[
                "group_id",
                "member_id",
                "generation",
                "owned",
                "max_wait_ms",
                "error",
                "heartbeat_interval_ms",
                "assignment",
                "revoke",
            ],
        ),
        (ApiKey::LeaveGroup, &["group_id", "member_id", "error"]),
        (
            ApiKey::OffsetCommit,
            &[
                "group_id",
                "member_id",
                "generation",
                "topics",
                "name",
                "partitions",
                "partition",
                "offset",
                "metadata",
                "error",
            ],
        ),
        (
            ApiKey::OffsetFetch,
            &[
                "group_id",
                "topics",
                "error",
                "name",
                "partitions",
                "partition",
                "offset",
                "metadata",
            ],
        ),
        (
            ApiKey::ListGroups,
            &["groups", "group_id", "state", "members", "generation"],
        ),
        (
            ApiKey::DescribeGroups,
            &[
                "group_ids",
                "groups",
                "error",
                "group_id",
                "state",
                "generation",
                "members",
                "offsets",
                "member_id",
                "client_id",
                "topics",
                "assignment",
                "revoking",
                "topic",
                "partition",
                "committed_offset",
                "end_offset",
                "lag",
                "lag_ms",
            ],
        ),
    ];
    for key in ApiKey::ALL.iter().filter(|k| k.is_group_api()) {
        let (_, names) = fields
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no field list for {key}"));
        let section = api_section(*key);
        for name in *names {
            assert!(
                section.contains(&format!("| `{name}` ")),
                "{key} section lacks a row for `{name}`"
            );
        }
    }
    let structs = [
        ("TopicPartitions", 6),
        ("OffsetCommitTopic", 6),
        ("OffsetCommitPartition", 14),
        ("OffsetCommitTopicResponse", 6),
        ("OffsetCommitPartitionResponse", 6),
        ("OffsetFetchTopicResponse", 6),
        ("OffsetFetchPartitionResponse", 16),
        ("ListedGroup", 12),
        ("DescribedGroup", 18),
        ("DescribedMember", 16),
        ("PartitionLag", 38),
    ];
    for (name, min) in structs {
        let line = format!("`{name}` (min size {min})");
        assert!(SPEC.contains(&line), "protocol.md lacks `{line}`");
    }
    for needle in [
        "## Consumer groups",
        "### Commit fencing",
        "### Long-poll heartbeats",
        "served once the broker advertises keys 7 to 13",
        "ILLEGAL_GENERATION",
        "NOT_PARTITION_OWNER",
        "UNKNOWN_MEMBER_ID",
    ] {
        assert!(SPEC.contains(needle), "protocol.md lacks `{needle}`");
    }
}

/// The record batch of the worked example: one record, fixed timestamp.
fn example_batch() -> Bytes {
    let mut b = RecordBatchBuilder::new();
    b.push(
        1_700_000_000_000,
        Some(b"k"),
        Some(b"hello"),
        &[("src", b"cli")],
    );
    b.finish()
}

pub fn example_frames() -> Vec<(&'static str, Vec<u8>)> {
    let produce = Request::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 30_000,
        topics: vec![ProduceTopic {
            name: "events".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records: example_batch(),
            }],
        }],
    });
    let produce_resp = Response::Produce(ProduceResponse {
        topics: vec![ProduceTopicResponse {
            name: "events".into(),
            partitions: vec![ProducePartitionResponse {
                partition: 0,
                error: ErrorCode::None,
                base_offset: 0,
                last_offset: 0,
            }],
        }],
    });
    let fetch = Request::Fetch(FetchRequest {
        max_wait_ms: 500,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: "events".into(),
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: 0,
                max_bytes: 1 << 20,
            }],
        }],
    });
    // The broker assigned base offset 0 (unchanged bytes, since the producer sends 0).
    let mut stored = example_batch().to_vec();
    set_base_offset(&mut stored, 0);
    let fetch_resp = Response::Fetch(FetchResponse {
        topics: vec![FetchTopicResponse {
            name: "events".into(),
            partitions: vec![FetchPartitionResponse {
                partition: 0,
                error: ErrorCode::None,
                high_watermark: 1,
                log_start_offset: 0,
                records: Bytes::from(stored),
            }],
        }],
    });
    let heartbeat = Request::Heartbeat(HeartbeatRequest {
        group_id: "billing".into(),
        member_id: "demo-7-1".into(),
        generation: 2,
        owned: vec![TopicPartitions::new("orders", vec![0, 1])],
        max_wait_ms: 1_000,
    });
    let heartbeat_resp = Response::Heartbeat(HeartbeatResponse {
        error: ErrorCode::None,
        generation: 3,
        heartbeat_interval_ms: 50,
        assignment: vec![TopicPartitions::new("orders", vec![0])],
        revoke: vec![TopicPartitions::new("orders", vec![1])],
    });
    let mut out = Vec::new();
    let mut b = BytesMut::new();
    encode_request(1, "demo", &produce, &mut b);
    out.push(("produce-request", b.to_vec()));
    let mut b = BytesMut::new();
    encode_response(1, &produce_resp, &mut b);
    out.push(("produce-response", b.to_vec()));
    let mut b = BytesMut::new();
    encode_request(2, "demo", &fetch, &mut b);
    out.push(("fetch-request", b.to_vec()));
    let mut b = BytesMut::new();
    encode_response(2, &fetch_resp, &mut b);
    out.push(("fetch-response", b.to_vec()));
    let mut b = BytesMut::new();
    encode_request(3, "demo", &heartbeat, &mut b);
    out.push(("heartbeat-request", b.to_vec()));
    let mut b = BytesMut::new();
    encode_response(3, &heartbeat_resp, &mut b);
    out.push(("heartbeat-response", b.to_vec()));
    out
}

/// The hex bytes of the fenced block that follows `<!-- example: NAME -->`:
/// on each line, the two-digit hex tokens before a `#` comment.
fn spec_example(name: &str) -> Vec<u8> {
    let marker = format!("<!-- example: {name} -->");
    let start = SPEC
        .find(&marker)
        .unwrap_or_else(|| panic!("protocol.md lacks {marker}"));
    let rest = &SPEC[start + marker.len()..];
    let open = rest.find("```").expect("no code block after marker");
    let body = &rest[open + 3..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let close = body.find("```").expect("unclosed code block");
    let mut out = Vec::new();
    for line in body[..close].lines() {
        let data = line.split('#').next().unwrap_or("");
        for tok in data.split_whitespace() {
            assert_eq!(tok.len(), 2, "bad hex token {tok:?} in example {name}");
            out.push(
                u8::from_str_radix(tok, 16).unwrap_or_else(|_| panic!("bad hex {tok:?} in {name}")),
            );
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn worked_examples_match_the_encoder() {
    if std::env::var_os("SLUICE_PRINT_EXAMPLES").is_some() {
        for (name, bytes) in example_frames() {
            println!("{name} {}", hex(&bytes));
        }
    }
    for (name, bytes) in example_frames() {
        let documented = spec_example(name);
        assert_eq!(
            hex(&documented),
            hex(&bytes),
            "protocol.md example {name} differs from the encoder"
        );
    }
}

#[test]
fn worked_examples_decode() {
    let frames = example_frames();
    let batch = example_batch();
    let h = validate(&batch).unwrap();
    assert_eq!(h.record_count, 1);
    let (hdr, req) = decode_request(Bytes::copy_from_slice(&frames[0].1[4..])).unwrap();
    assert_eq!(
        (hdr.api_key, hdr.correlation_id, hdr.client_id.as_str()),
        (4, 1, "demo")
    );
    let Request::Produce(p) = req else {
        panic!("not a produce")
    };
    let rb = RecordBatch::parse(&p.topics[0].partitions[0].records).unwrap();
    let r = rb.records().next().unwrap().unwrap();
    assert_eq!((r.key, r.value), (Some(&b"k"[..]), Some(&b"hello"[..])));
    let (cid, resp) =
        decode_response(ApiKey::Fetch, Bytes::copy_from_slice(&frames[3].1[4..])).unwrap();
    assert_eq!(cid, 2);
    assert!(matches!(resp, Response::Fetch(_)));
    let (hdr, req) = decode_request(Bytes::copy_from_slice(&frames[4].1[4..])).unwrap();
    assert_eq!((hdr.api_key, hdr.correlation_id), (8, 3));
    let Request::Heartbeat(h) = req else {
        panic!("not a heartbeat")
    };
    assert_eq!(h.owned, vec![TopicPartitions::new("orders", vec![0, 1])]);
    let (cid, resp) =
        decode_response(ApiKey::Heartbeat, Bytes::copy_from_slice(&frames[5].1[4..])).unwrap();
    assert_eq!(cid, 3);
    let Response::Heartbeat(r) = resp else {
        panic!("not a heartbeat response")
    };
    assert_eq!(r.revoke, vec![TopicPartitions::new("orders", vec![1])]);
}

/// Every field the cluster versions add (Metadata v1, CreateTopics v1,
/// DescribeCluster, FindCoordinator) is a row of its api's section, with its wire type.
#[test]
fn cluster_fields_are_documented() {
    let rows: &[(ApiKey, &[&str])] = &[
        (
            ApiKey::Metadata,
            &[
                "| `rack`    | `nullable_string` |",
                "| `cluster_id`    | `string` ",
                "| `controller_id` | `i32` ",
                "| `leader_epoch` | `u32` ",
                "| `replicas`     | `array<u32>` ",
                "| `isr`          | `array<u32>` ",
                "(min size 46)",
                "(min size 10)",
            ],
        ),
        (
            ApiKey::CreateTopics,
            &[
                "| `replication_factor` | `i16` ",
                "(min size 12)",
                "`INVALID_REPLICATION_FACTOR`",
            ],
        ),
        (
            ApiKey::DescribeCluster,
            &[
                "| `error`            | `ErrorCode` ",
                "| `cluster_id`       | `string` ",
                "| `controller_id`    | `i32` ",
                "| `controller_epoch` | `u64` ",
                "| `brokers`          | `array<ClusterBroker>` ",
                "| `rack`    | `nullable_string` |",
                "| `alive`   | `bool` ",
                "(min size 11)",
            ],
        ),
        (
            ApiKey::FindCoordinator,
            &[
                "| `group_id` | `string` ",
                "| `error`   | `ErrorCode` ",
                "| `node_id` | `u32` ",
                "| `host`    | `string` ",
                "| `port`    | `u16` ",
                "`COORDINATOR_NOT_AVAILABLE`",
            ],
        ),
    ];
    for (key, want) in rows {
        let section = api_section(*key);
        for row in *want {
            assert!(section.contains(row), "{key} section lacks `{row}`");
        }
    }
    assert!(SPEC.contains("| `nullable_string` |"));
    // The group apis' coordinator rule and ListGroups' scope are stated.
    let conventions = SPEC
        .find("### Group api conventions")
        .expect("group api conventions");
    let rest = &SPEC[conventions..];
    let section = &rest[..rest[4..].find("\n### ").map_or(rest.len(), |i| i + 4)];
    for needle in [
        "`NOT_COORDINATOR`",
        "`COORDINATOR_NOT_AVAILABLE`",
        "ListGroups",
    ] {
        assert!(section.contains(needle), "group conventions lack {needle}");
    }
}

/// Every field of the topic admin apis (CreatePartitions, AlterConfigs) is a
/// row of its api's section, with its wire type, and the nested structures
/// have their min sizes.
#[test]
fn topic_admin_fields_are_documented() {
    let rows: &[(ApiKey, &[&str])] = &[
        (
            ApiKey::CreatePartitions,
            &[
                "| `topics` | `array<CreatePartitionsTopic>` ",
                "`CreatePartitionsTopic` (min size 6)",
                "| `name`  | `string` ",
                "| `count` | `u32`    ",
                "`INVALID_PARTITIONS`",
                "`UNKNOWN_TOPIC_OR_PARTITION`",
                "`array<TopicResult>`",
            ],
        ),
        (
            ApiKey::AlterConfigs,
            &[
                "| `topics` | `array<AlterConfigsTopic>` ",
                "`AlterConfigsTopic` (min size 6)",
                "| `changes` | `array<ConfigChange>` ",
                "`ConfigChange` (min size 4)",
                "| `key`   | `string`          ",
                "| `value` | `nullable_string` ",
                "`INVALID_CONFIG`",
                "`UNKNOWN_TOPIC_OR_PARTITION`",
                "`array<TopicResult>`",
            ],
        ),
    ];
    for (key, want) in rows {
        let section = api_section(*key);
        for row in *want {
            assert!(section.contains(row), "{key} section lacks `{row}`");
        }
    }
    // Every config key CreateTopics documents has a row saying when a change takes effect.
    let alter = api_section(ApiKey::AlterConfigs);
    for key in [
        "retention.ms",
        "retention.bytes",
        "segment.bytes",
        "segment.ms",
        "flush",
        "flush.interval.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms",
    ] {
        assert!(
            alter.contains(&format!("`{key}`")),
            "AlterConfigs section does not say when `{key}` takes effect"
        );
    }
}
