//! Black-box tests of the consumer-group apis against the real `sluiced`:
//! balanced disjoint assignment, expiry, revoke-before-grant (asserted from
//! DescribeGroups, the broker's view, at every step), commit fencing,
//! durability across SIGKILL, lag in records and ms, ListGroups,
//! DeleteGroups, seek by standalone commit, and the hidden internal topic.

mod common;
mod group_client;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use group_client::*;
use sluice_protocol::*;

/// A member driven step by step by the test (no background thread).
struct Member {
    c: GroupClient,
    group: String,
    id: String,
    generation: u32,
    assignment: Vec<TopicPartitions>,
    revoke: Vec<TopicPartitions>,
}

impl Member {
    fn join(b: &TestBroker, group: &str, topics: &[&str], session_ms: u32) -> Member {
        let mut c = GroupClient::connect(b.addr, "member-test");
        let r = c.join(group, topics, session_ms);
        assert_eq!(r.error, ErrorCode::None, "{r:?}");
        assert!(!r.member_id.is_empty());
        Member {
            c,
            group: group.into(),
            id: r.member_id,
            generation: r.generation,
            assignment: r.assignment,
            revoke: r.revoke,
        }
    }

    /// One heartbeat. `confirm`: report only `assignment` (the revocations
    /// are done); otherwise keep reporting `assignment ∪ revoke`.
    fn step(&mut self, confirm: bool) -> HeartbeatResponse {
        let mut owned = set_of(&self.assignment);
        if !confirm {
            owned.extend(set_of(&self.revoke));
        }
        let owned = TopicPartitions::from_pairs(owned.iter().map(|(t, p)| (t.as_str(), *p)));
        let r = self
            .c
            .heartbeat(&self.group, &self.id, self.generation, &owned, 0);
        if r.error == ErrorCode::None {
            self.generation = r.generation;
            self.assignment = r.assignment.clone();
            self.revoke = r.revoke.clone();
        }
        r
    }

    fn owned(&self) -> BTreeSet<Tp> {
        let mut s = set_of(&self.assignment);
        s.extend(set_of(&self.revoke));
        s
    }
}

/// Heartbeats every member (confirming revocations) until the broker says
/// Stable, checking after every single heartbeat that no partition is owned
/// twice in the broker's view. Bounded.
fn settle(members: &mut [Member], observer: &mut GroupClient) -> DescribedGroup {
    for _ in 0..50 {
        for m in members.iter_mut() {
            let r = m.step(true);
            assert_eq!(r.error, ErrorCode::None, "{r:?}");
            owned_disjoint(&observer.describe(&m.group));
        }
        let d = observer.describe(&members[0].group);
        owned_disjoint(&d);
        if d.state == "Stable" {
            return d;
        }
    }
    panic!("group did not become stable");
}

fn create(b: &TestBroker, topic: &str, partitions: u32) {
    assert_eq!(
        b.client().create_topic(topic, partitions, &[]),
        ErrorCode::None
    );
}

#[test]
fn three_members_get_balanced_disjoint_assignments() {
    let b = TestBroker::start();
    create(&b, "orders", 6);
    let mut obs = GroupClient::connect(b.addr, "observer");
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::join(&b, "g3", &["orders"], 10_000))
        .collect();
    let d = settle(&mut members, &mut obs);
    assert_eq!(d.error, ErrorCode::None);
    assert_eq!(d.members.len(), 3);
    let owned = owned_disjoint(&d);
    let mut all = BTreeSet::new();
    for m in &members {
        assert_eq!(m.owned().len(), 2, "{:?}", m.assignment);
        // The member's own view equals the broker's.
        assert_eq!(owned[&m.id], m.owned());
        all.extend(m.owned());
    }
    assert_eq!(all, (0..6).map(|p| ("orders".to_string(), p)).collect());
    for m in &d.members {
        assert_eq!(m.topics, vec!["orders".to_string()]);
        assert!(m.revoking.is_empty());
    }
    let listed = obs.list();
    let g = listed.iter().find(|g| g.group_id == "g3").expect("listed");
    assert_eq!((g.state.as_str(), g.members), ("Stable", 3));
    assert_eq!(g.generation, d.generation);
}

#[test]
fn silent_member_loses_its_partitions_after_the_session_timeout() {
    let b = TestBroker::start();
    create(&b, "expiry", 6);
    let mut obs = GroupClient::connect(b.addr, "observer");
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::join(&b, "gx", &["expiry"], 1_000))
        .collect();
    settle(&mut members, &mut obs);
    let mut silent = members.pop().expect("three members");
    let started = Instant::now();
    // The two others heartbeat every 100 ms; the third says nothing.
    let d = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "silent member never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
        for m in members.iter_mut() {
            assert_eq!(m.step(true).error, ErrorCode::None);
        }
        let d = obs.describe("gx");
        owned_disjoint(&d);
        if d.members.len() == 2 && d.state == "Stable" {
            break d;
        }
    };
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "expired early: {waited:?}"
    );
    let mut all = BTreeSet::new();
    for m in &members {
        assert_eq!(m.owned().len(), 3);
        all.extend(m.owned());
    }
    assert_eq!(all.len(), 6);
    assert!(d.members.iter().all(|m| m.member_id != silent.id));
    // The expired member is told so, and cannot commit.
    assert_eq!(silent.step(true).error, ErrorCode::UnknownMemberId);
    let errs = silent.c.commit(
        "gx",
        &silent.id.clone(),
        silent.generation,
        &[("expiry", 0, 1)],
    );
    assert_eq!(errs, vec![ErrorCode::UnknownMemberId]);
}

#[test]
fn a_join_moves_partitions_only_after_the_old_owner_confirms() {
    let b = TestBroker::start();
    create(&b, "moves", 6);
    let mut obs = GroupClient::connect(b.addr, "observer");
    let mut members: Vec<Member> = (0..2)
        .map(|_| Member::join(&b, "gj", &["moves"], 10_000))
        .collect();
    settle(&mut members, &mut obs);
    let before: Vec<BTreeSet<Tp>> = members.iter().map(Member::owned).collect();

    // C joins: everything is owned, so it gets nothing yet.
    let mut c = Member::join(&b, "gj", &["moves"], 10_000);
    assert!(c.assignment.is_empty(), "{:?}", c.assignment);
    let d = obs.describe("gj");
    let owned = owned_disjoint(&d);
    assert!(owned[&c.id].is_empty());
    assert_eq!(d.state, "Reconciling");

    // The old owners learn what to revoke but do not confirm yet.
    let mut moving = BTreeSet::new();
    for (m, had) in members.iter_mut().zip(&before) {
        let r = m.step(false);
        assert_eq!(r.error, ErrorCode::None);
        let revoke = set_of(&r.revoke);
        assert_eq!(revoke.len(), 1, "{r:?}");
        assert_eq!(m.owned(), *had, "still owns everything it had");
        moving.extend(revoke);
        owned_disjoint(&obs.describe("gj"));
    }
    // C asks: nothing granted while the old owners hold on.
    assert_eq!(c.step(true).error, ErrorCode::None);
    assert!(c.assignment.is_empty());
    let d = obs.describe("gj");
    let owned = owned_disjoint(&d);
    assert!(owned[&c.id].is_empty());
    for m in &d.members {
        if m.member_id != c.id {
            assert_eq!(set_of(&m.revoking).len(), 1, "{m:?}");
        }
    }
    // Another unconfirmed round changes nothing.
    for m in members.iter_mut() {
        m.step(false);
    }
    assert!(owned_disjoint(&obs.describe("gj"))[&c.id].is_empty());

    // First owner confirms: exactly its partition becomes C's.
    members[0].step(true);
    let owned = owned_disjoint(&obs.describe("gj"));
    assert_eq!(owned[&c.id].len(), 1);
    assert!(moving.is_superset(&owned[&c.id]));
    assert!(owned[&members[0].id].is_disjoint(&moving));
    // Second owner confirms.
    members[1].step(true);
    let owned = owned_disjoint(&obs.describe("gj"));
    assert_eq!(owned[&c.id], moving);

    members.push(c);
    let d = settle(&mut members, &mut obs);
    assert_eq!(d.members.len(), 3);
    for m in &members {
        assert_eq!(m.owned().len(), 2);
    }
    // Sticky: the old members kept what they did not have to give up.
    for (m, had) in members.iter().zip(&before) {
        assert!(had.is_superset(&m.owned()));
    }
}

#[test]
fn stale_generation_and_non_owner_commits_are_rejected() {
    let b = TestBroker::start();
    create(&b, "fence", 2);
    let mut obs = GroupClient::connect(b.addr, "observer");
    let mut a = Member::join(&b, "gf", &["fence"], 10_000);
    let gen1 = a.generation;
    assert_eq!(a.owned().len(), 2);
    let a_id = a.id.clone();
    assert_eq!(
        a.c.commit("gf", &a_id, gen1, &[("fence", 0, 3), ("fence", 1, 4)]),
        vec![ErrorCode::None; 2]
    );
    // B joins; A gives one partition up.
    let mut bm = Member::join(&b, "gf", &["fence"], 10_000);
    let mut members = vec![a];
    members.push(bm);
    settle(&mut members, &mut obs);
    bm = members.pop().expect("b");
    let mut a = members.pop().expect("a");
    let lost: Tp = set_of(&bm.assignment)
        .into_iter()
        .next()
        .expect("b owns one");
    let kept: Tp = a.owned().into_iter().next().expect("a owns one");
    assert!(a.generation > gen1);

    // A's delayed commit for the partition it lost, with its old generation.
    let errs = a.c.commit("gf", &a_id, gen1, &[(&lost.0, lost.1, 99)]);
    assert_eq!(errs, vec![ErrorCode::IllegalGeneration]);
    // With the current generation it is simply not the owner.
    let errs =
        a.c.commit("gf", &a_id, a.generation, &[(&lost.0, lost.1, 99)]);
    assert_eq!(errs, vec![ErrorCode::NotPartitionOwner]);
    // A generation from the future.
    let errs =
        a.c.commit("gf", &a_id, a.generation + 5, &[(&kept.0, kept.1, 7)]);
    assert_eq!(errs, vec![ErrorCode::IllegalGeneration]);
    // B, presenting a generation older than its grant.
    let b_id = bm.id.clone();
    let errs = bm.c.commit("gf", &b_id, gen1, &[(&lost.0, lost.1, 99)]);
    assert_eq!(errs, vec![ErrorCode::IllegalGeneration]);
    // Unknown member; standalone commit into an active group.
    let errs =
        a.c.commit("gf", "nobody", a.generation, &[(&kept.0, kept.1, 7)]);
    assert_eq!(errs, vec![ErrorCode::UnknownMemberId]);
    let errs = a.c.commit("gf", "", 0, &[(&kept.0, kept.1, 7)]);
    assert_eq!(errs, vec![ErrorCode::UnknownMemberId]);
    // A fenced request stores nothing, even for its valid partitions.
    let errs = a.c.commit(
        "gf",
        &a_id,
        a.generation,
        &[(&kept.0, kept.1, 50), (&lost.0, lost.1, 50)],
    );
    assert_eq!(errs, vec![ErrorCode::NotPartitionOwner; 2]);
    let committed = obs.committed("gf");
    assert_eq!(committed[&lost], 3 + u32::from(lost.1 == 1) as i64);
    assert_eq!(committed[&kept], 3 + u32::from(kept.1 == 1) as i64);
    // The legitimate owners commit fine; unknown partitions are named.
    let errs =
        bm.c.commit("gf", &b_id, bm.generation, &[(&lost.0, lost.1, 10)]);
    assert_eq!(errs, vec![ErrorCode::None]);
    let errs = a.c.commit(
        "gf",
        &a_id,
        a.generation,
        &[(&kept.0, kept.1, 11), ("fence", 9, 1)],
    );
    assert_eq!(
        errs,
        vec![ErrorCode::None, ErrorCode::UnknownTopicOrPartition]
    );
    let committed = obs.committed("gf");
    assert_eq!((committed[&lost], committed[&kept]), (10, 11));
}

#[test]
fn committed_offsets_survive_sigkill_and_restart() {
    let mut b = TestBroker::start();
    create(&b, "durable", 6);
    let mut raw = b.client();
    for p in 0..6 {
        raw.produce(
            "durable",
            p,
            batch_of(&[b"a", b"b", b"c", b"d", b"e"]),
            Acks::Leader,
        );
    }
    let mut m = Member::join(&b, "gd", &["durable"], 10_000);
    assert_eq!(m.owned().len(), 6);
    let id = m.id.clone();
    let offsets: Vec<(&str, u32, u64)> = (0..6).map(|p| ("durable", p, u64::from(p % 5))).collect();
    assert_eq!(
        m.c.commit("gd", &id, m.generation, &offsets),
        vec![ErrorCode::None; 6]
    );
    // Acknowledged means fsynced: SIGKILL right away.
    b.kill();
    b.restart();
    let mut obs = GroupClient::connect(b.addr, "observer");
    let committed = obs.committed("gd");
    assert_eq!(committed.len(), 6);
    for p in 0..6u32 {
        assert_eq!(committed[&("durable".to_string(), p)], i64::from(p % 5));
    }
    // Specific partitions, one never committed; metadata kept.
    let r = obs.fetch_offsets("gd", &[TopicPartitions::new("durable", vec![4, 1])]);
    assert_eq!(r.error, ErrorCode::None);
    let parts = &r.topics[0].partitions;
    assert_eq!((parts[0].partition, parts[0].offset), (4, 4));
    assert_eq!(parts[0].metadata, "m4");
    assert_eq!((parts[1].partition, parts[1].offset), (1, 1));
    let r = obs.fetch_offsets("gd", &[TopicPartitions::new("other", vec![0])]);
    assert_eq!(r.topics[0].partitions[0].offset, -1);
    let r = obs.fetch_offsets("", &[]);
    assert_eq!(r.error, ErrorCode::InvalidGroupId);
    // Member ids do not survive a restart.
    let mut c = GroupClient::connect(b.addr, "old");
    let r = c.heartbeat("gd", &id, m.generation, &[], 0);
    assert_eq!(r.error, ErrorCode::UnknownMemberId);
    // The group is listed (offsets only) and describable.
    let listed = obs.list();
    let g = listed.iter().find(|g| g.group_id == "gd").expect("listed");
    assert_eq!((g.state.as_str(), g.members, g.generation), ("Empty", 0, 0));
    let d = obs.describe("gd");
    assert_eq!(d.error, ErrorCode::None);
    assert_eq!(d.offsets.len(), 6);
    // A graceful stop closes the offset store cleanly; offsets still there.
    let status = b.terminate();
    assert!(status.success(), "{status:?}");
    b.restart();
    let mut obs = GroupClient::connect(b.addr, "observer");
    assert_eq!(obs.committed("gd").len(), 6);
    drop(m);
}

#[test]
fn describe_reports_lag_in_records_and_milliseconds() {
    let b = TestBroker::start();
    create(&b, "lagt", 2);
    let mut raw = b.client();
    let t0 = now_ms() - 60_000;
    // p0: offsets 0..=2 at t0, t0+1000, t0+2000; then 2 more now.
    for (i, ts) in [t0, t0 + 1_000, t0 + 2_000].into_iter().enumerate() {
        let r = raw.produce(
            "lagt",
            0,
            batch_at(ts, &[format!("v{i}").as_bytes()]),
            Acks::Leader,
        );
        assert_eq!(r.error, ErrorCode::None);
    }
    raw.produce("lagt", 0, batch_of(&[b"x", b"y"]), Acks::Leader);
    raw.produce("lagt", 1, batch_at(t0, &[b"only"]), Acks::Leader);
    let mut c = GroupClient::connect(b.addr, "admin");
    // No members: a standalone commit. p0 consumed up to offset 1, p1 caught up.
    assert_eq!(
        c.commit("lagg", "", 0, &[("lagt", 0, 1), ("lagt", 1, 1)]),
        vec![ErrorCode::None; 2]
    );
    let before = now_ms();
    let d = c.describe("lagg");
    let after = now_ms();
    assert_eq!(d.error, ErrorCode::None);
    assert_eq!(d.state, "Empty");
    assert!(d.members.is_empty());
    assert_eq!(d.offsets.len(), 2);
    let p0 = &d.offsets[0];
    assert_eq!((p0.topic.as_str(), p0.partition), ("lagt", 0));
    assert_eq!((p0.committed_offset, p0.end_offset, p0.lag), (1, 5, 4));
    let ts1 = t0 + 1_000;
    assert!(
        (before - ts1..=after - ts1).contains(&p0.lag_ms),
        "lag_ms {} not in [{}, {}]",
        p0.lag_ms,
        before - ts1,
        after - ts1
    );
    let p1 = &d.offsets[1];
    assert_eq!(
        (p1.committed_offset, p1.end_offset, p1.lag, p1.lag_ms),
        (1, 1, 0, 0)
    );
    // A member owning a partition without a commit: lag counts from the log start.
    let m = Member::join(&b, "lagm", &["lagt"], 10_000);
    let d = c.describe("lagm");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, m.id);
    assert_eq!(d.offsets.len(), 2);
    assert_eq!(
        (
            d.offsets[0].committed_offset,
            d.offsets[0].lag,
            d.offsets[0].lag_ms
        ),
        (-1, 5, -1)
    );
    // Unknown and invalid groups.
    assert_eq!(c.describe("nope").error, ErrorCode::GroupIdNotFound);
    assert_eq!(c.describe("").error, ErrorCode::InvalidGroupId);
    // The same figures reach /metrics (refreshed every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http_get(b.http_addr, "/metrics");
        assert_eq!(status, 200);
        let line = |name: &str, partition: &str| {
            body.lines().find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains("group=\"lagg\"")
                    && l.contains("topic=\"lagt\"")
                    && l.contains(&format!("partition=\"{partition}\""))
            })
        };
        let ok = line("sluice_group_lag", "0").is_some_and(|l| l.ends_with(" 4"))
            && line("sluice_group_lag", "1").is_some_and(|l| l.ends_with(" 0"))
            && line("sluice_group_lag_ms", "0")
                .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
                .is_some_and(|ms| ms >= before - ts1)
            && body
                .lines()
                .any(|l| l.starts_with("sluice_group_members{group=\"lagm\"} 1"));
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "group metrics missing:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn list_and_delete_groups() {
    let b = TestBroker::start();
    create(&b, "del", 2);
    let mut c = GroupClient::connect(b.addr, "admin");
    let mut m = Member::join(&b, "gdel", &["del"], 10_000);
    let id = m.id.clone();
    assert_eq!(
        m.c.commit("gdel", &id, m.generation, &[("del", 0, 1), ("del", 1, 2)]),
        vec![ErrorCode::None; 2]
    );
    assert_eq!(
        c.commit("offsets-only", "", 0, &[("del", 0, 1)]),
        vec![ErrorCode::None]
    );
    let listed = c.list();
    let names: BTreeSet<&str> = listed.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["gdel", "offsets-only"]));
    let g = listed.iter().find(|g| g.group_id == "gdel").expect("gdel");
    assert_eq!(g.members, 1);

    assert_eq!(c.delete("gdel"), ErrorCode::NonEmptyGroup);
    assert_eq!(c.committed("gdel").len(), 2);
    assert_eq!(m.c.leave("gdel", &id), ErrorCode::None);
    assert_eq!(m.c.leave("gdel", &id), ErrorCode::UnknownMemberId);
    let g = c
        .list()
        .into_iter()
        .find(|g| g.group_id == "gdel")
        .expect("still listed");
    assert_eq!((g.state.as_str(), g.members), ("Empty", 0));
    assert_eq!(c.delete("gdel"), ErrorCode::None);
    assert!(c.committed("gdel").is_empty());
    assert_eq!(c.describe("gdel").error, ErrorCode::GroupIdNotFound);
    assert_eq!(c.delete("gdel"), ErrorCode::GroupIdNotFound);
    assert_eq!(c.delete(""), ErrorCode::InvalidGroupId);
    assert_eq!(c.delete("offsets-only"), ErrorCode::None);
    assert!(c.list().is_empty());
    // Deletion is durable.
    let mut b = b;
    b.kill();
    b.restart();
    let mut c = GroupClient::connect(b.addr, "admin");
    assert!(c.list().is_empty());
}

#[test]
fn seek_is_a_standalone_commit_on_an_empty_group() {
    let b = TestBroker::start();
    create(&b, "seek", 2);
    let mut raw = b.client();
    let t0 = now_ms() - 10_000;
    for i in 0..4 {
        raw.produce("seek", 0, batch_at(t0 + i * 1_000, &[b"r"]), Acks::Leader);
        raw.produce("seek", 1, batch_at(t0 + i * 1_000, &[b"r"]), Acks::Leader);
    }
    let mut m = Member::join(&b, "gs", &["seek"], 10_000);
    let id = m.id.clone();
    assert_eq!(
        m.c.commit("gs", &id, m.generation, &[("seek", 0, 2), ("seek", 1, 2)]),
        vec![ErrorCode::None; 2]
    );
    let mut admin = GroupClient::connect(b.addr, "admin");
    // Refused while the group has a member.
    assert_eq!(
        admin.commit("gs", "", 0, &[("seek", 0, 0)]),
        vec![ErrorCode::UnknownMemberId]
    );
    assert_eq!(m.c.leave("gs", &id), ErrorCode::None);
    // --to earliest / latest / @timestamp, resolved with ListOffsets.
    for (spec, want) in [
        (OffsetSpec::Earliest, 0u64),
        (OffsetSpec::Latest, 4),
        (OffsetSpec::Timestamp(t0 + 1_500), 2),
    ] {
        let mut offsets = Vec::new();
        for p in 0..2 {
            let (e, o, _) = raw.list_offset("seek", p, spec);
            assert_eq!(e, ErrorCode::None);
            assert_eq!(o, want, "{spec:?}");
            offsets.push(("seek", p, o));
        }
        assert_eq!(
            admin.commit("gs", "", 0, &offsets),
            vec![ErrorCode::None; 2]
        );
        let committed = admin.committed("gs");
        assert!(
            committed.values().all(|o| *o == want as i64),
            "{committed:?}"
        );
    }
    // The next member resumes from there.
    let d = admin.describe("gs");
    assert!(d
        .offsets
        .iter()
        .all(|p| p.committed_offset == 2 && p.lag == 2));
}

#[test]
fn the_internal_offsets_topic_is_not_a_user_topic() {
    let b = TestBroker::start();
    create(&b, "user", 1);
    let mut admin = GroupClient::connect(b.addr, "admin");
    assert_eq!(
        admin.commit("gi", "", 0, &[("user", 0, 0)]),
        vec![ErrorCode::None]
    );
    assert!(b.data_dir.join("__consumer_offsets").join("0").is_dir());
    let mut raw = b.client();
    let all = raw.metadata(&[]);
    let names: Vec<&str> = all.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["user"]);
    let by_name = raw.metadata(&["__consumer_offsets"]);
    assert_eq!(by_name.topics[0].error, ErrorCode::UnknownTopicOrPartition);
    let p = raw.produce("__consumer_offsets", 0, batch_of(&[b"evil"]), Acks::Leader);
    assert_eq!(p.error, ErrorCode::InvalidTopic);
    assert_eq!(
        raw.fetch("__consumer_offsets", 0, 0).error,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        raw.delete_topic("__consumer_offsets"),
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        raw.create_topic("__consumer_offsets", 1, &[]),
        ErrorCode::InvalidTopic
    );
    // Still intact.
    assert_eq!(admin.committed("gi").len(), 1);
    // ApiVersions advertises every api key: the group apis, DeleteGroups,
    // InitProducerId, DescribeCluster and the topic admin apis.
    match admin.call(&Request::ApiVersions) {
        Response::ApiVersions(v) => {
            let keys: Vec<u16> = v.apis.iter().map(|a| a.api_key).collect();
            let all: Vec<u16> = ApiKey::ALL.iter().map(|k| *k as u16).collect();
            assert_eq!(keys, all);
            assert!(keys.contains(&18) && keys.contains(&19), "{keys:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn deleting_a_topic_deletes_its_committed_offsets() {
    let b = TestBroker::start();
    create(&b, "doomed", 2);
    create(&b, "kept", 1);
    let mut admin = GroupClient::connect(b.addr, "admin");
    assert_eq!(
        admin.commit(
            "gt",
            "",
            0,
            &[("doomed", 0, 1), ("doomed", 1, 1), ("kept", 0, 1)]
        ),
        vec![ErrorCode::None; 3]
    );
    assert_eq!(b.client().delete_topic("doomed"), ErrorCode::None);
    let committed = admin.committed("gt");
    let left: Vec<&Tp> = committed.keys().collect();
    assert_eq!(left, vec![&("kept".to_string(), 0)]);
}
