//! The Kafka front end's decode path allocates per request, never per
//! record: parsing a Produce request costs the same number of allocations
//! whether its batch holds 10 records or 10,000, and the records are never
//! copied (the decoded batch is a slice of the frame).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_kafka::{parse_frame, Frame};
use sluice_protocol::batch::RecordBatchBuilder;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn produce_frame(records: usize) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    for i in 0..records {
        b.push(i as i64, Some(b"key"), Some(&[7u8; 100]), &[("h", b"v")]);
    }
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(b.into_batch())),
            ])]);
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    buf.put_i16(9);
    buf.put_i32(1);
    buf.put_i16(2);
    buf.put_slice(b"id");
    buf.put_u8(0);
    body.encode(&mut buf, 9).unwrap();
    buf.freeze()
}

fn allocations_to_parse(frame: &Bytes) -> (usize, Frame) {
    let frame = frame.clone();
    let before = ALLOCS.load(Ordering::Relaxed);
    let parsed = parse_frame(frame).unwrap();
    (ALLOCS.load(Ordering::Relaxed) - before, parsed)
}

#[test]
fn parsing_a_produce_allocates_per_request_not_per_record() {
    let small = produce_frame(10);
    let large = produce_frame(10_000);
    let (a_small, _) = allocations_to_parse(&small);
    let (a_large, parsed) = allocations_to_parse(&large);
    assert_eq!(a_small, a_large, "allocations grow with the record count");
    assert!(a_large < 40, "{a_large} allocations for one produce");
    // The batch is a slice of the frame, not a copy.
    let Frame::Request { body, .. } = parsed else {
        panic!("not a request");
    };
    let RequestKind::Produce(p) = *body else {
        panic!("not a produce");
    };
    let records = p.topic_data[0].partition_data[0].records.clone().unwrap();
    let range = large.as_ptr() as usize..large.as_ptr() as usize + large.len();
    assert!(range.contains(&(records.as_ptr() as usize)));
}
