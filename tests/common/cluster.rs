//! A cluster of real `sluiced` processes on loopback for the multi-node tests.
//!
//! [`TestCluster::start`] picks free native, HTTP and cluster ports for every
//! node (all chosen before any is released, so they are distinct), starts
//! voters `1..=voters` with `--peers` and broker-only nodes after them with
//! `--join` (every voter's cluster address) and `--peers`, each on its own
//! data dir in one temp dir, and waits until the cluster is ready
//! ([`TestCluster::wait_ready`]). If a node cannot start (another test took
//! a port between the probe and its bind), every node is stopped, the data
//! dirs are wiped and the whole cluster is tried again on new ports.
//!
//! A node keeps its ports and data dir across [`TestCluster::kill`] /
//! [`TestCluster::terminate`] and [`TestCluster::restart`], so the peers'
//! `--peers` stay right. Every wait is bounded and panics with the nodes'
//! logs; dropping the cluster SIGKILLs every node.
//!
//! The harness speaks the native protocol itself (version 1 of Metadata and
//! CreateTopics, so replicas and replication factors are visible) with
//! short timeouts, so a dead or stuck node never blocks a poll.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_protocol::wire::{decode_response_version, encode_request_version};
use sluice_protocol::*;

use super::{append_file, bin_path, parse_listening, process, sluice_cli, RawClient};

/// How long a node may take to print its `listening` line.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
/// First-start attempts of the whole cluster, each on new ports.
const START_ATTEMPTS: usize = 4;
/// How long a restart retries its ports while something else holds them.
const RESTART_DEADLINE: Duration = Duration::from_secs(20);
/// Default bound of [`TestCluster::wait_ready`] after a start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Read/write timeout of one harness request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(100);
/// How many trailing log lines of each node a panic message shows.
const LOG_TAIL_LINES: usize = 60;
/// Bound of one `sluice` CLI run.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// What cluster to start.
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    /// Controller voters, ids `1..=voters` (listed in `--peers`).
    pub voters: u32,
    /// Broker-only nodes, ids after the voters, started with `--join`.
    pub joiners: u32,
    /// Rack of each node in id order (missing or empty: no `--rack`).
    pub racks: Vec<String>,
    /// `--broker-session-timeout-ms`, when set.
    pub session_timeout_ms: Option<u64>,
    /// Extra `sluiced` arguments for every node.
    pub extra_args: Vec<String>,
}

impl ClusterSpec {
    /// `n` voters, no broker-only nodes, no racks.
    pub fn voters(n: u32) -> ClusterSpec {
        ClusterSpec {
            voters: n,
            ..ClusterSpec::default()
        }
    }

    /// Adds `n` broker-only nodes (started with `--join`).
    pub fn joiners(mut self, n: u32) -> ClusterSpec {
        self.joiners = n;
        self
    }

    /// Racks of the nodes in id order.
    pub fn racks(mut self, racks: &[&str]) -> ClusterSpec {
        self.racks = racks.iter().map(|r| r.to_string()).collect();
        self
    }

    /// A short broker session timeout (fencing tests).
    pub fn session_timeout_ms(mut self, ms: u64) -> ClusterSpec {
        self.session_timeout_ms = Some(ms);
        self
    }

    /// Extra `sluiced` arguments for every node.
    pub fn extra_args(mut self, args: &[&str]) -> ClusterSpec {
        self.extra_args = args.iter().map(|a| a.to_string()).collect();
        self
    }
}

/// One node of a [`TestCluster`].
#[derive(Debug)]
pub struct TestNode {
    /// Node id.
    pub id: u32,
    /// Whether the node is a controller voter (else broker-only).
    pub voter: bool,
    /// Rack, if any.
    pub rack: Option<String>,
    /// Native protocol address (the same across restarts).
    pub addr: SocketAddr,
    /// HTTP address (the same across restarts).
    pub http_addr: SocketAddr,
    /// Cluster (controller) address (the same across restarts).
    pub cluster_addr: SocketAddr,
    /// Kafka-protocol address (the same across restarts).
    pub kafka_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The node's stderr, appended across restarts.
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl TestNode {
    /// The node's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the node's stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id, while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child that has been spawned and is expected to print `listening ...`.
struct Pending {
    id: u32,
    child: Child,
    line: mpsc::Receiver<String>,
}

/// N `sluiced` processes forming one cluster; every node is SIGKILLed on drop.
pub struct TestCluster {
    spec: ClusterSpec,
    nodes: BTreeMap<u32, TestNode>,
    peers: String,
    join: String,
    dir: tempfile::TempDir,
}

/// `n` distinct ports that were free a moment ago (all probes held until all are chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a probe port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("probe local addr").port())
        .collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Credentials the harness logs in with (SCRAM-SHA-256) before each probe,
/// for clusters whose native listeners require SASL; unset: no login. One
/// test binary, one setting (set it before starting the cluster).
pub static NATIVE_LOGIN: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// One request/response on `s` (correlation id `cid`).
fn exchange(
    s: &mut TcpStream,
    addr: SocketAddr,
    cid: u32,
    req: &Request,
    version: u16,
) -> Result<Response, String> {
    let mut buf = BytesMut::new();
    encode_request_version(cid, version, "sluice-cluster-tests", req, &mut buf);
    s.write_all(&buf)
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut payload)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let (got, resp) = decode_response_version(req.api_key(), version, Bytes::from(payload))
        .map_err(|e| format!("decode {} from {addr}: {e}", req.api_key()))?;
    if got != cid {
        return Err(format!("correlation id {got} from {addr}"));
    }
    Ok(resp)
}

/// The SCRAM-SHA-256 login of [`NATIVE_LOGIN`] on a fresh connection.
fn native_login(s: &mut TcpStream, addr: SocketAddr, user: &str, pw: &str) -> Result<(), String> {
    use sluice_auth::scram::{ScramClient, ScramMechanism};
    let hs = Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: "SCRAM-SHA-256".into(),
    });
    match exchange(s, addr, 100, &hs, 0)? {
        Response::SaslHandshake(r) if r.error == ErrorCode::None => {}
        other => return Err(format!("SaslHandshake to {addr}: {other:?}")),
    }
    let mut client = ScramClient::new(ScramMechanism::Sha256, user, pw);
    let mut step = |cid: u32, bytes: Vec<u8>| -> Result<Bytes, String> {
        let req = Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: Bytes::from(bytes),
        });
        match exchange(s, addr, cid, &req, 0)? {
            Response::SaslAuthenticate(r) if r.error == ErrorCode::None => Ok(r.auth_bytes),
            other => Err(format!("SaslAuthenticate to {addr}: {other:?}")),
        }
    };
    let server_first = step(101, client.first())?;
    let fin = client
        .finish(&server_first)
        .map_err(|e| format!("SCRAM with {addr}: {e}"))?;
    let server_final = step(102, fin)?;
    client
        .verify(&server_final)
        .map_err(|e| format!("SCRAM with {addr}: {e}"))
}

/// Sends `req` in `version` to `addr` on a fresh connection and returns the
/// response, or why there is none (connect, timeout, decode), within
/// [`PROBE_TIMEOUT`] per step (after a login when [`NATIVE_LOGIN`] is set).
pub fn call_version(addr: SocketAddr, req: &Request, version: u16) -> Result<Response, String> {
    let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| format!("socket options: {e}"))?;
    if let Some((user, pw)) = NATIVE_LOGIN.get() {
        native_login(&mut s, addr, user, pw)?;
    }
    exchange(&mut s, addr, 1, req, version)
}

/// DescribeCluster from `addr`.
pub fn describe_cluster_at(addr: SocketAddr) -> Result<DescribeClusterResponse, String> {
    match call_version(addr, &Request::DescribeCluster, 0)? {
        Response::DescribeCluster(r) => Ok(r),
        other => Err(format!("unexpected {other:?}")),
    }
}

/// Metadata v1 (replicas, isr, leader epochs) from `addr`; empty `topics` = all.
pub fn metadata_at(addr: SocketAddr, topics: &[&str]) -> Result<MetadataResponse, String> {
    let req = Request::Metadata(MetadataRequest {
        topics: topics.iter().map(|t| t.to_string()).collect(),
    });
    match call_version(addr, &req, 1)? {
        Response::Metadata(m) => Ok(m),
        other => Err(format!("unexpected {other:?}")),
    }
}

/// One partition as the harness compares it across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// Partition index.
    pub partition: u32,
    /// Leader node id ([`NO_LEADER`] when none).
    pub leader: u32,
    /// Replica node ids, preferred leader first.
    pub replicas: Vec<u32>,
}

/// "No leader" in Metadata (the broker's `u32::MAX`).
pub const NO_LEADER: u32 = u32::MAX;

fn topic_view(m: &MetadataResponse, name: &str) -> Option<Vec<PartitionView>> {
    let t = m
        .topics
        .iter()
        .find(|t| t.name == name && t.error == ErrorCode::None)?;
    Some(
        t.partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition,
                leader: p.leader,
                replicas: p.replicas.clone(),
            })
            .collect(),
    )
}

impl TestCluster {
    /// Starts `n` voters and waits until they are ready.
    pub fn start_voters(n: u32) -> TestCluster {
        TestCluster::start(ClusterSpec::voters(n))
    }

    /// Starts the cluster of `spec` and waits until it is ready
    /// ([`READY_TIMEOUT`]); retries on new ports when a node cannot start.
    pub fn start(spec: ClusterSpec) -> TestCluster {
        assert!(spec.voters >= 1, "a cluster needs at least one voter");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = TestCluster {
            spec,
            nodes: BTreeMap::new(),
            peers: String::new(),
            join: String::new(),
            dir,
        };
        let mut last_err = String::new();
        for attempt in 0..START_ATTEMPTS {
            cluster.plan(attempt);
            let ids: Vec<u32> = cluster.nodes.keys().copied().collect();
            match cluster.spawn_many(&ids) {
                Ok(()) => {
                    cluster.wait_ready(READY_TIMEOUT);
                    return cluster;
                }
                Err(e) => {
                    last_err = e;
                    cluster.kill_all();
                }
            }
        }
        panic!(
            "the cluster did not start in {START_ATTEMPTS} attempts: {last_err}\n{}",
            cluster.logs()
        );
    }

    /// Chooses fresh ports, wipes the data dirs and builds `--peers` / `--join`.
    fn plan(&mut self, attempt: usize) {
        let total = (self.spec.voters + self.spec.joiners) as usize;
        let ports = free_ports(4 * total);
        self.nodes.clear();
        for i in 0..total {
            let id = i as u32 + 1;
            let node_dir = self.dir.path().join(format!("node{id}"));
            let data_dir = node_dir.join("data");
            // A failed attempt's controller state names the old ports.
            let _ = std::fs::remove_dir_all(&data_dir);
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let log_path = node_dir.join("sluiced.log");
            if attempt > 0 {
                let mut log = append_file(&log_path);
                let _ = writeln!(log, "==== test harness: start attempt {} ====", attempt + 1);
            }
            self.nodes.insert(
                id,
                TestNode {
                    id,
                    voter: id <= self.spec.voters,
                    rack: self.spec.racks.get(i).filter(|r| !r.is_empty()).cloned(),
                    addr: loopback(ports[4 * i]),
                    http_addr: loopback(ports[4 * i + 1]),
                    cluster_addr: loopback(ports[4 * i + 2]),
                    kafka_addr: loopback(ports[4 * i + 3]),
                    data_dir,
                    log_path,
                    child: None,
                },
            );
        }
        let voters: Vec<&TestNode> = self.nodes.values().filter(|n| n.voter).collect();
        self.peers = voters
            .iter()
            .map(|n| format!("{}@{}", n.id, n.cluster_addr))
            .collect::<Vec<_>>()
            .join(",");
        self.join = voters
            .iter()
            .map(|n| n.cluster_addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
    }

    /// Spawns node `id` (not waiting for it).
    fn spawn(&self, id: u32) -> Pending {
        let n = &self.nodes[&id];
        let mut cmd = Command::new(bin_path("sluiced"));
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--listen")
            .arg(n.addr.to_string())
            .arg("--http-listen")
            .arg(n.http_addr.to_string())
            .arg("--kafka-listen")
            .arg(n.kafka_addr.to_string())
            .arg("--cluster-listen")
            .arg(n.cluster_addr.to_string())
            .arg("--peers")
            .arg(&self.peers);
        if !n.voter {
            cmd.arg("--join").arg(&self.join);
        }
        if let Some(rack) = &n.rack {
            cmd.arg("--rack").arg(rack);
        }
        if let Some(ms) = self.spec.session_timeout_ms {
            cmd.arg("--broker-session-timeout-ms").arg(ms.to_string());
        }
        cmd.args(&self.spec.extra_args);
        for var in [
            "SLUICE_CONFIG",
            "SLUICE_NODE_ID",
            "SLUICE_PEERS",
            "SLUICE_JOIN",
            "SLUICE_RACK",
            "SLUICE_CLUSTER_LISTEN",
            "SLUICE_ADVERTISED_LISTEN",
            "SLUICE_BROKER_SESSION_TIMEOUT_MS",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .env("SLUICE_LOG", "info")
            // A startup error is one line in the log, not an anyhow backtrace.
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(append_file(&n.log_path)))
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
            // Keep draining so the node never blocks on a full pipe.
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        Pending {
            id,
            child,
            line: rx,
        }
    }

    /// Waits for a spawned node's `listening` line; on success the node is running.
    fn settle(&mut self, mut p: Pending, deadline: Instant) -> Result<(), String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = p.line.recv_timeout(wait).unwrap_or_default();
        let node = self.nodes.get_mut(&p.id).expect("known node");
        match parse_listening(&line) {
            Some((native, http)) if native == node.addr && http == node.http_addr => {
                node.child = Some(p.child);
                Ok(())
            }
            _ => {
                let _ = p.child.kill();
                let _ = p.child.wait();
                Err(format!(
                    "node {} did not start on {} (first stdout line {line:?}); its log:\n{}",
                    p.id,
                    node.addr,
                    node.log_tail(LOG_TAIL_LINES)
                ))
            }
        }
    }

    /// Spawns the given stopped nodes at once and waits for all of them.
    fn spawn_many(&mut self, ids: &[u32]) -> Result<(), String> {
        for id in ids {
            assert!(
                self.nodes[id].child.is_none(),
                "node {id} is already running"
            );
        }
        let pending: Vec<Pending> = ids.iter().map(|&id| self.spawn(id)).collect();
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        let mut first_err = None;
        for p in pending {
            if let Err(e) = self.settle(p, deadline) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Node ids in order.
    pub fn ids(&self) -> Vec<u32> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of the nodes whose process is running.
    pub fn running_ids(&mut self) -> Vec<u32> {
        self.nodes
            .values_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect()
    }

    /// Node `id`.
    pub fn node(&self, id: u32) -> &TestNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Native address of node `id`.
    pub fn addr(&self, id: u32) -> SocketAddr {
        self.node(id).addr
    }

    /// Native address of node `id` as a bootstrap string.
    pub fn bootstrap(&self, id: u32) -> String {
        self.node(id).addr.to_string()
    }

    /// The `--peers` value every node was started with.
    pub fn peers(&self) -> &str {
        &self.peers
    }

    /// Node `id`'s stderr so far.
    pub fn log(&self, id: u32) -> String {
        self.node(id).log()
    }

    /// The tail of every node's log, for panic messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.values() {
            out.push_str(&format!(
                "---- node {} ({}, native {}) last {LOG_TAIL_LINES} log lines ----\n{}\n",
                n.id,
                if n.voter { "voter" } else { "broker-only" },
                n.addr,
                n.log_tail(LOG_TAIL_LINES)
            ));
        }
        out
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn kill(&mut self, id: u32) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_some(), "node {id} is not running");
        node.kill();
    }

    /// SIGKILLs every running node at once, then reaps them.
    pub fn kill_all(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(c) = n.child.as_mut() {
                let _ = c.kill();
            }
        }
        for n in self.nodes.values_mut() {
            n.kill();
        }
    }

    /// SIGTERMs node `id` and waits for it (at most 30 s, then SIGKILL and panic).
    pub fn terminate(&mut self, id: u32) -> ExitStatus {
        let node = self.nodes.get_mut(&id).expect("known node");
        let mut c = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "node {id} did not exit within 30 s of SIGTERM; its log:\n{}",
                    node.log_tail(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts stopped node `id` again on its ports and data dir (retrying
    /// while a port is still taken); does not wait for readiness.
    pub fn restart(&mut self, id: u32) {
        self.restart_many(&[id]);
    }

    /// Starts every stopped node again at once (same ports and data dirs).
    pub fn restart_stopped(&mut self) {
        let stopped: Vec<u32> = self
            .nodes
            .values_mut()
            .filter_map(|n| (!n.is_running()).then_some(n.id))
            .collect();
        // Reap the ones that died on their own.
        for id in &stopped {
            self.nodes.get_mut(id).expect("known node").kill();
        }
        self.restart_many(&stopped);
    }

    /// Starts the given stopped nodes again (same ports and data dirs).
    pub fn restart_many(&mut self, ids: &[u32]) {
        let deadline = Instant::now() + RESTART_DEADLINE;
        let mut todo: Vec<u32> = ids.to_vec();
        loop {
            let pending: Vec<Pending> = todo.iter().map(|&id| self.spawn(id)).collect();
            let settle_by = Instant::now() + SPAWN_TIMEOUT;
            let mut failed = Vec::new();
            let mut last_err = String::new();
            for p in pending {
                let id = p.id;
                if let Err(e) = self.settle(p, settle_by) {
                    failed.push(id);
                    last_err = e;
                }
            }
            if failed.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!("restart of nodes {failed:?} failed: {last_err}");
            }
            todo = failed;
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// DescribeCluster from node `id`.
    pub fn describe_cluster(&self, id: u32) -> Result<DescribeClusterResponse, String> {
        describe_cluster_at(self.addr(id))
    }

    /// Metadata v1 from node `id` (empty `topics` = all).
    pub fn metadata(&self, id: u32, topics: &[&str]) -> Result<MetadataResponse, String> {
        metadata_at(self.addr(id), topics)
    }

    /// Polls `check` every 100 ms until it returns `Ok`, at most `timeout`;
    /// then panics with `what`, the last error and every node's log.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut TestCluster) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check(self) {
                Ok(v) => return v,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}: {last}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Ready: every running node answers DescribeCluster with the same
    /// controller, which is a running voter, and lists every running node as
    /// a registered, live broker. Returns the controller id.
    pub fn ready(&mut self) -> Result<u32, String> {
        let running = self.running_ids();
        if running.is_empty() {
            return Err("no node is running".into());
        }
        let mut controller = None;
        for &id in &running {
            let d = self
                .describe_cluster(id)
                .map_err(|e| format!("node {id}: {e}"))?;
            if d.error != ErrorCode::None {
                return Err(format!("node {id}: DescribeCluster error {:?}", d.error));
            }
            let c = u32::try_from(d.controller_id)
                .map_err(|_| format!("node {id}: no controller yet"))?;
            if !running.contains(&c) || !self.node(c).voter {
                return Err(format!(
                    "node {id}: controller {c} is not a running voter (running: {running:?})"
                ));
            }
            match controller {
                None => controller = Some(c),
                Some(prev) if prev != c => {
                    return Err(format!(
                        "nodes disagree on the controller: {prev} and {c} (node {id})"
                    ))
                }
                Some(_) => {}
            }
            let live: BTreeSet<u32> = d
                .brokers
                .iter()
                .filter(|b| b.alive)
                .map(|b| b.node_id)
                .collect();
            if let Some(missing) = running.iter().find(|r| !live.contains(r)) {
                return Err(format!(
                    "node {id}: broker {missing} not registered or not alive (brokers: {:?})",
                    d.brokers
                ));
            }
        }
        controller.ok_or_else(|| "no controller".to_string())
    }

    /// Waits (at most `timeout`) until [`TestCluster::ready`]; returns the controller id.
    pub fn wait_ready(&mut self, timeout: Duration) -> u32 {
        self.wait_for("the cluster to be ready", timeout, |c| c.ready())
    }

    /// The controller id every running node agrees on (panics when not ready).
    pub fn controller(&mut self) -> u32 {
        self.ready()
            .unwrap_or_else(|e| panic!("cluster not ready: {e}\n{}", self.logs()))
    }

    /// `name` as every running node sees it: present with `partitions`
    /// partitions, each with a leader, the same on every node.
    pub fn topic_everywhere(
        &mut self,
        name: &str,
        partitions: u32,
    ) -> Result<Vec<PartitionView>, String> {
        let running = self.running_ids();
        let mut agreed: Option<(u32, Vec<PartitionView>)> = None;
        for id in running {
            let m = self
                .metadata(id, &[name])
                .map_err(|e| format!("node {id}: {e}"))?;
            let view = topic_view(&m, name)
                .ok_or_else(|| format!("node {id} does not know topic {name:?}"))?;
            if view.len() != partitions as usize {
                return Err(format!(
                    "node {id}: {name:?} has {} partitions, not {partitions}",
                    view.len()
                ));
            }
            if let Some(p) = view.iter().find(|p| p.leader == NO_LEADER) {
                return Err(format!("node {id}: {name}/{} has no leader", p.partition));
            }
            match &agreed {
                None => agreed = Some((id, view)),
                Some((other, v)) if *v != view => {
                    return Err(format!(
                        "nodes {other} and {id} disagree on {name:?}: {v:?} vs {view:?}"
                    ))
                }
                Some(_) => {}
            }
        }
        agreed
            .map(|(_, v)| v)
            .ok_or_else(|| "no node is running".to_string())
    }

    /// Waits (at most `timeout`) until [`TestCluster::topic_everywhere`]; returns the partitions.
    pub fn wait_topic(
        &mut self,
        name: &str,
        partitions: u32,
        timeout: Duration,
    ) -> Vec<PartitionView> {
        self.wait_for(
            &format!("topic {name:?} with {partitions} partitions on every running node"),
            timeout,
            |c| c.topic_everywhere(name, partitions),
        )
    }

    /// Waits (at most `timeout`) until no running node knows `name`.
    pub fn wait_topic_gone(&mut self, name: &str, timeout: Duration) {
        self.wait_for(
            &format!("topic {name:?} to be gone from every running node"),
            timeout,
            |c| {
                for id in c.running_ids() {
                    let m = c
                        .metadata(id, &[name])
                        .map_err(|e| format!("node {id}: {e}"))?;
                    if topic_view(&m, name).is_some() {
                        return Err(format!("node {id} still has {name:?}"));
                    }
                }
                Ok(())
            },
        )
    }

    /// CreateTopics v1 through node `id`; returns the topic's error code and message.
    pub fn create_topic(
        &self,
        id: u32,
        name: &str,
        partitions: u32,
        replication_factor: i16,
    ) -> (ErrorCode, String) {
        let req = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: name.into(),
                partitions,
                replication_factor,
                configs: Vec::new(),
            }],
        });
        match call_version(self.addr(id), &req, 1) {
            Ok(Response::CreateTopics(mut r)) if r.topics.len() == 1 => {
                let t = r.topics.remove(0);
                (t.error, t.message)
            }
            Ok(other) => panic!("node {id}: unexpected {other:?}"),
            Err(e) => panic!("node {id}: CreateTopics {name:?}: {e}\n{}", self.logs()),
        }
    }

    /// DeleteTopics through node `id`; returns the topic's error code.
    pub fn delete_topic(&self, id: u32, name: &str) -> ErrorCode {
        let req = Request::DeleteTopics(DeleteTopicsRequest {
            topics: vec![name.into()],
        });
        match call_version(self.addr(id), &req, 0) {
            Ok(Response::DeleteTopics(mut r)) if r.topics.len() == 1 => r.topics.remove(0).error,
            Ok(other) => panic!("node {id}: unexpected {other:?}"),
            Err(e) => panic!("node {id}: DeleteTopics {name:?}: {e}\n{}", self.logs()),
        }
    }

    /// A connected raw client (version 0 requests) to node `id`.
    pub fn client(&self, id: u32) -> RawClient {
        RawClient::connect(self.addr(id))
    }

    /// The `sluice` CLI bootstrapped from node `id`.
    pub fn cli(&self, id: u32) -> Command {
        sluice_cli(&self.bootstrap(id))
    }

    /// Runs `sluice ARGS` bootstrapped from node `id` with `stdin`; killed after 60 s.
    pub fn sluice(&self, id: u32, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.cli(id);
        cmd.args(args);
        process::output_within(cmd, Some(stdin), CLI_TIMEOUT)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
