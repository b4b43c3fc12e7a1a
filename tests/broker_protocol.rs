//! Black-box protocol tests against the real `sluiced` binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice_protocol::*;

#[test]
fn produce_fetch_round_trip_is_byte_exact() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("rt", 1, &[]), ErrorCode::None);
    let first = batch_of(&[b"alpha", b"beta", b""]);
    let second = batch_of(&[&[0xffu8; 3000][..]]);
    let p = c.produce("rt", 0, first.clone(), Acks::Leader);
    assert_eq!(
        (p.error, p.base_offset, p.last_offset),
        (ErrorCode::None, 0, 2)
    );
    let p = c.produce("rt", 0, second.clone(), Acks::Leader);
    assert_eq!(
        (p.error, p.base_offset, p.last_offset),
        (ErrorCode::None, 3, 3)
    );

    let f = c.fetch("rt", 0, 0);
    assert_eq!(f.error, ErrorCode::None);
    assert_eq!(f.high_watermark, 4);
    assert_eq!(f.log_start_offset, 0);
    // The first batch had base offset 0 already: identical bytes.
    assert_eq!(&f.records[..first.len()], &first[..]);
    // The second differs only in its base offset (outside the CRC).
    let rest = &f.records[first.len()..];
    assert_eq!(rest.len(), second.len());
    assert_eq!(&rest[8..], &second[8..]);
    assert_eq!(i64::from_be_bytes(rest[..8].try_into().unwrap()), 3);
    let values = decode_values(&f.records);
    assert_eq!(values[0], (0, b"alpha".to_vec()));
    assert_eq!(values[3].0, 3);

    // Fetch in the middle of a batch returns the whole batch; at the end, nothing.
    let f = c.fetch("rt", 0, 1);
    assert_eq!(&f.records[..first.len()], &first[..]);
    let f = c.fetch("rt", 0, 4);
    assert_eq!(f.error, ErrorCode::None);
    assert!(f.records.is_empty());
}

#[test]
fn api_versions_lists_every_supported_api() {
    let b = TestBroker::start();
    let mut c = b.client();
    match c.call(&Request::ApiVersions) {
        Response::ApiVersions(v) => {
            assert_eq!(v.apis, SUPPORTED_APIS.to_vec());
            for key in [
                ApiKey::Produce,
                ApiKey::Fetch,
                ApiKey::ListOffsets,
                ApiKey::Metadata,
            ] {
                assert!(v.apis.iter().any(|a| a.api_key == key as u16), "{key:?}");
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn metadata_describes_topics_partitions_and_leader() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(
        c.create_topic("meta", 3, &[("retention.ms", "60000"), ("flush", "os")]),
        ErrorCode::None
    );
    c.produce("meta", 2, batch_of(&[b"x", b"y"]), Acks::Leader);
    let m = c.metadata(&["meta", "missing"]);
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.brokers[0].port, b.addr.port());
    assert_eq!(m.brokers[0].host, b.addr.ip().to_string());
    let t = &m.topics[0];
    assert_eq!((t.name.as_str(), t.error), ("meta", ErrorCode::None));
    assert_eq!(t.partitions.len(), 3);
    for (i, p) in t.partitions.iter().enumerate() {
        assert_eq!(p.partition, i as u32);
        assert_eq!(p.leader, m.brokers[0].node_id);
        assert_eq!(p.error, ErrorCode::None);
    }
    assert_eq!(t.partitions[2].end_offset, 2);
    assert_eq!(t.partitions[0].end_offset, 0);
    assert!(
        t.configs.contains(&("retention.ms".into(), "60000".into())),
        "{:?}",
        t.configs
    );
    assert!(t.configs.contains(&("flush".into(), "os".into())));
    assert_eq!(m.topics[1].name, "missing");
    assert_eq!(m.topics[1].error, ErrorCode::UnknownTopicOrPartition);
    // An invalid name is refused while decoding: the whole request.
    assert_eq!(
        c.call(&Request::Metadata(MetadataRequest {
            topics: vec!["no/such".into()],
        })),
        Response::Error(ErrorCode::InvalidTopic)
    );
    // Metadata never auto-creates.
    let all = c.metadata(&[]);
    let names: Vec<_> = all.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["meta"]);
}

#[test]
fn create_and_delete_topics() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("d", 2, &[]), ErrorCode::None);
    assert!(b.data_dir.join("d").join("topic.meta").exists());
    assert_eq!(c.create_topic("d", 2, &[]), ErrorCode::TopicAlreadyExists);
    assert_eq!(c.create_topic("bad/name", 1, &[]), ErrorCode::InvalidTopic);
    assert_eq!(c.create_topic("..", 1, &[]), ErrorCode::InvalidTopic);
    assert_eq!(
        c.create_topic(&"x".repeat(250), 1, &[]),
        ErrorCode::InvalidTopic
    );
    assert_eq!(
        c.create_topic("many", 1_000_000, &[]),
        ErrorCode::InvalidPartitions
    );
    assert_eq!(c.create_topic("none", 0, &[]), ErrorCode::InvalidPartitions);
    assert_eq!(
        c.create_topic("cfg", 1, &[("flush", "never")]),
        ErrorCode::InvalidConfig
    );
    assert_eq!(
        c.create_topic("cfg", 1, &[("what.is.this", "1")]),
        ErrorCode::InvalidConfig
    );
    c.produce("d", 1, batch_of(&[b"gone soon"]), Acks::Leader);

    assert_eq!(c.delete_topic("d"), ErrorCode::None);
    assert!(!b.data_dir.join("d").exists());
    assert_eq!(c.delete_topic("d"), ErrorCode::UnknownTopicOrPartition);
    assert_eq!(c.fetch("d", 1, 0).error, ErrorCode::UnknownTopicOrPartition);
    // Re-created topics start empty.
    assert_eq!(c.create_topic("d", 1, &[]), ErrorCode::None);
    assert_eq!(
        c.list_offset("d", 0, OffsetSpec::Latest),
        (ErrorCode::None, 0, -1)
    );
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("lo", 1, &[]), ErrorCode::None);
    assert_eq!(
        c.list_offset("lo", 0, OffsetSpec::Latest),
        (ErrorCode::None, 0, -1)
    );
    for (i, ts) in [1_000i64, 2_000, 3_000].into_iter().enumerate() {
        let p = c.produce("lo", 0, batch_at(ts, &[b"a", b"b"]), Acks::Leader);
        assert_eq!(p.base_offset, 2 * i as u64);
    }
    assert_eq!(
        c.list_offset("lo", 0, OffsetSpec::Earliest),
        (ErrorCode::None, 0, -1)
    );
    assert_eq!(
        c.list_offset("lo", 0, OffsetSpec::Latest),
        (ErrorCode::None, 6, -1)
    );
    assert_eq!(
        c.list_offset("lo", 0, OffsetSpec::Timestamp(0)),
        (ErrorCode::None, 0, 1_000)
    );
    assert_eq!(
        c.list_offset("lo", 0, OffsetSpec::Timestamp(1_500)),
        (ErrorCode::None, 2, 2_000)
    );
    assert_eq!(
        c.list_offset("lo", 0, OffsetSpec::Timestamp(3_000)),
        (ErrorCode::None, 4, 3_000)
    );
    assert_eq!(
        c.list_offset("lo", 0, OffsetSpec::Timestamp(9_000)),
        (ErrorCode::None, 6, -1)
    );
    assert_eq!(
        c.list_offset("lo", 5, OffsetSpec::Latest).0,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        c.list_offset("nope", 0, OffsetSpec::Latest).0,
        ErrorCode::UnknownTopicOrPartition
    );
}

#[test]
fn parked_fetch_is_woken_by_produce_and_does_not_block_the_connection() {
    let b = TestBroker::start();
    let mut admin = b.client();
    assert_eq!(admin.create_topic("lp", 1, &[]), ErrorCode::None);
    let mut consumer = b.client();
    let started = Instant::now();
    let fetch_id = consumer.send(&RawClient::fetch_request("lp", 0, 0, 15_000, 1));
    // A later request on the same connection is answered while the fetch is parked.
    let versions_id = consumer.send(&Request::ApiVersions);
    let (id, resp) = consumer.recv();
    assert_eq!(id, versions_id, "parked fetch blocked a later request");
    assert!(matches!(resp, Response::ApiVersions(_)));
    // Produce only once the fetch is parked (polled, not slept for).
    wait_for_metrics(
        b.http_addr,
        "fetch never parked",
        Duration::from_secs(10),
        |m| m.contains("sluice_parked_fetches 1"),
    );
    let p = admin.produce("lp", 0, batch_of(&[b"wake up"]), Acks::Leader);
    assert_eq!(p.error, ErrorCode::None);
    let (id, resp) = consumer.recv();
    assert_eq!(id, fetch_id);
    let waited = started.elapsed();
    let f = RawClient::fetch_partition(resp);
    assert_eq!(f.error, ErrorCode::None);
    assert_eq!(decode_values(&f.records), vec![(0, b"wake up".to_vec())]);
    // Woken by the append, not by its 15 s max_wait.
    assert!(waited < Duration::from_secs(10), "fetch waited {waited:?}");

    // With nothing arriving, a parked fetch answers empty after max_wait.
    let started = Instant::now();
    let f =
        RawClient::fetch_partition(consumer.call(&RawClient::fetch_request("lp", 0, 1, 300, 1)));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(f.error, ErrorCode::None);
    assert!(f.records.is_empty());
}

#[test]
fn pipelined_produces_keep_their_order() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("pipe", 1, &[]), ErrorCode::None);
    const N: usize = 300;
    let mut ids = Vec::new();
    for i in 0..N {
        // Mix ack levels: durable acks are answered later, but appends stay in order.
        let acks = if i % 3 == 0 {
            Acks::Durable
        } else {
            Acks::Leader
        };
        let v = format!("msg-{i}");
        ids.push(c.send(&RawClient::produce_request(
            "pipe",
            0,
            batch_of(&[v.as_bytes()]),
            acks,
        )));
    }
    let mut offsets = std::collections::HashMap::new();
    for _ in 0..N {
        let (id, resp) = c.recv();
        match resp {
            Response::Produce(r) => {
                let p = &r.topics[0].partitions[0];
                assert_eq!(p.error, ErrorCode::None);
                offsets.insert(id, p.base_offset);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            offsets[id], i as u64,
            "request {i} got offset {}",
            offsets[id]
        );
    }
    let values = c.fetch_all("pipe", 0, 0);
    assert_eq!(values.len(), N);
    for (i, (o, v)) in values.iter().enumerate() {
        assert_eq!(*o, i as i64);
        assert_eq!(v, format!("msg-{i}").as_bytes());
    }
}

#[test]
fn acks_none_sends_no_response_but_appends() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("fire", 1, &[]), ErrorCode::None);
    let req = RawClient::produce_request("fire", 0, batch_of(&[b"forget"]), Acks::None);
    let mut buf = bytes::BytesMut::new();
    sluice_protocol::wire::encode_request(99, "t", &req, &mut buf);
    c.send_raw(&buf).unwrap();
    // The next response is for the next request.
    let id = c.send(&Request::ApiVersions);
    let (got, _) = c.recv();
    assert_eq!(got, id);
    assert_eq!(c.fetch_all("fire", 0, 0), vec![(0, b"forget".to_vec())]);
}

#[test]
fn produce_auto_creates_topics_with_default_partitions() {
    let b = TestBroker::start_with(&["--default-partitions", "3"]);
    let mut c = b.client();
    let p = c.produce("auto", 2, batch_of(&[b"hello"]), Acks::Leader);
    assert_eq!(p.error, ErrorCode::None);
    let m = c.metadata(&["auto"]);
    assert_eq!(m.topics[0].partitions.len(), 3);
    let p = c.produce("auto", 3, batch_of(&[b"x"]), Acks::Leader);
    assert_eq!(p.error, ErrorCode::UnknownTopicOrPartition);
    let bad = RawClient::produce_request("bad topic", 0, batch_of(&[b"x"]), Acks::Leader);
    assert_eq!(c.call(&bad), Response::Error(ErrorCode::InvalidTopic));
}

#[test]
fn topic_config_and_data_persist_across_restart() {
    let mut b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(
        c.create_topic(
            "keep",
            2,
            &[
                ("retention.ms", "12345"),
                ("flush", "always"),
                ("segment.bytes", "1048576")
            ]
        ),
        ErrorCode::None
    );
    for i in 0..20u32 {
        let v = format!("v{i}");
        let p = c.produce("keep", i % 2, batch_of(&[v.as_bytes()]), Acks::Durable);
        assert_eq!(p.error, ErrorCode::None);
    }
    let before = c.metadata(&["keep"]);
    drop(c);
    b.restart();
    let mut c = b.client();
    let after = c.metadata(&["keep"]);
    let summary = |m: &MetadataResponse| {
        let t = &m.topics[0];
        let ends: Vec<_> = t
            .partitions
            .iter()
            .map(|p| (p.partition, p.start_offset, p.end_offset))
            .collect();
        (t.name.clone(), t.error, t.configs.clone(), ends)
    };
    assert_eq!(summary(&after), summary(&before));
    let t = &after.topics[0];
    assert!(t.configs.contains(&("retention.ms".into(), "12345".into())));
    assert!(t.configs.contains(&("flush".into(), "always".into())));
    assert!(t
        .configs
        .contains(&("segment.bytes".into(), "1048576".into())));
    let p0 = c.fetch_all("keep", 0, 0);
    let expect: Vec<_> = (0..10)
        .map(|i| (i as i64, format!("v{}", 2 * i).into_bytes()))
        .collect();
    assert_eq!(p0, expect);
    assert!(b.log().contains("topics_recovered=1"), "{}", b.log());
}

#[test]
fn sigterm_exits_zero_and_data_survives() {
    let mut b = TestBroker::start();
    let mut c = b.client();
    for i in 0..50u32 {
        let v = format!("r{i}");
        assert_eq!(
            c.produce("term", 0, batch_of(&[v.as_bytes()]), Acks::Leader)
                .error,
            ErrorCode::None
        );
    }
    // A parked fetch must not hold shutdown up for its whole max_wait.
    let mut waiting = b.client();
    waiting.send(&RawClient::fetch_request("term", 0, 50, 60_000, 1));
    wait_for_metrics(
        b.http_addr,
        "fetch never parked",
        Duration::from_secs(10),
        |m| m.contains("sluice_parked_fetches 1"),
    );
    let started = Instant::now();
    let status = b.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        b.log()
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    b.restart();
    let mut c = b.client();
    let values = c.fetch_all("term", 0, 0);
    assert_eq!(values.len(), 50);
    assert_eq!(values[49], (49, b"r49".to_vec()));
}

#[test]
fn metrics_and_health_over_http() {
    let b = TestBroker::start();
    let (status, body) = http_get(b.http_addr, "/health");
    assert_eq!((status, body.trim()), (200, "ok"));
    let mut c = b.client();
    c.produce("mx", 0, batch_of(&[b"a", b"b", b"c"]), Acks::Durable);
    c.fetch("mx", 0, 0);
    let (status, m) = http_get(b.http_addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        m.contains("sluice_messages_in_total{topic=\"mx\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("sluice_messages_out_total{topic=\"mx\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("sluice_log_end_offset{partition=\"0\",topic=\"mx\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("sluice_request_duration_seconds_count{api=\"Produce\"} 1"),
        "{m}"
    );
    assert!(m.contains("sluice_active_connections 1"), "{m}");
    assert!(m.contains("sluice_parked_fetches 0"), "{m}");
    assert!(m.contains("sluice_fsync_duration_seconds_count"), "{m}");
    assert_eq!(http_get(b.http_addr, "/nope").0, 404);
}

#[test]
fn retention_deletes_old_segments_in_the_background() {
    let b = TestBroker::start_with(&["--housekeeping-interval-ms", "100"]);
    let mut c = b.client();
    assert_eq!(
        c.create_topic(
            "ret",
            1,
            &[("segment.bytes", "65536"), ("retention.bytes", "131072")]
        ),
        ErrorCode::None
    );
    let pad = [b'r'; 9_000];
    for _ in 0..60 {
        assert_eq!(
            c.produce("ret", 0, batch_of(&[&pad[..]]), Acks::Leader)
                .error,
            ErrorCode::None
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let earliest = loop {
        let (err, earliest, _) = c.list_offset("ret", 0, OffsetSpec::Earliest);
        assert_eq!(err, ErrorCode::None);
        if earliest > 0 {
            break earliest;
        }
        assert!(
            Instant::now() < deadline,
            "retention never ran; log:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(c.list_offset("ret", 0, OffsetSpec::Latest).1, 60);
    // Deleted offsets are out of range; what is left is still readable.
    assert_eq!(c.fetch("ret", 0, 0).error, ErrorCode::OffsetOutOfRange);
    let left = c.fetch_all("ret", 0, earliest);
    assert_eq!(left.len() as u64, 60 - earliest);
}

#[test]
fn config_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(
        &file,
        "default_partitions = 4\nauto_create_topics = false\n",
    )
    .unwrap();
    let file = file.to_str().unwrap().to_string();
    let b = TestBroker::start_with(&["--config", &file, "--auto-create-topics"]);
    let mut c = b.client();
    // The flag re-enabled auto-creation; the file chose the partition count.
    assert_eq!(
        c.produce("cfgfile", 3, batch_of(&[b"x"]), Acks::Leader)
            .error,
        ErrorCode::None
    );
    assert_eq!(c.metadata(&["cfgfile"]).topics[0].partitions.len(), 4);
}

#[test]
fn concurrent_producers_and_long_polling_consumers_see_every_record_in_order() {
    const PRODUCERS: u32 = 4;
    const PER_PRODUCER: u32 = 150;
    const PARTITIONS: u32 = 2;
    let b = TestBroker::start();
    let mut admin = b.client();
    assert_eq!(admin.create_topic("conc", PARTITIONS, &[]), ErrorCode::None);
    let addr = b.addr;
    // Consumers long-poll each partition from offset 0 until they saw everything.
    let expected_per_partition = (PRODUCERS * PER_PRODUCER / PARTITIONS) as usize;
    let consumers: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            std::thread::spawn(move || {
                let mut c = RawClient::connect(addr);
                let mut seen: Vec<Vec<u8>> = Vec::new();
                let mut offset = 0u64;
                let deadline = Instant::now() + Duration::from_secs(30);
                while seen.len() < expected_per_partition {
                    assert!(Instant::now() < deadline, "consumer {p} stuck at {offset}");
                    let f = RawClient::fetch_partition(
                        c.call(&RawClient::fetch_request("conc", p, offset, 5_000, 1)),
                    );
                    assert_eq!(f.error, ErrorCode::None);
                    for (o, v) in decode_values(&f.records) {
                        if o as u64 >= offset {
                            assert_eq!(o as u64, offset, "gap in partition {p}");
                            seen.push(v);
                            offset += 1;
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            std::thread::spawn(move || {
                let mut c = RawClient::connect(addr);
                for seq in 0..PER_PRODUCER {
                    let v = format!("{id}:{seq}");
                    let acks = if seq % 5 == 0 {
                        Acks::Durable
                    } else {
                        Acks::Leader
                    };
                    let p = c.produce("conc", seq % PARTITIONS, batch_of(&[v.as_bytes()]), acks);
                    assert_eq!(p.error, ErrorCode::None);
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for (p, consumer) in consumers.into_iter().enumerate() {
        let seen = consumer.join().unwrap();
        // Each producer's records appear in its send order within a partition.
        let mut last = vec![None::<u32>; PRODUCERS as usize];
        for v in &seen {
            let s = String::from_utf8(v.clone()).unwrap();
            let (id, seq) = s.split_once(':').unwrap();
            let (id, seq): (usize, u32) = (id.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(seq % PARTITIONS, p as u32);
            if let Some(prev) = last[id] {
                assert!(prev < seq, "producer {id} reordered");
            }
            last[id] = Some(seq);
        }
        assert_eq!(seen.len(), expected_per_partition);
    }
}

#[test]
fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let b = TestBroker::start();
    let out = std::process::Command::new(bin_path("sluiced"))
        .arg("--data-dir")
        .arg(&b.data_dir)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--kafka-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it must not claim to be listening");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another broker"), "{err}");
    // The first one is unaffected.
    assert!(matches!(
        b.client().call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
}
