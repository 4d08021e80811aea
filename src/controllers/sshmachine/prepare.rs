//! The prepare step, between HostConnected and the bootstrap, when spec.preparation is set:
//! mode None checks the host's kubelet and kubeadm versions; Packages and Artifacts run a
//! host-side job (bootstrap::prepare) that installs containerd and Kubernetes at the owner
//! Machine's spec.version. Its condition is HostPrepared. The work itself is
//! `hosts::work::advance_prepare`, shared with `capssh prepare run`.

use super::normal::connection_failed;
use super::report::{Outcome, Report, Step};
use crate::api::v1alpha1::conditions::{reasons, types};
use crate::api::v1alpha1::{CASourceKind, ConditionStatus, MachinePhase, PreparationMode, RegistryCARef, RegistryMirrors, SSHHost, SSHMachine};
use crate::bootstrap::prepare::{RegistryInputs, Work, plan};
use crate::controllers::{Context, ReconcileError, marked_secret_values, timing};
use crate::hosts::work::{PrepareContext, Preparing, advance_prepare, prepare_job_id};
use crate::ssh::HostOps;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::DynamicObject;
use serde_json::Value;

/// Prepares (or verifies) the host; goes on once it is ready for the bootstrap.
pub(super) async fn ensure_prepared(
    ctx: &Context,
    machine: &SSHMachine,
    owner: &DynamicObject,
    host: &SSHHost,
    session: &impl HostOps,
    report: &mut Report<'_>,
) -> Step<()> {
    let Some(preparation) = &machine.spec.preparation else { return Ok(()) };
    let host_name = host.metadata.name.clone().unwrap_or_default();
    let version = owner.data.pointer("/spec/version").and_then(Value::as_str);
    let facts = match host.status.as_ref().and_then(|s| s.facts.clone()).filter(|f| !f.os.is_empty() && !f.arch.is_empty()) {
        Some(facts) => facts,
        None => session.probe().await.map_err(|err| connection_failed(report, err.into()))?,
    };
    let registry = match (&preparation.registry, preparation.mode) {
        (Some(registry), PreparationMode::Artifacts | PreparationMode::Packages) => match registry_inputs(ctx, machine, registry).await {
            Ok(inputs) => Some(inputs),
            Err(ReconcileError::Kube(err)) => return Err(Outcome::Error(err.into())),
            // Missing, unlabelled or incomplete: a person fixes the Secret or ConfigMap, and the
            // machine goes on (nothing ran on the host).
            Err(err) => {
                report.fail(types::HOST_PREPARED, reasons::REGISTRY_SETTINGS_UNAVAILABLE, &err.to_string(), MachinePhase::Provisioning);
                return Err(Outcome::After(timing::errors::MISSING_SECRET));
            }
        },
        _ => None,
    };
    let work = match plan(preparation, registry.as_ref(), version, &host_name, &facts) {
        Ok(work) => work,
        // A person must change the spec, the Machine or the host; the watch on this object (or
        // the slow requeue, for the host) brings us back.
        Err(err) => return Err(not_prepared(report, err.reason(), &err.to_string(), timing::REFUSED_PREPARATION_RECHECK)),
    };
    let id = match &work {
        Work::Job(job) => Some(prepare_job_id(
            machine.metadata.namespace.as_deref().unwrap_or_default(),
            machine.metadata.name.as_deref().unwrap_or_default(),
            &host_name,
            &job.identity,
        )),
        Work::Verify { .. } => None,
    };
    let mode = format!("{:?}", preparation.mode);
    let about = PrepareContext { host: &host_name, version: version.unwrap_or_default(), mode: &mode, os: &facts.os, arch: &facts.arch };
    match advance_prepare(session, &work, id.as_deref(), &about).await.map_err(|err| connection_failed(report, err.into()))? {
        Preparing::Done { reason, message } => {
            report.set(types::HOST_PREPARED, ConditionStatus::True, reason, &message);
            if id.is_some() {
                report.note(reasons::HOST_PREPARED_EVENT, message);
            }
            Ok(())
        }
        Preparing::Running { message } => {
            report.wait(types::HOST_PREPARED, reasons::PREPARING, &message, MachinePhase::Provisioning);
            Err(Outcome::After(timing::PREPARE_POLL))
        }
        Preparing::Mismatch { reason, message } => Err(not_prepared(report, reason, &message, timing::VERSION_RECHECK)),
        // Like a failed bootstrap, never run again by itself: the machine is replaced.
        Preparing::Failed { reason, message } => Err(not_prepared(report, &reason, &message, timing::FAILED_JOB_RECHECK)),
    }
}

/// The bootstrap was started, so preparation finished before it (the host's records say so,
/// whatever this copy's status holds: after a move it holds nothing).
pub(super) fn prepared_before_bootstrap(machine: &SSHMachine, report: &mut Report<'_>) {
    if machine.spec.preparation.is_some() {
        let reason = match machine.spec.preparation.as_ref().map(|p| p.mode) {
            Some(crate::api::v1alpha1::PreparationMode::None) => reasons::VERIFIED,
            _ => reasons::PREPARED,
        };
        let kept = machine
            .status
            .as_ref()
            .and_then(|s| crate::controllers::conditions::get(&s.conditions, types::HOST_PREPARED))
            .filter(|c| c.status == ConditionStatus::True);
        // Keep the message of the step that did it, when this status saw it.
        let message = kept.map(|c| c.message.clone()).unwrap_or_else(|| "prepared before the bootstrap started".to_string());
        report.set(types::HOST_PREPARED, ConditionStatus::True, reason, &message);
    }
}

/// spec.preparation.registry with its CA and credentials read. The credentials Secret (and a CA
/// Secret) must be marked for capssh: their values go to the host.
async fn registry_inputs(ctx: &Context, machine: &SSHMachine, registry: &RegistryMirrors) -> Result<RegistryInputs, ReconcileError> {
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    let ca_pem = match &registry.ca_ref {
        Some(RegistryCARef { kind: CASourceKind::Secret, name, key }) => {
            let [ca] = marked_secret_values(ctx, namespace, name, [key.as_str()]).await?;
            Some(ca)
        }
        Some(RegistryCARef { kind: CASourceKind::ConfigMap, name, key }) => {
            let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
            let map = maps.get_opt(name).await?.ok_or_else(|| ReconcileError::Invalid(format!("ConfigMap {namespace}/{name}: not found")))?;
            let value = map.data.and_then(|mut d| d.remove(key));
            Some(value.ok_or_else(|| ReconcileError::Invalid(format!("ConfigMap {namespace}/{name}: has no key {key:?}")))?)
        }
        None => None,
    };
    let (credentials, credentials_source) = match &registry.credentials_secret_ref {
        Some(secret) => {
            let [user, password] = marked_secret_values(ctx, namespace, &secret.name, ["username", "password"]).await?;
            (Some((user, password)), format!("Secret {namespace}/{}", secret.name))
        }
        None => (None, String::new()),
    };
    let mirrors = registry.mirrors.iter().map(|m| (m.registry.clone(), m.endpoint.clone())).collect();
    Ok(RegistryInputs { mirrors, ca_pem, credentials, credentials_source })
}

fn not_prepared(report: &mut Report<'_>, reason: &str, message: &str, retry: std::time::Duration) -> Outcome {
    report.fail(types::HOST_PREPARED, reason, message, MachinePhase::Failed);
    Outcome::After(retry)
}
