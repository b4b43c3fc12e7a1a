//! Kafka's client quotas: byte rates for produce and fetch and a request
//! rate, per user and/or client id, enforced by throttling, not errors.
//!
//! ## Entities and precedence
//!
//! A [`QuotaEntity`] names a user, a client id, or both; each part is absent,
//! `<default>` ([`EntityName::Default`]) or a name. For a connection of
//! (user, client-id), the quota of a kind comes from the first entity in
//! this order that sets that kind (Kafka's order):
//!
//! | # | entity                                   |
//! |---|------------------------------------------|
//! | 1 | `/users/<user>/clients/<client-id>`      |
//! | 2 | `/users/<user>/clients/<default>`        |
//! | 3 | `/users/<user>`                          |
//! | 4 | `/users/<default>/clients/<client-id>`   |
//! | 5 | `/users/<default>/clients/<default>`     |
//! | 6 | `/users/<default>`                       |
//! | 7 | `/clients/<client-id>`                   |
//! | 8 | `/clients/<default>`                     |
//!
//! ## Who shares a rate
//!
//! Usage is charged to the matched entity with each `<default>` replaced by
//! the connection's own name, as Kafka's metric tags do: every client of
//! `/users/alice` shares alice's rate, while `/users/<default>` gives *each*
//! user its own bucket of the default rate (not one bucket for all users).
//!
//! ## Throttling
//!
//! Each (charged entity, kind) has a virtual clock `t`, the time at which
//! the usage so far would have been spent at exactly the quota rate:
//!
//! ```text
//! t        = max(t, now - BURST) + amount / rate
//! throttle = min(t - now, MAX_THROTTLE)   (zero when t <= now)
//! ```
//!
//! A client that waits out each throttle gets exactly `rate` over time plus
//! a one-off burst of `BURST` seconds' worth (Kafka's sample window plays
//! the same role). Idle clocks (`t <= now - BURST`) carry no information and
//! are dropped, so client ids invented by clients do not accumulate.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::AuthError;

/// The burst allowance: this much time's worth of quota may be used at once.
pub const BURST: Duration = Duration::from_secs(1);
/// The longest throttle handed out at once (Kafka's cap).
pub const MAX_THROTTLE: Duration = Duration::from_secs(30);
/// How far a virtual clock may run ahead of now; bounds the debt of absurd requests so the arithmetic stays finite.
const MAX_DEBT_SECS: f64 = 3600.0;

/// One part of a quota entity: `<default>` or a specific name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum EntityName {
    /// `<default>`: applies to every user (or client id) without a specific entry.
    Default,
    /// A specific user or client id.
    Named(String),
}

impl EntityName {
    fn is_default(&self) -> bool {
        matches!(self, EntityName::Default)
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityName::Default => f.write_str("<default>"),
            EntityName::Named(n) => f.write_str(n),
        }
    }
}

/// Who a quota applies to: a user, a client id, or both (`None` = not part of the entity).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct QuotaEntity {
    /// The user part.
    pub user: Option<EntityName>,
    /// The client-id part.
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// Checks the entity has at least one part and its names are non-empty and at most 1024 bytes.
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.user.is_none() && self.client_id.is_none() {
            return Err(AuthError::InvalidQuota(
                "entity needs a user, a client id, or both",
            ));
        }
        for part in [&self.user, &self.client_id].into_iter().flatten() {
            if let EntityName::Named(n) = part {
                if n.is_empty() || n.len() > crate::MAX_USERNAME_LEN {
                    return Err(AuthError::InvalidQuota(
                        "entity names must be 1 to 1024 bytes",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.user, &self.client_id) {
            (Some(u), Some(c)) => write!(f, "user={u},client-id={c}"),
            (Some(u), None) => write!(f, "user={u}"),
            (None, Some(c)) => write!(f, "client-id={c}"),
            (None, None) => f.write_str("(no entity)"),
        }
    }
}

/// The rates set for one entity; `None` = not set here (a lower-precedence entity may set it).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct QuotaValues {
    /// Produce bytes per second.
    pub producer_byte_rate: Option<f64>,
    /// Fetch bytes per second.
    pub consumer_byte_rate: Option<f64>,
    /// Requests per second.
    pub request_rate: Option<f64>,
}

impl QuotaValues {
    /// The rate set for `kind`, if any.
    pub fn get(&self, kind: QuotaKind) -> Option<f64> {
        match kind {
            QuotaKind::Produce => self.producer_byte_rate,
            QuotaKind::Fetch => self.consumer_byte_rate,
            QuotaKind::Request => self.request_rate,
        }
    }

    /// True when no rate is set (setting this removes the entity's entry).
    pub fn is_empty(&self) -> bool {
        QuotaKind::ALL.iter().all(|k| self.get(*k).is_none())
    }

    /// Checks every set rate is finite and positive.
    pub fn validate(&self) -> Result<(), AuthError> {
        if QuotaKind::ALL
            .iter()
            .filter_map(|k| self.get(*k))
            .all(valid_rate)
        {
            Ok(())
        } else {
            Err(AuthError::InvalidQuota(
                "rates must be finite and greater than zero",
            ))
        }
    }
}

fn valid_rate(r: f64) -> bool {
    r.is_finite() && r > 0.0
}

/// What a quota limits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum QuotaKind {
    /// Produce bytes ([`QuotaValues::producer_byte_rate`]).
    Produce,
    /// Fetch bytes ([`QuotaValues::consumer_byte_rate`]).
    Fetch,
    /// Requests ([`QuotaValues::request_rate`]).
    Request,
}

impl QuotaKind {
    /// Every kind.
    pub const ALL: [QuotaKind; 3] = [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request];

    fn index(self) -> usize {
        self as usize
    }
}

/// The shape of an entity part, for the precedence table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Named,
    Default,
    Absent,
}

/// Kafka's precedence order as (user, client-id) shapes.
const ORDER: [(Slot, Slot); 8] = [
    (Slot::Named, Slot::Named),
    (Slot::Named, Slot::Default),
    (Slot::Named, Slot::Absent),
    (Slot::Default, Slot::Named),
    (Slot::Default, Slot::Default),
    (Slot::Default, Slot::Absent),
    (Slot::Absent, Slot::Named),
    (Slot::Absent, Slot::Default),
];

fn slot(part: &Option<EntityName>) -> Slot {
    match part {
        None => Slot::Absent,
        Some(EntityName::Default) => Slot::Default,
        Some(EntityName::Named(_)) => Slot::Named,
    }
}

fn fill(s: Slot, name: &str) -> Option<EntityName> {
    match s {
        Slot::Named => Some(EntityName::Named(name.to_string())),
        Slot::Default => Some(EntityName::Default),
        Slot::Absent => None,
    }
}

#[derive(Debug, Default)]
struct Inner {
    table: BTreeMap<QuotaEntity, QuotaValues>,
    /// `shapes[kind][i]`: some entity of shape `ORDER[i]` sets `kind` (skips lookups that cannot hit).
    shapes: [[bool; 8]; 3],
    /// Virtual clocks in seconds since `QuotaManager::epoch`, per charged entity and kind.
    clocks: HashMap<(QuotaEntity, QuotaKind), f64>,
    /// Clock-map size at which idle clocks are next dropped.
    prune_at: usize,
}

impl Inner {
    fn lookup(&self, user: &str, client_id: &str, kind: QuotaKind) -> Option<(QuotaEntity, f64)> {
        for (i, (u, c)) in ORDER.iter().enumerate() {
            if !self.shapes[kind.index()][i] {
                continue;
            }
            let entity = QuotaEntity {
                user: fill(*u, user),
                client_id: fill(*c, client_id),
            };
            if let Some(rate) = self.table.get(&entity).and_then(|v| v.get(kind)) {
                return Some((entity, rate));
            }
        }
        None
    }
}

/// Live usage accounting over a configured quota table.
#[derive(Debug)]
pub struct QuotaManager {
    inner: Mutex<Inner>,
    /// Origin of the virtual clocks (f64 seconds keep the arithmetic simple and exact enough).
    epoch: Instant,
}

impl Default for QuotaManager {
    fn default() -> Self {
        Self::new()
    }
}

const MIN_PRUNE_AT: usize = 1024;

impl QuotaManager {
    /// A manager with no quotas (nothing is ever throttled).
    pub fn new() -> Self {
        QuotaManager {
            inner: Mutex::new(Inner {
                prune_at: MIN_PRUNE_AT,
                ..Inner::default()
            }),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a cache of numbers; a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the quota table; rates that are not finite and positive are ignored. Usage so far is kept.
    pub fn set_table(&self, quotas: &BTreeMap<QuotaEntity, QuotaValues>) {
        let mut table = BTreeMap::new();
        let mut shapes = [[false; 8]; 3];
        for (entity, values) in quotas {
            let mut v = QuotaValues::default();
            let shape = ORDER
                .iter()
                .position(|&s| s == (slot(&entity.user), slot(&entity.client_id)));
            for kind in QuotaKind::ALL {
                let Some(rate) = values.get(kind).filter(|r| valid_rate(*r)) else {
                    continue;
                };
                match kind {
                    QuotaKind::Produce => v.producer_byte_rate = Some(rate),
                    QuotaKind::Fetch => v.consumer_byte_rate = Some(rate),
                    QuotaKind::Request => v.request_rate = Some(rate),
                }
                if let Some(i) = shape {
                    shapes[kind.index()][i] = true;
                }
            }
            if !v.is_empty() {
                table.insert(entity.clone(), v);
            }
        }
        let mut inner = self.lock();
        inner.table = table;
        inner.shapes = shapes;
    }

    /// The quota that applies to (user, client_id) for `kind`, by Kafka's precedence (the module docs' table). Returns the matching entity and rate.
    pub fn quota_for(
        &self,
        user: &str,
        client_id: &str,
        kind: QuotaKind,
    ) -> Option<(QuotaEntity, f64)> {
        self.lock().lookup(user, client_id, kind)
    }

    /// Records `amount` (bytes, or 1 request) used at `now` and returns how long the client must be throttled (zero when within quota).
    ///
    /// Usage is charged to the matched entity with `<default>` parts
    /// replaced by the caller's own names (see the module docs).
    pub fn record(
        &self,
        user: &str,
        client_id: &str,
        kind: QuotaKind,
        amount: u64,
        now: Instant,
    ) -> Duration {
        let mut inner = self.lock();
        let Some((entity, rate)) = inner.lookup(user, client_id, kind) else {
            return Duration::ZERO;
        };
        let charged = QuotaEntity {
            user: entity.user.map(|u| {
                if u.is_default() {
                    EntityName::Named(user.to_string())
                } else {
                    u
                }
            }),
            client_id: entity.client_id.map(|c| {
                if c.is_default() {
                    EntityName::Named(client_id.to_string())
                } else {
                    c
                }
            }),
        };
        let now_s = now.saturating_duration_since(self.epoch).as_secs_f64();
        let floor = now_s - BURST.as_secs_f64();
        if inner.clocks.len() >= inner.prune_at {
            inner.clocks.retain(|_, t| *t > floor);
            inner.prune_at = (inner.clocks.len() * 2).max(MIN_PRUNE_AT);
        }
        let t = inner.clocks.entry((charged, kind)).or_insert(floor);
        *t = (t.max(floor) + amount as f64 / rate).min(now_s + MAX_DEBT_SECS);
        let ahead = (*t - now_s).min(MAX_THROTTLE.as_secs_f64());
        if ahead > 0.0 {
            Duration::try_from_secs_f64(ahead).unwrap_or(MAX_THROTTLE)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(s: &str) -> Option<EntityName> {
        Some(EntityName::Named(s.into()))
    }
    const DEF: Option<EntityName> = Some(EntityName::Default);

    fn e(user: Option<EntityName>, client_id: Option<EntityName>) -> QuotaEntity {
        QuotaEntity { user, client_id }
    }

    fn produce(rate: f64) -> QuotaValues {
        QuotaValues {
            producer_byte_rate: Some(rate),
            ..Default::default()
        }
    }

    #[test]
    fn precedence_order() {
        // Entities in precedence order, rate = position.
        let order = [
            e(named("u"), named("c")),
            e(named("u"), DEF),
            e(named("u"), None),
            e(DEF, named("c")),
            e(DEF, DEF),
            e(DEF, None),
            e(None, named("c")),
            e(None, DEF),
        ];
        let mut table: BTreeMap<_, _> = order
            .iter()
            .enumerate()
            .map(|(i, ent)| (ent.clone(), produce(i as f64 + 1.0)))
            .collect();
        // Noise that must never match (u, c).
        table.insert(e(named("other"), None), produce(100.0));
        table.insert(e(None, named("other")), produce(100.0));
        let q = QuotaManager::new();
        for (i, ent) in order.iter().enumerate() {
            q.set_table(&table);
            assert_eq!(
                q.quota_for("u", "c", QuotaKind::Produce),
                Some((ent.clone(), i as f64 + 1.0)),
                "step {i}"
            );
            table.remove(ent);
        }
        q.set_table(&table);
        assert_eq!(q.quota_for("u", "c", QuotaKind::Produce), None);
    }

    #[test]
    fn precedence_is_per_kind() {
        let q = QuotaManager::new();
        q.set_table(&BTreeMap::from([
            (e(named("u"), None), produce(10.0)),
            (
                e(DEF, None),
                QuotaValues {
                    consumer_byte_rate: Some(20.0),
                    request_rate: Some(f64::NAN), // ignored
                    ..Default::default()
                },
            ),
        ]));
        assert_eq!(q.quota_for("u", "c", QuotaKind::Produce).unwrap().1, 10.0);
        assert_eq!(
            q.quota_for("u", "c", QuotaKind::Fetch),
            Some((e(DEF, None), 20.0))
        );
        assert_eq!(q.quota_for("u", "c", QuotaKind::Request), None);
        assert_eq!(
            q.record("u", "c", QuotaKind::Request, 1_000, Instant::now()),
            Duration::ZERO
        );
    }

    /// A client that always waits out its throttle, sending `chunk` bytes per request.
    fn simulate(q: &QuotaManager, user: &str, client: &str, chunk: u64, secs: f64) -> f64 {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        let mut now = start;
        let mut sent = 0u64;
        while now < end {
            sent += chunk;
            let d = q.record(user, client, QuotaKind::Produce, chunk, now);
            // Even unthrottled, requests take a little time.
            now += d.max(Duration::from_millis(1));
        }
        sent as f64 / secs
    }

    #[test]
    fn converges_to_the_rate() {
        for (rate, chunk) in [(1_000_000.0, 16_384), (1_000.0, 100), (50.0, 10)] {
            let q = QuotaManager::new();
            q.set_table(&BTreeMap::from([(e(named("u"), None), produce(rate))]));
            let got = simulate(&q, "u", "c", chunk, 1000.0);
            let err = (got - rate).abs() / rate;
            assert!(err < 0.01, "rate {rate}: got {got} ({:.2} %)", err * 100.0);
        }
    }

    #[test]
    fn burst_then_throttle() {
        let q = QuotaManager::new();
        q.set_table(&BTreeMap::from([(e(named("u"), None), produce(1000.0))]));
        let now = Instant::now();
        // One second's worth passes untouched…
        assert_eq!(
            q.record("u", "c", QuotaKind::Produce, 1000, now),
            Duration::ZERO
        );
        // …the next 500 bytes cost half a second.
        let d = q.record("u", "c", QuotaKind::Produce, 500, now);
        assert!((d.as_secs_f64() - 0.5).abs() < 1e-6, "{d:?}");
        // After a long idle period the state is as new.
        let later = now + Duration::from_secs(10);
        assert_eq!(
            q.record("u", "c", QuotaKind::Produce, 1000, later),
            Duration::ZERO
        );
    }

    #[test]
    fn throttle_is_capped() {
        let q = QuotaManager::new();
        q.set_table(&BTreeMap::from([(e(named("u"), None), produce(1.0))]));
        let now = Instant::now();
        assert_eq!(
            q.record("u", "c", QuotaKind::Produce, 1_000_000, now),
            MAX_THROTTLE
        );
        assert_eq!(
            q.record("u", "c", QuotaKind::Produce, u64::MAX, now),
            MAX_THROTTLE
        );
        // Before the manager's epoch and far in the future: no panic.
        let _ = q.record(
            "u",
            "c",
            QuotaKind::Produce,
            1,
            now - Duration::from_secs(5),
        );
        let _ = q.record(
            "u",
            "c",
            QuotaKind::Produce,
            1,
            now + Duration::from_secs(1 << 40),
        );
    }

    #[test]
    fn shared_and_per_user_defaults() {
        let q = QuotaManager::new();
        q.set_table(&BTreeMap::from([
            (e(named("alice"), None), produce(1000.0)),
            (e(DEF, None), produce(1000.0)),
        ]));
        let now = Instant::now();
        // alice's two clients share one bucket.
        assert_eq!(
            q.record("alice", "c1", QuotaKind::Produce, 1000, now),
            Duration::ZERO
        );
        assert!(q.record("alice", "c2", QuotaKind::Produce, 1000, now) > Duration::ZERO);
        // bob and carol each get their own default-rate bucket.
        assert_eq!(
            q.record("bob", "c1", QuotaKind::Produce, 1000, now),
            Duration::ZERO
        );
        assert_eq!(
            q.record("carol", "c1", QuotaKind::Produce, 1000, now),
            Duration::ZERO
        );
        assert!(q.record("bob", "c9", QuotaKind::Produce, 1000, now) > Duration::ZERO);
        // Kinds are separate buckets.
        assert_eq!(
            q.record("alice", "c1", QuotaKind::Fetch, 1000, now),
            Duration::ZERO
        );
    }

    #[test]
    fn idle_clocks_are_dropped() {
        let q = QuotaManager::new();
        q.set_table(&BTreeMap::from([(e(None, DEF), produce(1e9))]));
        let now = Instant::now();
        for i in 0..10_000 {
            q.record("", &format!("client-{i}"), QuotaKind::Produce, 1, now);
        }
        let later = now + Duration::from_secs(5);
        for i in 0..10_000 {
            q.record("", &format!("other-{i}"), QuotaKind::Produce, 1, later);
        }
        let n = q.lock().clocks.len();
        assert!(n <= 12_000, "{n} clocks kept");
    }

    #[test]
    fn validation_and_display() {
        assert!(e(None, None).validate().is_err());
        assert!(e(named(""), None).validate().is_err());
        assert!(e(DEF, named("c")).validate().is_ok());
        assert!(produce(0.0).validate().is_err());
        assert!(produce(f64::INFINITY).validate().is_err());
        assert!(produce(1.5).validate().is_ok());
        assert!(QuotaValues::default().is_empty());
        assert_eq!(e(named("a"), DEF).to_string(), "user=a,client-id=<default>");
    }
}
