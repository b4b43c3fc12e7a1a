//! `sluice bench produce|consume`: throughput and latency, like
//! `kafka-producer-perf-test` / `iggy-bench`.
//!
//! Produce: K producers (one connection each) send N records of B bytes in
//! total (keyless, so sticky partitioning fills whole batches); latency is
//! enqueue -> acknowledgement per record (the clock is read once per run of
//! [`SEGMENT`] records and once per acknowledged batch, see [`Group`]). Consume: K consumers split the
//! topic's partitions and read from the earliest offset until N records (or
//! everything present when the bench started); latency is how long each read
//! that had to wait for the network waited. Percentiles come from an HDR
//! histogram in microseconds. A progress bar runs on a terminal unless `--json`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::FutureExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use sluice_client::{
    ClientError, Consumer, ConsumerConfig, Delivery, ErrorCode, Producer, ProducerConfig, Record,
    SeekTo,
};
use tokio::sync::mpsc;

use crate::errors::CliError;
use crate::produce::{AcksArg, CompressionArg};

/// Bench commands.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Produce N records and report throughput and latency.
    Produce(BenchArgs),
    /// Consume N records from the earliest offset and report throughput.
    Consume(BenchArgs),
}

/// Options shared by both benches.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Topic (created by `bench produce` if missing).
    #[arg(long, default_value = "sluice-bench")]
    pub topic: String,
    /// Number of records in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Value size in bytes (produce).
    #[arg(long, default_value_t = 1000)]
    pub size: usize,
    /// Concurrent producers (or consumers), each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub batch_bytes: usize,
    /// Producer buffer in bytes (default: four batches, 1 MiB with the
    /// default 256 KiB batch). Running flat out, the bench keeps it full, so a
    /// record's latency is mostly the time to drain what is ahead of it:
    /// buffer / throughput. A larger buffer raises latency, not throughput
    /// (64 MiB gave p99 70-250 ms and no more MB/s on the 2-core test
    /// machine; 100 producers x 16 KiB batches with a fixed 1 MiB buffer
    /// each had p50 acks of ~700 ms, with four batches ~17 ms).
    #[arg(long)]
    pub buffer_bytes: Option<usize>,
    /// Producer linger in ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    pub acks: AcksArg,
    /// Compress each produced batch's records with this codec (produce).
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Partitions of the topic when `bench produce` creates it.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Target records per second across all producers (produce), like
    /// `kafka-producer-perf-test --throughput`; 0 = as fast as possible.
    /// Latency percentiles mean most at a rate the broker can sustain.
    #[arg(long, default_value_t = 0)]
    pub throughput: u64,
    /// Runtime threads (default: one per producer or consumer, at most one
    /// per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of text (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Speak the native protocol, or the Kafka protocol to the Kafka listener.
    #[arg(long, value_enum, default_value_t = BenchProtocol::Native)]
    pub protocol: BenchProtocol,
    /// The Kafka listener to bootstrap from with `--protocol kafka`.
    #[arg(long, default_value = "127.0.0.1:9092", env = "SLUICE_KAFKA_BROKER")]
    pub kafka_broker: String,
}

/// Which wire protocol the bench speaks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchProtocol {
    /// The native protocol (the `sluice` client).
    Native,
    /// The Kafka protocol, to the broker's Kafka listener.
    Kafka,
}

impl BenchArgs {
    /// Producer buffer per producer: `--buffer-bytes`, else four batches.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
            .unwrap_or_else(|| self.batch_bytes.saturating_mul(4))
    }

    /// Runtime threads: `--threads`, else one per producer or consumer, at
    /// most one per core.
    pub fn runtime_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            self.producers.clamp(1, cores)
        })
    }
}

/// Runs a bench command.
pub async fn run(broker: &str, command: BenchCommand) -> Result<i32, CliError> {
    match command {
        BenchCommand::Produce(args) if args.protocol == BenchProtocol::Kafka => {
            let b = args.kafka_broker.clone();
            crate::bench_kafka::produce(&b, args).await
        }
        BenchCommand::Consume(args) if args.protocol == BenchProtocol::Kafka => {
            let b = args.kafka_broker.clone();
            crate::bench_kafka::consume(&b, args).await
        }
        BenchCommand::Produce(args) => produce(broker, args).await,
        BenchCommand::Consume(args) => consume(broker, args).await,
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

pub(crate) fn progress(total: u64, hidden: bool, what: &str) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_prefix(what.to_string());
    pb
}

/// Keeps the progress bar in step with `done` until `total` or until aborted.
pub(crate) fn spawn_ticker(pb: ProgressBar, done: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            pb.set_position(done.load(Ordering::Relaxed));
        }
    })
}

/// One bench run's figures.
pub(crate) struct Summary {
    pub(crate) mode: &'static str,
    /// The topic's `flush` policy, as the broker reports it.
    pub(crate) flush: Option<String>,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    pub(crate) hist: Histogram<u64>,
    pub(crate) failed: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(crate) fn report(s: &Summary, args: &BenchArgs) {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let msgs = s.messages as f64 / secs;
    let mb = s.bytes as f64 / secs / 1e6;
    let h = &s.hist;
    let (p50, p99, p999, max) = if h.is_empty() {
        (0, 0, 0, 0)
    } else {
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        )
    };
    if args.json {
        let v = json!({
            "mode": s.mode,
            "topic": args.topic,
            "messages": s.messages,
            "failed": s.failed,
            "bytes": s.bytes,
            "size": if s.mode == "produce" { args.size as u64 } else { s.bytes / s.messages.max(1) },
            "producers": args.producers,
            "threads": args.runtime_threads(),
            "batch_bytes": args.batch_bytes,
            "buffer_bytes": args.buffer_bytes(),
            "throughput_target": args.throughput,
            "acks": args.acks.name(),
            "flush": s.flush,
            "compression": args.compression.codec().name(),
            "protocol": if args.protocol == BenchProtocol::Kafka { "kafka" } else { "native" },
            "seconds": secs,
            "msgs_per_sec": msgs,
            "mb_per_sec": mb,
            "latency_ms": { "p50": ms(p50), "p99": ms(p99), "p99_9": ms(p999), "max": ms(max) },
        });
        outln!("{v}");
    } else {
        let verb = if s.mode == "produce" {
            "produced"
        } else {
            "consumed"
        };
        // What the figure was measured with: the topic's flush policy (and,
        // for produce, the acks level) changes it by 2x or more.
        let setting = match (s.mode, &s.flush) {
            ("produce", Some(f)) => format!(" (flush={f}, acks={})", args.acks.name()),
            ("produce", None) => format!(" (acks={})", args.acks.name()),
            (_, Some(f)) => format!(" (flush={f})"),
            (_, None) => String::new(),
        };
        outln!(
            "{verb} {} messages ({:.1} MB) in {:.2} s: {:.0} msg/s, {:.1} MB/s{setting}",
            s.messages,
            s.bytes as f64 / 1e6,
            secs,
            msgs,
            mb
        );
        let what = if s.mode == "produce" {
            "latency (send -> ack)"
        } else {
            "latency (fetch wait)"
        };
        outln!(
            "{what}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            ms(p50),
            ms(p99),
            ms(p999),
            ms(max)
        );
        if s.failed > 0 {
            outln!("{} messages failed", s.failed);
        }
    }
}

/// Creates the bench topic if it is missing; returns its `flush` policy.
async fn ensure_topic(broker: &str, args: &BenchArgs) -> Result<Option<String>, CliError> {
    let admin = crate::topic::admin(broker).await?;
    match admin.describe_topic(&args.topic).await {
        Ok(info) => Ok(flush_of(&info)),
        Err(e) if e.code() == Some(ErrorCode::UnknownTopicOrPartition) => {
            match admin
                .create_topic(&args.topic, args.partitions, Vec::new())
                .await
            {
                Ok(()) => {}
                Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
                Err(e) => return Err(CliError::topic(&args.topic)(e)),
            }
            Ok(admin
                .describe_topic(&args.topic)
                .await
                .ok()
                .and_then(|info| flush_of(&info)))
        }
        Err(e) => Err(CliError::topic(&args.topic)(e)),
    }
}

/// The `flush` config of a described topic.
fn flush_of(info: &sluice_client::TopicInfo) -> Option<String> {
    info.configs
        .iter()
        .find(|(k, _)| k == "flush")
        .map(|(_, v)| v.clone())
}

/// Records sampled per send-time reading: a record's latency is measured
/// from the send time of the first record of its run of `SEGMENT`, which
/// overstates it by at most the time `SEGMENT - 1` enqueues take that did not
/// wait (a record that waits for buffer space starts a new run).
const SEGMENT: u32 = 32;

/// Consecutive records of one producer batch: they are acknowledged together,
/// so the bench awaits one [`Delivery`] per batch and reads the clock once
/// per batch, recording each run's latency for all the run's records.
struct Group {
    /// The first record's delivery (or its enqueue error: then a group of one).
    head: Result<Delivery, ClientError>,
    /// `(send time, records)` per run of records, in order.
    segments: Vec<(Instant, u64)>,
}

impl Group {
    fn new(head: Result<Delivery, ClientError>, sent: Instant) -> Group {
        Group {
            head,
            segments: vec![(sent, 1)],
        }
    }

    /// Adds a record sent at `sent` (a segment's time) to the group.
    fn push(&mut self, sent: Instant) {
        match self.segments.last_mut() {
            Some((t, c)) if *t == sent => *c += 1,
            _ => self.segments.push((sent, 1)),
        }
    }
}

async fn produce(broker: &str, args: BenchArgs) -> Result<i32, CliError> {
    if args.producers == 0 {
        return Err(CliError::msg("--producers must be at least 1"));
    }
    let flush = ensure_topic(broker, &args).await?;
    let payload = Bytes::from(
        (0..args.size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let topic: Arc<str> = Arc::from(args.topic.as_str());
    let acked = Arc::new(AtomicU64::new(0));
    let pb = progress(args.messages, args.json, "produce");
    let ticker = spawn_ticker(pb.clone(), acked.clone());
    let k = args.producers as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    // Each producer paces itself to its share of --throughput.
    let per_producer_rate = args.throughput as f64 / k as f64;
    for i in 0..k {
        let n = args.messages / k + u64::from(i < args.messages % k);
        let producer = Producer::with_config(
            crate::client_config(broker),
            ProducerConfig {
                batch_bytes: args.batch_bytes,
                buffer_bytes: args.buffer_bytes(),
                linger: Duration::from_millis(args.linger_ms),
                acks: args.acks.acks(),
                compression: args.compression.codec(),
                ..ProducerConfig::default()
            },
        );
        let payload = payload.clone();
        let topic = topic.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let (tx, mut rx) = mpsc::channel::<Group>(16 * 1024);
            let waiter = tokio::spawn(async move {
                let mut hist = histogram();
                let mut failed = 0u64;
                let mut first_error = None;
                let mut last_ack = Instant::now();
                while let Some(group) = rx.recv().await {
                    let r = match group.head {
                        Ok(d) => d.await,
                        Err(e) => Err(e),
                    };
                    let count: u64 = group.segments.iter().map(|(_, c)| c).sum();
                    match r {
                        Ok(_) => {
                            last_ack = Instant::now();
                            for (sent, c) in &group.segments {
                                let us = last_ack.saturating_duration_since(*sent).as_micros();
                                hist.saturating_record_n(us.max(1) as u64, *c);
                            }
                            acked.fetch_add(count, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed += count;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (hist, failed, first_error, last_ack)
            });
            let paced_from = Instant::now();
            let mut group: Option<Group> = None;
            // Send time of the current segment (see `Group`) and records left in it.
            let mut seg_time = paced_from;
            let mut seg_left = 0u32;
            for sent_count in 0..n {
                if per_producer_rate > 0.0 {
                    let due =
                        paced_from + Duration::from_secs_f64(sent_count as f64 / per_producer_rate);
                    if due > Instant::now() + Duration::from_millis(1) {
                        // Hand the open group over first so its ack is timed while we sleep.
                        if let Some(g) = group.take() {
                            if tx.send(g).await.is_err() {
                                break;
                            }
                        }
                        tokio::time::sleep_until(due.into()).await;
                        seg_left = 0;
                    }
                }
                let record = Record {
                    topic: topic.clone(),
                    key: None,
                    value: Some(payload.clone()),
                    headers: Vec::new(),
                    timestamp: None,
                    partition: None,
                };
                if seg_left == 0 {
                    seg_time = Instant::now();
                    seg_left = SEGMENT;
                }
                seg_left -= 1;
                let mut enqueue = std::pin::pin!(producer.enqueue(record));
                let (d, sent) = match futures::poll!(enqueue.as_mut()) {
                    Poll::Ready(d) => (d, seg_time),
                    Poll::Pending => {
                        // Waiting for buffer space: the wait counts towards this
                        // record's latency, but not towards the records after it.
                        let waited_from = Instant::now();
                        seg_left = 0;
                        // Hand the open group over so its ack is timed meanwhile
                        // (a batch may span two groups; each counts its own records).
                        if let Some(g) = group.take() {
                            if tx.send(g).await.is_err() {
                                break;
                            }
                        }
                        (enqueue.await, waited_from)
                    }
                };
                match (&mut group, &d) {
                    (Some(g), Ok(this)) if matches!(&g.head, Ok(head) if head.same_batch(this)) => {
                        g.push(sent);
                    }
                    _ => {
                        if let Some(g) = group.replace(Group::new(d, sent)) {
                            if tx.send(g).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            if let Some(g) = group.take() {
                let _ = tx.send(g).await;
            }
            drop(tx);
            producer.close().await;
            waiter.await
        }));
    }
    let mut hist = histogram();
    let mut failed = 0;
    let mut first_error = None;
    let mut last = started;
    for t in tasks {
        match t.await {
            Ok(Ok((h, f, e, l))) => {
                // Cannot fail: both come from histogram() and saturate at its bounds.
                let _ = hist.add(&h);
                failed += f;
                if first_error.is_none() {
                    first_error = e;
                }
                last = last.max(l);
            }
            _ => return Err(CliError::msg("a producer task failed unexpectedly")),
        }
    }
    ticker.abort();
    pb.finish_and_clear();
    let ok = hist.len();
    let summary = Summary {
        mode: "produce",
        flush,
        messages: ok,
        bytes: ok * args.size as u64,
        elapsed: last - started,
        hist,
        failed,
    };
    report(&summary, &args);
    if let Some(e) = first_error {
        return Err(CliError::topic(&args.topic)(e));
    }
    Ok(0)
}

async fn consume(broker: &str, args: BenchArgs) -> Result<i32, CliError> {
    let k = args.producers.max(1);
    let admin = crate::topic::admin(broker).await?;
    let info = admin
        .describe_topic(&args.topic)
        .await
        .map_err(CliError::topic(&args.topic))?;
    let available: u64 = info
        .partitions
        .iter()
        .map(|p| p.end_offset.saturating_sub(p.start_offset))
        .sum();
    if available == 0 {
        return Err(CliError::msg(format!(
            "topic \"{}\" is empty; run `sluice bench produce --topic {}` first",
            args.topic, args.topic
        )));
    }
    let target = args.messages.min(available);
    let consumed = Arc::new(AtomicU64::new(0));
    let pb = progress(target, args.json, "consume");
    let ticker = spawn_ticker(pb.clone(), consumed.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        // (partition, end offset at start): each consumer reads its share up to there.
        let mine: Vec<(u32, u64)> = info
            .partitions
            .iter()
            .enumerate()
            .filter(|(j, p)| j % k == i && p.end_offset > p.start_offset)
            .map(|(_, p)| (p.partition, p.end_offset))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let topic = args.topic.clone();
        let consumed = consumed.clone();
        let broker = broker.to_string();
        tasks.push(tokio::spawn(async move {
            let mut consumer = Consumer::with_config(
                crate::client_config(&broker),
                ConsumerConfig {
                    start: SeekTo::Earliest,
                    ..ConsumerConfig::default()
                },
            );
            consumer.assign(mine.iter().map(|(p, _)| (topic.clone(), *p)).collect());
            let mut remaining: Vec<(u32, u64)> = mine;
            let mut hist = histogram();
            let mut bytes = 0u64;
            let mut count = 0u64;
            while !remaining.is_empty() && consumed.load(Ordering::Relaxed) < target {
                let r = match consumer.next().now_or_never() {
                    Some(r) => r,
                    None => {
                        let t = Instant::now();
                        let r = consumer.next().await;
                        hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
                        r
                    }
                };
                let record = match r {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => return Err(e),
                    None => break,
                };
                bytes += record.value.as_ref().map_or(0, |v| v.len()) as u64
                    + record.key.as_ref().map_or(0, |k| k.len()) as u64;
                count += 1;
                consumed.fetch_add(1, Ordering::Relaxed);
                let next = record.offset + 1;
                remaining.retain(|(p, end)| !(*p == record.partition && next >= *end));
            }
            Ok((hist, count, bytes, Instant::now()))
        }));
    }
    let mut hist = histogram();
    let (mut count, mut bytes, mut last) = (0, 0, started);
    for t in tasks {
        match t.await {
            Ok(Ok((h, c, b, l))) => {
                // Cannot fail: both come from histogram() and saturate at its bounds.
                let _ = hist.add(&h);
                count += c;
                bytes += b;
                last = last.max(l);
            }
            Ok(Err(e)) => return Err(CliError::topic(&args.topic)(e)),
            Err(_) => return Err(CliError::msg("a consumer task failed unexpectedly")),
        }
    }
    ticker.abort();
    pb.finish_and_clear();
    let summary = Summary {
        mode: "consume",
        flush: flush_of(&info),
        messages: count,
        bytes,
        elapsed: last - started,
        hist,
        failed: 0,
    };
    report(&summary, &args);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_counts_runs_of_records_by_send_time() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_micros(50);
        let mut g = Group::new(Err(ClientError::Closed), t0);
        g.push(t0);
        g.push(t1);
        g.push(t1);
        g.push(t1);
        assert_eq!(g.segments, vec![(t0, 2), (t1, 3)]);
    }
}
