//! The `/api/v1/` handlers (reference: `docs/console.md`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_client::{
    ConfigChange, Consumer, ConsumerConfig, OffsetSpec, Record, SeekTo, TopicInfo,
};

use crate::{Console, ConsoleError, Session};

type ApiResult = Result<(u16, Value), ConsoleError>;

/// Most records one browse answers.
pub const MAX_BROWSE: usize = 500;

/// Longest a browse waits for records.
const BROWSE_TIME: Duration = Duration::from_secs(5);

/// Partition entry "no live leader" from the client.
const NO_LEADER: u32 = u32::MAX;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn body<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, ConsoleError> {
    serde_json::from_slice(raw)
        .map_err(|e| ConsoleError::BadRequest(format!("the request body is not valid: {e}")))
}

fn method_not_allowed(method: &str, segs: &[&str]) -> ConsoleError {
    ConsoleError::Client {
        message: format!(
            "method {method} is not allowed on /api/v1/{}",
            segs.join("/")
        ),
        status: 405,
    }
}

/// Routes one API call.
pub async fn route(
    console: &Arc<Console>,
    s: &Session,
    method: &str,
    segs: &[&str],
    q: &HashMap<String, String>,
    raw: &[u8],
) -> ApiResult {
    match (method, segs) {
        ("GET", ["session"]) => Ok((
            200,
            json!({
                "auth_required": console.auth_required(),
                "user": s.user,
                "node_id": console.config.node_id,
                "version": env!("CARGO_PKG_VERSION"),
            }),
        )),
        ("GET", ["overview"]) => overview(console, s).await,
        ("GET", ["topics"]) => list_topics(console, s).await,
        ("POST", ["topics"]) => create_topic(s, body(raw)?).await,
        ("GET", ["topics", name]) => describe_topic(s, name).await.map(|v| (200, v)),
        ("DELETE", ["topics", name]) => {
            s.admin
                .delete_topic(name)
                .await
                .map_err(|e| ConsoleError::client(&format!("delete topic \"{name}\""), e))?;
            Ok((200, json!({ "deleted": name })))
        }
        ("POST", ["topics", name, "config"]) => alter_config(s, name, body(raw)?).await,
        ("GET", ["topics", name, "partitions", p, "messages"]) => {
            let p: u32 = p.parse().map_err(|_| {
                ConsoleError::BadRequest(format!("partition {p:?} is not a number"))
            })?;
            browse(s, name, p, q).await
        }
        ("POST", ["topics", name, "messages"]) => produce(s, name, body(raw)?).await,
        ("GET", ["groups"]) => list_groups(s).await,
        ("GET", ["groups", id]) => describe_group(console, s, id).await,
        ("POST", ["groups", id, "reset"]) => reset_group(s, id, body(raw)?).await,
        (_, ["session" | "overview" | "topics" | "groups"])
        | (_, ["topics" | "groups", _])
        | (_, ["topics", _, "config" | "messages"])
        | (_, ["groups", _, "reset"])
        | (_, ["topics", _, "partitions", _, "messages"]) => Err(method_not_allowed(method, segs)),
        _ => Err(ConsoleError::NotFound(format!(
            "no API at /api/v1/{}",
            segs.join("/")
        ))),
    }
}

fn partition_json(p: &sluice_client::PartitionInfo) -> Value {
    json!({
        "partition": p.partition,
        "leader": if p.leader == NO_LEADER { Value::Null } else { json!(p.leader) },
        "leader_epoch": p.leader_epoch,
        "replicas": p.replicas,
        "isr": p.isr,
        "start_offset": p.start_offset,
        "end_offset": p.end_offset,
        "size_bytes": p.size_bytes,
    })
}

fn topic_json(t: &TopicInfo) -> Value {
    let config: BTreeMap<&str, &str> = t
        .configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    json!({
        "name": t.name,
        "config": config,
        "partitions": t.partitions.iter().map(partition_json).collect::<Vec<_>>(),
    })
}

async fn overview(console: &Console, s: &Session) -> ApiResult {
    let cluster = s
        .admin
        .describe_cluster()
        .await
        .map_err(|e| ConsoleError::client("describe the cluster", e))?;
    let topics = s
        .admin
        .list_topics()
        .await
        .map_err(|e| ConsoleError::client("list topics", e))?;
    let mut leaders: HashMap<u32, u64> = HashMap::new();
    let mut replicas: HashMap<u32, u64> = HashMap::new();
    let mut disk: HashMap<u32, u64> = HashMap::new();
    let (mut total, mut under, mut offline) = (0u64, Vec::new(), Vec::new());
    for t in &topics {
        for p in &t.partitions {
            total += 1;
            *leaders.entry(p.leader).or_default() += 1;
            for r in &p.replicas {
                *replicas.entry(*r).or_default() += 1;
                *disk.entry(*r).or_default() += p.size_bytes;
            }
            let at = json!({ "topic": t.name, "partition": p.partition });
            if p.leader == NO_LEADER || !cluster.is_alive(p.leader) && cluster.brokers.len() > 1 {
                offline.push(at);
            } else if p.isr.len() < p.replicas.len() {
                under.push(at);
            }
        }
    }
    let brokers: Vec<Value> = cluster
        .brokers
        .iter()
        .map(|b| {
            json!({
                "id": b.node_id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "alive": b.alive,
                "leaders": leaders.get(&b.node_id).copied().unwrap_or(0),
                "replicas": replicas.get(&b.node_id).copied().unwrap_or(0),
                "disk_used_bytes": disk.get(&b.node_id).copied().unwrap_or(0),
            })
        })
        .collect();
    let (now, history) = console.sampler.throughput();
    Ok((
        200,
        json!({
            "cluster_id": cluster.cluster_id,
            "controller": cluster.controller_id,
            "brokers": brokers,
            "partitions": { "total": total, "under_replicated": under, "offline": offline },
            "throughput": {
                "in_bytes_per_sec": now.in_bytes_per_sec,
                "in_records_per_sec": now.in_records_per_sec,
                "out_records_per_sec": now.out_records_per_sec,
                "history": history,
            },
        }),
    ))
}

async fn list_topics(console: &Console, s: &Session) -> ApiResult {
    let topics = s
        .admin
        .list_topics()
        .await
        .map_err(|e| ConsoleError::client("list topics", e))?;
    let list: Vec<Value> = topics
        .iter()
        .map(|t| {
            let (mps, bps) = console.sampler.topic_rate(&t.name).unwrap_or((0.0, 0.0));
            json!({
                "name": t.name,
                "partitions": t.partitions.len(),
                "replication": t.partitions.iter().map(|p| p.replicas.len()).max().unwrap_or(0),
                "size_bytes": t.size_bytes(),
                "messages": t.partitions.iter().map(|p| p.end_offset.saturating_sub(p.start_offset)).sum::<u64>(),
                "messages_per_sec": mps,
                "bytes_per_sec": bps,
            })
        })
        .collect();
    Ok((200, Value::Array(list)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    #[serde(default)]
    partitions: Option<u32>,
    #[serde(default)]
    replication: Option<u16>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

async fn create_topic(s: &Session, c: CreateTopic) -> ApiResult {
    let name = c.name.trim();
    if name.is_empty() {
        return Err(ConsoleError::BadRequest("the topic needs a name".into()));
    }
    let partitions = c.partitions.unwrap_or(1);
    if partitions == 0 {
        return Err(ConsoleError::BadRequest(
            "a topic needs at least one partition".into(),
        ));
    }
    if c.replication == Some(0) {
        return Err(ConsoleError::BadRequest(
            "the replication factor is at least 1".into(),
        ));
    }
    s.admin
        .create_topic_with(
            name,
            partitions,
            c.replication,
            c.config.into_iter().collect(),
        )
        .await
        .map_err(|e| ConsoleError::client(&format!("create topic \"{name}\""), e))?;
    Ok((201, json!({ "name": name })))
}

async fn describe_topic(s: &Session, name: &str) -> Result<Value, ConsoleError> {
    let t = s
        .admin
        .describe_topic(name)
        .await
        .map_err(|e| ConsoleError::client(&format!("describe topic \"{name}\""), e))?;
    Ok(topic_json(&t))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlterConfig {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    delete: Vec<String>,
}

async fn alter_config(s: &Session, name: &str, a: AlterConfig) -> ApiResult {
    let mut changes: Vec<ConfigChange> = a
        .set
        .into_iter()
        .map(|(k, v)| ConfigChange::set(k, v))
        .collect();
    changes.extend(a.delete.into_iter().map(|k| ConfigChange {
        key: k,
        value: None,
    }));
    if changes.is_empty() {
        return Err(ConsoleError::BadRequest(
            "nothing to change: give \"set\" or \"delete\"".into(),
        ));
    }
    s.admin
        .alter_topic_config(name, changes)
        .await
        .map_err(|e| ConsoleError::client(&format!("change the config of topic \"{name}\""), e))?;
    describe_topic(s, name).await.map(|v| (200, v))
}

fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ConsoleError> {
    match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ConsoleError::BadRequest(format!("{key}={v:?} is not a valid number"))),
    }
}

async fn browse(
    s: &Session,
    topic: &str,
    partition: u32,
    q: &HashMap<String, String>,
) -> ApiResult {
    let limit = number::<usize>(q, "limit")?.unwrap_or(20);
    if limit == 0 || limit > MAX_BROWSE {
        return Err(ConsoleError::BadRequest(format!(
            "limit must be between 1 and {MAX_BROWSE}"
        )));
    }
    let what = format!("read {topic}/{partition}");
    let at = |spec| async move { s.admin.list_offsets(topic, partition, spec).await };
    let start = at(OffsetSpec::Earliest)
        .await
        .map_err(|e| ConsoleError::client(&what, e))?
        .offset;
    let end = at(OffsetSpec::Latest)
        .await
        .map_err(|e| ConsoleError::client(&what, e))?
        .offset;
    let first = match (number::<u64>(q, "offset")?, number::<i64>(q, "timestamp")?) {
        (Some(_), Some(_)) => {
            return Err(ConsoleError::BadRequest(
                "give offset or timestamp, not both".into(),
            ))
        }
        (Some(o), None) => o.clamp(start, end),
        (None, Some(t)) => at(OffsetSpec::Timestamp(t))
            .await
            .map_err(|e| ConsoleError::client(&what, e))?
            .offset
            .clamp(start, end),
        (None, None) => start,
    };
    let mut records = Vec::new();
    let mut next = first;
    if first < end {
        let config = ConsumerConfig {
            start: SeekTo::Offset(first),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::with_config(s.config.clone(), config);
        consumer.assign(vec![(topic.to_string(), partition)]);
        let deadline = tokio::time::Instant::now() + BROWSE_TIME;
        while records.len() < limit && next < end {
            let r = match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(Ok(r))) => r,
                Ok(Some(Err(e))) => return Err(ConsoleError::client(&what, e)),
                Ok(None) | Err(_) => break,
            };
            if r.offset < first {
                continue;
            }
            next = r.offset + 1;
            records.push(json!({
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key_b64": r.key.as_deref().map(b64),
                "value_b64": r.value.as_deref().map(b64),
                "headers": r.headers.iter().map(|(k, v)| json!({"key": k, "value_b64": b64(v)})).collect::<Vec<_>>(),
            }));
        }
    }
    Ok((
        200,
        json!({
            "records": records,
            "next_offset": next,
            "start_offset": start,
            "end_offset": end,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Produce {
    #[serde(default)]
    partition: Option<u32>,
    #[serde(default)]
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

async fn produce(s: &Session, topic: &str, p: Produce) -> ApiResult {
    let mut record = Record {
        topic: Arc::from(topic),
        key: p.key.filter(|k| !k.is_empty()).map(Bytes::from),
        value: p.value.map(Bytes::from),
        headers: Vec::new(),
        timestamp: None,
        partition: p.partition,
    };
    for (k, v) in p.headers {
        record = record.header(k, Bytes::from(v));
    }
    let producer = s.producer().await;
    let (partition, offset) = tokio::time::timeout(Duration::from_secs(15), producer.send(record))
        .await
        .map_err(|_| ConsoleError::Client {
            message: format!("could not produce to \"{topic}\": no acknowledgement within 15 s"),
            status: 504,
        })?
        .map_err(|e| ConsoleError::client(&format!("produce to \"{topic}\""), e))?;
    Ok((200, json!({ "partition": partition, "offset": offset })))
}

async fn list_groups(s: &Session) -> ApiResult {
    let groups = s
        .admin
        .list_groups()
        .await
        .map_err(|e| ConsoleError::client("list consumer groups", e))?;
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        // Lag needs the group's offsets; a group the user may list but not
        // describe shows no lag rather than failing the whole list.
        let lag = match s.admin.describe_group(&g.group_id).await {
            Ok(d) => json!(d.total_lag()),
            Err(_) => Value::Null,
        };
        out.push(json!({
            "group_id": g.group_id,
            "state": g.state,
            "members": g.members,
            "lag": lag,
        }));
    }
    Ok((200, Value::Array(out)))
}

async fn describe_group(console: &Console, s: &Session, id: &str) -> ApiResult {
    let d = s
        .admin
        .describe_group(id)
        .await
        .map_err(|e| ConsoleError::client(&format!("describe group \"{id}\""), e))?;
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id,
                "client_id": m.client_id,
                "topics": m.topics,
                "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let offsets: Vec<Value> = d
        .offsets
        .iter()
        .map(|o| {
            json!({
                "topic": o.topic,
                "partition": o.partition,
                "committed": if o.committed_offset >= 0 { json!(o.committed_offset) } else { Value::Null },
                "end_offset": o.end_offset,
                "lag": o.lag,
                "lag_seconds": if o.lag_ms >= 0 { json!(o.lag_ms as f64 / 1000.0) } else { Value::Null },
            })
        })
        .collect();
    let history: Vec<Value> = console
        .sampler
        .lag_history(id)
        .into_iter()
        .map(|(t, lag)| json!({"t": t, "lag": lag}))
        .collect();
    Ok((
        200,
        json!({
            "group_id": d.group_id,
            "state": d.state,
            "generation": d.generation,
            "members": members,
            "offsets": offsets,
            "lag_history": history,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    to: String,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    topic: Option<String>,
}

async fn reset_group(s: &Session, id: &str, r: Reset) -> ApiResult {
    let to = match (r.to.as_str(), r.timestamp) {
        ("earliest", _) => SeekTo::Earliest,
        ("latest", _) => SeekTo::Latest,
        ("timestamp", Some(t)) => SeekTo::Timestamp(t),
        ("timestamp", None) => {
            return Err(ConsoleError::BadRequest(
                "\"to\": \"timestamp\" needs \"timestamp\" (ms since the epoch)".into(),
            ))
        }
        (other, _) => {
            return Err(ConsoleError::BadRequest(format!(
                "\"to\" must be earliest, latest or timestamp, not {other:?}"
            )))
        }
    };
    let topics: Vec<String> = r.topic.into_iter().filter(|t| !t.is_empty()).collect();
    let moved =
        s.admin.seek_group(id, &topics, to).await.map_err(|e| {
            ConsoleError::client(&format!("reset the offsets of group \"{id}\""), e)
        })?;
    let offsets: Vec<Value> = moved
        .iter()
        .map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o}))
        .collect();
    Ok((200, json!({ "offsets": offsets })))
}
