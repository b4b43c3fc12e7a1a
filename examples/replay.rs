//! Re-read a topic from a point in time: every record at or after the
//! timestamp, up to the end of each partition as it was when the replay began.
//!
//! ```text
//! cargo run --example replay -- [TOPIC] [SINCE_UNIX_MS]   # defaults: events, one hour ago
//! SLUICE_BROKER=host:port cargo run --example replay
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice::{Admin, ClientConfig, Consumer, ConsumerConfig, SeekTo};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "events".to_string());
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let since: i64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(now_ms - 3_600_000);
    let client = ClientConfig::from_env();

    let admin = Admin::with_config(client.clone())
        .await
        .unwrap_or_else(|e| fail(e));
    let info = admin
        .describe_topic(&topic)
        .await
        .unwrap_or_else(|e| fail(e));

    // Every partition starts at its first record at or after `since`.
    let mut consumer = Consumer::with_config(
        client,
        ConsumerConfig {
            start: SeekTo::Timestamp(since),
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(
        info.partitions
            .iter()
            .map(|p| (topic.clone(), p.partition))
            .collect(),
    );
    // Stop at the end offsets of now, so the replay finishes even while producers go on.
    let ends: Vec<(u32, u64)> = info
        .partitions
        .iter()
        .map(|p| (p.partition, p.end_offset))
        .collect();
    println!("replaying \"{topic}\" since {since}");
    let mut replayed = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up = ends
            .iter()
            .all(|(p, end)| consumer.position(&topic, *p).is_some_and(|pos| pos >= *end));
        if caught_up || Instant::now() > deadline {
            break;
        }
        let record = match tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            Ok(Some(Ok(r))) => r,
            Ok(Some(Err(e))) => fail(e),
            Ok(None) => break,  // nothing assigned
            Err(_) => continue, // no new record: check the positions again
        };
        if ends
            .iter()
            .any(|(p, end)| *p == record.partition && record.offset >= *end)
        {
            continue; // written after the replay began
        }
        println!(
            "{}/{}@{} t={} {}",
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()),
        );
        replayed += 1;
    }
    println!("replayed {replayed} records");
}

fn fail(e: sluice::ClientError) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}
