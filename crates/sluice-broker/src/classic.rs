//! The Kafka classic group protocol in the broker: the async surface of
//! [`sluice_group::ClassicCoordinator`] on [`Groups`], for the Kafka-wire
//! front end (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit's
//! fencing, DescribeGroups, ListGroups).
//!
//! # Model
//!
//! The classic state machine lives in the same `State` as the native
//! coordinator, behind the same mutex ([`Groups`]' coordinator lock), so
//! the namespace rule (a group with members of one protocol refuses joins
//! of the other) and group delete are checked atomically. Requests map
//! onto it one to one; everything here is plumbing:
//!
//! - **Parked requests.** [`Groups::classic_join`] and
//!   [`Groups::classic_sync`] call the state machine under the lock, get a
//!   ticket, and register a oneshot sender for it before the lock is
//!   released; then every completion the state machine produced (by this
//!   call or any other: another member's join, a leave, the timer) is
//!   routed to its sender in [`route_completions`], which runs after every
//!   mutation (`Groups::after_change`). The returned future awaits the
//!   receiver; it holds no lock and no reference to [`Groups`]. A front end
//!   that drops the future (its connection closed) loses nothing but the
//!   answer: like Kafka, the member still counts as joined.
//! - **Time.** The state machine runs on [`Groups`]' monotonic clock (the
//!   one the native coordinator uses). [`Groups::run_timer`] sleeps until
//!   the earlier of both coordinators' deadlines and ticks both; any
//!   mutation that moves the classic deadline earlier wakes it.
//! - **Shutdown.** When the timer's stop token fires (and in
//!   [`Groups::close`]), [`Groups::shutdown_classic`] answers every parked
//!   join and sync `NOT_COORDINATOR` (what Kafka answers pending requests
//!   when it stops coordinating a group: the client looks up the
//!   coordinator again) and from then on every classic request answers
//!   `COORDINATOR_NOT_AVAILABLE`. A binary that wants parked requests
//!   answered at the *start* of its shutdown (before it waits for in-flight
//!   requests) calls [`Groups::shutdown_classic`] itself. Should a sender
//!   ever be dropped unanswered, the future answers
//!   `COORDINATOR_NOT_AVAILABLE`.
//! - **Namespace.** A classic join is refused with
//!   `INCONSISTENT_GROUP_PROTOCOL` while the native coordinator has members
//!   in the group; a native join gets `NON_EMPTY_GROUP` while classic
//!   members hold it; a standalone commit (generation < 0, no member id) is
//!   refused `UNKNOWN_MEMBER_ID` while either has members.
//! - **Commits.** [`Groups::begin_classic_commit`] fences the commit with
//!   [`sluice_group::ClassicCoordinator::check_commit`] (Kafka's rules) and
//!   queues it in the offset store under the lock, like the native
//!   `begin_commit`; hand the ticket to [`Groups::finish_commit`] (blocking,
//!   off the runtime) before acknowledging. A member's commit refreshes its
//!   session, as in Kafka.
//! - **Describe.** [`Groups::classic_describe`] answers what Kafka's
//!   DescribeGroups shows ([`sluice_group::ClassicGroupDescription::kafka_summary`]). The
//!   native `Groups::describe`/`list_groups` (native DescribeGroups, `sluice
//!   group describe`, the lag metrics) show classic groups too, with their
//!   Kafka state names; for protocol type `"consumer"` the members' topics
//!   and partitions are decoded from their subscription and assignment
//!   bytes ([`sluice_group::consumer_protocol`], defensively: garbage shows
//!   as no topics or no partitions), so lag is shown for assigned
//!   partitions that have no commit yet.
//!
//! Error codes in the responses are Apache Kafka's (`i16`), from
//! [`sluice_group::ClassicError::kafka_code`].

use std::sync::Arc;

use bytes::Bytes;
use futures::future::{self, BoxFuture};
use futures::FutureExt;
use sluice_group::classic::{ClassicJoin, ClassicSync, Completion};
use sluice_group::consumer_protocol::{
    decode_assignment, decode_subscription, CONSUMER_PROTOCOL_TYPE,
};
use sluice_group::error::kafka;
use sluice_group::{
    check_commit_offsets, AssignmentMode, ClassicError, ClassicState, CommitTicket,
    GroupDescription, GroupState, MemberDescription, OffsetCommit,
};
use tokio::sync::oneshot;

pub use sluice_group::ClassicMemberDescription;

use crate::group::{Groups, State};

/// A JoinGroup request, decoded by the front end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassicJoinRequest {
    /// The group.
    pub group: String,
    /// The member id; empty for a new member.
    pub member_id: String,
    /// Static membership instance id (JoinGroup v5+).
    pub group_instance_id: Option<String>,
    /// The request header's client id.
    pub client_id: String,
    /// The client's address (Kafka shows `/ip`).
    pub client_host: String,
    /// Session timeout in ms.
    pub session_timeout_ms: i32,
    /// Rebalance timeout in ms (JoinGroup v0: pass the session timeout).
    pub rebalance_timeout_ms: i32,
    /// Protocol type, e.g. `"consumer"`.
    pub protocol_type: String,
    /// Supported protocols by preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (KIP-394): a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// One member in the leader's JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicJoinMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// The member's metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicJoinResponse {
    /// Kafka error code (0: none).
    pub error: i16,
    /// The generation joined (-1 on error).
    pub generation_id: i32,
    /// The group's protocol type (v7+; `None` on error).
    pub protocol_type: Option<String>,
    /// The chosen protocol (`None` on error).
    pub protocol_name: Option<String>,
    /// The leader's member id (empty on error).
    pub leader: String,
    /// The member's id (the new one for MEMBER_ID_REQUIRED; may be empty on error).
    pub member_id: String,
    /// Every member for the leader; empty for followers and on error.
    pub members: Vec<ClassicJoinMember>,
}

/// A SyncGroup request, decoded by the front end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassicSyncRequest {
    /// The group.
    pub group: String,
    /// The member id.
    pub member_id: String,
    /// The generation from the JoinGroup response.
    pub generation_id: i32,
    /// Static instance id (v3+).
    pub group_instance_id: Option<String>,
    /// Checked against the group's when given (v5+).
    pub protocol_type: Option<String>,
    /// Checked against the group's when given (v5+).
    pub protocol_name: Option<String>,
    /// The leader's assignments (member id, bytes); empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicSyncResponse {
    /// Kafka error code (0: none).
    pub error: i16,
    /// The group's protocol type (v5+; `None` on error).
    pub protocol_type: Option<String>,
    /// The group's protocol (v5+; `None` on error).
    pub protocol_name: Option<String>,
    /// The member's assignment (empty on error).
    pub assignment: Bytes,
}

/// A Kafka classic group as Kafka's DescribeGroups shows it: outside
/// `Stable`, no protocol name and no member metadata or assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroupDescription {
    /// Group id.
    pub group: String,
    /// Kafka's state name: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`.
    pub state: String,
    /// Protocol type (empty if never set).
    pub protocol_type: String,
    /// The chosen protocol (empty outside `Stable`).
    pub protocol_name: String,
    /// Current generation.
    pub generation: i32,
    /// The leader's member id.
    pub leader: Option<String>,
    /// Members in id order (client id and host always; metadata and
    /// assignment only when `Stable`).
    pub members: Vec<ClassicMemberDescription>,
}

impl From<sluice_group::ClassicGroupDescription> for ClassicGroupDescription {
    fn from(d: sluice_group::ClassicGroupDescription) -> Self {
        let d = d.kafka_summary();
        ClassicGroupDescription {
            group: d.group,
            state: d.state.name().to_string(),
            protocol_type: d.protocol_type,
            protocol_name: d.protocol_name,
            generation: d.generation,
            leader: d.leader,
            members: d.members,
        }
    }
}

/// Where a parked classic request is answered.
pub(crate) enum ClassicWaiter {
    /// A JoinGroup to this group.
    Join(oneshot::Sender<ClassicJoinResponse>, String),
    /// A SyncGroup to this group.
    Sync(oneshot::Sender<ClassicSyncResponse>, String),
}

fn join_error(member_id: String, error: i16) -> ClassicJoinResponse {
    ClassicJoinResponse {
        error,
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id,
        members: Vec::new(),
    }
}

fn sync_error(error: i16) -> ClassicSyncResponse {
    ClassicSyncResponse {
        error,
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

fn join_response(group: &str, reply: sluice_group::JoinReply) -> ClassicJoinResponse {
    match reply.result {
        Ok(j) => {
            tracing::info!(group, member = %reply.member_id, generation = j.generation_id, "member joined group");
            ClassicJoinResponse {
                error: kafka::NONE,
                generation_id: j.generation_id,
                protocol_type: Some(j.protocol_type),
                protocol_name: Some(j.protocol_name),
                leader: j.leader,
                member_id: reply.member_id,
                members: j
                    .members
                    .into_iter()
                    .map(|m| ClassicJoinMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        metadata: m.metadata,
                    })
                    .collect(),
            }
        }
        Err(e) => {
            log_refusal("join", group, &e);
            join_error(reply.member_id, e.kafka_code())
        }
    }
}

fn sync_response(
    group: &str,
    r: Result<sluice_group::SyncedGroup, ClassicError>,
) -> ClassicSyncResponse {
    match r {
        Ok(s) => ClassicSyncResponse {
            error: kafka::NONE,
            protocol_type: Some(s.protocol_type),
            protocol_name: Some(s.protocol_name),
            assignment: s.assignment,
        },
        Err(e) => {
            log_refusal("sync", group, &e);
            sync_error(e.kafka_code())
        }
    }
}

fn log_refusal(what: &str, group: &str, e: &ClassicError) {
    if matches!(e, ClassicError::UnknownServerError(_)) {
        tracing::error!(group, error = %e, "kafka group {what} failed");
    } else {
        tracing::debug!(group, error = %e, "kafka group {what} refused");
    }
}

/// Sends every completion the classic coordinator produced to its waiter
/// (a waiter whose future was dropped is skipped). Runs under the lock
/// after every mutation.
pub(crate) fn route_completions(st: &mut State) {
    for c in st.classic.take_completions() {
        let waiter = st.classic_waiters.remove(&c.ticket());
        match (c, waiter) {
            (Completion::Join(_, reply), Some(ClassicWaiter::Join(tx, group))) => {
                let _ = tx.send(join_response(&group, reply));
            }
            (Completion::Sync(_, r), Some(ClassicWaiter::Sync(tx, group))) => {
                let _ = tx.send(sync_response(&group, r));
            }
            (c, w) => {
                // Tickets are registered under the same lock that produced
                // them, so this is a bug; the dropped sender still answers
                // COORDINATOR_NOT_AVAILABLE.
                tracing::error!(
                    ticket = c.ticket(),
                    registered = w.is_some(),
                    "kafka group answer without a matching waiter"
                );
            }
        }
    }
}

/// The Kafka state as the native [`GroupState`].
pub(crate) fn native_state(s: ClassicState) -> GroupState {
    match s {
        ClassicState::Empty | ClassicState::Dead => GroupState::Empty,
        ClassicState::PreparingRebalance => GroupState::PreparingRebalance,
        ClassicState::CompletingRebalance => GroupState::CompletingRebalance,
        ClassicState::Stable => GroupState::Stable,
    }
}

/// A classic group as the native DescribeGroups, CLI and metrics see it;
/// consumer groups' topics and partitions decoded from their bytes.
pub(crate) fn classic_as_native(d: &sluice_group::ClassicGroupDescription) -> GroupDescription {
    let consumer = d.protocol_type == CONSUMER_PROTOCOL_TYPE;
    let members = d
        .members
        .iter()
        .map(|m| {
            let (topics, assignment) = if consumer {
                let mut parts = decode_assignment(&m.assignment).unwrap_or_default();
                parts.sort();
                parts.dedup();
                (decode_subscription(&m.metadata).unwrap_or_default(), parts)
            } else {
                (Vec::new(), Vec::new())
            };
            MemberDescription {
                member_id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                topics,
                session_timeout_ms: m.session_timeout_ms,
                metadata: m.metadata.to_vec(),
                assignment,
                revoking: Vec::new(),
                pending: Vec::new(),
                fenced: false,
            }
        })
        .collect();
    GroupDescription {
        group: d.group.clone(),
        generation: u32::try_from(d.generation).unwrap_or(0),
        state: native_state(d.state),
        mode: AssignmentMode::Leader,
        leader: d.leader.clone(),
        members,
        rebalances: d.rebalances,
    }
}

impl Groups {
    /// JoinGroup. The future resolves when the member's join phase ends
    /// (or at once for errors, MEMBER_ID_REQUIRED and answers Kafka gives
    /// without a barrier).
    pub fn classic_join(
        self: &Arc<Self>,
        req: ClassicJoinRequest,
    ) -> BoxFuture<'static, ClassicJoinResponse> {
        let rx = {
            let mut st = self.lock();
            let now = self.now_ms();
            if st.coordinator.member_count(&req.group) > 0 && !st.classic.is_shut_down() {
                tracing::debug!(group = %req.group, "kafka join refused: native members hold the group");
                return future::ready(join_error(
                    req.member_id,
                    kafka::INCONSISTENT_GROUP_PROTOCOL,
                ))
                .boxed();
            }
            let group = req.group;
            let ticket = st.classic.join(
                now,
                &group,
                ClassicJoin {
                    member_id: req.member_id,
                    group_instance_id: req.group_instance_id,
                    client_id: req.client_id,
                    client_host: req.client_host,
                    session_timeout_ms: req.session_timeout_ms,
                    rebalance_timeout_ms: req.rebalance_timeout_ms,
                    protocol_type: req.protocol_type,
                    protocols: req.protocols,
                    require_known_member_id: req.require_known_member_id,
                },
            );
            let (tx, rx) = oneshot::channel();
            st.classic_waiters
                .insert(ticket, ClassicWaiter::Join(tx, group));
            self.after_change(&mut st);
            rx
        };
        async move {
            rx.await
                .unwrap_or_else(|_| join_error(String::new(), kafka::COORDINATOR_NOT_AVAILABLE))
        }
        .boxed()
    }

    /// SyncGroup. A follower's future resolves when the leader's sync
    /// arrives (or the group rebalances again).
    pub fn classic_sync(
        self: &Arc<Self>,
        req: ClassicSyncRequest,
    ) -> BoxFuture<'static, ClassicSyncResponse> {
        let rx = {
            let mut st = self.lock();
            let now = self.now_ms();
            let group = req.group;
            let ticket = st.classic.sync(
                now,
                &group,
                ClassicSync {
                    member_id: req.member_id,
                    generation_id: req.generation_id,
                    group_instance_id: req.group_instance_id,
                    protocol_type: req.protocol_type,
                    protocol_name: req.protocol_name,
                    assignments: req.assignments,
                },
            );
            let (tx, rx) = oneshot::channel();
            st.classic_waiters
                .insert(ticket, ClassicWaiter::Sync(tx, group));
            self.after_change(&mut st);
            rx
        };
        async move {
            rx.await
                .unwrap_or_else(|_| sync_error(kafka::COORDINATOR_NOT_AVAILABLE))
        }
        .boxed()
    }

    /// Heartbeat: the Kafka error code (0, UNKNOWN_MEMBER_ID,
    /// ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID, ...).
    pub fn classic_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
    ) -> i16 {
        let (r, _st) = self.mutate(|st, now, _| {
            st.classic
                .heartbeat(now, group, member_id, generation_id, group_instance_id)
        });
        match r {
            Ok(()) => kafka::NONE,
            Err(e) => e.kafka_code(),
        }
    }

    /// LeaveGroup for (member id, instance id) pairs: the top-level code and
    /// one code per pair (empty when the top-level code is an error). For
    /// LeaveGroup v0–v2 send one pair and answer its code as the top level.
    pub fn classic_leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> (i16, Vec<i16>) {
        let (r, _st) = self.mutate(|st, now, _| st.classic.leave(now, group, members));
        match r {
            Ok(per) => (
                kafka::NONE,
                per.iter()
                    .map(|r| {
                        r.as_ref()
                            .map_or_else(ClassicError::kafka_code, |()| kafka::NONE)
                    })
                    .collect(),
            ),
            Err(e) => (e.kafka_code(), Vec::new()),
        }
    }

    /// OffsetCommit of a Kafka client: fenced by Kafka's rules (see the
    /// module docs) and queued under the coordinator lock; hand the ticket
    /// to [`Groups::finish_commit`] (blocking) before acknowledging, and map
    /// its error with [`sluice_group::GroupError::kafka_code`]. The `Err`
    /// is the Kafka code for every partition of the request. Partitions
    /// must already be checked with [`Groups::commit_target`].
    pub fn begin_classic_commit(
        &self,
        group: &str,
        member_id: &str,
        generation_id: i32,
        group_instance_id: Option<&str>,
        commits: &[OffsetCommit],
    ) -> Result<CommitTicket, i16> {
        let mut st = self.lock();
        st.classic
            .check_commit(group, member_id, generation_id, group_instance_id)
            .map_err(|e| {
                log_refusal("commit", group, &e);
                e.kafka_code()
            })?;
        let standalone = generation_id < 0 && member_id.is_empty() && group_instance_id.is_none();
        if standalone && st.coordinator.member_count(group) > 0 {
            return Err(kafka::UNKNOWN_MEMBER_ID);
        }
        check_commit_offsets(commits).map_err(|e| e.kafka_code())?;
        let ticket = self
            .store()
            .append_commit(group, commits, self.wall_ms())
            .map_err(|e| e.kafka_code())?;
        if !member_id.is_empty() {
            let now = self.now_ms();
            st.classic.record_commit(now, group, member_id);
        }
        self.after_change(&mut st);
        Ok(ticket)
    }

    /// DescribeGroups of a Kafka client: the group as Kafka shows it, or
    /// `None` when no classic group has the name (Kafka describes it `Dead`).
    pub fn classic_describe(&self, group: &str) -> Option<ClassicGroupDescription> {
        self.lock()
            .classic
            .describe(group)
            .map(ClassicGroupDescription::from)
    }

    /// ListGroups of a Kafka client: (group, protocol type, state) of every
    /// classic group.
    pub fn classic_groups(&self) -> Vec<(String, String, String)> {
        self.lock()
            .classic
            .list_groups()
            .into_iter()
            .map(|g| (g.group, g.protocol_type, g.state.name().to_string()))
            .collect()
    }

    /// Answers every parked classic JoinGroup/SyncGroup `NOT_COORDINATOR`
    /// and refuses later classic requests with `COORDINATOR_NOT_AVAILABLE`
    /// (broker shutdown). Idempotent.
    pub fn shutdown_classic(&self) {
        let mut st = self.lock();
        if !st.classic.is_shut_down() {
            st.classic.shutdown();
            tracing::debug!("kafka group coordinator stopped");
        }
        self.after_change(&mut st);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice_group::{CoordinatorConfig, JoinRequest, TopicPartition};
    use tokio::time::Instant;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::ConfigLayer;
    use crate::group::GroupsOptions;
    use crate::{Broker, Metrics};

    fn open(dir: &std::path::Path, delay_ms: u64) -> (Arc<Broker>, Arc<Groups>) {
        let cfg = ConfigLayer {
            data_dir: Some(dir.to_path_buf()),
            ..ConfigLayer::default()
        }
        .resolve()
        .unwrap();
        let broker = Arc::new(Broker::open(&cfg, Metrics::new()).unwrap());
        let options = GroupsOptions {
            group_initial_rebalance_delay_ms: delay_ms,
            ..GroupsOptions::from_config(&cfg)
        };
        let groups = Groups::open_with(
            dir,
            Arc::clone(&broker),
            CoordinatorConfig::default(),
            1,
            options,
        )
        .unwrap();
        (broker, groups)
    }

    /// ConsumerProtocolSubscription v0 for `topics`.
    fn subscription(topics: &[&str]) -> Bytes {
        let mut b = 0i16.to_be_bytes().to_vec();
        b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for t in topics {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&(-1i32).to_be_bytes());
        Bytes::from(b)
    }

    /// ConsumerProtocolAssignment v0 for `parts` of topic `t`.
    fn assignment(topic: &str, parts: &[i32]) -> Bytes {
        let mut b = 0i16.to_be_bytes().to_vec();
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        b.extend_from_slice(topic.as_bytes());
        b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for p in parts {
            b.extend_from_slice(&p.to_be_bytes());
        }
        b.extend_from_slice(&(-1i32).to_be_bytes());
        Bytes::from(b)
    }

    fn join_req(group: &str, member_id: &str) -> ClassicJoinRequest {
        ClassicJoinRequest {
            group: group.into(),
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: "kafka-client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), subscription(&["t"]))],
            require_known_member_id: false,
        }
    }

    fn sync_req(
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> ClassicSyncRequest {
        ClassicSyncRequest {
            group: group.into(),
            member_id: member.into(),
            generation_id: generation,
            assignments,
            ..ClassicSyncRequest::default()
        }
    }

    /// Whether `f` is still pending after letting every other task run.
    async fn pending<T>(f: &mut BoxFuture<'static, T>) -> bool {
        tokio::task::yield_now().await;
        futures::poll!(f.as_mut()).is_pending()
    }

    /// Two members joining at once both wait for the barrier and get the
    /// same generation; a follower's sync waits for the leader's; during a
    /// rebalance heartbeats answer REBALANCE_IN_PROGRESS; commits are
    /// fenced; and the group shows in the native describe with its
    /// partitions decoded.
    #[tokio::test(start_paused = true)]
    async fn join_and_sync_barriers_over_the_async_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path(), 1_000);
        broker.create_topic("t", 2, &[]).unwrap();
        let stop = CancellationToken::new();
        let timer = tokio::spawn(Arc::clone(&groups).run_timer(stop.clone()));

        let started = Instant::now();
        let (ra, rb) = tokio::join!(
            groups.classic_join(join_req("g", "")),
            groups.classic_join(join_req("g", ""))
        );
        // The initial delay (1 s) ran once, then once more for the second member.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(2_000) && waited < Duration::from_millis(2_100),
            "{waited:?}"
        );
        assert_eq!((ra.error, rb.error), (0, 0));
        assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
        assert_eq!(ra.leader, rb.leader);
        assert_eq!(ra.protocol_name.as_deref(), Some("range"));
        let (leader, follower) = if ra.leader == ra.member_id {
            (ra, rb)
        } else {
            (rb, ra)
        };
        assert_eq!(leader.members.len(), 2);
        assert!(follower.members.is_empty());

        // SyncGroup barrier.
        let mut fsync = groups.classic_sync(sync_req("g", &follower.member_id, 1, vec![]));
        assert!(pending(&mut fsync).await);
        assert_eq!(
            groups.classic_heartbeat("g", &follower.member_id, 1, None),
            0
        );
        assert_eq!(
            groups
                .begin_classic_commit("g", &follower.member_id, 1, None, &[])
                .unwrap_err(),
            kafka::REBALANCE_IN_PROGRESS
        );
        let lsync = groups
            .classic_sync(sync_req(
                "g",
                &leader.member_id,
                1,
                vec![
                    (leader.member_id.clone(), assignment("t", &[0])),
                    (follower.member_id.clone(), assignment("t", &[1])),
                ],
            ))
            .await;
        assert_eq!(lsync.error, 0);
        assert_eq!(lsync.assignment, assignment("t", &[0]));
        let f = fsync.await;
        assert_eq!((f.error, f.assignment), (0, assignment("t", &[1])));
        assert_eq!(f.protocol_type.as_deref(), Some("consumer"));

        // Commits: fenced by generation and member.
        let tp = TopicPartition::new("t", 1);
        let commit = [OffsetCommit::new(tp.clone(), 7)];
        assert_eq!(
            groups
                .begin_classic_commit("g", &follower.member_id, 0, None, &commit)
                .unwrap_err(),
            kafka::ILLEGAL_GENERATION
        );
        assert_eq!(
            groups
                .begin_classic_commit("g", "", -1, None, &commit)
                .unwrap_err(),
            kafka::UNKNOWN_MEMBER_ID
        );
        let ticket = groups
            .begin_classic_commit("g", &follower.member_id, 1, None, &commit)
            .unwrap();
        groups.finish_commit(ticket).unwrap();
        assert_eq!(groups.committed("g")[&tp].offset, 7);

        // The native describe shows the Kafka group with decoded partitions and lag.
        let info = groups.describe("g").unwrap();
        assert_eq!(info.description.state, GroupState::Stable);
        assert_eq!(info.description.members.len(), 2);
        assert!(info
            .description
            .members
            .iter()
            .all(|m| m.topics == vec!["t".to_string()]));
        let owned: Vec<_> = info
            .description
            .members
            .iter()
            .flat_map(|m| m.assignment.clone())
            .collect();
        assert_eq!(owned.len(), 2);
        assert_eq!(info.partitions.len(), 2);
        assert!(info.partitions.iter().any(|p| p.committed == Some(7)));
        let listed = groups.list_groups();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].members, 2);
        assert_eq!(
            groups.classic_groups(),
            vec![(
                "g".to_string(),
                "consumer".to_string(),
                "Stable".to_string()
            )]
        );
        let d = groups.classic_describe("g").unwrap();
        assert_eq!(
            (d.state.as_str(), d.protocol_name.as_str()),
            ("Stable", "range")
        );
        assert_eq!(d.members.len(), 2);
        assert!(d.members.iter().all(|m| !m.assignment.is_empty()));
        assert!(groups.classic_describe("nope").is_none());

        // A third member: a rebalance; heartbeats answer REBALANCE_IN_PROGRESS.
        let mut third = groups.classic_join(join_req("g", ""));
        assert!(pending(&mut third).await);
        for m in [&leader.member_id, &follower.member_id] {
            assert_eq!(
                groups.classic_heartbeat("g", m, 1, None),
                kafka::REBALANCE_IN_PROGRESS
            );
        }
        assert_eq!(
            groups.describe("g").unwrap().description.state,
            GroupState::PreparingRebalance
        );
        let (a, b) = tokio::join!(
            groups.classic_join(join_req("g", &leader.member_id)),
            groups.classic_join(join_req("g", &follower.member_id))
        );
        let c = third.await;
        assert_eq!(
            (a.generation_id, b.generation_id, c.generation_id),
            (2, 2, 2)
        );
        assert_eq!(a.members.len(), 3);

        // The members leave: the group empties and can be deleted.
        let (top, per) = groups.classic_leave(
            "g",
            &[
                (a.member_id.clone(), None),
                (b.member_id.clone(), None),
                (c.member_id.clone(), None),
                ("ghost".into(), None),
            ],
        );
        assert_eq!(top, 0);
        assert_eq!(per, vec![0, 0, 0, kafka::UNKNOWN_MEMBER_ID]);
        assert_eq!(groups.classic_groups()[0].2, "Empty");
        assert_eq!(groups.delete_group("g").unwrap(), 1);
        assert!(groups.classic_groups().is_empty());
        assert!(groups.describe("g").is_err());

        stop.cancel();
        timer.await.unwrap();
    }

    /// A member that stops heartbeating is expired by the timer, which
    /// rebalances the group: the remaining member's rejoin completes alone.
    #[tokio::test(start_paused = true)]
    async fn the_timer_expires_silent_members() {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, groups) = open(dir.path(), 0);
        let stop = CancellationToken::new();
        let timer = tokio::spawn(Arc::clone(&groups).run_timer(stop.clone()));
        let (a, b) = tokio::join!(
            groups.classic_join(join_req("g", "")),
            groups.classic_join(join_req("g", ""))
        );
        assert_eq!((a.generation_id, b.generation_id), (1, 1));
        let (leader, follower) = if a.leader == a.member_id {
            (a, b)
        } else {
            (b, a)
        };
        let (l, f) = tokio::join!(
            groups.classic_sync(sync_req("g", &leader.member_id, 1, vec![])),
            groups.classic_sync(sync_req("g", &follower.member_id, 1, vec![]))
        );
        assert_eq!((l.error, f.error), (0, 0));
        // Only the leader heartbeats.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = groups.classic_heartbeat("g", &leader.member_id, 1, None);
        }
        assert_eq!(
            groups.classic_heartbeat("g", &follower.member_id, 1, None),
            kafka::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            groups.classic_heartbeat("g", &leader.member_id, 1, None),
            kafka::REBALANCE_IN_PROGRESS
        );
        let again = groups.classic_join(join_req("g", &leader.member_id)).await;
        assert_eq!((again.generation_id, again.members.len()), (2, 1));
        stop.cancel();
        timer.await.unwrap();
    }

    /// Native and classic members never share a group.
    #[tokio::test]
    async fn the_two_protocols_share_the_group_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path(), 0);
        broker.create_topic("t", 1, &[]).unwrap();
        let native = groups
            .join(
                "n",
                JoinRequest {
                    client_id: "native".into(),
                    topics: vec!["t".into()],
                    session_timeout_ms: Some(30_000),
                    ..JoinRequest::default()
                },
            )
            .unwrap();
        let r = groups.classic_join(join_req("n", "")).await;
        assert_eq!(r.error, kafka::INCONSISTENT_GROUP_PROTOCOL);
        // A standalone Kafka commit is refused while native members hold the group.
        assert_eq!(
            groups
                .begin_classic_commit("n", "", -1, None, &[])
                .unwrap_err(),
            kafka::UNKNOWN_MEMBER_ID
        );
        groups.leave("n", &native.member_id).unwrap();
        // Now a Kafka member may take the group (its join phase is parked:
        // the timer is not running here, so drive it by hand).
        let mut k = groups.classic_join(join_req("n", ""));
        assert!(pending(&mut k).await);
        groups.tick();
        let k = k.await;
        assert_eq!(k.error, 0);
        let e = groups
            .join(
                "n",
                JoinRequest {
                    client_id: "native".into(),
                    topics: vec!["t".into()],
                    session_timeout_ms: Some(30_000),
                    ..JoinRequest::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::NonEmptyGroup);
        // A native standalone commit is refused too, and the group cannot be deleted.
        let e = groups.begin_commit("n", "", 0, &[]).unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::UnknownMemberId);
        let e = groups.delete_group("n").unwrap_err();
        assert_eq!(e.code(), sluice_protocol::ErrorCode::NonEmptyGroup);
    }

    /// Stopping the timer (broker shutdown) answers parked joins and syncs
    /// NOT_COORDINATOR; later requests get COORDINATOR_NOT_AVAILABLE.
    #[tokio::test(start_paused = true)]
    async fn shutdown_answers_parked_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, groups) = open(dir.path(), 60_000);
        let stop = CancellationToken::new();
        let timer = tokio::spawn(Arc::clone(&groups).run_timer(stop.clone()));
        let mut parked = groups.classic_join(join_req("g", ""));
        assert!(pending(&mut parked).await);
        stop.cancel();
        timer.await.unwrap();
        let r = parked.await;
        assert_eq!(r.error, kafka::NOT_COORDINATOR);
        assert!(!r.member_id.is_empty(), "answered with the member's id");
        let late = groups.classic_join(join_req("g", "")).await;
        assert_eq!(late.error, kafka::COORDINATOR_NOT_AVAILABLE);
        let s = groups.classic_sync(sync_req("g", "m", 1, vec![])).await;
        assert_eq!(s.error, kafka::COORDINATOR_NOT_AVAILABLE);
        assert_eq!(
            groups.classic_heartbeat("g", "m", 1, None),
            kafka::COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(
            groups.classic_leave("g", &[]).0,
            kafka::COORDINATOR_NOT_AVAILABLE
        );
        assert!(groups.lock().classic_waiters.is_empty());
    }

    /// MEMBER_ID_REQUIRED answers at once with the id to rejoin with.
    #[tokio::test]
    async fn member_id_required_answers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, groups) = open(dir.path(), 0);
        let mut r = join_req("g", "");
        r.require_known_member_id = true;
        let first = groups.classic_join(r.clone()).await;
        assert_eq!(first.error, kafka::MEMBER_ID_REQUIRED);
        assert!(first.member_id.starts_with("kafka-client-"));
        r.member_id = first.member_id.clone();
        let mut second = groups.classic_join(r);
        assert!(pending(&mut second).await);
        groups.tick();
        let second = second.await;
        assert_eq!((second.error, second.member_id), (0, first.member_id));
    }
}
