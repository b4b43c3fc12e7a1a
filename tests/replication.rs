//! Replication under faults, on three real `sluiced` nodes: an idempotent
//! producer with `acks = durable` writes sequence-numbered records to an RF-3
//! topic while a node is killed (SIGKILL), paused (SIGSTOP) or the whole
//! cluster is killed and restarted; then a checker reads every partition
//! back from its leader and asserts that every acknowledged record is there
//! exactly once, at the offset it was acknowledged with, in order, with no
//! offset gaps, and that no record appears twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::cluster::{ClusterSpec, TestCluster};
use common::workload::{check, leader_of, signal, wait_isr, Workload, SEEN};
use sluice::{Consumer, ConsumerConfig, SeekTo};
use sluice_protocol::ErrorCode;

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
    let other = c.ids().into_iter().find(|&i| i != leader).expect("other");
    let epoch = |c: &TestCluster| {
        c.metadata(other, &["pause"])
            .map(|m| m.topics[0].partitions[0].leader_epoch)
    };
    let before = epoch(&c).expect("epoch");
    signal(&c, leader, "-STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal(&c, leader, "-CONT");
    // Replaced while paused (the epoch rose), though it may lead again by
    // now: it is the preferred leader and returns once back in sync.
    let after = epoch(&c).expect("epoch");
    assert!(
        after > before,
        "a leader paused past its session is replaced"
    );
    let acked = w.finish(&c).await;
    check(&mut c, "pause", 1, &acked).await;
    let new = leader_of(&mut c, "pause", 0);
    if new == leader {
        // Led again by the old leader: the check above read its log, which
        // had to drop what it appended alone while paused.
        return;
    }
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
