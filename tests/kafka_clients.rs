//! Real Kafka clients against real `sluiced` processes on their Kafka
//! listener: kcat (Debian's package, librdkafka), confluent-kafka 2.12.1
//! (librdkafka), kafka-python 2.2.15 and kafkajs 2.2.4, pinned and installed
//! by `tests/kafka/setup.sh` (.ci/run calls it; the first test here calls it
//! too, which takes well under a second once everything is installed, and
//! every test fails with the script's output when it cannot install).
//!
//! The client programs are `tests/kafka/{confluent_client.py,
//! kafka_python_client.py, kafkajs_client.js}`: each runs one scenario,
//! checks what it read itself (byte for byte) and prints JSON lines ending
//! with a `{"scenario", "ok"}` summary; every wait in them is bounded and a
//! watchdog ends them, and the harness SIGKILLs one that outlives
//! [`CLIENT_TIMEOUT`]. Each client's scenarios share one broker and run one
//! after another; a failing scenario does not stop the others, and the test
//! then fails naming each failed scenario with the client's output and the
//! broker's log tail. The harness also checks what only the broker can
//! show: compressed batches stored as the client compressed them, the
//! idempotent producer's ids and sequences in the stored batches, and the
//! native <-> Kafka round trips (native client and `sluice` CLI on one side,
//! each Kafka client on the other).
//!
//! The three-node test kills (SIGKILL) the leader of partition 0 of an RF-3
//! topic while an idempotent confluent-kafka producer sends 20,000 records
//! with acks=all, then reads everything back with confluent-kafka and with
//! the native checker of `common::workload`: every acknowledged record
//! exactly once, at its acknowledged offset, in order per partition.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{ClusterSpec, TestCluster};
use common::process::{output_within, text, KillOnDrop};
use common::workload::{self, leader_of, SEEN};
use common::{bin_path, sluice_cli, RawClient};
use serde_json::Value;
use sluice::{Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, Record, SeekTo};
use sluice_protocol::batch::{batches, BatchHeader, Compression};
use sluice_protocol::{Acks, ErrorCode};

/// Bound on one client program (each also has its own 100 s watchdog).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one kcat or `sluice` CLI run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Initial rebalance delay of the brokers' Kafka groups (Kafka's default is
/// 3 s). The client suites wait for both members to share the partitions,
/// whatever the generation; kcat members read as soon as they are assigned
/// and exit at the end, so the kcat broker waits longer for both to join.
const REBALANCE_DELAY_MS: u64 = 300;
const KCAT_REBALANCE_DELAY_MS: u64 = 1500;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kafka_dir() -> PathBuf {
    repo().join("tests/kafka")
}

/// Runs `tests/kafka/setup.sh` once per test binary; every test fails with
/// its output when it could not install the clients.
fn setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let done = SETUP.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(kafka_dir().join("setup.sh"));
        let out = output_within(cmd, None, Duration::from_secs(600));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/kafka/setup.sh could not install the Kafka clients ({}); \
                 run `bash tests/kafka/setup.sh` and fix what it reports:\n{}{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ))
        }
    });
    if let Err(e) = done {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------- the broker

/// A `sluiced` with all three listeners on free ports and a short initial
/// rebalance delay, on a temp data dir; SIGKILLed on drop.
struct Broker {
    child: Child,
    native: SocketAddr,
    kafka: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Parses `listening native=IP:PORT http=IP:PORT kafka=IP:PORT`: (native, kafka).
fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("listening ")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|part| part.strip_prefix(name)?.parse().ok())
    };
    Some((field("native=")?, field("kafka=")?))
}

impl Broker {
    fn start(rebalance_delay_ms: u64) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).expect("broker log");
        let mut child = Command::new(bin_path("sluiced"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .arg("--group-initial-rebalance-delay-ms")
            .arg(rebalance_delay_ms.to_string())
            .env_remove("SLUICE_CONFIG")
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluiced");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some((native, kafka)) = parse_listening(&line) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluiced did not start (first line {line:?}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        };
        Broker {
            child,
            native,
            kafka,
            log_path,
            _dir: dir,
        }
    }

    fn boot(&self) -> String {
        self.kafka.to_string()
    }

    fn log_tail(&self, n: usize) -> String {
        tail(
            &std::fs::read_to_string(&self.log_path).unwrap_or_default(),
            n,
        )
    }

    /// CreateTopics through the native protocol.
    fn create_topic(&self, name: &str, partitions: u32) {
        let code = RawClient::connect(self.native).create_topic(name, partitions, &[]);
        assert_eq!(code, ErrorCode::None, "create {name}");
    }

    /// Every batch of `topic/partition` as stored, through a native Fetch.
    fn stored_batches(&self, topic: &str, partition: u32) -> Vec<BatchHeader> {
        let mut c = RawClient::connect(self.native);
        let mut out: Vec<BatchHeader> = Vec::new();
        let mut offset = 0u64;
        loop {
            let p = c.fetch(topic, partition, offset);
            assert_eq!(
                p.error,
                ErrorCode::None,
                "fetch {topic}/{partition}@{offset}"
            );
            if p.records.is_empty() {
                return out;
            }
            for b in batches(&p.records) {
                let h = *b.expect("a valid batch").header();
                if h.last_offset() >= offset as i64 {
                    out.push(h);
                }
            }
            offset = out
                .last()
                .map(|h| h.last_offset() as u64 + 1)
                .unwrap_or(offset);
            if offset >= p.high_watermark {
                return out;
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- clients

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Confluent,
    KafkaPython,
    Kafkajs,
}

impl Client {
    fn command(self) -> Command {
        let venv_python = repo().join("target/kafka-clients/venv/bin/python");
        let (program, script) = match self {
            Client::Confluent => (venv_python, "confluent_client.py"),
            Client::KafkaPython => (venv_python, "kafka_python_client.py"),
            Client::Kafkajs => (PathBuf::from("node"), "kafkajs_client.js"),
        };
        let mut cmd = Command::new(program);
        cmd.arg(kafka_dir().join(script))
            .env("KAFKAJS_NO_PARTITIONER_WARNING", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        cmd
    }

    /// The timestamp type a client prints for CreateTime.
    fn create_time(self) -> Option<i64> {
        match self {
            Client::Confluent => Some(1),
            Client::KafkaPython => Some(0),
            Client::Kafkajs => None,
        }
    }

    /// Codecs the client's compression scenario covers.
    fn codecs(self) -> &'static [Compression] {
        match self {
            Client::Confluent | Client::KafkaPython => &[
                Compression::Gzip,
                Compression::Snappy,
                Compression::Lz4,
                Compression::Zstd,
            ],
            Client::Kafkajs => &[Compression::Gzip, Compression::Snappy],
        }
    }
}

/// A finished client program.
struct Run {
    /// Every JSON line it printed.
    lines: Vec<Value>,
    /// The closing `{"scenario", "ok": true}` line.
    summary: Value,
}

fn describe(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let tail: Vec<&str> = stderr.lines().collect();
    format!(
        "exit {}\n--- stdout\n{}--- stderr (last 40 lines)\n{}",
        out.status,
        text(&out.stdout),
        tail[tail.len().saturating_sub(40)..].join("\n")
    )
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    text(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs `client BOOTSTRAP SCENARIO NAME ARGS...`; Ok when it exited 0 with
/// an `ok: true` summary.
fn run_client(
    client: Client,
    boot: &str,
    scenario: &str,
    name: &str,
    args: &[&str],
) -> Result<Run, String> {
    let mut cmd = client.command();
    cmd.args([boot, scenario, name]).args(args);
    let out = output_within(cmd, None, CLIENT_TIMEOUT);
    let lines = json_lines(&out.stdout);
    let summary = lines
        .iter()
        .rev()
        .find(|l| l.get("scenario").is_some())
        .cloned();
    match summary {
        Some(s) if out.status.success() && s["ok"] == Value::Bool(true) => {
            Ok(Run { lines, summary: s })
        }
        _ => Err(format!("{client:?} {scenario} failed: {}", describe(&out))),
    }
}

/// Runs a tool (kcat, the `sluice` CLI) with `stdin`; Ok(stdout) on success.
fn run_tool(mut cmd: Command, stdin: Option<&[u8]>) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = output_within(
        {
            cmd.env_remove("RUST_LOG");
            cmd
        },
        stdin,
        TOOL_TIMEOUT,
    );
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!("{what} failed: {}", describe(&out)))
    }
}

fn kcat(boot: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", boot]).args(args);
    cmd
}

/// Scenarios of one client run one after another; failures are collected
/// and reported together at the end.
struct Suite<'a> {
    name: &'static str,
    broker: &'a Broker,
    failures: Vec<String>,
    started: Instant,
}

impl<'a> Suite<'a> {
    fn new(name: &'static str, broker: &'a Broker) -> Suite<'a> {
        Suite {
            name,
            broker,
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

    fn step(&mut self, what: &str, f: impl FnOnce() -> Result<(), String>) {
        let t = Instant::now();
        let result = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string())),
        };
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => eprintln!("{}: {what}: ok in {secs:.1} s", self.name),
            Err(e) => {
                eprintln!("{}: {what}: FAILED in {secs:.1} s", self.name);
                self.failures.push(format!("=== {what}\n{e}"));
            }
        }
    }

    fn finish(self) {
        eprintln!(
            "{}: {} s in all",
            self.name,
            self.started.elapsed().as_secs()
        );
        assert!(
            self.failures.is_empty(),
            "{}: {} scenario(s) failed:\n{}\n=== broker log (tail)\n{}",
            self.name,
            self.failures.len(),
            self.failures.join("\n"),
            self.broker.log_tail(80)
        );
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

// ---------------------------------------------------------------- native side

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A record the native side writes or expects, compared as the clients
/// print records: hex key/value (None for null), headers, timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    p: u32,
    o: u64,
    k: Option<String>,
    v: Option<String>,
    h: Vec<(String, String)>,
    ts: i64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rec_of(r: &ConsumerRecord) -> Rec {
    Rec {
        p: r.partition,
        o: r.offset,
        k: r.key.as_deref().map(hex),
        v: r.value.as_deref().map(hex),
        h: r.headers.iter().map(|(k, v)| (k.clone(), hex(v))).collect(),
        ts: r.timestamp,
    }
}

/// A record as a client printed it (`rec` or `wrote` objects).
fn rec_from_json(v: &Value) -> Result<Rec, String> {
    let bad = || format!("malformed record {v}");
    let opt_str = |x: &Value| x.as_str().map(str::to_string);
    Ok(Rec {
        p: v["p"].as_u64().ok_or_else(bad)? as u32,
        o: v["o"].as_u64().ok_or_else(bad)?,
        k: opt_str(&v["k"]),
        v: opt_str(&v["v"]),
        h: v["h"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|pair| {
                Some((
                    pair.get(0)?.as_str()?.to_string(),
                    pair.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?,
        ts: v["ts"].as_i64().ok_or_else(bad)?,
    })
}

/// Records the native producer writes for the Kafka clients to read:
/// binary keys and values, a null value, a record without headers, and
/// explicit timestamps; record `i` to partition `i % 2`.
fn native_records(topic: &str, n: u32, base_ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let mut r = Record::new(topic.to_string(), Bytes::new())
                .key(vec![b'n', b'k', i as u8, 0x00, 0xfe])
                .partition(i % 2)
                .timestamp(base_ts + i64::from(i) * 7);
            r.value = if i == 5 {
                None
            } else {
                Some(Bytes::from(
                    (0..(i * 3))
                        .map(|j| (j * 31 + i) as u8)
                        .collect::<Vec<u8>>(),
                ))
            };
            if i != 2 {
                r = r
                    .header("origin", Bytes::from_static(b"sluice-native"))
                    .header("n", vec![i as u8, 0, 0xff]);
            }
            r
        })
        .collect()
}

/// Produces `records` with the native client (acks=durable); returns them
/// as [`Rec`]s with the offsets they were acknowledged at.
fn produce_native(broker: &Broker, records: Vec<Record>) -> Vec<Rec> {
    runtime().block_on(async {
        let producer = Producer::with_config(
            sluice::ClientConfig::new(broker.native.to_string()),
            ProducerConfig {
                acks: Acks::Durable,
                ..ProducerConfig::default()
            },
        );
        let mut out = Vec::new();
        for r in records {
            let expect = Rec {
                p: 0,
                o: 0,
                k: r.key.as_deref().map(hex),
                v: r.value.as_deref().map(hex),
                h: r.headers.iter().map(|(k, v)| (k.clone(), hex(v))).collect(),
                ts: r.timestamp.expect("explicit timestamp"),
            };
            let (p, o) = tokio::time::timeout(Duration::from_secs(30), producer.send(r))
                .await
                .expect("native produce within 30 s")
                .expect("native produce");
            out.push(Rec { p, o, ..expect });
        }
        producer.close().await;
        out
    })
}

/// Reads `n` records of `topic` (partitions `0..partitions`) with the
/// native consumer, from the earliest offset.
fn read_native(
    broker: &Broker,
    topic: &str,
    partitions: u32,
    n: usize,
) -> Result<Vec<Rec>, String> {
    runtime().block_on(async {
        let mut consumer = Consumer::with_config(
            sluice::ClientConfig::new(broker.native.to_string()),
            ConsumerConfig {
                start: SeekTo::Earliest,
                ..ConsumerConfig::default()
            },
        );
        consumer.assign((0..partitions).map(|p| (topic.to_string(), p)).collect());
        let mut out = Vec::new();
        let reading = async {
            while out.len() < n {
                match consumer.next().await {
                    Some(Ok(r)) => out.push(rec_of(&r)),
                    Some(Err(e)) => return Err(format!("native consumer: {e}")),
                    None => return Err("native consumer ended".to_string()),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(30), reading).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(format!(
                    "native read {} of {n} records of {topic}",
                    out.len()
                ))
            }
        }
        out.sort_by_key(|r| (r.p, r.o));
        Ok(out)
    })
}

fn by_position(recs: &[Rec]) -> BTreeMap<(u32, u64), Rec> {
    recs.iter().map(|r| ((r.p, r.o), r.clone())).collect()
}

/// Compares two sets of records by (partition, offset), field by field.
fn same_records(what: &str, want: &[Rec], got: &[Rec]) -> Result<(), String> {
    let (w, g) = (by_position(want), by_position(got));
    for (at, r) in &w {
        match g.get(at) {
            None => return Err(format!("{what}: nothing read at {at:?}, want {r:?}")),
            Some(x) if x != r => {
                return Err(format!("{what}: at {at:?}\n  read  {x:?}\n  wrote {r:?}"))
            }
            Some(_) => {}
        }
    }
    ensure(w.len() == g.len(), || {
        format!("{what}: read {} records, wrote {}", g.len(), w.len())
    })
}

// ---------------------------------------------------------------- one client

/// Every scenario of `client` against one broker.
fn client_suite(client: Client, suite_name: &'static str, prefix: &str) {
    setup();
    let broker = Broker::start(REBALANCE_DELAY_MS);
    let boot = broker.boot();
    let mut s = Suite::new(suite_name, &broker);
    let name = |what: &str| format!("{prefix}-{what}");

    s.step(
        "(a) roundtrip: admin create, keyed records with headers and timestamps, acks=all",
        || {
            let run = run_client(client, &boot, "roundtrip", &name("roundtrip"), &[])?;
            ensure(run.summary["records"] == 200, || format!("{}", run.summary))?;
            // The topic the admin API created has 4 partitions on the broker too.
            let m = RawClient::connect(broker.native).metadata(&[&name("roundtrip")]);
            ensure(m.topics[0].partitions.len() == 4, || format!("{m:?}"))
        },
    );

    s.step(
        "(b) group: two members split the partitions, commit, one restarts and resumes",
        || {
            let run = run_client(client, &boot, "group", &name("group"), &[])?;
            let set = |k: &str| -> BTreeSet<u64> {
                run.summary[k]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default()
            };
            let (a, b) = (set("a"), set("b"));
            ensure(
                !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.len() + b.len() == 4,
                || format!("members' partitions: {}", run.summary),
            )?;
            ensure(run.summary["a2_read"].as_u64() > Some(0), || {
                format!("{}", run.summary)
            })
        },
    );

    s.step("(c) offsets: earliest, latest, by timestamp, seek", || {
        run_client(client, &boot, "offsets", &name("offsets"), &[]).map(|_| ())
    });

    s.step(
        "(d) compression: each codec stored as compressed and read back",
        || {
            let run = run_client(client, &boot, "compression", &name("comp"), &[])?;
            let mut want: Vec<&str> = client.codecs().iter().map(|c| c.name()).collect();
            want.sort_unstable();
            ensure(run.summary["codecs"] == serde_json::json!(want), || {
                format!("codecs {}", run.summary["codecs"])
            })?;
            for codec in client.codecs() {
                let topic = name(&format!("comp-{}", codec.name()));
                let stored = broker.stored_batches(&topic, 0);
                ensure(!stored.is_empty(), || format!("{topic}: no batch stored"))?;
                // A client may send a batch uncompressed when compressing
                // did not make it smaller (librdkafka does, for a batch of a
                // record or two that linger cut off): never another codec,
                // and the codec's batches hold most of the records.
                let mut compressed = 0;
                for h in &stored {
                    ensure(
                        h.compression() == Ok(*codec) || h.compression() == Ok(Compression::None),
                        || {
                            format!(
                                "{topic}: batch at {} stored as {:?}",
                                h.base_offset,
                                h.compression()
                            )
                        },
                    )?;
                    if h.compression() == Ok(*codec) {
                        compressed += h.record_count;
                    }
                }
                ensure(compressed >= 270, || {
                    format!(
                        "{topic}: only {compressed} of 300 records stored compressed: {stored:?}"
                    )
                })?;
                let n: i32 = stored.iter().map(|h| h.record_count).sum();
                ensure(n == 300, || format!("{topic}: {n} records stored"))?;
                // The native consumer reads the same compressed batches.
                let native = read_native(&broker, &topic, 1, 300)?;
                ensure(native.len() == 300, || {
                    format!("{topic}: native read {}", native.len())
                })?;
            }
            Ok(())
        },
    );

    s.step(
        "(e) idempotent producer: no duplicates, producer ids and sequences stored",
        || {
            let topic = name("idem");
            run_client(client, &boot, "idempotent", &topic, &[])?;
            for p in 0..3 {
                let stored = broker.stored_batches(&topic, p);
                ensure(!stored.is_empty(), || {
                    format!("{topic}/{p}: nothing stored")
                })?;
                let mut next_seq = None;
                for h in &stored {
                    ensure(h.producer_id >= 0, || {
                        format!(
                            "{topic}/{p}: batch at {} without a producer id: {h:?}",
                            h.base_offset
                        )
                    })?;
                    if let Some(want) = next_seq {
                        ensure(h.base_sequence == want, || {
                            format!(
                                "{topic}/{p}: batch at {} has sequence {}, want {want}",
                                h.base_offset, h.base_sequence
                            )
                        })?;
                    }
                    next_seq = Some(h.base_sequence + h.record_count);
                }
            }
            Ok(())
        },
    );

    s.step(
        "(f) native -> Kafka: native producer records read by the client",
        || {
            let topic = name("from-native");
            broker.create_topic(&topic, 2);
            let wrote = produce_native(
                &broker,
                native_records(&topic, 20, common::now_ms() - 30_000),
            );
            let run = run_client(client, &boot, "read", &topic, &["20"])?;
            let mut read = Vec::new();
            for l in run.lines.iter().filter(|l| l.get("rec").is_some()) {
                read.push(rec_from_json(&l["rec"])?);
                if let (Some(want), Some(got)) =
                    (client.create_time(), l["rec"]["ts_type"].as_i64())
                {
                    ensure(got == want, || format!("timestamp type {l}"))?;
                }
            }
            same_records("native -> kafka", &wrote, &read)
        },
    );

    s.step(
        "(f) sluice CLI -> Kafka: keys and values typed into `sluice topic produce`",
        || {
            let topic = name("from-cli");
            broker.create_topic(&topic, 1);
            let input: String = (0..10).map(|i| format!("ck-{i}:cv-{i}\n")).collect();
            let before = common::now_ms();
            let mut cmd = sluice_cli(&broker.native.to_string());
            cmd.args([
                "topic",
                "produce",
                &topic,
                "--key-separator",
                ":",
                "--acks",
                "durable",
            ]);
            run_tool(cmd, Some(input.as_bytes()))?;
            let after = common::now_ms();
            let run = run_client(client, &boot, "read", &topic, &["10"])?;
            let recs: Vec<Rec> = run
                .lines
                .iter()
                .filter(|l| l.get("rec").is_some())
                .map(|l| rec_from_json(&l["rec"]))
                .collect::<Result<_, _>>()?;
            for (i, r) in recs.iter().enumerate() {
                let want_k = hex(format!("ck-{i}").as_bytes());
                let want_v = hex(format!("cv-{i}").as_bytes());
                ensure(
                    r.o == i as u64
                        && r.k.as_deref() == Some(&want_k)
                        && r.v.as_deref() == Some(&want_v)
                        && r.h.is_empty()
                        && (before..=after).contains(&r.ts),
                    || format!("record {i} read as {r:?} (produced between {before} and {after})"),
                )?;
            }
            ensure(recs.len() == 10, || format!("read {} of 10", recs.len()))
        },
    );

    s.step(
        "(f) Kafka -> native: client records read by the native consumer and the CLI",
        || {
            let topic = name("to-native");
            broker.create_topic(&topic, 2);
            let base = common::now_ms() - 20_000;
            let run = run_client(client, &boot, "write", &topic, &[&base.to_string(), "20"])?;
            let wrote: Vec<Rec> = run
                .lines
                .iter()
                .filter(|l| l.get("wrote").is_some())
                .map(|l| rec_from_json(&l["wrote"]))
                .collect::<Result<_, _>>()?;
            ensure(wrote.len() == 20, || {
                format!("client wrote {}", wrote.len())
            })?;
            let read = read_native(&broker, &topic, 2, 20)?;
            same_records("kafka -> native", &wrote, &read)?;
            // The CLI prints the same partitions, offsets and timestamps
            // (header values are binary, with newlines: the native consumer
            // checked them above).
            let mut cmd = sluice_cli(&broker.native.to_string());
            cmd.args(["topic", "consume", &topic, "-n", "20"]).args([
                "--exit-idle",
                "10000",
                "-f",
                "%p %o %t\\n",
            ]);
            let out = run_tool(cmd, None)?;
            let mut printed: Vec<&str> = out.lines().collect();
            printed.sort_unstable();
            let mut want: Vec<String> = wrote
                .iter()
                .map(|r| format!("{} {} {}", r.p, r.o, r.ts))
                .collect();
            want.sort();
            ensure(printed == want, || {
                format!("sluice topic consume printed\n{out}\nwant {want:#?}")
            })
        },
    );

    s.finish();
}

#[test]
fn confluent_kafka_scenarios() {
    client_suite(Client::Confluent, "confluent-kafka", "cf");
}

#[test]
fn kafka_python_scenarios() {
    client_suite(Client::KafkaPython, "kafka-python", "kp");
}

#[test]
fn kafkajs_scenarios() {
    client_suite(Client::Kafkajs, "kafkajs", "kj");
}

// ---------------------------------------------------------------- kcat

/// Parses kcat `-f '%p|%o|%k|%s|%h|%T\n'` lines.
fn kcat_lines(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

#[test]
fn kcat_metadata_produce_consume_query_and_group() {
    setup();
    let broker = Broker::start(KCAT_REBALANCE_DELAY_MS);
    let boot = broker.boot();
    let mut s = Suite::new("kcat", &broker);

    s.step("-L metadata (JSON)", || {
        broker.create_topic("kc-meta", 3);
        let out = run_tool(kcat(&boot, &["-L", "-J", "-t", "kc-meta"]), None)?;
        let m: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        let brokers = m["brokers"].as_array().cloned().unwrap_or_default();
        ensure(
            brokers.len() == 1 && brokers[0]["name"] == Value::String(boot.clone()),
            || format!("brokers in {out}"),
        )?;
        let topic = &m["topics"][0];
        ensure(
            topic["topic"] == "kc-meta"
                && topic["partitions"].as_array().map(Vec::len) == Some(3)
                && topic["partitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|p| p["leader"] == brokers[0]["id"]),
            || format!("topic in {out}"),
        )
    });

    s.step(
        "-P with -K: keys and -H headers, -C with -f, read natively too",
        || {
            let topic = "kc-data";
            broker.create_topic(topic, 3);
            let input: String = (0..30).map(|i| format!("key-{i}:value-{i}\n")).collect();
            let before = common::now_ms();
            run_tool(
                kcat(
                    &boot,
                    &[
                        "-P",
                        "-t",
                        topic,
                        "-K:",
                        "-H",
                        "origin=kcat",
                        "-H",
                        "n=7",
                        "-X",
                        "acks=all",
                    ],
                ),
                Some(input.as_bytes()),
            )?;
            let after = common::now_ms();
            let out = run_tool(
                kcat(
                    &boot,
                    &[
                        "-C",
                        "-t",
                        topic,
                        "-e",
                        "-o",
                        "beginning",
                        "-f",
                        "%p|%o|%k|%s|%h|%T\\n",
                    ],
                ),
                None,
            )?;
            let lines = kcat_lines(&out);
            ensure(lines.len() == 30, || {
                format!("kcat read {} records:\n{out}", lines.len())
            })?;
            let mut keys = BTreeSet::new();
            for l in &lines {
                let i: u32 = l[2]
                    .strip_prefix("key-")
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| format!("line {l:?}"))?;
                let ts: i64 = l[5].parse().map_err(|_| format!("line {l:?}"))?;
                ensure(
                    l[3] == format!("value-{i}")
                        && l[4] == "origin=kcat,n=7"
                        && (before..=after).contains(&ts),
                    || format!("line {l:?}"),
                )?;
                keys.insert(i);
            }
            ensure(keys.len() == 30, || format!("keys {keys:?}"))?;
            // Native consumer: the same records with the header bytes intact.
            let native = read_native(&broker, topic, 3, 30)?;
            for r in &native {
                let l = lines
                    .iter()
                    .find(|l| l[0] == r.p.to_string() && l[1] == r.o.to_string())
                    .ok_or_else(|| format!("kcat did not print {r:?}"))?;
                ensure(
                    r.k == Some(hex(l[2].as_bytes()))
                        && r.v == Some(hex(l[3].as_bytes()))
                        && r.h
                            == vec![
                                ("origin".to_string(), hex(b"kcat")),
                                ("n".to_string(), hex(b"7")),
                            ]
                        && r.ts.to_string() == l[5],
                    || format!("native {r:?} vs kcat {l:?}"),
                )?;
            }
            Ok(())
        },
    );

    s.step("sluice CLI -> kcat and kcat -> sluice CLI", || {
        broker.create_topic("kc-from-cli", 1);
        let input: String = (0..10).map(|i| format!("sk-{i}:sv-{i}\n")).collect();
        let mut cmd = sluice_cli(&broker.native.to_string());
        cmd.args(["topic", "produce", "kc-from-cli", "--key-separator", ":"]);
        run_tool(cmd, Some(input.as_bytes()))?;
        let out = run_tool(
            kcat(
                &boot,
                &[
                    "-C",
                    "-t",
                    "kc-from-cli",
                    "-e",
                    "-o",
                    "beginning",
                    "-f",
                    "%o|%k|%s|%h\\n",
                ],
            ),
            None,
        )?;
        let want: String = (0..10).map(|i| format!("{i}|sk-{i}|sv-{i}|\n")).collect();
        ensure(out == want, || format!("kcat printed\n{out}\nwant\n{want}"))?;

        broker.create_topic("kc-to-cli", 1);
        let input: String = (0..10).map(|i| format!("kk-{i}:kv-{i}\n")).collect();
        run_tool(
            kcat(
                &boot,
                &["-P", "-t", "kc-to-cli", "-K:", "-H", "origin=kcat"],
            ),
            Some(input.as_bytes()),
        )?;
        let mut cmd = sluice_cli(&broker.native.to_string());
        cmd.args([
            "topic",
            "consume",
            "kc-to-cli",
            "-n",
            "10",
            "--exit-idle",
            "10000",
        ])
        .args(["-f", "%o|%k|%v|%h\\n"]);
        let out = run_tool(cmd, None)?;
        let want: String = (0..10)
            .map(|i| format!("{i}|kk-{i}|kv-{i}|origin=kcat\n"))
            .collect();
        ensure(out == want, || {
            format!("sluice printed\n{out}\nwant\n{want}")
        })
    });

    s.step("-Q offsets by timestamp", || {
        let topic = "kc-times";
        broker.create_topic(topic, 1);
        let base = common::now_ms() - 60_000;
        let recs: Vec<Record> = (0..20)
            .map(|i| {
                Record::new(topic, format!("t-{i}"))
                    .partition(0)
                    .timestamp(base + i * 1000)
            })
            .collect();
        produce_native(&broker, recs);
        for (ts, want) in [
            (base - 1, 0),
            (base + 5500, 6),
            (base + 19_000, 19),
            (base + 19_001, -1),
        ] {
            let arg = format!("{topic}:0:{ts}");
            let out = run_tool(kcat(&boot, &["-Q", "-t", &arg]), None)?;
            ensure(out.trim() == format!("{topic} [0] offset {want}"), || {
                format!(
                    "-Q {arg} (base+{}) printed {out:?}, want offset {want}",
                    ts - base
                )
            })?;
        }
        // Logical offsets: -1 is the end, -2 the beginning.
        for (logical, want) in [(-1, 20), (-2, 0)] {
            let arg = format!("{topic}:0:{logical}");
            let out = run_tool(kcat(&boot, &["-Q", "-t", &arg]), None)?;
            ensure(out.trim() == format!("{topic} [0] offset {want}"), || {
                format!("-Q {arg} printed {out:?}, want offset {want}")
            })?;
        }
        Ok(())
    });

    s.step(
        "-G balanced consumer group: two members split, commit, a third run reads nothing",
        || {
            let topic = "kc-group";
            broker.create_topic(topic, 4);
            let input: String = (0..40).map(|i| format!("gk-{i}:gv-{i}\n")).collect();
            run_tool(
                kcat(&boot, &["-P", "-t", topic, "-K:"]),
                Some(input.as_bytes()),
            )?;
            let member = || {
                let mut cmd = kcat(
                    &boot,
                    &[
                        "-G",
                        "kc-grp",
                        "-X",
                        "auto.offset.reset=earliest",
                        "-e",
                        "-f",
                        "%p|%o|%k|%s\\n",
                        topic,
                    ],
                );
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                cmd.spawn().map_err(|e| format!("spawn kcat: {e}"))
            };
            let (a, b) = (member()?, member()?);
            let outs = [a, b].map(|c| common::process::wait_output_within(c, TOOL_TIMEOUT));
            let mut all = BTreeMap::new();
            let mut parts = Vec::new();
            for out in &outs {
                ensure(out.status.success(), || describe(out))?;
                let lines = kcat_lines(&text(&out.stdout));
                ensure(!lines.is_empty(), || {
                    format!("a member read nothing: {}", describe(out))
                })?;
                let ps: BTreeSet<String> = lines.iter().map(|l| l[0].clone()).collect();
                parts.push(ps);
                for l in lines {
                    if let Some(prev) = all.insert(l[2].clone(), l.clone()) {
                        return Err(format!("{} read twice: {prev:?} and {l:?}", l[2]));
                    }
                }
            }
            ensure(parts[0].is_disjoint(&parts[1]), || {
                format!("members' partitions {parts:?}")
            })?;
            ensure(all.len() == 40, || {
                format!("the group read {} of 40", all.len())
            })?;
            // The group committed on close: a new member starts at the end.
            let out = run_tool(
                kcat(
                    &boot,
                    &[
                        "-G",
                        "kc-grp",
                        "-X",
                        "auto.offset.reset=earliest",
                        "-e",
                        "-f",
                        "%p|%o|%k|%s\\n",
                        topic,
                    ],
                ),
                None,
            )?;
            ensure(out.is_empty(), || {
                format!("a third member re-read committed records:\n{out}")
            })
        },
    );

    s.finish();
}

// ---------------------------------------------------------------- cluster

#[test]
fn cluster_idempotent_confluent_producer_rides_through_a_sigkilled_leader() {
    setup();
    const TOPIC: &str = "ride";
    const PARTITIONS: u32 = 3;
    const RECORDS: u64 = 20_000;
    let mut c = TestCluster::start(ClusterSpec::voters(3).session_timeout_ms(2000));
    let (code, msg) = c.create_topic(1, TOPIC, PARTITIONS, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    for p in c.wait_topic(TOPIC, PARTITIONS, SEEN) {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
    }
    let boot = c
        .ids()
        .iter()
        .map(|id| c.node(*id).kafka_addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    let acked_path = dir.path().join("acked.json");

    let mut cmd = Client::Confluent.command();
    cmd.args([&boot, "failover", TOPIC, &RECORDS.to_string(), "15"])
        .arg(&acked_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop::new(cmd.spawn().expect("spawn confluent_client.py"));
    let stdout = child.get().stdout.take().expect("stdout");
    let mut stderr = child.get().stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut lines = Vec::new();
    let mut killed = None;
    loop {
        let now = Instant::now();
        assert!(
            now < deadline,
            "the producer ran over 150 s; its output:\n{}\n{}",
            lines.join("\n"),
            c.logs()
        );
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let acked = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["progress"].as_u64());
                lines.push(line);
                // A quarter in: kill the leader of partition 0.
                if killed.is_none() && acked.is_some_and(|a| a >= RECORDS / 4) {
                    let leader = leader_of(&mut c, TOPIC, 0);
                    eprintln!(
                        "killing node {leader}, the leader of {TOPIC}/0, at {} acknowledged",
                        acked.unwrap_or(0)
                    );
                    c.kill(leader);
                    killed = Some(leader);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.get().wait().expect("wait for the producer");
    let stderr = stderr_reader.join().unwrap_or_default();
    let summary = lines.iter().rev().find_map(|l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .filter(|v| v.get("scenario").is_some())
    });
    let logs = c.logs();
    assert!(
        killed.is_some(),
        "the producer finished before the kill:\n{}",
        lines.join("\n")
    );
    assert!(
        status.success() && summary.as_ref().is_some_and(|s| s["ok"] == Value::Bool(true)),
        "the idempotent producer did not ride through the kill of node {killed:?} ({status}):\n{}\n--- stderr\n{}\n--- cluster logs\n{logs}",
        lines.iter().filter(|l| !l.starts_with("{\"progress\"")).cloned().collect::<Vec<_>>().join("\n"),
        tail(&stderr, 60),
    );

    // Every acknowledged record exactly once, in order: read by confluent-kafka...
    let run = run_client(
        Client::Confluent,
        &boot,
        "verify",
        TOPIC,
        &[acked_path.to_str().expect("utf-8 path")],
    )
    .unwrap_or_else(|e| panic!("{e}\n--- cluster logs\n{}", c.logs()));
    eprintln!("verified by confluent-kafka: {}", run.summary);
    // ... and by the native checker, at the acknowledged offsets.
    let acked: Vec<(u64, u32, u64)> =
        serde_json::from_str(&std::fs::read_to_string(&acked_path).expect("acked file"))
            .expect("acked json");
    assert_eq!(acked.len() as u64, RECORDS);
    let acked: BTreeMap<u64, (u32, u64)> = acked.into_iter().map(|(i, p, o)| (i, (p, o))).collect();
    runtime().block_on(workload::check(&mut c, TOPIC, PARTITIONS, &acked));
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
