//! Server-side partition assignment: sticky and balanced, as one plain function.
//!
//! [`assign`] maps every partition of every subscribed topic to exactly one
//! member that subscribes to that topic. It is deterministic (same inputs,
//! same output) and does no I/O, so the coordinator and the tests can call it
//! freely.
//!
//! # Goals, in order
//!
//! 1. **Valid**: a partition goes only to a member subscribed to its topic,
//!    and every partition of a subscribed, known topic goes to exactly one
//!    member.
//! 2. **Balanced**: no partition could move from a member holding `a`
//!    partitions to an eligible member holding `b <= a - 2`. When every member
//!    subscribes to the same topics this is the familiar "partition counts
//!    differ by at most one"; with different subscriptions it is the best that
//!    is possible without breaking (1) (Kafka's sticky assignor uses the same
//!    definition).
//! 3. **Sticky**: a member keeps what it held in `previous` where (1) and (2)
//!    allow. With identical subscriptions a member that stays keeps at least
//!    `min(|previous still valid|, floor(N / M))` of its previous partitions:
//!    only partitions above its fair share move.
//!
//! # Algorithm
//!
//! 1. Each member keeps its still-valid previous partitions (a partition
//!    listed under two members goes to the first in member-id order).
//! 2. Partitions nobody kept go, fewest-eligible-members first, to the
//!    eligible member holding the fewest partitions.
//! 3. While some member holds a partition that an eligible member with at
//!    least two fewer partitions could take, the most loaded such member gives
//!    one to the least loaded eligible one, preferring partitions it did not
//!    hold before (so previous holdings stay put). Every move lowers the sum
//!    of squared counts, so the loop ends; it is also capped.

use std::collections::{BTreeMap, BTreeSet};

/// Identifies a member of a group; chosen by the coordinator on join.
pub type MemberId = String;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index, `0..partition_count`.
    pub partition: u32,
}

impl TopicPartition {
    /// Builds a topic-partition.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Partitions per member. Every member passed to [`assign`] has an entry (possibly empty).
pub type Assignment = BTreeMap<MemberId, BTreeSet<TopicPartition>>;

/// Computes a sticky, balanced assignment.
///
/// - `members`: each member with the topics it subscribes to. A duplicated
///   member id keeps its first subscription.
/// - `partitions`: partition count per topic. Topics subscribed to but absent
///   here (not created yet) get no partitions; a duplicated topic keeps its
///   first count.
/// - `previous`: the last assignment, used for stickiness; members not in
///   `members` and partitions no longer valid are ignored.
///
/// The result has one entry per distinct member.
pub fn assign(
    members: &[(MemberId, &[String])],
    partitions: &[(String, u32)],
    previous: &Assignment,
) -> Assignment {
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for (topic, n) in partitions {
        counts.entry(topic.as_str()).or_insert(*n);
    }

    // Member -> subscribed topics that exist and have partitions.
    let mut subs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, topics) in members {
        if subs.contains_key(id.as_str()) {
            continue;
        }
        let set = topics
            .iter()
            .map(String::as_str)
            .filter(|t| counts.get(t).is_some_and(|n| *n > 0))
            .collect();
        subs.insert(id.as_str(), set);
    }

    // Topic -> eligible members, in id order.
    let mut eligible: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (member, topics) in &subs {
        for t in topics {
            eligible.entry(t).or_default().push(member);
        }
    }

    let mut result: BTreeMap<&str, BTreeSet<TopicPartition>> =
        subs.keys().map(|m| (*m, BTreeSet::new())).collect();
    let mut claimed: BTreeSet<TopicPartition> = BTreeSet::new();

    // 1. Keep still-valid previous partitions.
    for (member, held) in previous {
        let Some(topics) = subs.get(member.as_str()) else {
            continue;
        };
        for tp in held {
            let valid = topics.contains(tp.topic.as_str())
                && counts
                    .get(tp.topic.as_str())
                    .is_some_and(|n| tp.partition < *n);
            if valid && claimed.insert(tp.clone()) {
                if let Some(set) = result.get_mut(member.as_str()) {
                    set.insert(tp.clone());
                }
            }
        }
    }

    // 2. Place unclaimed partitions, most constrained first.
    let mut unclaimed: Vec<(usize, TopicPartition)> = Vec::new();
    for (topic, members_of) in &eligible {
        let n = counts.get(topic).copied().unwrap_or(0);
        for p in 0..n {
            let tp = TopicPartition::new(*topic, p);
            if !claimed.contains(&tp) {
                unclaimed.push((members_of.len(), tp));
            }
        }
    }
    unclaimed.sort();
    // Members by index (id order) so the inner loop is plain vector access.
    let ids: Vec<&str> = result.keys().copied().collect();
    let mut held: Vec<usize> = result.values().map(BTreeSet::len).collect();
    let index: BTreeMap<&str, usize> = ids.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let eligible_idx: BTreeMap<&str, Vec<usize>> = eligible
        .iter()
        .map(|(t, ms)| {
            (
                *t,
                ms.iter().filter_map(|m| index.get(m).copied()).collect(),
            )
        })
        .collect();
    for (_, tp) in unclaimed {
        let Some(cands) = eligible_idx.get(tp.topic.as_str()) else {
            continue;
        };
        // Fewest held first; ties go to the lowest member id.
        let Some(&i) = cands.iter().min_by_key(|i| (held[**i], **i)) else {
            continue;
        };
        held[i] += 1;
        if let Some(set) = result.get_mut(ids[i]) {
            set.insert(tp);
        }
    }

    // 3. Move partitions from overloaded to underloaded eligible members.
    let total: usize = result.values().map(BTreeSet::len).sum();
    let cap = total.saturating_mul(result.len().max(1)) + 1;
    for _ in 0..cap {
        if !move_one(&mut result, &subs, &eligible, previous) {
            break;
        }
    }

    result
        .into_iter()
        .map(|(m, set)| (m.to_string(), set))
        .collect()
}

/// Performs one balancing move; returns false when balanced.
fn move_one(
    result: &mut BTreeMap<&str, BTreeSet<TopicPartition>>,
    subs: &BTreeMap<&str, BTreeSet<&str>>,
    eligible: &BTreeMap<&str, Vec<&str>>,
    previous: &Assignment,
) -> bool {
    let mut donors: Vec<(&str, usize)> = result.iter().map(|(m, s)| (*m, s.len())).collect();
    // Most loaded first; ties by id for determinism.
    donors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let min_count = donors.iter().map(|d| d.1).min().unwrap_or(0);
    for (donor, count) in donors {
        if count < min_count + 2 {
            break; // nobody below can receive from this or any later donor
        }
        let Some(held) = result.get(donor) else {
            continue;
        };
        let topics: BTreeSet<&str> = held.iter().map(|tp| tp.topic.as_str()).collect();
        // Best (receiver, topic) over the donor's topics: lowest receiver count.
        let mut best: Option<(usize, &str, &str)> = None;
        for topic in topics {
            let Some(cands) = eligible.get(topic) else {
                continue;
            };
            for cand in cands {
                if *cand == donor || !subs.get(cand).is_some_and(|s| s.contains(topic)) {
                    continue;
                }
                let c = result.get(cand).map_or(0, BTreeSet::len);
                if c + 2 <= count && !matches!(best, Some((bc, bm, _)) if (bc, bm) <= (c, *cand)) {
                    best = Some((c, cand, topic));
                }
            }
        }
        let Some((_, receiver, topic)) = best else {
            continue;
        };
        let prev_of_donor = previous.get(donor);
        let was_previous =
            |tp: &TopicPartition| prev_of_donor.is_some_and(|prev| prev.contains(tp));
        let chosen = held
            .iter()
            .filter(|tp| tp.topic == topic)
            // Prefer a partition the donor did not hold before, then the highest index.
            .max_by_key(|tp| (!was_previous(tp), tp.partition))
            .cloned();
        let Some(tp) = chosen else {
            continue;
        };
        if let Some(set) = result.get_mut(donor) {
            set.remove(&tp);
        }
        if let Some(set) = result.get_mut(receiver) {
            set.insert(tp);
        }
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topics(ts: &[&str]) -> Vec<String> {
        ts.iter().map(|t| t.to_string()).collect()
    }

    fn run(
        members: &[(&str, Vec<String>)],
        parts: &[(&str, u32)],
        prev: &Assignment,
    ) -> Assignment {
        let m: Vec<(MemberId, &[String])> = members
            .iter()
            .map(|(id, t)| (id.to_string(), t.as_slice()))
            .collect();
        let p: Vec<(String, u32)> = parts.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        assign(&m, &p, prev)
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    #[test]
    fn three_members_six_partitions_two_each() {
        let t = topics(&["t"]);
        let a = run(
            &[("a", t.clone()), ("b", t.clone()), ("c", t)],
            &[("t", 6)],
            &Assignment::new(),
        );
        assert_eq!(counts(&a), vec![2, 2, 2]);
        let all: BTreeSet<_> = a.values().flatten().cloned().collect();
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn join_moves_only_the_excess() {
        let t = topics(&["t"]);
        let before = run(
            &[("a", t.clone()), ("b", t.clone())],
            &[("t", 6)],
            &Assignment::new(),
        );
        let after = run(
            &[("a", t.clone()), ("b", t.clone()), ("c", t)],
            &[("t", 6)],
            &before,
        );
        assert_eq!(counts(&after), vec![2, 2, 2]);
        for m in ["a", "b"] {
            assert!(after[m].is_subset(&before[m]), "{m} gained while shrinking");
        }
    }

    #[test]
    fn leave_keeps_survivors_partitions() {
        let t = topics(&["t"]);
        let before = run(
            &[("a", t.clone()), ("b", t.clone()), ("c", t.clone())],
            &[("t", 7)],
            &Assignment::new(),
        );
        let after = run(&[("a", t.clone()), ("c", t)], &[("t", 7)], &before);
        for m in ["a", "c"] {
            assert!(before[m].is_subset(&after[m]), "{m} lost a partition");
        }
        let c = counts(&after);
        assert_eq!(c.iter().sum::<usize>(), 7);
        assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
    }

    #[test]
    fn unknown_topics_and_unsubscribed_members() {
        let a = run(
            &[("a", topics(&["x"])), ("b", topics(&["t", "ghost"]))],
            &[("t", 3)],
            &Assignment::new(),
        );
        assert!(a["a"].is_empty());
        assert_eq!(a["b"].len(), 3);
    }

    #[test]
    fn heterogeneous_subscriptions_respect_eligibility() {
        // a only reads t1 (1 partition); b and c read both.
        let a = run(
            &[
                ("a", topics(&["t1"])),
                ("b", topics(&["t1", "t2"])),
                ("c", topics(&["t1", "t2"])),
            ],
            &[("t1", 1), ("t2", 8)],
            &Assignment::new(),
        );
        for (m, set) in &a {
            for tp in set {
                assert!(m != "a" || tp.topic == "t1");
            }
        }
        assert_eq!(a.values().map(BTreeSet::len).sum::<usize>(), 9);
    }

    /// Checks validity + exactly-once + local balance; returns the owner map.
    fn check_valid_balanced(
        members: &[(String, Vec<String>)],
        parts: &[(String, u32)],
        a: &Assignment,
    ) -> Result<(), TestCaseError> {
        let subs: BTreeMap<&str, BTreeSet<&str>> = members
            .iter()
            .map(|(m, t)| (m.as_str(), t.iter().map(String::as_str).collect()))
            .collect();
        let mut seen = BTreeSet::new();
        for (m, set) in a {
            for tp in set {
                prop_assert!(
                    subs[m.as_str()].contains(tp.topic.as_str()),
                    "{m} not subscribed to {tp}"
                );
                prop_assert!(seen.insert(tp.clone()), "{tp} assigned twice");
            }
        }
        for (t, n) in parts {
            if subs.values().any(|s| s.contains(t.as_str())) {
                for p in 0..*n {
                    prop_assert!(
                        seen.contains(&TopicPartition::new(t.clone(), p)),
                        "{t}-{p} unassigned"
                    );
                }
            }
        }
        prop_assert_eq!(seen.len(), a.values().map(BTreeSet::len).sum::<usize>());
        // Local balance: nothing could move to a member with >= 2 fewer.
        for (ma, sa) in a {
            for (mb, sb) in a {
                if sa.len() >= sb.len() + 2 {
                    for tp in sa {
                        prop_assert!(
                            !subs[mb.as_str()].contains(tp.topic.as_str()),
                            "{tp} could move from {ma} ({}) to {mb} ({})",
                            sa.len(),
                            sb.len()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn call(
        members: &[(String, Vec<String>)],
        parts: &[(String, u32)],
        prev: &Assignment,
    ) -> Assignment {
        let m: Vec<(MemberId, &[String])> = members
            .iter()
            .map(|(id, t)| (id.clone(), t.as_slice()))
            .collect();
        assign(&m, parts, prev)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Same subscription for everyone: strict balance, exactly once, stickiness bound.
        #[test]
        fn homogeneous_balanced_and_sticky(
            n_members in 1usize..12,
            n_prev_pool in 1usize..14,
            parts in proptest::collection::vec(0u32..20, 1..4),
            prev_owner in proptest::collection::vec(0usize..20, 0..80),
        ) {
            let topic_names: Vec<String> = (0..parts.len()).map(|i| format!("t{i}")).collect();
            let partitions: Vec<(String, u32)> =
                topic_names.iter().cloned().zip(parts.iter().copied()).collect();
            let members: Vec<(String, Vec<String>)> =
                (0..n_members).map(|i| (format!("m{i:02}"), topic_names.clone())).collect();
            // Previous: a disjoint assignment over a pool that overlaps the current members.
            let mut prev = Assignment::new();
            let all: Vec<TopicPartition> = partitions
                .iter()
                .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.clone(), p)))
                .collect();
            for (i, tp) in all.iter().enumerate() {
                if let Some(o) = prev_owner.get(i) {
                    if *o < n_prev_pool {
                        prev.entry(format!("m{o:02}")).or_default().insert(tp.clone());
                    }
                }
            }
            let a = call(&members, &partitions, &prev);
            check_valid_balanced(&members, &partitions, &a)?;
            let c: Vec<usize> = a.values().map(BTreeSet::len).collect();
            let (mx, mn) = (c.iter().max().copied().unwrap_or(0), c.iter().min().copied().unwrap_or(0));
            prop_assert!(mx - mn <= 1, "counts {:?}", c);
            let fair = all.len() / n_members;
            for (m, set) in &a {
                if let Some(p) = prev.get(m) {
                    let kept = set.intersection(p).count();
                    prop_assert!(kept >= p.len().min(fair), "{m} kept {kept} of {} (fair {fair})", p.len());
                }
            }
            // Re-running on its own output changes nothing (stable fixpoint).
            let again = call(&members, &partitions, &a);
            prop_assert_eq!(again, a);
        }

        /// Arbitrary subscriptions: validity, exactly once, local balance.
        #[test]
        fn heterogeneous_valid_and_locally_balanced(
            subs in proptest::collection::vec(proptest::collection::vec(0usize..4, 0..4), 1..10),
            parts in proptest::collection::vec(0u32..12, 4),
            seed_prev in any::<bool>(),
        ) {
            let partitions: Vec<(String, u32)> =
                parts.iter().enumerate().map(|(i, n)| (format!("t{i}"), *n)).collect();
            let members: Vec<(String, Vec<String>)> = subs
                .iter()
                .enumerate()
                .map(|(i, ts)| (format!("m{i}"), ts.iter().map(|t| format!("t{t}")).collect()))
                .collect();
            let prev = if seed_prev {
                // Previous computed for a group without the last member.
                call(&members[..members.len() - 1], &partitions, &Assignment::new())
            } else {
                Assignment::new()
            };
            let a = call(&members, &partitions, &prev);
            check_valid_balanced(&members, &partitions, &a)?;
        }
    }
}
