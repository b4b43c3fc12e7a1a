//! The replicated metadata across real `sluiced` nodes: topics created through
//! any node are seen by all (3 and 5 voters), the controller fails over when
//! its leader is SIGKILLed and a restarted node catches up, a full SIGKILL of
//! the cluster keeps every topic and the records on their leaders, and a
//! SIGKILLed broker is fenced (alive = false) after its session timeout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{ClusterSpec, PartitionView, TestCluster};
use common::process::ok;
use sluice::{Consumer, ConsumerConfig, Producer, ProducerConfig, Record, SeekTo};
use sluice_protocol::{Acks, ErrorCode};

/// Bound of metadata propagation to every node.
const SEEN: Duration = Duration::from_secs(30);
/// Bound of a new controller election (election timeout 0.6–1.2 s, plus slack for busy CI).
const FAILOVER: Duration = Duration::from_secs(30);

/// Creates through node `id` and asserts success.
fn create(c: &TestCluster, id: u32, name: &str, partitions: u32, rf: i16) {
    let (code, msg) = c.create_topic(id, name, partitions, rf);
    assert_eq!(
        code,
        ErrorCode::None,
        "create {name:?} through node {id}: {msg}\n{}",
        c.logs()
    );
}

/// Asserts each partition's replicas are `rf` distinct known nodes led by the first live one.
fn assert_placed(c: &TestCluster, name: &str, parts: &[PartitionView], rf: usize) {
    let ids: BTreeSet<u32> = c.ids().into_iter().collect();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.partition, i as u32, "{name}: {parts:?}");
        assert_eq!(p.replicas.len(), rf, "{name}/{i}: {p:?}");
        let distinct: BTreeSet<u32> = p.replicas.iter().copied().collect();
        assert_eq!(distinct.len(), rf, "{name}/{i} repeats a replica: {p:?}");
        assert!(distinct.is_subset(&ids), "{name}/{i} unknown node: {p:?}");
        assert!(
            p.replicas.contains(&p.leader),
            "{name}/{i}: leader is not a replica: {p:?}"
        );
    }
}

fn topics_created_through_every_node_are_seen_by_all(n: u32) {
    let mut c = TestCluster::start_voters(n);
    let ids = c.ids();
    // One topic through each node, with different partition counts.
    for &id in &ids {
        create(&c, id, &format!("t{id}"), id + 1, 1);
    }
    let mut leaders = BTreeSet::new();
    for &id in &ids {
        let name = format!("t{id}");
        let parts = c.wait_topic(&name, id + 1, SEEN);
        assert_placed(&c, &name, &parts, 1);
        leaders.extend(parts.iter().map(|p| p.leader));
    }
    // Placement spreads the single replicas: more than one node leads.
    assert!(
        leaders.len() > 1,
        "every partition on one node: {leaders:?}"
    );

    // Replication factor 3 through the last node: three distinct replicas each.
    let last = *ids.last().expect("nodes");
    create(&c, last, "wide", n, 3);
    let parts = c.wait_topic("wide", n, SEEN);
    assert_placed(&c, "wide", &parts, 3);

    // The name is taken cluster-wide: creating it through another node fails.
    let (code, _) = c.create_topic(ids[0], "t2", 7, 1);
    assert_eq!(code, ErrorCode::TopicAlreadyExists);
    // A factor above the brokers is refused and creates nothing.
    let (code, msg) = c.create_topic(ids[0], "toowide", 1, n as i16 + 1);
    assert_eq!(code, ErrorCode::InvalidReplicationFactor, "{msg}");

    // Deleting through the first node removes it everywhere.
    assert_eq!(c.delete_topic(ids[0], &format!("t{last}")), ErrorCode::None);
    c.wait_topic_gone(&format!("t{last}"), SEEN);
    // The other topics are untouched (and nothing was created by the refusals).
    for &id in &ids[..ids.len() - 1] {
        c.wait_topic(&format!("t{id}"), id + 1, SEEN);
    }
    for id in ids {
        let m = c.metadata(id, &[]).expect("metadata");
        let names: BTreeSet<&str> = m.topics.iter().map(|t| t.name.as_str()).collect();
        assert!(
            !names.contains("toowide") && names.contains("wide"),
            "node {id}: {names:?}"
        );
    }
}

#[test]
fn three_nodes_see_topics_created_through_any_node() {
    topics_created_through_every_node_are_seen_by_all(3);
}

#[test]
fn five_nodes_see_topics_created_through_any_node() {
    topics_created_through_every_node_are_seen_by_all(5);
}

#[test]
fn a_new_controller_takes_over_and_a_restarted_node_catches_up() {
    let mut c = TestCluster::start_voters(3);
    create(&c, 1, "before", 3, 1);
    create(&c, 2, "doomed", 2, 1);
    c.wait_topic("before", 3, SEEN);
    c.wait_topic("doomed", 2, SEEN);

    let old = c.controller();
    c.kill(old);
    let new = c.wait_ready(FAILOVER);
    assert_ne!(new, old, "the killed node is still the controller");
    let survivors: Vec<u32> = c.ids().into_iter().filter(|&id| id != old).collect();
    // A survivor other than the new controller forwards; the controller itself too.
    let follower = *survivors
        .iter()
        .find(|&&id| id != new)
        .expect("a surviving follower");
    for d in survivors.iter().map(|&id| c.describe_cluster(id)) {
        let d = d.expect("describe");
        assert_eq!(d.controller_id, new as i32);
        assert!(d.controller_epoch > 0, "{d:?}");
    }
    create(&c, follower, "during", 4, 1);
    create(&c, new, "during2", 1, 1);
    assert_eq!(c.delete_topic(follower, "doomed"), ErrorCode::None);
    c.wait_topic("during", 4, SEEN);
    c.wait_topic("during2", 1, SEEN);
    c.wait_topic_gone("doomed", SEEN);

    // The killed node comes back on its ports and data dir and catches up.
    c.restart(old);
    c.wait_ready(FAILOVER);
    let during = c.wait_topic("during", 4, SEEN);
    c.wait_topic("during2", 1, SEEN);
    c.wait_topic("before", 3, SEEN);
    c.wait_topic_gone("doomed", SEEN);
    // It has the caught-up topic on disk (and its mark), not only in its metadata.
    let topic_dir = c.node(old).data_dir.join("during");
    assert!(
        topic_dir.join("cluster.topic_id").is_file(),
        "node {old} has no local topic \"during\" at {}",
        topic_dir.display()
    );
    assert!(!c.node(old).data_dir.join("doomed").exists());
    assert_eq!(during.len(), 4);
    // And it serves it: through the restarted node, create and delete again.
    create(&c, old, "after", 2, 1);
    c.wait_topic("after", 2, SEEN);
    assert_eq!(c.delete_topic(old, "before"), ErrorCode::None);
    c.wait_topic_gone("before", SEEN);
}

/// The keys and values produced: `(partition, offset) -> (key, value)`.
type Produced = BTreeMap<(u32, u64), (Vec<u8>, Vec<u8>)>;

/// Produces `count` keyed records of varied sizes (an empty value and binary
/// bytes included) to `topic` bootstrapped from `bootstrap`.
async fn produce(bootstrap: &str, topic: &str, count: usize) -> Produced {
    let producer = Producer::with_config(
        sluice::ClientConfig::new(bootstrap),
        ProducerConfig {
            acks: Acks::Durable,
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::new();
    for i in 0..count {
        let key = format!("key-{i}").into_bytes();
        let value: Vec<u8> = (0..(i * 37) % 700).map(|j| (i * 31 + j) as u8).collect();
        let d = producer
            .enqueue(Record::new(topic.to_string(), value.clone()).key(key.clone()))
            .await
            .expect("enqueue");
        pending.push((d, key, value));
    }
    let mut out = Produced::new();
    for (d, key, value) in pending {
        let (p, o) = d.await.expect("acknowledged");
        assert!(out.insert((p, o), (key, value)).is_none(), "{p}/{o} twice");
    }
    producer.close().await;
    out
}

/// Reads every partition of `topic` from the start until `expected` records came
/// (at most 30 s) and asserts they are exactly `expected`.
async fn consume_exactly(bootstrap: &str, topic: &str, partitions: u32, expected: &Produced) {
    let mut consumer = Consumer::with_config(
        sluice::ClientConfig::new(bootstrap),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..partitions).map(|p| (topic.to_string(), p)).collect());
    let mut got = Produced::new();
    let read = async {
        while got.len() < expected.len() {
            let r = consumer
                .next()
                .await
                .expect("assigned")
                .expect("record or retriable wait");
            let kv = (
                r.key.map(|k| k.to_vec()).unwrap_or_default(),
                r.value.map(|v| v.to_vec()).unwrap_or_default(),
            );
            assert!(got.insert((r.partition, r.offset), kv).is_none());
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("read {} of {} records", got.len(), expected.len()));
    assert!(got == *expected, "records differ after the restart");
}

#[test]
fn a_full_sigkill_keeps_every_topic_and_the_records_on_their_leaders() {
    let mut c = TestCluster::start_voters(3);
    let topics = [
        ("one", 1u32, 1i16),
        ("three", 3, 1),
        ("six", 6, 1),
        ("wide", 4, 3),
    ];
    for (i, (name, partitions, rf)) in topics.iter().enumerate() {
        create(&c, i as u32 % 3 + 1, name, *partitions, *rf);
    }
    let mut before = BTreeMap::new();
    for (name, partitions, _) in topics {
        before.insert(name, c.wait_topic(name, partitions, SEEN));
    }
    let leaders: BTreeSet<u32> = before["six"].iter().map(|p| p.leader).collect();
    assert!(leaders.len() > 1, "all of \"six\" on one node: {leaders:?}");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let produced = rt.block_on(produce(&c.bootstrap(2), "six", 300));
    let used: BTreeSet<u32> = produced.keys().map(|(p, _)| *p).collect();
    assert!(used.len() > 1, "keys hashed to one partition: {used:?}");

    c.kill_all();
    c.restart_stopped();
    c.wait_ready(FAILOVER);
    for (name, partitions, _) in topics {
        let after = c.wait_topic(name, partitions, SEEN);
        let replicas =
            |v: &[PartitionView]| v.iter().map(|p| p.replicas.clone()).collect::<Vec<_>>();
        assert_eq!(replicas(&after), replicas(&before[name]), "{name} moved");
    }
    rt.block_on(consume_exactly(&c.bootstrap(3), "six", 6, &produced));
    // The cluster still takes changes after the restart.
    create(&c, 1, "later", 2, 1);
    c.wait_topic("later", 2, SEEN);
}

/// Needs broker fencing by heartbeat (`--broker-session-timeout-ms`).
#[test]
fn a_sigkilled_broker_is_fenced_and_its_partitions_lose_their_live_leader() {
    let mut c = TestCluster::start(ClusterSpec::voters(3).session_timeout_ms(2000));
    create(&c, 1, "fenced", 6, 1);
    let parts = c.wait_topic("fenced", 6, SEEN);
    let controller = c.controller();
    // A non-controller that leads partitions.
    let victim = c
        .ids()
        .into_iter()
        .filter(|&id| id != controller)
        .max_by_key(|&id| parts.iter().filter(|p| p.leader == id).count())
        .expect("a non-controller");
    let lost: BTreeSet<u32> = parts
        .iter()
        .filter(|p| p.leader == victim)
        .map(|p| p.partition)
        .collect();
    assert!(!lost.is_empty(), "node {victim} leads nothing: {parts:?}");

    c.kill(victim);
    let survivors: Vec<u32> = c.ids().into_iter().filter(|&id| id != victim).collect();
    c.wait_for(
        &format!("node {victim} to be shown alive=false"),
        Duration::from_secs(10),
        |c| {
            for &id in &survivors {
                let d = c
                    .describe_cluster(id)
                    .map_err(|e| format!("node {id}: {e}"))?;
                let b = d
                    .brokers
                    .iter()
                    .find(|b| b.node_id == victim)
                    .ok_or_else(|| format!("node {id} lost broker {victim}: {d:?}"))?;
                if b.alive {
                    return Err(format!("node {id} still shows {victim} alive"));
                }
                for other in &survivors {
                    if !d.brokers.iter().any(|b| b.node_id == *other && b.alive) {
                        return Err(format!("node {id} shows survivor {other} not alive: {d:?}"));
                    }
                }
            }
            Ok(())
        },
    );

    let status: serde_json::Value = serde_json::from_str(&ok(&c.sluice(
        survivors[0],
        &["cluster", "status", "--json"],
        b"",
    )))
    .expect("json");
    let brokers = status["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 3, "{status}");
    for b in brokers {
        assert_eq!(b["alive"], b["id"] != victim, "{status}");
    }
    let leaderless: BTreeSet<u32> = status["leaderless_partitions"]
        .as_array()
        .expect("leaderless_partitions")
        .iter()
        .map(|p| {
            assert_eq!(p["topic"], "fenced", "{status}");
            p["partition"].as_u64().expect("partition") as u32
        })
        .collect();
    assert_eq!(leaderless, lost, "{status}");
    let text = ok(&c.sluice(survivors[1], &["cluster", "status"], b""));
    assert!(
        text.lines()
            .any(|l| l == format!("PARTITIONS WITHOUT A LIVE LEADER: {}", lost.len())),
        "{text}"
    );
    // `topic describe` shows those partitions with no leader.
    let d: serde_json::Value = serde_json::from_str(&ok(&c.sluice(
        survivors[0],
        &["topic", "describe", "fenced", "--json"],
        b"",
    )))
    .expect("json");
    for p in d["partitions"].as_array().expect("partitions") {
        let index = p["partition"].as_u64().expect("partition") as u32;
        if lost.contains(&index) {
            assert_eq!(p["leader"], serde_json::Value::Null, "{d}");
            // The ISR keeps its last member (it leads again when it returns).
            assert_eq!(p["isr"], serde_json::json!([victim]), "{d}");
            assert_eq!(p["replicas"], serde_json::json!([victim]), "{d}");
        } else {
            assert_ne!(p["leader"], serde_json::json!(victim), "{d}");
        }
    }
}

/// Partition growth and config changes go through the controller from any
/// node: grown through node 2 with the client, altered through node 3 with
/// the CLI; every node then has the new partitions (led by live nodes) and
/// the new config, a record reaches a new partition through node 1, and both
/// changes survive a full restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_configs_change_through_any_node() {
    let mut c = TestCluster::start_voters(3);
    create(&c, 1, "grow", 3, 1);
    c.wait_topic("grow", 3, SEEN);
    let admin = sluice::Admin::connect(c.bootstrap(2)).await.expect("admin");
    admin
        .create_partitions("grow", 6)
        .await
        .expect("grow through node 2");
    let parts = c.wait_topic("grow", 6, SEEN);
    assert_placed(&c, "grow", &parts, 1);
    let leaders: BTreeSet<u32> = parts[3..].iter().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "new partitions spread: {parts:?}");
    // Shrinking is refused and changes nothing.
    let e = admin
        .create_partitions("grow", 2)
        .await
        .expect_err("shrink");
    assert_eq!(e.code(), Some(ErrorCode::InvalidPartitions), "{e}");

    let out = c.sluice(
        3,
        &[
            "topic",
            "alter",
            "grow",
            "--config",
            "retention.ms=86400000",
        ],
        b"",
    );
    ok(&out);
    let config_on = |c: &TestCluster, id: u32| -> Option<String> {
        let m = c.metadata(id, &["grow"]).ok()?;
        let t = m.topics.into_iter().find(|t| t.name == "grow")?;
        t.configs
            .into_iter()
            .find(|(k, _)| k == "retention.ms")
            .map(|(_, v)| v)
    };
    c.wait_for("retention.ms on every node", SEEN, |c| {
        let seen: Vec<Option<String>> = c.ids().into_iter().map(|id| config_on(c, id)).collect();
        if seen.iter().all(|v| v.as_deref() == Some("86400000")) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });

    // A record to a new partition, through a node that may not lead it.
    let producer = Producer::new(c.bootstrap(1));
    let (p, o) = producer
        .send(Record::new("grow", "in a new partition").partition(5))
        .await
        .expect("produced to partition 5");
    assert_eq!((p, o), (5, 0));
    producer.close().await;

    c.kill_all();
    let ids = c.ids();
    c.restart_many(&ids);
    let parts = c.wait_topic("grow", 6, SEEN);
    assert_placed(&c, "grow", &parts, 1);
    c.wait_for("retention.ms after restart", SEEN, |c| {
        match config_on(c, 1).as_deref() {
            Some("86400000") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// Sends `signal` to node `id` of `c`.
fn signal(c: &TestCluster, id: u32, signal: &str) {
    let pid = c.node(id).pid().expect("running node");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Whether node `via` shows broker `id` alive.
fn alive_via(c: &TestCluster, via: u32, id: u32) -> Result<bool, String> {
    let d = c.describe_cluster(via)?;
    d.brokers
        .iter()
        .find(|b| b.node_id == id)
        .map(|b| b.alive)
        .ok_or_else(|| format!("node {via} does not list {id}"))
}

/// Paused nodes (SIGSTOP) look dead and come back: a paused broker is fenced
/// and unfenced once resumed; a paused controller leader is replaced, the
/// others keep taking changes, and once resumed it follows the new leader
/// and has every change made meanwhile.
#[test]
fn paused_nodes_are_fenced_replaced_and_catch_up_when_resumed() {
    let mut c = TestCluster::start(ClusterSpec::voters(3).session_timeout_ms(2000));
    let controller = c.controller();
    let broker = c
        .ids()
        .into_iter()
        .find(|&id| id != controller)
        .expect("a follower");
    let other = c
        .ids()
        .into_iter()
        .find(|&id| id != controller && id != broker)
        .expect("a third node");

    signal(&c, broker, "-STOP");
    c.wait_for("the paused broker fenced", SEEN, |c| {
        match alive_via(c, controller, broker)? {
            false => Ok(()),
            true => Err("still alive".into()),
        }
    });
    signal(&c, broker, "-CONT");
    c.wait_for("the resumed broker unfenced", SEEN, |c| {
        match alive_via(c, other, broker)? {
            true => Ok(()),
            false => Err("still fenced".into()),
        }
    });

    signal(&c, controller, "-STOP");
    let new = c.wait_for("a new controller", FAILOVER, |c| {
        let d = c.describe_cluster(other)?;
        match u32::try_from(d.controller_id) {
            Ok(id) if id != controller => Ok(id),
            _ => Err(format!("controller {}", d.controller_id)),
        }
    });
    assert_ne!(new, controller);
    create(&c, other, "while-paused", 3, 1);
    c.wait_for("the topic on the two running nodes", SEEN, |c| {
        for id in [broker, other] {
            let m = c.metadata(id, &["while-paused"])?;
            if !m
                .topics
                .iter()
                .any(|t| t.name == "while-paused" && t.error == ErrorCode::None)
            {
                return Err(format!("node {id} lacks it"));
            }
        }
        Ok(())
    });
    signal(&c, controller, "-CONT");
    c.wait_for(
        "the resumed old leader follows and has the topic",
        SEEN,
        |c| {
            let d = c.describe_cluster(controller)?;
            if d.controller_id == controller as i32 {
                return Err("still believes it leads".into());
            }
            let m = c.metadata(controller, &["while-paused"])?;
            if m.topics
                .iter()
                .any(|t| t.name == "while-paused" && t.error == ErrorCode::None)
            {
                Ok(())
            } else {
                Err("no topic yet".into())
            }
        },
    );
    // And it takes changes again, seen by all.
    create(&c, controller, "after-resume", 2, 1);
    c.wait_topic("after-resume", 2, SEEN);
}
