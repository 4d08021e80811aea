//! SSHCluster: Cluster API's InfraCluster. There is nothing to create for a pool of existing
//! hosts except the control-plane endpoint (a VIP or load balancer) and the failure domains.

use super::common::{ApiEndpoint, Condition, Initialization};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The infrastructure of one Cluster API Cluster built on SSHHosts.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SSHCluster",
    doc = "SSHCluster is the infrastructure of one Cluster API Cluster on SSHHosts: its control-plane endpoint and failure domains.",
    plural = "sshclusters",
    singular = "sshcluster",
    namespaced,
    status = "SSHClusterStatus",
    category = "cluster-api",
    shortname = "sshc",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']","description":"Cluster this belongs to"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.controlPlaneEndpoint.host","description":"Control-plane endpoint"}"#,
    printcolumn = r#"{"name":"Provisioned","type":"boolean","jsonPath":".status.initialization.provisioned"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.controlPlaneEndpoint) || !has(oldSelf.controlPlaneEndpoint.host) || (has(self.controlPlaneEndpoint) && self.controlPlaneEndpoint == oldSelf.controlPlaneEndpoint)"
).message("controlPlaneEndpoint cannot change once set"))]
pub struct SSHClusterSpec {
    /// The address of the workload cluster's API server: a VIP (kube-vip in the default template)
    /// or a load balancer you own. When empty, capssh waits for Cluster.spec.controlPlaneEndpoint.
    #[serde(default, skip_serializing_if = "is_unset")]
    pub control_plane_endpoint: ApiEndpoint,

    /// Derive failure domains from a label on the SSHHosts (for example rack or zone), so that
    /// KubeadmControlPlane spreads control-plane machines across them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domains: Option<FailureDomainSource>,
}

fn is_unset(endpoint: &ApiEndpoint) -> bool {
    endpoint.host.is_empty() && endpoint.port == 0
}

/// How failure domains are found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDomainSource {
    /// The SSHHost label whose values name the failure domains, e.g. topology.kubernetes.io/zone.
    #[schemars(length(min = 1, max = 317))]
    pub host_label: String,
    /// The label values whose hosts may run control-plane machines. Empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_plane: Vec<String>,
}

/// What capssh observed of the cluster, per the v1beta2 InfraCluster contract.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SSHClusterStatus {
    /// Contract: provisioned is set once the endpoint is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// Failure domains found on the hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub failure_domains: Vec<FailureDomain>,
    /// Conditions: Ready, Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A failure domain, in the v1beta2 list shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDomain {
    /// Name of the failure domain (the host label's value).
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Whether control-plane machines may be placed in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<bool>,
    /// Extra attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}
