//! [`Admin`] methods for the security metadata: SCRAM users, ACLs, quotas
//! (the native apis 24 to 30 of `protocol.md`).
//!
//! Passwords never leave the client: a user's credential is sent as a
//! random 32-byte salt, the iteration count and `SaltedPassword =
//! PBKDF2(password, salt, iterations)`, as Kafka's AlterUserScramCredentials
//! does; the broker derives and stores StoredKey and ServerKey. Each change
//! is applied (fsynced, or committed by the controller) before the answer.

use bytes::Bytes;
use sluice_auth::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use sluice_auth::quota::{EntityName, QuotaEntity, QuotaValues};
use sluice_auth::scram::{ScramCredential, ScramMechanism};
use sluice_protocol::{
    AclEntry, AclFilterEntry, AdminResult, AlterQuotasRequest, AlterUserScramCredentialsRequest,
    CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest, DescribeUsersRequest, DescribedUser,
    QuotaEntityKey, QuotaEntityName, QuotaEntry, QuotaRates, Request, Response, ScramDeletion,
    ScramMechanismType, ScramUpsertion,
};

use super::{check, unexpected, Admin};
use crate::error::{ClientError, Result};

/// The default PBKDF2 iteration count of a new credential (Kafka's, RFC 7677's floor).
pub const DEFAULT_SCRAM_ITERATIONS: u32 = ScramCredential::DEFAULT_ITERATIONS;

fn auth_mechanism(m: ScramMechanismType) -> ScramMechanism {
    match m {
        ScramMechanismType::Sha256 => ScramMechanism::Sha256,
        ScramMechanismType::Sha512 => ScramMechanism::Sha512,
    }
}

fn first_error(results: &[AdminResult], what: impl Fn(usize) -> String) -> Result<()> {
    for (i, r) in results.iter().enumerate() {
        check(r.error, &r.message, || what(i))?;
    }
    Ok(())
}

fn to_entry(b: &AclBinding) -> AclEntry {
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

fn from_entry(a: &AclEntry) -> Result<AclBinding> {
    let code = |v: u8| i8::try_from(v).unwrap_or(i8::MAX);
    let bad = |what: &str, v: u8| ClientError::UnexpectedResponse {
        request: "DescribeAcls",
        got: format!("unknown {what} code {v}"),
    };
    Ok(AclBinding {
        resource_type: ResourceType::from_i8(code(a.resource_type))
            .ok_or_else(|| bad("resource type", a.resource_type))?,
        name: a.resource_name.clone(),
        pattern: PatternType::from_i8(code(a.pattern_type))
            .ok_or_else(|| bad("pattern type", a.pattern_type))?,
        principal: a.principal.clone(),
        host: a.host.clone(),
        operation: Operation::from_i8(code(a.operation))
            .ok_or_else(|| bad("operation", a.operation))?,
        permission: Permission::from_i8(code(a.permission))
            .ok_or_else(|| bad("permission", a.permission))?,
    })
}

fn to_filter(f: &AclFilter) -> AclFilterEntry {
    let code = |v: i8| u8::try_from(v).unwrap_or(1);
    AclFilterEntry {
        resource_type: code(f.resource_type.unwrap_or(ResourceType::Any).to_i8()),
        resource_name: f.name.clone(),
        pattern_type: code(f.pattern.unwrap_or(PatternType::Any).to_i8()),
        principal: f.principal.clone(),
        host: f.host.clone(),
        operation: code(f.operation.unwrap_or(Operation::Any).to_i8()),
        permission: code(f.permission.unwrap_or(Permission::Any).to_i8()),
    }
}

fn to_wire_name(n: &EntityName) -> QuotaEntityName {
    match n {
        EntityName::Default => QuotaEntityName::Default,
        EntityName::Named(s) => QuotaEntityName::Named(s.clone()),
    }
}

fn from_wire_name(n: QuotaEntityName) -> EntityName {
    match n {
        QuotaEntityName::Default => EntityName::Default,
        QuotaEntityName::Named(s) => EntityName::Named(s),
    }
}

impl Admin {
    /// Creates `user` or replaces its credentials: one SCRAM credential per
    /// mechanism in `mechanisms` (both is Kafka's usual), derived from
    /// `password` with `iterations` (4096 to 16384) and a fresh salt each.
    pub async fn upsert_user(
        &self,
        user: &str,
        password: &str,
        mechanisms: &[ScramMechanismType],
        iterations: u32,
    ) -> Result<()> {
        if mechanisms.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a user needs at least one SCRAM mechanism".into(),
            ));
        }
        let (pw, mechs) = (password.to_string(), mechanisms.to_vec());
        // PBKDF2 runs twice per mechanism here: off the async threads.
        let derived = tokio::task::spawn_blocking(move || {
            mechs
                .into_iter()
                .map(|m| {
                    let am = auth_mechanism(m);
                    let salt = ScramCredential::new(am, &pw, iterations)?.salt;
                    let salted = am.salted_password(pw.as_bytes(), &salt, iterations)?;
                    Ok((m, salt, salted))
                })
                .collect::<std::result::Result<Vec<_>, sluice_auth::AuthError>>()
        })
        .await
        .map_err(|e| ClientError::InvalidArgument(format!("credential task failed: {e}")))?
        .map_err(|e| ClientError::InvalidArgument(format!("user {user}: {e}")))?;
        let upsertions = derived
            .into_iter()
            .map(|(mechanism, salt, salted)| ScramUpsertion {
                user: user.to_string(),
                mechanism,
                iterations,
                salt: Bytes::from(salt),
                salted_password: Bytes::from(salted),
            })
            .collect();
        self.alter_credentials(upsertions, Vec::new(), || format!("create user \"{user}\""))
            .await
    }

    /// Deletes `user` with all its credentials (its ACLs stay, as in Kafka).
    pub async fn delete_user(&self, user: &str) -> Result<()> {
        let deletion = ScramDeletion {
            user: user.to_string(),
            mechanism: None,
        };
        self.alter_credentials(Vec::new(), vec![deletion], || {
            format!("delete user \"{user}\"")
        })
        .await
    }

    /// Deletes one of `user`'s credentials (the user goes with its last one).
    pub async fn delete_user_credential(
        &self,
        user: &str,
        mechanism: ScramMechanismType,
    ) -> Result<()> {
        let deletion = ScramDeletion {
            user: user.to_string(),
            mechanism: Some(mechanism),
        };
        self.alter_credentials(Vec::new(), vec![deletion], || {
            format!("delete the {} credential of \"{user}\"", mechanism.name())
        })
        .await
    }

    async fn alter_credentials(
        &self,
        upsertions: Vec<ScramUpsertion>,
        deletions: Vec<ScramDeletion>,
        what: impl Fn() -> String,
    ) -> Result<()> {
        let request = Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
            upsertions,
            deletions,
        });
        match self.cluster.bootstrap().request(&request).await? {
            Response::AlterUserScramCredentials(r) => first_error(&r.results, |_| what()),
            other => Err(unexpected("AlterUserScramCredentials", other)),
        }
    }

    /// Every user with its mechanisms and iteration counts (never keys), by name.
    pub async fn list_users(&self) -> Result<Vec<DescribedUser>> {
        self.describe_users(Vec::new()).await
    }

    /// The named users; one that does not exist has `RESOURCE_NOT_FOUND` in its entry.
    pub async fn describe_users(&self, users: Vec<String>) -> Result<Vec<DescribedUser>> {
        let request = Request::DescribeUsers(DescribeUsersRequest { users });
        match self.cluster.bootstrap().request(&request).await? {
            Response::DescribeUsers(r) => Ok(r.users),
            other => Err(unexpected("DescribeUsers", other)),
        }
    }

    /// Adds ACL bindings (present ones are no-ops); the first refused one is the error.
    pub async fn create_acls(&self, bindings: &[AclBinding]) -> Result<()> {
        let request = Request::CreateAcls(CreateAclsRequest {
            creations: bindings.iter().map(to_entry).collect(),
        });
        match self.cluster.bootstrap().request(&request).await? {
            Response::CreateAcls(r) => first_error(&r.results, |i| {
                format!(
                    "create ACL {}",
                    describe_binding(&bindings[i.min(bindings.len() - 1)])
                )
            }),
            other => Err(unexpected("CreateAcls", other)),
        }
    }

    /// The ACL bindings matching `filter` ([`AclFilter::default`] matches all), sorted.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>> {
        let request = Request::DescribeAcls(DescribeAclsRequest {
            filter: to_filter(filter),
        });
        match self.cluster.bootstrap().request(&request).await? {
            Response::DescribeAcls(r) => {
                check(r.error, &r.message, || "describe ACLs".into())?;
                r.acls.iter().map(from_entry).collect()
            }
            other => Err(unexpected("DescribeAcls", other)),
        }
    }

    /// Removes every binding matching any of `filters`; returns those removed.
    pub async fn delete_acls(&self, filters: &[AclFilter]) -> Result<Vec<AclBinding>> {
        let request = Request::DeleteAcls(DeleteAclsRequest {
            filters: filters.iter().map(to_filter).collect(),
        });
        match self.cluster.bootstrap().request(&request).await? {
            Response::DeleteAcls(r) => {
                let mut deleted = Vec::new();
                for x in &r.results {
                    check(x.error, &x.message, || "delete ACLs".into())?;
                    for a in &x.deleted {
                        deleted.push(from_entry(a)?);
                    }
                }
                Ok(deleted)
            }
            other => Err(unexpected("DeleteAcls", other)),
        }
    }

    /// Sets `entity`'s quotas to `values` (replacing what it had); all-`None`
    /// values remove them.
    pub async fn alter_quota(&self, entity: &QuotaEntity, values: QuotaValues) -> Result<()> {
        let request = Request::AlterQuotas(AlterQuotasRequest {
            entries: vec![QuotaEntry {
                entity: QuotaEntityKey {
                    user: entity.user.as_ref().map(to_wire_name),
                    client_id: entity.client_id.as_ref().map(to_wire_name),
                },
                rates: QuotaRates {
                    producer_byte_rate: values.producer_byte_rate,
                    consumer_byte_rate: values.consumer_byte_rate,
                    request_rate: values.request_rate,
                },
            }],
        });
        match self.cluster.bootstrap().request(&request).await? {
            Response::AlterQuotas(r) => {
                first_error(&r.results, |_| format!("set quotas of {entity}"))
            }
            other => Err(unexpected("AlterQuotas", other)),
        }
    }

    /// Every entity with quotas, sorted.
    pub async fn describe_quotas(&self) -> Result<Vec<(QuotaEntity, QuotaValues)>> {
        match self
            .cluster
            .bootstrap()
            .request(&Request::DescribeQuotas)
            .await?
        {
            Response::DescribeQuotas(r) => Ok(r
                .entries
                .into_iter()
                .map(|q| {
                    (
                        QuotaEntity {
                            user: q.entity.user.map(from_wire_name),
                            client_id: q.entity.client_id.map(from_wire_name),
                        },
                        QuotaValues {
                            producer_byte_rate: q.rates.producer_byte_rate,
                            consumer_byte_rate: q.rates.consumer_byte_rate,
                            request_rate: q.rates.request_rate,
                        },
                    )
                })
                .collect()),
            other => Err(unexpected("DescribeQuotas", other)),
        }
    }
}

/// A binding in one line, for messages.
fn describe_binding(b: &AclBinding) -> String {
    format!(
        "{} {} {} on {} {}{} from {}",
        b.permission,
        b.principal,
        b.operation,
        b.resource_type,
        b.name,
        if b.pattern == PatternType::Prefixed {
            " (prefixed)"
        } else {
            ""
        },
        b.host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_and_filters_map_to_the_wire_and_back() {
        let b = AclBinding {
            resource_type: ResourceType::Group,
            name: "billing".into(),
            pattern: PatternType::Literal,
            principal: "User:bob".into(),
            host: "10.0.0.1".into(),
            operation: Operation::Read,
            permission: Permission::Deny,
        };
        assert_eq!(from_entry(&to_entry(&b)).unwrap(), b);
        assert_eq!(to_filter(&AclFilter::default()), AclFilterEntry::any());
        let f = AclFilter::exact(&b);
        let w = to_filter(&f);
        assert_eq!((w.resource_type, w.operation, w.permission), (3, 3, 2));
    }
}
