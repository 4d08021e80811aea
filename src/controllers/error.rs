//! What a reconcile can fail with, and the one place that turns a failure into a requeue.

use crate::ssh::SshError;
use std::time::Duration;

#[derive(thiserror::Error, Debug)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {namespace}/{name}: {problem}")]
    Secret { namespace: String, name: String, problem: String },
    /// Often only not yet: objects applied together, or moved by clusterctl, arrive in any order.
    #[error("Secret {namespace}/{name}: not found")]
    MissingSecret { namespace: String, name: String },
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{0}")]
    Invalid(String),
    /// Not a failure: work on the host is still under way. Returned from a finalizer's cleanup
    /// so that the finalizer stays until the host is released or quarantined.
    #[error("{what}")]
    StillWorking { what: String, retry_after: Duration },
}

impl ReconcileError {
    /// How long to wait before trying again; the controller's error policy applies this.
    pub fn requeue_after(&self) -> Duration {
        match self {
            // Conflicts and API hiccups: soon.
            ReconcileError::Kube(_) => Duration::from_secs(2),
            ReconcileError::StillWorking { retry_after, .. } => *retry_after,
            ReconcileError::Ssh(err) if err.is_transient() => Duration::from_secs(15),
            // Secrets are not watched: look again soon.
            ReconcileError::MissingSecret { .. } => Duration::from_secs(10),
            // A person has to change something (a Secret, a pin, sudoers): check back slowly;
            // the watch on the object brings us back at once when they edit it.
            ReconcileError::Ssh(_) | ReconcileError::Secret { .. } | ReconcileError::Invalid(_) => Duration::from_secs(120),
        }
    }
}
