//! Measurement (no timing assertions): with 10 members on 100 partitions,
//! each heartbeating with long-poll (`max_wait_ms`), how long from a clean
//! join or leave to a stable assignment, and from a crash (no leave) to a
//! stable assignment beyond the session timeout. Figures are printed (run
//! with `--nocapture`). The invariant "no partition owned twice" and the
//! final balance are asserted from DescribeGroups at every poll.
//!
//! `cargo test -p sluice --test group_rebalance -- --nocapture`

mod common;
mod group_client;

use std::collections::BTreeSet;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use group_client::*;
use sluice_protocol::*;

const GROUP: &str = "bench";
const TOPIC: &str = "rebalance";
const PARTITIONS: u32 = 100;
const SESSION_MS: u32 = 1_500;
const MAX_WAIT_MS: u32 = 1_000;

/// A member on its own thread and connection: join, then heartbeat with
/// long-poll forever, confirming every revocation at once, until its
/// connection is closed or it is removed.
struct Running {
    id: String,
    socket: TcpStream,
    thread: JoinHandle<()>,
    /// When the member last sent a heartbeat (its session runs from there).
    last_sent: Arc<Mutex<Instant>>,
}

fn spawn_member(addr: SocketAddr, name: String) -> Running {
    let (tx, rx) = mpsc::channel();
    let last_sent = Arc::new(Mutex::new(Instant::now()));
    let sent = Arc::clone(&last_sent);
    let thread = std::thread::spawn(move || {
        let mut c = GroupClient::connect(addr, &name);
        let r = c.join(GROUP, &[TOPIC], SESSION_MS);
        assert_eq!(r.error, ErrorCode::None);
        tx.send((r.member_id.clone(), c.socket())).expect("send id");
        let (id, mut generation, mut owned) = (r.member_id, r.generation, r.assignment);
        // Bounded: a few minutes of heartbeats at most.
        for _ in 0..100_000 {
            let req = Request::Heartbeat(HeartbeatRequest {
                group_id: GROUP.into(),
                member_id: id.clone(),
                generation,
                owned: owned.clone(),
                max_wait_ms: MAX_WAIT_MS,
            });
            *sent.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            match c.try_call(&req) {
                Ok(Response::Heartbeat(h)) if h.error == ErrorCode::None => {
                    generation = h.generation;
                    // Consume `assignment`; `revoke` is given up right away
                    // (stop, commit, confirm in the next heartbeat).
                    owned = h.assignment;
                }
                // Removed (left from another connection) or crashed: stop.
                _ => return,
            }
        }
    });
    let (id, socket) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("member joined");
    Running {
        id,
        socket,
        thread,
        last_sent,
    }
}

/// Polls DescribeGroups until the group is Stable with `members` members,
/// checking at every poll that no partition is owned twice; then checks the
/// final assignment covers every partition with sizes differing by <= 1.
fn wait_stable(obs: &mut GroupClient, members: usize, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(20);
    loop {
        let d = obs.describe(GROUP);
        let owned = owned_disjoint(&d);
        if d.state == "Stable" && d.members.len() == members {
            let took = since.elapsed();
            let all: BTreeSet<Tp> = owned.values().flatten().cloned().collect();
            assert_eq!(all.len(), PARTITIONS as usize);
            let sizes: Vec<usize> = owned.values().map(BTreeSet::len).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{sizes:?}");
            return took;
        }
        assert!(Instant::now() < deadline, "never stable: {d:#?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, v: &[f64]) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let list: Vec<String> = s.iter().map(|x| format!("{x:.1}")).collect();
    println!(
        "rebalance figure: {name}: median {:.1} ms, max {:.1} ms, samples [{}] ms",
        s[s.len() / 2],
        s[s.len() - 1],
        list.join(", ")
    );
}

#[test]
fn time_to_stable_assignment_with_10_members_and_100_partitions() {
    let b = TestBroker::start();
    assert_eq!(
        b.client().create_topic(TOPIC, PARTITIONS, &[]),
        ErrorCode::None
    );
    let mut obs = GroupClient::connect(b.addr, "observer");
    let mut admin = GroupClient::connect(b.addr, "admin");
    let mut members: Vec<Running> = Vec::new();
    for i in 0..9 {
        members.push(spawn_member(b.addr, format!("m{i}")));
    }
    wait_stable(&mut obs, 9, Instant::now());

    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    let (mut crashes, mut crashes_from_close) = (Vec::new(), Vec::new());
    let mut next = 9;
    for _ in 0..3 {
        // Clean join: 9 -> 10.
        let t = Instant::now();
        members.push(spawn_member(b.addr, format!("m{next}")));
        next += 1;
        joins.push(ms(wait_stable(&mut obs, 10, t)));
        // Clean leave: 10 -> 9 (LeaveGroup from another connection wakes
        // the member's parked heartbeat, which then ends its thread).
        let gone = members.remove(0);
        let t = Instant::now();
        assert_eq!(admin.leave(GROUP, &gone.id), ErrorCode::None);
        leaves.push(ms(wait_stable(&mut obs, 9, t)));
        let _ = gone.thread.join();
    }
    for _ in 0..2 {
        members.push(spawn_member(b.addr, format!("m{next}")));
        next += 1;
        wait_stable(&mut obs, 10, Instant::now());
        // Crash: the connection just closes, no LeaveGroup. The session
        // runs from the member's last heartbeat (parked at that moment).
        let gone = members.remove(0);
        let t = Instant::now();
        gone.socket.shutdown(Shutdown::Both).expect("shutdown");
        let took = wait_stable(&mut obs, 9, t);
        let last = *gone.last_sent.lock().unwrap_or_else(|p| p.into_inner());
        let session = Duration::from_millis(u64::from(SESSION_MS));
        crashes.push(ms((t + took).saturating_duration_since(last + session)));
        crashes_from_close.push(ms(took));
        let _ = gone.thread.join();
    }
    println!(
        "rebalance setup: {PARTITIONS} partitions, 10 members, session {SESSION_MS} ms, \
         heartbeat max_wait {MAX_WAIT_MS} ms (parks capped at session/3), debug build"
    );
    summary("clean join (9 -> 10 members) to stable", &joins);
    summary("clean leave (10 -> 9 members) to stable", &leaves);
    summary(
        "crash (no leave) to stable, beyond last heartbeat sent + session timeout",
        &crashes,
    );
    summary(
        "crash (no leave): from the connection closing to stable",
        &crashes_from_close,
    );
    for m in &members {
        let _ = m.socket.shutdown(Shutdown::Both);
    }
    for m in members {
        let _ = m.thread.join();
    }
}
