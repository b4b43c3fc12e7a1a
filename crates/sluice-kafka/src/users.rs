//! SCRAM users and client quotas through Kafka's admin apis.
//!
//! - **DescribeUserScramCredentials** lists users with their mechanisms and
//!   iteration counts (never salts or keys); a named user without
//!   credentials answers `RESOURCE_NOT_FOUND`, a name asked twice
//!   `DUPLICATE_RESOURCE`.
//! - **AlterUserScramCredentials** upserts credentials from the salt and
//!   SaltedPassword the client computed (the password never crosses the
//!   wire, as in Kafka) and deletes them; results are per user. An unknown
//!   mechanism answers `UNSUPPORTED_SASL_MECHANISM`, iterations outside
//!   4096..=16384 or an empty salt `UNACCEPTABLE_CREDENTIAL`, deleting a
//!   credential that does not exist `RESOURCE_NOT_FOUND`.
//! - **DescribeClientQuotas / AlterClientQuotas**: entities of `user` and
//!   `client-id` (a null name is the `<default>`), keys
//!   `producer_byte_rate`, `consumer_byte_rate` (bytes per second, as
//!   Kafka) and `request_rate` (requests per second: Sluice's request quota
//!   counts requests, not Kafka's `request_percentage` of handler time,
//!   which is refused as an unknown key).
//!
//! Each change is a security metadata command (see
//! [`sluice_broker::security::apply`]), answered once applied.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::alter_client_quotas_response as acq;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_client_quotas_response as dcq;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::*;
use sluice_auth::quota::{EntityName, QuotaEntity, QuotaValues};
use sluice_auth::scram::{ScramCredential, ScramMechanism};
use sluice_auth::store::{SecurityCommand, SecurityOutcome};

use crate::api::Req;
use crate::auth::UNSUPPORTED_SASL_MECHANISM;
use crate::codes::kafka;
use crate::meta::sb;
use crate::{KafkaError, Reply};

/// Kafka's RESOURCE_NOT_FOUND.
const RESOURCE_NOT_FOUND: i16 = 91;
/// Kafka's DUPLICATE_RESOURCE.
const DUPLICATE_RESOURCE: i16 = 92;
/// Kafka's UNACCEPTABLE_CREDENTIAL.
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

/// DescribeUserScramCredentials.
pub(crate) fn describe_users(
    req: &Req<'_>,
    r: DescribeUserScramCredentialsRequest,
) -> Result<Reply, KafkaError> {
    let state = req.ctx.core.broker.security().state();
    let describe = |user: &str| {
        let infos: Vec<CredentialInfo> = state
            .users
            .get(user)
            .map(|creds| {
                creds
                    .values()
                    .map(|c| {
                        CredentialInfo::default()
                            .with_mechanism(c.mechanism.kafka_type())
                            .with_iterations(i32::try_from(c.iterations).unwrap_or(i32::MAX))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut res = DescribeUserScramCredentialsResult::default().with_user(sb(user));
        if infos.is_empty() {
            res.error_code = RESOURCE_NOT_FOUND;
            res.error_message = Some(sb(&format!("no SCRAM credentials for user {user}")));
        }
        res.with_credential_infos(infos)
    };
    let results = match r.users.filter(|u| !u.is_empty()) {
        None => state.users.keys().map(|u| describe(u)).collect(),
        Some(users) => {
            let mut seen = BTreeSet::new();
            let dups: BTreeSet<String> = users
                .iter()
                .filter(|u| !seen.insert(u.name.to_string()))
                .map(|u| u.name.to_string())
                .collect();
            seen.into_iter()
                .map(|u| {
                    if dups.contains(&u) {
                        DescribeUserScramCredentialsResult::default()
                            .with_user(sb(&u))
                            .with_error_code(DUPLICATE_RESOURCE)
                            .with_error_message(Some(sb("user named twice")))
                    } else {
                        describe(&u)
                    }
                })
                .collect()
        }
    };
    req.respond(
        "DescribeUserScramCredentials",
        &DescribeUserScramCredentialsResponse::default().with_results(results),
    )
}

/// AlterUserScramCredentials.
pub(crate) fn alter_users(
    req: &Req<'_>,
    r: AlterUserScramCredentialsRequest,
) -> Result<Reply, KafkaError> {
    let state = req.ctx.core.broker.security().state();
    // Per user (in request order): the commands, or the first error.
    let mut order: Vec<String> = Vec::new();
    let mut per_user: std::collections::BTreeMap<
        String,
        Result<Vec<SecurityCommand>, (i16, String)>,
    > = std::collections::BTreeMap::new();
    let mut push = |user: &str, cmd: Result<SecurityCommand, (i16, String)>| {
        if !per_user.contains_key(user) {
            order.push(user.to_string());
        }
        let entry = per_user
            .entry(user.to_string())
            .or_insert_with(|| Ok(Vec::new()));
        match (entry.as_mut(), cmd) {
            (Ok(cmds), Ok(c)) => cmds.push(c),
            (Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    };
    for d in &r.deletions {
        let user = d.name.to_string();
        let cmd = match ScramMechanism::from_kafka_type(d.mechanism) {
            None => Err((
                UNSUPPORTED_SASL_MECHANISM,
                format!("unknown SCRAM mechanism {}", d.mechanism),
            )),
            Some(m) if state.credential(&user, m).is_none() => Err((
                RESOURCE_NOT_FOUND,
                format!("user {user} has no {} credential", m.name()),
            )),
            Some(m) => Ok(SecurityCommand::DeleteCredential {
                user: user.clone(),
                mechanism: m,
            }),
        };
        push(&user, cmd);
    }
    for u in &r.upsertions {
        let user = u.name.to_string();
        let cmd = match ScramMechanism::from_kafka_type(u.mechanism) {
            None => Err((
                UNSUPPORTED_SASL_MECHANISM,
                format!("unknown SCRAM mechanism {}", u.mechanism),
            )),
            Some(m) => {
                let iterations = u32::try_from(u.iterations).unwrap_or(0);
                ScramCredential::from_salted_password(
                    m,
                    u.salt.to_vec(),
                    iterations,
                    &u.salted_password,
                )
                .map(|credential| SecurityCommand::UpsertCredential {
                    user: user.clone(),
                    credential,
                })
                .map_err(|e| (UNACCEPTABLE_CREDENTIAL, e.to_string()))
            }
        };
        let cmd = cmd.and_then(|c| {
            c.validate()
                .map(|()| c)
                .map_err(|e| (UNACCEPTABLE_CREDENTIAL, e.to_string()))
        });
        push(&user, cmd);
    }
    let broker = Arc::clone(&req.ctx.core.broker);
    let encode = req.later::<AlterUserScramCredentialsResponse>("AlterUserScramCredentials");
    Ok(Reply::Later(Box::pin(async move {
        let mut results = Vec::with_capacity(order.len());
        for user in order {
            let outcome = match per_user.remove(&user) {
                Some(Ok(cmds)) => {
                    let mut out = Ok(());
                    for cmd in cmds {
                        if let Err(e) = sluice_broker::security::apply(&broker, cmd).await {
                            out = Err((kafka::UNKNOWN_SERVER_ERROR, e.to_string()));
                            break;
                        }
                    }
                    out
                }
                Some(Err(e)) => Err(e),
                None => Ok(()),
            };
            let mut res = AlterUserScramCredentialsResult::default().with_user(sb(&user));
            if let Err((code, message)) = outcome {
                res.error_code = code;
                res.error_message = Some(sb(&message));
            }
            results.push(res);
        }
        encode(&AlterUserScramCredentialsResponse::default().with_results(results))
    })))
}

/// The quota key names and the field each sets.
const KEYS: &[&str] = &["producer_byte_rate", "consumer_byte_rate", "request_rate"];

fn value_slot<'a>(v: &'a mut QuotaValues, key: &str) -> Option<&'a mut Option<f64>> {
    match key {
        "producer_byte_rate" => Some(&mut v.producer_byte_rate),
        "consumer_byte_rate" => Some(&mut v.consumer_byte_rate),
        "request_rate" => Some(&mut v.request_rate),
        _ => None,
    }
}

fn entity_of(parts: &[(String, Option<String>)]) -> Result<QuotaEntity, String> {
    let mut e = QuotaEntity::default();
    for (kind, name) in parts {
        let n = match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.clone()),
        };
        let slot = match kind.as_str() {
            "user" => &mut e.user,
            "client-id" => &mut e.client_id,
            other => {
                return Err(format!(
                    "unknown quota entity type {other:?} (user, client-id)"
                ))
            }
        };
        if slot.is_some() {
            return Err(format!("entity type {kind} named twice"));
        }
        *slot = Some(n);
    }
    e.validate().map_err(|x| x.to_string())?;
    Ok(e)
}

fn entity_parts(e: &QuotaEntity) -> Vec<(&'static str, Option<String>)> {
    let name = |n: &EntityName| match n {
        EntityName::Default => None,
        EntityName::Named(s) => Some(s.clone()),
    };
    let mut v = Vec::new();
    if let Some(u) = &e.user {
        v.push(("user", name(u)));
    }
    if let Some(c) = &e.client_id {
        v.push(("client-id", name(c)));
    }
    v
}

/// DescribeClientQuotas.
pub(crate) fn describe_quotas(
    req: &Req<'_>,
    r: DescribeClientQuotasRequest,
) -> Result<Reply, KafkaError> {
    let table = req.ctx.core.broker.security().quotas();
    let mut entries = Vec::new();
    for (entity, values) in &table {
        let parts = entity_parts(entity);
        let component_ok = r.components.iter().all(|c| {
            let part = parts.iter().find(|(k, _)| *k == c.entity_type.as_str());
            match (c.match_type, part) {
                (_, None) => false,
                (0, Some((_, n))) => n.as_deref() == c._match.as_deref(),
                (1, Some((_, n))) => n.is_none(),
                (_, Some(_)) => true,
            }
        });
        let strict_ok = !r.strict || parts.len() == r.components.len();
        if !component_ok || !strict_ok {
            continue;
        }
        let vals = KEYS
            .iter()
            .zip([
                values.producer_byte_rate,
                values.consumer_byte_rate,
                values.request_rate,
            ])
            .filter_map(|(k, v)| v.map(|v| dcq::ValueData::default().with_key(sb(k)).with_value(v)))
            .collect();
        entries.push(
            dcq::EntryData::default()
                .with_entity(
                    parts
                        .into_iter()
                        .map(|(k, n)| {
                            dcq::EntityData::default()
                                .with_entity_type(sb(k))
                                .with_entity_name(n.as_deref().map(sb))
                        })
                        .collect(),
                )
                .with_values(vals),
        );
    }
    req.respond(
        "DescribeClientQuotas",
        &DescribeClientQuotasResponse::default().with_entries(Some(entries)),
    )
}

/// AlterClientQuotas.
pub(crate) fn alter_quotas(
    req: &Req<'_>,
    r: AlterClientQuotasRequest,
) -> Result<Reply, KafkaError> {
    let table = req.ctx.core.broker.security().quotas();
    let mut planned: Vec<(Vec<acq::EntityData>, Result<SecurityCommand, String>)> = Vec::new();
    for e in &r.entries {
        let echo: Vec<acq::EntityData> = e
            .entity
            .iter()
            .map(|x| {
                acq::EntityData::default()
                    .with_entity_type(x.entity_type.clone())
                    .with_entity_name(x.entity_name.clone())
            })
            .collect();
        let parts: Vec<(String, Option<String>)> = e
            .entity
            .iter()
            .map(|x| {
                (
                    x.entity_type.to_string(),
                    x.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect();
        let cmd = entity_of(&parts).and_then(|entity| {
            let mut values = table.get(&entity).copied().unwrap_or_default();
            for op in &e.ops {
                let slot = value_slot(&mut values, op.key.as_str()).ok_or_else(|| {
                    format!(
                        "unknown quota key {:?} (one of {})",
                        op.key.as_str(),
                        KEYS.join(", ")
                    )
                })?;
                *slot = if op.remove { None } else { Some(op.value) };
            }
            values.validate().map_err(|x| x.to_string())?;
            Ok(SecurityCommand::SetQuota { entity, values })
        });
        planned.push((echo, cmd));
    }
    let validate_only = r.validate_only;
    let broker = Arc::clone(&req.ctx.core.broker);
    let encode = req.later::<AlterClientQuotasResponse>("AlterClientQuotas");
    Ok(Reply::Later(Box::pin(async move {
        let mut entries = Vec::with_capacity(planned.len());
        for (echo, cmd) in planned {
            let out = match cmd {
                Err(m) => Err((kafka::INVALID_REQUEST, m)),
                Ok(_) if validate_only => Ok(()),
                Ok(cmd) => match sluice_broker::security::apply(&broker, cmd).await {
                    Ok(SecurityOutcome::Done | SecurityOutcome::Deleted(_)) => Ok(()),
                    Ok(SecurityOutcome::NotFound) => {
                        Err((kafka::INVALID_REQUEST, "the quota was not accepted".into()))
                    }
                    Err(e) => Err((kafka::UNKNOWN_SERVER_ERROR, e.to_string())),
                },
            };
            let mut entry = acq::EntryData::default().with_entity(echo);
            if let Err((code, m)) = out {
                entry.error_code = code;
                entry.error_message = Some(sb(&m));
            }
            entries.push(entry);
        }
        encode(&AlterClientQuotasResponse::default().with_entries(entries))
    })))
}
