//! A sequence-number workload and its checker for the replication tests:
//! an idempotent producer with `acks = durable` writes `seq-{i}` to
//! partition `i % partitions`; [`check`] reads every partition back from
//! its leader and asserts that every acknowledged record is there exactly
//! once, at the offset it was acknowledged with, in order, with no offset
//! gaps, and that no record appears twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use sluice::{Consumer, ConsumerConfig, Producer, ProducerConfig, Record, SeekTo};
use sluice_protocol::{Acks, ErrorCode, OffsetSpec};

use super::cluster::{TestCluster, NO_LEADER};
use super::RawClient;

/// Bound of metadata propagation and of a failover.
pub const SEEN: Duration = Duration::from_secs(30);

/// What the producer had acknowledged: sequence number -> (partition, offset).
pub type Acked = Arc<Mutex<BTreeMap<u64, (u32, u64)>>>;

/// A running producer of sequence numbers `0..n`, record `i` to partition `i % partitions`.
pub struct Workload {
    /// Acknowledged records so far.
    pub acked: Acked,
    /// Records that failed for good.
    pub failed: Arc<AtomicU64>,
    /// Time of the last acknowledgement, in ms since `started`.
    pub last_ack_ms: Arc<AtomicU64>,
    /// When the producer started.
    pub started: Instant,
    /// Set to stop producing early.
    pub stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

pub fn value(i: u64) -> Vec<u8> {
    format!("seq-{i:010}").into_bytes()
}

pub fn parse(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v)
        .ok()?
        .strip_prefix("seq-")?
        .parse()
        .ok()
}

impl Workload {
    pub fn start(bootstrap: String, topic: &'static str, partitions: u32, n: u64) -> Workload {
        let acked: Acked = Arc::default();
        let failed = Arc::new(AtomicU64::new(0));
        let last_ack_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (a, f, l, s) = (
            acked.clone(),
            failed.clone(),
            last_ack_ms.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let producer = Producer::with_config(
                sluice::ClientConfig::new(bootstrap),
                ProducerConfig {
                    acks: Acks::Durable,
                    idempotent: true,
                    linger: Duration::from_millis(2),
                    delivery_timeout: Duration::from_secs(60),
                    ..ProducerConfig::default()
                },
            );
            let mut pending = FuturesUnordered::new();
            for i in 0..n {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let r = Record::new(topic, value(i)).partition((i % u64::from(partitions)) as u32);
                let d = producer.enqueue(r).await.expect("enqueue");
                pending.push(async move { (i, d.await) });
                while pending.len() >= 64 {
                    if let Some((i, r)) = pending.next().await {
                        record(&a, &f, &l, started, i, r);
                    }
                }
                // About 1,500 records a second: faults land mid-stream.
                if i % 8 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            while let Some((i, r)) = pending.next().await {
                record(&a, &f, &l, started, i, r);
            }
            producer.close().await;
        });
        Workload {
            acked,
            failed,
            last_ack_ms,
            started,
            stop,
            task,
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` records are acknowledged.
    pub async fn wait_acked(&self, n: usize, c: &TestCluster) {
        let deadline = Instant::now() + SEEN;
        while self.acked_count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} acknowledged\n{}",
                self.acked_count(),
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the producer to finish; returns the acknowledged records.
    pub async fn finish(self, c: &TestCluster) -> BTreeMap<u64, (u32, u64)> {
        if tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .is_err()
        {
            panic!("the producer did not finish\n{}", c.logs());
        }
        let acked = self.acked.lock().unwrap().clone();
        eprintln!(
            "acknowledged {} records, {} failed",
            acked.len(),
            self.failed.load(Ordering::SeqCst)
        );
        acked
    }
}

pub fn record(
    acked: &Acked,
    failed: &AtomicU64,
    last: &AtomicU64,
    started: Instant,
    i: u64,
    r: Result<(u32, u64), sluice::ClientError>,
) {
    match r {
        Ok((p, o)) => {
            acked.lock().unwrap().insert(i, (p, o));
            last.store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
        }
        Err(e) => {
            eprintln!("record {i} failed: {e}");
            failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The leader of `topic/partition` as node `via` sees it.
pub fn leader_of(c: &mut TestCluster, topic: &str, partition: u32) -> u32 {
    c.wait_for("a live leader", SEEN, |c| {
        for id in c.running_ids() {
            let m = c.metadata(id, &[topic])?;
            let t = m
                .topics
                .iter()
                .find(|t| t.name == topic)
                .ok_or("no topic")?;
            let p = t
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .ok_or("no partition")?;
            if p.leader != NO_LEADER
                && p.error == ErrorCode::None
                && c.running_ids().contains(&p.leader)
            {
                return Ok(p.leader);
            }
        }
        Err("no live leader yet".to_string())
    })
}

/// Waits until node `via` reports `id` in (`present`) or out of partition
/// 0's ISR of `topic`.
pub fn wait_isr(c: &mut TestCluster, via: u32, topic: &str, id: u32, present: bool, what: &str) {
    c.wait_for(what, SEEN, |c| {
        let m = c.metadata(via, &[topic])?;
        let isr = &m.topics[0].partitions[0].isr;
        if isr.contains(&id) == present {
            Ok(())
        } else {
            Err(format!("isr {isr:?}"))
        }
    });
}

/// Reads every partition back and checks it against `acked` (see the module docs).
pub async fn check(
    c: &mut TestCluster,
    topic: &str,
    partitions: u32,
    acked: &BTreeMap<u64, (u32, u64)>,
) {
    check_retained(c, topic, partitions, acked, false).await
}

/// [`check`] of a topic whose retention may have deleted its oldest
/// records (`retention`): each partition is checked from its leader's log
/// start, which must then be past 0 in at least one partition.
pub async fn check_retained(
    c: &mut TestCluster,
    topic: &str,
    partitions: u32,
    acked: &BTreeMap<u64, (u32, u64)>,
    retention: bool,
) {
    // Each partition's log start and committed end, from its leader.
    let mut starts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let start = if retention {
            let leader = leader_of(c, topic, p);
            let (err, start, _) =
                RawClient::connect(c.addr(leader)).list_offset(topic, p, OffsetSpec::Earliest);
            assert_eq!(err, ErrorCode::None, "log start of {topic}/{p}");
            start
        } else {
            0
        };
        starts.insert(p, start);
        let need = acked
            .values()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| o + 1)
            .max()
            .unwrap_or(0);
        // A new leader's high watermark catches up once its followers fetch.
        let end = c.wait_for("the committed end from the leader", SEEN, |c| {
            let leader = leader_of(c, topic, p);
            let (err, end, _) =
                RawClient::connect(c.addr(leader)).list_offset(topic, p, OffsetSpec::Latest);
            match err {
                ErrorCode::None if end >= need => Ok(end),
                ErrorCode::None => Err(format!(
                    "leader {leader}: committed end {end} below an acknowledged offset {need}"
                )),
                e => Err(format!("leader {leader}: {e}")),
            }
        });
        ends.insert(p, end);
    }
    let first = c.running_ids()[0];
    let bootstrap = c.bootstrap(first);
    let mut consumer = Consumer::with_config(
        sluice::ClientConfig::new(bootstrap),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..partitions).map(|p| (topic.to_string(), p)).collect());
    if retention {
        assert!(
            starts.values().any(|s| *s > 0),
            "nothing deleted: {starts:?}"
        );
    }
    let total: u64 = ends.iter().map(|(p, e)| e - starts[p]).sum();
    let mut read: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let reading = async {
        while (read.len() as u64) < total {
            let r = consumer.next().await.expect("assigned").expect("record");
            if r.offset >= ends[&r.partition] {
                continue;
            }
            let v = r.value.as_deref().unwrap_or_default();
            let seq = parse(v)
                .unwrap_or_else(|| panic!("{}/{}: unknown value {v:?}", r.partition, r.offset));
            assert!(
                read.insert((r.partition, r.offset), seq).is_none(),
                "offset {}/{} read twice",
                r.partition,
                r.offset
            );
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .is_err()
    {
        panic!("read {} of {total} records\n{}", read.len(), c.logs());
    }
    // No gaps: offsets start..end of every partition.
    for (p, end) in &ends {
        let n = read.keys().filter(|(q, _)| q == p).count() as u64;
        assert_eq!(n, *end - starts[p], "partition {p}: offsets missing");
        if let Some(((_, first), _)) = read.range((*p, 0)..(*p + 1, 0)).next() {
            assert_eq!(*first, starts[p], "partition {p}: first offset");
        }
    }
    // No record twice; sequence numbers rise within a partition.
    let mut seen: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for ((p, o), seq) in &read {
        if let Some(prev) = seen.insert(*seq, (*p, *o)) {
            panic!("record {seq} at {prev:?} and at {p}/{o}");
        }
        assert_eq!(
            u64::from(*p),
            seq % u64::from(partitions),
            "record {seq} in partition {p}"
        );
        if let Some(l) = last.insert(*p, *seq) {
            assert!(*seq > l, "partition {p}: {seq} after {l} at offset {o}");
        }
    }
    // Every acknowledged record at its acknowledged offset (retention may
    // have deleted those below the log start).
    for (seq, at) in acked.iter().filter(|(_, (p, o))| *o >= starts[p]) {
        assert_eq!(
            seen.get(seq),
            Some(at),
            "acknowledged record {seq} at {at:?}"
        );
    }
}

pub fn signal(c: &TestCluster, id: u32, sig: &str) {
    let pid = c.node(id).pid().expect("running");
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}
