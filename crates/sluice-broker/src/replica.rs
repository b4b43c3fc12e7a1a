//! Replication state of one partition: its role (leader, follower or not
//! replicated), the leader-epoch history, and the pure rules that move the
//! high watermark and find where a follower's log diverges.
//!
//! The design is in `docs/replication.md`. In short:
//!
//! - The cluster metadata names each partition's leader, leader epoch and
//!   in-sync replicas (ISR); `sluiced` hands them to the partition
//!   ([`crate::partition::Partition::become_leader`] /
//!   [`crate::partition::Partition::become_follower`]).
//! - A leader stamps its epoch into every batch it appends, and records
//!   `(epoch, start offset)` in the [`EpochHistory`] before the first one.
//! - Followers fetch with ReplicaFetch, reporting their log end and their
//!   fsynced (durable) offset. The leader's high watermark is the minimum
//!   over the ISR (itself included) of those offsets ([`high_watermarks`]);
//!   the ISR always holds a majority of the replicas, so what is below the
//!   high watermark is on a majority.
//! - A follower's log is checked against the leader's history before it is
//!   extended ([`EpochHistory::end_of`], KIP-595's diverging epoch): a
//!   follower whose last epoch ends earlier in the leader's log (a deposed
//!   leader's unreplicated tail) truncates to that end first.
//!
//! ## `leader-epoch-checkpoint`
//!
//! One text file per partition directory, replaced atomically (written to
//! `leader-epoch-checkpoint.tmp`, fsynced, renamed, directory fsynced),
//! in Kafka's layout:
//!
//! | line | content |
//! |------|---------|
//! | 1 | format version, `0` |
//! | 2 | number of entries `n` |
//! | 3 .. 3+n | `epoch start_offset`, ascending in both |
//!
//! A missing file is an empty history; a damaged one is logged and read as
//! empty (a follower then re-checks from its first batch, which costs a
//! truncation at worst, never data below the leader's high watermark).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::BrokerError;

/// File name of the leader-epoch history in a partition directory.
pub const EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// Largest number of entries read from a history file.
const MAX_ENTRIES: usize = 1 << 20;

/// The leader epochs of a partition's log: `(epoch, first offset)` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(u32, u64)>,
}

impl EpochHistory {
    /// A history from entries (ascending epochs and offsets).
    pub fn from_entries(entries: Vec<(u32, u64)>) -> EpochHistory {
        EpochHistory { entries }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[(u32, u64)] {
        &self.entries
    }

    /// Reads the history file of `dir` (empty when missing or damaged).
    pub fn load(dir: &Path) -> EpochHistory {
        let path = dir.join(EPOCH_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return EpochHistory::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the leader-epoch history; starting empty");
                return EpochHistory::default();
            }
        };
        match parse(&text) {
            Some(h) => h,
            None => {
                tracing::warn!(path = %path.display(), "damaged leader-epoch history; starting empty");
                EpochHistory::default()
            }
        }
    }

    /// Writes the history to `dir` atomically and durably.
    pub fn store(&self, dir: &Path) -> Result<(), BrokerError> {
        let path = dir.join(EPOCH_FILE);
        let tmp: PathBuf = dir.join(format!("{EPOCH_FILE}.tmp"));
        let io = |p: &Path, source| BrokerError::Io {
            path: p.to_path_buf(),
            source,
        };
        let mut text = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            text.push_str(&format!("{e} {o}\n"));
        }
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))
    }

    /// Records that `epoch` starts at `offset`; false when nothing changed
    /// (an older or equal epoch). Entries starting at or after `offset` with
    /// a smaller epoch are replaced (they held no batch).
    pub fn assign(&mut self, epoch: u32, offset: u64) -> bool {
        if self.entries.last().is_some_and(|(e, _)| *e >= epoch) {
            return false;
        }
        while self.entries.last().is_some_and(|(_, o)| *o >= offset) {
            self.entries.pop();
        }
        self.entries.push((epoch, offset));
        true
    }

    /// Drops the epochs that start at or after `offset` (after a
    /// truncation to `offset`); true when something was dropped.
    pub fn truncate_from(&mut self, offset: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, o)| *o < offset);
        self.entries.len() != before
    }

    /// The epoch of the last batch of a log that ends at `end` (-1: none).
    pub fn last_epoch_before(&self, end: u64) -> i32 {
        self.entries
            .iter()
            .rev()
            .find(|(_, o)| *o < end)
            .map_or(-1, |(e, _)| *e as i32)
    }

    /// For a follower whose last epoch is `epoch`: the largest epoch `<=
    /// epoch` in this history and where it ends in a log ending at `end`
    /// (the start of the next epoch, else `end`). `None` when this history
    /// has no such epoch.
    pub fn end_of(&self, epoch: i32, end: u64) -> Option<(u32, u64)> {
        if epoch < 0 {
            return None;
        }
        let i = self
            .entries
            .iter()
            .rposition(|(e, _)| i64::from(*e) <= i64::from(epoch))?;
        let found = self.entries[i].0;
        let stop = self.entries.get(i + 1).map_or(end, |(_, o)| (*o).min(end));
        Some((found, stop))
    }
}

fn parse(text: &str) -> Option<EpochHistory> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let n: usize = lines.next()?.trim().parse().ok()?;
    if n > MAX_ENTRIES {
        return None;
    }
    let mut entries = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let mut parts = lines.next()?.split_whitespace();
        let e: u32 = parts.next()?.parse().ok()?;
        let o: u64 = parts.next()?.parse().ok()?;
        if entries
            .last()
            .is_some_and(|(pe, po): &(u32, u64)| *pe >= e || *po > o)
        {
            return None;
        }
        entries.push((e, o));
    }
    Some(EpochHistory { entries })
}

/// What a leader checks a follower's fetch position against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchCheck {
    /// The follower's log is a prefix of the leader's: serve from `fetch_offset`.
    Serve,
    /// The follower must truncate to at most `end_offset` (end of `epoch` here).
    Diverging {
        /// The leader's epoch at or below the follower's last.
        epoch: u32,
        /// Where that epoch ends in the leader's log.
        end_offset: u64,
    },
    /// The position is outside the leader's log.
    OutOfRange,
}

/// Checks a follower at `fetch_offset` whose last batch has epoch
/// `last_epoch` against a leader log `[start, end)` with `history`.
pub fn check_fetch(
    history: &EpochHistory,
    start: u64,
    end: u64,
    fetch_offset: u64,
    last_epoch: i32,
) -> FetchCheck {
    if last_epoch >= 0 {
        match history.end_of(last_epoch, end) {
            Some((e, stop)) if i64::from(e) != i64::from(last_epoch) || fetch_offset > stop => {
                return FetchCheck::Diverging {
                    epoch: e,
                    end_offset: stop,
                };
            }
            Some(_) => {}
            None => {
                // Every epoch here is newer than the follower's last: it
                // keeps at most what precedes this history.
                let first = history.entries().first().map_or(start, |(_, o)| *o);
                if fetch_offset > first {
                    return FetchCheck::Diverging {
                        epoch: 0,
                        end_offset: first,
                    };
                }
            }
        }
    }
    if fetch_offset < start || fetch_offset > end {
        return FetchCheck::OutOfRange;
    }
    FetchCheck::Serve
}

/// Where a follower truncates on a diverging answer `(epoch, leader_end)`:
/// the smaller of the leader's end of that epoch and the follower's own.
pub fn truncation_point(own: &EpochHistory, own_end: u64, epoch: u32, leader_end: u64) -> u64 {
    let mine = own.end_of(epoch as i32, own_end).map_or(
        own.entries().first().map_or(own_end, |(_, o)| *o),
        |(_, s)| s,
    );
    leader_end.min(mine).min(own_end)
}

/// A follower as its leader last heard of it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// Its log end offset.
    pub end: u64,
    /// Its fsynced offset.
    pub durable: u64,
    /// When it last fetched.
    pub last_fetch: Instant,
    /// When it last was caught up (fetched from at least the leader's end
    /// at its previous answer).
    pub caught_up: Instant,
    /// The leader's log end when it last answered this follower.
    pub end_at_answer: u64,
}

/// A partition leader's replication state.
#[derive(Debug, Clone)]
pub struct LeaderState {
    /// This broker.
    pub me: u32,
    /// The leader epoch.
    pub epoch: u32,
    /// The partition epoch of the ISR below (guards AlterIsr).
    pub partition_epoch: u32,
    /// Every replica.
    pub replicas: Vec<u32>,
    /// The in-sync replicas (with `me`).
    pub isr: Vec<u32>,
    /// The followers heard from in this epoch.
    pub followers: HashMap<u32, FollowerProgress>,
    /// When this broker became leader in this epoch.
    pub since: Instant,
}

/// A partition's role in replication.
#[derive(Debug, Clone)]
pub enum Role {
    /// Not in a cluster: the single-node rules (the high watermark follows
    /// the log or its fsyncs alone).
    Solo,
    /// Leads in an epoch.
    Leader(LeaderState),
    /// Follows `leader` (None: no leader, or not a replica here) in `epoch`.
    Follower {
        /// The leader epoch followed.
        epoch: u32,
        /// The leader's broker id.
        leader: Option<u32>,
    },
}

/// The high watermarks of a leader: `(visible, durable)`. `visible` is the
/// minimum over the ISR of the log ends (or of the durable offsets when
/// `durable_reads`); `durable` the minimum of the durable offsets. A member
/// not heard from in this epoch counts as 0.
pub fn high_watermarks(
    l: &LeaderState,
    own_end: u64,
    own_durable: u64,
    durable_reads: bool,
) -> (u64, u64) {
    let own_durable = own_durable.min(own_end);
    let mut visible = if durable_reads { own_durable } else { own_end };
    let mut durable = own_durable;
    for r in &l.isr {
        if *r == l.me {
            continue;
        }
        match l.followers.get(r) {
            Some(p) => {
                visible = visible.min(if durable_reads { p.durable } else { p.end });
                durable = durable.min(p.durable);
            }
            None => return (0, 0),
        }
    }
    (visible, durable)
}

/// The ISR a leader should propose at `now`, if it should change: a member
/// not caught up for `lag` leaves (never below a majority of the replicas,
/// one at a time); a replica outside whose durable offset reached
/// `durable_hw` and that fetched in this epoch joins.
pub fn isr_change(
    l: &LeaderState,
    durable_hw: u64,
    now: Instant,
    lag: std::time::Duration,
) -> Option<Vec<u32>> {
    let majority = l.replicas.len() / 2 + 1;
    for r in &l.replicas {
        if *r == l.me || l.isr.contains(r) {
            continue;
        }
        if l.followers
            .get(r)
            .is_some_and(|p| p.durable >= durable_hw && now.duration_since(p.last_fetch) < lag)
        {
            let mut isr = l.isr.clone();
            isr.push(*r);
            isr.sort_by_key(|x| l.replicas.iter().position(|y| y == x));
            return Some(isr);
        }
    }
    if l.isr.len() > majority {
        for r in &l.isr {
            if *r == l.me {
                continue;
            }
            let since = l.followers.get(r).map_or(l.since, |p| p.caught_up);
            if now.duration_since(since) > lag {
                return Some(l.isr.iter().copied().filter(|x| x != r).collect());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn leader(isr: &[u32]) -> LeaderState {
        LeaderState {
            me: 1,
            epoch: 3,
            partition_epoch: 0,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            followers: HashMap::new(),
            since: Instant::now(),
        }
    }

    fn progress(end: u64, durable: u64, at: Instant) -> FollowerProgress {
        FollowerProgress {
            end,
            durable,
            last_fetch: at,
            caught_up: at,
            end_at_answer: end,
        }
    }

    #[test]
    fn history_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(EpochHistory::load(dir.path()), EpochHistory::default());
        let mut h = EpochHistory::default();
        assert!(h.assign(0, 0));
        assert!(h.assign(2, 10));
        assert!(!h.assign(2, 12));
        assert!(!h.assign(1, 12));
        assert!(h.assign(5, 10), "an epoch with no batch is replaced");
        assert_eq!(h.entries(), &[(0, 0), (5, 10)]);
        h.store(dir.path()).unwrap();
        assert_eq!(EpochHistory::load(dir.path()), h);
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n2\n3 5\n2 9\n",
            "0\nx\n",
            "0\n1\n1\n",
        ] {
            std::fs::write(dir.path().join(EPOCH_FILE), bad).unwrap();
            assert_eq!(
                EpochHistory::load(dir.path()),
                EpochHistory::default(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn last_epoch_and_truncation_follow_the_log_end() {
        let mut h = EpochHistory::from_entries(vec![(0, 0), (2, 10), (4, 20)]);
        assert_eq!(h.last_epoch_before(25), 4);
        assert_eq!(h.last_epoch_before(20), 2, "epoch 4 has no batch below 20");
        assert_eq!(h.last_epoch_before(0), -1);
        assert!(h.truncate_from(15));
        assert_eq!(h.entries(), &[(0, 0), (2, 10)]);
        assert!(!h.truncate_from(15));
    }

    #[test]
    fn a_follower_that_is_a_prefix_is_served() {
        let h = EpochHistory::from_entries(vec![(0, 0), (2, 10), (4, 20)]);
        assert_eq!(check_fetch(&h, 0, 30, 0, -1), FetchCheck::Serve);
        assert_eq!(check_fetch(&h, 0, 30, 10, 0), FetchCheck::Serve);
        assert_eq!(check_fetch(&h, 0, 30, 15, 2), FetchCheck::Serve);
        assert_eq!(check_fetch(&h, 0, 30, 30, 4), FetchCheck::Serve);
        // Past the end in the leader's own last epoch: cut back to its end.
        assert_eq!(
            check_fetch(&h, 0, 30, 31, 4),
            FetchCheck::Diverging {
                epoch: 4,
                end_offset: 30
            }
        );
        assert_eq!(check_fetch(&h, 0, 30, 31, -1), FetchCheck::OutOfRange);
        assert_eq!(check_fetch(&h, 5, 30, 0, -1), FetchCheck::OutOfRange);
    }

    #[test]
    fn a_deposed_leaders_tail_diverges_and_is_cut_at_the_epoch_end() {
        // Leader: epochs 0@0, 2@10, 4@20. A follower that led epoch 3
        // (never known here) and wrote 12..18 in it: its last epoch is 3.
        let leader = EpochHistory::from_entries(vec![(0, 0), (2, 10), (4, 20)]);
        let check = check_fetch(&leader, 0, 30, 18, 3);
        assert_eq!(
            check,
            FetchCheck::Diverging {
                epoch: 2,
                end_offset: 20
            }
        );
        // The follower's own history: 0@0, 2@10, 3@12 -> end of epoch 2 is 12.
        let own = EpochHistory::from_entries(vec![(0, 0), (2, 10), (3, 12)]);
        assert_eq!(truncation_point(&own, 18, 2, 20), 12);
        // A follower in the same epoch but past the leader's end of it
        // (KIP-279: two quick leader changes).
        assert_eq!(
            check_fetch(&leader, 0, 30, 15, 0),
            FetchCheck::Diverging {
                epoch: 0,
                end_offset: 10
            }
        );
        let own = EpochHistory::from_entries(vec![(0, 0)]);
        assert_eq!(truncation_point(&own, 15, 0, 10), 10);
        // A follower older than all the leader's history.
        let newer = EpochHistory::from_entries(vec![(5, 40)]);
        assert_eq!(
            check_fetch(&newer, 0, 50, 45, 3),
            FetchCheck::Diverging {
                epoch: 0,
                end_offset: 40
            }
        );
    }

    #[test]
    fn the_high_watermark_is_the_minimum_over_the_isr() {
        let now = Instant::now();
        let mut l = leader(&[1, 2, 3]);
        assert_eq!(
            high_watermarks(&l, 100, 90, false),
            (0, 0),
            "followers not heard from"
        );
        l.followers.insert(2, progress(80, 70, now));
        l.followers.insert(3, progress(100, 100, now));
        assert_eq!(high_watermarks(&l, 100, 90, false), (80, 70));
        assert_eq!(high_watermarks(&l, 100, 90, true), (70, 70));
        l.isr = vec![1, 3];
        assert_eq!(high_watermarks(&l, 100, 90, false), (100, 90));
        assert_eq!(
            high_watermarks(&l, 100, 120, false),
            (100, 100),
            "durable capped by the end"
        );
    }

    #[test]
    fn isr_shrinks_to_a_majority_and_grows_back() {
        let lag = Duration::from_secs(10);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(11);
        let mut l = leader(&[1, 2, 3]);
        l.since = t0;
        l.followers.insert(2, progress(50, 50, t0));
        l.followers.insert(3, progress(50, 50, later));
        assert_eq!(isr_change(&l, 50, t0 + Duration::from_secs(5), lag), None);
        assert_eq!(isr_change(&l, 50, later, lag), Some(vec![1, 3]));
        l.isr = vec![1, 3];
        l.followers.get_mut(&3).unwrap().caught_up = t0;
        assert_eq!(
            isr_change(&l, 50, later, lag),
            None,
            "never below a majority"
        );
        // 2 catches up and fetches again: it joins.
        l.followers.insert(2, progress(60, 60, later));
        assert_eq!(isr_change(&l, 60, later, lag), Some(vec![1, 2, 3]));
        assert_eq!(
            isr_change(&l, 61, later, lag),
            None,
            "not yet durable to the mark"
        );
    }
}
