//! What the manager exposes on /metrics about its own work.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::{Duration, Instant};

type Labels = Vec<(String, String)>;
/// Upper bounds of the outside-SSH histogram, in seconds.
const OUTSIDE_SSH_BUCKETS: [f64; 20] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    reconciles: Family<Labels, Counter>,
    reconcile_seconds: HistogramFamily,
    outside_ssh_seconds: HistogramFamily,
    hosts: Family<Labels, Gauge>,
    provisioning_seconds: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            // 1 ms .. ~33 s: a reconcile polls a job, it never waits for one.
            reconcile_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16))),
            // Fine around the 50 ms a reconcile's own work should stay under.
            outside_ssh_seconds: Family::new_with_constructor(|| Histogram::new(OUTSIDE_SSH_BUCKETS.iter().copied())),
            hosts: Family::default(),
            // 1 s .. ~9 h: from SSHMachine creation to bootstrap success.
            provisioning_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
        };
        registry.register("reconciles", "Reconciles by kind and result (ok or error)", metrics.reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconcile, by kind", metrics.reconcile_seconds.clone());
        registry.register(
            "reconcile_outside_ssh_duration_seconds",
            "Time spent in one reconcile outside SSH (connecting, waiting for a host slot, commands), by kind",
            metrics.outside_ssh_seconds.clone(),
        );
        registry.register("hosts", "SSHHosts by phase", metrics.hosts.clone());
        registry.register(
            "provisioning_duration_seconds",
            "Time from an SSHMachine's creation to its bootstrap succeeding",
            metrics.provisioning_seconds.clone(),
        );
        metrics
    }

    /// One reconcile of `kind` that began at `started` and waited `on_hosts` of it on SSH.
    pub fn observe_reconcile(&self, kind: &str, started: Instant, on_hosts: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.get_or_create(&vec![("kind".into(), kind.into()), ("result".into(), result.into())]).inc();
        let elapsed = started.elapsed();
        let labels = vec![("kind".into(), kind.into())];
        self.reconcile_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.outside_ssh_seconds.get_or_create(&labels).observe(elapsed.saturating_sub(on_hosts).as_secs_f64());
    }

    /// Sets the host gauges from a count per phase (every phase named, zeros included).
    pub fn set_hosts(&self, counts: &[(&str, i64)]) {
        for (phase, count) in counts {
            self.hosts.get_or_create(&vec![("phase".into(), phase.to_string())]).set(*count);
        }
    }

    pub fn observe_provisioning(&self, seconds: f64) {
        self.provisioning_seconds.observe(seconds);
    }
}
