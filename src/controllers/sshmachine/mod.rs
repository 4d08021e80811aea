//! SSHMachine: claim a host, prepare it (when asked), run the bootstrap data on it as a
//! host-side job, report; on delete, reset and verify the host, then release it (or quarantine
//! it). Pause is checked before anything else, delete included: `clusterctl move` deletes
//! source objects while paused.

mod delete;
mod normal;
mod prepare;

pub use delete::{CLEANUP_SCRIPT, cleanup_job_id};
pub use prepare::HOST_PREPARED;

use super::capi::{CLUSTER_NAME_LABEL, get_cluster, is_externally_managed, is_paused};
use super::conditions::{self, READY};
use super::{Context, ReconcileError};
use crate::api::v1alpha1::{ConditionStatus, HostPhase, MachinePhase, SSHHost, SSHMachine, SSHMachineStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use serde_json::json;
use std::sync::Arc;

pub const FINALIZER: &str = "sshmachine.infrastructure.cluster.x-k8s.io";
pub const PAUSED: &str = "Paused";
pub const HOST_CLAIMED: &str = "HostClaimed";
pub const HOST_CONNECTED: &str = "HostConnected";
pub const BOOTSTRAP_SUCCEEDED: &str = "BootstrapSucceeded";
pub const HOST_RELEASED: &str = "HostReleased";
/// clusterctl move marks each source object with it before deleting it (and stripping its
/// finalizers): that delete is a hand-over, never a reason to reset a host.
pub const DELETE_FOR_MOVE_ANNOTATION: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";

pub async fn reconcile(machine: Arc<SSHMachine>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    tracing::debug!(kind = "SSHMachine", name = machine.metadata.name.as_deref().unwrap_or_default(), "reconcile");
    let moving = machine.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DELETE_FOR_MOVE_ANNOTATION));
    if is_externally_managed(&machine.metadata) || moving {
        return Ok(Action::await_change());
    }
    let namespace = machine.metadata.namespace.clone().unwrap_or_default();
    let cluster_name = machine.metadata.labels.as_ref().and_then(|l| l.get(CLUSTER_NAME_LABEL)).cloned();
    let cluster = match &cluster_name {
        Some(name) => get_cluster(&ctx.client, &namespace, name).await?,
        None => None,
    };
    if is_paused(cluster.as_ref(), &machine.metadata) {
        let mut step = Step::new(&machine);
        step.set(PAUSED, ConditionStatus::True, "Paused", "the Cluster or this object is paused: no host is touched");
        step.save(&ctx).await?;
        return Ok(Action::await_change());
    }
    let api: Api<SSHMachine> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, machine, |event| async {
        match event {
            Event::Apply(machine) => normal::reconcile(machine, &ctx, cluster).await,
            Event::Cleanup(machine) => delete::reconcile(machine, &ctx).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err) | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        kube::runtime::finalizer::Error::AddFinalizer(err) | kube::runtime::finalizer::Error::RemoveFinalizer(err) => ReconcileError::Kube(err),
        other => ReconcileError::Invalid(other.to_string()),
    })
}

pub fn error_policy(_machine: Arc<SSHMachine>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    match err {
        ReconcileError::StillWorking { .. } => tracing::debug!(status = %err, "SSHMachine still working"),
        _ => tracing::warn!(error = %err, "SSHMachine reconcile failed"),
    }
    Action::requeue(err.requeue_after())
}

/// The status being built by one reconcile, written once at the end of a step.
struct Step<'a> {
    machine: &'a SSHMachine,
    status: SSHMachineStatus,
}

impl<'a> Step<'a> {
    fn new(machine: &'a SSHMachine) -> Self {
        Self { machine, status: machine.status.clone().unwrap_or_default() }
    }

    fn set(&mut self, kind: &str, status: ConditionStatus, reason: &str, message: &str) {
        conditions::set(&mut self.status.conditions, kind, status, reason, message, self.machine.metadata.generation);
    }

    /// Sets a step's condition and mirrors it into Ready (which Cluster API copies into the
    /// Machine's InfrastructureReady), with the phase people see.
    fn wait(&mut self, kind: &str, reason: &str, message: &str, phase: MachinePhase) {
        self.set(kind, ConditionStatus::False, reason, message);
        self.set(READY, ConditionStatus::False, reason, message);
        self.status.phase = Some(phase);
    }

    async fn save(&self, ctx: &Context) -> Result<(), ReconcileError> {
        super::apply_status(ctx, self.machine, self.machine.status.as_ref(), &self.status).await
    }
}

/// Records a claimed host's phase (a merge patch: the SSHHost controller owns the rest).
async fn set_host_phase(ctx: &Context, host: &SSHHost, phase: HostPhase) -> Result<(), ReconcileError> {
    if host.status.as_ref().and_then(|s| s.phase) == Some(phase) {
        return Ok(());
    }
    let api: Api<SSHHost> = Api::namespaced(ctx.client.clone(), host.metadata.namespace.as_deref().unwrap_or_default());
    api.patch_status(host.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": phase}})))
        .await?;
    Ok(())
}
