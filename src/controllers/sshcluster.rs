//! SSHCluster: there is nothing to create for a pool of existing hosts. Report the endpoint
//! (ours, or the Cluster's), the failure domains found on the hosts' labels, and pause.
//! Steps: owner → pause → failure domains → endpoint; the delete path only reports.

use super::capi::{self, get_cluster, is_externally_managed, is_paused, owner_name};
use super::conditions;
use super::{Context, ReconcileError, timing};
use crate::api::v1alpha1::conditions::reasons;
use crate::api::v1alpha1::conditions::types::{PAUSED, READY};
use crate::api::v1alpha1::{ConditionStatus, FailureDomain, FailureDomainSource, Initialization, SSHCluster, SSHClusterStatus, SSHHost};
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::controller::Action;
use std::collections::BTreeSet;
use std::sync::Arc;

pub async fn reconcile(cluster: Arc<SSHCluster>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    tracing::debug!(kind = "SSHCluster", name = cluster.metadata.name.as_deref().unwrap_or_default(), "reconcile");
    if is_externally_managed(&cluster.metadata) {
        return Ok(Action::await_change());
    }
    let mut status = cluster.status.clone().unwrap_or_default();
    let action = if cluster.metadata.deletion_timestamp.is_some() {
        reconcile_delete(&cluster, &mut status)
    } else {
        reconcile_normal(&cluster, &ctx, &mut status).await?
    };
    super::apply_status(&ctx, &*cluster, cluster.status.as_ref(), &status).await?;
    Ok(action)
}

/// Nothing to tear down for a pool of existing hosts, but while something else holds the object
/// (a finalizer of another controller), Ready says it is going.
fn reconcile_delete(cluster: &SSHCluster, status: &mut SSHClusterStatus) -> Action {
    let message = "the SSHCluster is being deleted";
    conditions::set(&mut status.conditions, READY, ConditionStatus::False, reasons::DELETING, message, cluster.metadata.generation);
    Action::await_change()
}

async fn reconcile_normal(cluster: &SSHCluster, ctx: &Context, status: &mut SSHClusterStatus) -> Result<Action, ReconcileError> {
    let generation = cluster.metadata.generation;
    let Some(owner) = owner_name(&cluster.metadata, "Cluster") else {
        let message = "waiting for the Cluster controller to set the owner reference";
        conditions::set(&mut status.conditions, READY, ConditionStatus::False, reasons::WAITING_FOR_CLUSTER_OWNER, message, generation);
        return Ok(Action::await_change());
    };
    let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
    let owner_cluster = get_cluster(&ctx.client, &namespace, &owner).await?;
    if ensure_not_paused(cluster, owner_cluster.as_ref(), status) {
        return Ok(Action::await_change());
    }
    if let Some(source) = &cluster.spec.failure_domains {
        status.failure_domains = failure_domains(ctx, &namespace, source).await?;
    }
    report_endpoint(cluster, owner_cluster.as_ref(), status);
    // Hosts come and go; look at their labels again now and then.
    Ok(Action::requeue(timing::CLUSTER_RESYNC))
}

/// Sets Paused; true when paused.
fn ensure_not_paused(cluster: &SSHCluster, owner: Option<&DynamicObject>, status: &mut SSHClusterStatus) -> bool {
    let paused = is_paused(owner, &cluster.metadata);
    let (condition, reason, message) = if paused {
        (ConditionStatus::True, reasons::PAUSED, "the Cluster or this object is paused")
    } else {
        (ConditionStatus::False, reasons::NOT_PAUSED, "")
    };
    conditions::set(&mut status.conditions, PAUSED, condition, reason, message, cluster.metadata.generation);
    paused
}

/// The failure domains named by the hosts' labels.
async fn failure_domains(ctx: &Context, namespace: &str, source: &FailureDomainSource) -> Result<Vec<FailureDomain>, ReconcileError> {
    let hosts: Api<SSHHost> = Api::namespaced(ctx.client.clone(), namespace);
    let names: BTreeSet<String> = hosts
        .list(&ListParams::default().labels(&source.host_label))
        .await?
        .items
        .iter()
        .filter_map(|h| h.metadata.labels.as_ref()?.get(&source.host_label).cloned())
        .collect();
    Ok(names
        .into_iter()
        .map(|name| FailureDomain {
            control_plane: Some(source.control_plane.is_empty() || source.control_plane.contains(&name)),
            name,
            attributes: Default::default(),
        })
        .collect())
}

/// Ready once the control-plane endpoint is known: ours, or the Cluster's.
fn report_endpoint(cluster: &SSHCluster, owner: Option<&DynamicObject>, status: &mut SSHClusterStatus) {
    let generation = cluster.metadata.generation;
    if cluster.spec.control_plane_endpoint.is_set() || owner.and_then(capi::cluster_endpoint).is_some() {
        status.initialization = Some(Initialization { provisioned: Some(true) });
        conditions::set_ready(&mut status.conditions, reasons::PROVISIONED, generation);
    } else {
        let message = "set spec.controlPlaneEndpoint, or Cluster.spec.controlPlaneEndpoint";
        conditions::set(&mut status.conditions, READY, ConditionStatus::False, reasons::WAITING_FOR_CONTROL_PLANE_ENDPOINT, message, generation);
    }
}

pub fn error_policy(cluster: Arc<SSHCluster>, err: &ReconcileError, _ctx: Arc<Context>) -> Action {
    let (namespace, name) = (cluster.metadata.namespace.as_deref().unwrap_or_default(), cluster.metadata.name.as_deref().unwrap_or_default());
    tracing::warn!(namespace, name, error = %err, "SSHCluster reconcile failed");
    Action::requeue(err.requeue_after())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{ApiEndpoint, SSHClusterSpec};

    fn cluster(host: &str) -> SSHCluster {
        let endpoint = ApiEndpoint { host: host.into(), port: if host.is_empty() { 0 } else { 6443 } };
        SSHCluster::new("c", SSHClusterSpec { control_plane_endpoint: endpoint, failure_domains: None })
    }

    #[test]
    fn ready_once_an_endpoint_is_known_and_then_says_nothing() {
        let mut status = SSHClusterStatus::default();
        report_endpoint(&cluster(""), None, &mut status);
        let ready = conditions::get(&status.conditions, READY).unwrap();
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::False, reasons::WAITING_FOR_CONTROL_PLANE_ENDPOINT));
        assert!(ready.message.contains("controlPlaneEndpoint"));

        let owner: DynamicObject = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "c"}, "spec": {"controlPlaneEndpoint": {"host": "198.18.0.10", "port": 6443}}}),
        )
        .unwrap();
        report_endpoint(&cluster(""), Some(&owner), &mut status);
        let ready = conditions::get(&status.conditions, READY).unwrap();
        assert_eq!((ready.status, ready.message.as_str()), (ConditionStatus::True, ""));

        let mut status = SSHClusterStatus::default();
        report_endpoint(&cluster("198.18.0.10"), None, &mut status);
        assert_eq!(conditions::get(&status.conditions, READY).unwrap().message, "");
        assert_eq!(status.initialization.and_then(|i| i.provisioned), Some(true));
    }
}
