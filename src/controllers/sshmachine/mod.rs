//! SSHMachine: claim a host, prepare it (when asked), run the bootstrap data on it as a
//! host-side job, keep Ready current; on delete, reset and verify the host, then release it
//! (or quarantine it).
//!
//! One reconcile: fetch the Cluster → leave alone / pause → finalizer → the normal path
//! (`normal.rs`) or the delete path (`delete.rs`), each a list of named steps. A step sets its
//! condition in a [`report::Report`] and either goes on or ends the reconcile with an
//! [`report::Outcome`]; `Report::finish` is the one place that writes status, publishes events
//! and picks the requeue. The decisions are pure functions (`decisions.rs`); what is done to a
//! host is `hosts::work`, shared with the CLI.

mod claim;
mod decisions;
mod delete;
mod normal;
mod prepare;
mod report;

use super::capi::{CLUSTER_NAME_LABEL, get_cluster};
use super::{Context, ReconcileError};
use crate::api::v1alpha1::conditions::{reasons, types};
use crate::api::v1alpha1::{ConditionStatus, SSHMachine};
use decisions::Entry;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use report::{Outcome, Report};
use std::sync::Arc;

pub use crate::hosts::work::{provider_id, reset_job_id};

pub const FINALIZER: &str = "sshmachine.infrastructure.cluster.x-k8s.io";
/// clusterctl move marks each source object with it before deleting it (and stripping its
/// finalizers): that delete is a hand-over, never a reason to reset a host.
pub const DELETE_FOR_MOVE_ANNOTATION: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";

pub async fn reconcile(machine: Arc<SSHMachine>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    tracing::debug!(kind = "SSHMachine", name = machine.metadata.name.as_deref().unwrap_or_default(), "reconcile");
    let namespace = machine.metadata.namespace.clone().unwrap_or_default();
    let cluster = match machine.metadata.labels.as_ref().and_then(|l| l.get(CLUSTER_NAME_LABEL)) {
        // A delete seen while the Cluster is paused (clusterctl move) must never reset a host:
        // that decision is made on the API server's copy, not on a cache that may lag the pause.
        Some(name) if machine.metadata.deletion_timestamp.is_some() => get_cluster(&ctx.client, &namespace, name).await?.map(Arc::new),
        Some(name) => ctx.caches.cluster(&ctx.client, &namespace, name).await?,
        None => None,
    };
    match decisions::entry(&machine.metadata, cluster.as_deref()) {
        Entry::LeaveAlone => return Ok(Action::await_change()),
        Entry::Paused => {
            let mut report = Report::new(&machine);
            report.set(types::PAUSED, ConditionStatus::True, reasons::PAUSED, "the Cluster or this object is paused: no host is touched");
            return report.finish(&ctx, Outcome::AwaitChange).await;
        }
        Entry::Proceed => {}
    }
    let api: Api<SSHMachine> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = machine.metadata.name.clone().unwrap_or_default();
    finalizer(&api, FINALIZER, machine, |event| async {
        match event {
            Event::Apply(machine) => normal::reconcile_normal(&machine, &ctx, cluster).await,
            Event::Cleanup(machine) => delete::reconcile_delete(&machine, &ctx).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err) | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        // The helper's JSON patch tests the finalizers of the (cached) copy it was given: a copy
        // older than the object fails that test with 422 Invalid, which is staleness, not an error.
        kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status))
        | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
            if status.code == 422 =>
        {
            ReconcileError::Stale(format!("SSHMachine {namespace}/{name}"))
        }
        kube::runtime::finalizer::Error::AddFinalizer(err) | kube::runtime::finalizer::Error::RemoveFinalizer(err) => ReconcileError::Kube(err),
        other => ReconcileError::Invalid(other.to_string()),
    })
}

pub fn error_policy(machine: Arc<SSHMachine>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    let name = machine.metadata.name.as_deref().unwrap_or_default();
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    match err {
        ReconcileError::StillWorking { .. } | ReconcileError::Stale(_) => tracing::debug!(namespace, name, status = %err, "SSHMachine still working"),
        _ if err.object_gone(name) => {
            tracing::debug!(namespace, name, "SSHMachine deleted meanwhile");
            return Action::await_change();
        }
        _ => tracing::warn!(namespace, name, error = %err, "SSHMachine reconcile failed"),
    }
    Action::requeue(err.requeue_after())
}
