//! Idempotent-producer state of one partition: the sequence checks that keep
//! a producer's batches in order and answer a retried batch with its original
//! offsets instead of appending it twice (Kafka's `ProducerStateManager`, kept
//! minimal). Pure logic: [`crate::partition::Partition::append`] calls
//! [`ProducerStates::check`] and [`ProducerStates::record`] while holding the
//! partition's append lock, so check and append are one step.
//!
//! Per producer id the partition remembers:
//!
//! | field    | meaning                                                                 |
//! |----------|-------------------------------------------------------------------------|
//! | `epoch`  | the producer epoch of its latest batch (lower epochs are fenced)        |
//! | `last_seq` | sequence number of the last record appended                           |
//! | `recent` | the last [`RECENT_BATCHES`] batches: `(first_seq, last_seq) -> (base_offset, last_offset)` |
//!
//! Rules for a batch with producer id `pid >= 0`, epoch `e`, first sequence
//! `f` and last sequence `l` (`f + record_count - 1`, wrapping at `i32::MAX`):
//!
//! | state of `pid`                 | verdict |
//! |--------------------------------|---------|
//! | unknown (new, or broker restarted) | append at any `f` |
//! | `e < epoch`                    | `INVALID_PRODUCER_EPOCH` |
//! | `e > epoch`                    | append at any `f`; the state restarts with epoch `e` |
//! | `(f, l)` is in `recent`        | duplicate: answer the original offsets, append nothing |
//! | `f == last_seq + 1`            | append |
//! | otherwise                      | `OUT_OF_ORDER_SEQUENCE_NUMBER` |
//!
//! Batches with `producer_id = -1` are never checked. The state lives in
//! memory; on open the partition rebuilds it from the batch headers of its
//! log's tail (see [`crate::partition`]). A producer with nothing in that
//! tail is unknown after a restart, so its first batch to the partition is
//! accepted at any sequence (what Kafka does when a producer's state is
//! unknown): for it, a batch whose acknowledgement was lost right before the
//! restart can be appended twice; everything else stays exact.
//! Producers idle long enough are forgotten: each partition keeps at most
//! [`MAX_PRODUCERS`] producer ids, dropping the least recently used.

use std::collections::{HashMap, VecDeque};

use sluice_protocol::batch::BatchHeader;

/// How many recent batches per producer and partition are remembered for duplicate detection
/// (a producer has at most this many batches in flight per partition).
pub const RECENT_BATCHES: usize = 5;
/// Producer ids remembered per partition; the least recently used is dropped beyond it.
pub const MAX_PRODUCERS: usize = 1024;

/// The idempotence fields of one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeq {
    /// Producer id (>= 0).
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
}

impl BatchSeq {
    /// The idempotence fields of `h`, or `None` for a non-idempotent batch (`producer_id < 0`).
    pub fn of(h: &BatchHeader) -> Option<BatchSeq> {
        if h.producer_id < 0 {
            return None;
        }
        let count = h.record_count.max(1);
        Some(BatchSeq {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            last_seq: add_seq(h.base_sequence, count - 1),
        })
    }
}

/// `seq + n`, wrapping from `i32::MAX` to 0 as Kafka sequences do.
pub fn add_seq(seq: i32, n: i32) -> i32 {
    let sum = i64::from(seq.max(0)) + i64::from(n.max(0));
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// What to do with one idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it, then call [`ProducerStates::record`].
    Append,
    /// Already appended: answer these `(base_offset, last_offset)` and append nothing.
    Duplicate(u64, u64),
    /// Reject it for this reason.
    Reject(Rejection),
}

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A sequence gap, or a batch older than the ones remembered (Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrderSequence,
    /// The producer's epoch is older than the newest seen (Kafka's INVALID_PRODUCER_EPOCH).
    FencedEpoch,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejection::OutOfOrderSequence => "out of order sequence number",
            Rejection::FencedEpoch => "fenced producer epoch",
        })
    }
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    last_seq: i32,
    recent: VecDeque<(i32, i32, u64, u64)>,
    last_used: u64,
}

/// Every known producer of one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

impl ProducerStates {
    /// Decides what to do with an idempotent batch (see the module table).
    pub fn check(&self, b: &BatchSeq) -> Verdict {
        let Some(p) = self.producers.get(&b.producer_id) else {
            return Verdict::Append;
        };
        if b.epoch < p.epoch {
            return Verdict::Reject(Rejection::FencedEpoch);
        }
        if b.epoch > p.epoch {
            return Verdict::Append;
        }
        if let Some(&(_, _, base, last)) = p
            .recent
            .iter()
            .find(|(f, l, _, _)| *f == b.first_seq && *l == b.last_seq)
        {
            return Verdict::Duplicate(base, last);
        }
        if b.first_seq == add_seq(p.last_seq, 1) {
            Verdict::Append
        } else {
            Verdict::Reject(Rejection::OutOfOrderSequence)
        }
    }

    /// Records a batch that was appended at `base_offset..=last_offset`.
    pub fn record(&mut self, b: &BatchSeq, base_offset: u64, last_offset: u64) {
        self.clock += 1;
        let now = self.clock;
        if !self.producers.contains_key(&b.producer_id) && self.producers.len() >= MAX_PRODUCERS {
            if let Some((&oldest, _)) = self.producers.iter().min_by_key(|(_, p)| p.last_used) {
                self.producers.remove(&oldest);
            }
        }
        let p = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: b.epoch,
                last_seq: b.last_seq,
                recent: VecDeque::with_capacity(RECENT_BATCHES),
                last_used: now,
            });
        if b.epoch != p.epoch {
            p.epoch = b.epoch;
            p.recent.clear();
        }
        p.last_seq = b.last_seq;
        p.last_used = now;
        if p.recent.len() == RECENT_BATCHES {
            p.recent.pop_front();
        }
        p.recent
            .push_back((b.first_seq, b.last_seq, base_offset, last_offset));
    }

    /// Number of producer ids known on this partition.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer id is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(pid: i64, epoch: i16, first: i32, count: i32) -> BatchSeq {
        BatchSeq {
            producer_id: pid,
            epoch,
            first_seq: first,
            last_seq: add_seq(first, count - 1),
        }
    }

    #[test]
    fn in_order_batches_append_and_a_gap_is_rejected() {
        let mut s = ProducerStates::default();
        let b0 = seq(7, 0, 0, 3);
        assert_eq!(s.check(&b0), Verdict::Append);
        s.record(&b0, 0, 2);
        // The batch after a missing one (sequence 3..=4 never arrived).
        let gap = seq(7, 0, 5, 2);
        assert_eq!(
            s.check(&gap),
            Verdict::Reject(Rejection::OutOfOrderSequence)
        );
        let b1 = seq(7, 0, 3, 2);
        assert_eq!(s.check(&b1), Verdict::Append);
        s.record(&b1, 3, 4);
        assert_eq!(s.check(&gap), Verdict::Append);
    }

    #[test]
    fn a_duplicate_of_a_recent_batch_gets_its_original_offsets() {
        let mut s = ProducerStates::default();
        let mut offset = 100u64;
        let mut batches = Vec::new();
        for i in 0..7 {
            let b = seq(1, 0, i * 10, 10);
            assert_eq!(s.check(&b), Verdict::Append, "batch {i}");
            s.record(&b, offset, offset + 9);
            batches.push((b, offset));
            offset += 10;
        }
        // The last RECENT_BATCHES batches are answered with their offsets.
        for (b, base) in &batches[7 - RECENT_BATCHES..] {
            assert_eq!(s.check(b), Verdict::Duplicate(*base, base + 9));
        }
        // Older ones are out of the window: out of order, not appended again.
        assert_eq!(
            s.check(&batches[0].0),
            Verdict::Reject(Rejection::OutOfOrderSequence)
        );
        // Same first sequence, different length: not a duplicate.
        let odd = seq(1, 0, 60, 3);
        assert_eq!(
            s.check(&odd),
            Verdict::Reject(Rejection::OutOfOrderSequence)
        );
    }

    #[test]
    fn unknown_producers_and_new_epochs_start_anywhere_and_old_epochs_are_fenced() {
        let mut s = ProducerStates::default();
        let b = seq(3, 2, 500, 1);
        assert_eq!(s.check(&b), Verdict::Append, "unknown producer (restart)");
        s.record(&b, 0, 0);
        assert_eq!(
            s.check(&seq(3, 1, 501, 1)),
            Verdict::Reject(Rejection::FencedEpoch)
        );
        let bumped = seq(3, 3, 0, 1);
        assert_eq!(s.check(&bumped), Verdict::Append);
        s.record(&bumped, 1, 1);
        assert_eq!(
            s.check(&seq(3, 2, 501, 1)),
            Verdict::Reject(Rejection::FencedEpoch)
        );
        assert_eq!(s.check(&seq(3, 3, 1, 1)), Verdict::Append);
        // Another producer id is independent.
        assert_eq!(s.check(&seq(4, 0, 9, 1)), Verdict::Append);
    }

    #[test]
    fn non_idempotent_batches_are_not_checked_and_sequences_wrap() {
        let h = BatchHeader {
            producer_id: -1,
            ..sample_header()
        };
        assert_eq!(BatchSeq::of(&h), None);
        let h = BatchHeader {
            producer_id: 5,
            producer_epoch: 0,
            base_sequence: i32::MAX - 1,
            record_count: 4,
            ..sample_header()
        };
        let b = BatchSeq::of(&h).unwrap();
        assert_eq!(b.last_seq, 1);
        let mut s = ProducerStates::default();
        s.record(&b, 0, 3);
        assert_eq!(s.check(&seq(5, 0, 2, 1)), Verdict::Append);
        assert_eq!(add_seq(i32::MAX, 1), 0);
    }

    #[test]
    fn the_least_recently_used_producer_is_dropped_beyond_the_cap() {
        let mut s = ProducerStates::default();
        for pid in 0..(MAX_PRODUCERS as i64 + 1) {
            s.record(&seq(pid, 0, 0, 1), pid as u64, pid as u64);
        }
        assert_eq!(s.len(), MAX_PRODUCERS);
        // Producer 0 was forgotten: any sequence is accepted again.
        assert_eq!(s.check(&seq(0, 0, 77, 1)), Verdict::Append);
        assert_eq!(
            s.check(&seq(1, 0, 77, 1)),
            Verdict::Reject(Rejection::OutOfOrderSequence)
        );
    }

    fn sample_header() -> BatchHeader {
        let mut b = sluice_protocol::batch::RecordBatchBuilder::new();
        b.push(1, None, Some(b"x"), &[]);
        BatchHeader::parse(&b.finish()).unwrap()
    }
}
