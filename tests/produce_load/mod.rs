//! A background producer load for the broker-restart tests (`client_faults`,
//! `idempotent_produce`): records `m0..m{n-1}` go to partition 0 of one topic
//! while the test kills and restarts the broker, and every acknowledgement
//! is kept as `(index, offset)` to check against the log afterwards; and
//! [`produce_to_partitions`], the fixed load of the group tests.
//! (Separate from `common`, which stays independent of the client crate.)
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::{Acks, ClientConfig, ClientError, Delivery, Producer, ProducerConfig, Record};
use tokio::task::JoinHandle;

/// How long the sender, and then the outstanding acknowledgements, may take after the restart.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// `n` records being enqueued and acknowledged in background tasks.
pub struct BackgroundLoad {
    /// `(index, offset)` of every acknowledged record, in acknowledgement order.
    pub acked: Arc<Mutex<Vec<(usize, u64)>>>,
    sender: JoinHandle<()>,
    waiter: JoinHandle<Vec<(usize, ClientError)>>,
}

impl BackgroundLoad {
    /// Starts enqueueing `m{i}` for `i in 0..n` to `topic`/0, pausing briefly every
    /// 500 records so the load spreads over a broker restart.
    pub fn start(producer: &Producer, topic: &str, n: usize) -> BackgroundLoad {
        let acked = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Delivery)>(n.max(1));
        let waiter = {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while let Some((i, d)) = rx.recv().await {
                    match d.await {
                        Ok((_, offset)) => acked.lock().unwrap().push((i, offset)),
                        Err(e) => failures.push((i, e)),
                    }
                }
                failures
            })
        };
        let producer = producer.clone();
        let topic = topic.to_string();
        let sender = tokio::spawn(async move {
            for i in 0..n {
                let d = producer
                    .enqueue(Record::new(topic.as_str(), format!("m{i}")).partition(0))
                    .await
                    .expect("enqueue");
                if tx.send((i, d)).await.is_err() {
                    break;
                }
                if i % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        BackgroundLoad {
            acked,
            sender,
            waiter,
        }
    }

    /// Records acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Polls until at least `count` records are acknowledged (at most 30 s).
    pub async fn wait_acked(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked_count() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} records acknowledged",
                self.acked_count()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for every record to be enqueued, flushes `producer`, and waits for
    /// every outcome (each step at most 60 s); returns the failed records.
    pub async fn finish(&mut self, producer: &Producer) -> Vec<(usize, ClientError)> {
        tokio::time::timeout(FINISH_TIMEOUT, &mut self.sender)
            .await
            .expect("sender finished")
            .expect("sender");
        producer.flush().await;
        tokio::time::timeout(FINISH_TIMEOUT, &mut self.waiter)
            .await
            .expect("acks resolved")
            .expect("waiter")
    }

    /// Reads partition 0 of `topic` back from the broker at `addr` and checks
    /// that all `n` records were acknowledged and each is stored at its
    /// acknowledged offset, byte for byte.
    pub async fn assert_all_acked_and_stored(&self, addr: &str, topic: &str, n: usize) {
        let end = sluice::Admin::connect(addr.to_string())
            .await
            .expect("admin")
            .describe_topic(topic)
            .await
            .expect("describe")
            .partitions[0]
            .end_offset;
        let mut stored = vec![None; end as usize];
        let mut consumer = sluice::Consumer::new(addr.to_string());
        consumer.assign(vec![(topic.to_string(), 0)]);
        let mut read = 0;
        while read < end {
            let r = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                .await
                .expect("record")
                .expect("assigned")
                .expect("consume");
            stored[r.offset as usize] = r.value;
            read = r.offset + 1;
        }
        let acked = self.acked.lock().unwrap();
        assert_eq!(acked.len(), n);
        for (i, offset) in acked.iter() {
            assert_eq!(
                stored.get(*offset as usize).and_then(|v| v.as_deref()),
                Some(format!("m{i}").as_bytes()),
                "acknowledged record {i} at offset {offset} lost or changed"
            );
        }
    }
}

/// Produces `per_partition` records to each of `partitions` partitions of
/// `topic` (value `p<partition>-<n>`) and waits until all are acknowledged.
pub async fn produce_to_partitions(addr: &str, topic: &str, partitions: u32, per_partition: u32) {
    let producer = Producer::with_config(
        ClientConfig::new(addr),
        ProducerConfig {
            acks: Acks::Leader,
            linger: Duration::from_millis(2),
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::with_capacity((partitions * per_partition) as usize);
    for n in 0..per_partition {
        for p in 0..partitions {
            let d = producer
                .enqueue(Record::new(topic, format!("p{p}-{n}")).partition(p))
                .await
                .expect("enqueue");
            deliveries.push(d);
        }
    }
    for d in deliveries {
        d.await.expect("delivered");
    }
}
