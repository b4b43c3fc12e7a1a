//! A producer whose broker is gone stops (issue 9, item 8): once records fail
//! because the broker stayed unreachable past the delivery timeout, the
//! library refuses new sends at once and `sluice topic produce` stops reading
//! its input and exits 1; a broker that is back within the timeout is ridden
//! through with nothing lost.

mod common;
mod produce_load;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fixed_port::FixedPortBroker;
use common::process::{text, wait_output_within, KillOnDrop};
use common::{sluice_cli, TestBroker};
use produce_load::BackgroundLoad;
use sluice::{Acks, Admin, ClientConfig, ClientError, Consumer, Producer, ProducerConfig, Record};
use sluice_protocol::{ErrorCode, OffsetSpec};

/// Lines the CLI test offers on stdin (as `seq 1 50000000` would).
const INPUT_LINES: u64 = 50_000_000;

/// Parses `produced N records, M failed` from the CLI's stderr.
fn summary(stderr: &str) -> Option<(u64, u64)> {
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix("produced ")?;
        let (n, rest) = rest.split_once(" records, ")?;
        let m = rest.strip_suffix(" failed")?;
        Some((n.parse().ok()?, m.parse().ok()?))
    })
}

#[test]
fn cli_produce_stops_reading_and_exits_1_when_the_broker_is_killed() {
    let mut broker = TestBroker::start();
    let addr = broker.addr.to_string();
    assert_eq!(
        broker.client().create_topic("gone", 1, &[]),
        ErrorCode::None
    );
    let delivery_timeout_ms = 3000u64;
    let mut child = KillOnDrop::new(
        sluice_cli(&addr)
            .args(["topic", "produce", "gone", "--acks", "durable"])
            .args(["--delivery-timeout", &delivery_timeout_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice"),
    );
    let mut input = child.get().stdin.take().expect("piped stdin");
    // `seq 1 50000000`, written until the tool stops reading (a broken pipe).
    let writer = std::thread::spawn(move || {
        let mut next = 1u64;
        let mut chunk = Vec::with_capacity(64 * 1024);
        while next <= INPUT_LINES {
            chunk.clear();
            while chunk.len() < 60 * 1024 && next <= INPUT_LINES {
                let _ = writeln!(chunk, "{next}");
                next += 1;
            }
            if input.write_all(&chunk).is_err() {
                break;
            }
        }
        next - 1
    });

    // Let records reach the log, then SIGKILL the broker.
    let mut client = broker.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (error, end, _) = client.list_offset("gone", 0, OffsetSpec::Latest);
        assert_eq!(error, ErrorCode::None);
        if end > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing produced within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    broker.kill();

    // The tool must end on its own within a few seconds of the delivery
    // timeout; past this bound the watchdog SIGKILLs it (no exit code then).
    let bound = Duration::from_millis(delivery_timeout_ms) + Duration::from_secs(10);
    let out = wait_output_within(child.take(), bound);
    let offered = writer.join().expect("writer");
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sluice topic produce did not exit 1 within {bound:?} of the broker's death \
         ({}); stderr:\n{stderr}",
        out.status
    );
    let (produced, failed) = summary(&stderr)
        .unwrap_or_else(|| panic!("no `produced N records, M failed` line:\n{stderr}"));
    assert!(produced > 0, "{stderr}");
    assert!(failed > 0, "{stderr}");
    assert!(
        produced + failed < INPUT_LINES && offered < INPUT_LINES,
        "the whole input was read although the broker was gone:\n{stderr}"
    );
    assert!(
        stderr.contains("broker unreachable at"),
        "the error names the cause:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sends_fail_at_once_after_the_broker_is_gone_past_the_delivery_timeout() {
    let mut broker = FixedPortBroker::start();
    let addr = broker.addr();
    let delivery_timeout = Duration::from_millis(1500);
    let producer = Producer::with_config(
        ClientConfig::new(addr.clone()),
        ProducerConfig {
            acks: Acks::Durable,
            delivery_timeout,
            retry_backoff: Duration::from_millis(50),
            ..ProducerConfig::default()
        },
    );
    producer
        .send(Record::new("away", "warm"))
        .await
        .expect("warm-up send");
    broker.kill();

    // The first record is tried for the whole delivery timeout.
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        producer.send(Record::new("away", "a")),
    )
    .await
    .expect("the send resolved")
    .expect_err("the broker is gone");
    assert!(matches!(e, ClientError::DeliveryTimeout { .. }), "{e:?}");
    assert!(e.is_broker_unavailable(), "{e:?}");

    // Now a new record is refused by enqueue itself, never buffered for another
    // timeout. (The bound only keeps a regression from hanging the test.)
    let refused =
        tokio::time::timeout(delivery_timeout, producer.enqueue(Record::new("away", "b")))
            .await
            .expect("enqueue returned before another delivery timeout passed");
    let e = refused.expect_err("refused while the broker is gone");
    assert!(matches!(e, ClientError::BrokerUnavailable { .. }), "{e:?}");
    assert!(matches!(e.root(), ClientError::Unreachable { .. }), "{e:?}");
    assert_eq!(producer.buffered_bytes(), 0);

    // Back on the same port: the producer notices (its periodic connect
    // succeeds) and sends are accepted and delivered again.
    broker.spawn();
    let mut refusals = 0;
    let (partition, offset) = loop {
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            producer.send(Record::new("away", "back")),
        )
        .await
        .expect("send resolved");
        match r {
            Ok(done) => break done,
            Err(e) if e.is_broker_unavailable() && refusals < 200 => {
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("send after the broker came back: {e:?}"),
        }
    };
    let mut consumer = Consumer::new(addr);
    consumer.assign(vec![("away".to_string(), partition)]);
    consumer
        .seek("away", partition, sluice::SeekTo::Offset(offset))
        .expect("seek");
    let r = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("record")
        .expect("assigned")
        .expect("consume");
    assert_eq!((r.offset, r.value.as_deref()), (offset, Some(&b"back"[..])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_within_the_delivery_timeout_loses_nothing() {
    let mut broker = FixedPortBroker::start();
    let addr = broker.addr();
    Admin::connect(addr.clone())
        .await
        .expect("admin")
        .create_topic("ride", 1, Vec::new())
        .await
        .expect("create");
    let producer = Producer::with_config(
        ClientConfig::new(addr.clone()),
        ProducerConfig {
            acks: Acks::Durable,
            batch_bytes: 16 * 1024,
            linger: Duration::from_millis(2),
            // Well above the outage below (1 s down plus the restart), so the
            // broker-unavailable state must never be entered.
            delivery_timeout: Duration::from_secs(15),
            retry_backoff: Duration::from_millis(50),
            ..ProducerConfig::default()
        },
    );
    const N: usize = 20_000;
    let mut load = BackgroundLoad::start(&producer, "ride", N);
    load.wait_acked(2000).await;
    broker.kill();
    let at_kill = load.acked_count();
    assert!(at_kill < N, "everything was acknowledged before the kill");
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.spawn();

    let failures = load.finish(&producer).await;
    assert!(
        failures.is_empty(),
        "records failed although the broker was back within the delivery timeout: {:?}",
        &failures[..failures.len().min(3)]
    );

    // Every acknowledged record is in the log at its offset, byte for byte.
    load.assert_all_acked_and_stored(&addr, "ride", N).await;
}
