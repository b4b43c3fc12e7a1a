//! The slow-request log: one WARN line, `slow request`, for each request
//! that kept the broker busy longer than `slow_request_ms`, on either wire.
//!
//! **What is timed.** From the moment a front end has a request's whole
//! frame (the driver's read, memory reservation and quota mute are before
//! it) to the moment its response is encoded and handed to the writer (or,
//! for a produce with acks = none, applied). Writing the response is not
//! included: a client that reads slowly is not a slow request.
//!
//! **Waits by design are left out.** A long-poll fetch parks until data
//! arrives or its `max_wait` passes; a native heartbeat parks until the
//! group changes; a Kafka JoinGroup or SyncGroup waits at the group's
//! barrier (up to the rebalance timeout, and the initial rebalance delay);
//! a failed login is answered after a deliberate delay. Those waits are
//! what the client asked for, so they are measured separately ([`parked`])
//! and subtracted: a fetch that waited its whole `max_wait` and then
//! answered at once is not slow, one whose reads took 2 s after waking is.
//! Waits that are not by design count: a durable produce waiting for its
//! fsync, a request forwarded to the controller, a commit waiting for its
//! replication. The line reports both: `elapsed_ms` (what was counted) and
//! `parked_ms` (what was left out).
//!
//! **Cost.** Nothing per record. Per request, one clock read and one
//! compare (the clock read is shared with the latency histogram on the
//! native wire); a deferred request's future also runs inside a task-local
//! scope ([`measure`]) that its parking adds to, with no allocation beyond
//! the boxed future the request already had.
//!
//! **Fields.** `protocol` (`native` or `kafka`), `api`, `api_key`,
//! `api_version`, `correlation_id`, `client_id`, `peer`, `elapsed_ms`,
//! `parked_ms`. The topics and partitions a request names are not repeated
//! here (keeping them would cost a copy per request); the connection span
//! (`conn`, with `peer`, `listener` and `client_id`) encloses the line.
//!
//! The lines have their own target, [`TARGET`], so a filter can silence or
//! keep them apart from the rest: `RUST_LOG=info,sluice::slow_request=off`.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The tracing target of `slow request` lines.
pub const TARGET: &str = "sluice::slow_request";

/// Default `slow_request_ms`.
pub const DEFAULT_SLOW_REQUEST_MS: u64 = 1000;

tokio::task_local! {
    /// Time the current deferred request spent parked by design.
    static PARKED: Cell<Duration>;
}

/// The slow-request threshold of a broker (`slow_request_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowLog {
    threshold: Duration,
}

/// One request, as the slow log names it.
#[derive(Debug, Clone, Copy)]
pub struct SlowRequest<'a> {
    /// `native` or `kafka`.
    pub protocol: &'static str,
    /// The api's name (`Produce`, `Fetch`, ...).
    pub api: &'static str,
    /// The api key on its wire.
    pub api_key: i32,
    /// The api version.
    pub api_version: i32,
    /// The request's correlation id.
    pub correlation_id: i64,
    /// The request header's client id.
    pub client_id: &'a str,
    /// The connection's remote address.
    pub peer: SocketAddr,
}

impl SlowLog {
    /// Requests busier than `threshold` are logged; zero logs every request.
    pub fn new(threshold: Duration) -> SlowLog {
        SlowLog { threshold }
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Whether a request that took `elapsed` in all, `parked` of it waiting
    /// by design, is reported.
    pub fn is_slow(&self, elapsed: Duration, parked: Duration) -> bool {
        self.threshold.is_zero() || elapsed.saturating_sub(parked) > self.threshold
    }

    /// Logs the request `request` names if it is slow (see [`SlowLog::is_slow`]);
    /// `request` is called only then.
    #[inline]
    pub fn check<'a>(
        &self,
        elapsed: Duration,
        parked: Duration,
        request: impl FnOnce() -> SlowRequest<'a>,
    ) {
        if self.is_slow(elapsed, parked) {
            log(elapsed.saturating_sub(parked), parked, &request());
        }
    }
}

#[cold]
fn log(busy: Duration, parked: Duration, r: &SlowRequest<'_>) {
    tracing::warn!(
        target: TARGET,
        protocol = r.protocol,
        api = r.api,
        api_key = r.api_key,
        api_version = r.api_version,
        correlation_id = r.correlation_id,
        client_id = r.client_id,
        peer = %r.peer,
        elapsed_ms = millis(busy),
        parked_ms = millis(parked),
        "slow request"
    );
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a deferred request's future in a scope that collects the time it
/// spends [`parked`]; returns its output and that time.
pub async fn measure<F: Future>(fut: F) -> (F::Output, Duration) {
    PARKED
        .scope(Cell::new(Duration::ZERO), async move {
            let out = fut.await;
            (out, PARKED.with(Cell::get))
        })
        .await
}

/// Runs `wait`, a wait by design (see the module docs), and counts its
/// time as parked for the enclosing [`measure`]; outside one it only runs it.
pub async fn parked<F: Future>(wait: F) -> F::Output {
    let started = Instant::now();
    let out = wait.await;
    add_parked(started.elapsed());
    out
}

/// Counts `d` as parked for the enclosing [`measure`], if any.
pub fn add_parked(d: Duration) {
    let _ = PARKED.try_with(|p| p.set(p.get() + d));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_applies_to_the_time_not_parked() {
        let slow = SlowLog::new(Duration::from_millis(100));
        let ms = Duration::from_millis;
        assert!(
            !slow.is_slow(ms(100), ms(0)),
            "at the threshold is not over it"
        );
        assert!(slow.is_slow(ms(101), ms(0)));
        // A fetch that waited 5 s by design and then answered at once.
        assert!(!slow.is_slow(ms(5_020), ms(5_000)));
        // One whose reads took 300 ms after waking.
        assert!(slow.is_slow(ms(5_300), ms(5_000)));
        // Zero reports every request, parked or not.
        let all = SlowLog::new(Duration::ZERO);
        assert!(all.is_slow(ms(0), ms(0)) && all.is_slow(ms(10), ms(10)));
    }

    #[tokio::test]
    async fn parked_time_is_collected_only_inside_measure() {
        let (out, parked) = measure(async {
            super::parked(tokio::time::sleep(Duration::from_millis(30))).await;
            add_parked(Duration::from_millis(5));
            7
        })
        .await;
        assert_eq!(out, 7);
        assert!(parked >= Duration::from_millis(35), "{parked:?}");
        // Outside a scope: a no-op, not a panic.
        super::parked(async {}).await;
        add_parked(Duration::from_secs(1));
        // Scopes do not leak into each other.
        let ((), parked) = measure(async {}).await;
        assert_eq!(parked, Duration::ZERO);
    }
}
