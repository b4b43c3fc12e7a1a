//! Sluice wire types, the record batch format, and the tokio-util codec.
//!
//! This crate does no I/O: encoding writes into a caller's `BytesMut`,
//! decoding reads from a `Bytes` frame. Broker and client share these types.
//!
//! Layout:
//! - [`batch`]: Kafka RecordBatch v2, the unit stored on disk and sent on the wire.
//! - [`compression`]: the gzip, snappy, lz4 and zstd codecs of compressed batches (bounded decompression).
//! - [`error_code`]: stable numeric error codes.
//! - [`messages`]: request and response bodies of every API, api keys, supported versions
//!   ([`SUPPORTED_APIS`], served today; [`GROUP_APIS`], the consumer-group apis 7..=13,
//!   encoded and decoded here, served once the broker advertises them).
//! - [`codec`]: `FrameCodec`, the u32-length-prefixed tokio-util framing with a size limit.
//! - [`wire`]: encode/decode of whole request and response frames (zero-copy `records`).
//! - [`error`]: `ProtocolError` and `RequestError`.
//!
//! `protocol.md` at the repository root is the normative description of the
//! bytes; `tests/protocol_md.rs` checks it against this code (error codes, api
//! keys, and the worked hex examples). Other tests: round trips of every
//! message (`wire`), property tests feeding arbitrary and mutated bytes to every
//! decoder (`tests/fuzz.rs`), allocation accounting (`tests/alloc.rs`), and a
//! two-way cross-check of record batches with the `kafka-protocol` crate
//! (`tests/kafka_crosscheck.rs`).
//!
//! ```
//! use bytes::BytesMut;
//! use sluice_protocol::batch::{RecordBatch, RecordBatchBuilder};
//! use sluice_protocol::*;
//! use tokio_util::codec::Decoder;
//!
//! let mut builder = RecordBatchBuilder::new();
//! builder.push(1_700_000_000_000, Some(b"key"), Some(b"value"), &[]);
//! let records = builder.finish();
//! let request = Request::Produce(ProduceRequest {
//!     acks: Acks::Leader,
//!     timeout_ms: 1_000,
//!     topics: vec![ProduceTopic {
//!         name: "events".into(),
//!         partitions: vec![ProducePartition { partition: 0, records }],
//!     }],
//! });
//! let mut wire = BytesMut::new();
//! encode_request(7, "example", &request, &mut wire);
//!
//! // The receiving side: frame, then decode; `records` is a slice of the frame.
//! let frame = FrameCodec::default().decode(&mut wire).unwrap().unwrap();
//! let (header, decoded) = decode_request(frame).unwrap();
//! assert_eq!(header.correlation_id, 7);
//! let Request::Produce(p) = decoded else { unreachable!() };
//! let batch = RecordBatch::parse(&p.topics[0].partitions[0].records).unwrap();
//! batch.validate().unwrap();
//! let record = batch.records().next().unwrap().unwrap();
//! assert_eq!(record.value, Some(&b"value"[..]));
//! ```

#![warn(missing_docs)]

pub mod batch;
pub mod codec;
pub mod compression;
pub mod error;
pub mod error_code;
pub mod messages;
pub mod wire;

pub use codec::{FrameCodec, DEFAULT_MAX_FRAME_BYTES};
pub use error::{ProtocolError, RequestError};
pub use error_code::ErrorCode;
pub use messages::*;
pub use wire::{
    decode_request, decode_request_with_limits, decode_response, decode_response_version,
    encode_request, encode_request_chunks, encode_request_chunks_version, encode_request_version,
    encode_response, encode_response_chunks, encode_response_chunks_version,
    encode_response_version, peek_correlation_id,
};
