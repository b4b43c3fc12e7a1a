//! `sluice topic produce NAME`: one record per stdin line.
//!
//! Lines are streamed: the producer's bounded buffer applies backpressure to
//! reading stdin, so a million lines never sit in memory at once. Each
//! record's acknowledgement is counted by a separate task. At exit the tool
//! prints `produced N records` (acknowledged only) and `, M failed` when any
//! failed; any failure makes the exit status 1. SIGINT/SIGTERM stop reading,
//! wait up to the delivery timeout for what is in flight, then report.
//!
//! A broker that stays unreachable for the whole delivery timeout also stops
//! the reading: the first record that fails that way (see
//! [`ClientError::is_broker_unavailable`]) ends the input, the producer fails
//! what it still buffers at once, and the tool reports and exits 1 instead of
//! reading the rest of its input only to fail it batch by batch.

use std::time::Duration;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use sluice_client::{Acks, ClientError, Compression, Delivery, Producer, ProducerConfig, Record};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, Notify};

use crate::errors::{render_client, CliError};

/// Acknowledgement level.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcksArg {
    /// Do not wait for the broker.
    None,
    /// Wait until the leader appended the records.
    Leader,
    /// Wait until the records are fsynced.
    Durable,
}

impl AcksArg {
    /// The protocol value.
    pub fn acks(self) -> Acks {
        match self {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            AcksArg::None => "none",
            AcksArg::Leader => "leader",
            AcksArg::Durable => "durable",
        }
    }
}

/// Compression codec of produced batches.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    /// Records as they are.
    None,
    /// gzip.
    Gzip,
    /// snappy (xerial framing, as Kafka's Java client).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// zstd.
    Zstd,
}

impl CompressionArg {
    /// The client's codec.
    pub fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Options of `topic produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic name.
    pub name: String,
    /// Split each line at the first SEP into key and value (lines without SEP have no key).
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Send every record to this partition (default: by key hash, sticky when keyless).
    #[arg(long, short = 'p')]
    pub partition: Option<u32>,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    pub acks: AcksArg,
    /// Give up on a record not acknowledged within this many ms.
    #[arg(long, default_value_t = 30_000)]
    pub delivery_timeout: u64,
    /// Compress each batch's records with this codec.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
}

/// Outcome counters of the acknowledgement task.
struct Tally {
    ok: u64,
    failed: u64,
    first_error: Option<ClientError>,
}

/// Runs `topic produce`.
pub async fn run(broker: &str, args: ProduceArgs) -> Result<i32, CliError> {
    let delivery_timeout = Duration::from_millis(args.delivery_timeout);
    let producer = Producer::with_config(
        crate::client_config(broker),
        ProducerConfig {
            acks: args.acks.acks(),
            delivery_timeout,
            compression: args.compression.codec(),
            ..ProducerConfig::default()
        },
    );
    let (tx, mut rx) = mpsc::channel::<Result<Delivery, ClientError>>(64 * 1024);
    // Signalled by the counter when a record failed because the broker is gone.
    let broker_gone = std::sync::Arc::new(Notify::new());
    let gone = broker_gone.clone();
    let counter = tokio::spawn(async move {
        let mut tally = Tally {
            ok: 0,
            failed: 0,
            first_error: None,
        };
        while let Some(item) = rx.recv().await {
            let result = match item {
                Ok(delivery) => delivery.await.map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tally.ok += 1,
                Err(e) => {
                    if e.is_broker_unavailable() {
                        gone.notify_one();
                    }
                    tally.failed += 1;
                    tally.first_error.get_or_insert(e);
                }
            }
        }
        tally
    });

    let mut stop = stop_signal()?;
    let mut stdin = BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    let separator = args
        .key_separator
        .as_deref()
        .map(str::as_bytes)
        .filter(|s| !s.is_empty());
    let mut line = Vec::with_capacity(4096);
    let topic: std::sync::Arc<str> = std::sync::Arc::from(args.name.as_str());
    let mut interrupted = false;
    let gave_up = broker_gone.notified();
    tokio::pin!(gave_up);
    loop {
        line.clear();
        let n = tokio::select! {
            r = stdin.read_until(b'\n', &mut line) => r?,
            _ = &mut stop => { interrupted = true; break; }
            _ = &mut gave_up => break,
        };
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let data = Bytes::copy_from_slice(&line);
        let (key, value) = match separator.and_then(|sep| find(&data, sep).map(|i| (i, sep.len())))
        {
            Some((i, len)) => (Some(data.slice(..i)), data.slice(i + len..)),
            None => (None, data),
        };
        let record = Record {
            topic: topic.clone(),
            key,
            value: Some(value),
            headers: Vec::new(),
            timestamp: None,
            partition: args.partition,
        };
        let enqueued = tokio::select! {
            r = producer.enqueue(record) => r,
            _ = &mut stop => { interrupted = true; break; }
            _ = &mut gave_up => break,
        };
        if matches!(&enqueued, Err(e) if e.is_broker_unavailable()) {
            // Counted as failed; the rest of the input is not read.
            let _ = tx.send(enqueued).await;
            break;
        }
        let sent = tokio::select! {
            r = tx.send(enqueued) => r.is_ok(),
            _ = &mut gave_up => break,
        };
        if !sent {
            break;
        }
    }
    drop(tx);
    // Deliver what is buffered: bounded by the delivery timeout (plus a margin
    // for the last answer to arrive).
    // A close that overruns is reported below as records still in flight.
    if tokio::time::timeout(delivery_timeout + Duration::from_secs(1), producer.close())
        .await
        .is_err()
    {
        tracing::debug!("producer close overran the delivery timeout");
    }
    let tally = match tokio::time::timeout(Duration::from_secs(2), counter).await {
        Ok(Ok(t)) => t,
        _ => {
            return Err(CliError::msg(
                "records were still in flight when the delivery timeout ran out",
            ))
        }
    };
    if let Some(e) = &tally.first_error {
        eprintln!("error: {}", render_client(e, Some(&args.name), broker));
    }
    if tally.failed > 0 {
        eprintln!("produced {} records, {} failed", tally.ok, tally.failed);
        return Ok(1);
    }
    eprintln!("produced {} records", tally.ok);
    if interrupted {
        tracing::debug!("stopped by signal");
    }
    Ok(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A future that completes on SIGINT or SIGTERM.
pub fn stop_signal(
) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }))
}
