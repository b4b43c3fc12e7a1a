//! Allocation accounting with a counting global allocator (per thread, so
//! parallel tests do not disturb each other): iterating records allocates
//! nothing, the builder does not allocate per record, and decoders fed
//! arbitrary bytes never allocate more than a small multiple of their input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use sluice_protocol::batch::{
    validate, validate_header, validate_records, RecordBatch, RecordBatchBuilder,
};
use sluice_protocol::{decode_request, decode_response_version, ApiKey, FrameCodec};
use tokio_util::codec::Decoder;

struct Counting;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-local may be gone while a thread is being torn down.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + size));
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

// SAFETY: forwards every call unchanged to the system allocator; the counters
// are const-initialised thread-locals of `Cell<usize>`, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocation count, total bytes requested, largest single request) while running `f`.
fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize, usize) {
    COUNT.with(|c| c.set(0));
    BYTES.with(|c| c.set(0));
    LARGEST.with(|c| c.set(0));
    let r = f();
    (
        r,
        COUNT.with(Cell::get),
        BYTES.with(Cell::get),
        LARGEST.with(Cell::get),
    )
}

fn big_batch() -> Bytes {
    let mut b = RecordBatchBuilder::with_capacity(128 * 1024);
    let value = vec![0x5a; 1000];
    for i in 0..100i64 {
        let key = i.to_be_bytes();
        b.push(
            1_700_000_000_000 + i,
            Some(&key),
            Some(&value),
            &[("h", b"v")],
        );
    }
    b.finish()
}

#[test]
fn iterating_records_and_headers_allocates_nothing() {
    let bytes = big_batch();
    let batch = RecordBatch::parse(&bytes).unwrap();
    let (sum, count, _, _) = measure(|| {
        let mut sum = 0usize;
        for r in batch.records() {
            let r = r.unwrap();
            sum += r.value.map_or(0, <[u8]>::len) + r.key.map_or(0, <[u8]>::len);
            for h in r.headers() {
                let (k, v) = h.unwrap();
                sum += k.len() + v.map_or(0, <[u8]>::len);
            }
        }
        sum
    });
    assert_eq!(sum, 100 * (1000 + 8 + 2));
    assert_eq!(count, 0, "record iteration allocated");
    let (_, count, _, _) = measure(|| validate(&bytes).unwrap());
    assert_eq!(count, 0, "validate allocated");
    // The split halves of validation: storage's header check and the record walk.
    let (_, count, _, _) = measure(|| validate_header(&bytes).unwrap());
    assert_eq!(count, 0, "validate_header allocated");
    let (_, count, _, _) = measure(|| validate_records(&bytes, 1 << 20).unwrap());
    assert_eq!(
        count, 0,
        "validate_records allocated on an uncompressed batch"
    );
}

#[test]
fn compressed_validation_allocates_about_the_decompressed_size() {
    let plain = big_batch();
    let mut b = RecordBatchBuilder::with_capacity(128 * 1024);
    b.set_compression(sluice_protocol::batch::Compression::Lz4);
    let batch = RecordBatch::parse(&plain).unwrap();
    for r in batch.records() {
        let r = r.unwrap();
        let hs: Vec<(&str, &[u8])> = r.headers().map(|h| (h.unwrap().0, &b"v"[..])).collect();
        b.push(r.timestamp, r.key, r.value, &hs);
    }
    let lz4 = b.finish();
    assert!(
        lz4.len() < plain.len() / 4,
        "test data should compress well"
    );
    let (_, _, _, largest) = measure(|| validate_records(&lz4, 1 << 20).unwrap());
    assert!(
        largest <= 4 * plain.len() + 256 * 1024,
        "largest allocation {largest} bytes to validate a batch of {} bytes decompressed",
        plain.len()
    );
}

#[test]
fn builder_does_not_allocate_per_record() {
    let value = vec![1u8; 1000];
    let mut b = RecordBatchBuilder::with_capacity(128 * 1024);
    // Warm up: the first batch sizes the buffer.
    for _ in 0..100 {
        b.push(1, Some(b"key"), Some(&value), &[]);
    }
    drop(b.finish());
    let (_, count, _, _) = measure(|| {
        for i in 0..100 {
            b.push(i, Some(b"key"), Some(&value), &[("a", b"b")]);
        }
    });
    assert_eq!(count, 0, "push allocated with a warm builder");
    // Reusing the builder after finish costs at most one buffer allocation, never one per record.
    let (_, count, _, _) = measure(|| {
        let batch = b.finish();
        for i in 0..100 {
            b.push(i, Some(b"key"), Some(&value), &[]);
        }
        batch
    });
    assert!(count <= 2, "{count} allocations for a reused builder");
}

/// A decoder may allocate owned strings and vectors, but never more than a
/// small constant factor of the bytes it was given (untrusted counts cannot
/// drive `Vec::with_capacity`).
const ALLOC_FACTOR: usize = 32;
const ALLOC_SLACK: usize = 4096;

fn check_bounded(input: &[u8]) {
    let n = input.len();
    let payload = Bytes::copy_from_slice(input);
    let (_, _, total, largest) = measure(|| drop(decode_request(payload.clone())));
    assert!(
        largest <= n + 256,
        "decode_request: single allocation {largest} for {n} input bytes"
    );
    assert!(
        total <= ALLOC_FACTOR * n + ALLOC_SLACK,
        "decode_request: {total} bytes for {n}"
    );
    for key in ApiKey::ALL {
        let Some(versions) = key.wire_versions() else {
            continue;
        };
        for version in versions.min_version..=versions.max_version {
            let (_, _, total, largest) =
                measure(|| drop(decode_response_version(*key, version, payload.clone())));
            assert!(
                largest <= ALLOC_FACTOR * n + ALLOC_SLACK,
                "{key} v{version}: single allocation {largest} for {n}"
            );
            assert!(
                total <= ALLOC_FACTOR * n + ALLOC_SLACK,
                "{key} v{version}: {total} bytes for {n}"
            );
        }
    }
    let mut src = BytesMut::from(input);
    let (_, _, total, _) = measure(|| {
        let mut codec = FrameCodec::new(1 << 20);
        while let Ok(Some(_)) = codec.decode(&mut src) {}
    });
    // The codec may reserve up to one declared (<= max) frame, never more.
    assert!(total <= (1 << 20) + 8, "codec reserved {total}");
}

/// Header of a request/response with a large array count right after it.
fn lying_counts() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for key in ApiKey::ALL.iter().map(|k| *k as u16) {
        let mut req = Vec::new();
        req.extend_from_slice(&key.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&1u32.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        // Some apis have fixed fields (empty strings are 2 zero bytes) before
        // the first array; pad so the count lands on it.
        let pad = match key {
            4 => 5,      // Produce: acks, timeout_ms
            5 => 12,     // Fetch: max_wait_ms, min_bytes, max_bytes
            7 => 4,      // JoinGroup: group_id, member_id
            8 | 10 => 8, // Heartbeat, OffsetCommit: group_id, member_id, generation
            11 => 2,     // OffsetFetch: group_id
            _ => 0,
        };
        req.extend(std::iter::repeat_n(0u8, pad));
        req.extend_from_slice(&0x00ff_ffffu32.to_be_bytes());
        req.extend(std::iter::repeat_n(0u8, 64));
        out.push(req);
    }
    // AlterConfigs: a lying change count inside the first topic.
    let mut req = Vec::new();
    req.extend_from_slice(&(ApiKey::AlterConfigs as u16).to_be_bytes());
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&1u32.to_be_bytes());
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't']);
    req.extend_from_slice(&0x00ff_ffffu32.to_be_bytes());
    req.extend(std::iter::repeat_n(0u8, 64));
    out.push(req);
    // Response bodies: the first array right after the header (most apis),
    // after an error code (OffsetFetch), or after error + generation +
    // interval (Heartbeat) / error + member_id + generation + interval (JoinGroup).
    for pad in [0usize, 2, 10, 12] {
        let mut resp = Vec::new();
        resp.extend_from_slice(&1u32.to_be_bytes());
        resp.extend_from_slice(&0u16.to_be_bytes());
        resp.extend(std::iter::repeat_n(0u8, pad));
        resp.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
        resp.extend(std::iter::repeat_n(0u8, 64));
        out.push(resp);
    }
    out
}

#[test]
fn lying_array_counts_allocate_little() {
    for input in lying_counts() {
        check_bounded(&input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoders_allocate_in_proportion_to_input(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_bounded(&input);
    }
}
