//! The files in `deploy/` against the real tools and a real broker:
//!
//! - `promtool` checks `deploy/prometheus/alerts.yml` and `prometheus.yml`
//!   and runs the rule unit tests of `alerts_test.yml`;
//! - `systemd-analyze verify` checks `deploy/systemd/sluiced.service`. It
//!   also checks that the `ExecStart` program exists, which
//!   `/usr/local/bin/sluiced` does not on a build machine, so it verifies a
//!   copy whose `ExecStart` is the binary built here, every other line as
//!   shipped;
//! - a `sluiced` started from `deploy/sluiced.toml` (addresses overridden by
//!   flags: a single-voter cluster on loopback) gets traffic — a topic,
//!   produce, a consumer group that commits, a produce to a partition that
//!   does not exist — and every metric named in the Grafana dashboard's
//!   queries and in the alert rules' expressions must then be in its
//!   `/metrics`.
//!
//! The tools are required, not optional: a missing one fails its test with
//! how to install it (`.ci/run` installs both on CI).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, Record,
};
use sluice_protocol::batch::RecordBatchBuilder;
use sluice_protocol::codec::{FrameCodec, DEFAULT_MAX_FRAME_BYTES};
use sluice_protocol::{
    Acks, ErrorCode, ProducePartition, ProduceRequest, ProduceTopic, Request, Response,
};
use tokio_util::codec::Framed;

/// How long the broker may take to start, to stop, or to show every metric.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (where `deploy/` is).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs an external tool; a tool that is not installed fails the test with
/// `install` (how to get it), not a skip.
fn run_tool(program: &str, args: &[&str], install: &str) -> Output {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed, and this test needs it: {install} \
             (.ci/run installs it on CI)"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

const PROMTOOL: &str = "Debian/Ubuntu: apt-get install prometheus (it provides /usr/bin/promtool)";

#[test]
fn promtool_checks_the_rules_and_the_config_and_runs_the_rule_tests() {
    let alerts = deploy("prometheus/alerts.yml");
    let config = deploy("prometheus/prometheus.yml");
    let tests = deploy("prometheus/alerts_test.yml");
    for (what, args) in [
        ("promtool check rules", vec!["check", "rules"]),
        ("promtool check config", vec!["check", "config"]),
        ("promtool test rules", vec!["test", "rules"]),
    ] {
        let file = match args[0] {
            "test" => &tests,
            _ if args[1] == "rules" => &alerts,
            _ => &config,
        };
        let mut all = args.clone();
        all.push(file.to_str().expect("utf-8 path"));
        let out = run_tool("promtool", &all, PROMTOOL);
        assert_success(what, &out);
    }
    // The config loads the rules (promtool check config followed rule_files).
    let out = run_tool(
        "promtool",
        &["check", "config", config.to_str().unwrap()],
        PROMTOOL,
    );
    assert!(
        text(&out.stdout).contains("1 rule files found"),
        "{}",
        text(&out.stdout)
    );
}

/// The unit as shipped, with `ExecStart`'s program replaced by `binary`.
fn unit_with_binary(unit: &str, binary: &str) -> String {
    let mut replaced = 0;
    let lines: Vec<String> = unit
        .lines()
        .map(
            |l| match l.strip_prefix("ExecStart=/usr/local/bin/sluiced") {
                Some(args) => {
                    replaced += 1;
                    format!("ExecStart={binary}{args}")
                }
                None => l.to_string(),
            },
        )
        .collect();
    assert_eq!(replaced, 1, "one ExecStart=/usr/local/bin/sluiced line");
    lines.join("\n") + "\n"
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let unit = read(&deploy("systemd/sluiced.service"));
    let line = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    // The unit's promises, each tied to what sluiced does.
    assert_eq!(
        line("ExecStart"),
        vec!["/usr/local/bin/sluiced --config /etc/sluice/sluiced.toml"]
    );
    let help = Command::new(env!("CARGO_BIN_EXE_sluiced"))
        .arg("--help")
        .output()
        .expect("sluiced --help");
    assert!(
        text(&help.stdout).contains("--config <CONFIG>"),
        "sluiced has no --config flag"
    );
    assert_eq!(line("ExecReload"), vec!["/bin/kill -HUP $MAINPID"]);
    assert_eq!(line("KillSignal"), vec!["SIGTERM"]);
    assert_eq!(line("User"), vec!["sluice"]);
    assert_eq!(line("ProtectSystem"), vec!["strict"]);
    // The one writable path is the sample config's data directory.
    assert_eq!(line("ReadWritePaths"), vec!["/var/lib/sluice"]);
    assert!(
        read(&deploy("sluiced.toml")).contains("\ndata_dir = \"/var/lib/sluice\"\n"),
        "deploy/sluiced.toml's data_dir is not the unit's ReadWritePaths"
    );

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sluiced.service");
    std::fs::write(
        &copy,
        unit_with_binary(&unit, env!("CARGO_BIN_EXE_sluiced")),
    )
    .unwrap();
    let out = run_tool(
        "systemd-analyze",
        &["verify", copy.to_str().unwrap()],
        "Debian/Ubuntu: apt-get install systemd",
    );
    assert_success("systemd-analyze verify", &out);
    // Warnings about the unit (unknown keys, bad values) do not fail verify.
    let all = text(&out.stdout) + &text(&out.stderr);
    let about_unit: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("sluiced.service"))
        .collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify:\n{all}");
}

/// A `sluiced` child process; SIGKILLed on drop if still running.
struct Broker {
    child: Option<Child>,
    native: SocketAddr,
    http: SocketAddr,
    kafka: SocketAddr,
    log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts `sluiced --config deploy/sluiced.toml` as node 1, the only voter
/// of its cluster, every address on loopback. A cluster's ports are chosen
/// before the start (the peers list names them); one another test took
/// meanwhile costs a retry on new ones.
fn start_broker(dir: &Path) -> Broker {
    let mut last = String::new();
    for attempt in 0..4 {
        let [native, http, kafka, cluster] = [(); 4].map(|_| free_port());
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let data = dir.join(format!("data{attempt}"));
        let log = dir.join(format!("sluiced{attempt}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluiced"));
        cmd.arg("--config")
            .arg(deploy("sluiced.toml"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &addr(native)])
            .args(["--advertised-listen", &addr(native)])
            .args(["--http-listen", &addr(http)])
            .args(["--kafka-listen", &addr(kafka)])
            .args(["--kafka-advertise", &addr(kafka)])
            .args(["--node-id", "1"])
            .args(["--peers", &format!("1@{}", addr(cluster))])
            .args(["--cluster-listen", &addr(cluster)])
            // Whatever this machine's free space: the sample's 1 GiB floor
            // must not refuse the test's produce.
            .args(["--disk-min-free-bytes", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")));
        for (k, _) in std::env::vars() {
            if k.starts_with("SLUICE_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn sluiced");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout);
            let mut first = String::new();
            let _ = lines.read_line(&mut first);
            let _ = tx.send(first);
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let first = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        if first.starts_with("listening ") {
            return Broker {
                child: Some(child),
                native: addr(native).parse().unwrap(),
                http: addr(http).parse().unwrap(),
                kafka: addr(kafka).parse().unwrap(),
                log,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
        last = format!("first stdout line {first:?}; log:\n{}", read(&log));
    }
    panic!("sluiced did not start from deploy/sluiced.toml: {last}");
}

/// `GET /metrics`; the body, or `None` while the listener does not answer.
fn scrape(http: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Topic `deploy` (2 partitions), 40 records, group `deploy-readers`
/// consuming 25 of them and committing, then 10 more records.
async fn workload(native: SocketAddr) {
    let config = ClientConfig {
        bootstrap: native.to_string(),
        client_id: "deploy-test".into(),
        ..ClientConfig::default()
    };
    let admin = Admin::with_config(config.clone()).await.expect("admin");
    admin
        .create_topic("deploy", 2, Vec::new())
        .await
        .expect("create topic deploy");
    let producer = Producer::with_config(config.clone(), ProducerConfig::default());
    for i in 0..40 {
        let r = Record::new("deploy", format!("record {i}").into_bytes())
            .key(format!("key {}", i % 5).into_bytes());
        producer.send(r).await.expect("acknowledged");
    }
    let mut consumer = Consumer::with_config(
        config.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe("deploy-readers", vec!["deploy".into()])
        .await
        .expect("subscribe");
    for _ in 0..25 {
        tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .expect("a record in time")
            .expect("consumer open")
            .expect("a record");
    }
    consumer.commit().await.expect("commit");
    consumer.close().await.expect("leave the group");
    for i in 40..50 {
        producer
            .send(Record::new("deploy", format!("record {i}").into_bytes()))
            .await
            .expect("acknowledged");
    }
    producer.close().await;
}

/// A raw produce to partition 9 of `deploy` (it has 2): refused with
/// UNKNOWN_TOPIC_OR_PARTITION, which `sluice_produce_errors_total` counts.
async fn refused_produce(native: SocketAddr) {
    let stream = tokio::net::TcpStream::connect(native).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES));
    let mut b = RecordBatchBuilder::new();
    b.push(0, None, Some(b"nowhere"), &[]);
    let records: Bytes = b.finish();
    let req = Request::Produce(ProduceRequest {
        acks: Acks::Leader,
        timeout_ms: 10_000,
        topics: vec![ProduceTopic {
            name: "deploy".into(),
            partitions: vec![ProducePartition {
                partition: 9,
                records,
            }],
        }],
    });
    match common::call(&mut conn, 1, &req).await {
        Response::Produce(r) => assert_eq!(
            r.topics[0].partitions[0].error,
            ErrorCode::UnknownTopicOrPartition
        ),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The values of `key` (a JSON string) anywhere in `json`, unescaped.
fn json_strings(json: &str, key: &str) -> Vec<String> {
    let needle = format!("\"{key}\":");
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(i) = rest.find(&needle) {
        rest = rest[i + needle.len()..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            continue; // an object or a number
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((j, c)) = chars.next() {
            match c {
                '"' => {
                    end = j + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                        if let Some(ch) =
                            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            value.push(ch);
                        }
                    }
                    Some(e) => value.push(e),
                    None => {}
                },
                c => value.push(c),
            }
        }
        out.push(value);
        rest = &body[end..];
    }
    out
}

/// The `expr:` values of a rules file (one-line, quoted or not, or a `|`/`>` block).
fn yaml_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let key = l.trim_start();
        let key = key.strip_prefix("- ").unwrap_or(key);
        let Some(v) = key.strip_prefix("expr:") else {
            continue;
        };
        let v = v.trim();
        if v.starts_with('|') || v.starts_with('>') {
            // The block is what is indented deeper than the `expr` key.
            let indent = l.len() - key.len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|b| b.trim().is_empty() || b.len() - b.trim_start().len() > indent)
                .copied()
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(v.trim_matches(|c| c == '\'' || c == '"').to_string());
        }
    }
    out
}

/// The metric names a PromQL expression uses: identifiers outside string
/// literals that start with `sluice_` or `process_`, and `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut take = |word: &mut String| {
        if word.starts_with("sluice_") || word.starts_with("process_") || word == "up" {
            names.insert(word.clone());
        }
        word.clear();
    };
    for c in expr.chars().chain([' ']) {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                _ if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                take(&mut word);
                quote = Some(c);
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => word.push(c),
            // `$__rate_interval` and the like are Grafana's, not metrics.
            '$' => {
                take(&mut word);
                word.push('$');
            }
            _ => take(&mut word),
        }
    }
    names
}

/// Sample names in a scrape, and the families with their types.
fn exported(scrape: &str) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let mut samples = BTreeSet::new();
    let mut families = BTreeSet::new();
    for l in scrape.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let mut parts = t.split_whitespace();
            if let (Some(n), Some(k)) = (parts.next(), parts.next()) {
                families.insert((n.to_string(), k.to_string()));
            }
        } else if !l.starts_with('#') && !l.trim().is_empty() {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            samples.insert(l[..end].to_string());
        }
    }
    (samples, families)
}

/// Whether the scrape has `name`: as a sample, or as a histogram or
/// summary family itself or through its `_bucket`/`_sum`/`_count` series.
fn has_metric(name: &str, scrape: &(BTreeSet<String>, BTreeSet<(String, String)>)) -> bool {
    let (samples, families) = scrape;
    let histogram = |base: &str| {
        families
            .iter()
            .any(|(n, k)| n == base && (k == "histogram" || k == "summary"))
    };
    samples.contains(name)
        || histogram(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(histogram))
}

/// One Kafka ApiVersions v0 round trip on the Kafka listener (the Kafka
/// request latency series exist once a Kafka request was served).
async fn kafka_api_versions(kafka: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(kafka)
        .await
        .expect("kafka connect");
    // api_key 18, version 0, correlation id 7, client id "deploy".
    let mut body = vec![0, 18, 0, 0, 0, 0, 0, 7, 0, 6];
    body.extend_from_slice(b"deploy");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.expect("ApiVersions answer");
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[..4], &[0, 0, 0, 7], "correlation id");
    assert_eq!(&answer[4..6], &[0, 0], "no error");
}

/// The value of the sample `series` (name with its labels as rendered).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    // What the dashboard and the alerts query.
    let dashboard = read(&deploy("grafana/sluice.json"));
    let exprs = json_strings(&dashboard, "expr");
    assert!(exprs.len() >= 20, "dashboard queries: {exprs:?}");
    assert!(
        dashboard.contains("${DS_PROMETHEUS}"),
        "the dashboard's panels use the datasource variable"
    );
    let alerts = yaml_exprs(&read(&deploy("prometheus/alerts.yml")));
    assert!(alerts.len() >= 6, "alert expressions: {alerts:?}");
    let mut wanted = BTreeSet::new();
    for e in exprs.iter().chain(&alerts) {
        let names = metric_names(e);
        assert!(
            !names.is_empty(),
            "an expression names no known metric: {e}"
        );
        wanted.extend(names);
    }
    // Template variables' queries (label_values(...)) too.
    for key in ["query", "definition"] {
        for q in json_strings(&dashboard, key) {
            wanted.extend(metric_names(&q));
        }
    }
    // Prometheus's own, not the broker's.
    wanted.remove("up");
    for must in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "sluice_under_replicated_partitions",
        "sluice_leaderless_partitions",
        "sluice_leader_changes_total",
        "sluice_produce_errors_total",
        "sluice_data_dir_bytes",
        "sluice_group_lag_ms",
    ] {
        assert!(wanted.contains(must), "{must} is used nowhere: {wanted:?}");
    }

    // A real broker with traffic.
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start_broker(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            workload(broker.native).await;
            refused_produce(broker.native).await;
            kafka_api_versions(broker.kafka).await;
        })
        .await
        .unwrap_or_else(|_| panic!("the workload took over {TIMEOUT:?}"))
    });

    // The group series are refreshed every second: poll until all are there.
    let deadline = Instant::now() + TIMEOUT;
    let body = loop {
        let body = scrape(broker.http).unwrap_or_default();
        let have = exported(&body);
        let missing: Vec<&String> = wanted.iter().filter(|n| !has_metric(n, &have)).collect();
        if missing.is_empty() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics used by deploy/ that sluiced does not export: {missing:?}\n/metrics:\n{body}\nlog:\n{}",
            read(&broker.log)
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The new series measure something.
    let value =
        |series: &str| sample(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"));
    assert_eq!(
        value("sluice_kafka_request_duration_seconds_count{api=\"ApiVersions\"}"),
        1.0,
        "the Kafka ApiVersions round trip is timed"
    );
    assert!(
        value("sluice_leader_changes_total") >= 1.0,
        "the only voter leads its partitions"
    );
    assert!(value("sluice_produce_errors_total{error=\"UNKNOWN_TOPIC_OR_PARTITION\"}") >= 1.0);
    assert_eq!(value("sluice_under_replicated_partitions"), 0.0);
    assert_eq!(value("sluice_leaderless_partitions"), 0.0);
    assert!(value("sluice_data_dir_bytes") > 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs now {now}"
    );

    // SIGTERM: the graceful shutdown the unit relies on (KillSignal=SIGTERM) exits 0.
    let mut child = broker.child.take().expect("running");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child, not reaped yet, so the pid is still its own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluiced did not stop within {TIMEOUT:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        read(&broker.log)
    );
}

#[test]
fn expressions_are_parsed_into_metric_names() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (api, le) (rate(sluice_request_duration_seconds_bucket{job=~"$job", error="sluice_not_a_metric"}[$__rate_interval]))) / up"#
        ),
        BTreeSet::from([
            "sluice_request_duration_seconds_bucket".to_string(),
            "up".to_string()
        ])
    );
    assert_eq!(
        json_strings(
            r#"{"expr": "a{b=\"c\"}", "query": {"query": "d\\e"}, "expr":"f"}"#,
            "expr"
        ),
        vec!["a{b=\"c\"}".to_string(), "f".to_string()]
    );
    assert_eq!(
        yaml_exprs(
            "  - expr: up == 0\n    x: 1\n  - expr: |\n      sum(a)\n      / b\n    for: 1m\n"
        ),
        vec!["up == 0".to_string(), "      sum(a)\n      / b".to_string()]
    );
    let scrape = "# TYPE sluice_x histogram\nsluice_x_bucket{le=\"1\"} 0\nsluice_y 3\n";
    let have = exported(scrape);
    assert!(has_metric("sluice_x_bucket", &have));
    assert!(has_metric("sluice_x_count", &have));
    assert!(has_metric("sluice_y", &have));
    assert!(!has_metric("sluice_y_count", &have));
    assert!(!has_metric("sluice_z", &have));
}
