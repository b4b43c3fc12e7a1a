//! The recovery plan: given what a partition directory holds (its file
//! names) and what its `recovery-point` file says, decide what opening the
//! log must do: which segments exist, which index files are orphans to
//! remove, how far to trust the data (clean, unclean from a recovery point,
//! or a full scan), which sealed segments to CRC-check and which to fsync.
//! Pure: no I/O, unit-tested without a disk. [`super::Log::open_with_io`]
//! carries it out (the way Kafka's `LogLoader` recovers what `LocalLog`
//! then serves).

use crate::checkpoint::Checkpoint;
use crate::segment;

use super::OpenKind;

/// Why the checkpoint was not trusted, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Distrust {
    /// No `recovery-point` file beside existing segments.
    Missing,
    /// The file is unreadable or damaged.
    Damaged(String),
}

/// What opening a log directory must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RecoveryPlan {
    /// How the log is recovered.
    pub kind: OpenKind,
    /// Why the checkpoint was not used, when it was not.
    pub distrust: Option<Distrust>,
    /// Base offsets of the segments (`.log` files), ascending; the last is
    /// the active segment. Empty: a new log (create a segment at 0).
    pub bases: Vec<u64>,
    /// Index files (by name) whose `.log` does not exist: to remove.
    pub orphans: Vec<String>,
}

impl RecoveryPlan {
    /// Plans from the directory's file names and the decoded checkpoint
    /// (`Ok(None)`: no file; `Err`: unreadable or damaged).
    pub fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        checkpoint: Result<Option<Checkpoint>, String>,
    ) -> RecoveryPlan {
        let mut bases = Vec::new();
        let mut indexes = Vec::new();
        for name in names {
            match segment::parse_file_name(name) {
                Some((base, "log")) => bases.push(base),
                Some((base, "index" | "timeindex")) => indexes.push((base, name)),
                _ => {}
            }
        }
        bases.sort_unstable();
        bases.dedup();
        // Indexes whose `.log` is gone (a crash between a segment deletion's
        // unlinks, or before a new segment's `.log` existed) belong to nothing.
        let orphans = indexes
            .into_iter()
            .filter(|(base, _)| bases.binary_search(base).is_err())
            .map(|(_, name)| name.to_string())
            .collect();
        // After a clean shutdown nothing is rescanned; otherwise every batch
        // from the recovery point on is CRC-checked, sealed segments
        // included; without a usable checkpoint, from the very start.
        let (kind, distrust) = match checkpoint {
            Ok(Some(Checkpoint { clean: true, .. })) => (OpenKind::Clean, None),
            Ok(Some(cp)) => (
                OpenKind::Unclean {
                    recovery_point: cp.recovery_offset,
                },
                None,
            ),
            Ok(None) if bases.is_empty() => (OpenKind::Clean, None),
            Ok(None) => (OpenKind::FullScan, Some(Distrust::Missing)),
            Err(why) => (OpenKind::FullScan, Some(Distrust::Damaged(why))),
        };
        RecoveryPlan {
            kind,
            distrust,
            bases,
            orphans,
        }
    }

    /// Offsets from here on are CRC-checked; `None` after a clean shutdown.
    pub fn recovery_point(&self) -> Option<u64> {
        match self.kind {
            OpenKind::Clean => None,
            OpenKind::Unclean { recovery_point } => Some(recovery_point),
            OpenKind::FullScan => Some(0),
        }
    }

    /// Whether the sealed segment followed by the segment at `next_base`
    /// must be CRC-checked: it holds offsets at or above the recovery point.
    pub fn check_sealed(&self, next_base: u64) -> bool {
        self.recovery_point().is_some_and(|r| next_base > r)
    }

    /// Whether a sealed segment ending before `next_offset` must be fsynced
    /// before the log reports everything durable: a killed process may have
    /// left its offsets at or above the recovery point in the page cache.
    /// (The active segment is always synced.)
    pub fn sync_sealed(&self, next_offset: u64) -> bool {
        self.recovery_point().is_some_and(|r| next_offset > r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(offset: u64, clean: bool) -> Result<Option<Checkpoint>, String> {
        Ok(Some(Checkpoint {
            recovery_offset: offset,
            clean,
        }))
    }

    fn names(bases: &[u64], exts: &[&str]) -> Vec<String> {
        bases
            .iter()
            .flat_map(|&b| exts.iter().map(move |e| segment::file_name(b, e)))
            .collect()
    }

    #[test]
    fn an_empty_directory_is_a_new_clean_log() {
        let p = RecoveryPlan::new([], Ok(None));
        assert_eq!(p.kind, OpenKind::Clean);
        assert!(p.bases.is_empty() && p.orphans.is_empty() && p.distrust.is_none());
        assert_eq!(p.recovery_point(), None);
    }

    #[test]
    fn segments_are_sorted_and_orphaned_indexes_found() {
        let mut n = names(&[300, 0, 100], &["log", "index", "timeindex"]);
        n.extend(names(&[400], &["index", "timeindex"]));
        n.extend([
            "recovery-point".to_string(),
            ".lock".to_string(),
            "junk.log.x".to_string(),
        ]);
        let p = RecoveryPlan::new(n.iter().map(String::as_str), cp(300, true));
        assert_eq!(p.bases, [0, 100, 300]);
        let mut orphans = p.orphans.clone();
        orphans.sort();
        assert_eq!(
            orphans,
            [
                segment::file_name(400, "index"),
                segment::file_name(400, "timeindex")
            ]
        );
    }

    #[test]
    fn the_checkpoint_decides_how_much_is_checked() {
        let n = names(&[0, 100, 200], &["log"]);
        let n = || n.iter().map(String::as_str);

        let clean = RecoveryPlan::new(n(), cp(250, true));
        assert_eq!(clean.kind, OpenKind::Clean);
        assert!(!clean.check_sealed(100) && !clean.check_sealed(200));
        assert!(!clean.sync_sealed(u64::MAX));

        let unclean = RecoveryPlan::new(n(), cp(150, false));
        assert_eq!(
            unclean.kind,
            OpenKind::Unclean {
                recovery_point: 150
            }
        );
        // Segment [0, 100) is below 150: trusted; [100, 200) holds 150: checked.
        assert!(!unclean.check_sealed(100));
        assert!(unclean.check_sealed(200));
        assert!(!unclean.sync_sealed(100) && !unclean.sync_sealed(150));
        assert!(unclean.sync_sealed(151));

        let missing = RecoveryPlan::new(n(), Ok(None));
        assert_eq!(missing.kind, OpenKind::FullScan);
        assert_eq!(missing.distrust, Some(Distrust::Missing));
        assert!(missing.check_sealed(100) && missing.sync_sealed(1));

        let damaged = RecoveryPlan::new(n(), Err("CRC mismatch".into()));
        assert_eq!(damaged.kind, OpenKind::FullScan);
        assert_eq!(
            damaged.distrust,
            Some(Distrust::Damaged("CRC mismatch".into()))
        );
        assert_eq!(damaged.recovery_point(), Some(0));
    }
}
