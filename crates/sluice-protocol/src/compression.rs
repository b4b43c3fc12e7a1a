//! Compression codecs of record batches, in Kafka's framings.
//!
//! Attribute bits 0-2 of a batch name the codec of its records section (the
//! bytes after the 61-byte header); the header itself is never compressed.
//!
//! | value | codec  | framing written                                   | framings read                    |
//! |------:|--------|---------------------------------------------------|----------------------------------|
//! |     0 | none   | records as they are                               | same                             |
//! |     1 | gzip   | one gzip member (RFC 1952), as Java's `GZIPOutputStream` | one or more gzip members  |
//! |     2 | snappy | xerial/snappy-java stream, as Kafka's Java client | xerial stream, or one raw snappy block (librdkafka, `kafka-protocol`) |
//! |     3 | lz4    | LZ4 frame format, 64 KiB independent blocks       | any LZ4 frame                    |
//! |     4 | zstd   | one zstd frame, level 3                            | zstd frames                      |
//!
//! The xerial snappy stream: a 16-byte header (`82 53 4e 41 50 50 59 00`
//! = `\x82SNAPPY\0`, then i32 version 1 and i32 minimum compatible version 1,
//! big-endian), then chunks of `[i32 compressed length][raw snappy block]`,
//! each block compressing at most 32 KiB.
//!
//! Decompression is bounded: output beyond the caller's limit stops it with
//! [`BatchError::DecompressedTooLarge`] (no allocation follows a size the
//! payload declares without checking it against the limit), and a payload the
//! codec cannot decode is [`BatchError::Decompress`].

use std::io::{Read, Write};

use bytes::{BufMut, BytesMut};

use crate::batch::BatchError;
pub use crate::batch::Compression;

/// Default cap on the decompressed records of one batch (64 MiB, the default frame limit).
pub const MAX_DECOMPRESSED_BYTES: usize = crate::codec::DEFAULT_MAX_FRAME_BYTES;

/// Magic bytes opening a xerial (snappy-java) snappy stream.
pub const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;
/// Smallest window (log2) the zstd decoder accepts whatever the limit.
const ZSTD_MIN_WINDOW_LOG: u32 = 24;
/// zstd level used when writing (Kafka's default).
const ZSTD_LEVEL: i32 = 3;

/// Appends `src` compressed with `codec` to `dst` (`Compression::None` copies it).
pub fn compress(codec: Compression, src: &[u8], dst: &mut BytesMut) -> std::io::Result<()> {
    match codec {
        Compression::None => dst.put_slice(src),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(dst.writer(), flate2::Compression::default());
            e.write_all(src)?;
            e.finish()?;
        }
        Compression::Snappy => {
            dst.put_slice(&XERIAL_MAGIC);
            dst.put_i32(1);
            dst.put_i32(1);
            let mut enc = snap::raw::Encoder::new();
            for chunk in src.chunks(XERIAL_BLOCK) {
                let at = dst.len();
                let max = snap::raw::max_compress_len(chunk.len());
                dst.put_bytes(0, 4 + max);
                let n = enc
                    .compress(chunk, &mut dst[at + 4..])
                    .map_err(std::io::Error::other)?;
                dst.truncate(at + 4 + n);
                let len = i32::try_from(n).map_err(std::io::Error::other)?;
                dst[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, dst.writer());
            e.write_all(src)?;
            e.finish().map_err(std::io::Error::other)?;
        }
        Compression::Zstd => {
            zstd::stream::copy_encode(src, dst.writer(), ZSTD_LEVEL)?;
        }
    }
    Ok(())
}

/// Appends the decompression of `src` to `dst`; fails if it would add more than `limit` bytes.
pub fn decompress(
    codec: Compression,
    src: &[u8],
    limit: usize,
    dst: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let broken = |reason: String| BatchError::Decompress { codec, reason };
    match codec {
        Compression::None => {
            if src.len() > limit {
                return Err(BatchError::DecompressedTooLarge { limit });
            }
            dst.extend_from_slice(src);
            Ok(())
        }
        Compression::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(src), codec, limit, dst)
        }
        Compression::Snappy => snappy_decompress(src, limit, dst).map_err(|e| match e {
            SnappyError::TooLarge => BatchError::DecompressedTooLarge { limit },
            SnappyError::Broken(r) => broken(r),
        }),
        Compression::Lz4 => {
            read_bounded(lz4_flex::frame::FrameDecoder::new(src), codec, limit, dst)
        }
        Compression::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(src).map_err(|e| broken(e.to_string()))?;
            // The window buffer is allocated up front from the frame header:
            // at most 2^24 (16 MiB, enough for every level's default window)
            // or the limit, whichever is larger, and never zstd's 2^27 maximum.
            let log = usize::BITS - limit.saturating_sub(1).leading_zeros();
            d.window_log_max(log.clamp(ZSTD_MIN_WINDOW_LOG, 27))
                .map_err(|e| broken(e.to_string()))?;
            read_bounded(d, codec, limit, dst)
        }
    }
}

/// Reads `r` to its end into `dst`, failing once more than `limit` bytes came out.
fn read_bounded(
    r: impl Read,
    codec: Compression,
    limit: usize,
    dst: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let start = dst.len();
    r.take(limit as u64 + 1)
        .read_to_end(dst)
        .map_err(|e| BatchError::Decompress {
            codec,
            reason: e.to_string(),
        })?;
    if dst.len() - start > limit {
        dst.truncate(start);
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    Ok(())
}

enum SnappyError {
    TooLarge,
    Broken(String),
}

/// One raw snappy block into `dst`, its declared length checked against `left` first.
/// More than any snappy block can expand to, per input byte.
const SNAPPY_MAX_EXPANSION: usize = 32;

fn snappy_block(block: &[u8], left: &mut usize, dst: &mut Vec<u8>) -> Result<(), SnappyError> {
    let n = snap::raw::decompress_len(block).map_err(|e| SnappyError::Broken(e.to_string()))?;
    if n > *left {
        return Err(SnappyError::TooLarge);
    }
    // A snappy element expands at most about 21x (a 3-byte copy of 64
    // bytes): a block declaring more than 32x its size is a lie, refused
    // before the output is allocated and zeroed.
    if n > block.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
        return Err(SnappyError::Broken(format!(
            "block of {} bytes declares {n} bytes of output",
            block.len()
        )));
    }
    *left -= n;
    let at = dst.len();
    dst.resize(at + n, 0);
    let got = snap::raw::Decoder::new()
        .decompress(block, &mut dst[at..])
        .map_err(|e| SnappyError::Broken(e.to_string()))?;
    dst.truncate(at + got);
    Ok(())
}

fn snappy_decompress(src: &[u8], limit: usize, dst: &mut Vec<u8>) -> Result<(), SnappyError> {
    let mut left = limit;
    if !src.starts_with(&XERIAL_MAGIC) {
        return snappy_block(src, &mut left, dst);
    }
    let mut rest = src
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| SnappyError::Broken("xerial header truncated".into()))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| SnappyError::Broken("xerial chunk length truncated".into()))?;
        let len = usize::try_from(i32::from_be_bytes(*len))
            .map_err(|_| SnappyError::Broken("negative xerial chunk length".into()))?;
        let block = tail
            .get(..len)
            .ok_or_else(|| SnappyError::Broken("xerial chunk truncated".into()))?;
        snappy_block(block, &mut left, dst)?;
        rest = &tail[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 977) as u8)
            .collect()
    }

    #[test]
    fn a_snappy_block_declaring_more_than_it_can_hold_is_refused_before_allocating() {
        // A 64 MiB varint length and nothing else.
        let mut block = Vec::new();
        let mut n: u32 = 64 << 20;
        while n >= 0x80 {
            block.push((n as u8) | 0x80);
            n >>= 7;
        }
        block.push(n as u8);
        let mut out = Vec::new();
        decompress(Compression::Snappy, &block, 128 << 20, &mut out).unwrap_err();
        assert!(
            out.capacity() < 1 << 20,
            "allocated {} bytes",
            out.capacity()
        );
    }

    #[test]
    fn every_codec_round_trips() {
        let src = sample();
        for codec in ALL {
            let mut c = BytesMut::new();
            compress(codec, &src, &mut c).unwrap();
            if codec != Compression::None {
                assert!(c.len() < src.len(), "{codec:?} did not compress");
            }
            let mut out = b"prefix".to_vec();
            decompress(codec, &c, src.len(), &mut out).unwrap();
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..], &src[..], "{codec:?}");
            // Empty input round-trips too.
            let mut c = BytesMut::new();
            compress(codec, &[], &mut c).unwrap();
            let mut out = Vec::new();
            decompress(codec, &c, 0, &mut out).unwrap();
            assert!(out.is_empty());
        }
    }

    #[test]
    fn snappy_writes_xerial_and_reads_raw_blocks() {
        let src = sample();
        let mut c = BytesMut::new();
        compress(Compression::Snappy, &src, &mut c).unwrap();
        assert_eq!(&c[..8], &XERIAL_MAGIC);
        assert_eq!(&c[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        let raw = snap::raw::Encoder::new().compress_vec(&src).unwrap();
        let mut out = Vec::new();
        decompress(Compression::Snappy, &raw, src.len(), &mut out).unwrap();
        assert_eq!(out, src);
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 4 << 20];
        for codec in ALL {
            let mut c = BytesMut::new();
            compress(codec, &zeros, &mut c).unwrap();
            let mut out = Vec::new();
            let e = decompress(codec, &c, 1 << 20, &mut out).unwrap_err();
            assert_eq!(
                e,
                BatchError::DecompressedTooLarge { limit: 1 << 20 },
                "{codec:?}"
            );
            assert!(
                out.capacity() <= 4 << 20,
                "{codec:?} allocated past the limit"
            );
        }
        // A raw snappy block declaring 4 GiB is refused before allocating.
        let mut out = Vec::new();
        let declared = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(
            decompress(Compression::Snappy, &declared, 1 << 20, &mut out),
            Err(BatchError::DecompressedTooLarge { limit: 1 << 20 })
        );
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn garbage_is_a_decompress_error() {
        let src = sample();
        for codec in &ALL[1..] {
            let mut c = BytesMut::new();
            compress(*codec, &src, &mut c).unwrap();
            let cut = &c[..c.len() / 2];
            let mut out = Vec::new();
            let e = decompress(*codec, cut, src.len(), &mut out).unwrap_err();
            assert!(
                matches!(e, BatchError::Decompress { .. }),
                "{codec:?}: {e:?}"
            );
            let mut out = Vec::new();
            let e =
                decompress(*codec, b"definitely not compressed", 1 << 20, &mut out).unwrap_err();
            assert!(
                matches!(e, BatchError::Decompress { .. }),
                "{codec:?}: {e:?}"
            );
        }
    }
}
