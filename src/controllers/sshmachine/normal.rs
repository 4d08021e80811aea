//! The normal path, as named steps: inputs → bootstrap data → claim → connect → the host's
//! records → prepare → bootstrap → provisioned; once provisioned, keep Ready current.

use super::report::{Outcome, Report, Step};
use super::{claim, decisions, prepare};
use crate::api::v1alpha1::conditions::{reasons, types};
use crate::api::v1alpha1::{ConditionStatus, Initialization, MachineAddress, MachineAddressType, MachinePhase, SSHHost, SSHMachine};
use crate::bootstrap::{Format, HostJob, MachineMetadata, plan};
use crate::controllers::capi::owner_name;
use crate::controllers::{Context, ReconcileError, cached_target_for, timing};
use crate::hosts::work::{MachineJobs, MachineRecords, NextWork, advance_bootstrap, machine_metadata, next_work, read_records};
use crate::redact::Redactor;
use crate::ssh::job::{JOBS_DIR, Progress};
use crate::ssh::{HostOps, Lease, PoolKey, SshError};
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use serde_json::Value;
use std::sync::Arc;

/// What Cluster API gives the machine before a host is touched.
pub(super) struct Inputs {
    pub owner: Arc<DynamicObject>,
    pub cluster: Arc<DynamicObject>,
    pub secret_name: String,
}

pub(super) async fn reconcile_normal(machine: &SSHMachine, ctx: &Context, cluster: Option<Arc<DynamicObject>>) -> Result<Action, ReconcileError> {
    let mut report = Report::new(machine);
    report.set(types::PAUSED, ConditionStatus::False, reasons::NOT_PAUSED, "");
    let outcome = normal_steps(machine, ctx, cluster, &mut report).await.unwrap_or_else(|stop| stop);
    report.finish(ctx, outcome).await
}

async fn normal_steps(machine: &SSHMachine, ctx: &Context, cluster: Option<Arc<DynamicObject>>, report: &mut Report<'_>) -> Step<Outcome> {
    if machine.status.as_ref().and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned) == Some(true) {
        return Ok(ensure_healthy(ctx, machine, report).await);
    }
    let inputs = ensure_inputs(ctx, machine, cluster, report).await?;
    let (data, format) = ensure_bootstrap_data(ctx, machine, &inputs, report).await?;
    let (host, answered) = claim::ensure_claimed(ctx, machine, &inputs, report).await?;
    let job = ensure_rendered(&data, format, &host, &inputs, report)?;
    let session = ensure_connected(ctx, &host, answered, report).await?;
    let host_name = host.metadata.name.as_deref().unwrap_or_default();
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    let name = machine.metadata.name.as_deref().unwrap_or_default();
    let jobs = MachineJobs::new(namespace, name, host_name, &inputs.secret_name);
    let records = on_host(read_records(&*session, &jobs).await, report)?;
    match next_work(&records) {
        NextWork::AlreadyReset => return Err(already_reset(report, host_name, &jobs.reset)),
        NextWork::Prepare => prepare::ensure_prepared(ctx, machine, &inputs.owner, &host, &*session, report).await?,
        NextWork::Bootstrap => prepare::prepared_before_bootstrap(machine, report),
    }
    ensure_bootstrapped(machine, host_name, &*session, &jobs, &job, &records, report).await?;
    // From now on the host is only checked every health interval: a connection kept open in
    // between would hold memory on both ends for nothing.
    drop(session);
    ctx.pool.forget(&PoolKey::host_of(namespace, host_name)).await;
    Ok(provisioned(ctx, machine, &host, &inputs, report))
}

/// Waits for the owner Machine, the Cluster's infrastructure and the bootstrap data's Secret name.
async fn ensure_inputs(ctx: &Context, machine: &SSHMachine, cluster: Option<Arc<DynamicObject>>, report: &mut Report<'_>) -> Step<Inputs> {
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    let mut waiting = |reason: &str, message: &str| {
        report.set(types::READY, ConditionStatus::False, reason, message);
        report.status.phase = Some(MachinePhase::Pending);
        Outcome::AwaitChange
    };
    let owner = match owner_name(&machine.metadata, "Machine") {
        Some(name) => ctx.caches.machine(&ctx.client, namespace, &name).await?,
        None => None,
    };
    let Some(owner) = owner else {
        return Err(waiting(reasons::WAITING_FOR_MACHINE_OWNER, "waiting for Cluster API to set the owner Machine"));
    };
    let Some(cluster) = cluster else {
        return Err(waiting(reasons::WAITING_FOR_CLUSTER, "the cluster-name label names no Cluster"));
    };
    if cluster.data.pointer("/status/initialization/infrastructureProvisioned").and_then(Value::as_bool) != Some(true) {
        return Err(waiting(reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE, "waiting for the cluster infrastructure to be provisioned"));
    }
    let Some(secret_name) = owner.data.pointer("/spec/bootstrap/dataSecretName").and_then(Value::as_str).map(str::to_string) else {
        return Err(waiting(reasons::WAITING_FOR_BOOTSTRAP_DATA, "waiting for the bootstrap provider to create the bootstrap data"));
    };
    Ok(Inputs { owner, cluster, secret_name })
}

/// Reads and checks the bootstrap data before a host is taken: bad data holds no host and runs nothing.
async fn ensure_bootstrap_data(ctx: &Context, machine: &SSHMachine, inputs: &Inputs, report: &mut Report<'_>) -> Step<(Vec<u8>, Format)> {
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    let secret = &inputs.secret_name;
    let (data, format) = match bootstrap_data(ctx, namespace, secret).await {
        Ok(Some(found)) => found,
        Ok(None) if still_here(ctx, machine).await => return Err(invalid_data(report, &format!("bootstrap Secret {secret} does not exist"))),
        Ok(None) => return Err(Outcome::AwaitChange),
        Err(message) => return Err(invalid_data(report, &message)),
    };
    // Once a host is recorded, the real rendering (ensure_rendered) does this check.
    if machine.spec.host_ref.is_none()
        && let Err(err) = plan(&data, format, &placeholder_metadata())
    {
        return Err(invalid_data(report, &format!("bootstrap Secret {secret}: {err}")));
    }
    Ok((data, format))
}

/// Renders the data for this host (its jinja metadata) before touching it.
fn ensure_rendered(data: &[u8], format: Format, host: &SSHHost, inputs: &Inputs, report: &mut Report<'_>) -> Step<HostJob> {
    let namespace = host.metadata.namespace.as_deref().unwrap_or_default();
    let hostname = host.status.as_ref().and_then(|s| s.facts.as_ref()).map(|f| f.hostname.as_str());
    let metadata = machine_metadata(namespace, host.metadata.name.as_deref().unwrap_or_default(), &host.spec.address, hostname);
    plan(data, format, &metadata).map_err(|err| invalid_data(report, &format!("bootstrap Secret {}: {err}", inputs.secret_name)))
}

/// A session to the claimed host: the one the claim opened, else one from the pool.
async fn ensure_connected(ctx: &Context, host: &SSHHost, answered: Option<Lease>, report: &mut Report<'_>) -> Step<Lease> {
    let session = match answered {
        Some(session) => session,
        None => {
            let (target, key) = cached_target_for(ctx, host).await.map_err(|err| connection_failed(report, err))?;
            ctx.pool.lease(&key, &target).await.map_err(|err| connection_failed(report, err.into()))?
        }
    };
    session.require_pinned().map_err(|err| connection_failed(report, err.into()))?;
    report.set(types::HOST_CONNECTED, ConditionStatus::True, reasons::CONNECTED, &format!("host key {}", session.host_key_fingerprint()));
    report.host_answered = true;
    Ok(session)
}

/// Starts the bootstrap job once, then follows it.
async fn ensure_bootstrapped(
    machine: &SSHMachine,
    host_name: &str,
    session: &impl HostOps,
    jobs: &MachineJobs,
    job: &HostJob,
    records: &MachineRecords,
    report: &mut Report<'_>,
) -> Step<()> {
    let id = &jobs.bootstrap;
    let progress = on_host(advance_bootstrap(session, id, &job.script, records).await, report)?;
    match progress {
        Progress::Running if decisions::bootstrap_overdue(records.bootstrap.age, machine.spec.bootstrap_timeout_seconds) => {
            let message =
                format!("job {id} on host {host_name} still runs after spec.bootstrapTimeoutSeconds; it is left running, see {JOBS_DIR}/{id}/log");
            report.fail(types::BOOTSTRAP_SUCCEEDED, reasons::BOOTSTRAP_TIMED_OUT, &message, MachinePhase::Failed);
            Err(Outcome::After(timing::TIMED_OUT_RECHECK))
        }
        Progress::Running => {
            report.wait(
                types::BOOTSTRAP_SUCCEEDED,
                reasons::BOOTSTRAPPING,
                &format!("job {id} is running on host {host_name}"),
                MachinePhase::Provisioning,
            );
            Err(Outcome::After(timing::job_poll(records.bootstrap.age)))
        }
        Progress::Failed { reason, log_tail } => {
            let message =
                Redactor::new(job.secrets.clone()).redact(&format!("{reason}; last lines of {JOBS_DIR}/{id}/log on {host_name}:\n{log_tail}"));
            // Never run again by itself: a person (or MachineHealthCheck) replaces the machine.
            report.fail(types::BOOTSTRAP_SUCCEEDED, reasons::BOOTSTRAP_FAILED, &message, MachinePhase::Failed);
            Err(Outcome::After(timing::FAILED_JOB_RECHECK))
        }
        Progress::Succeeded => {
            report.set(types::BOOTSTRAP_SUCCEEDED, ConditionStatus::True, reasons::SUCCEEDED, &format!("job {id} succeeded on host {host_name}"));
            Ok(())
        }
    }
}

/// The contract's fields once the bootstrap succeeded.
fn provisioned(ctx: &Context, machine: &SSHMachine, host: &SSHHost, inputs: &Inputs, report: &mut Report<'_>) -> Outcome {
    let host_name = host.metadata.name.as_deref().unwrap_or_default();
    report.ready(reasons::PROVISIONED);
    report.status.phase = Some(MachinePhase::Provisioned);
    report.status.initialization = Some(Initialization { provisioned: Some(true) });
    report.status.addresses = addresses(host);
    report.status.failure_domain = inputs.owner.data.pointer("/spec/failureDomain").and_then(Value::as_str).map(str::to_string);
    if let Some(created) = &machine.metadata.creation_timestamp {
        ctx.metrics.observe_provisioning(jiff::Timestamp::now().duration_since(created.0).as_secs_f64());
    }
    report.note(reasons::PROVISIONED, format!("bootstrapped on host {host_name}"));
    Outcome::After(ctx.timing.health_interval)
}

/// Keeps Ready current for the machine's whole life: its host is checked every health
/// interval; one that stops answering shows as Ready False with the reason (the phase stays
/// Provisioned: nothing was undone), and Ready True again when it answers.
async fn ensure_healthy(ctx: &Context, machine: &SSHMachine, report: &mut Report<'_>) -> Outcome {
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    let host_name = machine.spec.host_ref.as_ref().map(|h| h.name.clone()).unwrap_or_default();
    let checked = match claim::host_by_name(ctx, namespace, &host_name).await {
        Ok(Some(host)) => check_host(ctx, &host).await,
        Ok(None) => Err(ReconcileError::Invalid(format!("the SSHHost {host_name} this machine runs on does not exist any more"))),
        Err(err) => Err(err),
    };
    match checked {
        Ok(fingerprint) => {
            report.set(types::HOST_CONNECTED, ConditionStatus::True, reasons::CONNECTED, &format!("host key {fingerprint}"));
            report.ready(reasons::PROVISIONED);
        }
        Err(err) => {
            let message = format!("host {host_name} does not answer: {err}");
            report.degrade(types::HOST_CONNECTED, err.connection_reason(), &message);
        }
    }
    Outcome::After(ctx.timing.health_interval)
}

/// Checks the host over a connection opened for the check and closed after it (checks are a
/// health interval apart).
async fn check_host(ctx: &Context, host: &SSHHost) -> Result<String, ReconcileError> {
    let (target, key) = cached_target_for(ctx, host).await?;
    let checked = check_over(ctx, &key, &target).await;
    ctx.pool.forget(&key.host).await;
    checked
}

async fn check_over(ctx: &Context, key: &PoolKey, target: &crate::ssh::Target) -> Result<String, ReconcileError> {
    let session = ctx.pool.lease(key, target).await?;
    session.require_pinned()?;
    let uid = match session.run_checked(crate::bootstrap::scripts::HEALTH, None, timing::HEALTH_CHECK_TIMEOUT).await {
        Ok(output) => output.stdout_text(),
        // No answer in time is a host that does not answer, whatever the connection still believes.
        Err(SshError::CommandTimeout { target, after }) => return Err(SshError::Timeout { target, during: "checking", after }.into()),
        Err(err) => return Err(err.into()),
    };
    if uid.trim() != "0" {
        return Err(SshError::Protocol { target: session.target().to_string(), reason: "commands do not run as root".into() }.into());
    }
    Ok(session.host_key_fingerprint())
}

/// A host operation's SSH failure ends the reconcile as a connection problem.
fn on_host<T>(result: Result<T, SshError>, report: &mut Report<'_>) -> Step<T> {
    result.map_err(|err| connection_failed(report, err.into()))
}

pub(super) fn connection_failed(report: &mut Report<'_>, err: ReconcileError) -> Outcome {
    report.fail(types::HOST_CONNECTED, err.connection_reason(), &err.to_string(), MachinePhase::Provisioning);
    report.host_answered = false;
    Outcome::HostFailed(err)
}

fn invalid_data(report: &mut Report<'_>, message: &str) -> Outcome {
    report.fail(types::BOOTSTRAP_SUCCEEDED, reasons::BOOTSTRAP_DATA_INVALID, message, MachinePhase::Failed);
    // A corrected Secret wakes the machine only when the bootstrap-data cache selects it: look
    // again now and then too.
    Outcome::After(timing::INVALID_DATA_RETRY)
}

/// A deletion of this machine reset the host before `clusterctl move` made this copy: its
/// bootstrap records are gone, and running the bootstrap again would re-provision a wiped host.
fn already_reset(report: &mut Report<'_>, host_name: &str, reset_id: &str) -> Outcome {
    let message = format!(
        "host {host_name} was reset by job {reset_id}: a deletion of this machine began before it was moved (clusterctl move); it is not bootstrapped again. Delete the Machine: its host is then verified and released"
    );
    report.fail(types::BOOTSTRAP_SUCCEEDED, reasons::HOST_ALREADY_RESET, &message, MachinePhase::Failed);
    Outcome::AwaitChange
}

/// Whether the machine, read again from the API server, is still here and not being deleted
/// (the copy this reconcile started from may be older than its deletion). A failed read counts
/// as here: the missing Secret is then reported.
async fn still_here(ctx: &Context, machine: &SSHMachine) -> bool {
    let api: kube::Api<SSHMachine> = kube::Api::namespaced(ctx.client.clone(), machine.metadata.namespace.as_deref().unwrap_or_default());
    match api.get_opt(machine.metadata.name.as_deref().unwrap_or_default()).await {
        Ok(fresh) => !decisions::going_away(fresh.as_ref().map(|m| &m.metadata)),
        Err(_) => true,
    }
}

/// The bootstrap Secret's data and format (None: no such Secret), or what is wrong with it.
async fn bootstrap_data(ctx: &Context, namespace: &str, secret_name: &str) -> Result<Option<(Vec<u8>, Format)>, String> {
    let Some(secret) = ctx
        .caches
        .bootstrap_data(&ctx.client, namespace, secret_name)
        .await
        .map_err(|err| format!("reading bootstrap Secret {secret_name}: {err}"))?
    else {
        return Ok(None);
    };
    let data = secret.data.clone().unwrap_or_default();
    let value = data.get("value").ok_or_else(|| format!("bootstrap Secret {secret_name} has no key \"value\""))?;
    let format = match data.get("format") {
        Some(bytes) => Some(String::from_utf8(bytes.0.clone()).map_err(|_| format!("bootstrap Secret {secret_name}: \"format\" is not text"))?),
        None => None,
    };
    let format = Format::from_secret(format.as_deref()).map_err(|err| format!("bootstrap Secret {secret_name}: {err}"))?;
    Ok(Some((value.0.clone(), format)))
}

/// Every metadata key with a stand-in value: enough to check the data before a host is chosen.
fn placeholder_metadata() -> MachineMetadata {
    let keys = ["hostname", "local_hostname", "instance_id", "provider_id", "local_ipv4"];
    MachineMetadata { values: keys.iter().map(|k| (k.to_string(), "placeholder".to_string())).collect() }
}

fn addresses(host: &SSHHost) -> Vec<MachineAddress> {
    let address_type =
        if host.spec.address.parse::<std::net::IpAddr>().is_ok() { MachineAddressType::InternalIP } else { MachineAddressType::InternalDNS };
    let mut addresses = vec![MachineAddress { r#type: address_type, address: host.spec.address.clone() }];
    if let Some(hostname) = host.status.as_ref().and_then(|s| s.facts.as_ref()).map(|f| f.hostname.clone()).filter(|h| !h.is_empty()) {
        addresses.push(MachineAddress { r#type: MachineAddressType::Hostname, address: hostname });
    }
    addresses
}
