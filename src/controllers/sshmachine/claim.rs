//! The claim step: the host this machine runs on — claimed before, pinned in spec.hostRef, or
//! chosen from the pool now — recorded in spec.hostRef and spec.providerID.

use super::normal::Inputs;
use super::report::{Outcome, Report, Step};
use crate::api::v1alpha1::conditions::{reasons, types};
use crate::api::v1alpha1::{ConditionStatus, MachinePhase, SSHHost, SSHMachine};
use crate::controllers::capi::{get_cluster, is_paused};
use crate::controllers::{Context, ReconcileError, cached_target_for, timing};
use crate::hosts::claim::{ClaimOutcome, MachineIdentity, claim};
use crate::hosts::selection::{FailureDomainRequirement, quarantined, select};
use crate::hosts::work::provider_id;
use crate::ssh::Lease;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::Arc;

/// The claimed host, with the session opened to check it answers when it was claimed just now.
pub(super) async fn ensure_claimed(ctx: &Context, machine: &SSHMachine, inputs: &Inputs, report: &mut Report<'_>) -> Step<(SSHHost, Option<Lease>)> {
    let namespace = machine.metadata.namespace.clone().unwrap_or_default();
    let identity = MachineIdentity::of(machine);
    let hosts: Api<SSHHost> = Api::namespaced(ctx.client.clone(), &namespace);
    // A recorded (or pinned) host is read by name; only an unplaced machine looks at the pool.
    let candidates: Vec<Arc<SSHHost>> = match &machine.spec.host_ref {
        Some(pinned) => {
            // The cache's copy proves a claim already held; anything else is asked of the API
            // server (the cache may not have seen this machine's own claim yet).
            let cached = host_by_name(ctx, &namespace, &pinned.name).await?.filter(|h| identity.holds(h) && !quarantined(h));
            let host = match cached {
                Some(host) => Some(host),
                None => hosts.get_opt(&pinned.name).await?.map(Arc::new),
            };
            if let Some(host) = host.as_ref().filter(|h| identity.holds(h) && !quarantined(h)) {
                record_host(ctx, machine, host).await?; // no API call when already recorded
                return Ok((claimed(report, SSHHost::clone(host)), None));
            }
            host.into_iter().collect()
        }
        None => pool(ctx, &hosts, &namespace).await?,
    };
    let label = failure_domain_label(ctx, &namespace, &inputs.cluster).await?;
    let domain = inputs.owner.data.pointer("/spec/failureDomain").and_then(Value::as_str);
    let requirement = match (label.as_deref(), domain) {
        (Some(label), Some(value)) => Some(FailureDomainRequirement { label, value }),
        _ => None,
    };
    // A pinned host is the only choice: it is tried again however it answered before.
    let did_not_answer = match &machine.spec.host_ref {
        None => ctx.unanswered.in_namespace(&namespace, std::time::Instant::now()),
        Some(_) => Default::default(),
    };
    let selection = select(&candidates, &identity, &machine.spec.host_selector, requirement, &did_not_answer);
    let Some(chosen) = selection.chosen else {
        let message = match &machine.spec.host_ref {
            Some(pinned) if candidates.is_empty() => format!("the pinned host {} does not exist", pinned.name),
            _ => selection.explain(),
        };
        report.wait(types::HOST_CLAIMED, reasons::NO_HOST_AVAILABLE, &message, MachinePhase::WaitingForHost);
        return Err(Outcome::After(timing::NO_HOST_RETRY));
    };
    let mut answered = None;
    let host = if identity.holds(chosen) {
        SSHHost::clone(chosen)
    } else {
        answered = Some(ensure_answers(ctx, chosen, report).await?);
        ensure_cluster_unpaused(ctx, machine, &inputs.cluster).await?;
        match claim(&hosts, chosen, &identity).await? {
            ClaimOutcome::Claimed(host) => {
                report.note(reasons::CLAIMED_EVENT, format!("claimed host {}", host.metadata.name.as_deref().unwrap_or_default()));
                *host
            }
            ClaimOutcome::LostRace => {
                let message = "another machine claimed the chosen host first; choosing again";
                report.wait(types::HOST_CLAIMED, reasons::CLAIM_CONFLICT, message, MachinePhase::WaitingForHost);
                return Err(Outcome::After(timing::CLAIM_RETRY));
            }
        }
    };
    record_host(ctx, machine, &host).await?;
    Ok((claimed(report, host), answered))
}

/// Connects to the chosen host before claiming it: one gone dark since its last probe still
/// looks Available, and a claim is for good (spec.providerID is immutable). One that does not
/// answer (or whose connection fails otherwise) is left unclaimed and skipped by every machine
/// until its next probe; the session to one that does is held on for the bootstrap.
async fn ensure_answers(ctx: &Context, host: &SSHHost, report: &mut Report<'_>) -> Step<Lease> {
    let (target, key) = cached_target_for(ctx, host).await?;
    match ctx.pool.lease_answering_within(&key, &target, timing::CHOSEN_HOST_ANSWER).await {
        Ok(session) => {
            ctx.unanswered.clear(&key.host);
            Ok(session)
        }
        Err(err) => {
            ctx.unanswered.mark(&key.host, std::time::Instant::now());
            let name = host.metadata.name.as_deref().unwrap_or_default();
            let message = format!("host {name} was not claimed: connecting to it failed ({err}); choosing another");
            report.warn(reasons::CHOSEN_HOST_DID_NOT_ANSWER, message.clone());
            report.wait(types::HOST_CLAIMED, reasons::CHOSEN_HOST_DID_NOT_ANSWER, &message, MachinePhase::WaitingForHost);
            Err(Outcome::After(timing::UNANSWERED_RETRY))
        }
    }
}

fn claimed(report: &mut Report<'_>, host: SSHHost) -> SSHHost {
    report.set(types::HOST_CLAIMED, ConditionStatus::True, reasons::CLAIMED, &format!("host {}", host.metadata.name.as_deref().unwrap_or_default()));
    host
}

/// The namespace's hosts from the SSHHost controller's watch cache, shared, not copied: N
/// machines choosing at once would otherwise hold N copies of the pool. An empty cache (not
/// synced yet, or no hosts) is asked of the API server instead.
async fn pool(ctx: &Context, hosts: &Api<SSHHost>, namespace: &str) -> Result<Vec<Arc<SSHHost>>, ReconcileError> {
    let cached: Vec<Arc<SSHHost>> = ctx
        .host_cache
        .get()
        .map(|store| store.state().into_iter().filter(|h| h.metadata.namespace.as_deref() == Some(namespace)).collect())
        .unwrap_or_default();
    if !cached.is_empty() {
        return Ok(cached);
    }
    Ok(hosts.list(&ctx.list_params()).await?.items.into_iter().map(Arc::new).collect())
}

/// One host by name: from the watch cache when it holds it, else from the API server.
pub(super) async fn host_by_name(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Arc<SSHHost>>, ReconcileError> {
    let key = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
    if let Some(host) = ctx.host_cache.get().and_then(|store| store.get(&key)) {
        return Ok(Some(host));
    }
    Ok(Api::<SSHHost>::namespaced(ctx.client.clone(), namespace).get_opt(name).await?.map(Arc::new))
}

/// spec.hostRef and spec.providerID, written once (both are immutable afterwards).
async fn record_host(ctx: &Context, machine: &SSHMachine, host: &SSHHost) -> Result<(), ReconcileError> {
    let host_name = host.metadata.name.clone().unwrap_or_default();
    let provider_id = provider_id(host.metadata.namespace.as_deref().unwrap_or_default(), &host_name);
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

async fn failure_domain_label(ctx: &Context, namespace: &str, cluster: &DynamicObject) -> Result<Option<String>, ReconcileError> {
    let Some(name) = cluster.data.pointer("/spec/infrastructureRef/name").and_then(Value::as_str) else { return Ok(None) };
    let sshcluster = ctx.caches.ssh_cluster(&ctx.client, namespace, name).await?;
    Ok(sshcluster.and_then(|c| c.spec.failure_domains.clone()).map(|fd| fd.host_label))
}

/// The claim hands a host out, so the Cluster's pause is checked on the API server's copy
/// first: clusterctl move pauses the Cluster, then copies the machines; a claim written after
/// the copy would hold the host for a machine the new management cluster does not know. A
/// pause found here ends the reconcile: the Cluster's watch event brings it back as paused.
async fn ensure_cluster_unpaused(ctx: &Context, machine: &SSHMachine, cached: &DynamicObject) -> Step<()> {
    let namespace = machine.metadata.namespace.as_deref().unwrap_or_default();
    let name = cached.metadata.name.as_deref().unwrap_or_default();
    let fresh = get_cluster(&ctx.client, namespace, name).await?;
    if fresh.is_none() || is_paused(fresh.as_ref(), &machine.metadata) {
        return Err(Outcome::AwaitChange);
    }
    Ok(())
}
