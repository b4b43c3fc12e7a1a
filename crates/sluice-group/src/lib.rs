//! Sluice consumer groups, independent of any wire protocol.
//!
//! This crate owns the decisions that are easy to get wrong — membership,
//! generations, sticky balanced assignment, revoke-before-grant, commit
//! fencing — as pure code that tests drive without sockets or clocks, plus
//! the durable committed-offset store over `sluice-log`. The broker maps the
//! native JoinGroup/Heartbeat/LeaveGroup/OffsetCommit/OffsetFetch/ListGroups/
//! DescribeGroups requests onto it; the Kafka-wire front end runs the
//! classic JoinGroup/SyncGroup protocol on [`classic`], over the same store
//! and group namespace.
//!
//! Layout:
//! - [`mod@assign`]: the assignment function (sticky, balanced), a plain function.
//! - [`coordinator`]: the state machine for many groups: join, heartbeat,
//!   leave, `tick` expiry, generations, revocation before grant, fencing checks.
//! - [`classic`]: the Kafka classic group protocol (join and sync barriers,
//!   leader-chosen assignment, static membership), its own state machine
//!   with parked requests answered through tickets; [`consumer_protocol`]
//!   reads the Kafka consumer's subscription and assignment bytes.
//! - [`offsets`]: the `__consumer_offsets` log: record layout, replay
//!   (compaction on load), durable commits, and the fenced commit/delete/seek
//!   entry points that consult the coordinator.
//! - [`mod@lag`]: lag in records and in milliseconds.
//! - [`error`]: [`GroupError`], one variant per group error code, and
//!   [`ClassicError`] with Apache Kafka's codes.
//!
//! Locking is the caller's: the broker keeps one `Coordinator` behind a mutex
//! and one `OffsetStore` (internally synchronised) beside it; see
//! [`offsets::begin_fenced_commit`] for how a commit is fenced under the
//! coordinator lock but waits for its fsync outside it.
//!
//! # Wiring the group APIs (broker side)
//!
//! | API            | calls                                                                        |
//! |----------------|------------------------------------------------------------------------------|
//! | JoinGroup      | `Coordinator::join` → `MemberView` (member id, generation, assignment, ...)  |
//! | Heartbeat      | `Coordinator::heartbeat` with the member's `owned` report → `MemberView`; may be parked until `take_notifications` names the member or the interval passes |
//! | LeaveGroup     | `Coordinator::leave`                                                         |
//! | (timer)        | `Coordinator::tick` at `next_deadline_ms`; the catalog is the topic table    |
//! | OffsetCommit   | under the coordinator lock `offsets::begin_fenced_commit` (no I/O), unlock, `OffsetStore::finish` (append, fsync; blocking) |
//! | OffsetFetch    | `OffsetStore::fetch` / `fetch_group`                                         |
//! | ListGroups     | `Coordinator::list_groups` ∪ `OffsetStore::groups` (offset-only groups are `Empty`) |
//! | DescribeGroups | `Coordinator::describe` + `OffsetStore::fetch_group` + each partition's end offset and [`lag::timestamp_at`] → [`lag::lag`] |
//! | group delete   | under the lock `offsets::begin_delete_group` (NonEmptyGroup while members exist), unlock, `OffsetStore::finish_counted` |
//! | (timer)        | `OffsetStore::expiry_candidates`, under the lock `offsets::begin_expire_candidates`, unlock, `offsets::finish_expiry` (offsets retention) |
//! | group seek     | resolve earliest/latest/timestamp per partition, then `offsets::reset_offsets` |
//!
//! Every error maps to a wire code with [`GroupError::code`].

#![warn(missing_docs)]

pub mod assign;
pub mod classic;
pub mod consumer_protocol;
pub mod coordinator;
pub mod error;
pub mod lag;
pub mod offsets;

pub use assign::{assign, Assignment, MemberId, TopicPartition};
pub use classic::{
    ClassicConfig, ClassicCoordinator, ClassicGroupDescription, ClassicGroupListing, ClassicJoin,
    ClassicMemberDescription, ClassicState, ClassicSync, Completion, JoinMember, JoinReply,
    JoinedGroup, RemovalReason, Removed, SyncedGroup, Ticket,
};
pub use coordinator::{
    AssignmentMode, Committer, Coordinator, CoordinatorConfig, Expired, ExpiryReason,
    GroupDescription, GroupListing, GroupState, JoinRequest, MemberDescription, MemberView,
    Occupancy, TopicCatalog, DEFAULT_OFFSETS_RETENTION_MS,
};
pub use error::{ClassicError, GroupError};
pub use lag::{lag, timestamp_at, Lag};
pub use offsets::{
    begin_delete_group, begin_expire_candidates, begin_expire_candidates_with_classic,
    begin_expire_offsets, begin_fenced_commit, check_commit_offsets, fenced_commit, finish_expiry,
    offset_expired, reset_offsets, CommitTicket, CommittedOffset, ExpiryCandidates, ExpiryNow,
    ExpiryPass, OffsetCommit, OffsetRetention, OffsetStore, ReplayStats,
};

#[cfg(test)]
mod tests {
    /// The broker shares these across tasks.
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Coordinator>();
        check::<crate::OffsetStore>();
        check::<crate::GroupError>();
        check::<crate::ClassicCoordinator>();
        check::<crate::ClassicError>();
    }
}
