//! How many heartbeat round trips a group of 10 members on 100 partitions
//! needs from a join / clean leave / crash to a stable assignment.
//!
//! Two client models are measured (numbers are printed; run with
//! `cargo test -p sluice-group --test convergence -- --nocapture`):
//! - **rounds**: every member heartbeats once per round (in member-id order,
//!   or adversarially with the joiner first), confirming revokes it was told
//!   about in its previous response. Wall time ≈ rounds × heartbeat interval.
//! - **waves**: long-poll; only members the coordinator names in
//!   `take_notifications()` (plus members holding an unconfirmed revoke)
//!   heartbeat, all at once. Wall time ≈ waves × network round trip.
//!
//! Only logical properties are asserted (bounds on rounds/waves, who was
//! interrupted); no timing.

mod common;

use std::collections::BTreeSet;

use common::*;
use sluice_group::Coordinator;

const G: &str = "g";
const SESSION: u64 = 10_000;

fn stable_group() -> (
    Coordinator,
    Vec<Client>,
    std::collections::BTreeMap<String, u32>,
) {
    let cat = catalog(&[("t", 100)]);
    let mut coord = coordinator();
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(join(
            &mut coord,
            0,
            G,
            &format!("c{i}"),
            &["t"],
            SESSION,
            &cat,
        ));
    }
    settle(&mut coord, 0, G, &mut clients, &cat, 10).expect("initial settle");
    for c in &clients {
        assert_eq!(c.consuming.len(), 10);
    }
    let _ = coord.take_notifications();
    (coord, clients, cat)
}

/// Long-poll waves until stable.
fn waves(
    coord: &mut Coordinator,
    clients: &mut [Client],
    now: u64,
    cat: &std::collections::BTreeMap<String, u32>,
) -> (usize, BTreeSet<String>) {
    let mut touched = BTreeSet::new();
    let mut active: BTreeSet<String> = coord
        .take_notifications()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    for wave in 1..=20 {
        if coord.is_stable(G) {
            return (wave - 1, touched);
        }
        for c in clients.iter_mut().filter(|c| active.contains(&c.id)) {
            c.heartbeat(coord, now, G, true, cat).expect("heartbeat");
            touched.insert(c.id.clone());
        }
        let refs: Vec<&Client> = clients.iter().collect();
        check_no_double_ownership(coord, G, &refs, &format!("wave {wave}"));
        active = coord
            .take_notifications()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        active.extend(
            clients
                .iter()
                .filter(|c| !c.to_revoke.is_empty())
                .map(|c| c.id.clone()),
        );
    }
    panic!("not stable after 20 waves");
}

fn check_final(coord: &Coordinator, clients: &[Client], n: usize) {
    let refs: Vec<&Client> = clients.iter().collect();
    check_no_double_ownership(coord, G, &refs, "final");
    let total: usize = clients.iter().map(|c| c.consuming.len()).sum();
    assert_eq!(total, 100);
    for c in clients {
        assert!(c.consuming.len() == 100 / n || c.consuming.len() == 100 / n + 1);
    }
}

#[test]
fn join_ten_members_hundred_partitions() {
    // Rounds, member-id order.
    let (mut coord, mut clients, cat) = stable_group();
    clients.push(join(&mut coord, 1, G, "new", &["t"], SESSION, &cat));
    let rounds = settle(&mut coord, 2, G, &mut clients, &cat, 10).expect("stable");
    check_final(&coord, &clients, 11);

    // Rounds, adversarial order: the joiner heartbeats before everyone else.
    let (mut coord, mut clients, cat) = stable_group();
    clients.insert(0, join(&mut coord, 1, G, "new", &["t"], SESSION, &cat));
    let rounds_worst = settle(&mut coord, 2, G, &mut clients, &cat, 10).expect("stable");
    check_final(&coord, &clients, 11);

    // Long-poll waves.
    let (mut coord, mut clients, cat) = stable_group();
    let before: Vec<BTreeSet<_>> = clients.iter().map(|c| c.consuming.clone()).collect();
    clients.push(join(&mut coord, 1, G, "new", &["t"], SESSION, &cat));
    let (w, touched) = waves(&mut coord, &mut clients, 2, &cat);
    check_final(&coord, &clients, 11);
    // Sticky: old members only lost partitions (9 of them lose one), and the
    // one that keeps all ten was never woken.
    let mut unchanged = 0;
    for (c, b) in clients.iter().zip(&before) {
        assert!(c.consuming.is_subset(b));
        if &c.consuming == b {
            unchanged += 1;
            assert!(!touched.contains(&c.id), "{} woken without a change", c.id);
        }
    }
    assert_eq!(unchanged, 1);
    eprintln!(
        "join (10 -> 11 members, 100 partitions): {rounds} heartbeat rounds (id order), \
         {rounds_worst} (joiner first), {w} long-poll waves after the join round trip; \
         {} members interrupted",
        touched.len() - 1
    );
    assert!(
        rounds <= 3 && rounds_worst <= 3,
        "rounds {rounds}/{rounds_worst}"
    );
    assert_eq!(w, 3);
}

#[test]
fn clean_leave_ten_members_hundred_partitions() {
    let (mut coord, mut clients, cat) = stable_group();
    let gone = clients.remove(4);
    coord.leave(1, G, &gone.id, &cat).unwrap();
    let rounds = settle(&mut coord, 2, G, &mut clients, &cat, 10).expect("stable");
    check_final(&coord, &clients, 9);

    let (mut coord, mut clients, cat) = stable_group();
    let gone = clients.remove(4);
    coord.leave(1, G, &gone.id, &cat).unwrap();
    let (w, touched) = waves(&mut coord, &mut clients, 2, &cat);
    check_final(&coord, &clients, 9);
    eprintln!(
        "clean leave (10 -> 9 members, 100 partitions): {rounds} heartbeat round(s), {w} long-poll wave(s); \
         {} members woken",
        touched.len()
    );
    assert_eq!(rounds, 1);
    assert_eq!(w, 1);
}

#[test]
fn crash_ten_members_hundred_partitions() {
    let (mut coord, mut clients, cat) = stable_group();
    let crashed = clients.remove(7);
    // Survivors heartbeat every 3 s; nothing moves before the session timeout.
    for now in [3_000, 6_000, 9_000] {
        assert!(coord.tick(now, &cat).is_empty());
        for c in clients.iter_mut() {
            let v = c.heartbeat(&mut coord, now, G, true, &cat).unwrap();
            assert!(v.revoke.is_empty() && v.pending.is_empty());
        }
    }
    let expired = coord.tick(SESSION, &cat);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].member_id, crashed.id);
    let (w, _) = waves(&mut coord, &mut clients, SESSION + 1, &cat);
    check_final(&coord, &clients, 9);
    eprintln!(
        "crash (10 -> 9 members, 100 partitions): expired by tick at exactly the session timeout, \
         then {w} long-poll wave(s) (or 1 heartbeat round)"
    );
    assert_eq!(w, 1);
}
