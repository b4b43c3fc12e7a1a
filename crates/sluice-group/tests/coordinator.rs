//! Explicit coordinator scenarios (pure state machine; no sockets, no clock).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use sluice_group::{
    Assignment, AssignmentMode, Committer, Coordinator, CoordinatorConfig, ExpiryReason,
    GroupError, GroupState, JoinRequest,
};
use sluice_protocol::ErrorCode;

const G: &str = "g";
const SESSION: u64 = 1_000;

/// Joins group [`G`] subscribed to topic `t` with the default [`SESSION`].
fn join_t(coord: &mut Coordinator, now: u64, name: &str, cat: &BTreeMap<String, u32>) -> Client {
    join(coord, now, G, name, &["t"], SESSION, cat)
}

#[test]
fn three_members_six_partitions_balanced() {
    let cat = catalog(&[("t", 6)]);
    let mut coord = coordinator();
    let mut clients = vec![
        join_t(&mut coord, 0, "a", &cat),
        join_t(&mut coord, 0, "b", &cat),
        join_t(&mut coord, 0, "c", &cat),
    ];
    let rounds = settle(&mut coord, 10, G, &mut clients, &cat, 10).expect("stable");
    assert!(rounds <= 3, "took {rounds} rounds");
    let mut all = BTreeSet::new();
    for c in &clients {
        assert_eq!(c.consuming.len(), 2, "{} has {:?}", c.id, c.consuming);
        all.extend(c.consuming.iter().cloned());
    }
    assert_eq!(all.len(), 6);
    let d = coord.describe(G).unwrap();
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.members.len(), 3);
    assert_eq!(d.leader.as_deref(), Some(clients[0].id.as_str()));
}

#[test]
fn first_member_gets_everything_immediately() {
    let cat = catalog(&[("t", 4)]);
    let mut coord = coordinator();
    let a = join_t(&mut coord, 0, "a", &cat);
    assert_eq!(a.consuming.len(), 4);
    assert_eq!(coord.generation(G), Some(1));
}

#[test]
fn member_crash_moves_partitions_after_session_timeout() {
    let cat = catalog(&[("t", 6)]);
    let mut coord = coordinator();
    let mut clients = vec![
        join_t(&mut coord, 0, "a", &cat),
        join_t(&mut coord, 0, "b", &cat),
        join_t(&mut coord, 0, "c", &cat),
    ];
    settle(&mut coord, 0, G, &mut clients, &cat, 10).expect("stable");
    let crashed = clients.pop().unwrap();
    let gen_before = coord.generation(G).unwrap();

    // Survivors keep heartbeating; c is silent. Before the timeout nothing moves.
    for now in [300, 600, 900] {
        assert!(coord.tick(now, &cat).is_empty());
        for c in clients.iter_mut() {
            let v = c.heartbeat(&mut coord, now, G, true, &cat).unwrap();
            assert!(v.revoke.is_empty() && v.pending.is_empty());
            assert_eq!(c.consuming.len(), 2);
        }
        let owners = coord.owners(G);
        assert!(crashed
            .consuming
            .iter()
            .all(|tp| owners[tp].contains(&crashed.id)));
    }
    let expired = coord.tick(1_000, &cat);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].member_id, crashed.id);
    assert_eq!(expired[0].reason, ExpiryReason::SessionTimeout);
    assert!(coord.generation(G).unwrap() > gen_before);
    // Freed partitions are granted at once: one heartbeat each.
    let rounds = settle(&mut coord, 1_001, G, &mut clients, &cat, 10).expect("stable");
    assert_eq!(rounds, 1);
    for c in &clients {
        assert_eq!(c.consuming.len(), 3);
    }
    // The crashed member is fenced.
    let err = coord
        .check_commit(
            G,
            Committer::Member {
                member_id: &crashed.id,
                generation: crashed.generation,
            },
            &[crashed.consuming.iter().next().unwrap().clone()],
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
}

#[test]
fn join_moves_partitions_only_after_revoke_confirmation() {
    let cat = catalog(&[("t", 4), ("other", 2)]);
    let mut coord = coordinator();
    let mut a = join_t(&mut coord, 0, "a", &cat);
    let mut bystander = join(&mut coord, 0, G, "x", &["other"], SESSION, &cat);
    assert_eq!(a.consuming.len(), 4);
    assert_eq!(bystander.consuming.len(), 2);
    let _ = coord.take_notifications();

    let mut b = join_t(&mut coord, 10, "b", &cat);
    // b is promised two partitions but owns none: a still owns all four.
    assert!(b.consuming.is_empty());
    assert_eq!(b.pending.len(), 2);
    check_no_double_ownership(&coord, G, &[&a, &b, &bystander], "after join");
    // a must be told (long-poll wake-up); the bystander must not be interrupted.
    let notified: BTreeSet<String> = coord
        .take_notifications()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert!(notified.contains(&a.id));
    assert!(!notified.contains(&bystander.id));

    // a heartbeats without confirming: it is told to revoke two, still owns them.
    let v = a.heartbeat(&mut coord, 20, G, false, &cat).unwrap();
    assert_eq!(v.revoke.len(), 2);
    assert_eq!(v.assignment.len(), 2);
    let moving: BTreeSet<_> = v.revoke.iter().cloned().collect();
    assert_eq!(moving, b.pending);
    // b asks again: still pending, nothing granted.
    let v = b.heartbeat(&mut coord, 30, G, true, &cat).unwrap();
    assert!(v.assignment.is_empty());
    assert_eq!(v.pending.len(), 2);
    check_no_double_ownership(&coord, G, &[&a, &b, &bystander], "before confirm");
    // a may still commit the partitions it is revoking (commit, then confirm).
    coord
        .check_commit(
            G,
            Committer::Member {
                member_id: &a.id,
                generation: a.generation,
            },
            &moving.iter().cloned().collect::<Vec<_>>(),
        )
        .expect("revoking owner may commit");

    // a confirms; now b gets them.
    let v = a.heartbeat(&mut coord, 40, G, true, &cat).unwrap();
    assert!(v.revoke.is_empty());
    assert_eq!(a.consuming.len(), 2);
    let notified: BTreeSet<String> = coord
        .take_notifications()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert!(notified.contains(&b.id), "b must be woken for its grant");
    let v = b.heartbeat(&mut coord, 50, G, true, &cat).unwrap();
    assert_eq!(v.assignment.len(), 2);
    assert!(v.pending.is_empty());
    check_no_double_ownership(&coord, G, &[&a, &b, &bystander], "after grant");
    assert!(a.consuming.is_disjoint(&b.consuming));

    // The bystander's view never changed.
    let v = bystander.heartbeat(&mut coord, 60, G, true, &cat).unwrap();
    assert_eq!(v.assignment.len(), 2);
    assert!(v.revoke.is_empty());
    assert!(coord.is_stable(G));
}

#[test]
fn leave_frees_partitions_immediately() {
    let cat = catalog(&[("t", 6)]);
    let mut coord = coordinator();
    let mut clients = vec![
        join_t(&mut coord, 0, "a", &cat),
        join_t(&mut coord, 0, "b", &cat),
    ];
    settle(&mut coord, 0, G, &mut clients, &cat, 10).expect("stable");
    let b = clients.pop().unwrap();
    coord.leave(5, G, &b.id, &cat).unwrap();
    assert_eq!(
        coord
            .owners(G)
            .values()
            .filter(|s| s.contains(&b.id))
            .count(),
        0
    );
    let v = clients[0].heartbeat(&mut coord, 6, G, true, &cat).unwrap();
    assert_eq!(v.assignment.len(), 6);
    assert!(coord.is_stable(G));
    let err = coord.leave(7, G, &b.id, &cat).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
    // Last member leaves: group is Empty, generation kept.
    let gen = coord.generation(G).unwrap();
    coord.leave(8, G, &clients[0].id, &cat).unwrap();
    assert_eq!(coord.describe(G).unwrap().state, GroupState::Empty);
    assert!(coord.generation(G).unwrap() > gen);
}

#[test]
fn stale_generation_commit_is_rejected() {
    let cat = catalog(&[("t", 2)]);
    let mut coord = coordinator();
    let mut a = join_t(&mut coord, 0, "a", &cat);
    let gen_a = a.generation;
    let p0 = tp("t", 0);
    let p1 = tp("t", 1);
    let commit =
        |coord: &Coordinator, id: &str, generation: u32, p: &sluice_group::TopicPartition| {
            coord.check_commit(
                G,
                Committer::Member {
                    member_id: id,
                    generation,
                },
                std::slice::from_ref(p),
            )
        };
    commit(&coord, &a.id, gen_a, &p0).unwrap();
    commit(&coord, &a.id, gen_a, &p1).unwrap();

    let mut b = join_t(&mut coord, 10, "b", &cat);
    let mut clients = vec![a.clone(), b.clone()];
    settle(&mut coord, 20, G, &mut clients, &cat, 10).expect("stable");
    a = clients[0].clone();
    b = clients[1].clone();
    let moved = b.consuming.iter().next().unwrap().clone();
    // a's delayed commit for the partition it gave away, with its old generation.
    let err = commit(&coord, &a.id, gen_a, &moved).unwrap_err();
    assert!(matches!(err, GroupError::IllegalGeneration { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::IllegalGeneration);
    // With the current generation it is simply not the owner.
    let err = commit(&coord, &a.id, a.generation, &moved).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotPartitionOwner);
    // b cannot commit with a generation older than its grant.
    let err = commit(&coord, &b.id, gen_a, &moved).unwrap_err();
    assert_eq!(err.code(), ErrorCode::IllegalGeneration);
    commit(&coord, &b.id, b.generation, &moved).unwrap();
    // a keeps committing what it kept, even with its old generation (not interrupted).
    let kept = a.consuming.iter().next().unwrap().clone();
    commit(&coord, &a.id, gen_a, &kept).unwrap();
    // A generation from the future is illegal.
    let err = commit(&coord, &b.id, b.generation + 5, &moved).unwrap_err();
    assert_eq!(err.code(), ErrorCode::IllegalGeneration);
    // Standalone commits are refused while the group has members.
    let err = coord
        .check_commit(G, Committer::Standalone, std::slice::from_ref(&moved))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
    coord
        .check_commit("nobody", Committer::Standalone, &[moved])
        .unwrap();
}

#[test]
fn partition_that_comes_back_fences_older_commits() {
    let cat = catalog(&[("t", 2)]);
    let mut coord = coordinator();
    let a = join_t(&mut coord, 0, "a", &cat);
    let old_gen = a.generation;
    let b = join_t(&mut coord, 1, "b", &cat);
    let mut clients = vec![a, b];
    settle(&mut coord, 2, G, &mut clients, &cat, 10).expect("stable");
    let b = clients.pop().unwrap();
    let moved = b.consuming.iter().next().unwrap().clone();
    coord.leave(3, G, &b.id, &cat).unwrap();
    settle(&mut coord, 4, G, &mut clients, &cat, 10).expect("stable");
    assert!(clients[0].consuming.contains(&moved));
    // a owns it again, but a commit made before it went away must not land.
    let err = coord
        .check_commit(
            G,
            Committer::Member {
                member_id: &clients[0].id,
                generation: old_gen,
            },
            std::slice::from_ref(&moved),
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::IllegalGeneration);
    coord
        .check_commit(
            G,
            Committer::Member {
                member_id: &clients[0].id,
                generation: clients[0].generation,
            },
            &[moved],
        )
        .unwrap();
}

#[test]
fn member_that_never_confirms_is_fenced_after_rebalance_timeout() {
    let cat = catalog(&[("t", 4)]);
    let mut coord = coordinator();
    let view = coord
        .join(
            0,
            G,
            JoinRequest {
                client_id: "slow".into(),
                topics: vec!["t".into()],
                session_timeout_ms: Some(10_000),
                rebalance_timeout_ms: Some(500),
                ..JoinRequest::default()
            },
            &cat,
        )
        .unwrap();
    let mut slow = Client::from_join(&view);
    let mut b = join(&mut coord, 100, G, "b", &["t"], 10_000, &cat);
    for now in [200, 400] {
        slow.heartbeat(&mut coord, now, G, false, &cat).unwrap();
        b.heartbeat(&mut coord, now, G, true, &cat).unwrap();
        assert!(coord.tick(now, &cat).is_empty());
    }
    assert!(b.consuming.is_empty());
    let expired = coord.tick(600, &cat);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].reason, ExpiryReason::RebalanceTimeout);
    // Fenced: its heartbeats and commits are refused from now on...
    let err = slow.heartbeat(&mut coord, 602, G, true, &cat).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
    let owned: Vec<_> = slow.consuming.iter().cloned().collect();
    let err = coord
        .check_commit(
            G,
            Committer::Member {
                member_id: &slow.id,
                generation: slow.generation,
            },
            &owned,
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
    // ...and b is now targeted for all four, but gets only the two nobody owns:
    // the slow member may consume its own two until its session (from its last
    // successful heartbeat at 400) runs out.
    let v = b.heartbeat(&mut coord, 603, G, true, &cat).unwrap();
    assert_eq!(v.assignment.len() + v.pending.len(), 4);
    check_no_double_ownership(&coord, G, &[&slow, &b], "after fence");
    assert!(coord.tick(10_399, &cat).is_empty());
    b.heartbeat(&mut coord, 10_399, G, true, &cat).unwrap();
    let expired = coord.tick(10_400, &cat);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].reason, ExpiryReason::SessionTimeout);
    let v = b.heartbeat(&mut coord, 10_401, G, true, &cat).unwrap();
    assert_eq!(v.assignment.len(), 4);
}

#[test]
fn claiming_unowned_partition_is_illegal_generation() {
    let cat = catalog(&[("t", 2)]);
    let mut coord = coordinator();
    let a = join_t(&mut coord, 0, "a", &cat);
    let b = join_t(&mut coord, 0, "b", &cat);
    let a_owned: Vec<_> = coord
        .owners(G)
        .into_iter()
        .filter(|(_, s)| s.contains(&a.id))
        .map(|(tp, _)| tp)
        .collect();
    let err = coord
        .heartbeat(1, G, &b.id, b.generation, Some(&a_owned), &cat)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::IllegalGeneration);
    check_no_double_ownership(&coord, G, &[&a], "after bogus claim");
}

#[test]
fn topic_created_later_is_picked_up() {
    let mut cat = catalog(&[]);
    let mut coord = coordinator();
    let mut a = join(&mut coord, 0, G, "a", &["late"], SESSION, &cat);
    assert!(a.consuming.is_empty());
    cat.insert("late".into(), 3);
    let gen = coord.generation(G).unwrap();
    coord.tick(10, &cat);
    assert!(coord.generation(G).unwrap() > gen);
    let v = a.heartbeat(&mut coord, 20, G, true, &cat).unwrap();
    assert_eq!(v.assignment.len(), 3);
    // Partitions added: picked up on heartbeat too.
    cat.insert("late".into(), 5);
    let v = a.heartbeat(&mut coord, 30, G, true, &cat).unwrap();
    assert_eq!(v.assignment.len(), 5);
}

#[test]
fn rejoin_updates_subscription_and_metadata() {
    let cat = catalog(&[("t", 2), ("u", 2)]);
    let mut coord = coordinator();
    let mut a = join_t(&mut coord, 0, "a", &cat);
    let view = coord
        .join(
            1,
            G,
            JoinRequest {
                member_id: Some(a.id.clone()),
                client_id: "a".into(),
                topics: vec!["u".into()],
                session_timeout_ms: Some(SESSION),
                metadata: vec![1, 2, 3],
                ..JoinRequest::default()
            },
            &cat,
        )
        .unwrap();
    assert_eq!(view.member_id, a.id);
    assert_eq!(view.revoke.len(), 2); // t-0, t-1 must go before u-* can come
    a.apply(&view);
    let v = a.heartbeat(&mut coord, 2, G, true, &cat).unwrap();
    assert_eq!(v.assignment, vec![tp("u", 0), tp("u", 1)]);
    let d = coord.describe(G).unwrap();
    assert_eq!(d.members[0].metadata, vec![1, 2, 3]);
    assert_eq!(d.members[0].topics, vec!["u".to_string()]);
    let err = coord
        .join(
            3,
            G,
            JoinRequest {
                member_id: Some("ghost".into()),
                ..JoinRequest::default()
            },
            &cat,
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
}

#[test]
fn invalid_requests() {
    let cat = catalog(&[("t", 2)]);
    let mut coord = coordinator();
    let err = coord
        .join(
            0,
            "",
            JoinRequest {
                topics: vec!["t".into()],
                ..JoinRequest::default()
            },
            &cat,
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidGroupId);
    let err = coord
        .join(
            0,
            G,
            JoinRequest {
                session_timeout_ms: Some(1),
                ..JoinRequest::default()
            },
            &cat,
        )
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidSessionTimeout);
    let err = coord.heartbeat(0, G, "nobody", 0, None, &cat).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
    let a = join_t(&mut coord, 0, "a", &cat);
    let err = coord
        .heartbeat(0, G, &a.id, a.generation + 1, None, &cat)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::IllegalGeneration);
    let err = coord.delete_group(G).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NonEmptyGroup);
    let err = coord.delete_group("missing").unwrap_err();
    assert_eq!(err.code(), ErrorCode::GroupIdNotFound);
}

#[test]
fn member_ids_differ_across_instances() {
    let cat = catalog(&[("t", 1)]);
    let mut one = Coordinator::new(CoordinatorConfig::default(), 1);
    let mut two = Coordinator::new(CoordinatorConfig::default(), 2);
    let a = join(&mut one, 0, G, "c", &["t"], SESSION, &cat);
    let b = join(&mut two, 0, G, "c", &["t"], SESSION, &cat);
    assert_ne!(a.id, b.id);
    // After a "restart" the old id is unknown.
    let err = two.heartbeat(1, G, &a.id, 1, None, &cat).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UnknownMemberId);
}

#[test]
fn leader_supplied_assignment_replaces_server_side() {
    let cat = catalog(&[("t", 4)]);
    let mut coord = coordinator();
    let mut a = join_t(&mut coord, 0, "a", &cat);
    let mut b = join_t(&mut coord, 0, "b", &cat);
    let leader = coord.describe(G).unwrap().leader.unwrap();
    assert_eq!(leader, a.id);
    // Leader gives b three partitions, itself one.
    let mut plan = Assignment::new();
    plan.insert(a.id.clone(), [tp("t", 0)].into_iter().collect());
    plan.insert(
        b.id.clone(),
        [tp("t", 1), tp("t", 2), tp("t", 3)].into_iter().collect(),
    );
    let generation = coord.generation(G).unwrap();
    // Wrong generation, unknown member, duplicate partition: rejected.
    assert_eq!(
        coord
            .install_assignment(1, G, &leader, generation + 1, plan.clone())
            .unwrap_err()
            .code(),
        ErrorCode::IllegalGeneration
    );
    let mut bad = plan.clone();
    bad.insert("ghost".into(), BTreeSet::new());
    assert_eq!(
        coord
            .install_assignment(1, G, &leader, generation, bad)
            .unwrap_err()
            .code(),
        ErrorCode::InvalidRequest
    );
    let mut dup = plan.clone();
    dup.get_mut(&a.id).unwrap().insert(tp("t", 1));
    assert!(coord
        .install_assignment(1, G, &leader, generation, dup)
        .is_err());

    let new_gen = coord
        .install_assignment(1, G, &leader, generation, plan.clone())
        .unwrap();
    assert!(new_gen > generation);
    assert_eq!(coord.describe(G).unwrap().mode, AssignmentMode::Leader);
    let mut clients = vec![a.clone(), b.clone()];
    settle(&mut coord, 2, G, &mut clients, &cat, 10).expect("stable");
    a = clients[0].clone();
    b = clients[1].clone();
    assert_eq!(a.consuming.len(), 1);
    assert_eq!(b.consuming.len(), 3);

    // A join in leader mode: heartbeats answer RebalanceInProgress until the leader installs.
    let c = join_in_leader_mode(&mut coord, &cat);
    let err = a.heartbeat(&mut coord, 4, G, true, &cat).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RebalanceInProgress);
    assert_eq!(
        coord.describe(G).unwrap().state,
        GroupState::AwaitingAssignment
    );
    let generation = coord.generation(G).unwrap();
    let mut plan2 = plan;
    plan2.get_mut(&b.id).unwrap().remove(&tp("t", 3));
    plan2.insert(c.clone(), [tp("t", 3)].into_iter().collect());
    coord
        .install_assignment(5, G, &leader, generation, plan2)
        .unwrap();
    let v = b.heartbeat(&mut coord, 6, G, true, &cat).unwrap();
    assert_eq!(v.revoke, vec![tp("t", 3)]);
    check_no_double_ownership(&coord, G, &[&a, &b], "leader mode");
}

fn join_in_leader_mode(coord: &mut Coordinator, cat: &BTreeMap<String, u32>) -> String {
    let view = coord
        .join(
            3,
            G,
            JoinRequest {
                client_id: "c".into(),
                topics: vec!["t".into()],
                session_timeout_ms: Some(SESSION),
                ..JoinRequest::default()
            },
            cat,
        )
        .unwrap();
    assert!(view.assignment.is_empty() && view.pending.is_empty());
    view.member_id
}

#[test]
fn list_and_describe() {
    let cat = catalog(&[("t", 3)]);
    let mut coord = coordinator();
    let _a = join(&mut coord, 0, "g1", "a", &["t"], SESSION, &cat);
    let _b = join(&mut coord, 0, "g2", "b", &["t"], SESSION, &cat);
    let list = coord.list_groups();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|l| l.members == 1));
    assert_eq!(coord.describe("g1").unwrap().members[0].assignment.len(), 3);
    assert!(coord.describe("nope").is_none());
    assert_eq!(coord.next_deadline_ms(), Some(SESSION));
}
