//! Bounded cost per request (issue 9, item 1): for every api, the worst
//! requests we can build (the entry cap reached with the smallest entries,
//! 249-byte names, duplicates, empty and oversized names, counts over the cap)
//! cost at most a few times their frame size in memory, measured with a
//! counting global allocator over decode + dispatch + the deferred answer +
//! encode, exactly as a connection runs them. A proptest throws random
//! hostile requests at the same path and checks the same bound and that
//! nothing panics.
//!
//! The bound: the peak of live bytes (what a request can pin) is at most
//! `PEAK_FACTOR × frame + PEAK_PER_ENTRY × max_request_partitions + SLACK`,
//! and all bytes allocated (allocator work) at most
//! `TOTAL_FACTOR × frame + TOTAL_PER_ENTRY × max_request_partitions + SLACK`.
//! The factors cover names and strings (decoded once, echoed in the answer,
//! encoded into a buffer that grows by doubling); the per-entry term covers
//! the fixed-size structures of each listed partition (a 4-byte partition
//! entry on the wire becomes a request, a result and a response struct):
//! with the default cap of 10,000 entries it is 2.5 MiB, small beside the
//! 64 MiB default frame limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use sluice_broker::group::Groups;
use sluice_broker::handler::{dispatch, Context, Outcome};
use sluice_broker::{Broker, ConfigLayer, Metrics};
use sluice_group::{CoordinatorConfig, JoinRequest};
use sluice_protocol::batch::RecordBatchBuilder;
use sluice_protocol::wire::{decode_request_with_limits, decode_response, encode_response};
use sluice_protocol::*;
use tokio_util::sync::CancellationToken;

// ----------------------------------------------------------------------------
// Counting allocator: every test takes LOCK, so one runs at a time, and only
// allocations made on the measuring thread while it measures are counted
// (threads left over from other tests, such as the log's background pool or
// a runtime's workers, may allocate at any time).
// ----------------------------------------------------------------------------

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn measuring() -> bool {
    MEASURING.try_with(|m| m.get()).unwrap_or(false)
}

fn grew(size: usize) {
    if !measuring() {
        return;
    }
    let now = LIVE.fetch_add(size as isize, Ordering::Relaxed) + size as isize;
    PEAK.fetch_max(now, Ordering::Relaxed);
    TOTAL.fetch_add(size, Ordering::Relaxed);
}

fn shrank(size: usize) {
    if !measuring() {
        return;
    }
    LIVE.fetch_sub(size as isize, Ordering::Relaxed);
}

// SAFETY: forwards every call unchanged to the system allocator; the counters
// are atomics, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The default entry cap (what a broker with default settings applies).
const CAP: usize = DEFAULT_MAX_REQUEST_PARTITIONS;

const PEAK_FACTOR: usize = 8;
const PEAK_PER_ENTRY: usize = 256;
const TOTAL_FACTOR: usize = 16;
const TOTAL_PER_ENTRY: usize = 512;
const SLACK: usize = 256 * 1024;
const PEAK_BOUND_FIXED: usize = PEAK_PER_ENTRY * CAP + SLACK;
const TOTAL_BOUND_FIXED: usize = TOTAL_PER_ENTRY * CAP + SLACK;

// ----------------------------------------------------------------------------
// A broker in a temp dir, driven like a connection drives it
// ----------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: Context,
    rt: tokio::runtime::Runtime,
    /// A live member of group "g" (subscribed to "t").
    member: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigLayer {
        data_dir: Some(dir.path().to_path_buf()),
        segment_bytes: Some(1 << 20),
        ..ConfigLayer::default()
    }
    .resolve()
    .unwrap();
    let broker = Arc::new(Broker::open(&cfg, Metrics::new()).unwrap());
    let groups = Groups::open(
        dir.path(),
        Arc::clone(&broker),
        CoordinatorConfig::default(),
        1,
    )
    .unwrap();
    broker.create_topic("t", 4, &[]).unwrap();
    let mut b = RecordBatchBuilder::new();
    b.push(1_700_000_000_000, None, Some(b"v"), &[]);
    broker
        .append("t", 0, &b.finish(), sluice_broker::Acks::Leader)
        .expect("append");
    let member = groups
        .join(
            "g",
            JoinRequest {
                client_id: "c".into(),
                topics: vec!["t".into()],
                ..JoinRequest::default()
            },
        )
        .unwrap()
        .member_id;
    let ctx = Context {
        broker,
        groups,
        local_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        shutdown: CancellationToken::new(),
        conn: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Fixture {
        _dir: dir,
        ctx,
        rt,
        member,
    }
}

/// What one request cost.
#[derive(Debug)]
struct Cost {
    frame: usize,
    peak: usize,
    total: usize,
    /// The header error code, or the first error found in the body.
    answer: Option<Response>,
}

impl Fixture {
    /// Runs one frame payload (no length prefix) as a connection would:
    /// decode with the broker's limits, dispatch, await a deferred answer,
    /// encode. Returns what it cost (the payload itself is not counted).
    fn run(&self, payload: Bytes) -> Cost {
        let frame = payload.len();
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        TOTAL.store(0, Ordering::Relaxed);
        MEASURING.with(|m| m.set(true));
        let response = self.rt.block_on(async {
            let (cid, response) =
                match decode_request_with_limits(payload, self.ctx.broker.request_limits()) {
                    Ok((header, request)) => {
                        let r = match dispatch(&self.ctx, &header, request) {
                            Outcome::Respond(r) => Some(r),
                            Outcome::NoResponse => None,
                            Outcome::Deferred(f) => f.await,
                        };
                        (header.correlation_id, r)
                    }
                    Err(e) => (
                        e.header.as_ref().map_or(0, |h| h.correlation_id),
                        Some(Response::Error(e.code)),
                    ),
                };
            let mut out = BytesMut::new();
            if let Some(r) = &response {
                encode_response(cid, r, &mut out);
            }
            (response, out.freeze())
        });
        MEASURING.with(|m| m.set(false));
        let peak = (PEAK.load(Ordering::Relaxed) - base).max(0) as usize;
        let total = TOTAL.load(Ordering::Relaxed);
        let (response, encoded) = response;
        // The encoded answer decodes (what a client would read).
        if let Some(r) = &response {
            if let Some(key) = r.api_key() {
                decode_response(key, encoded.slice(4..)).expect("the answer decodes");
            }
        }
        Cost {
            frame,
            peak,
            total,
            answer: response,
        }
    }

    /// Encodes `request` and runs it.
    fn run_request(&self, request: &Request) -> Cost {
        let mut b = BytesMut::new();
        wire::encode_request(7, "cost", request, &mut b);
        self.run(b.freeze().slice(4..))
    }
}

fn check(what: &str, c: &Cost) {
    if std::env::var_os("SHOW_COST").is_some() {
        eprintln!(
            "{what}: frame {} peak {} total {}",
            c.frame, c.peak, c.total
        );
    }
    assert!(
        c.peak <= PEAK_FACTOR * c.frame + PEAK_BOUND_FIXED,
        "{what}: peak {} bytes for a {}-byte frame",
        c.peak,
        c.frame
    );
    assert!(
        c.total <= TOTAL_FACTOR * c.frame + TOTAL_BOUND_FIXED,
        "{what}: {} bytes allocated for a {}-byte frame",
        c.total,
        c.frame
    );
}

fn header_error(c: &Cost) -> Option<ErrorCode> {
    match &c.answer {
        Some(Response::Error(code)) => Some(*code),
        _ => None,
    }
}

/// `n` distinct valid topic names of `len` bytes (len >= 4).
fn names(n: usize, len: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut s = format!("{i:x}-");
            while s.len() < len {
                s.push('x');
            }
            s
        })
        .collect()
}

fn long_name() -> String {
    "n".repeat(MAX_TOPIC_NAME_BYTES)
}

/// A raw request payload: header for `key`, then `body`.
fn raw(key: ApiKey, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u16(key as u16);
    b.put_u16(0);
    b.put_u32(9);
    b.put_u16(4);
    b.put_slice(b"cost");
    body(&mut b);
    b.freeze()
}

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u16(s.len() as u16);
    b.put_slice(s);
}

/// One topic with `parts` partitions (`entry` writes each partition's fields).
fn one_topic(b: &mut BytesMut, name: &[u8], parts: usize, entry: impl Fn(&mut BytesMut, u32)) {
    b.put_u32(1);
    put_str(b, name);
    b.put_u32(parts as u32);
    for i in 0..parts {
        entry(b, i as u32);
    }
}

/// The shapes every topic-partition api is tried with: (label, payload, expected header error).
fn tp_shapes(
    key: ApiKey,
    prefix: impl Fn(&mut BytesMut),
    entry: impl Fn(&mut BytesMut, u32) + Copy,
) -> Vec<(&'static str, Bytes, Option<ErrorCode>)> {
    let long = long_name();
    vec![
        (
            "cap of partitions under a 249-byte name",
            raw(key, |b| {
                prefix(b);
                one_topic(b, long.as_bytes(), CAP, entry);
            }),
            None,
        ),
        (
            "one partition over the cap",
            raw(key, |b| {
                prefix(b);
                one_topic(b, long.as_bytes(), CAP + 1, entry);
            }),
            Some(ErrorCode::InvalidRequest),
        ),
        (
            "the same partition listed many times",
            raw(key, |b| {
                prefix(b);
                one_topic(b, long.as_bytes(), CAP, |b, _| entry(b, 0));
            }),
            Some(ErrorCode::InvalidRequest),
        ),
        (
            "a 65,535-byte name with many partitions",
            raw(key, |b| {
                prefix(b);
                one_topic(b, &[b'a'; 65_535], CAP, entry);
            }),
            Some(ErrorCode::InvalidTopic),
        ),
        (
            "empty names",
            raw(key, |b| {
                prefix(b);
                let n = 100_000u32;
                b.put_u32(n);
                for _ in 0..n {
                    put_str(b, b"");
                    b.put_u32(0);
                }
            }),
            Some(ErrorCode::InvalidRequest),
        ),
        (
            "the cap of topics with one partition each",
            raw(key, |b| {
                prefix(b);
                b.put_u32(CAP as u32);
                for n in names(CAP, 8) {
                    put_str(b, n.as_bytes());
                    b.put_u32(1);
                    entry(b, 0);
                }
            }),
            None,
        ),
    ]
}

fn run_shapes(f: &Fixture, api: &str, shapes: Vec<(&'static str, Bytes, Option<ErrorCode>)>) {
    for (label, payload, expect) in shapes {
        let c = f.run(payload);
        check(&format!("{api}: {label}"), &c);
        assert_eq!(
            header_error(&c),
            expect,
            "{api}: {label}: {:?}",
            c.answer.as_ref().map(std::mem::discriminant)
        );
    }
}

// ----------------------------------------------------------------------------
// One test per api
// ----------------------------------------------------------------------------

#[test]
fn api_versions_list_groups_init_producer_id_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    for r in [
        Request::ApiVersions,
        Request::ListGroups,
        Request::InitProducerId,
        Request::DescribeCluster,
    ] {
        let c = f.run_request(&r);
        check(&format!("{:?}", r.api_key()), &c);
        assert_eq!(header_error(&c), None);
    }
}

#[test]
fn metadata_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let c = f.run_request(&Request::Metadata(MetadataRequest {
        topics: names(CAP, MAX_TOPIC_NAME_BYTES),
    }));
    check("metadata: the cap of 249-byte unknown names", &c);
    let mut repeated = vec!["t".to_string(); CAP];
    repeated[0] = "u".into();
    let c = f.run_request(&Request::Metadata(MetadataRequest { topics: repeated }));
    check("metadata: an existing topic listed many times", &c);
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
    // Millions of empty names: refused by the count cap before any is read.
    let c = f.run(raw(ApiKey::Metadata, |b| {
        b.put_u32(2_000_000);
        b.put_bytes(0, 4_000_000);
    }));
    check("metadata: two million empty names", &c);
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
    let c = f.run(raw(ApiKey::Metadata, |b| {
        b.put_u32(3);
        put_str(b, b"ok");
        put_str(b, b"");
        put_str(b, b"bad/name");
    }));
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidTopic));
}

#[test]
fn create_topics_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    // Partitions 0: every creation fails before touching the disk.
    let c = f.run_request(&Request::CreateTopics(CreateTopicsRequest {
        topics: names(CAP, MAX_TOPIC_NAME_BYTES)
            .into_iter()
            .map(|name| CreateTopic {
                name,
                partitions: 0,
                replication_factor: DEFAULT_REPLICATION_FACTOR,
                configs: Vec::new(),
            })
            .collect(),
    }));
    check("create topics: the cap of topics", &c);
    let c = f.run_request(&Request::CreateTopics(CreateTopicsRequest {
        topics: vec![CreateTopic {
            name: "c".into(),
            partitions: 1,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            configs: vec![(String::new(), String::new()); 1_000_000],
        }],
    }));
    check("create topics: a million empty config pairs", &c);
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
    let c = f.run_request(&Request::CreateTopics(CreateTopicsRequest {
        topics: vec![
            CreateTopic {
                name: "dup".into(),
                partitions: 1,
                replication_factor: DEFAULT_REPLICATION_FACTOR,
                configs: Vec::new(),
            };
            2
        ],
    }));
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
    assert!(
        f.ctx.broker.describe_topic("dup").is_err(),
        "nothing created"
    );
}

#[test]
fn create_partitions_and_alter_configs_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let c = f.run_request(&Request::CreatePartitions(CreatePartitionsRequest {
        topics: names(CAP, MAX_TOPIC_NAME_BYTES)
            .into_iter()
            .map(|name| CreatePartitionsTopic { name, count: 2 })
            .collect(),
    }));
    check("create partitions: the cap of unknown topics", &c);
    let c = f.run_request(&Request::CreatePartitions(CreatePartitionsRequest {
        topics: vec![CreatePartitionsTopic {
            name: "t".into(),
            count: 5,
        }],
    }));
    check("create partitions: one more partition", &c);
    assert_eq!(
        f.ctx.broker.describe_topic("t").unwrap().partitions.len(),
        5
    );
    let c = f.run_request(&Request::AlterConfigs(AlterConfigsRequest {
        topics: names(CAP, MAX_TOPIC_NAME_BYTES)
            .into_iter()
            .map(|name| AlterConfigsTopic {
                name,
                changes: Vec::new(),
            })
            .collect(),
    }));
    check("alter configs: the cap of unknown topics", &c);
    let c = f.run_request(&Request::AlterConfigs(AlterConfigsRequest {
        topics: vec![AlterConfigsTopic {
            name: "t".into(),
            changes: (0..CAP - 1)
                .map(|i| ConfigChange::set(format!("{i}-{}", "k".repeat(200)), "v".repeat(200)))
                .collect(),
        }],
    }));
    check("alter configs: the cap of long unknown keys", &c);
    let c = f.run_request(&Request::AlterConfigs(AlterConfigsRequest {
        topics: vec![AlterConfigsTopic {
            name: "t".into(),
            changes: (0..1_000_000)
                .map(|i| ConfigChange::delete(i.to_string()))
                .collect(),
        }],
    }));
    check("alter configs: a million deletions", &c);
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
}

#[test]
fn delete_topics_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let c = f.run_request(&Request::DeleteTopics(DeleteTopicsRequest {
        topics: names(CAP, MAX_TOPIC_NAME_BYTES),
    }));
    check("delete topics: the cap of unknown names", &c);
    let c = f.run_request(&Request::DeleteTopics(DeleteTopicsRequest {
        topics: vec!["x".repeat(60_000)],
    }));
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidTopic));
}

#[test]
fn produce_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    // Empty partitions (each used to carry an error with its own copy of the name).
    let shapes = tp_shapes(
        ApiKey::Produce,
        |b| {
            b.put_u8(1);
            b.put_u32(1000);
        },
        |b, p| {
            b.put_u32(p);
            b.put_u32(0);
        },
    );
    run_shapes(&f, "produce", shapes);
}

#[test]
fn fetch_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let prefix = |b: &mut BytesMut| {
        b.put_u32(0);
        b.put_u32(1);
        b.put_u32(1 << 20);
    };
    let entry = |b: &mut BytesMut, p: u32| {
        b.put_u32(p);
        b.put_u64(0);
        b.put_u32(1 << 20);
    };
    run_shapes(&f, "fetch", tp_shapes(ApiKey::Fetch, prefix, entry));
    // An existing topic: its data is read once, not once per repeat.
    let c = f.run(raw(ApiKey::Fetch, |b| {
        prefix(b);
        one_topic(b, b"t", 4, entry);
    }));
    check("fetch: existing partitions", &c);
    assert_eq!(header_error(&c), None);
}

#[test]
fn list_offsets_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let entry = |b: &mut BytesMut, p: u32| {
        b.put_u32(p);
        b.put_i64(-1);
    };
    run_shapes(
        &f,
        "list offsets",
        tp_shapes(ApiKey::ListOffsets, |_| {}, entry),
    );
}

#[test]
fn join_group_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let c = f.run_request(&Request::JoinGroup(JoinGroupRequest {
        group_id: "j".into(),
        member_id: String::new(),
        topics: names(CAP, MAX_TOPIC_NAME_BYTES),
        session_timeout_ms: 0,
        rebalance_timeout_ms: 0,
        metadata: Bytes::new(),
    }));
    check("join group: the cap of subscriptions", &c);
    let c = f.run_request(&Request::JoinGroup(JoinGroupRequest {
        group_id: "j".into(),
        member_id: String::new(),
        topics: vec![String::new(); 1_000_000],
        session_timeout_ms: 0,
        rebalance_timeout_ms: 0,
        metadata: Bytes::new(),
    }));
    check("join group: a million empty subscriptions", &c);
    assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
}

#[test]
fn heartbeat_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let member = f.member.clone();
    let prefix = |b: &mut BytesMut| {
        put_str(b, b"g");
        put_str(b, member.as_bytes());
        b.put_u32(0);
    };
    // Partitions the member does not own, under a long name: refused as a
    // stale view after expanding at most one pair more than it owns.
    let shapes = tp_shapes(ApiKey::Heartbeat, prefix, |b, p| b.put_u32(p))
        .into_iter()
        .map(|(label, payload, expect)| {
            let mut b = BytesMut::from(&payload[..]);
            b.put_u32(0); // max_wait_ms
            (label, b.freeze(), expect)
        })
        .collect();
    run_shapes(&f, "heartbeat", shapes);
    // An unknown member: nothing is expanded.
    let c = f.run_request(&Request::Heartbeat(HeartbeatRequest {
        group_id: "g".into(),
        member_id: "nobody".into(),
        generation: 0,
        owned: vec![TopicPartitions::new(long_name(), (0..CAP as u32).collect())],
        max_wait_ms: 0,
    }));
    check("heartbeat: unknown member", &c);
    match c.answer {
        Some(Response::Heartbeat(r)) => assert_eq!(r.error, ErrorCode::UnknownMemberId),
        other => panic!("{other:?}"),
    }
}

#[test]
fn leave_group_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let c = f.run_request(&Request::LeaveGroup(LeaveGroupRequest {
        group_id: "g".repeat(65_535),
        member_id: "m".repeat(65_535),
    }));
    check("leave group: longest ids", &c);
}

#[test]
fn offset_commit_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let member = f.member.clone();
    let prefix = |b: &mut BytesMut| {
        put_str(b, b"g");
        put_str(b, member.as_bytes());
        b.put_u32(1);
    };
    let entry = |b: &mut BytesMut, p: u32| {
        b.put_u32(p);
        b.put_i64(5);
        put_str(b, b"");
    };
    run_shapes(
        &f,
        "offset commit",
        tp_shapes(ApiKey::OffsetCommit, prefix, entry),
    );
}

#[test]
fn offset_fetch_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    let shapes = tp_shapes(
        ApiKey::OffsetFetch,
        |b| put_str(b, b"g"),
        |b, p| b.put_u32(p),
    );
    run_shapes(&f, "offset fetch", shapes);
    // Whole topics (no partitions listed): the cap of them.
    let c = f.run_request(&Request::OffsetFetch(OffsetFetchRequest {
        group_id: "g".into(),
        topics: names(CAP, MAX_TOPIC_NAME_BYTES)
            .into_iter()
            .map(|n| TopicPartitions::new(n, vec![]))
            .collect(),
    }));
    check("offset fetch: the cap of whole topics", &c);
    assert_eq!(header_error(&c), None);
}

#[test]
fn describe_and_delete_groups_cost_is_bounded() {
    let _g = serial();
    let f = fixture();
    for key in [ApiKey::DescribeGroups, ApiKey::DeleteGroups] {
        let ids: Vec<String> = names(CAP, 200);
        let r = match key {
            ApiKey::DescribeGroups => {
                Request::DescribeGroups(DescribeGroupsRequest { group_ids: ids })
            }
            _ => Request::DeleteGroups(DeleteGroupsRequest { group_ids: ids }),
        };
        let c = f.run_request(&r);
        check(&format!("{key}: the cap of group ids"), &c);
        assert_eq!(header_error(&c), None);
        // The live group, listed many times: refused, not described again and again.
        let c = f.run(raw(key, |b| {
            b.put_u32(CAP as u32);
            for _ in 0..CAP {
                put_str(b, b"g");
            }
        }));
        check(&format!("{key}: one group many times"), &c);
        assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
        let c = f.run(raw(key, |b| {
            b.put_u32(2_000_000);
            b.put_bytes(0, 4_000_000);
        }));
        check(&format!("{key}: two million empty ids"), &c);
        assert_eq!(header_error(&c), Some(ErrorCode::InvalidRequest));
    }
}

#[test]
fn the_entry_cap_is_the_configured_setting() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigLayer {
        data_dir: Some(dir.path().to_path_buf()),
        max_request_partitions: Some(3),
        ..ConfigLayer::default()
    }
    .resolve()
    .unwrap();
    let broker = Broker::open(&cfg, Metrics::new()).unwrap();
    let req = |n: u32| {
        let mut b = BytesMut::new();
        wire::encode_request(
            1,
            "c",
            &Request::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: "t".into(),
                    partitions: (0..n)
                        .map(|partition| ListOffsetsPartition {
                            partition,
                            spec: OffsetSpec::Latest,
                        })
                        .collect(),
                }],
            }),
            &mut b,
        );
        b.freeze().slice(4..)
    };
    assert!(decode_request_with_limits(req(3), broker.request_limits()).is_ok());
    let e = decode_request_with_limits(req(4), broker.request_limits()).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.header.is_some(), "answered, connection kept");
}

// ----------------------------------------------------------------------------
// Hostile requests at random
// ----------------------------------------------------------------------------

/// A topic name: valid, empty, too long, or with a bad character.
fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,3}",
        Just(String::new()),
        Just(long_name()),
        (250usize..3000).prop_map(|n| "z".repeat(n)),
        "[a-z]{0,4}[/ é*][a-z]{0,4}",
    ]
}

/// Partitions: a random list, with repeats sometimes.
fn hostile_partitions() -> impl Strategy<Value = Vec<u32>> {
    prop_oneof![
        proptest::collection::vec(0u32..8, 0..40),
        (0usize..(CAP + 50)).prop_map(|n| (0..n as u32).collect()),
        (1usize..5000, any::<u32>()).prop_map(|(n, p)| vec![p; n]),
    ]
}

fn hostile_topics() -> impl Strategy<Value = Vec<(String, Vec<u32>)>> {
    prop_oneof![
        proptest::collection::vec((hostile_name(), hostile_partitions()), 0..4),
        (0usize..(CAP + 50), hostile_name()).prop_map(|(n, name)| vec![(name, vec![0]); n]),
    ]
}

fn hostile_request() -> impl Strategy<Value = Request> {
    (0u8..9, hostile_topics(), "[a-z]{0,3}").prop_map(|(api, topics, gid)| {
        let names: Vec<String> = topics.iter().map(|(n, _)| n.clone()).collect();
        match api {
            0 => Request::Metadata(MetadataRequest { topics: names }),
            1 => Request::DeleteTopics(DeleteTopicsRequest { topics: names }),
            2 => Request::Produce(ProduceRequest {
                acks: Acks::Leader,
                timeout_ms: 100,
                topics: topics
                    .into_iter()
                    .map(|(name, ps)| ProduceTopic {
                        name,
                        partitions: ps
                            .into_iter()
                            .map(|partition| ProducePartition {
                                partition,
                                records: Bytes::new(),
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            3 => Request::Fetch(FetchRequest {
                max_wait_ms: 0,
                min_bytes: 1,
                max_bytes: 1 << 20,
                topics: topics
                    .into_iter()
                    .map(|(name, ps)| FetchTopic {
                        name,
                        partitions: ps
                            .into_iter()
                            .map(|partition| FetchPartition {
                                partition,
                                fetch_offset: 0,
                                max_bytes: 1 << 20,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            4 => Request::ListOffsets(ListOffsetsRequest {
                topics: topics
                    .into_iter()
                    .map(|(name, ps)| ListOffsetsTopic {
                        name,
                        partitions: ps
                            .into_iter()
                            .map(|partition| ListOffsetsPartition {
                                partition,
                                spec: OffsetSpec::Earliest,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            5 => Request::Heartbeat(HeartbeatRequest {
                group_id: "g".into(),
                member_id: gid,
                generation: 0,
                owned: topics
                    .into_iter()
                    .map(|(n, p)| TopicPartitions::new(n, p))
                    .collect(),
                max_wait_ms: 0,
            }),
            6 => Request::OffsetCommit(OffsetCommitRequest {
                group_id: "g".into(),
                member_id: String::new(),
                generation: 0,
                topics: topics
                    .into_iter()
                    .map(|(name, ps)| OffsetCommitTopic {
                        name,
                        partitions: ps
                            .into_iter()
                            .map(|partition| OffsetCommitPartition {
                                partition,
                                offset: 1,
                                metadata: String::new(),
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            7 => Request::OffsetFetch(OffsetFetchRequest {
                group_id: "g".into(),
                topics: topics
                    .into_iter()
                    .map(|(n, p)| TopicPartitions::new(n, p))
                    .collect(),
            }),
            _ => Request::DescribeGroups(DescribeGroupsRequest { group_ids: names }),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_cost_a_few_times_their_frame(req in hostile_request()) {
        let _g = serial();
        thread_local! {
            static FIXTURE: Fixture = fixture();
        }
        FIXTURE.with(|f| {
            let c = f.run_request(&req);
            check(&format!("{:?}", req.api_key()), &c);
        });
    }
}
