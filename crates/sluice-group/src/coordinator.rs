//! The group coordinator: a pure, deterministic state machine for many groups.
//!
//! No tokio, no sockets, no clock: every call that depends on time takes
//! `now_ms` (milliseconds on any monotonic scale the caller picks; the broker
//! uses `Instant` minus its start). Partition counts come from a
//! [`TopicCatalog`] the caller passes in. The broker wraps one `Coordinator`
//! in a mutex and maps requests onto these calls; the tests drive it directly.
//!
//! # Model
//!
//! - A **member** joins a group with its subscription (topics), a session
//!   timeout and opaque metadata bytes, and gets a member id. It stays alive by
//!   heartbeating within its session timeout; it leaves explicitly
//!   ([`Coordinator::leave`]) or is expired by [`Coordinator::tick`].
//! - The **target** assignment is computed server-side by
//!   [`crate::assign::assign`] (sticky, balanced) whenever membership,
//!   subscriptions or partition counts change — or supplied by a group leader
//!   through [`Coordinator::install_assignment`] (the Kafka-classic seam).
//! - Each member's **owned** set is what it may consume right now. Owned sets
//!   are disjoint at all times ([`Coordinator::owners`] lets tests check it):
//!   a partition is added to a member's owned set only while no other member
//!   owns it. When the target moves a partition from A to B, A sees it in
//!   [`MemberView::revoke`]; A stops fetching it, commits its offset, and
//!   confirms by a heartbeat whose `owned` report no longer lists it (or by
//!   leaving, or by expiring). Only then is it granted to B. Meanwhile B sees
//!   it in [`MemberView::pending`].
//! - A member whose target equals its owned set is never told anything new:
//!   a rebalance elsewhere in the group does not interrupt it.
//! - The **generation** increments on every membership or target change and
//!   never decreases (an emptied group keeps its generation).
//!
//! # Fencing
//!
//! Every owned partition remembers the generation at which it was granted.
//! [`Coordinator::check_commit`] accepts a commit for a partition only from its
//! current owner presenting a generation `>=` that grant generation (and not
//! from the future). A kicked-out member gets `UnknownMemberId`; a member that
//! lost a partition gets `NotPartitionOwner`/`IllegalGeneration`; a delayed
//! commit made before a partition came back to the same member gets
//! `IllegalGeneration`. Member ids embed the coordinator's `instance_id`, so
//! ids handed out before a broker restart are unknown after it.
//!
//! # Client contract (what a heartbeat loop must do)
//!
//! - Keep at most one heartbeat in flight; drop responses to abandoned requests.
//! - Consume exactly `assignment ∪ revoke` from the last response. For each
//!   partition in `revoke`: stop fetching, commit, then report `owned` without it.
//! - Report `owned` (what you consume now) in every heartbeat. A report may
//!   only shrink ownership; listing a partition the coordinator does not
//!   consider yours yields `IllegalGeneration`: stop consuming everything and
//!   heartbeat again with an empty report.
//! - `UnknownMemberId`: stop consuming everything, join again.
//! - Heartbeat again after `heartbeat_interval_ms` (short while a revoke or a
//!   grant is under way). A broker may also park a heartbeat and answer early
//!   when [`Coordinator::take_notifications`] names the member (long-poll), so
//!   that a rebalance takes network round trips, not heartbeat intervals: it
//!   calls `heartbeat` with the report when the request arrives and, when
//!   woken, `heartbeat` again with `owned: None` for the fresh view.
//! - Before leaving, stop consuming and commit; ownership ends when
//!   [`Coordinator::leave`] runs.
//! - If no heartbeat succeeded for a whole session timeout, stop consuming
//!   everything on your own: the coordinator may have expired you and given
//!   your partitions away (that is what makes expiry safe).
//!
//! # Kafka-classic seam
//!
//! A Kafka-wire front end runs JoinGroup/SyncGroup on top: member metadata
//! bytes are stored per member ([`JoinRequest::metadata`],
//! [`MemberDescription::metadata`]), [`GroupDescription::leader`] names the
//! leader, and the leader's SyncGroup assignment is installed with
//! [`Coordinator::install_assignment`], which switches the group to
//! [`AssignmentMode::Leader`]: from then on a membership change only prunes
//! departed members from the target, bumps the generation and makes
//! heartbeats answer `RebalanceInProgress` until the leader installs the next
//! assignment (joins still answer, with the new member's id and an empty
//! assignment; owned reports in those heartbeats are still applied, so
//! revocations can be confirmed meanwhile). Revocation-before-grant still applies, so even a classic
//! group never has a partition owned twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::assign::{assign, Assignment, MemberId, TopicPartition};
use crate::error::{validate_group_id, GroupError};

/// Supplies partition counts. Implementations must be cheap: the coordinator
/// asks on every heartbeat for the group's subscribed topics.
pub trait TopicCatalog {
    /// Number of partitions of `topic`, or `None` when the topic does not exist.
    fn partitions(&self, topic: &str) -> Option<u32>;
}

impl<F: Fn(&str) -> Option<u32>> TopicCatalog for F {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self(topic)
    }
}

impl TopicCatalog for BTreeMap<String, u32> {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.get(topic).copied()
    }
}

impl TopicCatalog for HashMap<String, u32> {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.get(topic).copied()
    }
}

/// Coordinator limits and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Smallest session timeout a member may ask for.
    pub min_session_timeout_ms: u64,
    /// Largest session timeout a member may ask for.
    pub max_session_timeout_ms: u64,
    /// Session timeout when the member asks for none (issue 5: 10 s).
    pub default_session_timeout_ms: u64,
    /// Heartbeat interval hint when nothing is under way (capped at a third of the session).
    pub heartbeat_interval_ms: u64,
    /// Heartbeat interval hint while the member has a revoke or a pending grant.
    pub reconcile_heartbeat_interval_ms: u64,
    /// Committed offsets are deleted once this long has passed since the
    /// later of their commit and their group becoming empty (Kafka's
    /// `offsets.retention.minutes`, 7 days); see [`crate::offsets`].
    pub offsets_retention_ms: u64,
}

/// Default [`CoordinatorConfig::offsets_retention_ms`]: 7 days, as Kafka.
pub const DEFAULT_OFFSETS_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            min_session_timeout_ms: 500,
            max_session_timeout_ms: 300_000,
            default_session_timeout_ms: 10_000,
            heartbeat_interval_ms: 3_000,
            reconcile_heartbeat_interval_ms: 50,
            offsets_retention_ms: DEFAULT_OFFSETS_RETENTION_MS,
        }
    }
}

/// A join (new member) or rejoin (known member updating its subscription).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinRequest {
    /// `None` for a new member; `Some(id)` to update a member that is still in the group.
    pub member_id: Option<MemberId>,
    /// Free-form client name; becomes the prefix of a new member id.
    pub client_id: String,
    /// Subscribed topics (duplicates ignored).
    pub topics: Vec<String>,
    /// Session timeout; `None` uses the configured default.
    pub session_timeout_ms: Option<u64>,
    /// How long the member may take to confirm a revocation before it is
    /// removed; `None` means the session timeout.
    pub rebalance_timeout_ms: Option<u64>,
    /// Opaque bytes stored with the member (Kafka-classic protocol metadata).
    pub metadata: Vec<u8>,
}

/// What a member is told in a join or heartbeat response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member's id (new on a first join).
    pub member_id: MemberId,
    /// The group's generation now.
    pub generation: u32,
    /// Partitions the member may consume now and keeps.
    pub assignment: Vec<TopicPartition>,
    /// Partitions the member still owns but must give up: stop, commit, confirm.
    pub revoke: Vec<TopicPartition>,
    /// Partitions assigned to the member, granted once their previous owner lets go.
    pub pending: Vec<TopicPartition>,
    /// When to heartbeat next.
    pub heartbeat_interval_ms: u64,
}

/// How a group's target assignment is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentMode {
    /// The coordinator computes it with [`crate::assign::assign`] (native protocol).
    Server,
    /// A leader member supplies it via [`Coordinator::install_assignment`] (Kafka classic).
    Leader,
}

/// Coarse state of a group, for ListGroups/DescribeGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Every member owns exactly its target and has been told so.
    Stable,
    /// Revocations or grants are under way.
    Reconciling,
    /// Leader mode: waiting for the leader's assignment for the current generation.
    AwaitingAssignment,
    /// A Kafka classic group ([`crate::classic`]) in its join barrier.
    PreparingRebalance,
    /// A Kafka classic group waiting for its leader's SyncGroup.
    CompletingRebalance,
}

impl GroupState {
    /// Stable name for the wire, the CLI and metrics.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::Stable => "Stable",
            GroupState::Reconciling => "Reconciling",
            GroupState::AwaitingAssignment => "AwaitingAssignment",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
        }
    }
}

/// Why [`Coordinator::tick`] acted on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryReason {
    /// No successful heartbeat within the session timeout: removed, its
    /// partitions are free.
    SessionTimeout,
    /// A revocation was not confirmed within the rebalance timeout: the member
    /// is fenced (its heartbeats and commits get `UnknownMemberId`, it gets no
    /// new target) but keeps what it owns until its session runs out, because
    /// it may still be consuming until it learns it was fenced.
    RebalanceTimeout,
}

/// A member fenced or removed by [`Coordinator::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The group.
    pub group: String,
    /// The removed member.
    pub member_id: MemberId,
    /// Why.
    pub reason: ExpiryReason,
}

/// Who is committing offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committer<'a> {
    /// A group member, with the generation from its last response.
    Member {
        /// The member id.
        member_id: &'a str,
        /// Generation the member last saw.
        generation: u32,
    },
    /// A standalone consumer (manual `assign`) or an admin reset; allowed only
    /// while the group has no members.
    Standalone,
}

/// One member, for DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: MemberId,
    /// Client name given at join.
    pub client_id: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Session timeout in ms.
    pub session_timeout_ms: u64,
    /// Opaque metadata bytes given at join.
    pub metadata: Vec<u8>,
    /// Owned partitions the member keeps.
    pub assignment: Vec<TopicPartition>,
    /// Owned partitions being revoked.
    pub revoking: Vec<TopicPartition>,
    /// Target partitions not yet granted.
    pub pending: Vec<TopicPartition>,
    /// Missed its rebalance timeout: refused, keeps `revoking` until its session ends.
    pub fenced: bool,
}

/// A group, for DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group: String,
    /// Current generation.
    pub generation: u32,
    /// Coarse state.
    pub state: GroupState,
    /// How the target is produced.
    pub mode: AssignmentMode,
    /// The longest-standing member (Kafka-classic leader).
    pub leader: Option<MemberId>,
    /// Members in id order.
    pub members: Vec<MemberDescription>,
    /// Times the target assignment changed since the coordinator started.
    pub rebalances: u64,
}

/// A group, for ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group: String,
    /// Coarse state.
    pub state: GroupState,
    /// Number of members.
    pub members: usize,
    /// Current generation.
    pub generation: u32,
}

#[derive(Debug, Clone)]
struct Member {
    client_id: String,
    topics: Vec<String>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    metadata: Vec<u8>,
    /// Join order, for picking the leader.
    join_seq: u64,
    last_seen_ms: u64,
    /// Partition -> generation at which it was granted (for commit fencing).
    owned: BTreeMap<TopicPartition, u32>,
    /// When the oldest unconfirmed revocation started (for the rebalance timeout).
    revoke_since_ms: Option<u64>,
    /// Missed its rebalance timeout: treated as gone, except that what it owns
    /// stays owned until `last_seen_ms + session_timeout_ms`, when a client that
    /// got no successful heartbeat has stopped consuming by itself.
    fenced: bool,
    /// (assignment, revoke) last sent to the member, to decide whom to notify.
    last_view: Option<(Vec<TopicPartition>, Vec<TopicPartition>)>,
}

impl Member {
    fn is_active(&self) -> bool {
        !self.fenced
    }
}

#[derive(Debug, Clone)]
struct Group {
    generation: u32,
    members: BTreeMap<MemberId, Member>,
    target: Assignment,
    /// Partition counts of the subscribed topics as last seen in the catalog.
    partition_counts: BTreeMap<String, u32>,
    mode: AssignmentMode,
    awaiting_leader: bool,
    rebalances: u64,
    /// Coordinator time at which the last member left (`None` while it has members).
    empty_since_ms: Option<u64>,
}

/// Whether a group has members, for offsets retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// The coordinator does not know the group (offsets only, or not seen
    /// since the coordinator started).
    Unknown,
    /// The group has members (fenced ones included).
    Members,
    /// The group has had no members since this coordinator time.
    EmptySince(u64),
}

impl Group {
    fn new() -> Self {
        Group {
            generation: 0,
            members: BTreeMap::new(),
            target: Assignment::new(),
            partition_counts: BTreeMap::new(),
            mode: AssignmentMode::Server,
            awaiting_leader: false,
            rebalances: 0,
            empty_since_ms: None,
        }
    }

    fn bump(&mut self) {
        self.generation = self.generation.saturating_add(1);
    }

    fn target_of(&self, member: &str) -> Option<&BTreeSet<TopicPartition>> {
        self.target.get(member)
    }

    /// (assignment, revoke, pending) of one member, each sorted.
    fn view_parts(
        &self,
        id: &str,
        m: &Member,
    ) -> (
        Vec<TopicPartition>,
        Vec<TopicPartition>,
        Vec<TopicPartition>,
    ) {
        let target = self.target_of(id);
        let in_target = |tp: &TopicPartition| target.is_some_and(|t| t.contains(tp));
        let mut assignment = Vec::new();
        let mut revoke = Vec::new();
        for tp in m.owned.keys() {
            if in_target(tp) {
                assignment.push(tp.clone());
            } else {
                revoke.push(tp.clone());
            }
        }
        let pending = target
            .map(|t| {
                t.iter()
                    .filter(|tp| !m.owned.contains_key(*tp))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (assignment, revoke, pending)
    }

    fn refresh_counts(&mut self, catalog: &dyn TopicCatalog) -> bool {
        let topics: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(|m| m.topics.iter())
            .collect();
        let mut counts = BTreeMap::new();
        for t in topics {
            if let Some(n) = catalog.partitions(t) {
                counts.insert(t.clone(), n);
            }
        }
        let changed = counts != self.partition_counts;
        self.partition_counts = counts;
        changed
    }

    /// Recomputes the target after membership/subscription/catalog changes.
    /// Bumps the generation when `membership_changed` or the target changed.
    fn rebalance(&mut self, membership_changed: bool, catalog: &dyn TopicCatalog) {
        self.refresh_counts(catalog);
        let new_target = match self.mode {
            AssignmentMode::Server => {
                // Stickiness input: the current target of remaining members, plus
                // partitions whose target owner is gone but which a remaining member
                // still owns (so they stay where they are consumed).
                let mut previous: Assignment = self
                    .target
                    .iter()
                    .filter(|(m, _)| self.members.get(*m).is_some_and(|m| !m.fenced))
                    .map(|(m, s)| (m.clone(), s.clone()))
                    .collect();
                let targeted: BTreeSet<&TopicPartition> = previous.values().flatten().collect();
                let mut orphans: Vec<(MemberId, TopicPartition)> = Vec::new();
                for (id, m) in self.members.iter().filter(|(_, m)| !m.fenced) {
                    for tp in m.owned.keys() {
                        if !targeted.contains(tp) {
                            orphans.push((id.clone(), tp.clone()));
                        }
                    }
                }
                for (id, tp) in orphans {
                    previous.entry(id).or_default().insert(tp);
                }
                let members: Vec<(MemberId, &[String])> = self
                    .members
                    .iter()
                    .filter(|(_, m)| !m.fenced)
                    .map(|(id, m)| (id.clone(), m.topics.as_slice()))
                    .collect();
                let counts: Vec<(String, u32)> = self
                    .partition_counts
                    .iter()
                    .map(|(t, n)| (t.clone(), *n))
                    .collect();
                assign(&members, &counts, &previous)
            }
            AssignmentMode::Leader => {
                let mut t: Assignment = self
                    .target
                    .iter()
                    .filter(|(m, _)| self.members.get(*m).is_some_and(|m| !m.fenced))
                    .map(|(m, s)| (m.clone(), s.clone()))
                    .collect();
                for (id, _) in self.members.iter().filter(|(_, m)| !m.fenced) {
                    t.entry(id.clone()).or_default();
                }
                if membership_changed {
                    self.awaiting_leader = !self.members.is_empty();
                }
                t
            }
        };
        let target_changed = new_target != self.target;
        if target_changed {
            self.target = new_target;
            self.rebalances += 1;
        }
        if membership_changed || target_changed {
            self.bump();
        }
    }

    /// Grants every target partition that nobody owns; tracks revoke deadlines.
    fn reconcile(&mut self, now_ms: u64) {
        let mut owned_by: BTreeSet<TopicPartition> = BTreeSet::new();
        for m in self.members.values() {
            owned_by.extend(m.owned.keys().cloned());
        }
        let generation = self.generation;
        for (id, targets) in &self.target {
            let Some(m) = self.members.get_mut(id) else {
                continue;
            };
            for tp in targets {
                if owned_by.insert(tp.clone()) {
                    m.owned.insert(tp.clone(), generation);
                }
            }
        }
        for (id, m) in self.members.iter_mut() {
            let target = self.target.get(id);
            let revoking = m
                .owned
                .keys()
                .any(|tp| !target.is_some_and(|t| t.contains(tp)));
            m.revoke_since_ms = if revoking {
                Some(m.revoke_since_ms.unwrap_or(now_ms))
            } else {
                None
            };
        }
    }

    fn state(&self) -> GroupState {
        if self.members.is_empty() {
            return GroupState::Empty;
        }
        if self.awaiting_leader {
            return GroupState::AwaitingAssignment;
        }
        for (id, m) in &self.members {
            let (assignment, revoke, pending) = self.view_parts(id, m);
            if !revoke.is_empty() || !pending.is_empty() {
                return GroupState::Reconciling;
            }
            if m.last_view.as_ref() != Some(&(assignment, revoke)) {
                return GroupState::Reconciling;
            }
        }
        GroupState::Stable
    }

    fn leader(&self) -> Option<MemberId> {
        self.members
            .iter()
            .filter(|(_, m)| !m.fenced)
            .min_by_key(|(_, m)| m.join_seq)
            .map(|(id, _)| id.clone())
    }
}

/// The coordinator of every group on this broker. See the module docs.
#[derive(Debug, Clone)]
pub struct Coordinator {
    config: CoordinatorConfig,
    instance_id: u64,
    next_seq: u64,
    groups: BTreeMap<String, Group>,
    /// Members whose heartbeat answer changed since they were last answered.
    notify: BTreeSet<(String, MemberId)>,
}

impl Coordinator {
    /// Creates an empty coordinator. `instance_id` must differ between broker
    /// runs (e.g. start time in ms) so member ids are never reused across restarts.
    pub fn new(config: CoordinatorConfig, instance_id: u64) -> Self {
        Coordinator {
            config,
            instance_id,
            next_seq: 0,
            groups: BTreeMap::new(),
            notify: BTreeSet::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Joins a new member (`member_id: None`) or updates a known one.
    ///
    /// A new member is given the partitions of its target that nobody owns
    /// right away; others arrive in later heartbeats as their owners revoke.
    pub fn join(
        &mut self,
        now_ms: u64,
        group: &str,
        req: JoinRequest,
        catalog: &dyn TopicCatalog,
    ) -> Result<MemberView, GroupError> {
        validate_group_id(group)?;
        let session = req
            .session_timeout_ms
            .unwrap_or(self.config.default_session_timeout_ms);
        if session < self.config.min_session_timeout_ms
            || session > self.config.max_session_timeout_ms
        {
            return Err(GroupError::InvalidSessionTimeout {
                timeout_ms: session,
                min_ms: self.config.min_session_timeout_ms,
                max_ms: self.config.max_session_timeout_ms,
            });
        }
        let rebalance_timeout = req.rebalance_timeout_ms.unwrap_or(session).max(1);
        let mut topics = req.topics;
        topics.sort();
        topics.dedup();

        let id = match req.member_id {
            Some(id) => {
                let g = self
                    .groups
                    .get_mut(group)
                    .ok_or_else(|| unknown(group, &id))?;
                let m = g
                    .members
                    .get_mut(&id)
                    .filter(|m| !m.fenced)
                    .ok_or_else(|| unknown(group, &id))?;
                m.last_seen_ms = now_ms;
                m.session_timeout_ms = session;
                m.rebalance_timeout_ms = rebalance_timeout;
                m.metadata = req.metadata;
                m.client_id = req.client_id;
                if m.topics != topics {
                    m.topics = topics;
                    g.rebalance(false, catalog);
                }
                id
            }
            None => {
                self.next_seq += 1;
                let prefix: String = if req.client_id.is_empty() {
                    "member".to_string()
                } else {
                    req.client_id.chars().take(64).collect()
                };
                let id = format!("{prefix}-{:x}-{}", self.instance_id, self.next_seq);
                let g = self
                    .groups
                    .entry(group.to_string())
                    .or_insert_with(Group::new);
                g.members.insert(
                    id.clone(),
                    Member {
                        client_id: req.client_id,
                        topics,
                        session_timeout_ms: session,
                        rebalance_timeout_ms: rebalance_timeout,
                        metadata: req.metadata,
                        join_seq: self.next_seq,
                        last_seen_ms: now_ms,
                        owned: BTreeMap::new(),
                        revoke_since_ms: None,
                        fenced: false,
                        last_view: None,
                    },
                );
                g.rebalance(true, catalog);
                id
            }
        };
        self.after_change(group, now_ms);
        // A join always answers (the caller needs the member id), even while a
        // leader-mode group waits for its assignment.
        self.respond(group, &id, true)
    }

    /// Records a heartbeat and answers with the member's current view.
    ///
    /// `owned`, when given, is what the member consumes now; partitions it no
    /// longer lists are released (this is how a revocation is confirmed).
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        group: &str,
        member_id: &str,
        generation: u32,
        owned: Option<&[TopicPartition]>,
        catalog: &dyn TopicCatalog,
    ) -> Result<MemberView, GroupError> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| unknown(group, member_id))?;
        let current = g.generation;
        let m = g
            .members
            .get_mut(member_id)
            .filter(|m| !m.fenced)
            .ok_or_else(|| unknown(group, member_id))?;
        m.last_seen_ms = now_ms;
        if generation > current {
            return Err(GroupError::IllegalGeneration {
                group: group.to_string(),
                generation,
                current,
            });
        }
        if let Some(report) = owned {
            let reported: BTreeSet<&TopicPartition> = report.iter().collect();
            if reported.iter().any(|tp| !m.owned.contains_key(*tp)) {
                // The member believes it owns something it does not: stale view.
                return Err(GroupError::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                    current,
                });
            }
            m.owned.retain(|tp, _| reported.contains(tp));
        }
        if g.refresh_counts(catalog) {
            g.rebalance(false, catalog);
        }
        self.after_change(group, now_ms);
        self.respond(group, member_id, false)
    }

    /// Removes a member; its partitions become free for others at once.
    pub fn leave(
        &mut self,
        now_ms: u64,
        group: &str,
        member_id: &str,
        catalog: &dyn TopicCatalog,
    ) -> Result<(), GroupError> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| unknown(group, member_id))?;
        if g.members.remove(member_id).is_none() {
            return Err(unknown(group, member_id));
        }
        self.notify
            .remove(&(group.to_string(), member_id.to_string()));
        g.rebalance(true, catalog);
        self.after_change(group, now_ms);
        Ok(())
    }

    /// Expires members past their session timeout or rebalance timeout and
    /// picks up partition-count changes from the catalog. Call it at least at
    /// [`Coordinator::next_deadline_ms`].
    pub fn tick(&mut self, now_ms: u64, catalog: &dyn TopicCatalog) -> Vec<Expired> {
        let mut expired = Vec::new();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            let Some(g) = self.groups.get_mut(&name) else {
                continue;
            };
            let mut gone = Vec::new();
            for (id, m) in g.members.iter_mut() {
                if now_ms >= m.last_seen_ms.saturating_add(m.session_timeout_ms) {
                    gone.push((id.clone(), ExpiryReason::SessionTimeout));
                } else if !m.fenced
                    && m.revoke_since_ms
                        .is_some_and(|t| now_ms >= t.saturating_add(m.rebalance_timeout_ms))
                {
                    m.fenced = true;
                    gone.push((id.clone(), ExpiryReason::RebalanceTimeout));
                }
            }
            for (id, reason) in &gone {
                if *reason == ExpiryReason::SessionTimeout {
                    g.members.remove(id);
                }
            }
            let membership_changed = !gone.is_empty();
            let counts_changed = !g.members.is_empty() && g.refresh_counts(catalog);
            if membership_changed || counts_changed {
                g.rebalance(membership_changed, catalog);
            }
            for (id, reason) in gone {
                self.notify.remove(&(name.clone(), id.clone()));
                expired.push(Expired {
                    group: name.clone(),
                    member_id: id,
                    reason,
                });
            }
            if membership_changed || counts_changed {
                self.after_change(&name, now_ms);
            }
        }
        expired
    }

    /// The earliest time at which [`Coordinator::tick`] may expire someone.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.groups
            .values()
            .flat_map(|g| g.members.values())
            .flat_map(|m| {
                let session = m.last_seen_ms.saturating_add(m.session_timeout_ms);
                let rebalance = m
                    .revoke_since_ms
                    .filter(|_| !m.fenced)
                    .map(|t| t.saturating_add(m.rebalance_timeout_ms));
                std::iter::once(session).chain(rebalance)
            })
            .min()
    }

    /// Checks that `committer` may commit offsets for `partitions` of `group`.
    ///
    /// A standalone commit needs a group without members (or an unknown one).
    /// A member must own every partition and present a generation no older
    /// than the one at which each was granted and no newer than the group's.
    pub fn check_commit(
        &self,
        group: &str,
        committer: Committer<'_>,
        partitions: &[TopicPartition],
    ) -> Result<(), GroupError> {
        validate_group_id(group)?;
        let g = self.groups.get(group);
        match committer {
            Committer::Standalone => match g {
                Some(g) if !g.members.is_empty() => Err(unknown(group, "")),
                _ => Ok(()),
            },
            Committer::Member {
                member_id,
                generation,
            } => {
                let g = g.ok_or_else(|| unknown(group, member_id))?;
                let m = g
                    .members
                    .get(member_id)
                    .filter(|m| !m.fenced)
                    .ok_or_else(|| unknown(group, member_id))?;
                let illegal = || GroupError::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                    current: g.generation,
                };
                if generation > g.generation {
                    return Err(illegal());
                }
                for tp in partitions {
                    match m.owned.get(tp) {
                        Some(granted) if generation >= *granted => {}
                        Some(_) => return Err(illegal()),
                        None if generation < g.generation => return Err(illegal()),
                        None => {
                            return Err(GroupError::NotPartitionOwner {
                                group: group.to_string(),
                                member: member_id.to_string(),
                                topic: tp.topic.clone(),
                                partition: tp.partition,
                            })
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Installs a leader-supplied assignment (Kafka-classic SyncGroup) and
    /// switches the group to [`AssignmentMode::Leader`]. `generation` must be
    /// current; every member named must exist; no partition may appear twice.
    /// Returns the new generation.
    pub fn install_assignment(
        &mut self,
        now_ms: u64,
        group: &str,
        leader: &str,
        generation: u32,
        assignment: Assignment,
    ) -> Result<u32, GroupError> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| GroupError::GroupIdNotFound {
                group: group.to_string(),
            })?;
        if !g.members.get(leader).is_some_and(|m| m.is_active()) {
            return Err(unknown(group, leader));
        }
        if generation != g.generation {
            return Err(GroupError::IllegalGeneration {
                group: group.to_string(),
                generation,
                current: g.generation,
            });
        }
        let mut seen = BTreeSet::new();
        for (m, set) in &assignment {
            if !g.members.get(m).is_some_and(|m| m.is_active()) {
                return Err(GroupError::InvalidRequest(format!(
                    "assignment names unknown member {m}"
                )));
            }
            for tp in set {
                if !seen.insert(tp) {
                    return Err(GroupError::InvalidRequest(format!("{tp} assigned twice")));
                }
            }
        }
        let mut target = assignment;
        for (id, _) in g.members.iter().filter(|(_, m)| !m.fenced) {
            target.entry(id.clone()).or_default();
        }
        g.mode = AssignmentMode::Leader;
        g.awaiting_leader = false;
        if target != g.target {
            g.target = target;
            g.rebalances += 1;
        }
        g.bump();
        let new_generation = g.generation;
        self.after_change(group, now_ms);
        Ok(new_generation)
    }

    /// Switches a group back to server-side assignment and recomputes its target.
    pub fn use_server_assignment(&mut self, now_ms: u64, group: &str, catalog: &dyn TopicCatalog) {
        if let Some(g) = self.groups.get_mut(group) {
            if g.mode != AssignmentMode::Server {
                g.mode = AssignmentMode::Server;
                g.awaiting_leader = false;
                g.rebalance(true, catalog);
                self.after_change(group, now_ms);
            }
        }
    }

    /// Forgets an empty group (for group delete). Offsets live in the offset store.
    pub fn delete_group(&mut self, group: &str) -> Result<(), GroupError> {
        let g = self
            .groups
            .get(group)
            .ok_or_else(|| GroupError::GroupIdNotFound {
                group: group.to_string(),
            })?;
        if !g.members.is_empty() {
            return Err(GroupError::NonEmptyGroup {
                group: group.to_string(),
                members: g.members.len(),
            });
        }
        self.groups.remove(group);
        Ok(())
    }

    /// Whether `group` is unknown, has members, or since when it has none.
    pub fn occupancy(&self, group: &str) -> Occupancy {
        match self.groups.get(group) {
            None => Occupancy::Unknown,
            Some(g) if !g.members.is_empty() => Occupancy::Members,
            // An empty group always went through `after_change`; `0` is only
            // a fallback that makes an untracked empty group the oldest.
            Some(g) => Occupancy::EmptySince(g.empty_since_ms.unwrap_or(0)),
        }
    }

    /// Every group without members, with the coordinator time it became empty.
    pub fn empty_groups(&self) -> Vec<(String, u64)> {
        self.groups
            .iter()
            .filter(|(_, g)| g.members.is_empty())
            .map(|(name, g)| (name.clone(), g.empty_since_ms.unwrap_or(0)))
            .collect()
    }

    /// Invariant check: every partition with the members allowed to consume it.
    /// A correct coordinator never maps a partition to two members.
    pub fn owners(&self, group: &str) -> BTreeMap<TopicPartition, BTreeSet<MemberId>> {
        let mut out: BTreeMap<TopicPartition, BTreeSet<MemberId>> = BTreeMap::new();
        if let Some(g) = self.groups.get(group) {
            for (id, m) in &g.members {
                for tp in m.owned.keys() {
                    out.entry(tp.clone()).or_default().insert(id.clone());
                }
            }
        }
        out
    }

    /// The group's target assignment (what it converges to).
    pub fn target(&self, group: &str) -> Option<&Assignment> {
        self.groups.get(group).map(|g| &g.target)
    }

    /// The group's generation, if the coordinator knows the group.
    pub fn generation(&self, group: &str) -> Option<u32> {
        self.groups.get(group).map(|g| g.generation)
    }

    /// A member's session timeout, if the coordinator knows the member.
    pub fn session_timeout_ms(&self, group: &str, member_id: &str) -> Option<u64> {
        let m = self.groups.get(group)?.members.get(member_id)?;
        Some(m.session_timeout_ms)
    }

    /// How many partitions a live member owns now; `None` for an unknown
    /// group or member, or a fenced one (a heartbeat from it fails before its
    /// `owned` report is read). A front end uses it to expand an `owned`
    /// report only as far as it can matter.
    pub fn owned_count(&self, group: &str, member_id: &str) -> Option<usize> {
        let m = self.groups.get(group)?.members.get(member_id)?;
        (!m.fenced).then_some(m.owned.len())
    }

    /// Number of members (0 for unknown groups).
    pub fn member_count(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |g| g.members.len())
    }

    /// True when every member owns exactly its target and its last response said so.
    pub fn is_stable(&self, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| matches!(g.state(), GroupState::Stable | GroupState::Empty))
    }

    /// DescribeGroups data for one group.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| {
                let (assignment, revoking, pending) = g.view_parts(id, m);
                MemberDescription {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    topics: m.topics.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    metadata: m.metadata.clone(),
                    assignment,
                    revoking,
                    pending,
                    fenced: m.fenced,
                }
            })
            .collect();
        Some(GroupDescription {
            group: group.to_string(),
            generation: g.generation,
            state: g.state(),
            mode: g.mode,
            leader: g.leader(),
            members,
            rebalances: g.rebalances,
        })
    }

    /// ListGroups data for every group the coordinator knows (empty ones included).
    pub fn list_groups(&self) -> Vec<GroupListing> {
        self.groups
            .iter()
            .map(|(name, g)| GroupListing {
                group: name.clone(),
                state: g.state(),
                members: g.members.len(),
                generation: g.generation,
            })
            .collect()
    }

    /// Members whose heartbeat answer changed since they were last answered
    /// (a new revoke, a grant, removal of a pending partition). A broker that
    /// parks heartbeats (long-poll) answers these early. Drains the set.
    pub fn take_notifications(&mut self) -> Vec<(String, MemberId)> {
        std::mem::take(&mut self.notify).into_iter().collect()
    }

    /// Reconciles a group after a change and records whom to notify.
    fn after_change(&mut self, group: &str, now_ms: u64) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.empty_since_ms = if g.members.is_empty() {
            Some(g.empty_since_ms.unwrap_or(now_ms))
        } else {
            None
        };
        g.reconcile(now_ms);
        for (id, m) in &g.members {
            let (assignment, revoke, _) = g.view_parts(id, m);
            if m.last_view.as_ref() != Some(&(assignment, revoke)) {
                self.notify.insert((group.to_string(), id.clone()));
            }
        }
    }

    /// Builds a member's view, remembers it as sent, and clears its notification.
    fn respond(
        &mut self,
        group: &str,
        member_id: &str,
        is_join: bool,
    ) -> Result<MemberView, GroupError> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| unknown(group, member_id))?;
        if g.awaiting_leader && !is_join {
            return Err(GroupError::RebalanceInProgress {
                group: group.to_string(),
            });
        }
        let generation = g.generation;
        let (assignment, revoke, pending) = {
            let m = g
                .members
                .get(member_id)
                .ok_or_else(|| unknown(group, member_id))?;
            g.view_parts(member_id, m)
        };
        let m = g
            .members
            .get_mut(member_id)
            .ok_or_else(|| unknown(group, member_id))?;
        let busy = !revoke.is_empty() || !pending.is_empty();
        let heartbeat_interval_ms = if busy {
            self.config.reconcile_heartbeat_interval_ms
        } else {
            self.config
                .heartbeat_interval_ms
                .min(m.session_timeout_ms / 3)
                .max(1)
        };
        m.last_view = Some((assignment.clone(), revoke.clone()));
        self.notify
            .remove(&(group.to_string(), member_id.to_string()));
        Ok(MemberView {
            member_id: member_id.to_string(),
            generation,
            assignment,
            revoke,
            pending,
            heartbeat_interval_ms,
        })
    }
}

fn unknown(group: &str, member: &str) -> GroupError {
    GroupError::UnknownMemberId {
        group: group.to_string(),
        member: member.to_string(),
    }
}
