//! Prometheus metrics, served at `/metrics` in the text format.
//!
//! Where etcd has a series for the same thing, synod exports it under etcd's name, labels
//! and unit, recorded where its event happens, so that etcd's official mixin (alerts and
//! dashboard) works unchanged; docs/monitoring.md maps each of the mixin's series to its
//! event. The gRPC series are go-grpc-prometheus's, as etcd exports them ([`crate::rpc_metrics`]
//! records them). `process_*` are client_golang's, read at each scrape. synod's own
//! series start with `synod_`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::MetricsLevel;

pub type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Mutex<Registry>,
    // The member and its consensus group.
    pub has_leader: Gauge,
    pub is_leader: Gauge,
    pub is_learner: Gauge,
    pub leader_changes: Counter,
    pub proposals_committed: Gauge,
    pub proposals_applied: Gauge,
    pub proposals_pending: Gauge,
    pub proposals_failed: Counter,
    pub log_first_index: Gauge,
    pub snapshots_installed: Gauge,
    // Disks.
    pub wal_fsync_seconds: Histogram,
    pub backend_commit_seconds: Histogram,
    pub log_batch_entries: Histogram,
    // The keyspace.
    pub db_size_bytes: Gauge,
    pub db_size_in_use_bytes: Gauge,
    pub debugging_db_size_bytes: Gauge,
    pub quota_backend_bytes: Gauge,
    pub current_revision: Gauge,
    // The network: peers by member id, clients in all.
    pub peer_sent_bytes: Family<Labels, Counter>,
    pub peer_received_bytes: Family<Labels, Counter>,
    pub peer_sent_failures: Family<Labels, Counter>,
    pub peer_round_trip_seconds: HistogramFamily,
    pub client_grpc_sent_bytes: Counter,
    pub client_grpc_received_bytes: Counter,
    // gRPC, as go-grpc-prometheus labels it.
    pub grpc_started: Family<Labels, Counter>,
    pub grpc_handled: Family<Labels, Counter>,
    pub grpc_msg_received: Family<Labels, Counter>,
    pub grpc_msg_sent: Family<Labels, Counter>,
    /// Only with `--metrics=extensive`, as in etcd.
    pub grpc_handling_seconds: Option<HistogramFamily>,
    // Probes.
    pub health_checks: Family<Labels, Counter>,
    // synod's own.
    pub counter_adds: Counter,
    pub counter_entries: Counter,
    pub counter_sessions: Gauge,
    pub lock_waiters: Family<Labels, Gauge>,
    /// Each peer's series, looked up by member id without building labels: peer traffic is
    /// counted on every replication message.
    peers: std::sync::RwLock<std::collections::HashMap<u64, std::sync::Arc<PeerSeries>>>,
}

/// One peer's network series.
pub(crate) struct PeerSeries {
    pub(crate) sent: Counter,
    pub(crate) received: Counter,
    failures: Counter,
    round_trip: Histogram,
}

/// etcd's buckets for disk latencies: 1 ms doubling to ~8 s.
fn disk_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// etcd's buckets for peer round trips: 0.1 ms doubling to ~3.3 s.
fn round_trip_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// client_golang's default buckets, which go-grpc-prometheus uses for handling times.
fn handling_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(MetricsLevel::Basic)
    }
}

impl Metrics {
    pub fn new(level: MetricsLevel) -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            is_learner: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_committed: Gauge::default(),
            proposals_applied: Gauge::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            log_first_index: Gauge::default(),
            snapshots_installed: Gauge::default(),
            wal_fsync_seconds: disk_buckets(),
            backend_commit_seconds: disk_buckets(),
            log_batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            db_size_bytes: Gauge::default(),
            db_size_in_use_bytes: Gauge::default(),
            debugging_db_size_bytes: Gauge::default(),
            quota_backend_bytes: Gauge::default(),
            current_revision: Gauge::default(),
            peer_sent_bytes: Family::default(),
            peer_received_bytes: Family::default(),
            peer_sent_failures: Family::default(),
            peer_round_trip_seconds: Family::new_with_constructor(round_trip_buckets),
            client_grpc_sent_bytes: Counter::default(),
            client_grpc_received_bytes: Counter::default(),
            grpc_started: Family::default(),
            grpc_handled: Family::default(),
            grpc_msg_received: Family::default(),
            grpc_msg_sent: Family::default(),
            grpc_handling_seconds: (level == MetricsLevel::Extensive)
                .then(|| Family::new_with_constructor(handling_buckets as fn() -> Histogram)),
            health_checks: Family::default(),
            counter_adds: Counter::default(),
            counter_entries: Counter::default(),
            counter_sessions: Gauge::default(),
            lock_waiters: Family::default(),
            peers: Default::default(),
        };
        {
            let mut r = metrics.registry.lock().expect("fresh mutex");
            let m = &metrics;
            r.register(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not",
                m.has_leader.clone(),
            );
            r.register(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise",
                m.is_leader.clone(),
            );
            r.register(
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise",
                m.is_learner.clone(),
            );
            r.register(
                "etcd_server_leader_changes_seen",
                "The number of leader changes seen",
                m.leader_changes.clone(),
            );
            r.register(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed",
                m.proposals_committed.clone(),
            );
            r.register(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied",
                m.proposals_applied.clone(),
            );
            r.register(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit",
                m.proposals_pending.clone(),
            );
            r.register(
                "etcd_server_proposals_failed",
                "The total number of failed proposals seen",
                m.proposals_failed.clone(),
            );
            r.register(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL",
                m.wal_fsync_seconds.clone(),
            );
            r.register(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend",
                m.backend_commit_seconds.clone(),
            );
            r.register(
                "synod_log_batch_entries",
                "Entries written per durable log append (group commit size)",
                m.log_batch_entries.clone(),
            );
            r.register(
                "synod_log_first_index",
                "The first index the log still holds; it moves when the log is purged",
                m.log_first_index.clone(),
            );
            r.register(
                "synod_snapshots_installed",
                "Snapshots received from a leader and imported since the member started",
                m.snapshots_installed.clone(),
            );
            r.register(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes",
                m.db_size_bytes.clone(),
            );
            r.register(
                "etcd_debugging_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes (etcd 3.4's name)",
                m.debugging_db_size_bytes.clone(),
            );
            r.register(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes",
                m.db_size_in_use_bytes.clone(),
            );
            r.register(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes",
                m.quota_backend_bytes.clone(),
            );
            r.register(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store",
                m.current_revision.clone(),
            );
            r.register(
                "etcd_network_peer_sent_bytes",
                "The total number of bytes sent to peers",
                m.peer_sent_bytes.clone(),
            );
            r.register(
                "etcd_network_peer_received_bytes",
                "The total number of bytes received from peers",
                m.peer_received_bytes.clone(),
            );
            r.register(
                "etcd_network_peer_sent_failures",
                "The total number of send failures from peers",
                m.peer_sent_failures.clone(),
            );
            r.register(
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers",
                m.peer_round_trip_seconds.clone(),
            );
            r.register(
                "etcd_network_client_grpc_sent_bytes",
                "The total number of bytes sent to grpc clients",
                m.client_grpc_sent_bytes.clone(),
            );
            r.register(
                "etcd_network_client_grpc_received_bytes",
                "The total number of bytes received from grpc clients",
                m.client_grpc_received_bytes.clone(),
            );
            r.register(
                "grpc_server_started",
                "Total number of RPCs started on the server",
                m.grpc_started.clone(),
            );
            r.register(
                "grpc_server_handled",
                "Total number of RPCs completed on the server, regardless of success or failure",
                m.grpc_handled.clone(),
            );
            r.register(
                "grpc_server_msg_received",
                "Total number of RPC stream messages received on the server",
                m.grpc_msg_received.clone(),
            );
            r.register(
                "grpc_server_msg_sent",
                "Total number of gRPC stream messages sent by the server",
                m.grpc_msg_sent.clone(),
            );
            if let Some(handling) = &m.grpc_handling_seconds {
                r.register(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
                    handling.clone(),
                );
            }
            r.register(
                "etcd_server_healthchecks",
                "The total number of each kind of healthcheck",
                m.health_checks.clone(),
            );
            r.register(
                "synod_native_adds",
                "Native counter adds this member wrote to the log as the leader, combined or not (a retried add counts again)",
                m.counter_adds.clone(),
            );
            r.register(
                "synod_native_add_entries",
                "Log entries that carried native counter adds (synod_native_adds_total over this is the combining factor)",
                m.counter_entries.clone(),
            );
            r.register(
                "synod_native_add_sessions",
                "Counter sessions whose results this member's state holds",
                m.counter_sessions.clone(),
            );
            r.register(
                "synod_lock_waiters",
                "Callers waiting in this member's Lock and Campaign queues, by service",
                m.lock_waiters.clone(),
            );
            r.register_collector(Box::new(Process));
        }
        metrics
    }

    pub fn observe_seconds(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    /// A peer's label, etcd's member id in hex.
    pub fn peer(direction: &'static str, id: u64) -> Labels {
        vec![(direction, format!("{id:x}"))]
    }

    /// Member `id`'s series, made the first time it is seen.
    pub(crate) fn peer_series(&self, id: u64) -> std::sync::Arc<PeerSeries> {
        if let Some(series) = self.peers.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return series.clone();
        }
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        peers
            .entry(id)
            .or_insert_with(|| {
                std::sync::Arc::new(PeerSeries {
                    sent: self.peer_sent_bytes.get_or_create(&Metrics::peer("To", id)).clone(),
                    received: self.peer_received_bytes.get_or_create(&Metrics::peer("From", id)).clone(),
                    failures: self.peer_sent_failures.get_or_create(&Metrics::peer("To", id)).clone(),
                    round_trip: self.peer_round_trip_seconds.get_or_create(&Metrics::peer("To", id)).clone(),
                })
            })
            .clone()
    }

    /// The metrics in Prometheus' text format (version 0.0.4), which etcd serves and
    /// `promtool check metrics` reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        openmetrics_to_text(&out)
    }
}

/// One thing counted in a gauge while it exists: a pending proposal, a waiting caller.
pub struct InFlight(Gauge);

impl InFlight {
    pub fn new(gauge: Gauge) -> InFlight {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the consensus layer reports, in etcd's series.
impl synod_consensus::Observer for Metrics {
    fn log_flushed(&self, elapsed: Duration, entries: usize) {
        Metrics::observe_seconds(&self.wal_fsync_seconds, elapsed);
        if entries > 0 {
            self.log_batch_entries.observe(entries as f64);
        }
    }

    fn state_committed(&self, elapsed: Duration) {
        Metrics::observe_seconds(&self.backend_commit_seconds, elapsed);
    }

    fn leader_changed(&self, _leader: u64) {
        self.leader_changes.inc();
    }

    fn peer_sent(&self, to: u64, bytes: u64) {
        self.peer_series(to).sent.inc_by(bytes);
    }

    fn peer_received(&self, from: u64, bytes: u64) {
        self.peer_series(from).received.inc_by(bytes);
    }

    fn peer_send_failed(&self, to: u64) {
        self.peer_series(to).failures.inc();
    }

    fn peer_round_trip(&self, to: u64, elapsed: Duration) {
        self.peer_series(to).round_trip.observe(elapsed.as_secs_f64());
    }

    fn counter_entry(&self, adds: usize) {
        self.counter_entries.inc();
        self.counter_adds.inc_by(adds as u64);
    }
}

/// client_golang's process collector, read from /proc at each scrape.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = metrics_process::collector::collect();
        if let Some(cpu) = p.cpu_seconds_total {
            let counter = ConstCounter::new(cpu);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            counter.encode(metric)?;
        }
        let gauges = [
            ("process_open_fds", "Number of open file descriptors", p.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", p.max_fds),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", p.virtual_memory_bytes),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes",
                p.virtual_memory_max_bytes,
            ),
            ("process_resident_memory_bytes", "Resident memory size in bytes", p.resident_memory_bytes),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
            ("process_threads", "Number of OS threads in the process", p.threads),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(value as i64).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// prometheus-client writes OpenMetrics: a counter's HELP and TYPE name the family without
/// `_total`, and `# EOF` ends the page. Prometheus' text format names them as the samples,
/// with `_total`, and has no end marker.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "].into_iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{tag}{name}_total {tail}"))
        });
        match descriptor {
            Some(renamed) => text.push_str(renamed.trim_end()),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters are described by their sample names, and the OpenMetrics end marker goes.
    #[test]
    fn the_page_is_prometheus_text() {
        let metrics = Metrics::default();
        metrics.leader_changes.inc();
        let page = metrics.render();
        assert!(
            page.contains(
                "# HELP etcd_server_leader_changes_seen_total The number of leader changes seen.\n"
            ),
            "{page}"
        );
        assert!(page.contains(
            "# TYPE etcd_server_leader_changes_seen_total counter\netcd_server_leader_changes_seen_total 1\n"
        ));
        assert!(page.contains("# TYPE etcd_server_has_leader gauge\n"));
        assert!(page.contains("# TYPE process_resident_memory_bytes gauge\n"), "{page}");
        assert!(!page.contains("# EOF") && !page.contains(".."));
    }
}
