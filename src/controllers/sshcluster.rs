//! SSHCluster: there is nothing to create for a pool of existing hosts. Report the endpoint
//! (ours, or the Cluster's), the failure domains found on the hosts' labels, and pause.

use super::capi::{self, get_cluster, is_externally_managed, is_paused, owner_name};
use super::conditions;
use super::{Context, ReconcileError, timing};
use crate::api::v1alpha1::conditions::reasons;
use crate::api::v1alpha1::conditions::types::{PAUSED, READY};
use crate::api::v1alpha1::{ConditionStatus, FailureDomain, Initialization, SSHCluster, SSHClusterStatus, SSHHost};
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use std::collections::BTreeSet;
use std::sync::Arc;

pub async fn reconcile(cluster: Arc<SSHCluster>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    tracing::debug!(kind = "SSHCluster", name = cluster.metadata.name.as_deref().unwrap_or_default(), "reconcile");
    let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
    if is_externally_managed(&cluster.metadata) {
        return Ok(Action::await_change());
    }
    let generation = cluster.metadata.generation;
    let mut status = cluster.status.clone().unwrap_or_default();
    // Nothing to tear down for a pool of existing hosts, but while something else holds the
    // object (a finalizer of another controller), Ready says it is going.
    if cluster.metadata.deletion_timestamp.is_some() {
        conditions::set(&mut status.conditions, READY, ConditionStatus::False, reasons::DELETING, "the SSHCluster is being deleted", generation);
        write_status(&ctx, &cluster, &status).await?;
        return Ok(Action::await_change());
    }

    // Step 1: wait for Cluster API to link us to our Cluster.
    let Some(owner) = owner_name(&cluster.metadata, "Cluster") else {
        conditions::set(
            &mut status.conditions,
            READY,
            ConditionStatus::False,
            reasons::WAITING_FOR_CLUSTER_OWNER,
            "waiting for the Cluster controller to set the owner reference",
            generation,
        );
        write_status(&ctx, &cluster, &status).await?;
        return Ok(Action::await_change());
    };
    let owner_cluster = get_cluster(&ctx.client, &namespace, &owner).await?;

    // Step 2: pause.
    let paused = is_paused(owner_cluster.as_ref(), &cluster.metadata);
    let (reason, message) = if paused { (reasons::PAUSED, "the Cluster or this object is paused") } else { (reasons::NOT_PAUSED, "") };
    conditions::set(&mut status.conditions, PAUSED, if paused { ConditionStatus::True } else { ConditionStatus::False }, reason, message, generation);
    if paused {
        write_status(&ctx, &cluster, &status).await?;
        return Ok(Action::await_change());
    }

    // Step 3: failure domains from the hosts' labels.
    if let Some(source) = &cluster.spec.failure_domains {
        let hosts: Api<SSHHost> = Api::namespaced(ctx.client.clone(), &namespace);
        let names: BTreeSet<String> = hosts
            .list(&ListParams::default().labels(&source.host_label))
            .await?
            .items
            .iter()
            .filter_map(|h| h.metadata.labels.as_ref()?.get(&source.host_label).cloned())
            .collect();
        status.failure_domains = names
            .into_iter()
            .map(|name| FailureDomain {
                control_plane: Some(source.control_plane.is_empty() || source.control_plane.contains(&name)),
                name,
                attributes: Default::default(),
            })
            .collect();
    }

    // Step 4: the endpoint — ours, or wait for the Cluster's.
    let endpoint_known = cluster.spec.control_plane_endpoint.is_set() || owner_cluster.as_ref().and_then(capi::cluster_endpoint).is_some();
    if endpoint_known {
        status.initialization = Some(Initialization { provisioned: Some(true) });
        conditions::set(&mut status.conditions, READY, ConditionStatus::True, reasons::PROVISIONED, "control-plane endpoint known", generation);
    } else {
        conditions::set(
            &mut status.conditions,
            READY,
            ConditionStatus::False,
            reasons::WAITING_FOR_CONTROL_PLANE_ENDPOINT,
            "set spec.controlPlaneEndpoint, or Cluster.spec.controlPlaneEndpoint",
            generation,
        );
    }
    write_status(&ctx, &cluster, &status).await?;
    // Hosts come and go; look at their labels again now and then.
    Ok(Action::requeue(timing::CLUSTER_RESYNC))
}

async fn write_status(ctx: &Context, cluster: &SSHCluster, status: &SSHClusterStatus) -> Result<(), ReconcileError> {
    super::apply_status(ctx, cluster, cluster.status.as_ref(), status).await
}

pub fn error_policy(cluster: Arc<SSHCluster>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = cluster.metadata.namespace.as_deref().unwrap_or_default(), name = cluster.metadata.name.as_deref().unwrap_or_default(), error = %err, "SSHCluster reconcile failed");
    Action::requeue(err.requeue_after())
}
