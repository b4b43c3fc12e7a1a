//! Prometheus metrics of the broker, served as text on `GET /metrics`.
//!
//! | metric                                  | type      | labels            |
//! |-----------------------------------------|-----------|-------------------|
//! | `sluice_messages_in_total`              | counter   | topic             |
//! | `sluice_bytes_in_total`                 | counter   | topic             |
//! | `sluice_messages_out_total`             | counter   | topic             |
//! | `sluice_bytes_out_total`                | counter   | topic             |
//! | `sluice_request_duration_seconds`       | histogram | api               |
//! | `sluice_kafka_request_duration_seconds` | histogram | api (Kafka's name) |
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
//! | `sluice_data_dir_bytes`                 | gauge     |                   |
//! | `sluice_offline_partitions`             | gauge     |                   |
//! | `sluice_produce_errors_total`           | counter   | error             |
//! | `sluice_under_replicated_partitions`    | gauge     |                   |
//! | `sluice_leaderless_partitions`          | gauge     |                   |
//! | `sluice_leader_changes_total`           | counter   |                   |
//! | `process_cpu_seconds_total`             | counter   |                   |
//! | `process_resident_memory_bytes`         | gauge     |                   |
//! | `process_virtual_memory_bytes`          | gauge     |                   |
//! | `process_open_fds`                      | gauge     |                   |
//! | `process_max_fds`                       | gauge     |                   |
//! | `process_threads`                       | gauge     |                   |
//! | `process_start_time_seconds`            | gauge     |                   |
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
//! `sluice_data_dir_bytes` is what the files under the data directory take
//! on disk (allocated blocks, as `du` counts them), walked every
//! [`crate::disk::DATA_DIR_USAGE_TICK`]: a walk is one `stat` per file.
//!
//! `sluice_produce_errors_total` counts the partitions of produce requests
//! answered with an error (both wires: the Kafka front end produces through
//! the native handler), labelled with the native error name
//! (`NOT_LEADER_FOR_PARTITION`, `DISK_FULL`, ...). Requests refused as a
//! whole (authorization, quota, a Kafka version or acks value out of range)
//! are not in it.
//!
//! The replication series come from the applied cluster metadata, refreshed
//! each time it changes (`sluiced`'s `replication::apply_roles`); a single
//! node reports 0. `sluice_under_replicated_partitions` counts the
//! partitions this broker leads whose in-sync replicas are fewer than their
//! replicas (Kafka's `UnderReplicatedPartitions`: sum it over the brokers).
//! `sluice_leaderless_partitions` counts the partitions of the whole
//! cluster without a live leader (Kafka's `OfflinePartitionsCount`): every
//! broker reports the same cluster-wide figure, so take the `max`.
//! `sluice_leader_changes_total` counts the times a partition on this
//! broker became leader in a new leader epoch. `sluice_offline_partitions`
//! is different: partitions whose files this broker could not open at start.
//!
//! The `process_*` series are Prometheus's standard process metrics, read
//! from `/proc/self` at each scrape ([`ProcessCollector`]; Linux only, absent
//! elsewhere).
//!
//! Hot paths hold pre-resolved label handles ([`TopicMetrics`],
//! [`PartitionMetrics`]) so a request does no label lookup.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use sluice_protocol::{ApiKey, ErrorCode};

/// All broker metrics and the registry they are registered in.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    messages_in: IntCounterVec,
    bytes_in: IntCounterVec,
    messages_out: IntCounterVec,
    bytes_out: IntCounterVec,
    request_duration: HistogramVec,
    kafka_request_duration: HistogramVec,
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
    /// Bytes the files under the data directory take on disk.
    pub data_dir_bytes: IntGauge,
    produce_errors: IntCounterVec,
    /// Partitions this broker leads with fewer in-sync replicas than replicas.
    pub under_replicated_partitions: IntGauge,
    /// Partitions of the cluster without a live leader.
    pub leaderless_partitions: IntGauge,
    /// Times a partition here became leader in a new epoch.
    pub leader_changes: IntCounter,
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
    /// The broker-wide count of leaderships taken (not per partition).
    pub leader_changes: IntCounter,
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
        let kafka_request_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "sluice_kafka_request_duration_seconds",
                "Time from receiving a Kafka-protocol request to its response being ready \
                 (long-poll waits included), per Kafka API",
            )
            .buckets(latency_buckets.clone()),
            &["api"],
        ));
        must(registry.register(Box::new(kafka_request_duration.clone())));
        let fsync_duration = must(Histogram::with_opts(
            HistogramOpts::new("sluice_fsync_duration_seconds", "Duration of log flushes")
                .buckets(latency_buckets),
        ));
        must(registry.register(Box::new(fsync_duration.clone())));
        if cfg!(target_os = "linux") {
            must(registry.register(Box::new(ProcessCollector::new())));
        }
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
            kafka_request_duration,
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
            data_dir_bytes: gauge(
                "sluice_data_dir_bytes",
                "Bytes the files under the data directory take on disk (allocated blocks, like du)",
            ),
            produce_errors: counter(
                "sluice_produce_errors_total",
                "Produce partitions answered with an error, per error name",
                &["error"],
            ),
            under_replicated_partitions: gauge(
                "sluice_under_replicated_partitions",
                "Partitions this broker leads whose in-sync replicas are fewer than their replicas",
            ),
            leaderless_partitions: gauge(
                "sluice_leaderless_partitions",
                "Partitions of the cluster without a live leader, in this broker's applied metadata",
            ),
            leader_changes: plain_counter(
                "sluice_leader_changes_total",
                "Times a partition on this broker became leader in a new leader epoch",
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
            leader_changes: self.leader_changes.clone(),
        }
    }

    /// Counts one produce partition answered with `code`; returns `code`.
    pub fn produce_failed(&self, code: ErrorCode) -> ErrorCode {
        self.produce_errors.with_label_values(&[code.name()]).inc();
        code
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

    /// The latency histogram of one Kafka-protocol API (label: Kafka's API name).
    pub fn kafka_request_timer(&self, api: &str) -> Histogram {
        self.kafka_request_duration.with_label_values(&[api])
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

/// The fields of `/proc/self/stat` the process metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Threads in the process.
    pub threads: i64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size in bytes.
    pub vsize: u64,
    /// Resident set size in pages.
    pub rss_pages: i64,
}

/// Parses `/proc/<pid>/stat` (`proc(5)`). The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so the fields are
/// counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here: field n is index n - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        cpu_ticks: num(14)?.checked_add(num(15)?)?,
        threads: f.get(20 - 3)?.parse().ok()?,
        start_ticks: num(22)?,
        vsize: num(23)?,
        rss_pages: f.get(24 - 3)?.parse().ok()?,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Prometheus's standard `process_*` metrics of this process, read from
/// `/proc/self` when the registry is gathered (a scrape): CPU seconds,
/// resident and virtual memory, open and maximum file descriptors, threads,
/// start time. A file that cannot be read leaves its series out of that
/// scrape rather than reporting a made-up value.
pub struct ProcessCollector {
    descs: Vec<Desc>,
    cpu: Counter,
    /// Serialises scrapes: the CPU counter is moved up by a difference.
    cpu_lock: Mutex<()>,
    resident: IntGauge,
    virtual_bytes: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start_time: IntGauge,
    ticks_per_second: u64,
    page_size: i64,
}

impl std::fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCollector").finish_non_exhaustive()
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

impl ProcessCollector {
    /// The collector of the calling process (start time read once, here).
    pub fn new() -> ProcessCollector {
        let gauge = |name: &str, help: &str| must(IntGauge::new(name, help));
        let cpu = must(Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds",
        ));
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        // sysconf's c_long is i64 here but i32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let page_size = i64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096);
        let c = ProcessCollector {
            descs: Vec::new(),
            cpu,
            cpu_lock: Mutex::new(()),
            resident: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
            ),
            virtual_bytes: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
            ),
            open_fds: gauge("process_open_fds", "Number of open file descriptors"),
            max_fds: gauge(
                "process_max_fds",
                "Maximum number of open file descriptors (soft limit)",
            ),
            threads: gauge("process_threads", "Number of OS threads in the process"),
            start_time: gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
            ),
            ticks_per_second: u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100),
            page_size,
        };
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_boot_time(&t));
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_proc_stat(&t));
        if let (Some(boot), Some(stat)) = (boot, stat) {
            let secs = boot + stat.start_ticks / c.ticks_per_second;
            c.start_time.set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
        let descs = [
            c.cpu.desc(),
            c.resident.desc(),
            c.virtual_bytes.desc(),
            c.open_fds.desc(),
            c.max_fds.desc(),
            c.threads.desc(),
            c.start_time.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        ProcessCollector { descs, ..c }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(7);
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_proc_stat(&t))
        {
            let secs = stat.cpu_ticks as f64 / self.ticks_per_second as f64;
            {
                let _one = self.cpu_lock.lock().unwrap_or_else(|p| p.into_inner());
                let delta = secs - self.cpu.get();
                if delta > 0.0 {
                    self.cpu.inc_by(delta);
                }
            }
            self.resident
                .set(stat.rss_pages.saturating_mul(self.page_size));
            self.virtual_bytes
                .set(i64::try_from(stat.vsize).unwrap_or(i64::MAX));
            self.threads.set(stat.threads);
            out.extend(self.cpu.collect());
            out.extend(self.resident.collect());
            out.extend(self.virtual_bytes.collect());
            out.extend(self.threads.collect());
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle being read is one of the entries.
            let n = dir.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(n).unwrap_or(i64::MAX));
            out.extend(self.open_fds.collect());
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own and pass by pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds
                .set(i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX));
            out.extend(self.max_fds.collect());
        }
        if self.start_time.get() > 0 {
            out.extend(self.start_time.collect());
        }
        out
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

    #[test]
    fn produce_errors_are_counted_by_name_and_leader_changes_shared() {
        let m = Metrics::new();
        assert_eq!(
            m.produce_failed(ErrorCode::NotLeaderForPartition),
            ErrorCode::NotLeaderForPartition
        );
        m.produce_failed(ErrorCode::NotLeaderForPartition);
        m.produce_failed(ErrorCode::DiskFull);
        let text = m.render();
        assert!(
            text.contains("sluice_produce_errors_total{error=\"NOT_LEADER_FOR_PARTITION\"} 2"),
            "{text}"
        );
        assert!(text.contains("sluice_produce_errors_total{error=\"DISK_FULL\"} 1"));
        m.partition("a", 0).leader_changes.inc();
        m.partition("b", 1).leader_changes.inc();
        let text = m.render();
        assert!(text.contains("sluice_leader_changes_total 2"), "{text}");
        assert!(text.contains("sluice_under_replicated_partitions 0"));
        assert!(text.contains("sluice_leaderless_partitions 0"));
        assert!(text.contains("sluice_data_dir_bytes 0"));
    }

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let line = "4242 (sl uiced) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 130 0 0 20 0 12 0 8800 1234567890 5120 18446744073709551615";
        let s = parse_proc_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                cpu_ticks: 380,
                threads: 12,
                start_ticks: 8800,
                vsize: 1_234_567_890,
                rss_pages: 5120,
            }
        );
        assert_eq!(parse_proc_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_proc_stat("no parenthesis"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_measured_at_each_scrape() {
        let m = Metrics::new();
        let value = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .parse()
                .unwrap()
        };
        let first = m.render();
        let rss = value(&first, "process_resident_memory_bytes");
        assert!(rss > 1_000_000.0, "{rss}");
        assert!(value(&first, "process_virtual_memory_bytes") >= rss);
        assert!(value(&first, "process_threads") >= 1.0);
        assert!(value(&first, "process_max_fds") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value(&first, "process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
        // Opening files shows in the next scrape.
        let fds = value(&first, "process_open_fds");
        let held: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        // Other tests of this binary open and close files meanwhile.
        assert!(value(&m.render(), "process_open_fds") >= fds + 32.0);
        drop(held);
        // CPU time only grows; burn some and it shows.
        let cpu = value(&first, "process_cpu_seconds_total");
        let until = std::time::Instant::now() + std::time::Duration::from_millis(150);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let later = value(&m.render(), "process_cpu_seconds_total");
        assert!(later > cpu, "{cpu} -> {later}");
    }
}
