//! Three controllers in one process on loopback: election, forwarding,
//! failover, catch-up after restart and full restart; a broker-only node
//! joining as a learner; fencing of silent brokers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_cluster::{
    ClusterMetadata, CommandResult, Controller, ControllerConfig, MetadataCommand,
};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(20);

struct Cluster {
    _tmp: tempfile::TempDir,
    dirs: BTreeMap<u64, PathBuf>,
    voters: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Controller>,
    /// Snapshot every this many entries and keep no log behind it (0 = defaults).
    snapshot_every: u64,
    /// Broker-only nodes: cluster address and the address they join through.
    learners: BTreeMap<u64, (String, String)>,
    /// Broker session timeout (None = default).
    session: Option<Duration>,
}

impl Cluster {
    async fn start(snapshot_every: u64) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut voters = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for id in 1..=3u64 {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            voters.insert(id, l.local_addr().expect("addr").to_string());
            listeners.insert(id, l);
            dirs.insert(id, tmp.path().join(format!("n{id}")));
        }
        let mut c = Cluster {
            _tmp: tmp,
            dirs,
            voters,
            nodes: BTreeMap::new(),
            snapshot_every,
            learners: BTreeMap::new(),
            session: None,
        };
        for (id, l) in listeners {
            c.start_node(id, l).await;
        }
        c
    }

    async fn start_node(&mut self, id: u64, listener: TcpListener) {
        let mut cfg =
            ControllerConfig::new(id, self.dirs[&id].clone(), listener, self.voters.clone());
        if self.snapshot_every > 0 {
            cfg.snapshot_every = self.snapshot_every;
            cfg.keep_logs_after_snapshot = 0;
        }
        if let Some((addr, via)) = self.learners.get(&id) {
            cfg.advertised = Some(addr.clone());
            cfg.join = vec![via.clone()];
        }
        if let Some(session) = self.session {
            cfg.broker_session_timeout = session;
            cfg.broker_heartbeat_interval = session / 6;
        }
        let node = Controller::start(cfg).await.expect("start controller");
        self.nodes.insert(id, node);
    }

    /// Starts broker-only node `id`, joining through voter `via`.
    async fn start_learner(&mut self, id: u64, via: u64) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        self.dirs
            .insert(id, self._tmp.path().join(format!("n{id}")));
        self.learners.insert(id, (addr, self.voters[&via].clone()));
        self.start_node(id, l).await;
    }

    async fn restart(&mut self, id: u64) {
        let addr = match self.learners.get(&id) {
            Some((a, _)) => a.clone(),
            None => self.voters[&id].clone(),
        };
        // The port was just released; rebinding it may need a few tries.
        let until = Instant::now() + DEADLINE;
        let l = loop {
            match TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebind {addr}: {e}"),
            }
        };
        self.start_node(id, l).await;
    }

    async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("running node");
        node.shutdown().await.expect("shutdown");
    }

    /// Waits for all running nodes to agree on one leader; returns it.
    async fn leader(&self) -> u64 {
        let until = Instant::now() + DEADLINE;
        loop {
            let leaders: Vec<Option<u64>> =
                self.nodes.values().map(|n| n.status().leader).collect();
            if let Some(Some(l)) = leaders.first() {
                if leaders.iter().all(|x| *x == Some(*l)) && self.nodes.contains_key(l) {
                    return *l;
                }
            }
            assert!(Instant::now() < until, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `check` holds on every running node's metadata.
    async fn wait_all(&self, what: &str, check: impl Fn(&ClusterMetadata) -> bool) {
        let until = Instant::now() + DEADLINE;
        loop {
            if self.nodes.values().all(|n| check(&n.metadata())) {
                return;
            }
            assert!(Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn create(name: &str, id: u8) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        id: [id; 16],
        assignment: vec![vec![1, 2, 3], vec![2, 3, 1]],
        config: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_through_follower_is_seen_by_all() {
    let c = Cluster::start(0).await;
    let leader = c.leader().await;
    let follower = *c
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let r = c.nodes[&follower]
        .propose(create("orders", 1))
        .await
        .expect("propose");
    assert_eq!(r, CommandResult::Ok);
    c.wait_all("orders on all nodes", |m| {
        m.topics
            .get("orders")
            .is_some_and(|t| t.partitions.len() == 2 && t.id == [1; 16])
    })
    .await;
    // A second create of the same name is refused, with the same answer everywhere.
    let r = c.nodes[&follower]
        .propose(create("orders", 2))
        .await
        .expect("propose");
    assert_eq!(r, CommandResult::TopicAlreadyExists);
    let s = c.nodes[&leader].status();
    assert_eq!(s.leader, Some(leader));
    assert!(s.term >= 1);
    assert_eq!(s.voters.len(), 3);
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_and_catch_up_after_restart() {
    let mut c = Cluster::start(0).await;
    let old = c.leader().await;
    let r = c.nodes[&old]
        .propose(create("a", 1))
        .await
        .expect("propose");
    assert_eq!(r, CommandResult::Ok);
    c.wait_all("a everywhere", |m| m.topics.contains_key("a"))
        .await;

    // (b) The leader stops; a new one is elected and proposals keep working.
    c.stop(old).await;
    let new = c.leader().await;
    assert_ne!(new, old);
    let any = *c.nodes.keys().next().expect("a node");
    assert_eq!(
        c.nodes[&any]
            .propose(create("b", 2))
            .await
            .expect("propose"),
        CommandResult::Ok
    );
    let block = c.nodes[&any]
        .propose(MetadataCommand::AllocateProducerIds { count: 10 })
        .await
        .expect("propose");
    assert!(matches!(
        block,
        CommandResult::ProducerIdBlock { count: 10, .. }
    ));
    assert_eq!(
        c.nodes[&any]
            .propose(MetadataCommand::DeleteTopic { name: "a".into() })
            .await
            .expect("propose"),
        CommandResult::Ok
    );

    // (c) The stopped node restarts from its directory and catches up.
    c.restart(old).await;
    c.wait_all("restarted node caught up", |m| {
        m.topics.contains_key("b") && !m.topics.contains_key("a") && m.next_producer_id >= 10
    })
    .await;
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_every_topic() {
    let mut c = Cluster::start(0).await;
    c.leader().await;
    for i in 0..5u8 {
        let id = *c.nodes.keys().nth(usize::from(i) % 3).expect("node");
        let r = c.nodes[&id]
            .propose(create(&format!("t{i}"), i + 1))
            .await
            .expect("propose");
        assert_eq!(r, CommandResult::Ok);
    }
    c.wait_all("five topics", |m| m.topics.len() == 5).await;
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    c.leader().await;
    // The log is re-applied once the new leader commits: every topic returns.
    c.wait_all("five topics after restart", |m| m.topics.len() == 5)
        .await;
    let any = *c.nodes.keys().next().expect("node");
    assert_eq!(
        c.nodes[&any]
            .propose(create("after", 9))
            .await
            .expect("propose"),
        CommandResult::Ok
    );
    c.wait_all("six topics", |m| m.topics.len() == 6).await;
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}

/// With snapshots every few entries and no log kept behind them, a node that
/// was down catches up through InstallSnapshot (frame kind 3) and the
/// snapshot file, and everyone keeps the topics across a full restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_node_catches_up_from_snapshot() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let down = *c
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    c.stop(down).await;
    for i in 0..12u8 {
        let id = *c.nodes.keys().next().expect("node");
        let r = c.nodes[&id]
            .propose(create(&format!("s{i}"), i + 1))
            .await
            .expect("propose");
        assert_eq!(r, CommandResult::Ok);
    }
    c.wait_all("twelve topics", |m| m.topics.len() == 12).await;
    // The leader purged its log behind a snapshot: its raft.log now starts
    // with a Purged marker (magic 8 bytes, record header 8 bytes, then JSON),
    // so the lagging node cannot be sent the entries it missed.
    let log = c.dirs[&leader].join("raft.log");
    let until = Instant::now() + DEADLINE;
    loop {
        let bytes = std::fs::read(&log).expect("read raft.log");
        if bytes.len() > 16 && bytes[16..].starts_with(b"{\"Purged\"") {
            break;
        }
        assert!(Instant::now() < until, "leader never purged its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.dirs[&leader].join("snapshot").exists());
    c.restart(down).await;
    c.wait_all("lagging node caught up", |m| m.topics.len() == 12)
        .await;
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    c.leader().await;
    c.wait_all("twelve topics after full restart", |m| m.topics.len() == 12)
        .await;
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}

/// A node outside the voters joins through a follower (redirected to the
/// leader), applies the metadata, proposes through the leader, survives a
/// restart without joining twice, and a voter id cannot join as a learner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_only_node_joins_as_a_learner() {
    let mut c = Cluster::start(0).await;
    let leader = c.leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).expect("follower");
    assert_eq!(
        c.nodes[&leader]
            .propose(create("before", 1))
            .await
            .expect("propose"),
        CommandResult::Ok
    );
    c.start_learner(4, follower).await;
    c.wait_all("learner has the metadata", |m| {
        m.topics.contains_key("before")
    })
    .await;
    let until = Instant::now() + DEADLINE;
    loop {
        let s = c.nodes[&leader].status();
        if s.learners.contains_key(&4) {
            assert_eq!(s.voters.len(), 3, "{s:?}");
            assert!(!s.voters.contains_key(&4));
            break;
        }
        assert!(Instant::now() < until, "4 never became a learner: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The learner proposes through the leader.
    assert_eq!(
        c.nodes[&4]
            .propose(create("from-learner", 2))
            .await
            .expect("propose"),
        CommandResult::Ok
    );
    c.wait_all("learner's topic everywhere", |m| {
        m.topics.contains_key("from-learner")
    })
    .await;
    // Down while a topic is created; back from its own files.
    c.stop(4).await;
    assert_eq!(
        c.nodes[&leader]
            .propose(create("while-down", 3))
            .await
            .expect("propose"),
        CommandResult::Ok
    );
    c.restart(4).await;
    c.wait_all("restarted learner caught up", |m| {
        m.topics.contains_key("while-down")
    })
    .await;
    // The learner never votes: the three voters still decide alone.
    assert_eq!(c.nodes[&4].status().voters.len(), 3);

    // A voter id asking to join is refused; a non-leader redirects.
    let mut client =
        sluice_cluster::network::PeerClient::new(c.voters[&leader].clone(), Duration::from_secs(2));
    let reply: sluice_cluster::network::JoinReply = client
        .call(
            sluice_cluster::network::KIND_JOIN,
            &sluice_cluster::network::JoinRequest {
                id: follower,
                addr: "127.0.0.1:1".into(),
            },
            Some(Duration::from_secs(5)),
        )
        .await
        .expect("join call");
    assert!(
        matches!(reply, sluice_cluster::network::JoinReply::Refused(_)),
        "{reply:?}"
    );
    let mut client = sluice_cluster::network::PeerClient::new(
        c.voters[&follower].clone(),
        Duration::from_secs(2),
    );
    let reply: sluice_cluster::network::JoinReply = client
        .call(
            sluice_cluster::network::KIND_JOIN,
            &sluice_cluster::network::JoinRequest {
                id: 7,
                addr: "127.0.0.1:1".into(),
            },
            Some(Duration::from_secs(5)),
        )
        .await
        .expect("join call");
    assert_eq!(
        reply,
        sluice_cluster::network::JoinReply::ForwardToLeader(
            Some(leader),
            Some(c.voters[&leader].clone())
        )
    );
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}

fn register(id: u64) -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        id,
        native_addr: format!("127.0.0.1:{}", 9000 + id),
        cluster_addr: String::new(),
        kafka_addr: None,
        rack: None,
        incarnation: 0,
    }
}

fn fenced(m: &ClusterMetadata, id: u64) -> Option<bool> {
    m.brokers.get(&id).map(|b| b.fenced)
}

/// The leader fences a registered broker that sends no heartbeat (one that
/// never runs, and a node that stops), and unfences the node once its
/// heartbeats return; live nodes stay unfenced throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_brokers_are_fenced_and_unfenced_when_heard_again() {
    let mut c = Cluster::start(0).await;
    c.session = Some(Duration::from_millis(900));
    for id in 1..=3 {
        c.stop(id).await;
        c.restart(id).await;
    }
    let leader = c.leader().await;
    for id in [1, 2, 3, 9] {
        assert_eq!(
            c.nodes[&leader]
                .propose(register(id))
                .await
                .expect("register"),
            CommandResult::Ok
        );
    }
    c.wait_all("ghost broker 9 fenced", |m| fenced(m, 9) == Some(true))
        .await;
    for id in 1..=3 {
        assert_eq!(fenced(&c.nodes[&leader].metadata(), id), Some(false));
    }
    let quiet = *c.nodes.keys().find(|id| **id != leader).expect("follower");
    c.stop(quiet).await;
    c.wait_all("stopped node fenced", |m| fenced(m, quiet) == Some(true))
        .await;
    let live: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_all("live nodes unfenced", |m| {
        live.iter().all(|id| fenced(m, *id) == Some(false))
    })
    .await;
    c.restart(quiet).await;
    c.wait_all("restarted node unfenced", |m| {
        fenced(m, quiet) == Some(false)
    })
    .await;
    assert_eq!(fenced(&c.nodes[&leader].metadata(), 9), Some(true));
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}

/// Garbage on the cluster listener closes that connection only: an unknown
/// kind, an undecodable payload, a truncated frame and an oversized length
/// each get the connection closed, and the group keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cluster_frames_close_only_their_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(0).await;
    let leader = c.leader().await;
    let addr = c.voters[&leader].clone();
    let frames: Vec<Vec<u8>> = vec![
        // Unknown kind 0x42 with a valid JSON payload.
        [&2u32.to_be_bytes()[..], &[0x42], b"{}"].concat(),
        // Kind 4 (client write) whose payload is not a MetadataCommand.
        [&5u32.to_be_bytes()[..], &[4], b"nope!"].concat(),
        // Kind 5 (join) with a payload of the wrong shape.
        [&2u32.to_be_bytes()[..], &[5], b"[]"].concat(),
        // A length far past the frame limit.
        [&u32::MAX.to_be_bytes()[..], &[1]].concat(),
    ];
    for (i, f) in frames.iter().enumerate() {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(f).await.expect("write");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("frame {i}: connection not closed"))
            .unwrap_or(0);
        assert_eq!(n, 0, "frame {i}: got an answer instead of a close");
    }
    // A truncated frame: the peer goes away mid-frame.
    {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(&[0, 0, 1, 0, 4, b'{']).await.expect("write");
    }
    assert_eq!(
        c.nodes[&leader]
            .propose(create("still-fine", 1))
            .await
            .expect("propose"),
        CommandResult::Ok
    );
    c.wait_all("topic after garbage", |m| {
        m.topics.contains_key("still-fine")
    })
    .await;
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}

/// A leader left without a majority cannot commit: a proposal through it
/// fails in bounded time instead of hanging, and once the others are back
/// proposals commit again and nothing half-done was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_majority_fails_proposals_in_bounded_time() {
    let mut c = Cluster::start(0).await;
    let leader = c.leader().await;
    let others: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    for id in &others {
        c.stop(*id).await;
    }
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.nodes[&leader].propose(create("lonely", 1)),
    )
    .await
    .expect("the proposal returned");
    assert!(r.is_err(), "committed without a majority: {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    for id in &others {
        c.restart(*id).await;
    }
    c.leader().await;
    let any = *c.nodes.keys().next().expect("node");
    assert_eq!(
        c.nodes[&any]
            .propose(create("back", 2))
            .await
            .expect("propose"),
        CommandResult::Ok
    );
    c.wait_all("back everywhere", |m| m.topics.contains_key("back"))
        .await;
    // The timed-out proposal may still commit once a majority is back (Raft
    // keeps the entry); if it did, it did so everywhere alike.
    let seen: Vec<bool> = c
        .nodes
        .values()
        .map(|n| n.metadata().topics.contains_key("lonely"))
        .collect();
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    for (_, n) in c.nodes {
        n.shutdown().await.expect("shutdown");
    }
}
