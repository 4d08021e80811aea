//! The delete path, as named steps: the machine's host → reset (job, then verification) →
//! release. A host that cannot be reached or verified is retried, then quarantined (kept out
//! of the pool, with the reason) — never released dirty — and the Machine's deletion still
//! completes. The reset itself is `hosts::work::advance_reset`, shared with `capssh reset run`.

use super::decisions::{AfterReset, after_reset};
use super::report::{Outcome, Report, Step};
use crate::api::v1alpha1::conditions::{reasons, types};
use crate::api::v1alpha1::{MachinePhase, SSHHost, SSHMachine};
use crate::controllers::{Context, QUARANTINE_ANNOTATION, ReconcileError, target_for, timing};
use crate::hosts::claim::{MachineIdentity, claimed_without_record, release};
use crate::hosts::work::{Resetting, advance_reset, reset_job_id};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

pub(super) async fn reconcile_delete(machine: &SSHMachine, ctx: &Context) -> Result<Action, ReconcileError> {
    let mut report = Report::new(machine);
    let outcome = delete_steps(machine, ctx, &mut report).await.unwrap_or_else(|stop| stop);
    report.finish(ctx, outcome).await
}

async fn delete_steps(machine: &SSHMachine, ctx: &Context, report: &mut Report<'_>) -> Step<Outcome> {
    let host = ensure_own_host(ctx, machine).await?;
    let host_name = host.metadata.name.clone().unwrap_or_default();
    report.status.phase = Some(MachinePhase::Deleting);
    let step = reset_step(ctx, machine, &host).await;
    // The reset starts when the deletion reaches this machine, so its age is about this.
    let deleting_for =
        machine.metadata.deletion_timestamp.as_ref().map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs()).unwrap_or_default();
    match after_reset(step, deleting_for, ctx.timing.cleanup_give_up) {
        AfterReset::Wait => {
            let what = format!("resetting host {host_name}");
            report.wait(types::HOST_RELEASED, reasons::CLEANING, &what, MachinePhase::Deleting);
            Ok(Outcome::StillWorking { what, after: timing::job_poll(Some(deleting_for)) })
        }
        AfterReset::Retry(problem) => {
            report.wait(types::HOST_RELEASED, reasons::CLEANUP_RETRYING, &problem, MachinePhase::Deleting);
            Ok(Outcome::StillWorking { what: problem, after: timing::RESET_RETRY })
        }
        AfterReset::Release => {
            let hosts: Api<SSHHost> = Api::namespaced(ctx.client.clone(), host.metadata.namespace.as_deref().unwrap_or_default());
            release(&hosts, &host_name, &MachineIdentity::of(machine)).await?;
            report.note(reasons::HOST_RELEASED, format!("host {host_name} reset and returned to the pool"));
            Ok(Outcome::Gone)
        }
        AfterReset::Quarantine(problem) => {
            quarantine(ctx, &host, &problem).await?;
            report.warn(reasons::HOST_QUARANTINED, format!("host {host_name} quarantined: {problem}"));
            ctx.event(&host, true, reasons::QUARANTINED, &problem).await;
            Ok(Outcome::Gone)
        }
    }
}

/// The host this machine holds: the one spec.hostRef names, or, with none recorded, the one
/// whose claim carries this machine's UID (a claim written just before the manager stopped).
/// None, gone, or held by another machine: nothing to reset (never touch another machine's
/// host), and the finalizer goes.
async fn ensure_own_host(ctx: &Context, machine: &SSHMachine) -> Step<SSHHost> {
    let identity = MachineIdentity::of(machine);
    let hosts: Api<SSHHost> = Api::namespaced(ctx.client.clone(), machine.metadata.namespace.as_deref().unwrap_or_default());
    let host = match &machine.spec.host_ref {
        Some(host_ref) => hosts.get_opt(&host_ref.name).await?,
        // From the API server, not the watch cache: a claim written a moment ago must be seen.
        None => claimed_without_record(&hosts.list(&ctx.list_params()).await?.items, &identity).cloned(),
    };
    match host {
        Some(host) if identity.holds(&host) => Ok(host),
        _ => Err(Outcome::Gone),
    }
}

/// One step of the reset; a failure to get there is worded as the problem.
async fn reset_step(ctx: &Context, machine: &SSHMachine, host: &SSHHost) -> Result<Resetting, String> {
    let (target, key) = target_for(&ctx.client, host).await.map_err(|err| err.to_string())?;
    let session = ctx.pool.lease(&key, &target).await.map_err(|err| format!("cannot reach the host to reset it: {err}"))?;
    session.require_pinned().map_err(|err| err.to_string())?;
    let host_name = host.metadata.name.as_deref().unwrap_or_default();
    let id = reset_job_id(machine.metadata.namespace.as_deref().unwrap_or_default(), machine.metadata.name.as_deref().unwrap_or_default(), host_name);
    let step = advance_reset(&*session, &id, host_name).await.map_err(|err| err.to_string());
    if step == Ok(Resetting::Clean) {
        // Released: its connection is not needed until it is claimed again.
        ctx.pool.forget(&key.host).await;
    }
    step
}

/// Keeps the claim and marks the host: it stays out of the pool until a person clears it.
async fn quarantine(ctx: &Context, host: &SSHHost, reason: &str) -> Result<(), ReconcileError> {
    let api: Api<SSHHost> = Api::namespaced(ctx.client.clone(), host.metadata.namespace.as_deref().unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {QUARANTINE_ANNOTATION: crate::redact::redact(reason)}}});
    api.patch(host.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}
