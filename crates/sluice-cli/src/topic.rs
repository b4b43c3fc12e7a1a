//! `sluice topic ...`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use sluice_client::{Admin, ConfigChange, TopicInfo};

use crate::errors::CliError;

/// Topic commands.
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's partitions (leader, replicas, in-sync replicas, start
    /// offset, end offset, bytes) and configuration.
    Describe {
        /// Topic name.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a topic: grow its partition count, set or delete config keys.
    Alter(AlterArgs),
    /// Move partitions to other brokers, online: the new replicas copy the
    /// log, then the old ones are dropped.
    Reassign(ReassignArgs),
    /// Delete a topic and all its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Produce one record per stdin line.
    Produce(crate::produce::ProduceArgs),
    /// Print records of a topic.
    Consume(crate::consume::ConsumeArgs),
}

/// Options of `topic reassign`.
#[derive(Args, Debug)]
pub struct ReassignArgs {
    /// Topic name.
    pub name: String,
    /// The partition(s) to move (repeat the flag for more).
    #[arg(long, short = 'p', required = true)]
    pub partition: Vec<u32>,
    /// The new replicas, preferred leader first (e.g. 1,2,4).
    #[arg(long, value_delimiter = ',', required_unless_present = "cancel")]
    pub replicas: Vec<u32>,
    /// Cancel the move under way instead (back to the replicas it had).
    #[arg(long, conflicts_with = "replicas")]
    pub cancel: bool,
    #[command(flatten)]
    pub wait: crate::cluster::MoveArgs,
}

/// Flush policy of a topic.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FlushArg {
    /// fsync every append before acknowledging durable produces (group commit).
    Always,
    /// fsync periodically.
    Interval,
    /// Leave flushing to the OS page cache.
    Os,
}

/// Options of `topic create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub partitions: u32,
    /// Replicas per partition, on distinct brokers (default: the broker's,
    /// `min(3, brokers)`). At most the number of live brokers.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub replication_factor: Option<u16>,
    /// Delete segments older than this.
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// Delete old segments beyond this many bytes per partition.
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Roll segments at this size.
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Flush policy.
    #[arg(long, value_enum)]
    pub flush: Option<FlushArg>,
}

/// Options of `topic alter`.
#[derive(Args, Debug)]
pub struct AlterArgs {
    /// Topic name.
    pub name: String,
    /// The new total partition count (larger than the current one; a topic
    /// never shrinks). Keyed records may map to other partitions afterwards.
    #[arg(long, short = 'p')]
    pub partitions: Option<u32>,
    /// Set a config key, `key=value` (repeatable): retention.ms,
    /// retention.bytes, segment.bytes, segment.ms, flush, flush.interval.ms,
    /// message.timestamp.before.max.ms, message.timestamp.after.max.ms.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Delete a config key so the broker default applies again (repeatable).
    #[arg(long = "delete-config", value_name = "KEY")]
    pub delete_config: Vec<String>,
}

impl AlterArgs {
    /// The config changes asked for, checked for shape (`key=value`, each key once).
    fn changes(&self) -> Result<Vec<ConfigChange>, CliError> {
        let mut changes = Vec::new();
        for kv in &self.config {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(CliError::msg(format!(
                    "--config {kv:?}: expected KEY=VALUE, e.g. retention.ms=86400000"
                )));
            };
            if k.trim().is_empty() {
                return Err(CliError::msg(format!("--config {kv:?}: the key is empty")));
            }
            changes.push(ConfigChange::set(k.trim(), v));
        }
        for k in &self.delete_config {
            changes.push(ConfigChange::delete(k.trim()));
        }
        let mut keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(CliError::msg(format!(
                "config key {:?} is given more than once",
                w[0]
            )));
        }
        Ok(changes)
    }
}

/// `topic alter`: checks everything it can first (the topic exists, the new
/// partition count is larger), then applies the config changes (all or
/// nothing on the broker), then grows the topic.
async fn alter(broker: &str, args: AlterArgs) -> Result<i32, CliError> {
    let changes = args.changes()?;
    if args.partitions.is_none() && changes.is_empty() {
        return Err(CliError::msg(
            "nothing to change: give --partitions, --config KEY=VALUE or --delete-config KEY",
        ));
    }
    let name = args.name.as_str();
    let admin = admin(broker).await?;
    let info = admin
        .describe_topic(name)
        .await
        .map_err(CliError::topic(name))?;
    let current = info.partitions.len() as u32;
    if let Some(n) = args.partitions {
        if n <= current {
            return Err(CliError::msg(format!(
                "topic \"{name}\" has {current} partition{}; --partitions must be larger (partitions cannot be removed)",
                if current == 1 { "" } else { "s" }
            )));
        }
    }
    if !changes.is_empty() {
        let summary: Vec<String> = changes
            .iter()
            .map(|c| match &c.value {
                Some(v) => format!("{}={v}", c.key),
                None => format!("{} deleted", c.key),
            })
            .collect();
        admin
            .alter_topic_config(name, changes)
            .await
            .map_err(CliError::topic(name))?;
        outln!("altered config of topic \"{name}\": {}", summary.join(", "));
    }
    if let Some(n) = args.partitions {
        admin
            .create_partitions(name, n)
            .await
            .map_err(CliError::topic(name))?;
        outln!("topic \"{name}\" now has {n} partitions (was {current})");
    }
    Ok(0)
}

/// Connects an admin client.
pub async fn admin(broker: &str) -> Result<Admin, CliError> {
    Ok(Admin::with_config(crate::client_config(broker)).await?)
}

/// Runs a topic command.
pub async fn run(broker: &str, command: TopicCommand) -> Result<i32, CliError> {
    match command {
        TopicCommand::Create(args) => {
            let mut configs = Vec::new();
            if let Some(v) = args.retention_ms {
                configs.push(("retention.ms".to_string(), v.to_string()));
            }
            if let Some(v) = args.retention_bytes {
                configs.push(("retention.bytes".to_string(), v.to_string()));
            }
            if let Some(v) = args.segment_bytes {
                configs.push(("segment.bytes".to_string(), v.to_string()));
            }
            if let Some(f) = args.flush {
                let v = match f {
                    FlushArg::Always => "always",
                    FlushArg::Interval => "interval",
                    FlushArg::Os => "os",
                };
                configs.push(("flush".to_string(), v.to_string()));
            }
            let admin = admin(broker).await?;
            admin
                .create_topic_with(
                    &args.name,
                    args.partitions,
                    args.replication_factor,
                    configs,
                )
                .await
                .map_err(CliError::topic(&args.name))?;
            outln!(
                "created topic \"{}\" with {} partition{}",
                args.name,
                args.partitions,
                if args.partitions == 1 { "" } else { "s" }
            );
            Ok(0)
        }
        TopicCommand::List { json } => {
            let topics = admin(broker).await?.list_topics().await?;
            if json {
                let v: Vec<_> = topics
                    .iter()
                    .map(|t| {
                        json!({
                            "name": t.name,
                            "partitions": t.partitions.len(),
                            "size_bytes": t.size_bytes(),
                            "messages": t.partitions.iter().map(|p| p.end_offset - p.start_offset.min(p.end_offset)).sum::<u64>(),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                let width = topics
                    .iter()
                    .map(|t| t.name.len())
                    .max()
                    .unwrap_or(4)
                    .max(4);
                outln!("{:<width$}  {:>10}  {:>14}", "NAME", "PARTITIONS", "SIZE");
                for t in &topics {
                    outln!(
                        "{:<width$}  {:>10}  {:>14}",
                        t.name,
                        t.partitions.len(),
                        human_bytes(t.size_bytes())
                    );
                }
            }
            Ok(0)
        }
        TopicCommand::Describe { name, json } => {
            let info = admin(broker)
                .await?
                .describe_topic(&name)
                .await
                .map_err(CliError::topic(&name))?;
            if json {
                outln!("{}", describe_json(&info));
            } else {
                print_describe(&info);
            }
            Ok(0)
        }
        TopicCommand::Alter(args) => alter(broker, args).await,
        TopicCommand::Reassign(args) => {
            let admin = admin(broker).await?;
            let replicas = if args.cancel {
                Vec::new()
            } else {
                args.replicas
            };
            let moves = args
                .partition
                .iter()
                .map(|&partition| sluice_client::PartitionReplicas {
                    topic: args.name.clone(),
                    partition,
                    replicas: replicas.clone(),
                })
                .collect();
            let started = admin
                .reassign_partitions(moves)
                .await
                .map_err(CliError::topic(&args.name))?;
            crate::cluster::follow_moves(&admin, &started, args.wait).await?;
            Ok(0)
        }
        TopicCommand::Delete { name } => {
            admin(broker)
                .await?
                .delete_topic(&name)
                .await
                .map_err(CliError::topic(&name))?;
            outln!("deleted topic \"{name}\"");
            Ok(0)
        }
        TopicCommand::Produce(args) => crate::produce::run(broker, args).await,
        TopicCommand::Consume(args) => crate::consume::run(broker, args).await,
    }
}

fn describe_json(t: &TopicInfo) -> serde_json::Value {
    let configs: serde_json::Map<String, serde_json::Value> = t
        .configs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    json!({
        "name": t.name,
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": (p.leader != u32::MAX).then_some(p.leader),
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
            "start_offset": p.start_offset,
            "end_offset": p.end_offset,
            "size_bytes": p.size_bytes,
        })).collect::<Vec<_>>(),
        "configs": configs,
    })
}

fn print_describe(t: &TopicInfo) {
    outln!("NAME        {}", t.name);
    outln!("PARTITIONS  {}", t.partitions.len());
    if !t.configs.is_empty() {
        outln!("CONFIGS");
        for (k, v) in &t.configs {
            outln!("  {k}={v}");
        }
    }
    outln!();
    let ids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let rows: Vec<(String, String)> = t
        .partitions
        .iter()
        .map(|p| (ids(&p.replicas), ids(&p.isr)))
        .collect();
    let rw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(8);
    let iw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(3);
    outln!(
        "{:>9}  {:>6}  {:<rw$}  {:<iw$}  {:>14}  {:>14}  {:>14}",
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "START-OFFSET",
        "END-OFFSET",
        "SIZE"
    );
    for (p, (replicas, isr)) in t.partitions.iter().zip(&rows) {
        outln!(
            "{:>9}  {:>6}  {:<rw$}  {:<iw$}  {:>14}  {:>14}  {:>14}",
            p.partition,
            if p.leader == u32::MAX {
                "-".to_string()
            } else {
                p.leader.to_string()
            },
            replicas,
            isr,
            p.start_offset,
            p.end_offset,
            human_bytes(p.size_bytes)
        );
    }
}

/// `1536` -> `1.5 KiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
