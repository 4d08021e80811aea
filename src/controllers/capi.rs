//! The Cluster API objects capssh reads (Cluster, Machine), as dynamic objects of the v1beta2
//! API, and the contract rules around them (pause, externally managed).

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
pub const MANAGED_BY_ANNOTATION: &str = "cluster.x-k8s.io/managed-by";

pub fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"))
}

pub fn machine_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Machine"))
}

/// The owner of `kind` among an object's ownerReferences (Cluster API sets them).
pub fn owner_name(meta: &kube::core::ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references.as_ref()?.iter().find(|o| o.kind == kind && o.api_version.starts_with("cluster.x-k8s.io/")).map(|o| o.name.clone())
}

pub async fn get_cluster(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<DynamicObject>, kube::Error> {
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &cluster_resource()).get_opt(name).await
}

/// Cluster.spec.paused, or the paused annotation on the Cluster or on the object itself.
pub fn is_paused(cluster: Option<&DynamicObject>, object: &kube::core::ObjectMeta) -> bool {
    let annotated = |meta: &kube::core::ObjectMeta| meta.annotations.as_ref().is_some_and(|a| a.contains_key(PAUSED_ANNOTATION));
    annotated(object) || cluster.is_some_and(|c| annotated(&c.metadata) || c.data.pointer("/spec/paused").and_then(Value::as_bool) == Some(true))
}

pub fn is_externally_managed(object: &kube::core::ObjectMeta) -> bool {
    object.annotations.as_ref().is_some_and(|a| a.contains_key(MANAGED_BY_ANNOTATION))
}

/// Cluster.spec.controlPlaneEndpoint, when set.
pub fn cluster_endpoint(cluster: &DynamicObject) -> Option<(String, i32)> {
    let endpoint = cluster.data.pointer("/spec/controlPlaneEndpoint")?;
    let host = endpoint.get("host")?.as_str()?.to_string();
    let port = endpoint.get("port")?.as_i64()? as i32;
    (!host.is_empty() && port != 0).then_some((host, port))
}
