//! The record batch: Apache Kafka's RecordBatch v2 (magic 2), byte for byte.
//!
//! A batch is the unit of append, checksum and transfer. The broker validates
//! a batch's CRC, patches its base offset, stores it, and serves the same
//! bytes to consumers. The same layout is used on disk and on the wire.
//!
//! | offset | size | field                  | notes                                        |
//! |-------:|-----:|------------------------|----------------------------------------------|
//! |      0 |    8 | base_offset   (i64)    | assigned by the broker; outside the CRC      |
//! |      8 |    4 | batch_length  (i32)    | bytes after this field (total = 12 + len)    |
//! |     12 |    4 | leader_epoch  (i32)    | outside the CRC                              |
//! |     16 |    1 | magic         (i8)     | always 2                                     |
//! |     17 |    4 | crc           (u32)    | CRC-32C of bytes 21..end                     |
//! |     21 |    2 | attributes    (i16)    | bits 0-2 compression, 3 timestamp type, ...  |
//! |     23 |    4 | last_offset_delta (i32)| offset of last record minus base offset      |
//! |     27 |    8 | base_timestamp (i64)   | ms since epoch                               |
//! |     35 |    8 | max_timestamp (i64)    | ms since epoch                               |
//! |     43 |    8 | producer_id   (i64)    | -1 when not idempotent                       |
//! |     51 |    2 | producer_epoch (i16)   |                                              |
//! |     53 |    4 | base_sequence (i32)    |                                              |
//! |     57 |    4 | record_count  (i32)    |                                              |
//! |     61 |    … | records                | zigzag-varint encoded, see `Record`          |
//!
//! All integers are big-endian.
//!
//! Each record (Kafka's v2 record layout), back to back after the header:
//!
//! | field            | type                | notes                                   |
//! |------------------|---------------------|-----------------------------------------|
//! | length           | varint              | bytes of the record after this field    |
//! | attributes       | i8                  | unused, 0                               |
//! | timestamp_delta  | varlong             | timestamp minus batch base_timestamp    |
//! | offset_delta     | varint              | offset minus batch base_offset          |
//! | key_length       | varint              | -1 = null key                           |
//! | key              | key_length bytes    |                                         |
//! | value_length     | varint              | -1 = null value                         |
//! | value            | value_length bytes  |                                         |
//! | header_count     | varint              | >= 0                                    |
//! | headers          | header_count times: |                                         |
//! |   key_length     | varint              | >= 0                                    |
//! |   key            | UTF-8 bytes         |                                         |
//! |   value_length   | varint              | -1 = null value                         |
//! |   value          | value_length bytes  |                                         |
//!
//! varint/varlong are zigzag-encoded base-128 (protobuf `sint32`/`sint64`):
//! 7 bits per byte, least significant group first, high bit = "more bytes".
//!
//! [`RecordBatchBuilder`] writes batches, [`RecordBatch`] / [`batches`] read them
//! without copying or allocating per record. Validation is split in two:
//! [`validate_header`] is what storage needs (header, CRC, offsets), and
//! [`validate_records`] walks the records (decompressing them when the batch
//! is compressed, bounded). [`validate`] runs both. The rules (Kafka's
//! `LogValidator` for client batches): at least one record,
//! `last_offset_delta = record_count - 1`, offset deltas `0..record_count`,
//! `max_timestamp` = the largest record timestamp under CreateTime, no control,
//! transactional or unused (6-15) attribute bits.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Size of the fixed batch header in bytes.
pub const HEADER_LEN: usize = 61;
/// Bytes before and including `batch_length`: total batch size is this plus `batch_length`.
pub const LOG_OVERHEAD: usize = 12;
/// The only supported magic byte.
pub const MAGIC_V2: i8 = 2;

const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// Errors found while parsing or validating a record batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header or than the declared batch length.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The declared length is smaller than a header or negative.
    #[error("invalid batch length {0}")]
    InvalidLength(i64),
    /// The magic byte is not 2.
    #[error("unsupported magic byte {0}")]
    UnsupportedMagic(i8),
    /// The stored CRC does not match the computed one.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC computed over the batch.
        computed: u32,
    },
    /// The attributes name a compression codec that does not exist (5-7).
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(u8),
    /// The records are compressed: read them from [`RecordBatch::decompress`].
    #[error("records are compressed with {0}; decompress the batch to read them")]
    Compressed(Compression),
    /// The compressed records section could not be decompressed.
    #[error("cannot decompress {codec} records: {reason}")]
    Decompress {
        /// The batch's codec.
        codec: Compression,
        /// What the codec reported.
        reason: String,
    },
    /// The records decompress to more than the allowed size.
    #[error("records decompress to more than {limit} bytes")]
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The batch is well-formed but breaks a rule of what may be appended
    /// (no records, offset deltas not 0..n-1, a wrong max_timestamp, control,
    /// transactional or unused attribute bits).
    #[error("invalid record batch: {0}")]
    InvalidRecord(&'static str),
    /// A record timestamp is too far from the broker's clock (see [`check_timestamps`]).
    #[error("timestamp {timestamp} is more than {limit_ms} ms {direction} the broker time {now}")]
    TimestampOutOfRange {
        /// The offending timestamp (ms).
        timestamp: i64,
        /// The broker's clock (ms).
        now: i64,
        /// The limit that was exceeded (ms).
        limit_ms: i64,
        /// "before" or "after".
        direction: &'static str,
    },
    /// A header field is inconsistent (negative count, delta mismatch, ...).
    #[error("invalid batch header: {0}")]
    InvalidHeader(&'static str),
    /// A record inside the batch is malformed.
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
}

/// Compression codec named by attribute bits 0-2 (see [`crate::compression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression (0).
    #[default]
    None,
    /// gzip (1).
    Gzip,
    /// snappy (2).
    Snappy,
    /// lz4 (3).
    Lz4,
    /// zstd (4).
    Zstd,
}

impl Compression {
    /// Decodes attribute bits 0-2.
    pub fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match (attributes & 0x07) as u8 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnsupportedCompression(other)),
        }
    }

    /// The attribute bits 0-2 of this codec.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The lower-case name: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown compression {other:?} (expected none, gzip, snappy, lz4 or zstd)"
            )),
        }
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// The fixed 61-byte header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Magic byte (2).
    pub magic: i8,
    /// Stored CRC-32C.
    pub crc: u32,
    /// Attribute bits.
    pub attributes: i16,
    /// Last record's offset minus base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Idempotent producer epoch.
    pub producer_epoch: i16,
    /// Idempotent base sequence.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` and checks that the whole batch is present.
    ///
    /// Checks length and magic only; call [`verify_crc`] for the checksum.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let batch_length = be_i32(buf, 8);
        if (batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidLength(batch_length as i64));
        }
        let magic = buf[16] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let total = LOG_OVERHEAD + batch_length as usize;
        if buf.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if h.record_count < 0 || h.last_offset_delta < 0 {
            return Err(BatchError::InvalidHeader(
                "negative record count or offset delta",
            ));
        }
        Ok(h)
    }

    /// Total size of the batch in bytes, including base offset and length fields.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record (`base_offset + last_offset_delta`, saturating
    /// at `i64::MAX`: both fields come from untrusted bytes, and a plain `+`
    /// would panic in debug builds on a header with `base_offset` near `i64::MAX`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The compression codec named by the attributes.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    /// `Ok` when the records are uncompressed (readable in place), else
    /// [`BatchError::Compressed`] or [`BatchError::UnsupportedCompression`].
    fn require_uncompressed(&self) -> Result<(), BatchError> {
        match self.compression()? {
            Compression::None => Ok(()),
            c => Err(BatchError::Compressed(c)),
        }
    }

    /// True when the timestamp-type bit says LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// The rules on header fields alone (no CRC, no records): a known codec,
    /// no control, transactional or unused attribute bit, at least one record,
    /// `last_offset_delta == record_count - 1`, and (uncompressed) room for
    /// `record_count` records.
    pub fn check(&self) -> Result<(), BatchError> {
        let codec = self.compression()?;
        if self.attributes & ATTR_CONTROL != 0 {
            return Err(BatchError::InvalidRecord(
                "control batches may not be produced",
            ));
        }
        if self.attributes & ATTR_TRANSACTIONAL != 0 {
            return Err(BatchError::InvalidRecord(
                "transactional batches are not supported",
            ));
        }
        if self.attributes & !ATTR_KNOWN != 0 {
            return Err(BatchError::InvalidRecord("unused attribute bits are set"));
        }
        if self.record_count == 0 {
            return Err(BatchError::InvalidRecord("batch has no records"));
        }
        if i64::from(self.last_offset_delta) != i64::from(self.record_count) - 1 {
            return Err(BatchError::InvalidRecord(
                "last_offset_delta must be record_count - 1",
            ));
        }
        let body = self.total_len().saturating_sub(HEADER_LEN);
        if codec == Compression::None
            && (self.record_count as usize).saturating_mul(MIN_RECORD_LEN) > body
        {
            return Err(BatchError::InvalidHeader(
                "record_count too large for batch length",
            ));
        }
        Ok(())
    }
}

/// Computes the CRC-32C a batch should carry (over attributes..end).
///
/// `batch` must hold exactly one whole batch (a slice shorter than a header gives the CRC of nothing).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_OFFSET..).unwrap_or(&[]))
}

/// Checks the stored CRC of one whole batch against its contents.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: batch.len(),
        });
    }
    let stored = be_i32(batch, CRC_OFFSET) as u32;
    let computed = compute_crc(batch);
    if stored != computed {
        return Err(BatchError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// The uncompressed batch at the start of `batch` re-encoded with its records
/// compressed by `codec` (every header field kept, codec bits set, CRC
/// recomputed). `None` when the batch does not parse, is already compressed,
/// `codec` is none, or compression would not make it smaller.
pub fn compress_batch(batch: &[u8], codec: Compression) -> Option<Bytes> {
    if codec == Compression::None {
        return None;
    }
    let header = BatchHeader::parse(batch).ok()?;
    if header.compression().ok()? != Compression::None {
        return None;
    }
    let total = header.total_len();
    let mut out = BytesMut::with_capacity(total / 2 + HEADER_LEN + 64);
    out.put_slice(&batch[..HEADER_LEN]);
    crate::compression::compress(codec, &batch[HEADER_LEN..total], &mut out).ok()?;
    if out.len() >= total {
        return None;
    }
    let batch_length = len_i32(out.len() - LOG_OVERHEAD);
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !0x07) | codec.attribute_bits();
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Some(out.freeze())
}

/// Overwrites the base offset of a batch in place (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of a batch in place (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Attribute bit 3: the timestamps are LogAppendTime (all records carry `max_timestamp`).
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit 4: the batch is part of a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: the batch is a control batch (transaction markers).
pub const ATTR_CONTROL: i16 = 0x20;
/// Attribute bits a produced batch may set: codec (0-2) and timestamp type (3).
const ATTR_KNOWN: i16 = 0x0f;
/// Offset of `max_timestamp` in the header.
const MAX_TIMESTAMP_OFFSET: usize = 35;

/// Stamps a LogAppendTime batch with the broker's time: `max_timestamp`
/// becomes `now` and the CRC is recomputed. The stored CRC is checked first,
/// so a corrupt batch is never re-signed.
pub fn stamp_log_append_time(batch: &mut [u8], now: i64) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let whole = batch
        .get_mut(..header.total_len())
        .ok_or(BatchError::InvalidLength(i64::from(header.batch_length)))?;
    verify_crc(whole)?;
    whole[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now.to_be_bytes());
    let crc = compute_crc(whole);
    whole[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Smallest possible encoded record: length, attributes, timestamp delta,
/// offset delta, key length, value length and header count, one byte each.
const MIN_RECORD_LEN: usize = 7;

/// Number of bytes the zigzag varlong encoding of `v` takes (1..=10).
pub fn varlong_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Number of bytes the zigzag varint encoding of `v` takes (1..=5).
pub fn varint_len(v: i32) -> usize {
    varlong_len(v as i64)
}

/// Appends the zigzag varlong encoding of `v`.
pub fn put_varlong(dst: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        dst.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    dst.put_u8(z as u8);
}

/// Appends the zigzag varint encoding of `v`.
pub fn put_varint(dst: &mut BytesMut, v: i32) {
    put_varlong(dst, v as i64)
}

/// Reads a zigzag varint of at most `max_bytes` bytes from the front of `buf`,
/// advancing it. Never panics.
fn read_zigzag(buf: &mut &[u8], max_bytes: usize) -> Result<i64, BatchError> {
    let mut z: u64 = 0;
    for i in 0..max_bytes {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(BatchError::MalformedRecord("varint truncated"));
        };
        *buf = rest;
        z |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(BatchError::MalformedRecord("varint too long"))
}

/// Reads a zigzag varlong (up to 10 bytes) from the front of `buf`.
pub fn read_varlong(buf: &mut &[u8]) -> Result<i64, BatchError> {
    read_zigzag(buf, 10)
}

/// Reads a zigzag varint (up to 5 bytes, must fit an i32) from the front of `buf`.
pub fn read_varint(buf: &mut &[u8]) -> Result<i32, BatchError> {
    let v = read_zigzag(buf, 5)?;
    i32::try_from(v).map_err(|_| BatchError::MalformedRecord("varint out of i32 range"))
}

/// Splits `len` bytes off the front of `buf`.
fn take<'a>(buf: &mut &'a [u8], len: usize, what: &'static str) -> Result<&'a [u8], BatchError> {
    if buf.len() < len {
        return Err(BatchError::MalformedRecord(what));
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

/// Reads a varint length-prefixed nullable byte string (-1 = null).
fn read_nullable<'a>(
    buf: &mut &'a [u8],
    what: &'static str,
) -> Result<Option<&'a [u8]>, BatchError> {
    let len = read_varint(buf)?;
    match len {
        -1 => Ok(None),
        l if l < -1 => Err(BatchError::MalformedRecord(what)),
        l => take(buf, l as usize, what).map(Some),
    }
}

fn nullable_len(v: Option<&[u8]>) -> usize {
    match v {
        None => varint_len(-1),
        Some(b) => varint_len(len_i32(b.len())) + b.len(),
    }
}

fn put_nullable(dst: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varint(dst, -1),
        Some(b) => {
            put_varint(dst, len_i32(b.len()));
            dst.put_slice(b);
        }
    }
}

/// Lengths in a batch are i32 on the wire; a single field over 2 GiB cannot
/// be represented (and is far above any frame limit), so it saturates.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Builds one uncompressed RecordBatch v2 from records pushed one by one.
///
/// The builder keeps one `BytesMut`; a push computes the record's encoded size
/// first (the length varint precedes the record) and writes it in place, so no
/// allocation happens per record once the buffer has grown to the batch size.
/// Defaults: base offset 0 (the broker assigns offsets), producer id/epoch and
/// base sequence -1 (not idempotent), leader epoch -1, attributes 0
/// (CreateTime, no compression). `base_timestamp` is the first record's timestamp.
#[derive(Debug)]
pub struct RecordBatchBuilder {
    buf: BytesMut,
    /// Capacity to ask for after `finish` hands the buffer away: the larger of
    /// the requested capacity and the last batch, so the next batch of similar
    /// size needs one allocation instead of a chain of doublings.
    capacity_hint: usize,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    compression: Compression,
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBatchBuilder {
    /// An empty builder with a small initial buffer.
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// An empty builder whose buffer can hold `bytes` bytes before growing.
    pub fn with_capacity(bytes: usize) -> Self {
        let capacity_hint = bytes.max(HEADER_LEN);
        Self::with_buffer(BytesMut::with_capacity(capacity_hint), capacity_hint)
    }

    /// An empty builder that writes into `buf` (cleared first), e.g. a
    /// reclaimed allocation from an earlier batch, so no new buffer is
    /// allocated or faulted in; its capacity becomes the size hint for reuse.
    pub fn from_buffer(buf: BytesMut) -> Self {
        let capacity_hint = buf.capacity().max(HEADER_LEN);
        Self::with_buffer(buf, capacity_hint)
    }

    /// An empty builder over `buf`; [`reset`](Self::reset) clears it and sets every per-batch field.
    fn with_buffer(buf: BytesMut, capacity_hint: usize) -> Self {
        let mut b = RecordBatchBuilder {
            buf,
            capacity_hint,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            compression: Compression::None,
        };
        b.reset();
        b
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf.reserve(self.capacity_hint);
        self.buf.put_bytes(0, HEADER_LEN);
        self.count = 0;
        self.base_timestamp = 0;
        self.max_timestamp = i64::MIN;
        self.producer_id = -1;
        self.producer_epoch = -1;
        self.base_sequence = -1;
    }

    /// Encoded size of one record (length varint included) with the given
    /// timestamp delta (from the batch's first record) and offset delta.
    pub fn record_len(
        timestamp_delta: i64,
        offset_delta: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> usize {
        let body = Self::body_len(timestamp_delta, offset_delta, key, value, headers);
        varint_len(len_i32(body)) + body
    }

    fn body_len(
        timestamp_delta: i64,
        offset_delta: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> usize {
        let mut n = 1 // attributes
            + varlong_len(timestamp_delta)
            + varint_len(offset_delta)
            + nullable_len(key)
            + nullable_len(value)
            + varint_len(len_i32(headers.len()));
        for (k, v) in headers {
            n += varint_len(len_i32(k.len())) + k.len() + nullable_len(Some(v));
        }
        n
    }

    /// Appends one record. Its offset delta is the number of records pushed before it.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let ts_delta = timestamp_ms.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count;
        let body = Self::body_len(ts_delta, offset_delta, key, value, headers);
        self.buf.reserve(varint_len(len_i32(body)) + body);
        put_varint(&mut self.buf, len_i32(body));
        self.buf.put_i8(0);
        put_varlong(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, offset_delta);
        put_nullable(&mut self.buf, key);
        put_nullable(&mut self.buf, value);
        put_varint(&mut self.buf, len_i32(headers.len()));
        for (k, v) in headers {
            put_varint(&mut self.buf, len_i32(k.len()));
            self.buf.put_slice(k.as_bytes());
            put_nullable(&mut self.buf, Some(v));
        }
        self.count = self.count.saturating_add(1);
    }

    /// Exact bytes `push` with these arguments would add to `encoded_len()`
    /// (including the 61-byte header when the builder is empty), so producers
    /// can stop before a batch exceeds a size limit.
    pub fn push_len(
        &self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> usize {
        if self.count == 0 {
            HEADER_LEN + Self::record_len(0, 0, key, value, headers)
        } else {
            let delta = timestamp_ms.wrapping_sub(self.base_timestamp);
            Self::record_len(delta, self.count, key, value, headers)
        }
    }

    /// Number of records pushed since the last `finish`.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Bytes the finished batch will take uncompressed, an upper bound of a
    /// compressed one (0 while empty: `finish` then returns no batch).
    pub fn encoded_len(&self) -> usize {
        if self.count == 0 {
            0
        } else {
            self.buf.len()
        }
    }

    /// True when no record has been pushed since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Stamps the idempotent-producer fields of the batch being built: producer
    /// id, epoch and the sequence number of its first record. They are written
    /// by [`finish`](Self::finish) or [`into_batch`](Self::into_batch), before the CRC is computed, and apply to
    /// that one batch only (the builder returns to -1/-1/-1 afterwards).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Compresses the records of every batch finished from now on with
    /// `codec` (kept across batches; default none). A batch whose records do
    /// not shrink is sent uncompressed, so compression never grows a batch.
    pub fn set_compression(&mut self, codec: Compression) {
        self.compression = codec;
    }

    /// The codec set by [`set_compression`](Self::set_compression).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The compressed batch (header placeholder, compressed records), or
    /// `None` when uncompressed or when compression does not shrink it.
    fn compressed(&self) -> Option<BytesMut> {
        if self.compression == Compression::None {
            return None;
        }
        let records = &self.buf[HEADER_LEN..];
        let mut out = BytesMut::with_capacity(HEADER_LEN + records.len() / 2 + 64);
        out.put_bytes(0, HEADER_LEN);
        crate::compression::compress(self.compression, records, &mut out).ok()?;
        if out.len() >= self.buf.len() {
            return None;
        }
        Some(out)
    }

    /// Completes the batch (header and CRC) and returns it; the builder is reset for reuse.
    ///
    /// Returns an empty `Bytes` (zero batches) when no record was pushed.
    pub fn finish(&mut self) -> Bytes {
        if self.count == 0 {
            return Bytes::new();
        }
        if let Some(mut out) = self.compressed() {
            self.write_header(&mut out, self.compression.attribute_bits());
            self.reset();
            return out.freeze();
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.write_header(&mut buf, 0);
        self.buf = buf;
        self.capacity_hint = self.capacity_hint.max(self.buf.len());
        let out = self.buf.split().freeze();
        self.reset();
        out
    }

    /// Completes the batch like [`finish`](Self::finish), consuming the
    /// builder, so no buffer is reserved for a next batch that never comes.
    pub fn into_batch(mut self) -> Bytes {
        if self.count == 0 {
            return Bytes::new();
        }
        if let Some(mut out) = self.compressed() {
            self.write_header(&mut out, self.compression.attribute_bits());
            return out.freeze();
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.write_header(&mut buf, 0);
        buf.freeze()
    }

    /// Writes the 61-byte header, CRC included, over the placeholder at the start of `buf`.
    fn write_header(&self, buf: &mut BytesMut, attributes: i16) {
        let batch_length = len_i32(buf.len() - LOG_OVERHEAD);
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&batch_length.to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        h[16] = MAGIC_V2 as u8;
        // 17..21 CRC, filled below
        h[21..23].copy_from_slice(&attributes.to_be_bytes());
        h[23..27].copy_from_slice(&(self.count - 1).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        h[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        h[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        buf[..HEADER_LEN].copy_from_slice(&h);
        let crc = compute_crc(buf);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// One whole batch held as a `Bytes` slice (zero-copy view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Parses the batch at the start of `buf` (header and length only; see [`RecordBatch::validate`]).
    ///
    /// The returned batch holds exactly `header.total_len()` bytes of `buf`.
    pub fn parse(buf: &Bytes) -> Result<RecordBatch, BatchError> {
        let header = BatchHeader::parse(buf)?;
        Ok(RecordBatch {
            header,
            bytes: buf.slice(..header.total_len()),
        })
    }

    /// The decoded 61-byte header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Full check: CRC, header rules, and every record well-formed (see [`validate`]).
    pub fn validate(&self) -> Result<(), BatchError> {
        validate(&self.bytes).map(|_| ())
    }

    /// The batch with its records readable by [`records`](Self::records):
    /// itself when uncompressed, else a new uncompressed batch (same header
    /// fields and offsets, codec bits cleared, CRC recomputed) holding the
    /// decompressed records, at most `max_decompressed` bytes of them.
    pub fn decompress(&self, max_decompressed: usize) -> Result<RecordBatch, BatchError> {
        let codec = self.header.compression()?;
        if codec == Compression::None {
            return Ok(self.clone());
        }
        let limit = max_decompressed.min(i32::MAX as usize - HEADER_LEN);
        let mut out = Vec::new();
        out.extend_from_slice(&self.bytes[..HEADER_LEN]);
        crate::compression::decompress(codec, &self.bytes[HEADER_LEN..], limit, &mut out)?;
        let batch_length = len_i32(out.len() - LOG_OVERHEAD);
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let attributes = self.header.attributes & !0x07;
        out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = compute_crc(&out);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::parse(&Bytes::from(out))
    }

    /// Iterates the records without allocating.
    ///
    /// Yields `Err` once and then stops on a malformed record or compressed
    /// records ([`BatchError::Compressed`]: read those from
    /// [`decompress`](Self::decompress)). Does not check the CRC.
    pub fn records(&self) -> Records<'_> {
        let body = self.bytes.get(HEADER_LEN..).unwrap_or(&[]);
        Records {
            header: &self.header,
            buf: body,
            remaining: self.header.record_count.max(0) as usize,
            pending_error: self.header.require_uncompressed().err(),
            done: false,
        }
    }
}

/// Iterator over the records of one batch; see [`RecordBatch::records`].
#[derive(Debug)]
pub struct Records<'a> {
    header: &'a BatchHeader,
    buf: &'a [u8],
    remaining: usize,
    pending_error: Option<BatchError>,
    done: bool,
}

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Result<Record<'a>, BatchError> {
        let len = read_varint(&mut self.buf)?;
        if len < 0 {
            return Err(BatchError::MalformedRecord("negative record length"));
        }
        let mut body = take(&mut self.buf, len as usize, "record longer than batch")?;
        let _attributes = take(&mut body, 1, "record truncated")?;
        let ts_delta = read_varlong(&mut body)?;
        let offset_delta = read_varint(&mut body)?;
        if offset_delta < 0 {
            return Err(BatchError::MalformedRecord("negative offset delta"));
        }
        let key = read_nullable(&mut body, "bad key length")?;
        let value = read_nullable(&mut body, "bad value length")?;
        let header_count = read_varint(&mut body)?;
        // Each header takes at least two bytes (two one-byte varints).
        if header_count < 0 || header_count as usize > body.len() / 2 {
            return Err(BatchError::MalformedRecord("bad header count"));
        }
        let timestamp = if self.header.attributes & ATTR_LOG_APPEND_TIME != 0 {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.wrapping_add(ts_delta)
        };
        Ok(Record {
            offset: self.header.base_offset.wrapping_add(offset_delta as i64),
            timestamp,
            key,
            value,
            header_count: header_count as usize,
            headers: body,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.pending_error.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.remaining == 0 {
            self.done = true;
            return None;
        }
        self.remaining -= 1;
        let r = self.next_record();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(self.remaining + 1))
        }
    }
}

/// One record of a batch, borrowing the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute offset (batch base offset + offset delta).
    pub offset: i64,
    /// Absolute timestamp in ms (base timestamp + delta, or the batch max timestamp under LogAppendTime).
    pub timestamp: i64,
    /// Key, `None` when null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` when null.
    pub value: Option<&'a [u8]>,
    /// Number of headers declared.
    header_count: usize,
    /// The encoded headers (the rest of the record).
    headers: &'a [u8],
}

impl<'a> Record<'a> {
    /// Iterates the record's headers without allocating.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            buf: self.headers,
            remaining: self.header_count,
            done: false,
        }
    }

    /// Number of headers the record declares.
    pub fn header_count(&self) -> usize {
        self.header_count
    }
}

/// Iterator over a record's headers: `(key, value)`, value `None` when null.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    buf: &'a [u8],
    remaining: usize,
    done: bool,
}

impl<'a> Headers<'a> {
    fn next_header(&mut self) -> Result<(&'a str, Option<&'a [u8]>), BatchError> {
        let klen = read_varint(&mut self.buf)?;
        if klen < 0 {
            return Err(BatchError::MalformedRecord("negative header key length"));
        }
        let k = take(&mut self.buf, klen as usize, "header key truncated")?;
        let k = std::str::from_utf8(k)
            .map_err(|_| BatchError::MalformedRecord("header key is not UTF-8"))?;
        let v = read_nullable(&mut self.buf, "bad header value length")?;
        Ok((k, v))
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            if !self.buf.is_empty() {
                return Some(Err(BatchError::MalformedRecord("bytes after last header")));
            }
            return None;
        }
        self.remaining -= 1;
        let r = self.next_header();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// Iterates the whole batches concatenated in `buf` (zero-copy slices).
pub fn batches(buf: &Bytes) -> Batches {
    Batches {
        buf: buf.clone(),
        done: false,
    }
}

/// Iterator over concatenated batches; see [`batches`].
///
/// Parses headers and lengths only (no CRC check). Yields `Err` once and stops
/// at the first malformed or truncated batch.
#[derive(Debug, Clone)]
pub struct Batches {
    buf: Bytes,
    done: bool,
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.buf.is_empty() {
            self.done = true;
            return None;
        }
        match RecordBatch::parse(&self.buf) {
            Ok(b) => {
                let _ = self.buf.split_to(b.bytes.len());
                Some(Ok(b))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// What the record walk of one batch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsSummary {
    /// Smallest record timestamp (under LogAppendTime: the header's `max_timestamp`).
    pub min_timestamp: i64,
    /// Largest record timestamp (equal to the header's `max_timestamp`).
    pub max_timestamp: i64,
}

/// The storage-level check of the batch at the start of `batch`: what a log
/// needs to store and index it without reading its records.
///
/// Checks: header (length, magic), CRC-32C over exactly `header.total_len()`
/// bytes (bytes after the batch are ignored: step with `total_len()`), and the
/// header rules of [`BatchHeader::check`]. Compressed batches pass without
/// being decompressed.
pub fn validate_header(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    verify_crc(whole_batch(batch, &header)?)?;
    header.check()?;
    Ok(header)
}

fn whole_batch<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<&'a [u8], BatchError> {
    batch
        .get(..header.total_len())
        .ok_or(BatchError::Truncated {
            needed: header.total_len(),
            available: batch.len(),
        })
}

/// The record-level check of the batch at the start of `batch` (decompressing
/// at most `max_decompressed` bytes when compressed): the header rules of
/// [`BatchHeader::check`], every record well-formed with offset deltas exactly
/// `0, 1, ..., record_count - 1`, the records filling the (decompressed)
/// section exactly, and under CreateTime `max_timestamp` equal to the largest
/// record timestamp. Does not allocate for uncompressed batches.
///
/// It does not check the CRC on success (pair it with [`validate_header`]);
/// on failure a wrong CRC is reported as [`BatchError::CrcMismatch`] in
/// preference to what the walk found.
pub fn validate_records(
    batch: &[u8],
    max_decompressed: usize,
) -> Result<(BatchHeader, RecordsSummary), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let whole = whole_batch(batch, &header)?;
    let walked = header.check().and_then(|()| {
        let body = whole.get(HEADER_LEN..).unwrap_or(&[]);
        match header.compression()? {
            Compression::None => walk_records(&header, body),
            codec => {
                // Nothing is inflated before the CRC says the bytes are the
                // producer's (and a corrupt batch is CORRUPT_MESSAGE).
                verify_crc(whole)?;
                let mut plain = Vec::new();
                crate::compression::decompress(codec, body, max_decompressed, &mut plain)?;
                walk_records(&header, &plain)
            }
        }
    });
    match walked {
        Ok(summary) => Ok((header, summary)),
        Err(e) => {
            verify_crc(whole)?;
            Err(e)
        }
    }
}

/// Walks the (uncompressed) records section `body` of a batch with `header`.
fn walk_records(header: &BatchHeader, body: &[u8]) -> Result<RecordsSummary, BatchError> {
    let count = header.record_count.max(0) as usize;
    if count.saturating_mul(MIN_RECORD_LEN) > body.len() {
        return Err(BatchError::InvalidHeader(
            "record_count too large for batch length",
        ));
    }
    let mut records = Records {
        header,
        buf: body,
        remaining: count,
        pending_error: None,
        done: false,
    };
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for (expected, r) in (0_i64..).zip(records.by_ref()) {
        let r = r?;
        if r.offset.wrapping_sub(header.base_offset) != expected {
            return Err(BatchError::InvalidRecord(
                "offset deltas must run 0, 1, ..., record_count - 1",
            ));
        }
        min_ts = min_ts.min(r.timestamp);
        max_ts = max_ts.max(r.timestamp);
        for h in r.headers() {
            h?;
        }
    }
    if !records.buf.is_empty() {
        return Err(BatchError::MalformedRecord("bytes after last record"));
    }
    if !header.is_log_append_time() && max_ts != header.max_timestamp {
        return Err(BatchError::InvalidRecord(
            "max_timestamp is not the largest record timestamp",
        ));
    }
    Ok(RecordsSummary {
        min_timestamp: min_ts,
        max_timestamp: max_ts,
    })
}

/// Fully validates the batch at the start of `batch` and returns its header:
/// [`validate_header`] and [`validate_records`] (compressed records decompressed,
/// at most [`MAX_DECOMPRESSED_BYTES`](crate::compression::MAX_DECOMPRESSED_BYTES)).
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_header(batch)?;
    validate_records(batch, crate::compression::MAX_DECOMPRESSED_BYTES)?;
    Ok(header)
}

/// Checks record timestamps against the broker clock `now` (Kafka 3.6's
/// `message.timestamp.before.max.ms` / `after.max.ms`): the smallest may be at
/// most `before_max_ms` in the past, the largest at most `after_max_ms` in the
/// future. Meant for CreateTime batches (LogAppendTime batches get `now`).
pub fn check_timestamps(
    summary: &RecordsSummary,
    now: i64,
    before_max_ms: i64,
    after_max_ms: i64,
) -> Result<(), BatchError> {
    if now.saturating_sub(summary.min_timestamp) > before_max_ms {
        return Err(BatchError::TimestampOutOfRange {
            timestamp: summary.min_timestamp,
            now,
            limit_ms: before_max_ms,
            direction: "before",
        });
    }
    if summary.max_timestamp.saturating_sub(now) > after_max_ms {
        return Err(BatchError::TimestampOutOfRange {
            timestamp: summary.max_timestamp,
            now,
            limit_ms: after_max_ms,
            direction: "after",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        let mut b = RecordBatchBuilder::new();
        b.push(1000, Some(b"k1"), Some(b"v1"), &[("a", b"1"), ("b", b"")]);
        b.push(999, None, None, &[]);
        b.push(5000, Some(b""), Some(&[7u8; 300]), &[]);
        b.finish()
    }

    #[test]
    fn varints_match_known_encodings() {
        for (v, enc) in [
            (0i64, &[0x00u8][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(&b[..], enc, "{v}");
            assert_eq!(varlong_len(v), enc.len());
            let mut s = enc;
            assert_eq!(read_varlong(&mut s).unwrap(), v);
            assert!(s.is_empty());
        }
        let mut s: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x1f];
        assert!(read_varint(&mut s).is_err(), "value beyond i32 accepted");
        let mut s: &[u8] = &[0x80; 11];
        assert!(read_varlong(&mut s).is_err());
        let mut s: &[u8] = &[0x80];
        assert!(read_varint(&mut s).is_err());
    }

    #[test]
    fn crc_is_castagnoli_with_the_documented_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn builder_output_validates_and_iterates() {
        let bytes = sample();
        let h = validate(&bytes).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 5000);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.total_len(), bytes.len());
        let batch = RecordBatch::parse(&bytes).unwrap();
        let recs: Vec<_> = batch.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!((recs[0].offset, recs[0].timestamp), (0, 1000));
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[0].value, Some(&b"v1"[..]));
        let hs: Vec<_> = recs[0].headers().collect::<Result<_, _>>().unwrap();
        assert_eq!(hs, vec![("a", Some(&b"1"[..])), ("b", Some(&b""[..]))]);
        assert_eq!((recs[1].offset, recs[1].timestamp), (1, 999));
        assert_eq!((recs[1].key, recs[1].value), (None, None));
        assert_eq!(recs[1].headers().count(), 0);
        assert_eq!(recs[2].key, Some(&b""[..]));
        assert_eq!(recs[2].value.map(|v| v.len()), Some(300));
    }

    #[test]
    fn push_len_predicts_growth_exactly() {
        let mut b = RecordBatchBuilder::new();
        type Case<'a> = (
            i64,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            &'a [(&'a str, &'a [u8])],
        );
        let cases: [Case<'_>; 4] = [
            (1_000, Some(b"key"), Some(b"value"), &[("h", b"1")]),
            (1_000 + (1 << 40), None, Some(&[0u8; 200]), &[]),
            (
                1_000 - (1 << 40),
                Some(b""),
                None,
                &[("a", b""), ("bb", b"cc")],
            ),
            (i64::MAX, None, None, &[]),
        ];
        for (ts, k, v, h) in cases {
            let before = b.encoded_len();
            let predicted = b.push_len(ts, k, v, h);
            b.push(ts, k, v, h);
            assert_eq!(b.encoded_len() - before, predicted);
        }
        // Timestamp deltas beyond the i32 range need varlongs, as Kafka's spec says.
        let bytes = b.finish();
        validate(&bytes).unwrap();
        let batch = RecordBatch::parse(&bytes).unwrap();
        let ts: Vec<i64> = batch.records().map(|r| r.unwrap().timestamp).collect();
        assert_eq!(
            ts,
            vec![1_000, 1_000 + (1 << 40), 1_000 - (1 << 40), i64::MAX]
        );
    }

    #[test]
    fn builder_is_reusable_and_reports_lengths() {
        let mut b = RecordBatchBuilder::with_capacity(64);
        assert!(b.is_empty());
        assert_eq!(b.encoded_len(), 0);
        assert!(b.finish().is_empty());
        b.push(1, Some(b"x"), Some(b"y"), &[]);
        let expected =
            HEADER_LEN + RecordBatchBuilder::record_len(0, 0, Some(b"x"), Some(b"y"), &[]);
        assert_eq!(b.encoded_len(), expected);
        assert_eq!(b.record_count(), 1);
        let first = b.finish();
        assert_eq!(first.len(), expected);
        assert!(b.is_empty());
        b.push(1, Some(b"x"), Some(b"y"), &[]);
        let second = b.finish();
        assert_eq!(first, second, "reset builder must produce identical bytes");
    }

    #[test]
    fn into_batch_equals_finish_and_keeps_the_one_allocation() {
        let fill = |b: &mut RecordBatchBuilder| {
            b.set_producer(3, 0, 42);
            b.push(10, Some(b"k"), Some(&[9u8; 500]), &[("h", b"v")]);
            b.push(11, None, Some(b"second"), &[]);
        };
        let mut a = RecordBatchBuilder::with_capacity(4096);
        fill(&mut a);
        let finished = a.finish();
        let mut b = RecordBatchBuilder::with_capacity(4096);
        fill(&mut b);
        let start = b.buf.as_ptr();
        let consumed = b.into_batch();
        assert_eq!(consumed, finished);
        assert_eq!(
            consumed.as_ptr(),
            start,
            "the builder's own buffer, not a copy"
        );
        validate(&consumed).expect("valid batch");
        assert!(RecordBatchBuilder::new().into_batch().is_empty());
    }

    #[test]
    fn reused_buffer_produces_byte_identical_batches() {
        let fill = |b: &mut RecordBatchBuilder| {
            b.set_producer(7, 1, 10);
            b.push(1000, Some(b"k1"), Some(b"v1"), &[("a", b"1")]);
            b.push(999, None, None, &[]);
            b.push(5000, Some(b""), Some(&[7u8; 300]), &[]);
            b.finish()
        };
        let fresh = fill(&mut RecordBatchBuilder::with_capacity(4096));
        // Reclaim the finished batch's allocation, dirty and all.
        let first = fill(&mut RecordBatchBuilder::with_capacity(4096));
        let ptr = first.as_ptr();
        let mut buf = first.try_into_mut().expect("sole owner of the batch");
        let cap = buf.capacity();
        buf.put_slice(b"stale bytes that must not leak into the next batch");
        let mut reused = RecordBatchBuilder::from_buffer(buf);
        assert!(reused.is_empty());
        assert_eq!(reused.encoded_len(), 0);
        let again = fill(&mut reused);
        assert_eq!(again, fresh, "reused buffer must give identical bytes");
        assert_eq!(again.as_ptr(), ptr, "the reclaimed allocation was written");
        assert!(cap >= again.len());
        validate(&again).unwrap();
        // A tiny buffer still works: it grows like a fresh one.
        let mut small = RecordBatchBuilder::from_buffer(BytesMut::new());
        assert_eq!(fill(&mut small), fresh);
    }

    #[test]
    fn base_offset_and_epoch_patch_keeps_crc_valid() {
        let mut v = sample().to_vec();
        set_base_offset(&mut v, 1_000);
        set_partition_leader_epoch(&mut v, 7);
        let h = validate(&v).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (1_000, 7));
        let b = Bytes::from(v);
        let batch = RecordBatch::parse(&b).unwrap();
        let offsets: Vec<i64> = batch.records().map(|r| r.unwrap().offset).collect();
        assert_eq!(offsets, vec![1000, 1001, 1002]);
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let good = sample();
        for i in ATTRIBUTES_OFFSET..good.len() {
            let mut v = good.to_vec();
            v[i] ^= 0x40;
            assert!(validate(&v).is_err(), "flip at {i} not detected");
        }
    }

    /// Re-signs a hand-modified batch so only the targeted check can fail.
    fn resign(v: &mut [u8]) {
        let crc = compute_crc(v);
        v[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn unknown_codecs_are_rejected_and_compressed_records_need_decompress() {
        for codec in 5u8..=7 {
            let mut v = sample().to_vec();
            v[ATTRIBUTES_OFFSET + 1] |= codec;
            resign(&mut v);
            assert_eq!(
                validate(&v).unwrap_err(),
                BatchError::UnsupportedCompression(codec)
            );
            assert_eq!(
                validate_header(&v).unwrap_err(),
                BatchError::UnsupportedCompression(codec)
            );
        }
        let mut b = RecordBatchBuilder::new();
        b.set_compression(Compression::Gzip);
        b.push(1, None, Some(&[b'a'; 500]), &[]);
        let bytes = b.finish();
        let batch = RecordBatch::parse(&bytes).unwrap();
        let mut it = batch.records();
        assert_eq!(
            it.next(),
            Some(Err(BatchError::Compressed(Compression::Gzip)))
        );
        assert_eq!(it.next(), None);
    }

    /// Rewrites header fields of the sample batch, then re-signs it.
    fn patched(at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut v = sample().to_vec();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        resign(&mut v);
        v
    }

    fn invalid_record(v: &[u8]) -> &'static str {
        match validate(v) {
            Err(BatchError::InvalidRecord(why)) => why,
            other => panic!("expected InvalidRecord, got {other:?}"),
        }
    }

    #[test]
    fn inconsistent_counts_are_rejected() {
        // record_count larger than last_offset_delta + 1
        let v = patched(57, &4i32.to_be_bytes());
        assert_eq!(
            invalid_record(&v),
            "last_offset_delta must be record_count - 1"
        );
        // record_count smaller than the records present
        let v = patched(57, &2i32.to_be_bytes());
        assert_eq!(
            invalid_record(&v),
            "last_offset_delta must be record_count - 1"
        );
        // both agree on 2 but three records are present: bytes left over
        let mut v = patched(57, &2i32.to_be_bytes());
        v[23..27].copy_from_slice(&1i32.to_be_bytes());
        resign(&mut v);
        assert!(matches!(validate(&v), Err(BatchError::MalformedRecord(_))));
        // a huge record count cannot pass the size sanity check
        let mut v = sample().to_vec();
        v[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        v[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        resign(&mut v);
        assert!(matches!(validate(&v), Err(BatchError::InvalidHeader(_))));
    }

    #[test]
    fn a_batch_without_records_is_refused() {
        let mut b = RecordBatchBuilder::new();
        b.push(7, None, Some(b"x"), &[]);
        let mut v = b.finish().to_vec();
        // Drop the one record: count 0, last_offset_delta -1 -> 0 (as a client would send).
        v.truncate(HEADER_LEN);
        v[8..12].copy_from_slice(&((HEADER_LEN - LOG_OVERHEAD) as i32).to_be_bytes());
        v[23..27].copy_from_slice(&0i32.to_be_bytes());
        v[57..61].copy_from_slice(&0i32.to_be_bytes());
        resign(&mut v);
        assert_eq!(invalid_record(&v), "batch has no records");
        assert_eq!(
            validate_header(&v),
            Err(BatchError::InvalidRecord("batch has no records"))
        );
    }

    #[test]
    fn a_gap_after_the_last_record_is_refused() {
        // One record, last_offset_delta = 5: would reserve six offsets.
        let mut b = RecordBatchBuilder::new();
        b.push(7, None, Some(b"x"), &[]);
        let mut v = b.finish().to_vec();
        v[23..27].copy_from_slice(&5i32.to_be_bytes());
        resign(&mut v);
        assert_eq!(
            invalid_record(&v),
            "last_offset_delta must be record_count - 1"
        );
        assert!(matches!(
            validate_header(&v),
            Err(BatchError::InvalidRecord(_))
        ));
    }

    #[test]
    fn offset_deltas_must_run_from_zero_without_gaps() {
        // Two records with deltas 0 and 2 (header says count 2, last delta 1).
        let one = |delta: i32| {
            let mut r = BytesMut::new();
            let body_len = 1 + 1 + varint_len(delta) + 1 + 2 + 1;
            put_varint(&mut r, body_len as i32);
            r.put_i8(0);
            put_varlong(&mut r, 0);
            put_varint(&mut r, delta);
            put_varint(&mut r, -1);
            put_varint(&mut r, 1);
            r.put_u8(b'v');
            put_varint(&mut r, 0);
            r
        };
        let build = |deltas: &[i32]| {
            let mut v = vec![0u8; HEADER_LEN];
            for d in deltas {
                v.extend_from_slice(&one(*d));
            }
            let len = (v.len() - LOG_OVERHEAD) as i32;
            v[8..12].copy_from_slice(&len.to_be_bytes());
            v[12..16].copy_from_slice(&(-1i32).to_be_bytes());
            v[16] = MAGIC_V2 as u8;
            v[23..27].copy_from_slice(&(deltas.len() as i32 - 1).to_be_bytes());
            v[27..35].copy_from_slice(&10i64.to_be_bytes());
            v[35..43].copy_from_slice(&10i64.to_be_bytes());
            v[43..51].copy_from_slice(&(-1i64).to_be_bytes());
            v[51..53].copy_from_slice(&(-1i16).to_be_bytes());
            v[53..57].copy_from_slice(&(-1i32).to_be_bytes());
            v[57..61].copy_from_slice(&(deltas.len() as i32).to_be_bytes());
            resign(&mut v);
            v
        };
        validate(&build(&[0, 1, 2])).unwrap();
        for deltas in [&[0, 2][..], &[1, 2], &[1, 0], &[0, 0]] {
            assert_eq!(
                invalid_record(&build(deltas)),
                "offset deltas must run 0, 1, ..., record_count - 1",
                "{deltas:?}"
            );
        }
    }

    #[test]
    fn max_timestamp_must_match_the_records() {
        for wrong in [4999i64, 5001, i64::MAX, -1] {
            let v = patched(35, &wrong.to_be_bytes());
            assert_eq!(
                invalid_record(&v),
                "max_timestamp is not the largest record timestamp",
                "{wrong}"
            );
        }
        // Under LogAppendTime the field is the broker's to set.
        let mut v = patched(35, &123i64.to_be_bytes());
        v[ATTRIBUTES_OFFSET + 1] |= ATTR_LOG_APPEND_TIME as u8;
        resign(&mut v);
        validate(&v).unwrap();
    }

    #[test]
    fn control_transactional_and_unused_attribute_bits_are_refused() {
        let cases: [(i16, &str); 4] = [
            (ATTR_CONTROL, "control batches may not be produced"),
            (
                ATTR_TRANSACTIONAL,
                "transactional batches are not supported",
            ),
            (0x40, "unused attribute bits are set"),
            (i16::MIN, "unused attribute bits are set"),
        ];
        for (bits, why) in cases {
            let v = patched(ATTRIBUTES_OFFSET, &bits.to_be_bytes());
            assert_eq!(invalid_record(&v), why, "{bits:#x}");
            assert_eq!(validate_header(&v), Err(BatchError::InvalidRecord(why)));
        }
        // Timestamp type alone is fine.
        let v = patched(ATTRIBUTES_OFFSET, &ATTR_LOG_APPEND_TIME.to_be_bytes());
        validate(&v).unwrap();
    }

    #[test]
    fn a_bad_crc_wins_over_what_the_record_walk_finds() {
        let mut v = patched(35, &1i64.to_be_bytes());
        v[CRC_OFFSET] ^= 1;
        assert!(matches!(
            validate_records(&v, 1 << 20),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn log_append_time_stamp_rewrites_max_timestamp_under_a_valid_crc() {
        let mut v = patched(ATTRIBUTES_OFFSET, &ATTR_LOG_APPEND_TIME.to_be_bytes());
        stamp_log_append_time(&mut v, 1_700_000_000_000).unwrap();
        let h = validate(&v).unwrap();
        assert_eq!(h.max_timestamp, 1_700_000_000_000);
        let b = Bytes::from(v.clone());
        let batch = RecordBatch::parse(&b).unwrap();
        assert!(batch
            .records()
            .all(|r| r.unwrap().timestamp == 1_700_000_000_000));
        // A corrupt batch is not re-signed.
        v[HEADER_LEN + 3] ^= 0x10;
        assert!(matches!(
            stamp_log_append_time(&mut v, 5),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn timestamps_are_checked_against_the_broker_clock() {
        let s = RecordsSummary {
            min_timestamp: 1_000,
            max_timestamp: 5_000,
        };
        check_timestamps(&s, 5_000, i64::MAX, 3_600_000).unwrap();
        check_timestamps(&s, 2_000, 1_000, 3_000).unwrap();
        assert_eq!(
            check_timestamps(&s, 2_001, 1_000, i64::MAX),
            Err(BatchError::TimestampOutOfRange {
                timestamp: 1_000,
                now: 2_001,
                limit_ms: 1_000,
                direction: "before"
            })
        );
        assert_eq!(
            check_timestamps(&s, 1_999, i64::MAX, 3_000),
            Err(BatchError::TimestampOutOfRange {
                timestamp: 5_000,
                now: 1_999,
                limit_ms: 3_000,
                direction: "after"
            })
        );
        // Extreme values do not overflow.
        let far = RecordsSummary {
            min_timestamp: i64::MIN,
            max_timestamp: i64::MAX,
        };
        assert!(check_timestamps(&far, 0, i64::MAX - 1, i64::MAX).is_err());
        assert!(check_timestamps(&far, 0, i64::MAX, i64::MAX - 1).is_err());
        check_timestamps(&far, 0, i64::MAX, i64::MAX).unwrap();
    }

    #[test]
    fn compressed_batches_validate_and_decompress_to_the_same_records() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let fill = |b: &mut RecordBatchBuilder| {
                b.set_producer(9, 1, 40);
                for i in 0..50u8 {
                    b.push(
                        1000 + i64::from(i),
                        Some(&[i; 3]),
                        Some(&[b'v'; 200]),
                        &[("h", &[i])],
                    );
                }
            };
            let mut plain = RecordBatchBuilder::new();
            fill(&mut plain);
            let plain = plain.finish();
            let mut b = RecordBatchBuilder::new();
            b.set_compression(codec);
            fill(&mut b);
            let bytes = b.finish();
            assert!(
                bytes.len() < plain.len(),
                "{codec} did not shrink the batch"
            );
            let h = validate(&bytes).unwrap();
            assert_eq!(h.compression().unwrap(), codec);
            assert_eq!((h.record_count, h.last_offset_delta), (50, 49));
            assert_eq!((h.producer_id, h.base_sequence), (9, 40));
            let (_, summary) = validate_records(&bytes, 1 << 20).unwrap();
            assert_eq!((summary.min_timestamp, summary.max_timestamp), (1000, 1049));
            // Decompressed, it is the uncompressed batch byte for byte.
            let batch = RecordBatch::parse(&bytes).unwrap();
            let open = batch.decompress(1 << 20).unwrap();
            assert_eq!(open.as_bytes(), &plain, "{codec}");
            // The limit holds.
            assert!(matches!(
                validate_records(&bytes, 100),
                Err(BatchError::DecompressedTooLarge { limit: 100 })
            ));
            assert!(matches!(
                batch.decompress(100),
                Err(BatchError::DecompressedTooLarge { limit: 100 })
            ));
            // A corrupt payload under a valid CRC is refused.
            let mut bad = bytes.to_vec();
            let mid = HEADER_LEN + (bad.len() - HEADER_LEN) / 2;
            bad.truncate(mid);
            let len = (bad.len() - LOG_OVERHEAD) as i32;
            bad[8..12].copy_from_slice(&len.to_be_bytes());
            resign(&mut bad);
            validate_header(&bad).unwrap();
            assert!(
                matches!(validate(&bad), Err(BatchError::Decompress { codec: c, .. }) if c == codec),
                "{codec}: {:?}",
                validate(&bad)
            );
        }
        // compress_batch gives the builder's bytes from the plain batch.
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let mut b = RecordBatchBuilder::new();
            b.set_producer(9, 1, 40);
            b.push(5, Some(b"k"), Some(&[b'z'; 400]), &[]);
            let plain = b.finish();
            b.set_compression(codec);
            b.set_producer(9, 1, 40);
            b.push(5, Some(b"k"), Some(&[b'z'; 400]), &[]);
            let direct = b.finish();
            let recompressed = compress_batch(&plain, codec).unwrap();
            assert_eq!(recompressed, direct, "{codec}");
            assert_eq!(compress_batch(&direct, codec), None, "already compressed");
            assert_eq!(compress_batch(&plain, Compression::None), None);
        }
        // Incompressible records are sent uncompressed.
        let mut b = RecordBatchBuilder::new();
        b.set_compression(Compression::Zstd);
        b.push(1, None, Some(b"x"), &[]);
        let h = validate(&b.finish()).unwrap();
        assert_eq!(h.compression().unwrap(), Compression::None);
        assert_eq!(
            b.compression(),
            Compression::Zstd,
            "setting kept across batches"
        );
    }

    #[test]
    fn last_offset_of_a_hostile_header_does_not_overflow() {
        // base_offset = i64::MAX with a positive delta: parse accepts the
        // header (offsets are the broker's to assign), so last_offset() must
        // not panic on it.
        let mut v = sample().to_vec();
        v[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
        v[23..27].copy_from_slice(&5i32.to_be_bytes());
        let h = BatchHeader::parse(&v).unwrap();
        assert_eq!(h.last_offset(), i64::MAX);
        let mut v = sample().to_vec();
        v[0..8].copy_from_slice(&100i64.to_be_bytes());
        v[23..27].copy_from_slice(&5i32.to_be_bytes());
        assert_eq!(BatchHeader::parse(&v).unwrap().last_offset(), 105);
    }

    #[test]
    fn batches_iterates_concatenation_and_stops_on_truncation() {
        let one = sample();
        let mut cat = BytesMut::new();
        cat.put_slice(&one);
        cat.put_slice(&one);
        cat.put_slice(&one[..one.len() - 1]);
        let cat = cat.freeze();
        let got: Vec<_> = batches(&cat).collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok() && got[1].is_ok());
        assert!(matches!(got[2], Err(BatchError::Truncated { .. })));
        assert_eq!(got[1].as_ref().unwrap().as_bytes(), &one);
        assert_eq!(batches(&Bytes::new()).count(), 0);
    }

    #[test]
    fn log_append_time_uses_max_timestamp() {
        let mut v = sample().to_vec();
        v[ATTRIBUTES_OFFSET + 1] |= ATTR_LOG_APPEND_TIME as u8;
        resign(&mut v);
        validate(&v).unwrap();
        let b = Bytes::from(v);
        let batch = RecordBatch::parse(&b).unwrap();
        assert!(batch.records().all(|r| r.unwrap().timestamp == 5000));
    }

    #[test]
    fn set_producer_stamps_one_batch_under_the_crc() {
        let mut b = RecordBatchBuilder::new();
        b.set_producer(42, 3, 100);
        b.push(1, None, Some(b"a"), &[]);
        b.push(2, None, Some(b"b"), &[]);
        let first = b.finish();
        let h = validate(&first).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (42, 3, 100)
        );
        // The next batch from the same builder is not idempotent unless stamped again.
        b.push(3, None, Some(b"c"), &[]);
        let h = validate(&b.finish()).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        // The fields are covered by the CRC.
        let mut bad = first.to_vec();
        bad[HEADER_LEN - 5] ^= 1;
        assert!(validate(&bad).is_err());
    }
}
