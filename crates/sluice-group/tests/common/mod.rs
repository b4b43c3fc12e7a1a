//! Shared helpers: a well-behaved model client and invariant checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use sluice_group::{Coordinator, CoordinatorConfig, JoinRequest, MemberView, TopicPartition};

/// A client that follows the heartbeat contract: it consumes
/// `assignment ∪ revoke` of its last response, and in its next heartbeat
/// confirms every revoke it was told about (it "committed" in between).
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub generation: u32,
    /// What it consumes right now.
    pub consuming: BTreeSet<TopicPartition>,
    /// Revokes from the last response, to confirm in the next heartbeat.
    pub to_revoke: BTreeSet<TopicPartition>,
    /// Partitions announced as pending in the last response.
    pub pending: BTreeSet<TopicPartition>,
}

impl Client {
    pub fn from_join(view: &MemberView) -> Client {
        let mut c = Client {
            id: view.member_id.clone(),
            generation: 0,
            consuming: BTreeSet::new(),
            to_revoke: BTreeSet::new(),
            pending: BTreeSet::new(),
        };
        c.apply(view);
        c
    }

    pub fn apply(&mut self, view: &MemberView) {
        self.generation = view.generation;
        self.consuming = view
            .assignment
            .iter()
            .chain(view.revoke.iter())
            .cloned()
            .collect();
        self.to_revoke = view.revoke.iter().cloned().collect();
        self.pending = view.pending.iter().cloned().collect();
    }

    /// Heartbeats; `confirm` decides whether it gives up what it was told to revoke.
    pub fn heartbeat(
        &mut self,
        coord: &mut Coordinator,
        now: u64,
        group: &str,
        confirm: bool,
        catalog: &BTreeMap<String, u32>,
    ) -> Result<MemberView, sluice_group::GroupError> {
        if confirm {
            for tp in &self.to_revoke {
                self.consuming.remove(tp);
            }
        }
        let report: Vec<TopicPartition> = self.consuming.iter().cloned().collect();
        let view = coord.heartbeat(
            now,
            group,
            &self.id,
            self.generation,
            Some(&report),
            catalog,
        )?;
        self.apply(&view);
        Ok(view)
    }
}

pub fn catalog(topics: &[(&str, u32)]) -> BTreeMap<String, u32> {
    topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

pub fn join(
    coord: &mut Coordinator,
    now: u64,
    group: &str,
    name: &str,
    topics: &[&str],
    session_ms: u64,
    cat: &BTreeMap<String, u32>,
) -> Client {
    let view = coord
        .join(
            now,
            group,
            JoinRequest {
                client_id: name.to_string(),
                topics: topics.iter().map(|t| t.to_string()).collect(),
                session_timeout_ms: Some(session_ms),
                ..JoinRequest::default()
            },
            cat,
        )
        .expect("join");
    Client::from_join(&view)
}

pub fn coordinator() -> Coordinator {
    Coordinator::new(CoordinatorConfig::default(), 0xabc)
}

/// Panics (with `ctx`) if a partition is allowed to two members, or if a
/// client consumes something the coordinator does not allow it.
pub fn check_no_double_ownership(coord: &Coordinator, group: &str, clients: &[&Client], ctx: &str) {
    let owners = coord.owners(group);
    for (tp, set) in &owners {
        assert!(set.len() <= 1, "{ctx}: {tp} owned by {set:?}");
    }
    for c in clients {
        for tp in &c.consuming {
            let allowed = owners.get(tp).is_some_and(|s| s.contains(&c.id));
            assert!(
                allowed,
                "{ctx}: client {} consumes {tp} without ownership",
                c.id
            );
        }
    }
}

/// Rounds of "every client heartbeats once, confirming revokes" until stable.
/// Returns the number of rounds, or None if not stable within `max`.
pub fn settle(
    coord: &mut Coordinator,
    now: u64,
    group: &str,
    clients: &mut [Client],
    cat: &BTreeMap<String, u32>,
    max: usize,
) -> Option<usize> {
    for round in 1..=max {
        for c in clients.iter_mut() {
            c.heartbeat(coord, now, group, true, cat)
                .expect("heartbeat");
        }
        let refs: Vec<&Client> = clients.iter().collect();
        check_no_double_ownership(coord, group, &refs, &format!("settle round {round}"));
        if coord.is_stable(group) {
            return Some(round);
        }
    }
    None
}

pub fn tp(topic: &str, p: u32) -> TopicPartition {
    TopicPartition::new(topic, p)
}
