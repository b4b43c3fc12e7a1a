//! TLS on real `sluiced` processes. Every certificate is generated with
//! rcgen into the test's temp directory when the test runs
//! (`sluice_tls::testing::Pki`): a CA, broker certificates for 127.0.0.1,
//! ::1 and localhost, a client certificate with CN=alice, a certificate of
//! another CA, and expired ones.
//!
//! - native produce and consume over TLS, every record checked byte for
//!   byte (records up to 1 MiB, so TLS records split them);
//! - mTLS required: alice is admitted (and the broker logs her principal),
//!   no certificate, a foreign CA's and an expired one are refused, the
//!   broker keeps serving; an expired broker certificate is refused by the
//!   client;
//! - plaintext and silent clients on a TLS port are closed (the silent one
//!   within the 10 s handshake timeout) and counted; TLS clients are served
//!   meanwhile;
//! - `/metrics` over HTTPS;
//! - SIGHUP swaps the certificate for new connections, keeps existing ones,
//!   and survives a broken key file;
//! - the Kafka listener with `kafka_security = ssl`: kcat and confluent-kafka
//!   produce and consume (mTLS with alice's certificate);
//! - three nodes with `cluster_tls` and `native_security = ssl` under
//!   required mTLS: acks=durable writes survive the SIGKILL of the leader.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sluice_client::{
    Acks, Admin, ClientConfig, ClientError, ClientTls, Consumer, ConsumerConfig, Producer,
    ProducerConfig, Record, SeekTo,
};
use sluice_tls::testing::{CertFiles, Pki, Usage};
use sluice_tls::{Connector, MaybeTlsStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a broker may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `sluiced` process; SIGKILLed on drop.
struct Broker {
    child: Option<Child>,
    native: String,
    http: String,
    kafka: String,
    log: PathBuf,
}

impl Broker {
    /// Starts `sluiced` on `data` with loopback ports and `args`.
    fn start(dir: &Path, name: &str, args: &[String]) -> Broker {
        let data = dir.join(format!("{name}-data"));
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluiced"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SLUICE_CONFIG")
            .env("SLUICE_LOG", "info,sluiced::tls=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
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
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|p| p.strip_prefix(key))
                .map(str::to_string)
        };
        let (Some(native), Some(http), Some(kafka)) =
            (field("native="), field("http="), field("kafka="))
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluiced {name} did not start ({line:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Broker {
            child: Some(child),
            native,
            http,
            kafka,
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text` (at most `timeout`).
    fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the broker log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `--tls-cert-file`, `--tls-key-file` (and `--tls-ca-file`) arguments.
fn tls_args(leaf: &CertFiles, ca: Option<&Path>) -> Vec<String> {
    let mut v = vec![
        "--tls-cert-file".to_string(),
        leaf.cert.display().to_string(),
        "--tls-key-file".to_string(),
        leaf.key.display().to_string(),
    ];
    if let Some(ca) = ca {
        v.extend(["--tls-ca-file".to_string(), ca.display().to_string()]);
    }
    v
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A client of `bootstrap` trusting `ca`, presenting `cert` if given.
fn client(bootstrap: &str, ca: &Path, cert: Option<&CertFiles>) -> ClientConfig {
    let tls = ClientTls::from_files(ca, cert.map(|c| (c.cert.as_path(), c.key.as_path())))
        .expect("client TLS config");
    ClientConfig {
        bootstrap: bootstrap.to_string(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        tls: Some(tls),
        ..ClientConfig::default()
    }
}

/// Records of sizes from 0 bytes to 1 MiB, each with distinct contents.
fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i: usize| {
            let len = match i % 5 {
                0 => 0,
                1 => 17,
                2 => 1024,
                3 => 70_000,
                _ => 1 << 20,
            };
            (0..len)
                .map(|j: usize| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
                .collect()
        })
        .collect()
}

/// Produces `values` to partition 0 of `topic` with `acks`; the offsets.
async fn produce(config: &ClientConfig, topic: &str, values: &[Vec<u8>], acks: Acks) -> Vec<u64> {
    let producer = Producer::with_config(
        config.clone(),
        ProducerConfig {
            acks,
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        },
    );
    let sends: Vec<_> = values
        .iter()
        .map(|v| producer.send(Record::new(topic, v.clone()).partition(0)))
        .collect();
    let mut offsets = Vec::new();
    for s in sends {
        let (partition, offset) = s.await.expect("acknowledged");
        assert_eq!(partition, 0);
        offsets.push(offset);
    }
    producer.close().await;
    offsets
}

/// Reads `n` records of partition 0 of `topic` from the start: (offset, value).
async fn consume(config: &ClientConfig, topic: &str, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut consumer = Consumer::with_config(
        config.clone(),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(vec![(topic.to_string(), 0)]);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records within 60 s", out.len()));
        match next {
            Some(Ok(r)) => out.push((r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default())),
            // Retriable: a leader moving, a topic being created.
            Some(Err(e)) if e.is_retriable() => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Some(Err(e)) => panic!("consume failed: {e}"),
            None => panic!("consumer ended"),
        }
    }
    out
}

/// Asserts that `got` holds exactly `values` at `offsets`, byte for byte.
fn assert_records(got: &[(u64, Vec<u8>)], offsets: &[u64], values: &[Vec<u8>]) {
    assert_eq!(got.len(), values.len());
    for ((o, v), (want_o, want_v)) in got.iter().zip(offsets.iter().zip(values)) {
        assert_eq!(o, want_o, "offset");
        assert!(
            v == want_v,
            "record at offset {o} differs ({} vs {} bytes)",
            v.len(),
            want_v.len()
        );
    }
}

/// The error of connecting an admin client with `config`.
async fn admin_error(config: ClientConfig, what: &str) -> ClientError {
    match Admin::with_config(config).await {
        Ok(_) => panic!("{what}: connected"),
        Err(e) => e,
    }
}

/// The common name of the certificate a new TLS connection to `addr` is served.
async fn served_cn(addr: &str, ca: &Path) -> String {
    let config = sluice_tls::client_config(Some(ca), None).unwrap();
    let s = Connector::tls(config)
        .connect(addr)
        .await
        .expect("TLS connect");
    let MaybeTlsStream::ClientTls(s) = s else {
        panic!("not TLS")
    };
    let cert = s.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    // Hang up cleanly (close_notify, then the broker's close), so the
    // broker logs nothing about this connection.
    let mut s = MaybeTlsStream::ClientTls(s);
    let _ = s.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut Vec::new())).await;
    sluice_tls::principal::common_name(cert.as_ref()).expect("a CN")
}

/// `GET path` over HTTPS (trusting `ca`): the whole response text.
async fn https_get(addr: &str, ca: &Path, path: &str) -> String {
    let config = sluice_tls::client_config(Some(ca), None).unwrap();
    let mut s = Connector::tls(config)
        .connect(addr)
        .await
        .expect("HTTPS connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut text))
        .await
        .expect("response in time");
    String::from_utf8_lossy(&text).into_owned()
}

/// Reads from a plain TCP stream until the peer closes it (or `limit`):
/// whether it closed, and what it sent.
fn closed_within(s: &mut std::net::TcpStream, limit: Duration) -> (bool, Vec<u8>) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return (false, got)
            }
            Err(_) => return (true, got),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_records_round_trip_over_tls_and_plaintext_clients_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let leaf = pki.server("broker", "broker");
    let mut a = args(&["--native-security", "ssl", "--http-tls"]);
    a.extend(tls_args(&leaf, None));
    let b = Broker::start(dir.path(), "b", &a);

    // A client that connects and says nothing: closed by the handshake timeout.
    let mut silent = std::net::TcpStream::connect(&b.native).unwrap();
    let silent_since = Instant::now();

    let config = client(&b.native, &pki.ca_file, None);
    let admin = Admin::with_config(config.clone()).await.expect("TLS admin");
    admin.create_topic("tls", 1, vec![]).await.unwrap();
    let values = payloads(40);
    let offsets = produce(&config, "tls", &values, Acks::Leader).await;
    assert_eq!(offsets, (0..40).collect::<Vec<u64>>());
    let got = consume(&config, "tls", values.len()).await;
    assert_records(&got, &offsets, &values);

    // Plaintext to the TLS port: a native ApiVersions frame. The broker
    // closes the connection (after, at most, a TLS alert).
    let mut plain = std::net::TcpStream::connect(&b.native).unwrap();
    plain
        .write_all(&[
            0, 0, 0, 18, 0, 18, 0, 0, 0, 0, 0, 1, 0, 4, b't', b'e', b's', b't', 0, 0, 0, 0,
        ])
        .unwrap();
    let (closed, sent) = closed_within(&mut plain, Duration::from_secs(15));
    assert!(closed, "the broker kept a plaintext client open");
    assert!(
        sent.len() < 16,
        "a plaintext client got an answer: {sent:?}"
    );
    b.wait_log("TLS handshake failed", Duration::from_secs(5));

    // TLS clients are served meanwhile and afterwards.
    let more = payloads(5);
    let more_offsets = produce(&config, "tls", &more, Acks::Durable).await;
    assert_eq!(more_offsets, (40..45).collect::<Vec<u64>>());
    let all = consume(&config, "tls", 45).await;
    assert_records(&all[40..], &more_offsets, &more);

    // The silent client is gone within the handshake timeout (10 s).
    let left = Duration::from_secs(16).saturating_sub(silent_since.elapsed());
    let (closed, _) = closed_within(&mut silent, left.max(Duration::from_secs(1)));
    assert!(closed, "a silent client outlived the handshake timeout");

    // /metrics over HTTPS counts both failures; plain HTTP gets no answer.
    let text = https_get(&b.http, &pki.ca_file, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("sluice_tls_handshake_failures_total{listener=\"native\"} 2"),
        "{text}"
    );
    assert!(text.contains("sluice_active_connections"), "{text}");
    let health = https_get(&b.http, &pki.ca_file, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let mut plain_http = std::net::TcpStream::connect(&b.http).unwrap();
    plain_http
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (closed, sent) = closed_within(&mut plain_http, Duration::from_secs(15));
    assert!(closed);
    assert!(!String::from_utf8_lossy(&sent).contains("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_admit_only_the_cas_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let other = Pki::new(dir.path(), "other");
    let leaf = pki.server("broker", "broker");
    let alice = pki.client("alice", "alice");
    let mallory = other.client("mallory", "mallory");
    let stale = pki.expired("stale", "stale", Usage::Client);
    let mut a = args(&["--native-security", "ssl", "--tls-client-auth", "required"]);
    a.extend(tls_args(&leaf, Some(&pki.ca_file)));
    let b = Broker::start(dir.path(), "b", &a);
    let ca = pki.ca_file.as_path();

    let config = client(&b.native, ca, Some(&alice));
    let admin = Admin::with_config(config.clone())
        .await
        .expect("alice is admitted");
    admin.create_topic("m", 1, vec![]).await.unwrap();
    // The connection's principal comes from the certificate.
    b.wait_log("principal=Some(\"User:alice\")", Duration::from_secs(5));

    for (who, cert) in [
        ("no certificate", None),
        ("a foreign CA's", Some(&mallory)),
        ("an expired one", Some(&stale)),
    ] {
        let mut c = client(&b.native, ca, cert);
        c.request_timeout = Duration::from_secs(5);
        let r = match Admin::with_config(c).await {
            Ok(admin) => admin.list_topics().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let e = r.expect_err(who);
        assert!(
            matches!(
                e,
                ClientError::Tls { .. } | ClientError::Disconnected { .. }
            ),
            "{who}: {e:?}"
        );
    }

    // The broker is unaffected: alice still produces and consumes.
    let values = payloads(10);
    let offsets = produce(&config, "m", &values, Acks::Leader).await;
    assert_records(&consume(&config, "m", 10).await, &offsets, &values);
    let failures = b.log().matches("TLS handshake failed").count();
    assert!(
        failures >= 3,
        "{failures} failed handshakes logged:\n{}",
        b.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_refuse_an_expired_or_unknown_broker_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let other = Pki::new(dir.path(), "other");
    let expired = pki.expired("old", "old", Usage::Server);
    let mut a = args(&["--native-security", "sasl_ssl"]);
    a.extend(tls_args(&expired, None));
    let b = Broker::start(dir.path(), "expired", &a);
    let e = admin_error(
        client(&b.native, &pki.ca_file, None),
        "an expired certificate",
    )
    .await;
    assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
    assert!(!e.is_retriable());
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");

    // A valid certificate from a CA the client does not trust.
    let foreign = other.server("foreign", "foreign");
    let mut a = args(&["--native-security", "ssl"]);
    a.extend(tls_args(&foreign, None));
    let b = Broker::start(dir.path(), "foreign", &a);
    let e = admin_error(client(&b.native, &pki.ca_file, None), "an unknown CA").await;
    assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");

    // A TLS client on a plaintext port.
    let plain = Broker::start(dir.path(), "plain", &[]);
    let e = admin_error(
        client(&plain.native, &pki.ca_file, None),
        "TLS to plaintext",
    )
    .await;
    assert!(matches!(e, ClientError::Tls { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let first = pki.server("broker", "first");
    let mut a = args(&["--native-security", "ssl"]);
    a.extend(tls_args(&first, None));
    let b = Broker::start(dir.path(), "b", &a);
    let ca = pki.ca_file.as_path();
    assert_eq!(served_cn(&b.native, ca).await, "first");

    // An existing connection: a producer that keeps its session.
    let config = client(&b.native, ca, None);
    let producer = Producer::with_config(config.clone(), ProducerConfig::default());
    let before = producer
        .send(Record::new("hup", "before").partition(0))
        .await
        .expect("produced before the reload");

    // The same file names, a new certificate (new key, serial and CN).
    let second = pki.server("broker", "second");
    assert_eq!(second, first);
    b.signal(libc::SIGHUP);
    b.wait_log("TLS certificate reloaded", Duration::from_secs(10));
    assert_eq!(served_cn(&b.native, ca).await, "second");
    let after = producer
        .send(Record::new("hup", "after").partition(0))
        .await
        .expect("the existing connection still works");
    assert_eq!(after.1, before.1 + 1);
    assert!(
        !b.log().contains("closing connection"),
        "a connection was closed by the reload:\n{}",
        b.log()
    );

    // A broken key file: the reload fails, the last good certificate stays.
    std::fs::write(
        &first.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    b.signal(libc::SIGHUP);
    b.wait_log("TLS certificate reload failed", Duration::from_secs(10));
    assert_eq!(served_cn(&b.native, ca).await, "second");
    producer.close().await;
    let got = consume(&config, "hup", 2).await;
    assert_eq!(got[0].1, b"before");
    assert_eq!(got[1].1, b"after");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Installs the real Kafka clients (kcat, confluent-kafka) as the other
/// Kafka-client tests do; quick when they are there.
fn kafka_clients_setup() {
    let out = Command::new("bash")
        .arg(repo().join("tests/kafka-clients/setup.sh"))
        .output()
        .expect("run tests/kafka-clients/setup.sh");
    assert!(
        out.status.success(),
        "tests/kafka-clients/setup.sh could not install the Kafka clients:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` (killed after 120 s) with `stdin`; its stdout, asserting success.
fn run(mut cmd: Command, stdin: &[u8]) -> String {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn client");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    // Output is collected while the child runs (a full pipe would stall it);
    // a watchdog kills it if it hangs.
    let pid = child.id() as libc::pid_t;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_produce_and_consume_over_ssl() {
    kafka_clients_setup();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let leaf = pki.server("broker", "broker");
    let alice = pki.client("alice", "alice");
    let mut a = args(&["--kafka-security", "ssl", "--tls-client-auth", "required"]);
    a.extend(tls_args(&leaf, Some(&pki.ca_file)));
    let b = Broker::start(dir.path(), "b", &a);
    let ssl = [
        "-X".to_string(),
        "security.protocol=SSL".to_string(),
        "-X".to_string(),
        format!("ssl.ca.location={}", pki.ca_file.display()),
        "-X".to_string(),
        format!("ssl.certificate.location={}", alice.cert.display()),
        "-X".to_string(),
        format!("ssl.key.location={}", alice.key.display()),
    ];

    // kcat: produce lines (auto-creating the topic), then read them back.
    let lines: Vec<String> = (0..200)
        .map(|i| format!("kcat-{i}-{}", "x".repeat(i * 7)))
        .collect();
    let input = lines.join("\n") + "\n";
    let mut produce = Command::new("kcat");
    produce
        .args(["-b", &b.kafka, "-P", "-t", "kt", "-p", "0"])
        .args(&ssl);
    run(produce, input.as_bytes());
    let mut consume = Command::new("kcat");
    consume
        .args([
            "-b",
            &b.kafka,
            "-C",
            "-t",
            "kt",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(&ssl);
    let out = run(consume, b"");
    assert_eq!(out.lines().collect::<Vec<_>>(), lines);
    b.wait_log("principal=Some(\"User:alice\")", Duration::from_secs(5));

    // confluent-kafka (librdkafka from PyPI) produces and reads with assign().
    let script = r#"
import sys
from confluent_kafka import Producer, Consumer, TopicPartition
boot, ca, cert, key = sys.argv[1:5]
conf = {"bootstrap.servers": boot, "security.protocol": "SSL", "ssl.ca.location": ca,
        "ssl.certificate.location": cert, "ssl.key.location": key}
p = Producer(conf)
for i in range(100):
    p.produce("py", value=("py-%d" % i).encode(), partition=0)
assert p.flush(60) == 0, "unflushed records"
c = Consumer(dict(conf, **{"group.id": "py-tls", "enable.auto.commit": False}))
c.assign([TopicPartition("py", 0, 0)])
got = []
while len(got) < 100:
    m = c.poll(30)
    assert m is not None, "no record within 30 s after %d" % len(got)
    assert m.error() is None, m.error()
    got.append(m.value().decode())
c.close()
print("\n".join(got))
"#;
    let mut py = Command::new("python3");
    py.arg("-c")
        .arg(script)
        .args([&b.kafka, &pki.ca_file.display().to_string()])
        .args([
            alice.cert.display().to_string(),
            alice.key.display().to_string(),
        ])
        .env("PYTHONPATH", repo().join("target/kafka-clients/python"));
    let out = run(py, b"");
    let want: Vec<String> = (0..100).map(|i| format!("py-{i}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}

/// A free loopback port (bound and released; the caller binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_keeps_durable_records_across_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cluster");
    let leaf = pki.server("broker", "broker");
    let admin_cert = pki.client("admin", "admin");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Broker> = (0..3)
        .map(|i| {
            let mut a = args(&[
                "--native-security",
                "ssl",
                "--cluster-tls",
                "--tls-client-auth",
                "required",
                "--broker-session-timeout-ms",
                "2000",
                "--node-id",
                &(i + 1).to_string(),
                "--peers",
                &peers,
                "--cluster-listen",
                &format!("127.0.0.1:{}", ports[i]),
            ]);
            a.extend(tls_args(&leaf, Some(&pki.ca_file)));
            Broker::start(dir.path(), &format!("node{}", i + 1), &a)
        })
        .collect();
    let logs = |nodes: &[Broker]| {
        nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.log.display(), n.log()))
            .collect::<String>()
    };
    let all = nodes
        .iter()
        .map(|n| n.native.clone())
        .collect::<Vec<_>>()
        .join(",");
    let config = client(&all, &pki.ca_file, Some(&admin_cert));

    // The cluster forms over TLS; an RF-3 topic gets all three in sync.
    let deadline = Instant::now() + Duration::from_secs(60);
    let admin = loop {
        let ready = async {
            let admin = Admin::with_config(config.clone()).await?;
            let c = admin.describe_cluster().await?;
            let alive = c.brokers.iter().filter(|b| b.alive).count();
            Ok::<_, ClientError>((alive == 3 && c.controller_id.is_some()).then_some(admin))
        };
        if let Ok(Some(admin)) = ready.await {
            break admin;
        }
        assert!(
            Instant::now() < deadline,
            "no 3-node cluster:\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    loop {
        match admin.create_topic_with("durable", 1, Some(3), vec![]).await {
            Ok(()) => break,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("create topic: {e}\n{}", logs(&nodes)),
        }
    }
    let leader = loop {
        if let Ok(t) = admin.describe_topic("durable").await {
            if let Some(p) = t.partitions.first().filter(|p| p.isr.len() == 3) {
                break p.leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the followers never caught up over TLS:\n{}",
            logs(&nodes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let values: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("durable-{i}-{}", "d".repeat(i % 97)).into_bytes())
        .collect();
    let offsets = produce(&config, "durable", &values, Acks::Durable).await;
    assert_eq!(offsets, (0..300).collect::<Vec<u64>>());

    // SIGKILL the leader; the survivors elect another and serve everything.
    let idx = usize::try_from(leader).unwrap() - 1;
    nodes[idx].kill();
    let survivors = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != idx)
        .map(|(_, n)| n.native.clone())
        .collect::<Vec<_>>()
        .join(",");
    let config = client(&survivors, &pki.ca_file, Some(&admin_cert));
    let got = consume(&config, "durable", values.len()).await;
    assert_records(&got, &offsets, &values);
    let admin = Admin::with_config(config.clone()).await.unwrap();
    let p = admin.describe_topic("durable").await.unwrap().partitions[0].clone();
    assert_ne!(p.leader, leader, "{p:?}");
    // And it takes new durable writes.
    let more = vec![b"after the kill".to_vec()];
    let more_offsets = produce(&config, "durable", &more, Acks::Durable).await;
    assert_eq!(more_offsets, vec![300]);
    for n in &nodes {
        assert!(
            !n.log().contains("TLS handshake failed"),
            "a broker refused a peer:\n{}",
            logs(&nodes)
        );
    }
}

/// The `sluice` binary next to `sluiced` in this target profile.
fn sluice_bin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_sluiced")).with_file_name("sluice");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p sluice-cli`; `cargo test --workspace` does)",
        path.display()
    );
    path
}

/// `sluice ARGS` against `broker` with the TLS settings in the environment.
fn sluice(broker: &str, tls_env: &[(&str, String)], args: &[&str], stdin: &[u8]) -> String {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(args)
        .env("SLUICE_BROKER", broker)
        .env_remove("SLUICE_LOG")
        .env_remove("RUST_LOG");
    for (k, v) in tls_env {
        cmd.env(k, v);
    }
    run(cmd, stdin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_tls_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let leaf = pki.server("broker", "broker");
    let alice = pki.client("alice", "alice");
    let mut a = args(&["--native-security", "ssl", "--tls-client-auth", "required"]);
    a.extend(tls_args(&leaf, Some(&pki.ca_file)));
    let b = Broker::start(dir.path(), "b", &a);
    let env = [
        ("SLUICE_CA_FILE", pki.ca_file.display().to_string()),
        ("SLUICE_CERT_FILE", alice.cert.display().to_string()),
        ("SLUICE_KEY_FILE", alice.key.display().to_string()),
    ];
    let native = b.native.as_str();
    sluice(
        native,
        &env,
        &["topic", "create", "cli", "--partitions", "1"],
        b"",
    );
    let lines: Vec<String> = (0..100).map(|i| format!("line-{i}")).collect();
    let input = lines.join("\n") + "\n";
    sluice(native, &env, &["topic", "produce", "cli"], input.as_bytes());
    let out = sluice(
        native,
        &env,
        &["topic", "consume", "cli", "--from", "earliest", "-n", "100"],
        b"",
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), lines);
    assert!(sluice(native, &env, &["topic", "list"], b"").contains("cli"));
    sluice(native, &env, &["cluster", "status"], b"");
    sluice(native, &env, &["group", "list"], b"");
    // The bench (native mode) over TLS, produce then consume.
    let bench = ["--topic", "bench", "--messages", "2000", "--size", "1024"];
    let out = sluice(
        native,
        &env,
        &[&["bench", "produce"][..], &bench].concat(),
        b"",
    );
    assert!(out.contains("produced 2000 messages"), "{out}");
    let out = sluice(
        native,
        &env,
        &[&["bench", "consume"][..], &bench].concat(),
        b"",
    );
    assert!(out.contains("consumed 2000 messages"), "{out}");

    // Flags instead of the environment; then what is refused, in one line each.
    let ca = pki.ca_file.display().to_string();
    let (cert, key) = (
        alice.cert.display().to_string(),
        alice.key.display().to_string(),
    );
    let flags = ["--ca-file", &ca, "--cert", &cert, "--key", &key];
    assert!(sluice(native, &[], &[&flags[..], &["topic", "list"]].concat(), b"").contains("cli"));
    let refused = |args: &[&str]| {
        let out = Command::new(sluice_bin())
            .args(args)
            .env("SLUICE_BROKER", native)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let e = refused(&["--tls", "topic", "list"]);
    assert!(e.contains("--tls needs --ca-file"), "{e}");
    let e = refused(&["--ca-file", &ca, "--cert", &cert, "topic", "list"]);
    assert!(e.contains("--cert needs --key"), "{e}");
    let e = refused(&["--ca-file", &ca, "topic", "list"]);
    assert!(e.contains("127.0.0.1"), "without a client certificate: {e}");
    let plain = Broker::start(dir.path(), "plain", &[]);
    let e = Command::new(sluice_bin())
        .args(["--ca-file", &ca, "topic", "list"])
        .env("SLUICE_BROKER", &plain.native)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&e.stderr);
    assert!(
        e.contains("TLS handshake with") && e.contains("is that port serving TLS?"),
        "{e}"
    );
}
