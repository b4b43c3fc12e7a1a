//! Read every partition of a topic from the beginning and print the records.
//!
//! ```text
//! cargo run --example consumer -- [TOPIC] [COUNT]     # defaults: events, until idle for 2 s
//! SLUICE_BROKER=host:port cargo run --example consumer
//! ```

use std::time::Duration;

use futures::StreamExt;
use sluice::{Admin, ClientConfig, Consumer, ConsumerConfig, SeekTo};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "events".to_string());
    let count: Option<usize> = args.next().and_then(|s| s.parse().ok());
    let client = ClientConfig::from_env();

    let admin = Admin::with_config(client.clone())
        .await
        .unwrap_or_else(|e| fail(e));
    let info = admin
        .describe_topic(&topic)
        .await
        .unwrap_or_else(|e| fail(e));

    let mut consumer = Consumer::with_config(
        client,
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(
        info.partitions
            .iter()
            .map(|p| (topic.clone(), p.partition))
            .collect(),
    );

    // Records arrive as a Stream; the next fetch is already in flight while we print.
    let mut stream = consumer.stream();
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let next = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
        let record = match next {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(e))) => fail(e),
            Ok(None) | Err(_) => break, // nothing assigned, or idle for 2 s
        };
        println!(
            "{}/{}@{} key={} value={}",
            record.topic,
            record.partition,
            record.offset,
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()),
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()),
        );
        seen += 1;
    }
}

fn fail(e: sluice::ClientError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}
