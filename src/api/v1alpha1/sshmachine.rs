//! SSHMachine: Cluster API's InfraMachine. Claims a host, runs the bootstrap data on it, reports.

use super::common::{Condition, Initialization, LabelSelector, MachineAddress};
use super::preparation::Preparation;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The infrastructure of one Cluster API Machine: an SSHHost claimed from the pool.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SSHMachine",
    doc = "SSHMachine is the infrastructure of one Cluster API Machine: it claims an SSHHost, runs the bootstrap data on it over SSH and resets it on delete.",
    plural = "sshmachines",
    singular = "sshmachine",
    namespaced,
    status = "SSHMachineStatus",
    category = "cluster-api",
    shortname = "sshm",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']","description":"Cluster this machine belongs to"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Where the machine is in its lifecycle"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.hostRef.name","description":"The SSHHost this machine runs on"}"#,
    printcolumn = r#"{"name":"ProviderID","type":"string","jsonPath":".spec.providerID"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.providerID) || (has(self.providerID) && self.providerID == oldSelf.providerID)"
).message("providerID cannot change once set"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.hostRef) || (has(self.hostRef) && self.hostRef == oldSelf.hostRef)"
).message("hostRef cannot change once set: delete the machine to move it to another host"))]
pub struct SSHMachineSpec {
    /// The node's provider ID, `ssh://<namespace>/<sshhost-name>`, set by capssh once a host is
    /// claimed. Cluster API matches it to the Node's spec.providerID. Never changes once set.
    #[serde(rename = "providerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub provider_id: Option<String>,

    /// Which hosts this machine may claim, by the SSHHosts' labels. Empty matches every host.
    #[serde(default, skip_serializing_if = "is_empty_selector")]
    pub host_selector: LabelSelector,

    /// The SSHHost this machine runs on. Set it to pin a particular host; otherwise capssh sets it
    /// when it claims one. Never changes once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ref: Option<HostRef>,

    /// How long the bootstrap job may run on the host before the machine reports it as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 86400))]
    pub bootstrap_timeout_seconds: Option<i32>,

    /// Prepare the host before the bootstrap: install (or only verify) the container runtime and
    /// kubelet, kubeadm and kubectl at the owner Machine's spec.version. Unset: nothing is
    /// installed or checked, and the bootstrap data runs on the host as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparation: Option<Preparation>,
}

fn is_empty_selector(selector: &LabelSelector) -> bool {
    selector.match_labels.is_empty() && selector.match_expressions.is_empty()
}

/// A reference to an SSHHost in the machine's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostRef {
    /// Name of the SSHHost.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where a machine is in its lifecycle, for people; conditions carry the detail.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MachinePhase {
    /// Waiting for cluster infrastructure or bootstrap data.
    Pending,
    /// Waiting for a free matching host.
    WaitingForHost,
    /// A host is claimed; preparation or bootstrap runs on it.
    Provisioning,
    /// The bootstrap succeeded.
    Provisioned,
    /// Being deleted: the host is reset and released.
    Deleting,
    /// Something needs a person: see the Ready condition.
    Failed,
}

/// What capssh observed of the machine, per the v1beta2 InfraMachine contract.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SSHMachineStatus {
    /// Contract: provisioned is set once the bootstrap succeeded on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// Addresses of the host (Cluster API copies them onto the Machine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    /// The failure domain the host is in, from its labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub failure_domain: Option<String>,
    /// Lifecycle phase, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MachinePhase>,
    /// Conditions: Ready (mirrored into the Machine's InfrastructureReady), HostClaimed,
    /// HostConnected, HostPrepared (with spec.preparation), BootstrapSucceeded, Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
