//! Replica placement for new topics and added partitions: which brokers hold
//! each partition's replicas, and which of them leads. A pure function: the
//! broker that receives a CreateTopics computes the assignment from the
//! cluster metadata and proposes it to the controller (see
//! `docs/cluster.md`); a single node places everything on itself.
//!
//! The rules (what a Kafka or Redpanda user expects from
//! `replication.factor` and `broker.rack`):
//!
//! - A partition's replicas are on distinct brokers; a replication factor
//!   above the number of live, unfenced brokers is refused.
//! - They span as many distinct racks as the factor allows: with 3 racks and
//!   a factor of 3, one replica per rack. A broker without a rack is its own
//!   failure domain (a rack of one).
//! - Leaders (the first replica) are spread evenly: within a topic every
//!   broker leads either `floor(P / N)` or `ceil(P / N)` partitions, and the
//!   rotation starts at the broker that leads the fewest partitions cluster
//!   wide, so many small topics do not all lead from the same broker.
//!
//! How: the brokers are laid out rack-alternating (the first broker of each
//! rack, then the second of each, ...; racks by name, brokers within a rack
//! by how many replicas they hold, then id). Partition `p`'s leader is entry
//! `(start + p) mod N`; its followers are the next entries after it that add
//! a rack not yet used, then (when every rack is used) the next unused
//! brokers. Kafka's rack-aware assignment uses the same alternating list.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::BrokerError;

/// A broker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    /// Node id.
    pub id: u64,
    /// Availability zone; `None` is a failure domain of its own.
    pub rack: Option<String>,
}

/// What the cluster already holds, to balance new placements against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementLoad {
    /// Partitions each broker leads.
    pub leaders: BTreeMap<u64, u32>,
    /// Replicas each broker holds (leaders included).
    pub replicas: BTreeMap<u64, u32>,
}

/// Places `partitions` new partitions with `factor` replicas each on
/// `brokers` (live, unfenced; duplicates by id are ignored), balancing
/// against `load`. Returns one replica list per partition, leader first.
pub fn assign_replicas(
    brokers: &[PlacementBroker],
    partitions: u32,
    factor: u16,
    load: &PlacementLoad,
) -> Result<Vec<Vec<u64>>, BrokerError> {
    let mut seen = BTreeSet::new();
    let unique: Vec<&PlacementBroker> = brokers.iter().filter(|b| seen.insert(b.id)).collect();
    if factor == 0 || usize::from(factor) > unique.len() {
        return Err(BrokerError::InvalidReplicationFactor {
            factor: i32::from(factor),
            brokers: u32::try_from(unique.len()).unwrap_or(u32::MAX),
        });
    }
    if partitions == 0 {
        return Err(BrokerError::InvalidPartitions {
            count: 0,
            max: crate::config::MAX_PARTITIONS,
        });
    }
    let order = rack_alternating(&unique, load);
    let n = order.len();
    // Start where the fewest partitions are led (first such in the layout).
    let start = (0..n)
        .min_by_key(|&i| (load.leaders.get(&order[i].0).copied().unwrap_or(0), i))
        .unwrap_or(0);
    let factor = usize::from(factor);
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as usize {
        let first = (start + p) % n;
        let mut replicas: Vec<u64> = Vec::with_capacity(factor);
        let mut racks: BTreeSet<&RackKey> = BTreeSet::new();
        replicas.push(order[first].0);
        racks.insert(&order[first].1);
        let all_racks = order.iter().map(|(_, r)| r).collect::<BTreeSet<_>>().len();
        // First pass: only brokers that add a rack; second: any unused broker.
        for new_rack_only in [true, false] {
            for step in 1..n {
                if replicas.len() == factor {
                    break;
                }
                let (id, rack) = &order[(first + step) % n];
                if replicas.contains(id) {
                    continue;
                }
                if new_rack_only && (racks.contains(rack) || racks.len() == all_racks) {
                    continue;
                }
                replicas.push(*id);
                racks.insert(rack);
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

/// A rack's identity for spreading: a named rack, or a broker on its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum RackKey {
    Named(String),
    Alone(u64),
}

/// The brokers laid out rack by rack in turn (see the module docs).
fn rack_alternating(brokers: &[&PlacementBroker], load: &PlacementLoad) -> Vec<(u64, RackKey)> {
    let mut racks: BTreeMap<RackKey, Vec<u64>> = BTreeMap::new();
    for b in brokers {
        let key = match &b.rack {
            Some(r) => RackKey::Named(r.clone()),
            None => RackKey::Alone(b.id),
        };
        racks.entry(key).or_default().push(b.id);
    }
    for ids in racks.values_mut() {
        ids.sort_by_key(|id| (load.replicas.get(id).copied().unwrap_or(0), *id));
    }
    let deepest = racks.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(brokers.len());
    for level in 0..deepest {
        for (key, ids) in &racks {
            if let Some(id) = ids.get(level) {
                order.push((*id, key.clone()));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| PlacementBroker {
                id: i as u64 + 1,
                rack: r.map(str::to_string),
            })
            .collect()
    }

    fn rack_of(bs: &[PlacementBroker], id: u64) -> Option<String> {
        bs.iter().find(|b| b.id == id).and_then(|b| b.rack.clone())
    }

    fn leader_counts(assignment: &[Vec<u64>]) -> BTreeMap<u64, u32> {
        let mut c = BTreeMap::new();
        for r in assignment {
            *c.entry(r[0]).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn six_brokers_in_three_racks_spread_every_partition_over_three_racks() {
        let bs = brokers(&[
            Some("a"),
            Some("b"),
            Some("c"),
            Some("a"),
            Some("b"),
            Some("c"),
        ]);
        for partitions in [1, 6, 7, 12, 100] {
            let a = assign_replicas(&bs, partitions, 3, &PlacementLoad::default()).unwrap();
            assert_eq!(a.len(), partitions as usize);
            for replicas in &a {
                assert_eq!(replicas.len(), 3);
                let racks: BTreeSet<_> = replicas.iter().map(|id| rack_of(&bs, *id)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
            let counts = leader_counts(&a);
            if partitions >= 6 {
                assert_eq!(counts.len(), 6, "every broker leads some: {counts:?}");
            }
            let (lo, hi) = (
                counts.values().min().copied().unwrap_or(0),
                counts.values().max().copied().unwrap_or(0),
            );
            assert!(hi - lo <= 1 || partitions < 6, "{counts:?}");
        }
    }

    #[test]
    fn a_factor_above_the_brokers_or_zero_is_refused() {
        let bs = brokers(&[None, None]);
        assert!(matches!(
            assign_replicas(&bs, 1, 3, &PlacementLoad::default()),
            Err(BrokerError::InvalidReplicationFactor {
                factor: 3,
                brokers: 2
            })
        ));
        assert!(assign_replicas(&bs, 1, 0, &PlacementLoad::default()).is_err());
        assert!(matches!(
            assign_replicas(&bs, 0, 1, &PlacementLoad::default()),
            Err(BrokerError::InvalidPartitions { count: 0, .. })
        ));
        // Duplicates count once.
        let mut dup = bs.clone();
        dup.push(bs[0].clone());
        assert!(assign_replicas(&dup, 1, 3, &PlacementLoad::default()).is_err());
    }

    #[test]
    fn uneven_racks_still_use_every_rack_before_repeating_one() {
        // Rack a has three brokers, b one: factor 2 always includes broker 4.
        let bs = brokers(&[Some("a"), Some("a"), Some("a"), Some("b")]);
        let a = assign_replicas(&bs, 9, 2, &PlacementLoad::default()).unwrap();
        for replicas in &a {
            assert!(replicas.contains(&4), "{replicas:?}");
        }
    }

    #[test]
    fn the_rotation_starts_at_the_broker_leading_the_least() {
        let bs = brokers(&[None, None, None]);
        let load = PlacementLoad {
            leaders: BTreeMap::from([(1, 5), (2, 0), (3, 5)]),
            replicas: BTreeMap::new(),
        };
        let a = assign_replicas(&bs, 1, 1, &load).unwrap();
        assert_eq!(a, vec![vec![2]]);
        // Single-partition topics created one after another rotate leaders.
        let mut load = PlacementLoad::default();
        let mut leaders = Vec::new();
        for _ in 0..6 {
            let a = assign_replicas(&bs, 1, 2, &load).unwrap();
            for (i, id) in a[0].iter().enumerate() {
                if i == 0 {
                    *load.leaders.entry(*id).or_insert(0) += 1;
                }
                *load.replicas.entry(*id).or_insert(0) += 1;
            }
            leaders.push(a[0][0]);
        }
        let counts = leaders.iter().fold(BTreeMap::new(), |mut m, id| {
            *m.entry(*id).or_insert(0) += 1;
            m
        });
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    proptest! {
        #[test]
        fn any_cluster_gets_distinct_brokers_full_rack_spread_and_even_leaders(
            racks in proptest::collection::vec(proptest::option::of(0u8..4), 1..10),
            partitions in 1u32..50,
            factor_seed in 1u16..10,
        ) {
            let bs: Vec<PlacementBroker> = racks
                .iter()
                .enumerate()
                .map(|(i, r)| PlacementBroker { id: i as u64 + 10, rack: r.map(|r| format!("r{r}")) })
                .collect();
            let factor = 1 + (factor_seed - 1) % bs.len() as u16;
            let a = assign_replicas(&bs, partitions, factor, &PlacementLoad::default()).unwrap();
            let domains: BTreeSet<_> = bs.iter().map(|b| b.rack.clone().map_or(RackKey::Alone(b.id), RackKey::Named)).collect();
            for replicas in &a {
                prop_assert_eq!(replicas.len(), factor as usize);
                let distinct: BTreeSet<_> = replicas.iter().collect();
                prop_assert_eq!(distinct.len(), replicas.len());
                let used: BTreeSet<_> = replicas
                    .iter()
                    .map(|id| bs.iter().find(|b| b.id == *id).map(|b| b.rack.clone().map_or(RackKey::Alone(b.id), RackKey::Named)))
                    .collect();
                prop_assert_eq!(used.len(), domains.len().min(factor as usize), "{:?}", replicas);
            }
            let counts = leader_counts(&a);
            let n = bs.len() as u32;
            for b in &bs {
                let c = counts.get(&b.id).copied().unwrap_or(0);
                prop_assert!(c == partitions / n || c == partitions.div_ceil(n), "{:?}", counts);
            }
        }
    }
}
