//! What happens when: one controller per kind, sharing a Context (client, SSH session pool,
//! event recorder). Each reconcile is a small state machine whose steps set conditions.

pub mod caches;
pub mod capi;
pub mod conditions;
mod credentials;
pub mod error;
pub mod metrics;
pub mod sshcluster;
pub mod sshhost;
pub mod sshmachine;
pub mod timing;

pub use credentials::{cached_target_for, marked_secret_values, target_for};
pub use error::ReconcileError;
pub use timing::Timing;

use crate::ssh::{SessionPool, Timeouts};
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Field manager of everything capssh writes.
pub const FIELD_MANAGER: &str = "capssh";

/// Annotation that quarantines a host: kept out of the pool until a person removes it. An
/// annotation, not status, because `clusterctl move` does not carry status over.
pub const QUARANTINE_ANNOTATION: &str = "infrastructure.cluster.x-k8s.io/capssh-quarantine";

/// events.k8s.io/v1 refuses a note over 1 kB.
const MAX_EVENT_NOTE_BYTES: usize = 1000;

pub struct Context {
    pub client: kube::Client,
    pub pool: SessionPool,
    pub recorder: Recorder,
    pub timing: Timing,
    /// Consecutive failures to reach each object's host (exponential backoff of retries).
    pub unreachable: timing::Failures,
    /// The manager's `--watch-filter`: what it lists must be what it watches.
    pub watch_filter: Option<String>,
    pub metrics: metrics::Metrics,
    /// The SSHHost controller's watch cache of the hosts: an unplaced machine
    /// chooses from it instead of listing the pool (with N machines placed at once, N lists of
    /// N hosts cost O(N²)). A stale entry only loses the claim (resourceVersion), never wins it.
    pub host_cache: std::sync::OnceLock<kube::runtime::reflector::Store<crate::api::v1alpha1::SSHHost>>,
    /// The SSHMachine controller's watch cache: a claimed host's phase is derived from its
    /// consumer's, read here instead of from the API server.
    pub machine_cache: std::sync::OnceLock<kube::runtime::reflector::Store<crate::api::v1alpha1::SSHMachine>>,
    /// The other watch caches reconciles read from (Clusters, Machines, Secrets...).
    pub caches: caches::Caches,
    /// Credential Secrets (`<namespace>/<name>`) this process has seen carry clusterctl's move
    /// label: each is read (and labelled) once per process, not on every reconcile.
    pub move_labelled: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Hosts that did not answer when a machine was about to claim them: skipped until their
    /// next probe has had time to run.
    pub unanswered: crate::hosts::unanswered::UnansweredHosts,
    /// When this manager last probed each free host (see [`crate::hosts::probed`]).
    pub probe_times: crate::hosts::probed::ProbeTimes,
}

/// Writes `status` of `obj` with server-side apply under [`FIELD_MANAGER`] — the one way every
/// controller stores status — unless it equals what is stored (`current`).
pub async fn apply_status<K, S>(ctx: &Context, obj: &K, current: Option<&S>, status: &S) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let meta = obj.meta();
    let api: kube::Api<K> = kube::Api::namespaced(ctx.client.clone(), meta.namespace.as_deref().unwrap_or_default());
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(meta.name.as_deref().unwrap_or_default(), &params, &kube::api::Patch::Apply(&patch)).await {
        // Deleted since this reconcile read it (its finalizer went): there is no status to keep.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        result => result.map(drop).map_err(Into::into),
    }
}

impl Context {
    pub fn new(client: kube::Client, max_concurrent_hosts: usize, timing: Timing, metrics: metrics::Metrics) -> Self {
        let reporter = Reporter { controller: "capssh".into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            pool: SessionPool::new(max_concurrent_hosts, Timeouts::default()),
            client,
            timing,
            unreachable: timing::Failures::default(),
            watch_filter: None,
            metrics,
            host_cache: std::sync::OnceLock::new(),
            machine_cache: std::sync::OnceLock::new(),
            caches: caches::Caches::default(),
            move_labelled: std::sync::Mutex::new(std::collections::HashSet::new()),
            unanswered: crate::hosts::unanswered::UnansweredHosts::new(timing.probe_interval),
            probe_times: Default::default(),
        }
    }

    /// A list of the objects this manager watches: with a watch filter, only those labelled.
    pub fn list_params(&self) -> kube::api::ListParams {
        match &self.watch_filter {
            Some(value) => kube::api::ListParams::default().labels(&format!("cluster.x-k8s.io/watch-filter={value}")),
            None => kube::api::ListParams::default(),
        }
    }

    /// When to try again after failing to reach an object's host: transient failures back off
    /// exponentially per object, the rest as the error says.
    pub fn retry_after(&self, object: &str, err: &ReconcileError) -> std::time::Duration {
        match err {
            ReconcileError::Ssh(ssh) if ssh.is_transient() => self.unreachable.record(object),
            _ => err.requeue_after(),
        }
    }

    /// Publishes an Event on `obj`, and logs it (the log is where an operator reads the whole
    /// story after the Events expire); the note is redacted and bounded (the API server refuses a
    /// note over 1 kB). Failing to publish is only logged.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: &str) {
        let note = conditions::bounded(&crate::redact::redact(note), MAX_EVENT_NOTE_BYTES);
        let (kind, namespace, name) =
            (K::kind(&()), obj.meta().namespace.as_deref().unwrap_or_default(), obj.meta().name.as_deref().unwrap_or_default());
        if warning {
            tracing::warn!(%kind, namespace, name, reason, note, "event");
        } else {
            tracing::info!(%kind, namespace, name, reason, note, "event");
        }
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %err, reason, "could not publish an event");
        }
    }
}
