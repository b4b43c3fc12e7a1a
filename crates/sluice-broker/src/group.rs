//! Consumer groups in the broker: the [`Groups`] handle.
//!
//! [`Groups`] is a separate handle beside [`Broker`] (no god object): it owns
//! the protocol-neutral [`Coordinator`] behind its own mutex, the durable
//! [`OffsetStore`] (`<data>/__consumer_offsets/0`, flush `always`), the
//! registry of parked heartbeats, and the timer that expires members. It
//! reads topics only through the [`Broker`] (partition counts for the
//! [`TopicCatalog`], end offsets and record timestamps for lag). The native
//! handlers in [`crate::handler`] are thin: decode, call a method here, encode.
//!
//! # Time
//!
//! The coordinator runs on a monotonic millisecond clock: tokio's `Instant`
//! minus the instant [`Groups`] was opened (so tests can pause it). Commit
//! timestamps, lag in ms and offsets retention use the wall clock, a
//! [`WallClock`] (record timestamps are wall clock too; tests inject a fake).
//!
//! # Expiry timer
//!
//! [`Groups::run_timer`] sleeps until [`Coordinator::next_deadline_ms`] and
//! then calls [`Coordinator::tick`]; there is no fixed polling loop. Every
//! mutation checks, under the coordinator lock, whether the next deadline
//! moved earlier than the one the timer sleeps towards, and if so wakes it
//! (a `Notify` permit, so a wake-up between computing and sleeping is not
//! lost). Heartbeats only push deadlines later, which costs the timer at most
//! one spurious wake-up per deadline.
//!
//! # Parked heartbeats (long-poll)
//!
//! A heartbeat with `max_wait > 0` whose answer brings nothing new (no
//! revocation, and the assignment equals what the member reported owning) is
//! parked: it registers a `Notify` under the coordinator lock, and answers
//! when [`Coordinator::take_notifications`] names the member after some other
//! mutation (a revocation to perform, a partition granted), when the member
//! leaves or expires, at shutdown, or at `max_wait`, capped at a third of
//! the member's session timeout. When it wakes it calls
//! [`Coordinator::heartbeat`] again with no `owned` report for the fresh view,
//! which also counts as a heartbeat, so a parked member never expires. The
//! `owned` report is applied when the request arrives, never later.
//!
//! # Commits
//!
//! A commit is fenced and queued under the coordinator lock
//! ([`sluice_group::begin_fenced_commit`]: memory only, no I/O, so a
//! runtime worker never touches the disk for it); the append to
//! `__consumer_offsets` (which may roll a segment and fsync) and the fsync
//! wait ([`Groups::finish_commit`], blocking, on the blocking pool) run
//! after the lock is released, in queue order, and the commit is
//! acknowledged only once it returns. A slow or failed fsync therefore never
//! holds the coordinator lock: heartbeats and commits of other groups go on. A commit with an empty
//! member id is a standalone (admin or `assign`-mode) commit and is accepted
//! only while the group has no members (otherwise `UNKNOWN_MEMBER_ID`); the
//! CLI's `group seek` is such a commit. Partitions that do not exist are
//! answered `UNKNOWN_TOPIC_OR_PARTITION` and not committed.
//!
//! # Group delete
//!
//! [`Groups::delete_group`] runs [`sluice_group::begin_delete_group`] under
//! the coordinator lock (emptiness check, tombstones queued, coordinator
//! state forgotten), so no member can join in between; a member joining
//! afterwards commits after the tombstones. The fsync wait runs after the
//! lock is released (blocking: call it off the async runtime).
//!
//! # Offsets retention
//!
//! [`Groups::expire_offsets`] (the broker's one-second group tick, on the
//! blocking pool) appends what dropped tickets left queued and, at most every
//! [`RETENTION_CHECK_INTERVAL_MS`], deletes the committed offsets that have
//! outlived `offsets_retention_minutes` (default 7 days) with tombstones:
//! retention counts from the later of the commit and the group becoming
//! empty (a group with members keeps its offsets), and never from before the
//! broker started (see [`sluice_group::offsets`]). The group then leaves
//! ListGroups and DescribeGroups, also after a restart. The wall clock is a
//! [`WallClock`] (tests inject a fake one, [`GroupsOptions::clock`]).
//!
//! # Metrics
//!
//! [`Groups::refresh_metrics`] exports per-group series for at most
//! [`GroupsOptions::max_metric_groups`] groups (groups with members first,
//! then those already exported, then by name) and at most
//! [`GroupsOptions::max_metric_partitions`] group-partition lag series; the
//! rest are counted in `sluice_group_metrics_omitted` and logged once when
//! the cap is first reached. Series of groups and partitions that are gone
//! (deleted, expired, deleted topics, or no longer selected) are removed.
//!
//! # The internal topic
//!
//! `__consumer_offsets` is not in the topic registry: Metadata does not list
//! it, and clients can neither create, produce to, fetch from nor delete it
//! (names starting with `__` are reserved; the registry does not know it).
//!
//! # Kafka classic groups
//!
//! The Kafka-wire front end's JoinGroup/SyncGroup/Heartbeat/LeaveGroup run
//! on a [`sluice_group::ClassicCoordinator`] kept in the same [`State`] (so
//! under the same lock) as the native coordinator; its async surface is in
//! [`crate::classic`]. The two share the group namespace (a group with
//! members of one protocol refuses joins of the other: the native join gets
//! `NON_EMPTY_GROUP`), the offset store, ListGroups/DescribeGroups/delete,
//! offsets retention and the expiry timer.
//!
//! Lock order: coordinator state, then the topic registry's map (through the
//! catalog). Nothing takes them the other way round.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_group::{
    begin_fenced_commit, lag, timestamp_at, ClassicConfig, ClassicCoordinator, CommitTicket,
    CommittedOffset, Committer, Coordinator, CoordinatorConfig, ExpiryNow, GroupDescription,
    GroupError, GroupListing, GroupState, JoinRequest, MemberView, Occupancy, OffsetCommit,
    OffsetRetention, OffsetStore, TopicCatalog, TopicPartition,
};
use sluice_log::{FileIo, LogConfig, OsFileIo};
use sluice_protocol::TopicPartitions;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::classic::{
    ClassicGroupDescription, ClassicJoinMember, ClassicJoinRequest, ClassicJoinResponse,
    ClassicMemberDescription, ClassicSyncRequest, ClassicSyncResponse,
};

use crate::broker::Broker;
use crate::classic::{classic_as_native, ClassicWaiter};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::topics::{serving, PartitionMissing, Topic, TopicRegistry};

/// A topic resolved for the partitions of one OffsetCommit ([`Groups::commit_target`]).
pub struct CommitTarget(Option<Arc<Topic>>);

impl CommitTarget {
    /// Whether an offset may be committed for `partition`: the partition
    /// must be served. Any offset is kept as sent, as Kafka does (consumers
    /// read only below the high watermark, so what they commit is at most it).
    /// A partition that is skipped says why (the others are still committed).
    pub fn check(&self, partition: u32) -> Result<(), PartitionMissing> {
        serving(self.0.as_deref(), partition).map(|_| ())
    }
}

/// Name of the internal offsets topic (its directory under the data dir).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often at most [`Groups::expire_offsets`] looks for expired offsets
/// (wall clock; Kafka's `offsets.retention.check.interval.ms` is 10 min).
pub const RETENTION_CHECK_INTERVAL_MS: i64 = 60_000;
/// Default [`GroupsOptions::max_metric_groups`].
pub const DEFAULT_MAX_METRIC_GROUPS: usize = 1_000;
/// Default [`GroupsOptions::max_metric_partitions`].
pub const DEFAULT_MAX_METRIC_PARTITIONS: usize = 10_000;

/// The wall clock the groups read (commit timestamps, lag in ms, offsets
/// retention); tests inject a fake one.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// How [`Groups::open_with`] opens the offset store, reads the clock and
/// bounds the metrics (the defaults are what [`Groups::open`] uses).
#[derive(Debug, Clone)]
pub struct GroupsOptions {
    /// Configuration of the `__consumer_offsets` log.
    pub log_config: LogConfig,
    /// File-system calls of the offsets log (fault injection in tests).
    pub io: Arc<dyn FileIo>,
    /// Wall clock.
    pub clock: Arc<dyn WallClock>,
    /// Most groups with per-group metric series.
    pub max_metric_groups: usize,
    /// Most `sluice_group_lag{,_ms}` series (group and partition).
    pub max_metric_partitions: usize,
    /// How long an empty Kafka classic group waits for more members before
    /// its first rebalance completes (`group_initial_rebalance_delay_ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Most members of a Kafka classic group (`None`: unlimited).
    pub group_max_size: Option<usize>,
}

impl GroupsOptions {
    /// The defaults with the group settings of `config`.
    pub fn from_config(config: &BrokerConfig) -> Self {
        GroupsOptions {
            group_initial_rebalance_delay_ms: u64::try_from(
                config.group_initial_rebalance_delay.as_millis(),
            )
            .unwrap_or(u64::MAX),
            ..GroupsOptions::default()
        }
    }
}

impl Default for GroupsOptions {
    fn default() -> Self {
        GroupsOptions {
            log_config: OffsetStore::default_log_config(),
            io: Arc::new(OsFileIo),
            clock: Arc::new(SystemClock),
            max_metric_groups: DEFAULT_MAX_METRIC_GROUPS,
            max_metric_partitions: DEFAULT_MAX_METRIC_PARTITIONS,
            group_initial_rebalance_delay_ms:
                sluice_group::classic::DEFAULT_INITIAL_REBALANCE_DELAY_MS,
            group_max_size: None,
        }
    }
}

/// A parked heartbeat answers at the latest after this fraction of the
/// member's session timeout, so that it is answered (and the member's
/// session refreshed) long before the session could run out.
const PARK_SESSION_DIVISOR: u64 = 3;

/// The topic registry as the coordinator's partition-count catalog.
struct RegistryCatalog<'a>(&'a TopicRegistry);

impl TopicCatalog for RegistryCatalog<'_> {
    fn partitions(&self, topic: &str) -> Option<u32> {
        self.0
            .get(topic)
            .map(|t| u32::try_from(t.partitions().len()).unwrap_or(u32::MAX))
    }
}

/// Everything behind the coordinator lock.
pub(crate) struct State {
    pub(crate) coordinator: Coordinator,
    /// Parked heartbeats by (group, member). A second parked heartbeat of the
    /// same member (a client breaking the one-in-flight rule) replaces and
    /// wakes the first.
    parked: HashMap<(String, String), Arc<Notify>>,
    /// Kafka classic groups.
    pub(crate) classic: ClassicCoordinator,
    /// Where each parked classic JoinGroup/SyncGroup is answered.
    pub(crate) classic_waiters: HashMap<sluice_group::Ticket, ClassicWaiter>,
}

impl State {
    /// The earliest deadline of either coordinator (`u64::MAX`: none).
    fn next_deadline_ms(&self) -> u64 {
        let native = self.coordinator.next_deadline_ms().unwrap_or(u64::MAX);
        let classic = self.classic.next_deadline_ms().unwrap_or(u64::MAX);
        native.min(classic)
    }
}

/// Series currently exported for groups, to remove the stale ones.
#[derive(Default)]
struct Exported {
    groups: HashSet<String>,
    partitions: HashSet<(String, String, String)>,
    rebalances: HashMap<String, u64>,
    /// Whether the last refresh left groups or partitions out (logged once).
    capped: bool,
}

/// The broker's consumer groups: coordinator, offset store, parked
/// heartbeats, expiry timer. See the module docs.
pub struct Groups {
    state: Mutex<State>,
    store: OffsetStore,
    broker: Arc<Broker>,
    metrics: Metrics,
    epoch: Instant,
    /// Wakes the expiry timer when the next deadline moved earlier.
    timer: Notify,
    /// Coordinator ms the timer sleeps towards (`u64::MAX`: none). Written
    /// and compared under the coordinator lock.
    scheduled: AtomicU64,
    exported: Mutex<Exported>,
    clock: Arc<dyn WallClock>,
    retention: OffsetRetention,
    /// Wall ms of the last retention check (`None`: not yet).
    last_expiry_check: Mutex<Option<i64>>,
    max_metric_groups: usize,
    max_metric_partitions: usize,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What a heartbeat turned into.
pub enum HeartbeatReply {
    /// Answer now.
    Ready(Result<MemberView, GroupError>),
    /// Nothing new: wait with [`ParkedHeartbeat::wait`].
    Parked(ParkedHeartbeat),
}

/// A heartbeat waiting for the member's view to change.
pub struct ParkedHeartbeat {
    groups: Arc<Groups>,
    key: (String, String),
    generation: u32,
    notify: Arc<Notify>,
    deadline: Instant,
}

/// Committed offset, end offset and lag of one partition of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLagInfo {
    /// The partition.
    pub partition: TopicPartition,
    /// Committed offset, if any.
    pub committed: Option<u64>,
    /// Log end offset (0 when the partition no longer exists).
    pub end_offset: u64,
    /// Records behind; without a committed offset, end minus log start offset.
    pub lag: u64,
    /// Age of the oldest unconsumed record in ms; `None` when unknown (no
    /// committed offset, record gone, partition gone).
    pub lag_ms: Option<u64>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The coordinator's view (a synthetic `Empty` one for offset-only groups).
    pub description: GroupDescription,
    /// Every partition with a committed offset or an owner, by topic then partition.
    pub partitions: Vec<PartitionLagInfo>,
}

fn store_error(e: GroupError) -> BrokerError {
    match e {
        GroupError::Storage(source) => BrokerError::Log {
            topic: OFFSETS_TOPIC.to_string(),
            partition: 0,
            source,
        },
        other => BrokerError::Io {
            path: OFFSETS_TOPIC.into(),
            source: std::io::Error::other(other),
        },
    }
}

impl Groups {
    /// Opens (creating) the offset store at `<data_dir>/__consumer_offsets/0`
    /// and replays it (blocking). `instance_id` must differ between broker
    /// runs (the start time in ms) so member ids are never reused.
    ///
    /// It also registers with the broker the rule that deleting a topic
    /// deletes every group's committed offsets on it, so every front end
    /// gets that cascade from [`Broker::delete_topic`].
    pub fn open(
        data_dir: &Path,
        broker: Arc<Broker>,
        config: CoordinatorConfig,
        instance_id: u64,
    ) -> Result<Arc<Groups>, BrokerError> {
        Self::open_with(
            data_dir,
            broker,
            config,
            instance_id,
            GroupsOptions::default(),
        )
    }

    /// [`Groups::open`] with explicit options (tests: fault-injecting I/O,
    /// a fake clock, small metric caps).
    pub fn open_with(
        data_dir: &Path,
        broker: Arc<Broker>,
        config: CoordinatorConfig,
        instance_id: u64,
        options: GroupsOptions,
    ) -> Result<Arc<Groups>, BrokerError> {
        let groups = Arc::new(Self::open_store(
            data_dir,
            broker,
            config,
            instance_id,
            options,
        )?);
        let weak = Arc::downgrade(&groups);
        groups
            .broker
            .on_topic_deleted(Box::new(move |name: &str| {
                let Some(g) = weak.upgrade() else { return };
                match g.forget_topic(name) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(topic = %name, offsets = n, "deleted committed offsets of a deleted topic"),
                    Err(e) => tracing::error!(topic = %name, error = %crate::error::chain(&e), "could not delete the committed offsets of a deleted topic"),
                }
            }));
        Ok(groups)
    }

    fn open_store(
        data_dir: &Path,
        broker: Arc<Broker>,
        config: CoordinatorConfig,
        instance_id: u64,
        options: GroupsOptions,
    ) -> Result<Groups, BrokerError> {
        let dir = data_dir.join(OFFSETS_TOPIC).join("0");
        let store =
            OffsetStore::open_with_io(&dir, options.log_config, options.io).map_err(store_error)?;
        let retention = OffsetRetention {
            retention_ms: config.offsets_retention_ms,
            opened_wall_ms: options.clock.now_ms(),
        };
        let stats = store.replay_stats();
        tracing::info!(
            records = stats.records,
            skipped = stats.skipped,
            live_offsets = stats.live_keys,
            groups = store.groups().len(),
            "committed offsets recovered"
        );
        Ok(Groups {
            state: Mutex::new(State {
                coordinator: Coordinator::new(config, instance_id),
                parked: HashMap::new(),
                classic: ClassicCoordinator::new(
                    ClassicConfig {
                        initial_rebalance_delay_ms: options.group_initial_rebalance_delay_ms,
                        max_group_size: options.group_max_size,
                        ..ClassicConfig::default()
                    },
                    instance_id,
                ),
                classic_waiters: HashMap::new(),
            }),
            store,
            metrics: broker.metrics().clone(),
            broker,
            epoch: Instant::now(),
            timer: Notify::new(),
            scheduled: AtomicU64::new(u64::MAX),
            exported: Mutex::new(Exported::default()),
            clock: options.clock,
            retention,
            last_expiry_check: Mutex::new(None),
            max_metric_groups: options.max_metric_groups,
            max_metric_partitions: options.max_metric_partitions,
        })
    }

    /// The offset store.
    pub fn store(&self) -> &OffsetStore {
        &self.store
    }

    /// The wall clock, ms since the Unix epoch (commit timestamps).
    pub(crate) fn wall_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every coordinator call is a complete state transition or an error;
        // a panic elsewhere while holding the guard leaves no half-applied change.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the coordinator, then wakes the parked heartbeats it
    /// named and the timer if the next deadline moved earlier.
    pub(crate) fn mutate<R>(
        &self,
        f: impl FnOnce(&mut State, u64, &dyn TopicCatalog) -> R,
    ) -> (R, MutexGuard<'_, State>) {
        let mut st = self.lock();
        let now = self.now_ms();
        let catalog = RegistryCatalog(self.broker.topics());
        let r = f(&mut st, now, &catalog);
        self.after_change(&mut st);
        (r, st)
    }

    /// Wakes what a mutation concerns: parked heartbeats it named, the
    /// classic requests it answered, and the timer if the next deadline
    /// moved earlier.
    pub(crate) fn after_change(&self, st: &mut State) {
        for key in st.coordinator.take_notifications() {
            if let Some(n) = st.parked.get(&key) {
                n.notify_one();
            }
        }
        crate::classic::route_completions(st);
        let next = st.next_deadline_ms();
        if next < self.scheduled.load(Ordering::Acquire) {
            self.scheduled.store(next, Ordering::Release);
            self.timer.notify_one();
        }
    }

    /// JoinGroup: a new member (`req.member_id == None`) or a subscription update.
    ///
    /// Refused with `NonEmptyGroup` while Kafka classic members hold the group.
    pub fn join(&self, group: &str, req: JoinRequest) -> Result<MemberView, GroupError> {
        let (r, _st) = self.mutate(|st, now, cat| {
            let classic = st.classic.member_count(group);
            if classic > 0 {
                return Err(GroupError::NonEmptyGroup {
                    group: group.to_string(),
                    members: classic,
                });
            }
            st.coordinator.join(now, group, req, cat)
        });
        r
    }

    /// Heartbeat: applies the `owned` report now; answers at once or parks
    /// (see the module docs) when `max_wait` is non-zero and nothing changed.
    ///
    /// The report is expanded into `(topic, partition)` pairs under the
    /// coordinator lock, and only as far as it can matter: nothing for an
    /// unknown member, at most one pair more than the member owns otherwise
    /// (that extra pair is then not owned, which the coordinator refuses as
    /// a stale view). So a large report costs what the member really owns.
    pub fn heartbeat(
        self: &Arc<Self>,
        group: &str,
        member_id: &str,
        generation: u32,
        owned: &[TopicPartitions],
        max_wait: Duration,
    ) -> HeartbeatReply {
        let ((r, owned), mut st) = self.mutate(|st, now, cat| {
            let pairs = expand_owned(owned, st.coordinator.owned_count(group, member_id));
            let r = st
                .coordinator
                .heartbeat(now, group, member_id, generation, Some(&pairs), cat);
            (r, pairs)
        });
        let view = match r {
            Ok(v) => v,
            Err(e) => return HeartbeatReply::Ready(Err(e)),
        };
        let reported: BTreeSet<&TopicPartition> = owned.iter().collect();
        let assigned: BTreeSet<&TopicPartition> = view.assignment.iter().collect();
        if max_wait.is_zero() || !view.revoke.is_empty() || reported != assigned {
            return HeartbeatReply::Ready(Ok(view));
        }
        let session = st
            .coordinator
            .session_timeout_ms(group, member_id)
            .unwrap_or(st.coordinator.config().default_session_timeout_ms);
        let key = (group.to_string(), member_id.to_string());
        let cap = Duration::from_millis((session / PARK_SESSION_DIVISOR).max(1));
        let notify = Arc::new(Notify::new());
        if let Some(old) = st.parked.insert(key.clone(), Arc::clone(&notify)) {
            old.notify_one();
        }
        drop(st);
        HeartbeatReply::Parked(ParkedHeartbeat {
            groups: Arc::clone(self),
            key,
            generation,
            notify,
            deadline: Instant::now() + max_wait.min(cap),
        })
    }

    /// The member's current view without an `owned` report (counts as a heartbeat).
    pub fn refresh(
        &self,
        group: &str,
        member_id: &str,
        generation: u32,
    ) -> Result<MemberView, GroupError> {
        let (r, _st) = self.mutate(|st, now, cat| {
            st.coordinator
                .heartbeat(now, group, member_id, generation, None, cat)
        });
        r
    }

    /// LeaveGroup: the member's partitions are free at once.
    pub fn leave(&self, group: &str, member_id: &str) -> Result<(), GroupError> {
        let (r, st) = self.mutate(|st, now, cat| st.coordinator.leave(now, group, member_id, cat));
        let key = (group.to_string(), member_id.to_string());
        if let Some(n) = st.parked.get(&key) {
            n.notify_one();
        }
        r
    }

    /// Expires members whose deadline passed; wakes their parked heartbeats.
    pub fn tick(&self) {
        let ((expired, removed), st) =
            self.mutate(|st, now, cat| (st.coordinator.tick(now, cat), st.classic.tick(now)));
        for r in removed {
            tracing::info!(group = %r.group, member = %r.member_id, reason = ?r.reason, "kafka group member removed");
        }
        for e in expired {
            tracing::info!(group = %e.group, member = %e.member_id, reason = ?e.reason, "group member expired");
            if let Some(n) = st.parked.get(&(e.group, e.member_id)) {
                n.notify_one();
            }
        }
    }

    /// The expiry timer: sleeps until the coordinators' next deadline (or
    /// until woken because it moved earlier), ticks, repeats. When `stop`
    /// fires it answers every parked classic JoinGroup/SyncGroup
    /// ([`Groups::shutdown_classic`]) and returns.
    pub async fn run_timer(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let next = {
                let st = self.lock();
                let next = st.next_deadline_ms();
                self.scheduled.store(next, Ordering::Release);
                next
            };
            // +1 ms: `now_ms` rounds down, so wake only once the deadline has passed.
            let sleep = async {
                if next == u64::MAX {
                    std::future::pending::<()>().await;
                } else {
                    let at = self.epoch + Duration::from_millis(next.saturating_add(1));
                    tokio::time::sleep_until(at).await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    self.shutdown_classic();
                    return;
                }
                _ = self.timer.notified() => {}
                _ = sleep => self.tick(),
            }
        }
    }

    /// Resolves a topic once for the partitions of one OffsetCommit; see
    /// [`CommitTarget::check`] for which partitions may be committed.
    pub fn commit_target(&self, topic: &str) -> CommitTarget {
        CommitTarget(self.broker.topics().get(topic))
    }

    /// Fences and appends a commit under the coordinator lock (fast). An
    /// empty `member_id` is a standalone commit (group must have no members).
    /// Hand the ticket to [`Groups::finish_commit`] before acknowledging.
    pub fn begin_commit(
        &self,
        group: &str,
        member_id: &str,
        generation: u32,
        commits: &[OffsetCommit],
    ) -> Result<CommitTicket, GroupError> {
        let committer = if member_id.is_empty() {
            Committer::Standalone
        } else {
            Committer::Member {
                member_id,
                generation,
            }
        };
        let st = self.lock();
        if member_id.is_empty() && st.classic.occupancy(group) == Occupancy::Members {
            // A standalone commit needs a group without members of either protocol.
            return Err(GroupError::UnknownMemberId {
                group: group.to_string(),
                member: String::new(),
            });
        }
        begin_fenced_commit(
            &st.coordinator,
            &self.store,
            group,
            committer,
            commits,
            self.clock.now_ms(),
        )
    }

    /// Waits for a commit's fsync (blocking: run it off the async runtime).
    pub fn finish_commit(&self, ticket: CommitTicket) -> Result<(), GroupError> {
        self.store.finish(ticket)
    }

    /// Every committed offset of a group.
    pub fn committed(&self, group: &str) -> BTreeMap<TopicPartition, CommittedOffset> {
        self.store.fetch_group(group)
    }

    /// Every group the coordinator knows plus every group with committed
    /// offsets only (listed `Empty`, generation 0), by name.
    ///
    /// Kafka classic groups are listed too (with their Kafka state names);
    /// a name known to both coordinators shows the one with members.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        let st = self.lock();
        let mut out: BTreeMap<String, GroupListing> = st
            .coordinator
            .list_groups()
            .into_iter()
            .map(|g| (g.group.clone(), g))
            .collect();
        for c in st.classic.list_groups() {
            if out.get(&c.group).is_some_and(|n| n.members > 0) {
                continue;
            }
            out.insert(
                c.group.clone(),
                GroupListing {
                    group: c.group,
                    state: crate::classic::native_state(c.state),
                    members: c.members,
                    generation: u32::try_from(c.generation).unwrap_or(0),
                },
            );
        }
        drop(st);
        for g in self.store.groups() {
            out.entry(g.clone()).or_insert(GroupListing {
                group: g,
                state: GroupState::Empty,
                members: 0,
                generation: 0,
            });
        }
        out.into_values().collect()
    }

    /// DescribeGroups for one group: members, assignment, committed offsets,
    /// end offsets and lag. `GroupIdNotFound` when neither the coordinator
    /// nor the store knows it.
    pub fn describe(&self, group: &str) -> Result<GroupInfo, GroupError> {
        sluice_group::error::validate_group_id(group)?;
        let description = {
            let st = self.lock();
            let native = st.coordinator.describe(group);
            let classic = st.classic.describe(group);
            match (native, classic) {
                (Some(n), _) if !n.members.is_empty() => Some(n),
                (_, Some(c)) => Some(classic_as_native(&c)),
                (n, None) => n,
            }
        };
        let committed = self.store.fetch_group(group);
        let description = match description {
            Some(d) => d,
            None if !committed.is_empty() => GroupDescription {
                group: group.to_string(),
                generation: 0,
                state: GroupState::Empty,
                mode: sluice_group::AssignmentMode::Server,
                leader: None,
                members: Vec::new(),
                rebalances: 0,
            },
            None => {
                return Err(GroupError::GroupIdNotFound {
                    group: group.to_string(),
                })
            }
        };
        let mut parts: BTreeSet<TopicPartition> = committed.keys().cloned().collect();
        for m in &description.members {
            parts.extend(m.assignment.iter().cloned());
            parts.extend(m.revoking.iter().cloned());
        }
        let now = self.clock.now_ms();
        let partitions = parts
            .into_iter()
            .map(|tp| {
                let c = committed.get(&tp).map(|c| c.offset);
                self.partition_lag(tp, c, now)
            })
            .collect();
        Ok(GroupInfo {
            description,
            partitions,
        })
    }

    fn partition_lag(
        &self,
        tp: TopicPartition,
        committed: Option<u64>,
        now: i64,
    ) -> PartitionLagInfo {
        let part = self.broker.partition(&tp.topic, tp.partition).ok();
        // Lag counts what consumers can read: up to the high watermark.
        let end_offset = part.as_ref().map_or(0, |p| p.high_watermark());
        let (lag_records, lag_ms) = match (committed, &part) {
            (Some(c), Some(p)) => {
                let ts = match timestamp_at(p.log(), c) {
                    Ok(ts) => ts,
                    Err(e) => {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "cannot read the record at the committed offset");
                        None
                    }
                };
                let l = lag(end_offset, c, ts, now);
                (l.records, l.ms)
            }
            // No commit: everything still stored is unconsumed; its age is unknown.
            (None, Some(p)) => (end_offset.saturating_sub(p.start_offset()), None),
            (_, None) => (0, None),
        };
        PartitionLagInfo {
            partition: tp,
            committed,
            end_offset,
            lag: lag_records,
            lag_ms,
        }
    }

    /// Deletes a group without members: tombstones its offsets (durable) and
    /// forgets its coordinator state. Blocking (the fsync wait, after the
    /// coordinator lock is released): call it off the async runtime.
    pub fn delete_group(&self, group: &str) -> Result<usize, GroupError> {
        let now = self.clock.now_ms();
        let ticket = {
            let mut st = self.lock();
            let st = &mut *st;
            if st.classic.occupancy(group) == Occupancy::Members {
                return Err(GroupError::NonEmptyGroup {
                    group: group.to_string(),
                    members: st.classic.member_count(group),
                });
            }
            match sluice_group::begin_delete_group(&mut st.coordinator, &self.store, group, now) {
                Ok(ticket) => {
                    // Empty (checked above): deleting cannot fail.
                    let _ = st.classic.delete_group(group);
                    ticket
                }
                // An empty classic group without offsets.
                Err(GroupError::GroupIdNotFound { .. }) if st.classic.contains(group) => {
                    let _ = st.classic.delete_group(group);
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
        };
        self.store.finish_counted(ticket)
    }

    /// Deletes every group's committed offsets on `topic` (after the topic
    /// was deleted, so a topic created again under the name starts clean).
    /// Blocking (the tombstones of every group share the fsyncs); returns
    /// how many offsets were deleted.
    pub fn forget_topic(&self, topic: &str) -> Result<usize, GroupError> {
        // Commits queued before the deletion (waiting for their fsync) are
        // made durable and visible first, so they are deleted too.
        self.store.settle()?;
        let now = self.clock.now_ms();
        let mut tickets = Vec::new();
        for group in self.store.groups() {
            let parts: Vec<TopicPartition> = self
                .store
                .fetch_group(&group)
                .into_keys()
                .filter(|tp| tp.topic == topic)
                .collect();
            if !parts.is_empty() {
                tickets.push(self.store.begin_delete_offsets(&group, &parts, now)?);
            }
        }
        let mut deleted = 0;
        for ticket in tickets {
            deleted += self.store.finish_counted(ticket)?;
        }
        Ok(deleted)
    }

    /// The group tick's storage work (blocking; run it off the runtime):
    /// appends changes whose tickets were dropped, then, at most every
    /// [`RETENTION_CHECK_INTERVAL_MS`], deletes expired offsets (see the
    /// module docs). Returns how many offsets were deleted.
    pub fn expire_offsets(&self) -> usize {
        if let Err(e) = self.store.settle() {
            tracing::warn!(error = %e, "appending queued offset changes failed");
        }
        let now = ExpiryNow {
            coordinator_ms: self.now_ms(),
            wall_ms: self.clock.now_ms(),
        };
        {
            let mut last = self
                .last_expiry_check
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|at| {
                let since = now.wall_ms.saturating_sub(at);
                !(0..RETENTION_CHECK_INTERVAL_MS).contains(&since)
            });
            if !due {
                return 0;
            }
            *last = Some(now.wall_ms);
        }
        // The scan runs without the coordinator lock; under it, one group
        // lookup per group with old offsets.
        let candidates = self.store.expiry_candidates(&self.retention, now.wall_ms);
        let pass = {
            let mut st = self.lock();
            let st = &mut *st;
            sluice_group::begin_expire_candidates_with_classic(
                &mut st.coordinator,
                &mut st.classic,
                &self.store,
                &self.retention,
                now,
                candidates,
            )
        };
        let found = pass.offsets;
        let forgotten = pass.forgotten_groups.len();
        let deleted = match sluice_group::finish_expiry(&self.store, pass) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "deleting expired offsets failed; will retry");
                // Retry at the next tick rather than after a full interval.
                *self
                    .last_expiry_check
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                0
            }
        };
        if found > 0 || forgotten > 0 {
            tracing::info!(
                deleted,
                empty_groups_forgotten = forgotten,
                retention_ms = self.retention.retention_ms,
                "expired committed offsets"
            );
        }
        self.metrics
            .group_offsets_expired
            .inc_by(u64::try_from(deleted).unwrap_or(u64::MAX));
        deleted
    }

    /// Compacts the offsets log on disk when enough was committed since the
    /// last snapshot (blocking; run off the runtime). Commits go on meanwhile.
    pub fn compact_offsets(&self) {
        if let Err(e) = self.store.maybe_compact() {
            tracing::warn!(error = %crate::error::chain(&e), "offsets log compaction failed; will retry");
        }
    }

    /// Updates the group metrics: members and rebalances per group, lag in
    /// records and ms per group and partition, for at most
    /// `max_metric_groups` groups and `max_metric_partitions` lag series
    /// (see the module docs). Removes series of groups and partitions that
    /// are gone or no longer selected. Reads one batch per exported partition.
    pub fn refresh_metrics(&self) {
        let mut listed = self.list_groups();
        let mut exported = self.exported.lock().unwrap_or_else(|p| p.into_inner());
        let total = listed.len();
        // Active groups first, then the ones already exported (stable
        // series), then by name.
        listed.sort_by(|a, b| {
            let key = |g: &GroupListing| (g.members == 0, !exported.groups.contains(&g.group));
            key(a).cmp(&key(b)).then_with(|| a.group.cmp(&b.group))
        });
        listed.truncate(self.max_metric_groups);
        let mut omitted = total - listed.len();
        let mut groups = HashSet::new();
        let mut partitions = HashSet::new();
        for g in listed {
            let Ok(info) = self.describe(&g.group) else {
                continue;
            };
            let d = &info.description;
            self.metrics
                .group_members
                .with_label_values(&[&g.group])
                .set(i64::try_from(d.members.len()).unwrap_or(i64::MAX));
            let seen = exported.rebalances.entry(g.group.clone()).or_insert(0);
            let counter = self.metrics.group_rebalances.with_label_values(&[&g.group]);
            // The coordinator's count restarts with the broker, like the counter.
            if d.rebalances > *seen {
                counter.inc_by(d.rebalances - *seen);
            }
            *seen = d.rebalances;
            // A partition of a deleted topic may still be in a member's
            // assignment until the coordinator next looks: no series for it.
            let live: Vec<&PartitionLagInfo> = info
                .partitions
                .iter()
                .filter(|p| {
                    self.broker
                        .partition(&p.partition.topic, p.partition.partition)
                        .is_ok()
                })
                .collect();
            let room = self.max_metric_partitions.saturating_sub(partitions.len());
            if live.len() > room {
                // The group's lag would be partial: leave all of it out.
                omitted += 1;
            } else {
                for p in live {
                    let labels = (
                        g.group.clone(),
                        p.partition.topic.clone(),
                        p.partition.partition.to_string(),
                    );
                    let l = [labels.0.as_str(), labels.1.as_str(), labels.2.as_str()];
                    self.metrics
                        .group_lag
                        .with_label_values(&l)
                        .set(i64::try_from(p.lag).unwrap_or(i64::MAX));
                    self.metrics.group_lag_ms.with_label_values(&l).set(
                        p.lag_ms
                            .map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
                    );
                    partitions.insert(labels);
                }
            }
            groups.insert(g.group);
        }
        for gone in exported.groups.difference(&groups) {
            let _ = self.metrics.group_members.remove_label_values(&[gone]);
            let _ = self.metrics.group_rebalances.remove_label_values(&[gone]);
        }
        for (g, t, p) in exported.partitions.difference(&partitions) {
            let _ = self.metrics.group_lag.remove_label_values(&[g, t, p]);
            let _ = self.metrics.group_lag_ms.remove_label_values(&[g, t, p]);
        }
        exported.rebalances.retain(|g, _| groups.contains(g));
        exported.groups = groups;
        exported.partitions = partitions;
        self.metrics
            .group_metrics_omitted
            .set(i64::try_from(omitted).unwrap_or(i64::MAX));
        let capped = omitted > 0;
        if capped && !exported.capped {
            tracing::warn!(
                groups = total,
                omitted,
                max_groups = self.max_metric_groups,
                max_partition_series = self.max_metric_partitions,
                "too many consumer groups for per-group metrics; some are left out (see sluice_group_metrics_omitted)"
            );
        }
        exported.capped = capped;
    }

    /// Answers every parked classic request, appends what dropped tickets
    /// left queued, then flushes and closes the offset store (shutdown,
    /// blocking).
    pub fn close(&self) -> Result<(), BrokerError> {
        self.shutdown_classic();
        if let Err(e) = self.store.settle() {
            tracing::warn!(error = %e, "appending queued offset changes at shutdown failed");
        }
        self.store.close().map_err(store_error)
    }
}

impl ParkedHeartbeat {
    /// Waits until the member's view changes, the member leaves or expires,
    /// or the deadline passes; then answers with the fresh view (which counts
    /// as a heartbeat). `None` when `cancel` fired first (the connection
    /// closed or the broker is shutting down): that does not count as a
    /// heartbeat, so a client that vanished while parked expires one session
    /// after its last heartbeat arrived.
    pub async fn wait(self, cancel: &CancellationToken) -> Option<Result<MemberView, GroupError>> {
        tokio::select! {
            _ = self.notify.notified() => {}
            _ = tokio::time::sleep_until(self.deadline) => {}
            _ = cancel.cancelled() => return None,
        }
        Some(
            self.groups
                .refresh(&self.key.0, &self.key.1, self.generation),
        )
    }
}

impl Drop for ParkedHeartbeat {
    /// Unregisters (unless a newer heartbeat of the member replaced it), also
    /// when the waiting future is dropped early.
    fn drop(&mut self) {
        let mut st = self.groups.lock();
        if st
            .parked
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            st.parked.remove(&self.key);
        }
    }
}

/// The first pairs of an `owned` report: none when the member is unknown
/// (`limit` is `None`), else distinct pairs up to `limit + 1` (see
/// [`Groups::heartbeat`]). Memory is bounded by what the member owns, not by
/// the report.
fn expand_owned(owned: &[TopicPartitions], limit: Option<usize>) -> Vec<TopicPartition> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let mut seen: HashSet<(&str, u32)> = HashSet::new();
    let mut out = Vec::new();
    for (topic, partition) in TopicPartitions::pairs(owned) {
        if out.len() > limit {
            break;
        }
        if seen.insert((topic, partition)) {
            out.push(TopicPartition::new(topic, partition));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ConfigLayer;

    /// Fences a commit and waits until it is durable.
    fn commit(g: &Groups, group: &str, member: &str, generation: u32, commits: &[OffsetCommit]) {
        let ticket = g.begin_commit(group, member, generation, commits).unwrap();
        g.finish_commit(ticket).unwrap();
    }

    /// A broker with default settings in `dir` and its groups (also used by
    /// the handler and connection tests).
    pub(crate) fn open(dir: &Path) -> (Arc<Broker>, Arc<Groups>) {
        let cfg = ConfigLayer {
            data_dir: Some(dir.to_path_buf()),
            ..ConfigLayer::default()
        }
        .resolve()
        .unwrap();
        let broker = Arc::new(Broker::open(&cfg, Metrics::new()).unwrap());
        let groups =
            Groups::open(dir, Arc::clone(&broker), CoordinatorConfig::default(), 1).unwrap();
        (broker, groups)
    }

    /// Like [`open`], with `options` and offsets retention `retention_ms`.
    fn open_with(
        dir: &Path,
        retention_ms: u64,
        options: GroupsOptions,
    ) -> (Arc<Broker>, Arc<Groups>) {
        let cfg = ConfigLayer {
            data_dir: Some(dir.to_path_buf()),
            ..ConfigLayer::default()
        }
        .resolve()
        .unwrap();
        let broker = Arc::new(Broker::open(&cfg, Metrics::new()).unwrap());
        let config = CoordinatorConfig {
            offsets_retention_ms: retention_ms,
            ..CoordinatorConfig::default()
        };
        let groups = Groups::open_with(dir, Arc::clone(&broker), config, 1, options).unwrap();
        (broker, groups)
    }

    /// A wall clock moved by hand.
    #[derive(Debug)]
    struct FakeClock(std::sync::atomic::AtomicI64);

    impl FakeClock {
        fn advance(&self, ms: i64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl WallClock for FakeClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn join(g: &Groups, group: &str, session: u64) -> MemberView {
        g.join(
            group,
            JoinRequest {
                client_id: "c".into(),
                topics: vec!["t".into()],
                session_timeout_ms: Some(session),
                ..JoinRequest::default()
            },
        )
        .unwrap()
    }

    fn tps(v: &[TopicPartition]) -> Vec<TopicPartitions> {
        TopicPartitions::from_pairs(v.iter().map(|tp| (tp.topic.as_str(), tp.partition)))
    }

    fn ready(r: HeartbeatReply) -> MemberView {
        match r {
            HeartbeatReply::Ready(v) => v.unwrap(),
            HeartbeatReply::Parked(_) => panic!("max_wait 0 parked"),
        }
    }

    fn parked(r: HeartbeatReply) -> ParkedHeartbeat {
        match r {
            HeartbeatReply::Parked(p) => p,
            HeartbeatReply::Ready(v) => panic!("not parked: {v:?}"),
        }
    }

    #[test]
    fn an_owned_report_is_expanded_only_as_far_as_the_member_owns() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path());
        broker.create_topic("t", 2, &[]).unwrap();
        let a = join(&groups, "g", 30_000);
        assert_eq!(a.assignment.len(), 2);
        // Unknown member: nothing expanded, unknown member answered.
        let huge = vec![TopicPartitions::new("t", (0..50_000).collect())];
        assert!(expand_owned(&huge, None).is_empty());
        // At most one pair more than owned: enough to see the report is stale.
        assert_eq!(expand_owned(&huge, Some(2)).len(), 3);
        let dup = vec![TopicPartitions::new("t", vec![0, 0, 0, 1])];
        assert_eq!(expand_owned(&dup, Some(2)).len(), 2, "repeats count once");
        match groups.heartbeat("g", &a.member_id, a.generation, &huge, Duration::ZERO) {
            HeartbeatReply::Ready(Err(GroupError::IllegalGeneration { .. })) => {}
            HeartbeatReply::Ready(r) => panic!("{r:?}"),
            HeartbeatReply::Parked(_) => panic!("parked"),
        }
        // The refused report released nothing: the member still owns both.
        let v = ready(groups.heartbeat(
            "g",
            &a.member_id,
            a.generation,
            &tps(&a.assignment),
            Duration::ZERO,
        ));
        assert_eq!(v.assignment.len(), 2);
        match groups.heartbeat("g", "nobody", 0, &huge, Duration::ZERO) {
            HeartbeatReply::Ready(Err(GroupError::UnknownMemberId { .. })) => {}
            HeartbeatReply::Ready(r) => panic!("{r:?}"),
            HeartbeatReply::Parked(_) => panic!("parked"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timer_expires_a_silent_member_and_wakes_the_parked_one() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path());
        broker.create_topic("t", 4, &[]).unwrap();
        let stop = CancellationToken::new();
        let timer = tokio::spawn(Arc::clone(&groups).run_timer(stop.clone()));
        let a = join(&groups, "g", 30_000);
        let b = join(&groups, "g", 1_000);
        // a learns its final assignment (b took half of it: a must revoke).
        let a_view = ready(groups.heartbeat(
            "g",
            &a.member_id,
            a.generation,
            &tps(&a.assignment),
            Duration::ZERO,
        ));
        let keep: Vec<TopicPartition> = a_view.assignment.clone();
        assert_eq!(keep.len(), 2);
        let a_view = ready(groups.heartbeat(
            "g",
            &a.member_id,
            a_view.generation,
            &tps(&keep),
            Duration::ZERO,
        ));
        let _ = b;
        // a parks for up to 10 s (capped at 10 s = a third of 30 s); b goes silent.
        let parked = parked(groups.heartbeat(
            "g",
            &a.member_id,
            a_view.generation,
            &tps(&keep),
            Duration::from_secs(60),
        ));
        let started = Instant::now();
        let v = parked
            .wait(&CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        // Woken when b expired (1 s), not at the park deadline.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(v.assignment.len(), 4, "{v:?}");
        assert_eq!(groups.lock().coordinator.member_count("g"), 1);
        stop.cancel();
        timer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn parked_heartbeat_is_capped_by_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path());
        broker.create_topic("t", 2, &[]).unwrap();
        let a = join(&groups, "g", 3_000);
        let park = || {
            parked(groups.heartbeat(
                "g",
                &a.member_id,
                a.generation,
                &tps(&a.assignment),
                Duration::from_secs(60),
            ))
        };
        let parked = park();
        let started = Instant::now();
        parked
            .wait(&CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(1_000));
        assert!(groups.lock().parked.is_empty());
        // Cancelled (shutdown): no answer from the coordinator, not a heartbeat.
        let parked = park();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(parked.wait(&cancel).await.is_none());
        assert!(groups.lock().parked.is_empty());
    }

    #[tokio::test]
    async fn commits_survive_reopen_and_delete_needs_an_empty_group() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (broker, groups) = open(dir.path());
            broker.create_topic("t", 2, &[]).unwrap();
            let a = join(&groups, "g", 10_000);
            let commits: Vec<OffsetCommit> = a
                .assignment
                .iter()
                .map(|tp| OffsetCommit::new(tp.clone(), 5))
                .collect();
            commit(&groups, "g", &a.member_id, a.generation, &commits);
            let e = groups.begin_commit("g", "", 0, &commits).unwrap_err();
            assert_eq!(e.code(), sluice_protocol::ErrorCode::UnknownMemberId);
            let e = groups.delete_group("g").unwrap_err();
            assert_eq!(e.code(), sluice_protocol::ErrorCode::NonEmptyGroup);
            groups.close().unwrap();
            broker.close().unwrap();
        }
        let (_broker, groups) = open(dir.path());
        let c = groups.committed("g");
        assert_eq!(c.len(), 2);
        assert!(c.values().all(|v| v.offset == 5));
        let listed = groups.list_groups();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, GroupState::Empty);
        assert_eq!(groups.delete_group("g").unwrap(), 2);
        assert!(groups.committed("g").is_empty());
        assert!(groups.describe("g").is_err());
    }

    /// Series of the metric `name` in the rendered text, by their labels.
    fn series(m: &Metrics, name: &str) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_expire_after_the_retention_and_stay_expired_after_a_restart() {
        const RETENTION_MS: u64 = 60_000;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock(std::sync::atomic::AtomicI64::new(
            1_700_000_000_000,
        )));
        let options = || GroupsOptions {
            clock: clock.clone(),
            ..GroupsOptions::default()
        };
        {
            let (broker, groups) = open_with(dir.path(), RETENTION_MS, options());
            broker.create_topic("t", 2, &[]).unwrap();
            // "g" commits as a member, then its member leaves; "solo" is a
            // standalone commit; "live" keeps its member.
            let a = join(&groups, "g", 300_000);
            let commits: Vec<OffsetCommit> = a
                .assignment
                .iter()
                .map(|tp| OffsetCommit::new(tp.clone(), 5))
                .collect();
            commit(&groups, "g", &a.member_id, a.generation, &commits);
            groups.leave("g", &a.member_id).unwrap();
            commit(
                &groups,
                "solo",
                "",
                0,
                &[OffsetCommit::new(TopicPartition::new("t", 0), 9)],
            );
            let l = join(&groups, "live", 300_000);
            commit(&groups, "live", &l.member_id, l.generation, &commits);
            groups.refresh_metrics();
            let lag = series(&groups.metrics, "sluice_group_lag");
            assert_eq!(lag.len(), 5, "{lag:?}");

            // Half the retention: nothing goes.
            clock.advance(30_000);
            tokio::time::advance(Duration::from_secs(30)).await;
            assert_eq!(groups.expire_offsets(), 0);
            assert_eq!(groups.list_groups().len(), 3);
            // Past the retention (and the check interval): "g" and "solo" go.
            clock.advance(61_000);
            tokio::time::advance(Duration::from_secs(61)).await;
            assert_eq!(groups.expire_offsets(), 3);
            let names: Vec<String> = groups.list_groups().into_iter().map(|g| g.group).collect();
            assert_eq!(names, vec!["live".to_string()]);
            for gone in ["g", "solo"] {
                let e = groups.describe(gone).unwrap_err();
                assert_eq!(e.code(), sluice_protocol::ErrorCode::GroupIdNotFound);
            }
            // Their metric series go with them.
            groups.refresh_metrics();
            let lag = series(&groups.metrics, "sluice_group_lag");
            assert_eq!(lag.len(), 2, "{lag:?}");
            assert!(lag.iter().all(|l| l.contains("group=\"live\"")), "{lag:?}");
            let members = series(&groups.metrics, "sluice_group_members");
            assert_eq!(members.len(), 1, "{members:?}");
            assert!(groups
                .metrics
                .render()
                .contains("sluice_group_offsets_expired_total 3"));
            groups.close().unwrap();
            broker.close().unwrap();
        }
        // After a restart the deletions hold (they were tombstones), and
        // "live" (now unknown to the new coordinator) gets a full retention
        // from the restart before its offsets can go.
        let (_broker, groups) = open_with(dir.path(), RETENTION_MS, options());
        let names: Vec<String> = groups.list_groups().into_iter().map(|g| g.group).collect();
        assert_eq!(names, vec!["live".to_string()]);
        assert!(groups.committed("g").is_empty());
        assert!(groups.committed("solo").is_empty());
        assert_eq!(groups.expire_offsets(), 0);
        assert_eq!(groups.committed("live").len(), 2);
    }

    #[tokio::test]
    async fn group_metrics_are_capped_and_follow_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let options = GroupsOptions {
            max_metric_groups: 2,
            max_metric_partitions: 3,
            ..GroupsOptions::default()
        };
        let (broker, groups) = open_with(dir.path(), 3_300_000, options);
        broker.create_topic("t", 2, &[]).unwrap();
        broker.create_topic("u", 1, &[]).unwrap();
        let both = [
            OffsetCommit::new(TopicPartition::new("t", 0), 1),
            OffsetCommit::new(TopicPartition::new("t", 1), 1),
        ];
        for i in 0..5 {
            commit(&groups, &format!("g{i}"), "", 0, &both);
        }
        let m = groups.metrics.clone();
        groups.refresh_metrics();
        // Two groups at most; g1's two partitions do not fit in the three
        // lag series left after g0's two, so its lag is left out too.
        let members = series(&m, "sluice_group_members");
        assert_eq!(members.len(), 2, "{members:?}");
        assert_eq!(series(&m, "sluice_group_lag").len(), 2);
        assert!(m.render().contains("sluice_group_metrics_omitted 4"));
        // A group with members is preferred; the already exported g0 stays.
        let a = g_join(&groups, "active", "u");
        groups.refresh_metrics();
        let members = series(&m, "sluice_group_members");
        assert_eq!(members.len(), 2, "{members:?}");
        assert!(members.iter().any(|l| l.contains("group=\"active\"")));
        assert!(members.iter().any(|l| l.contains("group=\"g0\"")));
        assert!(!m.render().contains("group=\"g1\""));
        // A deleted group's series go.
        assert_eq!(groups.delete_group("g0").unwrap(), 2);
        groups.refresh_metrics();
        assert!(!m.render().contains("group=\"g0\""));
        // So do the lag series of a deleted topic (its offsets are forgotten).
        commit(
            &groups,
            "active",
            &a.member_id,
            a.generation,
            &[OffsetCommit::new(TopicPartition::new("u", 0), 1)],
        );
        groups.refresh_metrics();
        assert!(m.render().contains("topic=\"u\""));
        // (Broker::delete_topic forgets the topic's committed offsets.)
        broker.delete_topic("u").unwrap();
        assert!(groups.committed("active").is_empty());
        groups.refresh_metrics();
        assert!(!m.render().contains("topic=\"u\""), "{}", m.render());
        // Below the cap again: nothing omitted.
        for i in 1..5 {
            groups.delete_group(&format!("g{i}")).unwrap();
        }
        groups.refresh_metrics();
        assert!(m.render().contains("sluice_group_metrics_omitted 0"));
    }

    fn g_join(g: &Groups, group: &str, topic: &str) -> MemberView {
        g.join(
            group,
            JoinRequest {
                client_id: "c".into(),
                topics: vec![topic.into()],
                session_timeout_ms: Some(300_000),
                ..JoinRequest::default()
            },
        )
        .unwrap()
    }

    /// File I/O whose fsyncs block while the gate is closed.
    #[derive(Debug, Default)]
    struct GateIo {
        closed: std::sync::atomic::AtomicBool,
        /// fsyncs that found the gate closed.
        blocked: AtomicU64,
        lock: Mutex<()>,
        opened: std::sync::Condvar,
    }

    impl GateIo {
        fn open_gate(&self) {
            let _g = self.lock.lock().unwrap();
            self.closed.store(false, Ordering::SeqCst);
            self.opened.notify_all();
        }
    }

    impl FileIo for GateIo {
        fn allocate(&self, file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
            OsFileIo.allocate(file, offset, len)
        }
        fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
            let mut g = self.lock.lock().unwrap();
            if self.closed.load(Ordering::SeqCst) {
                self.blocked.fetch_add(1, Ordering::SeqCst);
                // Bounded: a test that never opens the gate still ends.
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while self.closed.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    g = self
                        .opened
                        .wait_timeout(g, Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
            }
            drop(g);
            OsFileIo.sync_data(file)
        }
    }

    /// Runs `f` on a thread; its result, or `None` if it is still blocked
    /// after `wait` (the thread is left to finish on its own).
    fn on_thread<T: Send + 'static>(
        wait: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(wait).ok()
    }

    /// A commit whose append rolls a segment and whose fsync hangs holds no
    /// lock that a heartbeat or a commit of another group needs. (Before,
    /// the append ran under the coordinator lock, and a roll fsyncs inline.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_stuck_in_fsync_does_not_block_other_groups() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(GateIo::default());
        let mut log_config = OffsetStore::default_log_config();
        log_config.segment_bytes = 4096;
        log_config.preallocate_bytes = 4096;
        let options = GroupsOptions {
            io: io.clone(),
            log_config,
            ..GroupsOptions::default()
        };
        let (broker, groups) = open_with(dir.path(), 3_300_000, options);
        broker.create_topic("t", 1, &[]).unwrap();
        broker.create_topic("u", 1, &[]).unwrap();
        let a = g_join(&groups, "ga", "t");
        let b = g_join(&groups, "gb", "u");
        let big = |tp: &TopicPartition, offset: u64| {
            let mut c = OffsetCommit::new(tp.clone(), offset);
            c.metadata = "m".repeat(3_000);
            c
        };
        let ta = a.assignment[0].clone();
        commit(&groups, "ga", &a.member_id, a.generation, &[big(&ta, 1)]);

        // The next commit of "ga" does not fit in the 4 KiB segment: its
        // append rolls, and the roll's fsync hangs.
        io.closed.store(true, Ordering::SeqCst);
        let (g, m, gen) = (Arc::clone(&groups), a.member_id.clone(), a.generation);
        let (tx, stuck) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = g
                .begin_commit("ga", &m, gen, &[big(&ta, 2)])
                .and_then(|t| g.finish_commit(t));
            let _ = tx.send(r);
        });
        let start = std::time::Instant::now();
        while io.blocked.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(io.blocked.load(Ordering::SeqCst) > 0, "no fsync blocked");

        // A heartbeat of another group answers meanwhile...
        // (An empty `owned` report: the partition is granted again at once.)
        let (g, m, gen) = (Arc::clone(&groups), b.member_id.clone(), b.generation);
        let hb = on_thread(Duration::from_secs(10), move || {
            match g.heartbeat("gb", &m, gen, &[], Duration::ZERO) {
                HeartbeatReply::Ready(r) => r.map(|v| v.generation),
                HeartbeatReply::Parked(_) => Ok(u32::MAX),
            }
        });
        // ...and so does the fencing and queuing of its commit.
        let (g, m, gen, tb) = (
            Arc::clone(&groups),
            b.member_id.clone(),
            b.generation,
            b.assignment[0].clone(),
        );
        let begun = on_thread(Duration::from_secs(10), move || {
            g.begin_commit("gb", &m, gen, &[OffsetCommit::new(tb, 7)])
        });
        let blocked_heartbeat = hb.is_none();
        let blocked_commit = begun.is_none();
        io.open_gate();
        assert!(
            !blocked_heartbeat,
            "a heartbeat of another group waited for the fsync"
        );
        assert!(
            !blocked_commit,
            "a commit of another group waited for the fsync"
        );
        assert_eq!(hb.unwrap().unwrap(), b.generation);
        // Once the disk answers, both commits complete.
        stuck
            .recv_timeout(Duration::from_secs(30))
            .unwrap()
            .unwrap();
        groups.finish_commit(begun.unwrap().unwrap()).unwrap();
        assert_eq!(groups.committed("ga").values().next().unwrap().offset, 2);
        assert_eq!(groups.committed("gb").values().next().unwrap().offset, 7);
        assert!(groups.store().log().segment_count() >= 2);
    }

    /// Deleting a topic through the broker (any front end) deletes every
    /// group's committed offsets on it, and only on it.
    #[tokio::test]
    async fn topic_deletion_through_the_broker_cascades_to_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path());
        broker.create_topic("gone", 1, &[]).unwrap();
        broker.create_topic("kept", 1, &[]).unwrap();
        let commits = vec![
            OffsetCommit::new(TopicPartition::new("gone", 0), 3),
            OffsetCommit::new(TopicPartition::new("kept", 0), 4),
        ];
        commit(&groups, "solo", "", 0, &commits);
        assert_eq!(groups.committed("solo").len(), 2);
        broker.delete_topic("gone").unwrap();
        let c = groups.committed("solo");
        assert_eq!(c.len(), 1);
        assert_eq!(c[&TopicPartition::new("kept", 0)].offset, 4);
        // After reopening too.
        groups.close().unwrap();
        broker.close().unwrap();
        drop((broker, groups));
        let (_broker, groups) = open(dir.path());
        assert_eq!(groups.committed("solo").len(), 1);
    }

    /// Which partitions of a commit are skipped is decided by Groups.
    #[tokio::test]
    async fn commit_targets_skip_unknown_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path());
        broker.create_topic("t", 1, &[]).unwrap();
        let target = groups.commit_target("t");
        assert_eq!(target.check(0), Ok(()));
        assert_eq!(target.check(1), Err(PartitionMissing::Unknown));
        assert_eq!(
            groups.commit_target("nope").check(0),
            Err(PartitionMissing::Unknown)
        );
    }

    /// With the fault-injecting file I/O under the partition logs: on a
    /// `flush = always` topic a produce whose fsync fails is refused and its
    /// records are never served, so a consumer that commits what it read
    /// never commits past the durable end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_never_commits_past_the_durable_end() {
        use crate::broker::{FetchParams, FetchTarget};
        let dir = tempfile::tempdir().unwrap();
        let cfg = ConfigLayer {
            data_dir: Some(dir.path().to_path_buf()),
            ..ConfigLayer::default()
        }
        .resolve()
        .unwrap();
        let io = Arc::new(sluice_log::FaultyFileIo::default());
        let broker =
            Arc::new(Broker::open_with_io(&cfg, Metrics::new(), Arc::clone(&io) as _).unwrap());
        let groups = Groups::open(
            dir.path(),
            Arc::clone(&broker),
            CoordinatorConfig::default(),
            1,
        )
        .unwrap();
        broker
            .create_topic("t", 1, &[("flush".into(), "always".into())])
            .unwrap();
        let batch = || {
            let mut b = sluice_protocol::batch::RecordBatchBuilder::new();
            b.push(1, None, Some(b"v"), &[]);
            b.finish()
        };
        let wait = Duration::from_secs(10);
        for _ in 0..3 {
            broker
                .produce("t", 0, &batch(), crate::Acks::Leader, wait)
                .await
                .unwrap();
        }
        io.fail_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..2 {
            assert!(broker
                .produce("t", 0, &batch(), crate::Acks::Leader, wait)
                .await
                .is_err());
        }
        let p = broker.partition("t", 0).unwrap();
        // The first failed produce's batch is in the log but not durable;
        // the failed fsync poisoned the log, so the second was refused.
        assert_eq!(p.end_offset(), 4);
        assert_eq!(p.log().durable_offset(), 3);

        // A consumer reads from the start, then commits the next offset.
        let r = broker
            .fetch(
                FetchParams {
                    targets: vec![FetchTarget {
                        topic: Arc::from("t"),
                        partition: 0,
                        offset: 0,
                        max_bytes: 1 << 20,
                    }],
                    min_bytes: 1,
                    max_bytes: 1 << 20,
                    max_wait: Duration::ZERO,
                },
                &CancellationToken::new(),
            )
            .await;
        let data = r[0].as_ref().unwrap();
        let mut next = 0u64;
        for b in sluice_protocol::batch::batches(&data.records) {
            let h = *b.unwrap().header();
            next = h.base_offset as u64 + h.last_offset_delta as u64 + 1;
        }
        assert_eq!(next, 3);
        assert!(data.high_watermark <= p.log().durable_offset());
        let tp = TopicPartition::new("t", 0);
        commit(&groups, "g", "", 0, &[OffsetCommit::new(tp.clone(), next)]);
        assert!(groups.committed("g")[&tp].offset <= p.log().durable_offset());
    }

    /// A commit still waiting for its fsync when its topic is deleted is
    /// deleted with the topic, not left behind for a re-created namesake.
    #[tokio::test]
    async fn a_commit_in_flight_is_deleted_with_its_topic() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, groups) = open(dir.path());
        broker.create_topic("gone", 1, &[]).unwrap();
        let tp = TopicPartition::new("gone", 0);
        let ticket = groups
            .begin_commit("solo", "", 0, &[OffsetCommit::new(tp.clone(), 3)])
            .unwrap();
        broker.delete_topic("gone").unwrap();
        groups.finish_commit(ticket).unwrap();
        assert!(
            groups.committed("solo").is_empty(),
            "{:?}",
            groups.committed("solo")
        );
        broker.create_topic("gone", 1, &[]).unwrap();
        assert!(!groups.committed("solo").contains_key(&tp));
    }
}
