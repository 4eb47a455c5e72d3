//! The member's metrics, under etcd's names where etcd has one (so its dashboards and alerts
//! work unchanged), plus Conclave's own for plugins. Events are counted where they happen;
//! levels (leader, sizes, raft indexes) are read when `/metrics` is scraped. One set per process,
//! as etcd's, since a process runs one member.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::mvcc::View;
use crate::node::Node;
use crate::service::{VERSION, cluster_version};

/// A gRPC method, as go-grpc-prometheus labels it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethod {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

/// A finished gRPC call.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcHandled {
    pub grpc_type: &'static str,
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

/// A plugin method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginMethod {
    pub plugin: String,
    pub method: String,
}

/// A finished plugin call: `ok`, `guest_error` (the plugin answered with an error of its own), or
/// the gRPC code of what the host stopped it for (`deadline_exceeded`, `resource_exhausted`…).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginOutcome {
    pub plugin: String,
    pub method: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerId {
    server_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerVersion {
    server_version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterVersion {
    cluster_version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub leader_changes: Counter,
    pub proposals_failed: Counter,
    pub proposals_pending: Gauge,
    pub slow_applies: Counter,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub puts: Counter,
    pub deletes: Counter,
    pub ranges: Counter,
    pub txns: Counter,
    pub watchers: Gauge,
    pub watch_streams: Gauge,
    pub leases_granted: Counter,
    pub leases_revoked: Counter,
    pub leases_renewed: Counter,
    pub grpc_started: Family<GrpcMethod, Counter>,
    pub grpc_handled: Family<GrpcHandled, Counter>,
    plugin_calls: Family<PluginOutcome, Counter>,
    plugin_call_seconds: Family<PluginMethod, Histogram>,
    plugin_fuel: Family<PluginMethod, Counter>,
    pub plugin_instances: Gauge,
    pub plugin_idle_instances: Gauge,
    has_leader: Gauge,
    is_leader: Gauge,
    is_learner: Gauge,
    proposals_committed: Gauge,
    proposals_applied: Gauge,
    db_total_size: Gauge,
    keys: Gauge,
    current_revision: Gauge,
    compact_revision: Gauge,
    quota_backend_bytes: Gauge,
    server_id: Family<ServerId, Gauge>,
    server_version: Family<ServerVersion, Gauge>,
    cluster_version: Family<ClusterVersion, Gauge>,
}

/// etcd's latency buckets for disk operations: 1 ms to 8 s, doubling.
fn disk_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// Plugin call durations: 100 µs to about 100 s, doubling.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        macro_rules! metric {
            ($name:literal, $help:literal, $metric:expr) => {{
                let metric = $metric;
                registry.register($name, $help, metric.clone());
                metric
            }};
        }
        Metrics {
            has_leader: metric!("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", Gauge::default()),
            is_leader: metric!("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", Gauge::default()),
            is_learner: metric!("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", Gauge::default()),
            leader_changes: metric!("etcd_server_leader_changes_seen", "The number of leader changes seen.", Counter::default()),
            proposals_committed: metric!(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
                Gauge::default()
            ),
            proposals_applied: metric!(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
                Gauge::default()
            ),
            proposals_pending: metric!(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
                Gauge::default()
            ),
            proposals_failed: metric!("etcd_server_proposals_failed", "The total number of failed proposals seen.", Counter::default()),
            slow_applies: metric!(
                "etcd_server_slow_apply",
                "The total number of slow apply requests (likely overloaded from slow disk).",
                Counter::default()
            ),
            quota_backend_bytes: metric!("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.", Gauge::default()),
            wal_fsync: metric!("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", disk_buckets()),
            backend_commit: metric!(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                disk_buckets()
            ),
            db_total_size: metric!(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
                Gauge::default()
            ),
            keys: metric!("etcd_debugging_mvcc_keys_total", "Total number of keys.", Gauge::default()),
            current_revision: metric!("etcd_debugging_mvcc_current_revision", "The current revision of store.", Gauge::default()),
            compact_revision: metric!("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.", Gauge::default()),
            puts: metric!("etcd_mvcc_put", "Total number of puts seen by this member.", Counter::default()),
            deletes: metric!("etcd_mvcc_delete", "Total number of deletes seen by this member.", Counter::default()),
            ranges: metric!("etcd_mvcc_range", "Total number of ranges seen by this member.", Counter::default()),
            txns: metric!("etcd_mvcc_txn", "Total number of txns seen by this member.", Counter::default()),
            watchers: metric!("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", Gauge::default()),
            watch_streams: metric!("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", Gauge::default()),
            leases_granted: metric!("etcd_debugging_lease_granted", "The total number of granted leases.", Counter::default()),
            leases_revoked: metric!("etcd_debugging_lease_revoked", "The total number of revoked leases.", Counter::default()),
            leases_renewed: metric!("etcd_debugging_lease_renewed", "The number of renewed leases seen by the leader.", Counter::default()),
            server_id: metric!(
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                Family::default()
            ),
            server_version: metric!(
                "etcd_server_version",
                "Which version is running. 1 for 'server_version' label with current version.",
                Family::default()
            ),
            cluster_version: metric!(
                "etcd_cluster_version",
                "Which version is running. 1 for 'cluster_version' label with current cluster version",
                Family::default()
            ),
            grpc_started: metric!("grpc_server_started", "Total number of RPCs started on the server.", Family::default()),
            grpc_handled: metric!(
                "grpc_server_handled",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                Family::default()
            ),
            plugin_calls: metric!("conclave_plugin_calls", "Plugin calls finished, by plugin, method and outcome.", Family::default()),
            plugin_call_seconds: metric!(
                "conclave_plugin_call_duration_seconds",
                "How long plugin calls took, by plugin and method.",
                Family::new_with_constructor(call_buckets as fn() -> Histogram)
            ),
            plugin_fuel: metric!(
                "conclave_plugin_fuel_consumed",
                "WebAssembly fuel (roughly, instructions) plugin calls consumed, by plugin and method.",
                Family::default()
            ),
            plugin_instances: metric!("conclave_plugin_instances", "Plugin instances running calls now.", Gauge::default()),
            plugin_idle_instances: metric!("conclave_plugin_idle_instances", "Plugin instances kept between calls now (manifests with reuse_instances).", Gauge::default()),
            registry,
        }
    }

    /// Count a finished plugin call.
    pub fn plugin_call(&self, plugin: &str, method: &str, outcome: &str, took: Duration) {
        let labels = PluginMethod { plugin: plugin.to_string(), method: method.to_string() };
        self.plugin_call_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        let outcome = PluginOutcome { plugin: labels.plugin, method: labels.method, outcome: outcome.to_string() };
        self.plugin_calls.get_or_create(&outcome).inc();
    }

    /// Count the fuel an instance used.
    pub fn plugin_fuel(&self, plugin: &str, method: &str, fuel: u64) {
        let labels = PluginMethod { plugin: plugin.to_string(), method: method.to_string() };
        self.plugin_fuel.get_or_create(&labels).inc_by(fuel);
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// The text exposition of every metric, with the levels read from `node` now.
pub async fn scrape(node: &Arc<Node>) -> String {
    let metrics = get();
    let leader = node.recognised_leader();
    metrics.has_leader.set(leader.is_some() as i64);
    metrics.is_leader.set((leader == Some(node.identity.member_id)) as i64);
    metrics.is_learner.set(node.is_learner() as i64);
    metrics.proposals_committed.set(node.committed.get() as i64);
    metrics.proposals_applied.set(node.applied_index() as i64);
    metrics.db_total_size.set(node.db_size() as i64);
    metrics.quota_backend_bytes.set(node.config.quota_bytes() as i64);
    let (keys, current, compacted) =
        node.store.read_async(|view| (view.index().live_keys(), view.current_rev(), view.compact_rev())).await;
    metrics.keys.set(keys as i64);
    metrics.current_revision.set(current);
    metrics.compact_revision.set(compacted.max(0));
    metrics.server_id.get_or_create(&ServerId { server_id: format!("{:x}", node.identity.member_id) }).set(1);
    metrics.server_version.get_or_create(&ServerVersion { server_version: VERSION }).set(1);
    metrics.cluster_version.get_or_create(&ClusterVersion { cluster_version: cluster_version() }).set(1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics.registry).expect("writing to a String");
    text
}

/// Count leader changes as this member sees them, until it stops.
pub async fn follow_leader(raft: crate::raft::Raft) {
    // Server metrics change only with the leader, state or membership.
    let mut changes = raft.server_metrics();
    let mut last = changes.borrow().current_leader;
    while changes.changed().await.is_ok() {
        let leader = changes.borrow().current_leader;
        if leader.is_some() && leader != last {
            get().leader_changes.inc();
        }
        last = leader;
    }
}
