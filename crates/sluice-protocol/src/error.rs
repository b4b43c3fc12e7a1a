//! The crate's error type.

use crate::batch::BatchError;
use crate::messages::RequestHeader;
use crate::ErrorCode;

/// Everything that can go wrong framing, encoding or decoding a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A frame's declared length exceeds the configured maximum (checked before any allocation).
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Declared length.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A field needs more bytes than the frame has left.
    #[error("truncated {what}: need {needed} bytes, {available} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the frame.
        available: usize,
    },
    /// An array count cannot fit in the bytes left (checked before allocating).
    #[error("{what} count {count} cannot fit in the {available} bytes left")]
    CountTooLarge {
        /// The array being read.
        what: &'static str,
        /// Declared count.
        count: u32,
        /// Bytes left in the frame.
        available: usize,
    },
    /// A string is not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// The UTF-8 error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// A field holds a value outside its domain (e.g. acks = 7).
    #[error("invalid {what}: {value}")]
    InvalidValue {
        /// The field being read.
        what: &'static str,
        /// The value found.
        value: i64,
    },
    /// A topic name in a request breaks the naming rules ([`crate::topic_name_problem`]).
    #[error("invalid topic name in {what}: {reason}")]
    InvalidTopicName {
        /// The field being read.
        what: &'static str,
        /// Which rule the name breaks.
        reason: &'static str,
    },
    /// A request lists more entries than [`crate::RequestLimits::max_partitions`].
    #[error("request lists more than {limit} topic-partitions (entries)")]
    TooManyEntries {
        /// The configured limit.
        limit: usize,
    },
    /// A request lists the same partition (or topic, or group) twice.
    #[error("{what} listed twice in one request")]
    Duplicate {
        /// What is repeated.
        what: &'static str,
    },
    /// Bytes remain after the message body.
    #[error("{count} unexpected bytes after the {what} body")]
    TrailingBytes {
        /// The message.
        what: &'static str,
        /// Bytes left over.
        count: usize,
    },
    /// The api key is not one this crate can decode.
    #[error("unknown api key {0}")]
    UnknownApiKey(u16),
    /// The api version is outside the supported range.
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion {
        /// Api key.
        api_key: u16,
        /// Requested version.
        version: u16,
    },
    /// A record batch inside a message is malformed.
    #[error("invalid record batch")]
    Batch(#[from] BatchError),
    /// An I/O error from the transport (required by the tokio-util codec traits).
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

/// A request that could not be decoded, with what the broker needs to answer it.
///
/// When `header` is `Some`, the broker answers `Response::Error(code)` with the
/// header's correlation id and keeps the connection open. When it is `None`,
/// even the header was malformed and the connection must be closed.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode request ({code})")]
pub struct RequestError {
    /// The request header, when it decoded.
    pub header: Option<RequestHeader>,
    /// The error code to answer with: UNKNOWN_API, UNSUPPORTED_VERSION,
    /// INVALID_REQUIRED_ACKS, INVALID_TOPIC (a bad topic name) or INVALID_REQUEST.
    pub code: ErrorCode,
    /// What went wrong.
    #[source]
    pub source: ProtocolError,
}
