//! Which Kafka apis and versions are served, and the dispatch of one frame.
//!
//! [`SERVED`] is what ApiVersions advertises, and exactly what
//! [`handle`] accepts: an api key or version outside it closes the
//! connection (ApiVersions excepted, see the crate docs). Produce is
//! advertised from v0, as Kafka 4 does, because older librdkafka decides
//! from the advertised range whether to compress; v0 to v2 (the message
//! formats before RecordBatch v2) are answered `UNSUPPORTED_VERSION` per
//! partition. Fetch starts at v4, the first version whose clients read
//! RecordBatch v2. Transactions are not served: their apis are not
//! advertised, a transactional FindCoordinator or InitProducerId gets an
//! error that says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::{Encodable, HeaderVersion};

use sluice_auth::quota::QuotaKind;

use crate::auth::{ConnAuth, SaslState};
use crate::header::{parse_header, peek_ids, RequestHeader};
use crate::{frame, KafkaContext, KafkaError, Reply};
use sluice_broker::slow_log::SlowRequest;

/// Served apis: (api key, lowest version, highest version).
pub const SERVED: &[(i16, i16, i16)] = &[
    (0, 0, 11), // Produce
    (1, 4, 17), // Fetch
    (2, 1, 9),  // ListOffsets
    (3, 0, 12), // Metadata
    (8, 0, 9),  // OffsetCommit
    (9, 0, 9),  // OffsetFetch
    (10, 0, 4), // FindCoordinator
    (11, 0, 9), // JoinGroup
    (12, 0, 4), // Heartbeat
    (13, 0, 5), // LeaveGroup
    (14, 0, 5), // SyncGroup
    (15, 0, 5), // DescribeGroups
    (16, 0, 4), // ListGroups
    (17, 0, 1), // SaslHandshake
    (18, 0, 4), // ApiVersions
    (19, 0, 7), // CreateTopics
    (20, 0, 6), // DeleteTopics
    (21, 0, 2), // DeleteRecords
    (22, 0, 4), // InitProducerId
    (29, 0, 3), // DescribeAcls
    (30, 0, 3), // CreateAcls
    (31, 0, 3), // DeleteAcls
    (32, 0, 4), // DescribeConfigs
    (36, 0, 2), // SaslAuthenticate
    (37, 0, 3), // CreatePartitions
    (42, 0, 2), // DeleteGroups
    (44, 0, 1), // IncrementalAlterConfigs
    (47, 0, 0), // OffsetDelete
    (48, 0, 1), // DescribeClientQuotas
    (49, 0, 1), // AlterClientQuotas
    (50, 0, 0), // DescribeUserScramCredentials
    (51, 0, 0), // AlterUserScramCredentials
    (60, 0, 1), // DescribeCluster
    (68, 0, 1), // ConsumerGroupHeartbeat
    (69, 0, 0), // ConsumerGroupDescribe
];

/// The served version range of an api key.
pub fn served_range(key: i16) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// One request being handled.
pub(crate) struct Req<'a> {
    /// The listener's context.
    pub ctx: &'a Arc<KafkaContext>,
    /// The parsed header.
    pub header: RequestHeader,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who sent it.
    pub principal: Arc<str>,
}

impl Req<'_> {
    /// The request's version.
    pub fn version(&self) -> i16 {
        self.header.api_version
    }

    /// Encodes `body` as this request's response.
    pub fn respond<R: Encodable + HeaderVersion>(
        &self,
        api: &'static str,
        body: &R,
    ) -> Result<Reply, KafkaError> {
        Ok(Reply::Now(frame(
            api,
            self.header.correlation_id,
            self.header.api_version,
            body,
        )?))
    }

    /// An encoder for a response produced later (by a deferred action).
    pub fn later<R: Encodable + HeaderVersion>(
        &self,
        api: &'static str,
    ) -> impl FnOnce(&R) -> Option<Vec<Bytes>> + Send + 'static {
        let (cid, version) = (self.header.correlation_id, self.header.api_version);
        move |body: &R| match frame(api, cid, version, body) {
            Ok(chunks) => Some(chunks),
            Err(e) => {
                tracing::warn!(error = %e, "dropping a response that does not encode");
                None
            }
        }
    }
}

/// A decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// ApiVersions of a version not served: answer error 35 in a v0 body.
    ApiVersionsUnsupported {
        /// Echoed in the answer.
        correlation_id: i32,
    },
    /// A request of a served api and version.
    Request {
        /// The header.
        header: RequestHeader,
        /// The body (boxed: some requests are large structs).
        body: Box<RequestKind>,
    },
}

/// Parses one frame payload (length prefix removed): header checks, served
/// api and version, body decode. Never panics, and never reserves memory
/// for a count larger than the bytes present.
pub fn parse_frame(payload: Bytes) -> Result<Frame, KafkaError> {
    let (key, version, correlation_id) =
        peek_ids(&payload).ok_or_else(|| KafkaError::Header("shorter than 8 bytes".into()))?;
    let range = served_range(key);
    if key == ApiKey::ApiVersions as i16
        && range.is_some_and(|(lo, hi)| version < lo || version > hi)
    {
        return Ok(Frame::ApiVersionsUnsupported { correlation_id });
    }
    let Some((lo, hi)) = range else {
        return Err(KafkaError::UnknownApi(key));
    };
    if version < lo || version > hi {
        return Err(KafkaError::UnsupportedVersion { key, version });
    }
    let api = ApiKey::try_from(key).map_err(|()| KafkaError::UnknownApi(key))?;
    let mut buf = payload;
    let header = parse_header(&mut buf, api.request_header_version(version))?;
    let body = RequestKind::decode(api, &mut buf, version).map_err(|e| KafkaError::Body {
        api: api_name(api),
        version,
        reason: e.to_string(),
    })?;
    Ok(Frame::Request {
        header,
        body: Box::new(body),
    })
}

/// The api's name for messages.
fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        _ => "request",
    }
}

/// Handles one frame payload (length prefix removed) of a connection in state
/// `auth`, read at `started`. Served requests go through the slow-request log
/// ([`sluice_broker::slow_log`]); refusals and SASL tokens are answered at once.
pub(crate) fn handle(
    ctx: &Arc<KafkaContext>,
    peer: SocketAddr,
    auth: &mut ConnAuth,
    payload: Bytes,
    started: Instant,
) -> Result<Reply, KafkaError> {
    match auth.state {
        SaslState::RawTokens(..) => return crate::auth::raw_token(ctx, peer, auth, &payload),
        SaslState::Failed => {
            return Err(KafkaError::Auth(
                "request after a failed authentication".into(),
            ))
        }
        _ => {}
    }
    let frame_bytes = payload.len();
    let (header, body) = match parse_frame(payload)? {
        Frame::ApiVersionsUnsupported { correlation_id } => {
            return Ok(Reply::Now(crate::meta::api_versions_unsupported(
                correlation_id,
            )?))
        }
        Frame::Request { header, body } => (header, body),
    };
    let key = header.api_key;
    let sasl_api = matches!(
        *body,
        RequestKind::ApiVersions(_)
            | RequestKind::SaslHandshake(_)
            | RequestKind::SaslAuthenticate(_)
    );
    if !auth.authenticated() && !sasl_api {
        let api = ApiKey::try_from(key).map_or("request", api_name);
        return Err(KafkaError::Auth(format!(
            "{api} before SASL authentication"
        )));
    }
    let req = Req {
        ctx,
        header,
        peer,
        principal: Arc::clone(&auth.principal),
    };
    tracing::trace!(peer = %req.peer, api_key = key, version = req.version(), "kafka request");
    use crate::{auth as sec, data, fetch, groups, meta, users};
    let security = ctx.core.broker.security();
    if let Some(code) = sec::check(ctx, &req.principal, peer.ip(), &body) {
        return sec::refuse(&req, *body, code);
    }
    // Quotas: each request, and the bytes of each produce, are charged now;
    // a fetch's bytes when its answer is ready (below). Over quota, the
    // connection is muted (reads nothing) for the throttle time.
    let quotas = security.quotas_active();
    if quotas {
        let client = &req.header.client_id;
        let mut t = security.record_quota(&req.principal, client, QuotaKind::Request, 1);
        if matches!(*body, RequestKind::Produce(_)) {
            let bytes = u64::try_from(frame_bytes).unwrap_or(u64::MAX);
            t = t.max(security.record_quota(&req.principal, client, QuotaKind::Produce, bytes));
        }
        auth.mute(t);
    }
    let is_fetch = matches!(*body, RequestKind::Fetch(_));
    let reply = match *body {
        RequestKind::ApiVersions(r) => meta::api_versions(&req, r),
        RequestKind::SaslHandshake(r) => sec::sasl_handshake(&req, auth, r),
        RequestKind::SaslAuthenticate(r) => sec::sasl_authenticate(&req, auth, r),
        RequestKind::CreateAcls(r) => sec::create_acls(&req, r),
        RequestKind::DescribeAcls(r) => sec::describe_acls(&req, r),
        RequestKind::DeleteAcls(r) => sec::delete_acls(&req, r),
        RequestKind::DescribeUserScramCredentials(r) => users::describe_users(&req, r),
        RequestKind::AlterUserScramCredentials(r) => users::alter_users(&req, r),
        RequestKind::DescribeClientQuotas(r) => users::describe_quotas(&req, r),
        RequestKind::AlterClientQuotas(r) => users::alter_quotas(&req, r),
        RequestKind::Metadata(r) => meta::metadata(&req, r),
        RequestKind::DescribeCluster(r) => meta::describe_cluster(&req, r),
        RequestKind::FindCoordinator(r) => meta::find_coordinator(&req, r),
        RequestKind::CreateTopics(r) => meta::create_topics(&req, r),
        RequestKind::DeleteTopics(r) => meta::delete_topics(&req, r),
        RequestKind::CreatePartitions(r) => meta::create_partitions(&req, r),
        RequestKind::DescribeConfigs(r) => meta::describe_configs(&req, r),
        RequestKind::IncrementalAlterConfigs(r) => meta::incremental_alter_configs(&req, r),
        RequestKind::Produce(r) => data::produce(&req, r),
        RequestKind::Fetch(r) => fetch::fetch(&req, r),
        RequestKind::ListOffsets(r) => data::list_offsets(&req, r),
        RequestKind::InitProducerId(r) => data::init_producer_id(&req, r),
        RequestKind::DeleteRecords(r) => data::delete_records(&req, r),
        RequestKind::JoinGroup(r) => groups::join_group(&req, r),
        RequestKind::SyncGroup(r) => groups::sync_group(&req, r),
        RequestKind::Heartbeat(r) => groups::heartbeat(&req, r),
        RequestKind::LeaveGroup(r) => groups::leave_group(&req, r),
        RequestKind::OffsetCommit(r) => groups::offset_commit(&req, r),
        RequestKind::OffsetFetch(r) => groups::offset_fetch(&req, r),
        RequestKind::ListGroups(r) => groups::list_groups(&req, r),
        RequestKind::DescribeGroups(r) => groups::describe_groups(&req, r),
        RequestKind::DeleteGroups(r) => groups::delete_groups(&req, r),
        RequestKind::OffsetDelete(r) => groups::offset_delete(&req, r),
        RequestKind::ConsumerGroupHeartbeat(r) => groups::consumer_group_heartbeat(&req, r),
        RequestKind::ConsumerGroupDescribe(r) => groups::consumer_group_describe(&req, r),
        _ => Err(KafkaError::UnknownApi(key)),
    }?;
    let reply = if quotas && is_fetch {
        charge_fetch(security, &req, auth, reply)
    } else {
        reply
    };
    Ok(watch_slow(ctx, req.header, peer, started, reply))
}

/// The request's reply, seen by the slow-request log when it is ready.
fn watch_slow(
    ctx: &KafkaContext,
    header: RequestHeader,
    peer: SocketAddr,
    started: Instant,
    reply: Reply,
) -> Reply {
    let slow = ctx.core.broker.slow_log();
    let api = ApiKey::try_from(header.api_key).map_or("request", api_name);
    let timer = ctx.core.broker.metrics().kafka_request_timer(api);
    let check = move |header: &RequestHeader, parked: Duration| {
        let elapsed = started.elapsed();
        timer.observe(elapsed.as_secs_f64());
        slow.check(elapsed, parked, || SlowRequest {
            protocol: "kafka",
            api,
            api_key: i32::from(header.api_key),
            api_version: i32::from(header.api_version),
            correlation_id: i64::from(header.correlation_id),
            client_id: &header.client_id,
            peer,
        })
    };
    match reply {
        Reply::Now(chunks) => {
            check(&header, Duration::ZERO);
            Reply::Now(chunks)
        }
        Reply::Nothing => {
            check(&header, Duration::ZERO);
            Reply::Nothing
        }
        Reply::Later(fut) => Reply::Later(Box::pin(async move {
            let (out, parked) = sluice_broker::slow_log::measure(fut).await;
            check(&header, parked);
            out
        })),
    }
}

/// Charges a fetch's answer bytes to its quotas once known.
fn charge_fetch(
    security: &Arc<sluice_broker::security::Security>,
    req: &Req<'_>,
    auth: &ConnAuth,
    reply: Reply,
) -> Reply {
    let (sec, principal, client) = (
        Arc::clone(security),
        Arc::clone(&req.principal),
        req.header.client_id.clone(),
    );
    let muted = Arc::clone(&auth.muted_until);
    let charge = move |chunks: &Vec<Bytes>| {
        let bytes: usize = chunks.iter().map(Bytes::len).sum();
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let t = sec.record_quota(&principal, &client, QuotaKind::Fetch, bytes);
        crate::auth::mute(&muted, t);
    };
    match reply {
        Reply::Now(chunks) => {
            charge(&chunks);
            Reply::Now(chunks)
        }
        Reply::Later(fut) => Reply::Later(Box::pin(async move {
            let out = fut.await;
            if let Some(chunks) = &out {
                charge(chunks);
            }
            out
        })),
        Reply::Nothing => Reply::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_range_is_within_what_the_codec_knows() {
        for (key, lo, hi) in SERVED {
            let api = ApiKey::try_from(*key).expect("known key");
            let v = api.valid_versions();
            assert!(
                lo <= hi && *lo >= v.min && *hi <= v.max,
                "{api:?} {lo}..={hi} vs {v:?}"
            );
        }
        assert!(
            SERVED.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, once each"
        );
    }
}
