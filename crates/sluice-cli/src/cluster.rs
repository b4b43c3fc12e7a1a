//! `sluice cluster ...`.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::{Admin, ClusterInfo, PartitionReplicas, TopicInfo};

use crate::errors::CliError;

/// Cluster commands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the controller and its term, every broker (id, address, rack,
    /// alive) and the partitions without a live leader.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Spread the replicas evenly over the live brokers (run it after adding
    /// a broker), moving as few as possible, online.
    Rebalance(MoveArgs),
    /// Move every replica off broker ID, online, and keep new ones off it;
    /// once it holds none it can be stopped for good.
    Decommission {
        /// The broker's node id.
        id: u32,
        #[command(flatten)]
        wait: MoveArgs,
    },
    /// Take a decommissioned broker back: new replicas may go to it again.
    Recommission {
        /// The broker's node id.
        id: u32,
    },
}

/// How a command that moves replicas waits for the moves.
#[derive(Args, Debug, Clone, Copy)]
pub struct MoveArgs {
    /// Return once the moves started, without waiting for them to complete.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (the moves go on).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Prints the moves started, then waits for them unless told not to.
pub async fn follow_moves(
    admin: &Admin,
    moves: &[PartitionReplicas],
    wait: MoveArgs,
) -> Result<(), CliError> {
    for m in moves {
        let to: Vec<String> = m.replicas.iter().map(u32::to_string).collect();
        outln!(
            "moving {}/{} to replicas {}",
            m.topic,
            m.partition,
            to.join(",")
        );
    }
    if wait.no_wait || moves.is_empty() {
        return Ok(());
    }
    admin
        .wait_for_moves(moves, Duration::from_secs(wait.timeout))
        .await?;
    outln!("{} partition move(s) completed", moves.len());
    Ok(())
}

/// Drains broker `id` in rounds (partitions moving already are taken in a
/// later round) until no partition lists it; fails naming those left when
/// a round moves nothing.
async fn decommission(admin: &Admin, id: u32, wait: MoveArgs) -> Result<i32, CliError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(wait.timeout);
    loop {
        let moves = admin.drain_broker(id).await?;
        follow_moves(admin, &moves, wait).await?;
        if wait.no_wait {
            outln!("broker {id} is draining");
            return Ok(0);
        }
        let left = replicas_on(&admin.list_topics().await?, id);
        if left.is_empty() {
            outln!("broker {id} holds no replicas any more: it can be stopped");
            return Ok(0);
        }
        if moves.is_empty() || std::time::Instant::now() >= deadline {
            return Err(CliError::msg(format!(
                "broker {id} still holds {} replica(s): {} (no other broker can take them, \
                 or another reassignment is moving them: run this again once it completes)",
                left.len(),
                left.join(", ")
            )));
        }
    }
}

/// The partitions (`topic/partition`) that list broker `id` as a replica.
fn replicas_on(topics: &[TopicInfo], id: u32) -> Vec<String> {
    topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.replicas.contains(&id))
                .map(|p| format!("{}/{}", t.name, p.partition))
        })
        .collect()
}

/// A partition whose leader is not a live broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaderless {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The leader the metadata names (not alive), or `u32::MAX` for none.
    pub leader: u32,
    /// The partition's replicas.
    pub replicas: Vec<u32>,
}

impl Leaderless {
    /// The leader as JSON: its id, or null when there is none.
    fn leader_json(&self) -> serde_json::Value {
        if self.leader == u32::MAX {
            serde_json::Value::Null
        } else {
            json!(self.leader)
        }
    }

    /// Why this partition has no live leader, in words.
    fn why(&self) -> String {
        let replicas: Vec<String> = self.replicas.iter().map(u32::to_string).collect();
        let replicas = replicas.join(",");
        if self.leader == u32::MAX {
            format!("no live leader; replicas {replicas}")
        } else {
            format!("leader {} not alive; replicas {replicas}", self.leader)
        }
    }
}

/// The partitions of `topics` whose leader is not alive in `cluster`, by topic then partition.
pub fn leaderless(cluster: &ClusterInfo, topics: &[TopicInfo]) -> Vec<Leaderless> {
    let mut out: Vec<Leaderless> = topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| !cluster.is_alive(p.leader))
                .map(|p| Leaderless {
                    topic: t.name.clone(),
                    partition: p.partition,
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

/// Runs a cluster command.
pub async fn run(broker: &str, command: ClusterCommand) -> Result<i32, CliError> {
    match command {
        ClusterCommand::Status { json } => {
            let admin = crate::topic::admin(broker).await?;
            let cluster = admin.describe_cluster().await?;
            let topics = admin.list_topics().await?;
            let orphans = leaderless(&cluster, &topics);
            if json {
                outln!("{}", status_json(&cluster, &orphans));
            } else {
                print_status(&cluster, &orphans);
            }
            Ok(0)
        }
        ClusterCommand::Rebalance(wait) => {
            let admin = crate::topic::admin(broker).await?;
            let moves = admin.rebalance().await?;
            if moves.is_empty() {
                outln!("the replicas are balanced already: nothing to move");
            }
            follow_moves(&admin, &moves, wait).await?;
            Ok(0)
        }
        ClusterCommand::Decommission { id, wait } => {
            let admin = crate::topic::admin(broker).await?;
            decommission(&admin, id, wait).await
        }
        ClusterCommand::Recommission { id } => {
            let admin = crate::topic::admin(broker).await?;
            admin.undrain_broker(id).await?;
            outln!("broker {id} takes new replicas again (run `sluice cluster rebalance` to give it some)");
            Ok(0)
        }
    }
}

fn status_json(c: &ClusterInfo, orphans: &[Leaderless]) -> serde_json::Value {
    json!({
        "cluster_id": c.cluster_id,
        "controller": {
            "id": c.controller_id,
            "term": c.controller_epoch,
        },
        "brokers": c.brokers.iter().map(|b| json!({
            "id": b.node_id,
            "address": b.address(),
            "host": b.host,
            "port": b.port,
            "rack": b.rack,
            "alive": b.alive,
        })).collect::<Vec<_>>(),
        "leaderless_partitions": orphans.iter().map(|o| json!({
            "topic": o.topic,
            "partition": o.partition,
            "leader": o.leader_json(),
            "replicas": o.replicas,
        })).collect::<Vec<_>>(),
    })
}

fn print_status(c: &ClusterInfo, orphans: &[Leaderless]) {
    outln!("CLUSTER     {}", c.cluster_id);
    match c.controller_id {
        Some(id) => outln!("CONTROLLER  {id} (term {})", c.controller_epoch),
        None => outln!("CONTROLLER  none (election in progress)"),
    }
    outln!();
    let width = c
        .brokers
        .iter()
        .map(|b| b.address().len())
        .max()
        .unwrap_or(7)
        .max(7);
    outln!(
        "{:>4}  {:<width$}  {:<8}  {}",
        "ID",
        "ADDRESS",
        "RACK",
        "ALIVE"
    );
    for b in &c.brokers {
        outln!(
            "{:>4}  {:<width$}  {:<8}  {}",
            b.node_id,
            b.address(),
            b.rack.as_deref().unwrap_or("-"),
            if b.alive { "yes" } else { "no" }
        );
    }
    outln!();
    if orphans.is_empty() {
        outln!("PARTITIONS WITHOUT A LIVE LEADER: none");
    } else {
        outln!("PARTITIONS WITHOUT A LIVE LEADER: {}", orphans.len());
        for o in orphans {
            outln!("  {}/{} ({})", o.topic, o.partition, o.why());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::{BrokerInfo, PartitionInfo};

    fn partition(partition: u32, leader: u32) -> PartitionInfo {
        PartitionInfo {
            partition,
            leader,
            leader_epoch: 0,
            replicas: vec![leader],
            isr: vec![leader],
            start_offset: 0,
            end_offset: 0,
            size_bytes: 0,
        }
    }

    #[test]
    fn partitions_led_by_dead_or_unknown_brokers_are_leaderless() {
        let broker = |node_id, alive| BrokerInfo {
            node_id,
            host: "h".into(),
            port: 1,
            rack: None,
            alive,
        };
        let cluster = ClusterInfo {
            cluster_id: "c".into(),
            controller_id: Some(1),
            controller_epoch: 3,
            brokers: vec![broker(1, true), broker(2, false)],
        };
        let topics = vec![
            TopicInfo {
                name: "b".into(),
                partitions: vec![
                    partition(0, 1),
                    partition(1, 2),
                    partition(2, 9),
                    partition(3, u32::MAX),
                ],
                configs: vec![],
            },
            TopicInfo {
                name: "a".into(),
                partitions: vec![partition(0, 2)],
                configs: vec![],
            },
        ];
        let got: Vec<(String, u32, u32)> = leaderless(&cluster, &topics)
            .into_iter()
            .map(|l| (l.topic, l.partition, l.leader))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, 2),
                ("b".into(), 1, 2),
                ("b".into(), 2, 9),
                ("b".into(), 3, u32::MAX)
            ]
        );
        let v = status_json(&cluster, &leaderless(&cluster, &topics));
        assert_eq!(v["controller"]["term"], 3);
        assert_eq!(v["brokers"][1]["alive"], false);
        assert_eq!(v["leaderless_partitions"].as_array().map(Vec::len), Some(4));
        assert_eq!(
            v["leaderless_partitions"][3]["leader"],
            serde_json::Value::Null
        );
        assert_eq!(v["leaderless_partitions"][0]["replicas"], json!([2]));
        let orphans = leaderless(&cluster, &topics);
        assert_eq!(orphans[0].why(), "leader 2 not alive; replicas 2");
        assert_eq!(orphans[3].why(), "no live leader; replicas 4294967295");
    }
}
