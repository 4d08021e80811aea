//! SSHMachineTemplate and SSHClusterTemplate, cloned by KCP, MachineDeployments and ClusterClass.
//! Their spec.template.spec is immutable; the manager's webhook enforces that (see
//! crate::webhook) because CEL cannot let ClusterClass's dry runs through.

use super::common::ObjectMeta;
use super::sshcluster::SSHClusterSpec;
use super::sshmachine::SSHMachineSpec;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A template for SSHMachines.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SSHMachineTemplate",
    doc = "SSHMachineTemplate describes the SSHMachines that KubeadmControlPlane, MachineDeployments and ClusterClass create. Immutable: roll out a change with a new template.",
    plural = "sshmachinetemplates",
    singular = "sshmachinetemplate",
    namespaced,
    category = "cluster-api",
    shortname = "sshmt",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SSHMachineTemplateSpec {
    /// The SSHMachine to create.
    pub template: SSHMachineTemplateResource,
}

/// Metadata and spec of the SSHMachines made from a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.spec.providerID) && !has(self.spec.hostRef)"
).message("a machine template cannot set providerID or hostRef: every machine made from it would need the same host"))]
pub struct SSHMachineTemplateResource {
    /// Labels and annotations for the machines.
    #[serde(default, skip_serializing_if = "is_empty_meta")]
    pub metadata: ObjectMeta,
    /// Spec of the machines.
    pub spec: SSHMachineSpec,
}

/// A template for SSHClusters, for ClusterClass.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SSHClusterTemplate",
    doc = "SSHClusterTemplate describes the SSHCluster of a ClusterClass-based Cluster.",
    plural = "sshclustertemplates",
    singular = "sshclustertemplate",
    namespaced,
    category = "cluster-api",
    shortname = "sshct",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SSHClusterTemplateSpec {
    /// The SSHCluster to create.
    pub template: SSHClusterTemplateResource,
}

/// Metadata and spec of the SSHClusters made from a template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SSHClusterTemplateResource {
    /// Labels and annotations for the cluster.
    #[serde(default, skip_serializing_if = "is_empty_meta")]
    pub metadata: ObjectMeta,
    /// Spec of the cluster.
    pub spec: SSHClusterSpec,
}

fn is_empty_meta(meta: &ObjectMeta) -> bool {
    meta.labels.is_empty() && meta.annotations.is_empty()
}
