//! The Kafka request header, parsed here with every length checked.
//!
//! | field            | type                     | header versions |
//! |------------------|--------------------------|-----------------|
//! | `api_key`        | int16                    | all             |
//! | `api_version`    | int16                    | all             |
//! | `correlation_id` | int32                    | all             |
//! | `client_id`      | nullable string (int16 length, -1 = null) | 1, 2 |
//! | tagged fields    | unsigned varint count, then (tag, length, bytes) each | 2 |
//!
//! Header version 2 is used by the flexible versions of each api (which
//! ones is the codec crate's `request_header_version`); version 0 (no client
//! id) only by ControlledShutdown v0, which Sluice does not serve.

use bytes::{Buf, Bytes};

use crate::KafkaError;

/// A parsed request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Api key.
    pub api_key: i16,
    /// Api version.
    pub api_version: i16,
    /// Correlation id echoed in the response.
    pub correlation_id: i32,
    /// Client id (empty when null).
    pub client_id: String,
}

/// Reads the first 8 bytes: api key, version and correlation id.
pub fn peek_ids(payload: &[u8]) -> Option<(i16, i16, i32)> {
    let b = payload.get(..8)?;
    Some((
        i16::from_be_bytes([b[0], b[1]]),
        i16::from_be_bytes([b[2], b[3]]),
        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

/// The client id of a request header (version 1 or 2: every api Sluice
/// serves), without parsing the rest; `None` when it is null, cut short or
/// not UTF-8.
pub(crate) fn peek_client_id(payload: &[u8]) -> Option<&str> {
    let len = i16::from_be_bytes([*payload.get(8)?, *payload.get(9)?]);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(payload.get(10..10 + len)?).ok()
}

fn short(what: &str) -> KafkaError {
    KafkaError::Header(format!("frame ends inside the {what}"))
}

/// Reads an unsigned varint (at most 5 bytes, as Kafka's).
pub(crate) fn read_uvarint(buf: &mut Bytes) -> Option<u32> {
    let mut value: u32 = 0;
    for i in 0..5 {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Parses the header of `header_version` off the front of `buf`.
pub fn parse_header(buf: &mut Bytes, header_version: i16) -> Result<RequestHeader, KafkaError> {
    if buf.remaining() < 8 {
        return Err(short("api key, version and correlation id"));
    }
    let api_key = buf.get_i16();
    let api_version = buf.get_i16();
    let correlation_id = buf.get_i32();
    let mut client_id = String::new();
    if header_version >= 1 {
        if buf.remaining() < 2 {
            return Err(short("client id length"));
        }
        let len = buf.get_i16();
        if len >= 0 {
            let len = len as usize;
            if buf.remaining() < len {
                return Err(short("client id"));
            }
            let raw = buf.split_to(len);
            client_id = String::from_utf8_lossy(&raw).into_owned();
        } else if len != -1 {
            return Err(KafkaError::Header(format!("client id length {len}")));
        }
    }
    if header_version >= 2 {
        let count = read_uvarint(buf).ok_or_else(|| short("tagged field count"))?;
        for _ in 0..count {
            let _tag = read_uvarint(buf).ok_or_else(|| short("tagged field tag"))?;
            let len = read_uvarint(buf).ok_or_else(|| short("tagged field length"))? as usize;
            if buf.remaining() < len {
                return Err(short("tagged field"));
            }
            buf.advance(len);
        }
    }
    Ok(RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(client: Option<&str>, tagged: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 3, 0, 9, 0, 0, 0, 42];
        match client {
            Some(c) => {
                v.extend_from_slice(&(c.len() as i16).to_be_bytes());
                v.extend_from_slice(c.as_bytes());
            }
            None => v.extend_from_slice(&(-1i16).to_be_bytes()),
        }
        v.extend_from_slice(tagged);
        v
    }

    #[test]
    fn headers_of_each_version_parse_and_leave_the_body() {
        let mut b = Bytes::from([header_bytes(Some("rdkafka"), &[0]), vec![7, 7]].concat());
        let h = parse_header(&mut b, 2).unwrap();
        assert_eq!(
            h,
            RequestHeader {
                api_key: 3,
                api_version: 9,
                correlation_id: 42,
                client_id: "rdkafka".into()
            }
        );
        assert_eq!(&b[..], &[7, 7]);
        let mut b = Bytes::from(header_bytes(None, &[]));
        assert_eq!(parse_header(&mut b, 1).unwrap().client_id, "");
        // One tagged field (tag 5, 2 bytes) is skipped.
        let mut b = Bytes::from([header_bytes(Some(""), &[1, 5, 2, 0xaa, 0xbb]), vec![1]].concat());
        parse_header(&mut b, 2).unwrap();
        assert_eq!(&b[..], &[1]);
    }

    #[test]
    fn every_truncation_of_a_header_is_an_error_not_a_panic() {
        let full = header_bytes(Some("client"), &[1, 5, 2, 0xaa, 0xbb]);
        for n in 0..full.len() {
            let mut b = Bytes::copy_from_slice(&full[..n]);
            assert!(parse_header(&mut b, 2).is_err(), "{n} bytes parsed");
        }
        let mut b = Bytes::from(header_bytes(
            Some("x"),
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert!(parse_header(&mut b, 2).is_err());
        let mut bad = header_bytes(None, &[]);
        bad[8..10].copy_from_slice(&(-7i16).to_be_bytes());
        assert!(parse_header(&mut Bytes::from(bad), 1).is_err());
    }
}
