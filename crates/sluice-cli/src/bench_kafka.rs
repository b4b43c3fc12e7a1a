//! `sluice bench produce|consume --protocol kafka`: the same load, spoken in
//! the Kafka protocol to the broker's Kafka listener, so the two front ends
//! can be compared side by side.
//!
//! Produce: each producer owns one connection per partition leader and a
//! share of the partitions; it fills RecordBatches of `--batch-bytes` (the
//! same builder and batch size as the native client, keyless records of
//! `--size` bytes) and pipelines Produce v9 requests, at most
//! `--buffer-bytes / --batch-bytes` in flight, as a client's buffer allows.
//! Latency is send -> acknowledgement of each batch, counted once per
//! record. Consume: each consumer reads its share of the partitions from
//! the earliest offset with Fetch v12 (the native consumer's defaults: 32
//! MiB per fetch, 1 MiB per partition, 500 ms max wait) and counts records
//! from the batch headers; latency is how long each fetch took.
//!
//! With the global TLS flags the connections run TLS (the Kafka listener's
//! `kafka_security = ssl`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_protocol::batch::{RecordBatch, RecordBatchBuilder};
use sluice_tls::MaybeTlsStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::bench::{histogram, progress, report, spawn_ticker, BenchArgs, Summary};
use crate::errors::CliError;
use crate::produce::AcksArg;

/// Largest response frame accepted from the broker.
const MAX_RESPONSE: usize = 256 << 20;

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::msg(format!("kafka bench: {e}"))
}

/// The write half of a connection (plain TCP or TLS).
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;
/// The read half of a connection (plain TCP or TLS).
type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;

/// A Kafka connection: a write half and a buffered read half.
struct Conn {
    w: WriteHalf,
    r: BufReader<ReadHalf>,
    next_id: i32,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, CliError> {
        let s = crate::connector()
            .connect(addr)
            .await
            .map_err(|e| err(format!("cannot connect to {addr}: {e}")))?;
        // Plain TCP splits into owned halves; TLS shares its stream.
        let (r, w): (ReadHalf, WriteHalf) = match s {
            MaybeTlsStream::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w))
            }
            tls => {
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        };
        Ok(Conn {
            w,
            r: BufReader::with_capacity(1 << 20, r),
            next_id: 1,
        })
    }

    async fn send<R: Encodable + HeaderVersion>(
        w: &mut WriteHalf,
        key: ApiKey,
        version: i16,
        id: i32,
        body: &R,
    ) -> Result<(), CliError> {
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-bench")))
            .encode(&mut buf, key.request_header_version(version))
            .map_err(err)?;
        body.encode(&mut buf, version).map_err(err)?;
        let len = i32::try_from(buf.len() - 4).map_err(err)?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        w.write_all(&buf).await.map_err(err)?;
        // TLS holds the last record until flushed (a no-op on plain TCP).
        w.flush().await.map_err(err)
    }

    async fn recv<P: Decodable + HeaderVersion>(
        r: &mut BufReader<ReadHalf>,
        version: i16,
    ) -> Result<(i32, P), CliError> {
        let len = r.read_u32().await.map_err(err)? as usize;
        if !(4..=MAX_RESPONSE).contains(&len) {
            return Err(err(format!("response frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await.map_err(err)?;
        let mut b = Bytes::from(body);
        let id = b.get_i32();
        if P::header_version(version) >= 1 {
            let tags = b.get_u8();
            if tags != 0 {
                return Err(err("tagged fields in a response header"));
            }
        }
        let p = P::decode(&mut b, version).map_err(err)?;
        Ok((id, p))
    }

    async fn call<R: Encodable + HeaderVersion, P: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<P, CliError> {
        let id = self.next_id;
        self.next_id += 1;
        Self::send(&mut self.w, key, version, id, body).await?;
        let (got, p) = Self::recv::<P>(&mut self.r, version).await?;
        if got != id {
            return Err(err(format!("correlation id {got}, expected {id}")));
        }
        Ok(p)
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Partition leaders' Kafka addresses, creating the topic if it is missing.
async fn leaders(
    bootstrap: &str,
    args: &BenchArgs,
    create: bool,
) -> Result<Vec<(i32, String)>, CliError> {
    let mut c = Conn::open(bootstrap).await?;
    if create {
        let r: CreateTopicsResponse = c
            .call(
                ApiKey::CreateTopics,
                5,
                &CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![create_topics_request::CreatableTopic::default()
                        .with_name(topic_name(&args.topic))
                        .with_num_partitions(i32::try_from(args.partitions).map_err(err)?)
                        .with_replication_factor(-1)]),
            )
            .await?;
        let code = r.topics.first().map_or(0, |t| t.error_code);
        if code != 0 && code != 36 {
            return Err(err(format!("creating {}: error {code}", args.topic)));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md: MetadataResponse = c
            .call(
                ApiKey::Metadata,
                9,
                &MetadataRequest::default()
                    .with_allow_auto_topic_creation(false)
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                    )
                    .with_name(Some(topic_name(&args.topic)))])),
            )
            .await?;
        let addrs: HashMap<i32, String> = md
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let t = md
            .topics
            .first()
            .ok_or_else(|| err("no topic in Metadata"))?;
        let ready: Option<Vec<(i32, String)>> = t
            .partitions
            .iter()
            .map(|p| {
                addrs
                    .get(&p.leader_id.0)
                    .map(|a| (p.partition_index, a.clone()))
            })
            .collect();
        match ready {
            Some(mut l) if t.error_code == 0 && !l.is_empty() => {
                l.sort();
                return Ok(l);
            }
            _ if Instant::now() > deadline => {
                return Err(err(format!(
                    "topic {} has no leaders (error {})",
                    args.topic, t.error_code
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// `bench produce --protocol kafka`.
pub(crate) async fn produce(bootstrap: &str, args: BenchArgs) -> Result<i32, CliError> {
    if args.producers == 0 {
        return Err(CliError::msg("--producers must be at least 1"));
    }
    let parts = leaders(bootstrap, &args, true).await?;
    let acks: i16 = match args.acks {
        AcksArg::None => 0,
        AcksArg::Leader => 1,
        AcksArg::Durable => -1,
    };
    let payload = Bytes::from(
        (0..args.size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let acked = Arc::new(AtomicU64::new(0));
    let pb = progress(args.messages, args.json, "produce");
    let ticker = spawn_ticker(pb.clone(), acked.clone());
    let k = args.producers;
    let in_flight = (args.buffer_bytes() / args.batch_bytes.max(1)).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        let n = args.messages / k as u64 + u64::from((i as u64) < args.messages % k as u64);
        let mine: Vec<(i32, String)> = parts
            .iter()
            .enumerate()
            .filter(|(j, _)| j % k == i)
            .map(|(_, p)| p.clone())
            .collect();
        let mine = if mine.is_empty() {
            vec![parts[i % parts.len()].clone()]
        } else {
            mine
        };
        let (args, payload, acked) = (args.clone(), payload.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            produce_one(mine, n, acks, in_flight, &args, payload, acked).await
        }));
    }
    let mut hist = histogram();
    let (mut done, mut failed) = (0u64, 0u64);
    for t in tasks {
        let (h, ok, bad) = t.await.map_err(err)??;
        hist.add(h).map_err(err)?;
        done += ok;
        failed += bad;
    }
    let elapsed = started.elapsed();
    ticker.abort();
    pb.finish_and_clear();
    report(
        &Summary {
            mode: "produce",
            flush: None,
            messages: done,
            bytes: done * args.size as u64,
            elapsed,
            hist,
            failed,
        },
        &args,
    );
    Ok(i32::from(failed > 0))
}

/// One producer: batches round-robin over its partitions, pipelined per connection.
async fn produce_one(
    parts: Vec<(i32, String)>,
    n: u64,
    acks: i16,
    in_flight: usize,
    args: &BenchArgs,
    payload: Bytes,
    acked: Arc<AtomicU64>,
) -> Result<(hdrhistogram::Histogram<u64>, u64, u64), CliError> {
    let per_batch = (args.batch_bytes / (args.size + 20).max(1)).max(1) as u64;
    // One connection per distinct leader, a reader task per connection.
    let mut conns: HashMap<String, (WriteHalf, mpsc::Sender<(Instant, u64)>)> = HashMap::new();
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<Result<(Duration, u64, bool), CliError>>();
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    for (_, addr) in &parts {
        if conns.contains_key(addr) {
            continue;
        }
        let c = Conn::open(addr).await?;
        let (tx, mut rx) = mpsc::channel::<(Instant, u64)>(in_flight * 4 + 4);
        let (mut r, done_tx, slots) = (c.r, done_tx.clone(), slots.clone());
        if acks != 0 {
            tokio::spawn(async move {
                while let Some((sent, records)) = rx.recv().await {
                    let out = Conn::recv::<ProduceResponse>(&mut r, 9)
                        .await
                        .map(|(_, p)| {
                            let ok = p
                                .responses
                                .iter()
                                .flat_map(|t| t.partition_responses.iter())
                                .all(|p| p.error_code == 0);
                            (sent.elapsed(), records, ok)
                        });
                    slots.add_permits(1);
                    let stop = out.is_err();
                    let _ = done_tx.send(out);
                    if stop {
                        return;
                    }
                }
            });
        }
        conns.insert(addr.clone(), (c.w, tx));
    }
    drop(done_tx);
    let topic = topic_name(&args.topic);
    let mut builder = RecordBatchBuilder::with_capacity(args.batch_bytes + 1024);
    builder.set_compression(args.compression.codec());
    let mut sent_records = 0u64;
    let mut id = 1i32;
    let mut turn = 0usize;
    let mut hist = histogram();
    let (mut ok, mut bad) = (0u64, 0u64);
    let collect = |r: Result<(Duration, u64, bool), CliError>,
                   hist: &mut hdrhistogram::Histogram<u64>,
                   ok: &mut u64,
                   bad: &mut u64|
     -> Result<(), CliError> {
        let (lat, records, good) = r?;
        if good {
            let us = u64::try_from(lat.as_micros()).unwrap_or(u64::MAX).max(1);
            let _ = hist.record_n(us, records);
            *ok += records;
            acked.fetch_add(records, Ordering::Relaxed);
        } else {
            *bad += records;
        }
        Ok(())
    };
    // --throughput: this producer's share, paced per batch; a paced batch
    // holds at most 10 ms of records so the rate is smooth, not bursts.
    let rate = args.throughput as f64 / args.producers.max(1) as f64;
    let per_batch = if rate > 0.0 {
        per_batch.min(((rate / 100.0) as u64).max(1))
    } else {
        per_batch
    };
    let paced_from = Instant::now();
    while sent_records < n {
        if rate > 0.0 {
            let due = paced_from + Duration::from_secs_f64(sent_records as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let count = per_batch.min(n - sent_records);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
        for _ in 0..count {
            builder.push(now_ms, None, Some(&payload), &[]);
        }
        let records = builder.finish();
        let (partition, addr) = &parts[turn % parts.len()];
        turn += 1;
        let body = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(*partition)
                        .with_records(Some(records)),
                ])]);
        if acks != 0 {
            // Wait for a free slot (collecting acknowledgements meanwhile).
            loop {
                if let Ok(p) = slots.clone().try_acquire_owned() {
                    p.forget();
                    break;
                }
                match done_rx.recv().await {
                    Some(r) => collect(r, &mut hist, &mut ok, &mut bad)?,
                    None => return Err(err("a connection closed")),
                }
            }
        }
        let (w, tx) = conns.get_mut(addr).ok_or_else(|| err("no connection"))?;
        Conn::send(w, ApiKey::Produce, 9, id, &body).await?;
        id = id.wrapping_add(1);
        if acks != 0 {
            tx.send((Instant::now(), count)).await.map_err(err)?;
        } else {
            ok += count;
            acked.fetch_add(count, Ordering::Relaxed);
        }
        sent_records += count;
    }
    drop(conns);
    while let Some(r) = done_rx.recv().await {
        collect(r, &mut hist, &mut ok, &mut bad)?;
    }
    Ok((hist, ok, bad))
}

/// `bench consume --protocol kafka`.
pub(crate) async fn consume(bootstrap: &str, args: BenchArgs) -> Result<i32, CliError> {
    let parts = leaders(bootstrap, &args, false).await?;
    let k = args.producers.max(1);
    // End offsets now: each consumer reads its share up to there.
    let mut c = Conn::open(bootstrap).await?;
    let lo: ListOffsetsResponse = c
        .call(
            ApiKey::ListOffsets,
            5,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic_name(&args.topic))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|(p, _)| {
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_partition_index(*p)
                                    .with_timestamp(-1)
                            })
                            .collect(),
                    )]),
        )
        .await?;
    let ends: HashMap<i32, i64> = lo
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.offset))
        .collect();
    let available: u64 = ends.values().map(|e| u64::try_from(*e).unwrap_or(0)).sum();
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
        let mine: Vec<(i32, String, i64)> = parts
            .iter()
            .enumerate()
            .filter(|(j, (p, _))| j % k == i && ends.get(p).copied().unwrap_or(0) > 0)
            .map(|(_, (p, a))| (*p, a.clone(), ends.get(p).copied().unwrap_or(0)))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let (topic, consumed) = (args.topic.clone(), consumed.clone());
        tasks.push(tokio::spawn(async move {
            consume_one(topic, mine, target, consumed).await
        }));
    }
    let mut hist = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    for t in tasks {
        let (h, r, b) = t.await.map_err(err)??;
        hist.add(h).map_err(err)?;
        records += r;
        bytes += b;
    }
    let elapsed = started.elapsed();
    ticker.abort();
    pb.finish_and_clear();
    report(
        &Summary {
            mode: "consume",
            flush: None,
            messages: records,
            bytes,
            elapsed,
            hist,
            failed: 0,
        },
        &args,
    );
    Ok(0)
}

/// One consumer: fetches its partitions (grouped by leader) from offset 0 to their ends.
async fn consume_one(
    topic: String,
    parts: Vec<(i32, String, i64)>,
    target: u64,
    consumed: Arc<AtomicU64>,
) -> Result<(hdrhistogram::Histogram<u64>, u64, u64), CliError> {
    let mut hist = histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut by_leader: HashMap<String, Vec<(i32, i64, i64)>> = HashMap::new();
    for (p, addr, end) in parts {
        by_leader.entry(addr).or_default().push((p, 0, end));
    }
    for (addr, mut ps) in by_leader {
        let mut c = Conn::open(&addr).await?;
        let mut pending: VecDeque<usize> = (0..ps.len()).collect();
        while !pending.is_empty() && consumed.load(Ordering::Relaxed) < target {
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(32 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic_name(&topic))
                    .with_partitions(
                        pending
                            .iter()
                            .map(|i| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(ps[*i].0)
                                    .with_fetch_offset(ps[*i].1)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    )]);
            let t0 = Instant::now();
            let f: FetchResponse = c.call(ApiKey::Fetch, 12, &req).await?;
            let us = u64::try_from(t0.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let _ = hist.record(us);
            for part in f.responses.iter().flat_map(|t| t.partitions.iter()) {
                if part.error_code != 0 {
                    return Err(err(format!(
                        "fetch of partition {}: error {}",
                        part.partition_index, part.error_code
                    )));
                }
                let Some(slot) = ps.iter_mut().find(|s| s.0 == part.partition_index) else {
                    continue;
                };
                let mut data: Bytes = part.records.clone().unwrap_or_default();
                // Records are decoded as the native consumer decodes them
                // (value sizes summed), so both benches do the same work.
                while let Ok(batch) = RecordBatch::parse(&data) {
                    let h = *batch.header();
                    let len = h.total_len();
                    let next = h.last_offset() + 1;
                    if next > slot.1 {
                        let mut n = 0u64;
                        for r in batch.records().flatten() {
                            if r.offset >= slot.1 {
                                n += 1;
                                bytes += r.value.map_or(0, |v| v.len()) as u64;
                            }
                        }
                        records += n;
                        consumed.fetch_add(n, Ordering::Relaxed);
                        slot.1 = next;
                    }
                    data.advance(len.min(data.len()));
                }
            }
            pending.retain(|i| ps[*i].1 < ps[*i].2);
        }
    }
    Ok((hist, records, bytes))
}
