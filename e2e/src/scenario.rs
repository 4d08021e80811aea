//! Building blocks for controller tests that play Cluster API's part: the objects Cluster API
//! would create (Cluster, Machine, bootstrap Secret), and a pool of SSHHosts on a host farm.

use crate::apply::{apply_one, documents};
use crate::hosts::HostFarm;
use crate::mgmt::ManagementPlane;
use crate::nodes::NodeFarm;
use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

pub async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The farm's client key as the ssh-auth Secret `farm-key`, marked for capssh.
pub async fn farm_key_secret(client: &kube::Client, ns: &str, farm: &HostFarm) -> anyhow::Result<()> {
    key_secret(client, ns, "farm-key", &farm.client_key.ed25519.private_key_pem).await
}

/// The farm's key Secret, and one pinned SSHHost per farm host (named after it: h0, h1, ...),
/// with `labels` on every host.
pub async fn register_farm(client: &kube::Client, ns: &str, farm: &HostFarm, labels: serde_json::Value) -> anyhow::Result<()> {
    farm_key_secret(client, ns, farm).await?;
    let hosts: Vec<_> = farm.hosts.iter().map(|h| (h.name.as_str(), h.address.to_string(), h.host_key_public.as_str())).collect();
    register_hosts(client, ns, "farm-key", &hosts, labels).await
}

/// The node farm's key as the ssh-auth Secret `node-key` (marked for capssh), and one pinned SSHHost per node (named
/// after it: node-0, node-1, ...; root logs in), with `labels` on every host.
pub async fn register_nodes(client: &kube::Client, ns: &str, farm: &NodeFarm, labels: serde_json::Value) -> anyhow::Result<()> {
    register_some_nodes(client, ns, farm, 0..farm.nodes.len(), labels).await
}

/// [`register_nodes`] for the nodes at `indices` only (one farm shared by several clusters, each
/// with its own pool).
pub async fn register_some_nodes(
    client: &kube::Client,
    ns: &str,
    farm: &NodeFarm,
    indices: std::ops::Range<usize>,
    labels: serde_json::Value,
) -> anyhow::Result<()> {
    key_secret(client, ns, "node-key", &farm.client_key.private_key_pem).await?;
    let hosts: Vec<_> = farm.nodes[indices].iter().map(|n| (n.name.as_str(), n.address.to_string(), n.host_key_public.as_str())).collect();
    register_hosts(client, ns, "node-key", &hosts, labels).await
}

/// An ssh-auth Secret holding `private_key_pem`, labelled for capssh when `marked` (capssh
/// refuses any other Secret as credentials).
pub async fn key_secret_marked(client: &kube::Client, ns: &str, name: &str, private_key_pem: &str, marked: bool) -> anyhow::Result<()> {
    let labels = if marked { json!({(capssh::api::v1alpha1::CREDENTIALS_LABEL): "true"}) } else { json!({}) };
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels}, "type": "kubernetes.io/ssh-auth",
        "stringData": {"ssh-privatekey": private_key_pem}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await?;
    Ok(())
}

async fn key_secret(client: &kube::Client, ns: &str, name: &str, private_key_pem: &str) -> anyhow::Result<()> {
    key_secret_marked(client, ns, name, private_key_pem, true).await
}

/// The user the manager runs as in [`manager_identity`].
pub const MANAGER_USER: &str = "capssh-manager";

/// A kubeconfig for [`MANAGER_USER`], who holds exactly capssh's own RBAC from config/rbac: the
/// ClusterRole `manager-role` and the leader-election Role (in `lease_namespace`), bound as the
/// components bind them to the ServiceAccount. A manager run with it is refused whatever the
/// components do not grant, as in a real installation.
pub async fn manager_identity(plane: &ManagementPlane, client: &kube::Client, lease_namespace: &str) -> anyhow::Result<std::path::PathBuf> {
    let rbac = crate::tools::repo_root().join("config/rbac");
    let role = documents(&std::fs::read_to_string(rbac.join("role.yaml"))?)?;
    let cluster_role = apply_one(client, &role[0], None, false).await?;
    let mut lease_role = documents(&std::fs::read_to_string(rbac.join("leader_election_role.yaml"))?)?.remove(0);
    lease_role["metadata"]["namespace"] = json!(lease_namespace);
    let lease_role = apply_one(client, &lease_role, None, false).await?;
    let subject = json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": MANAGER_USER}]);
    apply_one(
        client,
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": MANAGER_USER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role.metadata.name},
            "subjects": subject
        }),
        None,
        false,
    )
    .await?;
    apply_one(
        client,
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": MANAGER_USER, "namespace": lease_namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": lease_role.metadata.name},
            "subjects": subject
        }),
        None,
        false,
    )
    .await?;
    plane.kubeconfig_for(MANAGER_USER, None)
}

/// One SSHHost per (name, address, host key), logging in with the key Secret `key_secret`.
async fn register_hosts(
    client: &kube::Client,
    ns: &str,
    key_secret: &str,
    hosts: &[(&str, String, &str)],
    labels: serde_json::Value,
) -> anyhow::Result<()> {
    for (name, address, host_key) in hosts {
        let doc = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHHost",
            "metadata": {"name": name, "labels": labels},
            "spec": {"address": address, "auth": {"privateKeySecretRef": {"name": key_secret}},
                     "hostKey": {"publicKeys": [host_key]}}
        });
        apply_one(client, &doc, Some(ns), false).await?;
    }
    Ok(())
}

/// A Cluster whose infrastructure Cluster API already reports as provisioned, and its SSHCluster.
pub async fn provisioned_cluster(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let cluster = apply_one(
        client,
        &json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": name},
            "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHCluster", "name": name},
                     "controlPlaneEndpoint": {"host": "198.18.0.100", "port": 6443}}
        }),
        Some(ns),
        false,
    )
    .await?;
    apply_one(client, &json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHCluster",
        "metadata": {"name": name, "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": name, "uid": cluster.metadata.uid}]},
        "spec": {"controlPlaneEndpoint": {"host": "198.18.0.100", "port": 6443}}
    }), Some(ns), false).await?;
    let clusters = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &capssh::controllers::capi::cluster_resource());
    let status = json!({"status": {"initialization": {"infrastructureProvisioned": true}}});
    clusters.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await?;
    Ok(())
}

/// A Machine with its bootstrap Secret (`value` = `data`), and its SSHMachine, as Cluster API
/// (MachineSet + CABPK) would create them.
pub async fn machine(client: &kube::Client, ns: &str, cluster: &str, name: &str, data: &str) -> anyhow::Result<()> {
    machine_with(client, ns, cluster, name, data, None, json!({})).await
}

/// [`machine`], with the Machine's `spec.version` and the SSHMachine's `spec` given (a
/// `hostRef` pins it to a host; a `preparation` prepares the host for that version).
pub async fn machine_with(
    client: &kube::Client,
    ns: &str,
    cluster: &str,
    name: &str,
    data: &str,
    version: Option<&str>,
    infrastructure_spec: serde_json::Value,
) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-bootstrap"), "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "type": "cluster.x-k8s.io/secret",
        "data": {"value": base64::engine::general_purpose::STANDARD.encode(data), "format": base64::engine::general_purpose::STANDARD.encode("cloud-config")}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await?;
    let mut spec = json!({"clusterName": cluster, "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                          "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHMachine", "name": name}});
    if let Some(version) = version {
        spec["version"] = json!(version);
    }
    let owner = apply_one(
        client,
        &json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
            "spec": spec
        }),
        Some(ns),
        false,
    )
    .await?;
    apply_one(
        client,
        &json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
            "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": cluster},
                         "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": name, "uid": owner.metadata.uid}]},
            "spec": infrastructure_spec
        }),
        Some(ns),
        false,
    )
    .await?;
    Ok(())
}
