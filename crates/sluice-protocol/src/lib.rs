//! Sluice wire types, the record batch format, and the tokio-util codec.
//!
//! This crate does no I/O: encoding writes into a caller's `BytesMut`,
//! decoding reads from a `Bytes` frame. Broker and client share these types.
//!
//! Layout:
//! - [`batch`]: Kafka RecordBatch v2, the unit stored on disk and sent on the wire.
//! - [`error_code`]: stable numeric error codes.
//! - [`messages`]: request and response bodies of every API.

pub mod batch;
pub mod error_code;
pub mod messages;

pub use error_code::ErrorCode;
pub use messages::*;
