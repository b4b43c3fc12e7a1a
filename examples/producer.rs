//! Produce a few keyed records and print where each landed.
//!
//! ```text
//! cargo run --example producer -- [TOPIC] [COUNT]     # defaults: events 10
//! SLUICE_BROKER=host:port cargo run --example producer
//! ```

use std::sync::Arc;

use sluice::{ClientConfig, Producer, ProducerConfig, Record};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let topic: Arc<str> = Arc::from(args.next().unwrap_or_else(|| "events".to_string()).as_str());
    let count: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let client = ClientConfig::from_env();
    let producer = Producer::with_config(client, ProducerConfig::default());

    // enqueue() buffers a record (waiting only if the producer's buffer is full)
    // and returns a handle; awaiting the handles later keeps many records in flight.
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = Record {
            topic: topic.clone(),
            key: Some(format!("user-{}", i % 3).into()),
            value: Some(format!("hello {i}").into()),
            headers: vec![("source".to_string(), "example".into())],
            timestamp: None,
            partition: None,
        };
        match producer.enqueue(record).await {
            Ok(d) => deliveries.push((i, d)),
            Err(e) => fail(e),
        }
    }
    for (i, delivery) in deliveries {
        match delivery.await {
            Ok((partition, offset)) => {
                println!("sent \"hello {i}\" -> {topic}/{partition}@{offset}")
            }
            Err(e) => fail(e),
        }
    }
    producer.close().await;
}

fn fail(e: sluice::ClientError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}
