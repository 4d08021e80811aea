//! The prepare step, between HostConnected and the bootstrap, when spec.preparation is set:
//! mode None checks the host's kubelet and kubeadm versions; Packages and Artifacts run a
//! host-side job (src/bootstrap/prepare) that installs containerd and Kubernetes at the owner
//! Machine's spec.version. Its condition is HostPrepared.

use super::{MachinePhase, Step};
use crate::api::v1alpha1::{ConditionStatus, HostFacts, SSHHost, SSHMachine};
use crate::bootstrap::prepare::{PrepareJob, Work, failure, judge_versions, plan};
use crate::controllers::conditions;
use crate::controllers::{Context, ReconcileError};
use crate::redact::Redactor;
use crate::ssh::Session;
use crate::ssh::job::{JOBS_DIR, JobSpec, Progress, stable_id};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use serde_json::Value;
use std::time::Duration;

pub const HOST_PREPARED: &str = "HostPrepared";

/// Whether the bootstrap may run.
pub(super) enum Prepared {
    /// Prepared, verified, or nothing asked for.
    Yes,
    /// Not (yet): the condition is saved; return this action.
    NotYet(Action),
}

/// Prepares (or verifies) the host. SSH failures come back as `ReconcileError::Ssh`, for the
/// caller to report as a connection problem.
pub(super) async fn reconcile(
    ctx: &Context,
    step: &mut Step<'_>,
    machine: &SSHMachine,
    owner: &DynamicObject,
    host: &SSHHost,
    session: &Session,
) -> Result<Prepared, ReconcileError> {
    let Some(preparation) = &machine.spec.preparation else { return Ok(Prepared::Yes) };
    // Done once per machine; the bootstrap that follows polls without repeating it.
    if conditions::get(&step.status.conditions, HOST_PREPARED).is_some_and(|c| c.status == ConditionStatus::True) {
        return Ok(Prepared::Yes);
    }
    let host_name = host.metadata.name.clone().unwrap_or_default();
    let version = owner.data.pointer("/spec/version").and_then(Value::as_str);
    let facts = match host.status.as_ref().and_then(|s| s.facts.clone()).filter(|f| !f.os.is_empty() && !f.arch.is_empty()) {
        Some(facts) => facts,
        None => session.probe().await?,
    };
    let work = match plan(preparation, version, &host_name, &facts) {
        Ok(work) => work,
        // A person must change the spec, the Machine or the host; the watch on this object (or
        // the slow requeue, for the host) brings us back.
        Err(err) => return not_prepared(ctx, step, machine, err.reason(), &err.to_string(), Duration::from_secs(120)).await,
    };
    let version = version.unwrap_or_default();
    match work {
        Work::Verify { script } => verify(ctx, step, machine, session, &script, &host_name, version).await,
        Work::Job(job) => run_job(ctx, step, machine, session, &job, &host_name, version, &facts).await,
    }
}

/// Mode None: read-only, so it runs again on every try until the host matches.
async fn verify(
    ctx: &Context,
    step: &mut Step<'_>,
    machine: &SSHMachine,
    session: &Session,
    script: &str,
    host_name: &str,
    version: &str,
) -> Result<Prepared, ReconcileError> {
    let report = session.run_checked(script, None, Duration::from_secs(60)).await?;
    match judge_versions(&report.stdout_text(), host_name, version) {
        Ok(()) => {
            let message = format!("kubelet and kubeadm on host {host_name} are at {version} (mode None: nothing installed)");
            step.set(HOST_PREPARED, ConditionStatus::True, "Verified", &message);
            Ok(Prepared::Yes)
        }
        Err(err) => not_prepared(ctx, step, machine, err.reason(), &err.to_string(), Duration::from_secs(60)).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_job(
    ctx: &Context,
    step: &mut Step<'_>,
    machine: &SSHMachine,
    session: &Session,
    job: &PrepareJob,
    host_name: &str,
    version: &str,
    facts: &HostFacts,
) -> Result<Prepared, ReconcileError> {
    let namespace = machine.metadata.namespace.clone().unwrap_or_default();
    let name = machine.metadata.name.clone().unwrap_or_default();
    let mut parts = vec![namespace.as_str(), name.as_str(), host_name];
    parts.extend(job.identity.iter().map(String::as_str));
    let id = stable_id("prepare", &parts);
    let mode = machine.spec.preparation.as_ref().map(|p| format!("{:?}", p.mode)).unwrap_or_default();
    let progress = session.advance_job(&JobSpec { id: &id, script: job.script.as_bytes() }, &[], 40).await?;
    let redactor = Redactor::new(job.secrets.clone());
    match progress {
        Progress::Running => {
            let message = format!(
                "job {id} installs containerd and Kubernetes {version} ({}/{}) on host {host_name} (mode {mode}); log: {JOBS_DIR}/{id}/log",
                facts.os, facts.arch
            );
            step.wait(HOST_PREPARED, "Preparing", &redactor.redact(&message), MachinePhase::Provisioning);
            step.save(ctx).await?;
            Ok(Prepared::NotYet(Action::requeue(Duration::from_secs(5))))
        }
        Progress::Succeeded => {
            let message = format!("host {host_name} has containerd and Kubernetes {version} (mode {mode}, job {id})");
            step.set(HOST_PREPARED, ConditionStatus::True, "Prepared", &message);
            ctx.event(machine, false, "HostPrepared", &message).await;
            Ok(Prepared::Yes)
        }
        Progress::Failed { reason, log_tail } => {
            let (reason, what) = failure(&log_tail).unwrap_or_else(|| ("PreparationFailed".to_string(), reason));
            let message = redactor.redact(&format!("{what} (host {host_name}); last lines of {JOBS_DIR}/{id}/log:\n{log_tail}"));
            // Like a failed bootstrap, never run again by itself: the machine is replaced.
            not_prepared(ctx, step, machine, &reason, &message, Duration::from_secs(300)).await
        }
    }
}

async fn not_prepared(
    ctx: &Context,
    step: &mut Step<'_>,
    machine: &SSHMachine,
    reason: &str,
    message: &str,
    retry: Duration,
) -> Result<Prepared, ReconcileError> {
    let changed = conditions::get(&step.status.conditions, HOST_PREPARED).is_none_or(|c| c.reason != reason || c.message != message);
    step.wait(HOST_PREPARED, reason, message, MachinePhase::Failed);
    step.save(ctx).await?;
    if changed {
        ctx.event(machine, true, reason, message).await;
    }
    Ok(Prepared::NotYet(Action::requeue(retry)))
}
