//! Prometheus metrics, served at `/metrics` in the text format.
//!
//! Where etcd has a metric for the same thing, synod uses etcd's name, so that existing
//! dashboards and alerts keep working; synod's own metrics start with `synod_`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    pub has_leader: Gauge,
    pub is_leader: Gauge,
    pub proposals_committed: Gauge,
    pub proposals_applied: Gauge,
    pub proposals_pending: Gauge,
    pub proposals_failed: Counter,
    pub wal_fsync_seconds: Histogram,
    pub backend_commit_seconds: Histogram,
    pub log_batch_entries: Histogram,
    pub log_first_index: Gauge,
    pub snapshots_installed: Gauge,
    pub db_size_bytes: Gauge,
    pub db_size_in_use_bytes: Gauge,
    pub quota_backend_bytes: Gauge,
    pub current_revision: Gauge,
    pub grpc_handled: Family<Labels, Counter>,
    pub health_checks: Family<Labels, Counter>,
}

/// Buckets from 1 ms doubling to ~8 s, etcd's buckets for disk latencies.
fn disk_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::default()),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            proposals_committed: Gauge::default(),
            proposals_applied: Gauge::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            wal_fsync_seconds: disk_buckets(),
            backend_commit_seconds: disk_buckets(),
            log_batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            log_first_index: Gauge::default(),
            snapshots_installed: Gauge::default(),
            db_size_bytes: Gauge::default(),
            db_size_in_use_bytes: Gauge::default(),
            quota_backend_bytes: Gauge::default(),
            current_revision: Gauge::default(),
            grpc_handled: Family::default(),
            health_checks: Family::default(),
        };
        {
            let mut r = metrics.registry.lock().expect("fresh mutex");
            r.register(
                "etcd_server_has_leader",
                "Whether a leader exists: 1 if so, 0 if not",
                metrics.has_leader.clone(),
            );
            r.register(
                "etcd_server_is_leader",
                "Whether this member is the leader",
                metrics.is_leader.clone(),
            );
            r.register(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed",
                metrics.proposals_committed.clone(),
            );
            r.register(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied",
                metrics.proposals_applied.clone(),
            );
            r.register(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit",
                metrics.proposals_pending.clone(),
            );
            r.register(
                "etcd_server_proposals_failed",
                "The total number of failed proposals seen",
                metrics.proposals_failed.clone(),
            );
            r.register(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of durable log appends (one fsync each)",
                metrics.wal_fsync_seconds.clone(),
            );
            r.register(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of durable state checkpoints",
                metrics.backend_commit_seconds.clone(),
            );
            r.register(
                "synod_log_batch_entries",
                "Entries written per durable log append (group commit size)",
                metrics.log_batch_entries.clone(),
            );
            r.register(
                "synod_log_first_index",
                "The first index the log still holds; it moves when the log is purged",
                metrics.log_first_index.clone(),
            );
            r.register(
                "synod_snapshots_installed",
                "Snapshots received from a leader and imported since the member started",
                metrics.snapshots_installed.clone(),
            );
            r.register(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the state file in bytes",
                metrics.db_size_bytes.clone(),
            );
            r.register(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Bytes of the state file in use",
                metrics.db_size_in_use_bytes.clone(),
            );
            r.register(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes",
                metrics.quota_backend_bytes.clone(),
            );
            r.register(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of the store",
                metrics.current_revision.clone(),
            );
            r.register(
                "grpc_server_handled",
                "Total number of RPCs completed on the server, regardless of success or failure",
                metrics.grpc_handled.clone(),
            );
            r.register(
                "etcd_server_healthchecks",
                "The total number of each kind of healthcheck",
                metrics.health_checks.clone(),
            );
        }
        metrics
    }

    /// Counts one completed RPC, as grpc-go's prometheus interceptor does.
    pub fn rpc_done(&self, service: &'static str, method: &'static str, code: tonic::Code) {
        self.grpc_handled
            .get_or_create(&vec![
                ("grpc_type", "unary".to_string()),
                ("grpc_service", service.to_string()),
                ("grpc_method", method.to_string()),
                ("grpc_code", format!("{code:?}")),
            ])
            .inc();
    }

    pub fn observe_seconds(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}
