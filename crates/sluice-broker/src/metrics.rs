//! Prometheus metrics of the broker, served as text on `GET /metrics`.
//!
//! | metric                                  | type      | labels            |
//! |-----------------------------------------|-----------|-------------------|
//! | `sluice_messages_in_total`              | counter   | topic             |
//! | `sluice_bytes_in_total`                 | counter   | topic             |
//! | `sluice_messages_out_total`             | counter   | topic             |
//! | `sluice_bytes_out_total`                | counter   | topic             |
//! | `sluice_request_duration_seconds`       | histogram | api               |
//! | `sluice_active_connections`             | gauge     |                   |
//! | `sluice_parked_fetches`                 | gauge     |                   |
//! | `sluice_fsync_duration_seconds`         | histogram |                   |
//! | `sluice_log_end_offset`                 | gauge     | topic, partition  |
//! | `sluice_log_start_offset`               | gauge     | topic, partition  |
//! | `sluice_group_members`                  | gauge     | group             |
//! | `sluice_group_rebalances_total`         | counter   | group             |
//! | `sluice_group_lag`                      | gauge     | group, topic, partition |
//! | `sluice_group_lag_ms`                   | gauge     | group, topic, partition |
//! | `sluice_group_metrics_omitted`          | gauge     |                   |
//! | `sluice_group_offsets_expired_total`    | counter   |                   |
//! | `sluice_tls_handshake_failures_total`   | counter   | listener          |
//! | `sluice_disk_free_bytes`                | gauge     |                   |
//! | `sluice_disk_total_bytes`               | gauge     |                   |
//! | `sluice_disk_space_low`                 | gauge     |                   |
//!
//! The group series are refreshed by a timer (every second, see
//! `sluiced`'s `server` module) from the coordinator and the offset store:
//! `sluice_group_lag` is in records, `sluice_group_lag_ms` is the age of the
//! oldest unconsumed record (0 when caught up, -1 unknown). Series of deleted
//! groups, expired offsets and deleted topics are removed. Per-group series
//! are bounded in count (see [`crate::group::GroupsOptions`]: 1,000 groups,
//! 10,000 lag series by default); `sluice_group_metrics_omitted` counts the
//! groups left out. `sluice_group_offsets_expired_total` counts committed
//! offsets deleted by `offsets_retention_minutes`.
//!
//! The disk series describe the file system holding the data directory,
//! measured every second ([`crate::disk`]): bytes available (`df`'s Avail),
//! its size, and `sluice_disk_space_low` 1 while produce is refused because
//! the available bytes are below `disk_min_free_bytes`.
//!
//! Hot paths hold pre-resolved label handles ([`TopicMetrics`],
//! [`PartitionMetrics`]) so a request does no label lookup.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use sluice_protocol::ApiKey;

/// All broker metrics and the registry they are registered in.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    messages_in: IntCounterVec,
    bytes_in: IntCounterVec,
    messages_out: IntCounterVec,
    bytes_out: IntCounterVec,
    request_duration: HistogramVec,
    /// Open client connections.
    pub active_connections: IntGauge,
    /// Fetch requests parked waiting for data.
    pub parked_fetches: IntGauge,
    /// Partitions whose files could not be opened at start (not served).
    pub offline_partitions: IntGauge,
    /// Request bytes held in memory across all connections (the driver's budget in use).
    pub request_memory_bytes: IntGauge,
    /// TLS handshakes that failed or timed out, per listener (`native`,
    /// `kafka`, `http`, `cluster`): plaintext clients on a TLS port,
    /// unknown or expired certificates, stalled handshakes.
    pub tls_handshake_failures: IntCounterVec,
    /// Time spent in fsync (group commits and interval flushes).
    pub fsync_duration: Histogram,
    log_end_offset: IntGaugeVec,
    log_start_offset: IntGaugeVec,
    /// Members per group.
    pub group_members: IntGaugeVec,
    /// Target-assignment changes per group since the broker started.
    pub group_rebalances: IntCounterVec,
    /// Records not yet consumed per group and partition.
    pub group_lag: IntGaugeVec,
    /// Age in ms of the oldest unconsumed record per group and partition.
    pub group_lag_ms: IntGaugeVec,
    /// Groups left out of the per-group series by the cap.
    pub group_metrics_omitted: IntGauge,
    /// Committed offsets deleted by offsets retention.
    pub group_offsets_expired: IntCounter,
    /// Bytes available on the data directory's file system.
    pub disk_free_bytes: IntGauge,
    /// Size of the data directory's file system.
    pub disk_total_bytes: IntGauge,
    /// 1 while produce is refused for lack of disk space.
    pub disk_space_low: IntGauge,
}

/// Pre-resolved per-topic counters.
#[derive(Clone)]
pub struct TopicMetrics {
    /// Records appended.
    pub messages_in: IntCounter,
    /// Batch bytes appended.
    pub bytes_in: IntCounter,
    /// Records served by fetch.
    pub messages_out: IntCounter,
    /// Batch bytes served by fetch.
    pub bytes_out: IntCounter,
}

/// Pre-resolved per-partition gauges.
#[derive(Clone)]
pub struct PartitionMetrics {
    /// Next offset to be written.
    pub end_offset: IntGauge,
    /// First offset still stored.
    pub start_offset: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static and registered once on a fresh registry;
    // a failure here is a programming error caught by the unit test below.
    match r {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The registry every broker metric is registered in (other modules add theirs).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates and registers every metric on a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let plain_counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let latency_buckets = vec![
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let request_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "sluice_request_duration_seconds",
                "Time from receiving a request to its response being ready, per API",
            )
            .buckets(latency_buckets.clone()),
            &["api"],
        ));
        must(registry.register(Box::new(request_duration.clone())));
        let fsync_duration = must(Histogram::with_opts(
            HistogramOpts::new("sluice_fsync_duration_seconds", "Duration of log flushes")
                .buckets(latency_buckets),
        ));
        must(registry.register(Box::new(fsync_duration.clone())));
        Metrics {
            messages_in: counter(
                "sluice_messages_in_total",
                "Records appended per topic",
                &["topic"],
            ),
            bytes_in: counter(
                "sluice_bytes_in_total",
                "Record batch bytes appended per topic",
                &["topic"],
            ),
            messages_out: counter(
                "sluice_messages_out_total",
                "Records returned by fetch per topic",
                &["topic"],
            ),
            bytes_out: counter(
                "sluice_bytes_out_total",
                "Record batch bytes returned by fetch per topic",
                &["topic"],
            ),
            request_duration,
            active_connections: gauge("sluice_active_connections", "Open client connections"),
            parked_fetches: gauge("sluice_parked_fetches", "Fetch requests waiting for data"),
            offline_partitions: gauge(
                "sluice_offline_partitions",
                "Partitions whose files could not be opened at start; they are not served",
            ),
            request_memory_bytes: gauge(
                "sluice_request_memory_bytes",
                "Request bytes held in memory across all connections",
            ),
            tls_handshake_failures: counter(
                "sluice_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, per listener",
                &["listener"],
            ),
            fsync_duration,
            log_end_offset: gauge_vec(
                "sluice_log_end_offset",
                "Offset the next record of a partition will get",
                &["topic", "partition"],
            ),
            log_start_offset: gauge_vec(
                "sluice_log_start_offset",
                "First offset still stored in a partition",
                &["topic", "partition"],
            ),
            group_members: gauge_vec(
                "sluice_group_members",
                "Members of a consumer group",
                &["group"],
            ),
            group_rebalances: counter(
                "sluice_group_rebalances_total",
                "Times a consumer group's target assignment changed",
                &["group"],
            ),
            group_lag: gauge_vec(
                "sluice_group_lag",
                "Records a consumer group has not consumed yet (log end minus committed offset)",
                &["group", "topic", "partition"],
            ),
            group_lag_ms: gauge_vec(
                "sluice_group_lag_ms",
                "Age in ms of the oldest record a consumer group has not consumed (0 caught up, -1 unknown)",
                &["group", "topic", "partition"],
            ),
            group_metrics_omitted: gauge(
                "sluice_group_metrics_omitted",
                "Consumer groups whose per-group series, or lag series, are left out (over the cap)",
            ),
            group_offsets_expired: plain_counter(
                "sluice_group_offsets_expired_total",
                "Committed offsets deleted because they outlived offsets_retention_minutes",
            ),
            disk_free_bytes: gauge(
                "sluice_disk_free_bytes",
                "Bytes available to the broker on the data directory's file system",
            ),
            disk_total_bytes: gauge(
                "sluice_disk_total_bytes",
                "Size in bytes of the data directory's file system",
            ),
            disk_space_low: gauge(
                "sluice_disk_space_low",
                "1 while produce is refused because free disk space is below disk_min_free_bytes",
            ),
            registry,
        }
    }

    /// Handles for one topic's counters.
    pub fn topic(&self, topic: &str) -> TopicMetrics {
        TopicMetrics {
            messages_in: self.messages_in.with_label_values(&[topic]),
            bytes_in: self.bytes_in.with_label_values(&[topic]),
            messages_out: self.messages_out.with_label_values(&[topic]),
            bytes_out: self.bytes_out.with_label_values(&[topic]),
        }
    }

    /// Handles for one partition's gauges.
    pub fn partition(&self, topic: &str, partition: u32) -> PartitionMetrics {
        let p = partition.to_string();
        PartitionMetrics {
            end_offset: self.log_end_offset.with_label_values(&[topic, &p]),
            start_offset: self.log_start_offset.with_label_values(&[topic, &p]),
        }
    }

    /// Drops every series of a deleted topic.
    pub fn remove_topic(&self, topic: &str, partitions: u32) {
        for v in [
            &self.messages_in,
            &self.bytes_in,
            &self.messages_out,
            &self.bytes_out,
        ] {
            let _ = v.remove_label_values(&[topic]);
        }
        for p in 0..partitions {
            let p = p.to_string();
            let _ = self.log_end_offset.remove_label_values(&[topic, &p]);
            let _ = self.log_start_offset.remove_label_values(&[topic, &p]);
        }
    }

    /// The latency histogram of one API (label is the API name, or "unknown").
    pub fn request_timer(&self, api: Option<ApiKey>) -> Histogram {
        let name = api.map_or("unknown", |k| k.name());
        self.request_duration.with_label_values(&[name])
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders() {
        let m = Metrics::new();
        let t = m.topic("orders");
        t.messages_in.inc_by(3);
        m.partition("orders", 2).end_offset.set(42);
        m.request_timer(Some(ApiKey::Produce)).observe(0.001);
        m.active_connections.inc();
        let text = m.render();
        assert!(
            text.contains("sluice_messages_in_total{topic=\"orders\"} 3"),
            "{text}"
        );
        assert!(text.contains("sluice_log_end_offset{partition=\"2\",topic=\"orders\"} 42"));
        assert!(text.contains("sluice_request_duration_seconds_bucket{api=\"Produce\""));
        assert!(text.contains("sluice_active_connections 1"));
        m.remove_topic("orders", 3);
        assert!(!m.render().contains("topic=\"orders\""));
    }
}
