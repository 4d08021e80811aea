//! SSHMachine's spec.preparation: how a host gets its container runtime and the Kubernetes
//! binaries of the Machine's version before the bootstrap runs (src/bootstrap/prepare).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Host preparation. The Kubernetes version is the owner Machine's spec.version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.mode != 'Artifacts' || has(self.artifacts)")
    .message("mode Artifacts needs artifacts.url: the mirror the host downloads from"))]
#[x_kube(validation = kube::core::Rule::new("self.mode == 'Artifacts' || !has(self.artifacts)")
    .message("artifacts is only used with mode Artifacts"))]
#[x_kube(validation = kube::core::Rule::new("self.mode == 'Packages' || !has(self.packages)")
    .message("packages is only used with mode Packages"))]
#[x_kube(validation = kube::core::Rule::new("self.mode != 'None' || !has(self.registry)")
    .message("registry is configured by preparation modes Packages and Artifacts; a pre-baked host (mode None) carries its own containerd configuration"))]
pub struct Preparation {
    /// None: the host is pre-baked; capssh only checks that kubelet and kubeadm are at the
    /// Machine's version and refuses to bootstrap otherwise. Packages: install containerd and
    /// kubelet, kubeadm and kubectl with the distribution's package manager from the Kubernetes
    /// package repository (Debian, Ubuntu, RHEL family). Artifacts: download them from an HTTP(S)
    /// mirror laid out as `capssh artifacts build` writes it, verifying every SHA-256 before
    /// installing anything (air-gapped sites).
    pub mode: PreparationMode,

    /// The mirror, for mode Artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsSource>,

    /// Options for mode Packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<PackagesSource>,

    /// Where containerd pulls images from: a mirror per upstream registry (an air-gapped site's
    /// own registry), its CA and pull credentials. Preparation writes containerd's
    /// `/etc/containerd/certs.d/<registry>/hosts.toml` and checks, before it installs anything,
    /// that every mirror answers and accepts the credentials. kubeadm then pulls its images
    /// through the mirrors as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryMirrors>,
}

/// Registry mirrors for containerd, all served by one registry (one CA, one set of credentials).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryMirrors {
    /// One entry per upstream registry.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(m, self.exists_one(n, n.registry == m.registry))")
        .message("registry.mirrors names a registry twice: give each upstream registry one mirror"))]
    pub mirrors: Vec<RegistryMirror>,

    /// The CA certificate (PEM) that signed the mirrors' serving certificates, when the host does
    /// not already trust it. A Secret must carry the label
    /// `infrastructure.cluster.x-k8s.io/capssh-credentials: "true"`; a ConfigMap needs none.
    #[serde(rename = "caRef", default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<RegistryCARef>,

    /// A Secret of type kubernetes.io/basic-auth (keys `username` and `password`) with the pull
    /// credentials, labelled `infrastructure.cluster.x-k8s.io/capssh-credentials: "true"`. They
    /// are written, readable by root only, into each mirror's hosts.toml as an Authorization
    /// header, and are never shown in conditions, events or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretName>,
}

/// An upstream registry and the mirror containerd pulls its images from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryMirror {
    /// The registry as image references name it: registry.k8s.io, docker.io, quay.io, ghcr.io,
    /// or any host[:port].
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$"))]
    pub registry: String,

    /// The mirror's base URL, e.g. https://registry.example:5000 (a path is allowed: a mirror
    /// serving under a prefix).
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(URL_RULE).message(URL_RULE_MESSAGE))]
    pub endpoint: String,
}

/// A key of a Secret or a ConfigMap in the machine's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCARef {
    pub kind: CASourceKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Default: ca.crt.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_string()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CASourceKind {
    Secret,
    ConfigMap,
}

/// A Secret in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretName {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How a host is prepared.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PreparationMode {
    /// Pre-baked host: verify the kubelet and kubeadm versions only.
    None,
    /// The distribution's package manager and the Kubernetes package repository.
    Packages,
    /// An HTTP(S) artifact mirror.
    Artifacts,
}

/// The URL fields' rule: what the preparation code accepts (`check_url`), so that the API server
/// refuses what the controller would refuse later: http(s), a host, printable ASCII without
/// spaces, quotes, backslashes, `<>^`{|}`, a query or a fragment.
pub const URL_RULE: &str =
    r"self.matches('^https?://[A-Za-z0-9!$%&()*+,./:;=@_~\\[\\]-]*[A-Za-z0-9!$%&()*+,.:;=@_~\\[\\]-][A-Za-z0-9!$%&()*+,./:;=@_~\\[\\]-]*$')";
const URL_RULE_MESSAGE: &str =
    "must be an http:// or https:// URL naming a host, in printable ASCII without spaces, quotes, backslashes, <>^`{|}, a query or a fragment";

/// An artifact mirror. The host fetches `<url>/<version>/<arch>/SHA256SUMS` and the files it
/// lists (bin/, cni/, images/), checks every SHA-256, and only then installs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
// Over plain http anyone on the way could swap SHA256SUMS and the files together.
#[x_kube(validation = kube::core::Rule::new("!self.url.startsWith('http://') || has(self.checksumsSHA256)")
    .message("artifacts.url is plain http://: set artifacts.checksumsSHA256 (the SHA-256 of SHA256SUMS that `capssh artifacts build` prints), or serve the mirror over https://"))]
pub struct ArtifactsSource {
    /// Base URL of the mirror, http:// or https://, without a query. The host itself downloads
    /// from it (with curl or wget), so it must be reachable from the host. Anyone who can read
    /// this object sees it: do not put credentials in it.
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(URL_RULE).message(URL_RULE_MESSAGE))]
    pub url: String,

    /// SHA-256 (64 lower-case hex digits) of the mirror's SHA256SUMS file for this version and
    /// architecture, as `capssh artifacts build` prints it. When set, a SHA256SUMS file that does not
    /// match is refused, so the mirror's server is not trusted at all. Required when the url is
    /// plain http://. Pins one version and one architecture: leave it unset only for an https://
    /// mirror serving templates whose hosts differ in architecture.
    #[serde(rename = "checksumsSHA256", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub checksums_sha256: Option<String>,
}

/// Options of mode Packages.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
// A Release.key fetched over plain http could be swapped on the way, and with it every package.
#[x_kube(validation = kube::core::Rule::new("!has(self.repositoryURL) || !self.repositoryURL.startsWith('http://') || has(self.signingKey)")
    .message("packages.repositoryURL is plain http://: set packages.signingKey to the repository's ASCII-armored public key (gpg --armor --export), or use an https:// repository"))]
pub struct PackagesSource {
    /// Base URL of the Kubernetes package repository, laid out as https://pkgs.k8s.io (the
    /// default): `<url>/core:/stable:/v<major>.<minor>/deb/` and `.../rpm/`. Set it to a mirror
    /// of that layout.
    #[serde(rename = "repositoryURL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(URL_RULE).message(URL_RULE_MESSAGE))]
    pub repository_url: Option<String>,

    /// The repository's signing key: an ASCII-armored OpenPGP public key block (`gpg --armor
    /// --export`). When set, it is the key the host's package manager trusts for the repository;
    /// when unset, the host fetches `Release.key` (apt) or `repodata/repomd.xml.key` (dnf, yum)
    /// from the repository itself, which capssh allows over https:// only. Required when
    /// repositoryURL is plain http://.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 64, max = 65536))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('-----BEGIN PGP PUBLIC KEY BLOCK-----') && self.contains('-----END PGP PUBLIC KEY BLOCK-----')")
        .message("packages.signingKey must be an ASCII-armored OpenPGP public key block (-----BEGIN PGP PUBLIC KEY BLOCK----- ... -----END PGP PUBLIC KEY BLOCK-----)"))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('PRIVATE KEY')")
        .message("packages.signingKey holds a private key: give the public key only (gpg --armor --export); anyone who can read this object sees it"))]
    pub signing_key: Option<String>,

    /// The container runtime package, from the host's configured repositories. Default:
    /// `containerd` on Debian, Ubuntu and Fedora, `containerd.io` (Docker's repository, which must
    /// be configured on the host) on RHEL, CentOS, Rocky, AlmaLinux and Oracle Linux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$"))]
    pub container_runtime_package: Option<String>,
}
