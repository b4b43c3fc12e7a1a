//! Reading the Kafka consumer's embedded protocol (protocol type
//! `"consumer"`): the subscription a member sends in JoinGroup metadata and
//! the assignment its leader sends in SyncGroup. The coordinator never needs
//! them to work (the bytes are opaque to the classic protocol); the broker
//! reads them only to show a Kafka group's topics and partitions in
//! DescribeGroups, the CLI and the lag metrics.
//!
//! Both decoders are defensive: every length and count is checked against
//! the bytes present before anything is allocated or read, nothing panics,
//! and anything malformed yields `None`. Only the prefix common to every
//! version is read, so later versions (which append fields) decode too.
//!
//! # ConsumerProtocolSubscription (every version starts so)
//!
//! | field    | type                                             |
//! |----------|--------------------------------------------------|
//! | version  | i16                                              |
//! | topics   | i32 count, then each: i16 length, UTF-8 bytes     |
//! | ...      | user data, owned partitions, generation, rack (ignored) |
//!
//! # ConsumerProtocolAssignment (every version)
//!
//! | field               | type                                                            |
//! |---------------------|-----------------------------------------------------------------|
//! | version             | i16                                                             |
//! | assigned_partitions | i32 count, then each: topic (i16 length, UTF-8), i32 count of i32 partitions |
//! | user_data           | i32 length (-1: null), bytes (ignored)                          |

use crate::assign::TopicPartition;

/// The protocol type of Kafka's consumers.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// A cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        let b = self.take(2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        let b = self.take(4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-null string (i16 length).
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).ok()
    }

    /// An array count that the remaining bytes can hold at `min_entry` bytes per entry.
    fn count(&mut self, min_entry: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n.checked_mul(min_entry)? <= self.0.len()).then_some(n)
    }
}

/// The subscribed topics of a consumer's JoinGroup metadata; `None` when
/// the bytes are not a ConsumerProtocolSubscription.
pub fn decode_subscription(bytes: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version < 0 {
        return None;
    }
    let n = r.count(2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        topics.push(r.string()?);
    }
    Some(topics)
}

/// The partitions of a consumer's SyncGroup assignment, in the order
/// given; `None` when the bytes are not a ConsumerProtocolAssignment. An
/// empty byte string (a member the leader gave nothing) is no partitions.
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version < 0 {
        return None;
    }
    // A topic entry is at least a 2-byte name length and a 4-byte count.
    let n = r.count(6)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let topic = r.string()?;
        let parts = r.count(4)?;
        for _ in 0..parts {
            let p = u32::try_from(r.i32()?).ok()?;
            out.push(TopicPartition::new(topic.clone(), p));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_str(s: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A ConsumerProtocolAssignment as the Java client writes it.
    fn assignment(version: i16, parts: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for (t, ps) in parts {
            put_str(t, &mut out);
            out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
            for p in *ps {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out
    }

    #[test]
    fn assignments_decode() {
        let b = assignment(3, &[("a", &[0, 2]), ("b", &[1])]);
        assert_eq!(
            decode_assignment(&b).unwrap(),
            vec![
                TopicPartition::new("a", 0),
                TopicPartition::new("a", 2),
                TopicPartition::new("b", 1)
            ]
        );
        assert_eq!(decode_assignment(&[]).unwrap(), vec![]);
    }

    #[test]
    fn subscriptions_decode() {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend_from_slice(&2i32.to_be_bytes());
        put_str("orders", &mut b);
        put_str("audit", &mut b);
        b.extend_from_slice(&(-1i32).to_be_bytes()); // user data
        b.extend_from_slice(&0i32.to_be_bytes()); // owned partitions
        assert_eq!(decode_subscription(&b).unwrap(), vec!["orders", "audit"]);
    }

    #[test]
    fn garbage_never_panics_and_allocates_only_what_is_there() {
        let good = assignment(0, &[("t", &[0, 1, 2])]);
        for cut in 0..good.len() - 4 {
            // Every truncation before the user data is refused or shorter.
            let _ = decode_assignment(&good[..cut]);
            let _ = decode_subscription(&good[..cut]);
        }
        // Huge counts are refused before any allocation.
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_assignment(&huge).is_none());
        assert!(decode_subscription(&huge).is_none());
        // Negative lengths, counts and partitions.
        let neg = assignment(0, &[("t", &[-1])]);
        assert!(decode_assignment(&neg).is_none());
        let mut neg_count = 0i16.to_be_bytes().to_vec();
        neg_count.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(decode_assignment(&neg_count).is_none());
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_assignment(&bytes);
            let _ = decode_subscription(&bytes);
        }
    }
}
