//! `sluice topic consume --group` and `sluice group ...` against the real
//! `sluiced`: CLI members that stop print every record once, a SIGKILLed CLI
//! member's partitions move and its uncommitted records are re-delivered,
//! and the group admin commands (describe --json, list, seek, delete).

mod common;
mod produce_load;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{ok, output_within, text};
use common::{sluice_cli, TestBroker};
use produce_load::produce_to_partitions;
use sluice::{Admin, Producer, Record};

/// Runs `sluice ARGS` against `broker`; killed after 30 s.
fn sluice(broker: &str, args: &[&str]) -> Output {
    let mut cmd = sluice_cli(broker);
    cmd.args(args);
    output_within(cmd, None, Duration::from_secs(30))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON")
}

/// A background `sluice topic consume ... --group` whose `%p %o` lines are collected.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<(u32, u64)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn spawn(broker: &str, args: &[&str]) -> Member {
        let mut child = sluice_cli(broker)
            .args(["topic", "consume"])
            .args(args)
            .args(["--format", "%p %o\\n"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice consume");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split(' ');
                let p = it.next().and_then(|x| x.parse::<u32>().ok());
                let o = it.next().and_then(|x| x.parse::<u64>().ok());
                match (p, o) {
                    (Some(p), Some(o)) => sink.lock().unwrap().push((p, o)),
                    _ => panic!("unexpected output line {line:?}"),
                }
            }
        });
        Member {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn wait_for(&self, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count() < n {
            assert!(Instant::now() < deadline, "{what}: {} lines", self.count());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits (bounded) for the process to exit; returns success and the lines it printed.
    fn finish(mut self, within: Duration) -> (bool, Vec<(u32, u64)>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("consumer did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            r.join().expect("reader");
        }
        let lines = self.lines.lock().unwrap().clone();
        (status.success(), lines)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create(addr: &str, topic: &str, partitions: u32) {
    Admin::connect(addr)
        .await
        .expect("admin")
        .create_topic(topic, partitions, Vec::new())
        .await
        .expect("create topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cli_members_with_count_print_every_record_once() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    create(&addr, "c", 4).await;
    produce_to_partitions(&addr, "c", 4, 250).await;
    let a = Member::spawn(
        &addr,
        &[
            "c",
            "--group",
            "gc",
            "--count",
            "400",
            "--exit-idle",
            "8000",
        ],
    );
    let b = Member::spawn(
        &addr,
        &[
            "c",
            "--group",
            "gc",
            "--count",
            "600",
            "--exit-idle",
            "8000",
        ],
    );
    let (a_ok, a_lines) = tokio::task::spawn_blocking(move || a.finish(Duration::from_secs(25)))
        .await
        .expect("a");
    let (b_ok, b_lines) = tokio::task::spawn_blocking(move || b.finish(Duration::from_secs(25)))
        .await
        .expect("b");
    assert!(a_ok && b_ok, "a exit ok {a_ok}, b exit ok {b_ok}");
    assert_eq!(a_lines.len(), 400);
    assert_eq!(b_lines.len(), 600);
    let all: BTreeSet<(u32, u64)> = a_lines.iter().chain(&b_lines).copied().collect();
    assert_eq!(all.len(), 1000, "a record was printed twice (or one never)");
    // Everything printed was committed: the group has no lag left.
    let d = json(&sluice(&addr, &["group", "describe", "gc", "--json"]));
    assert_eq!(d["members"].as_array().map(Vec::len), Some(0), "{d}");
    for p in d["partitions"].as_array().expect("partitions") {
        assert_eq!(p["committed_offset"], 250, "{d}");
        assert_eq!(p["lag"], 0, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_cli_member_is_replaced_and_its_uncommitted_records_are_redelivered() {
    const PARTITIONS: u32 = 4;
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    create(&addr, "k", PARTITIONS).await;
    // A steady stream for about 4 s.
    let producer = {
        let addr = addr.clone();
        tokio::spawn(async move {
            for _ in 0..160 {
                produce_to_partitions(&addr, "k", PARTITIONS, 10).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let member = |extra: &[&str]| {
        let mut args = vec!["k", "--group", "gk", "--session-timeout-ms", "1500"];
        args.extend_from_slice(extra);
        Member::spawn(&addr, &args)
    };
    // a commits only when it must (revocation, exit): whatever it prints on
    // the partitions it keeps stays uncommitted until it is killed.
    let a = member(&["--commit-interval-ms", "600000"]);
    a.wait_for(200, "a before b joins");
    let b = member(&["--commit-interval-ms", "200", "--exit-idle", "3000"]);
    b.wait_for(100, "b after joining");
    let a_before = a.count();
    a.wait_for(a_before + 200, "a after the rebalance");
    a.signal(libc::SIGKILL);
    let (_, a_lines) = a.finish(Duration::from_secs(5));
    producer.await.expect("producer");
    let (b_ok, b_lines) = tokio::task::spawn_blocking(move || b.finish(Duration::from_secs(25)))
        .await
        .expect("b");
    assert!(b_ok, "b failed");

    let end = 160 * 10u64;
    let a_set: BTreeSet<(u32, u64)> = a_lines.iter().copied().collect();
    let b_set: BTreeSet<(u32, u64)> = b_lines.iter().copied().collect();
    assert_eq!(b_set.len(), b_lines.len(), "b printed a record twice");
    // None skipped: together they printed every record.
    for p in 0..PARTITIONS {
        for o in 0..end {
            assert!(
                a_set.contains(&(p, o)) || b_set.contains(&(p, o)),
                "{p}@{o} never printed"
            );
        }
    }
    // b read each partition in order.
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, o) in &b_lines {
        if let Some(prev) = last.insert(*p, *o) {
            assert!(*o > prev, "b printed {p}@{o} after {p}@{prev}");
        }
    }
    // a's partitions at the kill moved to b, which re-delivered what a
    // printed after its last commit (a never committed those).
    let a_last_partitions: BTreeSet<u32> = a_lines.iter().rev().take(50).map(|(p, _)| *p).collect();
    let redelivered: Vec<&(u32, u64)> = a_set.intersection(&b_set).collect();
    assert!(!redelivered.is_empty(), "nothing re-delivered");
    for (p, _) in &redelivered {
        assert!(
            a_last_partitions.contains(p),
            "{p} re-delivered but a did not own it at the end"
        );
    }
    // Every record was committed by the survivor before it left.
    let d = json(&sluice(&addr, &["group", "describe", "gk", "--json"]));
    for p in d["partitions"].as_array().expect("partitions") {
        assert_eq!(p["committed_offset"], end, "{d}");
        assert_eq!(p["lag"], 0, "{d}");
        assert_eq!(p["lag_ms"], 0, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_describe_list_seek_and_delete() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    create(&addr, "d", 2).await;
    produce_to_partitions(&addr, "d", 2, 10).await;

    let c = Member::spawn(&addr, &["d", "--group", "gd"]);
    c.wait_for(20, "consumer");
    let d = json(&sluice(&addr, &["group", "describe", "gd", "--json"]));
    let members = d["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{d}");
    assert!(
        members[0]["member_id"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{d}"
    );
    assert_eq!(
        members[0]["assignment"].as_array().map(Vec::len),
        Some(2),
        "{d}"
    );
    let parts = d["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 2, "{d}");
    for p in parts {
        for f in ["committed_offset", "end_offset", "lag", "lag_ms"] {
            assert!(p[f].is_i64() || p[f].is_u64(), "{f} not an integer in {p}");
        }
        assert_eq!(p["end_offset"], 10);
        assert_eq!(p["owner"], members[0]["member_id"]);
    }
    let table = ok(&sluice(&addr, &["group", "describe", "gd"]));
    assert!(
        table.contains("LAG-MS") && table.contains("MEMBER"),
        "{table}"
    );

    // Seek and delete refuse while the group has a member.
    let seek = sluice(&addr, &["group", "seek", "gd", "--to", "earliest"]);
    assert!(!seek.status.success());
    let err = text(&seek.stderr);
    assert!(
        err.contains("active member") && err.lines().count() == 1,
        "{err}"
    );
    let del = sluice(&addr, &["group", "delete", "gd"]);
    assert!(!del.status.success());
    assert!(
        text(&del.stderr).contains("active members"),
        "{}",
        text(&del.stderr)
    );

    // SIGTERM: commits what it printed and leaves.
    c.signal(libc::SIGTERM);
    let (c_ok, lines) = c.finish(Duration::from_secs(10));
    assert!(c_ok);
    assert_eq!(lines.len(), 20);
    let d = json(&sluice(&addr, &["group", "describe", "gd", "--json"]));
    assert_eq!(d["members"].as_array().map(Vec::len), Some(0), "{d}");
    for p in d["partitions"].as_array().expect("partitions") {
        assert_eq!(p["committed_offset"], 10, "{d}");
        assert_eq!(p["lag"], 0, "{d}");
        assert_eq!(p["lag_ms"], 0, "{d}");
    }
    let list = json(&sluice(&addr, &["group", "list", "--json"]));
    let listed = list
        .as_array()
        .and_then(|l| l.iter().find(|g| g["group_id"] == "gd"))
        .cloned()
        .expect("gd listed");
    assert_eq!(listed["members"], 0, "{list}");

    // Seek back to the start: lag is the whole topic again, and a consumer re-reads it.
    ok(&sluice(&addr, &["group", "seek", "gd", "--to", "earliest"]));
    let d = json(&sluice(&addr, &["group", "describe", "gd", "--json"]));
    for p in d["partitions"].as_array().expect("partitions") {
        assert_eq!(p["committed_offset"], 0, "{d}");
        assert_eq!(p["lag"], 10, "{d}");
        assert!(p["lag_ms"].as_i64().is_some_and(|ms| ms >= 0), "{d}");
    }
    let again = ok(&sluice(
        &addr,
        &[
            "topic",
            "consume",
            "d",
            "--group",
            "gd",
            "--exit-idle",
            "1000",
        ],
    ));
    assert_eq!(again.lines().count(), 20, "{again}");
    ok(&sluice(
        &addr,
        &[
            "group",
            "seek",
            "gd",
            "--to",
            &format!("@{}", common::now_ms() + 60_000),
        ],
    ));
    let d = json(&sluice(&addr, &["group", "describe", "gd", "--json"]));
    assert_eq!(d["total_lag"], 0, "{d}");

    ok(&sluice(&addr, &["group", "delete", "gd"]));
    let gone = sluice(&addr, &["group", "describe", "gd"]);
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("does not exist"),
        "{}",
        text(&gone.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_output_is_not_read_keeps_its_session() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    create(&addr, "unread", 1).await;
    // Far more than a pipe holds, so the member's writes block.
    let producer = Producer::new(addr.clone());
    let value = "x".repeat(1000);
    let mut deliveries = Vec::new();
    for _ in 0..2000 {
        deliveries.push(
            producer
                .enqueue(Record::new("unread", value.clone()))
                .await
                .expect("enqueue"),
        );
    }
    for d in deliveries {
        d.await.expect("delivered");
    }
    let mut child = sluice_cli(&addr)
        .args(["topic", "consume", "unread", "--group", "gu"])
        .args(["--session-timeout-ms", "2000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice consume");
    // Hold the pipe open and never read it.
    let stdout = child.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Fails until the group exists.
        let out = sluice(&addr, &["group", "describe", "gu", "--json"]);
        let members = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|d| d["members"].as_array().map(Vec::len));
        if members == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "never joined: {out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // More than two session timeouts with the output blocked: still a member.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let d = json(&sluice(&addr, &["group", "describe", "gu", "--json"]));
    assert_eq!(
        d["members"].as_array().map(Vec::len),
        Some(1),
        "expired while its output was blocked: {d}"
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(stdout);
}
