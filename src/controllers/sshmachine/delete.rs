//! The delete path: cleanup job → verify → release. A host that cannot be reached or verified
//! is retried, then quarantined (kept out of the pool, with the reason) — never released dirty —
//! and the Machine's deletion still completes.

use super::{HOST_RELEASED, Step, set_host_phase};
use crate::api::v1alpha1::{HostPhase, MachinePhase, SSHHost, SSHMachine};
use crate::controllers::{Context, QUARANTINE_ANNOTATION, ReconcileError, target_for};
use crate::hosts::claim::release;
use crate::ssh::job::{JobSpec, Progress, stable_id};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The reset run on a host when its machine is deleted.
pub const CLEANUP_SCRIPT: &str = include_str!("cleanup.sh");

/// What must be true of a released host; prints what is not.
const VERIFY: &str = r#"problems=""
pgrep -x kubelet >/dev/null 2>&1 && problems="$problems kubelet-running"
for f in /etc/kubernetes/kubelet.conf /etc/kubernetes/admin.conf /run/cluster-api/bootstrap-success.complete; do
  [ -e "$f" ] && problems="$problems $f"
done
[ -n "$(ls -A /etc/kubernetes/manifests 2>/dev/null)" ] && problems="$problems /etc/kubernetes/manifests"
echo "$problems""#;

pub async fn reconcile(machine: Arc<SSHMachine>, ctx: &Context) -> Result<Action, ReconcileError> {
    let mut step = Step::new(&machine);
    let name = machine.metadata.name.clone().unwrap_or_default();
    let namespace = machine.metadata.namespace.clone().unwrap_or_default();
    let Some(host_ref) = &machine.spec.host_ref else { return Ok(Action::await_change()) };
    let hosts: Api<SSHHost> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(host) = hosts.get_opt(&host_ref.name).await? else { return Ok(Action::await_change()) };
    if host.spec.consumer_ref.as_ref().is_none_or(|c| c.name != name) {
        // Not ours (any more): never touch another machine's host.
        return Ok(Action::await_change());
    }
    step.status.phase = Some(MachinePhase::Deleting);
    set_host_phase(ctx, &host, HostPhase::Releasing).await?;

    match clean(ctx, &machine, &host).await {
        Ok(Cleaning::Running) => {
            let what = format!("resetting host {}", host_ref.name);
            step.wait(HOST_RELEASED, "Cleaning", &what, MachinePhase::Deleting);
            step.save(ctx).await?;
            Err(ReconcileError::StillWorking { what, retry_after: Duration::from_secs(3) })
        }
        Ok(Cleaning::Clean) => {
            release(&hosts, &host_ref.name, &name).await?;
            ctx.event(&*machine, false, "HostReleased", &format!("host {} reset and returned to the pool", host_ref.name)).await;
            Ok(Action::await_change())
        }
        Ok(Cleaning::Dirty(problem)) | Err(Problem(problem)) => {
            let deleting_for =
                machine.metadata.deletion_timestamp.as_ref().map(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs()).unwrap_or_default();
            if deleting_for < ctx.cleanup_give_up {
                step.wait(HOST_RELEASED, "CleanupRetrying", &problem, MachinePhase::Deleting);
                step.save(ctx).await?;
                return Err(ReconcileError::StillWorking { what: problem, retry_after: Duration::from_secs(15) });
            }
            quarantine(ctx, &host, &problem).await?;
            ctx.event(&*machine, true, "HostQuarantined", &format!("host {} quarantined: {problem}", host_ref.name)).await;
            ctx.event(&host, true, "Quarantined", &problem).await;
            Ok(Action::await_change())
        }
    }
}

enum Cleaning {
    Running,
    Clean,
    Dirty(String),
}

struct Problem(String);

impl From<ReconcileError> for Problem {
    fn from(err: ReconcileError) -> Self {
        Problem(err.to_string())
    }
}

async fn clean(ctx: &Context, machine: &SSHMachine, host: &SSHHost) -> Result<Cleaning, Problem> {
    let (target, key) = target_for(&ctx.client, host).await?;
    let session = match ctx.pool.lease(&key, &target).await {
        Ok(session) => session,
        Err(err) => {
            ctx.pool.forget(&key).await;
            return Err(Problem(format!("cannot reach the host to reset it: {err}")));
        }
    };
    let host_name = host.metadata.name.as_deref().unwrap_or_default();
    let id = cleanup_job_id(machine, host);
    let job = JobSpec { id: &id, script: CLEANUP_SCRIPT.as_bytes() };
    let progress = match session.advance_job(&job, &[], 20).await {
        Ok(progress) => progress,
        Err(err) => {
            ctx.pool.forget(&key).await;
            return Err(Problem(err.to_string()));
        }
    };
    if progress == Progress::Running {
        return Ok(Cleaning::Running);
    }
    // Whatever the job said, the host is judged by what is on it now.
    let output = match session.run_checked(VERIFY, None, Duration::from_secs(30)).await {
        Ok(output) => output,
        Err(err) => {
            ctx.pool.forget(&key).await;
            return Err(Problem(err.to_string()));
        }
    };
    let problems = output.stdout_text().trim().to_string();
    if problems.is_empty() {
        // A verified-clean host forgets the reset before it is released. While the claim
        // stands, the record tells a moved copy of this machine (normal.rs, `HostAlreadyReset`)
        // not to bootstrap the host again; once released, a new machine of the same name must
        // not be mistaken for it. A crash in between only repeats the (idempotent) reset.
        if let Err(err) = session.remove_job(&id).await {
            ctx.pool.forget(&key).await;
            return Err(Problem(err.to_string()));
        }
        Ok(Cleaning::Clean)
    } else {
        Ok(Cleaning::Dirty(format!("host {host_name} is not clean after the reset job {id}: {problems}")))
    }
}

/// The id of the reset of `host` for `machine`: stable across restarts and moves.
pub fn cleanup_job_id(machine: &SSHMachine, host: &SSHHost) -> String {
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    stable_id("cleanup", &[namespace, machine.metadata.name.as_deref().unwrap_or_default(), host.metadata.name.as_deref().unwrap_or_default()])
}

/// Keeps the claim and marks the host: it stays out of the pool until a person clears it.
async fn quarantine(ctx: &Context, host: &SSHHost, reason: &str) -> Result<(), ReconcileError> {
    let api: Api<SSHHost> = Api::namespaced(ctx.client.clone(), host.metadata.namespace.as_deref().unwrap_or_default());
    let patch = json!({"metadata": {"annotations": {QUARANTINE_ANNOTATION: crate::redact::redact(reason)}}});
    api.patch(host.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}
