//! Who a connection is, what it may do, and how fast (issue 14).
//!
//! The logic (SCRAM, PLAIN, the ACL model, quota accounting, the metadata
//! they live in) is the `sluice-auth` crate; this module is the broker's
//! live copy of it and the policy around it:
//!
//! - **Principals.** A connection starts as [`ANONYMOUS`], or as
//!   `User:<CN>` when a verified client certificate names one (mTLS). On a
//!   SASL listener it must authenticate (PLAIN or SCRAM-SHA-256/512, against
//!   the salted credentials in the security metadata) before anything but
//!   ApiVersions and the SASL requests; it is then `User:<name>`. PLAIN is
//!   refused on a connection without TLS unless `sasl_plain_without_tls`.
//! - **Authorization** (`authorization = true`): Kafka's model, see
//!   [`sluice_auth::acl::Authorizer`]. Super users (`super_users`, and the
//!   bootstrap admin) may do everything; anyone else needs a matching ALLOW
//!   and no matching DENY. Off (the default), every principal may do
//!   everything, as a Kafka broker without an authorizer.
//! - **Failed logins** are logged with the peer address and counted
//!   (`sluice_auth_failures_total`); the failure answer from one address is
//!   delayed `auth_failure_delay_ms`, doubled for each further failure from
//!   it within a minute, up to 5 s (Kafka delays by
//!   `connection.failed.authentication.delay.ms`; the doubling slows a
//!   password-guessing loop down without holding a thread).
//! - **Quotas**: byte-rate (produce, fetch) and request-rate quotas per user
//!   and client id ([`sluice_auth::quota::QuotaManager`]); a front end
//!   records usage and mutes the connection for the throttle time it is
//!   given, as Kafka does (KIP-219).
//! - **Storage.** The users, ACLs and quotas are the security metadata
//!   ([`SecurityState`]): on a single node in `<data>/security.json`
//!   ([`LocalSecurityStore`]); in a cluster a command of the controller's
//!   Raft log, applied on every broker (see [`crate::cluster::ClusterLink`]),
//!   so a user created on one broker logs in on all of them.
//!
//! Settings (TOML table `[security]`, flags and `SLUICE_*` variables flat):
//!
//! | key                      | env                             | default |
//! |--------------------------|---------------------------------|---------|
//! | `authorization`          | `SLUICE_AUTHORIZATION`          | `false` (no ACL checks) |
//! | `super_users`            | `SLUICE_SUPER_USERS`            | none; `User:a,User:b` |
//! | `sasl_mechanisms`        | `SLUICE_SASL_MECHANISMS`        | `SCRAM-SHA-256,SCRAM-SHA-512,PLAIN` |
//! | `sasl_plain_without_tls` | `SLUICE_SASL_PLAIN_WITHOUT_TLS` | `false` |
//! | `admin_user`             | `SLUICE_ADMIN_USER`             | none; a SCRAM user created at start if missing, always a super user |
//! | `admin_password`         | `SLUICE_ADMIN_PASSWORD`         | none (required with `admin_user`) |
//! | `auth_failure_delay_ms`  | `SLUICE_AUTH_FAILURE_DELAY_MS`  | `100` |

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clap::Args;
use prometheus::{IntCounter, IntCounterVec, Opts};
use serde::Deserialize;
use sluice_auth::acl::{AclBinding, Authorizer, Operation, PatternType, Permission, ResourceType};
use sluice_auth::quota::{QuotaKind, QuotaManager};
use sluice_auth::sasl::{Mechanism, MECHANISMS};
use sluice_auth::scram::{ScramCredential, ScramMechanism};
use sluice_auth::store::{LocalSecurityStore, SecurityCommand, SecurityOutcome, SecurityState};

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::metrics::Metrics;

/// The principal of a connection that has not authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";
/// The resource name of the cluster in ACLs (Kafka's).
pub const CLUSTER_RESOURCE: &str = "kafka-cluster";
/// Longest delay of a failed login's answer.
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);
/// Failures from one address older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once (the oldest is dropped beyond).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// The `[security]` settings of one config layer; `None` means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityLayer {
    /// Check every request against the ACLs (deny when none allows it).
    #[arg(long, env = "SLUICE_AUTHORIZATION")]
    pub authorization: Option<bool>,
    /// Principals allowed everything, comma-separated (`User:admin,User:ops`).
    #[arg(long, env = "SLUICE_SUPER_USERS")]
    pub super_users: Option<String>,
    /// SASL mechanisms offered, comma-separated.
    #[arg(long, env = "SLUICE_SASL_MECHANISMS")]
    pub sasl_mechanisms: Option<String>,
    /// Allow SASL/PLAIN on connections without TLS (the password then crosses in clear).
    #[arg(long, env = "SLUICE_SASL_PLAIN_WITHOUT_TLS")]
    pub sasl_plain_without_tls: Option<bool>,
    /// A SCRAM user created at start if missing; always a super user.
    #[arg(long, env = "SLUICE_ADMIN_USER")]
    pub admin_user: Option<String>,
    /// The bootstrap admin's password.
    #[arg(long, env = "SLUICE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Delay of the first failed login's answer from an address (doubling after).
    #[arg(long, env = "SLUICE_AUTH_FAILURE_DELAY_MS")]
    pub auth_failure_delay_ms: Option<u64>,
}

impl SecurityLayer {
    /// This layer over `lower`: each field from here if set, else from `lower`.
    pub fn or(self, lower: SecurityLayer) -> SecurityLayer {
        SecurityLayer {
            authorization: self.authorization.or(lower.authorization),
            super_users: self.super_users.or(lower.super_users),
            sasl_mechanisms: self.sasl_mechanisms.or(lower.sasl_mechanisms),
            sasl_plain_without_tls: self.sasl_plain_without_tls.or(lower.sasl_plain_without_tls),
            admin_user: self.admin_user.or(lower.admin_user),
            admin_password: self.admin_password.or(lower.admin_password),
            auth_failure_delay_ms: self.auth_failure_delay_ms.or(lower.auth_failure_delay_ms),
        }
    }

    /// The settings with defaults filled in, checked.
    pub fn resolve(&self) -> Result<SecurityConfig, BrokerError> {
        let bad = |m: String| BrokerError::Config(m);
        let super_users: Vec<String> = split_list(self.super_users.as_deref());
        for u in &super_users {
            if !u.contains(':') {
                return Err(bad(format!(
                    "security.super_users entry {u:?} is not a principal like User:alice"
                )));
            }
        }
        let mechanisms = match &self.sasl_mechanisms {
            None => MECHANISMS.iter().map(|m| m.to_string()).collect(),
            Some(s) => split_list(Some(s)),
        };
        let mut enabled = Vec::new();
        for m in &mechanisms {
            let mech = Mechanism::from_name(m).ok_or_else(|| {
                bad(format!(
                    "security.sasl_mechanisms: {m:?} is not one of {}",
                    MECHANISMS.join(", ")
                ))
            })?;
            enabled.push(mech);
        }
        let admin = match (&self.admin_user, &self.admin_password) {
            (None, None) => None,
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u.clone(), p.clone())),
            _ => {
                return Err(bad(
                    "security.admin_user and security.admin_password go together (both non-empty)"
                        .into(),
                ))
            }
        };
        Ok(SecurityConfig {
            authorization: self.authorization.unwrap_or(false),
            super_users,
            mechanisms: enabled,
            plain_without_tls: self.sasl_plain_without_tls.unwrap_or(false),
            admin,
            failure_delay: Duration::from_millis(self.auth_failure_delay_ms.unwrap_or(100)),
        })
    }
}

fn split_list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// The resolved `[security]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// ACL checks on.
    pub authorization: bool,
    /// Principals allowed everything.
    pub super_users: Vec<String>,
    /// SASL mechanisms offered, in preference order.
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN allowed without TLS.
    pub plain_without_tls: bool,
    /// The bootstrap admin (user, password).
    pub admin: Option<(String, String)>,
    /// Delay of a first failed login's answer.
    pub failure_delay: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityLayer::default()
            .resolve()
            .unwrap_or(SecurityConfig {
                authorization: false,
                super_users: Vec::new(),
                mechanisms: Vec::new(),
                plain_without_tls: false,
                admin: None,
                failure_delay: Duration::from_millis(100),
            })
    }
}

/// One resource a request needs permission on; any of the alternatives
/// suffices. Each front end lists the needs of its requests; both check
/// them with [`Security::first_refused`].
pub struct Need {
    alts: Vec<(Operation, ResourceType, String)>,
    /// WRITE on any topic also allows it (InitProducerId, as Kafka 2.8+).
    any_topic_write: bool,
}

impl Need {
    /// `op` on the resource `rt` named `name`.
    pub fn on(op: Operation, rt: ResourceType, name: impl Into<String>) -> Need {
        Need {
            alts: vec![(op, rt, name.into())],
            any_topic_write: false,
        }
    }

    /// `op` on the cluster.
    pub fn cluster(op: Operation) -> Need {
        Need::on(op, ResourceType::Cluster, CLUSTER_RESOURCE)
    }

    /// `op` on each of the topics `names`.
    pub fn topics<'a>(op: Operation, names: impl Iterator<Item = &'a str>) -> Vec<Need> {
        names
            .map(|n| Need::on(op, ResourceType::Topic, n))
            .collect()
    }

    /// Creating topic `name`: CREATE on the cluster or on the topic.
    pub fn create_topic(name: &str) -> Need {
        Need {
            alts: vec![
                (
                    Operation::Create,
                    ResourceType::Cluster,
                    CLUSTER_RESOURCE.into(),
                ),
                (Operation::Create, ResourceType::Topic, name.into()),
            ],
            any_topic_write: false,
        }
    }

    /// An idempotent producer id: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
    pub fn idempotent_write() -> Need {
        Need {
            any_topic_write: true,
            ..Need::cluster(Operation::IdempotentWrite)
        }
    }
}

/// The security metadata as served: the state and its ACL index.
struct Snapshot {
    state: SecurityState,
    authorizer: Authorizer,
}

impl Snapshot {
    fn new(state: SecurityState) -> Snapshot {
        let authorizer = Authorizer::new(state.acls.iter().cloned());
        Snapshot { state, authorizer }
    }
}

/// Failed logins from one address.
struct Failures {
    count: u32,
    last: Instant,
}

/// The broker's security: settings, the live metadata, quotas and login failures.
pub struct Security {
    config: SecurityConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    quotas: QuotaManager,
    /// Some quota is configured (front ends skip the accounting otherwise).
    quotas_active: AtomicBool,
    /// The single-node store (`None` once the cluster metadata is the source).
    local: Mutex<Option<LocalSecurityStore>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    auth_failures: IntCounter,
    auth_successes: IntCounter,
    throttle_ms: IntCounterVec,
}

/// What a front end should do with a SASL mechanism a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MechanismCheck {
    /// Offered: go on with it.
    Ok(Mechanism),
    /// Not offered (or unknown).
    Unsupported,
    /// PLAIN on a connection without TLS while that is not allowed.
    PlainNeedsTls,
}

impl Security {
    /// Opens the single-node store in `data_dir` and creates the bootstrap admin if missing.
    pub fn open(
        config: SecurityConfig,
        data_dir: &Path,
        metrics: &Metrics,
    ) -> Result<Security, BrokerError> {
        let (mut store, mut state) =
            LocalSecurityStore::open(data_dir).map_err(|e| BrokerError::Config(e.to_string()))?;
        if let Some((user, password)) = &config.admin {
            for cmd in admin_commands(&state, user, password)? {
                store
                    .apply(&mut state, &cmd)
                    .map_err(|e| BrokerError::Config(e.to_string()))?;
            }
        }
        let auth_failures = IntCounter::new(
            "sluice_auth_failures_total",
            "Failed SASL authentications (and refused TLS handshakes)",
        )
        .map_err(metric_err)?;
        let auth_successes = IntCounter::new(
            "sluice_auth_successes_total",
            "Successful SASL authentications",
        )
        .map_err(metric_err)?;
        let throttle_ms = IntCounterVec::new(
            Opts::new(
                "sluice_quota_throttle_ms_total",
                "Milliseconds connections were muted by quotas",
            ),
            &["kind"],
        )
        .map_err(metric_err)?;
        let registry = metrics.registry();
        for c in [auth_failures.clone(), auth_successes.clone()] {
            registry.register(Box::new(c)).map_err(metric_err)?;
        }
        registry
            .register(Box::new(throttle_ms.clone()))
            .map_err(metric_err)?;
        let quotas = QuotaManager::new();
        quotas.set_table(&state.quotas);
        let quotas_active = AtomicBool::new(!state.quotas.is_empty());
        Ok(Security {
            quotas_active,
            config,
            snapshot: RwLock::new(Arc::new(Snapshot::new(state))),
            quotas,
            local: Mutex::new(Some(store)),
            failures: Mutex::new(HashMap::new()),
            auth_failures,
            auth_successes,
            throttle_ms,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// A copy of the security metadata (users, ACLs, quotas).
    pub fn state(&self) -> SecurityState {
        self.snapshot().state.clone()
    }

    /// The stored credential of `user` for `mechanism`.
    pub fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.snapshot().state.credential(user, mechanism)
    }

    /// Replaces the live metadata (the cluster's applied state, or the local store's).
    pub fn install(&self, state: SecurityState) {
        self.quotas.set_table(&state.quotas);
        self.quotas_active
            .store(!state.quotas.is_empty(), Ordering::Relaxed);
        let snap = Arc::new(Snapshot::new(state));
        match self.snapshot.write() {
            Ok(mut g) => *g = snap,
            Err(p) => *p.into_inner() = snap,
        }
    }

    /// From now on the cluster metadata is the source: the local store is no longer written.
    pub fn detach_local_store(&self) {
        if let Ok(mut g) = self.local.lock() {
            *g = None;
        }
    }

    /// Applies a command to the single-node store (fsynced) and installs the result.
    pub fn apply_local(&self, cmd: &SecurityCommand) -> Result<SecurityOutcome, BrokerError> {
        let mut guard = self
            .local
            .lock()
            .map_err(|_| BrokerError::Config("security store lock poisoned".into()))?;
        let store = guard.as_mut().ok_or_else(|| {
            BrokerError::Config("the security metadata lives in the cluster".into())
        })?;
        let mut state = self.snapshot().state.clone();
        let outcome = store
            .apply(&mut state, cmd)
            .map_err(|e| BrokerError::Config(format!("security metadata: {e}")))?;
        self.install(state);
        Ok(outcome)
    }

    /// The commands that create the bootstrap admin if it is missing (in a cluster, proposed once attached).
    pub fn admin_commands(&self) -> Result<Vec<SecurityCommand>, BrokerError> {
        match &self.config.admin {
            None => Ok(Vec::new()),
            Some((u, p)) => admin_commands(&self.snapshot().state, u, p),
        }
    }

    /// Whether SASL `name` may be used on a connection with or without TLS.
    pub fn check_mechanism(&self, name: &str, tls: bool) -> MechanismCheck {
        match Mechanism::from_name(name) {
            Some(m) if self.config.mechanisms.contains(&m) => {
                if m == Mechanism::Plain && !tls && !self.config.plain_without_tls {
                    MechanismCheck::PlainNeedsTls
                } else {
                    MechanismCheck::Ok(m)
                }
            }
            _ => MechanismCheck::Unsupported,
        }
    }

    /// The mechanism names offered.
    pub fn mechanism_names(&self) -> Vec<&'static str> {
        self.config.mechanisms.iter().map(|m| m.name()).collect()
    }

    /// Whether ACL checks are on.
    pub fn authorization(&self) -> bool {
        self.config.authorization
    }

    /// Whether `principal` is a super user (configured, or the bootstrap admin).
    pub fn is_super_user(&self, principal: &str) -> bool {
        self.config.super_users.iter().any(|u| u == principal)
            || self
                .config
                .admin
                .as_ref()
                .is_some_and(|(u, _)| principal.strip_prefix("User:") == Some(u.as_str()))
    }

    /// Whether `principal` connecting from `host` may do `op` on the resource.
    pub fn allowed(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        if !self.config.authorization || self.is_super_user(principal) {
            return true;
        }
        self.snapshot()
            .authorizer
            .authorize(principal, host, op, resource, name)
    }

    /// Whether `principal` may do `op` on the cluster resource.
    pub fn cluster_allowed(&self, principal: &str, host: IpAddr, op: Operation) -> bool {
        self.allowed(principal, host, op, ResourceType::Cluster, CLUSTER_RESOURCE)
    }

    /// `None` when authorization is off, `principal` is a super user or
    /// every one of `needs` (asked for only then) is allowed at `host`;
    /// else the refused need's resource as `(operation, type, name)`.
    pub fn first_refused(
        &self,
        principal: &str,
        host: IpAddr,
        needs: impl FnOnce() -> Vec<Need>,
    ) -> Option<(Operation, ResourceType, String)> {
        if !self.authorization() || self.is_super_user(principal) {
            return None;
        }
        needs().into_iter().find_map(|n| {
            let ok = n
                .alts
                .iter()
                .any(|(op, rt, name)| self.allowed(principal, host, *op, *rt, name))
                || (n.any_topic_write
                    && self.allowed_on_any(principal, host, Operation::Write, ResourceType::Topic));
            if ok {
                None
            } else {
                n.alts.into_iter().next_back()
            }
        })
    }

    /// Whether `principal` may do `op` on some resource of type `resource`:
    /// an ALLOW for it exists and no DENY covers every name (a literal `*`
    /// or an empty prefix). Kafka's `authorizeByResourceType`, which lets a
    /// producer with WRITE on any topic be idempotent.
    pub fn allowed_on_any(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        resource: ResourceType,
    ) -> bool {
        if !self.config.authorization || self.is_super_user(principal) {
            return true;
        }
        let snap = self.snapshot();
        let host = host.to_string();
        let applies = |b: &&AclBinding| {
            b.resource_type == resource
                && (b.principal == principal || b.principal == "User:*")
                && (b.host == "*" || b.host == host)
                && (b.operation == op || b.operation == Operation::All)
        };
        let denied_everywhere = snap.state.acls.iter().filter(applies).any(|b| {
            b.permission == Permission::Deny
                && ((b.pattern == PatternType::Literal && b.name == "*")
                    || (b.pattern == PatternType::Prefixed && b.name.is_empty()))
        });
        !denied_everywhere
            && snap
                .state
                .acls
                .iter()
                .filter(applies)
                .any(|b| b.permission == Permission::Allow)
    }

    /// Every ACL binding.
    pub fn acls(&self) -> Vec<AclBinding> {
        self.snapshot().state.acls.iter().cloned().collect()
    }

    /// Records a successful login.
    pub fn login_succeeded(&self, peer: IpAddr, principal: &str, mechanism: &str) {
        self.auth_successes.inc();
        tracing::info!(%peer, principal, mechanism, "authenticated");
    }

    /// Records a failed login from `peer` (logged, counted) and returns how long to delay its answer.
    pub fn login_failed(
        &self,
        peer: IpAddr,
        user: &str,
        mechanism: &str,
        reason: &str,
    ) -> Duration {
        self.auth_failures.inc();
        let now = Instant::now();
        let count = match self.failures.lock() {
            Ok(mut map) => {
                if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&peer) {
                    map.retain(|_, f| now.duration_since(f.last) < FAILURE_WINDOW);
                    if map.len() >= MAX_TRACKED_ADDRESSES {
                        if let Some(oldest) =
                            map.iter().min_by_key(|(_, f)| f.last).map(|(ip, _)| *ip)
                        {
                            map.remove(&oldest);
                        }
                    }
                }
                let f = map.entry(peer).or_insert(Failures {
                    count: 0,
                    last: now,
                });
                if now.duration_since(f.last) >= FAILURE_WINDOW {
                    f.count = 0;
                }
                f.count = f.count.saturating_add(1);
                f.last = now;
                f.count
            }
            Err(_) => 1,
        };
        tracing::warn!(%peer, user, mechanism, failures = count, reason, "authentication failed");
        failure_delay(self.config.failure_delay, count)
    }

    /// Whether any quota is configured.
    pub fn quotas_active(&self) -> bool {
        self.quotas_active.load(Ordering::Relaxed)
    }

    /// Records `amount` of `kind` used by (user, client id) and returns the throttle time.
    pub fn record_quota(
        &self,
        principal: &str,
        client_id: &str,
        kind: QuotaKind,
        amount: u64,
    ) -> Duration {
        let user = principal.strip_prefix("User:").unwrap_or(principal);
        let d = self
            .quotas
            .record(user, client_id, kind, amount, Instant::now());
        if !d.is_zero() {
            let label = match kind {
                QuotaKind::Produce => "produce",
                QuotaKind::Fetch => "fetch",
                QuotaKind::Request => "request",
            };
            self.throttle_ms
                .with_label_values(&[label])
                .inc_by(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        d
    }

    /// The quota table.
    pub fn quotas(
        &self,
    ) -> BTreeMap<sluice_auth::quota::QuotaEntity, sluice_auth::quota::QuotaValues> {
        self.snapshot().state.quotas.clone()
    }
}

/// Applies a change to the security metadata: through the controller in a
/// cluster (resolves once applied on this broker), else to the local store.
pub async fn apply(
    broker: &Arc<Broker>,
    cmd: SecurityCommand,
) -> Result<SecurityOutcome, BrokerError> {
    if let Some(link) = broker.cluster() {
        return link.security_command(cmd).await;
    }
    if broker.is_clustered() {
        return Err(BrokerError::Controller(
            "the cluster metadata is not reachable yet".into(),
        ));
    }
    let sec = Arc::clone(broker.security());
    tokio::task::spawn_blocking(move || sec.apply_local(&cmd))
        .await
        .map_err(|e| BrokerError::Config(format!("security store task failed: {e}")))?
}

/// The answer delay of the `count`-th failed login in a row: `base`, doubled each time, capped.
fn failure_delay(base: Duration, count: u32) -> Duration {
    let shift = count.saturating_sub(1).min(16);
    base.saturating_mul(1 << shift).min(MAX_FAILURE_DELAY)
}

fn admin_commands(
    state: &SecurityState,
    user: &str,
    password: &str,
) -> Result<Vec<SecurityCommand>, BrokerError> {
    let mut cmds = Vec::new();
    for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        let current = state.credential(user, m);
        if current
            .as_ref()
            .is_some_and(|c| c.verify_password(password))
        {
            continue;
        }
        let credential = ScramCredential::new(m, password, ScramCredential::DEFAULT_ITERATIONS)
            .map_err(|e| BrokerError::Config(format!("bootstrap admin: {e}")))?;
        cmds.push(SecurityCommand::UpsertCredential {
            user: user.to_string(),
            credential,
        });
    }
    Ok(cmds)
}

fn metric_err(e: prometheus::Error) -> BrokerError {
    BrokerError::Config(format!("security metrics: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_login_delays_double_and_are_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(failure_delay(base, 1), base);
        assert_eq!(failure_delay(base, 2), Duration::from_millis(200));
        assert_eq!(failure_delay(base, 4), Duration::from_millis(800));
        assert_eq!(failure_delay(base, 40), MAX_FAILURE_DELAY);
    }

    #[test]
    fn settings_are_checked() {
        let ok = SecurityLayer {
            super_users: Some("User:a, User:b".into()),
            ..SecurityLayer::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(ok.super_users, vec!["User:a", "User:b"]);
        assert_eq!(ok.mechanisms.len(), 3);
        let bad = |l: SecurityLayer| l.resolve().unwrap_err().to_string();
        assert!(bad(SecurityLayer {
            super_users: Some("alice".into()),
            ..SecurityLayer::default()
        })
        .contains("User:alice"));
        assert!(bad(SecurityLayer {
            sasl_mechanisms: Some("GSSAPI".into()),
            ..SecurityLayer::default()
        })
        .contains("GSSAPI"));
        assert!(bad(SecurityLayer {
            admin_user: Some("root".into()),
            ..SecurityLayer::default()
        })
        .contains("admin_password"));
    }

    #[test]
    fn admin_is_created_once_and_is_a_super_user_with_authorization_on() {
        let dir = tempfile::tempdir().unwrap();
        let config = SecurityLayer {
            authorization: Some(true),
            admin_user: Some("root".into()),
            admin_password: Some("s3cret".into()),
            ..SecurityLayer::default()
        }
        .resolve()
        .unwrap();
        let sec = Security::open(config.clone(), dir.path(), &Metrics::new()).unwrap();
        let c = sec.credential("root", ScramMechanism::Sha256).unwrap();
        assert!(c.verify_password("s3cret"));
        assert!(sec.admin_commands().unwrap().is_empty());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(sec.allowed("User:root", ip, Operation::Delete, ResourceType::Topic, "t"));
        assert!(!sec.allowed("User:bob", ip, Operation::Read, ResourceType::Topic, "t"));
        drop(sec);
        // Reopened: the stored credential is kept (same salt), not re-created.
        let again = Security::open(config, dir.path(), &Metrics::new()).unwrap();
        assert_eq!(again.credential("root", ScramMechanism::Sha256).unwrap(), c);
    }

    #[test]
    fn plain_needs_tls_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let sec = Security::open(SecurityConfig::default(), dir.path(), &Metrics::new()).unwrap();
        assert_eq!(
            sec.check_mechanism("PLAIN", false),
            MechanismCheck::PlainNeedsTls
        );
        assert_eq!(
            sec.check_mechanism("PLAIN", true),
            MechanismCheck::Ok(Mechanism::Plain)
        );
        assert_eq!(
            sec.check_mechanism("GSSAPI", true),
            MechanismCheck::Unsupported
        );
        assert!(matches!(
            sec.check_mechanism("SCRAM-SHA-512", false),
            MechanismCheck::Ok(_)
        ));
    }
}
