//! `sluice user|acl|quota`, and the SASL login flags every command uses.
//!
//! Shaped for users of Kafka's tools: `sluice acl add --allow --principal
//! User:alice --operation read,describe --topic orders` is `kafka-acls.sh
//! --add --allow-principal User:alice --operation Read --operation
//! Describe --topic orders`; `sluice quota set --user alice
//! --producer-byte-rate 1048576` is `kafka-configs.sh --alter --add-config
//! producer_byte_rate=1048576 --entity-type users --entity-name alice`;
//! `sluice user create alice --password-file pw` is `kafka-configs.sh
//! --alter --add-config 'SCRAM-SHA-256=[password=...],SCRAM-SHA-512=[...]'`
//! (the password is salted here, never sent).
//!
//! The login itself (`--sasl-mechanism`, `--username`, `--password`,
//! `--password-file`, or `SLUICE_SASL_MECHANISM`, `SLUICE_USERNAME`,
//! `SLUICE_PASSWORD`, `SLUICE_PASSWORD_FILE`) goes before the subcommand:
//! `sluice --username admin --password-file admin.pw user list`.
//! (`user create` has its own `--password`: the new user's.)

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use sluice_client::acl::{AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType};
use sluice_client::{
    ClientSasl, EntityName, ErrorCode, QuotaEntity, QuotaValues, SaslMechanism, ScramMechanismType,
    DEFAULT_SCRAM_ITERATIONS,
};

use crate::errors::{render_client, CliError};

/// The cluster's ACL resource name (Kafka's).
const CLUSTER_RESOURCE: &str = "kafka-cluster";

/// SASL login for every connection of this run (top-level flags).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Authentication (before the subcommand)")]
pub struct SaslArgs {
    /// SASL mechanism: plain, scram-sha-256 (default with --username), scram-sha-512.
    #[arg(long, env = "SLUICE_SASL_MECHANISM", value_name = "MECHANISM")]
    sasl_mechanism: Option<String>,
    /// User to authenticate as.
    #[arg(long, env = "SLUICE_USERNAME", value_name = "USER")]
    username: Option<String>,
    /// Password of --username; wins over --password-file (prefer the file or
    /// SLUICE_PASSWORD: flags show in `ps`).
    #[arg(
        long,
        env = "SLUICE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    password: Option<String>,
    /// File whose first line is the password of --username (`-`: stdin).
    #[arg(long, env = "SLUICE_PASSWORD_FILE", value_name = "FILE")]
    password_file: Option<PathBuf>,
}

impl SaslArgs {
    /// The client's SASL settings, `None` without --username.
    pub fn client_sasl(&self) -> Result<Option<ClientSasl>, CliError> {
        let Some(user) = &self.username else {
            if self.sasl_mechanism.is_some() {
                return Err(CliError::msg(
                    "--sasl-mechanism needs --username (and --password or --password-file)",
                ));
            }
            return Ok(None);
        };
        let mechanism = match &self.sasl_mechanism {
            None => SaslMechanism::ScramSha256,
            Some(m) => m.parse::<SaslMechanism>().map_err(CliError::msg)?,
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read_password(f)?,
            (None, None) => {
                return Err(CliError::msg(format!(
                    "--username {user} needs --password, --password-file or SLUICE_PASSWORD"
                )))
            }
        };
        Ok(Some(ClientSasl::new(mechanism, user.clone(), password)))
    }
}

/// The first line of `path` (`-`: stdin), without its line ending.
fn read_password(path: &Path) -> Result<String, CliError> {
    let text = if path == Path::new("-") {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::msg(format!("cannot read password file {}: {e}", path.display()))
        })?
    };
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        return Err(CliError::msg(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(pw)
}

/// Which SCRAM mechanisms a new user gets.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMechanism {
    /// SCRAM-SHA-256 only.
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// SCRAM-SHA-512 only.
    #[value(name = "scram-sha-512")]
    ScramSha512,
    /// Both (what Kafka clients expect to find).
    Both,
}

/// `sluice user ...`: SCRAM users.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user, or replace its password.
    Create {
        /// User name.
        name: String,
        /// The new user's password (prefer --password-file: flags show in `ps`).
        #[arg(
            long,
            conflicts_with = "password_file",
            required_unless_present = "password_file"
        )]
        password: Option<String>,
        /// File whose first line is the new user's password (`-`: stdin).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// SCRAM mechanisms to create credentials for.
        #[arg(long, value_enum, default_value = "both")]
        mechanism: UserMechanism,
        /// PBKDF2 iteration count (4096 to 16384).
        #[arg(long, default_value_t = DEFAULT_SCRAM_ITERATIONS)]
        iterations: u32,
    },
    /// Delete a user and all its credentials (its ACLs stay).
    Delete {
        /// User name.
        name: String,
    },
    /// List users with their mechanisms and iteration counts.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which resources an ACL command is about.
#[derive(Args, Debug, Default)]
pub struct ResourceArgs {
    /// Topic name (or prefix with --prefixed; `*` for every topic); repeatable.
    #[arg(long)]
    topic: Vec<String>,
    /// Consumer group id (or prefix with --prefixed; `*` for every group); repeatable.
    #[arg(long)]
    group: Vec<String>,
    /// The cluster itself (topic creation, admin operations, replication).
    #[arg(long)]
    cluster: bool,
    /// The names are prefixes (Kafka's PREFIXED pattern type).
    #[arg(long)]
    prefixed: bool,
}

impl ResourceArgs {
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let mut v: Vec<(ResourceType, String)> = self
            .topic
            .iter()
            .map(|t| (ResourceType::Topic, t.clone()))
            .collect();
        v.extend(self.group.iter().map(|g| (ResourceType::Group, g.clone())));
        if self.cluster {
            v.push((ResourceType::Cluster, CLUSTER_RESOURCE.to_string()));
        }
        v
    }

    fn pattern(&self) -> PatternType {
        if self.prefixed {
            PatternType::Prefixed
        } else {
            PatternType::Literal
        }
    }
}

/// Options of `acl add` and `acl remove`.
#[derive(Args, Debug)]
pub struct AclArgs {
    /// Grant the operations.
    #[arg(long, conflicts_with = "deny")]
    allow: bool,
    /// Refuse the operations (a DENY wins over any ALLOW).
    #[arg(long)]
    deny: bool,
    /// Principal, e.g. `User:alice`, or `User:*` for every user; repeatable.
    #[arg(long)]
    principal: Vec<String>,
    /// Client IP address the binding applies to (default: any host, `*`).
    #[arg(long)]
    host: Option<String>,
    /// Operations, comma-separated or repeated: all, read, write, create,
    /// delete, alter, describe, cluster-action, describe-configs,
    /// alter-configs, idempotent-write.
    #[arg(long, value_delimiter = ',')]
    operation: Vec<String>,
    #[command(flatten)]
    resource: ResourceArgs,
}

/// `sluice acl ...`: access control lists.
#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add ACL bindings: each principal x operation x resource.
    Add(AclArgs),
    /// Remove the bindings matching the options (a missing option matches anything).
    Remove(AclArgs),
    /// List ACL bindings (--topic T lists every binding that applies to T, prefixed ones included).
    List {
        /// Only bindings of this principal.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resource: ResourceArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Who a quota command is about.
#[derive(Args, Debug)]
pub struct EntityArgs {
    /// This user.
    #[arg(long, conflicts_with = "user_default")]
    user: Option<String>,
    /// Every user without a quota of its own (Kafka's `<default>`).
    #[arg(long)]
    user_default: bool,
    /// This client id (with or without a user).
    #[arg(long, conflicts_with = "client_default")]
    client_id: Option<String>,
    /// Every client id without a quota of its own.
    #[arg(long)]
    client_default: bool,
}

impl EntityArgs {
    fn entity(&self) -> Result<QuotaEntity, CliError> {
        let part = |named: &Option<String>, default: bool| match (named, default) {
            (Some(n), _) => Some(EntityName::Named(n.clone())),
            (None, true) => Some(EntityName::Default),
            (None, false) => None,
        };
        let entity = QuotaEntity {
            user: part(&self.user, self.user_default),
            client_id: part(&self.client_id, self.client_default),
        };
        if entity.user.is_none() && entity.client_id.is_none() {
            return Err(CliError::msg(
                "name the entity: --user U or --user-default, and/or --client-id C or --client-default",
            ));
        }
        Ok(entity)
    }
}

/// `sluice quota ...`: produce/fetch byte rates and request rates.
#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set rates of a user and/or client id (the rates not given keep their value).
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// Produce bytes per second.
        #[arg(long)]
        producer_byte_rate: Option<f64>,
        /// Fetch bytes per second.
        #[arg(long)]
        consumer_byte_rate: Option<f64>,
        /// Requests per second.
        #[arg(long)]
        request_rate: Option<f64>,
    },
    /// Remove every quota of a user and/or client id.
    Remove {
        #[command(flatten)]
        entity: EntityArgs,
    },
    /// List every quota.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// One line for a refusal, with what to do about it.
fn security_error(broker: &str) -> impl Fn(sluice_client::ClientError) -> CliError + '_ {
    move |e| {
        let line = match e.code() {
            Some(ErrorCode::UnknownApi) => format!(
                "the broker at {broker} does not serve users, ACLs or quotas (it is older than this CLI)"
            ),
            _ => render_client(&e, None, broker),
        };
        CliError::msg(line)
    }
}

fn scram_name(m: ScramMechanismType) -> &'static str {
    m.name()
}

/// Runs a user command.
pub async fn run_user(broker: &str, command: UserCommand) -> Result<i32, CliError> {
    let admin = crate::topic::admin(broker).await?;
    let err = security_error(broker);
    match command {
        UserCommand::Create {
            name,
            password,
            password_file,
            mechanism,
            iterations,
        } => {
            let password = match (password, password_file) {
                (Some(p), _) => p,
                (None, Some(f)) => read_password(&f)?,
                (None, None) => return Err(CliError::msg("give --password or --password-file")),
            };
            let mechanisms: &[ScramMechanismType] = match mechanism {
                UserMechanism::ScramSha256 => &[ScramMechanismType::Sha256],
                UserMechanism::ScramSha512 => &[ScramMechanismType::Sha512],
                UserMechanism::Both => &ScramMechanismType::ALL,
            };
            admin
                .upsert_user(&name, &password, mechanisms, iterations)
                .await
                .map_err(&err)?;
            let names: Vec<&str> = mechanisms.iter().map(|m| scram_name(*m)).collect();
            outln!("user \"{name}\" saved ({})", names.join(", "));
            Ok(0)
        }
        UserCommand::Delete { name } => {
            admin.delete_user(&name).await.map_err(|e| {
                if e.code() == Some(ErrorCode::ResourceNotFound) {
                    CliError::msg(format!(
                        "user \"{name}\" does not exist; see `sluice user list`"
                    ))
                } else {
                    err(e)
                }
            })?;
            outln!("user \"{name}\" deleted");
            Ok(0)
        }
        UserCommand::List { json } => {
            let users = admin.list_users().await.map_err(&err)?;
            if json {
                let v: Vec<_> = users
                    .iter()
                    .map(|u| {
                        json!({
                            "user": u.user,
                            "credentials": u.credentials.iter().map(|c| json!({
                                "mechanism": scram_name(c.mechanism),
                                "iterations": c.iterations,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                let width = users.iter().map(|u| u.user.len()).max().unwrap_or(4).max(4);
                outln!("{:<width$}  MECHANISMS", "USER");
                for u in &users {
                    let creds: Vec<String> = u
                        .credentials
                        .iter()
                        .map(|c| {
                            format!("{} (iterations={})", scram_name(c.mechanism), c.iterations)
                        })
                        .collect();
                    outln!("{:<width$}  {}", u.user, creds.join(", "));
                }
            }
            Ok(0)
        }
    }
}

fn parse_operations(ops: &[String]) -> Result<Vec<Operation>, CliError> {
    ops.iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .map(|o| {
            let op: Operation = o.parse().map_err(|e| CliError::msg(format!("{e}")))?;
            if op == Operation::Any {
                return Err(CliError::msg(
                    "operation 'any' is for filters; use 'all' to grant every operation",
                ));
            }
            Ok(op)
        })
        .collect()
}

fn check_principal(p: &str) -> Result<(), CliError> {
    match p.split_once(':') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() => Ok(()),
        _ => Err(CliError::msg(format!(
            "principal {p:?} must be Type:name, e.g. User:alice (or User:* for every user)"
        ))),
    }
}

/// The bindings `acl add` creates.
fn bindings(args: &AclArgs) -> Result<Vec<AclBinding>, CliError> {
    if !args.allow && !args.deny {
        return Err(CliError::msg("say --allow or --deny"));
    }
    if args.principal.is_empty() {
        return Err(CliError::msg("give --principal (e.g. User:alice)"));
    }
    let ops = parse_operations(&args.operation)?;
    if ops.is_empty() {
        return Err(CliError::msg(
            "give --operation (read, write, create, delete, alter, describe, ..., or all)",
        ));
    }
    let resources = args.resource.resources();
    if resources.is_empty() {
        return Err(CliError::msg("give --topic, --group or --cluster"));
    }
    let permission = if args.allow {
        Permission::Allow
    } else {
        Permission::Deny
    };
    let mut out = Vec::new();
    for p in &args.principal {
        check_principal(p)?;
        for op in &ops {
            for (rt, name) in &resources {
                let b = AclBinding {
                    resource_type: *rt,
                    name: name.clone(),
                    pattern: args.resource.pattern(),
                    principal: p.clone(),
                    host: args.host.clone().unwrap_or_else(|| "*".into()),
                    operation: *op,
                    permission,
                };
                b.validate()
                    .map_err(|e| CliError::msg(format!("invalid ACL: {e}")))?;
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// The filters `acl remove` sends: one per given principal x operation x
/// resource, a missing option matching anything.
fn removal_filters(args: &AclArgs) -> Result<Vec<AclFilter>, CliError> {
    let resources = args.resource.resources();
    if resources.is_empty() && args.principal.is_empty() {
        return Err(CliError::msg(
            "give --topic, --group, --cluster or --principal (removing every ACL at once is not offered)",
        ));
    }
    let permission = match (args.allow, args.deny) {
        (true, _) => Some(Permission::Allow),
        (_, true) => Some(Permission::Deny),
        _ => None,
    };
    let principals: Vec<Option<String>> = if args.principal.is_empty() {
        vec![None]
    } else {
        args.principal.iter().cloned().map(Some).collect()
    };
    let ops: Vec<Option<Operation>> = {
        let ops = parse_operations(&args.operation)?;
        if ops.is_empty() {
            vec![None]
        } else {
            ops.into_iter().map(Some).collect()
        }
    };
    let res: Vec<Option<(ResourceType, String)>> = if resources.is_empty() {
        vec![None]
    } else {
        resources.into_iter().map(Some).collect()
    };
    let mut out = Vec::new();
    for p in &principals {
        for op in &ops {
            for r in &res {
                out.push(AclFilter {
                    resource_type: r.as_ref().map(|(t, _)| *t),
                    name: r.as_ref().map(|(_, n)| n.clone()),
                    pattern: r.as_ref().map(|_| args.resource.pattern()),
                    principal: p.clone(),
                    host: args.host.clone(),
                    operation: *op,
                    permission,
                });
            }
        }
    }
    Ok(out)
}

fn print_acls(acls: &[AclBinding]) {
    let up = |s: &dyn std::fmt::Display| s.to_string().to_uppercase().replace('-', "_");
    let rows: Vec<[String; 7]> = acls
        .iter()
        .map(|b| {
            [
                b.principal.clone(),
                b.host.clone(),
                up(&b.operation),
                up(&b.permission),
                up(&b.resource_type),
                b.name.clone(),
                up(&b.pattern),
            ]
        })
        .collect();
    let header = [
        "PRINCIPAL",
        "HOST",
        "OPERATION",
        "PERMISSION",
        "RESOURCE",
        "NAME",
        "PATTERN",
    ];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 7]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    outln!("{}", line(header));
    for r in &rows {
        outln!("{}", line(r.each_ref().map(String::as_str)));
    }
}

fn acl_json(b: &AclBinding) -> serde_json::Value {
    json!({
        "principal": b.principal,
        "host": b.host,
        "operation": b.operation.as_str(),
        "permission": b.permission.as_str(),
        "resource_type": b.resource_type.as_str(),
        "name": b.name,
        "pattern": b.pattern.as_str(),
    })
}

/// Runs an ACL command.
pub async fn run_acl(broker: &str, command: AclCommand) -> Result<i32, CliError> {
    // Check the arguments before connecting.
    enum Plan {
        Add(Vec<AclBinding>),
        Remove(Vec<AclFilter>),
        List(AclFilter, bool),
    }
    let plan = match command {
        AclCommand::Add(args) => Plan::Add(bindings(&args)?),
        AclCommand::Remove(args) => Plan::Remove(removal_filters(&args)?),
        AclCommand::List {
            principal,
            resource,
            json,
        } => {
            let mut res = resource.resources();
            if res.len() > 1 {
                return Err(CliError::msg(
                    "acl list takes at most one --topic, --group or --cluster",
                ));
            }
            if let Some(p) = &principal {
                check_principal(p)?;
            }
            let r = res.pop();
            let filter = AclFilter {
                resource_type: r.as_ref().map(|(t, _)| *t),
                pattern: r.as_ref().map(|_| {
                    if resource.prefixed {
                        PatternType::Prefixed
                    } else {
                        PatternType::Match
                    }
                }),
                name: r.map(|(_, n)| n),
                principal,
                ..AclFilter::default()
            };
            Plan::List(filter, json)
        }
    };
    let admin = crate::topic::admin(broker).await?;
    let err = security_error(broker);
    match plan {
        Plan::Add(bindings) => {
            admin.create_acls(&bindings).await.map_err(&err)?;
            outln!("added {} ACL binding(s):", bindings.len());
            print_acls(&bindings);
        }
        Plan::Remove(filters) => {
            let removed = admin.delete_acls(&filters).await.map_err(&err)?;
            outln!("removed {} ACL binding(s):", removed.len());
            if !removed.is_empty() {
                print_acls(&removed);
            }
        }
        Plan::List(filter, json) => {
            let acls = admin.describe_acls(&filter).await.map_err(&err)?;
            if json {
                outln!(
                    "{}",
                    serde_json::Value::Array(acls.iter().map(acl_json).collect())
                );
            } else {
                print_acls(&acls);
            }
        }
    }
    Ok(0)
}

fn rate_ok(name: &str, v: Option<f64>) -> Result<(), CliError> {
    match v {
        Some(r) if !(r.is_finite() && r > 0.0) => Err(CliError::msg(format!(
            "--{name} must be a number above 0 (use `sluice quota remove` to drop quotas)"
        ))),
        _ => Ok(()),
    }
}

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |r| format!("{r}"))
}

/// Runs a quota command.
pub async fn run_quota(broker: &str, command: QuotaCommand) -> Result<i32, CliError> {
    match command {
        QuotaCommand::Set {
            entity,
            producer_byte_rate,
            consumer_byte_rate,
            request_rate,
        } => {
            let entity = entity.entity()?;
            rate_ok("producer-byte-rate", producer_byte_rate)?;
            rate_ok("consumer-byte-rate", consumer_byte_rate)?;
            rate_ok("request-rate", request_rate)?;
            if producer_byte_rate.is_none()
                && consumer_byte_rate.is_none()
                && request_rate.is_none()
            {
                return Err(CliError::msg(
                    "give --producer-byte-rate, --consumer-byte-rate and/or --request-rate",
                ));
            }
            let admin = crate::topic::admin(broker).await?;
            let err = security_error(broker);
            // Kafka's --alter --add-config: the rates not given keep their value.
            let current = admin
                .describe_quotas()
                .await
                .map_err(&err)?
                .into_iter()
                .find(|(e, _)| *e == entity)
                .map(|(_, v)| v)
                .unwrap_or_default();
            let values = QuotaValues {
                producer_byte_rate: producer_byte_rate.or(current.producer_byte_rate),
                consumer_byte_rate: consumer_byte_rate.or(current.consumer_byte_rate),
                request_rate: request_rate.or(current.request_rate),
            };
            admin.alter_quota(&entity, values).await.map_err(&err)?;
            outln!(
                "quotas of {entity}: producer_byte_rate={} consumer_byte_rate={} request_rate={}",
                fmt_rate(values.producer_byte_rate),
                fmt_rate(values.consumer_byte_rate),
                fmt_rate(values.request_rate)
            );
        }
        QuotaCommand::Remove { entity } => {
            let entity = entity.entity()?;
            let admin = crate::topic::admin(broker).await?;
            admin
                .alter_quota(&entity, QuotaValues::default())
                .await
                .map_err(|e| {
                    if e.code() == Some(ErrorCode::ResourceNotFound) {
                        CliError::msg(format!("{entity} has no quotas; see `sluice quota list`"))
                    } else {
                        security_error(broker)(e)
                    }
                })?;
            outln!("quotas of {entity} removed");
        }
        QuotaCommand::List { json } => {
            let admin = crate::topic::admin(broker).await?;
            let quotas = admin
                .describe_quotas()
                .await
                .map_err(security_error(broker))?;
            if json {
                let part = |p: &Option<EntityName>| p.as_ref().map(|n| n.to_string());
                let v: Vec<_> = quotas
                    .iter()
                    .map(|(e, q)| {
                        json!({
                            "user": part(&e.user),
                            "client_id": part(&e.client_id),
                            "producer_byte_rate": q.producer_byte_rate,
                            "consumer_byte_rate": q.consumer_byte_rate,
                            "request_rate": q.request_rate,
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                let entities: Vec<String> = quotas.iter().map(|(e, _)| e.to_string()).collect();
                let width = entities.iter().map(String::len).max().unwrap_or(6).max(6);
                outln!(
                    "{:<width$}  {:>18}  {:>18}  {:>12}",
                    "ENTITY",
                    "PRODUCER_BYTE_RATE",
                    "CONSUMER_BYTE_RATE",
                    "REQUEST_RATE"
                );
                for (name, (_, q)) in entities.iter().zip(&quotas) {
                    outln!(
                        "{:<width$}  {:>18}  {:>18}  {:>12}",
                        name,
                        fmt_rate(q.producer_byte_rate),
                        fmt_rate(q.consumer_byte_rate),
                        fmt_rate(q.request_rate)
                    );
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl_args(extra: &[&str]) -> AclArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: AclArgs,
        }
        use clap::Parser;
        P::try_parse_from(std::iter::once("acl").chain(extra.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn add_makes_every_principal_operation_resource_binding() {
        let a = acl_args(&[
            "--allow",
            "--principal",
            "User:alice",
            "--operation",
            "read,describe",
            "--topic",
            "orders-",
            "--prefixed",
            "--group",
            "billing",
        ]);
        let b = bindings(&a).unwrap();
        assert_eq!(b.len(), 4);
        assert!(b.iter().all(|b| b.pattern == PatternType::Prefixed
            && b.permission == Permission::Allow
            && b.host == "*"));
        assert!(bindings(&acl_args(&[
            "--allow",
            "--topic",
            "t",
            "--operation",
            "read"
        ]))
        .is_err());
        assert!(bindings(&acl_args(&[
            "--deny",
            "--principal",
            "alice",
            "--topic",
            "t",
            "--operation",
            "read"
        ]))
        .is_err());
        assert!(bindings(&acl_args(&[
            "--deny",
            "--principal",
            "User:a",
            "--cluster",
            "--operation",
            "teleport"
        ]))
        .is_err());
    }

    #[test]
    fn remove_leaves_out_what_is_not_given() {
        let f = removal_filters(&acl_args(&["--principal", "User:bob"])).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].principal.as_deref(), Some("User:bob"));
        assert!(f[0].resource_type.is_none() && f[0].operation.is_none());
        assert!(removal_filters(&acl_args(&["--allow"])).is_err());
    }
}
