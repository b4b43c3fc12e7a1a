//! Consumer groups over the Kafka wire: the classic protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup with client-side assignment) on the
//! broker's classic coordinator, and OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups and DeleteGroups on the same offset store and group
//! namespace as native groups.
//!
//! Every group request first checks that this broker coordinates the group
//! (`NOT_COORDINATOR` / `COORDINATOR_NOT_AVAILABLE` otherwise, before any
//! state is touched), as the native handlers do. JoinGroup and SyncGroup
//! park until the join or sync barrier completes; they are deferred
//! actions, so responses still leave in request order per connection.
//! OffsetCommit is fenced by the classic group's generation and member id
//! (generation -1 with an empty member id is a standalone commit, accepted
//! while the group has no members) and acknowledged once fsynced and, in a
//! cluster, replicated. OffsetFetch v8 (several groups per request) is
//! answered group by group.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::group::{ClassicJoinRequest, ClassicSyncRequest};
use sluice_broker::handler::{finish_commit_replicated, Outcome};
use sluice_broker::GroupCoordinator;
use sluice_group::{OffsetCommit, TopicPartition};
use sluice_protocol as native;

use crate::api::Req;
use crate::codes::{kafka, to_kafka};
use crate::meta::{native_call, sb, tn};
use crate::{KafkaError, Reply};
use sluice_broker::codes::WireCode;

/// The Kafka code when this broker does not coordinate `group`.
fn not_coordinator(req: &Req<'_>, group: &str) -> Option<i16> {
    if sluice_group::error::validate_group_id(group).is_err() {
        return Some(kafka::INVALID_GROUP_ID);
    }
    match req.ctx.core.broker.group_coordinator(group) {
        GroupCoordinator::Local => None,
        GroupCoordinator::Remote { .. } => Some(kafka::NOT_COORDINATOR),
        GroupCoordinator::Unavailable => Some(kafka::COORDINATOR_NOT_AVAILABLE),
    }
}

/// One topic of an OffsetCommit answer: (partition, its own code, or `None`
/// for "the code of the fenced commit").
type CommitShape = (TopicName, Vec<(i32, Option<i16>)>);

/// One topic of an OffsetFetch answer: (partition, offset, metadata, code).
type FetchedTopic = (String, Vec<(i32, i64, String, i16)>);

/// Milliseconds since the Unix epoch (offset-store timestamps).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn opt(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub(crate) fn join_group(req: &Req<'_>, r: JoinGroupRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let group = r.group_id.0.to_string();
    if let Some(code) = not_coordinator(req, &group) {
        return req.respond(
            "JoinGroup",
            &JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1)
                .with_member_id(r.member_id),
        );
    }
    let join = ClassicJoinRequest {
        group,
        member_id: r.member_id.to_string(),
        group_instance_id: if v >= 5 {
            opt(&r.group_instance_id)
        } else {
            None
        },
        client_id: req.header.client_id.clone(),
        client_host: format!("/{}", req.peer.ip()),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        },
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let fut = req.ctx.core.groups.classic_join(join);
    let enc = req.later::<JoinGroupResponse>("JoinGroup");
    Ok(Reply::Later(Box::pin(async move {
        // The group's barrier is a wait by design: not a slow request.
        let j = sluice_broker::slow_log::parked(fut).await;
        let mut body = JoinGroupResponse::default()
            .with_error_code(j.error)
            .with_generation_id(j.generation_id)
            .with_leader(sb(&j.leader))
            .with_member_id(sb(&j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|m| {
                        let mut jm = JoinGroupResponseMember::default()
                            .with_member_id(sb(&m.member_id))
                            .with_metadata(m.metadata);
                        if v >= 5 {
                            jm.group_instance_id = m.group_instance_id.as_deref().map(sb);
                        }
                        jm
                    })
                    .collect(),
            );
        if v >= 7 {
            body.protocol_type = j.protocol_type.as_deref().map(sb);
        }
        body.protocol_name = match j.protocol_name {
            Some(n) => Some(sb(&n)),
            // Not nullable before v7: an empty name, as Kafka writes.
            None if v < 7 => Some(StrBytes::default()),
            None => None,
        };
        enc(&body)
    })))
}

pub(crate) fn sync_group(req: &Req<'_>, r: SyncGroupRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let group = r.group_id.0.to_string();
    if let Some(code) = not_coordinator(req, &group) {
        return req.respond(
            "SyncGroup",
            &SyncGroupResponse::default().with_error_code(code),
        );
    }
    let sync = ClassicSyncRequest {
        group,
        member_id: r.member_id.to_string(),
        generation_id: r.generation_id,
        group_instance_id: if v >= 3 {
            opt(&r.group_instance_id)
        } else {
            None
        },
        protocol_type: if v >= 5 { opt(&r.protocol_type) } else { None },
        protocol_name: if v >= 5 { opt(&r.protocol_name) } else { None },
        assignments: r
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let fut = req.ctx.core.groups.classic_sync(sync);
    let enc = req.later::<SyncGroupResponse>("SyncGroup");
    Ok(Reply::Later(Box::pin(async move {
        // Waiting for the leader's assignment is by design: not a slow request.
        let s = sluice_broker::slow_log::parked(fut).await;
        let mut body = SyncGroupResponse::default()
            .with_error_code(s.error)
            .with_assignment(s.assignment);
        if v >= 5 {
            body.protocol_type = s.protocol_type.as_deref().map(sb);
            body.protocol_name = s.protocol_name.as_deref().map(sb);
        }
        enc(&body)
    })))
}

pub(crate) fn heartbeat(req: &Req<'_>, r: HeartbeatRequest) -> Result<Reply, KafkaError> {
    let group = r.group_id.0.to_string();
    let code = match not_coordinator(req, &group) {
        Some(code) => code,
        None => req.ctx.core.groups.classic_heartbeat(
            &group,
            &r.member_id,
            r.generation_id,
            r.group_instance_id.as_deref(),
        ),
    };
    req.respond(
        "Heartbeat",
        &HeartbeatResponse::default().with_error_code(code),
    )
}

pub(crate) fn leave_group(req: &Req<'_>, r: LeaveGroupRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let group = r.group_id.0.to_string();
    if let Some(code) = not_coordinator(req, &group) {
        return req.respond(
            "LeaveGroup",
            &LeaveGroupResponse::default().with_error_code(code),
        );
    }
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        r.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    let (top, each) = req.ctx.core.groups.classic_leave(&group, &members);
    let mut body = LeaveGroupResponse::default();
    if v >= 3 {
        body.error_code = top;
        body.members = members
            .into_iter()
            .zip(each)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(sb(&id))
                    .with_group_instance_id(instance.as_deref().map(sb))
                    .with_error_code(code)
            })
            .collect();
    } else {
        body.error_code = if top != kafka::NONE {
            top
        } else {
            each.first().copied().unwrap_or(kafka::NONE)
        };
    }
    req.respond("LeaveGroup", &body)
}

pub(crate) fn offset_commit(req: &Req<'_>, r: OffsetCommitRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let group = r.group_id.0.to_string();
    // The answer's shape: (topic, [(partition, code or None for "committed with the rest")]).
    let mut shape: Vec<CommitShape> = Vec::with_capacity(r.topics.len());
    let fail_all = |code: i16,
                    topics: Vec<
        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic,
    >| {
        OffsetCommitResponse::default().with_topics(
            topics
                .into_iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                        .with_name(t.name)
                })
                .collect(),
        )
    };
    if let Some(code) = not_coordinator(req, &group) {
        return req.respond("OffsetCommit", &fail_all(code, r.topics));
    }
    let groups = &req.ctx.core.groups;
    let mut commits = Vec::new();
    for t in r.topics {
        let name = t.name.0.to_string();
        let target = groups.commit_target(&name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let (Ok(partition), Ok(offset)) = (
                u32::try_from(p.partition_index),
                u64::try_from(p.committed_offset),
            ) else {
                parts.push((p.partition_index, Some(kafka::INVALID_REQUEST)));
                continue;
            };
            let metadata = p
                .committed_metadata
                .map(|m| m.to_string())
                .unwrap_or_default();
            if metadata.len() > usize::from(u16::MAX) {
                parts.push((p.partition_index, Some(kafka::OFFSET_METADATA_TOO_LARGE)));
                continue;
            }
            match target.check(partition) {
                Ok(()) => {
                    let mut c =
                        OffsetCommit::new(TopicPartition::new(name.as_str(), partition), offset);
                    c.metadata = metadata;
                    commits.push(c);
                    parts.push((p.partition_index, None));
                }
                Err(refusal) => parts.push((p.partition_index, Some(to_kafka(refusal.code())))),
            }
        }
        shape.push((t.name, parts));
    }
    let answer = move |code: i16| {
        OffsetCommitResponse::default().with_topics(
            shape
                .into_iter()
                .map(|(name, parts)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, c)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(c.unwrap_or(code))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    };
    if commits.is_empty() {
        return req.respond("OffsetCommit", &answer(kafka::NONE));
    }
    let (generation, member) = if v >= 1 {
        (r.generation_id_or_member_epoch, r.member_id.to_string())
    } else {
        (-1, String::new())
    };
    let instance = if v >= 7 {
        opt(&r.group_instance_id)
    } else {
        None
    };
    // A member of a KIP-848 group (the native coordinator) commits with its
    // member epoch; classic members and standalone commits go to the
    // classic coordinator's fencing.
    let native_member = !member.is_empty()
        && groups.classic_describe(&group).is_none()
        && groups
            .describe(&group)
            .is_ok_and(|g| g.description.members.iter().any(|m| m.member_id == member));
    let ticket = if native_member {
        let epoch = u32::try_from(generation).unwrap_or(0);
        match groups.begin_commit(&group, &member, epoch, &commits) {
            Ok(t) => t,
            Err(e) => return req.respond("OffsetCommit", &answer(consumer_error(&e))),
        }
    } else {
        match groups.begin_classic_commit(
            &group,
            &member,
            generation,
            instance.as_deref(),
            &commits,
        ) {
            Ok(t) => t,
            Err(code) => return req.respond("OffsetCommit", &answer(code)),
        }
    };
    let done = finish_commit_replicated(&req.ctx.core, group, ticket, commits);
    let enc = req.later::<OffsetCommitResponse>("OffsetCommit");
    Ok(Reply::Later(Box::pin(async move {
        let code = to_kafka(done.await);
        enc(&answer(code))
    })))
}

/// One group's committed offsets through the native OffsetFetch: `(code, topics)`.
fn fetch_group(
    req: &Req<'_>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (i16, Vec<FetchedTopic>) {
    if let Some(code) = not_coordinator(req, group) {
        return (code, Vec::new());
    }
    let asked = topics.unwrap_or_default();
    let request = native::OffsetFetchRequest {
        group_id: group.to_string(),
        topics: asked
            .iter()
            .map(|(t, ps)| native::TopicPartitions {
                topic: t.clone(),
                partitions: ps.iter().filter_map(|p| u32::try_from(*p).ok()).collect(),
            })
            .collect(),
    };
    let resp = match native_call(
        req,
        native::ApiKey::OffsetFetch,
        native::Request::OffsetFetch(request),
    ) {
        Outcome::Respond(native::Response::OffsetFetch(f)) => f,
        _ => return (kafka::UNKNOWN_SERVER_ERROR, Vec::new()),
    };
    // Asked for every topic: only those the principal may DESCRIBE (as
    // Kafka; named topics were checked before the request ran).
    let every = asked.is_empty();
    let topics = resp
        .topics
        .into_iter()
        .filter(|t| !every || crate::auth::may_describe_topic(req, &t.name))
        .map(|t| {
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    (
                        i32::try_from(p.partition).unwrap_or(-1),
                        p.offset,
                        p.metadata,
                        to_kafka(p.error),
                    )
                })
                .collect();
            (t.name, parts)
        })
        .collect();
    (to_kafka(resp.error), topics)
}

pub(crate) fn offset_fetch(req: &Req<'_>, r: OffsetFetchRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    if v >= 8 {
        let groups = r
            .groups
            .into_iter()
            .map(|g| {
                let topics = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let (code, topics) = fetch_group(req, &g.group_id, topics);
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(code)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(name, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(tn(&name))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, offset, meta, code)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_metadata(Some(sb(&meta)))
                                                    .with_error_code(code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return req.respond(
            "OffsetFetch",
            &OffsetFetchResponse::default().with_groups(groups),
        );
    }
    let topics = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let (code, topics) = fetch_group(req, &r.group_id, topics);
    let mut body = OffsetFetchResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, parts)| {
                OffsetFetchResponseTopic::default()
                    .with_name(tn(&name))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, offset, meta, pcode)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(sb(&meta)))
                                    // Before v2 there is no top-level code: it goes on each partition.
                                    .with_error_code(if v < 2 && code != kafka::NONE {
                                        code
                                    } else {
                                        pcode
                                    })
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    if v >= 2 {
        body.error_code = code;
    }
    req.respond("OffsetFetch", &body)
}

pub(crate) fn offset_delete(req: &Req<'_>, r: OffsetDeleteRequest) -> Result<Reply, KafkaError> {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let group = r.group_id.0.to_string();
    let asked = r.topics.clone();
    let answer = move |top: i16, per: &dyn Fn(&str, i32) -> i16| {
        OffsetDeleteResponse::default()
            .with_error_code(top)
            .with_topics(
                asked
                    .iter()
                    .map(|t| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(per(&t.name.0, p.partition_index))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    };
    if let Some(code) = not_coordinator(req, &group) {
        return req.respond("OffsetDelete", &answer(code, &|_, _| kafka::NONE));
    }
    let groups = &req.ctx.core.groups;
    // Topics the group's members subscribe to or own: their offsets stay
    // (GROUP_SUBSCRIBED_TO_TOPIC), as Kafka refuses them.
    let busy: std::collections::BTreeSet<String> = match groups.describe(&group) {
        Ok(info) => info
            .description
            .members
            .iter()
            .flat_map(|m| {
                m.topics
                    .iter()
                    .cloned()
                    .chain(m.assignment.iter().map(|tp| tp.topic.to_string()))
            })
            .collect(),
        Err(_) => Default::default(),
    };
    let committed = groups.committed(&group);
    if committed.is_empty() && busy.is_empty() && groups.classic_describe(&group).is_none() {
        return req.respond(
            "OffsetDelete",
            &answer(kafka::GROUP_ID_NOT_FOUND, &|_, _| kafka::NONE),
        );
    }
    let mut doomed = Vec::new();
    for t in &r.topics {
        if busy.contains(&*t.name.0) {
            continue;
        }
        for p in &t.partitions {
            if let Ok(partition) = u32::try_from(p.partition_index) {
                doomed.push(TopicPartition::new(&*t.name.0, partition));
            }
        }
    }
    let ticket = match groups
        .store()
        .begin_delete_offsets(&group, &doomed, wall_ms())
    {
        Ok(t) => t,
        Err(e) => {
            return req.respond(
                "OffsetDelete",
                &answer(to_kafka(e.code()), &|_, _| kafka::NONE),
            )
        }
    };
    let body_for = move |top: i16| {
        answer(top, &|topic, _| {
            if busy.contains(topic) {
                kafka::GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                kafka::NONE
            }
        })
    };
    let groups = std::sync::Arc::clone(groups);
    let enc = req.later::<OffsetDeleteResponse>("OffsetDelete");
    Ok(Reply::Later(Box::pin(async move {
        let done = tokio::task::spawn_blocking(move || groups.store().finish_counted(ticket)).await;
        let top = match done {
            Ok(Ok(_)) => kafka::NONE,
            Ok(Err(e)) => {
                tracing::warn!(group = %group, error = %e, "offset delete failed");
                kafka::NOT_COORDINATOR
            }
            Err(_) => kafka::UNKNOWN_SERVER_ERROR,
        };
        enc(&body_for(top))
    })))
}

pub(crate) fn list_groups(req: &Req<'_>, r: ListGroupsRequest) -> Result<Reply, KafkaError> {
    let v = req.version();
    let classic = req.ctx.core.groups.classic_groups();
    let out = native_call(req, native::ApiKey::ListGroups, native::Request::ListGroups);
    let Outcome::Respond(native::Response::ListGroups(l)) = out else {
        return req.respond(
            "ListGroups",
            &ListGroupsResponse::default().with_error_code(kafka::UNKNOWN_SERVER_ERROR),
        );
    };
    let filter: Vec<String> = if v >= 4 {
        r.states_filter.iter().map(|s| s.to_lowercase()).collect()
    } else {
        Vec::new()
    };
    let all = crate::auth::may_list_all_groups(req);
    let groups = l
        .groups
        .into_iter()
        .filter(|g| all || crate::auth::may_describe_group(req, &g.group_id))
        .filter_map(|g| {
            let (ptype, state) = match classic.iter().find(|(name, _, _)| *name == g.group_id) {
                Some((_, ptype, state)) => (ptype.clone(), state.clone()),
                None => ("consumer".to_string(), g.state.clone()),
            };
            if !filter.is_empty() && !filter.contains(&state.to_lowercase()) {
                return None;
            }
            let mut lg = ListedGroup::default()
                .with_group_id(GroupId(sb(&g.group_id)))
                .with_protocol_type(sb(&ptype));
            if v >= 4 {
                lg.group_state = sb(&state);
            }
            Some(lg)
        })
        .collect();
    req.respond(
        "ListGroups",
        &ListGroupsResponse::default().with_groups(groups),
    )
}

pub(crate) fn describe_groups(
    req: &Req<'_>,
    r: DescribeGroupsRequest,
) -> Result<Reply, KafkaError> {
    let groups = &req.ctx.core.groups;
    let described = r
        .groups
        .into_iter()
        .map(|g| {
            let name = g.0.to_string();
            let mut d = DescribedGroup::default().with_group_id(g);
            if let Some(code) = not_coordinator(req, &name) {
                d.error_code = code;
                return d;
            }
            if let Some(c) = groups.classic_describe(&name) {
                d.group_state = sb(&c.state);
                d.protocol_type = sb(&c.protocol_type);
                d.protocol_data = sb(&c.protocol_name);
                d.members = c
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(sb(&m.member_id))
                            .with_group_instance_id(m.group_instance_id.as_deref().map(sb))
                            .with_client_id(sb(&m.client_id))
                            .with_client_host(sb(&m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
                return d;
            }
            match groups.describe(&name) {
                Ok(info) => {
                    let info = info.description;
                    d.group_state = sb(info.state.name());
                    d.protocol_type = StrBytes::from_static_str("consumer");
                    d.protocol_data = StrBytes::from_static_str("sluice");
                    d.members = info
                        .members
                        .iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(sb(&m.member_id.to_string()))
                                .with_client_id(sb(&m.client_id))
                        })
                        .collect();
                }
                Err(_) => d.group_state = StrBytes::from_static_str("Dead"),
            }
            d
        })
        .collect();
    req.respond(
        "DescribeGroups",
        &DescribeGroupsResponse::default().with_groups(described),
    )
}

pub(crate) fn delete_groups(req: &Req<'_>, r: DeleteGroupsRequest) -> Result<Reply, KafkaError> {
    let names: Vec<String> = r.groups_names.iter().map(|g| g.0.to_string()).collect();
    let out = native_call(
        req,
        native::ApiKey::DeleteGroups,
        native::Request::DeleteGroups(native::DeleteGroupsRequest { group_ids: names }),
    );
    crate::meta::finish(req, "DeleteGroups", out, |resp| {
        let results = match resp {
            native::Response::DeleteGroups(d) => d
                .groups
                .into_iter()
                .map(|g| {
                    DeletableGroupResult::default()
                        .with_group_id(GroupId(sb(&g.group_id)))
                        .with_error_code(to_kafka(g.error))
                })
                .collect(),
            _ => Vec::new(),
        };
        DeleteGroupsResponse::default().with_results(results)
    })
}

/// `FENCED_MEMBER_EPOCH`: the member's epoch is not the group's; rejoin.
const FENCED_MEMBER_EPOCH: i16 = 110;
/// `UNRELEASED_INSTANCE_ID`-free subset of KIP-848 errors Sluice sends.
const INVALID_REQUEST: i16 = kafka::INVALID_REQUEST;
/// Session timeout of KIP-848 members (Kafka's `group.consumer.session.timeout.ms`).
const CONSUMER_SESSION_TIMEOUT_MS: u64 = 45_000;

/// The Kafka code of a native coordinator refusal, in KIP-848 terms.
fn consumer_error(e: &sluice_group::GroupError) -> i16 {
    use sluice_group::GroupError as G;
    match e {
        G::IllegalGeneration { .. } | G::NotPartitionOwner { .. } => FENCED_MEMBER_EPOCH,
        G::UnknownMemberId { .. } => kafka::UNKNOWN_MEMBER_ID,
        G::NonEmptyGroup { .. } => kafka::INCONSISTENT_GROUP_PROTOCOL,
        other => to_kafka(other.code()),
    }
}

/// A member's partitions as KIP-848 topic-id lists.
fn by_topic_id(
    ctx: &crate::KafkaContext,
    parts: &[TopicPartition],
) -> Vec<kafka_protocol::messages::consumer_group_heartbeat_response::TopicPartitions> {
    let mut out: Vec<kafka_protocol::messages::consumer_group_heartbeat_response::TopicPartitions> =
        Vec::new();
    let mut last: Option<(String, uuid::Uuid)> = None;
    for tp in parts {
        let id = match &last {
            Some((name, id)) if **name == *tp.topic => *id,
            _ => {
                let id = crate::meta::topic_id(ctx, &tp.topic);
                last = Some((tp.topic.to_string(), id));
                id
            }
        };
        let p = i32::try_from(tp.partition).unwrap_or(i32::MAX);
        match out.last_mut() {
            Some(t) if t.topic_id == id => t.partitions.push(p),
            _ => out.push(
                kafka_protocol::messages::consumer_group_heartbeat_response::TopicPartitions::default()
                    .with_topic_id(id)
                    .with_partitions(vec![p]),
            ),
        }
    }
    out
}

/// ConsumerGroupHeartbeat (KIP-848) on the native server-side coordinator:
/// epoch 0 joins (the coordinator names the member, also in v1 where the
/// client proposes an id: the answer carries the id to use), -1 / -2 leave, any
/// other epoch heartbeats with the member's owned partitions (topic ids
/// resolved to names; none given: the last report stands). The member
/// epoch is the group generation; the assignment sent is what the member
/// may consume now (partitions to revoke are left out, so the client drops
/// them, commits and reports the smaller set, after which they go to their
/// new owner: revocation before grant, as the native protocol).
pub(crate) fn consumer_group_heartbeat(
    req: &Req<'_>,
    r: ConsumerGroupHeartbeatRequest,
) -> Result<Reply, KafkaError> {
    let group = r.group_id.0.to_string();
    let respond = |code: i16, msg: Option<&str>| {
        req.respond(
            "ConsumerGroupHeartbeat",
            &ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(msg.map(sb))
                .with_member_epoch(-1),
        )
    };
    if let Some(code) = not_coordinator(req, &group) {
        return respond(code, None);
    }
    if r.subscribed_topic_regex
        .as_ref()
        .is_some_and(|re| !re.is_empty())
    {
        return respond(
            INVALID_REQUEST,
            Some("regular-expression subscriptions are not served; name the topics"),
        );
    }
    let groups = &req.ctx.core.groups;
    let member = r.member_id.to_string();
    let view = match r.member_epoch {
        0 => {
            let Some(topics) = &r.subscribed_topic_names else {
                return respond(INVALID_REQUEST, Some("a joining member names its topics"));
            };
            let mut topics: Vec<String> = topics.iter().map(|t| t.0.to_string()).collect();
            topics.sort();
            topics.dedup();
            groups.join(
                &group,
                sluice_group::JoinRequest {
                    member_id: None,
                    client_id: req.header.client_id.clone(),
                    topics,
                    session_timeout_ms: Some(CONSUMER_SESSION_TIMEOUT_MS),
                    rebalance_timeout_ms: u64::try_from(r.rebalance_timeout_ms)
                        .ok()
                        .filter(|t| *t > 0),
                    metadata: Vec::new(),
                },
            )
        }
        -1 | -2 => {
            let code = match groups.leave(&group, &member) {
                Ok(()) => kafka::NONE,
                Err(e) => consumer_error(&e),
            };
            return req.respond(
                "ConsumerGroupHeartbeat",
                &ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(code)
                    .with_member_id(Some(r.member_id.clone()))
                    .with_member_epoch(r.member_epoch),
            );
        }
        epoch if epoch > 0 => {
            let generation = u32::try_from(epoch).unwrap_or(u32::MAX);
            // A new subscription first (a join with the member's id updates it).
            if let Some(topics) = &r.subscribed_topic_names {
                let mut topics: Vec<String> = topics.iter().map(|t| t.0.to_string()).collect();
                topics.sort();
                topics.dedup();
                let current = groups.describe(&group).ok().and_then(|g| {
                    g.description
                        .members
                        .iter()
                        .find(|m| m.member_id == member)
                        .map(|m| m.topics.clone())
                });
                if current.as_ref().is_some_and(|c| *c != topics) {
                    if let Err(e) = groups.join(
                        &group,
                        sluice_group::JoinRequest {
                            member_id: Some(member.clone()),
                            client_id: req.header.client_id.clone(),
                            topics,
                            session_timeout_ms: Some(CONSUMER_SESSION_TIMEOUT_MS),
                            rebalance_timeout_ms: None,
                            metadata: Vec::new(),
                        },
                    ) {
                        return respond(consumer_error(&e), None);
                    }
                }
            }
            match &r.topic_partitions {
                Some(owned) => {
                    let mut report = Vec::with_capacity(owned.len());
                    for t in owned {
                        let Some(name) = crate::meta::topic_name_of(req.ctx, t.topic_id) else {
                            continue;
                        };
                        report.push(native::TopicPartitions {
                            topic: name,
                            partitions: t
                                .partitions
                                .iter()
                                .filter_map(|p| u32::try_from(*p).ok())
                                .collect(),
                        });
                    }
                    match groups.heartbeat(
                        &group,
                        &member,
                        generation,
                        &report,
                        std::time::Duration::ZERO,
                    ) {
                        sluice_broker::group::HeartbeatReply::Ready(v) => v,
                        sluice_broker::group::HeartbeatReply::Parked(_) => {
                            groups.refresh(&group, &member, generation)
                        }
                    }
                }
                None => groups.refresh(&group, &member, generation),
            }
        }
        _ => return respond(FENCED_MEMBER_EPOCH, None),
    };
    let view = match view {
        Ok(v) => v,
        Err(e) => return respond(consumer_error(&e), None),
    };
    let body = ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(sb(&view.member_id)))
        .with_member_epoch(i32::try_from(view.generation).unwrap_or(i32::MAX))
        .with_heartbeat_interval_ms(i32::try_from(view.heartbeat_interval_ms).unwrap_or(i32::MAX))
        .with_assignment(Some(
            kafka_protocol::messages::consumer_group_heartbeat_response::Assignment::default()
                .with_topic_partitions(by_topic_id(req.ctx, &view.assignment)),
        ));
    req.respond("ConsumerGroupHeartbeat", &body)
}

/// ConsumerGroupDescribe (KIP-848): a native group's members, subscriptions
/// and assignments; a Kafka classic group answers `GROUP_ID_NOT_FOUND`, as
/// a classic group does in Kafka.
pub(crate) fn consumer_group_describe(
    req: &Req<'_>,
    r: ConsumerGroupDescribeRequest,
) -> Result<Reply, KafkaError> {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup as CDescribed, Member, TopicPartitions as CTopicPartitions,
    };
    let groups = &req.ctx.core.groups;
    let assignment = |parts: &[TopicPartition]| {
        let mut out: Vec<CTopicPartitions> = Vec::new();
        for tp in parts {
            let p = i32::try_from(tp.partition).unwrap_or(i32::MAX);
            match out.last_mut() {
                Some(t) if *t.topic_name.0 == *tp.topic => t.partitions.push(p),
                _ => out.push(
                    CTopicPartitions::default()
                        .with_topic_id(crate::meta::topic_id(req.ctx, &tp.topic))
                        .with_topic_name(tn(&tp.topic))
                        .with_partitions(vec![p]),
                ),
            }
        }
        Assignment::default().with_topic_partitions(out)
    };
    let described = r
        .group_ids
        .into_iter()
        .map(|g| {
            let name = g.0.to_string();
            let mut d = CDescribed::default().with_group_id(g);
            if let Some(code) = not_coordinator(req, &name) {
                d.error_code = code;
                return d;
            }
            if groups.classic_describe(&name).is_some() {
                d.error_code = kafka::GROUP_ID_NOT_FOUND;
                d.error_message = Some(StrBytes::from_static_str("a classic group"));
                return d;
            }
            match groups.describe(&name) {
                Ok(info) => {
                    let desc = info.description;
                    let epoch = i32::try_from(desc.generation).unwrap_or(i32::MAX);
                    d.group_state = sb(match desc.state.name() {
                        "Stable" => "Stable",
                        "Empty" => "Empty",
                        _ => "Reconciling",
                    });
                    d.group_epoch = epoch;
                    d.assignment_epoch = epoch;
                    d.assignor_name = StrBytes::from_static_str("sluice-sticky");
                    d.members = desc
                        .members
                        .iter()
                        .map(|m| {
                            let mut owned = m.assignment.clone();
                            owned.extend(m.revoking.iter().cloned());
                            let mut target = m.assignment.clone();
                            target.extend(m.pending.iter().cloned());
                            target.sort();
                            Member::default()
                                .with_member_id(sb(&m.member_id))
                                .with_member_epoch(epoch)
                                .with_client_id(sb(&m.client_id))
                                .with_subscribed_topic_names(
                                    m.topics.iter().map(|t| tn(t)).collect(),
                                )
                                .with_assignment(assignment(&owned))
                                .with_target_assignment(assignment(&target))
                        })
                        .collect();
                }
                Err(_) => d.error_code = kafka::GROUP_ID_NOT_FOUND,
            }
            d
        })
        .collect();
    req.respond(
        "ConsumerGroupDescribe",
        &ConsumerGroupDescribeResponse::default().with_groups(described),
    )
}
