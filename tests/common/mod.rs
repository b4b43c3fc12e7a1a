//! Shared helpers for the black-box tests: start the real `sluiced` binary
//! on `127.0.0.1:0` ports, and a tiny synchronous client that speaks the
//! native protocol through `sluice_protocol::wire` (independent of the
//! `sluice-client` crate on purpose, so broker tests do not depend on it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{batches, RecordBatchBuilder};
use sluice_protocol::wire::{decode_response, encode_request};
use sluice_protocol::*;

/// How long a broker may take to print its `listening` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read timeout of [`RawClient`]: no test waits longer for one response.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

pub mod cluster;
pub mod fixed_port;
pub mod process;
pub mod workload;

/// `target/<profile>`, derived from this test binary's path (`target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("test binary has a parent directory");
    if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a binary built by cargo in this target profile (`target/<profile>/<name>`).
pub fn bin_path(name: &str) -> PathBuf {
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// The `sluice` CLI aimed at `broker`, with logging left at its default.
pub fn sluice_cli(broker: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin_path("sluice"));
    cmd.env("SLUICE_BROKER", broker)
        .env_remove("SLUICE_LOG")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `sluice ARGS` against `broker` with `stdin`; killed after 60 s.
pub fn sluice_with_input(broker: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut cmd = sluice_cli(broker);
    cmd.args(args);
    process::output_within(cmd, Some(stdin), Duration::from_secs(60))
}

/// Path of a compiled example (`target/<profile>/examples/<name>`).
pub fn example_path(name: &str) -> PathBuf {
    let path = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples` (plain `cargo test` builds them)",
        path.display()
    );
    path
}

/// Runs example `name` with `SLUICE_BROKER=broker` (SIGKILLed after `timeout`),
/// asserts it succeeded, and returns its stdout.
pub fn run_example(name: &str, broker: &str, args: &[&str], timeout: Duration) -> String {
    let mut cmd = Command::new(example_path(name));
    cmd.args(args).env("SLUICE_BROKER", broker);
    let out = process::output_within(cmd, None, timeout);
    assert!(
        out.status.success(),
        "example {name} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `sluiced` child process on a private temp data dir; killed on drop.
pub struct TestBroker {
    /// Native protocol address.
    pub addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// Data directory (inside the temp dir).
    pub data_dir: PathBuf,
    /// The broker's stderr, appended across restarts.
    pub log_path: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

fn spawn_broker(
    data_dir: &std::path::Path,
    log_path: &std::path::Path,
    extra: &[String],
) -> (Child, SocketAddr, SocketAddr) {
    try_spawn_broker(data_dir, log_path, "127.0.0.1:0", extra).unwrap_or_else(|e| {
        panic!(
            "{e}; its log:\n{}",
            std::fs::read_to_string(log_path).unwrap_or_default()
        )
    })
}

/// Starts `sluiced` with `--listen listen` and waits for its `listening` line.
/// On failure (e.g. the port is taken) the child is reaped and the reason returned.
pub fn try_spawn_broker(
    data_dir: &std::path::Path,
    log_path: &std::path::Path,
    listen: &str,
    extra: &[String],
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let log = append_file(log_path);
    let mut child = Command::new(bin_path("sluiced"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen, "--http-listen", "127.0.0.1:0"])
        .args(["--kafka-listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("SLUICE_CONFIG")
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn sluiced");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        // An error or EOF leaves `first` empty, which the receiver reports.
        let _ = lines.read_line(&mut first);
        let _ = tx.send(first);
        // Keep draining so the broker never blocks on a full pipe.
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
    match parse_listening(&line) {
        Some((addr, http)) => Ok((child, addr, http)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "sluiced on {listen} did not start (first stdout line {line:?})"
            ))
        }
    }
}

/// Parses `listening native=IP:PORT http=IP:PORT`.
pub fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("listening ")?;
    let mut native = None;
    let mut http = None;
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("native=") {
            native = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("http=") {
            http = v.parse().ok();
        }
    }
    Some((native?, http?))
}

impl TestBroker {
    /// A broker with default settings on a fresh temp data dir.
    pub fn start() -> TestBroker {
        TestBroker::start_with(&[])
    }

    /// A broker with extra `sluiced` arguments.
    pub fn start_with(extra_args: &[&str]) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("broker.log");
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let (child, addr, http_addr) = spawn_broker(&data_dir, &log_path, &extra_args);
        TestBroker {
            addr,
            http_addr,
            data_dir,
            log_path,
            child: Some(child),
            extra_args,
            _dir: dir,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("broker is running")
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (at most 30 s, then SIGKILL and panic).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("broker is running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("sluiced did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts again on the same data dir and arguments (new ports).
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr, http) = spawn_broker(&self.data_dir, &self.log_path, &self.extra_args);
        self.child = Some(child);
        self.addr = addr;
        self.http_addr = http;
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// The broker's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A connected raw client.
    pub fn client(&self) -> RawClient {
        RawClient::connect(self.addr)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET path` over HTTP/1.1; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], b"")
}

/// One HTTP/1.1 request (`Connection: close`) with extra header lines and
/// a body; returns (status, body). A server that answers before reading the
/// whole body (413) may reset the connection: the answer still counts.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("http connect");
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("http write");
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `GET /metrics` until its body satisfies `ready`, at most `timeout`
/// (then panics with `what` and the last body); returns that body.
pub fn wait_for_metrics(
    http_addr: SocketAddr,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, body) = http_get(http_addr, "/metrics");
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One batch holding `values` (keyless, timestamp `ts`).
pub fn batch_at(ts: i64, values: &[&[u8]]) -> Bytes {
    let mut b = RecordBatchBuilder::new();
    for v in values {
        b.push(ts, None, Some(v), &[]);
    }
    b.finish()
}

/// One batch holding `values`, timestamped now.
pub fn batch_of(values: &[&[u8]]) -> Bytes {
    batch_at(now_ms(), values)
}

/// Every record of concatenated batches as (offset, value), checking CRCs.
pub fn decode_values(records: &Bytes) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for b in batches(records) {
        let b = b.expect("valid batch from broker");
        b.validate().expect("batch CRC from broker");
        for r in b.records() {
            let r = r.expect("valid record");
            out.push((r.offset, r.value.unwrap_or_default().to_vec()));
        }
    }
    out
}

/// A blocking native-protocol client for tests: send/recv by correlation id.
pub struct RawClient {
    /// The socket (public so tests can write garbage or half-close).
    pub stream: TcpStream,
    next_id: u32,
    pending: HashMap<u32, ApiKey>,
}

impl RawClient {
    /// Connects (20 s read timeout).
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            next_id: 1,
            pending: HashMap::new(),
        }
    }

    /// Sends a request; returns its correlation id.
    pub fn send(&mut self, req: &Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = BytesMut::new();
        encode_request(id, "sluice-tests", req, &mut buf);
        self.stream.write_all(&buf).expect("write request");
        self.pending.insert(id, req.api_key());
        id
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one frame payload (without its length).
    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut payload)?;
        Ok(Bytes::from(payload))
    }

    /// Receives the next response (any pending correlation id).
    pub fn recv(&mut self) -> (u32, Response) {
        let payload = self.read_frame().expect("read response");
        let id = sluice_protocol::wire::peek_correlation_id(&payload).expect("correlation id");
        let api = self
            .pending
            .remove(&id)
            .unwrap_or_else(|| panic!("response for unknown correlation id {id}"));
        let (cid, resp) = decode_response(api, payload).expect("decode response");
        assert_eq!(cid, id);
        (id, resp)
    }

    /// Sends and waits for this request's response (no other request may be pending).
    pub fn call(&mut self, req: &Request) -> Response {
        let id = self.send(req);
        let (got, resp) = self.recv();
        assert_eq!(got, id, "response to another request");
        resp
    }

    /// True when the broker has closed the connection (EOF or reset) within the timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// CreateTopics for one topic; returns its error code.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        configs: &[(&str, &str)],
    ) -> ErrorCode {
        let req = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: DEFAULT_REPLICATION_FACTOR,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
        });
        match self.call(&req) {
            Response::CreateTopics(r) => r.topics[0].error,
            // Refused while decoding (e.g. an invalid name): the whole request.
            Response::Error(code) => code,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// DeleteTopics for one topic; returns its error code.
    pub fn delete_topic(&mut self, name: &str) -> ErrorCode {
        match self.call(&Request::DeleteTopics(DeleteTopicsRequest {
            topics: vec![name.into()],
        })) {
            Response::DeleteTopics(r) => r.topics[0].error,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The Produce request for one partition.
    pub fn produce_request(topic: &str, partition: u32, records: Bytes, acks: Acks) -> Request {
        Request::Produce(ProduceRequest {
            acks,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: topic.into(),
                partitions: vec![ProducePartition { partition, records }],
            }],
        })
    }

    /// Produces to one partition and returns its result (acks must not be none).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        records: Bytes,
        acks: Acks,
    ) -> ProducePartitionResponse {
        match self.call(&Self::produce_request(topic, partition, records, acks)) {
            Response::Produce(mut r) => r.topics.remove(0).partitions.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The Fetch request for one partition.
    pub fn fetch_request(
        topic: &str,
        partition: u32,
        offset: u64,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> Request {
        Request::Fetch(FetchRequest {
            max_wait_ms,
            min_bytes,
            max_bytes: 64 << 20,
            topics: vec![FetchTopic {
                name: topic.into(),
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: offset,
                    max_bytes: 16 << 20,
                }],
            }],
        })
    }

    /// Extracts the single partition of a fetch response.
    pub fn fetch_partition(resp: Response) -> FetchPartitionResponse {
        match resp {
            Response::Fetch(mut r) => r.topics.remove(0).partitions.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Fetches one partition without waiting.
    pub fn fetch(&mut self, topic: &str, partition: u32, offset: u64) -> FetchPartitionResponse {
        Self::fetch_partition(self.call(&Self::fetch_request(topic, partition, offset, 0, 1)))
    }

    /// Every record from `from` to the end of the partition as (offset, value).
    pub fn fetch_all(&mut self, topic: &str, partition: u32, from: u64) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = from;
        for _ in 0..100_000 {
            let p = self.fetch(topic, partition, offset);
            assert_eq!(
                p.error,
                ErrorCode::None,
                "fetch {topic}/{partition}@{offset}"
            );
            if p.records.is_empty() {
                return out;
            }
            for (o, v) in decode_values(&p.records) {
                if o >= offset as i64 {
                    out.push((o, v));
                }
            }
            offset = out.last().map(|(o, _)| *o as u64 + 1).unwrap_or(offset);
            if offset >= p.high_watermark {
                return out;
            }
        }
        panic!("fetch_all did not reach the end");
    }

    /// ListOffsets for one partition: (error, offset, timestamp).
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> (ErrorCode, u64, i64) {
        let req = Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: topic.into(),
                partitions: vec![ListOffsetsPartition { partition, spec }],
            }],
        });
        match self.call(&req) {
            Response::ListOffsets(mut r) => {
                let p = r.topics.remove(0).partitions.remove(0);
                (p.error, p.offset, p.timestamp)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Metadata for the given topics (empty = all).
    pub fn metadata(&mut self, topics: &[&str]) -> MetadataResponse {
        match self.call(&Request::Metadata(MetadataRequest {
            topics: topics.iter().map(|s| s.to_string()).collect(),
        })) {
            Response::Metadata(m) => m,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Opens a file for appending (used by tests that keep their own logs).
pub fn append_file(path: &std::path::Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
}
