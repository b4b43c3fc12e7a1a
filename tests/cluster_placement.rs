//! Replica placement on a real cluster of 3 controller voters and 3
//! broker-only nodes (started with `--join`) on racks a, b, c, a, b, c:
//! with a replication factor of 3 every partition has one replica per rack,
//! and leaders are spread so that leader counts per broker differ by at most
//! one, within a topic and cluster wide.
//!
//! Needs broker-only nodes (`--join`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::cluster::{ClusterSpec, PartitionView, TestCluster};
use common::process::ok;
use sluice_protocol::ErrorCode;

/// Bound of metadata propagation to every node.
const SEEN: Duration = Duration::from_secs(30);

/// Racks of nodes 1..=6: voters 1, 2, 3 and joiners 4, 5, 6, one of each per rack.
const RACKS: [&str; 6] = ["a", "b", "c", "a", "b", "c"];

fn rack_of(id: u32) -> &'static str {
    RACKS[id as usize - 1]
}

/// Asserts every partition has `rf` replicas on `rf` distinct brokers and racks, led by its first replica.
fn assert_rack_spread(name: &str, parts: &[PartitionView], rf: usize) {
    for p in parts {
        assert_eq!(p.replicas.len(), rf, "{name}/{}: {p:?}", p.partition);
        let brokers: BTreeSet<u32> = p.replicas.iter().copied().collect();
        assert_eq!(
            brokers.len(),
            rf,
            "{name}/{}: repeated broker {p:?}",
            p.partition
        );
        let racks: BTreeSet<&str> = p.replicas.iter().map(|&id| rack_of(id)).collect();
        assert_eq!(
            racks.len(),
            rf,
            "{name}/{}: racks {racks:?} of {p:?}",
            p.partition
        );
        assert_eq!(p.leader, p.replicas[0], "{name}/{}: {p:?}", p.partition);
    }
}

/// Leaders per broker (every broker listed, zero included).
fn leader_counts(ids: &[u32], parts: &[PartitionView]) -> BTreeMap<u32, usize> {
    ids.iter()
        .map(|&id| (id, parts.iter().filter(|p| p.leader == id).count()))
        .collect()
}

fn assert_balanced(what: &str, counts: &BTreeMap<u32, usize>) {
    let min = counts.values().min().copied().unwrap_or(0);
    let max = counts.values().max().copied().unwrap_or(0);
    assert!(max - min <= 1, "{what}: leader counts {counts:?}");
}

#[test]
fn rf3_over_three_racks_puts_one_replica_per_rack_and_balances_leaders() {
    let mut c = TestCluster::start(ClusterSpec::voters(3).joiners(3).racks(&RACKS));
    let ids = c.ids();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);

    // Every node, joiners included, sees all six brokers with their racks.
    for &id in &ids {
        let d = c.describe_cluster(id).expect("describe cluster");
        let seen: Vec<(u32, Option<&str>, bool)> = d
            .brokers
            .iter()
            .map(|b| (b.node_id, b.rack.as_deref(), b.alive))
            .collect();
        let want: Vec<(u32, Option<&str>, bool)> =
            ids.iter().map(|&b| (b, Some(rack_of(b)), true)).collect();
        assert_eq!(seen, want, "node {id}");
        let controller = u32::try_from(d.controller_id).expect("a controller");
        assert!(controller <= 3, "controller {controller} is not a voter");
    }

    // Created through a broker-only node.
    let (code, msg) = c.create_topic(5, "spread", 12, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let spread = c.wait_topic("spread", 12, SEEN);
    assert_rack_spread("spread", &spread, 3);
    let counts = leader_counts(&ids, &spread);
    assert_eq!(counts.values().sum::<usize>(), 12);
    assert_balanced("spread", &counts);
    // 12 partitions x 3 replicas over 6 brokers: 6 replicas each.
    for &id in &ids {
        let held = spread.iter().filter(|p| p.replicas.contains(&id)).count();
        assert_eq!(held, 6, "broker {id} holds {held} replicas: {spread:?}");
    }

    // A count that does not divide: balanced within the topic and cluster wide.
    let (code, msg) = c.create_topic(2, "odd", 7, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let odd = c.wait_topic("odd", 7, SEEN);
    assert_rack_spread("odd", &odd, 3);
    assert_balanced("odd", &leader_counts(&ids, &odd));
    let all: Vec<PartitionView> = spread.iter().chain(&odd).cloned().collect();
    assert_balanced("spread + odd", &leader_counts(&ids, &all));

    // Factor 2: two distinct racks per partition.
    let (code, msg) = c.create_topic(4, "pairs", 6, 2);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let pairs = c.wait_topic("pairs", 6, SEEN);
    assert_rack_spread("pairs", &pairs, 2);
    assert_balanced("pairs", &leader_counts(&ids, &pairs));

    // The CLI through a joiner shows the same replicas.
    let d: serde_json::Value = serde_json::from_str(&ok(&c.sluice(
        6,
        &["topic", "describe", "spread", "--json"],
        b"",
    )))
    .expect("json");
    let described = d["partitions"].as_array().expect("partitions");
    assert_eq!(described.len(), 12, "{d}");
    for (dp, p) in described.iter().zip(&spread) {
        assert_eq!(dp["leader"], p.leader, "{d}");
        assert_eq!(dp["replicas"], serde_json::json!(p.replicas), "{d}");
    }
}
