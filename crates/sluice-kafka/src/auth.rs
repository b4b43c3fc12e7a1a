//! SASL authentication, ACL checks and quotas on the Kafka listener.
//!
//! **SASL** (on a `sasl_plaintext` or `sasl_ssl` listener): Kafka's flow. A
//! client sends SaslHandshake (v0 or v1) naming a mechanism; the answer
//! lists the mechanisms offered to this connection (PLAIN only over TLS
//! unless allowed without) and is `UNSUPPORTED_SASL_MECHANISM` if the name
//! is not one of them.
//! After a v1 handshake the SASL messages travel in SaslAuthenticate
//! requests; after a v0 handshake (clients before KIP-152) they travel as
//! bare length-prefixed tokens with no request header, answered the same
//! way. Until authentication succeeds only ApiVersions, SaslHandshake and
//! SaslAuthenticate are served: anything else closes the connection, as
//! Kafka does. A failed authentication answers `SASL_AUTHENTICATION_FAILED`
//! after the delay [`sluice_broker::security::Security::login_failed`]
//! gives, and the connection serves nothing after it. SaslHandshake on a
//! listener without SASL answers `ILLEGAL_SASL_STATE`.
//!
//! **ACLs** (`authorization = true`): every request is checked before it
//! runs. The table of what each api needs is [`needs`], Kafka's own
//! (e.g. Produce: WRITE on each topic; OffsetCommit: READ on the group and
//! on each topic; CreateTopics: CREATE on the cluster or on the topic).
//! Metadata is filtered instead of refused: topics the principal may not
//! DESCRIBE are left out of an all-topics answer and answered
//! `TOPIC_AUTHORIZATION_FAILED` when named (by id: without the name).
//! ListGroups too, as Kafka: all groups with DESCRIBE on the cluster,
//! else the groups the principal may DESCRIBE. A request that names several
//! resources runs only if every one is allowed; otherwise every entry of
//! the answer carries the error of the first refused one (Kafka answers
//! per entry; a client asking for a resource it may not use in the same
//! request as one it may is refused whole here, and nothing it sent is
//! applied).
//!
//! **Quotas**: the bytes of each Produce, the bytes of each Fetch answer and
//! each request are charged to the principal and client id; when a quota
//! is exceeded the connection is muted (no further request is read) for the
//! throttle time, as Kafka does (KIP-219), and Produce and Fetch answers
//! carry that `throttle_time_ms`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_auth::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use sluice_auth::sasl::{SaslSession, SaslStep};
use sluice_auth::store::{SecurityCommand, SecurityOutcome};
use sluice_broker::security::{MechanismCheck, Need, Security, ANONYMOUS};

use crate::api::Req;
use crate::codes::kafka;
use crate::meta::{sb, topic_name_of};
use crate::{KafkaContext, KafkaError, Reply};

/// Kafka's TOPIC_AUTHORIZATION_FAILED.
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
/// Kafka's GROUP_AUTHORIZATION_FAILED.
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
/// Kafka's CLUSTER_AUTHORIZATION_FAILED.
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
/// Kafka's UNSUPPORTED_SASL_MECHANISM.
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Kafka's ILLEGAL_SASL_STATE.
pub const ILLEGAL_SASL_STATE: i16 = 34;
/// Kafka's TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
/// Kafka's SASL_AUTHENTICATION_FAILED.
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Where a connection is in its authentication.
pub(crate) enum SaslState {
    /// The listener needs no SASL (or it is done): requests are served.
    Open,
    /// SASL is required and no handshake has been made yet.
    AwaitHandshake,
    /// A v1 handshake chose a mechanism: SaslAuthenticate requests carry the exchange.
    Authenticate(Box<SaslSession>, &'static str),
    /// A v0 handshake chose a mechanism: bare tokens carry the exchange.
    RawTokens(Box<SaslSession>, &'static str),
    /// Authentication failed: nothing more is served.
    Failed,
}

/// One connection's identity, SASL progress and quota mute.
pub(crate) struct ConnAuth {
    /// Who the connection is (`User:ANONYMOUS` until authenticated).
    pub principal: Arc<str>,
    /// SASL progress.
    pub state: SaslState,
    /// The user the SASL exchange's first message named (for the failure log).
    pub sasl_user: Option<String>,
    /// The connection runs over TLS.
    pub tls: bool,
    /// No request is read before this instant (quota throttling).
    pub muted_until: Arc<Mutex<Option<Instant>>>,
}

impl ConnAuth {
    /// The starting state of a connection on this listener.
    pub fn new(ctx: &KafkaContext) -> ConnAuth {
        let conn = &ctx.core.conn;
        ConnAuth {
            principal: Arc::from(conn.tls_principal.as_deref().unwrap_or(ANONYMOUS)),
            state: if conn.sasl {
                SaslState::AwaitHandshake
            } else {
                SaslState::Open
            },
            sasl_user: None,
            tls: conn.tls,
            muted_until: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether requests other than the SASL ones are served.
    pub fn authenticated(&self) -> bool {
        matches!(self.state, SaslState::Open)
    }

    /// Mutes the connection for `d` more (from now), keeping a later deadline.
    pub fn mute(&self, d: Duration) {
        mute(&self.muted_until, d);
    }
}

/// Extends a connection's mute deadline to at least now + `d`.
pub(crate) fn mute(cell: &Mutex<Option<Instant>>, d: Duration) {
    if d.is_zero() {
        return;
    }
    let until = Instant::now() + d;
    if let Ok(mut g) = cell.lock() {
        *g = Some(g.map_or(until, |u| u.max(until)));
    }
}

/// The security of the broker behind a request.
fn security<'a>(req: &'a Req<'_>) -> &'a Arc<Security> {
    req.ctx.core.broker.security()
}

fn lookup(
    sec: &Security,
) -> impl Fn(&str, sluice_auth::scram::ScramMechanism) -> Option<sluice_auth::scram::ScramCredential> + '_
{
    move |user, mech| sec.credential(user, mech)
}

/// SaslHandshake: picks the mechanism.
pub(crate) fn sasl_handshake(
    req: &Req<'_>,
    auth: &mut ConnAuth,
    r: SaslHandshakeRequest,
) -> Result<Reply, KafkaError> {
    let sec = security(req);
    // What this connection may use: PLAIN is not offered without TLS unless
    // allowed (librdkafka prints this list when it refuses a mechanism).
    let offered: Vec<StrBytes> = sec
        .mechanism_names()
        .into_iter()
        .filter(|m| matches!(sec.check_mechanism(m, auth.tls), MechanismCheck::Ok(_)))
        .map(sb)
        .collect();
    let resp = |code| {
        SaslHandshakeResponse::default()
            .with_error_code(code)
            .with_mechanisms(offered.clone())
    };
    if !matches!(auth.state, SaslState::AwaitHandshake) {
        return req.respond("SaslHandshake", &resp(ILLEGAL_SASL_STATE));
    }
    let name = r.mechanism.to_string();
    match sec.check_mechanism(&name, auth.tls) {
        MechanismCheck::Ok(m) => {
            let session = Box::new(SaslSession::new(m));
            auth.state = if req.version() == 0 {
                SaslState::RawTokens(session, m.name())
            } else {
                SaslState::Authenticate(session, m.name())
            };
            req.respond("SaslHandshake", &resp(kafka::NONE))
        }
        MechanismCheck::PlainNeedsTls => {
            tracing::warn!(peer = %req.peer, "SASL/PLAIN refused on a connection without TLS");
            req.respond("SaslHandshake", &resp(UNSUPPORTED_SASL_MECHANISM))
        }
        MechanismCheck::Unsupported => {
            req.respond("SaslHandshake", &resp(UNSUPPORTED_SASL_MECHANISM))
        }
    }
}

/// The outcome of one SASL message.
enum Stepped {
    /// Send this challenge or final message.
    Reply(Vec<u8>),
    /// Failed: answer after this delay with this message.
    Failed(Duration, String),
}

fn step(peer: IpAddr, sec: &Security, auth: &mut ConnAuth, input: &[u8]) -> Stepped {
    let (session, mech) = match &mut auth.state {
        SaslState::Authenticate(s, m) | SaslState::RawTokens(s, m) => (s, *m),
        _ => return Stepped::Failed(Duration::ZERO, "no SASL handshake".into()),
    };
    // Only the first message names the user (SCRAM's client-final does
    // not, and its nonce may happen to contain `n=`).
    let user = auth
        .sasl_user
        .get_or_insert_with(|| user_hint(mech, input))
        .clone();
    match session.step(input, &lookup(sec)) {
        Ok(SaslStep::Continue(bytes)) => Stepped::Reply(bytes),
        Ok(SaslStep::Done { principal, reply }) => {
            sec.login_succeeded(peer, &principal, mech);
            auth.principal = Arc::from(principal.as_str());
            auth.state = SaslState::Open;
            Stepped::Reply(reply)
        }
        Err(e) => {
            auth.state = SaslState::Failed;
            let delay = sec.login_failed(peer, &user, mech, &e.to_string());
            Stepped::Failed(
                delay,
                format!(
                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mech}"
                ),
            )
        }
    }
}

/// The user name a SCRAM client-first or PLAIN message names, for the log
/// (best effort, and never a byte of the PLAIN password).
fn user_hint(mech: &str, input: &[u8]) -> String {
    let text = String::from_utf8_lossy(&input[..input.len().min(256)]);
    if mech == "PLAIN" {
        // authzid NUL user NUL password
        return match text.split('\0').collect::<Vec<_>>()[..] {
            [_, user, _] => user.to_string(),
            _ => String::new(),
        };
    }
    // gs2-flag "," [authzid] "," "n=" user "," "r=" nonce ...
    text.split(',')
        .nth(2)
        .and_then(|f| f.strip_prefix("n="))
        .unwrap_or("")
        .to_string()
}

/// SaslAuthenticate: one step of the exchange.
pub(crate) fn sasl_authenticate(
    req: &Req<'_>,
    auth: &mut ConnAuth,
    r: SaslAuthenticateRequest,
) -> Result<Reply, KafkaError> {
    if !matches!(auth.state, SaslState::Authenticate(..)) {
        auth.state = SaslState::Failed;
        return req.respond(
            "SaslAuthenticate",
            &SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(sb("SaslAuthenticate before a SaslHandshake v1"))),
        );
    }
    let sec = Arc::clone(security(req));
    match step(req.peer.ip(), &sec, auth, &r.auth_bytes) {
        Stepped::Reply(bytes) => req.respond(
            "SaslAuthenticate",
            &SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
        ),
        Stepped::Failed(delay, message) => {
            let encode = req.later::<SaslAuthenticateResponse>("SaslAuthenticate");
            Ok(Reply::Later(Box::pin(async move {
                // A failed login's deliberate delay: not a slow request.
                sluice_broker::slow_log::parked(tokio::time::sleep(delay)).await;
                encode(
                    &SaslAuthenticateResponse::default()
                        .with_error_code(SASL_AUTHENTICATION_FAILED)
                        .with_error_message(Some(sb(&message))),
                )
            })))
        }
    }
}

/// A bare SASL token after a v0 handshake: answered as a bare token, or the connection closes.
pub(crate) fn raw_token(
    ctx: &KafkaContext,
    peer: std::net::SocketAddr,
    auth: &mut ConnAuth,
    payload: &[u8],
) -> Result<Reply, KafkaError> {
    let sec = Arc::clone(ctx.core.broker.security());
    match step(peer.ip(), &sec, auth, payload) {
        Stepped::Reply(bytes) => {
            let mut buf = BytesMut::with_capacity(4 + bytes.len());
            buf.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            buf.put_slice(&bytes);
            Ok(Reply::Now(vec![buf.freeze()]))
        }
        // A v0 exchange has no error message: Kafka closes the connection.
        Stepped::Failed(delay, _) => Ok(Reply::Later(Box::pin(async move {
            sluice_broker::slow_log::parked(tokio::time::sleep(delay)).await;
            None
        }))),
    }
}

fn need(op: Operation, rt: ResourceType, name: impl Into<String>) -> Need {
    Need::on(op, rt, name)
}

fn cluster(op: Operation) -> Need {
    Need::cluster(op)
}

fn topics<'a>(op: Operation, names: impl Iterator<Item = &'a str>) -> Vec<Need> {
    Need::topics(op, names)
}

/// Kafka config resource types in DescribeConfigs/IncrementalAlterConfigs.
fn config_resource(op: Operation, resource_type: i8, name: &str) -> Need {
    match resource_type {
        2 => need(op, ResourceType::Topic, name),
        _ => cluster(op),
    }
}

/// What each api needs permission for (Kafka's table; see the module docs).
pub(crate) fn needs(ctx: &KafkaContext, body: &RequestKind) -> Vec<Need> {
    use Operation as Op;
    use ResourceType as Rt;
    let id_name = |id| topic_name_of(ctx, id);
    match body {
        RequestKind::Produce(r) => {
            topics(Op::Write, r.topic_data.iter().map(|t| t.name.0.as_str()))
        }
        RequestKind::Fetch(r) => r
            .topics
            .iter()
            .filter_map(|t| {
                if t.topic.0.is_empty() {
                    id_name(t.topic_id)
                } else {
                    Some(t.topic.0.to_string())
                }
            })
            .map(|n| need(Op::Read, Rt::Topic, n))
            .collect(),
        RequestKind::ListOffsets(r) => {
            topics(Op::Describe, r.topics.iter().map(|t| t.name.0.as_str()))
        }
        RequestKind::OffsetCommit(r) => {
            let mut v = vec![need(Op::Read, Rt::Group, r.group_id.0.as_str())];
            v.extend(topics(Op::Read, r.topics.iter().map(|t| t.name.0.as_str())));
            v
        }
        RequestKind::OffsetFetch(r) => {
            let mut v = Vec::new();
            if r.groups.is_empty() {
                v.push(need(Op::Describe, Rt::Group, r.group_id.0.as_str()));
                if let Some(ts) = &r.topics {
                    v.extend(topics(Op::Describe, ts.iter().map(|t| t.name.0.as_str())));
                }
            }
            for g in &r.groups {
                v.push(need(Op::Describe, Rt::Group, g.group_id.0.as_str()));
                if let Some(ts) = &g.topics {
                    v.extend(topics(Op::Describe, ts.iter().map(|t| t.name.0.as_str())));
                }
            }
            v
        }
        RequestKind::FindCoordinator(r) => {
            let rt = if r.key_type == 1 {
                Rt::TransactionalId
            } else {
                Rt::Group
            };
            let mut keys: Vec<&str> = r.coordinator_keys.iter().map(|k| k.as_str()).collect();
            if keys.is_empty() {
                keys.push(r.key.as_str());
            }
            keys.into_iter()
                .map(|k| need(Op::Describe, rt, k))
                .collect()
        }
        RequestKind::JoinGroup(r) => vec![need(Op::Read, Rt::Group, r.group_id.0.as_str())],
        RequestKind::SyncGroup(r) => vec![need(Op::Read, Rt::Group, r.group_id.0.as_str())],
        RequestKind::Heartbeat(r) => vec![need(Op::Read, Rt::Group, r.group_id.0.as_str())],
        RequestKind::LeaveGroup(r) => vec![need(Op::Read, Rt::Group, r.group_id.0.as_str())],
        RequestKind::DescribeGroups(r) => r
            .groups
            .iter()
            .map(|g| need(Op::Describe, Rt::Group, g.0.as_str()))
            .collect(),
        // ListGroups is filtered in its handler instead (as Kafka does).
        RequestKind::DeleteGroups(r) => r
            .groups_names
            .iter()
            .map(|g| need(Op::Delete, Rt::Group, g.0.as_str()))
            .collect(),
        RequestKind::OffsetDelete(r) => {
            let mut v = vec![need(Op::Delete, Rt::Group, r.group_id.0.as_str())];
            v.extend(topics(Op::Read, r.topics.iter().map(|t| t.name.0.as_str())));
            v
        }
        RequestKind::CreateTopics(r) => r
            .topics
            .iter()
            .map(|t| Need::create_topic(&t.name.0))
            .collect(),
        RequestKind::DeleteTopics(r) => {
            let mut names: Vec<String> = r.topic_names.iter().map(|n| n.0.to_string()).collect();
            names.extend(r.topics.iter().filter_map(|t| match &t.name {
                Some(n) => Some(n.0.to_string()),
                None => id_name(t.topic_id),
            }));
            names
                .into_iter()
                .map(|n| need(Op::Delete, Rt::Topic, n))
                .collect()
        }
        RequestKind::CreatePartitions(r) => {
            topics(Op::Alter, r.topics.iter().map(|t| t.name.0.as_str()))
        }
        RequestKind::DescribeConfigs(r) => r
            .resources
            .iter()
            .map(|c| config_resource(Op::DescribeConfigs, c.resource_type, &c.resource_name))
            .collect(),
        RequestKind::IncrementalAlterConfigs(r) => r
            .resources
            .iter()
            .map(|c| config_resource(Op::AlterConfigs, c.resource_type, &c.resource_name))
            .collect(),
        RequestKind::DeleteRecords(r) => {
            topics(Op::Delete, r.topics.iter().map(|t| t.name.0.as_str()))
        }
        RequestKind::InitProducerId(r) => match &r.transactional_id {
            Some(t) if !t.0.is_empty() => {
                vec![need(Op::Write, Rt::TransactionalId, t.0.as_str())]
            }
            _ => vec![Need::idempotent_write()],
        },
        RequestKind::DescribeCluster(_) => vec![cluster(Op::Describe)],
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let mut v = vec![need(Op::Read, Rt::Group, r.group_id.0.as_str())];
            if let Some(ts) = &r.subscribed_topic_names {
                v.extend(topics(Op::Describe, ts.iter().map(|t| t.0.as_str())));
            }
            v
        }
        RequestKind::ConsumerGroupDescribe(r) => r
            .group_ids
            .iter()
            .map(|g| need(Op::Describe, Rt::Group, g.0.as_str()))
            .collect(),
        RequestKind::CreateAcls(_) | RequestKind::DeleteAcls(_) => vec![cluster(Op::Alter)],
        RequestKind::DescribeAcls(_) | RequestKind::DescribeUserScramCredentials(_) => {
            vec![cluster(Op::Describe)]
        }
        RequestKind::AlterUserScramCredentials(_) => vec![cluster(Op::Alter)],
        RequestKind::DescribeClientQuotas(_) => vec![cluster(Op::DescribeConfigs)],
        RequestKind::AlterClientQuotas(_) => vec![cluster(Op::AlterConfigs)],
        // ApiVersions, the SASL apis, and Metadata (filtered in its handler).
        _ => Vec::new(),
    }
}

/// The Kafka error for a refusal on `rt`.
fn refusal_code(rt: ResourceType) -> i16 {
    match rt {
        ResourceType::Topic => TOPIC_AUTHORIZATION_FAILED,
        ResourceType::Group => GROUP_AUTHORIZATION_FAILED,
        ResourceType::TransactionalId => TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        _ => CLUSTER_AUTHORIZATION_FAILED,
    }
}

/// `None` when every need is allowed, else the error code of the first refused one.
pub(crate) fn check(
    ctx: &KafkaContext,
    principal: &str,
    host: IpAddr,
    body: &RequestKind,
) -> Option<i16> {
    let (op, rt, name) = ctx
        .core
        .broker
        .security()
        .first_refused(principal, host, || needs(ctx, body))?;
    tracing::info!(principal, %host, operation = %op, resource = %rt, name, "request refused by ACLs");
    Some(refusal_code(rt))
}

/// Whether the request's principal may DESCRIBE topic `name` (Metadata filtering).
pub(crate) fn may_describe_topic(req: &Req<'_>, name: &str) -> bool {
    security(req).allowed(
        &req.principal,
        req.peer.ip(),
        Operation::Describe,
        ResourceType::Topic,
        name,
    )
}

/// Whether the request's principal may see every group in ListGroups
/// (DESCRIBE on the cluster); otherwise it sees those it may DESCRIBE.
pub(crate) fn may_list_all_groups(req: &Req<'_>) -> bool {
    security(req).cluster_allowed(&req.principal, req.peer.ip(), Operation::Describe)
}

/// Whether the request's principal may DESCRIBE group `name`.
pub(crate) fn may_describe_group(req: &Req<'_>, name: &str) -> bool {
    security(req).allowed(
        &req.principal,
        req.peer.ip(),
        Operation::Describe,
        ResourceType::Group,
        name,
    )
}

/// Whether the request's principal may auto-create topic `name`.
pub(crate) fn may_create_topic(req: &Req<'_>, name: &str) -> bool {
    let sec = security(req);
    let host = req.peer.ip();
    sec.cluster_allowed(&req.principal, host, Operation::Create)
        || sec.allowed(
            &req.principal,
            host,
            Operation::Create,
            ResourceType::Topic,
            name,
        )
}

/// The answer to a request refused with `code`: every entry carries it.
pub(crate) fn refuse(req: &Req<'_>, body: RequestKind, code: i16) -> Result<Reply, KafkaError> {
    use kafka_protocol::messages as m;
    let s = |x: &StrBytes| x.clone();
    match body {
        RequestKind::Produce(r) => crate::data::produce_refused(req, &r, code),
        RequestKind::Fetch(r) => crate::fetch::fetch_refused(req, &r, code),
        RequestKind::ListOffsets(r) => req.respond(
            "ListOffsets",
            &ListOffsetsResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        m::list_offsets_response::ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        m::list_offsets_response::ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                            .with_timestamp(-1)
                                            .with_offset(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetCommit(r) => req.respond(
            "OffsetCommit",
            &OffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        m::offset_commit_response::OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        m::offset_commit_response::OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetFetch(r) => {
            // v8+ answers per group; v2-7 with a top-level code; v0-1 have
            // only per-partition codes, so each partition asked carries it.
            let v = req.version();
            let body = if v >= 8 {
                OffsetFetchResponse::default().with_groups(
                    r.groups
                        .iter()
                        .map(|g| {
                            m::offset_fetch_response::OffsetFetchResponseGroup::default()
                                .with_group_id(g.group_id.clone())
                                .with_error_code(code)
                        })
                        .collect(),
                )
            } else if v >= 2 {
                OffsetFetchResponse::default().with_error_code(code)
            } else {
                OffsetFetchResponse::default().with_topics(
                    r.topics
                        .iter()
                        .flatten()
                        .map(|t| {
                            m::offset_fetch_response::OffsetFetchResponseTopic::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partition_indexes
                                        .iter()
                                        .map(|p| {
                                            m::offset_fetch_response::OffsetFetchResponsePartition::default()
                                                .with_partition_index(*p)
                                                .with_committed_offset(-1)
                                                .with_error_code(code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
            };
            req.respond("OffsetFetch", &body)
        }
        RequestKind::FindCoordinator(r) => {
            // v4+ answers per key and has no top-level fields; before, one key.
            let body = if req.version() >= 4 {
                FindCoordinatorResponse::default().with_coordinators(
                    r.coordinator_keys
                        .iter()
                        .map(|k| {
                            m::find_coordinator_response::Coordinator::default()
                                .with_key(s(k))
                                .with_node_id(BrokerId(-1))
                                .with_port(-1)
                                .with_error_code(code)
                        })
                        .collect(),
                )
            } else {
                FindCoordinatorResponse::default()
                    .with_error_code(code)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
            };
            req.respond("FindCoordinator", &body)
        }
        RequestKind::JoinGroup(_) => req.respond(
            "JoinGroup",
            &JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1),
        ),
        RequestKind::SyncGroup(_) => {
            req.respond("SyncGroup", &SyncGroupResponse::default().with_error_code(code))
        }
        RequestKind::Heartbeat(_) => {
            req.respond("Heartbeat", &HeartbeatResponse::default().with_error_code(code))
        }
        RequestKind::LeaveGroup(_) => {
            req.respond("LeaveGroup", &LeaveGroupResponse::default().with_error_code(code))
        }
        RequestKind::DescribeGroups(r) => req.respond(
            "DescribeGroups",
            &DescribeGroupsResponse::default().with_groups(
                r.groups
                    .iter()
                    .map(|g| {
                        m::describe_groups_response::DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::ListGroups(_) => {
            req.respond("ListGroups", &ListGroupsResponse::default().with_error_code(code))
        }
        RequestKind::DeleteGroups(r) => req.respond(
            "DeleteGroups",
            &DeleteGroupsResponse::default().with_results(
                r.groups_names
                    .iter()
                    .map(|g| {
                        m::delete_groups_response::DeletableGroupResult::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetDelete(_) => {
            req.respond("OffsetDelete", &OffsetDeleteResponse::default().with_error_code(code))
        }
        RequestKind::CreateTopics(r) => req.respond(
            "CreateTopics",
            &CreateTopicsResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        m::create_topics_response::CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(code)
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            ),
        ),
        RequestKind::DeleteTopics(r) => {
            let mut out: Vec<_> = r
                .topic_names
                .iter()
                .map(|n| {
                    m::delete_topics_response::DeletableTopicResult::default()
                        .with_name(Some(n.clone()))
                        .with_error_code(code)
                })
                .collect();
            out.extend(r.topics.iter().map(|t| {
                m::delete_topics_response::DeletableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_error_code(code)
            }));
            req.respond(
                "DeleteTopics",
                &DeleteTopicsResponse::default().with_responses(out),
            )
        }
        RequestKind::CreatePartitions(r) => req.respond(
            "CreatePartitions",
            &CreatePartitionsResponse::default().with_results(
                r.topics
                    .iter()
                    .map(|t| {
                        m::create_partitions_response::CreatePartitionsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::DescribeConfigs(r) => req.respond(
            "DescribeConfigs",
            &DescribeConfigsResponse::default().with_results(
                r.resources
                    .iter()
                    .map(|c| {
                        m::describe_configs_response::DescribeConfigsResult::default()
                            .with_error_code(code)
                            .with_resource_type(c.resource_type)
                            .with_resource_name(s(&c.resource_name))
                    })
                    .collect(),
            ),
        ),
        RequestKind::IncrementalAlterConfigs(r) => req.respond(
            "IncrementalAlterConfigs",
            &IncrementalAlterConfigsResponse::default().with_responses(
                r.resources
                    .iter()
                    .map(|c| {
                        m::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_error_code(code)
                            .with_resource_type(c.resource_type)
                            .with_resource_name(s(&c.resource_name))
                    })
                    .collect(),
            ),
        ),
        RequestKind::DeleteRecords(r) => req.respond(
            "DeleteRecords",
            &DeleteRecordsResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        m::delete_records_response::DeleteRecordsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        m::delete_records_response::DeleteRecordsPartitionResult::default()
                                            .with_partition_index(p.partition_index)
                                            .with_low_watermark(-1)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        RequestKind::InitProducerId(_) => req.respond(
            "InitProducerId",
            &InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        RequestKind::DescribeCluster(_) => req.respond(
            "DescribeCluster",
            &DescribeClusterResponse::default()
                .with_error_code(code)
                .with_controller_id(BrokerId(-1)),
        ),
        RequestKind::ConsumerGroupHeartbeat(_) => req.respond(
            "ConsumerGroupHeartbeat",
            &ConsumerGroupHeartbeatResponse::default().with_error_code(code),
        ),
        RequestKind::ConsumerGroupDescribe(r) => req.respond(
            "ConsumerGroupDescribe",
            &ConsumerGroupDescribeResponse::default().with_groups(
                r.group_ids
                    .iter()
                    .map(|g| {
                        m::consumer_group_describe_response::DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        RequestKind::CreateAcls(r) => req.respond(
            "CreateAcls",
            &CreateAclsResponse::default().with_results(
                r.creations
                    .iter()
                    .map(|_| AclCreationResult::default().with_error_code(code))
                    .collect(),
            ),
        ),
        RequestKind::DescribeAcls(_) => {
            req.respond("DescribeAcls", &DescribeAclsResponse::default().with_error_code(code))
        }
        RequestKind::DeleteAcls(r) => req.respond(
            "DeleteAcls",
            &DeleteAclsResponse::default().with_filter_results(
                r.filters
                    .iter()
                    .map(|_| DeleteAclsFilterResult::default().with_error_code(code))
                    .collect(),
            ),
        ),
        RequestKind::DescribeUserScramCredentials(_) => req.respond(
            "DescribeUserScramCredentials",
            &DescribeUserScramCredentialsResponse::default().with_error_code(code),
        ),
        RequestKind::AlterUserScramCredentials(r) => {
            let mut users: Vec<StrBytes> = r.deletions.iter().map(|d| d.name.clone()).collect();
            users.extend(r.upsertions.iter().map(|u| u.name.clone()));
            users.dedup();
            req.respond(
                "AlterUserScramCredentials",
                &AlterUserScramCredentialsResponse::default().with_results(
                    users
                        .into_iter()
                        .map(|u| {
                            m::alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                                .with_user(u)
                                .with_error_code(code)
                        })
                        .collect(),
                ),
            )
        }
        RequestKind::DescribeClientQuotas(_) => req.respond(
            "DescribeClientQuotas",
            &DescribeClientQuotasResponse::default().with_error_code(code),
        ),
        RequestKind::AlterClientQuotas(r) => req.respond(
            "AlterClientQuotas",
            &AlterClientQuotasResponse::default().with_entries(
                r.entries
                    .iter()
                    .map(|e| {
                        m::alter_client_quotas_response::EntryData::default()
                            .with_error_code(code)
                            .with_entity(
                                e.entity
                                    .iter()
                                    .map(|x| {
                                        m::alter_client_quotas_response::EntityData::default()
                                            .with_entity_type(x.entity_type.clone())
                                            .with_entity_name(x.entity_name.clone())
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        other => Err(KafkaError::Encode {
            api: "request",
            version: req.version(),
            reason: format!("no refusal answer for {other:?}"),
        }),
    }
}

fn opt_name(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|x| x.to_string())
}

/// A Kafka ACL filter from the wire (`None` where the filter says "any").
fn filter_of(
    rt: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    op: i8,
    perm: i8,
) -> Result<AclFilter, String> {
    let rt = ResourceType::from_i8(rt).ok_or(format!("unknown resource type {rt}"))?;
    let pattern = PatternType::from_i8(pattern).ok_or(format!("unknown pattern type {pattern}"))?;
    let op = Operation::from_i8(op).ok_or(format!("unknown operation {op}"))?;
    let perm = Permission::from_i8(perm).ok_or(format!("unknown permission type {perm}"))?;
    Ok(AclFilter {
        resource_type: (rt != ResourceType::Any).then_some(rt),
        name: opt_name(name),
        pattern: (pattern != PatternType::Any).then_some(pattern),
        principal: opt_name(principal),
        host: opt_name(host),
        operation: (op != Operation::Any).then_some(op),
        permission: (perm != Permission::Any).then_some(perm),
    })
}

/// Runs a security metadata change and encodes its answer when it is applied.
fn apply_later<R, F>(req: &Req<'_>, api: &'static str, cmd: SecurityCommand, answer: F) -> Reply
where
    R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
    F: FnOnce(Result<SecurityOutcome, String>) -> R + Send + 'static,
{
    let broker = Arc::clone(&req.ctx.core.broker);
    let encode = req.later::<R>(api);
    Reply::Later(Box::pin(async move {
        let out = sluice_broker::security::apply(&broker, cmd)
            .await
            .map_err(|e| e.to_string());
        encode(&answer(out))
    }))
}

/// CreateAcls.
pub(crate) fn create_acls(req: &Req<'_>, r: CreateAclsRequest) -> Result<Reply, KafkaError> {
    let mut bindings = Vec::new();
    let mut errors: Vec<Option<String>> = Vec::new();
    for c in &r.creations {
        let b = (|| -> Result<AclBinding, String> {
            let b = AclBinding {
                resource_type: ResourceType::from_i8(c.resource_type)
                    .ok_or(format!("unknown resource type {}", c.resource_type))?,
                name: c.resource_name.to_string(),
                pattern: PatternType::from_i8(c.resource_pattern_type)
                    .ok_or(format!("unknown pattern type {}", c.resource_pattern_type))?,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: Operation::from_i8(c.operation)
                    .ok_or(format!("unknown operation {}", c.operation))?,
                permission: Permission::from_i8(c.permission_type)
                    .ok_or(format!("unknown permission {}", c.permission_type))?,
            };
            b.validate().map_err(|e| e.to_string())?;
            Ok(b)
        })();
        match b {
            Ok(b) => {
                bindings.push(b);
                errors.push(None);
            }
            Err(e) => errors.push(Some(e)),
        }
    }
    let result = |e: &Option<String>| match e {
        None => AclCreationResult::default(),
        Some(m) => AclCreationResult::default()
            .with_error_code(kafka::INVALID_REQUEST)
            .with_error_message(Some(sb(m))),
    };
    if bindings.is_empty() {
        return req.respond(
            "CreateAcls",
            &CreateAclsResponse::default().with_results(errors.iter().map(result).collect()),
        );
    }
    Ok(apply_later(
        req,
        "CreateAcls",
        SecurityCommand::CreateAcls { bindings },
        move |out| {
            let results = errors
                .iter()
                .map(|e| match (&out, e) {
                    (Err(m), None) => AclCreationResult::default()
                        .with_error_code(kafka::UNKNOWN_SERVER_ERROR)
                        .with_error_message(Some(sb(m))),
                    _ => result(e),
                })
                .collect();
            CreateAclsResponse::default().with_results(results)
        },
    ))
}

fn binding_resource_key(b: &AclBinding) -> (i8, String, i8) {
    (b.resource_type.to_i8(), b.name.clone(), b.pattern.to_i8())
}

/// DescribeAcls.
pub(crate) fn describe_acls(req: &Req<'_>, r: DescribeAclsRequest) -> Result<Reply, KafkaError> {
    let filter = match filter_of(
        r.resource_type_filter,
        &r.resource_name_filter,
        r.pattern_type_filter,
        &r.principal_filter,
        &r.host_filter,
        r.operation,
        r.permission_type,
    ) {
        Ok(f) => f,
        Err(m) => {
            return req.respond(
                "DescribeAcls",
                &DescribeAclsResponse::default()
                    .with_error_code(kafka::INVALID_REQUEST)
                    .with_error_message(Some(sb(&m))),
            )
        }
    };
    let mut grouped: std::collections::BTreeMap<(i8, String, i8), Vec<AclDescription>> =
        std::collections::BTreeMap::new();
    for b in security(req).acls().iter().filter(|b| filter.matches(b)) {
        grouped.entry(binding_resource_key(b)).or_default().push(
            AclDescription::default()
                .with_principal(sb(&b.principal))
                .with_host(sb(&b.host))
                .with_operation(b.operation.to_i8())
                .with_permission_type(b.permission.to_i8()),
        );
    }
    let resources = grouped
        .into_iter()
        .map(|((rt, name, pt), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt)
                .with_resource_name(sb(&name))
                .with_pattern_type(pt)
                .with_acls(acls)
        })
        .collect();
    req.respond(
        "DescribeAcls",
        &DescribeAclsResponse::default().with_resources(resources),
    )
}

/// DeleteAcls.
pub(crate) fn delete_acls(req: &Req<'_>, r: DeleteAclsRequest) -> Result<Reply, KafkaError> {
    let mut filters = Vec::new();
    for f in &r.filters {
        match filter_of(
            f.resource_type_filter,
            &f.resource_name_filter,
            f.pattern_type_filter,
            &f.principal_filter,
            &f.host_filter,
            f.operation,
            f.permission_type,
        ) {
            Ok(f) => filters.push(f),
            Err(m) => {
                let results = r
                    .filters
                    .iter()
                    .map(|_| {
                        DeleteAclsFilterResult::default()
                            .with_error_code(kafka::INVALID_REQUEST)
                            .with_error_message(Some(sb(&m)))
                    })
                    .collect();
                return req.respond(
                    "DeleteAcls",
                    &DeleteAclsResponse::default().with_filter_results(results),
                );
            }
        }
    }
    let n = filters.len();
    Ok(apply_later(
        req,
        "DeleteAcls",
        SecurityCommand::DeleteAcls { filters },
        move |out| {
            let results = match out {
                Ok(SecurityOutcome::Deleted(per_filter)) => per_filter
                    .into_iter()
                    .map(|deleted| {
                        DeleteAclsFilterResult::default().with_matching_acls(
                            deleted
                                .iter()
                                .map(|b| {
                                    DeleteAclsMatchingAcl::default()
                                        .with_resource_type(b.resource_type.to_i8())
                                        .with_resource_name(sb(&b.name))
                                        .with_pattern_type(b.pattern.to_i8())
                                        .with_principal(sb(&b.principal))
                                        .with_host(sb(&b.host))
                                        .with_operation(b.operation.to_i8())
                                        .with_permission_type(b.permission.to_i8())
                                })
                                .collect(),
                        )
                    })
                    .collect(),
                Ok(_) => (0..n).map(|_| DeleteAclsFilterResult::default()).collect(),
                Err(m) => (0..n)
                    .map(|_| {
                        DeleteAclsFilterResult::default()
                            .with_error_code(kafka::UNKNOWN_SERVER_ERROR)
                            .with_error_message(Some(sb(&m)))
                    })
                    .collect(),
            };
            DeleteAclsResponse::default().with_filter_results(results)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::user_hint;

    #[test]
    fn user_hint_names_the_user_and_never_the_password() {
        assert_eq!(user_hint("SCRAM-SHA-256", b"n,,n=alice,r=abc"), "alice");
        assert_eq!(
            user_hint("SCRAM-SHA-512", b"n,a=alice,n=alice,r=n=x"),
            "alice"
        );
        // A client-final names no user.
        assert_eq!(user_hint("SCRAM-SHA-256", b"c=biws,r=n=oops,p=AA=="), "");
        assert_eq!(user_hint("PLAIN", b"\0bob\0pass,n=word"), "bob");
        assert_eq!(user_hint("PLAIN", b"admin\0bob\0n=secret"), "bob");
        assert_eq!(user_hint("PLAIN", b"n=secret"), "");
    }
}
