//! Seeded simulation of many clients against the coordinator, checking after
//! every step that no partition is allowed to two members, that no client
//! consumes a partition it is not allowed, that generations only grow, and
//! that once things settle every subscribed partition is assigned exactly once
//! and counts are balanced. A failing run prints its seed; rerun one seed with
//! `SLUICE_SIM_SEED=<seed> cargo test -p sluice-group --test simulation`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use sluice_group::{Committer, GroupError, TopicPartition};

/// splitmix64: tiny, seeded, good enough to pick steps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const GROUPS: [&str; 2] = ["g0", "g1"];
const TOPICS: [&str; 3] = ["t0", "t1", "t2"];

struct SimMember {
    client: Client,
    group: &'static str,
    topics: Vec<String>,
    crashed: bool,
    /// Time of the last successful heartbeat/join: a client that has not
    /// heard from the coordinator for a session timeout stops consuming on its
    /// own (it may already have been expired), as Kafka clients do.
    last_ok: u64,
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut cat = catalog(&[("t0", 3), ("t1", 8), ("t2", 5)]);
    let mut coord = coordinator();
    let mut members: Vec<SimMember> = Vec::new();
    let mut now: u64 = 0;
    let mut last_gen: BTreeMap<&str, u32> = BTreeMap::new();
    let session = 1_000;

    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        let alive: Vec<usize> = (0..members.len())
            .filter(|i| !members[*i].crashed)
            .collect();
        match rng.below(100) {
            0..=14 => {
                // Join with a random non-empty subscription.
                let group = GROUPS[rng.below(GROUPS.len() as u64) as usize];
                let mut topics: Vec<&str> =
                    TOPICS.iter().copied().filter(|_| rng.chance(50)).collect();
                if topics.is_empty() {
                    topics.push(TOPICS[rng.below(3) as usize]);
                }
                let client = join(&mut coord, now, group, "m", &topics, session, &cat);
                members.push(SimMember {
                    client,
                    group,
                    topics: topics.iter().map(|t| t.to_string()).collect(),
                    crashed: false,
                    last_ok: now,
                });
            }
            15..=21 if !alive.is_empty() => {
                // Clean leave (the client stops consuming first).
                let i = alive[rng.below(alive.len() as u64) as usize];
                let m = &mut members[i];
                let r = coord.leave(now, m.group, &m.client.id, &cat);
                assert!(
                    r.is_ok() || matches!(r, Err(GroupError::UnknownMemberId { .. })),
                    "{ctx}: {r:?}"
                );
                members.remove(i);
            }
            22..=26 if !alive.is_empty() => {
                // Crash: the member just stops heartbeating.
                let i = alive[rng.below(alive.len() as u64) as usize];
                members[i].crashed = true;
                members[i].client.consuming.clear();
            }
            27..=76 if !alive.is_empty() => {
                // Heartbeat; most of the time confirm outstanding revokes.
                let i = alive[rng.below(alive.len() as u64) as usize];
                let confirm = rng.chance(75);
                let m = &mut members[i];
                match m.client.heartbeat(&mut coord, now, m.group, confirm, &cat) {
                    Ok(_) => m.last_ok = now,
                    Err(GroupError::UnknownMemberId { .. }) => {
                        // Expired while alive (slow): drop everything and rejoin.
                        let topics: Vec<&str> = m.topics.iter().map(String::as_str).collect();
                        m.client = join(&mut coord, now, m.group, "m", &topics, session, &cat);
                        m.last_ok = now;
                    }
                    Err(e) => panic!("{ctx}: heartbeat failed: {e}"),
                }
            }
            77..=84 if !alive.is_empty() => {
                // Commit everything the client consumes, with its generation: must pass.
                let i = alive[rng.below(alive.len() as u64) as usize];
                let m = &members[i];
                let parts: Vec<TopicPartition> = m.client.consuming.iter().cloned().collect();
                let r = coord.check_commit(
                    m.group,
                    Committer::Member {
                        member_id: &m.client.id,
                        generation: m.client.generation,
                    },
                    &parts,
                );
                // Only legitimate failure: the member was expired meanwhile.
                if let Err(e) = r {
                    assert!(
                        matches!(e, GroupError::UnknownMemberId { .. }),
                        "{ctx}: commit of owned partitions failed: {e}"
                    );
                }
            }
            85..=86 => {
                // A topic grows.
                let t = TOPICS[rng.below(3) as usize];
                if let Some(n) = cat.get_mut(t) {
                    if *n < 12 {
                        *n += 1;
                    }
                }
            }
            _ => {
                now += rng.below(600);
                coord.tick(now, &cat);
            }
        }

        for m in members.iter_mut() {
            if now >= m.last_ok + session {
                m.client.consuming.clear();
            }
        }
        for g in GROUPS {
            let clients: Vec<&Client> = members
                .iter()
                .filter(|m| m.group == g && !m.crashed)
                .map(|m| &m.client)
                .collect();
            check_no_double_ownership(&coord, g, &clients, &ctx);
            if let Some(gen) = coord.generation(g) {
                let last = last_gen.entry(g).or_insert(0);
                assert!(
                    gen >= *last,
                    "{ctx}: generation of {g} went back {last} -> {gen}"
                );
                *last = gen;
            }
        }
    }

    // Settle: crashed members expire, live ones heartbeat and confirm.
    now += 2 * session;
    coord.tick(now, &cat);
    for g in GROUPS {
        let mut clients: Vec<Client> = members
            .iter()
            .filter(|m| m.group == g && !m.crashed)
            .map(|m| m.client.clone())
            .collect();
        if clients.is_empty() {
            continue;
        }
        // Members alive but silent through the jump were expired too: rejoin them.
        let mut rejoined = Vec::new();
        for (c, m) in clients
            .iter_mut()
            .zip(members.iter().filter(|m| m.group == g && !m.crashed))
        {
            if c.heartbeat(&mut coord, now, g, true, &cat).is_err() {
                let topics: Vec<&str> = m.topics.iter().map(String::as_str).collect();
                *c = join(&mut coord, now, g, "m", &topics, session, &cat);
                rejoined.push(c.id.clone());
            }
        }
        let rounds = settle(&mut coord, now, g, &mut clients, &cat, 10);
        assert!(rounds.is_some(), "seed {seed}: group {g} did not settle");
        // Every partition of a subscribed topic is owned by exactly one live client.
        let subscribed: BTreeSet<&String> = members
            .iter()
            .filter(|m| m.group == g && !m.crashed)
            .flat_map(|m| m.topics.iter())
            .collect();
        let owners = coord.owners(g);
        let mut consumed: BTreeMap<TopicPartition, usize> = BTreeMap::new();
        for c in &clients {
            for tp in &c.consuming {
                *consumed.entry(tp.clone()).or_default() += 1;
            }
        }
        for t in subscribed {
            for p in 0..cat[t.as_str()] {
                let tp = TopicPartition::new(t.clone(), p);
                assert_eq!(
                    owners.get(&tp).map(BTreeSet::len),
                    Some(1),
                    "seed {seed}: {g} {tp} owners"
                );
                assert_eq!(
                    consumed.get(&tp),
                    Some(&1),
                    "seed {seed}: {g} {tp} consumed"
                );
            }
        }
        let _ = rejoined;
        // Balanced: nothing could move to a member holding two fewer partitions.
        let live: Vec<(&Client, &Vec<String>)> = members
            .iter()
            .filter(|m| m.group == g && !m.crashed)
            .map(|m| &m.topics)
            .zip(clients.iter())
            .map(|(t, c)| (c, t))
            .collect();
        for (a, _) in &live {
            for (b, b_topics) in &live {
                if a.consuming.len() >= b.consuming.len() + 2 {
                    assert!(
                        a.consuming.iter().all(|tp| !b_topics.contains(&tp.topic)),
                        "seed {seed}: {g} unbalanced: {} has {}, {} has {}",
                        a.id,
                        a.consuming.len(),
                        b.id,
                        b.consuming.len()
                    );
                }
            }
        }
    }
}

/// `SLUICE_SIM_SEED=<seed>` reruns one seed; `SLUICE_SIM_SEEDS=<n>` runs n seeds (soak).
fn seeds() -> Vec<u64> {
    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    if let Some(seed) = env("SLUICE_SIM_SEED") {
        return vec![seed];
    }
    let n = env("SLUICE_SIM_SEEDS").unwrap_or(24);
    (1..=n)
        .map(|i| i.wrapping_mul(0x1234_5678_9abc_def1))
        .collect()
}

#[test]
fn seeded_simulation_keeps_invariants() {
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| run(seed, 400));
        if let Err(e) = result {
            eprintln!("simulation failed with seed {seed} (rerun: SLUICE_SIM_SEED={seed})");
            std::panic::resume_unwind(e);
        }
    }
}
