//! SSHHost: one real machine in the pool, and the record of who has claimed it.

use super::common::{ADDRESS_RULE, Condition, SecretKeyRef};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label a Secret must carry (value `"true"`) before capssh uses it as an SSHHost's
/// credentials. Without it, anyone allowed to create SSHHosts could name any Secret of the
/// namespace and point the address at their own sshd, which would then receive it.
pub const CREDENTIALS_LABEL: &str = "infrastructure.cluster.x-k8s.io/capssh-credentials";

/// What a claimed host may not change: which box it stands for. Compared one by one so that
/// the credentials (spec.auth, bastion.auth) can still be rotated while a machine uses it.
const CLAIMED_IDENTITY_RULE: &str = "!has(oldSelf.consumerRef) || (\
self.address == oldSelf.address && self.port == oldSelf.port && self.user == oldSelf.user && self.hostKey == oldSelf.hostKey && \
has(self.bastion) == has(oldSelf.bastion) && (!has(self.bastion) || (self.bastion.address == oldSelf.bastion.address && \
self.bastion.port == oldSelf.bastion.port && self.bastion.user == oldSelf.bastion.user && self.bastion.hostKey == oldSelf.bastion.hostKey)))";

/// A host that already exists and is reachable over SSH. Register one per machine; capssh probes
/// it, hands it to one SSHMachine at a time, and resets it when that machine is deleted.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "SSHHost",
    doc = "SSHHost is one real machine reachable over SSH, registered once in the pool that SSHMachines claim from.",
    plural = "sshhosts",
    singular = "sshhost",
    namespaced,
    status = "SSHHostStatus",
    category = "cluster-api",
    shortname = "sshh",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Where the host is in its lifecycle"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address","description":"SSH address"}"#,
    printcolumn = r#"{"name":"Consumer","type":"string","jsonPath":".spec.consumerRef.name","description":"The SSHMachine that has claimed the host"}"#,
    printcolumn = r#"{"name":"Maintenance","type":"boolean","jsonPath":".spec.maintenance","description":"Kept out of selection","priority":1}"#,
    printcolumn = r#"{"name":"OS","type":"string","jsonPath":".status.facts.os","description":"Operating system seen by the last probe","priority":1}"#,
    printcolumn = r#"{"name":"Arch","type":"string","jsonPath":".status.facts.arch","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(CLAIMED_IDENTITY_RULE).message(
    "address, port, user, bastion and hostKey cannot change while the host is claimed (spec.consumerRef): release the host first (delete the Machine using it)"
))]
pub struct SSHHostSpec {
    /// Address capssh connects to: an IP address or a DNS name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(ADDRESS_RULE).message("address must be an IP address or a DNS name"))]
    pub address: String,

    /// SSH port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Login user. A user other than root must be allowed `sudo -n` (passwordless); capssh runs
    /// every host-side command through it and says so clearly when sudo asks for a password.
    #[serde(default = "default_user")]
    #[schemars(length(min = 1, max = 32))]
    pub user: String,

    /// How capssh authenticates: exactly one of a private key or a password. The Secret must
    /// carry the label `infrastructure.cluster.x-k8s.io/capssh-credentials: "true"`; capssh
    /// refuses any other Secret.
    pub auth: SSHAuth,

    /// The host's public key, pinned. capssh refuses to talk to a host whose key differs.
    pub host_key: HostKeyPolicy,

    /// A jump host to reach this host through, with its own credentials and pinned key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<Bastion>,

    /// While true the host is never selected for a new machine. A machine already on it keeps it.
    #[serde(default)]
    pub maintenance: bool,

    /// The SSHMachine that owns this host. Written by capssh when a machine claims the host
    /// (guarded by resourceVersion, so two machines never get one host) and cleared when the host
    /// is released. It lives in spec because `clusterctl move` does not carry status over. While
    /// it is set, address, port, user, bastion and hostKey cannot change, and deleting the
    /// SSHHost waits until the machine has reset and released the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_ref: Option<ConsumerRef>,
}

fn default_port() -> i32 {
    22
}

fn default_user() -> String {
    "root".to_string()
}

/// Exactly one authentication method. Passwords are an explicit opt-in: prefer keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.privateKeySecretRef) != has(self.passwordSecretRef)"
).message("set exactly one of auth.privateKeySecretRef and auth.passwordSecretRef"))]
pub struct SSHAuth {
    /// An OpenSSH or PEM private key (ed25519, ecdsa or rsa) in a Secret of this namespace
    /// labelled `infrastructure.cluster.x-k8s.io/capssh-credentials: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_secret_ref: Option<PrivateKeyRef>,
    /// A password in a Secret of this namespace labelled
    /// `infrastructure.cluster.x-k8s.io/capssh-credentials: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// Where a private key (and its optional passphrase) is stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivateKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the private key. `ssh-privatekey` is the key of Secrets of type
    /// kubernetes.io/ssh-auth.
    #[serde(default = "default_private_key_key")]
    pub key: String,
    /// Key holding the passphrase, when the private key is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_key: Option<String>,
}

fn default_private_key_key() -> String {
    "ssh-privatekey".to_string()
}

/// Which host keys are accepted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.publicKeys) && size(self.publicKeys) > 0) || (has(self.trustOnFirstUse) && self.trustOnFirstUse)"
).message("pin the host key in hostKey.publicKeys, or opt in to hostKey.trustOnFirstUse"))]
pub struct HostKeyPolicy {
    /// Accepted host keys, each an OpenSSH public key (`ssh-ed25519 AAAA...`), a known_hosts
    /// line, or a SHA256 fingerprint (`SHA256:...`, as `ssh-keygen -lf` prints). Replace the list
    /// to re-pin a reinstalled host: that edit is the record that someone approved the new key.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 4096)))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(k, k.startsWith('SHA256:') || k.matches('^(\\\\S+ )?(ssh|ecdsa|sk)-\\\\S+ [A-Za-z0-9+/=]+( .*)?$'))"
    ).message("each host key must be an OpenSSH public key, a known_hosts line, or a SHA256: fingerprint"))]
    pub public_keys: Vec<String>,
    /// Accept the key seen on the first connection and record it in publicKeys, pinned from then
    /// on. Only for networks where the first connection cannot be intercepted.
    #[serde(default)]
    pub trust_on_first_use: bool,
}

/// A jump host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bastion {
    /// Address of the jump host: an IP address or a DNS name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new(ADDRESS_RULE).message("bastion.address must be an IP address or a DNS name"))]
    pub address: String,
    /// SSH port of the jump host.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Login user on the jump host.
    #[serde(default = "default_user")]
    pub user: String,
    /// Credentials for the jump host.
    pub auth: SSHAuth,
    /// Pinned key of the jump host.
    pub host_key: HostKeyPolicy,
}

/// The SSHMachine that has claimed a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRef {
    /// API group of the consumer.
    pub api_group: String,
    /// Kind of the consumer.
    pub kind: String,
    /// Name of the consumer, in the host's namespace.
    pub name: String,
    /// UID of the consumer that claimed the host: a machine recreated with the same name is
    /// another consumer and does not get the host (nor its records) back. A copy made by
    /// `clusterctl move` has a new UID; it proves it is the same machine by its spec.hostRef
    /// (set at claim time and moved with it), and the claim is left as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Where a host is in its lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum HostPhase {
    /// Probed, clean, free to be claimed.
    Available,
    /// Claimed by a machine that has not started work on it yet.
    Claimed,
    /// Being prepared and bootstrapped.
    Provisioning,
    /// Bootstrapped; a node of a cluster.
    Provisioned,
    /// Being reset after its machine was deleted.
    Releasing,
    /// Could not be cleaned or verified; kept out of the pool until a person looks at it.
    Quarantined,
    /// The last probe could not reach it.
    Unreachable,
}

/// What capssh last saw of the host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SSHHostStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<HostPhase>,
    /// Facts probed over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<HostFacts>,
    /// SHA256 fingerprint of the host key seen on the last connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_host_key_fingerprint: Option<String>,
    /// When a probe last found something new about the host (RFC 3339). A free host is probed
    /// every probe interval; a probe that finds it as its status says writes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_probe_time: Option<String>,
    /// Why the host is quarantined, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_reason: Option<String>,
    /// Conditions: Reachable, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Facts probed over SSH.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    /// Operating system id from /etc/os-release (debian, ubuntu, rhel, ...).
    #[serde(default)]
    pub os: String,
    /// Operating system version id from /etc/os-release.
    #[serde(default)]
    pub os_version: String,
    /// Machine architecture as Kubernetes names it (amd64, arm64, ...).
    #[serde(default)]
    pub arch: String,
    /// Kernel release (uname -r).
    #[serde(default)]
    pub kernel: String,
    /// Hostname the host reports.
    #[serde(default)]
    pub hostname: String,
    /// Number of online CPUs.
    #[serde(default)]
    pub cpus: i64,
    /// Total memory in bytes.
    #[serde(default)]
    pub memory_bytes: i64,
}
