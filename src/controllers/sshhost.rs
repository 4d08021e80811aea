//! SSHHost: probe free hosts over SSH, keep their facts, pin a key seen on first use, and own
//! the host's status: its phase is derived here (from the quarantine mark, the claim and the
//! consuming SSHMachine's phase), never written by another controller.
//!
//! Which box an SSHHost stands for is guarded three ways: a finalizer keeps a claimed host
//! until its machine has reset and released it (deleting it earlier would leave the box
//! un-reset and forgotten); the CRD refuses address, port, user, bastion and hostKey edits while
//! it is claimed; and each probe records the SSHHost on the box itself ([`OWNER_FILE`]), so a
//! second SSHHost for the same box is refused (`DuplicateHost`) instead of handed out twice.

use super::conditions;
use super::sshmachine::DELETE_FOR_MOVE_ANNOTATION;
use super::timing::{self, errors};
use super::{Context, QUARANTINE_ANNOTATION, ReconcileError, cached_target_for};
use crate::api::v1alpha1::conditions::{reasons, types};
use crate::api::v1alpha1::{ConditionStatus, HostPhase, MachinePhase, SSHHost, SSHHostStatus, SSHMachine};
use crate::bootstrap::scripts::{OWNER_RECORD, OWNER_RELEASE, with_inputs};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const FINALIZER: &str = "sshhost.infrastructure.cluster.x-k8s.io";
/// Where a box records the SSHHost that stands for it: namespace, name and uid, no secrets.
pub const OWNER_FILE: &str = "/var/lib/capssh/owner";

pub async fn reconcile(host: Arc<SSHHost>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    tracing::debug!(kind = "SSHHost", name = host.metadata.name.as_deref().unwrap_or_default(), "reconcile");
    // clusterctl move hands the source copy over: it marks it, deletes it and strips its
    // finalizers itself. Re-adding the finalizer or holding the delete would block the move, and
    // the host now belongs to the target's copy: leave it alone.
    if host.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DELETE_FOR_MOVE_ANNOTATION)) {
        return Ok(Action::await_change());
    }
    let api: Api<SSHHost> = Api::namespaced(ctx.client.clone(), host.metadata.namespace.as_deref().unwrap_or_default());
    finalizer(&api, FINALIZER, host, |event| async {
        match event {
            Event::Apply(host) => reconcile_normal(&host, &ctx).await,
            Event::Cleanup(host) => reconcile_delete(&host, &ctx).await,
        }
    })
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err) | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        kube::runtime::finalizer::Error::AddFinalizer(err) | kube::runtime::finalizer::Error::RemoveFinalizer(err) => ReconcileError::Kube(err),
        other => ReconcileError::Invalid(other.to_string()),
    })
}

async fn reconcile_normal(host: &SSHHost, ctx: &Context) -> Result<Action, ReconcileError> {
    // Labelling is for a later move; it must not hold up the host's own work.
    if let Err(err) = super::credentials::ensure_move_label(ctx, host).await {
        tracing::warn!(error = %err, host = host.metadata.name.as_deref().unwrap_or_default(), "could not label the host's Secrets for clusterctl move");
    }
    let mut status = host.status.clone().unwrap_or_default();
    let paused = super::capi::is_paused(None, &host.metadata);
    report_paused(host, paused, &mut status);
    let action = if paused {
        // No host work while paused: no probe, no owner record.
        Action::await_change()
    } else if let Some(reason) = host.metadata.annotations.as_ref().and_then(|a| a.get(QUARANTINE_ANNOTATION)) {
        report_quarantined(host, reason, &mut status)
    } else if let Some(consumer) = &host.spec.consumer_ref {
        let machine = consumer_machine(ctx, host, &consumer.name).await?;
        report_claimed(host, &consumer.name, machine.as_deref(), &mut status)
    } else if let Some(left) = next_probe_in(host, ctx.timing.probe_interval, jiff::Timestamp::now(), ctx.probe_times.last(&pool_key(host))) {
        // Probed recently, spec unchanged since: wait for the next probe. (A probe's own status
        // write wakes this controller again; without this every free host was probed back to
        // back instead of every probe interval.)
        Action::requeue(left)
    } else {
        ensure_probed(ctx, host, &mut status).await?
    };
    write_status(ctx, host, &status).await?;
    Ok(action)
}

/// A deleted host: an unclaimed one lets go of its box (its owner record, so that the box can
/// be registered again, here or elsewhere) and goes; a claimed one stays until its machine has
/// reset and released it, and Ready says what it waits for.
async fn reconcile_delete(host: &SSHHost, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(consumer) = &host.spec.consumer_ref else {
        release_owner_record(ctx, host).await;
        ctx.probe_times.forget(&pool_key(host));
        return Ok(Action::await_change());
    };
    let mut status = host.status.clone().unwrap_or_default();
    let quarantine = host.metadata.annotations.as_ref().and_then(|a| a.get(QUARANTINE_ANNOTATION));
    let message = match quarantine {
        Some(reason) => {
            status.phase = Some(HostPhase::Quarantined);
            format!(
                "deleted, but still claimed by SSHMachine {} and quarantined ({reason}): the deletion completes once a person has \
                 inspected the host and removed the annotation {QUARANTINE_ANNOTATION} and spec.consumerRef",
                consumer.name
            )
        }
        None => {
            let machine = consumer_machine(ctx, host, &consumer.name).await?;
            status.phase = Some(claimed_phase(machine.as_deref()));
            format!(
                "deleted, but claimed by SSHMachine {}: the deletion completes once that machine releases the host (delete its \
                 Machine; capssh resets the host first)",
                consumer.name
            )
        }
    };
    conditions::set(&mut status.conditions, types::READY, ConditionStatus::False, reasons::WAITING_FOR_RELEASE, &message, host.metadata.generation);
    write_status(ctx, host, &status).await?;
    Err(ReconcileError::StillWorking { what: message, retry_after: timing::RELEASE_RECHECK })
}

/// Paused=True while the host carries Cluster API's paused annotation; False once it is
/// removed (only written once it was ever set, so an unpaused host's status does not churn).
fn report_paused(host: &SSHHost, paused: bool, status: &mut SSHHostStatus) {
    let generation = host.metadata.generation;
    if paused {
        let message = "the host carries the annotation cluster.x-k8s.io/paused: it is not probed";
        conditions::set(&mut status.conditions, types::PAUSED, ConditionStatus::True, reasons::PAUSED, message, generation);
    } else if conditions::get(&status.conditions, types::PAUSED).is_some() {
        conditions::set(&mut status.conditions, types::PAUSED, ConditionStatus::False, reasons::NOT_PAUSED, "", generation);
    }
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

/// Probes a free host: Available with its facts, refused as a duplicate of another SSHHost, or
/// Unreachable with the reason (a Warning event when it stops answering or is found a duplicate).
async fn ensure_probed(ctx: &Context, host: &SSHHost, status: &mut SSHHostStatus) -> Result<Action, ReconcileError> {
    status.quarantine_reason = None;
    let generation = host.metadata.generation;
    let object = format!("SSHHost/{}/{}", host.metadata.namespace.as_deref().unwrap_or_default(), host.metadata.name.as_deref().unwrap_or_default());
    let err = match probe(ctx, host, status).await {
        Ok(Probed::Available) => {
            ctx.unreachable.clear(&object);
            let now = jiff::Timestamp::now();
            ctx.probe_times.record(&pool_key(host), now);
            status.last_probe_time = probe_time_to_write(host.status.as_ref(), status, now);
            return Ok(Action::requeue(ctx.timing.probe_interval));
        }
        Ok(Probed::Duplicate(message)) => {
            let was_duplicate = host.status.as_ref().and_then(|s| conditions::get(&s.conditions, types::READY)).map(|c| c.reason.as_str())
                == Some(reasons::DUPLICATE_HOST);
            // Reachable (it answered), but never Available: the phase keeps it out of selection.
            status.phase = Some(HostPhase::Unreachable);
            conditions::set(&mut status.conditions, types::READY, ConditionStatus::False, reasons::DUPLICATE_HOST, &message, generation);
            if !was_duplicate {
                ctx.event(host, true, reasons::DUPLICATE_HOST, &message).await;
            }
            return Ok(Action::requeue(errors::NEEDS_A_PERSON));
        }
        Err(err) => err,
    };
    let was_reachable = host.status.as_ref().and_then(|s| s.phase) != Some(HostPhase::Unreachable);
    status.phase = Some(HostPhase::Unreachable);
    let (reason, message) = (err.connection_reason(), err.to_string());
    conditions::set(&mut status.conditions, types::REACHABLE, ConditionStatus::False, reason, &message, generation);
    conditions::set(&mut status.conditions, types::READY, ConditionStatus::False, reason, &message, generation);
    if was_reachable {
        ctx.event(host, true, reason, &message).await;
    }
    // A host that does not answer is probed less and less often (a rack gone dark must not
    // take the connections from the hosts that answer).
    Ok(Action::requeue(ctx.retry_after(&object, &err)))
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

/// The host's key in the manager's memories (`<namespace>/<name>`, as the session pool's).
fn pool_key(host: &SSHHost) -> String {
    crate::ssh::PoolKey::host_of(host.metadata.namespace.as_deref().unwrap_or_default(), host.metadata.name.as_deref().unwrap_or_default())
}

/// How long until an Available host, probed at its current generation, is due again: an
/// interval after its last probe, by its status (the last probe that found something new) or by
/// this manager's memory (`probed_here`), whichever is later.
pub fn next_probe_in(host: &SSHHost, interval: Duration, now: jiff::Timestamp, probed_here: Option<jiff::Timestamp>) -> Option<Duration> {
    let status = host.status.as_ref()?;
    if status.phase != Some(HostPhase::Available) {
        return None;
    }
    if conditions::get(&status.conditions, types::READY)?.observed_generation != host.metadata.generation {
        return None;
    }
    let recorded = status.last_probe_time.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let last = recorded.into_iter().chain(probed_here).max()?;
    let age = now.duration_since(last).as_secs_f64();
    let left = interval.as_secs_f64() - age;
    (left > 0.0).then(|| Duration::from_secs_f64(left))
}

/// What a probe that reached the host found.
#[derive(Debug, PartialEq, Eq)]
enum Probed {
    Available,
    /// The box is recorded as another SSHHost's: the message names it and says what to do.
    Duplicate(String),
}

async fn probe(ctx: &Context, host: &SSHHost, status: &mut SSHHostStatus) -> Result<Probed, ReconcileError> {
    let (target, key) = cached_target_for(ctx, host).await?;
    let session = ctx.pool.lease(&key, &target).await?;
    // It answers: machines may choose it again at once, not only once their skip expires.
    ctx.unanswered.clear(&key.host);
    let probed = probe_over(ctx, host, &session, status).await;
    // A free host's connection is not kept between probes (minutes apart): it holds memory on
    // both ends for nothing. A claim opens one again (or shares this one, if it is under way).
    drop(session);
    ctx.pool.forget(&key.host).await;
    probed
}

async fn probe_over(ctx: &Context, host: &SSHHost, session: &crate::ssh::Session, status: &mut SSHHostStatus) -> Result<Probed, ReconcileError> {
    let facts = session.probe().await?;
    let generation = host.metadata.generation;
    status.observed_host_key_fingerprint = Some(session.host_key_fingerprint());
    let summary = format!("{} {} {}, {} CPUs, kernel {}", facts.os, facts.os_version, facts.arch, facts.cpus, facts.kernel);
    status.facts = Some(facts);
    conditions::set(&mut status.conditions, types::REACHABLE, ConditionStatus::True, reasons::PROBED, &summary, generation);
    // Before anything is recorded for this SSHHost (a pin, Available): a duplicate gets neither.
    // Nor a new lastProbeTime: its status must read back the same, or its own status write
    // would wake it into probing again at once.
    if let Some(message) = ensure_owner_record(session, host).await? {
        return Ok(Probed::Duplicate(message));
    }
    if session.trusted_on_first_use() {
        pin_host_key(ctx, host, "hostKey", &session.host_key_openssh()).await?;
        let note = format!("pinned host key {} seen on first use", session.host_key_fingerprint());
        ctx.event(host, false, reasons::HOST_KEY_PINNED, &note).await;
    }
    // The jump host's key too: work only ever runs through pinned keys (Session::require_pinned).
    if let Some(key) = session.bastion_key_on_first_use() {
        pin_host_key(ctx, host, "bastion", &key).await?;
        ctx.event(host, false, reasons::HOST_KEY_PINNED, "pinned the jump host's key seen on first use").await;
    }
    status.phase = Some(HostPhase::Available);
    let (reason, message) = if host.spec.maintenance {
        (reasons::MAINTENANCE, "spec.maintenance is set: the host is not selected for new machines")
    } else {
        (reasons::AVAILABLE, "free to be claimed")
    };
    conditions::set(&mut status.conditions, types::READY, ConditionStatus::True, reason, message, generation);
    Ok(Probed::Available)
}

/// The lastProbeTime of a probe that found the host Available at `now`: the one the status has
/// when the probe changed nothing else (the status then reads back the same and is not written:
/// no write every probe interval for an idle host), else `now`.
pub fn probe_time_to_write(previous: Option<&SSHHostStatus>, probed: &SSHHostStatus, now: jiff::Timestamp) -> Option<String> {
    match previous {
        Some(previous) if previous.last_probe_time.is_some() && previous == probed => previous.last_probe_time.clone(),
        _ => Some(conditions::timestamp(now)),
    }
}

/// What the box's owner record said about this SSHHost.
#[derive(Debug, PartialEq, Eq)]
pub enum OwnerRecord {
    /// Written now, or already this SSHHost's.
    Ours,
    /// This namespace/name with another uid: the same SSHHost after `clusterctl move` (which
    /// keeps names, not uids). The record now holds the new uid.
    Moved { previous_uid: String },
    /// Another SSHHost stands for this box.
    Other { namespace: String, name: String, uid: String },
}

/// Parses the owner-record script's output.
pub fn parse_owner_record(output: &str) -> Result<OwnerRecord, String> {
    let field = |key: &str| output.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).unwrap_or_default().to_string();
    match field("owner").as_str() {
        "new" | "same" => Ok(OwnerRecord::Ours),
        "moved" => Ok(OwnerRecord::Moved { previous_uid: field("recorded_uid") }),
        "other" => Ok(OwnerRecord::Other { namespace: field("recorded_namespace"), name: field("recorded_name"), uid: field("recorded_uid") }),
        other => Err(format!("the owner record script printed {other:?}, not new, same, moved or other")),
    }
}

/// Records this SSHHost on the box (once; again after a move), or the refusal when another
/// SSHHost is recorded there.
async fn ensure_owner_record(session: &crate::ssh::Session, host: &SSHHost) -> Result<Option<String>, ReconcileError> {
    let (namespace, name) = (host.metadata.namespace.as_deref().unwrap_or_default(), host.metadata.name.as_deref().unwrap_or_default());
    let uid = host.metadata.uid.as_deref().unwrap_or_default();
    let inputs = [("OWNER_FILE", OWNER_FILE), ("OWNER_NAMESPACE", namespace), ("OWNER_NAME", name), ("OWNER_UID", uid)];
    let output = session.run_checked(&with_inputs(OWNER_RECORD, &inputs), None, Duration::from_secs(30)).await?;
    match parse_owner_record(&output.stdout_text()).map_err(ReconcileError::Invalid)? {
        OwnerRecord::Ours => Ok(None),
        OwnerRecord::Moved { previous_uid } => {
            tracing::info!(namespace, name, previous_uid, uid, "owner record on the host updated to this SSHHost's new uid (moved)");
            Ok(None)
        }
        OwnerRecord::Other { namespace: other_ns, name: other_name, uid: other_uid } => {
            Ok(Some(duplicate_message(host, &other_ns, &other_name, &other_uid)))
        }
    }
}

/// What the owner-release script found on the box.
#[derive(Debug, PartialEq, Eq)]
pub enum OwnerRelease {
    Removed,
    Absent,
    /// Another SSHHost (a newer one of the same name, after a move) is recorded: kept.
    Other,
}

pub fn parse_owner_release(output: &str) -> Result<OwnerRelease, String> {
    match output.lines().find_map(|l| l.strip_prefix("owner=")).unwrap_or_default() {
        "removed" => Ok(OwnerRelease::Removed),
        "absent" => Ok(OwnerRelease::Absent),
        "other" => Ok(OwnerRelease::Other),
        other => Err(format!("the owner release script printed {other:?}, not removed, absent or other")),
    }
}

/// Best effort: a box that cannot be reached (or whose credentials went with the namespace)
/// must not hold the deletion. A Warning event then says what to clear by hand. A paused host
/// gets no host work, this included.
async fn release_owner_record(ctx: &Context, host: &SSHHost) {
    if super::capi::is_paused(None, &host.metadata) {
        return;
    }
    let (namespace, name) = (host.metadata.namespace.as_deref().unwrap_or_default(), host.metadata.name.as_deref().unwrap_or_default());
    let result = async {
        let (target, key) = cached_target_for(ctx, host).await?;
        let session = ctx.pool.lease(&key, &target).await?;
        let inputs = [("OWNER_FILE", OWNER_FILE), ("OWNER_UID", host.metadata.uid.as_deref().unwrap_or_default())];
        let output = session.run_checked(&with_inputs(OWNER_RELEASE, &inputs), None, Duration::from_secs(30)).await;
        drop(session);
        ctx.pool.forget(&key.host).await;
        parse_owner_release(&output?.stdout_text()).map_err(ReconcileError::Invalid)
    }
    .await;
    match result {
        Ok(found) => tracing::info!(namespace, name, ?found, "deleted SSHHost let go of its box's owner record"),
        Err(err) => {
            let note = format!(
                "deleted without removing its owner record from the box at {} ({err}): remove {OWNER_FILE} on the host before another \
                 SSHHost stands for it",
                host.spec.address
            );
            ctx.event(host, true, reasons::OWNER_RECORD_LEFT, &note).await;
        }
    }
}

/// The DuplicateHost message: which SSHHost already stands for the box, and the two ways out.
pub fn duplicate_message(host: &SSHHost, other_namespace: &str, other_name: &str, other_uid: &str) -> String {
    let address = &host.spec.address;
    if other_name.is_empty() {
        return format!(
            "the box at {address} holds an unreadable owner record in {OWNER_FILE}: inspect it; if no other SSHHost stands for this box, \
             remove the file on the host"
        );
    }
    format!(
        "the box at {address} is already SSHHost {other_namespace}/{other_name} (uid {other_uid}, recorded in {OWNER_FILE} on the host): \
         two SSHHosts for one machine could hand it to two clusters. Delete one of the two SSHHosts; if {other_namespace}/{other_name} is \
         gone or no longer stands for this box, remove {OWNER_FILE} on the host"
    )
}

/// Records the key seen on first use as the pin, in spec (clusterctl move keeps spec): the
/// host's own (`hostKey`) or its jump host's (`bastion`).
async fn pin_host_key(ctx: &Context, host: &SSHHost, which: &str, key: &str) -> Result<(), ReconcileError> {
    let api: Api<SSHHost> = Api::namespaced(ctx.client.clone(), host.metadata.namespace.as_deref().unwrap_or_default());
    let pin = json!({"hostKey": {"publicKeys": [key]}});
    let spec = if which == "bastion" { json!({"bastion": pin}) } else { pin };
    // A merge patch guarded by resourceVersion: a concurrent edit (someone pinning by hand) wins.
    let patch = json!({
        "metadata": {"resourceVersion": host.metadata.resource_version},
        "spec": spec
    });
    api.patch(host.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn write_status(ctx: &Context, host: &SSHHost, status: &SSHHostStatus) -> Result<(), ReconcileError> {
    super::apply_status(ctx, host, host.status.as_ref(), status).await
}

/// Requeue policy for errors the reconcile did not handle itself.
pub fn error_policy(host: Arc<SSHHost>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    let (namespace, name) = (host.metadata.namespace.as_deref().unwrap_or_default(), host.metadata.name.as_deref().unwrap_or_default());
    match err {
        ReconcileError::StillWorking { .. } => tracing::debug!(namespace, name, status = %err, "SSHHost deletion waits"),
        _ if err.object_gone(name) => {
            tracing::debug!(namespace, name, "SSHHost deleted meanwhile");
            return Action::await_change();
        }
        _ => tracing::warn!(namespace, name, error = %err, "SSHHost reconcile failed"),
    }
    Action::requeue(err.requeue_after())
}

#[cfg(test)]
mod tests;
