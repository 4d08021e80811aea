//! The BYOH management plane's contents: Cluster API's Cluster and Machine kinds stored as
//! v1beta1, BYOH's CRDs and agent RBAC (from its Go module), the Cluster as Cluster API would
//! have made it ready, and the objects of each machine.

use super::analysis::WORKLOAD_USER;
use super::{CLUSTER, KUBERNETES_VERSION, NS};
use crate::apply::{apply_all, documents, wait_established};
use crate::mgmt::ManagementPlane;
use crate::tools::module_dir;
use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::path::Path;

const CAPI_GROUP: &str = "cluster.x-k8s.io";
const INFRA_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// The control-plane endpoint the Cluster names. BYOH's release asks kube-vip to remove it from
/// the host's default interface, a no-op for an address no host holds (block 25 of the farm's
/// range, left to other uses).
const ENDPOINT: &str = "198.18.0.100";

pub fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1beta1", kind), plural)
}
pub fn cluster_resource() -> ApiResource {
    resource(CAPI_GROUP, "Cluster", "clusters")
}
pub fn machine_resource() -> ApiResource {
    resource(CAPI_GROUP, "Machine", "machines")
}
pub fn byohost_resource() -> ApiResource {
    resource(INFRA_GROUP, "ByoHost", "byohosts")
}
pub fn byomachine_resource() -> ApiResource {
    resource(INFRA_GROUP, "ByoMachine", "byomachines")
}

fn yaml_documents(path: &Path) -> anyhow::Result<Vec<Value>> {
    documents(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
}

/// `crd` with v1beta1 as its storage version (and still served). BYOH v0.5.0 speaks only
/// v1beta1 (Cluster API v1.4); Cluster API v1.14 stores v1beta2 and, without its conversion
/// webhook, serves v1beta1 as the v1beta2 object relabelled: the Cluster's
/// `status.infrastructureReady` (v1beta1 only) could then never be true, and BYOH waits for it.
/// Stored as v1beta1, what BYOH reads is what was written.
pub fn store_v1beta1(mut crd: Value) -> anyhow::Result<Value> {
    let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let versions = crd["spec"]["versions"].as_array_mut().with_context(|| format!("{name}: no spec.versions"))?;
    anyhow::ensure!(versions.iter().any(|v| v["name"] == "v1beta1"), "{name}: Cluster API no longer ships v1beta1");
    for version in versions {
        let is_v1beta1 = version["name"] == "v1beta1";
        version["storage"] = Value::Bool(is_v1beta1);
        if is_v1beta1 {
            version["served"] = Value::Bool(true);
        }
    }
    Ok(crd)
}

/// Installs the kinds BYOH needs: Cluster API's Cluster and Machine (from the Cluster API module
/// the bench pins, stored as v1beta1), BYOH's 8 CRDs, and BYOH's RBAC for agents (the byohost
/// editor and secret reader roles bound to group byoh:hosts), all from BYOH's module as shipped.
pub async fn install(client: &kube::Client) -> anyhow::Result<()> {
    let capi = module_dir("capi").join("core/config/crd/bases");
    let byoh = module_dir("byoh");
    let mut crds = Vec::new();
    for file in ["cluster.x-k8s.io_clusters.yaml", "cluster.x-k8s.io_machines.yaml"] {
        for crd in yaml_documents(&capi.join(file))? {
            crds.push(store_v1beta1(crd)?);
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(byoh.join("config/crd/bases"))?.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        crds.extend(yaml_documents(file)?);
    }
    anyhow::ensure!(crds.len() == 10, "expected Cluster, Machine and BYOH's 8 CRDs, found {}", crds.len());
    let mut names = Vec::new();
    for crd in apply_all(client, &crds, None, false).await? {
        names.extend(crd.metadata.name);
    }
    wait_established(client, &names).await?;
    let mut rbac = Vec::new();
    for file in ["byohost_editor_role", "byohost_editor_clusterrolebinding", "secret_reader_clusterrole", "secret_reader_clusterrolebinding"] {
        rbac.extend(yaml_documents(&byoh.join("config/rbac").join(format!("{file}.yaml")))?);
    }
    apply_all(client, &rbac, None, false).await?;
    Ok(())
}

/// The Cluster (v1beta1) with `status.infrastructureReady` as Cluster API's controller would set
/// it from the ByoCluster; the ByoCluster owned by it; the `<cluster>-kubeconfig` Secret of the
/// "workload cluster", which is this same API server; and one Node per host (`h0`..), which
/// kubeadm join would have made: BYOH marks a ByoMachine ready only after setting its Node's
/// providerID through that kubeconfig.
pub async fn cluster(client: &kube::Client, plane: &ManagementPlane, n: usize) -> anyhow::Result<()> {
    let clusters = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &cluster_resource());
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster", "metadata": {"name": CLUSTER},
        "spec": {"infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "ByoCluster", "name": CLUSTER},
                 "controlPlaneEndpoint": {"host": ENDPOINT, "port": 6443}}
    }))?;
    let cluster = clusters.create(&PostParams::default(), &cluster).await.context("creating the v1beta1 Cluster")?;
    let status = json!({"status": {"infrastructureReady": true, "controlPlaneReady": true}});
    clusters.patch_status(CLUSTER, &PatchParams::default(), &Patch::Merge(status)).await?;
    // What BYOH's manager will read (it waits for this field): check it survived the round trip.
    let read = clusters.get_status(CLUSTER).await?;
    anyhow::ensure!(
        read.data.pointer("/status/infrastructureReady") == Some(&json!(true)),
        "the v1beta1 Cluster does not keep status.infrastructureReady: {}",
        read.data["status"]
    );

    let byoclusters = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &resource(INFRA_GROUP, "ByoCluster", "byoclusters"));
    let byocluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "ByoCluster",
        "metadata": {"name": CLUSTER, "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster", "name": CLUSTER, "uid": cluster.metadata.uid}]},
        "spec": {"controlPlaneEndpoint": {"host": ENDPOINT, "port": 6443}}
    }))?;
    byoclusters.create(&PostParams::default(), &byocluster).await.context("creating the ByoCluster")?;

    let workload = std::fs::read_to_string(plane.kubeconfig_for(WORKLOAD_USER, Some("system:masters"))?)?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("{CLUSTER}-kubeconfig"), "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER}},
        "type": "cluster.x-k8s.io/secret",
        "data": {"value": base64::engine::general_purpose::STANDARD.encode(workload)}
    }))?;
    Api::<Secret>::namespaced(client.clone(), NS).create(&PostParams::default(), &secret).await?;

    let nodes = Api::<Node>::all(client.clone());
    for i in 0..n {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": format!("h{i}")}}))?;
        nodes.create(&PostParams::default(), &node).await.with_context(|| format!("creating Node h{i}"))?;
    }
    Ok(())
}

/// The bootstrap Secret, the Machine pointing at it (with `spec.version`: BYOH dereferences it
/// unchecked, and a nil version panics its manager), and the ByoMachine owned by the Machine, as
/// Cluster API's MachineSet and its bootstrap provider would create them.
pub async fn create_machine(client: &kube::Client, name: &str, data: &str) -> anyhow::Result<()> {
    crate::bench::create_bootstrap_secret(client, NS, CLUSTER, name, data).await?;
    let labels = json!({"cluster.x-k8s.io/cluster-name": CLUSTER});
    let machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
        "metadata": {"name": name, "labels": labels},
        "spec": {"clusterName": CLUSTER, "version": KUBERNETES_VERSION, "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                 "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "ByoMachine", "name": name, "namespace": NS}}
    }))?;
    let owner = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &machine_resource()).create(&PostParams::default(), &machine).await?;
    let byomachine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "ByoMachine",
        "metadata": {"name": name, "labels": labels,
                     "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine", "name": name, "uid": owner.metadata.uid}]},
        "spec": {}
    }))?;
    Api::<DynamicObject>::namespaced_with(client.clone(), NS, &byomachine_resource()).create(&PostParams::default(), &byomachine).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn v1beta1_becomes_the_storage_version() {
        let crd = serde_json::json!({"metadata": {"name": "clusters.cluster.x-k8s.io"}, "spec": {"versions": [
            {"name": "v1beta1", "served": true, "storage": false, "deprecated": true},
            {"name": "v1beta2", "served": true, "storage": true}]}});
        let crd = super::store_v1beta1(crd).unwrap();
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!((versions[0]["storage"].as_bool(), versions[1]["storage"].as_bool()), (Some(true), Some(false)));
        assert_eq!(versions[1]["served"], true, "v1beta2 stays served: nothing here reads it");
        let without = serde_json::json!({"metadata": {"name": "x"}, "spec": {"versions": [{"name": "v1beta2"}]}});
        assert!(super::store_v1beta1(without).is_err());
    }
}
