//! Per-topic configuration and its `topic.meta` file.
//!
//! `<data>/<topic>/topic.meta` records the partition count and the config
//! keys the topic overrides; everything else follows the broker defaults at
//! the time of each start (as Kafka does with topic overrides).
//!
//! File layout (all integers big-endian):
//!
//! | offset | size     | field     | notes                                          |
//! |-------:|---------:|-----------|------------------------------------------------|
//! |      0 |        4 | magic     | ASCII `SLTM`                                   |
//! |      4 |        2 | version   | u16, currently 1                               |
//! |      6 |        2 | reserved  | u16, written 0, ignored on read                |
//! |      8 |        4 | body_len  | u32: bytes of body                             |
//! |     12 |        4 | body_crc  | u32: CRC-32 (IEEE, `crc32fast`) of the body    |
//! |     16 | body_len | body      | UTF-8 JSON object, see [`TopicMeta`]           |
//!
//! Nothing may follow the body. A bad magic, unknown version, length
//! mismatch, CRC mismatch or undecodable body is reported as
//! [`BrokerError::TopicMeta`]. The file is replaced atomically: written to
//! `topic.meta.tmp`, fsynced, renamed, and the directory fsynced.
//!
//! Topic config keys (CreateTopics `configs`, Metadata `configs`):
//! `retention.ms`, `retention.bytes`, `segment.bytes`, `segment.ms`
//! (`-1` = unlimited for the three optional ones), `flush`
//! (`always|interval|os`), `flush.interval.ms`, and Kafka 3.6's
//! `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms`
//! (how far a produced record's CreateTime timestamp may lie before / after
//! the broker clock; defaults unlimited and 1 h, as Kafka).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_log::{FlushPolicy, LogConfig};

use crate::config::{FlushMode, TopicDefaults};
use crate::error::BrokerError;

/// File name of the metadata file inside a topic directory.
pub const META_FILE: &str = "topic.meta";
/// Magic bytes at the start of the file.
pub const MAGIC: [u8; 4] = *b"SLTM";
/// Current format version.
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 16;
/// Largest body accepted on read (a sanity bound, far above any real topic).
const MAX_BODY: usize = 1 << 20;
/// Smallest `segment.bytes` accepted (64 KiB): every segment costs three
/// files, three maps and a roll (two fsyncs), so a tiny size would let one
/// topic config exhaust descriptors, maps and disk bandwidth.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// Smallest `segment.ms` accepted (1 s): an age of 0 would roll on every
/// append, with the same costs.
pub const MIN_SEGMENT_MS: u64 = 1_000;
/// Default `message.timestamp.before.max.ms`: unlimited (Kafka's default).
pub const DEFAULT_TIMESTAMP_BEFORE_MAX_MS: i64 = i64::MAX;
/// Default `message.timestamp.after.max.ms`: one hour (Kafka's default).
pub const DEFAULT_TIMESTAMP_AFTER_MAX_MS: i64 = 3_600_000;

/// Config values a topic sets explicitly; `None` follows the broker default.
/// For the optional limits a negative value means "unlimited".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicOverrides {
    /// `retention.ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// `retention.bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
    /// `segment.bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
    /// `segment.ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_ms: Option<i64>,
    /// `flush`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush: Option<FlushMode>,
    /// `flush.interval.ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
    /// `message.timestamp.before.max.ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_timestamp_before_max_ms: Option<i64>,
    /// `message.timestamp.after.max.ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_timestamp_after_max_ms: Option<i64>,
}

/// What `topic.meta` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMeta {
    /// Partition count.
    pub partitions: u32,
    /// Explicit config values.
    #[serde(default)]
    pub overrides: TopicOverrides,
    /// The topic id (UUID, 32 lowercase hex digits) Kafka clients see; a
    /// file from before topic ids gets one at its next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A fresh random topic id (a version-4 UUID: never all zeros).
pub fn new_topic_id() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut id = [0u8; 16];
    for (i, chunk) in id.chunks_mut(8).enumerate() {
        // RandomState is seeded from the OS per instance.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// A topic id as 32 lowercase hex digits.
pub fn topic_id_hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 32 hex digits back into a topic id.
pub fn parse_topic_id(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// Effective configuration of one topic (overrides applied on defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Partition count.
    pub partitions: u32,
    /// Flush policy.
    pub flush: FlushMode,
    /// Period of the `interval` policy.
    pub flush_interval_ms: u64,
    /// Segment roll size.
    pub segment_bytes: u64,
    /// Segment roll age.
    pub segment_ms: Option<u64>,
    /// Retention by age.
    pub retention_ms: Option<u64>,
    /// Retention by size.
    pub retention_bytes: Option<u64>,
    /// Largest single append.
    pub max_batch_bytes: u32,
    /// How far (ms) a record timestamp may lie before the broker clock.
    pub timestamp_before_max_ms: i64,
    /// How far (ms) a record timestamp may lie after the broker clock.
    pub timestamp_after_max_ms: i64,
}

fn limit(v: Option<i64>, default: Option<u64>) -> Option<u64> {
    match v {
        Some(v) if v < 0 => None,
        Some(v) => Some(v as u64),
        None => default,
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> BrokerError {
    BrokerError::InvalidConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Every topic config key, as CreateTopics, AlterConfigs and Metadata name them.
pub const CONFIG_KEYS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "flush",
    "flush.interval.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
];

impl TopicOverrides {
    /// Parses CreateTopics `configs` pairs; unknown keys and bad values are errors.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TopicOverrides, BrokerError> {
        let mut o = TopicOverrides::default();
        for (key, value) in pairs {
            o.set(key, value)?;
        }
        Ok(o)
    }

    /// These overrides with AlterConfigs changes applied: `Some(value)` sets
    /// the key (checked as [`TopicOverrides::from_pairs`] does), `None`
    /// removes the override (an unknown key is an error either way). All or
    /// nothing: on error `self` is untouched.
    pub fn with_changes(
        &self,
        changes: &[(String, Option<String>)],
    ) -> Result<TopicOverrides, BrokerError> {
        let mut o = self.clone();
        for (key, value) in changes {
            match value {
                Some(v) => o.set(key, v)?,
                None => o.clear(key)?,
            }
        }
        Ok(o)
    }

    /// The config keys this topic sets explicitly.
    pub fn keys(&self) -> Vec<&'static str> {
        [
            ("retention.ms", self.retention_ms.is_some()),
            ("retention.bytes", self.retention_bytes.is_some()),
            ("segment.ms", self.segment_ms.is_some()),
            ("segment.bytes", self.segment_bytes.is_some()),
            ("flush", self.flush.is_some()),
            ("flush.interval.ms", self.flush_interval_ms.is_some()),
            (
                "message.timestamp.before.max.ms",
                self.message_timestamp_before_max_ms.is_some(),
            ),
            (
                "message.timestamp.after.max.ms",
                self.message_timestamp_after_max_ms.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// Removes the override of `key` (the topic follows the broker default again).
    pub fn clear(&mut self, key: &str) -> Result<(), BrokerError> {
        match key {
            "retention.ms" => self.retention_ms = None,
            "retention.bytes" => self.retention_bytes = None,
            "segment.ms" => self.segment_ms = None,
            "segment.bytes" => self.segment_bytes = None,
            "flush" => self.flush = None,
            "flush.interval.ms" => self.flush_interval_ms = None,
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms = None,
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms = None,
            _ => return Err(invalid(key, "", "unknown topic config key")),
        }
        Ok(())
    }

    /// Sets `key` to `value` after checking both.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), BrokerError> {
        let o = self;
        let v = value.trim();
        let signed = || -> Result<i64, BrokerError> {
            let n: i64 = v
                .parse()
                .map_err(|e: std::num::ParseIntError| invalid(key, value, e.to_string()))?;
            if n < -1 {
                return Err(invalid(key, value, "must be -1 (unlimited) or >= 0"));
            }
            Ok(n)
        };
        let non_negative = || -> Result<i64, BrokerError> {
            let n: i64 = v
                .parse()
                .map_err(|e: std::num::ParseIntError| invalid(key, value, e.to_string()))?;
            if n < 0 {
                return Err(invalid(key, value, "must be >= 0"));
            }
            Ok(n)
        };
        let positive = || -> Result<u64, BrokerError> {
            let n: u64 = v
                .parse()
                .map_err(|e: std::num::ParseIntError| invalid(key, value, e.to_string()))?;
            if n == 0 {
                return Err(invalid(key, value, "must be > 0"));
            }
            Ok(n)
        };
        match key {
            "retention.ms" => o.retention_ms = Some(signed()?),
            "retention.bytes" => o.retention_bytes = Some(signed()?),
            "segment.ms" => {
                let n = signed()?;
                if (0..MIN_SEGMENT_MS as i64).contains(&n) {
                    return Err(invalid(
                        key,
                        value,
                        format!("must be -1 (never) or at least {MIN_SEGMENT_MS}"),
                    ));
                }
                o.segment_ms = Some(n);
            }
            "segment.bytes" => {
                let n = positive()?;
                if n < MIN_SEGMENT_BYTES {
                    return Err(invalid(
                        key,
                        value,
                        format!("must be at least {MIN_SEGMENT_BYTES}"),
                    ));
                }
                o.segment_bytes = Some(n);
            }
            "flush" => {
                o.flush = Some(
                    FlushMode::parse(v)
                        .ok_or_else(|| invalid(key, value, "expected always, interval or os"))?,
                )
            }
            "flush.interval.ms" => o.flush_interval_ms = Some(positive()?),
            "message.timestamp.before.max.ms" => {
                o.message_timestamp_before_max_ms = Some(non_negative()?)
            }
            "message.timestamp.after.max.ms" => {
                o.message_timestamp_after_max_ms = Some(non_negative()?)
            }
            _ => return Err(invalid(key, value, "unknown topic config key")),
        }
        Ok(())
    }
}

impl TopicMeta {
    /// Effective config of this topic under the given broker defaults.
    pub fn effective(&self, d: &TopicDefaults) -> TopicConfig {
        let o = &self.overrides;
        TopicConfig {
            partitions: self.partitions,
            flush: o.flush.unwrap_or(d.flush),
            flush_interval_ms: o.flush_interval_ms.unwrap_or(d.flush_interval_ms),
            // Raised to the minimums: a topic.meta written before they
            // existed may hold less.
            segment_bytes: o
                .segment_bytes
                .unwrap_or(d.segment_bytes)
                .max(MIN_SEGMENT_BYTES),
            segment_ms: limit(o.segment_ms, d.segment_ms).map(|ms| ms.max(MIN_SEGMENT_MS)),
            retention_ms: limit(o.retention_ms, d.retention_ms),
            retention_bytes: limit(o.retention_bytes, d.retention_bytes),
            max_batch_bytes: d.max_batch_bytes,
            timestamp_before_max_ms: o
                .message_timestamp_before_max_ms
                .unwrap_or(d.timestamp_before_max_ms),
            timestamp_after_max_ms: o
                .message_timestamp_after_max_ms
                .unwrap_or(d.timestamp_after_max_ms),
        }
    }

    /// Serializes to the framed file format.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of integers, strings and enums always serializes.
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses the framed file format, detecting damage.
    pub fn decode(buf: &[u8]) -> Result<TopicMeta, String> {
        let header = buf
            .get(..HEADER_LEN)
            .ok_or_else(|| format!("file is {} bytes, shorter than the header", buf.len()))?;
        if header[0..4] != MAGIC {
            return Err(format!("bad magic {:02x?}", &header[0..4]));
        }
        let version = u16::from_be_bytes([header[4], header[5]]);
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let body_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let crc = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        if body_len > MAX_BODY {
            return Err(format!("body length {body_len} is implausible"));
        }
        let body = &buf[HEADER_LEN..];
        if body.len() != body_len {
            return Err(format!(
                "body is {} bytes, header says {body_len}",
                body.len()
            ));
        }
        let computed = crc32fast::hash(body);
        if computed != crc {
            return Err(format!(
                "crc mismatch: stored {crc:#010x}, computed {computed:#010x}"
            ));
        }
        let meta: TopicMeta =
            serde_json::from_slice(body).map_err(|e| format!("undecodable body: {e}"))?;
        if meta.partitions == 0 {
            return Err("partition count is 0".into());
        }
        Ok(meta)
    }

    /// Reads `<topic_dir>/topic.meta`.
    pub fn load(topic_dir: &Path) -> Result<TopicMeta, BrokerError> {
        let path = topic_dir.join(META_FILE);
        let buf = fs::read(&path).map_err(|source| BrokerError::Io {
            path: path.clone(),
            source,
        })?;
        TopicMeta::decode(&buf).map_err(|reason| BrokerError::TopicMeta { path, reason })
    }

    /// Atomically writes `<topic_dir>/topic.meta` (tmp file, fsync, rename, fsync dir).
    pub fn store(&self, topic_dir: &Path) -> Result<(), BrokerError> {
        let path = topic_dir.join(META_FILE);
        let tmp = topic_dir.join("topic.meta.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| BrokerError::Io { path: p, source }
        };
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&self.encode()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(topic_dir)
    }
}

/// fsyncs a directory so a new or renamed entry in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), BrokerError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| BrokerError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

impl TopicConfig {
    /// The storage engine configuration for each partition of this topic.
    pub fn log_config(&self) -> LogConfig {
        let flush = match self.flush {
            FlushMode::Always => FlushPolicy::Always,
            FlushMode::Interval => {
                FlushPolicy::Interval(Duration::from_millis(self.flush_interval_ms))
            }
            FlushMode::Os => FlushPolicy::Os,
        };
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            index_interval_bytes: 4096,
            // Never preallocate more than one segment can hold.
            preallocate_bytes: self.segment_bytes.min(64 << 20),
            max_batch_bytes: self.max_batch_bytes,
            flush,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
        }
    }

    /// The effective values as config pairs (for Metadata).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let opt = |v: Option<u64>| v.map_or_else(|| "-1".to_string(), |v| v.to_string());
        vec![
            ("partitions".into(), self.partitions.to_string()),
            ("retention.ms".into(), opt(self.retention_ms)),
            ("retention.bytes".into(), opt(self.retention_bytes)),
            ("segment.bytes".into(), self.segment_bytes.to_string()),
            ("segment.ms".into(), opt(self.segment_ms)),
            ("flush".into(), self.flush.as_str().into()),
            (
                "flush.interval.ms".into(),
                self.flush_interval_ms.to_string(),
            ),
            (
                "message.timestamp.before.max.ms".into(),
                self.timestamp_before_max_ms.to_string(),
            ),
            (
                "message.timestamp.after.max.ms".into(),
                self.timestamp_after_max_ms.to_string(),
            ),
        ]
    }
}

/// Checks a topic name: `[a-zA-Z0-9._-]{1,249}`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let bad = |reason| BrokerError::InvalidTopic {
        name: name.chars().take(300).collect(),
        reason,
    };
    // One rule set for the decoder and the broker (`sluice_protocol::topic_name_problem`).
    if let Some(reason) = sluice_protocol::topic_name_problem(name) {
        return Err(bad(reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TopicMeta {
        TopicMeta {
            partitions: 3,
            overrides: TopicOverrides::from_pairs(&[
                ("retention.ms".into(), "60000".into()),
                ("flush".into(), "always".into()),
                ("segment.bytes".into(), "1048576".into()),
                ("retention.bytes".into(), "-1".into()),
            ])
            .unwrap(),
            id: Some(topic_id_hex(&[7; 16])),
        }
    }

    #[test]
    fn round_trip_in_memory_and_on_disk() {
        let m = sample();
        assert_eq!(TopicMeta::decode(&m.encode()).unwrap(), m);
        let dir = tempfile::tempdir().unwrap();
        m.store(dir.path()).unwrap();
        assert_eq!(TopicMeta::load(dir.path()).unwrap(), m);
        // Overwrite is atomic and leaves no tmp file.
        let m2 = TopicMeta {
            partitions: 9,
            overrides: TopicOverrides::default(),
            id: Some(topic_id_hex(&new_topic_id())),
        };
        m2.store(dir.path()).unwrap();
        assert_eq!(TopicMeta::load(dir.path()).unwrap(), m2);
        assert!(!dir.path().join("topic.meta.tmp").exists());
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_detected() {
        let buf = sample().encode();
        for i in 0..buf.len() {
            // Reserved bytes are documented as ignored.
            if i == 6 || i == 7 {
                continue;
            }
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(TopicMeta::decode(&b).is_err(), "flip at {i} not detected");
        }
        for len in 0..buf.len() {
            assert!(
                TopicMeta::decode(&buf[..len]).is_err(),
                "truncation to {len}"
            );
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(TopicMeta::decode(&longer).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(META_FILE), &buf[..buf.len() - 1]).unwrap();
        assert!(matches!(
            TopicMeta::load(dir.path()),
            Err(BrokerError::TopicMeta { .. })
        ));
    }

    #[test]
    fn effective_config_applies_overrides_on_defaults() {
        let d = TopicDefaults {
            retention_bytes: Some(10),
            ..TopicDefaults::default()
        };
        let c = sample().effective(&d);
        assert_eq!(c.partitions, 3);
        assert_eq!(c.retention_ms, Some(60000));
        assert_eq!(c.retention_bytes, None, "-1 overrides a default limit");
        assert_eq!(c.flush, FlushMode::Always);
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.flush_interval_ms, d.flush_interval_ms);
        let lc = c.log_config();
        assert!(matches!(lc.flush, FlushPolicy::Always));
        assert_eq!(lc.preallocate_bytes, 1 << 20);
        let pairs = c.to_pairs();
        assert!(pairs.contains(&("flush".to_string(), "always".to_string())));
    }

    #[test]
    fn topic_ids_are_random_version_4_and_round_trip_as_hex() {
        let (a, b) = (new_topic_id(), new_topic_id());
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(parse_topic_id(&topic_id_hex(&a)), Some(a));
        assert_eq!(parse_topic_id("zz"), None);
        assert_eq!(parse_topic_id(&"g".repeat(32)), None);
        // A file from before topic ids still decodes (no id).
        let old = br#"{"partitions":2,"overrides":{}}"#;
        let mut framed = TopicMeta {
            partitions: 2,
            overrides: TopicOverrides::default(),
            id: None,
        }
        .encode();
        assert_eq!(&framed[16..], old);
        framed.truncate(16);
        assert_eq!(framed.len(), 16);
    }

    #[test]
    fn timestamp_limits_default_as_kafka_and_round_trip() {
        let c = sample().effective(&TopicDefaults::default());
        assert_eq!(c.timestamp_before_max_ms, i64::MAX);
        assert_eq!(c.timestamp_after_max_ms, 3_600_000);
        let m = TopicMeta {
            partitions: 1,
            overrides: TopicOverrides::from_pairs(&[
                ("message.timestamp.before.max.ms".into(), "86400000".into()),
                ("message.timestamp.after.max.ms".into(), "0".into()),
            ])
            .unwrap(),
            id: None,
        };
        assert_eq!(TopicMeta::decode(&m.encode()).unwrap(), m);
        let c = m.effective(&TopicDefaults::default());
        assert_eq!(c.timestamp_before_max_ms, 86_400_000);
        assert_eq!(c.timestamp_after_max_ms, 0);
        let pairs = c.to_pairs();
        for (k, v) in [
            ("message.timestamp.before.max.ms", "86400000"),
            ("message.timestamp.after.max.ms", "0"),
        ] {
            assert!(pairs.contains(&(k.to_string(), v.to_string())), "{k}");
        }
    }

    #[test]
    fn bad_config_pairs_are_rejected() {
        for (k, v) in [
            ("retention.ms", "abc"),
            ("retention.ms", "-5"),
            ("segment.bytes", "0"),
            ("segment.bytes", "100"),
            ("segment.bytes", "65535"),
            ("segment.ms", "0"),
            ("segment.ms", "999"),
            ("flush", "sometimes"),
            ("flush.interval.ms", "0"),
            ("message.timestamp.before.max.ms", "-1"),
            ("message.timestamp.after.max.ms", "soon"),
            ("no.such.key", "1"),
        ] {
            let r = TopicOverrides::from_pairs(&[(k.into(), v.into())]);
            assert!(
                matches!(r, Err(BrokerError::InvalidConfig { .. })),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn changes_set_and_delete_keys_all_or_nothing() {
        let base = sample().overrides;
        let o = base
            .with_changes(&[
                ("retention.ms".into(), Some("5000".into())),
                ("flush".into(), None),
                ("segment.ms".into(), Some("-1".into())),
            ])
            .unwrap();
        assert_eq!(o.retention_ms, Some(5000));
        assert_eq!(o.flush, None);
        assert_eq!(o.segment_ms, Some(-1));
        assert_eq!(o.segment_bytes, base.segment_bytes, "untouched");
        // Every key can be set and deleted; unknown keys are refused either way.
        for key in CONFIG_KEYS {
            let mut x = base.clone();
            x.clear(key).unwrap();
        }
        for bad in [
            vec![
                ("retention.ms".to_string(), Some("1".to_string())),
                ("nope".to_string(), None),
            ],
            vec![("segment.bytes".to_string(), Some("1".to_string()))],
        ] {
            assert!(matches!(
                base.with_changes(&bad),
                Err(BrokerError::InvalidConfig { .. })
            ));
        }
        // The documented keys are exactly those Metadata reports (besides `partitions`).
        let reported: Vec<String> = sample()
            .effective(&TopicDefaults::default())
            .to_pairs()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "partitions")
            .collect();
        assert_eq!(reported, CONFIG_KEYS);
    }

    #[test]
    fn topic_names() {
        for ok in ["a", "orders", "a.b_c-D9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250), "../etc"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
