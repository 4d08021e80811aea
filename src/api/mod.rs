//! What capssh stores: the CRD types, and the CRD manifests generated from them.

pub mod crds;
pub mod v1alpha1;

/// The API group shared with every Cluster API infrastructure provider. Staying in it means the
/// Cluster API core and KCP managers can already read and write our kinds through their own RBAC.
pub const GROUP: &str = "infrastructure.cluster.x-k8s.io";

/// The Cluster API contract we implement, and the label that tells Cluster API which of our
/// versions implement it (`cluster.x-k8s.io/v1beta2: v1alpha1`). Must agree with metadata.yaml.
pub const CONTRACT: &str = "v1beta2";
pub const CONTRACT_LABEL: &str = "cluster.x-k8s.io/v1beta2";

/// `clusterctl move` moves every object of a CRD with this label (and every object carrying it)
/// along with the Clusters of the namespace. SSHHosts belong to no Cluster, yet the claims they
/// hold must move with the machines: their CRD carries it, and capssh puts it on the Secrets
/// the hosts log in with.
pub const MOVE_LABEL: &str = "clusterctl.cluster.x-k8s.io/move";
