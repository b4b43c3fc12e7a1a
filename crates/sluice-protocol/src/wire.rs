//! Encoding and decoding of request and response frames (every version of every api).
//!
//! Encoders write whole frames (u32 length prefix included) into a caller's
//! `BytesMut`. Decoders take one frame payload (as produced by
//! [`crate::codec::FrameCodec`]) as `Bytes`; `records` fields come out as
//! zero-copy slices of that payload. Every read is checked: no input makes a
//! decoder panic, and an array count read from the wire is checked against
//! the bytes left (each item has a known minimum size) before any
//! `Vec::with_capacity`.
//!
//! Request frame:
//!
//! | offset | size | field          | notes                              |
//! |-------:|-----:|----------------|------------------------------------|
//! |      0 |    4 | length (u32)   | bytes after this field             |
//! |      4 |    2 | api_key (u16)  | see [`ApiKey`]                     |
//! |      6 |    2 | api_version    | u16                                |
//! |      8 |    4 | correlation_id | u32, echoed in the response        |
//! |     12 |  2+n | client_id      | string (u16 length + UTF-8)        |
//! |  14+n  |    … | body           | per api, see `protocol.md`         |
//!
//! Response frame:
//!
//! | offset | size | field          | notes                                         |
//! |-------:|-----:|----------------|-----------------------------------------------|
//! |      0 |    4 | length (u32)   | bytes after this field                        |
//! |      4 |    4 | correlation_id | u32, from the request                         |
//! |      8 |    2 | error_code     | u16; non-zero = header-level error, no body   |
//! |     10 |    … | body           | per api, only when error_code = 0             |
//!
//! Primitives: integers big-endian; string = u16 length + UTF-8;
//! nullable_string = a string whose length 0xFFFF means null; bool = u8 0/1;
//! bytes = u32 length + raw; array = u32 count + items; ErrorCode = u16;
//! Acks = u8; OffsetSpec = i64 (-2 earliest, -1 latest, >= 0 timestamp).
//!
//! Bodies, version 0 (`[T]` = array of T; fields in order, nothing between):
//!
//! | api (key)        | request body                                                          | response body |
//! |------------------|-----------------------------------------------------------------------|---------------|
//! | ApiVersions (0)  | empty                                                                 | `[api_key u16, min u16, max u16]` |
//! | Metadata (1)     | `[topic string]` (empty = all)                                        | `[node_id u32, host string, port u16]`, `[error u16, name string, [partition u32, error u16, leader u32, start u64, end u64, size u64], [key string, value string]]` |
//! | CreateTopics (2) | `[name string, partitions u32, [key string, value string]]`           | `[name string, error u16, message string]` |
//! | DeleteTopics (3) | `[name string]`                                                       | `[name string, error u16, message string]` |
//! | Produce (4)      | `acks u8, timeout_ms u32, [name string, [partition u32, records bytes]]` | `[name string, [partition u32, error u16, base_offset u64, last_offset u64]]` (no response at all for acks 0) |
//! | Fetch (5)        | `max_wait_ms u32, min_bytes u32, max_bytes u32, [name string, [partition u32, fetch_offset u64, max_bytes u32]]` | `[name string, [partition u32, error u16, high_watermark u64, log_start_offset u64, records bytes]]` |
//! | ListOffsets (6)  | `[name string, [partition u32, spec i64]]`                            | `[name string, [partition u32, error u16, offset u64, timestamp i64]]` |
//! | JoinGroup (7)    | `group_id string, member_id string, [topic string], session_timeout_ms u32, rebalance_timeout_ms u32, metadata bytes` | `error u16, member_id string, generation u32, heartbeat_interval_ms u32, assignment TP, revoke TP` |
//! | Heartbeat (8)    | `group_id string, member_id string, generation u32, owned TP, max_wait_ms u32` | `error u16, generation u32, heartbeat_interval_ms u32, assignment TP, revoke TP` |
//! | LeaveGroup (9)   | `group_id string, member_id string`                                   | `error u16` |
//! | OffsetCommit (10)| `group_id string, member_id string, generation u32, [name string, [partition u32, offset i64, metadata string]]` | `[name string, [partition u32, error u16]]` |
//! | OffsetFetch (11) | `group_id string, TP` (empty = all committed)                         | `error u16, [name string, [partition u32, error u16, offset i64, metadata string]]` |
//! | ListGroups (12)  | empty                                                                 | `[group_id string, state string, members u32, generation u32]` |
//! | DescribeGroups (13) | `[group_id string]`                                                | `[error u16, group_id string, state string, generation u32, [member_id string, client_id string, [topic string], assignment TP, revoking TP], [topic string, partition u32, committed_offset i64, end_offset u64, lag u64, lag_ms i64]]` |
//! | DeleteGroups (14) | `[group_id string]`                                                 | `[group_id string, error u16]` |
//! | InitProducerId (15) | empty                                                             | `error u16, producer_id i64, producer_epoch i16` |
//! | DescribeCluster (16) | empty                                                            | `error u16, cluster_id string, controller_id i32, controller_epoch u64, [node_id u32, host string, port u16, rack nullable_string, alive bool]` |
//! | FindCoordinator (17) | `group_id string`                                                | `error u16, node_id u32, host string, port u16` |
//! | CreatePartitions (18) | `[name string, count u32]`                                      | `[name string, error u16, message string]` |
//! | AlterConfigs (19) | `[name string, [key string, value nullable_string]]` (null = delete) | `[name string, error u16, message string]` |
//! | ReplicaFetch (20) | see `protocol.md` (broker to broker)                                 | see `protocol.md` |
//! | ReassignPartitions (21) | `action u8, node_id u32, [topic string, partition u32, replicas [u32]]` (action 0 move, 1 rebalance, 2 drain `node_id`, 3 undrain; replicas empty = cancel) | `error u16, message string, [topic string, partition u32, replicas [u32]]` (the moves started) |
//! | SaslHandshake (22) | `mechanism string`                                                  | `error u16, [mechanism string]` |
//! | SaslAuthenticate (23) | `auth_bytes bytes`                                               | `error u16, error_message string, auth_bytes bytes` |
//! | AlterUserScramCredentials (24) | `[user string, mechanism u8, iterations u32, salt bytes, salted_password bytes]`, `[user string, mechanism u8]` (mechanism 1 SHA-256, 2 SHA-512; 0 in a deletion = the whole user) | `[error u16, message string]` (upsertions then deletions) |
//! | DescribeUsers (25) | `[user string]` (empty = all)                                       | `[user string, error u16, [mechanism u8, iterations u32]]` |
//! | CreateAcls (26)  | `[ACL]`                                                               | `[error u16, message string]` |
//! | DescribeAcls (27) | `FILTER`                                                             | `error u16, message string, [ACL]` |
//! | DeleteAcls (28)  | `[FILTER]`                                                            | `[error u16, message string, [ACL]]` |
//! | AlterQuotas (29) | `[QUOTA]` (no rate set = remove the entity)                           | `[error u16, message string]` |
//! | DescribeQuotas (30) | empty                                                             | `[QUOTA]` |
//!
//! Version 1 (the cluster fields; the broker answers in the request's version):
//!
//! | api (key)        | request body                                                          | response body |
//! |------------------|-----------------------------------------------------------------------|---------------|
//! | Metadata (1)     | as v0                                                                 | `[node_id u32, host string, port u16, rack nullable_string]`, `cluster_id string`, `controller_id i32`, `[error u16, name string, [partition u32, error u16, leader u32, leader_epoch u32, start u64, end u64, size u64, replicas [u32], isr [u32]], [key string, value string]]` |
//! | CreateTopics (2) | `[name string, partitions u32, replication_factor i16, [key string, value string]]` | as v0 |
//!
//! Decoding a v0 body fills the v1-only fields with their "unknown" values:
//! rack `None`, `cluster_id` empty, `controller_id` -1 ([`NO_CONTROLLER`]),
//! `leader_epoch` 0, `replicas` and `isr` empty, `replication_factor` -1
//! ([`DEFAULT_REPLICATION_FACTOR`]).
//!
//! `ACL` = `resource_type u8, resource_name string, pattern_type u8,
//! principal string, host string, operation u8, permission u8` (Kafka's
//! codes, [`AclEntry`]); `FILTER` = the same with `nullable_string` names
//! (null = any) and code 1 = any ([`AclFilterEntry`]); `QUOTA` = `user
//! PART, client_id PART, producer_byte_rate RATE, consumer_byte_rate RATE,
//! request_rate RATE` with `PART` = `u8` 0 absent, 1 default, 2 then a
//! `string`, and `RATE` = `u8` 0 unset, or 1 then an `f64` (finite)
//! ([`QuotaEntry`]).
//!
//! `TP` = `[topic string, [partition u32]]` ([`TopicPartitions`]). An `i64`
//! offset or `lag_ms` uses -1 for "none/unknown"; below -1 is malformed. The
//! group apis (7..=13, [`GROUP_APIS`]), the group admin api DeleteGroups
//! (14) and InitProducerId (15) are served and listed in ApiVersions like the
//! others. `producer_epoch` is an `i16` sent as its two's-complement `u16`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::messages::*;
use crate::{ErrorCode, ProtocolError, RequestError};

/// The `u16` length that marks a null `nullable_string`.
const NULL_STRING: u16 = u16::MAX;

// ----------------------------------------------------------------------------
// Encoding
// ----------------------------------------------------------------------------

/// Write side: a buffer, plus (in chunked mode) where record payloads go instead of being copied.
struct Enc<'a> {
    buf: &'a mut BytesMut,
    /// `(position in buf, payload)`: the payload belongs right before `buf[position]`.
    splices: Option<&'a mut Vec<(usize, Bytes)>>,
    spliced_len: usize,
}

impl<'a> Enc<'a> {
    fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }
    fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }
    fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
    }
    fn i16(&mut self, v: i16) {
        self.buf.put_i16(v);
    }
    fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// `None` is the length 0xFFFF; a longer string is cut at the last
    /// character boundary within 65,534 bytes.
    fn nullable_string(&mut self, s: Option<&str>) {
        let Some(s) = s else {
            self.u16(NULL_STRING);
            return;
        };
        let mut end = s.len().min(NULL_STRING as usize - 1);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.buf.put_slice(&s.as_bytes()[..end]);
    }
    fn partition_replicas(&mut self, v: &[PartitionReplicas]) {
        self.count(v.len());
        for m in v {
            self.string(&m.topic);
            self.u32(m.partition);
            self.u32s(&m.replicas);
        }
    }
    fn u32s(&mut self, v: &[u32]) {
        self.count(v.len());
        for x in v {
            self.u32(*x);
        }
    }
    fn code(&mut self, c: ErrorCode) {
        self.u16(c.code());
    }
    /// Strings longer than 65,535 bytes cannot be represented; they are cut
    /// at the last character boundary that fits (names are validated far
    /// below that by the broker).
    fn string(&mut self, s: &str) {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.buf.put_slice(&s.as_bytes()[..end]);
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn records(&mut self, b: &Bytes) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        match self.splices.as_mut() {
            Some(s) => {
                if !b.is_empty() {
                    s.push((self.buf.len(), b.clone()));
                    self.spliced_len += b.len();
                }
            }
            None => self.buf.put_slice(b),
        }
    }
    fn pairs(&mut self, kv: &[(String, String)]) {
        self.count(kv.len());
        for (k, v) in kv {
            self.string(k);
            self.string(v);
        }
    }
    fn strings(&mut self, v: &[String]) {
        self.count(v.len());
        for s in v {
            self.string(s);
        }
    }
    /// Opaque bytes that are always copied (only `records` are spliced).
    fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.buf.put_slice(b);
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.buf.put_f64(x);
            }
        }
    }
    fn entity_name(&mut self, v: &Option<QuotaEntityName>) {
        match v {
            None => self.u8(0),
            Some(QuotaEntityName::Default) => self.u8(1),
            Some(QuotaEntityName::Named(n)) => {
                self.u8(2);
                self.string(n);
            }
        }
    }
    fn quota_entries(&mut self, v: &[QuotaEntry]) {
        self.count(v.len());
        for q in v {
            self.entity_name(&q.entity.user);
            self.entity_name(&q.entity.client_id);
            self.opt_f64(q.rates.producer_byte_rate);
            self.opt_f64(q.rates.consumer_byte_rate);
            self.opt_f64(q.rates.request_rate);
        }
    }
    fn acl_entries(&mut self, v: &[AclEntry]) {
        self.count(v.len());
        for a in v {
            self.u8(a.resource_type);
            self.string(&a.resource_name);
            self.u8(a.pattern_type);
            self.string(&a.principal);
            self.string(&a.host);
            self.u8(a.operation);
            self.u8(a.permission);
        }
    }
    fn acl_filter(&mut self, f: &AclFilterEntry) {
        self.u8(f.resource_type);
        self.nullable_string(f.resource_name.as_deref());
        self.u8(f.pattern_type);
        self.nullable_string(f.principal.as_deref());
        self.nullable_string(f.host.as_deref());
        self.u8(f.operation);
        self.u8(f.permission);
    }
    fn admin_results(&mut self, v: &[AdminResult]) {
        self.count(v.len());
        for r in v {
            self.code(r.error);
            self.string(&r.message);
        }
    }
    fn topic_partitions(&mut self, v: &[TopicPartitions]) {
        self.count(v.len());
        for t in v {
            self.string(&t.topic);
            self.count(t.partitions.len());
            for p in &t.partitions {
                self.u32(*p);
            }
        }
    }
}

fn encode_request_body(e: &mut Enc<'_>, version: u16, request: &Request) {
    match request {
        Request::ApiVersions => {}
        Request::Metadata(r) => e.strings(&r.topics),
        Request::CreateTopics(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.u32(t.partitions);
                if version >= 1 {
                    e.i16(t.replication_factor);
                }
                e.pairs(&t.configs);
            }
        }
        Request::DeleteTopics(r) => e.strings(&r.topics),
        Request::Produce(r) => {
            e.u8(r.acks as u8);
            e.u32(r.timeout_ms);
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.records(&p.records);
                }
            }
        }
        Request::ReassignPartitions(r) => {
            e.u8(r.action as u8);
            e.u32(r.node_id);
            e.partition_replicas(&r.moves);
        }
        Request::ReplicaFetch(r) => {
            e.u32(r.replica_id);
            e.u32(r.max_wait_ms);
            e.u32(r.max_bytes);
            e.count(r.partitions.len());
            for p in &r.partitions {
                e.string(&p.topic);
                e.u32(p.partition);
                e.u32(p.leader_epoch);
                e.u64(p.fetch_offset);
                e.i32(p.last_fetched_epoch);
                e.u64(p.durable_offset);
            }
        }
        Request::Fetch(r) => {
            e.u32(r.max_wait_ms);
            e.u32(r.min_bytes);
            e.u32(r.max_bytes);
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.u64(p.fetch_offset);
                    e.u32(p.max_bytes);
                }
            }
        }
        Request::ListOffsets(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.i64(p.spec.to_wire());
                }
            }
        }
        Request::JoinGroup(r) => {
            e.string(&r.group_id);
            e.string(&r.member_id);
            e.strings(&r.topics);
            e.u32(r.session_timeout_ms);
            e.u32(r.rebalance_timeout_ms);
            e.bytes(&r.metadata);
        }
        Request::Heartbeat(r) => {
            e.string(&r.group_id);
            e.string(&r.member_id);
            e.u32(r.generation);
            e.topic_partitions(&r.owned);
            e.u32(r.max_wait_ms);
        }
        Request::LeaveGroup(r) => {
            e.string(&r.group_id);
            e.string(&r.member_id);
        }
        Request::OffsetCommit(r) => {
            e.string(&r.group_id);
            e.string(&r.member_id);
            e.u32(r.generation);
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.i64(p.offset);
                    e.string(&p.metadata);
                }
            }
        }
        Request::OffsetFetch(r) => {
            e.string(&r.group_id);
            e.topic_partitions(&r.topics);
        }
        Request::ListGroups => {}
        Request::DescribeGroups(r) => e.strings(&r.group_ids),
        Request::DeleteGroups(r) => e.strings(&r.group_ids),
        Request::InitProducerId => {}
        Request::DescribeCluster => {}
        Request::FindCoordinator(r) => e.string(&r.group_id),
        Request::CreatePartitions(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.u32(t.count);
            }
        }
        Request::AlterConfigs(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.changes.len());
                for c in &t.changes {
                    e.string(&c.key);
                    e.nullable_string(c.value.as_deref());
                }
            }
        }
        Request::SaslHandshake(r) => e.string(&r.mechanism),
        Request::SaslAuthenticate(r) => e.bytes(&r.auth_bytes),
        Request::AlterUserScramCredentials(r) => {
            e.count(r.upsertions.len());
            for u in &r.upsertions {
                e.string(&u.user);
                e.u8(u.mechanism as u8);
                e.u32(u.iterations);
                e.bytes(&u.salt);
                e.bytes(&u.salted_password);
            }
            e.count(r.deletions.len());
            for d in &r.deletions {
                e.string(&d.user);
                e.u8(d.mechanism.map_or(0, |m| m as u8));
            }
        }
        Request::DescribeUsers(r) => e.strings(&r.users),
        Request::CreateAcls(r) => e.acl_entries(&r.creations),
        Request::DescribeAcls(r) => e.acl_filter(&r.filter),
        Request::DeleteAcls(r) => {
            e.count(r.filters.len());
            for f in &r.filters {
                e.acl_filter(f);
            }
        }
        Request::AlterQuotas(r) => e.quota_entries(&r.entries),
        Request::DescribeQuotas => {}
    }
}

fn encode_response_body(e: &mut Enc<'_>, version: u16, response: &Response) {
    match response {
        Response::Error(_) => {}
        Response::ApiVersions(r) => {
            e.count(r.apis.len());
            for a in &r.apis {
                e.u16(a.api_key);
                e.u16(a.min_version);
                e.u16(a.max_version);
            }
        }
        Response::Metadata(r) => {
            let v1 = version >= 1;
            e.count(r.brokers.len());
            for b in &r.brokers {
                e.u32(b.node_id);
                e.string(&b.host);
                e.u16(b.port);
                if v1 {
                    e.nullable_string(b.rack.as_deref());
                }
            }
            if v1 {
                e.string(&r.cluster_id);
                e.i32(r.controller_id);
            }
            e.count(r.topics.len());
            for t in &r.topics {
                e.code(t.error);
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.code(p.error);
                    e.u32(p.leader);
                    if v1 {
                        e.u32(p.leader_epoch);
                    }
                    e.u64(p.start_offset);
                    e.u64(p.end_offset);
                    e.u64(p.size_bytes);
                    if v1 {
                        e.u32s(&p.replicas);
                        e.u32s(&p.isr);
                    }
                }
                e.pairs(&t.configs);
            }
        }
        Response::CreateTopics(CreateTopicsResponse { topics })
        | Response::DeleteTopics(DeleteTopicsResponse { topics })
        | Response::CreatePartitions(CreatePartitionsResponse { topics })
        | Response::AlterConfigs(AlterConfigsResponse { topics }) => {
            e.count(topics.len());
            for t in topics {
                e.string(&t.name);
                e.code(t.error);
                e.string(&t.message);
            }
        }
        Response::Produce(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.code(p.error);
                    e.u64(p.base_offset);
                    e.u64(p.last_offset);
                }
            }
        }
        Response::ReassignPartitions(r) => {
            e.code(r.error);
            e.string(&r.message);
            e.partition_replicas(&r.moves);
        }
        Response::ReplicaFetch(r) => {
            e.count(r.partitions.len());
            for p in &r.partitions {
                e.string(&p.topic);
                e.u32(p.partition);
                e.code(p.error);
                e.u64(p.high_watermark);
                e.u64(p.log_start_offset);
                e.i32(p.diverging_epoch);
                e.u64(p.diverging_end_offset);
                e.records(&p.records);
            }
        }
        Response::Fetch(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.code(p.error);
                    e.u64(p.high_watermark);
                    e.u64(p.log_start_offset);
                    e.records(&p.records);
                }
            }
        }
        Response::ListOffsets(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.code(p.error);
                    e.u64(p.offset);
                    e.i64(p.timestamp);
                }
            }
        }
        Response::JoinGroup(r) => {
            e.code(r.error);
            e.string(&r.member_id);
            e.u32(r.generation);
            e.u32(r.heartbeat_interval_ms);
            e.topic_partitions(&r.assignment);
            e.topic_partitions(&r.revoke);
        }
        Response::Heartbeat(r) => {
            e.code(r.error);
            e.u32(r.generation);
            e.u32(r.heartbeat_interval_ms);
            e.topic_partitions(&r.assignment);
            e.topic_partitions(&r.revoke);
        }
        Response::LeaveGroup(r) => e.code(r.error),
        Response::OffsetCommit(r) => {
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.code(p.error);
                }
            }
        }
        Response::OffsetFetch(r) => {
            e.code(r.error);
            e.count(r.topics.len());
            for t in &r.topics {
                e.string(&t.name);
                e.count(t.partitions.len());
                for p in &t.partitions {
                    e.u32(p.partition);
                    e.code(p.error);
                    e.i64(p.offset);
                    e.string(&p.metadata);
                }
            }
        }
        Response::ListGroups(r) => {
            e.count(r.groups.len());
            for g in &r.groups {
                e.string(&g.group_id);
                e.string(&g.state);
                e.u32(g.members);
                e.u32(g.generation);
            }
        }
        Response::DescribeGroups(r) => {
            e.count(r.groups.len());
            for g in &r.groups {
                e.code(g.error);
                e.string(&g.group_id);
                e.string(&g.state);
                e.u32(g.generation);
                e.count(g.members.len());
                for m in &g.members {
                    e.string(&m.member_id);
                    e.string(&m.client_id);
                    e.strings(&m.topics);
                    e.topic_partitions(&m.assignment);
                    e.topic_partitions(&m.revoking);
                }
                e.count(g.offsets.len());
                for o in &g.offsets {
                    e.string(&o.topic);
                    e.u32(o.partition);
                    e.i64(o.committed_offset);
                    e.u64(o.end_offset);
                    e.u64(o.lag);
                    e.i64(o.lag_ms);
                }
            }
        }
        Response::DeleteGroups(r) => {
            e.count(r.groups.len());
            for g in &r.groups {
                e.string(&g.group_id);
                e.code(g.error);
            }
        }
        Response::InitProducerId(r) => {
            e.code(r.error);
            e.i64(r.producer_id);
            e.u16(r.producer_epoch as u16);
        }
        Response::DescribeCluster(r) => {
            e.code(r.error);
            e.string(&r.cluster_id);
            e.i32(r.controller_id);
            e.u64(r.controller_epoch);
            e.count(r.brokers.len());
            for b in &r.brokers {
                e.u32(b.node_id);
                e.string(&b.host);
                e.u16(b.port);
                e.nullable_string(b.rack.as_deref());
                e.bool(b.alive);
            }
        }
        Response::FindCoordinator(r) => {
            e.code(r.error);
            e.u32(r.node_id);
            e.string(&r.host);
            e.u16(r.port);
        }
        Response::SaslHandshake(r) => {
            e.code(r.error);
            e.strings(&r.mechanisms);
        }
        Response::SaslAuthenticate(r) => {
            e.code(r.error);
            e.string(&r.error_message);
            e.bytes(&r.auth_bytes);
        }
        Response::AlterUserScramCredentials(AlterUserScramCredentialsResponse { results })
        | Response::CreateAcls(CreateAclsResponse { results })
        | Response::AlterQuotas(AlterQuotasResponse { results }) => e.admin_results(results),
        Response::DescribeUsers(r) => {
            e.count(r.users.len());
            for u in &r.users {
                e.string(&u.user);
                e.code(u.error);
                e.count(u.credentials.len());
                for c in &u.credentials {
                    e.u8(c.mechanism as u8);
                    e.u32(c.iterations);
                }
            }
        }
        Response::DescribeAcls(r) => {
            e.code(r.error);
            e.string(&r.message);
            e.acl_entries(&r.acls);
        }
        Response::DeleteAcls(r) => {
            e.count(r.results.len());
            for x in &r.results {
                e.code(x.error);
                e.string(&x.message);
                e.acl_entries(&x.deleted);
            }
        }
        Response::DescribeQuotas(r) => e.quota_entries(&r.entries),
    }
}

fn write_request(
    e: &mut Enc<'_>,
    correlation_id: u32,
    version: u16,
    client_id: &str,
    request: &Request,
) {
    e.u16(request.api_key() as u16);
    e.u16(version);
    e.u32(correlation_id);
    e.string(client_id);
    encode_request_body(e, version, request);
}

fn write_response(e: &mut Enc<'_>, correlation_id: u32, version: u16, response: &Response) {
    e.u32(correlation_id);
    match response {
        Response::Error(code) => e.code(*code),
        _ => e.code(ErrorCode::None),
    }
    encode_response_body(e, version, response);
}

/// Runs `body` between a length placeholder and the patch of the real length.
fn framed(
    dst: &mut BytesMut,
    splices: Option<&mut Vec<(usize, Bytes)>>,
    body: impl FnOnce(&mut Enc<'_>),
) {
    let start = dst.len();
    dst.put_u32(0);
    let mut e = Enc {
        buf: dst,
        splices,
        spliced_len: 0,
    };
    body(&mut e);
    let spliced = e.spliced_len;
    let len = dst.len() - start - 4 + spliced;
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Turns the metadata buffer and its splice points into an ordered chunk list.
fn emit_chunks(meta: BytesMut, splices: Vec<(usize, Bytes)>, out: &mut Vec<Bytes>) {
    let meta = meta.freeze();
    let mut prev = 0;
    for (pos, payload) in splices {
        if pos > prev {
            out.push(meta.slice(prev..pos));
        }
        out.push(payload);
        prev = pos;
    }
    if meta.len() > prev {
        out.push(meta.slice(prev..));
    }
}

/// Encodes a whole version-0 request frame (length prefix included) into `dst`
/// (fields of later versions, e.g. CreateTopics `replication_factor`, are not sent).
pub fn encode_request(correlation_id: u32, client_id: &str, request: &Request, dst: &mut BytesMut) {
    encode_request_version(correlation_id, 0, client_id, request, dst);
}

/// Encodes a whole request frame with body layout `api_version` (written in
/// the header). A version above the key's highest is written with the
/// highest layout this crate knows; callers pick one the broker listed.
pub fn encode_request_version(
    correlation_id: u32,
    api_version: u16,
    client_id: &str,
    request: &Request,
    dst: &mut BytesMut,
) {
    framed(dst, None, |e| {
        write_request(e, correlation_id, api_version, client_id, request)
    });
}

/// Like [`encode_request`], but produce record payloads are pushed as their own chunks, not copied.
pub fn encode_request_chunks(
    correlation_id: u32,
    client_id: &str,
    request: &Request,
    out: &mut Vec<Bytes>,
) {
    encode_request_chunks_version(correlation_id, 0, client_id, request, out);
}

/// [`encode_request_chunks`] with body layout `api_version` (see [`encode_request_version`]).
pub fn encode_request_chunks_version(
    correlation_id: u32,
    api_version: u16,
    client_id: &str,
    request: &Request,
    out: &mut Vec<Bytes>,
) {
    let mut meta = BytesMut::with_capacity(256);
    let mut splices = Vec::new();
    framed(&mut meta, Some(&mut splices), |e| {
        write_request(e, correlation_id, api_version, client_id, request)
    });
    emit_chunks(meta, splices, out);
}

/// Encodes a whole version-0 response frame (length prefix included) into `dst`.
pub fn encode_response(correlation_id: u32, response: &Response, dst: &mut BytesMut) {
    encode_response_version(correlation_id, 0, response, dst);
}

/// Encodes a whole response frame with the body layout of `api_version`
/// (the version of the request it answers).
pub fn encode_response_version(
    correlation_id: u32,
    api_version: u16,
    response: &Response,
    dst: &mut BytesMut,
) {
    framed(dst, None, |e| {
        write_response(e, correlation_id, api_version, response)
    });
}

/// Same bytes as [`encode_response`], as chunks: metadata in small chunks, and each
/// non-empty fetch `records` payload pushed as its own `Bytes` (never copied), ready
/// for a vectored write.
pub fn encode_response_chunks(correlation_id: u32, response: &Response, out: &mut Vec<Bytes>) {
    encode_response_chunks_version(correlation_id, 0, response, out);
}

/// [`encode_response_chunks`] with the body layout of `api_version`.
pub fn encode_response_chunks_version(
    correlation_id: u32,
    api_version: u16,
    response: &Response,
    out: &mut Vec<Bytes>,
) {
    let mut meta = BytesMut::with_capacity(256);
    let mut splices = Vec::new();
    framed(&mut meta, Some(&mut splices), |e| {
        write_response(e, correlation_id, api_version, response)
    });
    emit_chunks(meta, splices, out);
}

// ----------------------------------------------------------------------------
// Decoding
// ----------------------------------------------------------------------------

/// How a request array's items count against its entry budget.
#[derive(Debug, Clone, Copy)]
enum Entries {
    /// Nothing charged here (a topic: its partitions are), but the count
    /// must fit in what is left.
    Fit,
    /// One entry per item (names, group ids, config pairs).
    Each,
    /// One entry per item, and one for an empty list (a topic's partitions).
    EachOrOne,
}

/// Checked reader over a frame payload.
struct Dec {
    buf: Bytes,
    /// Entries (see [`RequestLimits`]) this request may still list.
    budget: usize,
    /// The configured limit, for the error message.
    limit: usize,
}

type PResult<T> = Result<T, ProtocolError>;

impl Dec {
    /// A reader with no entry limit (responses).
    fn unlimited(buf: Bytes) -> Dec {
        Dec {
            buf,
            budget: usize::MAX,
            limit: usize::MAX,
        }
    }
    fn need(&self, n: usize, what: &'static str) -> PResult<()> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated {
                what,
                needed: n,
                available: self.buf.len(),
            });
        }
        Ok(())
    }
    // Each read checks the length first; `Buf::get_*` then only moves the
    // view's start (no reference-count traffic, unlike `split_to`).
    fn u8(&mut self, what: &'static str) -> PResult<u8> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> PResult<u16> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> PResult<u32> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self, what: &'static str) -> PResult<u64> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }
    fn i64(&mut self, what: &'static str) -> PResult<i64> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }
    fn i16(&mut self, what: &'static str) -> PResult<i16> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }
    fn i32(&mut self, what: &'static str) -> PResult<i32> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }
    fn bool(&mut self, what: &'static str) -> PResult<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::InvalidValue {
                what,
                value: other as i64,
            }),
        }
    }
    /// A `nullable_string`: length 0xFFFF is `None`.
    fn nullable_string(&mut self, what: &'static str) -> PResult<Option<String>> {
        if self.buf.len() >= 2 && self.buf[..2] == NULL_STRING.to_be_bytes() {
            self.buf.advance(2);
            return Ok(None);
        }
        self.string(what).map(Some)
    }
    /// `array<u32>` (node ids): the count is checked against the bytes left first.
    fn u32s(&mut self, what: &'static str) -> PResult<Vec<u32>> {
        self.vec(what, 4, |d| d.u32(what))
    }
    fn code(&mut self, what: &'static str) -> PResult<ErrorCode> {
        Ok(ErrorCode::from_code(self.u16(what)?))
    }
    fn string(&mut self, what: &'static str) -> PResult<String> {
        let len = self.u16(what)? as usize;
        self.need(len, what)?;
        let s = std::str::from_utf8(&self.buf[..len])
            .map_err(|source| ProtocolError::InvalidUtf8 { what, source })?
            .to_owned();
        self.buf.advance(len);
        Ok(s)
    }
    /// A topic name in a request: checked against [`topic_name_problem`]
    /// (length first, so a long name is refused before it is copied).
    fn topic_name(&mut self, what: &'static str) -> PResult<String> {
        let len = self.u16(what)? as usize;
        self.need(len, what)?;
        if len > MAX_TOPIC_NAME_BYTES {
            return Err(ProtocolError::InvalidTopicName {
                what,
                reason: "longer than 249 characters",
            });
        }
        let s = std::str::from_utf8(&self.buf[..len])
            .map_err(|source| ProtocolError::InvalidUtf8 { what, source })?;
        if let Some(reason) = topic_name_problem(s) {
            return Err(ProtocolError::InvalidTopicName { what, reason });
        }
        let s = s.to_owned();
        self.buf.advance(len);
        Ok(s)
    }
    fn bytes(&mut self, what: &'static str) -> PResult<Bytes> {
        let len = self.u32(what)? as usize;
        self.need(len, what)?;
        Ok(self.buf.split_to(len))
    }
    /// Uses up `n` entries of the request's budget.
    fn charge(&mut self, n: usize) -> PResult<()> {
        if n > self.budget {
            return Err(ProtocolError::TooManyEntries { limit: self.limit });
        }
        self.budget -= n;
        Ok(())
    }
    /// Reads an array count and checks it against the bytes left (each item
    /// takes at least `min_item` bytes).
    fn array_len(&mut self, what: &'static str, min_item: usize) -> PResult<usize> {
        let count = self.u32(what)?;
        let available = self.buf.len();
        if (count as usize).saturating_mul(min_item.max(1)) > available {
            return Err(ProtocolError::CountTooLarge {
                what,
                count,
                available,
            });
        }
        Ok(count as usize)
    }
    /// Reads `count` items; the initial capacity never exceeds the bytes left.
    fn items<T>(
        &mut self,
        count: usize,
        mut item: impl FnMut(&mut Dec) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        let cap = count.min(self.buf.len() / std::mem::size_of::<T>().max(1));
        let mut v = Vec::with_capacity(cap);
        for _ in 0..count {
            v.push(item(self)?);
        }
        Ok(v)
    }
    /// Reads an array: the count is checked against the bytes left (each item
    /// takes at least `min_item` bytes) before anything is allocated, and the
    /// initial capacity is further capped so it never exceeds the bytes left.
    fn vec<T>(
        &mut self,
        what: &'static str,
        min_item: usize,
        item: impl FnMut(&mut Dec) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        let count = self.array_len(what, min_item)?;
        self.items(count, item)
    }
    /// Reads a request's array, counting its items against the request's
    /// entry budget as `entries` says before anything is allocated.
    fn budgeted_vec<T>(
        &mut self,
        what: &'static str,
        min_item: usize,
        entries: Entries,
        item: impl FnMut(&mut Dec) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        let count = self.array_len(what, min_item)?;
        match entries {
            Entries::Fit if count > self.budget => {
                return Err(ProtocolError::TooManyEntries { limit: self.limit })
            }
            Entries::Fit => {}
            Entries::Each => self.charge(count)?,
            Entries::EachOrOne => self.charge(count.max(1))?,
        }
        self.items(count, item)
    }
    fn pairs(&mut self, what: &'static str) -> PResult<Vec<(String, String)>> {
        self.vec(what, 4, |d| Ok((d.string(what)?, d.string(what)?)))
    }
    fn strings(&mut self, what: &'static str) -> PResult<Vec<String>> {
        self.vec(what, 2, |d| d.string(what))
    }
    /// A request's list of topic names: validated, each one entry, no repeats.
    fn topic_names(&mut self, what: &'static str) -> PResult<Vec<String>> {
        let v = self.budgeted_vec(what, 2, Entries::Each, |d| d.topic_name("topic name"))?;
        unique_names(v.iter().map(String::as_str), "topic")?;
        Ok(v)
    }
    /// A request's list of group ids: each one entry, no repeats.
    fn group_ids(&mut self, what: &'static str) -> PResult<Vec<String>> {
        let v = self.budgeted_vec(what, 2, Entries::Each, |d| d.string("group_id"))?;
        unique_names(v.iter().map(String::as_str), "group id")?;
        Ok(v)
    }
    /// `array<TopicPartitions>`: each item is a topic string and an `array<u32>` (min 6 bytes).
    fn topic_partitions(&mut self, what: &'static str) -> PResult<Vec<TopicPartitions>> {
        self.vec(what, 6, |d| {
            Ok(TopicPartitions {
                topic: d.string("topic name")?,
                partitions: d.vec("partitions", 4, |d| d.u32("partition"))?,
            })
        })
    }
    /// A request's `array<TopicPartitions>`: names validated, entries charged,
    /// no topic or partition listed twice.
    fn request_topic_partitions(&mut self, what: &'static str) -> PResult<Vec<TopicPartitions>> {
        let v = self.budgeted_vec(what, 6, Entries::Fit, |d| {
            Ok(TopicPartitions {
                topic: d.topic_name("topic name")?,
                partitions: d
                    .budgeted_vec("partitions", 4, Entries::EachOrOne, |d| d.u32("partition"))?,
            })
        })?;
        unique_topic_partitions(&v, |t| (&t.topic, t.partitions.iter().copied()))?;
        Ok(v)
    }
    /// A committed offset: an i64 from 0 to `i64::MAX` (the u64 values above
    /// `i64::MAX` read as negative and are refused, never clamped).
    fn commit_offset(&mut self) -> PResult<i64> {
        let v = self.i64("offset")?;
        if v < 0 {
            return Err(ProtocolError::InvalidValue {
                what: "committed offset",
                value: v,
            });
        }
        Ok(v)
    }
    /// An i64 offset where -1 means "none"; anything below -1 is malformed.
    fn offset_or_none(&mut self, what: &'static str) -> PResult<i64> {
        let v = self.i64(what)?;
        if v < -1 {
            return Err(ProtocolError::InvalidValue { what, value: v });
        }
        Ok(v)
    }
    /// `u8` 0 (absent) or 1 then an `f64`, which must be finite.
    fn opt_f64(&mut self, what: &'static str) -> PResult<Option<f64>> {
        if !self.bool(what)? {
            return Ok(None);
        }
        self.need(8, what)?;
        let v = self.buf.get_f64();
        if !v.is_finite() {
            return Err(ProtocolError::InvalidValue {
                what,
                value: v.to_bits() as i64,
            });
        }
        Ok(Some(v))
    }
    /// A quota entity part: `u8` 0 absent, 1 default, 2 then a name.
    fn entity_name(&mut self, what: &'static str) -> PResult<Option<QuotaEntityName>> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(QuotaEntityName::Default)),
            2 => Ok(Some(QuotaEntityName::Named(self.string(what)?))),
            other => Err(ProtocolError::InvalidValue {
                what,
                value: other as i64,
            }),
        }
    }
    fn quota_entry(&mut self) -> PResult<QuotaEntry> {
        Ok(QuotaEntry {
            entity: QuotaEntityKey {
                user: self.entity_name("quota user")?,
                client_id: self.entity_name("quota client id")?,
            },
            rates: QuotaRates {
                producer_byte_rate: self.opt_f64("producer_byte_rate")?,
                consumer_byte_rate: self.opt_f64("consumer_byte_rate")?,
                request_rate: self.opt_f64("request_rate")?,
            },
        })
    }
    fn acl_entry(&mut self) -> PResult<AclEntry> {
        Ok(AclEntry {
            resource_type: self.u8("resource_type")?,
            resource_name: self.string("resource_name")?,
            pattern_type: self.u8("pattern_type")?,
            principal: self.string("principal")?,
            host: self.string("host")?,
            operation: self.u8("operation")?,
            permission: self.u8("permission")?,
        })
    }
    fn acl_filter(&mut self) -> PResult<AclFilterEntry> {
        Ok(AclFilterEntry {
            resource_type: self.u8("resource_type")?,
            resource_name: self.nullable_string("resource_name")?,
            pattern_type: self.u8("pattern_type")?,
            principal: self.nullable_string("principal")?,
            host: self.nullable_string("host")?,
            operation: self.u8("operation")?,
            permission: self.u8("permission")?,
        })
    }
    fn scram_mechanism(&mut self) -> PResult<ScramMechanismType> {
        let v = self.u8("mechanism")?;
        ScramMechanismType::from_u8(v).ok_or(ProtocolError::InvalidValue {
            what: "mechanism",
            value: v as i64,
        })
    }
    fn admin_results(&mut self) -> PResult<Vec<AdminResult>> {
        self.vec("results", 4, |d| {
            Ok(AdminResult {
                error: d.code("error")?,
                message: d.string("message")?,
            })
        })
    }
    fn finish(&self, what: &'static str) -> PResult<()> {
        if !self.buf.is_empty() {
            return Err(ProtocolError::TrailingBytes {
                what,
                count: self.buf.len(),
            });
        }
        Ok(())
    }
}

/// Refuses a list that names the same thing twice (sorts borrowed names:
/// 16 bytes per name of scratch).
fn unique_names<'a>(names: impl Iterator<Item = &'a str>, what: &'static str) -> PResult<()> {
    let mut v: Vec<&str> = names.collect();
    v.sort_unstable();
    if v.windows(2).any(|w| w[0] == w[1]) {
        return Err(ProtocolError::Duplicate { what });
    }
    Ok(())
}

/// Refuses a request that lists a topic twice or a partition twice within a topic.
fn unique_topic_partitions<'a, T, P: Iterator<Item = u32>>(
    topics: &'a [T],
    parts: impl Fn(&'a T) -> (&'a String, P),
) -> PResult<()> {
    unique_names(topics.iter().map(|t| parts(t).0.as_str()), "topic")?;
    let mut scratch: Vec<u32> = Vec::new();
    for t in topics {
        scratch.clear();
        scratch.extend(parts(t).1);
        scratch.sort_unstable();
        if scratch.windows(2).any(|w| w[0] == w[1]) {
            return Err(ProtocolError::Duplicate { what: "partition" });
        }
    }
    Ok(())
}

fn decode_header(d: &mut Dec) -> PResult<RequestHeader> {
    Ok(RequestHeader {
        api_key: d.u16("api_key")?,
        api_version: d.u16("api_version")?,
        correlation_id: d.u32("correlation_id")?,
        client_id: d.string("client_id")?,
    })
}

fn decode_request_body(key: ApiKey, version: u16, d: &mut Dec) -> PResult<Request> {
    Ok(match key {
        ApiKey::ApiVersions => Request::ApiVersions,
        ApiKey::Metadata => Request::Metadata(MetadataRequest {
            topics: d.topic_names("topics")?,
        }),
        ApiKey::CreateTopics => {
            let v1 = version >= 1;
            let min_item = if v1 { 12 } else { 10 };
            let topics = d.budgeted_vec("topics", min_item, Entries::Fit, |d| {
                d.charge(1)?;
                Ok(CreateTopic {
                    name: d.topic_name("topic name")?,
                    partitions: d.u32("partitions")?,
                    replication_factor: if v1 {
                        d.i16("replication_factor")?
                    } else {
                        DEFAULT_REPLICATION_FACTOR
                    },
                    configs: d.budgeted_vec("configs", 4, Entries::Each, |d| {
                        Ok((d.string("configs")?, d.string("configs")?))
                    })?,
                })
            })?;
            unique_names(topics.iter().map(|t| t.name.as_str()), "topic")?;
            Request::CreateTopics(CreateTopicsRequest { topics })
        }
        ApiKey::DeleteTopics => Request::DeleteTopics(DeleteTopicsRequest {
            topics: d.topic_names("topics")?,
        }),
        ApiKey::Produce => {
            let acks = match d.u8("acks")? {
                0 => Acks::None,
                1 => Acks::Leader,
                2 => Acks::Durable,
                other => {
                    return Err(ProtocolError::InvalidValue {
                        what: "acks",
                        value: other as i64,
                    })
                }
            };
            let timeout_ms = d.u32("timeout_ms")?;
            let topics = d.budgeted_vec("topics", 6, Entries::Fit, |d| {
                Ok(ProduceTopic {
                    name: d.topic_name("topic name")?,
                    partitions: d.budgeted_vec("partitions", 8, Entries::EachOrOne, |d| {
                        Ok(ProducePartition {
                            partition: d.u32("partition")?,
                            records: d.bytes("records")?,
                        })
                    })?,
                })
            })?;
            unique_topic_partitions(&topics, |t| {
                (&t.name, t.partitions.iter().map(|p| p.partition))
            })?;
            Request::Produce(ProduceRequest {
                acks,
                timeout_ms,
                topics,
            })
        }
        ApiKey::ReassignPartitions => {
            let action = d.u8("action")?;
            let action = ReassignAction::from_u8(action).ok_or(ProtocolError::InvalidValue {
                what: "action",
                value: action as i64,
            })?;
            let node_id = d.u32("node_id")?;
            let moves = d.budgeted_vec("moves", 10, Entries::Each, |d| {
                Ok(PartitionReplicas {
                    topic: d.topic_name("topic name")?,
                    partition: d.u32("partition")?,
                    replicas: d.u32s("replicas")?,
                })
            })?;
            let mut seen: Vec<(&str, u32)> = moves
                .iter()
                .map(|m| (m.topic.as_str(), m.partition))
                .collect();
            seen.sort_unstable();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                return Err(ProtocolError::Duplicate {
                    what: "reassigned partition",
                });
            }
            Request::ReassignPartitions(ReassignPartitionsRequest {
                action,
                node_id,
                moves,
            })
        }
        ApiKey::ReplicaFetch => {
            let replica_id = d.u32("replica_id")?;
            let max_wait_ms = d.u32("max_wait_ms")?;
            let max_bytes = d.u32("max_bytes")?;
            let partitions = d.budgeted_vec("partitions", 31, Entries::Each, |d| {
                Ok(ReplicaFetchPartition {
                    topic: d.topic_name("topic name")?,
                    partition: d.u32("partition")?,
                    leader_epoch: d.u32("leader_epoch")?,
                    fetch_offset: d.u64("fetch_offset")?,
                    last_fetched_epoch: d.i32("last_fetched_epoch")?,
                    durable_offset: d.u64("durable_offset")?,
                })
            })?;
            let mut seen: Vec<(&str, u32)> = partitions
                .iter()
                .map(|p| (p.topic.as_str(), p.partition))
                .collect();
            seen.sort_unstable();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                return Err(ProtocolError::Duplicate {
                    what: "replica fetch partition",
                });
            }
            Request::ReplicaFetch(ReplicaFetchRequest {
                replica_id,
                max_wait_ms,
                max_bytes,
                partitions,
            })
        }
        ApiKey::Fetch => {
            let max_wait_ms = d.u32("max_wait_ms")?;
            let min_bytes = d.u32("min_bytes")?;
            let max_bytes = d.u32("max_bytes")?;
            let topics = d.budgeted_vec("topics", 6, Entries::Fit, |d| {
                Ok(FetchTopic {
                    name: d.topic_name("topic name")?,
                    partitions: d.budgeted_vec("partitions", 16, Entries::EachOrOne, |d| {
                        Ok(FetchPartition {
                            partition: d.u32("partition")?,
                            fetch_offset: d.u64("fetch_offset")?,
                            max_bytes: d.u32("max_bytes")?,
                        })
                    })?,
                })
            })?;
            unique_topic_partitions(&topics, |t| {
                (&t.name, t.partitions.iter().map(|p| p.partition))
            })?;
            Request::Fetch(FetchRequest {
                max_wait_ms,
                min_bytes,
                max_bytes,
                topics,
            })
        }
        ApiKey::ListOffsets => {
            let topics = d.budgeted_vec("topics", 6, Entries::Fit, |d| {
                Ok(ListOffsetsTopic {
                    name: d.topic_name("topic name")?,
                    partitions: d.budgeted_vec("partitions", 12, Entries::EachOrOne, |d| {
                        Ok(ListOffsetsPartition {
                            partition: d.u32("partition")?,
                            spec: OffsetSpec::from_wire(d.i64("offset spec")?)?,
                        })
                    })?,
                })
            })?;
            unique_topic_partitions(&topics, |t| {
                (&t.name, t.partitions.iter().map(|p| p.partition))
            })?;
            Request::ListOffsets(ListOffsetsRequest { topics })
        }
        ApiKey::JoinGroup => Request::JoinGroup(JoinGroupRequest {
            group_id: d.string("group_id")?,
            member_id: d.string("member_id")?,
            topics: d.topic_names("topics")?,
            session_timeout_ms: d.u32("session_timeout_ms")?,
            rebalance_timeout_ms: d.u32("rebalance_timeout_ms")?,
            metadata: d.bytes("metadata")?,
        }),
        ApiKey::Heartbeat => Request::Heartbeat(HeartbeatRequest {
            group_id: d.string("group_id")?,
            member_id: d.string("member_id")?,
            generation: d.u32("generation")?,
            owned: d.request_topic_partitions("owned")?,
            max_wait_ms: d.u32("max_wait_ms")?,
        }),
        ApiKey::LeaveGroup => Request::LeaveGroup(LeaveGroupRequest {
            group_id: d.string("group_id")?,
            member_id: d.string("member_id")?,
        }),
        ApiKey::OffsetCommit => {
            let group_id = d.string("group_id")?;
            let member_id = d.string("member_id")?;
            let generation = d.u32("generation")?;
            let topics = d.budgeted_vec("topics", 6, Entries::Fit, |d| {
                Ok(OffsetCommitTopic {
                    name: d.topic_name("topic name")?,
                    partitions: d.budgeted_vec("partitions", 14, Entries::EachOrOne, |d| {
                        Ok(OffsetCommitPartition {
                            partition: d.u32("partition")?,
                            offset: d.commit_offset()?,
                            metadata: d.string("metadata")?,
                        })
                    })?,
                })
            })?;
            unique_topic_partitions(&topics, |t| {
                (&t.name, t.partitions.iter().map(|p| p.partition))
            })?;
            Request::OffsetCommit(OffsetCommitRequest {
                group_id,
                member_id,
                generation,
                topics,
            })
        }
        ApiKey::OffsetFetch => Request::OffsetFetch(OffsetFetchRequest {
            group_id: d.string("group_id")?,
            topics: d.request_topic_partitions("topics")?,
        }),
        ApiKey::ListGroups => Request::ListGroups,
        ApiKey::DescribeGroups => Request::DescribeGroups(DescribeGroupsRequest {
            group_ids: d.group_ids("group_ids")?,
        }),
        ApiKey::DeleteGroups => Request::DeleteGroups(DeleteGroupsRequest {
            group_ids: d.group_ids("group_ids")?,
        }),
        ApiKey::InitProducerId => Request::InitProducerId,
        ApiKey::DescribeCluster => Request::DescribeCluster,
        ApiKey::FindCoordinator => Request::FindCoordinator(FindCoordinatorRequest {
            group_id: d.string("group_id")?,
        }),
        ApiKey::CreatePartitions => {
            let topics = d.budgeted_vec("topics", 6, Entries::Each, |d| {
                Ok(CreatePartitionsTopic {
                    name: d.topic_name("topic name")?,
                    count: d.u32("count")?,
                })
            })?;
            unique_names(topics.iter().map(|t| t.name.as_str()), "topic")?;
            Request::CreatePartitions(CreatePartitionsRequest { topics })
        }
        ApiKey::AlterConfigs => {
            let topics = d.budgeted_vec("topics", 6, Entries::Fit, |d| {
                d.charge(1)?;
                Ok(AlterConfigsTopic {
                    name: d.topic_name("topic name")?,
                    changes: d.budgeted_vec("changes", 4, Entries::Each, |d| {
                        Ok(ConfigChange {
                            key: d.string("config key")?,
                            value: d.nullable_string("config value")?,
                        })
                    })?,
                })
            })?;
            unique_names(topics.iter().map(|t| t.name.as_str()), "topic")?;
            for t in &topics {
                unique_names(t.changes.iter().map(|c| c.key.as_str()), "config key")?;
            }
            Request::AlterConfigs(AlterConfigsRequest { topics })
        }
        ApiKey::SaslHandshake => Request::SaslHandshake(SaslHandshakeRequest {
            mechanism: d.string("mechanism")?,
        }),
        ApiKey::SaslAuthenticate => Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: d.bytes("auth_bytes")?,
        }),
        ApiKey::AlterUserScramCredentials => {
            let upsertions = d.budgeted_vec("upsertions", 15, Entries::Each, |d| {
                Ok(ScramUpsertion {
                    user: d.string("user")?,
                    mechanism: d.scram_mechanism()?,
                    iterations: d.u32("iterations")?,
                    salt: d.bytes("salt")?,
                    salted_password: d.bytes("salted_password")?,
                })
            })?;
            let deletions = d.budgeted_vec("deletions", 3, Entries::Each, |d| {
                let user = d.string("user")?;
                let mechanism = match d.u8("mechanism")? {
                    0 => None,
                    v => Some(ScramMechanismType::from_u8(v).ok_or(
                        ProtocolError::InvalidValue {
                            what: "mechanism",
                            value: v as i64,
                        },
                    )?),
                };
                Ok(ScramDeletion { user, mechanism })
            })?;
            Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
                upsertions,
                deletions,
            })
        }
        ApiKey::DescribeUsers => {
            let users = d.budgeted_vec("users", 2, Entries::Each, |d| d.string("user"))?;
            unique_names(users.iter().map(String::as_str), "user")?;
            Request::DescribeUsers(DescribeUsersRequest { users })
        }
        ApiKey::CreateAcls => Request::CreateAcls(CreateAclsRequest {
            creations: d.budgeted_vec("creations", 11, Entries::Each, Dec::acl_entry)?,
        }),
        ApiKey::DescribeAcls => Request::DescribeAcls(DescribeAclsRequest {
            filter: d.acl_filter()?,
        }),
        ApiKey::DeleteAcls => Request::DeleteAcls(DeleteAclsRequest {
            filters: d.budgeted_vec("filters", 11, Entries::Each, Dec::acl_filter)?,
        }),
        ApiKey::AlterQuotas => Request::AlterQuotas(AlterQuotasRequest {
            entries: d.budgeted_vec("entries", 5, Entries::Each, Dec::quota_entry)?,
        }),
        ApiKey::DescribeQuotas => Request::DescribeQuotas,
    })
}

/// The `acks` byte of a Produce request payload, read from its fixed offset
/// (after the header) without decoding the rest; `None` for any other api or
/// a payload too short to hold it. Lets a broker stay silent towards an
/// acks = 0 producer even when the rest of the body is malformed.
pub fn produce_acks_byte(payload: &[u8]) -> Option<u8> {
    let key = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
    if key != ApiKey::Produce as u16 {
        return None;
    }
    let client_id_len = u16::from_be_bytes([*payload.get(8)?, *payload.get(9)?]) as usize;
    payload.get(10 + client_id_len).copied()
}

/// Decodes one request frame payload (without the length prefix).
///
/// On failure, [`RequestError::header`] is `Some` when the header decoded: the
/// broker then answers with [`RequestError::code`] (UNKNOWN_API for an unknown
/// key, UNSUPPORTED_VERSION, INVALID_REQUIRED_ACKS for a bad acks byte,
/// INVALID_REQUEST for any other malformed body) and keeps the connection.
///
/// Every key in [`ApiKey::ALL`] decodes, including the group apis
/// ([`GROUP_APIS`]) that the broker may not serve yet: serving is the
/// broker's decision (it answers UNKNOWN_API for a key it has no handler for).
///
/// Applies the default [`RequestLimits`]; see [`decode_request_with_limits`].
pub fn decode_request(payload: Bytes) -> Result<(RequestHeader, Request), RequestError> {
    decode_request_with_limits(payload, &RequestLimits::default())
}

/// [`decode_request`] with explicit bounds. Besides the frame checks, the body
/// is refused (the header decoded, so the broker answers and keeps the
/// connection) when: a topic name breaks [`topic_name_problem`] (INVALID_TOPIC);
/// the request lists more than `limits.max_partitions` entries, a topic or
/// group id twice, or a partition twice within a topic; or a committed offset
/// is negative (INVALID_REQUEST). These checks run before the entries they
/// guard are allocated, so decoding costs a small multiple of the frame size.
pub fn decode_request_with_limits(
    payload: Bytes,
    limits: &RequestLimits,
) -> Result<(RequestHeader, Request), RequestError> {
    let mut d = Dec {
        buf: payload,
        budget: limits.max_partitions,
        limit: limits.max_partitions,
    };
    let header = decode_header(&mut d).map_err(|source| RequestError {
        header: None,
        code: ErrorCode::InvalidRequest,
        source,
    })?;
    let fail = |code: ErrorCode, source: ProtocolError, header: RequestHeader| RequestError {
        header: Some(header),
        code,
        source,
    };
    // Group apis decode although the broker may not serve them yet: it answers
    // UNKNOWN_API itself for keys it has no handler for.
    let key = match ApiKey::from_u16(header.api_key) {
        Some(k) if k.wire_versions().is_some() => k,
        _ => {
            let source = ProtocolError::UnknownApiKey(header.api_key);
            return Err(fail(ErrorCode::UnknownApi, source, header));
        }
    };
    if !key.decodes_version(header.api_version) {
        let source = ProtocolError::UnsupportedVersion {
            api_key: header.api_key,
            version: header.api_version,
        };
        return Err(fail(ErrorCode::UnsupportedVersion, source, header));
    }
    let body = decode_request_body(key, header.api_version, &mut d)
        .and_then(|b| d.finish(key.name()).map(|_| b));
    match body {
        Ok(b) => Ok((header, b)),
        Err(source) => {
            let code = match source {
                ProtocolError::InvalidValue { what: "acks", .. } => ErrorCode::InvalidRequiredAcks,
                ProtocolError::InvalidTopicName { .. } => ErrorCode::InvalidTopic,
                _ => ErrorCode::InvalidRequest,
            };
            Err(fail(code, source, header))
        }
    }
}

fn decode_response_body(key: ApiKey, version: u16, d: &mut Dec) -> PResult<Response> {
    Ok(match key {
        ApiKey::ApiVersions => Response::ApiVersions(ApiVersionsResponse {
            apis: d.vec("apis", 6, |d| {
                Ok(ApiVersionRange {
                    api_key: d.u16("api_key")?,
                    min_version: d.u16("min_version")?,
                    max_version: d.u16("max_version")?,
                })
            })?,
        }),
        ApiKey::Metadata => Response::Metadata(metadata_response(version, d)?),
        ApiKey::CreateTopics => Response::CreateTopics(CreateTopicsResponse {
            topics: topic_results(d)?,
        }),
        ApiKey::DeleteTopics => Response::DeleteTopics(DeleteTopicsResponse {
            topics: topic_results(d)?,
        }),
        ApiKey::Produce => Response::Produce(ProduceResponse {
            topics: d.vec("topics", 6, |d| {
                Ok(ProduceTopicResponse {
                    name: d.string("topic name")?,
                    partitions: d.vec("partitions", 22, |d| {
                        Ok(ProducePartitionResponse {
                            partition: d.u32("partition")?,
                            error: d.code("error")?,
                            base_offset: d.u64("base_offset")?,
                            last_offset: d.u64("last_offset")?,
                        })
                    })?,
                })
            })?,
        }),
        ApiKey::ReassignPartitions => Response::ReassignPartitions(ReassignPartitionsResponse {
            error: d.code("error")?,
            message: d.string("message")?,
            moves: d.vec("moves", 10, |d| {
                Ok(PartitionReplicas {
                    topic: d.string("topic name")?,
                    partition: d.u32("partition")?,
                    replicas: d.u32s("replicas")?,
                })
            })?,
        }),
        ApiKey::ReplicaFetch => Response::ReplicaFetch(ReplicaFetchResponse {
            partitions: d.vec("partitions", 40, |d| {
                Ok(ReplicaFetchPartitionResponse {
                    topic: d.string("topic name")?,
                    partition: d.u32("partition")?,
                    error: d.code("error")?,
                    high_watermark: d.u64("high_watermark")?,
                    log_start_offset: d.u64("log_start_offset")?,
                    diverging_epoch: d.i32("diverging_epoch")?,
                    diverging_end_offset: d.u64("diverging_end_offset")?,
                    records: d.bytes("records")?,
                })
            })?,
        }),
        ApiKey::Fetch => Response::Fetch(FetchResponse {
            topics: d.vec("topics", 6, |d| {
                Ok(FetchTopicResponse {
                    name: d.string("topic name")?,
                    partitions: d.vec("partitions", 26, |d| {
                        Ok(FetchPartitionResponse {
                            partition: d.u32("partition")?,
                            error: d.code("error")?,
                            high_watermark: d.u64("high_watermark")?,
                            log_start_offset: d.u64("log_start_offset")?,
                            records: d.bytes("records")?,
                        })
                    })?,
                })
            })?,
        }),
        ApiKey::ListOffsets => Response::ListOffsets(ListOffsetsResponse {
            topics: d.vec("topics", 6, |d| {
                Ok(ListOffsetsTopicResponse {
                    name: d.string("topic name")?,
                    partitions: d.vec("partitions", 22, |d| {
                        Ok(ListOffsetsPartitionResponse {
                            partition: d.u32("partition")?,
                            error: d.code("error")?,
                            offset: d.u64("offset")?,
                            timestamp: d.i64("timestamp")?,
                        })
                    })?,
                })
            })?,
        }),
        ApiKey::JoinGroup => Response::JoinGroup(JoinGroupResponse {
            error: d.code("error")?,
            member_id: d.string("member_id")?,
            generation: d.u32("generation")?,
            heartbeat_interval_ms: d.u32("heartbeat_interval_ms")?,
            assignment: d.topic_partitions("assignment")?,
            revoke: d.topic_partitions("revoke")?,
        }),
        ApiKey::Heartbeat => Response::Heartbeat(HeartbeatResponse {
            error: d.code("error")?,
            generation: d.u32("generation")?,
            heartbeat_interval_ms: d.u32("heartbeat_interval_ms")?,
            assignment: d.topic_partitions("assignment")?,
            revoke: d.topic_partitions("revoke")?,
        }),
        ApiKey::LeaveGroup => Response::LeaveGroup(LeaveGroupResponse {
            error: d.code("error")?,
        }),
        ApiKey::OffsetCommit => Response::OffsetCommit(OffsetCommitResponse {
            topics: d.vec("topics", 6, |d| {
                Ok(OffsetCommitTopicResponse {
                    name: d.string("topic name")?,
                    partitions: d.vec("partitions", 6, |d| {
                        Ok(OffsetCommitPartitionResponse {
                            partition: d.u32("partition")?,
                            error: d.code("error")?,
                        })
                    })?,
                })
            })?,
        }),
        ApiKey::OffsetFetch => Response::OffsetFetch(OffsetFetchResponse {
            error: d.code("error")?,
            topics: d.vec("topics", 6, |d| {
                Ok(OffsetFetchTopicResponse {
                    name: d.string("topic name")?,
                    partitions: d.vec("partitions", 16, |d| {
                        Ok(OffsetFetchPartitionResponse {
                            partition: d.u32("partition")?,
                            error: d.code("error")?,
                            offset: d.offset_or_none("committed offset")?,
                            metadata: d.string("metadata")?,
                        })
                    })?,
                })
            })?,
        }),
        ApiKey::ListGroups => Response::ListGroups(ListGroupsResponse {
            groups: d.vec("groups", 12, |d| {
                Ok(ListedGroup {
                    group_id: d.string("group_id")?,
                    state: d.string("state")?,
                    members: d.u32("members")?,
                    generation: d.u32("generation")?,
                })
            })?,
        }),
        ApiKey::DescribeGroups => Response::DescribeGroups(DescribeGroupsResponse {
            groups: d.vec("groups", 18, |d| {
                Ok(DescribedGroup {
                    error: d.code("error")?,
                    group_id: d.string("group_id")?,
                    state: d.string("state")?,
                    generation: d.u32("generation")?,
                    members: d.vec("members", 16, |d| {
                        Ok(DescribedMember {
                            member_id: d.string("member_id")?,
                            client_id: d.string("client_id")?,
                            topics: d.strings("topics")?,
                            assignment: d.topic_partitions("assignment")?,
                            revoking: d.topic_partitions("revoking")?,
                        })
                    })?,
                    offsets: d.vec("offsets", 38, |d| {
                        Ok(PartitionLag {
                            topic: d.string("topic name")?,
                            partition: d.u32("partition")?,
                            committed_offset: d.offset_or_none("committed offset")?,
                            end_offset: d.u64("end_offset")?,
                            lag: d.u64("lag")?,
                            lag_ms: d.offset_or_none("lag_ms")?,
                        })
                    })?,
                })
            })?,
        }),
        ApiKey::DeleteGroups => Response::DeleteGroups(DeleteGroupsResponse {
            groups: d.vec("groups", 4, |d| {
                Ok(DeletedGroup {
                    group_id: d.string("group_id")?,
                    error: d.code("error")?,
                })
            })?,
        }),
        ApiKey::InitProducerId => Response::InitProducerId(InitProducerIdResponse {
            error: d.code("error")?,
            producer_id: d.i64("producer_id")?,
            producer_epoch: d.u16("producer_epoch")? as i16,
        }),
        ApiKey::DescribeCluster => Response::DescribeCluster(DescribeClusterResponse {
            error: d.code("error")?,
            cluster_id: d.string("cluster_id")?,
            controller_id: d.i32("controller_id")?,
            controller_epoch: d.u64("controller_epoch")?,
            brokers: d.vec("brokers", 11, |d| {
                Ok(ClusterBroker {
                    node_id: d.u32("node_id")?,
                    host: d.string("host")?,
                    port: d.u16("port")?,
                    rack: d.nullable_string("rack")?,
                    alive: d.bool("alive")?,
                })
            })?,
        }),
        ApiKey::FindCoordinator => Response::FindCoordinator(FindCoordinatorResponse {
            error: d.code("error")?,
            node_id: d.u32("node_id")?,
            host: d.string("host")?,
            port: d.u16("port")?,
        }),
        ApiKey::CreatePartitions => Response::CreatePartitions(CreatePartitionsResponse {
            topics: topic_results(d)?,
        }),
        ApiKey::AlterConfigs => Response::AlterConfigs(AlterConfigsResponse {
            topics: topic_results(d)?,
        }),
        ApiKey::SaslHandshake => Response::SaslHandshake(SaslHandshakeResponse {
            error: d.code("error")?,
            mechanisms: d.strings("mechanisms")?,
        }),
        ApiKey::SaslAuthenticate => Response::SaslAuthenticate(SaslAuthenticateResponse {
            error: d.code("error")?,
            error_message: d.string("error_message")?,
            auth_bytes: d.bytes("auth_bytes")?,
        }),
        ApiKey::AlterUserScramCredentials => {
            Response::AlterUserScramCredentials(AlterUserScramCredentialsResponse {
                results: d.admin_results()?,
            })
        }
        ApiKey::DescribeUsers => Response::DescribeUsers(DescribeUsersResponse {
            users: d.vec("users", 8, |d| {
                Ok(DescribedUser {
                    user: d.string("user")?,
                    error: d.code("error")?,
                    credentials: d.vec("credentials", 5, |d| {
                        Ok(CredentialInfo {
                            mechanism: d.scram_mechanism()?,
                            iterations: d.u32("iterations")?,
                        })
                    })?,
                })
            })?,
        }),
        ApiKey::CreateAcls => Response::CreateAcls(CreateAclsResponse {
            results: d.admin_results()?,
        }),
        ApiKey::DescribeAcls => Response::DescribeAcls(DescribeAclsResponse {
            error: d.code("error")?,
            message: d.string("message")?,
            acls: d.vec("acls", 11, Dec::acl_entry)?,
        }),
        ApiKey::DeleteAcls => Response::DeleteAcls(DeleteAclsResponse {
            results: d.vec("results", 8, |d| {
                Ok(DeleteAclsResult {
                    error: d.code("error")?,
                    message: d.string("message")?,
                    deleted: d.vec("deleted", 11, Dec::acl_entry)?,
                })
            })?,
        }),
        ApiKey::AlterQuotas => Response::AlterQuotas(AlterQuotasResponse {
            results: d.admin_results()?,
        }),
        ApiKey::DescribeQuotas => Response::DescribeQuotas(DescribeQuotasResponse {
            entries: d.vec("entries", 5, Dec::quota_entry)?,
        }),
    })
}

/// A Metadata response body of `version`; the v1 fields get their "unknown"
/// values from a v0 body (no rack, controller -1, empty cluster id, epoch 0,
/// no replicas or isr).
fn metadata_response(version: u16, d: &mut Dec) -> PResult<MetadataResponse> {
    let v1 = version >= 1;
    let brokers = d.vec("brokers", if v1 { 10 } else { 8 }, |d| {
        Ok(BrokerInfo {
            node_id: d.u32("node_id")?,
            host: d.string("host")?,
            port: d.u16("port")?,
            rack: if v1 { d.nullable_string("rack")? } else { None },
        })
    })?;
    let (cluster_id, controller_id) = if v1 {
        (d.string("cluster_id")?, d.i32("controller_id")?)
    } else {
        (String::new(), NO_CONTROLLER)
    };
    let topics = d.vec("topics", 12, |d| {
        Ok(TopicMetadata {
            error: d.code("error")?,
            name: d.string("topic name")?,
            partitions: d.vec("partitions", if v1 { 46 } else { 34 }, |d| {
                let partition = d.u32("partition")?;
                let error = d.code("error")?;
                let leader = d.u32("leader")?;
                let leader_epoch = if v1 { d.u32("leader_epoch")? } else { 0 };
                let start_offset = d.u64("start_offset")?;
                let end_offset = d.u64("end_offset")?;
                let size_bytes = d.u64("size_bytes")?;
                let (replicas, isr) = if v1 {
                    (d.u32s("replicas")?, d.u32s("isr")?)
                } else {
                    (Vec::new(), Vec::new())
                };
                Ok(PartitionMetadata {
                    partition,
                    error,
                    leader,
                    start_offset,
                    end_offset,
                    size_bytes,
                    leader_epoch,
                    replicas,
                    isr,
                })
            })?,
            configs: d.pairs("configs")?,
        })
    })?;
    Ok(MetadataResponse {
        brokers,
        topics,
        controller_id,
        cluster_id,
    })
}

fn topic_results(d: &mut Dec) -> PResult<Vec<TopicResult>> {
    d.vec("topics", 6, |d| {
        Ok(TopicResult {
            name: d.string("topic name")?,
            error: d.code("error")?,
            message: d.string("message")?,
        })
    })
}

/// Decodes one response frame payload (without the length prefix) of a
/// version-0 request made with `api_key`.
///
/// Returns the correlation id and the response; a non-zero header error code
/// gives `Response::Error(code)` (no body).
pub fn decode_response(api_key: ApiKey, payload: Bytes) -> Result<(u32, Response), ProtocolError> {
    decode_response_version(api_key, 0, payload)
}

/// [`decode_response`] for a request sent with `api_version` (the body
/// layout of that version; fields a version lacks get their documented
/// "unknown" values).
pub fn decode_response_version(
    api_key: ApiKey,
    api_version: u16,
    payload: Bytes,
) -> Result<(u32, Response), ProtocolError> {
    let mut d = Dec::unlimited(payload);
    let correlation_id = d.u32("correlation_id")?;
    let code = d.u16("error_code")?;
    let response = if code != 0 {
        Response::Error(ErrorCode::from_code(code))
    } else {
        decode_response_body(api_key, api_version, &mut d)?
    };
    d.finish(api_key.name())?;
    Ok((correlation_id, response))
}

/// Reads only the correlation id of a response payload (to route it before decoding).
pub fn peek_correlation_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::RecordBatchBuilder;
    use crate::codec::FrameCodec;
    use tokio_util::codec::Decoder;

    fn sample_records() -> Bytes {
        let mut b = RecordBatchBuilder::new();
        b.push(
            1_700_000_000_000,
            Some(b"k"),
            Some(b"hello"),
            &[("h", b"v")],
        );
        b.push(1_700_000_000_001, None, Some(b"world"), &[]);
        b.finish()
    }

    fn sample_acl() -> AclEntry {
        AclEntry {
            resource_type: 2,
            resource_name: "orders".into(),
            pattern_type: 4,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: 4,
            permission: 3,
        }
    }

    fn sample_quotas() -> Vec<QuotaEntry> {
        vec![
            QuotaEntry {
                entity: QuotaEntityKey {
                    user: Some(QuotaEntityName::Named("alice".into())),
                    client_id: Some(QuotaEntityName::Default),
                },
                rates: QuotaRates {
                    producer_byte_rate: Some(1_048_576.0),
                    consumer_byte_rate: None,
                    request_rate: Some(0.5),
                },
            },
            QuotaEntry {
                entity: QuotaEntityKey {
                    user: Some(QuotaEntityName::Default),
                    client_id: None,
                },
                rates: QuotaRates::default(),
            },
        ]
    }

    pub(crate) fn all_requests() -> Vec<Request> {
        vec![
            Request::ApiVersions,
            Request::Metadata(MetadataRequest { topics: vec![] }),
            Request::Metadata(MetadataRequest {
                topics: vec!["a".into(), "b.e_-9".into()],
            }),
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreateTopic {
                    name: "orders".into(),
                    partitions: 3,
                    replication_factor: DEFAULT_REPLICATION_FACTOR,
                    configs: vec![("retention.ms".into(), "1000".into())],
                }],
            }),
            Request::DeleteTopics(DeleteTopicsRequest {
                topics: vec!["orders".into()],
            }),
            Request::Produce(ProduceRequest {
                acks: Acks::Durable,
                timeout_ms: 30_000,
                topics: vec![ProduceTopic {
                    name: "orders".into(),
                    partitions: vec![
                        ProducePartition {
                            partition: 0,
                            records: sample_records(),
                        },
                        ProducePartition {
                            partition: 1,
                            records: Bytes::new(),
                        },
                    ],
                }],
            }),
            Request::Fetch(FetchRequest {
                max_wait_ms: 500,
                min_bytes: 1,
                max_bytes: 1 << 20,
                topics: vec![FetchTopic {
                    name: "orders".into(),
                    partitions: vec![FetchPartition {
                        partition: 2,
                        fetch_offset: 42,
                        max_bytes: 65536,
                    }],
                }],
            }),
            Request::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: "orders".into(),
                    partitions: vec![
                        ListOffsetsPartition {
                            partition: 0,
                            spec: OffsetSpec::Earliest,
                        },
                        ListOffsetsPartition {
                            partition: 1,
                            spec: OffsetSpec::Latest,
                        },
                        ListOffsetsPartition {
                            partition: 2,
                            spec: OffsetSpec::Timestamp(1_700_000_000_000),
                        },
                    ],
                }],
            }),
            Request::JoinGroup(JoinGroupRequest {
                group_id: "billing".into(),
                member_id: String::new(),
                topics: vec!["orders".into(), "refunds".into()],
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 0,
                metadata: Bytes::from_static(b"\x00\x01meta"),
            }),
            Request::Heartbeat(HeartbeatRequest {
                group_id: "billing".into(),
                member_id: "client-1-a-1".into(),
                generation: 4,
                owned: vec![
                    TopicPartitions::new("orders", vec![0, 2]),
                    TopicPartitions::new("refunds", vec![]),
                ],
                max_wait_ms: 3_000,
            }),
            Request::LeaveGroup(LeaveGroupRequest {
                group_id: "billing".into(),
                member_id: "client-1-a-1".into(),
            }),
            Request::OffsetCommit(OffsetCommitRequest {
                group_id: "billing".into(),
                member_id: "client-1-a-1".into(),
                generation: 4,
                topics: vec![OffsetCommitTopic {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetCommitPartition {
                            partition: 0,
                            offset: 1_000,
                            metadata: String::new(),
                        },
                        OffsetCommitPartition {
                            partition: 2,
                            offset: i64::MAX,
                            metadata: "host-7".into(),
                        },
                    ],
                }],
            }),
            Request::OffsetCommit(OffsetCommitRequest {
                group_id: "admin-reset".into(),
                member_id: String::new(),
                generation: 0,
                topics: vec![],
            }),
            Request::OffsetFetch(OffsetFetchRequest {
                group_id: "billing".into(),
                topics: vec![],
            }),
            Request::OffsetFetch(OffsetFetchRequest {
                group_id: "billing".into(),
                topics: vec![TopicPartitions::new("orders", vec![1, 0])],
            }),
            Request::ListGroups,
            Request::DescribeGroups(DescribeGroupsRequest {
                group_ids: vec!["billing".into(), "nope".into()],
            }),
            Request::DeleteGroups(DeleteGroupsRequest {
                group_ids: vec!["old".into(), "billing".into()],
            }),
            Request::InitProducerId,
            Request::DescribeCluster,
            Request::FindCoordinator(FindCoordinatorRequest {
                group_id: "billing".into(),
            }),
            Request::FindCoordinator(FindCoordinatorRequest {
                group_id: String::new(),
            }),
            Request::CreatePartitions(CreatePartitionsRequest {
                topics: vec![
                    CreatePartitionsTopic {
                        name: "orders".into(),
                        count: 6,
                    },
                    CreatePartitionsTopic {
                        name: "audit".into(),
                        count: 2,
                    },
                ],
            }),
            Request::ReassignPartitions(ReassignPartitionsRequest {
                action: ReassignAction::Move,
                node_id: 0,
                moves: vec![
                    PartitionReplicas {
                        topic: "orders".into(),
                        partition: 0,
                        replicas: vec![1, 2, 4],
                    },
                    PartitionReplicas {
                        topic: "orders".into(),
                        partition: 1,
                        replicas: vec![],
                    },
                ],
            }),
            Request::ReassignPartitions(ReassignPartitionsRequest {
                action: ReassignAction::Drain,
                node_id: 3,
                moves: vec![],
            }),
            Request::ReplicaFetch(ReplicaFetchRequest {
                replica_id: 2,
                max_wait_ms: 500,
                max_bytes: 1 << 20,
                partitions: vec![
                    ReplicaFetchPartition {
                        topic: "t".into(),
                        partition: 0,
                        leader_epoch: 3,
                        fetch_offset: 42,
                        last_fetched_epoch: 2,
                        durable_offset: 40,
                    },
                    ReplicaFetchPartition {
                        topic: "u".into(),
                        partition: 7,
                        leader_epoch: 0,
                        fetch_offset: 0,
                        last_fetched_epoch: -1,
                        durable_offset: 0,
                    },
                ],
            }),
            Request::AlterConfigs(AlterConfigsRequest {
                topics: vec![
                    AlterConfigsTopic {
                        name: "orders".into(),
                        changes: vec![
                            ConfigChange::set("retention.ms", "60000"),
                            ConfigChange::delete("flush"),
                            ConfigChange::set("segment.ms", ""),
                        ],
                    },
                    AlterConfigsTopic {
                        name: "audit".into(),
                        changes: vec![],
                    },
                ],
            }),
            Request::SaslHandshake(SaslHandshakeRequest {
                mechanism: "SCRAM-SHA-256".into(),
            }),
            Request::SaslAuthenticate(SaslAuthenticateRequest {
                auth_bytes: Bytes::from_static(b"n,,n=alice,r=abc"),
            }),
            Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
                upsertions: vec![ScramUpsertion {
                    user: "alice".into(),
                    mechanism: ScramMechanismType::Sha512,
                    iterations: 8192,
                    salt: Bytes::from_static(&[1, 2, 3, 4]),
                    salted_password: Bytes::from(vec![7u8; 64]),
                }],
                deletions: vec![
                    ScramDeletion {
                        user: "bob".into(),
                        mechanism: Some(ScramMechanismType::Sha256),
                    },
                    ScramDeletion {
                        user: "carol".into(),
                        mechanism: None,
                    },
                ],
            }),
            Request::DescribeUsers(DescribeUsersRequest { users: vec![] }),
            Request::DescribeUsers(DescribeUsersRequest {
                users: vec!["alice".into(), "bob".into()],
            }),
            Request::CreateAcls(CreateAclsRequest {
                creations: vec![sample_acl()],
            }),
            Request::DescribeAcls(DescribeAclsRequest {
                filter: AclFilterEntry::any(),
            }),
            Request::DeleteAcls(DeleteAclsRequest {
                filters: vec![
                    AclFilterEntry {
                        resource_type: 2,
                        resource_name: Some("orders".into()),
                        pattern_type: 2,
                        principal: Some("User:alice".into()),
                        host: None,
                        operation: 3,
                        permission: 3,
                    },
                    AclFilterEntry::any(),
                ],
            }),
            Request::AlterQuotas(AlterQuotasRequest {
                entries: sample_quotas(),
            }),
            Request::DescribeQuotas,
        ]
    }

    pub(crate) fn all_responses() -> Vec<Response> {
        vec![
            Response::Error(ErrorCode::UnknownApi),
            Response::ApiVersions(ApiVersionsResponse {
                apis: SUPPORTED_APIS.to_vec(),
            }),
            Response::Metadata(MetadataResponse {
                brokers: vec![BrokerInfo {
                    node_id: 0,
                    host: "127.0.0.1".into(),
                    port: 7171,
                    rack: None,
                }],
                topics: vec![TopicMetadata {
                    error: ErrorCode::None,
                    name: "orders".into(),
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        error: ErrorCode::None,
                        leader: 0,
                        start_offset: 5,
                        end_offset: 10,
                        size_bytes: 4096,
                        leader_epoch: 0,
                        replicas: Vec::new(),
                        isr: Vec::new(),
                    }],
                    configs: vec![("flush".into(), "interval".into())],
                }],
                controller_id: NO_CONTROLLER,
                cluster_id: String::new(),
            }),
            Response::CreateTopics(CreateTopicsResponse {
                topics: vec![TopicResult {
                    name: "orders".into(),
                    error: ErrorCode::TopicAlreadyExists,
                    message: "exists".into(),
                }],
            }),
            Response::DeleteTopics(DeleteTopicsResponse {
                topics: vec![TopicResult {
                    name: "gone".into(),
                    error: ErrorCode::None,
                    message: String::new(),
                }],
            }),
            Response::Produce(ProduceResponse {
                topics: vec![ProduceTopicResponse {
                    name: "orders".into(),
                    partitions: vec![ProducePartitionResponse {
                        partition: 0,
                        error: ErrorCode::None,
                        base_offset: 100,
                        last_offset: 101,
                    }],
                }],
            }),
            Response::ReassignPartitions(ReassignPartitionsResponse {
                error: ErrorCode::None,
                message: String::new(),
                moves: vec![PartitionReplicas {
                    topic: "orders".into(),
                    partition: 2,
                    replicas: vec![4, 2, 3],
                }],
            }),
            Response::ReassignPartitions(ReassignPartitionsResponse {
                error: ErrorCode::InvalidRequest,
                message: "broker 9 is not registered".into(),
                moves: vec![],
            }),
            Response::ReplicaFetch(ReplicaFetchResponse {
                partitions: vec![
                    ReplicaFetchPartitionResponse {
                        topic: "t".into(),
                        partition: 0,
                        error: ErrorCode::None,
                        high_watermark: 40,
                        log_start_offset: 0,
                        diverging_epoch: -1,
                        diverging_end_offset: 0,
                        records: sample_records(),
                    },
                    ReplicaFetchPartitionResponse {
                        topic: "u".into(),
                        partition: 7,
                        error: ErrorCode::FencedLeaderEpoch,
                        high_watermark: 0,
                        log_start_offset: 0,
                        diverging_epoch: 2,
                        diverging_end_offset: 17,
                        records: Bytes::new(),
                    },
                ],
            }),
            Response::Fetch(FetchResponse {
                topics: vec![FetchTopicResponse {
                    name: "orders".into(),
                    partitions: vec![
                        FetchPartitionResponse {
                            partition: 0,
                            error: ErrorCode::None,
                            high_watermark: 2,
                            log_start_offset: 0,
                            records: sample_records(),
                        },
                        FetchPartitionResponse {
                            partition: 1,
                            error: ErrorCode::OffsetOutOfRange,
                            high_watermark: 0,
                            log_start_offset: 0,
                            records: Bytes::new(),
                        },
                        FetchPartitionResponse {
                            partition: 2,
                            error: ErrorCode::None,
                            high_watermark: 2,
                            log_start_offset: 0,
                            records: sample_records(),
                        },
                    ],
                }],
            }),
            Response::ListOffsets(ListOffsetsResponse {
                topics: vec![ListOffsetsTopicResponse {
                    name: "orders".into(),
                    partitions: vec![ListOffsetsPartitionResponse {
                        partition: 0,
                        error: ErrorCode::None,
                        offset: 7,
                        timestamp: -1,
                    }],
                }],
            }),
            Response::JoinGroup(JoinGroupResponse {
                error: ErrorCode::None,
                member_id: "client-1-a-1".into(),
                generation: 3,
                heartbeat_interval_ms: 3_000,
                assignment: vec![TopicPartitions::new("orders", vec![0, 1])],
                revoke: vec![],
            }),
            Response::JoinGroup(JoinGroupResponse {
                error: ErrorCode::InvalidSessionTimeout,
                member_id: String::new(),
                generation: 0,
                heartbeat_interval_ms: 0,
                assignment: vec![],
                revoke: vec![],
            }),
            Response::Heartbeat(HeartbeatResponse {
                error: ErrorCode::None,
                generation: 5,
                heartbeat_interval_ms: 50,
                assignment: vec![TopicPartitions::new("orders", vec![0])],
                revoke: vec![TopicPartitions::new("orders", vec![2])],
            }),
            Response::Heartbeat(HeartbeatResponse {
                error: ErrorCode::UnknownMemberId,
                generation: 0,
                heartbeat_interval_ms: 0,
                assignment: vec![],
                revoke: vec![],
            }),
            Response::LeaveGroup(LeaveGroupResponse {
                error: ErrorCode::None,
            }),
            Response::OffsetCommit(OffsetCommitResponse {
                topics: vec![OffsetCommitTopicResponse {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetCommitPartitionResponse {
                            partition: 0,
                            error: ErrorCode::None,
                        },
                        OffsetCommitPartitionResponse {
                            partition: 2,
                            error: ErrorCode::IllegalGeneration,
                        },
                    ],
                }],
            }),
            Response::OffsetFetch(OffsetFetchResponse {
                error: ErrorCode::None,
                topics: vec![OffsetFetchTopicResponse {
                    name: "orders".into(),
                    partitions: vec![
                        OffsetFetchPartitionResponse {
                            partition: 0,
                            error: ErrorCode::None,
                            offset: 1_000,
                            metadata: "host-7".into(),
                        },
                        OffsetFetchPartitionResponse {
                            partition: 1,
                            error: ErrorCode::None,
                            offset: -1,
                            metadata: String::new(),
                        },
                    ],
                }],
            }),
            Response::OffsetFetch(OffsetFetchResponse {
                error: ErrorCode::InvalidGroupId,
                topics: vec![],
            }),
            Response::ListGroups(ListGroupsResponse {
                groups: vec![
                    ListedGroup {
                        group_id: "billing".into(),
                        state: "Stable".into(),
                        members: 3,
                        generation: 7,
                    },
                    ListedGroup {
                        group_id: "old".into(),
                        state: "Empty".into(),
                        members: 0,
                        generation: 2,
                    },
                ],
            }),
            Response::DescribeGroups(DescribeGroupsResponse {
                groups: vec![
                    DescribedGroup {
                        error: ErrorCode::None,
                        group_id: "billing".into(),
                        state: "Reconciling".into(),
                        generation: 7,
                        members: vec![DescribedMember {
                            member_id: "client-1-a-1".into(),
                            client_id: "client-1".into(),
                            topics: vec!["orders".into()],
                            assignment: vec![TopicPartitions::new("orders", vec![0])],
                            revoking: vec![TopicPartitions::new("orders", vec![1])],
                        }],
                        offsets: vec![
                            PartitionLag {
                                topic: "orders".into(),
                                partition: 0,
                                committed_offset: 90,
                                end_offset: 100,
                                lag: 10,
                                lag_ms: 1_250,
                            },
                            PartitionLag {
                                topic: "orders".into(),
                                partition: 1,
                                committed_offset: -1,
                                end_offset: 5,
                                lag: 5,
                                lag_ms: -1,
                            },
                        ],
                    },
                    DescribedGroup {
                        error: ErrorCode::GroupIdNotFound,
                        group_id: "nope".into(),
                        state: String::new(),
                        generation: 0,
                        members: vec![],
                        offsets: vec![],
                    },
                ],
            }),
            Response::DeleteGroups(DeleteGroupsResponse {
                groups: vec![
                    DeletedGroup {
                        group_id: "old".into(),
                        error: ErrorCode::None,
                    },
                    DeletedGroup {
                        group_id: "billing".into(),
                        error: ErrorCode::NonEmptyGroup,
                    },
                ],
            }),
            Response::InitProducerId(InitProducerIdResponse {
                error: ErrorCode::None,
                producer_id: (1_700_000_000_000i64 << 16) | 7,
                producer_epoch: 0,
            }),
            Response::InitProducerId(InitProducerIdResponse {
                error: ErrorCode::Unknown,
                producer_id: -1,
                producer_epoch: -1,
            }),
            Response::DescribeCluster(DescribeClusterResponse {
                error: ErrorCode::None,
                cluster_id: "c-1".into(),
                controller_id: 0,
                controller_epoch: 0,
                brokers: vec![ClusterBroker {
                    node_id: 0,
                    host: "127.0.0.1".into(),
                    port: 7171,
                    rack: None,
                    alive: true,
                }],
            }),
            Response::FindCoordinator(FindCoordinatorResponse {
                error: ErrorCode::None,
                node_id: 2,
                host: "10.0.0.2".into(),
                port: 7171,
            }),
            Response::FindCoordinator(FindCoordinatorResponse {
                error: ErrorCode::CoordinatorNotAvailable,
                node_id: NO_COORDINATOR,
                host: String::new(),
                port: 0,
            }),
            Response::CreatePartitions(CreatePartitionsResponse {
                topics: vec![
                    TopicResult {
                        name: "orders".into(),
                        error: ErrorCode::None,
                        message: String::new(),
                    },
                    TopicResult {
                        name: "audit".into(),
                        error: ErrorCode::InvalidPartitions,
                        message: "cannot shrink".into(),
                    },
                ],
            }),
            Response::AlterConfigs(AlterConfigsResponse {
                topics: vec![TopicResult {
                    name: "orders".into(),
                    error: ErrorCode::InvalidConfig,
                    message: "unknown topic config key".into(),
                }],
            }),
            Response::SaslHandshake(SaslHandshakeResponse {
                error: ErrorCode::UnsupportedSaslMechanism,
                mechanisms: vec!["SCRAM-SHA-256".into(), "PLAIN".into()],
            }),
            Response::SaslAuthenticate(SaslAuthenticateResponse {
                error: ErrorCode::None,
                error_message: String::new(),
                auth_bytes: Bytes::from_static(b"r=abcdef,s=c2FsdA==,i=4096"),
            }),
            Response::SaslAuthenticate(SaslAuthenticateResponse {
                error: ErrorCode::SaslAuthenticationFailed,
                error_message: "authentication failed".into(),
                auth_bytes: Bytes::new(),
            }),
            Response::AlterUserScramCredentials(AlterUserScramCredentialsResponse {
                results: vec![
                    AdminResult::ok(),
                    AdminResult::err(ErrorCode::ResourceNotFound, "no such user"),
                ],
            }),
            Response::DescribeUsers(DescribeUsersResponse {
                users: vec![
                    DescribedUser {
                        user: "alice".into(),
                        error: ErrorCode::None,
                        credentials: vec![
                            CredentialInfo {
                                mechanism: ScramMechanismType::Sha256,
                                iterations: 4096,
                            },
                            CredentialInfo {
                                mechanism: ScramMechanismType::Sha512,
                                iterations: 8192,
                            },
                        ],
                    },
                    DescribedUser {
                        user: "nobody".into(),
                        error: ErrorCode::ResourceNotFound,
                        credentials: vec![],
                    },
                ],
            }),
            Response::CreateAcls(CreateAclsResponse {
                results: vec![AdminResult::ok()],
            }),
            Response::DescribeAcls(DescribeAclsResponse {
                error: ErrorCode::None,
                message: String::new(),
                acls: vec![sample_acl()],
            }),
            Response::DeleteAcls(DeleteAclsResponse {
                results: vec![
                    DeleteAclsResult {
                        error: ErrorCode::None,
                        message: String::new(),
                        deleted: vec![sample_acl()],
                    },
                    DeleteAclsResult {
                        error: ErrorCode::InvalidRequest,
                        message: "unknown operation 99".into(),
                        deleted: vec![],
                    },
                ],
            }),
            Response::AlterQuotas(AlterQuotasResponse {
                results: vec![AdminResult::ok(), AdminResult::ok()],
            }),
            Response::DescribeQuotas(DescribeQuotasResponse {
                entries: sample_quotas(),
            }),
        ]
    }

    /// Strips the length prefix through the real codec, checking it matches.
    fn unframe(mut frame: BytesMut) -> Bytes {
        let mut codec = FrameCodec::new(1 << 20);
        let payload = codec.decode(&mut frame).unwrap().unwrap();
        assert!(frame.is_empty(), "length prefix does not cover the frame");
        payload
    }

    #[test]
    fn every_request_round_trips() {
        let reqs = all_requests();
        for key in ApiKey::ALL {
            assert!(
                reqs.iter().any(|r| r.api_key() == *key),
                "no request sample for {key}"
            );
        }
        for (i, req) in reqs.iter().enumerate() {
            let mut buf = BytesMut::new();
            encode_request(i as u32 + 7, "client-1", req, &mut buf);
            let (header, got) = decode_request(unframe(buf)).unwrap();
            assert_eq!(header.api_key, req.api_key() as u16);
            assert_eq!(header.api_version, 0);
            assert_eq!(header.correlation_id, i as u32 + 7);
            assert_eq!(header.client_id, "client-1");
            assert_eq!(&got, req);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let resps = all_responses();
        for key in ApiKey::ALL {
            assert!(
                resps.iter().any(|r| r.api_key() == Some(*key)),
                "no response sample for {key}"
            );
        }
        for (i, resp) in resps.iter().enumerate() {
            let mut buf = BytesMut::new();
            encode_response(i as u32, resp, &mut buf);
            let key = resp.api_key().unwrap_or(ApiKey::Fetch);
            let (cid, got) = decode_response(key, unframe(buf)).unwrap();
            assert_eq!(cid, i as u32);
            assert_eq!(&got, resp);
        }
    }

    #[test]
    fn chunks_equal_flat_encoding_and_share_records() {
        for (i, resp) in all_responses().iter().enumerate() {
            let mut flat = BytesMut::new();
            encode_response(i as u32, resp, &mut flat);
            let mut chunks = Vec::new();
            encode_response_chunks(i as u32, resp, &mut chunks);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, &flat[..], "response {i}");
            if let Response::Fetch(f) = resp {
                for p in f.topics.iter().flat_map(|t| &t.partitions) {
                    if p.records.is_empty() {
                        continue;
                    }
                    // The records chunk is the very same memory, not a copy.
                    assert!(
                        chunks.iter().any(|c| c.as_ptr() == p.records.as_ptr() && c.len() == p.records.len()),
                        "records were copied"
                    );
                }
            }
        }
        for (i, req) in all_requests().iter().enumerate() {
            let mut flat = BytesMut::new();
            encode_request(i as u32, "c", req, &mut flat);
            let mut chunks = Vec::new();
            encode_request_chunks(i as u32, "c", req, &mut chunks);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, &flat[..], "request {i}");
        }
    }

    #[test]
    fn decoded_records_are_slices_of_the_frame() {
        let req = &all_requests()[5];
        let mut buf = BytesMut::new();
        encode_request(1, "c", req, &mut buf);
        let payload = unframe(buf);
        let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
        let (_, got) = decode_request(payload.clone()).unwrap();
        let Request::Produce(p) = got else {
            panic!("not produce")
        };
        let rec = &p.topics[0].partitions[0].records;
        assert!(range.contains(&(rec.as_ptr() as usize)));
    }

    fn header_bytes(api_key: u16, version: u16, cid: u32) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u16(api_key);
        b.put_u16(version);
        b.put_u32(cid);
        b.put_u16(2);
        b.put_slice(b"id");
        b
    }

    #[test]
    fn unknown_key_and_version_keep_the_header() {
        for (key, version, code) in [
            (99u16, 0u16, ErrorCode::UnknownApi),
            (
                *ApiKey::ALL.last().unwrap() as u16 + 1,
                0,
                ErrorCode::UnknownApi,
            ),
            (ApiKey::Fetch as u16, 1, ErrorCode::UnsupportedVersion),
            (ApiKey::JoinGroup as u16, 1, ErrorCode::UnsupportedVersion),
            // A group api decodes (served or not), so a bad body is INVALID_REQUEST.
            (ApiKey::JoinGroup as u16, 0, ErrorCode::InvalidRequest),
        ] {
            let err = decode_request(header_bytes(key, version, 77).freeze()).unwrap_err();
            assert_eq!(err.code, code);
            let h = err.header.expect("header decoded");
            assert_eq!(
                (h.api_key, h.api_version, h.correlation_id),
                (key, version, 77)
            );
        }
    }

    #[test]
    fn group_apis_decode_and_are_served() {
        let (h, req) = decode_request(header_bytes(ApiKey::ListGroups as u16, 0, 3).freeze())
            .expect("ListGroups decodes");
        assert_eq!(h.correlation_id, 3);
        assert_eq!(req, Request::ListGroups);
        for key in ApiKey::ALL {
            let k = *key as u16;
            assert_eq!(key.is_group_api(), (7..=13).contains(&k), "{key}");
            assert!(key.is_served(), "{key}");
            assert!(key.decodes_version(0), "{key}");
            let two_versions = matches!(key, ApiKey::Metadata | ApiKey::CreateTopics);
            assert_eq!(key.decodes_version(1), two_versions, "{key}");
            assert!(!key.decodes_version(2), "{key}");
            assert_eq!(key.supports_version(0), key.is_served(), "{key}");
            assert_eq!(key.versions().is_some(), key.is_served(), "{key}");
        }
        let group: Vec<u16> = GROUP_APIS.iter().map(|r| r.api_key).collect();
        assert_eq!(group, (7..=13).collect::<Vec<u16>>());
        assert!(GROUP_APIS
            .iter()
            .all(|r| (r.min_version, r.max_version) == (0, 0)));
    }

    #[test]
    fn negative_offsets_below_minus_one_are_rejected() {
        let resp = Response::OffsetFetch(OffsetFetchResponse {
            error: ErrorCode::None,
            topics: vec![OffsetFetchTopicResponse {
                name: "t".into(),
                partitions: vec![OffsetFetchPartitionResponse {
                    partition: 0,
                    error: ErrorCode::None,
                    offset: -2,
                    metadata: String::new(),
                }],
            }],
        });
        let mut buf = BytesMut::new();
        encode_response(1, &resp, &mut buf);
        let err = decode_response(ApiKey::OffsetFetch, unframe(buf)).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::InvalidValue {
                what: "committed offset",
                value: -2
            }
        ));
        let mut resps = all_responses();
        let Some(Response::DescribeGroups(d)) = resps
            .iter_mut()
            .find(|r| r.api_key() == Some(ApiKey::DescribeGroups))
        else {
            panic!("no DescribeGroups sample")
        };
        d.groups[0].offsets[0].lag_ms = i64::MIN;
        let resp = Response::DescribeGroups(d.clone());
        let mut buf = BytesMut::new();
        encode_response(1, &resp, &mut buf);
        let err = decode_response(ApiKey::DescribeGroups, unframe(buf)).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::InvalidValue { what: "lag_ms", .. }
        ));
    }

    #[test]
    fn group_bodies_have_the_documented_layout() {
        // Heartbeat: group_id, member_id, generation, owned TP, max_wait_ms.
        let req = Request::Heartbeat(HeartbeatRequest {
            group_id: "g".into(),
            member_id: "m".into(),
            generation: 2,
            owned: vec![TopicPartitions::new("t", vec![1, 3])],
            max_wait_ms: 500,
        });
        let mut buf = BytesMut::new();
        encode_request(1, "", &req, &mut buf);
        let body = &unframe(buf)[10..];
        let expected: Vec<u8> = [
            &[0, 1, b'g', 0, 1, b'm'][..],
            &[0, 0, 0, 2],
            &[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3],
            &[0, 0, 1, 0xf4],
        ]
        .concat();
        assert_eq!(body, &expected[..]);
        // LeaveGroup response: just the error code.
        let mut buf = BytesMut::new();
        encode_response(
            4,
            &Response::LeaveGroup(LeaveGroupResponse {
                error: ErrorCode::UnknownMemberId,
            }),
            &mut buf,
        );
        assert_eq!(&buf[..], &[0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0, 22]);
    }

    #[test]
    fn delete_groups_has_the_documented_layout() {
        let req = Request::DeleteGroups(DeleteGroupsRequest {
            group_ids: vec!["g".into()],
        });
        let mut buf = BytesMut::new();
        encode_request(1, "", &req, &mut buf);
        assert_eq!(&unframe(buf)[10..], &[0, 0, 0, 1, 0, 1, b'g']);
        let resp = Response::DeleteGroups(DeleteGroupsResponse {
            groups: vec![DeletedGroup {
                group_id: "g".into(),
                error: ErrorCode::NonEmptyGroup,
            }],
        });
        let mut buf = BytesMut::new();
        encode_response(2, &resp, &mut buf);
        let payload = unframe(buf);
        let code = ErrorCode::NonEmptyGroup.code().to_be_bytes();
        assert_eq!(&payload[6..], &[0, 0, 0, 1, 0, 1, b'g', code[0], code[1]]);
        assert_eq!(
            decode_response(ApiKey::DeleteGroups, payload).unwrap(),
            (2, resp)
        );
    }

    #[test]
    fn lying_counts_in_group_bodies_are_rejected_before_allocating() {
        // OffsetFetch: group_id "g", then a topics count far beyond the bytes left.
        let mut b = header_bytes(ApiKey::OffsetFetch as u16, 0, 1);
        b.put_u16(1);
        b.put_u8(b'g');
        b.put_u32(1_000_000);
        b.put_slice(&[0; 32]);
        let err = decode_request(b.freeze()).unwrap_err();
        assert!(matches!(
            err.source,
            ProtocolError::CountTooLarge {
                count: 1_000_000,
                ..
            }
        ));
        // Heartbeat owned: one topic claiming 2^30 partitions.
        let mut b = header_bytes(ApiKey::Heartbeat as u16, 0, 1);
        b.put_u16(0);
        b.put_u16(0);
        b.put_u32(1);
        b.put_u32(1);
        b.put_u16(1);
        b.put_u8(b't');
        b.put_u32(1 << 30);
        b.put_slice(&[0; 16]);
        let err = decode_request(b.freeze()).unwrap_err();
        assert!(matches!(
            err.source,
            ProtocolError::CountTooLarge {
                what: "partitions",
                ..
            }
        ));
    }

    #[test]
    fn topic_partitions_group_and_flatten() {
        let grouped = TopicPartitions::from_pairs([("b", 2), ("a", 1), ("b", 0), ("b", 2)]);
        assert_eq!(
            grouped,
            vec![
                TopicPartitions::new("a", vec![1]),
                TopicPartitions::new("b", vec![0, 2]),
            ]
        );
        let flat: Vec<(&str, u32)> = TopicPartitions::pairs(&grouped).collect();
        assert_eq!(flat, vec![("a", 1), ("b", 0), ("b", 2)]);
        assert!(TopicPartitions::from_pairs(Vec::<(String, u32)>::new()).is_empty());
    }

    #[test]
    fn malformed_body_is_invalid_request_with_header() {
        let mut b = header_bytes(ApiKey::Fetch as u16, 0, 5);
        b.put_u32(1); // max_wait_ms only, the rest missing
        let err = decode_request(b.freeze()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.header.map(|h| h.correlation_id), Some(5));

        let mut b = header_bytes(ApiKey::Produce as u16, 0, 6);
        b.put_u8(9); // acks
        b.put_u32(0);
        b.put_u32(0);
        let err = decode_request(b.freeze()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequiredAcks);

        let mut b = header_bytes(ApiKey::ApiVersions as u16, 0, 8);
        b.put_u8(0); // trailing garbage
        let err = decode_request(b.freeze()).unwrap_err();
        assert!(matches!(err.source, ProtocolError::TrailingBytes { .. }));
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn malformed_header_has_no_header() {
        let err = decode_request(Bytes::from_static(&[0, 1, 0])).unwrap_err();
        assert!(err.header.is_none());
        let mut b = BytesMut::new();
        b.put_u16(0);
        b.put_u16(0);
        b.put_u32(1);
        b.put_u16(2);
        b.put_slice(&[0xff, 0xfe]); // invalid UTF-8 client id
        let err = decode_request(b.freeze()).unwrap_err();
        assert!(err.header.is_none());
        assert!(matches!(err.source, ProtocolError::InvalidUtf8 { .. }));
    }

    #[test]
    fn huge_array_count_is_rejected_before_allocating() {
        let mut b = header_bytes(ApiKey::Metadata as u16, 0, 1);
        b.put_u32(u32::MAX);
        let err = decode_request(b.freeze()).unwrap_err();
        assert!(matches!(
            err.source,
            ProtocolError::CountTooLarge {
                count: u32::MAX,
                ..
            }
        ));
    }

    #[test]
    fn invalid_offset_spec_is_rejected() {
        let mut b = header_bytes(ApiKey::ListOffsets as u16, 0, 1);
        b.put_u32(1);
        b.put_u16(1);
        b.put_slice(b"t");
        b.put_u32(1);
        b.put_u32(0);
        b.put_i64(-3);
        let err = decode_request(b.freeze()).unwrap_err();
        assert!(matches!(
            err.source,
            ProtocolError::InvalidValue {
                what: "offset spec",
                value: -3
            }
        ));
    }

    #[test]
    fn produce_acks_byte_is_read_without_decoding() {
        for acks in [Acks::None, Acks::Leader, Acks::Durable] {
            let req = Request::Produce(ProduceRequest {
                acks,
                timeout_ms: 5,
                topics: Vec::new(),
            });
            let mut frame = BytesMut::new();
            encode_request(9, "client-x", &req, &mut frame);
            let payload = unframe(frame);
            assert_eq!(produce_acks_byte(&payload), Some(acks as u8));
            // A truncated body still has its acks byte.
            assert_eq!(
                produce_acks_byte(&payload[..payload.len() - 3]),
                Some(acks as u8)
            );
        }
        let mut frame = BytesMut::new();
        encode_request(9, "c", &Request::ApiVersions, &mut frame);
        assert_eq!(produce_acks_byte(&unframe(frame)), None);
        assert_eq!(produce_acks_byte(&[0, 4, 0]), None);
    }

    #[test]
    fn response_error_has_no_body() {
        let mut buf = BytesMut::new();
        encode_response(9, &Response::Error(ErrorCode::UnsupportedVersion), &mut buf);
        assert_eq!(&buf[..], &[0, 0, 0, 6, 0, 0, 0, 9, 0, 8]);
        assert_eq!(peek_correlation_id(&buf[4..]), Some(9));
    }

    #[test]
    fn api_keys_are_ordered_and_named_once() {
        for w in ApiKey::ALL.windows(2) {
            assert!((w[0] as u16) < (w[1] as u16), "{} before {}", w[0], w[1]);
        }
        for k in ApiKey::ALL {
            assert_eq!(ApiKey::from_u16(*k as u16), Some(*k));
        }
        let last = *ApiKey::ALL.last().expect("keys") as u16;
        assert_eq!(ApiKey::from_u16(last + 1), None);
        // A gap (a key another change assigns) maps to no key.
        for v in 0..=last {
            if !ApiKey::ALL.iter().any(|k| *k as u16 == v) {
                assert_eq!(ApiKey::from_u16(v), None);
            }
        }
        let mut names: Vec<_> = ApiKey::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ApiKey::ALL.len());
        let served: Vec<u16> = SUPPORTED_APIS.iter().map(|r| r.api_key).collect();
        let all: Vec<u16> = ApiKey::ALL.iter().map(|k| *k as u16).collect();
        assert_eq!(served, all);
        assert!(GROUP_APIS.iter().all(|g| SUPPORTED_APIS.contains(g)));
    }

    fn payload(req: &Request) -> Bytes {
        let mut b = BytesMut::new();
        encode_request(3, "c", req, &mut b);
        b.freeze().slice(4..)
    }

    fn fetch_of(topics: &[(&str, &[u32])]) -> Request {
        Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 1,
            topics: topics
                .iter()
                .map(|(name, ps)| FetchTopic {
                    name: (*name).into(),
                    partitions: ps
                        .iter()
                        .map(|p| FetchPartition {
                            partition: *p,
                            fetch_offset: 0,
                            max_bytes: 1,
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    #[test]
    fn topic_names_are_validated_while_decoding() {
        let ok = "a".repeat(MAX_TOPIC_NAME_BYTES);
        let bad = [
            String::new(),
            "a".repeat(MAX_TOPIC_NAME_BYTES + 1),
            "a".repeat(60_000),
            ".".into(),
            "..".into(),
            "a/b".into(),
            "é".into(),
            "a b".into(),
        ];
        let metadata = |n: &str| {
            Request::Metadata(MetadataRequest {
                topics: vec![n.into()],
            })
        };
        let heartbeat = |n: &str| {
            Request::Heartbeat(HeartbeatRequest {
                group_id: "g".into(),
                member_id: "m".into(),
                generation: 0,
                owned: vec![TopicPartitions::new(n, vec![0])],
                max_wait_ms: 0,
            })
        };
        let kinds: [&dyn Fn(&str) -> Request; 3] =
            [&metadata, &heartbeat, &|n: &str| fetch_of(&[(n, &[0])])];
        for make in kinds {
            assert!(decode_request(payload(&make(&ok))).is_ok());
            for name in &bad {
                let e = decode_request(payload(&make(name))).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidTopic, "{name:?}");
                assert!(e.header.is_some());
                assert!(matches!(e.source, ProtocolError::InvalidTopicName { .. }));
            }
        }
        assert_eq!(topic_name_problem("a.b_c-D9"), None);
    }

    #[test]
    fn the_entry_cap_counts_partitions_and_bare_topics() {
        let limits = RequestLimits { max_partitions: 4 };
        let dec = |r: &Request| decode_request_with_limits(payload(r), &limits);
        assert!(dec(&fetch_of(&[("a", &[0, 1]), ("b", &[0, 1])])).is_ok());
        let e = dec(&fetch_of(&[("a", &[0, 1, 2]), ("b", &[0, 1])])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(matches!(
            e.source,
            ProtocolError::TooManyEntries { limit: 4 }
        ));
        // A topic with no partitions still counts one.
        assert!(dec(&fetch_of(&[("a", &[0, 1, 2]), ("b", &[])])).is_ok());
        assert!(dec(&fetch_of(&[("a", &[0, 1, 2, 3]), ("b", &[])])).is_err());
        let names = |n: usize| {
            Request::Metadata(MetadataRequest {
                topics: (0..n).map(|i| format!("t{i}")).collect(),
            })
        };
        assert!(dec(&names(4)).is_ok());
        assert!(dec(&names(5)).is_err());
        let groups = |n: usize| {
            Request::DescribeGroups(DescribeGroupsRequest {
                group_ids: (0..n).map(|i| format!("g{i}")).collect(),
            })
        };
        assert!(dec(&groups(4)).is_ok());
        assert!(dec(&groups(5)).is_err());
        let configs = |n: usize| {
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreateTopic {
                    name: "t".into(),
                    partitions: 1,
                    replication_factor: DEFAULT_REPLICATION_FACTOR,
                    configs: vec![("k".into(), "v".into()); n],
                }],
            })
        };
        assert!(dec(&configs(3)).is_ok(), "one for the topic, three pairs");
        assert!(dec(&configs(4)).is_err());
        // The default: 10,000.
        let many: Vec<u32> = (0..DEFAULT_MAX_REQUEST_PARTITIONS as u32).collect();
        assert!(decode_request(payload(&fetch_of(&[("a", &many)]))).is_ok());
        let more: Vec<u32> = (0..=DEFAULT_MAX_REQUEST_PARTITIONS as u32).collect();
        assert!(decode_request(payload(&fetch_of(&[("a", &more)]))).is_err());
    }

    #[test]
    fn repeated_partitions_topics_and_groups_are_refused() {
        let dup = |r: Request| {
            let e = decode_request(payload(&r)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert!(matches!(e.source, ProtocolError::Duplicate { .. }), "{e:?}");
        };
        dup(fetch_of(&[("a", &[0, 1, 0])]));
        dup(fetch_of(&[("a", &[0]), ("a", &[1])]));
        assert!(decode_request(payload(&fetch_of(&[("a", &[0]), ("b", &[0])]))).is_ok());
        dup(Request::Metadata(MetadataRequest {
            topics: vec!["a".into(), "b".into(), "a".into()],
        }));
        dup(Request::DeleteTopics(DeleteTopicsRequest {
            topics: vec!["a".into(), "a".into()],
        }));
        dup(Request::DescribeGroups(DescribeGroupsRequest {
            group_ids: vec!["g".into(), "g".into()],
        }));
        dup(Request::DeleteGroups(DeleteGroupsRequest {
            group_ids: vec!["g".into(), "g".into()],
        }));
        dup(Request::OffsetFetch(OffsetFetchRequest {
            group_id: "g".into(),
            topics: vec![TopicPartitions::new("a", vec![3, 3])],
        }));
        dup(Request::Produce(ProduceRequest {
            acks: Acks::Leader,
            timeout_ms: 0,
            topics: vec![ProduceTopic {
                name: "a".into(),
                partitions: vec![
                    ProducePartition {
                        partition: 1,
                        records: Bytes::new(),
                    };
                    2
                ],
            }],
        }));
    }

    #[test]
    fn commit_offsets_above_i64_max_are_refused_not_clamped() {
        let commit = |offset: i64| {
            Request::OffsetCommit(OffsetCommitRequest {
                group_id: "g".into(),
                member_id: String::new(),
                generation: 0,
                topics: vec![OffsetCommitTopic {
                    name: "t".into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: 0,
                        offset,
                        metadata: String::new(),
                    }],
                }],
            })
        };
        let (_, got) = decode_request(payload(&commit(i64::MAX))).unwrap();
        assert_eq!(got, commit(i64::MAX));
        // u64::MAX and 2^63 on the wire read as negative i64s.
        for v in [-1, i64::MIN] {
            let e = decode_request(payload(&commit(v))).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert!(matches!(
                e.source,
                ProtocolError::InvalidValue {
                    what: "committed offset",
                    ..
                }
            ));
        }
    }

    /// A Metadata response with every v1 field set (racks, replicas, controller).
    fn cluster_metadata() -> MetadataResponse {
        MetadataResponse {
            brokers: vec![
                BrokerInfo {
                    node_id: 1,
                    host: "10.0.0.1".into(),
                    port: 7171,
                    rack: Some("a".into()),
                },
                BrokerInfo {
                    node_id: 2,
                    host: "10.0.0.2".into(),
                    port: 7172,
                    rack: None,
                },
            ],
            topics: vec![
                TopicMetadata {
                    error: ErrorCode::None,
                    name: "orders".into(),
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        error: ErrorCode::None,
                        leader: 2,
                        start_offset: 5,
                        end_offset: 10,
                        size_bytes: 4096,
                        leader_epoch: 7,
                        replicas: vec![2, 1],
                        isr: vec![2],
                    }],
                    configs: vec![("flush".into(), "os".into())],
                },
                TopicMetadata {
                    error: ErrorCode::UnknownTopicOrPartition,
                    name: "gone".into(),
                    partitions: vec![],
                    configs: vec![],
                },
            ],
            controller_id: 1,
            cluster_id: "sluice-1".into(),
        }
    }

    /// `m` as a v0 peer sees it: the v1 fields at their "unknown" values.
    fn as_v0(mut m: MetadataResponse) -> MetadataResponse {
        for b in &mut m.brokers {
            b.rack = None;
        }
        for p in m.topics.iter_mut().flat_map(|t| &mut t.partitions) {
            p.leader_epoch = 0;
            p.replicas.clear();
            p.isr.clear();
        }
        m.controller_id = NO_CONTROLLER;
        m.cluster_id.clear();
        m
    }

    fn encode_v(version: u16, resp: &Response) -> Bytes {
        let mut buf = BytesMut::new();
        encode_response_version(3, version, resp, &mut buf);
        unframe(buf)
    }

    #[test]
    fn metadata_round_trips_at_both_versions() {
        let full = Response::Metadata(cluster_metadata());
        let (_, got) = decode_response_version(ApiKey::Metadata, 1, encode_v(1, &full)).unwrap();
        assert_eq!(got, full);
        // v0 carries none of the cluster fields; they decode as "unknown".
        let v0 = encode_v(0, &full);
        let stripped = Response::Metadata(as_v0(cluster_metadata()));
        assert_eq!(v0, encode_v(0, &stripped), "v0 bytes depend on v1 fields");
        let (_, got) = decode_response_version(ApiKey::Metadata, 0, v0.clone()).unwrap();
        assert_eq!(got, stripped);
        assert_eq!(decode_response(ApiKey::Metadata, v0).unwrap().1, stripped);
        // The versions are not interchangeable: a v1 body is not a v0 body.
        assert!(decode_response_version(ApiKey::Metadata, 0, encode_v(1, &full)).is_err());
        // The request body is the same in both versions.
        let req = Request::Metadata(MetadataRequest {
            topics: vec!["orders".into()],
        });
        for version in [0, 1] {
            let mut buf = BytesMut::new();
            encode_request_version(4, version, "c", &req, &mut buf);
            let (h, got) = decode_request(unframe(buf)).unwrap();
            assert_eq!((h.api_version, got), (version, req.clone()));
        }
    }

    #[test]
    fn metadata_v1_has_the_documented_layout() {
        let resp = Response::Metadata(MetadataResponse {
            brokers: vec![BrokerInfo {
                node_id: 0,
                host: "h".into(),
                port: 9,
                rack: None,
            }],
            topics: vec![TopicMetadata {
                error: ErrorCode::None,
                name: "t".into(),
                partitions: vec![PartitionMetadata {
                    partition: 0,
                    error: ErrorCode::None,
                    leader: 0,
                    start_offset: 1,
                    end_offset: 2,
                    size_bytes: 3,
                    leader_epoch: 4,
                    replicas: vec![0],
                    isr: vec![0],
                }],
                configs: vec![],
            }],
            controller_id: 0,
            cluster_id: "c".into(),
        });
        let expected: Vec<u8> = [
            &[0, 0, 0, 3, 0, 0][..],                     // correlation id, header error
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 1, b'h', 0, 9], // brokers: id, host, port
            &[0xff, 0xff],                               // rack: null
            &[0, 1, b'c'],                               // cluster_id
            &[0, 0, 0, 0],                               // controller_id
            &[0, 0, 0, 1, 0, 0, 0, 1, b't'],             // topics: error, name
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // partition, error, leader
            &[0, 0, 0, 4],                               // leader_epoch
            &[0, 0, 0, 0, 0, 0, 0, 1],                   // start
            &[0, 0, 0, 0, 0, 0, 0, 2],                   // end
            &[0, 0, 0, 0, 0, 0, 0, 3],                   // size
            &[0, 0, 0, 1, 0, 0, 0, 0],                   // replicas [0]
            &[0, 0, 0, 1, 0, 0, 0, 0],                   // isr [0]
            &[0, 0, 0, 0],                               // configs
        ]
        .concat();
        assert_eq!(&encode_v(1, &resp)[..], &expected[..]);
        // An unknown controller is -1.
        let Response::Metadata(mut m) = resp else {
            unreachable!()
        };
        m.controller_id = NO_CONTROLLER;
        let b = encode_v(1, &Response::Metadata(m));
        assert_eq!(&b[24..28], &[0xff; 4]);
    }

    #[test]
    fn create_topics_round_trips_at_both_versions() {
        let req = |rf: i16| {
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreateTopic {
                    name: "t".into(),
                    partitions: 2,
                    replication_factor: rf,
                    configs: vec![("flush".into(), "os".into())],
                }],
            })
        };
        for rf in [-1, 0, 1, 3, i16::MAX, i16::MIN] {
            let mut buf = BytesMut::new();
            encode_request_version(1, 1, "", &req(rf), &mut buf);
            let payload = unframe(buf);
            // header (10 bytes), count, name "t", partitions, then the factor.
            assert_eq!(&payload[10 + 4 + 3 + 4..][..2], &rf.to_be_bytes());
            let (h, got) = decode_request(payload).unwrap();
            assert_eq!((h.api_version, got), (1, req(rf)));
        }
        // v0 has no factor on the wire: it decodes as the default.
        let mut v0 = BytesMut::new();
        encode_request(1, "", &req(3), &mut v0);
        let (h, got) = decode_request(unframe(v0)).unwrap();
        assert_eq!((h.api_version, got), (0, req(DEFAULT_REPLICATION_FACTOR)));
        // A v1 topic is at least 12 bytes: a lying count is refused before allocating.
        let mut b = header_bytes(ApiKey::CreateTopics as u16, 1, 1);
        b.put_u32(2);
        b.put_slice(&[0; 22]);
        let e = decode_request(b.freeze()).unwrap_err();
        assert!(
            matches!(e.source, ProtocolError::CountTooLarge { .. }),
            "{e:?}"
        );
        // The response is the same in both versions.
        let resp = Response::CreateTopics(CreateTopicsResponse {
            topics: vec![TopicResult {
                name: "t".into(),
                error: ErrorCode::InvalidReplicationFactor,
                message: "only 1 broker".into(),
            }],
        });
        for version in [0, 1] {
            let b = encode_v(version, &resp);
            assert_eq!(b, encode_v(0, &resp));
            let got = decode_response_version(ApiKey::CreateTopics, version, b).unwrap();
            assert_eq!(got.1, resp);
        }
    }

    #[test]
    fn describe_cluster_has_the_documented_layout() {
        let mut buf = BytesMut::new();
        encode_request(5, "", &Request::DescribeCluster, &mut buf);
        let payload = unframe(buf);
        assert_eq!(&payload[..2], &[0, 16]);
        assert_eq!(payload.len(), 10, "empty body");
        let resp = Response::DescribeCluster(DescribeClusterResponse {
            error: ErrorCode::None,
            cluster_id: "c".into(),
            controller_id: NO_CONTROLLER,
            controller_epoch: 9,
            brokers: vec![
                ClusterBroker {
                    node_id: 1,
                    host: "h".into(),
                    port: 2,
                    rack: Some("r".into()),
                    alive: false,
                },
                ClusterBroker {
                    node_id: 3,
                    host: String::new(),
                    port: 4,
                    rack: None,
                    alive: true,
                },
            ],
        });
        let expected: Vec<u8> = [
            &[0, 0, 0, 3, 0, 0][..],
            &[0, 0],                   // error
            &[0, 1, b'c'],             // cluster_id
            &[0xff, 0xff, 0xff, 0xff], // controller_id -1
            &[0, 0, 0, 0, 0, 0, 0, 9], // controller_epoch
            &[0, 0, 0, 2],
            &[0, 0, 0, 1, 0, 1, b'h', 0, 2, 0, 1, b'r', 0],
            &[0, 0, 0, 3, 0, 0, 0, 4, 0xff, 0xff, 1],
        ]
        .concat();
        let bytes = encode_v(0, &resp);
        assert_eq!(&bytes[..], &expected[..]);
        let (_, got) = decode_response(ApiKey::DescribeCluster, bytes).unwrap();
        assert_eq!(got, resp);
        // `alive` is 0 or 1; anything else is malformed.
        let mut bad = expected.clone();
        let last = bad.len() - 1;
        bad[last] = 2;
        let e = decode_response(ApiKey::DescribeCluster, Bytes::from(bad)).unwrap_err();
        assert!(matches!(
            e,
            ProtocolError::InvalidValue {
                what: "alive",
                value: 2
            }
        ));
        // A broker count beyond the bytes left is refused before allocating.
        let mut lying = expected[..23].to_vec();
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        lying.extend_from_slice(&[0; 20]);
        let e = decode_response(ApiKey::DescribeCluster, Bytes::from(lying)).unwrap_err();
        assert!(
            matches!(
                e,
                ProtocolError::CountTooLarge {
                    what: "brokers",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn find_coordinator_has_the_documented_layout() {
        let req = Request::FindCoordinator(FindCoordinatorRequest {
            group_id: "g1".into(),
        });
        let body = payload(&req);
        assert_eq!(&body[..2], &[0, 17]);
        // Header: key, version, correlation id, client id "c"; then the group id.
        assert_eq!(&body[11..], &[0, 2, b'g', b'1']);
        let (_, got) = decode_request(body.clone()).unwrap();
        assert_eq!(got, req);
        // A trailing byte after the group id is malformed.
        let mut longer = body.to_vec();
        longer.push(0);
        let e = decode_request(Bytes::from(longer)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        // A group id length beyond the bytes left is refused.
        let mut lying = body[..11].to_vec();
        lying.extend_from_slice(&[0xff, 0xfe, b'g']);
        let e = decode_request(Bytes::from(lying)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(matches!(e.source, ProtocolError::Truncated { .. }), "{e:?}");

        let resp = Response::FindCoordinator(FindCoordinatorResponse {
            error: ErrorCode::None,
            node_id: 3,
            host: "h".into(),
            port: 7172,
        });
        let expected: Vec<u8> = [
            &[0, 0, 0, 3, 0, 0][..],
            &[0, 0],       // error
            &[0, 0, 0, 3], // node_id
            &[0, 1, b'h'], // host
            &[0x1c, 0x04], // port 7172
        ]
        .concat();
        let bytes = encode_v(0, &resp);
        assert_eq!(&bytes[..], &expected[..]);
        let (_, got) = decode_response(ApiKey::FindCoordinator, bytes.clone()).unwrap();
        assert_eq!(got, resp);
        // Truncated anywhere: an error, never a panic.
        for n in 0..bytes.len() {
            assert!(decode_response(ApiKey::FindCoordinator, bytes.slice(..n)).is_err());
        }
        let err = Response::FindCoordinator(FindCoordinatorResponse {
            error: ErrorCode::NotCoordinator,
            node_id: NO_COORDINATOR,
            host: String::new(),
            port: 0,
        });
        let bytes = encode_v(0, &err);
        assert_eq!(
            &bytes[6..],
            &[0, 34, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            "error, node -1, empty host, port 0"
        );
        assert_eq!(ApiKey::FindCoordinator.negotiate(SUPPORTED_APIS), Some(0));
        assert!(!ApiKey::FindCoordinator.is_group_api());
    }

    #[test]
    fn create_partitions_and_alter_configs_have_the_documented_layout() {
        let req = Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: "t".into(),
                count: 5,
            }],
        });
        let body = payload(&req).slice(11..);
        let expected: Vec<u8> = [&[0, 0, 0, 1][..], &[0, 1, b't'], &[0, 0, 0, 5]].concat();
        assert_eq!(&body[..], &expected[..]);
        let req = Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: "t".into(),
                changes: vec![ConfigChange::set("k", "v"), ConfigChange::delete("d")],
            }],
        });
        let p = payload(&req);
        assert_eq!(&p[..2], &[0, 19]);
        let expected: Vec<u8> = [
            &[0, 0, 0, 1][..],
            &[0, 1, b't'],
            &[0, 0, 0, 2],
            &[0, 1, b'k', 0, 1, b'v'],
            &[0, 1, b'd', 0xff, 0xff],
        ]
        .concat();
        assert_eq!(&p.slice(11..)[..], &expected[..]);
        assert_eq!(decode_request(p).unwrap().1, req);
        // The responses are CreateTopics' `array<TopicResult>`.
        for key in [ApiKey::CreatePartitions, ApiKey::AlterConfigs] {
            let results = vec![TopicResult {
                name: "t".into(),
                error: ErrorCode::InvalidConfig,
                message: "m".into(),
            }];
            let resp = match key {
                ApiKey::CreatePartitions => Response::CreatePartitions(CreatePartitionsResponse {
                    topics: results.clone(),
                }),
                _ => Response::AlterConfigs(AlterConfigsResponse {
                    topics: results.clone(),
                }),
            };
            let create = Response::CreateTopics(CreateTopicsResponse { topics: results });
            let bytes = encode_v(0, &resp);
            assert_eq!(bytes, encode_v(0, &create), "{key}");
            assert_eq!(decode_response(key, bytes).unwrap().1, resp);
        }
    }

    #[test]
    fn alter_configs_counts_entries_and_refuses_repeats_and_lying_counts() {
        let limits = RequestLimits { max_partitions: 4 };
        let alter = |topics: &[(&str, usize)]| {
            Request::AlterConfigs(AlterConfigsRequest {
                topics: topics
                    .iter()
                    .map(|(name, n)| AlterConfigsTopic {
                        name: name.to_string(),
                        changes: (0..*n)
                            .map(|i| ConfigChange::delete(format!("k{i}")))
                            .collect(),
                    })
                    .collect(),
            })
        };
        let dec = |r: &Request| decode_request_with_limits(payload(r), &limits);
        assert!(
            dec(&alter(&[("a", 3)])).is_ok(),
            "one for the topic, three changes"
        );
        assert!(dec(&alter(&[("a", 4)])).is_err());
        assert!(dec(&alter(&[("a", 1), ("b", 1)])).is_ok());
        assert!(dec(&alter(&[("a", 1), ("b", 2)])).is_err());
        let grow = |n: usize| {
            Request::CreatePartitions(CreatePartitionsRequest {
                topics: (0..n)
                    .map(|i| CreatePartitionsTopic {
                        name: format!("t{i}"),
                        count: 2,
                    })
                    .collect(),
            })
        };
        assert!(dec(&grow(4)).is_ok());
        assert!(dec(&grow(5)).is_err());
        // A key twice in one topic, or a topic twice.
        let twice = Request::AlterConfigs(AlterConfigsRequest {
            topics: vec![AlterConfigsTopic {
                name: "a".into(),
                changes: vec![ConfigChange::set("k", "1"), ConfigChange::delete("k")],
            }],
        });
        let e = decode_request(payload(&twice)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(matches!(
            e.source,
            ProtocolError::Duplicate { what: "config key" }
        ));
        let e = decode_request(payload(&alter(&[("a", 0), ("a", 1)]))).unwrap_err();
        assert!(matches!(
            e.source,
            ProtocolError::Duplicate { what: "topic" }
        ));
        // The same key in two topics is fine.
        assert!(decode_request(payload(&alter(&[("a", 2), ("b", 2)]))).is_ok());
        // An invalid topic name is INVALID_TOPIC, as everywhere.
        let bad = Request::CreatePartitions(CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: "a/b".into(),
                count: 2,
            }],
        });
        assert_eq!(
            decode_request(payload(&bad)).unwrap_err().code,
            ErrorCode::InvalidTopic
        );
        // Lying counts (topics, then changes) are refused before allocating.
        for key in [ApiKey::CreatePartitions, ApiKey::AlterConfigs] {
            let mut b = header_bytes(key as u16, 0, 1);
            b.extend_from_slice(&u32::MAX.to_be_bytes());
            b.extend_from_slice(&[0; 16]);
            let e = decode_request(b.freeze()).unwrap_err();
            assert!(
                matches!(
                    e.source,
                    ProtocolError::CountTooLarge { what: "topics", .. }
                ),
                "{key}: {e:?}"
            );
        }
        let mut b = header_bytes(ApiKey::AlterConfigs as u16, 0, 1);
        b.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't']);
        b.extend_from_slice(&0x00ff_ffffu32.to_be_bytes());
        b.extend_from_slice(&[0; 16]);
        let e = decode_request(b.freeze()).unwrap_err();
        assert!(
            matches!(
                e.source,
                ProtocolError::CountTooLarge {
                    what: "changes",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn replica_lists_and_racks_are_bounded() {
        // A replicas count far beyond the bytes left is refused before allocating.
        let full = Response::Metadata(cluster_metadata());
        let bytes = encode_v(1, &full).to_vec();
        let replicas_at = bytes
            .windows(12)
            .position(|w| w == [0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1])
            .expect("replicas [2, 1] in the body");
        let mut lying = bytes.clone();
        lying[replicas_at..replicas_at + 4].copy_from_slice(&(1u32 << 30).to_be_bytes());
        let e = decode_response_version(ApiKey::Metadata, 1, Bytes::from(lying)).unwrap_err();
        assert!(
            matches!(
                e,
                ProtocolError::CountTooLarge {
                    what: "replicas",
                    ..
                }
            ),
            "{e:?}"
        );
        // A rack of 65,534 bytes survives; a longer one is cut (0xFFFF means null).
        let mut m = cluster_metadata();
        m.brokers[0].rack = Some("r".repeat(70_000));
        let (_, got) =
            decode_response_version(ApiKey::Metadata, 1, encode_v(1, &Response::Metadata(m)))
                .unwrap();
        let Response::Metadata(got) = got else {
            panic!("not metadata")
        };
        assert_eq!(got.brokers[0].rack.as_deref().map(str::len), Some(65_534));
        // Truncated anywhere: an error, never a panic.
        let bytes = encode_v(1, &full);
        for n in 0..bytes.len() {
            assert!(decode_response_version(ApiKey::Metadata, 1, bytes.slice(..n)).is_err());
        }
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let broker = |max| {
            vec![ApiVersionRange {
                api_key: ApiKey::Metadata as u16,
                min_version: 0,
                max_version: max,
            }]
        };
        assert_eq!(ApiKey::Metadata.negotiate(&broker(0)), Some(0));
        assert_eq!(ApiKey::Metadata.negotiate(&broker(1)), Some(1));
        assert_eq!(ApiKey::Metadata.negotiate(&broker(9)), Some(1));
        assert_eq!(ApiKey::CreateTopics.negotiate(&broker(1)), None);
        assert_eq!(ApiKey::DescribeCluster.negotiate(SUPPORTED_APIS), Some(0));
        assert_eq!(ApiKey::CreateTopics.negotiate(SUPPORTED_APIS), Some(1));
    }

    #[test]
    fn sasl_bodies_have_the_documented_layout() {
        // SaslHandshake request: header, then `mechanism string`.
        let req = Request::SaslHandshake(SaslHandshakeRequest {
            mechanism: "PLAIN".into(),
        });
        let p = payload(&req);
        let header_len = 2 + 2 + 4 + 2 + 1; // client id "c"
        assert_eq!(&p[header_len..], b"\x00\x05PLAIN");
        // SaslAuthenticate response: error u16, error_message string, auth_bytes bytes.
        let resp = Response::SaslAuthenticate(SaslAuthenticateResponse {
            error: ErrorCode::SaslAuthenticationFailed,
            error_message: "no".into(),
            auth_bytes: Bytes::from_static(b"xy"),
        });
        let mut b = BytesMut::new();
        encode_response(5, &resp, &mut b);
        assert_eq!(
            &b[..],
            &[
                0, 0, 0, 18, // length
                0, 0, 0, 5, // correlation id
                0, 0, // header error NONE
                0, 41, // SASL_AUTHENTICATION_FAILED
                0, 2, b'n', b'o', // error_message
                0, 0, 0, 2, b'x', b'y', // auth_bytes
            ]
        );
    }

    #[test]
    fn security_bodies_refuse_bad_codes_lying_counts_and_odd_rates() {
        let header = |key: ApiKey| header_bytes(key as u16, 0, 1);
        let decode = |b: BytesMut| decode_request(b.freeze());
        // A count of a billion ACLs with nothing behind it: refused before allocating.
        for key in [
            ApiKey::CreateAcls,
            ApiKey::DeleteAcls,
            ApiKey::AlterQuotas,
            ApiKey::DescribeUsers,
            ApiKey::AlterUserScramCredentials,
        ] {
            let mut b = header(key);
            b.put_u32(1_000_000_000);
            let e = decode(b).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{key}");
            assert!(
                matches!(e.source, ProtocolError::CountTooLarge { .. }),
                "{key}: {:?}",
                e.source
            );
        }
        // Mechanism 3 does not exist (0 is only valid in a deletion).
        let mut b = header(ApiKey::AlterUserScramCredentials);
        b.put_u32(1);
        b.put_u16(1);
        b.put_u8(b'a');
        b.put_u8(0);
        b.put_u32(4096);
        b.put_u32(0);
        b.put_u32(0);
        b.put_u32(0);
        assert!(decode(b).is_err());
        let mut b = header(ApiKey::AlterUserScramCredentials);
        b.put_u32(0);
        b.put_u32(1);
        b.put_u16(1);
        b.put_u8(b'a');
        b.put_u8(3);
        assert!(decode(b).is_err());
        // A NaN or infinite rate is malformed; so is an entity part tag of 3.
        for rate in [f64::NAN, f64::INFINITY] {
            let mut b = header(ApiKey::AlterQuotas);
            b.put_u32(1);
            b.put_u8(1); // user = default
            b.put_u8(0); // no client id
            b.put_u8(1);
            b.put_f64(rate);
            b.put_u8(0);
            b.put_u8(0);
            assert_eq!(decode(b).unwrap_err().code, ErrorCode::InvalidRequest);
        }
        let mut b = header(ApiKey::AlterQuotas);
        b.put_u32(1);
        b.put_u8(3);
        b.put_u8(0);
        b.put_slice(&[0, 0, 0]);
        assert_eq!(decode(b).unwrap_err().code, ErrorCode::InvalidRequest);
        // Entries count against the request's cap.
        let creations = vec![sample_acl(); 3];
        let p = payload(&Request::CreateAcls(CreateAclsRequest { creations }));
        let limits = RequestLimits { max_partitions: 2 };
        let e = decode_request_with_limits(p, &limits).unwrap_err();
        assert!(matches!(e.source, ProtocolError::TooManyEntries { .. }));
        // A user named twice in DescribeUsers.
        let p = payload(&Request::DescribeUsers(DescribeUsersRequest {
            users: vec!["a".into(), "a".into()],
        }));
        assert!(decode_request(p).is_err());
    }
}
