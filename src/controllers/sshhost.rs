//! SSHHost: probe free hosts over SSH, keep their facts, pin a key seen on first use, and own
//! the host's status: its phase is derived here (from the quarantine mark, the claim and the
//! consuming SSHMachine's phase), never written by another controller.

use super::conditions;
use super::{Context, QUARANTINE_ANNOTATION, ReconcileError, target_for};
use crate::api::v1alpha1::conditions::{reasons, types};
use crate::api::v1alpha1::{ConditionStatus, HostPhase, MachinePhase, SSHHost, SSHHostStatus, SSHMachine};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub async fn reconcile(host: Arc<SSHHost>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    tracing::debug!(kind = "SSHHost", name = host.metadata.name.as_deref().unwrap_or_default(), "reconcile");
    if host.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Labelling is for a later move; it must not hold up the host's own work.
    if let Err(err) = super::credentials::ensure_move_label(&ctx, &host).await {
        tracing::warn!(error = %err, host = host.metadata.name.as_deref().unwrap_or_default(), "could not label the host's Secrets for clusterctl move");
    }
    let mut status = host.status.clone().unwrap_or_default();
    let action = if let Some(reason) = host.metadata.annotations.as_ref().and_then(|a| a.get(QUARANTINE_ANNOTATION)) {
        report_quarantined(&host, reason, &mut status)
    } else if let Some(consumer) = &host.spec.consumer_ref {
        let machine = consumer_machine(&ctx, &host, &consumer.name).await?;
        report_claimed(&host, &consumer.name, machine.as_deref(), &mut status)
    } else if let Some(left) = next_probe_in(&host, ctx.timing.probe_interval, jiff::Timestamp::now()) {
        // Probed recently, spec unchanged since: wait for the next probe. (A probe's own status
        // write — its lastProbeTime — wakes this controller again; without this every free host
        // was probed back to back instead of every probe interval.)
        return Ok(Action::requeue(left));
    } else {
        ensure_probed(&ctx, &host, &mut status).await?
    };
    write_status(&ctx, &host, &status).await?;
    Ok(action)
}

/// A quarantined host stays out of the pool, claim and all, until a person clears the mark.
fn report_quarantined(host: &SSHHost, reason: &str, status: &mut SSHHostStatus) -> Action {
    status.phase = Some(HostPhase::Quarantined);
    status.quarantine_reason = Some(reason.to_string());
    let message = format!("{reason}; inspect the host, then remove the annotation {QUARANTINE_ANNOTATION} and spec.consumerRef");
    conditions::set(&mut status.conditions, types::READY, ConditionStatus::False, reasons::QUARANTINED, &message, host.metadata.generation);
    Action::await_change()
}

/// The machine that claimed the host reports its progress; the host's phase follows it.
fn report_claimed(host: &SSHHost, consumer: &str, machine: Option<&SSHMachine>, status: &mut SSHHostStatus) -> Action {
    status.phase = Some(claimed_phase(machine));
    status.quarantine_reason = None;
    let message = format!("claimed by SSHMachine {consumer}");
    conditions::set(&mut status.conditions, types::READY, ConditionStatus::False, reasons::IN_USE, &message, host.metadata.generation);
    Action::await_change()
}

/// Probes a free host: Available with its facts, or Unreachable with the reason (a Warning
/// event when it stops answering).
async fn ensure_probed(ctx: &Context, host: &SSHHost, status: &mut SSHHostStatus) -> Result<Action, ReconcileError> {
    status.quarantine_reason = None;
    let Err(err) = probe(ctx, host, status).await else { return Ok(Action::requeue(ctx.timing.probe_interval)) };
    let was_reachable = host.status.as_ref().and_then(|s| s.phase) != Some(HostPhase::Unreachable);
    status.phase = Some(HostPhase::Unreachable);
    let (reason, message, generation) = (err.connection_reason(), err.to_string(), host.metadata.generation);
    conditions::set(&mut status.conditions, types::REACHABLE, ConditionStatus::False, reason, &message, generation);
    conditions::set(&mut status.conditions, types::READY, ConditionStatus::False, reason, &message, generation);
    if was_reachable {
        ctx.event(host, true, reason, &message).await;
    }
    Ok(Action::requeue(err.requeue_after()))
}

/// A claimed host's phase, from its consumer's.
pub fn claimed_phase(machine: Option<&SSHMachine>) -> HostPhase {
    let Some(machine) = machine else { return HostPhase::Claimed };
    if machine.metadata.deletion_timestamp.is_some() {
        return HostPhase::Releasing;
    }
    match machine.status.as_ref().and_then(|s| s.phase) {
        Some(MachinePhase::Provisioning | MachinePhase::Failed) => HostPhase::Provisioning,
        Some(MachinePhase::Provisioned) => HostPhase::Provisioned,
        Some(MachinePhase::Deleting) => HostPhase::Releasing,
        Some(MachinePhase::Pending | MachinePhase::WaitingForHost) | None => HostPhase::Claimed,
    }
}

/// The consuming SSHMachine: from the machine controller's watch cache, else the API server.
async fn consumer_machine(ctx: &Context, host: &SSHHost, name: &str) -> Result<Option<Arc<SSHMachine>>, ReconcileError> {
    let namespace = host.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(store) = ctx.machine_cache.get() {
        return Ok(store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)));
    }
    Ok(Api::<SSHMachine>::namespaced(ctx.client.clone(), namespace).get_opt(name).await?.map(Arc::new))
}

/// How long until an Available host, probed at its current generation, is due again.
pub fn next_probe_in(host: &SSHHost, interval: Duration, now: jiff::Timestamp) -> Option<Duration> {
    let status = host.status.as_ref()?;
    if status.phase != Some(HostPhase::Available) {
        return None;
    }
    if conditions::get(&status.conditions, types::READY)?.observed_generation != host.metadata.generation {
        return None;
    }
    let last: jiff::Timestamp = status.last_probe_time.as_deref()?.parse().ok()?;
    let age = now.duration_since(last).as_secs_f64();
    let left = interval.as_secs_f64() - age;
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

async fn probe(ctx: &Context, host: &SSHHost, status: &mut SSHHostStatus) -> Result<(), ReconcileError> {
    let (target, key) = target_for(&ctx.client, host).await?;
    let session = ctx.pool.lease(&key, &target).await?;
    let facts = session.probe().await?;
    if session.trusted_on_first_use() {
        pin_host_key(ctx, host, &session.host_key_openssh()).await?;
        let note = format!("pinned host key {} seen on first use", session.host_key_fingerprint());
        ctx.event(host, false, reasons::HOST_KEY_PINNED, &note).await;
    }
    let generation = host.metadata.generation;
    status.phase = Some(HostPhase::Available);
    status.observed_host_key_fingerprint = Some(session.host_key_fingerprint());
    status.last_probe_time = Some(conditions::now());
    let summary = format!("{} {} {}, {} CPUs, kernel {}", facts.os, facts.os_version, facts.arch, facts.cpus, facts.kernel);
    status.facts = Some(facts);
    conditions::set(&mut status.conditions, types::REACHABLE, ConditionStatus::True, reasons::PROBED, &summary, generation);
    let (reason, message) = if host.spec.maintenance {
        (reasons::MAINTENANCE, "spec.maintenance is set: the host is not selected for new machines")
    } else {
        (reasons::AVAILABLE, "free to be claimed")
    };
    conditions::set(&mut status.conditions, types::READY, ConditionStatus::True, reason, message, generation);
    Ok(())
}

/// Records the key seen on first use as the pin, in spec (clusterctl move keeps spec).
async fn pin_host_key(ctx: &Context, host: &SSHHost, key: &str) -> Result<(), ReconcileError> {
    let api: Api<SSHHost> = Api::namespaced(ctx.client.clone(), host.metadata.namespace.as_deref().unwrap_or_default());
    // A merge patch guarded by resourceVersion: a concurrent edit (someone pinning by hand) wins.
    let patch = json!({
        "metadata": {"resourceVersion": host.metadata.resource_version},
        "spec": {"hostKey": {"publicKeys": [key]}}
    });
    api.patch(host.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn write_status(ctx: &Context, host: &SSHHost, status: &SSHHostStatus) -> Result<(), ReconcileError> {
    super::apply_status(ctx, host, host.status.as_ref(), status).await
}

/// Requeue policy for errors the reconcile did not handle itself.
pub fn error_policy(host: Arc<SSHHost>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = host.metadata.namespace.as_deref().unwrap_or_default(), name = host.metadata.name.as_deref().unwrap_or_default(), error = %err, "SSHHost reconcile failed");
    Action::requeue(err.requeue_after())
}

#[cfg(test)]
mod tests;
