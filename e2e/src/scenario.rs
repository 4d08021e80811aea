//! Building blocks for controller tests that play Cluster API's part: the objects Cluster API
//! would create (Cluster, Machine, bootstrap Secret), and a pool of SSHHosts on a host farm.

use crate::apply::apply_one;
use crate::hosts::HostFarm;
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

/// The farm's client key as the ssh-auth Secret `farm-key`.
pub async fn farm_key_secret(client: &kube::Client, ns: &str, farm: &HostFarm) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "farm-key"}, "type": "kubernetes.io/ssh-auth",
        "stringData": {"ssh-privatekey": farm.client_key.ed25519.private_key_pem}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await?;
    Ok(())
}

/// The farm's key Secret, and one pinned SSHHost per farm host (named after it: h0, h1, ...),
/// with `labels` on every host.
pub async fn register_farm(client: &kube::Client, ns: &str, farm: &HostFarm, labels: serde_json::Value) -> anyhow::Result<()> {
    farm_key_secret(client, ns, farm).await?;
    for host in &farm.hosts {
        let doc = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHHost",
            "metadata": {"name": host.name, "labels": labels},
            "spec": {"address": host.address.to_string(), "auth": {"privateKeySecretRef": {"name": "farm-key"}},
                     "hostKey": {"publicKeys": [host.host_key_public]}}
        });
        apply_one(client, &doc, Some(ns), false).await?;
    }
    Ok(())
}

/// A Cluster whose infrastructure Cluster API already reports as provisioned, and its SSHCluster.
pub async fn provisioned_cluster(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let cluster = apply_one(client, &json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": name},
        "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHCluster", "name": name},
                 "controlPlaneEndpoint": {"host": "198.18.0.100", "port": 6443}}
    }), Some(ns), false).await?;
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
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-bootstrap"), "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "type": "cluster.x-k8s.io/secret",
        "data": {"value": base64::engine::general_purpose::STANDARD.encode(data), "format": base64::engine::general_purpose::STANDARD.encode("cloud-config")}
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await?;
    let owner = apply_one(client, &json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "spec": {"clusterName": cluster, "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                 "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "SSHMachine", "name": name}}
    }), Some(ns), false).await?;
    apply_one(client, &json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "SSHMachine",
        "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": cluster},
                     "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": name, "uid": owner.metadata.uid}]},
        "spec": {}
    }), Some(ns), false).await?;
    Ok(())
}
