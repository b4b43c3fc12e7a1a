//! `sluiced`'s logs on a real process: `--log-format json` writes one JSON
//! object per stderr line; lines about topics, groups and connections carry
//! them as fields (`topic`, `group`, and the connection span's `peer`,
//! `listener`, `client_id`); `slow_request_ms = 0` logs every request as
//! `slow request` with its api and client id on both wires; a `warn`
//! filter keeps info lines out; an unknown format is refused at start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use sluice_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, Record, SeekTo,
};

/// How long a broker may take to print its `listening` line, or to stop.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The client id our native client sends.
const CLIENT_ID: &str = "logs-test-client";

/// A `sluiced` process with its stderr in a file; SIGKILLed on drop.
struct Broker {
    child: Option<Child>,
    native: String,
    kafka: String,
    stderr: PathBuf,
}

impl Broker {
    /// Starts `sluiced` in `dir` on loopback ports with `args` and `RUST_LOG=filter`.
    fn start(dir: &Path, args: &[&str], filter: &str) -> Broker {
        let stderr = dir.join("sluiced.stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluiced"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SLUICE_CONFIG")
            .env_remove("SLUICE_LOG")
            .env_remove("SLUICE_LOG_FORMAT")
            .env_remove("SLUICE_SLOW_REQUEST_MS")
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("stderr file"),
            ))
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
        let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|p| p.strip_prefix(key))
                .map(str::to_string)
        };
        let (Some(native), Some(kafka)) = (field("native="), field("kafka=")) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluiced did not start ({line:?}):\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        Broker {
            child: Some(child),
            native,
            kafka,
            stderr,
        }
    }

    /// Stops the broker with SIGTERM (it must exit 0) and returns its stderr.
    fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child, not reaped yet (its pid is not reused).
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sluiced did not stop within {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&self.stderr).expect("stderr");
        assert!(status.success(), "sluiced exited with {status}:\n{log}");
        log
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client(native: &str) -> ClientConfig {
    ClientConfig {
        bootstrap: native.to_string(),
        client_id: CLIENT_ID.to_string(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

/// Creates `topic`, produces `n` records to partition 0, reads them back
/// with an assigned consumer, then again in group `group`.
async fn workload(native: &str, topic: &str, group: Option<&str>, n: usize) {
    let config = client(native);
    let admin = Admin::with_config(config.clone()).await.expect("admin");
    admin
        .create_topic(topic, 1, Vec::new())
        .await
        .expect("create topic");
    let producer = Producer::with_config(config.clone(), ProducerConfig::default());
    for i in 0..n {
        producer
            .send(Record::new(topic, format!("record {i}").into_bytes()).partition(0))
            .await
            .expect("acknowledged");
    }
    producer.close().await;
    let mut consumer = Consumer::with_config(
        config.clone(),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    match group {
        Some(g) => consumer
            .subscribe(g, vec![topic.to_string()])
            .await
            .expect("subscribe"),
        None => consumer.assign(vec![(topic.to_string(), 0)]),
    }
    for _ in 0..n {
        let r = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .expect("a record in time")
            .expect("consumer open")
            .expect("a record");
        assert!(r.value.is_some());
    }
    if group.is_some() {
        consumer.commit().await.expect("commit");
    }
    let _ = consumer.close().await;
}

/// A Kafka ApiVersions v0 request (header v1: key, version, correlation
/// id, client id) on its own connection; returns once it is answered.
fn kafka_api_versions(addr: &str, client_id: &str) {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut s = TcpStream::connect(addr).expect("connect to the Kafka listener");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("an answer");
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut answer).expect("the whole answer");
    assert_eq!(&answer[..4], &7i32.to_be_bytes(), "our correlation id");
}

/// Every stderr line as JSON; panics on one that is not an object with the
/// layout we document.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["timestamp"].is_string(), "no timestamp: {l}");
            assert!(v["level"].is_string(), "no level: {l}");
            assert!(v["target"].is_string(), "no target: {l}");
            assert!(v["fields"]["message"].is_string(), "no message: {l}");
            v
        })
        .collect()
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

/// The value of `key` in the line's own fields or in any enclosing span.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(x) = v["fields"].get(key) {
        return Some(x);
    }
    v["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|s| s.get(key))
}

fn find<'a>(lines: &'a [Value], what: impl Fn(&Value) -> bool, why: &str, log: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| what(v))
        .unwrap_or_else(|| panic!("no line {why} in:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_topic_group_and_connection_fields_and_every_slow_request() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(
        dir.path(),
        &["--log-format", "json", "--slow-request-ms", "0"],
        "info",
    );
    workload(&b.native, "logs-topic", Some("logs-group"), 3).await;
    let kafka = b.kafka.clone();
    tokio::task::spawn_blocking(move || kafka_api_versions(&kafka, "logs-kafka"))
        .await
        .unwrap();
    let log = b.stop();
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .all(|v| v["level"] != "DEBUG" && v["level"] != "TRACE"),
        "the info filter let debug lines through:\n{log}"
    );

    let created = find(
        &lines,
        |v| message(v) == "created topic",
        "\"created topic\"",
        &log,
    );
    assert_eq!(created["fields"]["topic"], "logs-topic", "{created}");
    assert_eq!(created["level"], "INFO");

    // The group join: the group as a field, the connection from its span.
    let joined = find(
        &lines,
        |v| message(v) == "member joined group",
        "\"member joined group\"",
        &log,
    );
    assert_eq!(joined["fields"]["group"], "logs-group", "{joined}");
    assert_eq!(joined["fields"]["client_id"], CLIENT_ID, "{joined}");
    assert_eq!(joined["span"]["name"], "conn", "{joined}");
    assert_eq!(joined["span"]["listener"], "native", "{joined}");
    assert!(
        joined["span"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{joined}"
    );
    assert_eq!(joined["span"]["client_id"], CLIENT_ID, "{joined}");

    // Every request is a slow request at 0 ms, on both wires.
    let slow: Vec<&Value> = lines
        .iter()
        .filter(|v| message(v) == "slow request")
        .collect();
    for v in &slow {
        assert_eq!(v["level"], "WARN", "{v}");
        assert_eq!(v["target"], "sluice::slow_request", "{v}");
        for key in [
            "protocol",
            "api",
            "api_key",
            "api_version",
            "correlation_id",
            "client_id",
            "peer",
            "elapsed_ms",
            "parked_ms",
        ] {
            assert!(v["fields"].get(key).is_some(), "no {key}: {v}");
        }
    }
    for api in [
        "CreateTopics",
        "Produce",
        "Fetch",
        "JoinGroup",
        "OffsetCommit",
    ] {
        let v = find(
            &lines,
            |v| message(v) == "slow request" && v["fields"]["api"] == api,
            &format!("\"slow request\" for {api}"),
            &log,
        );
        assert_eq!(v["fields"]["protocol"], "native", "{v}");
        assert_eq!(v["fields"]["client_id"], CLIENT_ID, "{v}");
        assert_eq!(field(v, "listener").and_then(Value::as_str), Some("native"));
    }
    let k = find(
        &lines,
        |v| message(v) == "slow request" && v["fields"]["protocol"] == "kafka",
        "\"slow request\" on the Kafka listener",
        &log,
    );
    assert_eq!(k["fields"]["api"], "ApiVersions", "{k}");
    assert_eq!(k["fields"]["api_key"], 18, "{k}");
    assert_eq!(k["fields"]["correlation_id"], 7, "{k}");
    assert_eq!(k["fields"]["client_id"], "logs-kafka", "{k}");
    assert_eq!(k["span"]["listener"], "kafka", "{k}");
    assert_eq!(k["span"]["client_id"], "logs-kafka", "{k}");
}

/// A `warn` filter: no info line (not even the start banner), but the
/// slow-request warnings pass, still inside their connection span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warn_filter_keeps_info_lines_out() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(
        dir.path(),
        &["--log-format", "json", "--slow-request-ms", "0"],
        "warn",
    );
    workload(&b.native, "quiet", None, 2).await;
    let log = b.stop();
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .all(|v| v["level"] == "WARN" || v["level"] == "ERROR"),
        "{log}"
    );
    assert!(!log.contains("created topic") && !log.contains("sluiced started"));
    let produce = find(
        &lines,
        |v| message(v) == "slow request" && v["fields"]["api"] == "Produce",
        "\"slow request\" for Produce",
        &log,
    );
    assert!(produce["span"]["peer"].is_string(), "{produce}");
}

/// Text is the default format. Long-poll fetches that wait their whole
/// `max_wait` (1.5 s here) on an empty partition are not slow requests at
/// a 300 ms threshold: the wait is by design and left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_the_default_and_parked_fetches_are_not_slow() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path(), &["--slow-request-ms", "300"], "info");
    workload(&b.native, "plain", None, 2).await;
    let mut consumer = Consumer::with_config(
        client(&b.native),
        ConsumerConfig {
            start: SeekTo::Latest,
            fetch_max_wait: Duration::from_millis(1500),
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(vec![("plain".to_string(), 0)]);
    // Nothing arrives: the consumer's fetches park for their max_wait.
    let polled = tokio::time::timeout(Duration::from_millis(3500), consumer.next()).await;
    assert!(polled.is_err(), "a record arrived: {polled:?}");
    drop(consumer);
    let log = b.stop();
    assert!(log.lines().all(|l| !l.starts_with('{')), "{log}");
    let created = log
        .lines()
        .find(|l| l.contains("created topic"))
        .unwrap_or_else(|| panic!("no created topic line:\n{log}"));
    // Text: the connection span as a prefix, the fields after the message.
    assert!(
        created.contains("conn{peer=127.0.0.1:")
            && created.contains("listener=\"native\"")
            && created.contains(&format!("client_id=\"{CLIENT_ID}\""))
            && created.contains("topic=\"plain\""),
        "{created}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("slow request") && l.contains("api=\"Fetch\"")),
        "a parked fetch was reported as slow:\n{log}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // `sluiced` with `args` and `env`; it must exit non-zero (a broker that
    // starts instead is killed after the timeout); its stderr.
    let run = |args: &[&std::ffi::OsStr], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluiced"));
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "off"])
            .args(args)
            .env_remove("SLUICE_CONFIG")
            .env_remove("SLUICE_LOG_FORMAT")
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sluiced");
        let deadline = std::time::Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sluiced {args:?} {env:?} started instead of refusing");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{args:?} {env:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    // A flag and the variable: clap names the value and the ones there are.
    let e = run(&[os("--log-format"), os("xml")], &[]);
    assert!(
        e.contains("invalid value 'xml'") && e.contains("[possible values: text, json]"),
        "{e}"
    );
    let e = run(&[], &[("SLUICE_LOG_FORMAT", "yaml")]);
    assert!(e.contains("invalid value 'yaml'"), "{e}");
    // The config file.
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "log_format = \"xml\"\n").unwrap();
    let e = run(&[os("--config"), file.as_os_str()], &[]);
    assert!(
        e.contains("invalid configuration")
            && e.contains("unknown variant `xml`, expected `text` or `json`"),
        "{e}"
    );
}
