//! Clients against three real `sluiced` nodes, bootstrapped from one of them:
//! the Rust client library and the `sluice` CLI produce to a 6-partition RF1
//! topic whose leaders are spread over the nodes and read every record back
//! byte for byte; a raw Produce, Fetch or ListOffsets to a non-leader is
//! answered NOT_LEADER; `topic describe` and `cluster status` show the
//! cluster as the nodes' metadata does.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{PartitionView, TestCluster};
use common::process::{ok, text};
use common::{batch_of, RawClient};
use sluice::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, Record, SeekTo};
use sluice_protocol::{Acks, ErrorCode, OffsetSpec};

/// Bound of metadata propagation to every node.
const SEEN: Duration = Duration::from_secs(30);

/// Asserts the partitions' leaders cover every node (so routing is exercised).
fn assert_spread(c: &TestCluster, parts: &[PartitionView]) {
    let leaders: BTreeSet<u32> = parts.iter().map(|p| p.leader).collect();
    let ids: BTreeSet<u32> = c.ids().into_iter().collect();
    assert_eq!(leaders, ids, "leaders not spread over the nodes: {parts:?}");
    for p in parts {
        assert_eq!(p.replicas, vec![p.leader], "RF1: {p:?}");
    }
}

/// One record as compared end to end: (key, value, headers).
type Content = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

/// Value `i`: binary, sizes from empty to ~100 KiB.
fn value(i: usize) -> Vec<u8> {
    let len = match i % 7 {
        0 => 0,
        1 => 1,
        2 => 256,
        3 => 100 * 1024 + i,
        _ => (i * 53) % 3000,
    };
    (0..len).map(|j| ((i * 7 + j * 13) % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_bootstrapped_from_one_node_reaches_every_leader() {
    let mut c = TestCluster::start_voters(3);
    let bootstrap = c.bootstrap(2);
    let admin = Admin::connect(bootstrap.clone()).await.expect("admin");
    admin
        .create_topic_with("spread", 6, Some(1), Vec::new())
        .await
        .expect("create through node 2");
    let parts = c.wait_topic("spread", 6, SEEN);
    assert_spread(&c, &parts);
    let described = admin.describe_topic("spread").await.expect("describe");
    for (d, p) in described.partitions.iter().zip(&parts) {
        assert_eq!((d.leader, &d.replicas), (p.leader, &p.replicas));
    }

    let producer = Producer::with_config(
        sluice::ClientConfig::new(bootstrap.clone()),
        ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::new();
    for i in 0..240usize {
        let mut r = Record::new("spread", value(i)).header("i", i.to_string());
        let key = (i % 3 != 0).then(|| format!("key-{}", i % 40).into_bytes());
        if let Some(k) = &key {
            r = r.key(k.clone());
        } else {
            // Keyless ones go to every partition explicitly.
            r = r.partition((i / 3 % 6) as u32);
        }
        let content: Content = (
            key,
            value(i),
            vec![("i".into(), i.to_string().into_bytes())],
        );
        pending.push((producer.enqueue(r).await.expect("enqueue"), content));
    }
    let mut sent: BTreeMap<(u32, u64), Content> = BTreeMap::new();
    for (d, content) in pending {
        let (p, o) = d.await.expect("acknowledged");
        assert!(sent.insert((p, o), content).is_none(), "{p}/{o} twice");
    }
    producer.close().await;
    let used: BTreeSet<u32> = sent.keys().map(|(p, _)| *p).collect();
    assert_eq!(used.len(), 6, "partitions used: {used:?}");

    // Each partition's records are on its leader.
    for p in &parts {
        let (err, end, _) = RawClient::connect(c.addr(p.leader)).list_offset(
            "spread",
            p.partition,
            OffsetSpec::Latest,
        );
        assert_eq!(err, ErrorCode::None);
        let count = sent.keys().filter(|(q, _)| *q == p.partition).count() as u64;
        assert_eq!(
            end, count,
            "partition {} on its leader {}",
            p.partition, p.leader
        );
    }

    let mut consumer = Consumer::with_config(
        sluice::ClientConfig::new(bootstrap),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..6).map(|p| ("spread".to_string(), p)).collect());
    let mut got: BTreeMap<(u32, u64), Content> = BTreeMap::new();
    let read = async {
        while got.len() < sent.len() {
            let r = consumer.next().await.expect("assigned").expect("record");
            let content: Content = (
                r.key.map(|k| k.to_vec()),
                r.value.map(|v| v.to_vec()).unwrap_or_default(),
                r.headers
                    .into_iter()
                    .map(|(k, v)| (k, v.to_vec()))
                    .collect(),
            );
            assert!(got.insert((r.partition, r.offset), content).is_none());
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("read {} of {} records\n{}", got.len(), sent.len(), c.logs()));
    assert!(got == sent, "records read back differ from those sent");
}

#[test]
fn a_non_leader_answers_not_leader_and_the_leader_serves() {
    let mut c = TestCluster::start_voters(3);
    let (code, msg) = c.create_topic(1, "routed", 6, 1);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let parts = c.wait_topic("routed", 6, SEEN);
    assert_spread(&c, &parts);
    for p in &parts {
        let mut leader = c.client(p.leader);
        let r = leader.produce(
            "routed",
            p.partition,
            batch_of(&[b"on the leader"]),
            Acks::Leader,
        );
        assert_eq!(
            r.error,
            ErrorCode::None,
            "leader {} of {}",
            p.leader,
            p.partition
        );
        for other in c.ids().into_iter().filter(|&id| id != p.leader) {
            let mut raw = c.client(other);
            let r = raw.produce(
                "routed",
                p.partition,
                batch_of(&[b"not here"]),
                Acks::Leader,
            );
            assert_eq!(
                r.error,
                ErrorCode::NotLeaderForPartition,
                "produce {}/{} to node {other}",
                "routed",
                p.partition
            );
            let f = raw.fetch("routed", p.partition, 0);
            assert_eq!(
                f.error,
                ErrorCode::NotLeaderForPartition,
                "fetch via {other}"
            );
            let (err, _, _) = raw.list_offset("routed", p.partition, OffsetSpec::Latest);
            assert_eq!(
                err,
                ErrorCode::NotLeaderForPartition,
                "list offsets via {other}"
            );
        }
        // Only the leader's record is there.
        let records = leader.fetch_all("routed", p.partition, 0);
        assert_eq!(records, vec![(0, b"on the leader".to_vec())]);
    }
}

#[test]
fn the_cli_bootstrapped_from_one_node_produces_consumes_and_describes_the_cluster() {
    let mut c = TestCluster::start_voters(3);
    let created = c.sluice(
        3,
        &[
            "topic",
            "create",
            "lines",
            "-p",
            "6",
            "--replication-factor",
            "1",
        ],
        b"",
    );
    assert_eq!(
        ok(&created).trim(),
        "created topic \"lines\" with 6 partitions"
    );
    let parts = c.wait_topic("lines", 6, SEEN);
    assert_spread(&c, &parts);

    // Keyed lines (hashed over the partitions), some with tabs and UTF-8.
    let lines: Vec<String> = (0..600)
        .map(|i| format!("k{i}:value {i}\tδ {}", "x".repeat(i % 50)))
        .collect();
    let mut input = lines.join("\n");
    input.push('\n');
    let out = c.sluice(
        1,
        &["topic", "produce", "lines", "--key-separator", ":"],
        input.as_bytes(),
    );
    ok(&out);
    assert_eq!(text(&out.stderr).trim(), "produced 600 records");

    let out = c.sluice(
        1,
        &[
            "topic",
            "consume",
            "lines",
            "--count",
            "600",
            "--format",
            "%k:%v|%p\\n",
        ],
        b"",
    );
    let stdout = ok(&out);
    let mut read: Vec<&str> = Vec::new();
    let mut per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    for l in stdout.lines() {
        let (line, p) = l
            .rsplit_once('|')
            .unwrap_or_else(|| panic!("bad line {l:?}"));
        *per_partition
            .entry(p.parse().expect("partition"))
            .or_default() += 1;
        read.push(line);
    }
    read.sort_unstable();
    let mut expected: Vec<&str> = lines.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(read, expected, "lines read back differ");
    assert_eq!(per_partition.len(), 6, "partitions used: {per_partition:?}");

    // describe: each partition's leader and replicas as the metadata says,
    // and its end offset (from the leader) counts what was produced to it.
    let d: serde_json::Value = serde_json::from_str(&ok(&c.sluice(
        2,
        &["topic", "describe", "lines", "--json"],
        b"",
    )))
    .expect("json");
    let described = d["partitions"].as_array().expect("partitions");
    assert_eq!(described.len(), 6, "{d}");
    for (dp, p) in described.iter().zip(&parts) {
        assert_eq!(dp["partition"], p.partition, "{d}");
        assert_eq!(dp["leader"], p.leader, "{d}");
        assert_eq!(dp["replicas"], serde_json::json!(p.replicas), "{d}");
        assert_eq!(dp["end_offset"], per_partition[&p.partition], "{d}");
    }
    let table = ok(&c.sluice(2, &["topic", "describe", "lines"], b""));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("PARTITION "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 6, "{table}");
    for (r, p) in rows.iter().zip(&parts) {
        let leader = p.leader.to_string();
        assert_eq!(
            &r[..3],
            [
                p.partition.to_string().as_str(),
                leader.as_str(),
                leader.as_str()
            ],
            "{table}"
        );
    }

    // cluster status: the three brokers, all alive, and the controller.
    let controller = c.controller();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&c.sluice(3, &["cluster", "status", "--json"], b"")))
            .expect("json");
    assert_eq!(v["controller"]["id"], controller, "{v}");
    assert!(v["controller"]["term"].as_u64().expect("term") > 0, "{v}");
    let brokers = v["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 3, "{v}");
    for (b, id) in brokers.iter().zip(c.ids()) {
        assert_eq!(b["id"], id, "{v}");
        assert_eq!(b["address"], c.bootstrap(id).as_str(), "{v}");
        assert_eq!(b["alive"], true, "{v}");
    }
    assert_eq!(v["leaderless_partitions"], serde_json::json!([]), "{v}");
    let status = ok(&c.sluice(1, &["cluster", "status"], b""));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(&format!("CONTROLLER  {controller} (term "))),
        "{status}"
    );
}

/// The coordinator of `group` as node `via` names it (raw FindCoordinator).
fn coordinator_via(c: &TestCluster, via: u32, group: &str) -> (ErrorCode, u32, u16) {
    let mut raw = c.client(via);
    let r = raw.call(&sluice_protocol::Request::FindCoordinator(
        sluice_protocol::FindCoordinatorRequest {
            group_id: group.to_string(),
        },
    ));
    match r {
        sluice_protocol::Response::FindCoordinator(f) => (f.error, f.node_id, f.port),
        other => panic!("FindCoordinator answered {other:?}"),
    }
}

/// Consumer groups on three nodes: every node names the same coordinator for
/// each group, groups spread over the voters, a group request to another
/// node answers NOT_COORDINATOR without creating the group there, and a
/// consumer bootstrapped from a node that does not coordinate its group
/// joins, reads every record from the leaders, commits, and `sluice group
/// describe` through a third node shows the commits with lag from the leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_work_through_their_coordinator_on_any_node() {
    let mut c = TestCluster::start_voters(3);
    let mut by_node: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0..24 {
        let g = format!("group-{i}");
        let mut answers: Vec<(ErrorCode, u32, u16)> = c
            .ids()
            .into_iter()
            .map(|n| coordinator_via(&c, n, &g))
            .collect();
        answers.dedup();
        assert_eq!(answers.len(), 1, "{g}: nodes disagree: {answers:?}");
        let (err, node, port) = answers[0];
        assert_eq!(err, ErrorCode::None, "{g}");
        assert_eq!(
            port,
            c.addr(node).port(),
            "{g}: the coordinator's native port"
        );
        by_node.entry(node).or_default().push(g);
    }
    assert_eq!(
        by_node.len(),
        3,
        "groups not spread over the voters: {by_node:?}"
    );

    let (code, msg) = c.create_topic(1, "work", 6, 1);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let parts = c.wait_topic("work", 6, SEEN);
    assert_spread(&c, &parts);
    // A group coordinated by node 2, used through node 1 and described through node 3.
    let group = by_node[&2][0].clone();
    let mut raw = c.client(1);
    let r = raw.call(&sluice_protocol::Request::OffsetFetch(
        sluice_protocol::OffsetFetchRequest {
            group_id: group.clone(),
            topics: Vec::new(),
        },
    ));
    match r {
        sluice_protocol::Response::OffsetFetch(f) => {
            assert_eq!(f.error, ErrorCode::NotCoordinator, "{f:?}")
        }
        other => panic!("OffsetFetch answered {other:?}"),
    }

    let producer = Producer::new(c.bootstrap(1));
    for i in 0..60u32 {
        let r = Record::new("work", format!("v{i}")).partition(i % 6);
        producer.send(r).await.expect("produced");
    }
    producer.close().await;

    let mut consumer = Consumer::with_config(
        sluice::ClientConfig::new(c.bootstrap(1)),
        ConsumerConfig {
            enable_auto_commit: false,
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe(&group, vec!["work".into()])
        .await
        .expect("joined through node 1");
    let mut got = BTreeSet::new();
    let read = async {
        while got.len() < 60 {
            let r = consumer.next().await.expect("subscribed").expect("record");
            let v =
                String::from_utf8(r.value.map(|v| v.to_vec()).unwrap_or_default()).expect("utf8");
            got.insert(v);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("read {} of 60\n{}", got.len(), c.logs()));
    let want: BTreeSet<String> = (0..60).map(|i| format!("v{i}")).collect();
    assert_eq!(got, want);
    consumer.commit().await.expect("committed");

    let out = c.sluice(3, &["group", "describe", &group, "--json"], b"");
    let d: serde_json::Value = serde_json::from_str(&ok(&out)).expect("json");
    assert_eq!(d["members"].as_array().map(Vec::len), Some(1), "{d}");
    let partitions = d["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 6, "{d}");
    for p in partitions {
        assert_eq!(p["committed_offset"], 10, "{d}");
        assert_eq!(p["end_offset"], 10, "{d}");
        assert_eq!(p["lag"], 0, "{d}");
    }
    // Lag seen from the leaders: ten more records on partition 0.
    let producer = Producer::new(c.bootstrap(3));
    for i in 0..10u32 {
        producer
            .send(Record::new("work", format!("w{i}")).partition(0))
            .await
            .expect("produced");
    }
    producer.close().await;
    let admin = Admin::connect(c.bootstrap(3)).await.expect("admin");
    let d = admin.describe_group(&group).await.expect("describe");
    let p0 = d
        .offsets
        .iter()
        .find(|o| o.partition == 0)
        .expect("partition 0");
    assert_eq!(
        (p0.committed_offset, p0.end_offset, p0.lag),
        (10, 20, 10),
        "{d:?}"
    );
    assert_eq!(d.total_lag(), 10);
    // Only node 2 holds the group.
    for n in [1u32, 3] {
        let out = c.sluice(n, &["group", "list", "--json"], b"");
        let v: serde_json::Value = serde_json::from_str(&ok(&out)).expect("json");
        let listed = v.as_array().map(Vec::len);
        assert_eq!(listed, Some(1), "group list via node {n}: {v}");
    }
    consumer.close().await.expect("left the group");

    // The only bootstrap broker gone: the coordinator is found through
    // another broker an earlier Metadata answer named.
    let admin = Admin::connect(c.bootstrap(3)).await.expect("admin");
    admin.list_topics().await.expect("metadata through node 3");
    c.kill(3);
    let d = admin
        .describe_group(&group)
        .await
        .expect("described with node 3 gone");
    assert_eq!(d.group_id, group);
    let p0 = d
        .offsets
        .iter()
        .find(|o| o.partition == 0)
        .expect("partition 0");
    assert_eq!(p0.committed_offset, 10, "{d:?}");
}
