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
    /// The attributes name a compression codec Sluice does not support yet.
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(u8),
    /// A header field is inconsistent (negative count, delta mismatch, ...).
    #[error("invalid batch header: {0}")]
    InvalidHeader(&'static str),
    /// A record inside the batch is malformed.
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
}

/// Compression codec named by attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression (the only one Sluice reads records of today).
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
            return Err(BatchError::InvalidHeader("negative record count or offset delta"));
        }
        Ok(h)
    }

    /// Total size of the batch in bytes, including base offset and length fields.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record (`base_offset + last_offset_delta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// The compression codec named by the attributes.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }
}

/// Computes the CRC-32C a batch should carry (over attributes..end).
///
/// `batch` must hold exactly one whole batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
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

/// Overwrites the base offset of a batch in place (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch of a batch in place (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}
