//! Security on the native protocol: SASL per connection, the ACL check of
//! every request, the filtered answers, and the security admin apis.
//!
//! The policy (principals, PLAIN only over TLS, failed-login delays,
//! super users, quotas) is [`crate::security`]'s; this module applies it
//! to native requests, mirroring the Kafka front end (`sluice-kafka`'s
//! `auth.rs`), so that a principal gets the same answer on both protocols.
//!
//! - **SASL** ([`ConnAuth`]): on a `sasl_*` listener a connection starts in
//!   [`SaslState::AwaitHandshake`]; only ApiVersions, SaslHandshake and
//!   SaslAuthenticate are served until a SASL exchange succeeds. Any other
//!   request is answered `ILLEGAL_SASL_STATE` (a header-level error) and the
//!   connection is closed after that answer, with a log line: a client
//!   without credentials learns why instead of seeing a bare disconnect. A
//!   failed exchange is answered `SASL_AUTHENTICATION_FAILED` after the
//!   delay [`Security::login_failed`] gives (a timer in a deferred answer,
//!   not a blocked reader), then the connection closes.
//! - **ACLs** ([`needs`], [`check`]): what each api needs is one exhaustive
//!   `match` over [`Request`] (no catch-all arm, so a new api cannot be
//!   added without deciding what it needs); the table is in `protocol.md`
//!   ("Authentication"). A request is run only if every resource it names
//!   is allowed; otherwise it is answered with the refusal code of the
//!   first refused resource and nothing of it is applied.
//! - **Filtered answers** ([`ResponseFilter`]): Metadata leaves out topics
//!   the principal may not DESCRIBE (or answers `TOPIC_AUTHORIZATION_FAILED`
//!   for a named one), ListGroups the groups it may not DESCRIBE (unless it
//!   may DESCRIBE the cluster), and an OffsetFetch of every topic of a group
//!   the topics it may not DESCRIBE.
//! - **Admin apis**: users, ACLs and quotas change through
//!   [`crate::security::apply`] (the local store's fsync on a single node,
//!   the controller's commit in a cluster), so their handlers are deferred.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_auth::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use sluice_auth::quota::{EntityName, QuotaEntity, QuotaValues};
use sluice_auth::sasl::{SaslSession, SaslStep};
use sluice_auth::scram::{ScramCredential, ScramMechanism};
use sluice_auth::store::{SecurityCommand, SecurityOutcome};
use sluice_protocol::{
    AclEntry, AclFilterEntry, AdminResult, AlterQuotasResponse, AlterUserScramCredentialsResponse,
    CreateAclsResponse, CredentialInfo, DeleteAclsResponse, DeleteAclsResult, DescribeAclsResponse,
    DescribeQuotasResponse, DescribeUsersResponse, DescribedUser, ErrorCode, QuotaEntityKey,
    QuotaEntityName, QuotaEntry, QuotaRates, Request, Response, SaslAuthenticateResponse,
    SaslHandshakeResponse, ScramMechanismType,
};

use crate::codes::WireCode;
use crate::error::chain;
use crate::handler::{Context, Outcome};
use crate::security::{MechanismCheck, Need, Security, ANONYMOUS};

/// Where a native connection is in its authentication.
pub(crate) enum SaslState {
    /// Requests are served (no SASL on this listener, or it succeeded).
    Open,
    /// SASL is required and no mechanism has been chosen yet.
    AwaitHandshake,
    /// A handshake chose this mechanism; SaslAuthenticate carries the exchange.
    Authenticating(Box<SaslSession>, &'static str),
    /// Authentication failed: nothing more is served.
    Failed,
}

/// One native connection's identity, SASL progress, quota mute and pending close.
pub(crate) struct ConnAuth {
    /// `User:ANONYMOUS`, the mTLS principal, or `User:<name>` after SASL.
    pub principal: Arc<str>,
    /// SASL progress.
    pub state: SaslState,
    /// The listener requires SASL.
    pub sasl: bool,
    /// The connection runs over TLS (PLAIN is refused without it unless allowed).
    pub tls: bool,
    /// No request is read before this instant (quota throttling).
    pub muted_until: Arc<Mutex<Option<Instant>>>,
    /// Close the connection once the queued answers are written, for this reason.
    pub close: Option<String>,
}

impl ConnAuth {
    /// The starting state of a connection with `ctx.conn`'s transport.
    pub fn new(ctx: &Context) -> ConnAuth {
        let conn = &ctx.conn;
        ConnAuth {
            principal: Arc::from(conn.tls_principal.as_deref().unwrap_or(ANONYMOUS)),
            state: if conn.sasl {
                SaslState::AwaitHandshake
            } else {
                SaslState::Open
            },
            sasl: conn.sasl,
            tls: conn.tls,
            muted_until: Arc::new(Mutex::new(None)),
            close: None,
        }
    }

    /// Whether requests other than ApiVersions and the SASL ones are served.
    pub fn authenticated(&self) -> bool {
        matches!(self.state, SaslState::Open)
    }

    /// The mute deadline, if any.
    pub fn muted_until(&self) -> Option<Instant> {
        self.muted_until.lock().ok().and_then(|g| *g)
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

/// SaslHandshake on a SASL listener.
pub(crate) fn sasl_handshake(sec: &Security, auth: &mut ConnAuth, mechanism: &str) -> Response {
    let mechanisms: Vec<String> = sec
        .mechanism_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let answer = |error| Response::SaslHandshake(SaslHandshakeResponse { error, mechanisms });
    if !matches!(auth.state, SaslState::AwaitHandshake) {
        auth.close = Some("SaslHandshake out of sequence".into());
        return answer(ErrorCode::IllegalSaslState);
    }
    match sec.check_mechanism(mechanism, auth.tls) {
        MechanismCheck::Ok(m) => {
            auth.state = SaslState::Authenticating(Box::new(SaslSession::new(m)), m.name());
            answer(ErrorCode::None)
        }
        MechanismCheck::PlainNeedsTls => {
            tracing::warn!("SASL/PLAIN refused on a native connection without TLS");
            answer(ErrorCode::UnsupportedSaslMechanism)
        }
        MechanismCheck::Unsupported => answer(ErrorCode::UnsupportedSaslMechanism),
    }
}

/// What a SaslAuthenticate turned into.
pub(crate) enum Authenticated {
    /// Answer now.
    Now(Response),
    /// Answer after this delay (a failed login).
    Delayed(Duration, Response),
}

/// SaslAuthenticate on a SASL listener: one step of the exchange.
pub(crate) fn sasl_authenticate(
    sec: &Security,
    peer: IpAddr,
    auth: &mut ConnAuth,
    input: &[u8],
) -> Authenticated {
    let answer = |error, error_message: String, auth_bytes: Vec<u8>| {
        Response::SaslAuthenticate(SaslAuthenticateResponse {
            error,
            error_message,
            auth_bytes: Bytes::from(auth_bytes),
        })
    };
    let SaslState::Authenticating(session, mech) = &mut auth.state else {
        auth.state = SaslState::Failed;
        auth.close = Some("SaslAuthenticate out of sequence".into());
        return Authenticated::Now(answer(
            ErrorCode::IllegalSaslState,
            "SaslAuthenticate without a SaslHandshake".into(),
            Vec::new(),
        ));
    };
    let mech = *mech;
    let lookup = |user: &str, m: ScramMechanism| sec.credential(user, m);
    match session.step(input, &lookup) {
        Ok(SaslStep::Continue(reply)) => {
            Authenticated::Now(answer(ErrorCode::None, String::new(), reply))
        }
        Ok(SaslStep::Done { principal, reply }) => {
            sec.login_succeeded(peer, &principal, mech);
            auth.principal = Arc::from(principal.as_str());
            auth.state = SaslState::Open;
            Authenticated::Now(answer(ErrorCode::None, String::new(), reply))
        }
        Err(e) => {
            auth.state = SaslState::Failed;
            auth.close = Some(format!("SASL/{mech} authentication failed"));
            let delay = sec.login_failed(peer, &user_hint(input), mech, &e.to_string());
            Authenticated::Delayed(
                delay,
                answer(
                    ErrorCode::SaslAuthenticationFailed,
                    format!("authentication failed (SASL mechanism {mech})"),
                    Vec::new(),
                ),
            )
        }
    }
}

/// The user a SCRAM client-first or PLAIN message names, for the log (best effort).
fn user_hint(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(&input[..input.len().min(256)]);
    if let Some(i) = text.find("n=") {
        return text[i + 2..].split(',').next().unwrap_or("").to_string();
    }
    text.split('\0').nth(1).unwrap_or("").to_string()
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

/// Whether a produce to `name` would auto-create it.
fn would_auto_create(ctx: &Context, name: &str) -> bool {
    if !ctx.broker.auto_creates_topics() {
        return false;
    }
    match ctx.broker.cluster_view() {
        Some(view) => !view.topics.contains_key(name),
        None => ctx.broker.topics().get(name).is_none(),
    }
}

/// What each native api needs (see the module docs and `protocol.md`).
/// Exhaustive on purpose: a new api must say what it needs.
pub(crate) fn needs(ctx: &Context, request: &Request) -> Vec<Need> {
    use Operation as Op;
    use ResourceType as Rt;
    match request {
        Request::ApiVersions | Request::SaslHandshake(_) | Request::SaslAuthenticate(_) => {
            Vec::new()
        }
        // Filtered, not refused (see ResponseFilter).
        Request::Metadata(_) | Request::ListGroups => Vec::new(),
        Request::CreateTopics(r) => r
            .topics
            .iter()
            .map(|t| Need::create_topic(&t.name))
            .collect(),
        Request::DeleteTopics(r) => topics(Op::Delete, r.topics.iter().map(String::as_str)),
        Request::Produce(r) => {
            let mut v = topics(Op::Write, r.topics.iter().map(|t| t.name.as_str()));
            v.extend(
                r.topics
                    .iter()
                    .filter(|t| would_auto_create(ctx, &t.name))
                    .map(|t| Need::create_topic(&t.name)),
            );
            v
        }
        Request::Fetch(r) => topics(Op::Read, r.topics.iter().map(|t| t.name.as_str())),
        Request::ListOffsets(r) => topics(Op::Describe, r.topics.iter().map(|t| t.name.as_str())),
        Request::JoinGroup(r) => {
            let mut v = vec![need(Op::Read, Rt::Group, r.group_id.as_str())];
            v.extend(topics(Op::Describe, r.topics.iter().map(String::as_str)));
            v
        }
        Request::Heartbeat(r) => vec![need(Op::Read, Rt::Group, r.group_id.as_str())],
        Request::LeaveGroup(r) => vec![need(Op::Read, Rt::Group, r.group_id.as_str())],
        Request::OffsetCommit(r) => {
            let mut v = vec![need(Op::Read, Rt::Group, r.group_id.as_str())];
            v.extend(topics(Op::Read, r.topics.iter().map(|t| t.name.as_str())));
            v
        }
        Request::OffsetFetch(r) => {
            let mut v = vec![need(Op::Describe, Rt::Group, r.group_id.as_str())];
            v.extend(topics(
                Op::Describe,
                r.topics.iter().map(|t| t.topic.as_str()),
            ));
            v
        }
        Request::DescribeGroups(r) => r
            .group_ids
            .iter()
            .map(|g| need(Op::Describe, Rt::Group, g.as_str()))
            .collect(),
        Request::DeleteGroups(r) => r
            .group_ids
            .iter()
            .map(|g| need(Op::Delete, Rt::Group, g.as_str()))
            .collect(),
        Request::InitProducerId => vec![Need::idempotent_write()],
        Request::DescribeCluster => vec![cluster(Op::Describe)],
        Request::FindCoordinator(r) => vec![need(Op::Describe, Rt::Group, r.group_id.as_str())],
        Request::CreatePartitions(r) => topics(Op::Alter, r.topics.iter().map(|t| t.name.as_str())),
        Request::AlterConfigs(r) => {
            topics(Op::AlterConfigs, r.topics.iter().map(|t| t.name.as_str()))
        }
        Request::ReplicaFetch(_) => vec![cluster(Op::ClusterAction)],
        Request::ReassignPartitions(_) => vec![cluster(Op::Alter)],
        Request::AlterUserScramCredentials(_) | Request::CreateAcls(_) | Request::DeleteAcls(_) => {
            vec![cluster(Op::Alter)]
        }
        Request::DescribeUsers(_) | Request::DescribeAcls(_) => vec![cluster(Op::Describe)],
        Request::AlterQuotas(_) => vec![cluster(Op::AlterConfigs)],
        Request::DescribeQuotas => vec![cluster(Op::DescribeConfigs)],
    }
}

/// The native error for a refusal on `rt`.
fn refusal_code(rt: ResourceType) -> ErrorCode {
    match rt {
        ResourceType::Topic => ErrorCode::TopicAuthorizationFailed,
        ResourceType::Group => ErrorCode::GroupAuthorizationFailed,
        _ => ErrorCode::ClusterAuthorizationFailed,
    }
}

/// `None` when every need of `request` is allowed for `principal` from
/// `host`, else the refusal code of the first refused one (logged).
pub(crate) fn check(
    ctx: &Context,
    principal: &str,
    host: IpAddr,
    request: &Request,
) -> Option<ErrorCode> {
    let (op, rt, name) = ctx
        .broker
        .security()
        .first_refused(principal, host, || needs(ctx, request))?;
    tracing::info!(principal, %host, operation = %op, resource = %rt, name, api = %request.api_key(), "native request refused by ACLs");
    Some(refusal_code(rt))
}

/// How an answer must be trimmed to what the principal may see.
pub(crate) enum ResponseFilter {
    /// Metadata of every topic: leave out the undescribable ones.
    MetadataAll,
    /// Metadata of named topics: answer the undescribable ones TOPIC_AUTHORIZATION_FAILED.
    MetadataNamed,
    /// ListGroups without DESCRIBE on the cluster: only describable groups.
    ListGroups,
    /// OffsetFetch of every topic of a group: only describable topics.
    OffsetFetchAll,
}

impl ResponseFilter {
    /// The filter a request's answer needs, if any (authorization on, not a super user).
    pub(crate) fn for_request(
        sec: &Security,
        principal: &str,
        host: IpAddr,
        request: &Request,
    ) -> Option<ResponseFilter> {
        if !sec.authorization() || sec.is_super_user(principal) {
            return None;
        }
        match request {
            Request::Metadata(r) if r.topics.is_empty() => Some(ResponseFilter::MetadataAll),
            Request::Metadata(_) => Some(ResponseFilter::MetadataNamed),
            Request::ListGroups if !sec.cluster_allowed(principal, host, Operation::Describe) => {
                Some(ResponseFilter::ListGroups)
            }
            Request::OffsetFetch(r) if r.topics.is_empty() => Some(ResponseFilter::OffsetFetchAll),
            _ => None,
        }
    }

    /// Trims `response`.
    pub(crate) fn apply(
        &self,
        sec: &Security,
        principal: &str,
        host: IpAddr,
        response: Response,
    ) -> Response {
        let topic_ok = |name: &str| {
            sec.allowed(
                principal,
                host,
                Operation::Describe,
                ResourceType::Topic,
                name,
            )
        };
        match (self, response) {
            (ResponseFilter::MetadataAll, Response::Metadata(mut m)) => {
                m.topics.retain(|t| topic_ok(&t.name));
                Response::Metadata(m)
            }
            (ResponseFilter::MetadataNamed, Response::Metadata(mut m)) => {
                for t in m.topics.iter_mut().filter(|t| !topic_ok(&t.name)) {
                    t.error = ErrorCode::TopicAuthorizationFailed;
                    t.partitions.clear();
                    t.configs.clear();
                }
                Response::Metadata(m)
            }
            (ResponseFilter::ListGroups, Response::ListGroups(mut l)) => {
                l.groups.retain(|g| {
                    sec.allowed(
                        principal,
                        host,
                        Operation::Describe,
                        ResourceType::Group,
                        &g.group_id,
                    )
                });
                Response::ListGroups(l)
            }
            (ResponseFilter::OffsetFetchAll, Response::OffsetFetch(mut o)) => {
                o.topics.retain(|t| topic_ok(&t.name));
                Response::OffsetFetch(o)
            }
            (_, other) => other,
        }
    }
}

// ----------------------------------------------------------------------------
// The security admin apis (keys 24..=30).
// ----------------------------------------------------------------------------

fn scram_of(m: ScramMechanismType) -> ScramMechanism {
    match m {
        ScramMechanismType::Sha256 => ScramMechanism::Sha256,
        ScramMechanismType::Sha512 => ScramMechanism::Sha512,
    }
}

fn wire_scram(m: ScramMechanism) -> ScramMechanismType {
    match m {
        ScramMechanism::Sha256 => ScramMechanismType::Sha256,
        ScramMechanism::Sha512 => ScramMechanismType::Sha512,
    }
}

fn mismatched() -> Outcome {
    Outcome::Respond(Response::Error(ErrorCode::InvalidRequest))
}

/// The answer of one applied command: NONE, RESOURCE_NOT_FOUND, or the error.
fn admin_result(out: Result<SecurityOutcome, crate::BrokerError>) -> AdminResult {
    match out {
        Ok(SecurityOutcome::NotFound) => AdminResult::err(
            ErrorCode::ResourceNotFound,
            "no such user, credential or quota",
        ),
        Ok(_) => AdminResult::ok(),
        Err(e) => AdminResult::err(e.code(), chain(&e)),
    }
}

/// A command checked before it is proposed: `Err` is the INVALID_REQUEST answer.
fn checked(cmd: SecurityCommand) -> Result<SecurityCommand, AdminResult> {
    match cmd.validate() {
        Ok(()) => Ok(cmd),
        Err(e) => Err(AdminResult::err(ErrorCode::InvalidRequest, e.to_string())),
    }
}

/// Applies each command in order (each its own store write or controller
/// commit) and answers one result per entry, invalid entries included.
fn apply_each(
    ctx: &Context,
    cmds: Vec<Result<SecurityCommand, AdminResult>>,
    answer: fn(Vec<AdminResult>) -> Response,
) -> Outcome {
    let broker = Arc::clone(&ctx.broker);
    Outcome::Deferred(Box::pin(async move {
        let mut results = Vec::with_capacity(cmds.len());
        for c in cmds {
            results.push(match c {
                Ok(cmd) => admin_result(crate::security::apply(&broker, cmd).await),
                Err(r) => r,
            });
        }
        Some(answer(results))
    }))
}

/// AlterUserScramCredentials: credentials from salted passwords, and deletions.
pub(crate) fn alter_user_scram_credentials(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::AlterUserScramCredentials(r) = req else {
        return mismatched();
    };
    let mut cmds = Vec::with_capacity(r.upsertions.len() + r.deletions.len());
    for u in r.upsertions {
        let credential = ScramCredential::from_salted_password(
            scram_of(u.mechanism),
            u.salt.to_vec(),
            u.iterations,
            &u.salted_password,
        );
        cmds.push(match credential {
            Ok(credential) => checked(SecurityCommand::UpsertCredential {
                user: u.user,
                credential,
            }),
            Err(e) => Err(AdminResult::err(ErrorCode::InvalidRequest, e.to_string())),
        });
    }
    for d in r.deletions {
        cmds.push(checked(match d.mechanism {
            Some(m) => SecurityCommand::DeleteCredential {
                user: d.user,
                mechanism: scram_of(m),
            },
            None => SecurityCommand::DeleteUser { user: d.user },
        }));
    }
    apply_each(ctx, cmds, |results| {
        Response::AlterUserScramCredentials(AlterUserScramCredentialsResponse { results })
    })
}

/// DescribeUsers: names, mechanisms and iteration counts; never salts or keys.
pub(crate) fn describe_users(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::DescribeUsers(r) = req else {
        return mismatched();
    };
    let state = ctx.broker.security().state();
    let describe = |user: &str| {
        let credentials = state
            .users
            .get(user)
            .map(|creds| {
                creds
                    .values()
                    .map(|c| CredentialInfo {
                        mechanism: wire_scram(c.mechanism),
                        iterations: c.iterations,
                    })
                    .collect()
            })
            .unwrap_or_default();
        DescribedUser {
            user: user.to_string(),
            error: if state.users.contains_key(user) {
                ErrorCode::None
            } else {
                ErrorCode::ResourceNotFound
            },
            credentials,
        }
    };
    let users = if r.users.is_empty() {
        state.users.keys().map(|u| describe(u)).collect()
    } else {
        r.users.iter().map(|u| describe(u)).collect()
    };
    Outcome::Respond(Response::DescribeUsers(DescribeUsersResponse { users }))
}

/// An ACL binding from the wire, checked.
fn binding_of(a: &AclEntry) -> Result<AclBinding, String> {
    let code = |v: u8| i8::try_from(v).unwrap_or(i8::MAX);
    let b = AclBinding {
        resource_type: ResourceType::from_i8(code(a.resource_type))
            .ok_or(format!("unknown resource type {}", a.resource_type))?,
        name: a.resource_name.clone(),
        pattern: PatternType::from_i8(code(a.pattern_type))
            .ok_or(format!("unknown pattern type {}", a.pattern_type))?,
        principal: a.principal.clone(),
        host: a.host.clone(),
        operation: Operation::from_i8(code(a.operation))
            .ok_or(format!("unknown operation {}", a.operation))?,
        permission: Permission::from_i8(code(a.permission))
            .ok_or(format!("unknown permission {}", a.permission))?,
    };
    b.validate().map_err(|e| e.to_string())?;
    Ok(b)
}

/// The wire form of a binding.
fn entry_of(b: &AclBinding) -> AclEntry {
    let code = |v: i8| u8::try_from(v).unwrap_or(0);
    AclEntry {
        resource_type: code(b.resource_type.to_i8()),
        resource_name: b.name.clone(),
        pattern_type: code(b.pattern.to_i8()),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: code(b.operation.to_i8()),
        permission: code(b.permission.to_i8()),
    }
}

/// An ACL filter from the wire (`None` where it says "any").
fn filter_of(f: &AclFilterEntry) -> Result<AclFilter, String> {
    let code = |v: u8| i8::try_from(v).unwrap_or(i8::MAX);
    let rt = ResourceType::from_i8(code(f.resource_type))
        .ok_or(format!("unknown resource type {}", f.resource_type))?;
    let pattern = PatternType::from_i8(code(f.pattern_type))
        .ok_or(format!("unknown pattern type {}", f.pattern_type))?;
    let op = Operation::from_i8(code(f.operation))
        .ok_or(format!("unknown operation {}", f.operation))?;
    let perm = Permission::from_i8(code(f.permission))
        .ok_or(format!("unknown permission {}", f.permission))?;
    Ok(AclFilter {
        resource_type: (rt != ResourceType::Any).then_some(rt),
        name: f.resource_name.clone(),
        pattern: (pattern != PatternType::Any).then_some(pattern),
        principal: f.principal.clone(),
        host: f.host.clone(),
        operation: (op != Operation::Any).then_some(op),
        permission: (perm != Permission::Any).then_some(perm),
    })
}

/// CreateAcls: the valid bindings are added in one change; each entry answered.
pub(crate) fn create_acls(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::CreateAcls(r) = req else {
        return mismatched();
    };
    let parsed: Vec<Result<AclBinding, String>> = r.creations.iter().map(binding_of).collect();
    let bindings: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let answer = move |applied: Option<AdminResult>| {
        let results = parsed
            .iter()
            .map(|p| match (p, &applied) {
                (Err(m), _) => AdminResult::err(ErrorCode::InvalidRequest, m.clone()),
                (Ok(_), Some(r)) => r.clone(),
                (Ok(_), None) => AdminResult::ok(),
            })
            .collect();
        Response::CreateAcls(CreateAclsResponse { results })
    };
    if bindings.is_empty() {
        return Outcome::Respond(answer(None));
    }
    let broker = Arc::clone(&ctx.broker);
    Outcome::Deferred(Box::pin(async move {
        let out = crate::security::apply(&broker, SecurityCommand::CreateAcls { bindings }).await;
        Some(answer(Some(admin_result(out))))
    }))
}

/// DescribeAcls: the bindings matching the filter, sorted.
pub(crate) fn describe_acls(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::DescribeAcls(r) = req else {
        return mismatched();
    };
    let answer = |error, message: String, acls| {
        Outcome::Respond(Response::DescribeAcls(DescribeAclsResponse {
            error,
            message,
            acls,
        }))
    };
    match filter_of(&r.filter) {
        Ok(f) => {
            let acls = ctx
                .broker
                .security()
                .acls()
                .iter()
                .filter(|b| f.matches(b))
                .map(entry_of)
                .collect();
            answer(ErrorCode::None, String::new(), acls)
        }
        Err(m) => answer(ErrorCode::InvalidRequest, m, Vec::new()),
    }
}

/// DeleteAcls: every filter in one change; a malformed filter deletes nothing.
pub(crate) fn delete_acls(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::DeleteAcls(r) = req else {
        return mismatched();
    };
    let n = r.filters.len();
    let every = move |error: ErrorCode, message: &str| {
        Response::DeleteAcls(DeleteAclsResponse {
            results: (0..n)
                .map(|_| DeleteAclsResult {
                    error,
                    message: message.to_string(),
                    deleted: Vec::new(),
                })
                .collect(),
        })
    };
    let filters: Result<Vec<AclFilter>, String> = r.filters.iter().map(filter_of).collect();
    let filters = match filters {
        Ok(f) => f,
        Err(m) => return Outcome::Respond(every(ErrorCode::InvalidRequest, &m)),
    };
    if filters.is_empty() {
        return Outcome::Respond(every(ErrorCode::None, ""));
    }
    let broker = Arc::clone(&ctx.broker);
    Outcome::Deferred(Box::pin(async move {
        let out = crate::security::apply(&broker, SecurityCommand::DeleteAcls { filters }).await;
        Some(match out {
            Ok(SecurityOutcome::Deleted(per_filter)) => Response::DeleteAcls(DeleteAclsResponse {
                results: per_filter
                    .iter()
                    .map(|deleted| DeleteAclsResult {
                        error: ErrorCode::None,
                        message: String::new(),
                        deleted: deleted.iter().map(entry_of).collect(),
                    })
                    .collect(),
            }),
            Ok(_) => every(ErrorCode::None, ""),
            Err(e) => every(e.code(), &chain(&e)),
        })
    }))
}

fn entity_name_of(n: QuotaEntityName) -> EntityName {
    match n {
        QuotaEntityName::Default => EntityName::Default,
        QuotaEntityName::Named(s) => EntityName::Named(s),
    }
}

fn wire_entity_name(n: &EntityName) -> QuotaEntityName {
    match n {
        EntityName::Default => QuotaEntityName::Default,
        EntityName::Named(s) => QuotaEntityName::Named(s.clone()),
    }
}

/// AlterQuotas: each entry set (or removed) in order.
pub(crate) fn alter_quotas(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::AlterQuotas(r) = req else {
        return mismatched();
    };
    let cmds = r
        .entries
        .into_iter()
        .map(|e| {
            checked(SecurityCommand::SetQuota {
                entity: QuotaEntity {
                    user: e.entity.user.map(entity_name_of),
                    client_id: e.entity.client_id.map(entity_name_of),
                },
                values: QuotaValues {
                    producer_byte_rate: e.rates.producer_byte_rate,
                    consumer_byte_rate: e.rates.consumer_byte_rate,
                    request_rate: e.rates.request_rate,
                },
            })
        })
        .collect();
    apply_each(ctx, cmds, |results| {
        Response::AlterQuotas(AlterQuotasResponse { results })
    })
}

/// DescribeQuotas: every entity with quotas.
pub(crate) fn describe_quotas(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::DescribeQuotas = req else {
        return mismatched();
    };
    let entries = ctx
        .broker
        .security()
        .quotas()
        .iter()
        .map(|(entity, v)| QuotaEntry {
            entity: QuotaEntityKey {
                user: entity.user.as_ref().map(wire_entity_name),
                client_id: entity.client_id.as_ref().map(wire_entity_name),
            },
            rates: QuotaRates {
                producer_byte_rate: v.producer_byte_rate,
                consumer_byte_rate: v.consumer_byte_rate,
                request_rate: v.request_rate,
            },
        })
        .collect();
    Outcome::Respond(Response::DescribeQuotas(DescribeQuotasResponse { entries }))
}

/// SaslHandshake reaching the handler table: the listener has no SASL (a
/// SASL listener's connection answers it itself).
pub(crate) fn sasl_handshake_without_sasl(ctx: &Context, _: &str, req: Request) -> Outcome {
    let Request::SaslHandshake(_) = req else {
        return mismatched();
    };
    let mechanisms = ctx
        .broker
        .security()
        .mechanism_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    Outcome::Respond(Response::SaslHandshake(SaslHandshakeResponse {
        error: ErrorCode::IllegalSaslState,
        mechanisms,
    }))
}

/// SaslAuthenticate reaching the handler table: the listener has no SASL.
pub(crate) fn sasl_authenticate_without_sasl(_: &Context, _: &str, req: Request) -> Outcome {
    let Request::SaslAuthenticate(_) = req else {
        return mismatched();
    };
    Outcome::Respond(Response::SaslAuthenticate(SaslAuthenticateResponse {
        error: ErrorCode::IllegalSaslState,
        error_message: "this listener does not use SASL".into(),
        auth_bytes: Bytes::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::ApiKey;

    /// Every api key has a sample request, and `needs` answers for each: the
    /// exhaustive match is the real guard, this keeps the samples honest.
    #[test]
    fn every_api_has_an_entry_in_the_needs_table() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = crate::handler::tests::test_context(dir.path(), "127.0.0.1:1".parse().unwrap());
        for key in ApiKey::ALL {
            let req = sample(*key);
            assert_eq!(req.api_key(), *key);
            let n = needs(&ctx, &req);
            let free = matches!(
                key,
                ApiKey::ApiVersions
                    | ApiKey::SaslHandshake
                    | ApiKey::SaslAuthenticate
                    | ApiKey::Metadata
                    | ApiKey::ListGroups
            );
            assert_eq!(n.is_empty(), free, "{key}");
        }
    }

    fn sample(key: ApiKey) -> Request {
        use sluice_protocol::*;
        let group = "g".to_string();
        match key {
            ApiKey::ApiVersions => Request::ApiVersions,
            ApiKey::Metadata => Request::Metadata(MetadataRequest::default()),
            ApiKey::CreateTopics => Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreateTopic {
                    name: "t".into(),
                    partitions: 1,
                    replication_factor: -1,
                    configs: vec![],
                }],
            }),
            ApiKey::DeleteTopics => Request::DeleteTopics(DeleteTopicsRequest {
                topics: vec!["t".into()],
            }),
            ApiKey::Produce => Request::Produce(ProduceRequest {
                acks: Acks::Leader,
                timeout_ms: 0,
                topics: vec![ProduceTopic {
                    name: "t".into(),
                    partitions: vec![],
                }],
            }),
            ApiKey::Fetch => Request::Fetch(FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 0,
                topics: vec![FetchTopic {
                    name: "t".into(),
                    partitions: vec![],
                }],
            }),
            ApiKey::ListOffsets => Request::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: "t".into(),
                    partitions: vec![],
                }],
            }),
            ApiKey::JoinGroup => Request::JoinGroup(JoinGroupRequest {
                group_id: group,
                member_id: String::new(),
                topics: vec![],
                session_timeout_ms: 0,
                rebalance_timeout_ms: 0,
                metadata: Bytes::new(),
            }),
            ApiKey::Heartbeat => Request::Heartbeat(HeartbeatRequest {
                group_id: group,
                member_id: String::new(),
                generation: 0,
                owned: vec![],
                max_wait_ms: 0,
            }),
            ApiKey::LeaveGroup => Request::LeaveGroup(LeaveGroupRequest {
                group_id: group,
                member_id: String::new(),
            }),
            ApiKey::OffsetCommit => Request::OffsetCommit(OffsetCommitRequest {
                group_id: group,
                member_id: String::new(),
                generation: 0,
                topics: vec![],
            }),
            ApiKey::OffsetFetch => Request::OffsetFetch(OffsetFetchRequest {
                group_id: group,
                topics: vec![],
            }),
            ApiKey::ListGroups => Request::ListGroups,
            ApiKey::DescribeGroups => Request::DescribeGroups(DescribeGroupsRequest {
                group_ids: vec![group],
            }),
            ApiKey::DeleteGroups => Request::DeleteGroups(DeleteGroupsRequest {
                group_ids: vec![group],
            }),
            ApiKey::InitProducerId => Request::InitProducerId,
            ApiKey::DescribeCluster => Request::DescribeCluster,
            ApiKey::FindCoordinator => {
                Request::FindCoordinator(FindCoordinatorRequest { group_id: group })
            }
            ApiKey::CreatePartitions => Request::CreatePartitions(CreatePartitionsRequest {
                topics: vec![CreatePartitionsTopic {
                    name: "t".into(),
                    count: 2,
                }],
            }),
            ApiKey::AlterConfigs => Request::AlterConfigs(AlterConfigsRequest {
                topics: vec![AlterConfigsTopic {
                    name: "t".into(),
                    changes: vec![],
                }],
            }),
            ApiKey::ReplicaFetch => Request::ReplicaFetch(ReplicaFetchRequest {
                replica_id: 1,
                max_wait_ms: 0,
                max_bytes: 0,
                partitions: vec![],
            }),
            ApiKey::ReassignPartitions => Request::ReassignPartitions(ReassignPartitionsRequest {
                action: ReassignAction::Rebalance,
                node_id: 0,
                moves: vec![],
            }),
            ApiKey::SaslHandshake => Request::SaslHandshake(SaslHandshakeRequest {
                mechanism: "PLAIN".into(),
            }),
            ApiKey::SaslAuthenticate => Request::SaslAuthenticate(SaslAuthenticateRequest {
                auth_bytes: Bytes::new(),
            }),
            ApiKey::AlterUserScramCredentials => {
                Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
                    upsertions: vec![],
                    deletions: vec![],
                })
            }
            ApiKey::DescribeUsers => Request::DescribeUsers(DescribeUsersRequest::default()),
            ApiKey::CreateAcls => Request::CreateAcls(CreateAclsRequest { creations: vec![] }),
            ApiKey::DescribeAcls => Request::DescribeAcls(DescribeAclsRequest {
                filter: AclFilterEntry::any(),
            }),
            ApiKey::DeleteAcls => Request::DeleteAcls(DeleteAclsRequest { filters: vec![] }),
            ApiKey::AlterQuotas => Request::AlterQuotas(AlterQuotasRequest { entries: vec![] }),
            ApiKey::DescribeQuotas => Request::DescribeQuotas,
        }
    }

    #[test]
    fn acl_codes_round_trip_and_unknown_ones_are_refused() {
        let b = AclBinding {
            resource_type: ResourceType::Topic,
            name: "orders-".into(),
            pattern: PatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        assert_eq!(binding_of(&entry_of(&b)).unwrap(), b);
        let mut bad = entry_of(&b);
        bad.operation = 99;
        assert!(binding_of(&bad).unwrap_err().contains("operation"));
        let mut any = entry_of(&b);
        any.resource_type = 1;
        assert!(binding_of(&any).is_err(), "'any' is for filters only");
        assert_eq!(
            filter_of(&AclFilterEntry::any()).unwrap(),
            AclFilter::default()
        );
        let mut f = AclFilterEntry::any();
        f.permission = 200;
        assert!(filter_of(&f).is_err());
    }
}
