//! A `sluiced` that keeps its native port across restarts, so a client that
//! cached the address finds the restarted broker there (reconnect tests).
//!
//! The port is chosen free by binding `127.0.0.1:0`; between that probe (or a
//! kill) and the broker's own bind another test running in parallel may take
//! it, so starting retries: a fresh port at first start, the same port (for a
//! bounded time) on restart.

use std::process::Child;
use std::time::{Duration, Instant};

use super::try_spawn_broker;

/// First-start attempts, each on a new free port.
const START_ATTEMPTS: usize = 5;
/// How long a restart keeps retrying its port while something else holds it.
const RESTART_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between restart attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A `sluiced` child on a port that survives [`FixedPortBroker::spawn`]; killed on drop.
pub struct FixedPortBroker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl FixedPortBroker {
    /// Starts on a free port and a fresh temp data dir.
    pub fn start() -> FixedPortBroker {
        let mut b = FixedPortBroker {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let mut last_err = String::new();
        for _ in 0..START_ATTEMPTS {
            b.port = free_port();
            match b.try_spawn() {
                Ok(()) => return b,
                Err(e) => last_err = e,
            }
        }
        panic!("{last_err}; its log:\n{}", b.log());
    }

    /// Starts again (after [`FixedPortBroker::kill`]) on the same data dir and port,
    /// retrying while the port is held by someone else.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker is still running");
        let deadline = Instant::now() + RESTART_DEADLINE;
        loop {
            match self.try_spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("{e}; its log:\n{}", self.log())
                }
                Err(_) => std::thread::sleep(RETRY_PAUSE),
            }
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let (child, _, _) = try_spawn_broker(
            &self.dir.path().join("data"),
            &self.dir.path().join("broker.log"),
            &self.addr(),
            &[],
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// `127.0.0.1:PORT`, the same across restarts.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's stderr so far (appended across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for FixedPortBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
