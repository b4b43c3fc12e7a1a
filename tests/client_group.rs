//! Consumer groups through the client library, against the real `sluiced`:
//! exactly-once with commits after processing while members join mid-stream
//! (no partition ever owned twice in the broker's view), committed offsets
//! surviving a broker SIGKILL, a member dropped without leaving, and the
//! `consumer_group` example.

mod common;
mod produce_load;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixed_port::FixedPortBroker;
use common::TestBroker;
use produce_load::produce_to_partitions;
use sluice::{Admin, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};

fn consumer(addr: &str, client_id: &str, session: Duration) -> Consumer {
    let mut client = ClientConfig::new(addr);
    client.client_id = client_id.to_string();
    client.request_timeout = Duration::from_secs(10);
    Consumer::with_config(
        client,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            session_timeout: session,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    )
}

fn value(r: &ConsumerRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

/// Asserts that no partition is owned by two members in one DescribeGroups answer.
fn assert_disjoint(d: &sluice::GroupDescription) -> usize {
    let mut owner: HashMap<(String, u32), &str> = HashMap::new();
    for m in &d.members {
        for tp in m.assignment.iter().chain(&m.revoking) {
            if let Some(other) = owner.insert(tp.clone(), &m.member_id) {
                panic!(
                    "{tp:?} owned by {other} and {} at once: {d:#?}",
                    m.member_id
                );
            }
        }
    }
    owner.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_joining_mid_stream_read_every_record_exactly_once() {
    const PARTITIONS: u32 = 6;
    const PER_PARTITION: u32 = 10_000;
    const TOTAL: usize = (PARTITIONS * PER_PARTITION) as usize;
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("orders", PARTITIONS, Vec::new())
        .await
        .expect("create");
    produce_to_partitions(&addr, "orders", PARTITIONS, PER_PARTITION).await;

    // The broker's view, sampled all along: never a partition owned twice.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = {
        let admin = admin.clone();
        let stop = stop_watch.clone();
        tokio::spawn(async move {
            let (mut samples, mut max_members) = (0usize, 0usize);
            // Stopped by the test; the deadline only bounds it if the test forgets.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(d) = admin.describe_group("g1").await {
                    assert_disjoint(&d);
                    samples += 1;
                    max_members = max_members.max(d.members.len());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (samples, max_members)
        })
    };

    let total = Arc::new(AtomicUsize::new(0));
    let mut members = Vec::new();
    for i in 0..3 {
        // Members 2 and 3 join while the others are consuming.
        let start_after = [0usize, 8_000, 20_000][i];
        let deadline = Instant::now() + Duration::from_secs(20);
        while total.load(Ordering::Relaxed) < start_after {
            assert!(
                Instant::now() < deadline,
                "no progress before member {i} joins"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut c = consumer(&addr, &format!("member-{i}"), Duration::from_secs(6));
        c.subscribe("g1", vec!["orders".into()])
            .await
            .expect("subscribe");
        let total = total.clone();
        members.push(tokio::spawn(async move {
            let mut seen: Vec<(u32, u64, String)> = Vec::new();
            let mut next_commit = 500;
            let deadline = Instant::now() + Duration::from_secs(40);
            while total.load(Ordering::Relaxed) < TOTAL {
                assert!(Instant::now() < deadline, "member {i} stuck");
                match tokio::time::timeout(Duration::from_millis(100), c.next()).await {
                    Ok(Some(Ok(r))) => {
                        // "Processing": record it; commit every 500 records.
                        seen.push((r.partition, r.offset, value(&r)));
                        total.fetch_add(1, Ordering::Relaxed);
                        if seen.len() >= next_commit {
                            next_commit += 500;
                            c.commit().await.expect("commit");
                        }
                    }
                    Ok(Some(Err(e))) => panic!("member {i}: {e}"),
                    Ok(None) => panic!("member {i}: group consumer ended"),
                    Err(_) => {}
                }
            }
            c.commit().await.expect("final commit");
            c.close().await.expect("close");
            seen
        }));
    }
    let mut all: Vec<Vec<(u32, u64, String)>> = Vec::new();
    for m in members {
        all.push(m.await.expect("member task"));
    }
    stop_watch.store(true, Ordering::Relaxed);
    let (samples, max_members) = watcher.await.expect("watcher");
    assert!(samples > 10, "only {samples} describe samples");
    assert_eq!(
        max_members, 3,
        "the three members were never in the group together"
    );

    let mut every: BTreeSet<(u32, u64)> = BTreeSet::new();
    for (i, seen) in all.iter().enumerate() {
        assert!(!seen.is_empty(), "member {i} read nothing");
        // In order per partition, within each member.
        let mut last: HashMap<u32, u64> = HashMap::new();
        for (p, o, v) in seen {
            assert!(v.starts_with(&format!("p{p}-")), "{p}@{o} holds {v}");
            if let Some(prev) = last.insert(*p, *o) {
                assert!(*o > prev, "member {i} read {p}@{o} after {p}@{prev}");
            }
            assert!(every.insert((*p, *o)), "{p}@{o} read twice");
        }
    }
    assert_eq!(every.len(), TOTAL, "records missing");
    let committed = admin.group_offsets("g1").await.expect("offsets");
    assert_eq!(
        committed,
        (0..PARTITIONS)
            .map(|p| ("orders".to_string(), p, PER_PARTITION as u64))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_member_is_replaced_after_its_session_and_nothing_is_skipped() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("drop", 4, Vec::new())
        .await
        .expect("create");
    produce_to_partitions(&addr, "drop", 4, 500).await;

    let session = Duration::from_millis(1500);
    let mut a = consumer(&addr, "a", session);
    a.subscribe("g2", vec!["drop".into()])
        .await
        .expect("subscribe a");
    // a reads some, commits, reads more (uncommitted), then "crashes":
    // dropped without commit or leave.
    let mut a_seen: BTreeSet<(u32, u64)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a_seen.len() < 600 {
        assert!(Instant::now() < deadline, "a got {} records", a_seen.len());
        let r = tokio::time::timeout(Duration::from_secs(10), a.next())
            .await
            .expect("a record within 10 s")
            .expect("record")
            .expect("ok");
        a_seen.insert((r.partition, r.offset));
        if a_seen.len() == 300 {
            a.commit().await.expect("commit");
        }
    }
    let committed: BTreeMap<u32, u64> = admin
        .group_offsets("g2")
        .await
        .expect("offsets")
        .into_iter()
        .map(|(_, p, o)| (p, o))
        .collect();
    let dropped_at = Instant::now();
    drop(a);

    let mut b = consumer(&addr, "b", session);
    b.subscribe("g2", vec!["drop".into()])
        .await
        .expect("subscribe b");
    let mut b_seen: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut first_record_at = None;
    while b_seen.len() < 2000 - committed.values().sum::<u64>() as usize {
        assert!(Instant::now() < deadline, "b got {} records", b_seen.len());
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), b.next()).await {
            let r = r.expect("ok");
            first_record_at.get_or_insert_with(Instant::now);
            first.entry(r.partition).or_insert(r.offset);
            assert!(
                b_seen.insert((r.partition, r.offset)),
                "b read {}@{} twice",
                r.partition,
                r.offset
            );
        }
    }
    // b got the partitions only once a's session ran out (a never left).
    let waited = first_record_at.expect("b read").duration_since(dropped_at);
    assert!(
        waited >= session - Duration::from_millis(600),
        "b started after {waited:?}"
    );
    // b resumed exactly at a's last commit (re-delivering what a read after it).
    for p in 0..4u32 {
        assert_eq!(
            first.get(&p).copied(),
            Some(committed.get(&p).copied().unwrap_or(0)),
            "partition {p}"
        );
    }
    let redelivered = a_seen.intersection(&b_seen).count();
    assert_eq!(
        redelivered,
        600 - 300,
        "records a read after its commit are re-delivered"
    );
    let union: BTreeSet<(u32, u64)> = a_seen.union(&b_seen).copied().collect();
    assert_eq!(union.len(), 2000, "none skipped");
    b.commit().await.expect("commit");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_sigkill_and_the_member_rejoins() {
    let mut broker = FixedPortBroker::start();
    let addr = broker.addr();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("durable", 3, Vec::new())
        .await
        .expect("create");
    produce_to_partitions(&addr, "durable", 3, 400).await;

    let mut c = consumer(&addr, "survivor", Duration::from_secs(10));
    c.subscribe("g3", vec!["durable".into()])
        .await
        .expect("subscribe");
    let mut seen: Vec<(u32, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 500 {
        assert!(Instant::now() < deadline, "got {} records", seen.len());
        let r = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .expect("a record within 10 s")
            .expect("record")
            .expect("ok");
        seen.push((r.partition, r.offset));
    }
    c.commit().await.expect("commit");
    let before = admin.group_offsets("g3").await.expect("offsets");
    assert_eq!(
        before.iter().map(|(_, _, o)| *o).sum::<u64>(),
        500,
        "{before:?}"
    );

    let old_member = c.member_id();
    broker.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.spawn();

    // Committed offsets are intact after the SIGKILL.
    let mut after = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while after.is_none() {
        assert!(Instant::now() < deadline, "admin never reconnected");
        after = admin.group_offsets("g3").await.ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(after.expect("offsets"), before);

    // The same consumer carries on: it is unknown to the restarted broker,
    // rejoins, and resumes from the committed offsets (at-least-once). The
    // records produced after the restart can only come from the new broker.
    produce_to_partitions(&addr, "durable", 3, 500).await;
    let mut rest: BTreeSet<(u32, u64)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let expected_rest: BTreeSet<(u32, u64)> = (0..3u32)
        .flat_map(|p| (0..900u64).map(move |o| (p, o)))
        .filter(|tp| !seen.contains(tp))
        .collect();
    // Until it has rejoined (fetching does not need the membership, so it may
    // read everything first) and handed out every partition to its end.
    let done = |c: &Consumer, rest: &BTreeSet<(u32, u64)>| {
        expected_rest.is_subset(rest)
            && c.member_id()
                .is_some_and(|m| Some(&m) != old_member.as_ref())
            && (0..3u32).all(|p| c.position("durable", p) == Some(900))
    };
    while !done(&c, &rest) {
        assert!(
            Instant::now() < deadline,
            "resumed {} of {}",
            rest.len(),
            expected_rest.len()
        );
        match tokio::time::timeout(Duration::from_millis(200), c.next()).await {
            Ok(Some(Ok(r))) => {
                rest.insert((r.partition, r.offset));
            }
            Ok(Some(Err(e))) => assert!(e.is_retriable(), "{e}"),
            Ok(None) => panic!("group consumer ended"),
            Err(_) => {}
        }
    }
    assert!(c.member_id().is_some());
    let mut tries = 0;
    while let Err(e) = c.commit().await {
        tries += 1;
        assert!(e.is_retriable() && tries < 50, "commit after restart: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.close().await.expect("close");
    let end = admin.group_offsets("g3").await.expect("offsets");
    assert_eq!(
        end,
        (0..3u32)
            .map(|p| ("durable".to_string(), p, 900u64))
            .collect::<Vec<_>>()
    );
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
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assigned_consumer_with_a_group_id_commits_and_resumes() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("solo", 2, Vec::new())
        .await
        .expect("create");
    produce_to_partitions(&addr, "solo", 2, 100).await;
    let standalone = |auto_commit: bool| {
        let mut c = consumer(&addr, "solo", Duration::from_secs(10));
        let mut c2 = Consumer::with_config(
            ClientConfig::new(addr.clone()),
            ConsumerConfig {
                group_id: Some("solo-g".into()),
                enable_auto_commit: auto_commit,
                fetch_max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        c2.assign(vec![("solo".into(), 0), ("solo".into(), 1)]);
        // Without a group id, commit() says what is missing.
        c.assign(vec![("solo".into(), 0)]);
        (c, c2)
    };

    // No committed offsets yet: starts at `start` (earliest); commit() by hand.
    let (mut plain, mut first) = standalone(false);
    let e = plain.commit().await.expect_err("no group");
    assert!(e.to_string().contains("group_id"), "{e}");
    let got = take(&mut first, 120).await;
    first.commit().await.expect("standalone commit");
    let committed = admin.group_offsets("solo-g").await.expect("offsets");
    let mut next_of: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, o) in &got {
        next_of.insert(*p, o + 1);
    }
    assert_eq!(
        committed,
        next_of
            .iter()
            .map(|(p, o)| ("solo".to_string(), *p, *o))
            .collect::<Vec<_>>()
    );
    first.close().await.expect("close");

    // A second one resumes exactly there and auto-commits the rest on close.
    let (_, mut second) = standalone(true);
    let rest = take(&mut second, 80).await;
    for (p, o) in &rest {
        assert!(
            *o >= next_of[p],
            "re-read ({p}, {o}) below the committed offset"
        );
    }
    let all: BTreeSet<(u32, u64)> = got.iter().chain(&rest).copied().collect();
    assert_eq!(all.len(), 200, "every record once");
    second.close().await.expect("close commits");
    assert_eq!(
        admin.group_offsets("solo-g").await.expect("offsets"),
        vec![("solo".to_string(), 0, 100), ("solo".to_string(), 1, 100)]
    );

    // While the group has a subscribed member, a standalone commit is refused.
    let mut member = consumer(&addr, "member", Duration::from_secs(10));
    member
        .subscribe("solo-g", vec!["solo".into()])
        .await
        .expect("subscribe");
    let (_, mut third) = standalone(false);
    third
        .seek("solo", 0, sluice::SeekTo::Offset(5))
        .expect("seek");
    take(&mut third, 1).await;
    let e = third.commit().await.expect_err("group has a member");
    assert_eq!(e.code(), Some(sluice::ErrorCode::UnknownMemberId), "{e}");
    member.close().await.expect("leave");
    assert_eq!(
        admin.group_offsets("solo-g").await.expect("offsets"),
        vec![("solo".to_string(), 0, 100), ("solo".to_string(), 1, 100)]
    );
}

/// Runs the `consumer_group` example with SLUICE_BROKER set; killed after 30 s.
fn run_example(broker: &str, args: &[&str]) -> String {
    common::run_example("consumer_group", broker, args, Duration::from_secs(30))
}

#[test]
fn consumer_group_example_resumes_from_committed_offsets() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        Admin::connect(addr.clone())
            .await
            .expect("admin")
            .create_topic("ex", 2, Vec::new())
            .await
            .expect("create");
        produce_to_partitions(&addr, "ex", 2, 150).await;
    });
    let first = run_example(&addr, &["ex", "exg", "200"]);
    assert_eq!(first.lines().count(), 200, "{first}");
    assert!(first.lines().all(|l| l.starts_with("ex/")), "{first}");
    // A second run of the same group resumes where the first stopped.
    let second = run_example(&addr, &["ex", "exg", "100"]);
    assert_eq!(second.lines().count(), 100, "{second}");
    let all: BTreeSet<&str> = first.lines().chain(second.lines()).collect();
    assert_eq!(all.len(), 300, "a record was printed twice");
    let offsets = rt
        .block_on(async {
            Admin::connect(addr.clone())
                .await?
                .group_offsets("exg")
                .await
        })
        .expect("offsets");
    assert_eq!(
        offsets,
        vec![("ex".to_string(), 0, 150), ("ex".to_string(), 1, 150)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassigning_an_auto_committing_standalone_consumer_commits_what_it_read() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("moved", 2, Vec::new())
        .await
        .expect("create");
    produce_to_partitions(&addr, "moved", 2, 50).await;
    let mut c = Consumer::with_config(
        ClientConfig::new(addr.clone()),
        ConsumerConfig {
            group_id: Some("moved-g".into()),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(3600),
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    c.assign(vec![("moved".into(), 0)]);
    let read = take(&mut c, 20).await;
    assert_eq!(read.last(), Some(&(0, 19)));
    // Partition 0 goes away: what was handed out of it is committed with
    // the next commit (here, close).
    c.assign(vec![("moved".into(), 1)]);
    let other = take(&mut c, 5).await;
    assert!(other.iter().all(|(p, _)| *p == 1));
    c.close().await.expect("close commits");
    assert_eq!(
        admin.group_offsets("moved-g").await.expect("offsets"),
        vec![("moved".to_string(), 0, 20), ("moved".to_string(), 1, 5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_assigned_again_resumes_where_it_was_dropped() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let admin = Admin::connect(addr.clone()).await.expect("admin");
    admin
        .create_topic("back", 2, Vec::new())
        .await
        .expect("create");
    produce_to_partitions(&addr, "back", 2, 50).await;
    let mut c = Consumer::with_config(
        ClientConfig::new(addr.clone()),
        ConsumerConfig {
            group_id: Some("back-g".into()),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(3600),
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    c.assign(vec![("back".into(), 0)]);
    assert_eq!(take(&mut c, 20).await.last(), Some(&(0, 19)));
    c.assign(vec![("back".into(), 1)]);
    take(&mut c, 3).await;
    // Back before anything was committed: from 20, not from the start.
    c.assign(vec![("back".into(), 0)]);
    assert_eq!(take(&mut c, 1).await, vec![(0, 20)]);
    c.close().await.expect("close commits");
    assert_eq!(
        admin.group_offsets("back-g").await.expect("offsets"),
        vec![("back".to_string(), 0, 21), ("back".to_string(), 1, 3)]
    );
}
