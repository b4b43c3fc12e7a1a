//! `sluice group list|describe|delete|seek`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::{ClientError, ErrorCode, GroupDescription, SeekTo};

use crate::errors::{render_client, CliError};

/// Consumer-group commands.
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List(GroupArgs),
    /// Describe a consumer group: members, assignment, committed offsets, lag (records and ms).
    Describe {
        /// Group id.
        group: String,
        #[command(flatten)]
        args: GroupArgs,
    },
    /// Delete a consumer group that has no members (its committed offsets too).
    Delete {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets (only while the group has no members).
    Seek {
        /// Group id.
        group: String,
        /// Target: earliest, latest, an OFFSET, or @UNIX_MS (first record at or after that time).
        #[arg(long)]
        to: String,
        /// Topic to move (repeatable); default: every topic the group has offsets for.
        #[arg(long, short = 't')]
        topic: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Options of the group listing commands.
#[derive(Args, Debug)]
pub struct GroupArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One line for a client error about group `group`.
fn group_error<'a>(group: &str, broker: &'a str) -> impl Fn(ClientError) -> CliError + 'a {
    let group = group.to_string();
    move |e| {
        let line = match e.code() {
            Some(ErrorCode::GroupIdNotFound) => format!(
                "group \"{group}\" does not exist (no members and no committed offsets); see `sluice group list`"
            ),
            Some(ErrorCode::InvalidGroupId) => {
                format!("invalid group id \"{group}\": use 1-255 bytes without control characters")
            }
            Some(ErrorCode::UnknownApi) => format!(
                "the broker at {broker} does not serve consumer groups (it is older than this CLI)"
            ),
            Some(ErrorCode::NonEmptyGroup) => match &e {
                ClientError::Broker { context, .. } if context.contains("stop its consumers") => {
                    context.clone()
                }
                _ => format!(
                    "group \"{group}\" has active members; stop its consumers first (see `sluice group describe {group}`)"
                ),
            },
            _ => render_client(&e, None, broker),
        };
        CliError::msg(line)
    }
}

/// Runs a group command.
pub async fn run(broker: &str, command: GroupCommand) -> Result<i32, CliError> {
    let admin = crate::topic::admin(broker).await?;
    match command {
        GroupCommand::List(args) => {
            let groups = admin.list_groups().await.map_err(group_error("", broker))?;
            if args.json {
                let v: Vec<_> = groups
                    .iter()
                    .map(|g| {
                        json!({
                            "group_id": g.group_id,
                            "state": g.state,
                            "members": g.members,
                            "generation": g.generation,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                let width = groups
                    .iter()
                    .map(|g| g.group_id.len())
                    .max()
                    .unwrap_or(5)
                    .max(5);
                outln!(
                    "{:<width$}  {:<18}  {:>7}  {:>10}",
                    "GROUP",
                    "STATE",
                    "MEMBERS",
                    "GENERATION"
                );
                for g in &groups {
                    outln!(
                        "{:<width$}  {:<18}  {:>7}  {:>10}",
                        g.group_id,
                        g.state,
                        g.members,
                        g.generation
                    );
                }
            }
            Ok(0)
        }
        GroupCommand::Describe { group, args } => {
            let d = admin
                .describe_group(&group)
                .await
                .map_err(group_error(&group, broker))?;
            if args.json {
                outln!("{}", describe_json(&d));
            } else {
                print_describe(&d);
            }
            Ok(0)
        }
        GroupCommand::Delete { group } => {
            admin
                .delete_group(&group)
                .await
                .map_err(group_error(&group, broker))?;
            outln!("deleted group \"{group}\"");
            Ok(0)
        }
        GroupCommand::Seek {
            group,
            to,
            topic,
            json,
        } => {
            let target = crate::consume::parse_from(&to)
                .map_err(|e| CliError::msg(e.replace("--from", "--to")))?;
            let moved = admin
                .seek_group(&group, &topic, target)
                .await
                .map_err(group_error(&group, broker))?;
            if json {
                let v: Vec<_> = moved
                    .iter()
                    .map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o}))
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                let what = match target {
                    SeekTo::Earliest => "earliest".to_string(),
                    SeekTo::Latest => "latest".to_string(),
                    SeekTo::Offset(o) => format!("offset {o}"),
                    SeekTo::Timestamp(t) => format!("@{t}"),
                };
                outln!(
                    "moved group \"{group}\" to {what} on {} partition{}",
                    moved.len(),
                    if moved.len() == 1 { "" } else { "s" }
                );
                outln!("{:<20}  {:>9}  {:>14}", "TOPIC", "PARTITION", "OFFSET");
                for (t, p, o) in &moved {
                    outln!("{t:<20}  {p:>9}  {o:>14}");
                }
            }
            Ok(0)
        }
    }
}

/// Member id owning each `(topic, partition)`.
fn owners(d: &GroupDescription) -> BTreeMap<(String, u32), String> {
    let mut out = BTreeMap::new();
    for m in &d.members {
        for tp in m.assignment.iter().chain(&m.revoking) {
            out.insert(tp.clone(), m.member_id.clone());
        }
    }
    out
}

/// The `--json` form of `group describe`. Every partition entry has the
/// integer fields `committed_offset` (-1 = none), `end_offset`, `lag` and `lag_ms` (-1 = unknown).
pub fn describe_json(d: &GroupDescription) -> serde_json::Value {
    let owners = owners(d);
    let tps = |l: &[(String, u32)]| -> Vec<serde_json::Value> {
        l.iter()
            .map(|(t, p)| json!({"topic": t, "partition": p}))
            .collect()
    };
    json!({
        "group_id": d.group_id,
        "state": d.state,
        "generation": d.generation,
        "members": d.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "topics": m.topics,
            "assignment": tps(&m.assignment),
            "revoking": tps(&m.revoking),
        })).collect::<Vec<_>>(),
        "partitions": d.offsets.iter().map(|o| json!({
            "topic": o.topic,
            "partition": o.partition,
            "committed_offset": o.committed_offset,
            "end_offset": o.end_offset,
            "lag": o.lag,
            "lag_ms": o.lag_ms,
            "owner": owners.get(&(o.topic.clone(), o.partition)),
        })).collect::<Vec<_>>(),
        "total_lag": d.total_lag(),
    })
}

fn compact(l: &[(String, u32)]) -> String {
    if l.is_empty() {
        return "-".to_string();
    }
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in l {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    by_topic
        .iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
            format!("{t}:{}", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_describe(d: &GroupDescription) {
    outln!("GROUP       {}", d.group_id);
    outln!("STATE       {}", d.state);
    outln!("GENERATION  {}", d.generation);
    outln!("MEMBERS     {}", d.members.len());
    outln!("TOTAL LAG   {}", d.total_lag());
    if !d.members.is_empty() {
        outln!();
        let w = d
            .members
            .iter()
            .map(|m| m.member_id.len())
            .max()
            .unwrap_or(6)
            .max(6);
        outln!(
            "{:<w$}  {:<16}  {:<24}  REVOKING",
            "MEMBER",
            "CLIENT-ID",
            "ASSIGNMENT"
        );
        for m in &d.members {
            outln!(
                "{:<w$}  {:<16}  {:<24}  {}",
                m.member_id,
                m.client_id,
                compact(&m.assignment),
                compact(&m.revoking)
            );
        }
    }
    if !d.offsets.is_empty() {
        let owners = owners(d);
        outln!();
        let tw = d
            .offsets
            .iter()
            .map(|o| o.topic.len())
            .max()
            .unwrap_or(5)
            .max(5);
        outln!(
            "{:<tw$}  {:>9}  {:>12}  {:>12}  {:>10}  {:>10}  OWNER",
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "END-OFFSET",
            "LAG",
            "LAG-MS"
        );
        for o in &d.offsets {
            let committed = if o.committed_offset < 0 {
                "-".to_string()
            } else {
                o.committed_offset.to_string()
            };
            let lag_ms = if o.lag_ms < 0 {
                "-".to_string()
            } else {
                o.lag_ms.to_string()
            };
            outln!(
                "{:<tw$}  {:>9}  {:>12}  {:>12}  {:>10}  {:>10}  {}",
                o.topic,
                o.partition,
                committed,
                o.end_offset,
                o.lag,
                lag_ms,
                owners
                    .get(&(o.topic.clone(), o.partition))
                    .map(String::as_str)
                    .unwrap_or("-")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::{GroupMember, GroupPartitionLag};

    #[test]
    fn describe_json_has_integer_lag_fields_and_owners() {
        let d = GroupDescription {
            group_id: "g".into(),
            state: "Stable".into(),
            generation: 3,
            members: vec![GroupMember {
                member_id: "m-1".into(),
                client_id: "c".into(),
                topics: vec!["t".into()],
                assignment: vec![("t".into(), 0)],
                revoking: vec![],
            }],
            offsets: vec![
                GroupPartitionLag {
                    topic: "t".into(),
                    partition: 0,
                    committed_offset: 5,
                    end_offset: 9,
                    lag: 4,
                    lag_ms: 1200,
                },
                GroupPartitionLag {
                    topic: "t".into(),
                    partition: 1,
                    committed_offset: -1,
                    end_offset: 2,
                    lag: 2,
                    lag_ms: -1,
                },
            ],
        };
        let v = describe_json(&d);
        let parts = v["partitions"].as_array().expect("partitions");
        assert_eq!(parts.len(), 2);
        for p in parts {
            for f in ["committed_offset", "end_offset", "lag", "lag_ms"] {
                assert!(p[f].is_i64() || p[f].is_u64(), "{f} in {p}");
            }
        }
        assert_eq!(parts[0]["owner"], "m-1");
        assert!(parts[1]["owner"].is_null());
        assert_eq!(parts[1]["committed_offset"], -1);
        assert_eq!(v["total_lag"], 6);
        assert_eq!(v["members"][0]["assignment"][0]["partition"], 0);
        assert_eq!(
            compact(&[("a".into(), 1), ("a".into(), 2), ("b".into(), 0)]),
            "a:1,2 b:0"
        );
    }
}
