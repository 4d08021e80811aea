//! The normal path: wait → claim → connect → prepare → bootstrap → report. Each step sets its condition.

use super::{BOOTSTRAP_SUCCEEDED, HOST_CLAIMED, HOST_CONNECTED, PAUSED, Step, set_host_phase};
use crate::api::v1alpha1::{
    ConditionStatus, HostPhase, Initialization, MachineAddress, MachineAddressType, MachinePhase, SSHCluster, SSHHost, SSHMachine,
};
use crate::bootstrap::{Format, MachineMetadata, SENTINEL, plan};
use crate::controllers::capi::{machine_resource, owner_name};
use crate::controllers::conditions::READY;
use crate::controllers::{Context, ReconcileError, target_for};
use crate::hosts::claim::{ClaimOutcome, claim};
use crate::hosts::selection::{FailureDomainRequirement, select};
use crate::redact::Redactor;
use crate::ssh::job::{JobSpec, JobState, Progress, stable_id};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_secs(3);

pub async fn reconcile(machine: Arc<SSHMachine>, ctx: &Context, cluster: Option<DynamicObject>) -> Result<Action, ReconcileError> {
    let mut step = Step::new(&machine);
    step.set(PAUSED, ConditionStatus::False, "NotPaused", "");
    let namespace = machine.metadata.namespace.clone().unwrap_or_default();

    // Wait: for the owner Machine, the cluster's infrastructure, and the bootstrap data.
    let owner = match owner_name(&machine.metadata, "Machine") {
        Some(name) => Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &machine_resource()).get_opt(&name).await?,
        None => None,
    };
    let Some(owner) = owner else {
        return wait(ctx, step, "WaitingForMachineOwner", "waiting for Cluster API to set the owner Machine").await;
    };
    let Some(cluster) = cluster else {
        return wait(ctx, step, "WaitingForCluster", "the cluster-name label names no Cluster").await;
    };
    if cluster.data.pointer("/status/initialization/infrastructureProvisioned").and_then(Value::as_bool) != Some(true) {
        return wait(ctx, step, "WaitingForClusterInfrastructure", "waiting for the cluster infrastructure to be provisioned").await;
    }
    let Some(secret_name) = owner.data.pointer("/spec/bootstrap/dataSecretName").and_then(Value::as_str).map(str::to_string) else {
        return wait(ctx, step, "WaitingForBootstrapData", "waiting for the bootstrap provider to create the bootstrap data").await;
    };
    if machine.status.as_ref().and_then(|s| s.initialization.as_ref()).and_then(|i| i.provisioned) == Some(true) {
        return Ok(Action::await_change());
    }

    // Read and check the bootstrap data before taking a host: bad data holds no host and runs nothing.
    let (data, format) = match bootstrap_data(ctx, &namespace, &secret_name).await {
        Ok(found) => found,
        Err(message) => return invalid_data(ctx, step, &machine, &message).await,
    };
    // (Once a host is recorded, the real rendering below does this check.)
    if machine.spec.host_ref.is_none() {
        if let Err(err) = plan(&data, format, &placeholder_metadata()) {
            return invalid_data(ctx, step, &machine, &format!("bootstrap Secret {secret_name}: {err}")).await;
        }
    }

    // Claim a host.
    let host = match claimed_host(ctx, &machine, &owner, &cluster, &mut step).await? {
        Some(host) => host,
        None => {
            step.save(ctx).await?;
            // A lost race means other hosts may still be free: choose again soon. (A second lost
            // race writes the same status, so no watch event would wake us before the requeue.)
            // With no host free, a host being released wakes us; the requeue is a fallback.
            let lost_race = crate::controllers::conditions::get(&step.status.conditions, HOST_CLAIMED).is_some_and(|c| c.reason == "ClaimConflict");
            return Ok(Action::requeue(Duration::from_secs(if lost_race { 1 } else { 30 })));
        }
    };
    let host_name = host.metadata.name.clone().unwrap_or_default();
    step.set(HOST_CLAIMED, ConditionStatus::True, "Claimed", &format!("host {host_name}"));

    // Render the data for this host (its jinja metadata) before touching it.
    let job = match plan(&data, format, &metadata(&host)) {
        Ok(job) => job,
        Err(err) => return invalid_data(ctx, step, &machine, &format!("bootstrap Secret {secret_name}: {err}")).await,
    };

    // Connect.
    let (target, key) = match target_for(&ctx.client, &host).await {
        Ok(target) => target,
        Err(err) => return connection_failed(ctx, step, &machine, "CredentialsUnavailable", err).await,
    };
    let session = match ctx.pool.lease(&key, &target).await {
        Ok(session) => session,
        Err(err) => {
            ctx.pool.forget(&key).await;
            let reason = err.reason();
            return connection_failed(ctx, step, &machine, reason, err.into()).await;
        }
    };
    // First contact in this status's life (a new claim, or a copy made by clusterctl move, which
    // never restores status): a reset recorded on the host means a deletion of this machine had
    // begun before the move, and the host's earlier bootstrap records are gone. Running the
    // bootstrap again would re-provision a host that was wiped, so stop and say so.
    let connected_before = machine
        .status
        .as_ref()
        .and_then(|s| crate::controllers::conditions::get(&s.conditions, HOST_CONNECTED))
        .is_some_and(|c| c.status == ConditionStatus::True);
    if !connected_before {
        let cleanup_id = super::delete::cleanup_job_id(&machine, &host);
        match session.job_status(&cleanup_id, &[]).await {
            Ok(status) if status.state == JobState::Absent => {}
            Ok(_) => {
                let message = format!(
                    "host {host_name} was reset by job {cleanup_id}: a deletion of this machine began before it was moved (clusterctl move); it is not bootstrapped again. Delete the Machine: its host is then verified and released"
                );
                step.wait(BOOTSTRAP_SUCCEEDED, "HostAlreadyReset", &message, MachinePhase::Failed);
                step.save(ctx).await?;
                ctx.event(&*machine, true, "HostAlreadyReset", &message).await;
                return Ok(Action::await_change());
            }
            Err(err) => {
                ctx.pool.forget(&key).await;
                let reason = err.reason();
                return connection_failed(ctx, step, &machine, reason, err.into()).await;
            }
        }
    }
    step.set(HOST_CONNECTED, ConditionStatus::True, "Connected", &format!("host key {}", session.host_key_fingerprint()));
    set_host_phase(ctx, &host, HostPhase::Provisioning).await?;

    // Prepare: container runtime and Kubernetes at the Machine's version, when spec.preparation asks.
    match super::prepare::reconcile(ctx, &mut step, &machine, &owner, &host, &session).await {
        Ok(super::prepare::Prepared::Yes) => {}
        Ok(super::prepare::Prepared::NotYet(action)) => return Ok(action),
        Err(ReconcileError::Ssh(err)) => {
            ctx.pool.forget(&key).await;
            let reason = err.reason();
            return connection_failed(ctx, step, &machine, reason, err.into()).await;
        }
        Err(err) => return Err(err),
    }

    // Bootstrap: start the job once, then follow it.
    let id = stable_id("bootstrap", &[&namespace, machine.metadata.name.as_deref().unwrap_or_default(), &secret_name]);
    let progress = match session.advance_job(&JobSpec { id: &id, script: job.script.as_bytes() }, &[SENTINEL], 30).await {
        Ok(progress) => progress,
        Err(err) => {
            ctx.pool.forget(&key).await;
            let reason = err.reason();
            return connection_failed(ctx, step, &machine, reason, err.into()).await;
        }
    };
    let redactor = Redactor::new(job.secrets.clone());
    match progress {
        Progress::Running if bootstrap_overdue(&machine) => {
            let message = format!(
                "job {id} on host {host_name} still runs after spec.bootstrapTimeoutSeconds; it is left running, see /var/lib/capssh/jobs/{id}/log"
            );
            step.wait(BOOTSTRAP_SUCCEEDED, "BootstrapTimedOut", &message, MachinePhase::Failed);
            step.save(ctx).await?;
            ctx.event(&*machine, true, "BootstrapTimedOut", &message).await;
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Progress::Running => {
            step.wait(BOOTSTRAP_SUCCEEDED, "Bootstrapping", &format!("job {id} is running on host {host_name}"), MachinePhase::Provisioning);
            step.save(ctx).await?;
            Ok(Action::requeue(POLL))
        }
        Progress::Failed { reason, log_tail } => {
            let message = redactor.redact(&format!("{reason}; last lines of /var/lib/capssh/jobs/{id}/log on {host_name}:\n{log_tail}"));
            step.wait(BOOTSTRAP_SUCCEEDED, "BootstrapFailed", &message, MachinePhase::Failed);
            step.save(ctx).await?;
            ctx.event(&*machine, true, "BootstrapFailed", &message).await;
            // Never run again by itself: a person (or MachineHealthCheck) replaces the machine.
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        Progress::Succeeded => {
            step.set(BOOTSTRAP_SUCCEEDED, ConditionStatus::True, "Succeeded", &format!("job {id} succeeded on host {host_name}"));
            step.set(READY, ConditionStatus::True, "Provisioned", &format!("running on host {host_name}"));
            step.status.phase = Some(MachinePhase::Provisioned);
            step.status.initialization = Some(Initialization { provisioned: Some(true) });
            step.status.addresses = addresses(&host);
            step.status.failure_domain = owner.data.pointer("/spec/failureDomain").and_then(Value::as_str).map(str::to_string);
            step.save(ctx).await?;
            set_host_phase(ctx, &host, HostPhase::Provisioned).await?;
            if let Some(created) = &machine.metadata.creation_timestamp {
                ctx.metrics.observe_provisioning(jiff::Timestamp::now().duration_since(created.0).as_secs_f64());
            }
            ctx.event(&*machine, false, "Provisioned", &format!("bootstrapped on host {host_name}")).await;
            Ok(Action::await_change())
        }
    }
}

/// Whether the bootstrap has run longer than spec.bootstrapTimeoutSeconds (measured from when
/// BootstrapSucceeded became False with reason Bootstrapping).
fn bootstrap_overdue(machine: &SSHMachine) -> bool {
    let Some(limit) = machine.spec.bootstrap_timeout_seconds else { return false };
    let Some(condition) = machine.status.as_ref().and_then(|s| crate::controllers::conditions::get(&s.conditions, BOOTSTRAP_SUCCEEDED)) else {
        return false;
    };
    if condition.reason != "Bootstrapping" && condition.reason != "BootstrapTimedOut" {
        return false;
    }
    condition
        .last_transition_time
        .parse::<jiff::Timestamp>()
        .is_ok_and(|since| jiff::Timestamp::now().duration_since(since).as_secs() > i64::from(limit))
}

async fn invalid_data(ctx: &Context, mut step: Step<'_>, machine: &SSHMachine, message: &str) -> Result<Action, ReconcileError> {
    step.wait(BOOTSTRAP_SUCCEEDED, "BootstrapDataInvalid", message, MachinePhase::Failed);
    step.save(ctx).await?;
    ctx.event(machine, true, "BootstrapDataInvalid", message).await;
    // The Secret's change does not wake us (we do not watch Secrets): look again now and then.
    Ok(Action::requeue(Duration::from_secs(60)))
}

async fn wait(ctx: &Context, mut step: Step<'_>, reason: &str, message: &str) -> Result<Action, ReconcileError> {
    step.set(READY, ConditionStatus::False, reason, message);
    step.status.phase = Some(MachinePhase::Pending);
    step.save(ctx).await?;
    Ok(Action::await_change())
}

async fn connection_failed(
    ctx: &Context,
    mut step: Step<'_>,
    machine: &SSHMachine,
    reason: &str,
    err: ReconcileError,
) -> Result<Action, ReconcileError> {
    let message = err.to_string();
    let changed = crate::controllers::conditions::get(&step.status.conditions, HOST_CONNECTED).is_none_or(|c| c.reason != reason);
    step.wait(HOST_CONNECTED, reason, &message, MachinePhase::Provisioning);
    step.save(ctx).await?;
    if changed {
        ctx.event(machine, true, reason, &message).await;
    }
    Ok(Action::requeue(err.requeue_after()))
}

/// The host this machine runs on: claimed before, pinned in spec.hostRef, or selected now.
/// Returns None (with the condition set) when there is none to be had yet.
async fn claimed_host(
    ctx: &Context,
    machine: &SSHMachine,
    owner: &DynamicObject,
    cluster: &DynamicObject,
    step: &mut Step<'_>,
) -> Result<Option<SSHHost>, ReconcileError> {
    let namespace = machine.metadata.namespace.clone().unwrap_or_default();
    let name = machine.metadata.name.clone().unwrap_or_default();
    let hosts: Api<SSHHost> = Api::namespaced(ctx.client.clone(), &namespace);
    // A recorded (or pinned) host is read by name; only an unplaced machine looks at the pool.
    let candidates: Vec<Arc<SSHHost>> = match &machine.spec.host_ref {
        Some(pinned) => {
            let host = hosts.get_opt(&pinned.name).await?;
            if let Some(host) = host.as_ref().filter(|h| h.spec.consumer_ref.as_ref().is_some_and(|c| c.name == name)) {
                record_host(ctx, machine, host).await?; // no API call when already recorded
                return Ok(Some(host.clone()));
            }
            host.into_iter().map(Arc::new).collect()
        }
        None => {
            // Shared, not copied: N machines choosing at once would otherwise hold N copies of the pool.
            let cached: Vec<Arc<SSHHost>> = ctx
                .host_cache
                .get()
                .map(|store| store.state().into_iter().filter(|h| h.metadata.namespace.as_deref() == Some(namespace.as_str())).collect())
                .unwrap_or_default();
            // An empty cache (not synced yet, or no hosts) is asked of the API server instead.
            if cached.is_empty() { hosts.list(&ListParams::default()).await?.items.into_iter().map(Arc::new).collect() } else { cached }
        }
    };
    let label = failure_domain_label(ctx, &namespace, cluster).await?;
    let domain = owner.data.pointer("/spec/failureDomain").and_then(Value::as_str);
    let requirement = match (label.as_deref(), domain) {
        (Some(label), Some(value)) => Some(FailureDomainRequirement { label, value }),
        _ => None,
    };
    let selection = select(&candidates, &name, &machine.spec.host_selector, requirement);
    let Some(chosen) = selection.chosen else {
        let message = match &machine.spec.host_ref {
            Some(pinned) if candidates.is_empty() => format!("the pinned host {} does not exist", pinned.name),
            _ => selection.explain(),
        };
        step.wait(HOST_CLAIMED, "NoHostAvailable", &message, MachinePhase::WaitingForHost);
        return Ok(None);
    };
    let host = if chosen.spec.consumer_ref.as_ref().is_some_and(|c| c.name == name) {
        chosen.clone()
    } else {
        match claim(&hosts, chosen, &name).await? {
            ClaimOutcome::Claimed(host) => {
                let host_name = host.metadata.name.clone().unwrap_or_default();
                ctx.event(machine, false, "HostClaimed", &format!("claimed host {host_name}")).await;
                host
            }
            ClaimOutcome::LostRace => {
                step.wait(
                    HOST_CLAIMED,
                    "ClaimConflict",
                    "another machine claimed the chosen host first; choosing again",
                    MachinePhase::WaitingForHost,
                );
                return Ok(None);
            }
        }
    };
    record_host(ctx, machine, &host).await?;
    Ok(Some(host))
}

/// spec.hostRef and spec.providerID, written once (both are immutable afterwards).
async fn record_host(ctx: &Context, machine: &SSHMachine, host: &SSHHost) -> Result<(), ReconcileError> {
    let host_name = host.metadata.name.clone().unwrap_or_default();
    let provider_id = provider_id(host);
    if machine.spec.host_ref.as_ref().map(|h| h.name.as_str()) == Some(host_name.as_str())
        && machine.spec.provider_id.as_deref() == Some(provider_id.as_str())
    {
        return Ok(());
    }
    let api: Api<SSHMachine> = Api::namespaced(ctx.client.clone(), machine.metadata.namespace.as_deref().unwrap_or_default());
    let patch = json!({"spec": {"hostRef": {"name": host_name}, "providerID": provider_id}});
    api.patch(machine.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// `ssh://<namespace>/<sshhost>`: stable for the host, survives a move.
pub fn provider_id(host: &SSHHost) -> String {
    format!("ssh://{}/{}", host.metadata.namespace.as_deref().unwrap_or_default(), host.metadata.name.as_deref().unwrap_or_default())
}

async fn failure_domain_label(ctx: &Context, namespace: &str, cluster: &DynamicObject) -> Result<Option<String>, ReconcileError> {
    let Some(name) = cluster.data.pointer("/spec/infrastructureRef/name").and_then(Value::as_str) else { return Ok(None) };
    let sshcluster = Api::<SSHCluster>::namespaced(ctx.client.clone(), namespace).get_opt(name).await?;
    Ok(sshcluster.and_then(|c| c.spec.failure_domains).map(|fd| fd.host_label))
}

/// The bootstrap Secret's data and format, or what is wrong with the Secret.
async fn bootstrap_data(ctx: &Context, namespace: &str, secret_name: &str) -> Result<(Vec<u8>, Format), String> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(secret_name)
        .await
        .map_err(|err| format!("reading bootstrap Secret {secret_name}: {err}"))?
        .ok_or_else(|| format!("bootstrap Secret {secret_name} does not exist"))?;
    let data = secret.data.unwrap_or_default();
    let value = data.get("value").ok_or_else(|| format!("bootstrap Secret {secret_name} has no key \"value\""))?;
    let format = match data.get("format") {
        Some(bytes) => Some(String::from_utf8(bytes.0.clone()).map_err(|_| format!("bootstrap Secret {secret_name}: \"format\" is not text"))?),
        None => None,
    };
    let format = Format::from_secret(format.as_deref()).map_err(|err| format!("bootstrap Secret {secret_name}: {err}"))?;
    Ok((value.0.clone(), format))
}

/// Every metadata key with a stand-in value: enough to check the data before a host is chosen.
fn placeholder_metadata() -> MachineMetadata {
    let keys = ["hostname", "local_hostname", "instance_id", "provider_id", "local_ipv4"];
    MachineMetadata { values: keys.iter().map(|k| (k.to_string(), "placeholder".to_string())).collect() }
}

/// What `## template: jinja` documents may use, per machine.
fn metadata(host: &SSHHost) -> MachineMetadata {
    let host_name = host.metadata.name.clone().unwrap_or_default();
    let hostname = host
        .status
        .as_ref()
        .and_then(|s| s.facts.as_ref())
        .map(|f| f.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| host_name.clone());
    let mut values = std::collections::BTreeMap::new();
    values.insert("hostname".to_string(), hostname.clone());
    values.insert("local_hostname".to_string(), hostname);
    values.insert("instance_id".to_string(), host_name);
    values.insert("provider_id".to_string(), provider_id(host));
    if host.spec.address.parse::<std::net::Ipv4Addr>().is_ok() {
        values.insert("local_ipv4".to_string(), host.spec.address.clone());
    }
    MachineMetadata { values }
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
