//! A partition leader cut off the network, on three real `sluiced` nodes,
//! each in its own Linux network namespace joined to a bridge in the root
//! namespace by a veth pair (the test runs as root; without root it fails).
//!
//! An idempotent `acks = durable` producer (root namespace) writes
//! sequence-numbered records to an RF-3, one-partition topic. The test
//! takes the root side of the leader's veth down, which cuts the leader off
//! from both other nodes and from the test's clients, and checks:
//!
//! 1. a durable produce sent to the cut-off leader from inside its own
//!    namespace is not acknowledged;
//! 2. every record the cut-off leader serves to a consumer inside its
//!    namespace ends up in the final log at the same offset;
//! 3. the other two nodes elect a new leader and the producer goes on.
//!
//! Then the link comes back, the old leader rejoins as a follower (back in
//! the ISR), and the partition is read back from its leader: every
//! acknowledged record is there exactly once at its acknowledged offset, no
//! offset is missing, no record is there twice, and the records of (2)
//! match. Finally the current leader is SIGKILLed and the same holds on the
//! next one.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::{
    Admin, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, Record, SeekTo,
    TopicInfo,
};
use sluice_protocol::{Acks, OffsetSpec};

/// The topic under test (one partition, three replicas).
const TOPIC: &str = "iso";
/// Native, HTTP and cluster ports, the same on every node (each has its own address).
const NATIVE_PORT: u16 = 7171;
const HTTP_PORT: u16 = 7180;
const CLUSTER_PORT: u16 = 7271;
/// `--broker-session-timeout-ms` of every node.
const SESSION_MS: u64 = 2000;
/// Bound of starts, metadata propagation, re-joins and read-backs.
const SEEN: Duration = Duration::from_secs(30);
/// How soon after the cut the majority must have acknowledged [`MORE_AFTER_CUT`] more records.
const FAILOVER: Duration = Duration::from_secs(15);
/// Records the producer must get acknowledged after the cut, within [`FAILOVER`].
const MORE_AFTER_CUT: usize = 300;
/// "No leader" in Metadata.
const NO_LEADER: u32 = u32::MAX;

/// Runs `ip ARGS`; the error is its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS` and panics when it fails.
fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// One `sluiced` in its namespace.
struct Node {
    id: u32,
    /// Network namespace name.
    ns: String,
    /// Root-namespace end of its veth pair (on the bridge).
    veth: String,
    /// Its address (native, HTTP and cluster listeners share it).
    ip: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn addr(&self) -> String {
        format!("{}:{NATIVE_PORT}", self.ip)
    }

    /// The last `n` lines of its log, without the controller's retry noise
    /// about an unreachable peer.
    fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("openraft::replication") && !l.contains("replication_handler"))
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The namespaces, veths, bridge and nodes of one test; all of it is
/// removed on drop (children SIGKILLed first), also when the test panics.
struct Net {
    bridge: Option<String>,
    namespaces: Vec<String>,
    veths: Vec<String>,
    nodes: BTreeMap<u32, Node>,
    peers: String,
    dir: tempfile::TempDir,
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            // The whole logs outlive the temp dir of a failed run.
            let keep =
                std::env::temp_dir().join(format!("replication_partition-{}", std::process::id()));
            if std::fs::create_dir_all(&keep).is_ok() {
                for n in self.nodes.values() {
                    let _ = std::fs::copy(&n.log_path, keep.join(format!("node{}.log", n.id)));
                }
                eprintln!("node logs kept in {}", keep.display());
            }
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        // Deleting a namespace deletes the veth end in it and so the pair;
        // these are for a pair whose peer never moved into its namespace.
        for v in &self.veths {
            let _ = ip(&["link", "del", v]);
        }
        if let Some(b) = &self.bridge {
            let _ = ip(&["link", "del", b]);
        }
    }
}

/// A /24 in 10.77.0.0/16 no interface here uses, chosen from the process id.
fn free_subnet(pid: u32) -> u32 {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("run `ip -o -4 addr show`");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = pid % 240 + 10;
    (0..240)
        .map(|i| (first - 10 + i) % 240 + 10)
        .find(|k| !used.contains(&format!(" 10.77.{k}.")))
        .expect("a free 10.77.k.0/24")
}

impl Net {
    /// Builds the bridge and `n` namespaces (nodes `1..=n`); panics with a
    /// clear message when namespaces cannot be made (the test needs root).
    fn new(n: u32) -> Net {
        let pid = std::process::id();
        let k = free_subnet(pid);
        let mut net = Net {
            bridge: None,
            namespaces: Vec::new(),
            veths: Vec::new(),
            nodes: BTreeMap::new(),
            peers: String::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let first_ns = format!("sl{pid}-1");
        if let Err(e) = ip(&["netns", "add", &first_ns]) {
            panic!("this test needs network namespaces (run it as root, as CI does): {e}");
        }
        net.namespaces.push(first_ns);
        let bridge = format!("slb{pid}");
        ip_ok(&["link", "add", &bridge, "type", "bridge"]);
        net.bridge = Some(bridge.clone());
        ip_ok(&["addr", "add", &format!("10.77.{k}.1/24"), "dev", &bridge]);
        ip_ok(&["link", "set", &bridge, "up"]);
        for id in 1..=n {
            let ns = format!("sl{pid}-{id}");
            if id > 1 {
                ip_ok(&["netns", "add", &ns]);
                net.namespaces.push(ns.clone());
            }
            let veth = format!("slv{pid}-{id}");
            let peer = format!("slp{pid}-{id}");
            assert!(
                veth.len() <= 15 && peer.len() <= 15,
                "{veth}: name too long"
            );
            ip_ok(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
            net.veths.push(veth.clone());
            ip_ok(&["link", "set", &peer, "netns", &ns]);
            ip_ok(&["link", "set", &veth, "master", &bridge]);
            ip_ok(&["link", "set", &veth, "up"]);
            let addr = format!("10.77.{k}.{}", id + 1);
            ip_ok(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &peer,
            ]);
            ip_ok(&["-n", &ns, "link", "set", &peer, "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            let node_dir = net.dir.path().join(format!("node{id}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            net.nodes.insert(
                id,
                Node {
                    id,
                    ns,
                    veth,
                    ip: addr,
                    data_dir: node_dir.join("data"),
                    log_path: node_dir.join("sluiced.log"),
                    child: None,
                },
            );
        }
        net.peers = net
            .nodes
            .values()
            .map(|n| format!("{}@{}:{CLUSTER_PORT}", n.id, n.ip))
            .collect::<Vec<_>>()
            .join(",");
        net
    }

    /// Starts every node in its namespace and waits for their `listening` lines.
    fn start_all(&mut self) {
        let mut lines = Vec::new();
        for n in self.nodes.values_mut() {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&n.log_path)
                .expect("open node log");
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &n.ns])
                .arg(common::bin_path("sluiced"))
                .arg("--node-id")
                .arg(n.id.to_string())
                .arg("--data-dir")
                .arg(&n.data_dir)
                .arg("--listen")
                .arg(format!("{}:{NATIVE_PORT}", n.ip))
                .arg("--http-listen")
                .arg(format!("{}:{HTTP_PORT}", n.ip))
                .arg("--kafka-listen")
                .arg("off")
                .arg("--cluster-listen")
                .arg(format!("{}:{CLUSTER_PORT}", n.ip))
                .arg("--peers")
                .arg(&self.peers)
                .arg("--broker-session-timeout-ms")
                .arg(SESSION_MS.to_string());
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
            // `ip netns exec` execs sluiced itself: the child's pid is the broker's.
            let mut child = cmd
                .env("SLUICE_LOG", "info")
                .env("RUST_LIB_BACKTRACE", "0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn ip netns exec sluiced");
            let stdout = child.stdout.take().expect("piped stdout");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut first = String::new();
                let _ = r.read_line(&mut first);
                let _ = tx.send(first);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            });
            n.child = Some(child);
            lines.push((n.id, rx));
        }
        let deadline = Instant::now() + SEEN;
        for (id, rx) in lines {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
            let want: SocketAddr = self.nodes[&id].addr().parse().expect("node address");
            match common::parse_listening(&line) {
                Some((native, _)) if native == want => {}
                _ => panic!(
                    "node {id} did not start on {want} (first stdout line {line:?})\n{}",
                    self.logs()
                ),
            }
        }
    }

    fn addr(&self, id: u32) -> String {
        self.nodes[&id].addr()
    }

    /// Native addresses of `ids`, comma-separated.
    fn bootstrap(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|id| self.addr(*id))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn ids(&self) -> Vec<u32> {
        self.nodes.keys().copied().collect()
    }

    /// SIGKILLs node `id`.
    fn kill(&mut self, id: u32) {
        let n = self.nodes.get_mut(&id).expect("known node");
        let mut c = n.child.take().expect("node running");
        c.kill().expect("SIGKILL");
        let _ = c.wait();
    }

    /// The last lines of every node's log.
    fn logs(&self) -> String {
        let mut s = String::new();
        for n in self.nodes.values() {
            s.push_str(&format!(
                "---- node {} ({}) ----\n{}\n",
                n.id,
                n.ip,
                n.log_tail(80)
            ));
        }
        s
    }

    /// Runs the `sluice` CLI inside node `id`'s namespace, aimed at that
    /// node only; SIGKILLed after `timeout`.
    fn cli_inside(&self, id: u32, args: &[&str], stdin: &[u8], timeout: Duration) -> Output {
        let n = &self.nodes[&id];
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &n.ns])
            .arg(common::bin_path("sluice"))
            .arg("--broker")
            .arg(n.addr())
            .args(args)
            .env_remove("SLUICE_BROKER")
            .env_remove("SLUICE_LOG")
            .env_remove("RUST_LOG");
        common::process::output_within(cmd, Some(stdin), timeout)
    }
}

/// A client config with timeouts short enough that a blackholed node
/// (no RST, no answer) does not stall the caller for long.
fn client_config(bootstrap: String) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::new(bootstrap)
    }
}

/// The topic as node `addr` describes it (bounded).
async fn describe_at(addr: &str) -> Result<TopicInfo, String> {
    let ask = async {
        let admin = Admin::with_config(client_config(addr.to_string()))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        admin
            .describe_topic(TOPIC)
            .await
            .map_err(|e| format!("{addr}: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .map_err(|_| format!("{addr}: no answer"))?
}

/// The partition's state as the newest view (highest leader epoch) among `ask` has it.
#[derive(Debug, Clone)]
struct View {
    leader: u32,
    epoch: u32,
    replicas: Vec<u32>,
    isr: Vec<u32>,
}

async fn view(net: &Net, ask: &[u32]) -> Result<View, String> {
    let mut best: Option<View> = None;
    let mut errors = Vec::new();
    for id in ask {
        match describe_at(&net.addr(*id)).await {
            Ok(t) => {
                let Some(p) = t.partitions.iter().find(|p| p.partition == 0) else {
                    errors.push(format!("node {id}: no partition 0"));
                    continue;
                };
                let v = View {
                    leader: p.leader,
                    epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                };
                if best.as_ref().is_none_or(|b| v.epoch > b.epoch) {
                    best = Some(v);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    best.ok_or_else(|| errors.join("; "))
}

/// Polls `f` every 100 ms until it answers `Ok`, for at most `within`.
async fn wait_for<T, F, Fut>(net: &Net, what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}: {e}\n{}", net.logs())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A live leader among `ask` as the newest view among `ask` names it.
async fn leader_among(net: &Net, ask: &[u32]) -> View {
    wait_for(net, "a leader", SEEN, || async {
        let v = view(net, ask).await?;
        if v.leader != NO_LEADER && ask.contains(&v.leader) {
            Ok(v)
        } else {
            Err(format!("no reachable leader yet: {v:?}"))
        }
    })
    .await
}

/// What the producer had acknowledged: sequence number -> offset.
type Acked = Arc<Mutex<BTreeMap<u64, u64>>>;

fn value(i: u64) -> Vec<u8> {
    format!("seq-{i:010}").into_bytes()
}

fn parse(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v)
        .ok()?
        .strip_prefix("seq-")?
        .parse()
        .ok()
}

/// The producer of sequence numbers `0, 1, ...` to partition 0, until stopped.
struct Workload {
    acked: Acked,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    fn start(bootstrap: String) -> Workload {
        let acked: Acked = Arc::default();
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, f, s) = (acked.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let producer = Producer::with_config(
                // A 3 s request timeout: a leader cut off answers nothing,
                // and a timed-out request makes the client look the leader up again.
                client_config(bootstrap),
                ProducerConfig {
                    acks: Acks::Durable,
                    idempotent: true,
                    linger: Duration::from_millis(2),
                    delivery_timeout: Duration::from_secs(60),
                    ..ProducerConfig::default()
                },
            );
            let mut waits = Vec::new();
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let r = Record::new(TOPIC, value(i)).partition(0);
                match producer.enqueue(r).await {
                    Ok(d) => {
                        let (a, f) = (a.clone(), f.clone());
                        waits.push(tokio::spawn(async move { note(&a, &f, i, d.await) }));
                    }
                    Err(e) => note(&a, &f, i, Err(e)),
                }
                // About 1,500 records a second.
                if i % 8 == 7 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                i += 1;
            }
            for w in waits {
                let _ = w.await;
            }
            producer.close().await;
        });
        Workload {
            acked,
            failed,
            stop,
            task,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` records are acknowledged, at most until `deadline`.
    async fn wait_acked(&self, n: usize, deadline: Instant, net: &Net) {
        while self.acked_count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} records acknowledged in time ({} failed)\n{}",
                self.acked_count(),
                self.failed.load(Ordering::SeqCst),
                net.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops producing, waits for what is in flight; returns the acknowledged records.
    async fn finish(self, net: &Net) -> BTreeMap<u64, u64> {
        self.stop.store(true, Ordering::SeqCst);
        if tokio::time::timeout(Duration::from_secs(90), self.task)
            .await
            .is_err()
        {
            panic!("the producer did not finish\n{}", net.logs());
        }
        let acked = self.acked.lock().unwrap().clone();
        eprintln!(
            "acknowledged {} records, {} failed",
            acked.len(),
            self.failed.load(Ordering::SeqCst)
        );
        acked
    }
}

fn note(acked: &Acked, failed: &AtomicU64, i: u64, r: Result<(u32, u64), sluice::ClientError>) {
    match r {
        Ok((p, o)) => {
            assert_eq!(p, 0, "record {i} acknowledged in partition {p}");
            acked.lock().unwrap().insert(i, o);
        }
        Err(e) => {
            eprintln!("record {i} failed: {e}");
            failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The committed end of partition 0 from `leader` (ListOffsets latest), once it is at least `need`.
async fn committed_end(net: &Net, leader: u32, need: u64) -> u64 {
    let addr = net.addr(leader);
    wait_for(net, "the committed end from the leader", SEEN, || async {
        let ask = async {
            let admin = Admin::with_config(client_config(addr.clone()))
                .await
                .map_err(|e| e.to_string())?;
            admin
                .list_offsets(TOPIC, 0, OffsetSpec::Latest)
                .await
                .map_err(|e| e.to_string())
        };
        let end = tokio::time::timeout(Duration::from_secs(5), ask)
            .await
            .map_err(|_| "no answer".to_string())??
            .offset;
        if end >= need {
            Ok(end)
        } else {
            Err(format!(
                "leader {leader}: committed end {end} below an acknowledged offset {need}"
            ))
        }
    })
    .await
}

/// Reads partition 0 from the earliest offset up to the committed end on
/// `leader` (through the nodes `via`) and checks it: offsets `0..end` each
/// once, sequence numbers rising, every acknowledged record at its
/// acknowledged offset, every record of `served` (offset, value) at its
/// offset, and the record produced to the cut-off leader (`cut_value`) absent.
async fn check(
    net: &Net,
    leader: u32,
    via: &[u32],
    acked: &BTreeMap<u64, u64>,
    served: &[(u64, Vec<u8>)],
    cut_value: &[u8],
) {
    let need = acked.values().map(|o| o + 1).max().unwrap_or(0);
    let end = committed_end(net, leader, need).await;
    let mut consumer = Consumer::with_config(
        client_config(net.bootstrap(via)),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(vec![(TOPIC.to_string(), 0)]);
    let mut log: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let reading = async {
        while (log.len() as u64) < end {
            let r = consumer.next().await.expect("assigned").expect("record");
            if r.offset >= end {
                continue;
            }
            let v = r.value.as_deref().unwrap_or_default().to_vec();
            assert!(
                log.insert(r.offset, v).is_none(),
                "offset {} read twice",
                r.offset
            );
        }
    };
    if tokio::time::timeout(SEEN, reading).await.is_err() {
        panic!("read {} of {end} records\n{}", log.len(), net.logs());
    }
    drop(consumer);
    // No gaps: exactly the offsets 0..end.
    assert_eq!(log.len() as u64, end, "offsets missing below {end}");
    assert_eq!(log.keys().next_back().copied(), end.checked_sub(1));
    // Known values only, each once, rising with the offset.
    let mut at: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last: Option<u64> = None;
    for (o, v) in &log {
        assert_ne!(
            v.as_slice(),
            cut_value,
            "the record produced to the cut-off leader is in the log at offset {o}\n{}",
            net.logs()
        );
        let seq = parse(v).unwrap_or_else(|| panic!("offset {o}: unknown value {v:?}"));
        if let Some(prev) = at.insert(seq, *o) {
            panic!("record {seq} at offsets {prev} and {o}");
        }
        if let Some(l) = last {
            assert!(seq > l, "record {seq} after {l} at offset {o}");
        }
        last = Some(seq);
    }
    for (seq, o) in acked {
        assert_eq!(
            at.get(seq),
            Some(o),
            "acknowledged record {seq} (offset {o}) is not at its offset\n{}",
            net.logs()
        );
    }
    for (o, v) in served {
        assert!(
            log.get(o) == Some(v),
            "the cut-off leader served {:?} at offset {o}, the log has {:?} there (committed end {end})\n{}",
            String::from_utf8_lossy(v),
            log.get(o).map(|v| String::from_utf8_lossy(v).into_owned()),
            net.logs()
        );
    }
    eprintln!(
        "leader {leader}: {end} records, {} acknowledged, {} served by the cut-off leader, all in place",
        acked.len(),
        served.len()
    );
}

/// Parses `sluice topic consume -f '%o %v\n'` output.
fn parse_served(stdout: &[u8]) -> Vec<(u64, Vec<u8>)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (o, v) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("unexpected consume line {l:?}"));
            let o = o
                .parse()
                .unwrap_or_else(|_| panic!("unexpected consume line {l:?}"));
            (o, v.as_bytes().to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_the_network_acknowledges_nothing_and_loses_nothing() {
    let mut net = Net::new(3);
    net.start_all();
    let all = net.ids();

    // Ready: a controller and three live brokers.
    wait_for(&net, "a ready cluster", SEEN, || async {
        let ask = async {
            let admin = Admin::with_config(client_config(net.addr(1)))
                .await
                .map_err(|e| e.to_string())?;
            admin.describe_cluster().await.map_err(|e| e.to_string())
        };
        let c = tokio::time::timeout(Duration::from_secs(5), ask)
            .await
            .map_err(|_| "no answer".to_string())??;
        if c.controller_id.is_some() && all.iter().all(|id| c.is_alive(*id)) {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    wait_for(&net, "the topic created", SEEN, || async {
        let ask = async {
            let admin = Admin::with_config(client_config(net.bootstrap(&all)))
                .await
                .map_err(|e| e.to_string())?;
            admin
                .create_topic_with(TOPIC, 1, Some(3), vec![])
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(10), ask).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.to_lowercase().contains("exist") => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no answer".to_string()),
        }
    })
    .await;
    wait_for(
        &net,
        "a leader and three in-sync replicas",
        SEEN,
        || async {
            let v = view(&net, &all).await?;
            if v.leader != NO_LEADER && v.replicas.len() == 3 && v.isr.len() == 3 {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;

    let w = Workload::start(net.bootstrap(&all));
    w.wait_acked(1000, Instant::now() + SEEN, &net).await;
    // A steady state: every node has heard every other's heartbeat.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = leader_among(&net, &all).await;
    let old = before.leader;
    let others: Vec<u32> = all.iter().copied().filter(|&i| i != old).collect();
    let acked_before = w.acked_count();

    // Cut the leader off: its bridge port goes down.
    let cut_at = Instant::now();
    ip_ok(&["link", "set", &net.nodes[&old].veth, "down"]);
    eprintln!(
        "cut off leader {old} (epoch {}) with {acked_before} records acknowledged",
        before.epoch
    );
    // (3), timed while (1) and (2) run: when the majority has acknowledged enough more.
    let resumed = {
        let acked = w.acked.clone();
        let target = acked_before + MORE_AFTER_CUT;
        tokio::spawn(async move {
            while cut_at.elapsed() < FAILOVER {
                if acked.lock().unwrap().len() >= target {
                    return Some(cut_at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        })
    };

    // (1) A durable produce to the cut-off leader, from inside its namespace.
    let cut_value = format!("cut-{}", std::process::id()).into_bytes();
    let produced = {
        let input = [cut_value.as_slice(), b"\n"].concat();
        let net = &net;
        // Blocking children: this worker thread is handed over meanwhile.
        let produce = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let produce = scope.spawn(|| {
                    net.cli_inside(
                        old,
                        &[
                            "topic",
                            "produce",
                            TOPIC,
                            "-p",
                            "0",
                            "--acks",
                            "durable",
                            "--delivery-timeout",
                            "5000",
                        ],
                        &input,
                        Duration::from_secs(15),
                    )
                });
                // (2) Meanwhile a consumer inside the namespace reads what the cut-off leader serves.
                std::thread::sleep(Duration::from_secs(1));
                let consume = net.cli_inside(
                    old,
                    &[
                        "topic",
                        "consume",
                        TOPIC,
                        "-p",
                        "0",
                        "--from",
                        "earliest",
                        "--exit-idle",
                        "3000",
                        "-f",
                        "%o %v\\n",
                    ],
                    b"",
                    Duration::from_secs(20),
                );
                (produce.join().expect("produce thread"), consume)
            })
        });
        produce
    };
    let (produce_out, consume_out) = produced;
    let produce_err = String::from_utf8_lossy(&produce_out.stderr).into_owned();
    eprintln!(
        "produce to the cut-off leader: {} {}",
        produce_out.status,
        produce_err.trim()
    );
    assert!(
        !produce_out.status.success() && !produce_err.contains("produced 1 records"),
        "the cut-off leader acknowledged a durable write: {} {produce_err}\n{}",
        produce_out.status,
        net.logs()
    );
    let served = parse_served(&consume_out.stdout);
    eprintln!(
        "consume from the cut-off leader: {} records, {} {}",
        served.len(),
        consume_out.status,
        String::from_utf8_lossy(&consume_out.stderr).trim()
    );

    // (3) The majority elects a new leader and the producer goes on.
    let Some(resumed_after) = resumed.await.expect("watcher") else {
        panic!(
            "only {} records acknowledged in the {FAILOVER:?} after the cut, {MORE_AFTER_CUT} expected ({} failed)\n{}",
            w.acked_count() - acked_before,
            w.failed.load(Ordering::SeqCst),
            net.logs()
        );
    };
    let during = leader_among(&net, &others).await;
    assert_ne!(during.leader, old, "{during:?}");
    assert!(during.epoch > before.epoch, "{before:?} then {during:?}");
    eprintln!(
        "new leader {} (epoch {}); {MORE_AFTER_CUT} more records acknowledged {resumed_after:?} after the cut",
        during.leader, during.epoch,
    );

    // Heal: the old leader follows again, truncates its uncommitted tail and re-enters the ISR.
    ip_ok(&["link", "set", &net.nodes[&old].veth, "up"]);
    wait_for(&net, "the old leader back in the ISR", SEEN, || async {
        let v = view(&net, &all).await?;
        if v.leader != NO_LEADER && v.epoch > before.epoch && v.isr.contains(&old) {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    let acked = w.finish(&net).await;
    assert!(acked.len() >= acked_before + MORE_AFTER_CUT);

    let after = leader_among(&net, &all).await;
    check(&net, after.leader, &all, &acked, &served, &cut_value).await;

    // Lose the current leader: the next one (the old leader when it is the
    // first live ISR member in replica order) holds everything committed.
    let killed = after.leader;
    net.kill(killed);
    let live: Vec<u32> = all.iter().copied().filter(|&i| i != killed).collect();
    let next = wait_for(&net, "a leader after the kill", SEEN, || async {
        let v = view(&net, &live).await?;
        if v.leader != NO_LEADER && v.leader != killed && v.epoch > after.epoch {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    let expected = after
        .replicas
        .iter()
        .copied()
        .find(|r| *r != killed && after.isr.contains(r))
        .expect("a live ISR member");
    assert_eq!(
        next.leader, expected,
        "leader after killing {killed}: {next:?}, ISR before {after:?}"
    );
    eprintln!("killed leader {killed}; node {} leads now", next.leader);
    check(&net, next.leader, &live, &acked, &served, &cut_value).await;
    for l in std::fs::read_to_string(&net.nodes[&old].log_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("truncating"))
    {
        eprintln!("node {old}: {l}");
    }
    assert!(
        killed == old || next.leader == old,
        "the old leader {old} never served a read-back (leaders {killed}, {})",
        next.leader
    );
}
