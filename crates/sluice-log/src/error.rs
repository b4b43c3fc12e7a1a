//! The crate's error type.

use std::path::PathBuf;

use sluice_protocol::batch::BatchError;
use thiserror::Error;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, Error)]
pub enum LogError {
    /// An I/O call failed on `path`.
    #[error("i/o error on {}", path.display())]
    Io {
        /// File or directory the call was made on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `ENOSPC` while reserving space, before any byte of the append was written.
    #[error("disk full while reserving space in {}", path.display())]
    DiskFull {
        /// File that could not grow.
        path: PathBuf,
    },
    /// A batch failed validation; the log is unchanged.
    #[error("invalid batch")]
    InvalidBatch(#[from] BatchError),
    /// A batch is larger than `max_batch_bytes`; the log is unchanged.
    #[error("batch of {size} bytes exceeds the maximum of {max}")]
    BatchTooLarge {
        /// Size of the offending batch.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// Damaged data found while reading a segment.
    #[error("corrupt data in {} at position {position}: {reason}", path.display())]
    Corrupt {
        /// The `.log` file.
        path: PathBuf,
        /// Byte position of the damaged batch in that file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The offset is outside `[start, end]`.
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Requested offset.
        offset: u64,
        /// First offset in the log.
        start: u64,
        /// Next offset to be assigned.
        end: u64,
    },
    /// A previous fsync failed; the log refuses writes until it is reopened.
    #[error("log is poisoned by an earlier failed fsync; reopen required")]
    Poisoned,
    /// The log was closed for good ([`crate::Log::mark_closed`], e.g. its
    /// topic was deleted): nothing touches its directory any more.
    #[error("log is closed (its partition was deleted)")]
    Closed,
}

impl LogError {
    /// Wraps an I/O error on `path`, mapping `ENOSPC` to [`LogError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> LogError {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            LogError::DiskFull { path }
        } else {
            LogError::Io { path, source }
        }
    }
}
