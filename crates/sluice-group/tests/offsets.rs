//! The committed-offset store on a real `sluice-log` in a temp dir.

mod common;

use std::sync::Arc;

use common::*;
use sluice_group::offsets::{self, OffsetStore};
use sluice_group::{Committer, GroupError, OffsetCommit, TopicPartition};
use sluice_log::{Log, LogConfig};
use sluice_protocol::batch::RecordBatchBuilder;
use sluice_protocol::ErrorCode;

fn open(dir: &std::path::Path) -> OffsetStore {
    OffsetStore::open(dir, OffsetStore::default_log_config()).expect("open store")
}

fn oc(topic: &str, p: u32, offset: u64) -> OffsetCommit {
    OffsetCommit::new(TopicPartition::new(topic, p), offset)
}

/// The committed offset of `topic`/`p` (panics when there is none).
fn offset_of(store: &OffsetStore, group: &str, topic: &str, p: u32) -> u64 {
    store
        .fetch(group, &TopicPartition::new(topic, p))
        .unwrap()
        .offset
}

fn member(c: &Client, generation: u32) -> Committer<'_> {
    Committer::Member {
        member_id: &c.id,
        generation,
    }
}

#[test]
fn offsets_survive_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("__consumer_offsets").join("0");
    {
        let store = open(&path);
        store
            .commit("g1", &[oc("t", 0, 10), oc("t", 1, 20)], 1_000)
            .unwrap();
        let mut with_meta = oc("u", 3, 7);
        with_meta.metadata = "ckpt=42".into();
        store.commit("g2", &[with_meta], 2_000).unwrap();
        // Dropped without close(): everything acknowledged must be on disk.
    }
    let store = open(&path);
    let t0 = store.fetch("g1", &TopicPartition::new("t", 0)).unwrap();
    assert_eq!((t0.offset, t0.commit_timestamp_ms), (10, 1_000));
    assert_eq!(offset_of(&store, "g1", "t", 1), 20);
    let u3 = store.fetch("g2", &TopicPartition::new("u", 3)).unwrap();
    assert_eq!((u3.offset, u3.metadata.as_str()), (7, "ckpt=42"));
    assert_eq!(store.fetch("g1", &TopicPartition::new("t", 9)), None);
    assert_eq!(store.groups(), vec!["g1".to_string(), "g2".to_string()]);
    assert_eq!(store.fetch_group("g1").len(), 2);
}

#[test]
fn compaction_on_load_keeps_only_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..40u64 {
            store
                .commit("g", &[oc("t", 0, i), oc("t", 1, 1_000 + i)], i as i64)
                .unwrap();
        }
        store.commit("g", &[oc("t", 2, 5)], 99).unwrap();
        store.close().unwrap();
    }
    let store = open(dir.path());
    let stats = store.replay_stats();
    assert_eq!(stats.records, 81);
    assert_eq!(stats.skipped, 0);
    assert_eq!(stats.live_keys, 3);
    assert_eq!(offset_of(&store, "g", "t", 0), 39);
    assert_eq!(offset_of(&store, "g", "t", 1), 1_039);
    assert_eq!(offset_of(&store, "g", "t", 2), 5);
}

#[test]
fn tombstones_delete_a_group() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .commit("a", &[oc("t", 0, 1), oc("t", 1, 2)], 1)
            .unwrap();
        store.commit("b", &[oc("t", 0, 3)], 1).unwrap();
        assert_eq!(store.delete_group_offsets("a", 2).unwrap(), 2);
        assert_eq!(store.delete_group_offsets("a", 3).unwrap(), 0);
        assert_eq!(store.groups(), vec!["b".to_string()]);
    }
    let store = open(dir.path());
    assert_eq!(store.groups(), vec!["b".to_string()]);
    assert!(store.fetch_group("a").is_empty());
    // Single partitions can be deleted too.
    store.commit("b", &[oc("t", 1, 4)], 3).unwrap();
    let n = store
        .delete_offsets(
            "b",
            &[TopicPartition::new("t", 1), TopicPartition::new("zz", 0)],
            3,
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(store.fetch_group("b").len(), 1);
    // Re-committing after delete works and wins on reload.
    store.commit("a", &[oc("t", 0, 9)], 4).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(offset_of(&store, "a", "t", 0), 9);
}

#[test]
fn offsets_above_i64_max_are_refused_and_i64_max_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let coord = coordinator();
    let end = store.log().end_offset();
    for bad in [u64::MAX, 1 << 63] {
        let err = offsets::fenced_commit(
            &coord,
            &store,
            "g",
            Committer::Standalone,
            &[oc("t", 0, 1), oc("t", 1, bad)],
            1,
        )
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
    }
    assert_eq!(store.log().end_offset(), end, "nothing written");
    assert!(store.fetch("g", &TopicPartition::new("t", 0)).is_none());
    offsets::fenced_commit(
        &coord,
        &store,
        "g",
        Committer::Standalone,
        &[oc("t", 0, i64::MAX as u64)],
        2,
    )
    .unwrap();
    assert_eq!(offset_of(&store, "g", "t", 0), i64::MAX as u64);
}

#[test]
fn fenced_commit_rejects_stale_generation_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let cat = catalog(&[("t", 2)]);
    let mut coord = coordinator();
    let a = join(&mut coord, 0, "g", "a", &["t"], 1_000, &cat);
    let gen_a = a.generation;
    offsets::fenced_commit(
        &coord,
        &store,
        "g",
        member(&a, gen_a),
        &[oc("t", 0, 5), oc("t", 1, 6)],
        1,
    )
    .unwrap();

    // b joins; after the hand-over b owns one partition.
    let b = join(&mut coord, 1, "g", "b", &["t"], 1_000, &cat);
    let mut clients = vec![a, b];
    settle(&mut coord, 2, "g", &mut clients, &cat, 10).unwrap();
    let (a, b) = (&clients[0], &clients[1]);
    let moved = b.consuming.iter().next().unwrap().clone();
    let end = store.log().end_offset();
    let err = offsets::fenced_commit(
        &coord,
        &store,
        "g",
        member(a, gen_a),
        &[OffsetCommit::new(moved.clone(), 1)],
        3,
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::IllegalGeneration);
    assert_eq!(
        store.log().end_offset(),
        end,
        "a rejected commit must not be written"
    );
    assert_eq!(
        store.fetch("g", &moved).unwrap().offset,
        if moved.partition == 0 { 5 } else { 6 }
    );

    // The new owner commits through the split API (check+append, then wait).
    let ticket = offsets::begin_fenced_commit(
        &coord,
        &store,
        "g",
        member(b, b.generation),
        &[OffsetCommit::new(moved.clone(), 100)],
        4,
    )
    .unwrap();
    assert_ne!(
        store.fetch("g", &moved).unwrap().offset,
        100,
        "visible only once durable"
    );
    store.finish(ticket).unwrap();
    assert_eq!(store.fetch("g", &moved).unwrap().offset, 100);

    // An unknown member is rejected too.
    let err = offsets::fenced_commit(
        &coord,
        &store,
        "g",
        Committer::Member {
            member_id: "ghost",
            generation: 1,
        },
        &[OffsetCommit::new(moved, 1)],
        5,
    )
    .unwrap_err();
    assert!(matches!(err, GroupError::UnknownMemberId { .. }));
}

#[test]
fn delete_and_seek_need_an_empty_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let cat = catalog(&[("t", 1)]);
    let mut coord = coordinator();
    let a = join(&mut coord, 0, "g", "a", &["t"], 1_000, &cat);
    offsets::fenced_commit(
        &coord,
        &store,
        "g",
        Committer::Member {
            member_id: &a.id,
            generation: a.generation,
        },
        &[oc("t", 0, 50)],
        1,
    )
    .unwrap();
    let err = offsets::reset_offsets(&coord, &store, "g", &[oc("t", 0, 0)], 2).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NonEmptyGroup);
    let err = offsets::delete_group(&mut coord, &store, "g", 2).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NonEmptyGroup);
    // Standalone commits are refused while members exist.
    let err = offsets::fenced_commit(
        &coord,
        &store,
        "g",
        Committer::Standalone,
        &[oc("t", 0, 1)],
        2,
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);

    coord.leave(3, "g", &a.id, &cat).unwrap();
    offsets::reset_offsets(&coord, &store, "g", &[oc("t", 0, 0)], 4).unwrap();
    assert_eq!(offset_of(&store, "g", "t", 0), 0);
    assert_eq!(
        offsets::delete_group(&mut coord, &store, "g", 5).unwrap(),
        1
    );
    assert!(coord.describe("g").is_none());
    assert!(store.groups().is_empty());
    let err = offsets::delete_group(&mut coord, &store, "g", 6).unwrap_err();
    assert_eq!(err.code(), ErrorCode::GroupIdNotFound);
    let err = store.commit("", &[oc("t", 0, 1)], 7).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidGroupId);
}

#[test]
fn concurrent_commits_agree_with_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..15u64 {
                    store.commit("g", &[oc("t", 0, t * 1_000 + i)], 0).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let live = offset_of(&store, "g", "t", 0);
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(offset_of(&reopened, "g", "t", 0), live);
    assert_eq!(reopened.replay_stats().records, 60);
}

#[test]
fn unknown_record_versions_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), OffsetStore::default_log_config()).unwrap();
        let mut b = RecordBatchBuilder::new();
        b.push(0, Some(&[7, 0, 0]), Some(&[1]), &[]); // key version 7: a future record kind
        b.push(0, None, Some(&[1]), &[]); // no key at all
        let mut key = Vec::new();
        offsets::encode_key("g", &TopicPartition::new("t", 0), &mut key).unwrap();
        b.push(0, Some(&key), Some(&[9, 9]), &[]); // unknown value version
        log.append(&b.finish()).unwrap();
        log.close().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.replay_stats().skipped, 3);
    assert!(store.groups().is_empty());
    store.commit("g", &[oc("t", 0, 1)], 0).unwrap();
    assert_eq!(offset_of(&store, "g", "t", 0), 1);
    // A snapshot would drop what this version cannot read: compaction is off.
    store.set_compact_after_bytes(0);
    assert!(!store.compaction_due());
    assert_eq!(store.maybe_compact().unwrap(), None);
}

#[test]
fn lag_time_from_a_real_partition_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let mut b = RecordBatchBuilder::new();
    for ts in [1_000, 2_000, 3_000] {
        b.push(ts, None, Some(b"x"), &[]);
    }
    log.append(&b.finish()).unwrap();
    for ts in [4_000, 5_000] {
        b.push(ts, None, Some(b"y"), &[]);
    }
    log.append(&b.finish()).unwrap();
    assert_eq!(sluice_group::timestamp_at(&log, 0).unwrap(), Some(1_000));
    assert_eq!(sluice_group::timestamp_at(&log, 2).unwrap(), Some(3_000));
    assert_eq!(sluice_group::timestamp_at(&log, 4).unwrap(), Some(5_000));
    assert_eq!(sluice_group::timestamp_at(&log, 5).unwrap(), None);
    let end = log.end_offset();
    let ts = sluice_group::timestamp_at(&log, 1).unwrap();
    let lag = sluice_group::lag(end, 1, ts, 10_000);
    assert_eq!((lag.records, lag.ms), (4, Some(8_000)));
    let lag = sluice_group::lag(
        end,
        end,
        sluice_group::timestamp_at(&log, end).unwrap(),
        10_000,
    );
    assert_eq!((lag.records, lag.ms), (0, Some(0)));
}

#[test]
fn compaction_on_disk_bounds_the_log_and_keeps_every_live_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        preallocate_bytes: 4 * 1024,
        ..OffsetStore::default_log_config()
    };
    let expected: std::collections::BTreeMap<(String, u32), u64> = {
        let store = Arc::new(OffsetStore::open(dir.path(), config.clone()).unwrap());
        store.set_compact_after_bytes(8 * 1024);
        // Committed once, before everything else: only a snapshot keeps it.
        store.commit("early", &[oc("t", 99, 5)], 0).unwrap();
        // Deleted early: no snapshot may bring it back.
        store.commit("gone", &[oc("t", 0, 1)], 0).unwrap();
        store.delete_group_offsets("gone", 0).unwrap();
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let group = format!("g{t}");
                    for i in 0..500u64 {
                        let p = (i % 7) as u32;
                        store.commit(&group, &[oc("t", p, i)], 0).unwrap();
                    }
                })
            })
            .collect();
        // Compactions run while the commits go on, as the broker's tick does.
        let mut compactions = 0;
        while threads.iter().any(|t| !t.is_finished()) {
            if store.maybe_compact().unwrap().is_some() {
                compactions += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for t in threads {
            t.join().unwrap();
        }
        while store.maybe_compact().unwrap().is_some() {
            compactions += 1;
        }
        assert!(compactions >= 3, "{compactions} compactions");
        // 2,000 commits of ~60 bytes: without compaction well over 100 KiB.
        assert!(
            store.log().size_bytes() < 48 * 1024,
            "{} bytes",
            store.log().size_bytes()
        );
        assert!(store.log().start_offset() > 0);
        let mut expected = std::collections::BTreeMap::new();
        for t in 0..4u32 {
            for p in 0..7u32 {
                let last = (0..500u64).filter(|i| i % 7 == u64::from(p)).max().unwrap();
                let got = store
                    .fetch(&format!("g{t}"), &TopicPartition::new("t", p))
                    .unwrap();
                assert_eq!(got.offset, last);
                expected.insert((format!("g{t}"), p), last);
            }
        }
        expected
    };
    let store = OffsetStore::open(dir.path(), config).unwrap();
    for ((group, p), offset) in &expected {
        let got = store.fetch(group, &TopicPartition::new("t", *p)).unwrap();
        assert_eq!(got.offset, *offset, "{group} t/{p}");
    }
    assert_eq!(offset_of(&store, "early", "t", 99), 5);
    assert!(store.fetch_group("gone").is_empty());
    assert_eq!(
        store.groups(),
        vec!["early", "g0", "g1", "g2", "g3"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    );
    // Replay read the snapshot and what followed, not all 2,000 commits.
    assert!(
        store.replay_stats().records < 1_000,
        "{:?}",
        store.replay_stats()
    );
    assert_eq!(store.replay_stats().live_keys, 29);
}

#[test]
fn a_snapshot_record_never_overrides_a_newer_commit() {
    // A compaction that snapshots K=10 at point S while a commit K=20 lands
    // after S but before the snapshot record, then a crash before any
    // segment is deleted: replay must keep 20.
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("t", 0);
    {
        let store = open(dir.path());
        store.commit("g", &[oc("t", 0, 10)], 0).unwrap();
        let s = store.log().end_offset();
        store.commit("g", &[oc("t", 0, 20)], 0).unwrap();
        let mut key = Vec::new();
        offsets::encode_key("g", &tp, &mut key).unwrap();
        let mut value = Vec::new();
        let old = offsets::CommittedOffset {
            offset: 10,
            commit_timestamp_ms: 0,
            metadata: String::new(),
        };
        offsets::encode_value(&old, &mut value).unwrap();
        let mut b = RecordBatchBuilder::new();
        let point = s.to_be_bytes();
        b.push(
            0,
            Some(&key),
            Some(&value),
            &[(offsets::SNAPSHOT_HEADER, &point)],
        );
        // A snapshot record for a key with nothing after the point applies.
        let mut other = Vec::new();
        offsets::encode_key("g", &TopicPartition::new("t", 1), &mut other).unwrap();
        b.push(
            0,
            Some(&other),
            Some(&value),
            &[(offsets::SNAPSHOT_HEADER, &point)],
        );
        store.log().append(&b.finish()).unwrap();
        store.log().flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.fetch("g", &tp).unwrap().offset, 20);
    assert_eq!(offset_of(&store, "g", "t", 1), 10);
}

/// A snapshot record for `tp` = `offset` with snapshot point `point`, as a
/// compaction appends it.
fn append_snapshot_record(
    store: &OffsetStore,
    group: &str,
    tp: &TopicPartition,
    offset: u64,
    point: u64,
) {
    let mut key = Vec::new();
    offsets::encode_key(group, tp, &mut key).unwrap();
    let mut value = Vec::new();
    let v = offsets::CommittedOffset {
        offset,
        commit_timestamp_ms: 0,
        metadata: "m".repeat(3000),
    };
    offsets::encode_value(&v, &mut value).unwrap();
    let mut b = RecordBatchBuilder::new();
    let point = point.to_be_bytes();
    b.push(
        0,
        Some(&key),
        Some(&value),
        &[(offsets::SNAPSHOT_HEADER, &point)],
    );
    store.log().append(&b.finish()).unwrap();
    store.log().flush().unwrap();
}

#[test]
fn an_offset_deleted_during_a_snapshot_stays_deleted_after_the_next_compaction() {
    // Compaction 1 copies k=10 at point S1; k is deleted; its snapshot
    // record for k lands after the tombstone, in a new segment. Compaction 2
    // (k deleted: no record) deletes the segment with the tombstone but not
    // the one with compaction 1's record. Replay must not bring k back.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 4096,
        ..OffsetStore::default_log_config()
    };
    let (k, j) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    {
        let store = OffsetStore::open(dir.path(), config.clone()).unwrap();
        let mut c = OffsetCommit::new(k.clone(), 10);
        c.metadata = "m".repeat(3000);
        store.commit("g", &[c], 1).unwrap();
        let s1 = store.log().end_offset();
        assert_eq!(
            store
                .delete_offsets("g", std::slice::from_ref(&k), 2)
                .unwrap(),
            1
        );
        append_snapshot_record(&store, "g", &k, 10, s1);
        store.commit("g", &[oc("t", 1, 5)], 3).unwrap();
        store.set_compact_after_bytes(0);
        let done = store.maybe_compact().unwrap().expect("compacted");
        assert!(done.segments_deleted > 0, "{done:?}");
        assert_eq!(store.fetch("g", &k), None);
    }
    let store = OffsetStore::open(dir.path(), config).unwrap();
    assert_eq!(store.fetch("g", &j).unwrap().offset, 5);
    assert_eq!(store.fetch("g", &k), None, "a deleted offset came back");
}

#[test]
fn a_failed_segment_deletion_is_retried_without_a_new_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 4096,
        ..OffsetStore::default_log_config()
    };
    let store = OffsetStore::open(dir.path(), config).unwrap();
    for i in 0..40u64 {
        let mut c = oc("t", (i % 3) as u32, i);
        c.metadata = "m".repeat(500);
        store.commit("g", &[c], 0).unwrap();
    }
    let bases = store.log().segment_base_offsets();
    assert!(bases.len() > 3, "{bases:?}");
    // The oldest segment cannot be unlinked: a directory stands in its place.
    let first = dir.path().join(sluice_log::file_name(bases[0], "log"));
    let aside = dir.path().join("aside");
    std::fs::rename(&first, &aside).unwrap();
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("keep"), b"x").unwrap();
    store.set_compact_after_bytes(0);
    assert!(store.maybe_compact().is_err());
    let end = store.log().end_offset();
    // The retry deletes and appends nothing while the obstacle stays...
    assert!(store.maybe_compact().is_err());
    assert_eq!(store.log().end_offset(), end);
    std::fs::remove_dir_all(&first).unwrap();
    std::fs::rename(&aside, &first).unwrap();
    // ...and finishes the deletion once it is gone, still without a new snapshot.
    let done = store.maybe_compact().unwrap().expect("deletion retried");
    assert!(done.segments_deleted > 0);
    assert_eq!(store.log().end_offset(), end);
    for p in 0..3u32 {
        let last = (0..40u64).filter(|i| i % 3 == u64::from(p)).max().unwrap();
        assert_eq!(offset_of(&store, "g", "t", p), last);
    }
}
