//! Elastic scaling on real `sluiced` nodes, online, under a stream of
//! idempotent `acks = durable` produces: a fourth broker joins and
//! `sluice cluster rebalance` moves replicas to it; `sluice topic reassign`
//! makes it lead; `sluice cluster decommission` drains a voter, which is
//! then killed for good. The checker then reads every partition back:
//! every acknowledged record exactly once, at its offset, no gaps.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{ClusterSpec, TestCluster};
use common::workload::{check, check_retained, leader_of, Workload, SEEN};
use common::RawClient;
use sluice_protocol::ErrorCode;
use sluice_protocol::OffsetSpec;

const TOPIC: &str = "elastic";
const PARTITIONS: u32 = 4;

/// Each partition's replicas as node `via` reports them.
fn replicas(c: &TestCluster, via: u32) -> Result<BTreeMap<u32, Vec<u32>>, String> {
    let m = c.metadata(via, &[TOPIC])?;
    let t = m
        .topics
        .iter()
        .find(|t| t.name == TOPIC)
        .ok_or("no topic")?;
    Ok(t.partitions
        .iter()
        .map(|p| (p.partition, p.replicas.clone()))
        .collect())
}

fn count_on(r: &BTreeMap<u32, Vec<u32>>, id: u32) -> usize {
    r.values().filter(|v| v.contains(&id)).count()
}

fn cli_ok(c: &TestCluster, via: u32, args: &[&str]) -> String {
    let out = c.sluice(via, args, b"");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sluice {args:?}: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    eprintln!("sluice {args:?}:\n{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_broker_takes_replicas_and_a_decommissioned_one_gives_them_up_online() {
    let mut c = TestCluster::start(ClusterSpec::voters(3).joiners(1).session_timeout_ms(2000));
    // The fourth broker is down while the topic is placed: it gets nothing.
    c.kill(4);
    c.wait_for("broker 4 fenced", SEEN, |c| {
        let d = c.describe_cluster(1)?;
        match d.brokers.iter().find(|b| b.node_id == 4) {
            Some(b) if !b.alive => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (code, msg) = c.create_topic(1, TOPIC, PARTITIONS, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    c.wait_topic(TOPIC, PARTITIONS, SEEN);
    assert_eq!(count_on(&replicas(&c, 1).unwrap(), 4), 0);

    let w = Workload::start(c.bootstrap(1), TOPIC, PARTITIONS, 12_000);
    w.wait_acked(1500, &c).await;

    // Bad requests are refused with a reason and change nothing.
    let out = c.sluice(
        1,
        &["topic", "reassign", TOPIC, "-p", "0", "--replicas", "1,2,9"],
        b"",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broker 9 is not registered"), "{err}");
    let out = c.sluice(1, &["topic", "reassign", TOPIC, "-p", "0", "--cancel"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no move to cancel"));

    // The fourth broker joins; a rebalance gives it its share (12 replicas
    // over 4 brokers: 3 each) while the producer goes on.
    c.restart(4);
    c.wait_for("broker 4 alive", SEEN, |c| {
        let d = c.describe_cluster(1)?;
        match d.brokers.iter().find(|b| b.node_id == 4) {
            Some(b) if b.alive => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let out = cli_ok(&c, 1, &["cluster", "rebalance", "--timeout", "50"]);
    assert!(out.contains("partition move(s) completed"), "{out}");
    let after = replicas(&c, 1).unwrap();
    for id in 1..=4 {
        assert_eq!(count_on(&after, id), 3, "broker {id}: {after:?}");
    }
    for (p, r) in &after {
        assert_eq!(r.len(), 3, "partition {p}: {r:?}");
    }

    // Broker 4 leads one of its partitions: its copy is the one served.
    let (&p4, r4) = after.iter().find(|(_, r)| r.contains(&4)).unwrap();
    let mut order = vec![4];
    order.extend(r4.iter().copied().filter(|r| *r != 4));
    let order = order
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    cli_ok(
        &c,
        2,
        &[
            "topic",
            "reassign",
            TOPIC,
            "-p",
            &p4.to_string(),
            "--replicas",
            &order,
        ],
    );
    c.wait_for(
        "broker 4 to lead",
        Duration::from_secs(40),
        |c| match leader_of(c, TOPIC, p4) {
            4 => Ok(()),
            l => Err(format!("leader {l}")),
        },
    );

    // Broker 3 (a controller voter) is decommissioned, then killed for good.
    let out = cli_ok(&c, 1, &["cluster", "decommission", "3", "--timeout", "50"]);
    assert!(out.contains("broker 3 holds no replicas"), "{out}");
    let drained = replicas(&c, 1).unwrap();
    assert_eq!(count_on(&drained, 3), 0, "{drained:?}");
    for (p, r) in &drained {
        assert_eq!(r.len(), 3, "partition {p}: {r:?}");
    }
    // A new topic is not placed on a draining broker.
    let (code, msg) = c.create_topic(1, "after-drain", 4, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let placed = c.wait_topic("after-drain", 4, SEEN);
    assert!(
        placed.iter().all(|p| !p.replicas.contains(&3)),
        "{placed:?}"
    );
    c.kill(3);

    let acked = w.finish(&c).await;
    assert!(acked.len() >= 11_000, "only {} acknowledged", acked.len());
    check(&mut c, TOPIC, PARTITIONS, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_of_a_partition_whose_head_was_deleted_starts_at_the_leaders_log_start() {
    let mut c = TestCluster::start(
        ClusterSpec::voters(3)
            .joiners(1)
            .session_timeout_ms(2000)
            .extra_args(&["--housekeeping-interval-ms", "200"]),
    );
    c.wait_ready(SEEN);
    cli_ok(
        &c,
        1,
        &[
            "topic",
            "create",
            "ret",
            "-p",
            "1",
            "--replication-factor",
            "3",
            "--segment-bytes",
            "65536",
            "--retention-bytes",
            "131072",
        ],
    );
    c.wait_topic("ret", 1, SEEN);
    let w = Workload::start(c.bootstrap(1), "ret", 1, 20_000);
    let acked = w.finish(&c).await;
    assert_eq!(acked.len(), 20_000);
    // Retention deleted the leader's oldest segments.
    c.wait_for("the leader's log start past 0", SEEN, |c| {
        let leader = leader_of(c, "ret", 0);
        let (err, start, _) =
            RawClient::connect(c.addr(leader)).list_offset("ret", 0, OffsetSpec::Earliest);
        match err {
            ErrorCode::None if start > 0 => Ok(()),
            e => Err(format!("{e} start {start}")),
        }
    });
    let r = replicas_of(&c, "ret");
    let new = (1..=4).find(|id| !r.contains(id)).unwrap();
    // The new broker replaces a follower and becomes the preferred leader.
    let target = format!("{new},{},{}", r[0], r[2]);
    cli_ok(
        &c,
        1,
        &[
            "topic",
            "reassign",
            "ret",
            "-p",
            "0",
            "--replicas",
            &target,
            "--timeout",
            "50",
        ],
    );
    c.wait_for(
        "the new replica to lead",
        Duration::from_secs(40),
        |c| match leader_of(c, "ret", 0) {
            l if l == new => Ok(()),
            l => Err(format!("leader {l}")),
        },
    );
    check_retained(&mut c, "ret", 1, &acked, true).await;
}

/// Partition 0's replicas of `topic` as node 1 reports them.
fn replicas_of(c: &TestCluster, topic: &str) -> Vec<u32> {
    let m = c.metadata(1, &[topic]).unwrap();
    m.topics[0].partitions[0].replicas.clone()
}

/// A leader keeps one partition and hands another to a different broker
/// while an idempotent producer writes both (its requests to that leader
/// carry batches of both): the producer goes on with both partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_rides_through_a_leader_giving_up_one_of_its_partitions() {
    let mut c = TestCluster::start(ClusterSpec::voters(3).session_timeout_ms(2000));
    let (code, msg) = c.create_topic(1, "mix", 2, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    c.wait_topic("mix", 2, SEEN);
    // Both partitions led by broker 1.
    for (p, order) in [(0, "1,2,3"), (1, "1,3,2")] {
        cli_ok(
            &c,
            1,
            &[
                "topic",
                "reassign",
                "mix",
                "-p",
                &p.to_string(),
                "--replicas",
                order,
            ],
        );
    }
    for p in 0..2 {
        c.wait_for(
            "broker 1 to lead",
            Duration::from_secs(40),
            |c| match leader_of(c, "mix", p) {
                1 => Ok(()),
                l => Err(format!("partition {p}: leader {l}")),
            },
        );
    }
    let w = Workload::start(c.bootstrap(1), "mix", 2, 30_000);
    w.wait_acked(2000, &c).await;
    cli_ok(
        &c,
        1,
        &["topic", "reassign", "mix", "-p", "0", "--replicas", "2,1,3"],
    );
    c.wait_for(
        "broker 2 to lead partition 0",
        Duration::from_secs(40),
        |c| match leader_of(c, "mix", 0) {
            2 => Ok(()),
            l => Err(format!("leader {l}")),
        },
    );
    // Both partitions go on (the workload alternates them).
    w.wait_acked(w.acked_count() + 2000, &c).await;
    let acked = w.finish(&c).await;
    check(&mut c, "mix", 2, &acked).await;
}
