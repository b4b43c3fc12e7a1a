//! Hostile and broken clients against the real `sluiced`. After each case
//! another client must still produce and fetch, and no earlier data is lost.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use sluice_protocol::batch::compute_crc;
use sluice_protocol::*;

/// Produces one more durable record to `health/0` and checks all earlier ones.
struct Health {
    count: u64,
}

impl Health {
    fn new() -> Health {
        Health { count: 0 }
    }

    fn check(&mut self, b: &TestBroker) {
        let mut c = b.client();
        let v = format!("health-{}", self.count);
        let p = c.produce("health", 0, batch_of(&[v.as_bytes()]), Acks::Durable);
        assert_eq!(
            p.error,
            ErrorCode::None,
            "broker unhealthy; log:\n{}",
            b.log()
        );
        assert_eq!(p.base_offset, self.count);
        self.count += 1;
        let all = c.fetch_all("health", 0, 0);
        assert_eq!(all.len() as u64, self.count);
        for (i, (o, v)) in all.iter().enumerate() {
            assert_eq!(*o, i as i64);
            assert_eq!(v, format!("health-{i}").as_bytes());
        }
    }
}

/// xorshift64*: deterministic "random" bytes; the seed is printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A request frame with an arbitrary header and body.
fn raw_frame(api_key: u16, version: u16, correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&api_key.to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&correlation_id.to_be_bytes());
    payload.extend_from_slice(&4u16.to_be_bytes());
    payload.extend_from_slice(b"evil");
    payload.extend_from_slice(body);
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// Reads one response frame and returns (correlation id, header error code).
fn read_error_response(c: &mut RawClient) -> (u32, ErrorCode) {
    let p = c.read_frame().expect("response frame");
    assert!(p.len() >= 6);
    let id = u32::from_be_bytes(p[0..4].try_into().unwrap());
    let code = ErrorCode::from_code(u16::from_be_bytes(p[4..6].try_into().unwrap()));
    (id, code)
}

fn drain_until_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    // Bounded in time too: a broker that kept answering would otherwise hold the test forever.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    panic!("the broker kept the connection open for 30 s");
}

#[test]
fn random_bytes_on_the_socket() {
    let b = TestBroker::start_with(&["--max-frame-bytes", "65536"]);
    let mut h = Health::new();
    h.check(&b);
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let n = 1 + (rng.next() % 8192) as usize;
        let mut s = TcpStream::connect(b.addr).unwrap();
        let garbage = rng.bytes(n);
        let _ = s.write_all(&garbage);
        let _ = s.shutdown(Shutdown::Write);
        drain_until_closed(&mut s);
    }
    h.check(&b);
    // Plausible headers with random bodies: answered (typically INVALID_REQUEST)
    // on a connection that stays usable.
    let mut c = b.client();
    let mut rng = Rng(0xfeed);
    for i in 0..300u32 {
        let key = (rng.next() % 7) as u16;
        let n = (rng.next() % 300) as usize;
        let body = rng.bytes(n);
        c.send_raw(&raw_frame(key, 0, 10_000 + i, &body)).unwrap();
        let (id, _code) = read_error_response(&mut c);
        assert_eq!(id, 10_000 + i, "seed 0xfeed, iteration {i}");
    }
    assert!(matches!(
        c.call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
    h.check(&b);
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    let b = TestBroker::start_with(&["--max-frame-bytes", "4096"]);
    let mut h = Health::new();
    h.check(&b);
    let mut bystander = b.client();
    let mut c = b.client();
    // Only the length prefix is sent: the broker must refuse before reading (or allocating) the rest.
    c.send_raw(&1_000_000u32.to_be_bytes()).unwrap();
    assert!(
        c.is_closed_by_peer(),
        "connection with an oversized frame stayed open"
    );
    // A produce above the limit is refused the same way.
    let mut c = b.client();
    let big = batch_of(&[&[7u8; 8192][..]]);
    let mut buf = BytesMut::new();
    sluice_protocol::wire::encode_request(
        1,
        "t",
        &RawClient::produce_request("health", 0, big, Acks::Leader),
        &mut buf,
    );
    let _ = c.send_raw(&buf);
    assert!(c.is_closed_by_peer());
    assert!(b.log().contains("exceeds the maximum"), "{}", b.log());
    assert!(matches!(
        bystander.call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
    h.check(&b);
}

#[test]
fn unknown_api_key_or_version_gets_an_error_and_the_connection_stays_open() {
    let b = TestBroker::start();
    let mut h = Health::new();
    h.check(&b);
    let mut c = b.client();
    c.send_raw(&raw_frame(999, 0, 7, &[])).unwrap();
    assert_eq!(read_error_response(&mut c), (7, ErrorCode::UnknownApi));
    c.send_raw(&raw_frame(ApiKey::Produce as u16, 99, 8, &[1, 2, 3]))
        .unwrap();
    assert_eq!(
        read_error_response(&mut c),
        (8, ErrorCode::UnsupportedVersion)
    );
    c.send_raw(&raw_frame(ApiKey::Fetch as u16, 0, 9, &[0xff; 5]))
        .unwrap();
    assert_eq!(read_error_response(&mut c), (9, ErrorCode::InvalidRequest));
    assert!(matches!(
        c.call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
    // A header too short to carry a correlation id closes the connection.
    c.send_raw(&[0, 0, 0, 3, 0, 1, 0]).unwrap();
    assert!(c.is_closed_by_peer());
    h.check(&b);
}

#[test]
fn corrupt_batches_are_rejected_and_nothing_is_appended() {
    let b = TestBroker::start();
    let mut h = Health::new();
    h.check(&b);
    let mut c = b.client();
    assert_eq!(c.create_topic("crc", 1, &[]), ErrorCode::None);
    c.produce("crc", 0, batch_of(&[b"good"]), Acks::Leader);

    let mut bad = batch_of(&[b"evil payload"]).to_vec();
    let last = bad.len() - 2;
    bad[last] ^= 0x01;
    let p = c.produce("crc", 0, bad.into(), Acks::Leader);
    assert_eq!(p.error, ErrorCode::CorruptMessage);

    // A good batch followed by a corrupt one: the whole request is refused.
    let mut two = batch_of(&[b"first"]).to_vec();
    let mut second = batch_of(&[b"second"]).to_vec();
    second[30] ^= 0x80;
    two.extend_from_slice(&second);
    assert_eq!(
        c.produce("crc", 0, two.into(), Acks::Leader).error,
        ErrorCode::CorruptMessage
    );

    // Truncated batch.
    let whole = batch_of(&[b"cut short"]);
    let p = c.produce("crc", 0, whole.slice(..whole.len() - 3), Acks::Leader);
    assert_eq!(p.error, ErrorCode::CorruptMessage);

    // A valid CRC but a compression codec that does not exist (5).
    let mut codec5 = batch_of(&[b"squeezed"]).to_vec();
    codec5[21..23].copy_from_slice(&5i16.to_be_bytes());
    let crc = compute_crc(&codec5);
    codec5[17..21].copy_from_slice(&crc.to_be_bytes());
    let p = c.produce("crc", 0, codec5.into(), Acks::Leader);
    assert_eq!(p.error, ErrorCode::UnsupportedCompression);

    assert_eq!(
        c.list_offset("crc", 0, OffsetSpec::Latest),
        (ErrorCode::None, 1, -1)
    );
    assert_eq!(c.fetch_all("crc", 0, 0), vec![(0, b"good".to_vec())]);
    h.check(&b);
}

/// Rewrites bytes of a batch, then re-signs it so only the targeted rule can fail.
fn patched(batch: &[u8], at: usize, bytes: &[u8]) -> Bytes {
    let mut v = batch.to_vec();
    v[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = compute_crc(&v);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    v.into()
}

#[test]
fn batches_breaking_the_batch_rules_are_refused_with_invalid_record() {
    let b = TestBroker::start();
    let mut h = Health::new();
    h.check(&b);
    let mut c = b.client();
    assert_eq!(c.create_topic("rules", 1, &[]), ErrorCode::None);
    let one = batch_of(&[b"one"]);
    let three = batch_of(&[b"a", b"b", b"c"]);
    // Zero records: header only, count 0 (it used to take an offset).
    let mut empty = one[..61].to_vec();
    empty[8..12].copy_from_slice(&49i32.to_be_bytes());
    let empty = patched(&empty, 57, &0i32.to_be_bytes());
    // One record reserving six offsets (last_offset_delta = 5).
    let gap = patched(&one, 23, &5i32.to_be_bytes());
    // Offset deltas 0, 1, 3: the third record's delta byte patched.
    let mut v = three.to_vec();
    let mut pos = 61;
    for _ in 0..2 {
        pos += 1 + v[pos] as usize / 2; // one-byte zigzag length varints
    }
    // record: length, attributes, timestamp delta (0), offset delta
    assert_eq!(v[pos + 3], 4, "third record's offset delta is 2 (zigzag 4)");
    v[pos + 3] = 6;
    let deltas = patched(&v, 0, &0i64.to_be_bytes());
    // max_timestamp that is not the records' largest.
    let ts = sluice_protocol::batch::BatchHeader::parse(&one)
        .unwrap()
        .max_timestamp;
    let max_ts = patched(&one, 35, &(ts + 1).to_be_bytes());
    let cases = [
        ("no records", empty),
        ("last_offset_delta gap", gap),
        ("offset deltas", deltas),
        ("max_timestamp", max_ts),
        ("control bit", patched(&one, 21, &0x20i16.to_be_bytes())),
        (
            "transactional bit",
            patched(&one, 21, &0x10i16.to_be_bytes()),
        ),
        ("unused bit", patched(&one, 21, &0x0100i16.to_be_bytes())),
    ];
    for (what, batch) in cases {
        let p = c.produce("rules", 0, batch, Acks::Leader);
        assert_eq!(p.error, ErrorCode::InvalidRecord, "{what}");
    }
    // Nothing of them was appended; a correct batch still is, at offset 0.
    assert_eq!(
        c.list_offset("rules", 0, OffsetSpec::Latest),
        (ErrorCode::None, 0, -1)
    );
    let p = c.produce("rules", 0, three, Acks::Leader);
    assert_eq!((p.error, p.base_offset), (ErrorCode::None, 0));
    assert_eq!(
        c.list_offset("rules", 0, OffsetSpec::Latest),
        (ErrorCode::None, 3, -1)
    );
    h.check(&b);
}

#[test]
fn timestamps_far_from_the_broker_clock_are_invalid_timestamp() {
    let b = TestBroker::start();
    let mut c = b.client();
    let day = 86_400_000;
    assert_eq!(
        c.create_topic(
            "clock",
            1,
            &[("message.timestamp.before.max.ms", "3600000")]
        ),
        ErrorCode::None
    );
    assert_eq!(c.create_topic("default", 1, &[]), ErrorCode::None);
    let now = now_ms();
    // A day in the past: refused where the topic limits it, accepted by
    // default (before.max.ms is unlimited, as Kafka).
    let old = batch_at(now - day, &[b"old"]);
    assert_eq!(
        c.produce("clock", 0, old.clone(), Acks::Leader).error,
        ErrorCode::InvalidTimestamp
    );
    assert_eq!(
        c.produce("default", 0, old, Acks::Leader).error,
        ErrorCode::None
    );
    // Two hours ahead: refused by the default after.max.ms (1 h).
    for t in ["clock", "default"] {
        let p = c.produce(
            t,
            0,
            batch_at(now + 2 * 3_600_000, &[b"future"]),
            Acks::Leader,
        );
        assert_eq!(p.error, ErrorCode::InvalidTimestamp, "{t}");
    }
    // Within both limits: accepted.
    let p = c.produce(
        "clock",
        0,
        batch_at(now - 60_000, &[b"recent"]),
        Acks::Leader,
    );
    assert_eq!((p.error, p.base_offset), (ErrorCode::None, 0));
    // The limits are listed with the topic's configs.
    let m = c.metadata(&["clock"]);
    let configs = &m.topics[0].configs;
    for (k, v) in [
        ("message.timestamp.before.max.ms", "3600000"),
        ("message.timestamp.after.max.ms", "3600000"),
    ] {
        assert!(
            configs.iter().any(|(ck, cv)| ck == k && cv == v),
            "{k}={v} missing from {configs:?}"
        );
    }
}

#[test]
fn fetch_out_of_range_is_an_error_code() {
    let b = TestBroker::start();
    let mut h = Health::new();
    h.check(&b);
    let mut c = b.client();
    let f = c.fetch("health", 0, 1_000);
    assert_eq!(f.error, ErrorCode::OffsetOutOfRange);
    // The response says where the log is, so a client can reposition.
    assert_eq!((f.log_start_offset, f.high_watermark), (0, 1));
    assert_eq!(c.fetch("health", 0, 1).error, ErrorCode::None);
    assert_eq!(
        c.fetch("health", 9, 0).error,
        ErrorCode::UnknownTopicOrPartition
    );
    // Out of range answers at once even with a long max_wait.
    let started = Instant::now();
    let f =
        RawClient::fetch_partition(c.call(&RawClient::fetch_request("health", 0, 50, 30_000, 1)));
    assert_eq!(f.error, ErrorCode::OffsetOutOfRange);
    assert!(started.elapsed() < Duration::from_secs(10));
    h.check(&b);
}

#[test]
fn produce_to_missing_topic_without_auto_create() {
    let b = TestBroker::start_with(&["--auto-create-topics=false"]);
    let mut c = b.client();
    let p = c.produce("ghost", 0, batch_of(&[b"boo"]), Acks::Leader);
    assert_eq!(p.error, ErrorCode::UnknownTopicOrPartition);
    assert_eq!(
        c.metadata(&["ghost"]).topics[0].error,
        ErrorCode::UnknownTopicOrPartition
    );
    assert!(!b.data_dir.join("ghost").exists());
    assert_eq!(c.create_topic("health", 1, &[]), ErrorCode::None);
    let mut h = Health::new();
    h.check(&b);
}

#[test]
fn client_vanishing_mid_frame() {
    let b = TestBroker::start();
    let mut h = Health::new();
    h.check(&b);
    for cut in [1usize, 3, 4, 10, 40, 90] {
        let mut s = TcpStream::connect(b.addr).unwrap();
        let req =
            RawClient::produce_request("health", 0, batch_of(&[b"never complete"]), Acks::Durable);
        let mut buf = BytesMut::new();
        sluice_protocol::wire::encode_request(1, "t", &req, &mut buf);
        assert!(cut < buf.len());
        s.write_all(&buf[..cut]).unwrap();
        drop(s);
    }
    // Vanishing while a durable produce and a parked fetch are in flight.
    let mut c = b.client();
    c.send(&RawClient::produce_request(
        "health",
        0,
        batch_of(&[b"health-1"]),
        Acks::Durable,
    ));
    c.send(&RawClient::fetch_request("health", 0, 2, 30_000, 1));
    drop(c);
    h.count += 1; // that produce was complete, so it was appended
                  // The departed client's parked fetch is released long before its 30 s max_wait.
    wait_for_metrics(
        b.http_addr,
        "parked fetch of a vanished client lingers",
        Duration::from_secs(10),
        |m| m.contains("sluice_parked_fetches 0") && m.contains("sluice_active_connections 0"),
    );
    // A client that half-closes still gets answers to what it sent.
    let mut c = b.client();
    let id = c.send(&RawClient::fetch_request("health", 0, 0, 30_000, 1_000_000));
    c.stream.shutdown(Shutdown::Write).unwrap();
    let (got, resp) = c.recv();
    assert_eq!(got, id);
    assert_eq!(RawClient::fetch_partition(resp).error, ErrorCode::None);
    h.check(&b);
    assert!(b.log().contains("client vanished mid-frame"), "{}", b.log());
}

#[test]
fn a_thousand_concurrent_connections() {
    let b = TestBroker::start();
    let mut h = Health::new();
    h.check(&b);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(1000);
    for _ in 0..1000 {
        conns.push(RawClient::connect(b.addr));
    }
    // Every 10th one makes a request while all are open.
    for c in conns.iter_mut().step_by(10) {
        c.send(&Request::ApiVersions);
    }
    for c in conns.iter_mut().step_by(10) {
        assert!(matches!(c.recv().1, Response::ApiVersions(_)));
    }
    h.check(&b);
    drop(conns);
    // The broker notices every close (bounded wait).
    wait_for_metrics(
        b.http_addr,
        "connections not released",
        Duration::from_secs(20),
        |m| m.contains("sluice_active_connections 0"),
    );
    h.check(&b);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn connection_cap_holds_extra_clients_in_the_backlog() {
    let b = TestBroker::start_with(&["--max-connections", "2"]);
    let mut first = b.client();
    let mut second = b.client();
    assert!(matches!(
        first.call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
    assert!(matches!(
        second.call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
    let mut third = b.client();
    third.send(&Request::ApiVersions);
    third
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        third.stream.peek(&mut byte).is_err(),
        "a connection above the cap was served"
    );
    drop(first);
    third.stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    assert!(matches!(third.recv().1, Response::ApiVersions(_)));
    assert!(matches!(
        second.call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
}
