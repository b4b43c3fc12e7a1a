//! Consumer lag, in records and in time.
//!
//! Lag in records is `end_offset - committed_offset`. Lag in time is how old
//! the oldest unconsumed record is: `now - timestamp(record at committed
//! offset)`, and 0 when the group is caught up. Kafka reports only the first;
//! the second is what operators usually want to alert on.

use sluice_log::{Log, LogError};
use sluice_protocol::batch::batches;

use crate::error::GroupError;

/// Lag of one group on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lag {
    /// Records not yet consumed: `end_offset - committed`, never negative.
    pub records: u64,
    /// Age in ms of the oldest unconsumed record; `Some(0)` when caught up,
    /// `None` when behind but that record's timestamp is unknown (e.g. deleted by retention).
    pub ms: Option<u64>,
}

/// Computes lag from the partition's end offset, the committed offset and the
/// timestamp of the record at the committed offset (if the caller could read it).
///
/// A committed offset beyond the end (the log was truncated) counts as caught up.
/// A record timestamp in the future (clock skew) gives 0 ms.
pub fn lag(
    end_offset: u64,
    committed: u64,
    committed_record_ts_ms: Option<i64>,
    now_ms: i64,
) -> Lag {
    let records = end_offset.saturating_sub(committed);
    if records == 0 {
        return Lag {
            records,
            ms: Some(0),
        };
    }
    let ms = committed_record_ts_ms.map(|ts| u64::try_from(now_ms.saturating_sub(ts)).unwrap_or(0));
    Lag { records, ms }
}

/// Timestamp of the record at `offset` in a partition log, for [`lag`].
///
/// `None` when `offset` is at or past the end (caught up), below the start
/// (deleted by retention), or the record is not found in the batch read.
/// Reads one batch (zero-copy) and walks its records.
pub fn timestamp_at(log: &Log, offset: u64) -> Result<Option<i64>, GroupError> {
    if offset >= log.end_offset() || offset < log.start_offset() {
        return Ok(None);
    }
    let chunk = match log.read(offset, 1) {
        Ok(c) => c,
        // Retention ran between the check and the read.
        Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let want = i64::try_from(offset).unwrap_or(i64::MAX);
    for batch in batches(&chunk) {
        let batch = batch.map_err(LogError::from)?;
        if batch.header().last_offset() < want {
            continue;
        }
        for record in batch.records() {
            let record = record.map_err(LogError::from)?;
            if record.offset >= want {
                return Ok(Some(record.timestamp));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_is_zero() {
        assert_eq!(
            lag(10, 10, Some(5), 100),
            Lag {
                records: 0,
                ms: Some(0)
            }
        );
        assert_eq!(
            lag(10, 12, None, 100),
            Lag {
                records: 0,
                ms: Some(0)
            }
        );
    }

    #[test]
    fn behind_counts_records_and_age() {
        assert_eq!(
            lag(10, 4, Some(1_000), 1_750),
            Lag {
                records: 6,
                ms: Some(750)
            }
        );
        assert_eq!(
            lag(10, 4, None, 1_750),
            Lag {
                records: 6,
                ms: None
            }
        );
        assert_eq!(
            lag(10, 4, Some(2_000), 1_750),
            Lag {
                records: 6,
                ms: Some(0)
            }
        );
    }
}
