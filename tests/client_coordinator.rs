//! The client finds a group's coordinator on another broker: two embedded
//! brokers, A and B, hold the same topic and records; A's coordinator rule
//! says B coordinates the group. A consumer bootstrapped from A joins (after
//! B answered COORDINATOR_NOT_AVAILABLE twice), consumes, commits; the Admin
//! and `sluice group describe` bootstrapped from A show the group as B holds
//! it. Then the coordinator moves to A: the member's heartbeats to B get
//! NOT_COORDINATOR, it looks the coordinator up again and rejoins on A.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::{ok, output_within};
use common::sluice_cli;
use sluice::{Admin, ClientConfig, Consumer, ConsumerConfig, Producer, Record};
use sluice_broker::{Broker, ConfigLayer, GroupCoordinator, Groups};
use sluiced::Server;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One embedded broker on 127.0.0.1 with an ephemeral port.
struct Embedded {
    addr: SocketAddr,
    broker: Arc<Broker>,
    groups: Arc<Groups>,
    shutdown: CancellationToken,
    running: JoinHandle<Result<(), sluice_broker::BrokerError>>,
    _dir: tempfile::TempDir,
}

impl Embedded {
    async fn start() -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        let config = ConfigLayer {
            data_dir: Some(dir.path().to_path_buf()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            http_listen: Some("127.0.0.1:0".parse().unwrap()),
            kafka_listen: Some("127.0.0.1:0".into()),
            ..ConfigLayer::default()
        }
        .resolve()
        .unwrap();
        let server = Server::bind(config).await.unwrap();
        let shutdown = CancellationToken::new();
        Embedded {
            addr: server.native_addr(),
            broker: server.broker().clone(),
            groups: server.groups().clone(),
            running: tokio::spawn(server.run(shutdown.clone())),
            shutdown,
            _dir: dir,
        }
    }

    /// The rule "group `g` is coordinated by `other` (as node `node_id`)".
    fn coordinated_by(&self, node_id: u32, other: &Embedded) {
        let port = other.addr.port();
        self.broker.set_group_coordinator(Box::new(move |group| {
            if group == "g" {
                GroupCoordinator::Remote {
                    node_id,
                    host: "127.0.0.1".into(),
                    port,
                }
            } else {
                GroupCoordinator::Local
            }
        }));
    }

    fn group_ids(&self) -> Vec<String> {
        self.groups
            .list_groups()
            .into_iter()
            .map(|g| g.group)
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.running)
            .await
            .expect("shutdown in time")
            .unwrap()
            .unwrap();
    }
}

/// `n` records from `c`, each within 10 s, as (partition, offset).
async fn take(c: &mut Consumer, n: usize) -> Vec<(u32, u64)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .expect("a record within 10 s")
            .expect("record")
            .expect("ok");
        out.push((r.partition, r.offset));
    }
    out.sort_unstable();
    out
}

/// Creates topic `t` (2 partitions) on `b` and produces records `from..to`
/// to it, alternating partitions.
async fn produce(b: &Embedded, create: bool, from: u32, to: u32) {
    let addr = b.addr.to_string();
    if create {
        let admin = Admin::connect(addr.clone()).await.unwrap();
        admin.create_topic("t", 2, vec![]).await.unwrap();
    }
    let producer = Producer::new(addr);
    for i in from..to {
        let record = Record::new("t", format!("v{i}")).partition(i % 2);
        producer.send(record).await.expect("produced");
    }
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_bootstrapped_elsewhere_uses_the_groups_coordinator() {
    let a = Embedded::start().await;
    let b = Embedded::start().await;
    // The same topic and records on both: the member fetches from A (the only
    // broker A's metadata names) while B computes lag from its own copy.
    for broker in [&a, &b] {
        produce(broker, true, 0, 10).await;
    }
    a.coordinated_by(1, &b);
    // B coordinates "g", but is not available for its first two requests.
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    b.broker.set_group_coordinator(Box::new(move |group| {
        if group == "g" && counter.fetch_add(1, Ordering::SeqCst) < 2 {
            GroupCoordinator::Unavailable
        } else {
            GroupCoordinator::Local
        }
    }));

    let client = ClientConfig::new(a.addr.to_string());
    let config = ConsumerConfig {
        enable_auto_commit: false,
        session_timeout: Duration::from_secs(3),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::with_config(client, config);
    consumer
        .subscribe("g", vec!["t".into()])
        .await
        .expect("joined");
    assert!(
        asked.load(Ordering::SeqCst) >= 3,
        "the join was retried after COORDINATOR_NOT_AVAILABLE"
    );
    let got = take(&mut consumer, 10).await;
    let want: Vec<(u32, u64)> = (0..2).flat_map(|p| (0..5).map(move |o| (p, o))).collect();
    assert_eq!(got, want);
    consumer.commit().await.expect("committed");

    // The group lives on B only.
    assert_eq!(b.group_ids(), ["g"]);
    assert!(a.group_ids().is_empty(), "A holds {:?}", a.group_ids());

    // The admin, bootstrapped from A, describes it through B.
    let admin = Admin::connect(a.addr.to_string()).await.unwrap();
    let d = admin.describe_group("g").await.expect("described");
    assert_eq!(d.members.len(), 1);
    let committed: Vec<(u32, i64, u64)> = d
        .offsets
        .iter()
        .map(|o| (o.partition, o.committed_offset, o.lag))
        .collect();
    assert_eq!(committed, [(0, 5, 0), (1, 5, 0)]);
    assert_eq!(
        admin.group_offsets("g").await.unwrap(),
        [("t".to_string(), 0, 5), ("t".to_string(), 1, 5)]
    );

    // So does the CLI.
    let cli_addr = a.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = sluice_cli(&cli_addr);
        cmd.args(["group", "describe", "g", "--json"]);
        output_within(cmd, None, Duration::from_secs(30))
    })
    .await
    .unwrap();
    let d: serde_json::Value = serde_json::from_str(&ok(&out)).expect("JSON");
    assert_eq!(d["members"].as_array().map(Vec::len), Some(1), "{d}");
    for p in d["partitions"].as_array().expect("partitions") {
        assert_eq!(p["committed_offset"], 5, "{d}");
    }

    // The coordinator moves to A. The member's next heartbeat to B gets
    // NOT_COORDINATOR; it finds A, which does not know it, and rejoins there.
    b.coordinated_by(0, &a);
    a.broker
        .set_group_coordinator(Box::new(|_| GroupCoordinator::Local));
    produce(&a, false, 10, 12).await;
    // A has no committed offsets for "g": the new member starts from the
    // earliest offsets again (everything up to the two new records).
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(&(1, 5)) || !seen.contains(&(0, 0)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not re-read from A: {seen:?}"
        );
        seen.extend(take(&mut consumer, 1).await);
    }
    assert_eq!(a.group_ids(), ["g"]);
    let d = admin.describe_group("g").await.expect("described on A");
    assert_eq!(d.members.len(), 1);
    consumer.close().await.expect("left");
    let d = admin.describe_group("g").await.expect("described on A");
    assert!(d.members.is_empty(), "the leave reached A");

    a.stop().await;
    b.stop().await;
}
