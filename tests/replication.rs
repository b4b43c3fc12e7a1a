//! Replication under faults, on three real `sluiced` nodes: an idempotent
//! producer with `acks = durable` writes sequence-numbered records to an RF-3
//! topic while a node is killed (SIGKILL), paused (SIGSTOP) or the whole
//! cluster is killed and restarted; then a checker reads every partition
//! back from its leader and asserts that every acknowledged record is there
//! exactly once, at the offset it was acknowledged with, in order, with no
//! offset gaps, and that no record appears twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{ClusterSpec, TestCluster, NO_LEADER};
use common::RawClient;
use futures::stream::{FuturesUnordered, StreamExt};
use sluice::{Consumer, ConsumerConfig, Producer, ProducerConfig, Record, SeekTo};
use sluice_protocol::{Acks, ErrorCode, OffsetSpec};

/// Bound of metadata propagation and of a failover.
const SEEN: Duration = Duration::from_secs(30);

/// What the producer had acknowledged: sequence number -> (partition, offset).
type Acked = Arc<Mutex<BTreeMap<u64, (u32, u64)>>>;

/// A running producer of sequence numbers `0..n`, record `i` to partition `i % partitions`.
struct Workload {
    acked: Acked,
    failed: Arc<AtomicU64>,
    /// Time of the last acknowledgement, in ms since `started`.
    last_ack_ms: Arc<AtomicU64>,
    started: Instant,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn value(i: u64) -> Vec<u8> {
    format!("seq-{i:010}").into_bytes()
}

fn parse(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v)
        .ok()?
        .strip_prefix("seq-")?
        .parse()
        .ok()
}

impl Workload {
    fn start(bootstrap: String, topic: &'static str, partitions: u32, n: u64) -> Workload {
        let acked: Acked = Arc::default();
        let failed = Arc::new(AtomicU64::new(0));
        let last_ack_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (a, f, l, s) = (
            acked.clone(),
            failed.clone(),
            last_ack_ms.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let producer = Producer::with_config(
                sluice::ClientConfig::new(bootstrap),
                ProducerConfig {
                    acks: Acks::Durable,
                    idempotent: true,
                    linger: Duration::from_millis(2),
                    delivery_timeout: Duration::from_secs(60),
                    ..ProducerConfig::default()
                },
            );
            let mut pending = FuturesUnordered::new();
            for i in 0..n {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let r = Record::new(topic, value(i)).partition((i % u64::from(partitions)) as u32);
                let d = producer.enqueue(r).await.expect("enqueue");
                pending.push(async move { (i, d.await) });
                while pending.len() >= 64 {
                    if let Some((i, r)) = pending.next().await {
                        record(&a, &f, &l, started, i, r);
                    }
                }
                // About 1,500 records a second: faults land mid-stream.
                if i % 8 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            while let Some((i, r)) = pending.next().await {
                record(&a, &f, &l, started, i, r);
            }
            producer.close().await;
        });
        Workload {
            acked,
            failed,
            last_ack_ms,
            started,
            stop,
            task,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` records are acknowledged.
    async fn wait_acked(&self, n: usize, c: &TestCluster) {
        let deadline = Instant::now() + SEEN;
        while self.acked_count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} acknowledged\n{}",
                self.acked_count(),
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the producer to finish; returns the acknowledged records.
    async fn finish(self, c: &TestCluster) -> BTreeMap<u64, (u32, u64)> {
        if tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .is_err()
        {
            panic!("the producer did not finish\n{}", c.logs());
        }
        let acked = self.acked.lock().unwrap().clone();
        eprintln!(
            "acknowledged {} records, {} failed",
            acked.len(),
            self.failed.load(Ordering::SeqCst)
        );
        acked
    }
}

fn record(
    acked: &Acked,
    failed: &AtomicU64,
    last: &AtomicU64,
    started: Instant,
    i: u64,
    r: Result<(u32, u64), sluice::ClientError>,
) {
    match r {
        Ok((p, o)) => {
            acked.lock().unwrap().insert(i, (p, o));
            last.store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
        }
        Err(e) => {
            eprintln!("record {i} failed: {e}");
            failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The leader of `topic/partition` as node `via` sees it.
fn leader_of(c: &mut TestCluster, topic: &str, partition: u32) -> u32 {
    c.wait_for("a live leader", SEEN, |c| {
        for id in c.running_ids() {
            let m = c.metadata(id, &[topic])?;
            let t = m
                .topics
                .iter()
                .find(|t| t.name == topic)
                .ok_or("no topic")?;
            let p = t
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .ok_or("no partition")?;
            if p.leader != NO_LEADER
                && p.error == ErrorCode::None
                && c.running_ids().contains(&p.leader)
            {
                return Ok(p.leader);
            }
        }
        Err("no live leader yet".to_string())
    })
}

/// Waits until node `via` reports `id` in (`present`) or out of partition
/// 0's ISR of `topic`.
fn wait_isr(c: &mut TestCluster, via: u32, topic: &str, id: u32, present: bool, what: &str) {
    c.wait_for(what, SEEN, |c| {
        let m = c.metadata(via, &[topic])?;
        let isr = &m.topics[0].partitions[0].isr;
        if isr.contains(&id) == present {
            Ok(())
        } else {
            Err(format!("isr {isr:?}"))
        }
    });
}

/// Reads every partition back and checks it against `acked` (see the module docs).
async fn check(
    c: &mut TestCluster,
    topic: &str,
    partitions: u32,
    acked: &BTreeMap<u64, (u32, u64)>,
) {
    // Each partition's committed end, from its leader.
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let need = acked
            .values()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| o + 1)
            .max()
            .unwrap_or(0);
        // A new leader's high watermark catches up once its followers fetch.
        let end = c.wait_for("the committed end from the leader", SEEN, |c| {
            let leader = leader_of(c, topic, p);
            let (err, end, _) =
                RawClient::connect(c.addr(leader)).list_offset(topic, p, OffsetSpec::Latest);
            match err {
                ErrorCode::None if end >= need => Ok(end),
                ErrorCode::None => Err(format!(
                    "leader {leader}: committed end {end} below an acknowledged offset {need}"
                )),
                e => Err(format!("leader {leader}: {e}")),
            }
        });
        ends.insert(p, end);
    }
    let first = c.running_ids()[0];
    let bootstrap = c.bootstrap(first);
    let mut consumer = Consumer::with_config(
        sluice::ClientConfig::new(bootstrap),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..partitions).map(|p| (topic.to_string(), p)).collect());
    let total: u64 = ends.values().sum();
    let mut read: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let reading = async {
        while (read.len() as u64) < total {
            let r = consumer.next().await.expect("assigned").expect("record");
            if r.offset >= ends[&r.partition] {
                continue;
            }
            let v = r.value.as_deref().unwrap_or_default();
            let seq = parse(v)
                .unwrap_or_else(|| panic!("{}/{}: unknown value {v:?}", r.partition, r.offset));
            assert!(
                read.insert((r.partition, r.offset), seq).is_none(),
                "offset {}/{} read twice",
                r.partition,
                r.offset
            );
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .is_err()
    {
        panic!("read {} of {total} records\n{}", read.len(), c.logs());
    }
    // No gaps: offsets 0..end of every partition.
    for (p, end) in &ends {
        let n = read.keys().filter(|(q, _)| q == p).count() as u64;
        assert_eq!(n, *end, "partition {p}: offsets missing");
    }
    // No record twice; sequence numbers rise within a partition.
    let mut seen: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for ((p, o), seq) in &read {
        if let Some(prev) = seen.insert(*seq, (*p, *o)) {
            panic!("record {seq} at {prev:?} and at {p}/{o}");
        }
        assert_eq!(
            u64::from(*p),
            seq % u64::from(partitions),
            "record {seq} in partition {p}"
        );
        if let Some(l) = last.insert(*p, *seq) {
            assert!(*seq > l, "partition {p}: {seq} after {l} at offset {o}");
        }
    }
    // Every acknowledged record at its acknowledged offset.
    for (seq, at) in acked {
        assert_eq!(
            seen.get(seq),
            Some(at),
            "acknowledged record {seq} at {at:?}"
        );
    }
}

fn signal(c: &TestCluster, id: u32, sig: &str) {
    let pid = c.node(id).pid().expect("running");
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Starts 3 voters and an RF-3 topic with `partitions` partitions.
fn cluster(topic: &str, partitions: u32) -> TestCluster {
    let mut c = TestCluster::start(ClusterSpec::voters(3).session_timeout_ms(2000));
    let (code, msg) = c.create_topic(1, topic, partitions, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let parts = c.wait_topic(topic, partitions, SEEN);
    for p in &parts {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_sigkilled_leader_and_it_rejoins() {
    let mut c = cluster("kill", 2);
    let w = Workload::start(c.bootstrap(1), "kill", 2, 8000);
    w.wait_acked(1000, &c).await;
    // A steady state: every node has heard every other's heartbeat.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = leader_of(&mut c, "kill", 0);
    let killed_at = w.started.elapsed().as_millis() as u64;
    let wall = std::time::SystemTime::now();
    c.kill(leader);
    w.wait_acked(w.acked_count() + 200, &c).await;
    eprintln!(
        "writes resumed {} ms after the kill of leader {leader}",
        w.last_ack_ms
            .load(Ordering::SeqCst)
            .saturating_sub(killed_at)
    );
    let new = leader_of(&mut c, "kill", 0);
    assert_ne!(new, leader);
    if std::env::var_os("SLUICE_TEST_TIMELINE").is_some() {
        for l in c.logs().lines().filter(|l| {
            std::env::var("SLUICE_TEST_TIMELINE").is_ok_and(|v| v == "all")
                || l.contains("fencing")
                || l.contains("leading")
                || l.contains("ISR")
        }) {
            eprintln!("{l}");
        }
        eprintln!(
            "killed at {:?} (unix)",
            wall.duration_since(std::time::UNIX_EPOCH)
        );
    }
    c.restart(leader);
    let acked = w.finish(&c).await;
    assert!(acked.len() >= 1200);
    check(&mut c, "kill", 2, &acked).await;
    wait_isr(
        &mut c,
        new,
        "kill",
        leader,
        true,
        "the restarted node back in the ISR",
    );
    // The restarted node caught up: it can lead and serve everything.
    c.kill(new);
    check(&mut c, "kill", 2, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_and_restarted_catches_up_and_can_lead() {
    let mut c = cluster("follow", 1);
    let w = Workload::start(c.bootstrap(1), "follow", 1, 3000);
    w.wait_acked(500, &c).await;
    let leader = leader_of(&mut c, "follow", 0);
    let follower = c
        .ids()
        .into_iter()
        .find(|&i| i != leader)
        .expect("a follower");
    c.kill(follower);
    w.wait_acked(w.acked_count() + 500, &c).await;
    c.restart(follower);
    let acked = w.finish(&c).await;
    // Once the follower is back in sync, lose the leader: it must have it all.
    wait_isr(
        &mut c,
        leader,
        "follow",
        follower,
        true,
        "the follower back in the ISR",
    );
    c.kill(leader);
    check(&mut c, "follow", 1, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_deposed_and_truncates_what_was_not_committed() {
    let mut c = cluster("pause", 1);
    let w = Workload::start(c.bootstrap(1), "pause", 1, 3000);
    w.wait_acked(500, &c).await;
    let leader = leader_of(&mut c, "pause", 0);
    signal(&c, leader, "-STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal(&c, leader, "-CONT");
    let acked = w.finish(&c).await;
    let new = leader_of(&mut c, "pause", 0);
    assert_ne!(new, leader, "a leader paused past its session is replaced");
    check(&mut c, "pause", 1, &acked).await;
    // The old leader follows again; with it as the only other ISR member,
    // losing the new leader still loses nothing.
    wait_isr(
        &mut c,
        new,
        "pause",
        leader,
        true,
        "the old leader back in the ISR",
    );
    let third = c
        .ids()
        .into_iter()
        .find(|&i| i != leader && i != new)
        .expect("third");
    c.kill(third);
    c.kill(new);
    c.restart(third);
    check(&mut c, "pause", 1, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_killed_and_restarted_keeps_every_acknowledged_record() {
    let mut c = cluster("all", 3);
    let w = Workload::start(c.bootstrap(2), "all", 3, 3000);
    w.wait_acked(800, &c).await;
    // Stop producing, then kill everything at once.
    w.stop.store(true, Ordering::SeqCst);
    let acked = w.finish(&c).await;
    c.kill_all();
    let ids = c.ids();
    c.restart_many(&ids);
    c.wait_topic("all", 3, SEEN);
    check(&mut c, "all", 3, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_moves_leaderships_first_so_producers_see_no_errors() {
    let mut c = cluster("term", 2);
    let w = Workload::start(c.bootstrap(1), "term", 2, 8000);
    w.wait_acked(1000, &c).await;
    let leader = leader_of(&mut c, "term", 0);
    let status = tokio::task::block_in_place(|| c.terminate(leader));
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        c.log(leader)
    );
    assert!(
        c.log(leader).contains("this broker leads no partition"),
        "{}",
        c.log(leader)
    );
    let failed = w.failed.clone();
    let acked = w.finish(&c).await;
    assert_eq!(failed.load(Ordering::SeqCst), 0, "a producer saw errors");
    assert_eq!(acked.len(), 8000);
    c.restart(leader);
    check(&mut c, "term", 2, &acked).await;
}

/// The group coordinator of `group` as node `via` names it.
fn coordinator_via(c: &TestCluster, via: u32, group: &str) -> Result<u32, String> {
    let r = c
        .client(via)
        .call(&sluice_protocol::Request::FindCoordinator(
            sluice_protocol::FindCoordinatorRequest {
                group_id: group.to_string(),
            },
        ));
    match r {
        sluice_protocol::Response::FindCoordinator(f) if f.error == ErrorCode::None => {
            Ok(f.node_id)
        }
        other => Err(format!("FindCoordinator answered {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_commits_survive_its_coordinators_broker() {
    let mut c = cluster("grp", 3);
    let w = Workload::start(c.bootstrap(1), "grp", 3, 3000);
    let acked = w.finish(&c).await;
    assert_eq!(acked.len(), 3000);
    let group = "survivor";
    let coord = coordinator_via(&c, 1, group).expect("a coordinator");
    let other = c
        .ids()
        .into_iter()
        .find(|&i| i != coord)
        .expect("another node");

    // A member reads about half, commits, and goes away without leaving.
    let mut consumer = Consumer::with_config(
        sluice::ClientConfig::new(c.bootstrap(other)),
        ConsumerConfig {
            enable_auto_commit: false,
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe(group, vec!["grp".into()])
        .await
        .expect("joined");
    let mut first = 0;
    let read = async {
        while first < 1500 {
            consumer.next().await.expect("subscribed").expect("record");
            first += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("read half");
    consumer.commit().await.expect("committed");
    drop(consumer);
    let admin = sluice::Admin::connect(c.bootstrap(other))
        .await
        .expect("admin");
    let before: BTreeMap<(String, u32), u64> = admin
        .group_offsets(group)
        .await
        .expect("offsets")
        .into_iter()
        .map(|(t, p, o)| ((t, p), o))
        .collect();
    let committed: u64 = before.values().sum();
    assert!(committed >= 1500, "committed {before:?}");

    // The coordinator's broker dies: the group moves, its commits with it.
    c.kill(coord);
    let new = c.wait_for("a new coordinator", SEEN, |c| {
        match coordinator_via(c, other, group)? {
            n if n == coord => Err("still the dead one".into()),
            n => Ok(n),
        }
    });
    assert_ne!(new, coord);
    let deadline = Instant::now() + SEEN;
    let after: BTreeMap<(String, u32), u64> = loop {
        match admin.group_offsets(group).await {
            Ok(v) => break v.into_iter().map(|(t, p, o)| ((t, p), o)).collect(),
            Err(e) if Instant::now() < deadline => {
                eprintln!("offsets not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("offsets after the move: {e}\n{}", c.logs()),
        }
    };
    assert_eq!(after, before, "committed offsets moved with the group");

    // A new member resumes from the commits: nothing below them again, all after them.
    let mut consumer = Consumer::with_config(
        sluice::ClientConfig::new(c.bootstrap(other)),
        ConsumerConfig {
            enable_auto_commit: false,
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe(group, vec!["grp".into()])
        .await
        .expect("rejoined");
    let rest = 3000 - committed;
    let mut got = 0u64;
    let read = async {
        while got < rest {
            let r = consumer.next().await.expect("subscribed").expect("record");
            let from = before
                .get(&(r.topic.to_string(), r.partition))
                .copied()
                .unwrap_or(0);
            assert!(
                r.offset >= from,
                "{}/{} redelivered below the commit {from}",
                r.partition,
                r.offset
            );
            got += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("resumed {got} of {rest}\n{}", c.logs()));
}

/// Unmounts a tmpfs when dropped (even on panic).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A follower's disk fills (its partition directory on a tiny tmpfs, then
/// filled): it leaves the ISR and writes go on without it; with space again
/// it catches up and rejoins; nothing acknowledged is lost. Needs root (CI
/// runs as root) for the mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_leaves_the_isr_and_writes_go_on() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts a tmpfs: run it as root (CI does)"
    );
    let mut c = cluster("full", 1);
    let leader = leader_of(&mut c, "full", 0);
    let follower = c
        .ids()
        .into_iter()
        .find(|&i| i != leader)
        .expect("a follower");
    // The follower's partition directory moves onto a 4 MiB tmpfs.
    c.kill(follower);
    let dir = c.node(follower).data_dir.join("full").join("0");
    let saved = c.node(follower).data_dir.join("full-0-saved");
    run(
        "cp",
        &[
            "-a",
            "--sparse=always",
            dir.to_str().unwrap(),
            saved.to_str().unwrap(),
        ],
    );
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            dir.to_str().unwrap(),
        ],
    );
    let _mount = Mount(dir.clone());
    run(
        "cp",
        &[
            "-a",
            "--sparse=always",
            &format!("{}/.", saved.display()),
            dir.to_str().unwrap(),
        ],
    );
    c.restart(follower);
    let w = Workload::start(c.bootstrap(leader), "full", 1, 12_000);
    w.wait_acked(500, &c).await;
    wait_isr(
        &mut c,
        leader,
        "full",
        follower,
        true,
        "the follower in the ISR",
    );
    // Fill it: what is left goes to a file.
    let filler = dir.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
        .output();
    let filled_at = w.acked_count();
    wait_isr(
        &mut c,
        leader,
        "full",
        follower,
        false,
        "the full follower out of the ISR",
    );
    w.wait_acked(filled_at + 1000, &c).await;
    assert!(
        c.log(follower)
            .contains("cannot append what the leader sent"),
        "the follower never failed an append\n{}",
        c.log(follower)
    );
    // Space again: it catches up and rejoins.
    std::fs::remove_file(&filler).expect("remove the filler");
    wait_isr(
        &mut c,
        leader,
        "full",
        follower,
        true,
        "the follower back in the ISR",
    );
    let acked = w.finish(&c).await;
    check(&mut c, "full", 1, &acked).await;
    c.kill(leader);
    check(&mut c, "full", 1, &acked).await;
}
