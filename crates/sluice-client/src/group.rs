//! Consumer-group membership: join, long-poll heartbeats, assignment changes.
//!
//! A subscribed [`Consumer`](crate::Consumer) owns one [`Membership`]: shared
//! state plus a background heartbeat task. The split of work follows
//! `protocol.md` ("Consumer groups", "The flow"):
//!
//! - The **heartbeat task** joins (and rejoins), keeps at most one heartbeat
//!   in flight, long-polls with `max_wait_ms` = a third of the session
//!   timeout, and turns each response into the member's [`View`]:
//!   `assigned` (consume these) and `revoking` (give these up). Its `owned`
//!   report is `(assigned ∪ revoking) \ released`, so a partition granted in
//!   a response counts as owned at once (leaving it out would give it back).
//! - The **consumer** (inside `next()`, `commit()` and `close()`, i.e. when
//!   the application is not holding records it has not processed) applies
//!   the view: it stops fetching revoked partitions, commits what it handed
//!   out of them, then marks them `released` and wakes the task, whose next
//!   heartbeat leaves them out: that confirms the revocation.
//! - Errors: `UNKNOWN_MEMBER_ID` stops everything and rejoins with an empty
//!   member id; `ILLEGAL_GENERATION` stops everything and heartbeats again
//!   with an empty report; no successful heartbeat for a whole session
//!   timeout stops everything on the member's own initiative (the broker may
//!   already have given the partitions away). "Stop everything" empties the
//!   view; the consumer drops those partitions (and their buffered records)
//!   before it hands out another record, without committing (it no longer
//!   owns them).
//!
//! Every group request goes to the group's coordinator (found with
//! FindCoordinator, looked up again on `NOT_COORDINATOR`; see
//! [`Cluster::group_request`]).
//!
//! The session clock is conservative: it runs from the moment the last
//! successful heartbeat was *sent*, which is never later than the moment the
//! broker saw it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::{
    ErrorCode, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, Request, Response, TopicPartitions,
};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::unexpected;
use crate::cluster::Cluster;
use crate::error::{ClientError, Result};

/// A `(topic, partition)` pair.
pub(crate) type Tp = (String, u32);

/// Where a group consumer starts a partition that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record still stored (the default).
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// Timing of one membership.
#[derive(Debug, Clone)]
pub(crate) struct GroupSettings {
    /// The group to join.
    pub group_id: String,
    /// Topics subscribed to.
    pub topics: Vec<String>,
    /// How long the broker keeps the member without a heartbeat.
    pub session_timeout: Duration,
    /// Wait before retrying a failed join or heartbeat.
    pub retry_backoff: Duration,
}

impl GroupSettings {
    /// How long the broker may park a heartbeat: a third of the session.
    pub fn max_wait(&self) -> Duration {
        self.session_timeout / 3
    }
}

/// What the member may consume, as the heartbeat task last learned it.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// Empty while not a member (before the first join, after UNKNOWN_MEMBER_ID).
    pub member_id: String,
    /// The group generation the assignment belongs to.
    pub generation: u32,
    /// Partitions to consume.
    pub assigned: BTreeSet<Tp>,
    /// Partitions still owned but to give up (stop, commit, release).
    pub revoking: BTreeSet<Tp>,
    /// Partitions the consumer let go of that no heartbeat has reported yet.
    pub released: BTreeSet<Tp>,
    /// Set when consuming had to stop (session lost, fenced); taken by the consumer to report once.
    pub error: Option<ClientError>,
    /// Bumped whenever the member lost everything (fenced, removed, session
    /// lost): positions from before are void even if the same partitions
    /// come back, since another member may have consumed them meanwhile.
    pub epoch: u64,
}

impl View {
    /// The `owned` report: what the member still consumes or has yet to give up.
    pub fn owned(&self) -> BTreeSet<Tp> {
        self.assigned
            .union(&self.revoking)
            .filter(|tp| !self.released.contains(*tp))
            .cloned()
            .collect()
    }

    /// Forgets every partition (the member no longer owns any).
    fn stop_all(&mut self) -> bool {
        self.epoch += 1;
        let had = !self.assigned.is_empty() || !self.revoking.is_empty();
        self.assigned.clear();
        self.revoking.clear();
        self.released.clear();
        had
    }

    /// Applies a heartbeat answer to a request whose report left out `reported_released`.
    fn apply(
        &mut self,
        generation: u32,
        assignment: &[TopicPartitions],
        revoke: &[TopicPartitions],
        reported_released: &BTreeSet<Tp>,
    ) -> bool {
        for tp in reported_released {
            self.released.remove(tp);
        }
        let assigned: BTreeSet<Tp> = pairs(assignment)
            .filter(|tp| !self.released.contains(tp))
            .collect();
        let revoking: BTreeSet<Tp> = pairs(revoke)
            .filter(|tp| !self.released.contains(tp))
            .collect();
        let changed = assigned != self.assigned || revoking != self.revoking;
        self.generation = generation;
        self.assigned = assigned;
        self.revoking = revoking;
        changed
    }
}

fn pairs(list: &[TopicPartitions]) -> impl Iterator<Item = Tp> + '_ {
    TopicPartitions::pairs(list).map(|(t, p)| (t.to_string(), p))
}

/// State shared by the consumer and its heartbeat task.
pub(crate) struct Shared {
    view: Mutex<View>,
    /// Bumped whenever the view changes in a way the consumer must act on.
    changed: watch::Sender<u64>,
    /// Wakes the heartbeat task (the consumer released partitions).
    wake: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A consumer's membership in one group.
pub(crate) struct Membership {
    /// What was joined, with what timing.
    pub settings: GroupSettings,
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    changes: watch::Receiver<u64>,
    /// Set when [`Membership::changed`] returned: `watch` marks the change seen
    /// then, but the consumer has not applied it yet.
    woken: bool,
    task: Option<JoinHandle<()>>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Membership {
    /// Joins the group (one JoinGroup round trip) and starts heartbeating.
    pub async fn join(cluster: Arc<Cluster>, settings: GroupSettings) -> Result<Membership> {
        let (changed, changes) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            view: Mutex::new(View::default()),
            changed,
            wake: Notify::new(),
        });
        let sent = Instant::now();
        let response = join_group(&cluster, &settings, "").await?;
        check_join(&settings, &response)?;
        apply_join(&shared, response);
        let task = tokio::spawn(heartbeat_loop(
            shared.clone(),
            cluster.clone(),
            settings.clone(),
            sent,
        ));
        Ok(Membership {
            settings,
            shared,
            cluster,
            changes,
            woken: false,
            task: Some(task),
        })
    }

    /// A copy of the current view.
    pub fn view(&self) -> View {
        lock(&self.shared.view).clone()
    }

    /// Whether the view changed since [`Membership::mark_seen`] was last called.
    pub fn has_changed(&self) -> bool {
        self.woken || self.changes.has_changed().unwrap_or(false)
    }

    /// Marks the current view as seen.
    pub fn mark_seen(&mut self) {
        self.woken = false;
        self.changes.borrow_and_update();
    }

    /// Waits until the view changes (forever if the heartbeat task is gone).
    /// Cancel-safe; the change stays unseen until [`Membership::mark_seen`].
    pub async fn changed(&mut self) {
        if self.woken {
            return;
        }
        if self.changes.changed().await.is_err() {
            futures::future::pending::<()>().await;
        }
        self.woken = true;
    }

    /// Whether the heartbeat task left an error for the application.
    pub fn has_error(&self) -> bool {
        lock(&self.shared.view).error.is_some()
    }

    /// Takes the error the heartbeat task wants the application to see.
    pub fn take_error(&self) -> Option<ClientError> {
        lock(&self.shared.view).error.take()
    }

    /// Member id and generation for commits (`None` while not a member).
    pub fn committer(&self) -> Option<(String, u32)> {
        let v = lock(&self.shared.view);
        (!v.member_id.is_empty()).then(|| (v.member_id.clone(), v.generation))
    }

    /// Whether the member still owns `tp` (assigned or being revoked, not released).
    pub fn owns(&self, tp: &Tp) -> bool {
        let v = lock(&self.shared.view);
        (v.assigned.contains(tp) || v.revoking.contains(tp)) && !v.released.contains(tp)
    }

    /// Records that the consumer stopped consuming `released` and committed them;
    /// the next heartbeat (sent at once) confirms the revocation.
    pub fn release(&self, released: impl IntoIterator<Item = Tp>) {
        let mut any = false;
        {
            let mut v = lock(&self.shared.view);
            for tp in released {
                if v.assigned.contains(&tp) || v.revoking.contains(&tp) {
                    v.revoking.remove(&tp);
                    v.assigned.remove(&tp);
                    v.released.insert(tp);
                    any = true;
                }
            }
        }
        if any {
            self.shared.wake.notify_one();
        }
    }

    /// A commit or fetch learned that the member was fenced: stop everything
    /// and let the heartbeat task find out the rest.
    pub fn fenced(&self) {
        let had = lock(&self.shared.view).stop_all();
        if had {
            self.shared.bump();
        }
        self.shared.wake.notify_one();
    }

    /// Stops heartbeating and leaves the group (partitions move to the others at once).
    pub async fn leave(&mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            // The task must be gone before the leave: a heartbeat after it would
            // get UNKNOWN_MEMBER_ID and rejoin.
            task.abort();
            let _ = task.await;
        }
        let member_id = {
            let mut v = lock(&self.shared.view);
            v.stop_all();
            std::mem::take(&mut v.member_id)
        };
        self.shared.bump();
        if member_id.is_empty() {
            return Ok(());
        }
        let request = Request::LeaveGroup(LeaveGroupRequest {
            group_id: self.settings.group_id.clone(),
            member_id,
        });
        let group = &self.settings.group_id;
        let timeout = self.cluster.config().request_timeout;
        let response = match self.cluster.group_request(group, &request, timeout).await? {
            Response::LeaveGroup(r) => r,
            other => return Err(unexpected("LeaveGroup", other)),
        };
        match response.error {
            // Already removed (session timeout, broker restart): nothing to leave.
            ErrorCode::None | ErrorCode::UnknownMemberId => Ok(()),
            code => Err(ClientError::broker(
                code,
                format!("leave group \"{}\"", self.settings.group_id),
            )),
        }
    }
}

async fn join_group(
    cluster: &Cluster,
    settings: &GroupSettings,
    member_id: &str,
) -> Result<JoinGroupResponse> {
    let request = Request::JoinGroup(JoinGroupRequest {
        group_id: settings.group_id.clone(),
        member_id: member_id.to_string(),
        topics: settings.topics.clone(),
        session_timeout_ms: millis(settings.session_timeout),
        rebalance_timeout_ms: 0,
        metadata: Bytes::new(),
    });
    let timeout = cluster.config().request_timeout;
    match cluster
        .group_request(&settings.group_id, &request, timeout)
        .await?
    {
        Response::JoinGroup(r) => Ok(r),
        other => Err(unexpected("JoinGroup", other)),
    }
}

fn check_join(settings: &GroupSettings, r: &JoinGroupResponse) -> Result<()> {
    if r.error == ErrorCode::None {
        return Ok(());
    }
    Err(ClientError::broker(
        r.error,
        format!("join group \"{}\"", settings.group_id),
    ))
}

fn apply_join(shared: &Shared, r: JoinGroupResponse) {
    {
        let mut v = lock(&shared.view);
        v.member_id = r.member_id;
        v.released.clear();
        v.apply(r.generation, &r.assignment, &r.revoke, &BTreeSet::new());
    }
    shared.bump();
}

pub(crate) fn millis(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

/// What to do after one heartbeat exchange.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Heartbeat again at this time (or earlier when woken).
    At(Instant),
    /// Join again with an empty member id.
    Rejoin,
}

/// Applies one heartbeat response to the view; returns what to do next and
/// whether the heartbeat counts as successful (refreshes the session).
pub(crate) fn on_heartbeat(
    view: &mut View,
    r: &HeartbeatResponse,
    reported_released: &BTreeSet<Tp>,
    sent: Instant,
    now: Instant,
    max_wait: Duration,
    retry_backoff: Duration,
) -> (Next, bool, bool) {
    match r.error {
        ErrorCode::None => {
            let changed = view.apply(r.generation, &r.assignment, &r.revoke, reported_released);
            let interval = Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(1)));
            // Nothing to give up: park the next heartbeat at once, so the next
            // change reaches this member in a round trip, not an interval. Only
            // after a grant or a full park, though: a broker that answers at
            // once with nothing new is heartbeated at its interval, not in a loop.
            let parked = now.saturating_duration_since(sent) >= max_wait / 2;
            let next = if view.revoking.is_empty() && (changed || parked) {
                now
            } else {
                (sent + interval).max(now)
            };
            (Next::At(next), true, changed)
        }
        ErrorCode::UnknownMemberId => {
            let changed = view.stop_all();
            view.member_id.clear();
            (Next::Rejoin, false, changed)
        }
        ErrorCode::IllegalGeneration => {
            // Stale view: stop everything; the next report is empty.
            let changed = view.stop_all();
            (Next::At(now), false, changed)
        }
        _ => (Next::At(now + retry_backoff), false, false),
    }
}

async fn heartbeat_loop(
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    settings: GroupSettings,
    joined_at: Instant,
) {
    let request_timeout = cluster.config().request_timeout;
    // Sent time of the last heartbeat (or join) that succeeded.
    let mut last_ok = joined_at;
    let mut next_at = Instant::now();
    let mut lost = false;
    loop {
        let member_id = lock(&shared.view).member_id.clone();
        if member_id.is_empty() {
            let sent = Instant::now();
            let outcome =
                tokio::time::timeout(request_timeout, join_group(&cluster, &settings, "")).await;
            match outcome {
                Ok(Ok(r)) if r.error == ErrorCode::None => {
                    tracing::debug!(group = %settings.group_id, member = %r.member_id, generation = r.generation, "joined");
                    apply_join(&shared, r);
                    last_ok = sent;
                    lost = false;
                    next_at = Instant::now();
                }
                Ok(Ok(r)) => {
                    tracing::warn!(group = %settings.group_id, error = %r.error, "join failed");
                    if !r.error.is_retriable() {
                        let mut v = lock(&shared.view);
                        v.error = Some(ClientError::broker(
                            r.error,
                            format!("join group \"{}\"", settings.group_id),
                        ));
                        drop(v);
                        shared.bump();
                    }
                    tokio::time::sleep(settings.retry_backoff.max(Duration::from_millis(100)))
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(group = %settings.group_id, error = %e, "join failed, retrying");
                    tokio::time::sleep(settings.retry_backoff).await;
                }
                Err(_) => {}
            }
            continue;
        }
        // Wait for the heartbeat time, or for the consumer to release something.
        tokio::select! {
            _ = tokio::time::sleep_until(next_at) => {}
            _ = shared.wake.notified() => {}
        }
        let (request, reported_released) = {
            let v = lock(&shared.view);
            let owned = TopicPartitions::from_pairs(v.owned());
            (
                Request::Heartbeat(HeartbeatRequest {
                    group_id: settings.group_id.clone(),
                    member_id: v.member_id.clone(),
                    generation: v.generation,
                    owned,
                    max_wait_ms: millis(settings.max_wait()),
                }),
                v.released.clone(),
            )
        };
        tracing::trace!(group = %settings.group_id, ?request, "heartbeat");
        let sent = Instant::now();
        let session_end = last_ok + settings.session_timeout;
        let outcome = tokio::select! {
            r = cluster.group_request(&settings.group_id, &request, settings.max_wait() + request_timeout) => Some(r),
            _ = tokio::time::sleep_until(session_end), if !lost => None,
        };
        let now = Instant::now();
        let result = match outcome {
            Some(Ok(Response::Heartbeat(r))) => Ok(r),
            Some(Ok(other)) => Err(unexpected("Heartbeat", other)),
            Some(Err(e)) => Err(e),
            None => Err(ClientError::Timeout {
                what: format!("heartbeat to group \"{}\"", settings.group_id),
                after: settings.session_timeout,
            }),
        };
        match result {
            Ok(r) => {
                tracing::trace!(group = %settings.group_id, error = %r.error, generation = r.generation, assignment = ?r.assignment, revoke = ?r.revoke, waited_ms = (now - sent).as_millis() as u64, "heartbeat answered");
                let (next, ok, changed) = {
                    let mut v = lock(&shared.view);
                    on_heartbeat(
                        &mut v,
                        &r,
                        &reported_released,
                        sent,
                        now,
                        settings.max_wait(),
                        settings.retry_backoff,
                    )
                };
                if ok {
                    last_ok = sent;
                    lost = false;
                } else if r.error != ErrorCode::None {
                    tracing::debug!(group = %settings.group_id, error = %r.error, "heartbeat error");
                }
                if changed {
                    shared.bump();
                }
                match next {
                    Next::At(t) => next_at = t,
                    Next::Rejoin => next_at = now,
                }
            }
            Err(e) => {
                tracing::debug!(group = %settings.group_id, error = %e, "heartbeat failed");
                next_at = now + settings.retry_backoff;
            }
        }
        if !lost && Instant::now() >= last_ok + settings.session_timeout {
            // No heartbeat succeeded for a whole session: the broker may have
            // given our partitions away. Stop consuming them; keep trying.
            lost = true;
            let changed = {
                let mut v = lock(&shared.view);
                let changed = v.stop_all();
                v.error = Some(ClientError::Timeout {
                    what: format!(
                        "heartbeats to group \"{}\" (consuming stopped until the group answers again)",
                        settings.group_id
                    ),
                    after: settings.session_timeout,
                });
                changed
            };
            tracing::warn!(group = %settings.group_id, "session lost: stopped consuming");
            let _ = changed;
            shared.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MW: Duration = Duration::from_secs(2);

    fn tp(t: &str, p: u32) -> Tp {
        (t.to_string(), p)
    }

    fn hb(
        error: ErrorCode,
        generation: u32,
        assignment: &[(&str, u32)],
        revoke: &[(&str, u32)],
    ) -> HeartbeatResponse {
        HeartbeatResponse {
            error,
            generation,
            heartbeat_interval_ms: 50,
            assignment: TopicPartitions::from_pairs(assignment.iter().copied()),
            revoke: TopicPartitions::from_pairs(revoke.iter().copied()),
        }
    }

    /// [`on_heartbeat`] for an answer that arrived as soon as it was sent.
    fn beat(
        v: &mut View,
        r: &HeartbeatResponse,
        reported: &BTreeSet<Tp>,
        now: Instant,
    ) -> (Next, bool, bool) {
        on_heartbeat(v, r, reported, now, now, MW, Duration::ZERO)
    }

    #[test]
    fn owned_report_keeps_grants_and_leaves_out_released() {
        let mut v = View {
            member_id: "m".into(),
            ..View::default()
        };
        let now = Instant::now();
        let none = BTreeSet::new();
        let (_, ok, changed) = beat(
            &mut v,
            &hb(ErrorCode::None, 2, &[("t", 0), ("t", 1)], &[("t", 2)]),
            &none,
            now,
        );
        assert!(ok && changed);
        // A grant counts as owned right away; the revoked partition until released.
        assert_eq!(
            v.owned(),
            [tp("t", 0), tp("t", 1), tp("t", 2)].into_iter().collect()
        );
        // The consumer releases t/2 while a heartbeat (that still listed it) is in flight.
        v.revoking.remove(&tp("t", 2));
        v.released.insert(tp("t", 2));
        assert_eq!(v.owned(), [tp("t", 0), tp("t", 1)].into_iter().collect());
        // That in-flight heartbeat's answer still lists t/2 in revoke: ignored.
        let (_, _, changed) = beat(
            &mut v,
            &hb(ErrorCode::None, 2, &[("t", 0), ("t", 1)], &[("t", 2)]),
            &none,
            now,
        );
        assert!(!changed);
        assert!(v.revoking.is_empty());
        assert!(v.released.contains(&tp("t", 2)));
        // The next heartbeat reported the release; now t/2 may come back as a fresh grant.
        let reported: BTreeSet<Tp> = [tp("t", 2)].into_iter().collect();
        let (_, _, changed) = beat(
            &mut v,
            &hb(ErrorCode::None, 3, &[("t", 0), ("t", 1), ("t", 2)], &[]),
            &reported,
            now,
        );
        assert!(changed);
        assert!(v.released.is_empty());
        assert_eq!(v.assigned.len(), 3);
        assert_eq!(v.generation, 3);
    }

    #[test]
    fn fencing_errors_stop_everything() {
        let now = Instant::now();
        let none = BTreeSet::new();
        let mut v = View {
            member_id: "m".into(),
            assigned: [tp("t", 0)].into_iter().collect(),
            revoking: [tp("t", 1)].into_iter().collect(),
            ..View::default()
        };
        let (next, ok, changed) = beat(
            &mut v,
            &hb(ErrorCode::IllegalGeneration, 0, &[], &[]),
            &none,
            now,
        );
        assert_eq!(next, Next::At(now));
        assert!(!ok && changed);
        assert!(v.owned().is_empty());
        assert_eq!(v.member_id, "m");

        v.assigned.insert(tp("t", 0));
        let (next, _, changed) = beat(
            &mut v,
            &hb(ErrorCode::UnknownMemberId, 0, &[], &[]),
            &none,
            now,
        );
        assert_eq!(next, Next::Rejoin);
        assert!(changed);
        assert!(v.member_id.is_empty() && v.owned().is_empty());
    }

    #[test]
    fn heartbeats_stay_parked_unless_something_must_be_given_up() {
        let mut v = View {
            member_id: "m".into(),
            ..View::default()
        };
        let none = BTreeSet::new();
        let sent = Instant::now();
        let at_once = |v: &mut View, r: &HeartbeatResponse, now: Instant| {
            on_heartbeat(v, r, &none, sent, now, MW, Duration::ZERO).0
        };
        // Answered at once with nothing new: wait the interval (no busy loop).
        let next = at_once(&mut v, &hb(ErrorCode::None, 1, &[], &[]), sent);
        assert_eq!(next, Next::At(sent + Duration::from_millis(50)));
        // A grant: report it in a new (parked) heartbeat right away.
        let next = at_once(&mut v, &hb(ErrorCode::None, 2, &[("t", 0)], &[]), sent);
        assert_eq!(next, Next::At(sent));
        // A revocation: wait for the consumer's release (or the short interval).
        let next = at_once(&mut v, &hb(ErrorCode::None, 3, &[], &[("t", 0)]), sent);
        assert_eq!(next, Next::At(sent + Duration::from_millis(50)));
        // A full park with nothing new: park again at once.
        let later = sent + MW;
        let next = at_once(&mut v, &hb(ErrorCode::None, 3, &[], &[("t", 0)]), later);
        assert_eq!(
            next,
            Next::At(later),
            "revoking still: interval already over"
        );
        let next = at_once(&mut v, &hb(ErrorCode::None, 4, &[], &[]), later);
        assert_eq!(next, Next::At(later));
    }
}
