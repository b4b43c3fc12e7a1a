//! The append hot path allocates nothing; a read allocates at most once (the
//! `Bytes` owner that keeps the mapping alive). Counted with a global
//! allocator that only counts on threads that ask for it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use sluice_log::{FlushPolicy, Log, LogConfig};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards every call unchanged to the system allocator; only adds a
// counter for threads that opted in.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCS.load(Ordering::Relaxed) - before)
}

#[test]
fn append_allocates_nothing_and_read_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            flush: FlushPolicy::Os,
            segment_bytes: 64 << 20,
            preallocate_bytes: 1 << 20,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let batch = make_batch(1, 100, 1000, 0);
    let mut two = batch.to_vec();
    two.extend_from_slice(&batch);
    // Warm up (first reservation, lazy statics in tracing, ...).
    log.append(&batch).unwrap();
    // 200 appends: crosses several 1 MiB reservation steps and index entries.
    let (_, allocs) = counted(|| {
        for _ in 0..100 {
            log.append(&batch).unwrap();
            log.append(&two).unwrap();
        }
    });
    assert_eq!(allocs, 0, "append allocated");
    let end = log.end_offset();
    let (n, allocs) = counted(|| {
        let mut off = 0;
        let mut reads = 0;
        while off < end {
            let b = log.read(off, 64 * 1024).unwrap();
            off += 100 * (b.len() / batch.len()).max(1) as u64;
            reads += 1;
        }
        reads
    });
    assert!(n > 100);
    assert!(allocs <= n, "{allocs} allocations for {n} reads");
}
