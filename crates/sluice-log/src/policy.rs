//! Pure decisions: when to roll the active segment and which sealed segments
//! retention deletes. No I/O, so they are unit-tested without disks.

/// What retention needs to know about one sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// First offset of the segment.
    pub base_offset: u64,
    /// Bytes of batches in the `.log` file.
    pub size_bytes: u64,
    /// Largest batch max-timestamp in the segment, or -1 if unknown.
    pub max_timestamp: i64,
    /// Last modification time of the `.log` file, ms since the epoch.
    pub modified_ms: i64,
}

impl SegmentSummary {
    /// The time retention compares against: the largest timestamp when the
    /// segment has one, else the file's modification time.
    pub fn retention_time_ms(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.modified_ms
        }
    }
}

/// Whether the active segment must be rolled before appending `incoming`
/// bytes: it is non-empty and either the append would take it past
/// `segment_bytes`, or its first append is older than `segment_ms`.
pub fn should_roll(
    active_size: u64,
    incoming: u64,
    first_append_ms: Option<i64>,
    now_ms: i64,
    segment_bytes: u64,
    segment_ms: Option<u64>,
) -> bool {
    if active_size == 0 {
        return false;
    }
    if active_size.saturating_add(incoming) > segment_bytes {
        return true;
    }
    match (segment_ms, first_append_ms) {
        (Some(limit), Some(first)) => {
            now_ms.saturating_sub(first) >= 0 && (now_ms.saturating_sub(first) as u64) >= limit
        }
        _ => false,
    }
}

/// How many of the oldest sealed segments (`sealed`, oldest first) retention
/// deletes. The active segment is never deleted; its size still counts
/// towards `retention_bytes`.
///
/// - By time: a segment expires when `now_ms - retention_time_ms > retention_ms`;
///   deletion stops at the first segment that has not expired (retention
///   never leaves a hole).
/// - By size: the oldest segments go while the total stays above
///   `retention_bytes` after removing them.
///
/// The result is the larger of the two counts.
pub fn segments_to_delete(
    sealed: &[SegmentSummary],
    active_size: u64,
    now_ms: i64,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
) -> usize {
    let by_time = match retention_ms {
        Some(limit) => sealed
            .iter()
            .take_while(|s| {
                let age = now_ms.saturating_sub(s.retention_time_ms());
                age > 0 && (age as u64) > limit
            })
            .count(),
        None => 0,
    };
    let by_size = match retention_bytes {
        Some(limit) => {
            let total: u64 = sealed.iter().map(|s| s.size_bytes).sum::<u64>() + active_size;
            let mut excess = total.saturating_sub(limit);
            let mut n = 0;
            for s in sealed {
                if excess == 0 || s.size_bytes > excess {
                    break;
                }
                excess -= s.size_bytes;
                n += 1;
            }
            n
        }
        None => 0,
    };
    by_time.max(by_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: u64, size: u64, ts: i64) -> SegmentSummary {
        SegmentSummary {
            base_offset: base,
            size_bytes: size,
            max_timestamp: ts,
            modified_ms: 1_000,
        }
    }

    #[test]
    fn roll_by_size_only_when_non_empty() {
        assert!(!should_roll(0, 10_000, None, 0, 100, None));
        assert!(!should_roll(50, 50, None, 0, 100, None));
        assert!(should_roll(50, 51, None, 0, 100, None));
    }

    #[test]
    fn roll_by_age() {
        assert!(!should_roll(10, 1, Some(1_000), 1_500, 100, Some(1_000)));
        assert!(should_roll(10, 1, Some(1_000), 2_000, 100, Some(1_000)));
        assert!(!should_roll(10, 1, None, 9_000, 100, Some(1_000)));
        // A clock that went backwards never rolls.
        assert!(!should_roll(10, 1, Some(5_000), 1_000, 100, Some(1_000)));
    }

    #[test]
    fn retention_by_time_stops_at_first_live_segment() {
        let s = [seg(0, 10, 100), seg(10, 10, 5_000), seg(20, 10, 200)];
        assert_eq!(segments_to_delete(&s, 0, 1_100, Some(1_000), None), 0);
        assert_eq!(segments_to_delete(&s, 0, 1_101, Some(1_000), None), 1);
        assert_eq!(segments_to_delete(&s, 0, 6_001, Some(1_000), None), 3);
    }

    #[test]
    fn retention_by_time_falls_back_to_mtime() {
        let s = [seg(0, 10, -1)];
        assert_eq!(segments_to_delete(&s, 0, 1_500, Some(1_000), None), 0);
        assert_eq!(segments_to_delete(&s, 0, 2_001, Some(1_000), None), 1);
    }

    #[test]
    fn retention_by_size_counts_active() {
        let s = [seg(0, 100, 0), seg(10, 100, 0), seg(20, 100, 0)];
        assert_eq!(segments_to_delete(&s, 50, 0, None, Some(1_000)), 0);
        assert_eq!(segments_to_delete(&s, 50, 0, None, Some(350)), 0);
        assert_eq!(segments_to_delete(&s, 50, 0, None, Some(250)), 1);
        assert_eq!(segments_to_delete(&s, 50, 0, None, Some(50)), 3);
        assert_eq!(segments_to_delete(&s, 50, 0, None, Some(0)), 3);
    }

    #[test]
    fn retention_takes_the_larger_count() {
        let s = [seg(0, 100, 0), seg(10, 100, 10_000)];
        assert_eq!(segments_to_delete(&s, 0, 5_000, Some(1_000), Some(150)), 1);
        assert_eq!(
            segments_to_delete(&s, 0, 50_000, Some(1_000), Some(1_000)),
            2
        );
        assert_eq!(segments_to_delete(&[], 1_000, 50_000, Some(1), Some(1)), 0);
    }
}
