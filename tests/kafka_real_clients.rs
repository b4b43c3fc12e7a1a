//! Real Kafka clients against real `sluiced` processes: kcat (Debian's
//! package, librdkafka), confluent-kafka and kafka-python (PyPI, pinned) and
//! kafkajs (npm, pinned). `tests/kafka-clients/setup.sh` installs them (CI
//! runs it first; the first test here runs it again, which is quick when
//! everything is there, and fails with its message when it cannot install).
//!
//! For each client: create a topic, produce keyed records with headers and
//! timestamps and read them back intact, every compression codec the client
//! has, an idempotent producer, earliest/latest offsets and a seek by
//! timestamp, and a consumer group of two members that split the
//! partitions, commit, and resume from the commit after a restart. kcat also
//! reads what the native CLI wrote and the other way round. On a three-node
//! cluster, an idempotent producer rides through the SIGKILL of a partition
//! leader with no acknowledged record lost and none duplicated.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Once;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::{bin_path, sluice_cli};
use serde_json::Value;

/// Bound on any one client program.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn setup() {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        let out = Command::new("bash")
            .arg(repo().join("tests/kafka-clients/setup.sh"))
            .output()
            .expect("run tests/kafka-clients/setup.sh");
        assert!(
            out.status.success(),
            "tests/kafka-clients/setup.sh could not install the Kafka clients \
             (kcat, confluent-kafka, kafka-python, kafkajs):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A `sluiced` with a Kafka listener on a free port and a short initial
/// rebalance delay; killed on drop.
struct Broker {
    child: Child,
    native: String,
    kafka: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Broker {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("broker.log")).expect("log");
    let mut child = Command::new(bin_path("sluiced"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--kafka-listen", "127.0.0.1:0"])
        .args(["--group-initial-rebalance-delay-ms", "300"])
        .env_remove("SLUICE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn sluiced");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    Broker {
        native: field("native="),
        kafka: field("kafka="),
        child,
        _dir: dir,
    }
}

/// Which client program runs a scenario.
#[derive(Clone, Copy, Debug)]
enum Client {
    Confluent,
    /// confluent-kafka with `group.protocol=consumer` (KIP-848).
    ConfluentConsumerProtocol,
    KafkaPython,
    Kafkajs,
}

impl Client {
    fn command(self, boot: &str, scenario: &str, topic: &str, arg: Option<&str>) -> Command {
        let mut c = match self {
            Client::Confluent | Client::ConfluentConsumerProtocol | Client::KafkaPython => {
                let mut c = Command::new("python3");
                c.arg(repo().join("tests/kafka-clients/py_client.py"));
                c.arg(match self {
                    Client::Confluent => "confluent",
                    Client::ConfluentConsumerProtocol => "confluent-848",
                    _ => "kafka-python",
                });
                c.env("PYTHONPATH", repo().join("target/kafka-clients/python"));
                c
            }
            Client::Kafkajs => {
                let mut c = Command::new("node");
                c.arg(repo().join("tests/kafka-clients/node/kafkajs_client.js"));
                c
            }
        };
        c.args([boot, scenario, topic]);
        if let Some(a) = arg {
            c.arg(a);
        }
        c
    }

    /// Runs a scenario to its end; returns its JSON lines (panics on failure).
    fn run(self, boot: &str, scenario: &str, topic: &str, arg: Option<&str>) -> Vec<Value> {
        let child = self
            .command(boot, scenario, topic, arg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let out = wait_output(child, CLIENT_TIMEOUT);
        let lines = json_lines(&out.stdout);
        assert!(
            out.status.success() && lines.last().is_some_and(|l| l.get("error").is_none()),
            "{self:?} {scenario} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lines
    }
}

/// Waits for a child with a deadline (killed past it).
fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "a client ran past {timeout:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The basic scenarios of one client against one broker.
fn basic_scenarios(client: Client) {
    setup();
    let b = start_broker();
    let tag = format!("{client:?}").to_lowercase();
    for scenario in ["roundtrip", "codecs", "idempotent", "offsets"] {
        let lines = client.run(&b.kafka, scenario, &format!("{tag}-{scenario}"), None);
        assert_eq!(
            lines.last().and_then(|l| l.get("ok")),
            Some(&Value::Bool(true))
        );
    }
}

/// A running group member: its stdout lines arrive on a channel.
struct Member {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Member {
    fn start(client: Client, boot: &str, topic: &str, group: &str) -> Member {
        let mut child = client
            .command(boot, "member", topic, Some(group))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn member");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Member {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Takes what the member printed so far; its latest assignment.
    fn assignment(&mut self) -> Option<BTreeSet<i64>> {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
        self.seen.iter().rev().find_map(|v| {
            v.get("assigned")?
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
        })
    }

    /// Waits for the member to finish; the (partition, value) pairs it read.
    fn finish(mut self) -> Vec<(i64, String)> {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "a group member failed: {:?}", self.seen);
                break;
            }
            assert!(Instant::now() < deadline, "a group member did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.assignment();
        let values = self
            .seen
            .iter()
            .find_map(|v| v.get("values")?.as_array().cloned())
            .unwrap_or_else(|| panic!("no values from the member: {:?}", self.seen));
        values
            .iter()
            .map(|v| {
                (
                    v[0].as_i64().expect("partition"),
                    v[2].as_str().expect("value").to_string(),
                )
            })
            .collect()
    }
}

/// Two members split a 4-partition topic, consume and commit; a restarted
/// member resumes from the commits.
fn group_scenario(client: Client) {
    setup();
    let b = start_broker();
    let tag = format!("{client:?}").to_lowercase();
    let (topic, group) = (format!("{tag}-grp"), format!("{tag}-group"));
    let out = sluice_cli(&b.native)
        .args(["topic", "create", &topic, "--partitions", "4"])
        .output()
        .expect("sluice topic create");
    assert!(out.status.success(), "{out:?}");
    let mut m1 = Member::start(client, &b.kafka, &topic, &group);
    let mut m2 = Member::start(client, &b.kafka, &topic, &group);
    // Both in the group with disjoint halves of the partitions.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (a1, a2) = loop {
        if let (Some(a1), Some(a2)) = (m1.assignment(), m2.assignment()) {
            if !a1.is_empty() && !a2.is_empty() && a1.is_disjoint(&a2) && a1.len() + a2.len() == 4 {
                break (a1, a2);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no split: {:?} / {:?}",
            m1.seen,
            m2.seen
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    client.run(&b.kafka, "produce", &topic, Some("100"));
    let (r1, r2) = (m1.finish(), m2.finish());
    for (got, mine) in [(&r1, &a1), (&r2, &a2)] {
        assert!(!got.is_empty(), "a member read nothing");
        assert!(
            got.iter().all(|(p, _)| mine.contains(p)),
            "read outside its assignment"
        );
    }
    let all: HashSet<&String> = r1.iter().chain(r2.iter()).map(|(_, v)| v).collect();
    assert_eq!(
        all.len(),
        100,
        "the two members together read every record once"
    );
    assert_eq!(r1.len() + r2.len(), 100, "no record read twice");
    // A restarted member resumes from the committed offsets: only new records.
    let m3 = Member::start(client, &b.kafka, &topic, &group);
    std::thread::sleep(Duration::from_secs(2));
    let more = client.run(&b.kafka, "produce", &topic, Some("140"));
    assert!(!more.is_empty());
    let r3 = m3.finish();
    // The second produce wrote values 0..139 again: the member must see
    // exactly those 140 (committed offsets skip the first 100 records).
    assert_eq!(
        r3.len(),
        140,
        "resumed from the commit: {} records",
        r3.len()
    );
}

#[test]
fn confluent_kafka_produces_consumes_compresses_and_seeks() {
    basic_scenarios(Client::Confluent);
}

#[test]
fn kafka_python_produces_consumes_compresses_and_seeks() {
    basic_scenarios(Client::KafkaPython);
}

#[test]
fn kafkajs_produces_consumes_compresses_and_seeks() {
    basic_scenarios(Client::Kafkajs);
}

#[test]
fn confluent_kafka_group_members_split_commit_and_resume() {
    group_scenario(Client::Confluent);
}

#[test]
fn confluent_kafka_kip_848_group_members_split_commit_and_resume() {
    group_scenario(Client::ConfluentConsumerProtocol);
}

#[test]
fn kafka_python_group_members_split_commit_and_resume() {
    group_scenario(Client::KafkaPython);
}

#[test]
fn kafkajs_group_members_split_commit_and_resume() {
    group_scenario(Client::Kafkajs);
}

fn kcat(args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kcat");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(data) = stdin {
        input.write_all(data).expect("kcat stdin");
    }
    drop(input);
    let out = wait_output(child, CLIENT_TIMEOUT);
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kcat_and_the_native_cli_read_each_others_records() {
    setup();
    let b = start_broker();
    let k = b.kafka.as_str();
    // kcat produces keyed records with headers (auto-creating the topic).
    kcat(
        &["-b", k, "-P", "-t", "demo", "-K:", "-H", "source=kcat"],
        Some(b"user-1:order-1\nuser-2:order-2\n"),
    );
    let listing = kcat(&["-b", k, "-L", "-t", "demo"], None);
    assert!(
        listing.contains("topic \"demo\" with 1 partitions"),
        "{listing}"
    );
    assert!(listing.contains(&format!("at {k}")), "{listing}");
    let read = kcat(
        &[
            "-b",
            k,
            "-C",
            "-t",
            "demo",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%k=%s|%h|%o\n",
        ],
        None,
    );
    assert_eq!(
        read,
        "user-1=order-1|source=kcat|0\nuser-2=order-2|source=kcat|1\n"
    );
    // Every codec kcat has.
    for z in ["gzip", "snappy", "lz4", "zstd"] {
        kcat(
            &["-b", k, "-P", "-t", "codecs", "-z", z],
            Some(format!("a-{z}\nb-{z}\n").as_bytes()),
        );
    }
    let read = kcat(
        &[
            "-b",
            k,
            "-C",
            "-t",
            "codecs",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%s\n",
        ],
        None,
    );
    assert_eq!(
        read,
        "a-gzip\nb-gzip\na-snappy\nb-snappy\na-lz4\nb-lz4\na-zstd\nb-zstd\n"
    );
    // The native CLI reads kcat's records...
    let out = sluice_cli(&b.native)
        .args([
            "topic", "consume", "demo", "--from", "earliest", "--count", "2",
        ])
        .args(["--format", "%k=%v\n"])
        .output()
        .expect("sluice consume");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "user-1=order-1\nuser-2=order-2\n"
    );
    // ...and kcat reads the native CLI's, keys and timestamps intact.
    let out = common::sluice_with_input(
        &b.native,
        &["topic", "produce", "demo", "--key-separator", ":"],
        b"user-3:order-3\n",
    );
    assert!(out.status.success(), "{out:?}");
    let read = kcat(
        &[
            "-b",
            k,
            "-C",
            "-t",
            "demo",
            "-o",
            "2",
            "-e",
            "-f",
            "%k=%s %T\n",
        ],
        None,
    );
    let (kv, ts) = read.trim().split_once(' ').expect("one record");
    assert_eq!(kv, "user-3=order-3");
    let ts: i64 = ts.parse().expect("timestamp");
    assert!((ts - common::now_ms()).abs() < 60_000, "timestamp {ts}");
    // Offsets by time: -Q answers the first record at or after it.
    let q = kcat(&["-b", k, "-Q", "-t", &format!("demo:0:{ts}")], None);
    assert!(q.contains("demo [0] offset 2"), "{q}");
}

#[test]
fn kcat_balanced_consumers_split_a_topic_and_commit() {
    setup();
    let b = start_broker();
    let out = sluice_cli(&b.native)
        .args(["topic", "create", "g4", "--partitions", "4"])
        .output()
        .expect("create");
    assert!(out.status.success());
    let input: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    kcat(
        &["-b", &b.kafka, "-P", "-t", "g4", "-K:"],
        Some(input.as_bytes()),
    );
    let member = || {
        Command::new("timeout")
            .args([
                "12", "kcat", "-b", &b.kafka, "-G", "kc", "g4", "-f", "%p %s\n",
            ])
            .args(["-X", "auto.offset.reset=earliest"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat -G")
    };
    let (c1, c2) = (member(), member());
    let (o1, o2) = (
        wait_output(c1, Duration::from_secs(30)),
        wait_output(c2, Duration::from_secs(30)),
    );
    let parts = |o: &Output| -> BTreeSet<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let (p1, p2) = (parts(&o1), parts(&o2));
    assert!(
        !p1.is_empty() && !p2.is_empty() && p1.is_disjoint(&p2),
        "{p1:?} {p2:?}"
    );
    let lines = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().count();
    assert_eq!(lines(&o1) + lines(&o2), 40);
    // The group's commits are visible to the native CLI, lag 0.
    let out = sluice_cli(&b.native)
        .args(["group", "describe", "kc", "--json"])
        .output()
        .expect("group describe");
    let d: Value = serde_json::from_slice(&out.stdout).expect("json");
    let total: i64 = d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["committed_offset"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, 40, "{d}");
}

#[test]
fn an_idempotent_producer_rides_through_a_leader_kill_with_no_loss_and_no_duplicate() {
    setup();
    let mut c = TestCluster::start_voters(3);
    let out = sluice_cli(&c.bootstrap(1))
        .args([
            "topic",
            "create",
            "ride",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ])
        .output()
        .expect("create");
    assert!(out.status.success(), "{out:?}");
    let leader = common::workload::leader_of(&mut c, "ride", 0);
    let boot: Vec<String> = c
        .ids()
        .iter()
        .map(|id| c.node(*id).kafka_addr.to_string())
        .collect();
    let child = Client::Confluent
        .command(&boot.join(","), "failover", "ride", Some("20000"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    std::thread::sleep(Duration::from_secs(3));
    c.kill(leader);
    let out = wait_output(child, Duration::from_secs(180));
    let lines = json_lines(&out.stdout);
    assert!(
        out.status.success() && lines.last().is_some_and(|l| l.get("ok").is_some()),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}

#[test]
fn deleted_records_stay_deleted_after_the_leader_dies() {
    setup();
    let mut c = TestCluster::start_voters(3);
    let out = sluice_cli(&c.bootstrap(1))
        .args([
            "topic",
            "create",
            "dr",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
        ])
        .output()
        .expect("create");
    assert!(out.status.success(), "{out:?}");
    let boot: Vec<String> = c
        .ids()
        .iter()
        .map(|id| c.node(*id).kafka_addr.to_string())
        .collect();
    let boot = boot.join(",");
    let input: String = (0..100).map(|i| format!("v{i}\n")).collect();
    kcat(
        &["-b", &boot, "-P", "-t", "dr", "-X", "acks=all"],
        Some(input.as_bytes()),
    );
    Client::Confluent.run(&boot, "delete-records", "dr", Some("40"));
    // The followers learn the new start from their next fetches.
    std::thread::sleep(Duration::from_secs(3));
    let leader = common::workload::leader_of(&mut c, "dr", 0);
    c.kill(leader);
    let first = |boot: &str| {
        kcat(
            &[
                "-b",
                boot,
                "-C",
                "-t",
                "dr",
                "-o",
                "beginning",
                "-c",
                "1",
                "-e",
                "-f",
                "%o %s\n",
            ],
            None,
        )
    };
    let alive: Vec<String> = c
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .map(|id| c.node(id).kafka_addr.to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = std::panic::catch_unwind(|| first(&alive.join(",")));
        if let Ok(line) = got {
            if !line.trim().is_empty() {
                assert_eq!(
                    line.trim(),
                    "40 v40",
                    "the new leader serves deleted records"
                );
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader served the topic\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
