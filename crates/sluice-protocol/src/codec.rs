//! Length-prefixed framing for tokio-util.
//!
//! | offset | size   | field   | notes                                        |
//! |-------:|-------:|---------|----------------------------------------------|
//! |      0 |      4 | length  | u32 big-endian: bytes of payload that follow |
//! |      4 | length | payload | a request or response (see [`crate::wire`])   |
//!
//! The decoder checks `length` against the configured maximum before it
//! reserves any memory, and returns `Ok(None)` while a frame is incomplete.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ProtocolError;

/// Default largest accepted frame payload: 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// A u32-length-prefixed frame codec; items are payloads without the prefix.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec accepting payloads of at most `max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameCodec { max_frame_bytes }
    }

    /// The configured maximum payload size.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > self.max_frame_bytes {
            return Err(ProtocolError::FrameTooLarge {
                size: len,
                max: self.max_frame_bytes,
            });
        }
        let total = LENGTH_PREFIX + len;
        if src.len() < total {
            // The length is within the limit, so reserving the rest of the frame is bounded.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = ProtocolError;

    /// Writes the u32 length and the payload. The maximum applies to what we
    /// accept, not what we send; only a payload over `u32::MAX` is refused.
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let len = u32::try_from(item.len()).map_err(|_| ProtocolError::FrameTooLarge {
            size: item.len(),
            max: u32::MAX as usize,
        })?;
        dst.reserve(LENGTH_PREFIX + item.len());
        dst.put_u32(len);
        dst.put_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_yield_none_then_the_payload() {
        let mut codec = FrameCodec::new(1024);
        let mut full = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"hello world"), &mut full)
            .unwrap();
        codec.encode(Bytes::from_static(b"!"), &mut full).unwrap();
        let mut src = BytesMut::new();
        // Feed one byte at a time: every prefix of the first frame is incomplete.
        for (i, b) in full.iter().enumerate() {
            src.put_u8(*b);
            let got = codec.decode(&mut src).unwrap();
            if i + 1 == 4 + 11 {
                assert_eq!(got.as_deref(), Some(&b"hello world"[..]));
            } else if i + 1 == 4 + 11 + 5 {
                assert_eq!(got.as_deref(), Some(&b"!"[..]));
            } else {
                assert_eq!(got, None, "byte {i}");
            }
        }
        assert!(src.is_empty());
    }

    #[test]
    fn oversized_frame_is_rejected_before_reserve() {
        let mut codec = FrameCodec::new(1024);
        let mut src = BytesMut::with_capacity(8);
        src.put_u32(1025);
        let cap_before = src.capacity();
        let err = codec.decode(&mut src).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::FrameTooLarge {
                size: 1025,
                max: 1024
            }
        ));
        assert_eq!(
            src.capacity(),
            cap_before,
            "reserved memory for a rejected frame"
        );

        let mut src = BytesMut::new();
        src.put_u32(u32::MAX);
        let err = FrameCodec::default().decode(&mut src).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }));
    }

    #[test]
    fn frame_at_the_limit_and_empty_frame_are_accepted() {
        let mut codec = FrameCodec::new(4);
        let mut src = BytesMut::new();
        src.put_u32(4);
        src.put_slice(b"abcd");
        src.put_u32(0);
        assert_eq!(
            codec.decode(&mut src).unwrap().as_deref(),
            Some(&b"abcd"[..])
        );
        assert_eq!(codec.decode(&mut src).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(codec.decode(&mut src).unwrap(), None);
    }

    #[test]
    fn default_max_is_64_mib() {
        assert_eq!(DEFAULT_MAX_FRAME_BYTES, 64 << 20);
        assert_eq!(FrameCodec::default().max_frame_bytes(), 64 << 20);
    }
}
