//! What a reconcile can fail with, and the one place that turns a failure into a requeue.

use super::timing::errors;
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
    /// The object changed since the copy this reconcile started from (kube-runtime's finalizer
    /// helper guards its patch with a test of the finalizers it saw): the next reconcile sees
    /// the new version.
    #[error("{0} changed meanwhile; trying again with its new version")]
    Stale(String),
}

impl ReconcileError {
    /// The reconciled object itself was deleted meanwhile (its last finalizer went while a
    /// reconcile was queued): nothing is left to do and nothing failed.
    pub fn object_gone(&self, name: &str) -> bool {
        matches!(self, ReconcileError::Kube(kube::Error::Api(status))
            if status.code == 404 && status.details.as_ref().is_some_and(|d| d.name == name))
    }

    /// How long to wait before trying again; the controllers' error policies apply this.
    pub fn requeue_after(&self) -> Duration {
        match self {
            ReconcileError::Kube(_) => errors::API,
            ReconcileError::StillWorking { retry_after, .. } => *retry_after,
            ReconcileError::Stale(_) => errors::STALE,
            ReconcileError::Ssh(err) if err.is_transient() => errors::TRANSIENT_SSH,
            // Nothing wakes a reconcile when a credential Secret appears: look again soon.
            ReconcileError::MissingSecret { .. } => errors::MISSING_SECRET,
            ReconcileError::Ssh(_) | ReconcileError::Secret { .. } | ReconcileError::Invalid(_) => errors::NEEDS_A_PERSON,
        }
    }

    /// The condition reason for a failure to reach or log in to a host.
    pub fn connection_reason(&self) -> &'static str {
        use crate::api::v1alpha1::conditions::reasons;
        match self {
            ReconcileError::Ssh(err) => err.reason(),
            ReconcileError::Secret { .. } | ReconcileError::MissingSecret { .. } | ReconcileError::Invalid(_) => reasons::CREDENTIALS_UNAVAILABLE,
            ReconcileError::Kube(_) | ReconcileError::StillWorking { .. } | ReconcileError::Stale(_) => reasons::PROBE_FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_requeue() {
        let missing = ReconcileError::MissingSecret { namespace: "n".into(), name: "s".into() };
        assert_eq!(missing.requeue_after(), errors::MISSING_SECRET);
        let unreachable = ReconcileError::Ssh(SshError::Unreachable { target: "t".into(), reason: "r".into() });
        assert_eq!(unreachable.requeue_after(), errors::TRANSIENT_SSH);
        let refused = ReconcileError::Ssh(SshError::AuthFailed { target: "t".into(), user: "u".into(), method: "password" });
        assert_eq!(refused.requeue_after(), errors::NEEDS_A_PERSON);
        assert_eq!(refused.connection_reason(), "AuthenticationFailed");
        assert_eq!(missing.connection_reason(), "CredentialsUnavailable");
        let working = ReconcileError::StillWorking { what: "w".into(), retry_after: Duration::from_secs(3) };
        assert_eq!(working.requeue_after(), Duration::from_secs(3));
    }

    #[test]
    fn only_a_not_found_of_the_object_itself_means_it_is_gone() {
        let not_found = |name: &str| {
            let mut status = kube::core::Status::failure(&format!("sshmachines \"{name}\" not found"), "NotFound").with_code(404);
            status.details = Some(serde_json::from_value(serde_json::json!({"name": name, "kind": "sshmachines"})).unwrap());
            ReconcileError::Kube(kube::Error::Api(Box::new(status)))
        };
        assert!(not_found("m-1").object_gone("m-1"));
        assert!(!not_found("its-cluster").object_gone("m-1"), "a missing related object is a failure");
        assert!(!ReconcileError::Stale("m-1".into()).object_gone("m-1"));
    }
}
