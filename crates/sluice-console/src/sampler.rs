//! Throughput and consumer-lag history for the console's charts.
//!
//! Started by the first API call, a task samples the cluster every
//! [`INTERVAL`] through the console's own client (the bootstrap admin when
//! the listener needs a login; without one configured there, no history is
//! kept) and keeps [`HISTORY`] points: the last hour. "In" is the growth of
//! the log end offsets and sizes of every topic not named `__*`; "out" the
//! growth of every group's committed offsets.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sluice_client::Admin;

use crate::{lock, Console};

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Points kept: an hour of [`INTERVAL`]s.
pub const HISTORY: usize = 360;

/// Most groups described per sample.
const MAX_GROUPS: usize = 100;

/// Cluster throughput at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Point {
    /// Unix time in ms.
    pub t: i64,
    /// Bytes appended per second (leaders' log growth).
    pub in_bytes_per_sec: f64,
    /// Records appended per second.
    pub in_records_per_sec: f64,
    /// Records consumed and committed by groups per second.
    pub out_records_per_sec: f64,
}

/// What one sample counted.
struct Totals {
    at: Instant,
    /// Per topic: sum of end offsets, sum of sizes.
    topics: HashMap<String, (u64, u64)>,
    /// Per group: sum of committed offsets.
    committed: HashMap<String, u64>,
}

#[derive(Default)]
struct State {
    points: VecDeque<Point>,
    last: Option<Totals>,
    /// Per topic: records/s, bytes/s over the last interval.
    topic_rates: HashMap<String, (f64, f64)>,
    /// Per group: `(t, total lag)` points.
    lag: HashMap<String, VecDeque<(i64, u64)>>,
}

/// The history, and the task that fills it.
#[derive(Default)]
pub struct Sampler {
    started: AtomicBool,
    state: Mutex<State>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rate(new: u64, old: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    new.saturating_sub(old) as f64 / secs
}

impl Sampler {
    /// Starts the sampling task once.
    pub fn start(&self, console: &Arc<Console>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Console> = Arc::downgrade(console);
        tokio::spawn(async move {
            let mut admin: Option<Admin> = None;
            loop {
                let Some(console) = weak.upgrade() else {
                    return;
                };
                if admin.is_none() {
                    admin = console.service_admin().await;
                }
                if let Some(a) = &admin {
                    if let Err(e) = console.sampler.sample(a).await {
                        tracing::debug!(error = %e, "console sample failed");
                        admin = None;
                    }
                }
                drop(console);
                tokio::time::sleep(INTERVAL).await;
            }
        });
    }

    async fn sample(&self, admin: &Admin) -> Result<(), sluice_client::ClientError> {
        let topics = admin.list_topics().await?;
        let mut totals = Totals {
            at: Instant::now(),
            topics: HashMap::new(),
            committed: HashMap::new(),
        };
        for t in topics.iter().filter(|t| !t.name.starts_with("__")) {
            let ends = t.partitions.iter().map(|p| p.end_offset).sum();
            totals.topics.insert(t.name.clone(), (ends, t.size_bytes()));
        }
        let mut lags = Vec::new();
        for g in admin.list_groups().await?.into_iter().take(MAX_GROUPS) {
            let Ok(d) = admin.describe_group(&g.group_id).await else {
                continue;
            };
            let committed = d
                .offsets
                .iter()
                .filter(|o| o.committed_offset >= 0)
                .map(|o| o.committed_offset as u64)
                .sum();
            totals.committed.insert(g.group_id.clone(), committed);
            lags.push((g.group_id, d.total_lag()));
        }
        self.record(totals, lags, now_ms());
        Ok(())
    }

    fn record(&self, totals: Totals, lags: Vec<(String, u64)>, t: i64) {
        let mut s = lock(&self.state);
        if let Some(last) = &s.last {
            let secs = totals.at.duration_since(last.at).as_secs_f64();
            let mut point = Point {
                t,
                ..Point::default()
            };
            let mut rates = HashMap::new();
            for (name, &(ends, bytes)) in &totals.topics {
                // A topic made since the last sample counts from zero (all
                // its records came in this interval). A group seen for the
                // first time counts nothing: its first commit may be a reset
                // far ahead, not consumption.
                let (e0, b0) = last.topics.get(name).copied().unwrap_or((0, 0));
                let r = (rate(ends, e0, secs), rate(bytes, b0, secs));
                point.in_records_per_sec += r.0;
                point.in_bytes_per_sec += r.1;
                rates.insert(name.clone(), r);
            }
            for (g, &c) in &totals.committed {
                let c0 = last.committed.get(g).copied().unwrap_or(c);
                point.out_records_per_sec += rate(c, c0, secs);
            }
            s.topic_rates = rates;
            s.points.push_back(point);
            while s.points.len() > HISTORY {
                s.points.pop_front();
            }
        }
        s.lag.retain(|g, _| lags.iter().any(|(id, _)| id == g));
        for (g, lag) in lags {
            let h = s.lag.entry(g).or_default();
            h.push_back((t, lag));
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        s.last = Some(totals);
    }

    /// The newest point (zeros before two samples) and the history, oldest first.
    pub fn throughput(&self) -> (Point, Vec<Point>) {
        let s = lock(&self.state);
        let now = s.points.back().copied().unwrap_or(Point {
            t: now_ms(),
            ..Point::default()
        });
        (now, s.points.iter().copied().collect())
    }

    /// Records/s and bytes/s of `topic` over the last interval, if sampled.
    pub fn topic_rate(&self, topic: &str) -> Option<(f64, f64)> {
        lock(&self.state).topic_rates.get(topic).copied()
    }

    /// `(unix ms, total lag)` points of `group`, oldest first.
    pub fn lag_history(&self, group: &str) -> Vec<(i64, u64)> {
        lock(&self.state)
            .lag
            .get(group)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(at: Instant, topics: &[(&str, u64, u64)], groups: &[(&str, u64)]) -> Totals {
        Totals {
            at,
            topics: topics
                .iter()
                .map(|(n, e, b)| (n.to_string(), (*e, *b)))
                .collect(),
            committed: groups.iter().map(|(g, c)| (g.to_string(), *c)).collect(),
        }
    }

    #[test]
    fn rates_from_two_samples() {
        let s = Sampler::default();
        let t0 = Instant::now();
        s.record(
            totals(t0, &[("a", 100, 1000)], &[("g", 50)]),
            vec![("g".into(), 50)],
            1,
        );
        assert!(s.throughput().1.is_empty(), "one sample gives no rate");
        let t1 = t0 + Duration::from_secs(10);
        s.record(
            totals(
                t1,
                &[("a", 300, 3000), ("b", 7, 70)],
                &[("g", 150), ("h", 9)],
            ),
            vec![("g".into(), 150), ("h".into(), 0)],
            2,
        );
        let (now, hist) = s.throughput();
        assert_eq!(hist.len(), 1);
        assert_eq!(now.in_records_per_sec, 20.7, "b is new: counts from zero");
        assert_eq!(now.in_bytes_per_sec, 207.0);
        assert_eq!(now.out_records_per_sec, 10.0, "h is new: counts nothing");
        assert_eq!(s.topic_rate("a"), Some((20.0, 200.0)));
        assert_eq!(s.topic_rate("b"), Some((0.7, 7.0)));
        assert_eq!(s.lag_history("g"), vec![(1, 50), (2, 150)]);
        // A log that shrank (topic recreated) never gives a negative rate.
        s.record(
            totals(t1 + Duration::from_secs(10), &[("a", 5, 5)], &[]),
            vec![],
            3,
        );
        assert_eq!(s.throughput().0.in_records_per_sec, 0.0);
        assert!(s.lag_history("g").is_empty(), "a gone group's history goes");
    }

    #[test]
    fn history_is_bounded() {
        let s = Sampler::default();
        let t0 = Instant::now();
        for i in 0..(HISTORY as u64 + 20) {
            let at = t0 + Duration::from_secs(i * 10);
            s.record(
                totals(at, &[("a", i, i)], &[]),
                vec![("g".into(), i)],
                i as i64,
            );
        }
        assert_eq!(s.throughput().1.len(), HISTORY);
        assert_eq!(s.lag_history("g").len(), HISTORY);
    }
}
