//! Consume a topic as a member of a consumer group: the broker splits the
//! partitions among the running members, and each member resumes from the
//! group's committed offsets. Run it in several terminals at once.
//!
//! ```text
//! cargo run --example consumer_group -- [TOPIC] [GROUP] [COUNT]   # defaults: events, demo, until idle for 3 s
//! SLUICE_BROKER=host:port cargo run --example consumer_group
//! ```

use std::time::Duration;

use sluice::{ClientConfig, Consumer, ConsumerConfig, OffsetReset};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "events".to_string());
    let group = args.next().unwrap_or_else(|| "demo".to_string());
    let count: Option<usize> = args.next().and_then(|s| s.parse().ok());

    let mut consumer = Consumer::with_config(
        ClientConfig::from_env(),
        ConsumerConfig {
            // Partitions the group has never committed start at the oldest record.
            auto_offset_reset: OffsetReset::Earliest,
            // We commit ourselves, after each record is processed (printed).
            enable_auto_commit: false,
            session_timeout: Duration::from_secs(6),
            ..ConsumerConfig::default()
        },
    );
    if let Err(e) = consumer.subscribe(&group, vec![topic.clone()]).await {
        fail(e);
    }
    eprintln!(
        "joined group \"{group}\" as {}",
        consumer.member_id().unwrap_or_default()
    );

    let mut seen = 0;
    let mut committed_at = 0;
    while count.is_none_or(|c| seen < c) {
        let record = match tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
            Ok(Some(Ok(r))) => r,
            // Retriable trouble (a broker restart, a rebalance): the consumer recovers on its own.
            Ok(Some(Err(e))) if e.is_retriable() => {
                eprintln!("retrying: {e}");
                continue;
            }
            Ok(Some(Err(e))) => fail(e),
            Ok(None) | Err(_) => break, // idle for 3 s
        };
        println!(
            "{}/{}@{} value={}",
            record.topic,
            record.partition,
            record.offset,
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()),
        );
        seen += 1;
        // Commit every 100 records; the commit below covers the rest.
        if seen >= committed_at + 100 {
            committed_at = seen;
            if let Err(e) = consumer.commit().await {
                eprintln!("commit failed (will retry): {e}");
            }
        }
    }
    // Commit what was printed, then leave so the others take over at once.
    if let Err(e) = consumer.commit().await {
        fail(e);
    }
    if let Err(e) = consumer.close().await {
        fail(e);
    }
    eprintln!("consumed {seen} records");
}

fn fail(e: sluice::ClientError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}
