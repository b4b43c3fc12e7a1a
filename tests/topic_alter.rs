//! Changing an existing topic against the real `sluiced`: `sluice topic
//! alter` and `Admin::create_partitions` / `Admin::alter_topic_config` grow
//! the partition count and set or delete config keys; `topic describe`
//! shows the change, records go to and come back from the new partitions,
//! a producer learns the new count, a group member is assigned the new
//! partitions, and a restarted broker still has it all (single node and a
//! one-node cluster, where the change goes through the controller). Bad inputs (shrinking, unknown keys and values, unknown topics) fail
//! with one clear error and change nothing.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::process::{ok, one_line_error, text};
use common::{sluice_with_input, TestBroker};
use sluice::{
    Admin, ClientConfig, ConfigChange, Consumer, ConsumerConfig, ErrorCode, OffsetReset, Producer,
    ProducerConfig, Record, SeekTo,
};

fn describe(addr: &str, topic: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&sluice_with_input(
        addr,
        &["topic", "describe", topic, "--json"],
        b"",
    )))
    .expect("json")
}

/// `%p/%o %v` lines of every record of `topic`/`partition`.
fn consume(addr: &str, topic: &str, partition: u32, count: usize) -> String {
    let p = partition.to_string();
    let n = count.to_string();
    ok(&sluice_with_input(
        addr,
        &[
            "topic",
            "consume",
            topic,
            "--partition",
            &p,
            "--count",
            &n,
            "--format",
            "%p/%o %v\\n",
        ],
        b"",
    ))
}

#[test]
fn cli_alter_grows_partitions_and_changes_configs_that_survive_a_restart() {
    let mut broker = TestBroker::start();
    let addr = broker.addr.to_string();
    ok(&sluice_with_input(
        &addr,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "2",
            "--retention-ms",
            "3600000",
        ],
        b"",
    ));
    ok(&sluice_with_input(
        &addr,
        &["topic", "produce", "orders", "--partition", "0"],
        b"before\n",
    ));

    let out = sluice_with_input(
        &addr,
        &[
            "topic",
            "alter",
            "orders",
            "--partitions",
            "4",
            "--config",
            "retention.bytes=1048576",
            "--config",
            "flush=always",
            "--delete-config",
            "retention.ms",
        ],
        b"",
    );
    assert_eq!(
        ok(&out),
        "altered config of topic \"orders\": retention.bytes=1048576, flush=always, retention.ms deleted\n\
         topic \"orders\" now has 4 partitions (was 2)\n"
    );
    let check = |addr: &str| {
        let d = describe(addr, "orders");
        let parts = d["partitions"].as_array().expect("partitions");
        assert_eq!(parts.len(), 4, "{d}");
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p["partition"], i);
        }
        assert_eq!(d["configs"]["partitions"], "4");
        assert_eq!(d["configs"]["retention.bytes"], "1048576");
        assert_eq!(d["configs"]["flush"], "always");
        assert_eq!(d["configs"]["retention.ms"], "-1", "back to the default");
        d
    };
    check(&addr);
    let table = ok(&sluice_with_input(
        &addr,
        &["topic", "describe", "orders"],
        b"",
    ));
    assert!(table.contains("PARTITIONS  4"), "{table}");
    assert!(table.contains("flush=always"), "{table}");

    // The new partitions take records and give them back.
    ok(&sluice_with_input(
        &addr,
        &["topic", "produce", "orders", "--partition", "3"],
        b"new-a\nnew-b\n",
    ));
    assert_eq!(consume(&addr, "orders", 3, 2), "3/0 new-a\n3/1 new-b\n");
    // A topic with more partitions: the keyless producer reaches the new
    // ones too (its first partition is random per run, so produce a few times).
    let mut used = BTreeSet::new();
    for _ in 0..40 {
        ok(&sluice_with_input(
            &addr,
            &["topic", "produce", "orders"],
            b"spread\n",
        ));
        let d = describe(&addr, "orders");
        used = d["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter(|p| p["end_offset"].as_u64().unwrap_or(0) > 0)
            .map(|p| p["partition"].as_u64().unwrap_or(0))
            .collect();
        if used.contains(&1) && used.contains(&2) {
            break;
        }
    }
    assert!(used.contains(&1) && used.contains(&2), "{used:?}");

    // A restart (SIGKILL, then start on the same data dir) keeps it all.
    broker.restart();
    let addr = broker.addr.to_string();
    let d = check(&addr);
    // Two records produced to partition 3 directly, maybe more from the spread.
    assert!(
        d["partitions"][3]["end_offset"].as_u64().unwrap_or(0) >= 2,
        "{d}"
    );
    assert_eq!(consume(&addr, "orders", 3, 2), "3/0 new-a\n3/1 new-b\n");
    assert_eq!(consume(&addr, "orders", 0, 1), "0/0 before\n");

    // Bad inputs: one clear line each, and nothing changes.
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "alter", "orders", "--partitions", "3"],
        b"",
    ));
    assert!(err.contains("has 4 partitions"), "{err}");
    assert!(err.contains("cannot be removed"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "alter", "orders", "--partitions", "4"],
        b"",
    ));
    assert!(err.contains("must be larger"), "{err}");
    // A bad config next to a valid growth: refused before anything changes.
    let err = one_line_error(&sluice_with_input(
        &addr,
        &[
            "topic",
            "alter",
            "orders",
            "--partitions",
            "6",
            "--config",
            "retention.ms=60000",
            "--config",
            "no.such.key=1",
        ],
        b"",
    ));
    assert!(err.contains("no.such.key"), "{err}");
    assert!(err.contains("unknown topic config key"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "alter", "orders", "--config", "segment.bytes=100"],
        b"",
    ));
    assert!(err.contains("segment.bytes"), "{err}");
    assert!(err.contains("at least 65536"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "alter", "orders", "--delete-config", "bogus"],
        b"",
    ));
    assert!(err.contains("bogus"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "alter", "orders", "--config", "retention.ms"],
        b"",
    ));
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "flush=os",
            "--delete-config",
            "flush",
        ],
        b"",
    ));
    assert!(err.contains("more than once"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "alter", "orders"],
        b"",
    ));
    assert!(err.contains("nothing to change"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "alter", "ghost", "--partitions", "3"],
        b"",
    ));
    assert!(
        err.starts_with("error: topic \"ghost\" does not exist"),
        "{err}"
    );
    let d = check(&addr);
    assert_eq!(d["configs"]["segment.bytes"], "1073741824");
    assert!(describe_missing(&addr, "ghost"));
}

fn describe_missing(addr: &str, topic: &str) -> bool {
    !sluice_with_input(addr, &["topic", "describe", topic], b"")
        .status
        .success()
}

#[tokio::test]
async fn client_grows_and_alters_topics_and_producers_follow() {
    let mut broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("keyed", 1, vec![("retention.ms".into(), "3600000".into())])
        .await
        .expect("create");
    let client = ClientConfig {
        metadata_max_age: Duration::from_millis(100),
        ..ClientConfig::new(addr.clone())
    };
    let producer = Producer::with_config(client, ProducerConfig::default());
    let (p, _) = producer
        .send(Record::new("keyed", "first").key("k0"))
        .await
        .expect("send");
    assert_eq!(p, 0);

    admin.create_partitions("keyed", 3).await.expect("grow");
    let info = admin.describe_topic("keyed").await.expect("describe");
    assert_eq!(info.partitions.len(), 3);
    // An explicit new partition works at once: the producer asks again.
    let (p, o) = producer
        .send(Record::new("keyed", "to-two").partition(2))
        .await
        .expect("send to a new partition");
    assert_eq!((p, o), (2, 0));
    // Keyed records spread over all three once the cached count is refreshed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut used = BTreeSet::new();
    let mut i = 0u32;
    while used.len() < 3 && Instant::now() < deadline {
        let (p, _) = producer
            .send(Record::new("keyed", "spread").key(format!("key-{i}")))
            .await
            .expect("send");
        used.insert(p);
        i += 1;
        if i.is_multiple_of(20) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(used, BTreeSet::from([0, 1, 2]), "after {i} records");

    let mut consumer = Consumer::new(addr.clone());
    consumer.assign(vec![("keyed".to_string(), 2)]);
    consumer.seek("keyed", 2, SeekTo::Offset(0)).expect("seek");
    let r = consumer.next().await.expect("assigned").expect("record");
    assert_eq!((r.partition, r.offset), (2, 0));
    assert_eq!(r.value.as_deref(), Some(&b"to-two"[..]));

    admin
        .alter_topic_config(
            "keyed",
            vec![
                ConfigChange::set("segment.ms", "600000"),
                ConfigChange::delete("retention.ms"),
                ConfigChange::set("message.timestamp.after.max.ms", "0"),
            ],
        )
        .await
        .expect("alter");
    let config = |info: &sluice::TopicInfo, key: &str| {
        info.configs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let info = admin.describe_topic("keyed").await.expect("describe");
    assert_eq!(config(&info, "segment.ms"), "600000");
    assert_eq!(config(&info, "retention.ms"), "-1");
    assert_eq!(config(&info, "message.timestamp.after.max.ms"), "0");
    // Live: a record stamped in the future is now refused.
    let e = producer
        .send(
            Record::new("keyed", "future")
                .partition(0)
                .timestamp(common::now_ms() + 60_000),
        )
        .await
        .expect_err("timestamp after the broker clock");
    assert_eq!(e.code(), Some(ErrorCode::InvalidTimestamp), "{e}");

    // Refusals name the problem and change nothing.
    let e = admin
        .create_partitions("keyed", 2)
        .await
        .expect_err("shrink");
    assert_eq!(e.code(), Some(ErrorCode::InvalidPartitions), "{e}");
    assert!(e.to_string().contains("has 3 partitions"), "{e}");
    let e = admin.create_partitions("keyed", 3).await.expect_err("same");
    assert_eq!(e.code(), Some(ErrorCode::InvalidPartitions), "{e}");
    let e = admin
        .create_partitions("keyed", 10_001)
        .await
        .expect_err("too many");
    assert_eq!(e.code(), Some(ErrorCode::InvalidPartitions), "{e}");
    let e = admin
        .create_partitions("ghost", 4)
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition), "{e}");
    let e = admin
        .alter_topic_config(
            "keyed",
            vec![
                ConfigChange::set("segment.ms", "700000"),
                ConfigChange::set("flush", "sometimes"),
            ],
        )
        .await
        .expect_err("bad value");
    assert_eq!(e.code(), Some(ErrorCode::InvalidConfig), "{e}");
    assert!(e.to_string().contains("flush"), "{e}");
    let e = admin
        .alter_topic_config("ghost", vec![ConfigChange::set("segment.ms", "700000")])
        .await
        .expect_err("unknown topic");
    assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition), "{e}");
    let info = admin.describe_topic("keyed").await.expect("describe");
    assert_eq!(info.partitions.len(), 3);
    assert_eq!(config(&info, "segment.ms"), "600000", "unchanged");
    assert_eq!(config(&info, "flush"), "interval");
    producer.close().await;

    // After a restart the broker has the three partitions, their data and the config.
    broker.restart();
    let admin = Admin::connect(broker.addr.to_string())
        .await
        .expect("admin after restart");
    let info = admin.describe_topic("keyed").await.expect("describe");
    assert_eq!(info.partitions.len(), 3);
    assert!(info.partitions.iter().all(|p| p.end_offset > 0), "{info:?}");
    assert_eq!(config(&info, "segment.ms"), "600000");
    assert_eq!(config(&info, "retention.ms"), "-1");
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (at most 20 s) until the node at `addr` reports itself registered and alive.
fn wait_registered(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = sluice_with_input(addr, &["cluster", "status", "--json"], b"");
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("json");
            let alive = v["brokers"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["alive"] == true));
            if alive {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the node never registered: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_one_node_cluster_alters_topics_through_the_controller() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let peers = format!("1@{listen}");
    let mut broker = TestBroker::start_with(&[
        "--node-id",
        "1",
        "--peers",
        &peers,
        "--cluster-listen",
        &listen,
    ]);
    let addr = broker.addr.to_string();
    wait_registered(&addr);
    ok(&sluice_with_input(
        &addr,
        &["topic", "create", "events", "-p", "1"],
        b"",
    ));
    let out = ok(&sluice_with_input(
        &addr,
        &[
            "topic",
            "alter",
            "events",
            "-p",
            "3",
            "--config",
            "retention.ms=120000",
        ],
        b"",
    ));
    assert!(out.contains("now has 3 partitions (was 1)"), "{out}");
    let d = describe(&addr, "events");
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(3), "{d}");
    assert_eq!(d["partitions"][2]["leader"], 1, "{d}");
    assert_eq!(d["configs"]["retention.ms"], "120000", "{d}");
    ok(&sluice_with_input(
        &addr,
        &["topic", "produce", "events", "--partition", "2"],
        b"in-two\n",
    ));
    assert_eq!(consume(&addr, "events", 2, 1), "2/0 in-two\n");

    // The controller refuses what the single node refuses.
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    let e = admin
        .create_partitions("events", 2)
        .await
        .expect_err("shrink");
    assert_eq!(e.code(), Some(ErrorCode::InvalidPartitions), "{e}");
    let e = admin
        .alter_topic_config("events", vec![ConfigChange::set("retention.ms", "x")])
        .await
        .expect_err("bad value");
    assert_eq!(e.code(), Some(ErrorCode::InvalidConfig), "{e}");
    let e = admin
        .alter_topic_config("ghost", vec![ConfigChange::delete("retention.ms")])
        .await
        .expect_err("unknown topic");
    assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition), "{e}");
    admin
        .alter_topic_config("events", vec![ConfigChange::delete("retention.ms")])
        .await
        .expect("delete a key");

    // A restart replays the metadata onto the local topic: still three
    // partitions, the data, and the last config.
    broker.restart();
    let addr = broker.addr.to_string();
    wait_registered(&addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let out = sluice_with_input(&addr, &["topic", "describe", "events", "--json"], b"");
        if out.status.success() {
            break serde_json::from_str::<serde_json::Value>(&text(&out.stdout)).expect("json");
        }
        assert!(Instant::now() < deadline, "{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(3), "{d}");
    assert_eq!(d["configs"]["retention.ms"], "-1", "{d}");
    assert_eq!(consume(&addr, "events", 2, 1), "2/0 in-two\n");
}

#[tokio::test]
async fn a_group_member_is_assigned_the_new_partitions() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("grow", 1, Vec::new())
        .await
        .expect("create");
    let mut consumer = Consumer::with_config(
        ClientConfig::new(addr.clone()),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe("grower", vec!["grow".into()])
        .await
        .expect("subscribe");
    let producer = Producer::new(addr.clone());
    producer
        .send(Record::new("grow", "p0").partition(0))
        .await
        .expect("send p0");
    let first = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a record within 10 s")
        .expect("assigned")
        .expect("record");
    assert_eq!(first.partition, 0);

    admin.create_partitions("grow", 2).await.expect("grow");
    producer
        .send(Record::new("grow", "p1").partition(1))
        .await
        .expect("send p1");
    // The coordinator sees the new count at the next heartbeat and assigns it.
    let r = tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .expect("the new partition's record within 15 s")
        .expect("assigned")
        .expect("record");
    assert_eq!((r.partition, r.offset), (1, 0));
    assert_eq!(r.value.as_deref(), Some(&b"p1"[..]));
    producer.close().await;
}
