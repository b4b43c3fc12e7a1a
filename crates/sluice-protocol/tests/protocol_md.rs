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
        let row = match key.versions() {
            Some(r) => format!(
                "| {} | {} | {}..={} |",
                *key as u16,
                key.name(),
                r.min_version,
                r.max_version
            ),
            None => format!(
                "| {} | {} | reserved, not yet served |",
                *key as u16,
                key.name()
            ),
        };
        assert!(
            SPEC.contains(&row),
            "protocol.md lacks the api row starting `{row}`"
        );
    }
    assert!(SPEC.contains(&format!("{} bytes", DEFAULT_MAX_FRAME_BYTES)));
    assert!(SPEC.contains("## On-disk storage format"));
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
}
