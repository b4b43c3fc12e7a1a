//! Rules `protocol.md` states about the broker that no other test checks,
//! each asserted against the real `sluiced` over TCP (or, for the spec's own
//! tables, against the constants they document): served api keys, primitive
//! types, limits, auto-creation and the default topic configs, `last_offset`,
//! whole-batch `min_bytes`/`max_bytes`, `timeout_ms = 0`, a heartbeat wait
//! above the session timeout, when the generation grows, and the answers for
//! `__consumer_offsets` and for unknown groups.

mod common;
mod group_client;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use group_client::*;
use sluice_protocol::*;

const SPEC: &str = include_str!("../protocol.md");

/// `n` with thousands separated by commas, as the spec writes numbers.
fn commas(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.join(",")
}

/// The rows of the first markdown table after `anchor`, as trimmed cells.
fn table_after(anchor: &str) -> Vec<Vec<String>> {
    let start = SPEC
        .find(anchor)
        .unwrap_or_else(|| panic!("protocol.md lacks {anchor:?}"));
    SPEC[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Sorted keys as prose: runs of three or more as `a to b`, the rest one by
/// one, the last joined with `and` (`0 to 16, 18 and 19`).
fn key_ranges(keys: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let mut j = i;
        while j + 1 < keys.len() && keys[j + 1] == keys[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{} to {}", keys[i], keys[j]));
        } else {
            parts.extend(keys[i..=j].iter().map(u16::to_string));
        }
        i = j + 1;
    }
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => parts.concat(),
    }
}

fn unquote(cell: &str) -> &str {
    cell.trim_matches('`')
}

#[test]
fn the_spec_names_every_served_key_and_every_integer_type_it_uses() {
    let keys: Vec<u16> = SUPPORTED_APIS.iter().map(|a| a.api_key).collect();
    let all: Vec<u16> = ApiKey::ALL.iter().map(|k| *k as u16).collect();
    assert_eq!(keys, all, "every assigned key is served, in order");
    let served = key_ranges(&keys);
    assert!(
        SPEC.contains(&format!(
            "This version of Sluice answers keys {served}, each with `0..=0`"
        )),
        "the ApiVersions section does not name the served keys as {served:?}"
    );
    // Every fixed-size integer type the spec uses has a row in the primitive table.
    let primitives: Vec<String> = table_after("## Primitive types")
        .into_iter()
        .map(|row| unquote(&row[0]).to_string())
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for token in SPEC.split('`').skip(1).step_by(2) {
        let int = token.len() >= 2
            && (token.starts_with('i') || token.starts_with('u'))
            && matches!(&token[1..], "8" | "16" | "32" | "64");
        if int {
            used.insert(token.to_string());
        }
    }
    assert!(used.contains("i16") && used.contains("i32"), "{used:?}");
    for t in used {
        assert!(
            primitives.contains(&t),
            "`{t}` is used but not in the primitive table"
        );
    }
}

#[test]
fn the_spec_states_the_partition_count_limit_and_the_broker_enforces_it() {
    let max = sluice_broker::config::MAX_PARTITIONS;
    let limit = format!("| partitions per topic    | {} ", commas(u64::from(max)));
    assert!(SPEC.contains(&limit), "Limits lacks `{limit}`");
    assert!(SPEC.contains(&format!(
        "1 to {} (the partition-count limit)",
        commas(u64::from(max))
    )));
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(
        c.create_topic("over", max + 1, &[]),
        ErrorCode::InvalidPartitions
    );
    assert_eq!(c.create_topic("zero", 0, &[]), ErrorCode::InvalidPartitions);
    assert_eq!(
        c.metadata(&["zero"]).topics[0].error,
        ErrorCode::UnknownTopicOrPartition
    );
}

#[test]
fn auto_creation_is_on_by_default_with_one_partition_and_the_documented_configs() {
    let b = TestBroker::start();
    let mut c = b.client();
    let p = c.produce("auto", 0, batch_of(&[b"first"]), Acks::Leader);
    assert_eq!(p.error, ErrorCode::None);
    let m = c.metadata(&["auto"]);
    let t = &m.topics[0];
    assert_eq!(t.error, ErrorCode::None);
    assert_eq!(t.partitions.len(), 1);
    // Metadata reports exactly the defaults of the spec's table, plus `partitions`.
    let mut documented: BTreeMap<String, String> = table_after("| key                 | default")
        .into_iter()
        .map(|row| (unquote(&row[0]).to_string(), unquote(&row[1]).to_string()))
        .collect();
    documented.insert("partitions".into(), "1".into());
    let reported: BTreeMap<String, String> = t.configs.iter().cloned().collect();
    assert_eq!(reported, documented);
    // Reserved and invalid names are refused by auto-creation.
    let p = c.produce("__reserved", 0, batch_of(&[b"x"]), Acks::Leader);
    assert_eq!(p.error, ErrorCode::InvalidTopic);
    // Only Produce auto-creates.
    assert_eq!(
        c.list_offset("not-created", 0, OffsetSpec::Latest).0,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        c.fetch("not-created", 0, 0).error,
        ErrorCode::UnknownTopicOrPartition
    );
    let names: Vec<String> = c.metadata(&[]).topics.into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["auto".to_string()]);
}

#[test]
fn with_auto_creation_off_a_produce_to_a_missing_topic_is_unknown_topic() {
    let b = TestBroker::start_with(&["--auto-create-topics", "false"]);
    let mut c = b.client();
    for name in ["missing", "__consumer_offsets"] {
        let p = c.produce(name, 0, batch_of(&[b"x"]), Acks::Leader);
        assert_eq!(p.error, ErrorCode::UnknownTopicOrPartition, "{name}");
    }
    assert!(c.metadata(&[]).topics.is_empty());
}

#[test]
fn last_offset_is_the_last_batchs_base_offset_plus_its_last_offset_delta() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("lo", 1, &[]), ErrorCode::None);
    let one = c.produce("lo", 0, batch_of(&[b"a", b"b", b"c"]), Acks::Leader);
    assert_eq!(
        (one.error, one.base_offset, one.last_offset),
        (ErrorCode::None, 0, 2)
    );
    // Two batches in one request: consecutive offsets, one range.
    let mut two = batch_of(&[b"d", b"e"]).to_vec();
    two.extend_from_slice(&batch_of(&[b"f", b"g", b"h", b"i"]));
    let r = c.produce("lo", 0, Bytes::from(two), Acks::Leader);
    assert_eq!(
        (r.error, r.base_offset, r.last_offset),
        (ErrorCode::None, 3, 8)
    );
    // The next append starts right after.
    let next = c.produce("lo", 0, batch_of(&[b"j"]), Acks::Leader);
    assert_eq!((next.base_offset, next.last_offset), (9, 9));
    let values: Vec<Vec<u8>> = c
        .fetch_all("lo", 0, 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values.len(), 10);
    assert_eq!(values[8], b"i".to_vec());
}

#[test]
fn produce_with_timeout_ms_0_and_durable_acks_waits_for_the_fsync_with_the_default() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("t0", 1, &[("flush", "os")]), ErrorCode::None);
    let req = Request::Produce(ProduceRequest {
        acks: Acks::Durable,
        timeout_ms: 0,
        topics: vec![ProduceTopic {
            name: "t0".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records: batch_of(&[b"durable"]),
            }],
        }],
    });
    match c.call(&req) {
        Response::Produce(r) => {
            let p = &r.topics[0].partitions[0];
            assert_eq!((p.error, p.base_offset), (ErrorCode::None, 0), "{r:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Sends `fetch` then ApiVersions on one connection and returns whether the
/// fetch was answered first, i.e. at once (a parked fetch is answered after
/// the later request, which the broker serves meanwhile).
fn answered_at_once(c: &mut RawClient, fetch: &Request) -> (bool, Response) {
    let fetch_id = c.send(fetch);
    let versions_id = c.send(&Request::ApiVersions);
    let (first, r1) = c.recv();
    let (second, r2) = c.recv();
    assert_eq!(
        {
            let mut ids = [first, second];
            ids.sort();
            ids
        },
        {
            let mut ids = [fetch_id, versions_id];
            ids.sort();
            ids
        }
    );
    if first == fetch_id {
        (true, r1)
    } else {
        (false, r2)
    }
}

fn fetch_req(offset: u64, min_bytes: u32, max_bytes: u32, partition_max: u32) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms: 500,
        min_bytes,
        max_bytes,
        topics: vec![FetchTopic {
            name: "mb".into(),
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: offset,
                max_bytes: partition_max,
            }],
        }],
    })
}

#[test]
fn fetch_min_bytes_and_max_bytes_count_whole_batches() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("mb", 1, &[]), ErrorCode::None);
    let first = batch_of(&[b"r0", b"r1", b"r2"]);
    let second = batch_of(&[b"r3"]);
    let (s1, s2) = (first.len() as u32, second.len() as u32);
    c.produce("mb", 0, first, Acks::Leader);
    c.produce("mb", 0, second, Acks::Leader);

    // From offset 2 only one record of the first batch is wanted, but the
    // whole batch counts: min_bytes = both batches is met at once...
    let (at_once, r) = answered_at_once(&mut c, &fetch_req(2, s1 + s2, 1 << 20, 1 << 20));
    assert!(at_once, "min_bytes did not count the whole first batch");
    let p = RawClient::fetch_partition(r);
    assert_eq!(p.records.len() as u32, s1 + s2);
    // ... and one byte more is not: the fetch parks until max_wait_ms.
    let (at_once, r) = answered_at_once(&mut c, &fetch_req(2, s1 + s2 + 1, 1 << 20, 1 << 20));
    assert!(
        !at_once,
        "a fetch with min_bytes above what is stored was not parked"
    );
    assert_eq!(RawClient::fetch_partition(r).records.len() as u32, s1 + s2);

    // max_bytes: the first batch always comes whole; a further one only if it fits.
    let (_, r) = answered_at_once(&mut c, &fetch_req(2, 1, 1, 1 << 20));
    assert_eq!(RawClient::fetch_partition(r).records.len() as u32, s1);
    let (_, r) = answered_at_once(&mut c, &fetch_req(2, 1, s1 + s2 - 1, 1 << 20));
    assert_eq!(RawClient::fetch_partition(r).records.len() as u32, s1);
    let (_, r) = answered_at_once(&mut c, &fetch_req(2, 1, s1 + s2, 1 << 20));
    assert_eq!(RawClient::fetch_partition(r).records.len() as u32, s1 + s2);
    // The same for the partition's own max_bytes.
    let (_, r) = answered_at_once(&mut c, &fetch_req(0, 1, 1 << 20, s1 + s2 - 1));
    assert_eq!(RawClient::fetch_partition(r).records.len() as u32, s1);
}

#[test]
fn fetch_max_bytes_is_strict_once_the_response_holds_data() {
    let b = TestBroker::start();
    let mut c = b.client();
    assert_eq!(c.create_topic("two", 2, &[]), ErrorCode::None);
    let big = batch_of(&[&[7u8; 400][..]]);
    let small = batch_of(&[b"s"]);
    let (sb, ss) = (big.len() as u32, small.len() as u32);
    c.produce("two", 0, big, Acks::Leader);
    c.produce("two", 1, small, Acks::Leader);
    let req = |max_bytes: u32| {
        Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes,
            topics: vec![FetchTopic {
                name: "two".into(),
                partitions: (0..2)
                    .map(|partition| FetchPartition {
                        partition,
                        fetch_offset: 0,
                        max_bytes: 1 << 20,
                    })
                    .collect(),
            }],
        })
    };
    let sizes = |r: Response| -> Vec<(ErrorCode, u32)> {
        match r {
            Response::Fetch(f) => f.topics[0]
                .partitions
                .iter()
                .map(|p| (p.error, p.records.len() as u32))
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    };
    // Partition 0's batch exceeds max_bytes but comes whole (first data);
    // partition 1's does not fit in what is left: no records, no error.
    assert_eq!(
        sizes(c.call(&req(sb - 1))),
        vec![(ErrorCode::None, sb), (ErrorCode::None, 0)]
    );
    assert_eq!(
        sizes(c.call(&req(sb + ss))),
        vec![(ErrorCode::None, sb), (ErrorCode::None, ss)]
    );
}

#[test]
fn a_heartbeat_wait_above_the_session_timeout_is_capped_not_malformed() {
    let b = TestBroker::start();
    assert_eq!(b.client().create_topic("hb", 1, &[]), ErrorCode::None);
    let mut m = GroupClient::connect(b.addr, "capped");
    let session_ms = 1500;
    let j = m.join("gcap", &["hb"], session_ms);
    assert_eq!(j.error, ErrorCode::None);
    let owned = j.assignment.clone();
    assert_eq!(set_of(&owned).len(), 1);
    // Nothing new to tell: the heartbeat parks, for at most a third of the
    // session (the client's 20 s read timeout would fail this call if the
    // broker waited the asked 10 min).
    for _ in 0..3 {
        let r = m.heartbeat("gcap", &j.member_id, j.generation, &owned, 600_000);
        assert_eq!(r.error, ErrorCode::None, "{r:?}");
        assert_eq!(set_of(&r.assignment), set_of(&owned));
    }
    // Parked answers count as heartbeats: the member outlived its session.
    let d = m.describe("gcap");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, j.member_id);
}

fn join_as(c: &mut GroupClient, group: &str, member: &str, topics: &[&str]) -> JoinGroupResponse {
    match c.call(&Request::JoinGroup(JoinGroupRequest {
        group_id: group.into(),
        member_id: member.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        session_timeout_ms: 30_000,
        rebalance_timeout_ms: 0,
        metadata: Bytes::new(),
    })) {
        Response::JoinGroup(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_generation_grows_on_membership_and_target_changes_only() {
    let b = TestBroker::start();
    assert_eq!(b.client().create_topic("ga", 2, &[]), ErrorCode::None);
    assert_eq!(b.client().create_topic("gb", 1, &[]), ErrorCode::None);
    let mut a = GroupClient::connect(b.addr, "a");
    let ja = a.join("gen", &["ga"], 30_000);
    assert_eq!(ja.error, ErrorCode::None);
    let g0 = ja.generation;
    let id_a = ja.member_id.clone();
    let hb = |c: &mut GroupClient, id: &str, gen: u32, owned: &[TopicPartitions]| {
        let r = c.heartbeat("gen", id, gen, owned, 0);
        assert_eq!(r.error, ErrorCode::None, "{r:?}");
        r
    };
    // A heartbeat, and a rejoin with the same subscription: no change.
    let r = hb(&mut a, &id_a, g0, &ja.assignment);
    assert_eq!(r.generation, g0);
    let same = join_as(&mut a, "gen", &id_a, &["ga"]);
    assert_eq!((same.error, same.generation), (ErrorCode::None, g0));
    // A rejoin with another subscription changes the target.
    let more = join_as(&mut a, "gen", &id_a, &["ga", "gb"]);
    assert_eq!(more.generation, g0 + 1);
    let mut owned_a = more.assignment.clone();
    let r = hb(&mut a, &id_a, more.generation, &owned_a);
    assert_eq!(r.generation, g0 + 1);
    owned_a = r.assignment;
    assert_eq!(set_of(&owned_a).len(), 3);
    // A second member joins: +1. Revocations, their confirmation and the
    // grants that follow happen within that generation.
    let mut bm = GroupClient::connect(b.addr, "b");
    let jb = bm.join("gen", &["ga", "gb"], 30_000);
    let g2 = jb.generation;
    assert_eq!(g2, g0 + 2);
    let r = hb(&mut a, &id_a, g2, &owned_a);
    assert_eq!(r.generation, g2);
    assert!(!r.revoke.is_empty(), "{r:?}");
    let confirmed = r.assignment.clone();
    let r = hb(&mut a, &id_a, g2, &confirmed);
    assert_eq!(r.generation, g2);
    let rb = hb(&mut bm, &jb.member_id, g2, &jb.assignment);
    assert_eq!(rb.generation, g2);
    assert!(!rb.assignment.is_empty(), "the grant arrived: {rb:?}");
    // A topic the group subscribes to gets created (target change): +1.
    let more_topics = join_as(&mut a, "gen", &id_a, &["ga", "gb", "gc"]);
    assert_eq!(
        more_topics.generation, g2,
        "gc does not exist yet: same target"
    );
    assert_eq!(b.client().create_topic("gc", 1, &[]), ErrorCode::None);
    let r = hb(&mut a, &id_a, g2, &confirmed);
    assert_eq!(r.generation, g2 + 1);
    // A member leaves: +1.
    assert_eq!(bm.leave("gen", &jb.member_id), ErrorCode::None);
    let r = hb(&mut a, &id_a, g2 + 1, &r.assignment);
    assert_eq!(r.generation, g2 + 2);
}

#[test]
fn the_internal_offsets_topic_is_unknown_to_list_offsets_commits_and_groups() {
    let b = TestBroker::start();
    assert_eq!(b.client().create_topic("user", 1, &[]), ErrorCode::None);
    let mut g = GroupClient::connect(b.addr, "admin");
    // Make sure the offsets log exists and holds something.
    assert_eq!(
        g.commit("gi", "", 0, &[("user", 0, 3)]),
        vec![ErrorCode::None]
    );
    let mut c = b.client();
    assert_eq!(
        c.list_offset("__consumer_offsets", 0, OffsetSpec::Earliest)
            .0,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        g.commit("gi", "", 0, &[("__consumer_offsets", 0, 1), ("user", 0, 4)]),
        vec![ErrorCode::UnknownTopicOrPartition, ErrorCode::None]
    );
    let j = g.join("gsub", &["__consumer_offsets"], 10_000);
    assert_eq!(j.error, ErrorCode::None);
    assert!(j.assignment.is_empty());
    let r = g.heartbeat("gsub", &j.member_id, j.generation, &[], 0);
    assert_eq!(r.error, ErrorCode::None);
    assert!(r.assignment.is_empty(), "{r:?}");
}

#[test]
fn unknown_groups_get_the_documented_answers() {
    let b = TestBroker::start();
    assert_eq!(b.client().create_topic("ug", 1, &[]), ErrorCode::None);
    let mut g = GroupClient::connect(b.addr, "probe");
    let r = join_as(&mut g, "nope-join", "ghost-1", &["ug"]);
    assert_eq!(
        (r.error, r.member_id.as_str()),
        (ErrorCode::UnknownMemberId, "")
    );
    let r = g.heartbeat("nope-hb", "ghost-1", 1, &[], 0);
    assert_eq!(r.error, ErrorCode::UnknownMemberId);
    assert_eq!(g.leave("nope-leave", "ghost-1"), ErrorCode::UnknownMemberId);
    assert_eq!(
        g.commit("nope-commit", "ghost-1", 1, &[("ug", 0, 1)]),
        vec![ErrorCode::UnknownMemberId]
    );
    let f = g.fetch_offsets(
        "nope-fetch",
        &[TopicPartitions {
            topic: "ug".into(),
            partitions: vec![0],
        }],
    );
    assert_eq!(f.error, ErrorCode::None);
    assert_eq!(f.topics[0].partitions[0].offset, -1);
    let all = g.fetch_offsets("nope-fetch", &[]);
    assert_eq!((all.error, all.topics.len()), (ErrorCode::None, 0));
    assert_eq!(
        g.describe("nope-describe").error,
        ErrorCode::GroupIdNotFound
    );
    assert_eq!(g.delete("nope-delete"), ErrorCode::GroupIdNotFound);
    // None of those created a group ...
    assert!(g.list().is_empty(), "{:?}", g.list());
    // ... a standalone commit does.
    assert_eq!(
        g.commit("made", "", 0, &[("ug", 0, 1)]),
        vec![ErrorCode::None]
    );
    assert_eq!(g.describe("made").error, ErrorCode::None);
    let listed: Vec<String> = g.list().into_iter().map(|l| l.group_id).collect();
    assert_eq!(listed, vec!["made".to_string()]);
}

#[test]
fn a_commit_larger_than_one_offsets_batch_is_refused_whole() {
    let b = TestBroker::start();
    // 260 partitions with 65,000 bytes of metadata each: over 16 MiB together.
    let partitions = 260u32;
    assert_eq!(
        b.client().create_topic("wide", partitions, &[]),
        ErrorCode::None
    );
    let mut g = GroupClient::connect(b.addr, "big");
    let metadata = "m".repeat(65_000);
    let commit = |g: &mut GroupClient, metadata: &str| -> Vec<ErrorCode> {
        let parts = (0..partitions)
            .map(|partition| OffsetCommitPartition {
                partition,
                offset: 5,
                metadata: metadata.to_string(),
            })
            .collect();
        match g.call(&Request::OffsetCommit(OffsetCommitRequest {
            group_id: "huge".into(),
            member_id: String::new(),
            generation: 0,
            topics: vec![OffsetCommitTopic {
                name: "wide".into(),
                partitions: parts,
            }],
        })) {
            Response::OffsetCommit(r) => r.topics[0].partitions.iter().map(|p| p.error).collect(),
            other => panic!("unexpected {other:?}"),
        }
    };
    let errors = commit(&mut g, &metadata);
    assert_eq!(errors.len(), partitions as usize);
    assert!(
        errors.iter().all(|e| *e == ErrorCode::MessageTooLarge),
        "{errors:?}"
    );
    assert!(
        g.committed("huge").is_empty(),
        "part of a refused commit was stored"
    );
    // Within the limit the same commit is kept.
    let errors = commit(&mut g, "small");
    assert!(errors.iter().all(|e| *e == ErrorCode::None), "{errors:?}");
    assert_eq!(g.committed("huge").len(), partitions as usize);
}
