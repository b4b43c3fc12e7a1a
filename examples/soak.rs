//! Replication soak test: three real `sluiced` nodes, an idempotent
//! `acks = durable` producer and a fault loop, then a full read-back check.
//!
//! ```text
//! cargo build --release --bins
//! cargo run --release --example soak -- --minutes 30 [--sluiced PATH] [--partitions 3] [--seed N]
//! ```
//!
//! The nodes run on free loopback ports in a temp dir (their logs are
//! `nodeN/sluiced.log` there). Record `i` (value `seq-{i:010}`) goes to
//! partition `i % partitions`. Every 10-20 s one fault is injected: SIGKILL
//! of a partition leader (restarted after 2-8 s), SIGKILL of a follower
//! (restarted after 2-8 s), SIGSTOP of a leader for 5 s, or SIGKILL of all
//! three nodes (restarted at once). A leader fault's failover time runs from
//! the fault to the first acknowledgement of a record of that partition
//! enqueued after the fault.
//!
//! At the end the producer stops, every node runs again, and every partition
//! is read from the earliest offset up to its committed end (ListOffsets
//! latest): every acknowledged record must be there exactly once at its
//! acknowledged offset, with no offset gaps, no sequence number twice and
//! sequence numbers rising within a partition. Exit code 1 when not (the
//! temp dir is then kept), 2 when the setup failed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use sluice::{
    Acks, Admin, ClientConfig, ClientError, Consumer, ConsumerConfig, OffsetSpec, Producer,
    ProducerConfig, Record, SeekTo,
};

const TOPIC: &str = "soak";
/// Outstanding (unacknowledged) records at most.
const MAX_IN_FLIGHT: usize = 256;
/// Bound of each wait for the cluster (ready, leaders, committed ends).
const WAIT: Duration = Duration::from_secs(90);
/// Bound of one admin request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Command-line options.
struct Args {
    minutes: f64,
    sluiced: PathBuf,
    partitions: u32,
    seed: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: soak --minutes M [--sluiced PATH] [--partitions N] [--seed N]\n\
         (default sluiced: `sluiced` in the directory above the example binary's)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut minutes = None;
    let mut sluiced = None;
    let mut partitions = 3u32;
    let mut seed = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--minutes" => minutes = Some(val().parse::<f64>().unwrap_or_else(|_| usage())),
            "--sluiced" => sluiced = Some(PathBuf::from(val())),
            "--partitions" => partitions = val().parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = Some(val().parse().unwrap_or_else(|_| usage())),
            "-h" | "--help" => usage(),
            _ => {
                eprintln!("unknown argument {a:?}");
                usage()
            }
        }
    }
    let minutes = minutes.unwrap_or_else(|| usage());
    if !(minutes > 0.0 && minutes.is_finite()) || partitions == 0 {
        usage()
    }
    let sluiced = sluiced.unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_else(|_| usage());
        // target/release/examples/soak -> target/release/sluiced
        exe.parent()
            .and_then(Path::parent)
            .map(|d| d.join("sluiced"))
            .unwrap_or_else(|| usage())
    });
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    Args {
        minutes,
        sluiced,
        partitions,
        seed,
    }
}

/// A tiny xorshift64 generator (reproducible faults from `--seed`).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// One `sluiced` node: its ports and data dir stay the same across restarts.
struct Node {
    id: u32,
    addr: SocketAddr,
    http_addr: SocketAddr,
    cluster_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The three nodes and the temp dir; kills every node on drop and removes
/// the dir unless the run failed.
struct Cluster {
    sluiced: PathBuf,
    dir: PathBuf,
    nodes: Vec<Node>,
    peers: String,
    keep_dir: bool,
}

fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ls = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Cluster {
    fn new(sluiced: PathBuf) -> std::io::Result<Cluster> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("sluice-soak-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ports = free_ports(9)?;
        let lo = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut nodes = Vec::new();
        for i in 0..3usize {
            let node_dir = dir.join(format!("node{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(Node {
                id: i as u32 + 1,
                addr: lo(ports[3 * i]),
                http_addr: lo(ports[3 * i + 1]),
                cluster_addr: lo(ports[3 * i + 2]),
                data_dir: node_dir.join("data"),
                log_path: node_dir.join("sluiced.log"),
                child: None,
                paused: false,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.cluster_addr))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Cluster {
            sluiced,
            dir,
            nodes,
            peers,
            keep_dir: true,
        })
    }

    fn node(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Starts node `id` (its stdout and stderr appended to its log).
    fn start(&mut self, id: u32) -> std::io::Result<()> {
        let sluiced = self.sluiced.clone();
        let peers = self.peers.clone();
        let n = self.node(id);
        let mut log = append(&n.log_path)?;
        use std::io::Write;
        writeln!(log, "==== soak: starting node {id} ====")?;
        let mut cmd = Command::new(&sluiced);
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&n.data_dir)
            .arg("--listen")
            .arg(n.addr.to_string())
            .arg("--http-listen")
            .arg(n.http_addr.to_string())
            .arg("--kafka-listen")
            .arg("off")
            .arg("--cluster-listen")
            .arg(n.cluster_addr.to_string())
            .arg("--peers")
            .arg(&peers)
            .arg("--broker-session-timeout-ms")
            .arg("2000");
        for (k, _) in std::env::vars() {
            if k.starts_with("SLUICE_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .env("SLUICE_LOG", "info")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    fn signal(&mut self, id: u32, sig: libc::c_int) {
        if let Some(c) = &self.node(id).child {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILLs node `id` and reaps it.
    fn kill(&mut self, id: u32) {
        let n = self.node(id);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        n.paused = false;
    }

    fn pause(&mut self, id: u32) {
        self.signal(id, libc::SIGSTOP);
        self.node(id).paused = true;
    }

    fn resume(&mut self, id: u32) {
        self.signal(id, libc::SIGCONT);
        self.node(id).paused = false;
    }

    /// Ids of nodes that are running and not paused; reports and reaps nodes
    /// that exited on their own.
    fn live(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                match c.try_wait() {
                    Ok(None) => {
                        if !n.paused {
                            out.push(n.id)
                        }
                    }
                    Ok(Some(status)) => {
                        eprintln!("!! node {} exited on its own: {status}", n.id);
                        n.child = None;
                    }
                    Err(_) => {}
                }
            }
        }
        out
    }

    /// Starts every node that is down and resumes every paused one.
    fn restart_down(&mut self) -> std::io::Result<Vec<u32>> {
        let _ = self.live();
        let mut started = Vec::new();
        for id in 1..=3 {
            if self.node(id).paused {
                self.resume(id);
            }
            if self.node(id).child.is_none() {
                self.start(id)?;
                started.push(id);
            }
        }
        Ok(started)
    }

    /// Comma-separated native addresses of the live nodes (all nodes if none).
    fn bootstrap(&mut self) -> String {
        let mut live = self.live();
        if live.is_empty() {
            live = vec![1, 2, 3];
        }
        live.iter()
            .map(|&id| self.nodes[(id - 1) as usize].addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A fresh admin client on the live nodes, with short timeouts.
    async fn admin(&mut self) -> Result<Admin, String> {
        let mut cfg = ClientConfig::new(self.bootstrap());
        cfg.request_timeout = Duration::from_secs(3);
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.metadata_max_age = Duration::from_millis(100);
        match tokio::time::timeout(ADMIN_TIMEOUT, Admin::with_config(cfg)).await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("admin connect timed out".into()),
        }
    }

    /// Partition -> leader id, for the partitions whose leader is a live node.
    async fn live_leaders(&mut self) -> Result<BTreeMap<u32, u32>, String> {
        let admin = self.admin().await?;
        let t = tokio::time::timeout(ADMIN_TIMEOUT, admin.describe_topic(TOPIC))
            .await
            .map_err(|_| "describe_topic timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let live = self.live();
        Ok(t.partitions
            .iter()
            .filter(|p| live.contains(&p.leader))
            .map(|p| (p.partition, p.leader))
            .collect())
    }

    /// Each live node's own view of every partition (leader, epoch, isr,
    /// end) and what ListOffsets through that node's metadata answers, for
    /// diagnostics.
    async fn views(&mut self) -> String {
        let mut out = Vec::new();
        for id in self.live() {
            let addr = self.nodes[(id - 1) as usize].addr.to_string();
            let view = tokio::time::timeout(ADMIN_TIMEOUT * 4, async {
                let mut cfg = ClientConfig::new(addr.clone());
                cfg.request_timeout = Duration::from_secs(3);
                let a = Admin::with_config(cfg).await?;
                let t = a.describe_topic(TOPIC).await?;
                let mut parts = Vec::new();
                for p in &t.partitions {
                    let lo = match a.list_offsets(TOPIC, p.partition, OffsetSpec::Latest).await {
                        Ok(l) => format!("list_offsets ok {}", l.offset),
                        Err(e) => format!("list_offsets error {e}"),
                    };
                    // Can a fresh idempotent producer write there now?
                    let probe = Producer::with_config(
                        ClientConfig::new(addr.clone()),
                        ProducerConfig {
                            acks: Acks::Durable,
                            idempotent: true,
                            delivery_timeout: Duration::from_secs(3),
                            ..ProducerConfig::default()
                        },
                    );
                    let r = Record::new(TOPIC, format!("probe-{id}")).partition(p.partition);
                    let pr = match probe.send(r).await {
                        Ok((_, o)) => format!("fresh producer ok at {o}"),
                        Err(e) => format!("fresh producer error {e}"),
                    };
                    probe.close().await;
                    parts.push(format!(
                        "p{} leader {} epoch {} isr {:?} end {} ({lo}; {pr})",
                        p.partition, p.leader, p.leader_epoch, p.isr, p.end_offset
                    ));
                }
                Ok::<_, ClientError>(parts.join(", "))
            })
            .await;
            let view = match view {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".into(),
            };
            out.push(format!("\n      via node {id}: {view}"));
        }
        out.concat()
    }

    /// Waits until every running node sees all three brokers alive.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.admin().await {
                Ok(a) => match tokio::time::timeout(ADMIN_TIMEOUT, a.describe_cluster()).await {
                    Ok(Ok(c)) if c.controller_id.is_some() && (1..=3).all(|i| c.is_alive(i)) => {
                        return Ok(())
                    }
                    Ok(Ok(c)) => last = format!("{c:?}"),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "describe_cluster timed out".into(),
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("cluster not ready within {WAIT:?}: {last}"))
    }

    /// Waits until every partition has a live leader.
    async fn wait_leaders(&mut self, partitions: u32) -> Result<BTreeMap<u32, u32>, String> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.live_leaders().await {
                Ok(l) if l.len() == partitions as usize => return Ok(l),
                Ok(l) => last = format!("live leaders {l:?}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "no live leader for every partition within {WAIT:?}: {last}"
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep_dir {
            eprintln!("node logs and data kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An open failover measurement: the first acknowledgement of a record of
/// `partition` with sequence number `>= from_seq`.
struct Probe {
    partition: Option<u32>,
    from_seq: u64,
    at: Instant,
    done: Option<Duration>,
}

/// What the producer shares with the rest.
#[derive(Default)]
struct Shared {
    /// Sequence number -> (partition, offset) of each acknowledged record.
    acked: Mutex<BTreeMap<u64, (u32, u64)>>,
    failed: AtomicU64,
    /// The next sequence number to enqueue.
    next_seq: AtomicU64,
    stop: AtomicBool,
    probes: Mutex<Vec<Probe>>,
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn record(&self, i: u64, partitions: u32, r: Result<(u32, u64), ClientError>) {
        match r {
            Ok((p, o)) => {
                lock(&self.acked).insert(i, (p, o));
                let now = Instant::now();
                for pr in lock(&self.probes).iter_mut() {
                    if pr.done.is_none()
                        && i >= pr.from_seq
                        && !matches!(pr.partition, Some(q) if q != p)
                    {
                        pr.done = Some(now - pr.at);
                    }
                }
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                let mut errs = lock(&self.first_errors);
                if errs.len() < 10 {
                    errs.push(format!(
                        "record {i} (partition {}): {e}",
                        i % u64::from(partitions)
                    ));
                }
            }
        }
    }

    /// Opens a failover measurement from now; returns its index.
    fn probe(&self, partition: Option<u32>) -> usize {
        let mut probes = lock(&self.probes);
        probes.push(Probe {
            partition,
            from_seq: self.next_seq.load(Ordering::SeqCst),
            at: Instant::now(),
            done: None,
        });
        probes.len() - 1
    }

    fn probe_result(&self, idx: usize) -> Option<Duration> {
        lock(&self.probes)[idx].done
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// Produces `seq-{i}` to partition `i % partitions` until `stop`, then
/// waits for every outstanding delivery.
async fn produce(bootstrap: String, partitions: u32, s: Arc<Shared>) {
    let producer = Producer::with_config(
        ClientConfig::new(bootstrap),
        ProducerConfig {
            acks: Acks::Durable,
            idempotent: true,
            linger: Duration::from_millis(2),
            delivery_timeout: Duration::from_secs(120),
            ..ProducerConfig::default()
        },
    );
    // Prints the producer's queues when acknowledgements stop for 20 s.
    let watchdog = {
        let (producer, s) = (producer.clone(), s.clone());
        tokio::spawn(async move {
            let mut last = (0usize, Instant::now());
            while !s.stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let n = lock(&s.acked).len();
                if n != last.0 {
                    last = (n, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(20) {
                    last.1 = Instant::now();
                    eprintln!("producer state:\n{}", producer.describe_state());
                }
            }
        })
    };
    let mut pending = FuturesUnordered::new();
    let mut i = 0u64;
    while !s.stop.load(Ordering::SeqCst) {
        let r = Record::new(TOPIC, value(i)).partition((i % u64::from(partitions)) as u32);
        s.next_seq.store(i + 1, Ordering::SeqCst);
        match producer.enqueue(r).await {
            Ok(d) => pending.push(async move { (i, d.await) }),
            Err(e) => s.record(i, partitions, Err(e)),
        }
        while pending.len() >= MAX_IN_FLIGHT {
            if let Some((i, r)) = pending.next().await {
                s.record(i, partitions, r);
            }
        }
        if i % 32 == 31 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        i += 1;
    }
    while let Some((i, r)) = pending.next().await {
        s.record(i, partitions, r);
    }
    watchdog.abort();
    producer.close().await;
}

/// The kinds of fault, in the summary's order.
const KINDS: [&str; 4] = [
    "kill leader",
    "kill follower",
    "pause leader",
    "kill all nodes",
];

/// Statistics of the fault loop.
#[derive(Default)]
struct FaultStats {
    by_kind: [u64; 4],
    skipped: u64,
    failovers: Vec<Duration>,
    unmeasured: u64,
    full_restarts: Vec<Duration>,
    restart_errors: Vec<String>,
    anomalies: Vec<String>,
}

fn elapsed(start: Instant) -> String {
    format!("{:7.1}s", start.elapsed().as_secs_f64())
}

/// Waits (at most 60 s) for probe `idx`; returns its time.
async fn await_probe(s: &Shared, idx: usize) -> Option<Duration> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(d) = s.probe_result(idx) {
            return Some(d);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Injects one fault chosen by `rng`.
async fn one_fault(
    c: &mut Cluster,
    rng: &mut Rng,
    s: &Shared,
    partitions: u32,
    stats: &mut FaultStats,
    start: Instant,
) -> Result<(), String> {
    let kind = rng.range(0, 3) as usize;
    let p = rng.range(0, u64::from(partitions) - 1) as u32;
    let leaders = match c.live_leaders().await {
        Ok(l) => l,
        Err(e) => {
            stats.skipped += 1;
            eprintln!("[{}] fault skipped: no metadata: {e}", elapsed(start));
            return Ok(());
        }
    };
    let Some(&leader) = leaders.get(&p) else {
        stats.skipped += 1;
        eprintln!(
            "[{}] fault skipped: partition {p} has no live leader",
            elapsed(start)
        );
        return Ok(());
    };
    let down_for = Duration::from_millis(rng.range(2000, 8000));
    match kind {
        0 => {
            let probe = s.probe(Some(p));
            c.kill(leader);
            stats.by_kind[0] += 1;
            eprintln!(
                "[{}] SIGKILL node {leader} (leader of {TOPIC}/{p}); restart in {down_for:?}",
                elapsed(start)
            );
            tokio::time::sleep(down_for).await;
            c.start(leader)
                .map_err(|e| format!("restart node {leader}: {e}"))?;
            report_failover(c, s, probe, p, stats, start).await;
        }
        1 => {
            let live = c.live();
            let followers: Vec<u32> = live.into_iter().filter(|&i| i != leader).collect();
            if followers.is_empty() {
                stats.skipped += 1;
                return Ok(());
            }
            let f = followers[rng.range(0, followers.len() as u64 - 1) as usize];
            // With as many partitions as nodes the follower usually leads
            // another partition: that partition's failover is measured too.
            let led: Vec<u32> = leaders
                .iter()
                .filter(|(_, &l)| l == f)
                .map(|(&q, _)| q)
                .collect();
            let probes: Vec<(u32, usize)> = led.iter().map(|&q| (q, s.probe(Some(q)))).collect();
            c.kill(f);
            stats.by_kind[1] += 1;
            eprintln!(
                "[{}] SIGKILL node {f} (a follower of {TOPIC}/{p}, leader of {led:?}); restart in {down_for:?}",
                elapsed(start)
            );
            tokio::time::sleep(down_for).await;
            c.start(f).map_err(|e| format!("restart node {f}: {e}"))?;
            for (q, probe) in probes {
                report_failover(c, s, probe, q, stats, start).await;
            }
        }
        2 => {
            let probe = s.probe(Some(p));
            c.pause(leader);
            stats.by_kind[2] += 1;
            eprintln!(
                "[{}] SIGSTOP node {leader} (leader of {TOPIC}/{p}) for 5 s",
                elapsed(start)
            );
            tokio::time::sleep(Duration::from_secs(5)).await;
            c.resume(leader);
            report_failover(c, s, probe, p, stats, start).await;
        }
        _ => {
            let probe = s.probe(None);
            for id in 1..=3 {
                c.kill(id);
            }
            stats.by_kind[3] += 1;
            eprintln!("[{}] SIGKILL all nodes; restart now", elapsed(start));
            tokio::time::sleep(Duration::from_millis(200)).await;
            for id in 1..=3 {
                c.start(id).map_err(|e| format!("restart node {id}: {e}"))?;
            }
            match await_probe(s, probe).await {
                Some(d) => {
                    eprintln!("[{}]   writes resumed after {d:?}", elapsed(start));
                    stats.full_restarts.push(d);
                }
                None => {
                    let views = c.views().await;
                    eprintln!(
                        "[{}]   writes did not resume within 60 s; {views}",
                        elapsed(start)
                    );
                    stats.anomalies.push(format!(
                        "writes did not resume within 60 s of a whole-cluster restart: {views}"
                    ));
                }
            }
        }
    }
    Ok(())
}

async fn report_failover(
    c: &mut Cluster,
    s: &Shared,
    probe: usize,
    p: u32,
    stats: &mut FaultStats,
    start: Instant,
) {
    match await_probe(s, probe).await {
        Some(d) => {
            eprintln!("[{}]   {TOPIC}/{p} failover: {d:?}", elapsed(start));
            stats.failovers.push(d);
        }
        None => {
            eprintln!(
                "[{}]   {TOPIC}/{p}: no acknowledgement within 60 s",
                elapsed(start)
            );
            stats.unmeasured += 1;
            let views = c.views().await;
            eprintln!(
                "[{}]   {TOPIC} as each node sees it: {views}",
                elapsed(start)
            );
            stats.anomalies.push(format!(
                "{TOPIC}/{p}: no acknowledgement within 60 s of a leader fault; {views}"
            ));
        }
    }
}

/// What the read-back found.
#[derive(Default)]
struct Check {
    read: u64,
    ends: BTreeMap<u32, u64>,
    gaps: u64,
    duplicates: u64,
    out_of_order: u64,
    misplaced: u64,
    unknown: u64,
    lost: u64,
    unacked_present: u64,
    probes: u64,
    problems: Vec<String>,
}

impl Check {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

/// Reads every partition back and compares it with `acked`.
async fn check(
    c: &mut Cluster,
    partitions: u32,
    acked: &BTreeMap<u64, (u32, u64)>,
) -> Result<Check, String> {
    let mut out = Check::default();
    // Each partition's committed end (once it covers every acknowledged offset).
    for p in 0..partitions {
        let need = acked
            .values()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| o + 1)
            .max()
            .unwrap_or(0);
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        let end = loop {
            if Instant::now() > deadline {
                // Read what there is; the missing records count as lost.
                eprintln!("partition {p}: committed end never covered offset {need}: {last}");
                break None;
            }
            match c.admin().await {
                Ok(a) => match tokio::time::timeout(
                    ADMIN_TIMEOUT,
                    a.list_offsets(TOPIC, p, OffsetSpec::Latest),
                )
                .await
                {
                    Ok(Ok(l)) if l.offset >= need => break Some(l.offset),
                    Ok(Ok(l)) => last = format!("end {} below {need}", l.offset),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "list_offsets timed out".into(),
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let end = match end {
            Some(e) => e,
            None => {
                let a = c.admin().await?;
                tokio::time::timeout(ADMIN_TIMEOUT, a.list_offsets(TOPIC, p, OffsetSpec::Latest))
                    .await
                    .map_err(|_| "list_offsets timed out".to_string())?
                    .map_err(|e| e.to_string())?
                    .offset
            }
        };
        out.ends.insert(p, end);
    }
    let mut consumer = Consumer::with_config(
        ClientConfig::new(c.bootstrap()),
        ConsumerConfig {
            start: SeekTo::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..partitions).map(|p| (TOPIC.to_string(), p)).collect());
    let total: u64 = out.ends.values().sum();
    let mut read: BTreeMap<(u32, u64), Option<u64>> = BTreeMap::new();
    let mut errors = 0u32;
    let mut problems = Vec::new();
    // Diagnostic records written by `Cluster::views`.
    let mut probes: Vec<(u32, u64)> = Vec::new();
    let reading = async {
        while (read.len() as u64) < total {
            let r = match consumer.next().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    errors += 1;
                    if errors > 100 {
                        return Err(format!("read back: too many errors, last {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                None => return Err("the consumer has no assignment".to_string()),
            };
            if r.offset >= out.ends[&r.partition] {
                continue;
            }
            let v = r.value.as_deref().unwrap_or_default();
            if v.starts_with(b"probe-") {
                probes.push((r.partition, r.offset));
            }
            let seq = parse(v);
            if let Some(prev) = read.insert((r.partition, r.offset), seq) {
                if prev != seq {
                    problems.push(format!(
                        "{}/{} read as {prev:?} and as {seq:?}",
                        r.partition, r.offset
                    ));
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(300), reading).await {
        Ok(r) => r?,
        Err(_) => problems.push("read back timed out after 300 s".to_string()),
    }
    for p in problems {
        out.problem(p);
    }
    out.read = read.len() as u64;
    out.probes = probes.len() as u64;
    if out.read < total {
        out.problem(format!("read only {} of {total} records", out.read));
    }
    // Offset gaps.
    for (&p, &end) in &out.ends.clone() {
        let n = read.keys().filter(|(q, _)| *q == p).count() as u64;
        if n != end {
            out.gaps += end - n.min(end);
            out.problem(format!("partition {p}: {n} of offsets 0..{end} read"));
        }
    }
    // Duplicates, placement, order.
    let mut seen: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for (&(p, o), seq) in &read {
        let Some(seq) = *seq else {
            if probes.contains(&(p, o)) {
                continue;
            }
            out.unknown += 1;
            out.problem(format!("{p}/{o}: not a sequence number"));
            continue;
        };
        if let Some(prev) = seen.insert(seq, (p, o)) {
            out.duplicates += 1;
            out.problem(format!("record {seq} at {prev:?} and at {p}/{o}"));
        }
        if u64::from(p) != seq % u64::from(partitions) {
            out.misplaced += 1;
            out.problem(format!("record {seq} in partition {p}"));
        }
        if let Some(l) = last.insert(p, seq) {
            if seq <= l {
                out.out_of_order += 1;
                out.problem(format!("partition {p}: {seq} after {l} at offset {o}"));
            }
        }
        if !acked.contains_key(&seq) {
            out.unacked_present += 1;
        }
    }
    for (seq, at) in acked {
        if seen.get(seq) != Some(at) {
            out.lost += 1;
            out.problem(format!(
                "acknowledged record {seq} at {at:?}, found at {:?}",
                seen.get(seq)
            ));
        }
    }
    Ok(out)
}

fn stats(ds: &[Duration]) -> String {
    if ds.is_empty() {
        return "count 0".into();
    }
    let mut v = ds.to_vec();
    v.sort();
    format!(
        "count {}, min {:.2}s, p50 {:.2}s, max {:.2}s",
        v.len(),
        v[0].as_secs_f64(),
        v[v.len() / 2].as_secs_f64(),
        v[v.len() - 1].as_secs_f64()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The client's own log (its retries, metadata refreshes), to stderr
    // when `SOAK_LOG` is set, e.g. `SOAK_LOG=sluice_client=debug`.
    if let Ok(filter) = std::env::var("SOAK_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let args = parse_args();
    let code = match run(&args).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("soak: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// The whole soak; `Ok(false)` when the check found a problem.
async fn run(args: &Args) -> Result<bool, String> {
    if !args.sluiced.is_file() {
        return Err(format!(
            "no sluiced at {} (cargo build --release --bins, or --sluiced PATH)",
            args.sluiced.display()
        ));
    }
    let mut c = Cluster::new(args.sluiced.clone()).map_err(|e| format!("temp dir: {e}"))?;
    eprintln!(
        "soak: {} minutes, {} partitions, seed {}, sluiced {}, dir {}",
        args.minutes,
        args.partitions,
        args.seed,
        args.sluiced.display(),
        c.dir.display()
    );
    for id in 1..=3 {
        c.start(id).map_err(|e| format!("start node {id}: {e}"))?;
    }
    c.wait_ready().await?;
    // Create the topic (the controller may still be settling: retry).
    let deadline = Instant::now() + WAIT;
    loop {
        let r = match c.admin().await {
            Ok(a) => tokio::time::timeout(
                ADMIN_TIMEOUT,
                a.create_topic_with(TOPIC, args.partitions, Some(3), vec![]),
            )
            .await
            .map_err(|_| "create_topic timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => break,
            Err(e) if e.to_lowercase().contains("exists") => break,
            Err(e) if Instant::now() > deadline => return Err(format!("create topic: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let leaders = c.wait_leaders(args.partitions).await?;
    eprintln!("topic {TOPIC} ready, leaders {leaders:?}");

    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let producer = tokio::spawn(produce(c.bootstrap(), args.partitions, shared.clone()));
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let mut rng = Rng::new(args.seed);
    let mut fs = FaultStats::default();
    let mut last_report = Instant::now();
    let mut last_acked = (0usize, Instant::now());
    loop {
        let gap = Duration::from_millis(rng.range(10_000, 20_000));
        let next = Instant::now() + gap;
        while Instant::now() < next && started.elapsed() < run_for {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Nodes that died on their own are reported by live() and restarted.
            let _ = c.live();
            if let Ok(ids) = c.restart_down() {
                if !ids.is_empty() {
                    fs.restart_errors
                        .push(format!("node(s) {ids:?} were down unexpectedly"));
                }
            }
            let n = lock(&shared.acked).len();
            if n != last_acked.0 {
                last_acked = (n, Instant::now());
            } else if last_acked.1.elapsed() > Duration::from_secs(20) {
                last_acked.1 = Instant::now();
                let views = c.views().await;
                eprintln!(
                    "[{}] !! no acknowledgement for 20 s; {views}",
                    elapsed(started)
                );
                fs.anomalies.push(format!(
                    "no acknowledgement for 20 s at {}: {views}",
                    elapsed(started)
                ));
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                last_report = Instant::now();
                eprintln!(
                    "[{}] acknowledged {}, failed {}",
                    elapsed(started),
                    lock(&shared.acked).len(),
                    shared.failed.load(Ordering::SeqCst)
                );
            }
        }
        if started.elapsed() >= run_for {
            break;
        }
        if let Err(e) =
            one_fault(&mut c, &mut rng, &shared, args.partitions, &mut fs, started).await
        {
            eprintln!("!! {e}");
            fs.restart_errors.push(e);
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    eprintln!("[{}] stopping the producer", elapsed(started));
    shared.stop.store(true, Ordering::SeqCst);
    if let Err(e) = c.restart_down() {
        fs.restart_errors.push(format!("final restart: {e}"));
    }
    let producer_done = tokio::time::timeout(Duration::from_secs(180), producer)
        .await
        .is_ok();
    if !producer_done {
        eprintln!("!! the producer did not finish within 180 s");
    }
    c.wait_ready().await?;
    c.wait_leaders(args.partitions).await?;
    let acked = lock(&shared.acked).clone();
    let failed = shared.failed.load(Ordering::SeqCst);
    let enqueued = shared.next_seq.load(Ordering::SeqCst);
    eprintln!("[{}] reading back", elapsed(started));
    let ck = check(&mut c, args.partitions, &acked).await?;

    println!("==== soak summary (seed {}) ====", args.seed);
    println!("minutes run:               {minutes:.2}");
    println!("partitions:                {}", args.partitions);
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(fs.by_kind)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "faults injected:           {} ({}; skipped {})",
        fs.by_kind.iter().sum::<u64>(),
        kinds.join(", "),
        fs.skipped
    );
    println!("records enqueued:          {enqueued}");
    println!("records acknowledged:      {}", acked.len());
    println!("records failed (unacked):  {failed}");
    println!(
        "producer finished:         {}",
        if producer_done { "yes" } else { "NO" }
    );
    println!(
        "records read back:         {} (committed ends {:?})",
        ck.read, ck.ends
    );
    println!("unacked records present:   {}", ck.unacked_present);
    println!("diagnostic probe records:  {}", ck.probes);
    println!("records lost:              {}", ck.lost);
    println!("duplicates:                {}", ck.duplicates);
    println!("offset gaps:               {}", ck.gaps);
    println!("out of order:              {}", ck.out_of_order);
    println!(
        "misplaced / unparsable:    {} / {}",
        ck.misplaced, ck.unknown
    );
    println!(
        "leader failover:           {} (unmeasured {})",
        stats(&fs.failovers),
        fs.unmeasured
    );
    println!("whole-cluster recovery:    {}", stats(&fs.full_restarts));
    for e in fs.restart_errors.iter().chain(&fs.anomalies) {
        println!("note: {e}");
    }
    let errs = lock(&shared.first_errors).clone();
    for e in errs {
        println!("failed delivery: {e}");
    }
    for p in &ck.problems {
        println!("problem: {p}");
    }
    let ok = ck.lost == 0
        && ck.duplicates == 0
        && ck.gaps == 0
        && ck.out_of_order == 0
        && ck.misplaced == 0
        && ck.unknown == 0
        && ck.read == ck.ends.values().sum::<u64>()
        && producer_done;
    println!(
        "result:                    {}",
        if ok { "OK" } else { "FAILED" }
    );
    // Keep the logs when something is off, even if nothing was lost.
    c.keep_dir = !ok || failed > 0 || !fs.anomalies.is_empty() || !fs.restart_errors.is_empty();
    Ok(ok)
}
