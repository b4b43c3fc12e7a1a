//! Offsets retention (Kafka's `offsets.retention.minutes`) driven by a fake
//! clock, and the queued commit path it shares with commits and deletes.

mod common;

use common::*;
use sluice_group::offsets::{self, OffsetStore};
use sluice_group::{
    Committer, Coordinator, ExpiryNow, Occupancy, OffsetCommit, OffsetRetention, TopicPartition,
};

const RETENTION_MS: u64 = 60_000;
/// Wall clock when the store is opened in these tests.
const OPENED: i64 = 1_700_000_000_000;

/// A fake clock: the coordinator's monotonic ms and the wall clock, moved by hand.
#[derive(Debug, Clone, Copy)]
struct FakeClock {
    coordinator_ms: u64,
    wall_ms: i64,
}

impl FakeClock {
    fn advance(&mut self, ms: u64) {
        self.coordinator_ms += ms;
        self.wall_ms += i64::try_from(ms).unwrap();
    }
    fn now(&self) -> ExpiryNow {
        ExpiryNow {
            coordinator_ms: self.coordinator_ms,
            wall_ms: self.wall_ms,
        }
    }
}

/// The committed offset of `group` on `topic`/`partition` (it must exist).
fn offset_of(store: &OffsetStore, group: &str, topic: &str, partition: u32) -> u64 {
    store
        .fetch(group, &TopicPartition::new(topic, partition))
        .unwrap()
        .offset
}

fn retention() -> OffsetRetention {
    OffsetRetention {
        retention_ms: RETENTION_MS,
        opened_wall_ms: OPENED,
    }
}

fn open(dir: &std::path::Path) -> OffsetStore {
    OffsetStore::open(dir, OffsetStore::default_log_config()).expect("open store")
}

fn oc(topic: &str, p: u32, offset: u64) -> OffsetCommit {
    OffsetCommit::new(TopicPartition::new(topic, p), offset)
}

/// One expiry pass at `clock`: returns (offsets deleted, groups forgotten).
fn expire(coord: &mut Coordinator, store: &OffsetStore, clock: &FakeClock) -> (usize, Vec<String>) {
    let pass = offsets::begin_expire_offsets(coord, store, &retention(), clock.now());
    let forgotten = pass.forgotten_groups.clone();
    (offsets::finish_expiry(store, pass).unwrap(), forgotten)
}

#[test]
fn the_rule_counts_from_the_latest_of_commit_emptiness_and_open() {
    let r = retention();
    let now = |c: u64, w: i64| ExpiryNow {
        coordinator_ms: c,
        wall_ms: w,
    };
    let r_i64 = i64::try_from(RETENTION_MS).unwrap();
    // A group with members never expires, however old the commit.
    assert!(!offsets::offset_expired(
        &r,
        Occupancy::Members,
        0,
        now(u64::MAX / 2, i64::MAX / 2)
    ));
    // Unknown group (standalone commits): from the commit...
    let commit = OPENED + 5_000;
    assert!(!offsets::offset_expired(
        &r,
        Occupancy::Unknown,
        commit,
        now(0, commit + r_i64 - 1)
    ));
    assert!(offsets::offset_expired(
        &r,
        Occupancy::Unknown,
        commit,
        now(0, commit + r_i64)
    ));
    // ...but never from before the store was opened.
    assert!(!offsets::offset_expired(
        &r,
        Occupancy::Unknown,
        OPENED - 10 * r_i64,
        now(0, OPENED + r_i64 - 1)
    ));
    assert!(offsets::offset_expired(
        &r,
        Occupancy::Unknown,
        OPENED - 10 * r_i64,
        now(0, OPENED + r_i64)
    ));
    // Empty group: from when it became empty (the commit is older)...
    assert!(!offsets::offset_expired(
        &r,
        Occupancy::EmptySince(1_000),
        commit,
        now(1_000 + RETENTION_MS - 1, commit + 10 * r_i64)
    ));
    assert!(offsets::offset_expired(
        &r,
        Occupancy::EmptySince(1_000),
        commit,
        now(1_000 + RETENTION_MS, commit + 10 * r_i64)
    ));
    // ...or from a commit made after it emptied (a seek), whichever is later.
    assert!(!offsets::offset_expired(
        &r,
        Occupancy::EmptySince(1_000),
        commit,
        now(1_000 + 10 * RETENTION_MS, commit + r_i64 - 1)
    ));
}

#[test]
fn the_coordinator_records_when_a_group_became_empty() {
    let cat = catalog(&[("t", 2)]);
    let mut coord = coordinator();
    assert_eq!(coord.occupancy("g"), Occupancy::Unknown);
    let a = join(&mut coord, 100, "g", "a", &["t"], 1_000, &cat);
    assert_eq!(coord.occupancy("g"), Occupancy::Members);
    coord.leave(250, "g", &a.id, &cat).unwrap();
    assert_eq!(coord.occupancy("g"), Occupancy::EmptySince(250));
    assert_eq!(coord.empty_groups(), vec![("g".to_string(), 250)]);
    // A member that joins and then times out: empty since the tick that removed it.
    join(&mut coord, 300, "g", "b", &["t"], 1_000, &cat);
    assert_eq!(coord.occupancy("g"), Occupancy::Members);
    assert!(coord.tick(900, &cat).is_empty());
    assert_eq!(coord.tick(1_300, &cat).len(), 1);
    assert_eq!(coord.occupancy("g"), Occupancy::EmptySince(1_300));
}

#[test]
fn offsets_of_an_empty_group_expire_after_the_retention_durably() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offsets");
    let cat = catalog(&[("t", 2)]);
    let mut coord = coordinator();
    let mut clock = FakeClock {
        coordinator_ms: 0,
        wall_ms: OPENED,
    };
    {
        let store = open(&path);
        // "g": a consumer group that commits and then leaves at 1 s.
        let a = join(
            &mut coord,
            clock.coordinator_ms,
            "g",
            "a",
            &["t"],
            10_000,
            &cat,
        );
        let parts: Vec<OffsetCommit> = a
            .consuming
            .iter()
            .map(|tp| OffsetCommit::new(tp.clone(), 7))
            .collect();
        assert_eq!(parts.len(), 2);
        let member = Committer::Member {
            member_id: &a.id,
            generation: a.generation,
        };
        offsets::fenced_commit(&coord, &store, "g", member, &parts, clock.wall_ms).unwrap();
        // "live": a group whose member stays; its offsets never expire.
        let l = join(
            &mut coord,
            clock.coordinator_ms,
            "live",
            "l",
            &["t"],
            10_000,
            &cat,
        );
        let member = Committer::Member {
            member_id: &l.id,
            generation: l.generation,
        };
        let commit = [OffsetCommit::new(
            l.consuming.iter().next().unwrap().clone(),
            3,
        )];
        offsets::fenced_commit(&coord, &store, "live", member, &commit, clock.wall_ms).unwrap();
        // "solo": standalone commits (no member ever).
        store
            .commit("solo", &[oc("t", 0, 11)], clock.wall_ms)
            .unwrap();
        clock.advance(1_000);
        coord.leave(clock.coordinator_ms, "g", &a.id, &cat).unwrap();

        // Just before the retention: nothing expires.
        clock.advance(RETENTION_MS - 1_001);
        assert_eq!(expire(&mut coord, &store, &clock), (0, vec![]));
        // At the retention since the commits: "solo" goes, "g" (empty for
        // one second less) stays, "live" stays.
        clock.advance(1);
        assert_eq!(expire(&mut coord, &store, &clock), (1, vec![]));
        assert_eq!(store.groups(), vec!["g".to_string(), "live".to_string()]);
        // One second later "g" has been empty for the retention: its offsets
        // go and the coordinator forgets it.
        clock.advance(999);
        assert_eq!(expire(&mut coord, &store, &clock), (0, vec![]));
        clock.advance(1);
        assert_eq!(
            expire(&mut coord, &store, &clock),
            (2, vec!["g".to_string()])
        );
        assert_eq!(store.groups(), vec!["live".to_string()]);
        assert!(coord.describe("g").is_none());
        assert_eq!(coord.occupancy("live"), Occupancy::Members);
        // Much later, a group with a member still keeps its offsets.
        clock.advance(100 * RETENTION_MS);
        assert_eq!(expire(&mut coord, &store, &clock), (0, vec![]));
        assert_eq!(store.fetch_group("live").len(), 1);
    }
    // The expiry was written as tombstones: it survives a reopen.
    let store = open(&path);
    assert_eq!(store.groups(), vec!["live".to_string()]);
    assert!(store.fetch_group("g").is_empty());
    assert!(store.fetch_group("solo").is_empty());
}

#[test]
fn an_offset_committed_again_after_the_pass_decided_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut coord = coordinator();
    let mut clock = FakeClock {
        coordinator_ms: 0,
        wall_ms: OPENED,
    };
    store
        .commit("s", &[oc("t", 0, 1), oc("t", 1, 1)], clock.wall_ms)
        .unwrap();
    clock.advance(RETENTION_MS);
    // A commit queued (not yet appended, so not yet visible) before the
    // pass decides: the pass sees the old offset and finds both expired...
    let recommit = store
        .append_commit("s", &[oc("t", 1, 9)], clock.wall_ms)
        .unwrap();
    let pass = offsets::begin_expire_offsets(&mut coord, &store, &retention(), clock.now());
    assert_eq!(pass.offsets, 2);
    // ...but its tombstone is resolved when appended, after the recommit:
    // the newer commit stays.
    assert_eq!(offsets::finish_expiry(&store, pass).unwrap(), 1);
    store.finish(recommit).unwrap();
    assert_eq!(store.fetch_group("s").len(), 1);
    assert_eq!(offset_of(&store, "s", "t", 1), 9);
    drop(store);
    let store = open(dir.path());
    assert_eq!(offset_of(&store, "s", "t", 1), 9);
    assert!(store.fetch("s", &TopicPartition::new("t", 0)).is_none());
}

#[test]
fn an_empty_group_without_offsets_is_forgotten_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let cat = catalog(&[("t", 1)]);
    let mut coord = coordinator();
    let mut clock = FakeClock {
        coordinator_ms: 0,
        wall_ms: OPENED,
    };
    let r = OffsetRetention {
        retention_ms: 100 * offsets::EMPTY_GROUP_GRACE_MS,
        opened_wall_ms: OPENED,
    };
    let a = join(&mut coord, 0, "g", "a", &["t"], 10_000, &cat);
    coord.leave(0, "g", &a.id, &cat).unwrap();
    clock.advance(offsets::EMPTY_GROUP_GRACE_MS - 1);
    let pass = offsets::begin_expire_offsets(&mut coord, &store, &r, clock.now());
    assert!(pass.forgotten_groups.is_empty());
    offsets::finish_expiry(&store, pass).unwrap();
    assert_eq!(coord.list_groups().len(), 1);
    clock.advance(1);
    let pass = offsets::begin_expire_offsets(&mut coord, &store, &r, clock.now());
    assert_eq!(pass.forgotten_groups, vec!["g".to_string()]);
    offsets::finish_expiry(&store, pass).unwrap();
    assert!(coord.list_groups().is_empty());
}

#[test]
fn a_dropped_ticket_is_still_appended_in_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let end = store.log().end_offset();
    // Queuing costs no I/O: nothing is appended yet.
    let first = store.append_commit("g", &[oc("t", 0, 1)], 1).unwrap();
    assert_eq!(store.log().end_offset(), end);
    drop(first);
    // The next finish appends the dropped change first, then its own.
    store.commit("g", &[oc("t", 1, 2)], 2).unwrap();
    assert_eq!(store.fetch_group("g").len(), 2);
    // A dropped change with nothing after it is appended by settle.
    drop(store.append_commit("g", &[oc("t", 0, 5)], 3).unwrap());
    store.settle().unwrap();
    assert_eq!(offset_of(&store, "g", "t", 0), 5);
    drop(store);
    let store = open(dir.path());
    assert_eq!(offset_of(&store, "g", "t", 0), 5);
    assert_eq!(store.replay_stats().records, 3);
}
