//! The Kafka *classic* group protocol (JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup with client-side assignment) as a pure state machine.
//!
//! No tokio, no sockets, no clock: every call that depends on time takes
//! `now_ms` (the broker passes the same monotonic clock as the native
//! [`crate::Coordinator`]). The broker keeps one [`ClassicCoordinator`]
//! behind the same mutex as the native coordinator (the two share the group
//! namespace and the offset store) and routes its answers; the tests below
//! drive it directly with simulated time.
//!
//! The model is Apache Kafka's classic `GroupCoordinator` (the Scala one of
//! Kafka 2.x/3.x: `GroupCoordinator.scala`, `GroupMetadata.scala`,
//! `MemberMetadata.scala`, `DelayedJoin.scala`), with KIP-345 static
//! membership and KIP-394 (member id required). Where this file departs from
//! it, the departure is listed at the end.
//!
//! # Parked requests: tickets and completions
//!
//! JoinGroup and SyncGroup are barriers: their answers may come much later,
//! caused by another member's request or by time. Every [`ClassicCoordinator::join`]
//! and [`ClassicCoordinator::sync`] returns a [`Ticket`], and **every**
//! answer, immediate or not, is a [`Completion`] carrying that ticket, taken
//! with [`ClassicCoordinator::take_completions`] after any mutating call
//! (the broker routes each to the oneshot channel it registered for the
//! ticket, under the same lock). Each ticket is answered exactly once: a
//! request that is superseded (a member sending a second JoinGroup while the
//! first is parked), a member removed while parked, a static member fenced
//! while parked, and [`ClassicCoordinator::shutdown`] all answer it.
//! Heartbeat, LeaveGroup and the offset-commit check answer at once.
//!
//! Time-driven transitions happen in [`ClassicCoordinator::tick`], to be
//! called at [`ClassicCoordinator::next_deadline_ms`] (the broker's group
//! timer also wakes for the native coordinator's deadlines).
//!
//! # States (named as Kafka prints them)
//!
//! - `Empty`: no members. A join by a new member starts a rebalance.
//! - `PreparingRebalance`: the join barrier. Joins are parked; heartbeats
//!   answer `REBALANCE_IN_PROGRESS` (and refresh the session); syncs answer
//!   `REBALANCE_IN_PROGRESS`; commits of the current generation are allowed.
//!   The phase ends when every member (and every pending member id, see
//!   below) has rejoined, or at the deadline: the largest rebalance timeout
//!   of the members, counted from the start of the phase. A group that was
//!   `Empty` waits `initial_rebalance_delay_ms` instead and never ends
//!   early (Kafka's `InitialDelayedJoin`): if new members joined a
//!   generation-0 group during the delay, it waits again,
//!   `min(delay, remaining)`, until the rebalance timeout is used up.
//!   At the end, dynamic members that did not rejoin are removed (static
//!   ones stay, and keep their session), the generation increments, the
//!   protocol is chosen, the leader kept if it rejoined (else the
//!   earliest-joined member that did), and every parked join is answered:
//!   the leader with every member's id, instance id and metadata for the
//!   chosen protocol, the others with an empty list.
//! - `CompletingRebalance`: waiting for the leader's SyncGroup. Followers'
//!   syncs are parked; the leader's sync installs the assignment (members it
//!   did not name get empty bytes), answers every parked sync and makes the
//!   group `Stable`. Heartbeats answer `NONE` (as Kafka: clients may start
//!   heartbeating after their JoinGroup response); commits answer
//!   `REBALANCE_IN_PROGRESS`.
//! - `Stable`: a sync answers the member's assignment at once. A join from a
//!   follower with unchanged protocols answers the current generation at
//!   once; a join from the leader, or with changed protocols, rebalances
//!   (Kafka: the leader's rejoin is how a consumer asks for a rebalance after
//!   a metadata change that does not show in its subscription).
//! - `Dead`: only a name here (Kafka's unloaded group; what DescribeGroups
//!   prints for an unknown group). A deleted group is simply forgotten.
//!
//! After the join phase, every member must also send SyncGroup within the
//! rebalance timeout (Kafka's `DelayedSync`, 3.0+): members that did not are
//! removed and the group rebalances.
//!
//! # Sessions
//!
//! Each member has a session deadline, pushed to `now + session timeout` by
//! a heartbeat, a sync answered, a commit (Stable or PreparingRebalance) and
//! the end of each barrier. A member past its deadline is removed and the
//! group rebalances — except while it has a parked join or sync (Kafka's
//! `hasSatisfiedHeartbeat`: a member waiting on a barrier cannot heartbeat
//! on most clients, so it is kept; the barrier's own timeout bounds the
//! wait). A member that is *new* in this rebalance has no such protection:
//! its deadline is 5 minutes after its join ([`NEW_MEMBER_JOIN_TIMEOUT_MS`],
//! Kafka's `NewMemberJoinTimeoutMs`), after which its parked join is
//! answered `UNKNOWN_MEMBER_ID` (a client that disconnected mid-rebalance
//! does not linger). A pending member id handed out with `MEMBER_ID_REQUIRED`
//! is forgotten after the session timeout of the request that got it.
//!
//! # Static membership (KIP-345)
//!
//! A join with a `group_instance_id` and an empty member id is never asked
//! for a member id. If the instance id is known, the member keeps its place
//! (assignment, join order, leadership) under a new member id; a parked join
//! or sync of the old id is answered `FENCED_INSTANCE_ID`, and any later
//! request naming the old id with that instance id gets `FENCED_INSTANCE_ID`
//! (with no instance id: `UNKNOWN_MEMBER_ID`). In `Stable`, if the protocol
//! the group would choose is unchanged, no rebalance happens: the join is
//! answered at once with the current generation and the *old* leader id
//! (so that a restarted leader does not compute a new assignment that a
//! Stable group would never hand out — Kafka's pre-KIP-814 answer; a
//! JoinGroup v9 front end answers `skip_assignment = false`). In
//! `CompletingRebalance` it rebalances (the leader may have been given the
//! old id). Static members are not removed for missing a join phase, and do
//! not send LeaveGroup on shutdown: only their session timeout or an
//! explicit LeaveGroup by instance id removes them.
//!
//! # Offset commits
//!
//! [`ClassicCoordinator::check_commit`] mirrors Kafka's
//! `validateOffsetCommit`: a commit with generation `< 0`, an empty member id
//! and no instance id is a standalone (or admin) commit, allowed only while
//! the group is `Empty` or unknown (else `UNKNOWN_MEMBER_ID`); any other must
//! name a current member (`UNKNOWN_MEMBER_ID`, `FENCED_INSTANCE_ID`) and the
//! current generation (`ILLEGAL_GENERATION`; `ILLEGAL_GENERATION` too when
//! the group is unknown), and is refused with `REBALANCE_IN_PROGRESS` in
//! `CompletingRebalance`. In `PreparingRebalance` the previous generation
//! (still the current number) may commit: that is how a consumer commits
//! before revoking. A successful member commit refreshes the session
//! ([`ClassicCoordinator::record_commit`]).
//!
//! # Member ids
//!
//! `{client_id}-{uuid}` (`{group_instance_id}-{uuid}` for static members),
//! as Kafka. The uuid-shaped suffix is a bijective mix of the coordinator's
//! `instance_id` (which differs between broker runs) and a counter, so ids
//! never repeat; unlike Kafka's random UUIDs they are not meant to be
//! unguessable (neither system treats a member id as a secret).
//!
//! # Departures from Kafka
//!
//! - A (re)joining member's protocols must share one with every *other*
//!   member (Kafka also counts the member's own previous protocols, so a
//!   sole member cannot switch protocols without leaving first).
//! - Ties in the protocol vote go to the protocol whose earliest voter joined
//!   first (Kafka: hash-map order). A departed leader's successor is the
//!   earliest-joined remaining member (Kafka: hash-map order).
//! - Requests Kafka leaves unanswered are answered: a JoinGroup or SyncGroup
//!   superseded by a second one from the same member gets
//!   `REBALANCE_IN_PROGRESS`; a parked sync of a member that leaves or
//!   expires gets `UNKNOWN_MEMBER_ID`; a pending (MEMBER_ID_REQUIRED) id
//!   rejoining with an instance id (Kafka throws) gets `UNKNOWN_MEMBER_ID`.
//! - A rejoin updates the member's session and rebalance timeouts and client
//!   id/host, not only its protocols.
//! - Group metadata is not persisted: after a restart, members rejoin as new
//!   (`UNKNOWN_MEMBER_ID` for their old ids). Offsets are persisted
//!   (`crate::offsets`).
//! - A group that never completed a join phase and has nobody left (a
//!   refused first join, an unused MEMBER_ID_REQUIRED id) is forgotten at
//!   once instead of lingering `Empty`.
//! - Offsets of a group with members never expire, also for topics it no
//!   longer subscribes to (Kafka 3.x, KIP-496, expires those).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::coordinator::Occupancy;
use crate::error::{validate_group_id, ClassicError};

/// Identifies one parked JoinGroup or SyncGroup; its answer is the
/// [`Completion`] with the same ticket.
pub type Ticket = u64;

/// Default `initial_rebalance_delay_ms` (Kafka's `group.initial.rebalance.delay.ms`).
pub const DEFAULT_INITIAL_REBALANCE_DELAY_MS: u64 = 3_000;
/// Default smallest session timeout (Kafka's `group.min.session.timeout.ms`).
pub const DEFAULT_MIN_SESSION_TIMEOUT_MS: u64 = 6_000;
/// Default largest session timeout (Kafka's `group.max.session.timeout.ms`).
pub const DEFAULT_MAX_SESSION_TIMEOUT_MS: u64 = 1_800_000;
/// How long a member new in a rebalance may wait in the join phase before
/// it is dropped (Kafka's `NewMemberJoinTimeoutMs`).
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: u64 = 300_000;

/// Limits of the classic coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassicConfig {
    /// Smallest session timeout a member may ask for.
    pub min_session_timeout_ms: u64,
    /// Largest session timeout a member may ask for.
    pub max_session_timeout_ms: u64,
    /// How long an `Empty` group waits for more members before its first
    /// join phase ends (see the module docs).
    pub initial_rebalance_delay_ms: u64,
    /// Most members per group (`None`: unlimited, Kafka's default).
    pub max_group_size: Option<usize>,
}

impl Default for ClassicConfig {
    fn default() -> Self {
        ClassicConfig {
            min_session_timeout_ms: DEFAULT_MIN_SESSION_TIMEOUT_MS,
            max_session_timeout_ms: DEFAULT_MAX_SESSION_TIMEOUT_MS,
            initial_rebalance_delay_ms: DEFAULT_INITIAL_REBALANCE_DELAY_MS,
            max_group_size: None,
        }
    }
}

/// A classic group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    /// No members.
    Empty,
    /// The join barrier: waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's SyncGroup.
    CompletingRebalance,
    /// Every member can get its assignment.
    Stable,
    /// No such group (what Kafka describes for an unknown group).
    Dead,
}

impl ClassicState {
    /// The name Kafka prints (ListGroups, DescribeGroups).
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
            ClassicState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassicJoin {
    /// Empty for a member without an id yet.
    pub member_id: String,
    /// Static membership instance id (KIP-345).
    pub group_instance_id: Option<String>,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Session timeout in ms.
    pub session_timeout_ms: i32,
    /// Rebalance timeout in ms (JoinGroup v0: the session timeout).
    pub rebalance_timeout_ms: i32,
    /// E.g. `"consumer"`; every member of a group must send the same.
    pub protocol_type: String,
    /// Supported protocols by preference, each with its metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member is first given an id (KIP-394).
    pub require_known_member_id: bool,
}

/// A SyncGroup request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassicSync {
    /// The member's id.
    pub member_id: String,
    /// The generation from its JoinGroup response.
    pub generation_id: i32,
    /// Static membership instance id.
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+: checked against the group's when given.
    pub protocol_type: Option<String>,
    /// SyncGroup v5+: checked against the group's when given.
    pub protocol_name: Option<String>,
    /// The leader's assignment (member id, bytes); empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// One member in the leader's JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A successful JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedGroup {
    /// The generation the member joined.
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The chosen protocol.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// Every member (for the leader); empty for followers.
    pub members: Vec<JoinMember>,
}

/// The answer to one JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    /// The member id to answer with (the new id, the request's, or empty).
    pub member_id: String,
    /// The generation joined, or why not.
    pub result: Result<JoinedGroup, ClassicError>,
}

/// A successful SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedGroup {
    /// The group's protocol type.
    pub protocol_type: String,
    /// The group's protocol.
    pub protocol_name: String,
    /// The member's assignment bytes (empty if the leader gave it none).
    pub assignment: Bytes,
}

/// An answer to a parked (or immediately answered) join or sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Answer to the JoinGroup with this ticket.
    Join(Ticket, JoinReply),
    /// Answer to the SyncGroup with this ticket.
    Sync(Ticket, Result<SyncedGroup, ClassicError>),
}

impl Completion {
    /// The ticket answered.
    pub fn ticket(&self) -> Ticket {
        match self {
            Completion::Join(t, _) | Completion::Sync(t, _) => *t,
        }
    }
}

/// Why [`ClassicCoordinator::tick`] removed a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// No heartbeat within the session timeout (or, for a member new in the
    /// rebalance, within [`NEW_MEMBER_JOIN_TIMEOUT_MS`] of its join).
    SessionTimeout,
    /// A dynamic member did not rejoin before the join phase ended.
    NotRejoined,
    /// No SyncGroup within the rebalance timeout after the join phase.
    NotSynced,
    /// A MEMBER_ID_REQUIRED id that was not used within the session timeout.
    PendingExpired,
}

/// A member removed by time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The group.
    pub group: String,
    /// The member id.
    pub member_id: String,
    /// Why.
    pub reason: RemovalReason,
}

/// One member, for DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Session timeout in ms.
    pub session_timeout_ms: u64,
    /// Rebalance timeout in ms.
    pub rebalance_timeout_ms: u64,
    /// Metadata for the group's protocol (empty while none is chosen).
    pub metadata: Bytes,
    /// The assignment the leader gave it.
    pub assignment: Bytes,
}

/// A classic group, for DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroupDescription {
    /// Group id.
    pub group: String,
    /// State.
    pub state: ClassicState,
    /// Protocol type (empty if never set).
    pub protocol_type: String,
    /// The chosen protocol (empty while none is chosen).
    pub protocol_name: String,
    /// Current generation.
    pub generation: i32,
    /// The leader's member id.
    pub leader: Option<String>,
    /// Members in id order.
    pub members: Vec<ClassicMemberDescription>,
    /// Join phases completed since the coordinator started.
    pub rebalances: u64,
}

impl ClassicGroupDescription {
    /// What Kafka's DescribeGroups shows: outside `Stable`, no protocol name
    /// and no member metadata or assignment.
    pub fn kafka_summary(mut self) -> Self {
        if self.state != ClassicState::Stable {
            self.protocol_name.clear();
            for m in &mut self.members {
                m.metadata = Bytes::new();
                m.assignment = Bytes::new();
            }
        }
        self
    }
}

/// A classic group, for ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroupListing {
    /// Group id.
    pub group: String,
    /// Protocol type (empty if never set).
    pub protocol_type: String,
    /// State.
    pub state: ClassicState,
    /// Members now.
    pub members: usize,
    /// Current generation.
    pub generation: i32,
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<Ticket>,
    awaiting_sync: Option<Ticket>,
    /// Joined in the current join phase: its parked join does not protect
    /// its session (see the module docs).
    is_new: bool,
    /// Session deadline (ignored while protected by a parked request).
    deadline_ms: u64,
    /// Join order, for leader succession and vote ties.
    join_seq: u64,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == protocol)
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Kafka's `hasSatisfiedHeartbeat` for a member past its deadline.
    fn protected(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }

    fn refresh(&mut self, now: u64) {
        self.deadline_ms = now.saturating_add(self.session_timeout_ms);
    }

    fn update_from(&mut self, req: &ClassicJoin) {
        self.protocols = req.protocols.clone();
        self.session_timeout_ms = session_ms(req);
        self.rebalance_timeout_ms = rebalance_ms(req);
        self.client_id = req.client_id.clone();
        self.client_host = req.client_host.clone();
    }
}

fn session_ms(req: &ClassicJoin) -> u64 {
    u64::try_from(req.session_timeout_ms).unwrap_or(0)
}

fn rebalance_ms(req: &ClassicJoin) -> u64 {
    u64::try_from(req.rebalance_timeout_ms).unwrap_or(0)
}

/// Answers a member's parked join, if any.
fn answer_join(
    out: &mut Vec<Completion>,
    m: &mut Member,
    member_id: String,
    result: Result<JoinedGroup, ClassicError>,
) {
    if let Some(t) = m.awaiting_join.take() {
        out.push(Completion::Join(t, JoinReply { member_id, result }));
    }
}

/// Answers a member's parked sync, if any; whether there was one.
fn answer_sync(
    out: &mut Vec<Completion>,
    m: &mut Member,
    result: Result<SyncedGroup, ClassicError>,
) -> bool {
    match m.awaiting_sync.take() {
        Some(t) => {
            out.push(Completion::Sync(t, result));
            true
        }
        None => false,
    }
}

/// What a mutation needs besides the group: the time, the limits, and where
/// answers and removals go.
struct Ctx<'a> {
    now: u64,
    cfg: ClassicConfig,
    out: &'a mut Vec<Completion>,
    removed: &'a mut Vec<Removed>,
}

/// The remaining initial delay of an `Empty` group's first join phase.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    delay_ms: u64,
    remaining_ms: u64,
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    state: ClassicState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Instance id -> current member id.
    static_members: BTreeMap<String, String>,
    /// MEMBER_ID_REQUIRED ids handed out -> when they are forgotten.
    pending_members: BTreeMap<String, u64>,
    /// Members that have not sent SyncGroup since the last join phase.
    pending_sync: BTreeSet<String>,
    sync_deadline_ms: Option<u64>,
    /// End of the join phase (PreparingRebalance only).
    join_deadline_ms: Option<u64>,
    /// Set while the join phase is Kafka's `InitialDelayedJoin`.
    initial_delay: Option<InitialDelay>,
    /// A member was added to a generation-0 group during the initial delay.
    new_member_added: bool,
    /// When the group last became `Empty`.
    empty_since_ms: u64,
    rebalances: u64,
}

impl Group {
    fn new(name: &str, now: u64) -> Self {
        Group {
            name: name.to_string(),
            state: ClassicState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            join_deadline_ms: None,
            initial_delay: None,
            new_member_added: false,
            empty_since_ms: now,
            rebalances: 0,
        }
    }

    fn unknown(&self, member: &str) -> ClassicError {
        ClassicError::UnknownMemberId {
            group: self.name.clone(),
            member: member.to_string(),
        }
    }

    fn rebalancing(&self) -> ClassicError {
        ClassicError::RebalanceInProgress {
            group: self.name.clone(),
        }
    }

    fn inconsistent(&self, reason: String) -> ClassicError {
        ClassicError::InconsistentGroupProtocol {
            group: self.name.clone(),
            reason,
        }
    }

    fn transition(&mut self, state: ClassicState, now: u64) {
        if state == ClassicState::Empty && self.state != ClassicState::Empty {
            self.empty_since_ms = now;
        }
        self.state = state;
    }

    /// The largest rebalance timeout of the members (Kafka's group rebalance timeout).
    fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn num_awaiting(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.awaiting_join.is_some())
            .count()
    }

    fn has_all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn first_by_seq(&self, pred: impl Fn(&Member) -> bool) -> Option<String> {
        self.members
            .iter()
            .filter(|(_, m)| pred(m))
            .min_by_key(|(_, m)| m.join_seq)
            .map(|(id, _)| id.clone())
    }

    /// Whether a member with these protocols may join (Kafka's
    /// `supportsProtocols`, against the members other than `exclude`).
    fn supports(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
        exclude: Option<&str>,
    ) -> Result<(), ClassicError> {
        if self.state == ClassicState::Empty {
            if protocol_type.is_empty() {
                return Err(self.inconsistent("empty protocol type".into()));
            }
            if protocols.is_empty() {
                return Err(self.inconsistent("no protocols".into()));
            }
            return Ok(());
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return Err(self.inconsistent(format!(
                "protocol type {protocol_type:?}, the group's is {:?}",
                self.protocol_type.as_deref().unwrap_or("")
            )));
        }
        let common = protocols.iter().any(|(name, _)| {
            self.members
                .iter()
                .filter(|(id, _)| Some(id.as_str()) != exclude)
                .all(|(_, m)| m.supports(name))
        });
        if !common {
            return Err(self.inconsistent("no protocol in common with the other members".into()));
        }
        Ok(())
    }

    /// Kafka's `selectProtocol`: each member votes for its most preferred
    /// protocol among those every member supports; most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: BTreeSet<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.members.values().all(|m| m.supports(n)))
            .collect();
        // protocol -> (votes, join order of its earliest voter)
        let mut votes: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n.as_str()))
            {
                let e = votes.entry(name.as_str()).or_insert((0, u64::MAX));
                e.0 += 1;
                e.1 = e.1.min(m.join_seq);
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
            .map(|(name, _)| name.to_string())
    }

    fn add(&mut self, id: String, m: Member) {
        if let Some(i) = &m.instance_id {
            self.static_members.insert(i.clone(), id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(m.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.pending_members.remove(&id);
        self.members.insert(id, m);
    }

    /// Removes a member and its bookkeeping (answers nothing).
    fn remove(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id);
        if let Some(i) = m.as_ref().and_then(|m| m.instance_id.as_ref()) {
            if self.static_members.get(i).map(String::as_str) == Some(id) {
                self.static_members.remove(i);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.first_by_seq(|_| true);
        }
        self.pending_members.remove(id);
        self.sync_received(id);
        m
    }

    fn sync_received(&mut self, id: &str) {
        self.pending_sync.remove(id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    /// Kafka's `validateCurrentMember`.
    fn validate_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), ClassicError> {
        if let Some(i) = instance {
            match self.static_members.get(i) {
                Some(current) if current != member_id => {
                    return Err(ClassicError::FencedInstanceId {
                        group: self.name.clone(),
                        instance_id: i.to_string(),
                        member: member_id.to_string(),
                    })
                }
                Some(_) => {}
                None => return Err(self.unknown(member_id)),
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(self.unknown(member_id));
        }
        Ok(())
    }

    /// Kafka's `acceptJoiningMember` (group max size).
    fn accepts(&self, member_id: &str, max: Option<usize>) -> bool {
        let Some(max) = max else {
            return true;
        };
        match self.state {
            ClassicState::Empty | ClassicState::Dead => true,
            ClassicState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(|m| m.awaiting_join.is_some())
                    || self.num_awaiting() < max
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < max
            }
        }
    }

    fn member_list(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| JoinMember {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect()
    }

    /// The current generation as answered to `member_id` (the leader gets the members).
    fn joined(&self, member_id: &str) -> JoinedGroup {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinedGroup {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: self.protocol_name.clone().unwrap_or_default(),
            leader: self.leader.clone().unwrap_or_default(),
            members: if is_leader {
                self.member_list()
            } else {
                Vec::new()
            },
        }
    }

    fn join(
        &mut self,
        cx: &mut Ctx<'_>,
        ticket: Ticket,
        seq: u64,
        req: ClassicJoin,
        new_id: Option<String>,
    ) {
        if !self.accepts(&req.member_id, cx.cfg.max_group_size) {
            if let Some(mut m) = self.remove(&req.member_id) {
                let e = self.unknown(&req.member_id);
                answer_join(cx.out, &mut m, String::new(), Err(e.clone()));
                answer_sync(cx.out, &mut m, Err(e));
            }
            let e = ClassicError::GroupMaxSizeReached {
                group: self.name.clone(),
                max: cx.cfg.max_group_size.unwrap_or(0),
            };
            reply_join(cx, ticket, String::new(), Err(e));
        } else if let Some(new_id) = new_id {
            self.join_new(cx, ticket, seq, req, new_id);
        } else {
            self.join_current(cx, ticket, seq, req);
        }
        if self.state == ClassicState::PreparingRebalance {
            self.maybe_complete_join(cx);
        }
    }

    /// Kafka's `doNewMemberJoinGroup` (empty member id).
    fn join_new(
        &mut self,
        cx: &mut Ctx<'_>,
        ticket: Ticket,
        seq: u64,
        req: ClassicJoin,
        new_id: String,
    ) {
        let replaced = req
            .group_instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i))
            .cloned();
        if let Err(e) = self.supports(&req.protocol_type, &req.protocols, replaced.as_deref()) {
            reply_join(cx, ticket, String::new(), Err(e));
            return;
        }
        match (req.group_instance_id.clone(), replaced) {
            (Some(instance), Some(old)) => {
                self.replace_static(cx, ticket, old, new_id, instance, req)
            }
            (None, _) if req.require_known_member_id => {
                self.pending_members
                    .insert(new_id.clone(), cx.now.saturating_add(session_ms(&req)));
                let e = ClassicError::MemberIdRequired {
                    group: self.name.clone(),
                    member_id: new_id.clone(),
                };
                reply_join(cx, ticket, new_id, Err(e));
            }
            _ => self.add_and_rebalance(cx, ticket, seq, new_id, req),
        }
    }

    /// Kafka's `doCurrentMemberJoinGroup` (a member id given).
    fn join_current(&mut self, cx: &mut Ctx<'_>, ticket: Ticket, seq: u64, req: ClassicJoin) {
        let id = req.member_id.clone();
        if let Err(e) = self.supports(&req.protocol_type, &req.protocols, Some(&id)) {
            reply_join(cx, ticket, id, Err(e));
            return;
        }
        if self.pending_members.contains_key(&id) {
            if req.group_instance_id.is_some() {
                let e = self.unknown(&id);
                reply_join(cx, ticket, id, Err(e));
            } else {
                self.add_and_rebalance(cx, ticket, seq, id, req);
            }
            return;
        }
        if let Err(e) = self.validate_member(&id, req.group_instance_id.as_deref()) {
            reply_join(cx, ticket, id, Err(e));
            return;
        }
        let matches = self
            .members
            .get(&id)
            .is_some_and(|m| m.protocols == req.protocols);
        match self.state {
            ClassicState::PreparingRebalance => self.update_and_rebalance(cx, ticket, &id, &req),
            ClassicState::CompletingRebalance if matches => {
                // A member that lost its JoinGroup response: the same generation again.
                let joined = self.joined(&id);
                reply_join(cx, ticket, id, Ok(joined));
            }
            ClassicState::Stable if matches && self.leader.as_deref() != Some(id.as_str()) => {
                let joined = self.joined(&id);
                reply_join(cx, ticket, id, Ok(joined));
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                self.update_and_rebalance(cx, ticket, &id, &req)
            }
            ClassicState::Empty | ClassicState::Dead => {
                let e = self.unknown(&id);
                reply_join(cx, ticket, id, Err(e));
            }
        }
    }

    fn update_and_rebalance(
        &mut self,
        cx: &mut Ctx<'_>,
        ticket: Ticket,
        id: &str,
        req: &ClassicJoin,
    ) {
        let superseded = self.rebalancing();
        if let Some(m) = self.members.get_mut(id) {
            m.update_from(req);
            if let Some(old) = m.awaiting_join.replace(ticket) {
                cx.out.push(Completion::Join(
                    old,
                    JoinReply {
                        member_id: id.to_string(),
                        result: Err(superseded),
                    },
                ));
            }
        }
        self.maybe_prepare_rebalance(cx);
    }

    fn add_and_rebalance(
        &mut self,
        cx: &mut Ctx<'_>,
        ticket: Ticket,
        seq: u64,
        id: String,
        req: ClassicJoin,
    ) {
        let m = Member {
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: session_ms(&req),
            rebalance_timeout_ms: rebalance_ms(&req),
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(ticket),
            awaiting_sync: None,
            is_new: true,
            deadline_ms: cx.now.saturating_add(NEW_MEMBER_JOIN_TIMEOUT_MS),
            join_seq: seq,
        };
        if self.state == ClassicState::PreparingRebalance && self.generation == 0 {
            self.new_member_added = true;
        }
        self.add(id, m);
        self.maybe_prepare_rebalance(cx);
    }

    /// Kafka's `updateStaticMemberAndRebalance`: a known instance id rejoins
    /// with an empty member id and takes over under `new_id`.
    fn replace_static(
        &mut self,
        cx: &mut Ctx<'_>,
        ticket: Ticket,
        old: String,
        new_id: String,
        instance: String,
        req: ClassicJoin,
    ) {
        let previous_leader = self.leader.clone();
        let Some(mut m) = self.members.remove(&old) else {
            let e = ClassicError::UnknownServerError(format!(
                "static member {old} is not in the group"
            ));
            reply_join(cx, ticket, String::new(), Err(e));
            return;
        };
        let fenced = ClassicError::FencedInstanceId {
            group: self.name.clone(),
            instance_id: instance.clone(),
            member: old.clone(),
        };
        answer_join(cx.out, &mut m, old.clone(), Err(fenced.clone()));
        answer_sync(cx.out, &mut m, Err(fenced));
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(&old) {
            self.pending_sync.insert(new_id.clone());
        }
        self.static_members.insert(instance, new_id.clone());
        m.update_from(&req);
        m.refresh(cx.now);
        m.awaiting_join = Some(ticket);
        self.members.insert(new_id.clone(), m);
        match self.state {
            ClassicState::Stable => {
                if self.select_protocol() == self.protocol_name {
                    let joined = JoinedGroup {
                        generation_id: self.generation,
                        protocol_type: self.protocol_type.clone().unwrap_or_default(),
                        protocol_name: self.protocol_name.clone().unwrap_or_default(),
                        leader: previous_leader.unwrap_or_default(),
                        members: Vec::new(),
                    };
                    if let Some(m) = self.members.get_mut(&new_id) {
                        answer_join(cx.out, m, new_id.clone(), Ok(joined));
                    }
                } else {
                    self.maybe_prepare_rebalance(cx);
                }
            }
            ClassicState::CompletingRebalance => self.prepare_rebalance(cx),
            _ => {}
        }
    }

    fn maybe_prepare_rebalance(&mut self, cx: &mut Ctx<'_>) {
        if matches!(
            self.state,
            ClassicState::Stable | ClassicState::CompletingRebalance | ClassicState::Empty
        ) {
            self.prepare_rebalance(cx);
        }
    }

    /// Starts a join phase (Kafka's `prepareRebalance`).
    fn prepare_rebalance(&mut self, cx: &mut Ctx<'_>) {
        if self.state == ClassicState::CompletingRebalance {
            let e = self.rebalancing();
            self.reset_and_propagate_error(cx, e);
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        if self.state == ClassicState::Empty {
            let delay = cx.cfg.initial_rebalance_delay_ms;
            self.initial_delay = Some(InitialDelay {
                delay_ms: delay,
                remaining_ms: self.rebalance_timeout_ms().saturating_sub(delay),
            });
            self.join_deadline_ms = Some(cx.now.saturating_add(delay));
        } else {
            self.initial_delay = None;
            self.join_deadline_ms = Some(cx.now.saturating_add(self.rebalance_timeout_ms()));
        }
        self.transition(ClassicState::PreparingRebalance, cx.now);
        self.maybe_complete_join(cx);
    }

    /// Ends the join phase early once everyone rejoined (never during the initial delay).
    fn maybe_complete_join(&mut self, cx: &mut Ctx<'_>) {
        if self.state == ClassicState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.has_all_joined()
        {
            self.complete_join(cx);
        }
    }

    /// Kafka's `onCompleteJoin`.
    fn complete_join(&mut self, cx: &mut Ctx<'_>) {
        let not_rejoined: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in not_rejoined {
            if let Some(mut m) = self.remove(&id) {
                let e = self.unknown(&id);
                answer_sync(cx.out, &mut m, Err(e));
                cx.removed.push(Removed {
                    group: self.name.clone(),
                    member_id: id,
                    reason: RemovalReason::NotRejoined,
                });
            }
        }
        self.initial_delay = None;
        self.new_member_added = false;
        if !self.members.is_empty() && self.num_awaiting() == 0 {
            // Only static members that did not rejoin are left: wait another
            // rebalance timeout (their sessions may run out meanwhile).
            self.join_deadline_ms = Some(cx.now.saturating_add(self.rebalance_timeout_ms().max(1)));
            return;
        }
        self.join_deadline_ms = None;
        let leader_rejoined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_rejoined {
            self.leader = self.first_by_seq(|m| m.awaiting_join.is_some());
        }
        self.generation = self.generation.saturating_add(1);
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.transition(ClassicState::Empty, cx.now);
            return;
        }
        self.rebalances += 1;
        self.protocol_name = self.select_protocol();
        self.transition(ClassicState::CompletingRebalance, cx.now);
        let list = self.member_list();
        let base = JoinedGroup {
            members: Vec::new(),
            ..self.joined("")
        };
        let leader = self.leader.clone();
        for (id, m) in self.members.iter_mut() {
            let mut joined = base.clone();
            if leader.as_deref() == Some(id.as_str()) {
                joined.members = list.clone();
            }
            answer_join(cx.out, m, id.clone(), Ok(joined));
            m.refresh(cx.now);
            m.is_new = false;
            self.pending_sync.insert(id.clone());
        }
        self.sync_deadline_ms = Some(cx.now.saturating_add(self.rebalance_timeout_ms().max(1)));
    }

    fn reset_and_propagate_error(&mut self, cx: &mut Ctx<'_>, e: ClassicError) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if answer_sync(cx.out, m, Err(e.clone())) {
                m.refresh(cx.now);
            }
        }
    }

    fn propagate_assignment(&mut self, cx: &mut Ctx<'_>) {
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        for m in self.members.values_mut() {
            let synced = SyncedGroup {
                protocol_type: protocol_type.clone(),
                protocol_name: protocol_name.clone(),
                assignment: m.assignment.clone(),
            };
            if answer_sync(cx.out, m, Ok(synced)) {
                m.refresh(cx.now);
            }
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`: answers the member's parked
    /// requests, removes it, and rebalances (or ends the join phase).
    fn remove_and_update(&mut self, cx: &mut Ctx<'_>, id: &str, reason: Option<RemovalReason>) {
        let Some(mut m) = self.remove(id) else {
            return;
        };
        let e = self.unknown(id);
        answer_join(cx.out, &mut m, String::new(), Err(e.clone()));
        answer_sync(cx.out, &mut m, Err(e));
        if let Some(reason) = reason {
            cx.removed.push(Removed {
                group: self.name.clone(),
                member_id: id.to_string(),
                reason,
            });
        }
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.maybe_prepare_rebalance(cx)
            }
            ClassicState::PreparingRebalance => self.maybe_complete_join(cx),
            ClassicState::Empty | ClassicState::Dead => {}
        }
    }

    fn sync(&mut self, cx: &mut Ctx<'_>, ticket: Ticket, req: ClassicSync) {
        let id = req.member_id.clone();
        if let Err(e) = self.check_sync(&req) {
            cx.out.push(Completion::Sync(ticket, Err(e)));
            return;
        }
        match self.state {
            ClassicState::Empty | ClassicState::Dead => {
                cx.out
                    .push(Completion::Sync(ticket, Err(self.unknown(&id))));
            }
            ClassicState::PreparingRebalance => {
                cx.out
                    .push(Completion::Sync(ticket, Err(self.rebalancing())));
            }
            ClassicState::CompletingRebalance => {
                let superseded = self.rebalancing();
                if let Some(m) = self.members.get_mut(&id) {
                    if let Some(old) = m.awaiting_sync.replace(ticket) {
                        cx.out.push(Completion::Sync(old, Err(superseded)));
                    }
                }
                self.sync_received(&id);
                if self.leader.as_deref() == Some(id.as_str()) {
                    // Later entries for the same member win, as Kafka's map.
                    let assignments: BTreeMap<String, Bytes> =
                        req.assignments.into_iter().collect();
                    for (mid, m) in self.members.iter_mut() {
                        m.assignment = assignments.get(mid).cloned().unwrap_or_default();
                    }
                    self.propagate_assignment(cx);
                    self.transition(ClassicState::Stable, cx.now);
                }
            }
            ClassicState::Stable => {
                self.sync_received(&id);
                let protocol_type = self.protocol_type.clone().unwrap_or_default();
                let protocol_name = self.protocol_name.clone().unwrap_or_default();
                if let Some(m) = self.members.get_mut(&id) {
                    m.refresh(cx.now);
                    let synced = SyncedGroup {
                        protocol_type,
                        protocol_name,
                        assignment: m.assignment.clone(),
                    };
                    cx.out.push(Completion::Sync(ticket, Ok(synced)));
                }
            }
        }
    }

    /// Kafka's `validateSyncGroup`.
    fn check_sync(&self, req: &ClassicSync) -> Result<(), ClassicError> {
        self.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != self.generation {
            return Err(ClassicError::IllegalGeneration {
                group: self.name.clone(),
                generation: req.generation_id,
                current: self.generation,
            });
        }
        if let Some(t) = &req.protocol_type {
            if self.protocol_type.as_ref() != Some(t) {
                return Err(self.inconsistent(format!("SyncGroup protocol type {t:?}")));
            }
        }
        if let Some(n) = &req.protocol_name {
            if self.protocol_name.as_ref() != Some(n) {
                return Err(self.inconsistent(format!("SyncGroup protocol {n:?}")));
            }
        }
        Ok(())
    }

    fn heartbeat(
        &mut self,
        now: u64,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), ClassicError> {
        self.validate_member(member_id, instance)?;
        if generation != self.generation {
            return Err(ClassicError::IllegalGeneration {
                group: self.name.clone(),
                generation,
                current: self.generation,
            });
        }
        let rebalancing = match self.state {
            ClassicState::Empty | ClassicState::Dead => return Err(self.unknown(member_id)),
            ClassicState::CompletingRebalance | ClassicState::Stable => false,
            ClassicState::PreparingRebalance => true,
        };
        if let Some(m) = self.members.get_mut(member_id) {
            m.refresh(now);
        }
        if rebalancing {
            return Err(self.rebalancing());
        }
        Ok(())
    }

    /// One member of a LeaveGroup (Kafka's `handleLeaveGroup` loop body).
    fn leave_one(
        &mut self,
        cx: &mut Ctx<'_>,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ClassicError> {
        if member_id.is_empty() {
            // Administrative removal by instance id.
            let Some(current) = instance.and_then(|i| self.static_members.get(i)).cloned() else {
                return Err(self.unknown(member_id));
            };
            self.remove_and_update(cx, &current, None);
        } else if self.pending_members.remove(member_id).is_some() {
            self.maybe_complete_join(cx);
        } else {
            self.validate_member(member_id, instance)?;
            self.remove_and_update(cx, member_id, None);
        }
        Ok(())
    }

    /// Time-driven transitions due at `cx.now`, until none is.
    fn poll(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        // Each pass either acts on a due deadline (which moves it past `now`
        // or removes it) or stops; the bound is only a guard.
        for _ in 0..64 {
            let mut acted = false;
            let expired: Vec<String> = self
                .pending_members
                .iter()
                .filter(|(_, d)| **d <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                self.pending_members.remove(&id);
                cx.removed.push(Removed {
                    group: self.name.clone(),
                    member_id: id,
                    reason: RemovalReason::PendingExpired,
                });
                acted = true;
            }
            if acted {
                self.maybe_complete_join(cx);
            }
            let dead: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| !m.protected() && m.deadline_ms <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in dead {
                // An earlier removal may have answered (or ended) this one's wait.
                if self
                    .members
                    .get(&id)
                    .is_some_and(|m| !m.protected() && m.deadline_ms <= now)
                {
                    self.remove_and_update(cx, &id, Some(RemovalReason::SessionTimeout));
                    acted = true;
                }
            }
            if self.sync_deadline_ms.is_some_and(|d| d <= now) {
                self.sync_deadline_ms = None;
                acted = true;
                if matches!(
                    self.state,
                    ClassicState::CompletingRebalance | ClassicState::Stable
                ) && !self.pending_sync.is_empty()
                {
                    let missing: Vec<String> = self.pending_sync.iter().cloned().collect();
                    for id in missing {
                        if let Some(mut m) = self.remove(&id) {
                            let e = self.unknown(&id);
                            answer_join(cx.out, &mut m, String::new(), Err(e.clone()));
                            answer_sync(cx.out, &mut m, Err(e));
                            cx.removed.push(Removed {
                                group: self.name.clone(),
                                member_id: id,
                                reason: RemovalReason::NotSynced,
                            });
                        }
                    }
                    self.prepare_rebalance(cx);
                }
            }
            if self.state == ClassicState::PreparingRebalance
                && self.join_deadline_ms.is_some_and(|d| d <= now)
            {
                acted = true;
                match self.initial_delay {
                    Some(d) if self.new_member_added && d.remaining_ms != 0 => {
                        // Kafka's InitialDelayedJoin: new members came, wait again.
                        self.new_member_added = false;
                        let delay = cx.cfg.initial_rebalance_delay_ms.min(d.remaining_ms);
                        self.initial_delay = Some(InitialDelay {
                            delay_ms: delay,
                            remaining_ms: d.remaining_ms.saturating_sub(d.delay_ms),
                        });
                        self.join_deadline_ms = Some(now.saturating_add(delay));
                    }
                    _ => self.complete_join(cx),
                }
            }
            if !acted {
                break;
            }
        }
    }

    fn next_deadline_ms(&self) -> Option<u64> {
        let pending = self.pending_members.values().copied();
        let sessions = self
            .members
            .values()
            .filter(|m| !m.protected())
            .map(|m| m.deadline_ms);
        let join = self
            .join_deadline_ms
            .filter(|_| self.state == ClassicState::PreparingRebalance);
        pending
            .chain(sessions)
            .chain(self.sync_deadline_ms)
            .chain(join)
            .min()
    }

    /// Nothing ever happened here worth keeping: no generation, nobody.
    fn is_unused(&self) -> bool {
        self.state == ClassicState::Empty
            && self.generation == 0
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }
}

fn reply_join(
    cx: &mut Ctx<'_>,
    ticket: Ticket,
    member_id: String,
    result: Result<JoinedGroup, ClassicError>,
) {
    cx.out
        .push(Completion::Join(ticket, JoinReply { member_id, result }));
}

/// splitmix64's finaliser: a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The classic coordinator of every Kafka-protocol group on this broker.
/// See the module docs.
#[derive(Debug, Clone)]
pub struct ClassicCoordinator {
    config: ClassicConfig,
    instance_id: u64,
    next_seq: u64,
    next_ticket: Ticket,
    groups: BTreeMap<String, Group>,
    completions: Vec<Completion>,
    shut_down: bool,
}

impl ClassicCoordinator {
    /// An empty coordinator. `instance_id` must differ between broker runs
    /// (the start time in ms) so member ids are never reused.
    pub fn new(config: ClassicConfig, instance_id: u64) -> Self {
        ClassicCoordinator {
            config,
            instance_id,
            next_seq: 0,
            next_ticket: 1,
            groups: BTreeMap::new(),
            completions: Vec::new(),
            shut_down: false,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &ClassicConfig {
        &self.config
    }

    fn ticket(&mut self) -> Ticket {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    fn new_member_id(&mut self, client_id: &str, instance: Option<&str>) -> String {
        self.next_seq += 1;
        let hi = mix(self.instance_id);
        let lo = mix(self.next_seq.wrapping_add(hi));
        format!(
            "{}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            instance.unwrap_or(client_id),
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }

    /// JoinGroup. The answer is a [`Completion::Join`] with the returned
    /// ticket, now or later (see the module docs).
    pub fn join(&mut self, now_ms: u64, group: &str, req: ClassicJoin) -> Ticket {
        let ticket = self.ticket();
        if let Err((member_id, e)) = self.join_inner(now_ms, group, ticket, req) {
            self.completions.push(Completion::Join(
                ticket,
                JoinReply {
                    member_id,
                    result: Err(e),
                },
            ));
        }
        self.forget_if_unused(group);
        ticket
    }

    fn join_inner(
        &mut self,
        now: u64,
        group: &str,
        ticket: Ticket,
        req: ClassicJoin,
    ) -> Result<(), (String, ClassicError)> {
        if self.shut_down {
            return Err((req.member_id, ClassicError::CoordinatorNotAvailable));
        }
        if validate_group_id(group).is_err() {
            return Err((
                req.member_id,
                ClassicError::InvalidGroupId(group.to_string()),
            ));
        }
        let session = i64::from(req.session_timeout_ms);
        let (min, max) = (
            self.config.min_session_timeout_ms,
            self.config.max_session_timeout_ms,
        );
        if session < i64::try_from(min).unwrap_or(i64::MAX)
            || session > i64::try_from(max).unwrap_or(i64::MAX)
        {
            return Err((
                req.member_id,
                ClassicError::InvalidSessionTimeout {
                    timeout_ms: session,
                    min_ms: min,
                    max_ms: max,
                },
            ));
        }
        let is_new = req.member_id.is_empty();
        if !self.groups.contains_key(group) {
            if !is_new {
                let e = ClassicError::UnknownMemberId {
                    group: group.to_string(),
                    member: req.member_id.clone(),
                };
                return Err((req.member_id, e));
            }
            self.groups
                .insert(group.to_string(), Group::new(group, now));
        }
        let new_id =
            is_new.then(|| self.new_member_id(&req.client_id, req.group_instance_id.as_deref()));
        self.next_seq += 1;
        let seq = self.next_seq;
        let cfg = self.config;
        let mut removed = Vec::new();
        let Some(g) = self.groups.get_mut(group) else {
            return Err((
                req.member_id,
                ClassicError::UnknownServerError("group vanished".into()),
            ));
        };
        let mut cx = Ctx {
            now,
            cfg,
            out: &mut self.completions,
            removed: &mut removed,
        };
        g.join(&mut cx, ticket, seq, req, new_id);
        Ok(())
    }

    /// SyncGroup. The answer is a [`Completion::Sync`] with the returned
    /// ticket, now or when the leader's sync arrives (see the module docs).
    pub fn sync(&mut self, now_ms: u64, group: &str, req: ClassicSync) -> Ticket {
        let ticket = self.ticket();
        let cfg = self.config;
        let early = if self.shut_down {
            Some(ClassicError::CoordinatorNotAvailable)
        } else if validate_group_id(group).is_err() {
            Some(ClassicError::InvalidGroupId(group.to_string()))
        } else {
            None
        };
        if let Some(e) = early {
            self.completions.push(Completion::Sync(ticket, Err(e)));
            return ticket;
        }
        let mut removed = Vec::new();
        match self.groups.get_mut(group) {
            None => {
                let e = ClassicError::UnknownMemberId {
                    group: group.to_string(),
                    member: req.member_id,
                };
                self.completions.push(Completion::Sync(ticket, Err(e)));
            }
            Some(g) => {
                let mut cx = Ctx {
                    now: now_ms,
                    cfg,
                    out: &mut self.completions,
                    removed: &mut removed,
                };
                g.sync(&mut cx, ticket, req);
            }
        }
        ticket
    }

    /// Heartbeat: `Ok` is NONE; refreshes the member's session when it is
    /// a current member of the current generation (also while rebalancing,
    /// which answers `RebalanceInProgress`).
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        group: &str,
        member_id: &str,
        generation: i32,
        group_instance_id: Option<&str>,
    ) -> Result<(), ClassicError> {
        if self.shut_down {
            return Err(ClassicError::CoordinatorNotAvailable);
        }
        validate_group_id(group).map_err(|_| ClassicError::InvalidGroupId(group.to_string()))?;
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| ClassicError::UnknownMemberId {
                group: group.to_string(),
                member: member_id.to_string(),
            })?;
        g.heartbeat(now_ms, member_id, generation, group_instance_id)
    }

    /// LeaveGroup for (member id, instance id) pairs (v0–v2: one pair, no
    /// instance id; v3+: a batch; an empty member id with an instance id
    /// removes that static member). `Err` is the top-level error; otherwise
    /// one result per pair, in order.
    pub fn leave(
        &mut self,
        now_ms: u64,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), ClassicError>>, ClassicError> {
        if self.shut_down {
            return Err(ClassicError::CoordinatorNotAvailable);
        }
        validate_group_id(group).map_err(|_| ClassicError::InvalidGroupId(group.to_string()))?;
        let cfg = self.config;
        let mut removed = Vec::new();
        let Some(g) = self.groups.get_mut(group) else {
            return Ok(members
                .iter()
                .map(|(m, _)| {
                    Err(ClassicError::UnknownMemberId {
                        group: group.to_string(),
                        member: m.clone(),
                    })
                })
                .collect());
        };
        let mut cx = Ctx {
            now: now_ms,
            cfg,
            out: &mut self.completions,
            removed: &mut removed,
        };
        let results = members
            .iter()
            .map(|(m, i)| g.leave_one(&mut cx, m, i.as_deref()))
            .collect();
        self.forget_if_unused(group);
        Ok(results)
    }

    /// Whether an OffsetCommit may be stored (Kafka's `validateOffsetCommit`
    /// with the state rules of `doCommitOffsets`; see the module docs).
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        group_instance_id: Option<&str>,
    ) -> Result<(), ClassicError> {
        if self.shut_down {
            return Err(ClassicError::CoordinatorNotAvailable);
        }
        validate_group_id(group).map_err(|_| ClassicError::InvalidGroupId(group.to_string()))?;
        let standalone = generation < 0 && member_id.is_empty() && group_instance_id.is_none();
        let unknown = || ClassicError::UnknownMemberId {
            group: group.to_string(),
            member: member_id.to_string(),
        };
        let Some(g) = self.groups.get(group) else {
            return if standalone {
                Ok(())
            } else if generation < 0 {
                // Kafka creates the group, then finds no such member.
                Err(unknown())
            } else {
                Err(ClassicError::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                    current: -1,
                })
            };
        };
        if standalone {
            if g.state != ClassicState::Empty {
                return Err(unknown());
            }
        } else {
            g.validate_member(member_id, group_instance_id)?;
            if generation != g.generation {
                return Err(ClassicError::IllegalGeneration {
                    group: group.to_string(),
                    generation,
                    current: g.generation,
                });
            }
        }
        match g.state {
            ClassicState::Empty | ClassicState::Stable | ClassicState::PreparingRebalance => Ok(()),
            ClassicState::CompletingRebalance => Err(g.rebalancing()),
            ClassicState::Dead => Err(ClassicError::CoordinatorNotAvailable),
        }
    }

    /// After a commit passed [`ClassicCoordinator::check_commit`]: a
    /// member's commit counts as a heartbeat (Stable, PreparingRebalance).
    pub fn record_commit(&mut self, now_ms: u64, group: &str, member_id: &str) {
        if let Some(g) = self.groups.get_mut(group) {
            if matches!(
                g.state,
                ClassicState::Stable | ClassicState::PreparingRebalance
            ) {
                if let Some(m) = g.members.get_mut(member_id) {
                    m.refresh(now_ms);
                }
            }
        }
    }

    /// Applies every time-driven transition due at `now_ms`: session and
    /// pending-id expiry, the end of join phases and the sync deadline.
    /// Call it at least at [`ClassicCoordinator::next_deadline_ms`].
    pub fn tick(&mut self, now_ms: u64) -> Vec<Removed> {
        let mut removed = Vec::new();
        if self.shut_down {
            return removed;
        }
        let cfg = self.config;
        for g in self.groups.values_mut() {
            let mut cx = Ctx {
                now: now_ms,
                cfg,
                out: &mut self.completions,
                removed: &mut removed,
            };
            g.poll(&mut cx);
        }
        self.groups.retain(|_, g| !g.is_unused());
        removed
    }

    /// The earliest time at which [`ClassicCoordinator::tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.shut_down {
            return None;
        }
        self.groups
            .values()
            .filter_map(Group::next_deadline_ms)
            .min()
    }

    /// Every answer produced since the last call, in order.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// Broker shutdown: answers every parked join and sync `NOT_COORDINATOR`
    /// (what Kafka answers when it stops coordinating a group); from now on
    /// every request answers `COORDINATOR_NOT_AVAILABLE`.
    pub fn shutdown(&mut self) {
        self.shut_down = true;
        for g in self.groups.values_mut() {
            for (id, m) in g.members.iter_mut() {
                answer_join(
                    &mut self.completions,
                    m,
                    id.clone(),
                    Err(ClassicError::NotCoordinator),
                );
                answer_sync(&mut self.completions, m, Err(ClassicError::NotCoordinator));
            }
        }
    }

    /// Whether [`ClassicCoordinator::shutdown`] ran.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    fn forget_if_unused(&mut self, group: &str) {
        if self.groups.get(group).is_some_and(Group::is_unused) {
            self.groups.remove(group);
        }
    }

    /// The group as it is now (see [`ClassicGroupDescription::kafka_summary`]
    /// for what Kafka's DescribeGroups shows).
    pub fn describe(&self, group: &str) -> Option<ClassicGroupDescription> {
        let g = self.groups.get(group)?;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let members = g
            .members
            .iter()
            .map(|(id, m)| ClassicMemberDescription {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                metadata: m.metadata(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(ClassicGroupDescription {
            group: group.to_string(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol,
            generation: g.generation,
            leader: g.leader.clone(),
            members,
            rebalances: g.rebalances,
        })
    }

    /// Every group, by name.
    pub fn list_groups(&self) -> Vec<ClassicGroupListing> {
        self.groups
            .iter()
            .map(|(name, g)| ClassicGroupListing {
                group: name.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
                members: g.members.len(),
                generation: g.generation,
            })
            .collect()
    }

    /// Whether the coordinator knows `group`.
    pub fn contains(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// Members of `group` now (0 for an unknown group).
    pub fn member_count(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |g| g.members.len())
    }

    /// The group's generation, if known.
    pub fn generation(&self, group: &str) -> Option<i32> {
        self.groups.get(group).map(|g| g.generation)
    }

    /// The group's state, if known.
    pub fn state(&self, group: &str) -> Option<ClassicState> {
        self.groups.get(group).map(|g| g.state)
    }

    /// DeleteGroups: forgets an `Empty` group (`Ok(false)` if unknown);
    /// `NonEmptyGroup` in any other state, as Kafka.
    pub fn delete_group(&mut self, group: &str) -> Result<bool, ClassicError> {
        let Some(g) = self.groups.get(group) else {
            return Ok(false);
        };
        if g.state != ClassicState::Empty {
            return Err(ClassicError::NonEmptyGroup {
                group: group.to_string(),
                members: g.members.len(),
            });
        }
        self.groups.remove(group);
        Ok(true)
    }

    /// For offsets retention: unknown, has members (or is rebalancing), or
    /// `Empty` since when.
    pub fn occupancy(&self, group: &str) -> Occupancy {
        match self.groups.get(group) {
            None => Occupancy::Unknown,
            Some(g) if g.state == ClassicState::Empty => Occupancy::EmptySince(g.empty_since_ms),
            Some(_) => Occupancy::Members,
        }
    }

    /// Every `Empty` group without pending member ids, with when it became empty.
    pub fn empty_groups(&self) -> Vec<(String, u64)> {
        self.groups
            .iter()
            .filter(|(_, g)| g.state == ClassicState::Empty && g.pending_members.is_empty())
            .map(|(name, g)| (name.clone(), g.empty_since_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kafka;

    const G: &str = "g";
    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;

    /// The coordinator on simulated time, with every answer collected by ticket.
    struct Sim {
        c: ClassicCoordinator,
        now: u64,
        answers: BTreeMap<Ticket, Completion>,
        removed: Vec<Removed>,
    }

    fn meta(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn req(member_id: &str, protocols: &[(&str, &str)]) -> ClassicJoin {
        ClassicJoin {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "app".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|(n, m)| (n.to_string(), meta(m)))
                .collect(),
            require_known_member_id: false,
        }
    }

    fn range(member_meta: &str) -> Vec<(&'static str, String)> {
        vec![("range", member_meta.to_string())]
    }

    impl Sim {
        fn new(delay: u64) -> Sim {
            let config = ClassicConfig {
                initial_rebalance_delay_ms: delay,
                ..ClassicConfig::default()
            };
            Sim {
                c: ClassicCoordinator::new(config, 42),
                now: 1_000,
                answers: BTreeMap::new(),
                removed: Vec::new(),
            }
        }

        fn collect(&mut self) {
            for c in self.c.take_completions() {
                let t = c.ticket();
                assert!(
                    self.answers.insert(t, c).is_none(),
                    "ticket {t} answered twice"
                );
            }
        }

        fn join_req(&mut self, r: ClassicJoin) -> Ticket {
            let t = self.c.join(self.now, G, r);
            self.collect();
            t
        }

        fn join(&mut self, member_id: &str, member_meta: &str) -> Ticket {
            let p = range(member_meta);
            let p: Vec<(&str, &str)> = p.iter().map(|(n, m)| (*n, m.as_str())).collect();
            self.join_req(req(member_id, &p))
        }

        fn sync(
            &mut self,
            member_id: &str,
            generation: i32,
            assignments: &[(&str, &str)],
        ) -> Ticket {
            let r = ClassicSync {
                member_id: member_id.to_string(),
                generation_id: generation,
                assignments: assignments
                    .iter()
                    .map(|(m, a)| (m.to_string(), meta(a)))
                    .collect(),
                ..ClassicSync::default()
            };
            let t = self.c.sync(self.now, G, r);
            self.collect();
            t
        }

        fn heartbeat(&mut self, member_id: &str, generation: i32) -> i16 {
            let r = self.c.heartbeat(self.now, G, member_id, generation, None);
            self.collect();
            r.map_or_else(|e| e.kafka_code(), |()| kafka::NONE)
        }

        fn advance(&mut self, ms: u64) {
            self.now += ms;
            self.removed.extend(self.c.tick(self.now));
            self.collect();
        }

        /// Advances in heartbeat-sized steps, heartbeating for `alive` members.
        fn advance_heartbeating(&mut self, ms: u64, alive: &[(&str, i32)]) {
            let mut left = ms;
            while left > 0 {
                let step = left.min(2_000);
                self.advance(step);
                left -= step;
                for (m, gen) in alive {
                    let _ = self.heartbeat(m, *gen);
                }
            }
        }

        fn parked(&self, t: Ticket) -> bool {
            !self.answers.contains_key(&t)
        }

        fn joined(&mut self, t: Ticket) -> (String, JoinedGroup) {
            match self.answers.remove(&t) {
                Some(Completion::Join(
                    _,
                    JoinReply {
                        member_id,
                        result: Ok(j),
                    },
                )) => (member_id, j),
                other => panic!("join {t}: {other:?}"),
            }
        }

        fn join_error(&mut self, t: Ticket) -> (String, i16) {
            match self.answers.remove(&t) {
                Some(Completion::Join(
                    _,
                    JoinReply {
                        member_id,
                        result: Err(e),
                    },
                )) => (member_id, e.kafka_code()),
                other => panic!("join {t}: {other:?}"),
            }
        }

        fn synced(&mut self, t: Ticket) -> Bytes {
            match self.answers.remove(&t) {
                Some(Completion::Sync(_, Ok(s))) => s.assignment,
                other => panic!("sync {t}: {other:?}"),
            }
        }

        fn sync_error(&mut self, t: Ticket) -> i16 {
            match self.answers.remove(&t) {
                Some(Completion::Sync(_, Err(e))) => e.kafka_code(),
                other => panic!("sync {t}: {other:?}"),
            }
        }

        fn state(&self) -> ClassicState {
            self.c.state(G).unwrap_or(ClassicState::Dead)
        }

        /// Two members "a" and "b" (ids returned) in a Stable generation 1
        /// with assignments "A" and "B" (initial delay 0).
        fn stable_pair(&mut self) -> (String, String) {
            let ta = self.join("", "ma");
            let tb = self.join("", "mb");
            self.advance(0);
            let (a, ja) = self.joined(ta);
            let (b, jb) = self.joined(tb);
            assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
            let sb = self.sync(&b, 1, &[]);
            let sa = self.sync(&a, 1, &[(&a, "A"), (&b, "B")]);
            assert_eq!(self.synced(sa), meta("A"));
            assert_eq!(self.synced(sb), meta("B"));
            assert_eq!(self.state(), ClassicState::Stable);
            (a, b)
        }
    }

    #[test]
    fn two_members_pass_the_join_barrier_and_the_leader_assigns() {
        let mut s = Sim::new(3_000);
        let ta = s.join("", "ma");
        assert_eq!(s.state(), ClassicState::PreparingRebalance);
        s.advance(100);
        let tb = s.join("", "mb");
        // Both joined, but the initial delay never ends early.
        assert!(s.parked(ta) && s.parked(tb));
        s.advance(2_900);
        // b came during the delay of a generation-0 group: one more delay.
        assert!(s.parked(ta) && s.parked(tb));
        assert_eq!(s.c.next_deadline_ms(), Some(s.now + 3_000));
        s.advance(3_000);
        let (a, ja) = s.joined(ta);
        let (b, jb) = s.joined(tb);
        assert!(
            a.starts_with("app-") && b.starts_with("app-") && a != b,
            "{a} {b}"
        );
        assert_eq!(a.len(), "app-".len() + 36);
        assert_eq!(ja.generation_id, 1);
        assert_eq!(ja.protocol_name, "range");
        assert_eq!(ja.protocol_type, "consumer");
        assert_eq!(ja.leader, a);
        assert_eq!(jb.leader, a);
        let mut got: Vec<(String, Bytes)> = ja
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.metadata.clone()))
            .collect();
        got.sort();
        let mut want = vec![(a.clone(), meta("ma")), (b.clone(), meta("mb"))];
        want.sort();
        assert_eq!(got, want);
        assert!(jb.members.is_empty());
        assert_eq!(s.state(), ClassicState::CompletingRebalance);

        // A follower's sync waits for the leader's.
        let sb = s.sync(&b, 1, &[]);
        assert!(s.parked(sb));
        assert_eq!(
            s.heartbeat(&b, 1),
            kafka::NONE,
            "heartbeats are fine meanwhile"
        );
        let sa = s.sync(&a, 1, &[(&a, "A"), (&b, "B"), ("stranger", "X")]);
        assert_eq!(s.synced(sa), meta("A"));
        assert_eq!(s.synced(sb), meta("B"));
        assert_eq!(s.state(), ClassicState::Stable);
        // In Stable a sync answers at once.
        let again = s.sync(&b, 1, &[]);
        assert_eq!(s.synced(again), meta("B"));
        let d = s.c.describe(G).unwrap();
        assert_eq!(d.state.name(), "Stable");
        assert_eq!(d.members.len(), 2);
        assert_eq!(d.leader.as_deref(), Some(a.as_str()));
    }

    #[test]
    fn the_initial_delay_ends_after_one_delay_without_newcomers() {
        let mut s = Sim::new(3_000);
        let ta = s.join("", "ma");
        s.advance(2_999);
        assert!(s.parked(ta));
        s.advance(1);
        let (_, j) = s.joined(ta);
        assert_eq!(j.generation_id, 1);
    }

    #[test]
    fn the_initial_delay_stops_extending_at_the_rebalance_timeout() {
        let mut s = Sim::new(3_000);
        let mut r = req("", &[("range", "m")]);
        r.rebalance_timeout_ms = 7_000;
        let t0 = s.join_req(r.clone());
        let mut tickets = vec![t0];
        // A newcomer every 1 s: delays 3 s (remaining 4 s), 3 s (remaining 1 s),
        // then 1 s (remaining 0), then it completes whatever arrives.
        for _ in 0..20 {
            s.advance(1_000);
            if s.answers.is_empty() {
                tickets.push(s.join_req(r.clone()));
            }
        }
        let answered: Vec<Ticket> = tickets.iter().copied().filter(|t| !s.parked(*t)).collect();
        assert_eq!(answered.len(), tickets.len(), "all answered together");
        // 3 + 3 + 1 s after the first join: 7 joins (one per second, the first at 0).
        assert_eq!(tickets.len(), 7, "{tickets:?}");
    }

    #[test]
    fn a_third_member_rebalances_and_everyone_rejoins_into_a_new_generation() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        let tc = s.join("", "mc");
        assert_eq!(s.state(), ClassicState::PreparingRebalance);
        assert!(s.parked(tc));
        assert_eq!(s.heartbeat(&a, 1), kafka::REBALANCE_IN_PROGRESS);
        assert_eq!(s.heartbeat(&b, 1), kafka::REBALANCE_IN_PROGRESS);
        assert_eq!(s.heartbeat(&a, 0), kafka::ILLEGAL_GENERATION);
        assert_eq!(s.heartbeat("nobody", 1), kafka::UNKNOWN_MEMBER_ID);
        let early = s.sync(&a, 1, &[]);
        assert_eq!(s.sync_error(early), kafka::REBALANCE_IN_PROGRESS);
        // A member of the previous generation may still commit (before revoking).
        assert!(s.c.check_commit(G, &a, 1, None).is_ok());
        let ta = s.join(&a, "ma");
        assert!(s.parked(ta));
        let tb = s.join(&b, "mb");
        // Everyone rejoined: no need to wait for the rebalance timeout.
        let (_, ja) = s.joined(ta);
        let (_, jb) = s.joined(tb);
        let (c, jc) = s.joined(tc);
        assert_eq!(
            (ja.generation_id, jb.generation_id, jc.generation_id),
            (2, 2, 2)
        );
        assert_eq!(ja.leader, a, "the leader is kept");
        assert_eq!(ja.members.len(), 3);
        assert!(jb.members.is_empty() && jc.members.is_empty());
        assert_eq!(s.heartbeat(&c, 2), kafka::NONE);
        assert_eq!(s.heartbeat(&b, 1), kafka::ILLEGAL_GENERATION);
        assert_eq!(s.c.describe(G).unwrap().rebalances, 2);
    }

    #[test]
    fn a_member_that_does_not_rejoin_in_time_is_dropped() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        let tc = s.join("", "mc");
        let ta = s.join(&a, "ma");
        // b keeps heartbeating (so its session holds) but never rejoins.
        s.advance_heartbeating(u64::try_from(REBALANCE).unwrap() - 2_000, &[(&b, 1)]);
        assert!(s.parked(ta) && s.parked(tc));
        s.advance_heartbeating(2_000, &[]);
        let (_, ja) = s.joined(ta);
        let (c, _) = s.joined(tc);
        assert_eq!(ja.generation_id, 2);
        let ids: Vec<&str> = ja.members.iter().map(|m| m.member_id.as_str()).collect();
        assert!(ids.contains(&a.as_str()) && ids.contains(&c.as_str()) && ids.len() == 2);
        assert!(s
            .removed
            .iter()
            .any(|r| r.member_id == b && r.reason == RemovalReason::NotRejoined));
        assert_eq!(s.heartbeat(&b, 2), kafka::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn the_leader_is_reelected_when_it_does_not_rejoin() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        // b's metadata changes: a rebalance a (the leader) never joins,
        // though it keeps heartbeating.
        let tb = s.join(&b, "mb2");
        s.advance_heartbeating(u64::try_from(REBALANCE).unwrap(), &[(&a, 1)]);
        let (_, jb) = s.joined(tb);
        assert_eq!(jb.leader, b);
        assert_eq!(jb.members.len(), 1);
        assert_eq!(jb.members[0].metadata, meta("mb2"));
        assert!(s
            .removed
            .iter()
            .any(|r| r.member_id == a && r.reason == RemovalReason::NotRejoined));
        assert_eq!(s.heartbeat(&a, 2), kafka::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_silent_member_expires_but_a_parked_one_does_not() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        // a rejoins (leader: a rebalance) and is parked far longer than its
        // session timeout; b never speaks again and expires at its session.
        let ta = s.join(&a, "ma");
        s.advance(u64::try_from(SESSION).unwrap() - 1);
        assert!(s.parked(ta));
        assert!(s.removed.is_empty());
        s.advance(1);
        assert_eq!(
            s.removed,
            vec![Removed {
                group: G.into(),
                member_id: b.clone(),
                reason: RemovalReason::SessionTimeout
            }]
        );
        // b's expiry left only joined members: the join phase ends at once.
        let (_, ja) = s.joined(ta);
        assert_eq!(ja.generation_id, 2);
        assert_eq!(ja.members.len(), 1);
        // Then a's session runs from the end of the barrier.
        let sa = s.sync(&a, 2, &[(&a, "A")]);
        assert_eq!(s.synced(sa), meta("A"));
        s.advance(u64::try_from(SESSION).unwrap());
        assert_eq!(s.c.member_count(G), 0);
        assert_eq!(s.state(), ClassicState::Empty);
        assert_eq!(
            s.c.generation(G),
            Some(3),
            "emptying bumps the generation, as Kafka"
        );
        assert!(s.c.check_commit(G, "", -1, None).is_ok());
    }

    #[test]
    fn a_new_member_stuck_in_a_join_phase_gives_up_after_five_minutes() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        let mut r = req("", &[("range", "mc")]);
        r.rebalance_timeout_ms = 900_000;
        r.session_timeout_ms = 60_000;
        let tc = s.join_req(r);
        s.advance_heartbeating(NEW_MEMBER_JOIN_TIMEOUT_MS - 2_000, &[(&a, 1), (&b, 1)]);
        assert!(s.parked(tc));
        s.advance_heartbeating(2_000, &[(&a, 1), (&b, 1)]);
        let (id, code) = s.join_error(tc);
        assert_eq!((id.as_str(), code), ("", kafka::UNKNOWN_MEMBER_ID));
        assert_eq!(s.c.member_count(G), 2);
    }

    #[test]
    fn leaving_rebalances_and_the_last_leave_empties_the_group() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        let r =
            s.c.leave(s.now, G, &[(b.clone(), None), ("ghost".into(), None)])
                .unwrap();
        s.collect();
        assert!(r[0].is_ok());
        assert_eq!(
            r[1].as_ref().unwrap_err().kafka_code(),
            kafka::UNKNOWN_MEMBER_ID
        );
        assert_eq!(s.state(), ClassicState::PreparingRebalance);
        let ta = s.join(&a, "ma");
        let (_, ja) = s.joined(ta);
        assert_eq!(ja.generation_id, 2);
        assert_eq!(ja.members.len(), 1);
        // A member parked in a join phase that leaves gets its join answered.
        let tc = s.join("", "mc");
        let r = s.c.leave(s.now, G, &[(a.clone(), None)]).unwrap();
        s.collect();
        assert!(r[0].is_ok());
        let (c, jc) = s.joined(tc);
        assert_eq!(jc.generation_id, 3);
        let r = s.c.leave(s.now, G, &[(c, None)]).unwrap();
        s.collect();
        assert!(r[0].is_ok());
        assert_eq!(s.state(), ClassicState::Empty);
        // Unknown group: per-member UNKNOWN_MEMBER_ID, no top-level error.
        let r = s.c.leave(s.now, "other", &[("x".into(), None)]).unwrap();
        assert_eq!(
            r[0].as_ref().unwrap_err().kafka_code(),
            kafka::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            s.c.leave(s.now, "", &[]).unwrap_err().kafka_code(),
            kafka::INVALID_GROUP_ID
        );
    }

    #[test]
    fn a_leaving_member_with_a_parked_join_is_answered() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        let ta = s.join(&a, "ma");
        assert!(s.parked(ta));
        s.c.leave(s.now, G, &[(a.clone(), None)]).unwrap();
        s.collect();
        let (id, code) = s.join_error(ta);
        assert_eq!((id.as_str(), code), ("", kafka::UNKNOWN_MEMBER_ID));
        let tb = s.join(&b, "mb");
        let (_, jb) = s.joined(tb);
        assert_eq!(jb.leader, b);
    }

    #[test]
    fn member_id_required_then_rejoin_with_it() {
        let mut s = Sim::new(0);
        let mut r = req("", &[("range", "m")]);
        r.require_known_member_id = true;
        r.client_id = "consumer-1".into();
        let t = s.join_req(r.clone());
        let (id, code) = s.join_error(t);
        assert_eq!(code, kafka::MEMBER_ID_REQUIRED);
        assert!(id.starts_with("consumer-1-"), "{id}");
        // Nothing rebalances for a pending id.
        assert_eq!(s.state(), ClassicState::Empty);
        r.member_id = id.clone();
        let t = s.join_req(r.clone());
        s.advance(0);
        let (joined_as, j) = s.joined(t);
        assert_eq!(joined_as, id);
        assert_eq!(j.leader, id);
        let synced = s.sync(&id, 1, &[]);
        let _ = s.synced(synced);

        // A pending id blocks the early end of a join phase until it is used.
        let mut r2 = req("", &[("range", "m2")]);
        r2.require_known_member_id = true;
        let t2 = s.join_req(r2.clone());
        let (id2, _) = s.join_error(t2);
        let again = s.join_req(r.clone()); // the leader rejoins a Stable group: rebalance
        assert!(s.parked(again));
        r2.member_id = id2.clone();
        let t2 = s.join_req(r2);
        let (_, j) = s.joined(again);
        assert_eq!(j.generation_id, 2);
        assert_eq!(j.members.len(), 2);
        let (_, j2) = s.joined(t2);
        assert_eq!(j2.generation_id, 2);

        // An unused pending id expires after the session timeout.
        let mut r3 = req("", &[("range", "m3")]);
        r3.require_known_member_id = true;
        let t3 = s.join_req(r3.clone());
        let (id3, _) = s.join_error(t3);
        s.advance(u64::try_from(SESSION).unwrap());
        assert!(s
            .removed
            .iter()
            .any(|r| r.member_id == id3 && r.reason == RemovalReason::PendingExpired));
        r3.member_id = id3;
        let t3 = s.join_req(r3);
        assert_eq!(s.join_error(t3).1, kafka::UNKNOWN_MEMBER_ID);
        // A group created by a MEMBER_ID_REQUIRED alone is forgotten with it.
        let mut lone = req("", &[("range", "m")]);
        lone.require_known_member_id = true;
        let t = s.c.join(s.now, "lonely", lone);
        s.collect();
        assert_eq!(s.join_error(t).1, kafka::MEMBER_ID_REQUIRED);
        assert!(s.c.contains("lonely"));
        s.advance(u64::try_from(SESSION).unwrap());
        assert!(!s.c.contains("lonely"));
    }

    #[test]
    fn static_members_take_over_and_fence_the_old_id() {
        let mut s = Sim::new(0);
        let mut r = req("", &[("range", "ms")]);
        r.group_instance_id = Some("i1".into());
        r.require_known_member_id = true; // ignored for static members
        let ts = s.join_req(r.clone());
        let tb = s.join("", "mb");
        s.advance(0);
        let (old, js) = s.joined(ts);
        assert!(old.starts_with("i1-"), "{old}");
        let (b, _) = s.joined(tb);
        assert_eq!(js.leader, old);
        let ss = s.sync(&old, 1, &[(&old, "S"), (&b, "B")]);
        assert_eq!(s.synced(ss), meta("S"));

        // The static member restarts: same instance id, no member id.
        let t = s.join_req(r.clone());
        let (new, j) = s.joined(t);
        assert_ne!(new, old);
        assert_eq!(j.generation_id, 1, "no rebalance in Stable");
        assert_eq!(
            j.leader, old,
            "the old leader id: no reassignment from a Stable group"
        );
        assert!(j.members.is_empty());
        assert_eq!(s.state(), ClassicState::Stable);
        let sync = ClassicSync {
            member_id: new.clone(),
            generation_id: 1,
            group_instance_id: Some("i1".into()),
            ..ClassicSync::default()
        };
        let t = s.c.sync(s.now, G, sync);
        s.collect();
        assert_eq!(s.synced(t), meta("S"), "it keeps its assignment");
        // The old id is fenced (with the instance id), unknown without it.
        let fenced = s.c.heartbeat(s.now, G, &old, 1, Some("i1")).unwrap_err();
        assert_eq!(fenced.kafka_code(), kafka::FENCED_INSTANCE_ID);
        assert_eq!(s.heartbeat(&old, 1), kafka::UNKNOWN_MEMBER_ID);
        assert_eq!(
            s.c.check_commit(G, &old, 1, Some("i1"))
                .unwrap_err()
                .kafka_code(),
            kafka::FENCED_INSTANCE_ID
        );
        assert!(s.c.check_commit(G, &new, 1, Some("i1")).is_ok());
        let mut stale = r.clone();
        stale.member_id = old.clone();
        let t = s.join_req(stale);
        assert_eq!(s.join_error(t).1, kafka::FENCED_INSTANCE_ID);
        // An unknown instance id with a member id is unknown.
        let hb = s.c.heartbeat(s.now, G, &new, 1, Some("i9")).unwrap_err();
        assert_eq!(hb.kafka_code(), kafka::UNKNOWN_MEMBER_ID);

        // While the old id has a parked join, a takeover fences it.
        let mut rejoin = r.clone();
        rejoin.member_id = new.clone();
        let parked = s.join_req(rejoin); // the leader (by instance) rejoins: rebalance
        assert!(s.parked(parked));
        let t = s.join_req(r.clone());
        let (id, code) = s.join_error(parked);
        assert_eq!((id, code), (new.clone(), kafka::FENCED_INSTANCE_ID));
        assert!(s.parked(t));
        // b never rejoins: the phase ends without it.
        s.advance(u64::try_from(REBALANCE).unwrap());
        let (newest, j) = s.joined(t);
        assert_eq!(j.generation_id, 2);
        assert_eq!(j.leader, newest);
        assert_eq!(s.c.member_count(G), 1);
    }

    #[test]
    fn a_static_member_that_misses_a_join_phase_stays_until_its_session_ends() {
        let mut s = Sim::new(0);
        let mut r = req("", &[("range", "ms")]);
        r.group_instance_id = Some("i1".into());
        let ts = s.join_req(r);
        let ta = s.join("", "ma");
        s.advance(0);
        let (st, _) = s.joined(ts);
        let (a, _) = s.joined(ta);
        let sa = s.sync(&a, 1, &[]);
        let ss = s.sync(&st, 1, &[]);
        let _ = (s.answers.remove(&sa), s.answers.remove(&ss));
        // a rejoins with new metadata; the static member stays silent.
        let ta = s.join(&a, "ma2");
        s.advance_heartbeating(u64::try_from(SESSION).unwrap() - 1_000, &[]);
        // Its session ran out first: removed, and the phase ends.
        s.advance(1_000);
        assert!(s
            .removed
            .iter()
            .any(|r| r.member_id == st && r.reason == RemovalReason::SessionTimeout));
        let (_, j) = s.joined(ta);
        assert_eq!(j.members.len(), 1);

        // Kept in the member list when its session outlasts the phase.
        let mut s = Sim::new(0);
        let mut r = req("", &[("range", "ms")]);
        r.group_instance_id = Some("i1".into());
        r.session_timeout_ms = 60_000;
        let ts = s.join_req(r);
        let ta = s.join("", "ma");
        s.advance(0);
        let (st, _) = s.joined(ts);
        let (a, _) = s.joined(ta);
        let _ = s.sync(&st, 1, &[]);
        let _ = s.sync(&a, 1, &[]);
        let ta = s.join(&a, "ma2");
        s.advance_heartbeating(u64::try_from(REBALANCE).unwrap(), &[]);
        let (_, j) = s.joined(ta);
        assert_eq!(j.members.len(), 2, "the static member is still listed");
        assert!(j
            .members
            .iter()
            .any(|m| m.group_instance_id.as_deref() == Some("i1")));
    }

    #[test]
    fn commits_are_fenced_as_kafka_fences_them() {
        let mut s = Sim::new(0);
        let code = |r: Result<(), ClassicError>| r.map_or_else(|e| e.kafka_code(), |()| 0);
        // Unknown group: standalone commits go, member commits do not.
        assert_eq!(code(s.c.check_commit(G, "", -1, None)), 0);
        assert_eq!(
            code(s.c.check_commit(G, "m", 3, None)),
            kafka::ILLEGAL_GENERATION
        );
        assert_eq!(
            code(s.c.check_commit(G, "m", -1, None)),
            kafka::UNKNOWN_MEMBER_ID
        );
        let ta = s.join("", "ma");
        let tb = s.join("", "mb");
        s.advance(0);
        let (a, _) = s.joined(ta);
        let (b, _) = s.joined(tb);
        // CompletingRebalance: even the current generation must wait.
        assert_eq!(
            code(s.c.check_commit(G, &a, 1, None)),
            kafka::REBALANCE_IN_PROGRESS
        );
        let _ = s.sync(&a, 1, &[]);
        let _ = s.sync(&b, 1, &[]);
        assert_eq!(code(s.c.check_commit(G, &a, 1, None)), 0);
        assert_eq!(
            code(s.c.check_commit(G, &a, 0, None)),
            kafka::ILLEGAL_GENERATION
        );
        assert_eq!(
            code(s.c.check_commit(G, &a, 2, None)),
            kafka::ILLEGAL_GENERATION
        );
        assert_eq!(
            code(s.c.check_commit(G, "x", 1, None)),
            kafka::UNKNOWN_MEMBER_ID
        );
        // Standalone commits are refused while the group has members.
        assert_eq!(
            code(s.c.check_commit(G, "", -1, None)),
            kafka::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            code(s.c.check_commit("", "", -1, None)),
            kafka::INVALID_GROUP_ID
        );
        // A commit keeps a member alive like a heartbeat.
        s.advance(u64::try_from(SESSION).unwrap() - 1);
        s.c.record_commit(s.now, G, &a);
        let _ = s.heartbeat(&b, 1);
        s.advance(2);
        assert_eq!(s.c.member_count(G), 2);
    }

    #[test]
    fn the_protocol_most_members_prefer_among_common_ones_is_chosen() {
        let mut s = Sim::new(0);
        let t1 = s.join_req(req("", &[("range", "1"), ("roundrobin", "1")]));
        let t2 = s.join_req(req("", &[("roundrobin", "2"), ("range", "2")]));
        let t3 = s.join_req(req(
            "",
            &[("roundrobin", "3"), ("sticky", "3"), ("range", "3")],
        ));
        // Not supported by everyone: refused.
        let t4 = s.join_req(req("", &[("sticky", "4")]));
        assert_eq!(s.join_error(t4).1, kafka::INCONSISTENT_GROUP_PROTOCOL);
        let mut other_type = req("", &[("range", "5")]);
        other_type.protocol_type = "connect".into();
        let t5 = s.join_req(other_type);
        assert_eq!(s.join_error(t5).1, kafka::INCONSISTENT_GROUP_PROTOCOL);
        s.advance(0);
        let (first, j1) = s.joined(t1);
        assert_eq!(j1.protocol_name, "roundrobin");
        assert_eq!(j1.leader, first);
        let by_id: BTreeMap<String, Bytes> = j1
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.metadata.clone()))
            .collect();
        let (second, _) = s.joined(t2);
        let (third, _) = s.joined(t3);
        assert_eq!(by_id[&first], meta("1"));
        assert_eq!(by_id[&second], meta("2"));
        assert_eq!(by_id[&third], meta("3"));

        // A tie goes to the earliest joiner's choice.
        let mut s = Sim::new(0);
        let t1 = s.join_req(req("", &[("range", "1"), ("roundrobin", "1")]));
        let t2 = s.join_req(req("", &[("roundrobin", "2"), ("range", "2")]));
        s.advance(0);
        assert_eq!(s.joined(t1).1.protocol_name, "range");
        assert_eq!(s.joined(t2).1.protocol_name, "range");
        // Empty protocol type or no protocols: refused on an empty group.
        let mut bad = req("", &[]);
        let t = s.c.join(s.now, "h", bad.clone());
        s.collect();
        assert_eq!(s.join_error(t).1, kafka::INCONSISTENT_GROUP_PROTOCOL);
        bad.protocols = vec![("range".into(), Bytes::new())];
        bad.protocol_type = String::new();
        let t = s.c.join(s.now, "h", bad);
        s.collect();
        assert_eq!(s.join_error(t).1, kafka::INCONSISTENT_GROUP_PROTOCOL);
        assert!(
            !s.c.contains("h"),
            "a refused first join leaves nothing behind"
        );
    }

    #[test]
    fn joins_are_checked_for_session_timeout_group_id_and_size() {
        let config = ClassicConfig {
            initial_rebalance_delay_ms: 0,
            max_group_size: Some(2),
            ..ClassicConfig::default()
        };
        let mut s = Sim::new(0);
        s.c = ClassicCoordinator::new(config, 7);
        let mut r = req("", &[("range", "m")]);
        r.session_timeout_ms = 5_999;
        let t = s.join_req(r.clone());
        assert_eq!(s.join_error(t).1, kafka::INVALID_SESSION_TIMEOUT);
        r.session_timeout_ms = 1_800_001;
        let t = s.join_req(r.clone());
        assert_eq!(s.join_error(t).1, kafka::INVALID_SESSION_TIMEOUT);
        r.session_timeout_ms = -1;
        let t = s.join_req(r.clone());
        assert_eq!(s.join_error(t).1, kafka::INVALID_SESSION_TIMEOUT);
        let t = s.c.join(s.now, "", req("", &[("range", "m")]));
        s.collect();
        assert_eq!(s.join_error(t).1, kafka::INVALID_GROUP_ID);
        let t = s.join("someone", "m");
        assert_eq!(
            s.join_error(t).1,
            kafka::UNKNOWN_MEMBER_ID,
            "unknown group, member id given"
        );
        let (ta, tb) = (s.join("", "a"), s.join("", "b"));
        let tc = s.join("", "c");
        assert_eq!(
            s.join_error(tc),
            (String::new(), kafka::GROUP_MAX_SIZE_REACHED)
        );
        s.advance(0);
        let (a, _) = s.joined(ta);
        let _ = s.joined(tb);
        let tc = s.join("", "c");
        assert_eq!(s.join_error(tc).1, kafka::GROUP_MAX_SIZE_REACHED);
        // Existing members are always accepted.
        let ta = s.join(&a, "a");
        assert_eq!(s.joined(ta).1.generation_id, 1);
    }

    #[test]
    fn a_follower_rejoining_a_stable_group_unchanged_gets_the_current_generation() {
        let mut s = Sim::new(0);
        let (a, b) = s.stable_pair();
        let tb = s.join(&b, "mb");
        let (_, jb) = s.joined(tb);
        assert_eq!(jb.generation_id, 1);
        assert_eq!(jb.leader, a);
        assert!(jb.members.is_empty());
        assert_eq!(s.state(), ClassicState::Stable);
        // The leader's rejoin rebalances (it may have seen topic metadata change).
        let ta = s.join(&a, "ma");
        assert!(s.parked(ta));
        assert_eq!(s.state(), ClassicState::PreparingRebalance);
    }

    #[test]
    fn a_metadata_change_while_completing_answers_parked_syncs_with_rebalance_in_progress() {
        let mut s = Sim::new(0);
        let ta = s.join("", "ma");
        let tb = s.join("", "mb");
        s.advance(0);
        let (a, _) = s.joined(ta);
        let (b, _) = s.joined(tb);
        let sb = s.sync(&b, 1, &[]);
        assert!(s.parked(sb));
        // A lost JoinGroup response: the same metadata returns the same generation.
        let again = s.join(&a, "ma");
        let (_, j) = s.joined(again);
        assert_eq!((j.generation_id, j.members.len()), (1, 2));
        // Changed metadata: the parked sync must rejoin.
        let ta = s.join(&a, "ma2");
        assert_eq!(s.sync_error(sb), kafka::REBALANCE_IN_PROGRESS);
        assert!(s.parked(ta));
        let tb = s.join(&b, "mb");
        assert_eq!(s.joined(tb).1.generation_id, 2);
        assert_eq!(s.joined(ta).1.generation_id, 2);
    }

    #[test]
    fn members_that_never_sync_are_removed_after_the_rebalance_timeout() {
        let mut s = Sim::new(0);
        let ta = s.join("", "ma");
        let tb = s.join("", "mb");
        s.advance(0);
        let (a, _) = s.joined(ta);
        let (b, _) = s.joined(tb);
        let sa = s.sync(&a, 1, &[(&a, "A"), (&b, "B")]);
        assert_eq!(s.synced(sa), meta("A"));
        // b heartbeats but never syncs.
        s.advance_heartbeating(u64::try_from(REBALANCE).unwrap(), &[(&a, 1), (&b, 1)]);
        assert!(s
            .removed
            .iter()
            .any(|r| r.member_id == b && r.reason == RemovalReason::NotSynced));
        assert_eq!(s.state(), ClassicState::PreparingRebalance);
        assert_eq!(s.heartbeat(&a, 1), kafka::REBALANCE_IN_PROGRESS);
    }

    #[test]
    fn a_superseded_join_is_answered() {
        let mut s = Sim::new(0);
        let (a, _b) = s.stable_pair();
        let first = s.join(&a, "ma");
        let second = s.join(&a, "ma");
        assert_eq!(s.join_error(first).1, kafka::REBALANCE_IN_PROGRESS);
        assert!(s.parked(second));
    }

    #[test]
    fn shutdown_answers_every_parked_request() {
        let mut s = Sim::new(0);
        let ta = s.join("", "ma");
        let tb = s.join("", "mb");
        s.advance(0);
        let (a, _) = s.joined(ta);
        let (b, _) = s.joined(tb);
        let sb = s.sync(&b, 1, &[]);
        let tc = s.c.join(s.now, "other", req("", &[("range", "x")]));
        s.collect();
        assert!(s.parked(sb) && s.parked(tc));
        s.c.shutdown();
        s.collect();
        assert_eq!(s.sync_error(sb), kafka::NOT_COORDINATOR);
        assert_eq!(s.join_error(tc).1, kafka::NOT_COORDINATOR);
        let t = s.join(&a, "ma");
        assert_eq!(s.join_error(t).1, kafka::COORDINATOR_NOT_AVAILABLE);
        let t = s.sync(&a, 1, &[]);
        assert_eq!(s.sync_error(t), kafka::COORDINATOR_NOT_AVAILABLE);
        assert_eq!(s.heartbeat(&a, 1), kafka::COORDINATOR_NOT_AVAILABLE);
        assert_eq!(s.c.next_deadline_ms(), None);
    }

    #[test]
    fn describe_lists_and_deletes_like_kafka() {
        let mut s = Sim::new(0);
        let ta = s.join("", "ma");
        s.advance(0);
        let (a, _) = s.joined(ta);
        let d = s.c.describe(G).unwrap();
        assert_eq!(d.state.name(), "CompletingRebalance");
        assert_eq!(d.members[0].metadata, meta("ma"));
        let k = d.kafka_summary();
        assert_eq!(k.protocol_name, "");
        assert!(k.members[0].metadata.is_empty());
        assert_eq!(k.members[0].client_id, "app");
        let _ = s.sync(&a, 1, &[(&a, "A")]);
        let k = s.c.describe(G).unwrap().kafka_summary();
        assert_eq!(
            (k.protocol_name.as_str(), k.members[0].assignment.clone()),
            ("range", meta("A"))
        );
        let listed = s.c.list_groups();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].protocol_type.as_str(), listed[0].state.name()),
            ("consumer", "Stable")
        );
        assert_eq!(
            s.c.delete_group(G).unwrap_err().kafka_code(),
            kafka::NON_EMPTY_GROUP
        );
        assert_eq!(s.c.occupancy(G), Occupancy::Members);
        s.c.leave(s.now, G, &[(a, None)]).unwrap();
        s.collect();
        assert_eq!(s.c.occupancy(G), Occupancy::EmptySince(s.now));
        assert_eq!(s.c.empty_groups(), vec![(G.to_string(), s.now)]);
        assert_eq!(s.c.delete_group(G), Ok(true));
        assert_eq!(s.c.delete_group(G), Ok(false));
        assert_eq!(s.c.occupancy(G), Occupancy::Unknown);
        assert!(s.c.describe(G).is_none());
        assert_eq!(ClassicState::Dead.name(), "Dead");
    }

    #[test]
    fn member_ids_are_unique_and_uuid_shaped() {
        let mut a = ClassicCoordinator::new(ClassicConfig::default(), 1);
        let mut b = ClassicCoordinator::new(ClassicConfig::default(), 2);
        let mut seen = BTreeSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(a.new_member_id("c", None)));
            assert!(seen.insert(b.new_member_id("c", None)));
        }
        let id = a.new_member_id("c", Some("inst"));
        let suffix = id.strip_prefix("inst-").unwrap();
        let parts: Vec<usize> = suffix.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
    }

    /// Five clients doing random things (static and dynamic, stale ids and
    /// generations, leaves, time passing): every ticket is answered exactly
    /// once (`collect` checks "at most once"; the end checks "at least once"
    /// after shutdown), and after every tick no deadline is in the past.
    #[test]
    fn random_clients_always_get_every_answer() {
        for seed in 1..=40u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut rnd = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut s = Sim::new(rnd(2) * 3_000);
            // Join tickets -> the client that sent them.
            let mut owner: BTreeMap<Ticket, usize> = BTreeMap::new();
            let mut issued = Vec::new();
            let mut learned = BTreeSet::new();
            // What each client believes: (member id, generation).
            let mut clients: Vec<(String, i32)> = vec![(String::new(), -1); 5];
            for _ in 0..400 {
                let c = usize::try_from(rnd(5)).unwrap();
                let (id, gen) = clients[c].clone();
                match rnd(7) {
                    0 | 1 => {
                        let m = if rnd(4) == 0 { "x" } else { "m" };
                        let mut r = req(&id, &[("range", m)]);
                        if c == 0 {
                            r.group_instance_id = Some("static-0".into());
                        }
                        r.require_known_member_id = rnd(2) == 0;
                        let t = s.join_req(r);
                        owner.insert(t, c);
                        issued.push(t);
                    }
                    2 => issued.push(s.sync(&id, gen, &[(&id, "A")])),
                    3 => {
                        let _ = s.heartbeat(&id, gen);
                    }
                    4 => {
                        let _ = s.c.leave(s.now, G, &[(id.clone(), None)]);
                        s.collect();
                    }
                    _ => {
                        s.advance(rnd(8_000));
                        if let Some(d) = s.c.next_deadline_ms() {
                            assert!(d > s.now, "seed {seed}: deadline {d} at {}", s.now);
                        }
                    }
                }
                for (t, a) in &s.answers {
                    if !learned.insert(*t) {
                        continue;
                    }
                    let (Completion::Join(_, reply), Some(&c)) = (a, owner.get(t)) else {
                        continue;
                    };
                    match &reply.result {
                        Ok(j) => clients[c] = (reply.member_id.clone(), j.generation_id),
                        Err(e) if e.kafka_code() == kafka::MEMBER_ID_REQUIRED => {
                            clients[c] = (reply.member_id.clone(), -1);
                        }
                        Err(e)
                            if e.kafka_code() == kafka::UNKNOWN_MEMBER_ID
                                || e.kafka_code() == kafka::FENCED_INSTANCE_ID =>
                        {
                            clients[c] = (String::new(), -1);
                        }
                        Err(_) => {}
                    }
                }
            }
            s.c.shutdown();
            s.collect();
            for t in &issued {
                assert!(
                    s.answers.contains_key(t),
                    "seed {seed}: ticket {t} never answered"
                );
            }
        }
    }
}
